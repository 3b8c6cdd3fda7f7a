"""Sinks: research/goevents-aresdb.md §4 cases 1-22 (with the "Fixed" behaviour),
pipelines as sinks, sinks as clients, and fan-out to pipelines."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import threading
import time
from typing import List, Optional

import pytest

import conveyor
from conftest import FAST, WAIT, Outcomes, Recorder, events, seed_for, wait_until


class Probe(conveyor.Sink):
    """Records what it got; can fail, wait at a gate, or report closed, on demand."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.got: List[bytes] = []
        self.writes = 0
        self.closes = 0
        self.fail_next = 0
        self.closed_after: Optional[int] = None
        self.gate: Optional[threading.Event] = None
        self.entered = threading.Event()

    def write(self, event: bytes) -> None:
        with self.lock:
            self.writes += 1
        self.entered.set()
        if self.gate is not None and not self.gate.wait(WAIT):
            raise RuntimeError("the gate never opened")
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                raise RuntimeError("probe failure")
            if self.closed_after is not None and len(self.got) >= self.closed_after:
                raise conveyor.ClosedError("probe closed")
            self.got.append(event)

    def close(self) -> None:
        with self.lock:
            self.closes += 1

    def hold(self) -> threading.Event:
        """Makes writes wait until the returned event is set."""
        self.gate = threading.Event()
        return self.gate


def close_check(sink) -> None:
    sink.close()
    sink.close()
    with pytest.raises(conveyor.ClosedError):
        sink.write(b"late")


def tag(writer: int, index: int) -> bytes:
    return b"%03d:%06d" % (writer, index)


def conveyor_errors(caplog) -> List[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "conveyor" and r.levelno >= logging.ERROR]


# --- case 1 -------------------------------------------------------------------------


def test_every_sink_closes_twice_and_refuses_writes_after():
    probes = [Probe() for _ in range(4)]
    close_check(conveyor.Broadcaster([probes[0]]))
    close_check(conveyor.QueueSink(probes[1], 8))
    close_check(conveyor.Filter(probes[2], lambda e: True))
    close_check(conveyor.RetryingSink(probes[3], conveyor.Breaker(3, 0.001)))
    close_check(conveyor.ChannelSink(4))
    pipeline = conveyor.Pipeline([Recorder()], **FAST)
    close_check(pipeline.as_sink())
    assert pipeline.closed, "closing a pipeline's sink closes the pipeline"
    assert [p.closes for p in probes] == [1, 1, 1, 1], "combinators close what they wrap, once"


def test_every_sink_is_a_context_manager_that_closes():
    probe = Probe()
    with conveyor.QueueSink(conveyor.Filter(probe, lambda e: True), 4) as q:
        q.write(b"x")
    assert probe.got == [b"x"] and probe.closes == 1
    with conveyor.ChannelSink(2) as ch:
        ch.write(b"y")
    with pytest.raises(conveyor.ClosedError):
        ch.write(b"z")
    with Probe() as own:
        pass
    assert own.closes == 1
    for cls in [conveyor.Broadcaster, conveyor.QueueSink, conveyor.Filter, conveyor.RetryingSink,
                conveyor.ChannelSink, conveyor.PipelineSink]:
        assert issubclass(cls, conveyor.Sink), cls
    assert issubclass(conveyor.Breaker, conveyor.RetryStrategy)


# --- Broadcaster ----------------------------------------------------------------------


# Case 2
def test_broadcast_of_concurrent_writes_reaches_every_member_exactly_once():
    probes = [Probe() for _ in range(10)]
    b = conveyor.Broadcaster(probes)
    for p in probes:
        b.add(p)  # already there: no effect

    def writer(t: int) -> None:
        for i in range(100):
            b.write(tag(t, i))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = sorted(tag(t, i) for t in range(10) for i in range(100))
    for p in probes:
        assert sorted(p.got) == expected, "every member got every event exactly once"
    assert b.stats()["written"] == 1000 and b.stats()["forwarded"] == 10_000


# Cases 3 and 4
def test_adding_twice_delivers_once_removing_unknown_is_a_no_op_and_removed_is_not_closed():
    a, c = Probe(), Probe()
    b = conveyor.Broadcaster([a, a])
    b.add(a)
    b.add(c)
    assert len(b) == 2
    b.remove(Probe())
    b.write(b"1")
    b.remove(a)
    b.write(b"2")
    assert (a.got, c.got) == ([b"1"], [b"1", b"2"])
    b.close()
    assert (a.closes, c.closes) == (0, 1)


