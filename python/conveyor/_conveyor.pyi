"""Type stubs of the native module `conveyor._conveyor` (PyO3)."""

from types import TracebackType
from typing import Any, Callable, Dict, Iterable, List, Optional, Type, Union

from typing_extensions import Self, disjoint_base, final

_Buffer = Union[bytes, bytearray, memoryview]

__all__ = ["__version__", "CONFIG_KEYS", "Pipeline", "Producer", "Completion", "_close_all_at_exit"]
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
