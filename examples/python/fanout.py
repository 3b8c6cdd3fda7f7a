"""conveyor from Python: one event stream fanned out to two outputs with sinks.

    Broadcaster ─┬─ QueueSink ─ pipeline "search"  (loadbalance over search-1, search-2)
                 └─ Filter (errors only) ─ QueueSink ─ pipeline "archive"
                                              (failover: archive-1 is down, archive-2 takes over)

Each output is a pipeline over its own clients; the queue sinks isolate them, so a slow
or failing output never holds back the other. Every event each output accepted ends
acknowledged or reported dropped.
"""

from __future__ import annotations

import json
import threading
from typing import List, Optional

import conveyor

EVENTS = 20_000


class Endpoint(conveyor.Client):
    """Stands in for a real protocol client; `archive-1` refuses connections."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.received = 0

    def connect(self, timeout: float) -> None:
        if self.host == "archive-1":
            raise ConnectionRefusedError(f"{self.host}: connection refused")

    def publish(self, events: List[bytes]) -> Optional[int]:
        self.received += len(events)
        return None


class Outcome:
    """What one output's producer heard (callbacks run on its pipeline's thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked = 0
        self.dropped = 0

    def on_ack(self, count: int) -> None:
        with self.lock:
            self.acked += count

    def on_drop(self, events: List[bytes]) -> None:
        with self.lock:
            self.dropped += len(events)


def main() -> None:
    endpoints: List[Endpoint] = []

    def make(host: str) -> Endpoint:
        endpoints.append(Endpoint(host))
        return endpoints[-1]

    search, archive = Outcome(), Outcome()
    search_p = conveyor.Pipeline(hosts=["search-1", "search-2"], factory=make, mode="loadbalance",
                                 backoff_init=0.01, backoff_max=0.1)
    archive_p = conveyor.Pipeline(hosts=["archive-1", "archive-2"], factory=make, mode="failover",
                                  backoff_init=0.01, backoff_max=0.1)

    # Writes wait for room in a pipeline; closing a pipeline's sink closes the
    # pipeline, waiting up to 5 s for delivery.
    search_sink = search_p.as_sink(on_ack=search.on_ack, on_drop=search.on_drop, close_timeout=5.0)
    archive_sink = archive_p.as_sink(on_ack=archive.on_ack, on_drop=archive.on_drop, close_timeout=5.0)
    errors_only = conveyor.Filter(conveyor.QueueSink(archive_sink, 4096), lambda e: e.startswith(b"error"))

    errors = 0
    # Leaving the block closes the broadcaster, which closes each branch in turn: the
    # queues deliver what they hold, then close their pipelines.
    with conveyor.Broadcaster([conveyor.QueueSink(search_sink, 4096), errors_only]) as fanout:
        for i in range(EVENTS):
            level = "error" if i % 10 == 0 else "info"
            errors += level == "error"
            fanout.write(f"{level} event {i:05d}".encode())
        print(f"fanout: {EVENTS} events written; the sinks' counters:")
        print("  " + json.dumps(fanout.stats()))

    print("clients received:")
    for e in endpoints:
        print(f"  {e.host:<10} {e.received:>6} events")
    print(f"search:  {search.acked} acked, {search.dropped} dropped of {EVENTS}")
    print(f"archive: {archive.acked} acked, {archive.dropped} dropped of {errors} errors")
    ok = search.acked + search.dropped == EVENTS and archive.acked + archive.dropped == errors
    print(f"every event has exactly one outcome on each output: {'yes' if ok else 'NO'}")
    assert ok and search_p.closed and archive_p.closed


if __name__ == "__main__":
    main()
