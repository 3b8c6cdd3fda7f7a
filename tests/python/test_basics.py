"""Publishing, acknowledgements, configuration, errors, packaging."""

from __future__ import annotations

import builtins
import datetime
import pathlib

import pytest

import conveyor
from conftest import FAST, WAIT, Gate, Outcomes, Recorder, events, wait_until


def test_package_exports_and_version():
    assert conveyor.__version__.count(".") == 2
    for name in ["Pipeline", "Producer", "Client", "AsyncClient", "Completion", "Error", "ConfigError",
                 "ClosedError", "FullError", "TimeoutError", "Retry"]:
        assert hasattr(conveyor, name), name
    assert "backoff_init" in conveyor.CONFIG_KEYS and "queue_flush_min_events" in conveyor.CONFIG_KEYS


def test_stubs_and_py_typed_ship_in_the_package():
    root = pathlib.Path(conveyor.__file__).parent
    assert (root / "py.typed").is_file()
    stub = (root / "_conveyor.pyi").read_text()
    for name in ["class Pipeline", "class Producer", "class Completion", "def publish_batch", "def flush"]:
        assert name in stub, name


def test_exception_hierarchy():
    assert issubclass(conveyor.TimeoutError, conveyor.Error)
    assert issubclass(conveyor.TimeoutError, builtins.TimeoutError)
    assert issubclass(conveyor.ConfigError, ValueError)
    assert issubclass(conveyor.CancelledError, conveyor.ClosedError)
    for cls in [conveyor.ConfigError, conveyor.ClosedError, conveyor.FullError, conveyor.InvalidArgumentError]:
        assert issubclass(cls, conveyor.Error)
    assert not issubclass(conveyor.Retry, conveyor.Error)


def test_publish_delivers_in_order_and_acks_every_event(outcomes: Outcomes):
    client = Recorder()
    payloads = events(500)
    with conveyor.Pipeline([client], **FAST) as p:
        producer = p.producer(on_ack=outcomes.on_ack, on_drop=outcomes.on_drop)
        for e in payloads:
            producer.publish(e)
        p.flush(timeout=WAIT)
        assert producer.counts() == {"accepted": 500, "acked": 500, "dropped": 0, "in_flight": 0}
    assert client.delivered == payloads
    assert outcomes.acked == 500 and outcomes.dropped == []
    assert outcomes.ack_calls < 500, "ACKs are coalesced per round, not one callback per event"


def test_publish_batch_returns_accepted_count_and_keeps_order(outcomes: Outcomes):
    client = Recorder()
    payloads = events(3000)
    with conveyor.Pipeline([client], **FAST) as p:
        producer = p.producer(on_ack=outcomes.on_ack)
        assert producer.publish_batch(payloads[:1000]) == 1000
        assert producer.publish_batch(tuple(payloads[1000:2000])) == 1000
        assert producer.publish_batch(iter(payloads[2000:])) == 1000
        assert producer.publish_batch([]) == 0
        p.flush(timeout=WAIT)
    assert client.delivered == payloads
    assert outcomes.acked == 3000
    assert max(client.batches) <= 2048, "bulk_max_size bounds a client call"


def test_bytes_like_payloads_are_accepted_and_others_rejected():
    client = Recorder()
    with conveyor.Pipeline([client], **FAST) as p:
        producer = p.producer()
        producer.publish(bytearray(b"from-bytearray"))
        producer.publish(memoryview(b"from-memoryview"))
        producer.try_publish(b"")
        for bad in ["text", 42, None, [b"nested"]]:
            with pytest.raises(TypeError):
                producer.publish(bad)
        with pytest.raises(TypeError):
            producer.publish_batch([b"ok", "not bytes"])
        p.flush(timeout=WAIT)
        assert producer.counts()["accepted"] == 3, "a rejected call accepts nothing"
    assert client.delivered == [b"from-bytearray", b"from-memoryview", b""]


def test_config_keywords_take_seconds_strings_and_timedeltas():
    with conveyor.Pipeline(
        [Recorder(), Recorder()],
        mode="failover",
        failover_policy="ordered",
        max_retries=-1,
        backoff_init=0.25,
        backoff_max="2s",
        timeout=datetime.timedelta(seconds=3),
        publish_timeout=0,
        bulk_max_size=100,
        pipelining=3,
        queue_events=1000,
        queue_bytes=1 << 20,
        queue_flush_min_events=10,
        queue_flush_timeout=0.002,
        error_threshold=5,
        worker=2,
    ) as p:
        assert p.mode == "failover"
        assert p.stats()["queue"]["capacity_events"] == 1000


