"""Threads: concurrent producers, the GIL released while blocked, Ctrl-C."""

from __future__ import annotations

import _thread
import linecache
import sys
import threading
import time
from collections import defaultdict
from typing import Dict, List

import pytest

import conveyor
from conftest import FAST, WAIT, Gate, Outcomes, Recorder, events, wait_until


def test_concurrent_producers_keep_their_own_order():
    clients = [Recorder("a"), Recorder("b")]
    threads_n, per_thread = 4, 5000
    outcomes = [Outcomes() for _ in range(threads_n)]
    with conveyor.Pipeline(clients, queue_events=512, bulk_max_size=128, **FAST) as p:
        producers = [p.producer(on_ack=o.on_ack) for o in outcomes]
        start = threading.Barrier(threads_n)

        def run(k: int) -> None:
            start.wait()
            for i, e in enumerate(events(per_thread, f"t{k}")):
                if i % 3:
                    producers[k].publish(e, timeout=WAIT)
                else:
                    producers[k].publish_batch([e], timeout=WAIT)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        p.flush(timeout=WAIT)
        counts = [pr.counts() for pr in producers]
    assert all(c == {"accepted": per_thread, "acked": per_thread, "dropped": 0, "in_flight": 0} for c in counts)
    assert [o.acked for o in outcomes] == [per_thread] * threads_n
    per_producer: Dict[bytes, List[bytes]] = defaultdict(list)
    for c in clients:
        for e in c.delivered:
            per_producer[e.split(b"-")[0]].append(e)
    assert sorted(per_producer) == [f"t{k}".encode() for k in range(threads_n)]
    for k in range(threads_n):
        # Load balancing interleaves batches across clients; each batch keeps order,
        # and nothing is lost or duplicated.
        assert sorted(per_producer[f"t{k}".encode()]) == events(per_thread, f"t{k}")
    for c in clients:
        mine: Dict[bytes, List[bytes]] = defaultdict(list)
        for e in c.delivered:
            mine[e.split(b"-")[0]].append(e)
        assert all(v == sorted(v) for v in mine.values()), "a client sees each producer's events in order"


def test_another_python_thread_runs_while_a_publish_blocks():
    gate = Gate()
    ticks = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            ticks[0] += 1

    with conveyor.Pipeline([gate], queue_events=2, bulk_max_size=1, **FAST) as p:
        producer = p.producer()
        producer.publish_batch([b"a", b"b"])
        wait_until(gate.entered.is_set, what="the client to hold a batch")
        spinner = threading.Thread(target=spin)
        spinner.start()
        try:
            seen: List[int] = []

            def observe_then_release() -> None:
                before = ticks[0]
                wait_until(lambda: ticks[0] > before + 1000, what="the spinner to run while publish blocks")
                seen.append(ticks[0] - before)
                gate.release()

            observer = threading.Thread(target=observe_then_release)
            observer.start()
            producer.publish(b"c", timeout=WAIT)
            observer.join()
        finally:
            stop.set()
            spinner.join()
        p.flush(timeout=WAIT)
    assert seen and seen[0] > 1000
    assert gate.delivered == [b"a", b"b", b"c"]


def interrupt_at(statement: str) -> threading.Thread:
    """Sends Ctrl-C to the main thread once it executes the line `statement` (a
    blocking call into conveyor: the frame stays on that line while it waits)."""
    main = threading.main_thread().ident

    def main_is_at_call() -> bool:
        frame = sys._current_frames().get(main)
        return frame is not None and linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip() == statement

    def run() -> None:
        wait_until(main_is_at_call, what=f"the main thread to block in {statement}")
        _thread.interrupt_main()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_ctrl_c_interrupts_a_blocking_publish():
    gate = Gate()
    with conveyor.Pipeline([gate], queue_events=2, bulk_max_size=1, **FAST) as p:
        producer = p.producer()
        producer.publish_batch([b"a", b"b"])
        wait_until(gate.entered.is_set, what="the client to hold a batch")
        interrupter = interrupt_at('producer.publish(b"blocked")')
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            producer.publish(b"blocked")
        assert time.monotonic() - started < WAIT
        interrupter.join()
        interrupter = interrupt_at('producer.publish_batch([b"x", b"y"])')
        with pytest.raises(KeyboardInterrupt):
            producer.publish_batch([b"x", b"y"])
        interrupter.join()
        assert producer.counts()["accepted"] == 2, "the interrupted publishes accepted nothing"
        gate.release()
        p.flush(timeout=WAIT)
    assert gate.delivered == [b"a", b"b"]


def test_ctrl_c_interrupts_a_blocking_flush():
    gate = Gate()
    with conveyor.Pipeline([gate], **FAST) as p:
        p.producer().publish(b"held")
        wait_until(gate.entered.is_set, what="the client to hold a batch")
        interrupter = interrupt_at("p.flush()")
        with pytest.raises(KeyboardInterrupt):
            p.flush()
        interrupter.join()
        gate.release()
        p.flush(timeout=WAIT)
    assert gate.delivered == [b"held"]


def test_callbacks_run_on_conveyor_threads_once_per_round(outcomes: Outcomes):
    client_threads = set()

    class Where(Recorder):
        def publish(self, events):
            client_threads.add(threading.current_thread().name)
            return super().publish(events)

    with conveyor.Pipeline([Where()], bulk_max_size=100, **FAST) as p:
        p.producer(on_ack=outcomes.on_ack).publish_batch(events(1000))
        p.flush(timeout=WAIT)
    main = threading.current_thread().name
    assert client_threads and main not in client_threads
    assert outcomes.ack_threads and main not in outcomes.ack_threads
    assert outcomes.acked == 1000 and outcomes.ack_calls <= 10


def test_close_wakes_every_blocked_publisher():
    gate = Gate()
    errors: List[BaseException] = []
    lock = threading.Lock()
    p = conveyor.Pipeline([gate], queue_events=2, bulk_max_size=1, **FAST)
    producer = p.producer()
    producer.publish_batch([b"a", b"b"])
    wait_until(gate.entered.is_set, what="the client to hold a batch")

    def blocked_publisher() -> None:
        try:
            producer.publish(b"never accepted")
        except conveyor.Error as e:
            with lock:
                errors.append(e)

    publishers = [threading.Thread(target=blocked_publisher) for _ in range(3)]
    for t in publishers:
        t.start()

    def release_when_woken() -> None:
        wait_until(lambda: len(errors) == 3, what="close to wake the blocked publishers")
        gate.release()

    releaser = threading.Thread(target=release_when_woken)
    releaser.start()
    report = p.close(timeout=0.1)
    for t in publishers + [releaser]:
        t.join()
    assert all(isinstance(e, conveyor.ClosedError) for e in errors)
    assert report["accepted"] == 2 and report["acked"] + report["dropped"] == 2
    assert producer.counts()["in_flight"] == 0
