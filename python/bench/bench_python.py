"""H5: a Python producer into Python no-op clients, next to a pure-Python pipeline.

Each round runs, back to back in this process:
  ref    a pure-Python pipeline: queue.Queue(1024), 1 producer thread (this one)
         putting events one at a time, 2 consumer threads getting them;
  event  conveyor: the same events published one at a time (Producer.publish)
         into a pipeline over 2 Python no-op clients (loadbalance), with an
         on_ack callback, until every event is acknowledged;
  batch  the same with Producer.publish_batch over lists of 1024 events.
The ratios are per round (event/ref, batch/ref, so each is an interleaved pair
with the round's reference); the reported figure is the median over the rounds.

Prints `bench h5-python-event <events/s> ratio=<r> goal=5` and
`bench h5-python-batch <events/s> ratio=<r> goal=20`, plus detail lines. When
BENCH_RESULTS_DIR is set (`make bench` sets it), the same results and the reference's
median also go to `$BENCH_RESULTS_DIR/python.jsonl` for the report (benches/report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import sys
import threading
import time
from typing import Callable, List

import conveyor

EVENT_BYTES = 100
POOL = 1024
BATCH = 1024


def make_pool() -> List[bytes]:
    return [(b"%08d" % i).ljust(EVENT_BYTES, b".") for i in range(POOL)]


class NoopClient(conveyor.Client):
    """Publishes nothing anywhere: counts the events and reports them all sent."""

    def __init__(self) -> None:
        self.events = 0
        self.batches = 0

    def publish(self, events: List[bytes]) -> None:
        self.events += len(events)
        self.batches += 1


def run_reference(n: int, pool: List[bytes]) -> float:
    q: "queue.Queue[bytes | None]" = queue.Queue(1024)
    counts = [0, 0]

    def consume(slot: int) -> None:
        get = q.get
        seen = 0
        while get() is not None:
            seen += 1
        counts[slot] = seen

    consumers = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in consumers:
        t.start()
    put = q.put
    start = time.perf_counter()
    for i in range(n):
        put(pool[i & (POOL - 1)])
    for _ in consumers:
        put(None)
    for t in consumers:
        t.join()
    elapsed = time.perf_counter() - start
    assert sum(counts) == n, (counts, n)
    return n / elapsed


class ConveyorRun:
    def __init__(self) -> None:
        self.clients = [NoopClient(), NoopClient()]
        self.acked = 0
        self.pipeline = conveyor.Pipeline(self.clients)
        self.producer = self.pipeline.producer(on_ack=self.on_ack)

    def on_ack(self, count: int) -> None:
        self.acked += count

    def finish(self, n: int, start: float) -> float:
        self.pipeline.flush()
        elapsed = time.perf_counter() - start
        stats = self.pipeline.stats()
        self.pipeline.close()
        assert self.acked == n and sum(c.events for c in self.clients) == n, (self.acked, n)
        batches = sum(c.batches for c in self.clients)
        crossings = stats["python"]
        self.attach_per_batch = (crossings["gil_acquisitions"] - crossings["callback_calls"]) / batches
        return n / elapsed


def run_event(n: int, pool: List[bytes]) -> "tuple[float, float]":
    run = ConveyorRun()
    publish = run.producer.publish
    start = time.perf_counter()
    for i in range(n):
        publish(pool[i & (POOL - 1)])
    return run.finish(n, start), run.attach_per_batch


def run_batch(n: int, pool: List[bytes]) -> "tuple[float, float]":
    run = ConveyorRun()
    publish_batch = run.producer.publish_batch
    chunk = pool[:BATCH]
    start = time.perf_counter()
    for _ in range(n // BATCH):
        publish_batch(chunk)
    return run.finish(n // BATCH * BATCH, start), run.attach_per_batch


def spread(values: List[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100k events per run instead of 1M")
    parser.add_argument("--events", type=int, help="events per run (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    args = parser.parse_args()
    n = args.events or (100_000 if args.quick else 1_000_000)
    pool = make_pool()
    run_event(n // 10, pool)
    run_batch(n // 10, pool)
    run_reference(n // 10, pool)

    ref: List[float] = []
    event: List[float] = []
    batch: List[float] = []
    attaches: List[float] = []
    for _ in range(args.rounds):
        ref.append(run_reference(n, pool))
        eps, per_batch = run_event(n, pool)
        event.append(eps)
        attaches.append(per_batch)
        eps, per_batch = run_batch(n, pool)
        batch.append(eps)
        attaches.append(per_batch)

    records: List[str] = []

    def report(name: str, values: List[float], goal: int) -> None:
        ratios = [v / r for v, r in zip(values, ref)]
        record = {
            "scenario": name,
            "events_per_s": round(statistics.median(values)),
            "reference": "queue.Queue(1024) 1P2C",
            "reference_events_per_s": round(statistics.median(ref)),
            "ratio": round(statistics.median(ratios), 3),
            "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3),
            "goal": goal,
        }
        records.append(json.dumps(record))
        print(
            f"bench {name} {statistics.median(values):.0f} ratio={statistics.median(ratios):.2f} goal={goal}",
            flush=True,
        )
        print(
            f"  {name}: spread {spread(values):.0%}, ratios {min(ratios):.2f}..{max(ratios):.2f}",
            flush=True,
        )

    print(
        f"  reference queue.Queue(1024) 1P2C: {statistics.median(ref):.0f} events/s, spread {spread(ref):.0%}; "
        f"{args.rounds} rounds of {n} events of {EVENT_BYTES} B",
        flush=True,
    )
    report("h5-python-event", event, 5)
    report("h5-python-batch", batch, 20)
    print(f"  GIL acquisitions per client batch: at most {max(attaches):.2f}", flush=True)
    results_dir = os.environ.get("BENCH_RESULTS_DIR")
    if results_dir:
        os.makedirs(results_dir, exist_ok=True)
        with open(os.path.join(results_dir, "python.jsonl"), "w") as out:
            out.write("".join(line + "\n" for line in records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
