//! Protocol clients: the application's code that talks to an endpoint.
//!
//! conveyor calls a client from its worker threads, never concurrently for the same
//! client. A publish reports how many *leading* events it published and a status;
//! conveyor never re-sends what a client reported published.

use std::fmt;
use std::time::Duration;

use crate::event::Events;

/// What happened to the rest of a batch a client did not fully publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything reported published; with a short count, the rest is retried.
    Ok,
    /// Temporary failure, the connection is fine: retry the rest on the same client.
    Retry,
    /// The connection is broken: close, back off, reconnect (or fail over).
    Broken,
}

/// The answer of a publish call: `published` leading events went out, then `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// How many leading events of the batch were published.
    pub count: usize,
    /// What to do with the rest.
    pub status: Status,
}

impl Published {
    /// All `n` events published.
    pub fn all(n: usize) -> Published {
        Published { count: n, status: Status::Ok }
    }

    /// `count` leading events published, then a temporary failure.
    pub fn retry(count: usize) -> Published {
        Published { count, status: Status::Retry }
    }

    /// `count` leading events published, then the connection broke.
    pub fn broken(count: usize) -> Published {
        Published { count, status: Status::Broken }
    }
}

/// Why a connect failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError(pub String);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl From<&str> for ConnectError {
    fn from(s: &str) -> Self {
        ConnectError(s.to_string())
    }
}

impl From<String> for ConnectError {
    fn from(s: String) -> Self {
        ConnectError(s)
    }
}

/// A synchronous protocol client.
pub trait Client: Send {
    /// Opens the connection within `timeout`. Called before the first publish and
    /// after every failure that broke the connection.
    fn connect(&mut self, timeout: Duration) -> Result<(), ConnectError> {
        let _ = timeout;
        Ok(())
    }

    /// Closes the connection. Called freely (also when never connected): be idempotent.
    fn close(&mut self) {}

    /// Publishes `events` and reports how many leading ones went out.
    /// A count larger than the batch is treated as a failed publish.
    fn publish(&mut self, events: &Events) -> Published;
}

/// Completes one asynchronous publish. Call [`Completion::done`] exactly once, from
/// any thread; dropping it without calling counts as `(0, Broken)`, so no batch is
/// ever stranded.
pub struct Completion {
    inner: Option<Box<dyn FnOnce(Published) + Send>>,
}

impl Completion {
    pub(crate) fn new(f: impl FnOnce(Published) + Send + 'static) -> Completion {
        Completion { inner: Some(Box::new(f)) }
    }

    /// Reports the outcome of the publish.
    pub fn done(mut self, published: Published) {
        self.fire(published);
    }

    fn fire(&mut self, published: Published) {
        if let Some(f) = self.inner.take() {
            f(published);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.fire(Published::broken(0));
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion").field("pending", &self.inner.is_some()).finish()
    }
}

/// An asynchronous protocol client: several batches may be in flight (up to
/// `pipelining`), each completed later from any thread.
pub trait AsyncClient: Send {
    /// As [`Client::connect`].
    fn connect(&mut self, timeout: Duration) -> Result<(), ConnectError> {
        let _ = timeout;
        Ok(())
    }

    /// As [`Client::close`].
    fn close(&mut self) {}

    /// Starts publishing `events`; `completion` reports the outcome later. The
    /// payloads stay valid while `events` (or a clone) lives. Returning `Err` means
    /// the request was not accepted: the connection counts as broken, and the
    /// completion is ignored.
    fn publish_async(&mut self, events: Events, completion: Completion) -> Result<(), ConnectError>;
}

/// A client of either kind.
pub enum AnyClient {
    /// A synchronous client.
    Sync(Box<dyn Client>),
    /// An asynchronous client.
    Async(Box<dyn AsyncClient>),
}

impl AnyClient {
    /// Wraps a synchronous client.
    pub fn sync(c: impl Client + 'static) -> AnyClient {
        AnyClient::Sync(Box::new(c))
    }

    /// Wraps an asynchronous client.
    pub fn asynchronous(c: impl AsyncClient + 'static) -> AnyClient {
        AnyClient::Async(Box::new(c))
    }

    pub(crate) fn connect(&mut self, timeout: Duration) -> Result<(), ConnectError> {
        match self {
            AnyClient::Sync(c) => c.connect(timeout),
            AnyClient::Async(c) => c.connect(timeout),
        }
    }

    pub(crate) fn close(&mut self) {
        match self {
            AnyClient::Sync(c) => c.close(),
            AnyClient::Async(c) => c.close(),
        }
    }
}

impl fmt::Debug for AnyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnyClient::Sync(_) => "AnyClient::Sync",
            AnyClient::Async(_) => "AnyClient::Async",
        })
    }
}

/// Builds one client per host (the seeds' MakeClients). Also used to rebuild a
/// worker's client after it kept failing past `error_threshold`.
pub trait ClientFactory: Send + Sync {
    /// A new client for `host`.
    fn build(&self, host: &str) -> Result<AnyClient, ConnectError>;
}

impl<F> ClientFactory for F
where
    F: Fn(&str) -> Result<AnyClient, ConnectError> + Send + Sync,
{
    fn build(&self, host: &str) -> Result<AnyClient, ConnectError> {
        self(host)
    }
}
