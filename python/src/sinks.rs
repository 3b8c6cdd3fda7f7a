//! Sinks (conveyor::sink, the go-events seed): `Broadcaster`, `QueueSink`, `Filter`,
//! `RetryingSink` with `Breaker`, `ExponentialBackoff` or any object with
//! `proceed` / `failure` / `success`, `ChannelSink`, and `PipelineSink` (from
//! `Pipeline.as_sink()`). Any object with `write(bytes)` (and optionally `close()`) is
//! a sink too, and every sink can be a pipeline's client.
//!
//! Every native method detaches from the interpreter before it touches a sink: the
//! combinators call Python code (sinks, matchers, strategies, drop hooks) from
//! conveyor's threads while holding their own locks, so no attached thread may wait
//! for those locks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use conveyor::queue::DropCallback;
use conveyor::sink::{
    Broadcaster, ChannelSink, Filter, FnSink, Overflow, QueueSink, RetryingSink, Sink, SinkBreaker, SinkClient,
    SinkExponentialBackoff, SinkRetryStrategy,
};
use conveyor::{AnyClient, Error};
use pyo3::exceptions::{PyKeyboardInterrupt, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyType};
use pyo3::PyClassInitializer;

use crate::bridge::{detached, log_exception, Bridge};
use crate::errors::{to_py, IntoPyResult, CLOSED, FULL, INVALID_ARGUMENT, TIMEOUT};
use crate::pipeline::{json_loads, payload};

/// Longest detached wait of a blocking `recv` between two signal checks.
const SLICE: Duration = Duration::from_millis(50);
/// `QueueSink(close_timeout=...)` and `Pipeline.as_sink(close_timeout=...)` default.
pub(crate) const DEFAULT_CLOSE_TIMEOUT: f64 = 30.0;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The crossing used by every sink, matcher and strategy written in Python.
fn bridge() -> &'static Bridge {
    static BRIDGE: OnceLock<Bridge> = OnceLock::new();
    BRIDGE.get_or_init(Bridge::default)
}

/// Seconds as a duration: `None` (or infinity) is no limit.
pub(crate) fn seconds(py: Python<'_>, name: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(s) if s.is_nan() || s < 0.0 => {
            Err(INVALID_ARGUMENT.err(py, format!("`{name}` must be a non-negative number of seconds or None, got {s}")))
        }
        Some(s) => Ok(Duration::try_from_secs_f64(s).ok()),
    }
}

/// A sink error as the matching exception, worded for sinks.
fn sink_error(py: Python<'_>, error: Error) -> PyErr {
    match error {
        Error::Closed => CLOSED.err(py, "the sink is closed"),
        Error::Full => FULL.err(py, "the queue sink is full: the event was dropped (overflow=\"drop_newest\")"),
        other => to_py(py, other),
    }
}

fn has_method(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<bool> {
    Ok(obj.hasattr(name)? && obj.getattr(name)?.is_callable())
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().qualname().map(|n| n.to_string()).unwrap_or_else(|_| "object".into())
}

// ---------------------------------------------------------------- the write graph

/// Who writes into whom (sinks and pipelines); refuses links that close a cycle.
pub(crate) type Node = conveyor::sink::WriteNode;

// ---------------------------------------------------------------- sinks from Python objects

/// A sink as the core sees it, and its node in the write graph (`None`: a leaf).
pub(crate) struct SinkParts {
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) node: Option<Arc<Node>>,
}

/// The adapters of Python objects used as sinks, by object, so that one object is one
/// sink everywhere (a broadcaster's `remove(obj)` finds what `add(obj)` added). An
/// adapter holds its object, so a live entry's address cannot be reused.
static PYTHON_SINKS: Mutex<Option<HashMap<usize, Weak<dyn Sink>>>> = Mutex::new(None);

/// A Python object with `write(bytes)` and optionally `close()`.
struct PythonSink {
    obj: Py<PyAny>,
    name: String,
    has_close: bool,
}

