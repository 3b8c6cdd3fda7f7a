"""Asynchronous clients (completion from any thread) and the asyncio helpers."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from typing import List

import pytest

import conveyor
from conftest import FAST, WAIT, Gate, Outcomes, Recorder, ThreadedAsync, events, wait_until


def test_an_async_client_completes_from_another_thread(outcomes: Outcomes):
    client = ThreadedAsync()
    payloads = events(2000)
    with conveyor.Pipeline([client], bulk_max_size=100, pipelining=3, **FAST) as p:
        producer = p.producer(on_ack=outcomes.on_ack)
        producer.publish_batch(payloads)
        p.flush(timeout=WAIT)
        counts = producer.counts()
    assert counts == {"accepted": 2000, "acked": 2000, "dropped": 0, "in_flight": 0}
    assert sorted(client.delivered) == payloads
    assert client.threads == {"async-completer"}


def test_async_partial_retry_and_errors_are_handled(caplog, outcomes: Outcomes):
    client = ThreadedAsync([4, conveyor.Retry("slow down", published=2), RuntimeError("connection reset")])
    payloads = events(10)
    with conveyor.Pipeline([client], max_retries=5, bulk_max_size=10, **FAST) as p:
        producer = p.producer(on_ack=outcomes.on_ack)
        producer.publish_batch(payloads)
        p.flush(timeout=WAIT)
    assert sorted(set(client.delivered)) == payloads and outcomes.acked == 10
    assert client.delivered[:4] == payloads[:4], "a short count publishes a prefix"
    assert any(
        r.name == "conveyor" and r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in caplog.records
    ), "the reported error is logged"


def test_done_is_called_once_and_rejects_bad_arguments():
    calls: List[object] = []

    class Checks(conveyor.AsyncClient):
        def publish_async(self, events, done):
            assert len(done) == len(events) and done.pending
            if not calls:
                with pytest.raises(conveyor.InvalidArgumentError):
                    done(len(events) + 1)
                calls.append("bad count settled the batch as failed")
                assert not done.pending
                with pytest.raises(conveyor.InvalidArgumentError):
                    done()
                return
            done()
            calls.append("ok")

    with conveyor.Pipeline([Checks()], max_retries=-1, **FAST) as p:
        producer = p.producer()
        producer.publish_batch(events(3))
        p.flush(timeout=WAIT)
        assert producer.counts()["acked"] == 3
    assert calls[0] == "bad count settled the batch as failed" and "ok" in calls


def test_a_completion_collected_without_done_fails_its_batch(caplog):
    first = [True]

    class Forgets(conveyor.AsyncClient):
        def __init__(self):
            self.delivered: List[bytes] = []

        def publish_async(self, events, done):
            if first[0]:
                first[0] = False
                del done
                gc.collect()
                return
            self.delivered.extend(events)
            done()

    client = Forgets()
    with conveyor.Pipeline([client], max_retries=-1, **FAST) as p:
        producer = p.producer(guaranteed=True)
        producer.publish_batch(events(5))
        p.flush(timeout=WAIT)
        assert producer.counts()["acked"] == 5
    assert client.delivered == events(5)
    assert any("garbage-collected without being called" in r.getMessage() for r in caplog.records)


def test_publish_async_raising_breaks_the_connection_and_retries(caplog):
    class RaisesOnce(conveyor.AsyncClient):
        def __init__(self):
            self.connects = 0
            self.delivered: List[bytes] = []
            self.kept: List[conveyor.Completion] = []

        def connect(self, timeout):
            self.connects += 1

        def publish_async(self, events, done):
            if self.connects == 1:
                self.kept.append(done)
                raise ConnectionError("socket closed")
            self.delivered.extend(events)
            done()

    client = RaisesOnce()
    with conveyor.Pipeline([client], max_retries=-1, **FAST) as p:
        producer = p.producer()
        producer.publish_batch(events(4))
        p.flush(timeout=WAIT)
        stats = p.stats()
        assert producer.counts()["acked"] == 4
    assert client.connects == 2 and client.delivered == events(4)
    assert not client.kept[0].pending, "the failed request's done() is already settled"
    with pytest.raises(conveyor.InvalidArgumentError):
        client.kept[0]()
    assert stats["duplicates"] == 0
    assert any(r.name == "conveyor" and "publish_async raised" in r.getMessage() for r in caplog.records)


def test_flush_async_and_async_context_manager(outcomes: Outcomes):
    gate = Gate()

    async def main() -> None:
        async with conveyor.Pipeline([gate], **FAST) as p:
            producer = p.producer(on_ack=outcomes.on_ack)
            producer.publish_batch(events(10))
            await asyncio.get_running_loop().run_in_executor(None, gate.entered.wait, WAIT)
            with pytest.raises(conveyor.TimeoutError):
                await p.flush_async(timeout=0.05)
            task = asyncio.ensure_future(p.flush_async())
            await asyncio.sleep(0)
            assert not task.done()
            gate.release()
            await asyncio.wait_for(task, WAIT)
            assert outcomes.acked == 10
        assert p.closed

    asyncio.run(main())


def test_cancelling_the_task_in_an_async_with_block_closes_without_waiting(outcomes: Outcomes):
    class Refuses(Recorder):
        def publish(self, events):
            raise conveyor.Retry("busy")

    pipelines = []

    async def body() -> None:
        async with conveyor.Pipeline([Refuses()], max_retries=-1, **FAST) as p:
            pipelines.append(p)
            p.producer(on_drop=outcomes.on_drop, guaranteed=True).publish_batch(events(3))
            await asyncio.sleep(WAIT)

    async def main() -> None:
        task = asyncio.ensure_future(body())
        await asyncio.get_running_loop().run_in_executor(None, wait_until, lambda: bool(pipelines))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)

    asyncio.run(main())
    assert pipelines[0].closed and sorted(outcomes.dropped) == events(3)


def test_flush_async_can_be_cancelled():
    gate = Gate()

    async def main() -> None:
        p = conveyor.Pipeline([gate], **FAST)
        p.producer().publish(b"held")
        task = asyncio.ensure_future(p.flush_async())
        await asyncio.get_running_loop().run_in_executor(None, gate.entered.wait, WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.release()
        report = await p.close_async(timeout=WAIT)
        assert report["acked"] == 1

    asyncio.run(main())
