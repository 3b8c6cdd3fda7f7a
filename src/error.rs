//! The one error type of the crate.

use std::fmt;

/// Result alias used throughout conveyor.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a conveyor call.
///
/// Each variant maps to exactly one C status code (see `capi`), so adding a variant
/// means adding a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration key is unknown or its value is out of range.
    #[error("invalid config `{key}`: {reason}")]
    Config { key: String, reason: String },
    /// An argument is out of its domain (not a configuration key).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The pipeline, queue, producer or sink has been closed.
    #[error("closed")]
    Closed,
    /// A non-blocking publish found no room in the queue.
    #[error("queue full")]
    Full,
    /// A blocking call reached its timeout.
    #[error("timed out")]
    Timeout,
    /// The pipeline has no clients to deliver to.
    #[error("no clients configured")]
    NoClients,
    /// The producer was cancelled.
    #[error("producer cancelled")]
    Cancelled,
    /// A batch (or some of its events) was settled twice.
    #[error("batch already settled")]
    AlreadySettled,
    /// A client failed (connect error, or an error it reported).
    #[error("client error: {0}")]
    Client(String),
    /// A bug in conveyor; please report it.
    #[error("internal error: {0}")]
    Internal(String),
}

/// How a caller should treat an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Trying again later may succeed (full, timeout, client errors).
    Retriable,
    /// Trying again cannot succeed without a change (bad config or argument).
    Fatal,
    /// The object is closed or cancelled; it will never accept the call again.
    Closed,
}

impl Error {
    /// Builds a [`Error::Config`] naming `key`.
    pub fn config(key: impl Into<String>, reason: impl fmt::Display) -> Error {
        Error::Config { key: key.into(), reason: reason.to_string() }
    }

    /// Classifies the error for retry decisions.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Full | Error::Timeout | Error::Client(_) => ErrorKind::Retriable,
            Error::Closed | Error::Cancelled => ErrorKind::Closed,
            Error::Config { .. }
            | Error::InvalidArgument(_)
            | Error::NoClients
            | Error::AlreadySettled
            | Error::Internal(_) => ErrorKind::Fatal,
        }
    }

    /// True when trying again later may succeed.
    pub fn is_retriable(&self) -> bool {
        self.kind() == ErrorKind::Retriable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_classify_every_variant() {
        assert_eq!(Error::Full.kind(), ErrorKind::Retriable);
        assert_eq!(Error::Timeout.kind(), ErrorKind::Retriable);
        assert_eq!(Error::Client("x".into()).kind(), ErrorKind::Retriable);
        assert_eq!(Error::Closed.kind(), ErrorKind::Closed);
        assert_eq!(Error::Cancelled.kind(), ErrorKind::Closed);
        assert_eq!(Error::config("worker", "bad").kind(), ErrorKind::Fatal);
        assert!(!Error::NoClients.is_retriable());
        assert_eq!(Error::config("worker", "must be positive").to_string(), "invalid config `worker`: must be positive");
    }
}