# Case 5 (Fixed: no skipped or doubled member)
def test_a_member_reporting_closed_is_removed_and_the_others_get_the_event_once():
    probes = [Probe() for _ in range(4)]
    probes[1].closed_after = 0
    b = conveyor.Broadcaster(probes)
    b.write(b"e")
    assert [len(p.got) for p in probes] == [1, 0, 1, 1]
    assert len(b) == 3
    b.write(b"f")
    assert [len(p.got) for p in probes] == [2, 0, 2, 2]
    assert probes[1].writes == 1


def test_a_failing_member_is_counted_and_logged_and_the_others_still_get_the_event(caplog):
    bad, good = Probe(), Probe()
    bad.fail_next = 1
    b = conveyor.Broadcaster([bad, good])
    b.write(b"x")
    assert good.got == [b"x"] and b.stats()["failures"] == 1
    assert any("Probe.write raised" in r.getMessage() and r.exc_info for r in conveyor_errors(caplog))


# Case 6
def test_broadcaster_close_closes_each_member_once():
    probes = [Probe() for _ in range(3)]
    b = conveyor.Broadcaster(probes)
    b.close()
    b.close()
    assert [p.closes for p in probes] == [1, 1, 1]
    with pytest.raises(conveyor.ClosedError):
        b.add(Probe())
    with pytest.raises(conveyor.ClosedError):
        b.remove(probes[0])
    with pytest.raises(conveyor.ClosedError):
        b.write(b"x")


def test_a_membership_making_a_sink_write_into_itself_is_refused():
    probe = Probe()
    b = conveyor.Broadcaster([probe])
    with pytest.raises(conveyor.InvalidArgumentError, match="write into itself"):
        b.add(b)
    queued = conveyor.QueueSink(conveyor.Filter(b, lambda e: True), 4)
    with pytest.raises(conveyor.InvalidArgumentError):
        b.add(conveyor.Broadcaster([queued]))
    b.write(b"still fine")
    assert probe.got == [b"still fine"]
    queued.close()
    with pytest.raises(TypeError, match="must be a sink"):
        b.add(42)


# Case 7 (Fixed: isolation with queue sinks)
def test_a_stalled_member_behind_a_queue_does_not_delay_the_others():
    stalled, fast = Probe(), Probe()
    hold = stalled.hold()
    q = conveyor.QueueSink(stalled, 10_000)
    b = conveyor.Broadcaster([q, fast])
    for i in range(1000):
        b.write(tag(0, i))
    assert len(fast.got) == 1000, "the fast member got everything while the other is stuck"
    hold.set()
    assert q.close(WAIT) == {"delivered": 1000, "dropped": 0, "drained": True}
    assert stalled.got == [tag(0, i) for i in range(1000)]


# --- ChannelSink ----------------------------------------------------------------------


# Case 8 (Fixed: deterministic)
def test_a_closed_channel_with_room_always_refuses_and_keeps_what_it_buffered():
    ch = conveyor.ChannelSink(100)
    with pytest.raises(conveyor.TimeoutError):
        ch.recv(timeout=0)
    ch.write(b"a")
    ch.write(memoryview(b"b"))
    ch.close()
    for _ in range(100):
        with pytest.raises(conveyor.ClosedError):
            ch.write(b"c")
    assert len(ch) == 2
    assert ch.recv() == b"a"
    assert list(ch) == [b"b"], "iteration ends once closed and drained"
    for _ in range(100):
        with pytest.raises(conveyor.ClosedError):
            ch.recv(timeout=0)


def test_closing_a_channel_wakes_a_blocked_writer_and_a_blocked_reader():
    full, empty = conveyor.ChannelSink(1), conveyor.ChannelSink(1)
    full.write(b"a")
    outcomes: List[BaseException] = []

    def blocked(call) -> None:
        try:
            call()
        except conveyor.ClosedError as e:
            outcomes.append(e)

    threads = [threading.Thread(target=blocked, args=(lambda: full.write(b"b"),)),
               threading.Thread(target=blocked, args=(lambda: empty.recv(),))]
    for t in threads:
        t.start()
    full.close()
    empty.close()
    for t in threads:
        t.join(WAIT)
    assert len(outcomes) == 2
    assert full.recv(timeout=0) == b"a"