impl PythonSink {
    fn write(&self, event: &[u8]) -> conveyor::Result<()> {
        bridge()
            .attach(|py| match self.obj.call_method1(py, intern!(py, "write"), (PyBytes::new(py, event),)) {
                Ok(_) => Ok(()),
                Err(e) if CLOSED.get(py).is_ok_and(|closed| e.is_instance(py, closed)) => Err(Error::Closed),
                Err(e) => {
                    let msg = format!("{}.write raised {e}", self.name);
                    log_exception(py, &format!("{msg}; the write failed"), e);
                    Err(Error::Client(msg))
                }
            })
            .unwrap_or_else(|| Err(Error::Client("the Python interpreter is shutting down".into())))
    }

    fn close(&self) {
        if !self.has_close {
            return;
        }
        bridge().attach(|py| {
            if let Err(e) = self.obj.call_method0(py, intern!(py, "close")) {
                log_exception(py, &format!("{}.close raised an exception", self.name), e);
            }
        });
    }
}

fn python_sink(obj: &Bound<'_, PyAny>) -> PyResult<Arc<dyn Sink>> {
    let key = obj.as_ptr() as usize;
    let mut cache = lock(&PYTHON_SINKS);
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(sink) = cache.get(&key).and_then(Weak::upgrade) {
        return Ok(sink);
    }
    cache.retain(|_, adapter| adapter.strong_count() > 0);
    let adapter =
        Arc::new(PythonSink { obj: obj.clone().unbind(), name: type_name(obj), has_close: has_method(obj, "close")? });
    let closer = adapter.clone();
    let sink: Arc<dyn Sink> = Arc::new(FnSink::new(move |event: &[u8]| adapter.write(event), move || closer.close()));
    cache.insert(key, Arc::downgrade(&sink));
    Ok(sink)
}

/// `obj` as a sink: a native one, or any object with a `write` method.
fn sink_of(obj: &Bound<'_, PyAny>) -> PyResult<Option<SinkParts>> {
    if let Ok(native) = obj.cast::<PySink>() {
        let n = native.get();
        return Ok(Some(SinkParts { sink: n.sink.get().clone(), node: Some(n.node.clone()) }));
    }
    if has_method(obj, "write")? {
        return Ok(Some(SinkParts { sink: python_sink(obj)?, node: None }));
    }
    Ok(None)
}

fn required_sink(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<SinkParts> {
    sink_of(obj)?.ok_or_else(|| {
        PyTypeError::new_err(format!(
            "{what} must be a sink (an object with a write(bytes) method), not {}",
            type_name(obj)
        ))
    })
}

/// A pipeline client from `obj`: a client (with `publish` or `publish_async`), or a
/// sink, which gets each event of a batch in order; returns the sink's graph node.
pub(crate) fn client_or_sink(obj: &Bound<'_, PyAny>, bridge: &Arc<Bridge>) -> PyResult<(AnyClient, Option<Arc<Node>>)> {
    let is_client = has_method(obj, "publish")? || has_method(obj, "publish_async")?;
    if !is_client {
        if let Some(parts) = sink_of(obj)? {
            return Ok((AnyClient::sync(SinkClient::new(parts.sink)), parts.node));
        }
    }
    Ok((crate::clients::wrap(obj, bridge)?, None))
}

// ---------------------------------------------------------------- the native classes

/// An `Arc` released detached from the interpreter: the last reference to a sink may
/// close a queue or a pipeline and join threads that may be waiting to attach.
struct Held<T: ?Sized + Send + Sync>(Option<Arc<T>>);

impl<T: ?Sized + Send + Sync> Held<T> {
    fn new(value: Arc<T>) -> Held<T> {
        Held(Some(value))
    }

    fn get(&self) -> &Arc<T> {
        self.0.as_ref().expect("only Drop takes the Arc")
    }
}

impl<T: ?Sized + Send + Sync> Drop for Held<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            let release = move || drop(value);
            let _ = Python::try_attach(|py| detached(py, release));
        }
    }
}

/// The base of conveyor's sinks: `write`, `close`, `stats`, and a context manager
/// that closes the sink.
#[pyclass(frozen, subclass, module = "conveyor", name = "NativeSink")]
pub(crate) struct PySink {
    sink: Held<dyn Sink>,
    node: Arc<Node>,
}

impl PySink {
    fn new(sink: Arc<dyn Sink>, writes_into: impl IntoIterator<Item = Arc<Node>>) -> PySink {
        PySink { sink: Held::new(sink), node: Node::new(writes_into) }
    }
}

