"""conveyor: reliable event delivery over your own protocol clients.

    class MyClient(conveyor.Client):
        def connect(self, timeout: float) -> None: ...
        def close(self) -> None: ...
        def publish(self, events: list[bytes]) -> int | None: ...  # None = all published

    with conveyor.Pipeline([MyClient("a"), MyClient("b")], mode="failover", max_retries=-1) as p:
        producer = p.producer(on_ack=acked.append, on_drop=dropped.extend, guaranteed=True)
        producer.publish(b"event")
        p.flush(timeout=5.0)
        print(p.stats())

Configuration keys are keyword arguments with dots spelled as underscores
(`backoff_init=0.25`, `queue_events=4096`); durations are seconds. A client's
`publish` may return how many leading events it published (the rest is retried),
raise `conveyor.Retry` for a temporary failure on the same connection, or raise
anything else when the connection is broken. Client methods and callbacks run on
conveyor's threads, once per batch; exceptions they raise are logged on the
`conveyor` logger and never reach the engine.

Sinks take events one at a time and compose: `Broadcaster`, `QueueSink`, `Filter`,
`RetryingSink` (with `Breaker`, `ExponentialBackoff` or your own strategy),
`ChannelSink`, and `pipeline.as_sink()`; any object with `write(bytes)` is a sink, and
a sink can be a pipeline's client. Every event to two outputs, neither holding back
the other:

    with conveyor.Broadcaster([conveyor.QueueSink(search.as_sink(), 4096),
                               conveyor.QueueSink(archive.as_sink(), 4096)]) as fanout:
        fanout.write(b"event")
"""

from __future__ import annotations

import abc
import asyncio
import atexit
import time
from types import TracebackType
from typing import Dict, List, Optional, Type, Union

from . import _conveyor
from ._conveyor import (
    CONFIG_KEYS,
    Breaker,
    Broadcaster,
    ChannelSink,
    Completion,
    ExponentialBackoff,
    Filter,
    NativeSink,
    PipelineSink,
    Producer,
    QueueSink,
    RetryingSink,
    __version__,
)
from ._errors import (
    CancelledError,
    ClientError,
    ClosedError,
    ConfigError,
    Error,
    FullError,
    InvalidArgumentError,
    Retry,
    TimeoutError,
)

__all__ = [
    "AsyncClient",
    "Breaker",
    "Broadcaster",
    "CancelledError",
    "ChannelSink",
    "Client",
    "ClientError",
    "ClosedError",
    "Completion",
    "CONFIG_KEYS",
    "ConfigError",
    "Error",
    "ExponentialBackoff",
    "Filter",
    "FullError",
    "InvalidArgumentError",
    "NativeSink",
    "Pipeline",
    "PipelineSink",
    "Producer",
    "QueueSink",
    "Retry",
    "RetryStrategy",
    "RetryingSink",
    "Sink",
    "TimeoutError",
    "__version__",
]

# How long one awaited slice of `flush_async` may take: bounds how late a
# cancelled task notices it was cancelled.
_ASYNC_SLICE = 0.05


class Client:
    """Base class of a synchronous protocol client (subclassing it is optional:
    any object with these methods works).

    conveyor calls the methods from its worker threads, never concurrently for the
    same client.
    """

    def connect(self, timeout: float) -> None:
        """Opens the connection within `timeout` seconds; raise if it fails.
        Called before the first publish and after every broken connection."""

    def close(self) -> None:
        """Closes the connection; may be called when not connected."""

    def publish(self, events: List[bytes]) -> Optional[int]:
        """Sends `events`; returns None when all went out, or how many leading
        events went out (the rest is retried). Raise `conveyor.Retry` for a
        temporary failure (same connection), anything else for a broken one."""
        raise NotImplementedError


class AsyncClient:
    """Base class of an asynchronous protocol client: `publish_async` starts the
    sending and returns; `done(count_or_None, error=None)` reports it later, once,
    from any thread. Up to `pipelining` batches are in flight per client."""

    def connect(self, timeout: float) -> None:
        """As `Client.connect`."""

    def close(self) -> None:
        """As `Client.close`."""

    def publish_async(self, events: List[bytes], done: Completion) -> None:
        """Starts sending `events`; call `done()` when all went out, `done(n)` after
        the first `n`, or `done(n, error=exc)` on failure (`conveyor.Retry`:
        temporary). Raising here means the connection is broken."""
        raise NotImplementedError


class Sink(abc.ABC):
    """Base class of a sink written in Python (subclassing it is optional: any object
    with a `write` method works, `close` is optional). conveyor's own sinks
    (`QueueSink`, `Broadcaster`, ...) count as subclasses.

    `write` may be called from several threads (writers, a queue's thread, pipeline
    workers when the sink is a client). Raise `conveyor.ClosedError` once the sink is
    closed for good (a broadcaster then drops it, a retrying sink stops retrying); any
    other exception is a failed write, logged on the `conveyor` logger.
    """

    @abc.abstractmethod
    def write(self, event: bytes) -> None:
        """Takes one event."""

    def close(self) -> None:
        """Closes the sink; conveyor calls it once (writes after it are refused)."""

    def __enter__(self) -> "Sink":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


Sink.register(NativeSink)


class RetryStrategy(abc.ABC):
    """Base class of a retry strategy for `RetryingSink` written in Python (optional:
    any object with these methods works). The methods run on the writing threads,
    one call at a time. A method that raises is logged; a failed `proceed` means no
    wait, a failed `failure` gives up on the event."""

    @abc.abstractmethod
    def proceed(self) -> float:
        """Seconds to wait before the next attempt (0.0: now); asked before every
        attempt, an event's first included."""

    @abc.abstractmethod
    def failure(self) -> bool:
        """An attempt failed: return True to give up on the event (the write then
        raises `ClientError`), False to try again."""

    @abc.abstractmethod
    def success(self) -> None:
        """An attempt succeeded."""


RetryStrategy.register(Breaker)
RetryStrategy.register(ExponentialBackoff)


class Pipeline(_conveyor.Pipeline):
    """A bounded queue in front of clients in one output mode (`single`,
    `failover`, `loadbalance`), with batching, retries and exact accounting.

    `Pipeline(clients, **config)`, or `Pipeline(hosts=[...], factory=f, **config)`
    to build one client per host with `f(host)`. A context manager: leaving the
    block closes it (waiting up to 30 s for delivery, or not at all when leaving
    by Ctrl-C). Pipelines still open when the interpreter exits are closed with a
    zero timeout. What a close could not deliver is reported to `on_drop`.
    """

    async def flush_async(self, timeout: Optional[float] = None) -> None:
        """`flush` for asyncio: waits in short slices on the default executor, so
        that cancelling the awaiting task stops the wait."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = _ASYNC_SLICE if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                await loop.run_in_executor(None, self.flush, min(_ASYNC_SLICE, remaining))
                return
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    async def close_async(self, timeout: Optional[float] = 30.0) -> Dict[str, Union[int, bool]]:
        """`close` for asyncio, run on the default executor."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.close, timeout)

    async def __aenter__(self) -> "Pipeline":
        return self

    async def __aexit__(self, exc_type: Optional[type], *exc: object) -> bool:
        if exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, asyncio.CancelledError)):
            self.close(0)
        else:
            await self.close_async()
        return False


atexit.register(_conveyor._close_all_at_exit)