def test_channel_iteration_reads_concurrent_writers_completely():
    ch = conveyor.ChannelSink(1)

    def writer(t: int) -> None:
        for i in range(10):
            ch.write(tag(t, i))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(10)]
    for t in threads:
        t.start()

    def closer() -> None:
        for t in threads:
            t.join()
        ch.close()

    threading.Thread(target=closer).start()
    got = list(ch)
    assert sorted(got) == sorted(tag(t, i) for t in range(10) for i in range(10))


# --- Filter ---------------------------------------------------------------------------


# Case 9
def test_filter_keeps_evens():
    p = Probe()
    f = conveyor.Filter(p, lambda e: e[0] % 2 == 0)
    for i in range(100):
        f.write(bytes([i]))
    assert len(p.got) == 50
    s = f.stats()
    assert (s["written"], s["forwarded"], s["filtered"]) == (100, 50, 50)


def test_a_raising_matcher_is_logged_and_the_event_is_forwarded(caplog):
    p = Probe()
    f = conveyor.Filter(p, lambda e: 1 / 0)
    f.write(b"kept")
    assert p.got == [b"kept"]
    assert any("matcher raised" in r.getMessage() for r in conveyor_errors(caplog))
    with pytest.raises(TypeError):
        conveyor.Filter(p, "not callable")


# --- QueueSink ------------------------------------------------------------------------


# Case 10
def test_queue_sink_keeps_fifo():
    p = Probe()
    q = conveyor.QueueSink(p, 64)
    payloads = events(10_000)
    for e in payloads:
        q.write(e)
    q.close()
    assert p.got == payloads


# Case 11
def test_queue_sink_close_drains_then_closes_downstream():
    p = Probe()
    q = conveyor.QueueSink(p, 1000, close_timeout=None)
    for e in events(500):
        q.write(e)
    assert q.close() == {"delivered": 500, "dropped": 0, "drained": True}
    assert len(p.got) == 500 and p.closes == 1


# Case 12 (Fixed: the close has a deadline and reports every drop)
def test_queue_sink_in_front_of_a_dead_sink_closes_within_its_deadline_and_reports_every_drop():
    dead = Probe()
    hold = dead.hold()
    dropped: List[bytes] = []
    q = conveyor.QueueSink(dead, 100, on_drop=dropped.extend)
    payloads = events(50)
    for e in payloads:
        q.write(e)
    assert dead.entered.wait(WAIT), "the dead sink holds the first event"
    assert q.stats()["queued"] == 49
    started = time.monotonic()
    report = q.close(timeout=0.05)
    assert time.monotonic() - started < 5
    assert report == {"delivered": 0, "dropped": 49, "drained": False}
    assert dropped == payloads[1:], "every event but the one stuck in the dead sink, reported"
    assert dead.closes == 1
    hold.set()


# Case 13
@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest", "block"])
def test_bounded_queue_sink_overflow_policies(overflow: str):
    probe = Probe()
    hold = probe.hold()
    dropped: List[bytes] = []
    q = conveyor.QueueSink(probe, 2, overflow=overflow, on_drop=dropped.extend)
    q.write(b"0")
    assert probe.entered.wait(WAIT), "the destination holds event 0"
    q.write(b"1")
    q.write(b"2")
    if overflow == "drop_newest":
        with pytest.raises(conveyor.FullError):
            q.write(b"3")
        assert dropped == [b"3"]
        expected = [b"0", b"1", b"2"]
    elif overflow == "drop_oldest":
        q.write(b"3")
        assert dropped == [b"1"] and q.stats()["dropped"] == 1
        expected = [b"0", b"2", b"3"]
    else:
        writer = threading.Thread(target=q.write, args=(b"3",))
        writer.start()
        writer.join(0.05)
        assert writer.is_alive(), "a full blocking queue applies back-pressure"
        hold.set()
        writer.join(WAIT)
        assert not writer.is_alive()
        expected = [b"0", b"1", b"2", b"3"]
    hold.set()
    report = q.close(WAIT)
    assert probe.got == expected
    assert report["delivered"] == len(expected) and report["dropped"] == len(dropped)
    with pytest.raises(conveyor.InvalidArgumentError):
        conveyor.QueueSink(probe, 2, overflow="drop_everything")
    with pytest.raises(conveyor.InvalidArgumentError):
        conveyor.QueueSink(probe, 0)


