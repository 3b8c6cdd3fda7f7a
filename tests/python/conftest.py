"""Shared clients and helpers for the conveyor Python tests."""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from typing import Callable, List, Optional

import pytest

import conveyor

# Generous: a condition that does not hold by then is a failure, not a slow machine.
WAIT = 20.0

# Fast retries for every test pipeline (the defaults back off for seconds).
FAST = dict(backoff_init=0.001, backoff_max=0.01, queue_flush_timeout=0.001)


def wait_until(condition: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    """Polls `condition` until it holds; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)


def events(n: int, tag: str = "e") -> List[bytes]:
    return [f"{tag}-{i:06d}".encode() for i in range(n)]


class Recorder(conveyor.Client):
    """Records every event it reports published, in order (thread-safe)."""

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.lock = threading.Lock()
        self.delivered: List[bytes] = []
        self.batches: List[int] = []
        self.connects = 0
        self.closes = 0

    def connect(self, timeout: float) -> None:
        with self.lock:
            self.connects += 1

    def close(self) -> None:
        with self.lock:
            self.closes += 1

    def record(self, batch: List[bytes]) -> None:
        with self.lock:
            self.delivered.extend(batch)

    def publish(self, events: List[bytes]) -> Optional[int]:
        with self.lock:
            self.batches.append(len(events))
        self.record(events)
        return None


class Gate(Recorder):
    """Blocks every publish until `release()`; `entered` is set once a publish started."""

    def __init__(self) -> None:
        super().__init__("gate")
        self.entered = threading.Event()
        self.open = threading.Event()

    def publish(self, events: List[bytes]) -> Optional[int]:
        self.entered.set()
        if not self.open.wait(WAIT):
            raise RuntimeError("gate never opened")
        return super().publish(events)

    def release(self) -> None:
        self.open.set()


class Scripted(Recorder):
    """Answers each publish with the next scripted action, then publishes normally.

    An action is an int (publish that many leading events), None (all), an
    exception instance (raised), or a callable taking the batch.
    """

    def __init__(self, script: list) -> None:
        super().__init__("scripted")
        self.script = list(script)

    def publish(self, events: List[bytes]) -> Optional[int]:
        with self.lock:
            self.batches.append(len(events))
            action = self.script.pop(0) if self.script else None
        if isinstance(action, BaseException):
            if isinstance(action, conveyor.Retry):
                self.record(events[: action.published])
            raise action
        if callable(action):
            return action(events)
        if action is None:
            self.record(events)
            return None
        if isinstance(action, int) and 0 <= action <= len(events):
            self.record(events[:action])
        return action


class Flaky(Recorder):
    """Fails connects and publishes at random (seeded): raises, raises Retry after a
    prefix, publishes a prefix, or publishes everything."""

    def __init__(self, seed: int, name: str) -> None:
        super().__init__(name)
        self.rng = random.Random(seed)

    def connect(self, timeout: float) -> None:
        super().connect(timeout)
        if self.rng.random() < 0.1:
            raise ConnectionError(f"{self.name}: injected connect failure")

    def publish(self, events: List[bytes]) -> Optional[int]:
        r = self.rng.random()
        prefix = self.rng.randrange(len(events) + 1)
        if r < 0.1:
            raise RuntimeError(f"{self.name}: injected broken connection")
        if r < 0.2:
            self.record(events[:prefix])
            raise conveyor.Retry("injected temporary failure", published=prefix)
        if r < 0.35:
            self.record(events[:prefix])
            return prefix
        self.record(events)
        return None


class ThreadedAsync(conveyor.AsyncClient):
    """An async client that completes every batch later, from its own thread."""

    def __init__(self, script: Optional[list] = None) -> None:
        self.lock = threading.Lock()
        self.delivered: List[bytes] = []
        self.threads: set = set()
        self.script = list(script or [])
        self.jobs: "queue.Queue" = queue.Queue()
        self.worker = threading.Thread(target=self.run, name="async-completer", daemon=True)
        self.worker.start()

    def publish_async(self, events: List[bytes], done: conveyor.Completion) -> None:
        with self.lock:
            action = self.script.pop(0) if self.script else None
        self.jobs.put((events, done, action))

    def run(self) -> None:
        while True:
            events, done, action = self.jobs.get()
            with self.lock:
                self.threads.add(threading.current_thread().name)
            if isinstance(action, BaseException):
                published = action.published if isinstance(action, conveyor.Retry) else 0
                with self.lock:
                    self.delivered.extend(events[:published])
                done(error=action)
            elif isinstance(action, int):
                with self.lock:
                    self.delivered.extend(events[:action])
                done(action)
            else:
                with self.lock:
                    self.delivered.extend(events)
                done()


class Outcomes:
    """Collects a producer's ACK counts and dropped payloads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked = 0
        self.ack_calls = 0
        self.dropped: List[bytes] = []
        self.ack_threads: set = set()

    def on_ack(self, n: int) -> None:
        with self.lock:
            self.acked += n
            self.ack_calls += 1
            self.ack_threads.add(threading.current_thread().name)

    def on_drop(self, payloads: List[bytes]) -> None:
        with self.lock:
            self.dropped.extend(payloads)


def seed_for(name: str) -> int:
    """The seed of a randomised test: CONVEYOR_TEST_SEED replays a run."""
    seed = int(os.environ.get("CONVEYOR_TEST_SEED", random.randrange(1 << 30)))
    print(f"{name}: seed {seed} (replay with CONVEYOR_TEST_SEED={seed})")
    return seed


@pytest.fixture
def outcomes() -> Outcomes:
    return Outcomes()