#[pymethods]
impl PySink {
    /// Writes one event (bytes, bytearray or memoryview). Raises `ClosedError` after
    /// `close()`, `FullError` when a `drop_newest` queue dropped it, `ClientError` when
    /// a sink failed or a retry strategy gave up on it. May block: a full blocking
    /// queue or channel, retries, a pipeline without room (closing the sink from
    /// another thread ends the wait with `ClosedError`).
    fn write(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<()> {
        let event = payload(event)?;
        let event: &[u8] = &event;
        let sink = self.sink.get();
        detached(py, || sink.write(event)).map_err(|e| sink_error(py, e))
    }

    /// Closes the sink and what it wraps (a queue delivers what it holds first, for its
    /// `close_timeout`); later writes raise `ClosedError`. Closing again does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let sink = self.sink.get();
        detached(py, || sink.close()).map_err(|e| sink_error(py, e))
    }

    /// The counters of this sink and of the sinks it wraps, as a dict: `kind`,
    /// `written`, `forwarded`, `dropped`, `filtered`, `failures`, `queued`, `inner`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let sink = self.sink.get();
        let json = detached(py, || serde_json::to_string(&sink.stats()))
            .map_err(|e| to_py(py, Error::Internal(format!("sink stats: {e}"))))?;
        json_loads(py)?.call1((json,))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the sink (through its own `close`, so a subclass's close applies).
    #[pyo3(signature = (_exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        slf: &Bound<'_, Self>,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        slf.call_method0(intern!(slf.py(), "close"))?;
        Ok(false)
    }
}

// ---------------------------------------------------------------- Broadcaster

/// Writes every event to every member, in member order. A member raising
/// `ClosedError` is removed, and every other member still gets that event exactly
/// once; other failures are counted (`stats()["failures"]`) and logged. Wrap slow
/// members in a `QueueSink` so that none holds back the others.
#[pyclass(frozen, extends = PySink, module = "conveyor", name = "Broadcaster")]
pub(crate) struct PyBroadcaster {
    broadcaster: Held<Broadcaster>,
}

#[pymethods]
impl PyBroadcaster {
    #[new]
    #[pyo3(signature = (sinks=None))]
    fn new(sinks: Option<&Bound<'_, PyAny>>) -> PyResult<PyClassInitializer<Self>> {
        let mut members = Vec::new();
        if let Some(sinks) = sinks.filter(|s| !s.is_none()) {
            for sink in sinks.try_iter()? {
                members.push(required_sink(&sink?, "every member")?);
            }
        }
        let broadcaster = Arc::new(Broadcaster::new(members.iter().map(|m| m.sink.clone()).collect()));
        let base = PySink::new(broadcaster.clone(), members.into_iter().filter_map(|m| m.node));
        Ok(PyClassInitializer::from(base).add_subclass(PyBroadcaster { broadcaster: Held::new(broadcaster) }))
    }

    /// Adds a member (adding one already there does nothing). Raises `ClosedError`
    /// after close, `InvalidArgumentError` when the member writes (directly or through
    /// other sinks and pipelines) into this broadcaster.
    fn add(slf: &Bound<'_, Self>, sink: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let member = required_sink(sink, "a member")?;
        let node = &slf.as_super().get().node;
        let linked = match &member.node {
            Some(to) => node.link(to, "adding this member").py(py)?,
            None => false,
        };
        let broadcaster = slf.get().broadcaster.get();
        let added = member.sink.clone();
        detached(py, || broadcaster.add(added)).map_err(|e| {
            if let (true, Some(to)) = (linked, &member.node) {
                node.unlink(to);
            }
            sink_error(py, e)
        })
    }

    /// Removes a member without closing it; an unknown sink is ignored. Writes that
    /// start after this returns do not reach it. Raises `ClosedError` after close.
    fn remove(slf: &Bound<'_, Self>, sink: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let member = required_sink(sink, "a member")?;
        let broadcaster = slf.get().broadcaster.get();
        detached(py, || broadcaster.remove(&member.sink)).map_err(|e| sink_error(py, e))?;
        if let Some(to) = &member.node {
            slf.as_super().get().node.unlink(to);
        }
        Ok(())
    }

    /// The number of members.
    fn __len__(&self, py: Python<'_>) -> usize {
        let broadcaster = self.broadcaster.get();
        detached(py, || broadcaster.len())
    }
}

// ---------------------------------------------------------------- QueueSink

