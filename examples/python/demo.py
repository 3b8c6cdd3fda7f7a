"""conveyor from Python: three endpoints behind one load-balancing pipeline.

One endpoint is flaky (it drops its connection now and then, and sometimes takes
only part of a batch); conveyor retries, reconnects and spreads the work, and the
producer hears about every event exactly once.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any, List, Optional

import conveyor


class Endpoint(conveyor.Client):
    """Stands in for a real protocol client (HTTP, Kafka, ...): keeps what it receives."""

    def __init__(self, name: str, failure_rate: float, seed: int) -> None:
        self.name = name
        self.failure_rate = failure_rate
        self.rng = random.Random(seed)
        self.received: List[bytes] = []
        self.connects = 0

    def connect(self, timeout: float) -> None:
        self.connects += 1

    def publish(self, events: List[bytes]) -> Optional[int]:
        roll = self.rng.random()
        if roll < self.failure_rate:
            raise ConnectionResetError(f"{self.name}: connection reset by peer")
        if roll < 2 * self.failure_rate:
            taken = len(events) // 2
            self.received.extend(events[:taken])
            return taken
        self.received.extend(events)
        return None


class OneLineErrors(logging.Formatter):
    """Client exceptions reach the `conveyor` logger with their traceback; the demo
    shows just the exception."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return f"    {type(ei[1]).__name__}: {ei[1]}"


def main() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineErrors("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    endpoints = [Endpoint("alpha", 0.0, 1), Endpoint("beta", 0.0, 2), Endpoint("gamma", 0.2, 3)]
    acked = [0]
    lock = threading.Lock()

    def on_ack(count: int) -> None:
        with lock:
            acked[0] += count

    with conveyor.Pipeline(endpoints, mode="loadbalance", max_retries=-1, backoff_init=0.01,
                           backoff_max=0.1, bulk_max_size=256) as pipeline:
        producer = pipeline.producer(on_ack=on_ack, guaranteed=True)
        for i in range(20_000):
            producer.publish(b"event %05d" % i)
        producer.publish_batch([b"batched %05d" % i for i in range(5_000)])
        pipeline.flush(timeout=30.0)
        stats = pipeline.stats()

    print(f"mode {stats['mode']}: accepted {stats['accepted']}, acked {stats['acked']}, "
          f"dropped {stats['dropped']}, retried batches {stats['retried_batches']}")
    for endpoint, client in zip(endpoints, stats["clients"]):
        print(f"  {endpoint.name:<6} received {len(endpoint.received):>6} events in {client['batches']:>3} batches, "
              f"{client['failures']} failures, {endpoint.connects} connects")
    print(f"producer: {producer.counts()}; on_ack saw {acked[0]} events")
    received = sum(len(e.received) for e in endpoints)
    assert acked[0] == stats["acked"] == 25_000 and received >= 25_000


if __name__ == "__main__":
    main()