@pytest.mark.parametrize(
    "kwargs, key, fragment",
    [
        (dict(bogus=1), "bogus", "unknown key"),
        (dict(backoff_init=-1.0), "backoff_init", "non-negative"),
        (dict(backoff_init="soon"), "backoff_init", "not a duration"),
        (dict(timeout=float("nan")), "timeout", "non-negative"),
        (dict(queue_events=0), "queue_events", "out of range"),
        (dict(queue_events=1.5), "queue_events", "expected an integer"),
        (dict(worker=True), "worker", "bool"),
        (dict(mode="roundrobin"), "mode", "single, failover, loadbalance"),
        (dict(max_retries=-2), "max_retries", "out of range"),
        (dict(backoff_init=5.0, backoff_max=1.0), "backoff_max", "smaller than backoff_init"),
        (dict(mode="single"), "mode", "exactly one client"),
    ],
)
def test_bad_config_raises_config_error_naming_the_key(kwargs, key, fragment):
    with pytest.raises(conveyor.ConfigError) as info:
        conveyor.Pipeline([Recorder(), Recorder()], **kwargs)
    assert info.value.key == key
    assert f"`{key}`" in str(info.value) and fragment in str(info.value)


def test_no_clients_is_a_config_error():
    with pytest.raises(conveyor.ConfigError) as info:
        conveyor.Pipeline([])
    assert info.value.key == "clients"


def test_an_object_without_publish_is_not_a_client():
    with pytest.raises(TypeError, match="publish"):
        conveyor.Pipeline([object()])


def test_try_publish_raises_full_and_publish_times_out():
    gate = Gate()
    with conveyor.Pipeline([gate], queue_events=4, bulk_max_size=2, **FAST) as p:
        producer = p.producer()
        producer.publish_batch(events(4))
        wait_until(gate.entered.is_set, what="the client to take a batch")
        with pytest.raises(conveyor.FullError):
            producer.try_publish(b"no room")
        with pytest.raises(conveyor.TimeoutError):
            producer.publish(b"no room", timeout=0.05)
        with pytest.raises(builtins.TimeoutError):
            producer.publish(b"no room", timeout=0)
        with pytest.raises(conveyor.TimeoutError):
            producer.publish_batch([b"x", b"y"], timeout=0.05)
        assert producer.counts()["accepted"] == 4
        gate.release()
        p.flush(timeout=WAIT)
        assert producer.publish_batch([b"x", b"y"], timeout=WAIT) == 2
        p.flush(timeout=WAIT)
    assert gate.delivered == events(4) + [b"x", b"y"]


def test_bad_timeouts_are_invalid_arguments():
    with conveyor.Pipeline([Recorder()], **FAST) as p:
        producer = p.producer()
        with pytest.raises(conveyor.InvalidArgumentError):
            producer.publish(b"x", timeout=-1)
        with pytest.raises(conveyor.InvalidArgumentError):
            p.flush(timeout=float("nan"))
        with pytest.raises(TypeError):
            p.producer(on_ack=42)


def test_stats_is_a_dict_with_accounting_clients_and_crossings(outcomes: Outcomes):
    clients = [Recorder("a"), Recorder("b")]
    with conveyor.Pipeline(clients, bulk_max_size=64, **FAST) as p:
        producer = p.producer(on_ack=outcomes.on_ack)
        producer.publish_batch(events(2000))
        p.flush(timeout=WAIT)
        stats = p.stats()
    assert stats["mode"] == "loadbalance"
    assert (stats["accepted"], stats["acked"], stats["dropped"], stats["in_flight"]) == (2000, 2000, 0, 0)
    assert [c["id"] for c in stats["clients"]] == [1, 2]
    assert sum(c["events"] for c in stats["clients"]) == 2000
    crossings = stats["python"]
    batches = sum(len(c.batches) for c in clients)
    connects = sum(c.connects for c in clients)
    assert batches >= 2000 // 64
    assert crossings["client_calls"] == batches + connects
    # One interpreter attach per client call (a whole batch) and per callback round:
    # never one per event.
    assert crossings["gil_acquisitions"] == crossings["client_calls"] + crossings["callback_calls"]
    assert crossings["callback_calls"] == outcomes.ack_calls


def test_publish_batch_returns_the_accepted_prefix_when_the_timeout_passes():
    gate = Gate()
    with conveyor.Pipeline([gate], queue_events=4, bulk_max_size=2, **FAST) as p:
        producer = p.producer()
        assert producer.publish_batch(events(2)) == 2
        wait_until(gate.entered.is_set, what="the client to hold a batch")
        assert producer.publish_batch(events(6, "more"), timeout=0.05) == 2
        assert producer.counts()["accepted"] == 4
        gate.release()
        p.flush(timeout=WAIT)
    assert gate.delivered == events(2) + events(6, "more")[:2]
