//! Python objects as conveyor clients, and Python callables as producer callbacks.
//!
//! Every call into Python attaches once: one attach per batch (publish), per
//! connect or close, and per callback round; never per event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor::queue::{AckCallback, DropCallback};
use conveyor::{AnyClient, AsyncClient, Client, ClientFactory, Completion, ConnectError, Events, Level, Published};
use pyo3::exceptions::{PyBaseException, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::bridge::{engine_logger, log_exception, log_now, Bridge, Crossing};
use crate::errors::{INVALID_ARGUMENT, RETRY};

/// A Python client object and what conveyor needs to call it.
struct PyClientObject {
    obj: Py<PyAny>,
    /// The class name, for messages.
    name: String,
    has_connect: bool,
    has_close: bool,
    bridge: Arc<Bridge>,
}

/// Wraps a Python object as a client: asynchronous when it has `publish_async`,
/// synchronous when it has `publish`.
pub(crate) fn wrap(obj: &Bound<'_, PyAny>, bridge: &Arc<Bridge>) -> PyResult<AnyClient> {
    let callable = |name: &str| -> PyResult<bool> { Ok(obj.hasattr(name)? && obj.getattr(name)?.is_callable()) };
    let client = PyClientObject {
        obj: obj.clone().unbind(),
        name: obj.get_type().qualname().map(|n| n.to_string()).unwrap_or_else(|_| "client".into()),
        has_connect: callable("connect")?,
        has_close: callable("close")?,
        bridge: bridge.clone(),
    };
    if callable("publish_async")? {
        Ok(AnyClient::asynchronous(PyAsyncClient(client)))
    } else if callable("publish")? {
        Ok(AnyClient::sync(PySyncClient(client)))
    } else {
        Err(PyTypeError::new_err(format!(
            "{} is not a client: it needs a publish(events) or a publish_async(events, done) method",
            client.name
        )))
    }
}

/// A batch as the `list[bytes]` clients and `on_drop` receive (one copy per event:
/// the views are valid only until the batch settles).
fn events_list<'py, 'a>(
    py: Python<'py>,
    events: impl ExactSizeIterator<Item = &'a [u8]>,
) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, events)
}

/// A count of leading events published, as a client returned it or passed it to
/// `done`: an int in `0..=len`.
fn count_in(value: &Bound<'_, PyAny>, len: usize) -> Result<usize, String> {
    match value.extract::<i64>() {
        Ok(n) if n >= 0 && (n as u64) <= len as u64 => Ok(n as usize),
        Ok(n) => Err(format!("a count of {n} for a batch of {len} events")),
        Err(_) => {
            let repr = value.repr().map(|r| r.to_string()).unwrap_or_else(|_| "?".into());
            Err(format!("{repr}, which is not a count (None or an int in 0..={len})"))
        }
    }
}

/// `None` (everything published) or a count.
fn published_count(value: &Bound<'_, PyAny>, len: usize) -> Result<usize, String> {
    if value.is_none() {
        Ok(len)
    } else {
        count_in(value, len)
    }
}

/// What an exception raised by (or reported for) a publish of `len` events by
/// `client` means: `Retry(published=n)` is a temporary failure after `n` events;
/// anything else breaks the connection and is logged with its traceback.
fn failure(py: Python<'_>, client: &str, error: PyErr, len: usize) -> Published {
    let is_retry = RETRY.get(py).is_ok_and(|retry| error.is_instance(py, retry));
    if !is_retry {
        let msg = format!("{client} failed to publish a batch of {len} events; the connection counts as broken");
        log_exception(py, &msg, error);
        return Published::broken(0);
    }
    // No `intern!` here: done() may run on a daemon thread as the interpreter exits,
    // and a first `intern!` would release and retake the interpreter.
    let published = error.value(py).getattr("published").ok().filter(|p| !p.is_none());
    match published.map(|p| count_in(&p, len)) {
        None => Published::retry(0),
        Some(Ok(count)) => Published::retry(count),
        Some(Err(what)) => {
            log_now(py, Level::Error, &format!("{client} raised Retry with {what}; the publish counts as failed"));
            Published::broken(0)
        }
    }
}

