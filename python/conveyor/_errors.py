"""The exceptions conveyor raises, and `Retry`, which clients raise.

The native module raises these classes (it imports them from here), so that each
can have several bases: `ConfigError` is also a `ValueError`, and `TimeoutError`
is also the builtin `TimeoutError`.
"""

from __future__ import annotations

import builtins

__all__ = [
    "Error",
    "ConfigError",
    "InvalidArgumentError",
    "ClosedError",
    "CancelledError",
    "FullError",
    "TimeoutError",
    "ClientError",
    "Retry",
]


class Error(Exception):
    """Base class of every error conveyor raises."""


class ConfigError(Error, ValueError):
    """A configuration key is unknown or its value is invalid.

    `key` names the keyword argument at fault (dots spelled as underscores, as in
    `backoff_init`), or `"clients"` when no client was given.
    """

    key: str

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class InvalidArgumentError(Error, ValueError):
    """An argument is out of its domain, or the call is not allowed here (for
    example `close()` from inside a conveyor callback)."""


class ClosedError(Error):
    """The pipeline is closed: it accepts no more events or calls."""


class CancelledError(ClosedError):
    """The producer was cancelled: it accepts no more events."""


class FullError(Error):
    """A non-blocking publish found no room in the queue."""


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 - deliberately shadows the builtin
    """A blocking call reached its timeout."""


class ClientError(Error):
    """Building a client failed (for example the `factory` raised)."""


class Retry(Exception):
    """Raised by a client's `publish` for a temporary failure: the connection is
    fine and the rest of the batch is retried on the same client.

    `published` is how many leading events of the batch did go out before the
    failure (they are acknowledged and never sent again).
    """

    published: int

    def __init__(self, message: str = "", published: int = 0) -> None:
        super().__init__(message)
        self.published = published