/// Open queue sinks, closed (zero timeout) by the exit hook while Python still runs
/// their drop hooks and sinks.
static OPEN_QUEUES: Mutex<Vec<Weak<QueueSink>>> = Mutex::new(Vec::new());

fn overflow_arg(py: Python<'_>, overflow: &str) -> PyResult<Overflow> {
    match overflow {
        "block" => Ok(Overflow::Block),
        "drop_newest" => Ok(Overflow::DropNewest),
        "drop_oldest" => Ok(Overflow::DropOldest),
        other => Err(INVALID_ARGUMENT
            .err(py, format!("`overflow` must be \"block\", \"drop_newest\" or \"drop_oldest\", got {other:?}"))),
    }
}

fn drop_hook(callback: Py<PyAny>) -> DropCallback {
    Box::new(move |events: &[&[u8]]| {
        bridge().attach(|py| {
            let result = PyList::new(py, events.iter().copied()).and_then(|list| callback.call1(py, (list,)));
            if let Err(e) = result {
                let msg = format!("on_drop raised for {} dropped events; they still count as dropped", events.len());
                log_exception(py, &msg, e);
            }
        });
    })
}

/// Buffers up to `capacity` events and delivers them to `dst`, in order, from a thread
/// of its own, so writers never wait on `dst`. When full, `overflow` decides: `"block"`
/// (the writer waits), `"drop_newest"` (the write raises `FullError`) or
/// `"drop_oldest"`. Every dropped event (overflow, a failed delivery, the close
/// deadline) goes to `on_drop(events)`. `close()` delivers for up to `close_timeout`
/// seconds (None: no limit), then drops the rest, then closes `dst`.
#[pyclass(frozen, extends = PySink, module = "conveyor", name = "QueueSink")]
pub(crate) struct PyQueueSink {
    queue: Held<QueueSink>,
    close_timeout: Duration,
}

#[pymethods]
impl PyQueueSink {
    #[new]
    #[pyo3(
        signature = (dst, capacity, overflow="block", close_timeout=Some(DEFAULT_CLOSE_TIMEOUT), on_drop=None),
        text_signature = "(dst, capacity, overflow='block', close_timeout=30.0, on_drop=None)"
    )]
    fn new(
        py: Python<'_>,
        dst: &Bound<'_, PyAny>,
        capacity: usize,
        overflow: &str,
        close_timeout: Option<f64>,
        on_drop: Option<Py<PyAny>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let dst = required_sink(dst, "`dst`")?;
        if capacity == 0 {
            return Err(INVALID_ARGUMENT.err(py, "`capacity` must be at least 1"));
        }
        let overflow = overflow_arg(py, overflow)?;
        let close_timeout = seconds(py, "close_timeout", close_timeout)?.unwrap_or(Duration::MAX);
        let on_drop = match on_drop.filter(|f| !f.is_none(py)) {
            Some(f) if !f.bind(py).is_callable() => {
                return Err(PyTypeError::new_err("`on_drop` must be callable or None"))
            }
            other => other.map(drop_hook),
        };
        let sink = dst.sink.clone();
        let queue = detached(py, move || QueueSink::new(sink, capacity, overflow, close_timeout, on_drop))
            .map(Arc::new)
            .map_err(|e| sink_error(py, e))?;
        let mut open = lock(&OPEN_QUEUES);
        open.retain(|q| q.strong_count() > 0);
        open.push(Arc::downgrade(&queue));
        let base = PySink::new(queue.clone(), dst.node);
        Ok(PyClassInitializer::from(base).add_subclass(PyQueueSink { queue: Held::new(queue), close_timeout }))
    }

    /// Stops accepting events, delivers what is buffered for up to `timeout` seconds
    /// (None: the queue's `close_timeout`), drops (and reports) the rest, closes `dst`
    /// and gives a write still under way the timeout again to return (closing `dst`
    /// usually ends it). Returns within twice the timeout even when `dst` is stuck. Returns
    /// `{"delivered", "dropped", "drained"}` over the queue's life; again after close.
    #[pyo3(signature = (timeout=None))]
    fn close<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyDict>> {
        let timeout = match timeout {
            None => self.close_timeout,
            some => seconds(py, "timeout", some)?.unwrap_or(Duration::MAX),
        };
        let queue = self.queue.get();
        let report = detached(py, || queue.close_within(timeout));
        let d = PyDict::new(py);
        d.set_item("delivered", report.delivered)?;
        d.set_item("dropped", report.dropped)?;
        d.set_item("drained", report.drained)?;
        Ok(d)
    }

    /// Closes the queue: within `close_timeout`, or at once when the block is left by
    /// Ctrl-C (what is undelivered is reported to `on_drop`).
    #[pyo3(signature = (exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let interrupted = match exc_type.and_then(|t| t.cast::<PyType>().ok()) {
            Some(t) => t.is_subclass_of::<PyKeyboardInterrupt>()?,
            None => false,
        };
        self.close(py, interrupted.then_some(0.0))?;
        Ok(false)
    }
}