impl PyClientObject {
    fn connect(&self, timeout: Duration) -> Result<(), ConnectError> {
        if !self.has_connect {
            return Ok(());
        }
        self.bridge
            .attach(|py| {
                let result = self.obj.call_method1(py, intern!(py, "connect"), (timeout.as_secs_f64(),));
                self.bridge.count(Crossing::Client, result.is_err());
                // The engine logs failed connects itself (a host being down is routine).
                result.map(drop).map_err(|e| ConnectError(format!("{}.connect raised {e}", self.name)))
            })
            .unwrap_or_else(|| Err(ConnectError("the Python interpreter is shutting down".into())))
    }

    fn close(&self) {
        if !self.has_close {
            return;
        }
        self.bridge.attach(|py| {
            let result = self.obj.call_method0(py, intern!(py, "close"));
            self.bridge.count(Crossing::Client, result.is_err());
            if let Err(e) = result {
                log_exception(py, &format!("{}.close raised an exception", self.name), e);
            }
        });
    }

    fn publish(&self, py: Python<'_>, events: &Events) -> Published {
        let len = events.len();
        let result =
            events_list(py, events.iter()).and_then(|list| self.obj.call_method1(py, intern!(py, "publish"), (list,)));
        match result {
            Ok(value) => match published_count(value.bind(py), len) {
                Ok(count) => {
                    self.bridge.count(Crossing::Client, false);
                    Published { count, status: conveyor::Status::Ok }
                }
                Err(what) => {
                    self.bridge.count(Crossing::Client, true);
                    let msg = format!("{}.publish returned {what}; the publish counts as failed", self.name);
                    log_now(py, Level::Error, &msg);
                    Published::broken(0)
                }
            },
            Err(e) => {
                self.bridge.count(Crossing::Client, true);
                failure(py, &self.name, e, len)
            }
        }
    }
}

struct PySyncClient(PyClientObject);

impl Client for PySyncClient {
    fn connect(&mut self, timeout: Duration) -> Result<(), ConnectError> {
        self.0.connect(timeout)
    }

    fn close(&mut self) {
        self.0.close()
    }

    fn publish(&mut self, events: &Events) -> Published {
        // While the interpreter shuts down the batch fails; close drops it.
        self.0.bridge.attach(|py| self.0.publish(py, events)).unwrap_or(Published::broken(0))
    }
}

struct PyAsyncClient(PyClientObject);

impl AsyncClient for PyAsyncClient {
    fn connect(&mut self, timeout: Duration) -> Result<(), ConnectError> {
        self.0.connect(timeout)
    }

    fn close(&mut self) {
        self.0.close()
    }

    fn publish_async(&mut self, events: Events, completion: Completion) -> Result<(), ConnectError> {
        let client = &self.0;
        let len = events.len();
        client
            .bridge
            .attach(move |py| {
                let done = PyCompletion { completion: Mutex::new(Some(completion)), len, client: client.name.clone() };
                let done = Bound::new(py, done).map_err(|e| ConnectError(e.to_string()))?;
                let result = events_list(py, events.iter())
                    .and_then(|list| client.obj.call_method1(py, intern!(py, "publish_async"), (list, &done)));
                client.bridge.count(Crossing::Client, result.is_err());
                match result {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        // Not accepted: fail the batch now, so that a later done() finds
                        // nothing to settle (it would count as a duplicate otherwise).
                        drop(done.get().take());
                        let msg = format!("{}.publish_async raised {e}", client.name);
                        log_exception(py, &format!("{msg}; the connection counts as broken"), e);
                        Err(ConnectError(msg))
                    }
                }
            })
            .unwrap_or_else(|| Err(ConnectError("the Python interpreter is shutting down".into())))
    }
}

/// The `done` callable handed to `publish_async`: completes its batch exactly once,
/// from any thread.
#[pyclass(frozen, module = "conveyor", name = "Completion")]
pub(crate) struct PyCompletion {
    completion: Mutex<Option<Completion>>,
    len: usize,
    client: String,
}

