"""Type stubs of the native module `conveyor._conveyor` (PyO3)."""

from types import TracebackType
from typing import Any, Callable, Dict, Iterable, List, Literal, Optional, Protocol, Type, Union

from typing_extensions import Self, disjoint_base, final

_Buffer = Union[bytes, bytearray, memoryview]

class _Writable(Protocol):
    """A sink: conveyor's own, or any object with `write(bytes)` (and optionally `close()`)."""

    def write(self, event: bytes, /) -> object: ...

class _Strategy(Protocol):
    """A retry strategy: `Breaker`, `ExponentialBackoff`, or any object with these methods."""

    def proceed(self) -> float: ...
    def failure(self) -> bool: ...
    def success(self) -> object: ...

__all__ = [
    "__version__",
    "CONFIG_KEYS",
    "Pipeline",
    "Producer",
    "Completion",
    "NativeSink",
    "Broadcaster",
    "QueueSink",
    "Filter",
    "RetryingSink",
    "ChannelSink",
    "PipelineSink",
    "Breaker",
    "ExponentialBackoff",
    "_close_all_at_exit",
]
__version__: str
CONFIG_KEYS: List[str]

@final
class Completion:
    """The `done` callable given to `AsyncClient.publish_async`; call it once."""

    @property
    def pending(self) -> bool: ...
    def __call__(self, count: Optional[int] = None, error: Optional[BaseException] = None) -> None: ...
    def __len__(self) -> int: ...

@final
class Producer:
    def publish(self, data: _Buffer, timeout: Optional[float] = None) -> None: ...
    def try_publish(self, data: _Buffer) -> None: ...
    def publish_batch(self, events: Iterable[_Buffer], timeout: Optional[float] = None) -> int: ...
    def cancel(self) -> int: ...
    def counts(self) -> Dict[str, int]: ...

@disjoint_base
class NativeSink:
    """The base of conveyor's sinks."""

    def write(self, event: _Buffer) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> Dict[str, Any]: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        _exc_type: Optional[Type[BaseException]] = None,
        _exc: Optional[BaseException] = None,
        _tb: Optional[TracebackType] = None,
    ) -> bool: ...

@final
class Broadcaster(NativeSink):
    def __new__(cls, sinks: Optional[Iterable[_Writable]] = None) -> Self: ...
    def add(self, sink: _Writable) -> None: ...
    def remove(self, sink: _Writable) -> None: ...
    def __len__(self) -> int: ...

@final
class QueueSink(NativeSink):
    def __new__(
        cls,
        dst: _Writable,
        capacity: int,
        overflow: Literal["block", "drop_newest", "drop_oldest"] = "block",
        close_timeout: Optional[float] = 30.0,
        on_drop: Optional[Callable[[List[bytes]], object]] = None,
    ) -> Self: ...
    # Closing a queue takes a deadline and reports what it delivered and dropped.
    def close(self, timeout: Optional[float] = None) -> Dict[str, Union[int, bool]]: ...  # type: ignore[override]
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]] = None,
        _exc: Optional[BaseException] = None,
        _tb: Optional[TracebackType] = None,
    ) -> bool: ...

@final
class Filter(NativeSink):
    def __new__(cls, dst: _Writable, matcher: Callable[[bytes], object]) -> Self: ...

@final
class RetryingSink(NativeSink):
    def __new__(cls, dst: _Writable, strategy: _Strategy) -> Self: ...

@final
class ChannelSink(NativeSink):
    def __new__(cls, capacity: int) -> Self: ...
    def recv(self, timeout: Optional[float] = None) -> bytes: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> bytes: ...
    def __len__(self) -> int: ...

@final
class PipelineSink(NativeSink): ...

@final
class Breaker:
    def __new__(cls, threshold: int, backoff: float) -> Self: ...
    def proceed(self) -> float: ...
    def failure(self) -> bool: ...
    def success(self) -> None: ...

@final
class ExponentialBackoff:
    def __new__(
        cls, base: float = 1.0, factor: float = 1.0, max: float = 20.0, seed: Optional[int] = None
    ) -> Self: ...
    def proceed(self) -> float: ...
    def failure(self) -> bool: ...
    def success(self) -> None: ...
    @property
    def bound(self) -> float: ...

@disjoint_base
class Pipeline:
    def __new__(
        cls,
        clients: Optional[Iterable[Any]] = None,
        *,
        hosts: Optional[List[str]] = None,
        factory: Optional[Callable[[str], Any]] = None,
        mode: str = ...,
        failover_policy: str = ...,
        worker: int = ...,
        max_retries: int = ...,
        backoff_init: Union[float, str] = ...,
        backoff_max: Union[float, str] = ...,
        timeout: Union[float, str] = ...,
        publish_timeout: Union[float, str] = ...,
        bulk_max_size: int = ...,
        pipelining: int = ...,
        queue_type: str = ...,
        queue_events: int = ...,
        queue_bytes: int = ...,
        queue_flush_min_events: int = ...,
        queue_flush_timeout: Union[float, str] = ...,
        error_threshold: int = ...,
    ) -> Self: ...
    def producer(
        self,
        on_ack: Optional[Callable[[int], object]] = None,
        on_drop: Optional[Callable[[List[bytes]], object]] = None,
        guaranteed: bool = False,
        drop_on_cancel: bool = False,
    ) -> Producer: ...
    def flush(self, timeout: Optional[float] = None) -> None: ...
    def close(self, timeout: Optional[float] = 30.0) -> Dict[str, Union[int, bool]]: ...
    def stats(self) -> Dict[str, Any]: ...
    def add_client(self, client: Any) -> int: ...
    def add_host(self, host: str, factory: Callable[[str], Any]) -> int: ...
    def remove_client(self, client_id: int) -> None: ...
    def as_sink(
        self,
        *,
        publish_timeout: Optional[float] = None,
        close_timeout: Optional[float] = 30.0,
        on_ack: Optional[Callable[[int], object]] = None,
        on_drop: Optional[Callable[[List[bytes]], object]] = None,
        guaranteed: bool = False,
    ) -> PipelineSink: ...
    @property
    def mode(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]] = None,
        _exc: Optional[BaseException] = None,
        _tb: Optional[TracebackType] = None,
    ) -> bool: ...

def _close_all_at_exit() -> None: ...
