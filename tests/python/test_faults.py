"""Client failures, exceptions in clients and callbacks, fault injection."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Dict, List

import pytest

import conveyor
from conftest import FAST, WAIT, Flaky, Gate, Outcomes, Recorder, Scripted, events, seed_for, wait_until


def conveyor_records(caplog, level=logging.ERROR):
    return [r for r in caplog.records if r.name == "conveyor" and r.levelno >= level]


def test_a_short_count_publishes_a_prefix_and_the_rest_is_retried(outcomes: Outcomes):
    client = Scripted([3, 0, None])
    payloads = events(10)
    with conveyor.Pipeline([client], **FAST) as p:
        producer = p.producer(on_ack=outcomes.on_ack)
        producer.publish_batch(payloads)
        p.flush(timeout=WAIT)
    assert client.batches == [10, 7, 7], "the published prefix is never sent again"
    assert client.delivered == payloads
    assert outcomes.acked == 10


def test_retry_keeps_the_connection_and_honours_published(outcomes: Outcomes):
    client = Scripted([conveyor.Retry("busy", published=4), conveyor.Retry("busy again")])
    payloads = events(10)
    with conveyor.Pipeline([client], max_retries=5, **FAST) as p:
        producer = p.producer(on_ack=outcomes.on_ack)
        producer.publish_batch(payloads)
        p.flush(timeout=WAIT)
        stats = p.stats()["clients"][0]
    assert client.batches == [10, 6, 6]
    assert client.delivered == payloads
    assert client.connects == 1, "Retry is a temporary failure on the same connection"
    assert stats["retries"] == 2


def test_an_exception_in_a_client_is_a_failed_publish_and_is_logged(caplog, outcomes: Outcomes):
    caplog.set_level(logging.WARNING, logger="conveyor")
    client = Scripted([ValueError("boom in publish")])
    payloads = events(5)
    with conveyor.Pipeline([client], **FAST) as p:
        producer = p.producer(on_ack=outcomes.on_ack)
        producer.publish_batch(payloads)
        p.flush(timeout=WAIT)
        stats = p.stats()
    assert client.delivered == payloads and outcomes.acked == 5
    assert client.connects == 2, "any other exception breaks the connection: reconnect"
    assert stats["python"]["client_errors"] == 1
    errors = conveyor_records(caplog)
    assert any(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in errors), errors
    assert any("Scripted failed to publish a batch of 5 events" in r.getMessage() for r in errors)


@pytest.mark.parametrize("answer", ["three", -1, 11, 2.5, conveyor.Retry("x", published=99)])
def test_an_out_of_range_answer_counts_as_a_failed_publish(caplog, answer):
    client = Scripted([answer])
    payloads = events(10)
    with conveyor.Pipeline([client], **FAST) as p:
        producer = p.producer()
        producer.publish_batch(payloads)
        p.flush(timeout=WAIT)
        assert producer.counts()["acked"] == 10
    assert client.delivered[-10:] == payloads, "the whole batch is sent again"
    assert conveyor_records(caplog), "the bad answer is reported"


def test_connect_failures_are_retried_with_backoff(caplog):
    class FailsTwice(Recorder):
        def connect(self, timeout):
            super().connect(timeout)
            if self.connects <= 2:
                raise ConnectionRefusedError("not yet")

    client = FailsTwice()
    with conveyor.Pipeline([client], max_retries=-1, **FAST) as p:
        p.producer().publish_batch(events(3))
        p.flush(timeout=WAIT)
        stats = p.stats()["clients"][0]
    assert client.connects == 3 and client.delivered == events(3)
    assert stats["connect_failures"] == 2 and "not yet" in stats["last_error"]


def test_failover_moves_to_the_next_host(outcomes: Outcomes):
    class Down(Recorder):
        def publish(self, events):
            raise ConnectionResetError("host down")

    down, up = Down("down"), Recorder("up")
    with conveyor.Pipeline([down, up], mode="failover", failover_policy="ordered", max_retries=-1, **FAST) as p:
        producer = p.producer(on_ack=outcomes.on_ack)
        producer.publish_batch(events(100))
        p.flush(timeout=WAIT)
    assert up.delivered == events(100) and outcomes.acked == 100


def test_non_guaranteed_events_are_dropped_after_their_retries(outcomes: Outcomes):
    class Refuses(Recorder):
        def publish(self, events):
            raise conveyor.Retry("never")

    with conveyor.Pipeline([Refuses()], max_retries=2, **FAST) as p:
        producer = p.producer(on_ack=outcomes.on_ack, on_drop=outcomes.on_drop)
        producer.publish_batch(events(20))
        p.flush(timeout=WAIT)
        counts = producer.counts()
    assert counts == {"accepted": 20, "acked": 0, "dropped": 20, "in_flight": 0}
    assert outcomes.dropped == events(20), "on_drop receives the payloads themselves, in order"


def test_exceptions_in_on_ack_and_on_drop_are_logged_and_outcomes_still_count(caplog):
    calls: Dict[str, int] = Counter()

    def on_ack(n):
        calls["ack"] += n
        raise KeyError("ack handler bug")

    def on_drop(payloads):
        calls["drop"] += len(payloads)
        raise RuntimeError("drop handler bug")

    class HalfRefused(Recorder):
        def publish(self, events):
            if events[0].startswith(b"drop"):
                raise conveyor.Retry("refused")
            return super().publish(events)

    with conveyor.Pipeline([HalfRefused()], max_retries=0, **FAST) as p:
        keep = p.producer(on_ack=on_ack)
        lose = p.producer(on_drop=on_drop)
        keep.publish_batch(events(10, "keep"))
        p.flush(timeout=WAIT)
        lose.publish_batch(events(10, "drop"))
        p.flush(timeout=WAIT)
        assert keep.counts()["acked"] == 10 and lose.counts()["dropped"] == 10
        stats = p.stats()["python"]
    assert calls == {"ack": 10, "drop": 10}
    assert stats["callback_errors"] == stats["callback_calls"] >= 2
    messages = [r.getMessage() for r in conveyor_records(caplog)]
    assert any("on_ack(10) raised" in m for m in messages), messages
    assert any("on_drop raised" in m for m in messages), messages


def test_callbacks_may_publish_but_not_close_or_flush(outcomes: Outcomes):
    client = Recorder()
    refusals: List[BaseException] = []
    with conveyor.Pipeline([client], **FAST) as p:
        follow_up = p.producer(on_ack=outcomes.on_ack)

        def on_ack(n):
            for call in (lambda: p.close(), lambda: p.flush(timeout=1)):
                try:
                    call()
                except conveyor.Error as e:
                    refusals.append(e)
            follow_up.publish_batch([b"follow-up"] * n)

        first = p.producer(on_ack=on_ack)
        first.publish_batch(events(5))
        wait_until(lambda: outcomes.acked == 5, what="the follow-up events to be acked")
        p.flush(timeout=WAIT)
    assert len(refusals) >= 2 and all(isinstance(e, conveyor.InvalidArgumentError) for e in refusals)
    assert client.delivered == events(5) + [b"follow-up"] * 5


def test_close_from_a_client_callback_is_refused():
    refusals: List[BaseException] = []
    pipelines = []

    class ClosesItsPipeline(Recorder):
        def publish(self, events):
            try:
                pipelines[0].close(timeout=1)
            except conveyor.Error as e:
                refusals.append(e)
            return super().publish(events)

    client = ClosesItsPipeline()
    with conveyor.Pipeline([client], **FAST) as p:
        pipelines.append(p)
        p.producer().publish(b"x")
        p.flush(timeout=WAIT)
        assert not p.closed
    assert client.delivered == [b"x"]
    assert len(refusals) == 1 and isinstance(refusals[0], conveyor.InvalidArgumentError)


@pytest.mark.parametrize("mode", ["single", "failover", "loadbalance"])
def test_fault_injection_guaranteed_delivery_event_by_event(mode):
    """Random connect failures, exceptions, Retry after a prefix and short counts:
    every guaranteed event is acknowledged exactly once, in publish order, only
    after its client reported it published, and none is dropped."""
    seed = seed_for(f"fault injection ({mode})")
    n_clients = 1 if mode == "single" else 3
    clients = [Flaky(seed + i, f"flaky{i}") for i in range(n_clients)]
    producers = 3
    per_producer = 1500
    published = {k: events(per_producer, f"p{k}") for k in range(producers)}
    violations: List[str] = []
    acked = Counter()
    lock = threading.Lock()

    def delivered_now() -> Counter:
        seen: Counter = Counter()
        for c in clients:
            with c.lock:
                seen.update(c.delivered)
        return seen

    def on_ack_for(k):
        def on_ack(n):
            with lock:
                start = acked[k]
                acked[k] += n
                prefix = published[k][start:acked[k]]
            seen = delivered_now()
            missing = [e for e in prefix if not seen[e]]
            if missing:
                violations.append(f"producer {k}: acked before delivery: {missing[:3]}")
        return on_ack

    drops: List[bytes] = []
    with conveyor.Pipeline(clients, mode=mode, max_retries=0, bulk_max_size=97, queue_events=600, **FAST) as p:
        prods = [p.producer(on_ack=on_ack_for(k), on_drop=drops.extend, guaranteed=True) for k in range(producers)]

        def run(k):
            for i in range(0, per_producer, 50):
                assert prods[k].publish_batch(published[k][i:i + 50], timeout=WAIT) == 50

        threads = [threading.Thread(target=run, args=(k,)) for k in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        p.flush(timeout=60)
        stats = p.stats()
        counts = [pr.counts() for pr in prods]
    assert not violations, violations[:5]
    assert drops == []
    for k in range(producers):
        assert counts[k] == {"accepted": per_producer, "acked": per_producer, "dropped": 0, "in_flight": 0}
        assert acked[k] == per_producer
    seen = delivered_now()
    for k in range(producers):
        assert all(seen[e] >= 1 for e in published[k]), "every event reached an endpoint"
    assert set(seen) <= {e for batch in published.values() for e in batch}
    assert stats["retried_batches"] > 0, f"the seed injected no failure at all (seed {seed})"


def test_fault_injection_without_guarantee_balances_every_event():
    seed = seed_for("fault injection (not guaranteed)")
    clients = [Flaky(seed + i, f"flaky{i}") for i in range(2)]
    outcomes = Outcomes()
    payloads = events(3000)
    with conveyor.Pipeline(clients, max_retries=1, bulk_max_size=64, **FAST) as p:
        producer = p.producer(on_ack=outcomes.on_ack, on_drop=outcomes.on_drop)
        for i in range(0, len(payloads), 100):
            producer.publish_batch(payloads[i:i + 100], timeout=WAIT)
        p.flush(timeout=60)
        counts = producer.counts()
    assert counts["accepted"] == 3000 and counts["in_flight"] == 0
    assert counts["acked"] == outcomes.acked and counts["dropped"] == len(outcomes.dropped)
    assert outcomes.acked + len(outcomes.dropped) == 3000
    dropped = set(outcomes.dropped)
    assert len(dropped) == len(outcomes.dropped), "no event is reported dropped twice"
    seen: Counter = Counter()
    for c in clients:
        seen.update(c.delivered)
    assert all(seen[e] >= 1 for e in payloads if e not in dropped), "every acked event was delivered"


def test_a_stalled_client_loses_its_batch_to_another_after_publish_timeout(outcomes: Outcomes):
    stalled, fast = Gate(), Recorder("fast")
    with conveyor.Pipeline([stalled], mode="loadbalance", publish_timeout=0.05, **FAST) as p:
        producer = p.producer(on_ack=outcomes.on_ack)
        producer.publish_batch(events(5))
        wait_until(stalled.entered.is_set, what="the first client to stall on the batch")
        p.add_client(fast)
        p.flush(timeout=WAIT)
        assert fast.delivered == events(5) and outcomes.acked == 5
        stalled.release()
        wait_until(lambda: p.stats()["duplicates"] == 5, what="the late result to count as duplicates")
        stats = p.stats()
    assert stats["handoffs"] >= 1
    assert outcomes.acked == 5, "the late result acknowledges nothing twice"