impl PyCompletion {
    /// Takes the completion out; dropping it unreported fails the batch.
    fn take(&self) -> Option<Completion> {
        self.completion.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn pending(&self) -> bool {
        self.completion.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn outcome(
        &self,
        py: Python<'_>,
        count: Option<&Bound<'_, PyAny>>,
        error: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Published> {
        let bad = |what: String| INVALID_ARGUMENT.err(py, format!("done() got {what}"));
        let count = count.filter(|c| !c.is_none());
        let Some(error) = error.filter(|e| !e.is_none()) else {
            let count = count.map_or(Ok(self.len), |c| count_in(c, self.len)).map_err(bad)?;
            return Ok(Published { count, status: conveyor::Status::Ok });
        };
        let explicit = count.map(|c| count_in(c, self.len)).transpose().map_err(bad)?;
        let Ok(exception) = error.cast::<PyBaseException>() else {
            return Err(INVALID_ARGUMENT.err(py, "done(error=...) takes an exception instance or None"));
        };
        let reported = failure(py, &self.client, PyErr::from_value(exception.clone().into_any()), self.len);
        Ok(Published { count: explicit.unwrap_or(reported.count), status: reported.status })
    }
}

#[pymethods]
impl PyCompletion {
    /// Reports the batch: `done()` or `done(None)` = all published; `done(n)` = the
    /// first `n`, the rest is retried; `done(n, error=exc)` = `n`, then a failure
    /// (`conveyor.Retry`: temporary, same connection; anything else: the connection
    /// is broken). Call it once, from any thread.
    #[pyo3(signature = (count=None, error=None))]
    fn __call__(
        &self,
        py: Python<'_>,
        count: Option<&Bound<'_, PyAny>>,
        error: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let outcome = self.outcome(py, count, error);
        let Some(completion) = self.take() else {
            return Err(INVALID_ARGUMENT.err(py, "done() was already called for this batch"));
        };
        // Bad arguments still settle the batch (as failed), so that nothing waits forever.
        let published = outcome.as_ref().copied().unwrap_or(Published::broken(0));
        crate::bridge::detached(py, move || completion.done(published));
        outcome.map(drop)
    }

    /// How many events the batch holds.
    fn __len__(&self) -> usize {
        self.len
    }

    /// True until the batch is reported.
    #[getter(pending)]
    fn is_pending(&self) -> bool {
        self.pending()
    }

    fn __repr__(&self) -> String {
        format!("<conveyor.Completion of {} events, {}>", self.len, if self.pending() { "pending" } else { "done" })
    }
}

impl Drop for PyCompletion {
    fn drop(&mut self) {
        if self.pending() {
            let msg = format!(
                "the done callback of {} for a batch of {} events was garbage-collected without being called; \
                 the batch counts as failed",
                self.client, self.len
            );
            engine_logger()(Level::Error, &msg);
        }
    }
}

/// A client factory over a Python callable `factory(host) -> client`.
pub(crate) fn factory(factory: Py<PyAny>, bridge: Arc<Bridge>) -> Arc<dyn ClientFactory> {
    Arc::new(move |host: &str| -> Result<AnyClient, ConnectError> {
        bridge
            .attach(|py| {
                let result = factory.call1(py, (host,));
                bridge.count(Crossing::Client, result.is_err());
                let built = result.and_then(|client| wrap(client.bind(py), &bridge));
                built.map_err(|e| {
                    let msg = format!("factory({host:?}) raised {e}");
                    log_exception(py, &msg, e);
                    ConnectError(msg)
                })
            })
            .unwrap_or_else(|| Err(ConnectError("the Python interpreter is shutting down".into())))
    })
}

/// A producer's `on_ack(count)`.
pub(crate) fn ack_callback(callback: Py<PyAny>, bridge: Arc<Bridge>) -> AckCallback {
    Box::new(move |count: u64| {
        bridge.attach(|py| {
            let result = callback.call1(py, (count,));
            bridge.count(Crossing::Callback, result.is_err());
            if let Err(e) = result {
                log_exception(py, &format!("on_ack({count}) raised; the events still count as acknowledged"), e);
            }
        });
    })
}

/// A producer's `on_drop(events)`.
pub(crate) fn drop_callback(callback: Py<PyAny>, bridge: Arc<Bridge>) -> DropCallback {
    Box::new(move |events: &[&[u8]]| {
        bridge.attach(|py| {
            let result = events_list(py, events.iter().copied()).and_then(|list| callback.call1(py, (list,)));
            bridge.count(Crossing::Callback, result.is_err());
            if let Err(e) = result {
                let msg = format!("on_drop raised for {} dropped events; they still count as dropped", events.len());
                log_exception(py, &msg, e);
            }
        });
    })
}