# Case 14 (Fixed: surfaced)
def test_downstream_errors_are_counted_and_reported(caplog):
    p = Probe()
    p.fail_next = 3
    dropped: List[bytes] = []
    q = conveyor.QueueSink(p, 16, on_drop=dropped.extend)
    payloads = events(10)
    for e in payloads:
        q.write(e)
    report = q.close(WAIT)
    assert (report["delivered"], report["dropped"]) == (7, 3)
    assert dropped == payloads[:3] and q.stats()["failures"] == 3
    assert sum("Probe.write raised" in r.getMessage() for r in conveyor_errors(caplog)) == 3


def test_a_raising_drop_hook_is_logged_and_the_drop_still_counts(caplog):
    p = Probe()
    p.fail_next = 1

    def hook(events: List[bytes]) -> None:
        raise ValueError("hook failure")

    q = conveyor.QueueSink(p, 4, on_drop=hook)
    q.write(b"x")
    assert q.close(WAIT)["dropped"] == 1
    assert any("on_drop raised" in r.getMessage() for r in conveyor_errors(caplog))


# Case 15 (Fixed: empty payloads are fine)
def test_empty_payloads_pass_through_every_sink():
    p = Probe()
    b = conveyor.Broadcaster([conveyor.QueueSink(conveyor.Filter(p, lambda e: True), 4)])
    b.write(b"")
    b.close()
    assert p.got == [b""]


# --- RetryingSink ---------------------------------------------------------------------


class Flaky(conveyor.Sink):
    """Fails the first 50 attempts, then 9 in 10 (seeded)."""

    def __init__(self, seed: int) -> None:
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.attempts = 0
        self.ok: List[bytes] = []

    def write(self, event: bytes) -> None:
        with self.lock:
            self.attempts += 1
            if self.attempts <= 50 or self.rng.random() < 0.9:
                raise ConnectionError("flaky")
            self.ok.append(event)