/// Closes every open queue sink with a zero timeout (called by the exit hook before it
/// closes the pipelines): what they hold is reported to their `on_drop` while Python
/// can still run it.
pub(crate) fn close_queues_at_exit(py: Python<'_>) {
    let open: Vec<Arc<QueueSink>> = lock(&OPEN_QUEUES).drain(..).filter_map(|q| q.upgrade()).collect();
    detached(py, move || {
        for queue in open {
            queue.close_within(Duration::ZERO);
        }
    });
}

// ---------------------------------------------------------------- Filter

/// Forwards to `dst` the events for which `matcher(event)` is true; the others are
/// discarded and the write still succeeds (`stats()["filtered"]`). The matcher runs on
/// the writer's thread; if it raises, the exception is logged and the event forwarded.
#[pyclass(frozen, extends = PySink, module = "conveyor", name = "Filter")]
pub(crate) struct PyFilter;

#[pymethods]
impl PyFilter {
    #[new]
    fn new(py: Python<'_>, dst: &Bound<'_, PyAny>, matcher: Py<PyAny>) -> PyResult<PyClassInitializer<Self>> {
        let dst = required_sink(dst, "`dst`")?;
        if !matcher.bind(py).is_callable() {
            return Err(PyTypeError::new_err("`matcher` must be callable: matcher(event) -> bool"));
        }
        let filter = Filter::new(dst.sink.clone(), move |event: &[u8]| {
            bridge()
                .attach(|py| {
                    let verdict = matcher.call1(py, (PyBytes::new(py, event),)).and_then(|v| v.bind(py).is_truthy());
                    verdict.unwrap_or_else(|e| {
                        log_exception(py, "the filter's matcher raised; the event is forwarded", e);
                        true
                    })
                })
                .unwrap_or(true)
        });
        Ok(PyClassInitializer::from(PySink::new(Arc::new(filter), dst.node)).add_subclass(PyFilter))
    }
}

// ---------------------------------------------------------------- retry strategies

/// A strategy shared between its Python object and the retrying sinks using it.
struct Shared<S>(Arc<Mutex<S>>);

impl<S: SinkRetryStrategy> SinkRetryStrategy for Shared<S> {
    fn proceed(&mut self) -> Duration {
        lock(&self.0).proceed()
    }

    fn failure(&mut self) -> bool {
        lock(&self.0).failure()
    }

    fn success(&mut self) {
        lock(&self.0).success()
    }
}

/// After `threshold` failed attempts in a row, at most one attempt per `backoff`
/// seconds (each failed attempt starts a new window); a success resets it; it never
/// gives up. Shared by the retrying sinks it is given to: `proceed()` shows its state.
#[pyclass(frozen, module = "conveyor", name = "Breaker")]
pub(crate) struct PyBreaker {
    breaker: Arc<Mutex<SinkBreaker>>,
}

#[pymethods]
impl PyBreaker {
    #[new]
    fn new(py: Python<'_>, threshold: u32, backoff: f64) -> PyResult<Self> {
        let backoff = seconds(py, "backoff", Some(backoff))?.unwrap_or(Duration::MAX);
        Ok(PyBreaker { breaker: Arc::new(Mutex::new(SinkBreaker::new(threshold, backoff))) })
    }

    /// Seconds to wait before the next attempt (0.0: now).
    fn proceed(&self) -> f64 {
        lock(&self.breaker).proceed().as_secs_f64()
    }

    /// Records a failed attempt; returns whether to give up (never).
    fn failure(&self) -> bool {
        lock(&self.breaker).failure()
    }