class Counting(conveyor.RetryStrategy):
    """Counts its calls; gives up after `limit` failures in a row."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.proceeds = 0
        self.failures = 0
        self.in_a_row = 0

    def proceed(self) -> float:
        self.proceeds += 1
        return 0.0

    def failure(self) -> bool:
        self.failures += 1
        self.in_a_row += 1
        return self.in_a_row >= self.limit

    def success(self) -> None:
        self.in_a_row = 0


# Case 16
@pytest.mark.parametrize("strategy", ["breaker", "exponential"])
def test_retrying_sink_delivers_everything_through_a_flaky_sink(strategy: str, caplog):
    caplog.set_level(logging.CRITICAL, logger="conveyor")  # a thousand expected failures
    seed = seed_for("flaky sink")
    flaky = Flaky(seed)
    if strategy == "breaker":
        r = conveyor.RetryingSink(flaky, conveyor.Breaker(3, 0.0001))
    else:
        r = conveyor.RetryingSink(flaky, conveyor.ExponentialBackoff(0.00001, 0.00001, 0.0005, seed=seed))
    threads = [threading.Thread(target=r.write, args=(tag(0, i),)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(flaky.ok) == [tag(0, i) for i in range(100)]
    assert r.stats()["forwarded"] == 100 and flaky.attempts > 150
    close_check(r)


# Case 17
def test_downstream_closed_is_returned_at_once():
    p = Probe()
    p.closed_after = 0
    strategy = Counting(limit=100)
    r = conveyor.RetryingSink(p, strategy)
    with pytest.raises(conveyor.ClosedError):
        r.write(b"x")
    assert (strategy.proceeds, strategy.failures) == (1, 0), "one attempt, no retry"


# Case 18 (Fixed: a give-up is reported to the writer)
def test_a_strategy_giving_up_is_reported_to_the_writer(caplog):
    caplog.set_level(logging.CRITICAL, logger="conveyor")
    p = Probe()
    p.fail_next = 10
    r = conveyor.RetryingSink(p, Counting(limit=3))
    with pytest.raises(conveyor.ClientError, match="dropped by the retry strategy after 3 attempts"):
        r.write(b"x")
    assert r.stats()["dropped"] == 1 and p.writes == 3


def test_a_broken_strategy_gives_up_instead_of_retrying_forever(caplog):
    class Broken:
        def proceed(self) -> float:
            return -1.0

        def failure(self) -> bool:
            raise RuntimeError("broken strategy")

        def success(self) -> None:
            pass

    p = Probe()
    p.fail_next = 1
    r = conveyor.RetryingSink(p, Broken())
    with pytest.raises(conveyor.ClientError, match="after 1 attempts"):
        r.write(b"x")
    messages = [r.getMessage() for r in conveyor_errors(caplog)]
    assert any("Broken.proceed() raised" in m for m in messages)
    assert any("Broken.failure() raised" in m for m in messages)
    with pytest.raises(TypeError, match="has no proceed"):
        conveyor.RetryingSink(p, object())


# Case 19
def test_close_during_a_backoff_wait_returns_closed_promptly(caplog):
    p = Probe()
    p.fail_next = 1 << 30
    r = conveyor.RetryingSink(p, conveyor.Breaker(1, 600))
    outcome: List[BaseException] = []

    def writer() -> None:
        try:
            r.write(b"x")
        except conveyor.ClosedError as e:
            outcome.append(e)

    t = threading.Thread(target=writer)
    t.start()
    wait_until(lambda: r.stats()["failures"] >= 1, what="the first attempt to fail")
    started = time.monotonic()
    r.close()
    t.join(WAIT)
    assert len(outcome) == 1 and time.monotonic() - started < 5


# Case 20
def test_retrying_sink_serializes_concurrent_writers_in_order(caplog):
    p = Probe()
    p.fail_next = 5
    r = conveyor.RetryingSink(p, conveyor.Breaker(100, 0))

    def writer(t: int) -> None:
        for i in range(200):
            r.write(tag(t, i))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in range(4):
        mine = [e for e in p.got if e.startswith(b"%03d:" % t)]
        assert mine == [tag(t, i) for i in range(200)], f"writer {t} out of order"


# Case 21
def test_breaker_delays_after_threshold_and_resets_on_success():
    b = conveyor.Breaker(3, 0.1)
    for _ in range(3):
        assert b.proceed() == 0.0
        assert b.failure() is False, "a breaker never gives up"
    assert 0.05 < b.proceed() <= 0.1
    b.success()
    assert b.proceed() == 0.0


# Case 22 (Fixed: overflow-safe, seeded)
def test_exponential_backoff_bounds_and_overflow():
    e = conveyor.ExponentialBackoff(1, 1, 20, seed=seed_for("exponential backoff"))
    assert e.proceed() == 0.0
    bounds = []
    for _ in range(7):
        assert e.failure() is False
        bounds.append(e.bound)
        assert all(e.proceed() < e.bound for _ in range(1000))
    assert bounds == [2, 3, 5, 9, 17, 20, 20]
    for _ in range(10_000):
        e.failure()
    assert e.bound == 20
    e.success()
    assert e.proceed() == 0.0
    with pytest.raises(conveyor.InvalidArgumentError):
        conveyor.ExponentialBackoff(-1)


def test_a_strategy_object_is_shared_with_the_sinks_using_it():
    breaker = conveyor.Breaker(5, 60)
    for _ in range(3):
        breaker.failure()
    p = Probe()
    conveyor.RetryingSink(p, breaker).write(b"x")  # below the threshold: at once
    assert p.got == [b"x"]
    for _ in range(4):
        breaker.failure()
    assert breaker.proceed() == 0.0, "the sink's success reset the breaker the caller holds"
    breaker.failure()
    assert breaker.proceed() > 59


# --- pipelines and sinks --------------------------------------------------------------


def test_a_pipeline_as_a_sink_reports_every_event(outcomes: Outcomes):
    client = Recorder()
    payloads = events(1000)
    with conveyor.Pipeline([client], **FAST) as p:
        sink = p.as_sink(on_ack=outcomes.on_ack, on_drop=outcomes.on_drop)
        for e in payloads:
            sink.write(e)
        p.flush(timeout=WAIT)
        assert outcomes.acked == 1000 and client.delivered == payloads
        stats = sink.stats()
        assert (stats["kind"], stats["written"], stats["forwarded"]) == ("pipeline", 1000, 1000)
        sink.close()
        assert p.closed
    with pytest.raises(conveyor.ClosedError):
        sink.write(b"late")


def test_sinks_serve_as_clients_and_cycles_are_refused():
    ch = conveyor.ChannelSink(1000)
    own = Probe()
    b = conveyor.Broadcaster([ch])
    with conveyor.Pipeline([b], **FAST) as p:
        producer = p.producer()
        producer.publish_batch(events(100))
        p.flush(timeout=WAIT)
        assert [ch.recv(timeout=WAIT) for _ in range(100)] == events(100)
        as_sink = p.as_sink()
        with pytest.raises(conveyor.InvalidArgumentError, match="write into itself"):
            b.add(as_sink)
        with pytest.raises(conveyor.InvalidArgumentError, match="write into itself"):
            p.add_client(conveyor.QueueSink(as_sink, 4))
    with conveyor.Pipeline([own], **FAST) as p:
        p.producer().publish(b"to a Python sink")
        p.flush(timeout=WAIT)
    assert own.got == [b"to a Python sink"]
    assert own.closes == 0, "a pipeline never closes its sinks"
    with pytest.raises(TypeError, match="publish"):
        conveyor.Pipeline([object()])


def test_a_closed_sink_client_counts_as_broken_and_events_go_elsewhere():
    closed = conveyor.ChannelSink(10)
    closed.close()
    backup = Recorder()
    with conveyor.Pipeline([closed, backup], mode="failover", failover_policy="ordered", **FAST) as p:
        p.producer().publish(b"x")
        p.flush(timeout=WAIT)
    assert backup.delivered == [b"x"]


class DeadEndpoint(conveyor.Client):
    def __init__(self, host: str) -> None:
        self.host = host

    def connect(self, timeout: float) -> None:
        raise ConnectionRefusedError(f"{self.host}: connection refused")

    def publish(self, events: List[bytes]) -> Optional[int]:
        raise AssertionError("never connected")


def test_a_broadcaster_of_two_pipelines_keeps_delivering_when_one_output_is_dead():
    total = 5000
    live_out, dead_out = Outcomes(), Outcomes()
    queue_drops: List[bytes] = []
    lock = threading.Lock()

    def on_queue_drop(events: List[bytes]) -> None:
        with lock:
            queue_drops.extend(events)

    live = conveyor.Pipeline([Recorder("live-1"), Recorder("live-2")], mode="loadbalance", **FAST)
    dead = conveyor.Pipeline(hosts=["dead-1", "dead-2"], factory=DeadEndpoint, mode="loadbalance",
                             queue_events=512, **FAST)
    fanout = conveyor.Broadcaster([
        conveyor.QueueSink(live.as_sink(on_ack=live_out.on_ack, on_drop=live_out.on_drop), 256),
        conveyor.QueueSink(dead.as_sink(on_ack=dead_out.on_ack, on_drop=dead_out.on_drop, close_timeout=0),
                           256, overflow="drop_oldest", close_timeout=0.05, on_drop=on_queue_drop),
    ])
    for e in events(total):
        fanout.write(e)
    wait_until(lambda: live_out.acked == total, what="the live output to acknowledge everything")
    assert dead_out.acked == 0
    fanout.close()
    assert live.closed and dead.closed
    wait_until(lambda: dead_out.acked + len(dead_out.dropped) + len(queue_drops) == total,
               what="an outcome for every event on the dead side")
    assert len(dead_out.dropped) > 0 and len(queue_drops) > 0
    assert live_out.dropped == []
    assert dead.stats()["in_flight"] == 0


def test_open_queue_sinks_are_closed_at_exit_and_report_their_drops():
    script = """
import threading, conveyor
class Stuck(conveyor.Sink):
    def __init__(self): self.entered = threading.Event(); self.gate = threading.Event()
    def write(self, e):
        self.entered.set()
        self.gate.wait(30)
stuck = Stuck()
q = conveyor.QueueSink(stuck, 100, on_drop=lambda evs: print("dropped", len(evs), flush=True))
for i in range(10):
    q.write(b"%d" % i)
stuck.entered.wait(30)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["dropped", "9"]


def test_sink_stats_nest():
    p = Probe()
    q = conveyor.QueueSink(conveyor.Filter(p, lambda e: len(e) > 0), 8)
    q.write(b"a")
    q.write(b"")
    q.close()
    s = q.stats()
    assert (s["kind"], s["written"], s["forwarded"]) == ("queue", 2, 2)
    inner = s["inner"][0]
    assert (inner["kind"], inner["filtered"], inner["forwarded"]) == ("filter", 1, 1)
    assert inner["inner"][0]["kind"] == "custom"