    /// Records a successful attempt.
    fn success(&self) {
        lock(&self.breaker).success()
    }
}

/// Full-jitter exponential backoff: after `n` failed attempts in a row the wait is
/// uniform in [0, min(base + factor * 2**(n-1), max)) seconds (overflow-safe: it
/// saturates at `max`); a success resets it; it never gives up. `seed` makes the
/// jitter replayable. Shared by the retrying sinks it is given to.
#[pyclass(frozen, module = "conveyor", name = "ExponentialBackoff")]
pub(crate) struct PyExponentialBackoff {
    backoff: Arc<Mutex<SinkExponentialBackoff>>,
}

#[pymethods]
impl PyExponentialBackoff {
    #[new]
    #[pyo3(signature = (base=1.0, factor=1.0, max=20.0, seed=None))]
    fn new(py: Python<'_>, base: f64, factor: f64, max: f64, seed: Option<u64>) -> PyResult<Self> {
        let d = |name: &str, v: f64| seconds(py, name, Some(v)).map(|d| d.unwrap_or(Duration::MAX));
        let (base, factor, max) = (d("base", base)?, d("factor", factor)?, d("max", max)?);
        let seed = seed.unwrap_or_else(rand_seed);
        Ok(PyExponentialBackoff { backoff: Arc::new(Mutex::new(SinkExponentialBackoff::new(base, factor, max, seed))) })
    }

    /// Seconds to wait before the next attempt: uniform in [0, bound).
    fn proceed(&self) -> f64 {
        lock(&self.backoff).proceed().as_secs_f64()
    }

    /// Records a failed attempt; returns whether to give up (never).
    fn failure(&self) -> bool {
        lock(&self.backoff).failure()
    }

    /// Records a successful attempt.
    fn success(&self) {
        lock(&self.backoff).success()
    }

    /// The upper bound of the next wait, in seconds.
    #[getter]
    fn bound(&self) -> f64 {
        lock(&self.backoff).bound().as_secs_f64()
    }
}

/// A seed for jitter nobody asked to replay (the standard library's random hash keys).
fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// A retry strategy written in Python: `proceed() -> seconds`, `failure() -> give up?`,
/// `success()`. A strategy that raises is logged; a failed `proceed` means no wait, a
/// failed `failure` gives up on the event (so a broken strategy cannot retry forever).
struct PythonStrategy {
    obj: Py<PyAny>,
    name: String,
}

impl PythonStrategy {
    fn call<T: Copy>(&self, method: &str, convert: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<T>, fallback: T) -> T {
        bridge()
            .attach(|py| {
                let result = self.obj.call_method0(py, method).and_then(|v| convert(v.bind(py)));
                result.unwrap_or_else(|e| {
                    log_exception(py, &format!("{}.{method}() raised", self.name), e);
                    fallback
                })
            })
            .unwrap_or(fallback)
    }
}

impl SinkRetryStrategy for PythonStrategy {
    fn proceed(&mut self) -> Duration {
        self.call(
            "proceed",
            |v| {
                let s: f64 = v.extract()?;
                if s.is_nan() || s < 0.0 {
                    return Err(PyTypeError::new_err(format!("proceed() returned {s}, not a number of seconds >= 0")));
                }
                Ok(Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX))
            },
            Duration::ZERO,
        )
    }

    fn failure(&mut self) -> bool {
        self.call("failure", |v| v.is_truthy(), true)
    }

    fn success(&mut self) {
        self.call("success", |_| Ok(()), ())
    }
}

fn strategy_of(obj: &Bound<'_, PyAny>) -> PyResult<Box<dyn SinkRetryStrategy>> {
    if let Ok(b) = obj.cast::<PyBreaker>() {
        return Ok(Box::new(Shared(b.get().breaker.clone())));
    }
    if let Ok(e) = obj.cast::<PyExponentialBackoff>() {
        return Ok(Box::new(Shared(e.get().backoff.clone())));
    }
    for method in ["proceed", "failure", "success"] {
        if !has_method(obj, method)? {
            return Err(PyTypeError::new_err(format!(
                "`strategy` must be a Breaker, an ExponentialBackoff or an object with proceed(), failure() and \
                 success(); {} has no {method}()",
                type_name(obj)
            )));
        }
    }
    Ok(Box::new(PythonStrategy { obj: obj.clone().unbind(), name: type_name(obj) }))
}

/// Retries each write to `dst` under `strategy` until `dst` takes it. The write raises
/// `ClientError` when the strategy gives up ("dropped by the retry strategy after N
/// attempts"), and `ClosedError` at once when `dst` is closed, or when this sink is
/// closed meanwhile (a pending backoff ends at once). Writes are serialized, so
/// concurrent writers keep their order. Closing it closes `dst`.
#[pyclass(frozen, extends = PySink, module = "conveyor", name = "RetryingSink")]
pub(crate) struct PyRetryingSink;

#[pymethods]
impl PyRetryingSink {
    #[new]
    fn new(dst: &Bound<'_, PyAny>, strategy: &Bound<'_, PyAny>) -> PyResult<PyClassInitializer<Self>> {
        let dst = required_sink(dst, "`dst`")?;
        let retrying = RetryingSink::new(dst.sink.clone(), strategy_of(strategy)?);
        Ok(PyClassInitializer::from(PySink::new(Arc::new(retrying), dst.node)).add_subclass(PyRetryingSink))
    }
}

// ---------------------------------------------------------------- ChannelSink

/// A bounded channel the application reads events from: `recv(timeout)`, or iterate
/// (iteration ends once the sink is closed and drained). A write waits for room;
/// after close, writes raise `ClosedError` (also those waiting) while buffered events
/// stay readable.
#[pyclass(frozen, extends = PySink, module = "conveyor", name = "ChannelSink")]
pub(crate) struct PyChannelSink {
    channel: Held<ChannelSink>,
}

impl PyChannelSink {
    fn next(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Option<Py<PyBytes>>> {
        let channel = self.channel.get();
        let mut outcome = channel.recv(Some(Duration::ZERO));
        if outcome == Err(Error::Timeout) && timeout != Some(Duration::ZERO) {
            let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
            outcome = loop {
                let slice = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()).min(SLICE));
                match detached(py, || channel.recv(Some(slice))) {
                    Err(Error::Timeout) if deadline.is_none_or(|d| Instant::now() < d) => py.check_signals()?,
                    other => break other,
                }
            };
        }
        match outcome {
            Ok(event) => Ok(Some(PyBytes::new(py, &event).unbind())),
            Err(Error::Closed) => Ok(None),
            Err(Error::Timeout) => Err(TIMEOUT.err(py, "timed out: the channel stayed empty")),
            Err(e) => Err(sink_error(py, e)),
        }
    }
}

#[pymethods]
impl PyChannelSink {
    #[new]
    fn new(py: Python<'_>, capacity: usize) -> PyResult<PyClassInitializer<Self>> {
        if capacity == 0 {
            return Err(INVALID_ARGUMENT.err(py, "`capacity` must be at least 1"));
        }
        let channel = Arc::new(ChannelSink::new(capacity));
        let base = PySink::new(channel.clone(), []);
        Ok(PyClassInitializer::from(base).add_subclass(PyChannelSink { channel: Held::new(channel) }))
    }

    /// The next event, waiting up to `timeout` seconds (None: no limit; Ctrl-C
    /// interrupts the wait). Raises `TimeoutError`, or `ClosedError` once the sink is
    /// closed and everything buffered was read.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyBytes>> {
        let timeout = seconds(py, "timeout", timeout)?;
        self.next(py, timeout)?.ok_or_else(|| CLOSED.err(py, "the channel is closed and drained"))
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        self.next(py, None)
    }

    /// Events buffered now.
    fn __len__(&self) -> usize {
        self.channel.get().len()
    }
}

// ---------------------------------------------------------------- PipelineSink

/// A pipeline as a sink (see `Pipeline.as_sink()`): a write publishes the event;
/// closing the sink closes the pipeline.
#[pyclass(frozen, extends = PySink, module = "conveyor", name = "PipelineSink")]
pub(crate) struct PyPipelineSink;

/// The Python object of a pipeline's sink (`sink`), writing into the pipeline `node`.
pub(crate) fn pipeline_sink(py: Python<'_>, sink: Arc<dyn Sink>, node: Arc<Node>) -> PyResult<Py<PyPipelineSink>> {
    Py::new(py, PyClassInitializer::from(PySink::new(sink, [node])).add_subclass(PyPipelineSink))
}
