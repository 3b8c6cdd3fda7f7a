//! `Pipeline` and `Producer`.
//!
//! The interpreter is released around every call that can wait (and around every
//! call that takes a lock a conveyor thread may hold while it waits to attach).
//! Blocking waits run in short detached slices with a signal check between them, so
//! Ctrl-C interrupts them. The one exception is the non-blocking first attempt of a
//! publish: it only takes the queue lock, which no thread holds while attaching.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use conveyor::{Error, ProducerCounts, ProducerOptions};
use pyo3::exceptions::{PyKeyboardInterrupt, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyTuple, PyType};
use pyo3::Borrowed;

use crate::bridge::{detached, drain_logs, engine_logger, Bridge};
use crate::clients::{ack_callback, drop_callback};
use crate::errors::{to_py, IntoPyResult, INVALID_ARGUMENT, TIMEOUT};
use crate::sinks::{client_or_sink, Node, PyPipelineSink};

/// Longest detached wait between two signal checks.
const SLICE: Duration = Duration::from_millis(50);
/// `close()` without a timeout waits this long for delivery.
const DEFAULT_CLOSE_TIMEOUT: f64 = 30.0;

struct Shared {
    /// Shared with the pipeline's sinks (`as_sink`).
    pipeline: Arc<conveyor::Pipeline>,
    bridge: Arc<Bridge>,
    closed: AtomicBool,
    /// The pipeline in the graph of who writes into whom (see `sinks::Node`).
    node: Arc<Node>,
}

impl Shared {
    /// The pipeline was closed (by `close()` or through its sink).
    fn mark_closed(self: &Arc<Shared>) {
        self.closed.store(true, Ordering::Release);
        open_pipelines().retain(|p| p.upgrade().is_some_and(|p| !Arc::ptr_eq(&p, self)));
    }
}

/// The pipeline as a sink: closing it closes the pipeline as `close()` does.
struct SinkOfPipeline {
    sink: conveyor::sink::PipelineSink,
    shared: Arc<Shared>,
}

impl conveyor::sink::Sink for SinkOfPipeline {
    fn write(&self, event: &[u8]) -> conveyor::Result<()> {
        self.sink.write(event)
    }

    fn write_batch(&self, events: &[&[u8]]) -> conveyor::Result<usize, conveyor::sink::BatchError> {
        self.sink.write_batch(events)
    }

    fn close(&self) -> conveyor::Result<()> {
        self.sink.close()?;
        self.shared.mark_closed();
        Ok(())
    }

    fn stats(&self) -> conveyor::sink::SinkStats {
        self.sink.stats()
    }
}

static JSON_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

pub(crate) fn json_loads(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    JSON_LOADS.get_or_try_init(py, || py.import("json")?.getattr("loads").map(Bound::unbind)).map(|f| f.bind(py))
}

/// Looks `json.loads` up now, when the module loads (see `errors::preload`).
pub(crate) fn preload(py: Python<'_>) -> PyResult<()> {
    json_loads(py).map(drop)
}

/// Every pipeline not closed yet, for the exit hook.
static OPEN: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

fn open_pipelines() -> std::sync::MutexGuard<'static, Vec<Weak<Shared>>> {
    OPEN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A timeout argument in seconds: `None` (or infinity) waits without limit.
fn timeout_arg(py: Python<'_>, name: &str, seconds: Option<f64>) -> PyResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_nan() || s < 0.0 => {
            Err(INVALID_ARGUMENT.err(py, format!("`{name}` must be a non-negative number of seconds or None, got {s}")))
        }
        Some(s) => Ok(Duration::try_from_secs_f64(s).ok()),
    }
}

/// Runs `attempt(slice)` detached until it stops timing out, checking for signals
/// between slices; fails with `TimeoutError` once `timeout` has passed.
fn wait_sliced<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut attempt: impl FnMut(Duration) -> conveyor::Result<T> + Send,
) -> PyResult<T> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let slice = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()).min(SLICE));
        match detached(py, || attempt(slice)) {
            Err(Error::Timeout) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(TIMEOUT.err(py, "timed out"));
                }
                py.check_signals()?;
            }
            other => return other.py(py),
        }
    }
}

fn counts_dict<'py>(py: Python<'py>, c: ProducerCounts) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("accepted", c.accepted)?;
    d.set_item("acked", c.acked)?;
    d.set_item("dropped", c.dropped)?;
    d.set_item("in_flight", c.in_flight)?;
    Ok(d)
}

fn callable(py: Python<'_>, name: &str, value: Option<Py<PyAny>>) -> PyResult<Option<Py<PyAny>>> {
    match value {
        Some(v) if v.is_none(py) => Ok(None),
        Some(v) if !v.bind(py).is_callable() => Err(PyTypeError::new_err(format!("`{name}` must be callable or None"))),
        other => Ok(other),
    }
}

/// A pipeline: a bounded queue, clients in one output mode, retries and accounting.
///
/// `Pipeline(clients, **config)`; see the package documentation.
#[pyclass(frozen, subclass, module = "conveyor", name = "Pipeline")]
pub(crate) struct PyPipeline {
    shared: Arc<Shared>,
}

#[pymethods]
impl PyPipeline {
    #[new]
    #[pyo3(signature = (clients=None, *, hosts=None, factory=None, **config))]
    fn new(
        py: Python<'_>,
        clients: Option<&Bound<'_, PyAny>>,
        hosts: Option<Vec<String>>,
        factory: Option<Py<PyAny>>,
        config: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let settings = crate::config::from_kwargs(py, config)?;
        let bridge = Arc::new(Bridge::default());
        let mut builder = conveyor::Pipeline::builder(settings).logger(engine_logger());
        let mut sinks = Vec::new();
        if let Some(clients) = clients.filter(|c| !c.is_none()) {
            for client in clients.try_iter()? {
                let (client, sink) = client_or_sink(&client?, &bridge)?;
                builder = builder.any_client(client);
                sinks.extend(sink);
            }
        }
        match (hosts, callable(py, "factory", factory)?) {
            (Some(hosts), Some(f)) => builder = builder.hosts(&hosts, crate::clients::factory(f, bridge.clone())),
            (None, None) => {}
            _ => {
                return Err(
                    INVALID_ARGUMENT.err(py, "`hosts` and `factory` go together: factory(host) builds each client")
                )
            }
        }
        let pipeline = detached(py, move || builder.build()).py(py)?;
        let shared = Arc::new(Shared {
            pipeline: Arc::new(pipeline),
            bridge,
            closed: AtomicBool::new(false),
            node: Node::new(sinks),
        });
        let mut open = open_pipelines();
        open.retain(|p| p.strong_count() > 0);
        open.push(Arc::downgrade(&shared));
        Ok(PyPipeline { shared })
    }

    /// A new producer. `on_ack(count)` hears of acknowledged events (in publish
    /// order, coalesced); `on_drop(events)` receives the payloads conveyor gave up
    /// on. Both run on conveyor's callback thread, once per round, never per event.
    #[pyo3(signature = (on_ack=None, on_drop=None, guaranteed=false, drop_on_cancel=false))]
    fn producer(
        &self,
        py: Python<'_>,
        on_ack: Option<Py<PyAny>>,
        on_drop: Option<Py<PyAny>>,
        guaranteed: bool,
        drop_on_cancel: bool,
    ) -> PyResult<PyProducer> {
        let bridge = &self.shared.bridge;
        let options = ProducerOptions {
            on_ack: callable(py, "on_ack", on_ack)?.map(|f| ack_callback(f, bridge.clone())),
            on_drop: callable(py, "on_drop", on_drop)?.map(|f| drop_callback(f, bridge.clone())),
            guaranteed,
            drop_on_cancel,
        };
        let shared = self.shared.clone();
        let producer = detached(py, move || shared.pipeline.producer(options)).py(py)?;
        Ok(PyProducer { producer })
    }

    /// Waits until every event accepted so far has its outcome reported (acked or
    /// dropped, callbacks returned). Raises `TimeoutError` after `timeout` seconds.
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = timeout_arg(py, "timeout", timeout)?;
        let shared = &self.shared;
        wait_sliced(py, timeout, |slice| shared.pipeline.flush(slice))
    }

    /// Stops accepting events, delivers what it can within `timeout` seconds, drops
    /// (and reports) the rest, closes the clients. Idempotent: a second call returns
    /// the first report, `{"accepted", "acked", "dropped", "drained"}`.
    #[pyo3(signature = (timeout=DEFAULT_CLOSE_TIMEOUT), text_signature = "(self, timeout=30.0)")]
    fn close<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyDict>> {
        let timeout = timeout_arg(py, "timeout", timeout)?.unwrap_or(Duration::MAX);
        let shared = self.shared.clone();
        let report = detached(py, move || shared.pipeline.close(timeout)).py(py)?;
        self.shared.mark_closed();
        drain_logs(py);
        let d = PyDict::new(py);
        d.set_item("accepted", report.accepted)?;
        d.set_item("acked", report.acked)?;
        d.set_item("dropped", report.dropped)?;
        d.set_item("drained", report.drained)?;
        Ok(d)
    }

    /// A snapshot of every counter, as a dict (the engine's stats, serialized, plus
    /// `"python"`: crossings between conveyor's threads and the interpreter).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let shared = self.shared.clone();
        let json = detached(py, move || shared.pipeline.stats().to_json());
        let stats = json_loads(py)?.call1((json,))?;
        stats.set_item("python", self.shared.bridge.to_dict(py)?)?;
        Ok(stats)
    }

    /// Adds a client (or a sink) while running (not in mode `single`); returns its id.
    /// Raises `InvalidArgumentError` for a sink that writes into this pipeline.
    fn add_client(&self, py: Python<'_>, client: &Bound<'_, PyAny>) -> PyResult<u64> {
        let (client, sink) = client_or_sink(client, &self.shared.bridge)?;
        let node = &self.shared.node;
        let linked = match &sink {
            Some(to) => node.link(to, "serving this sink as a client of the pipeline").py(py)?,
            None => false,
        };
        let shared = self.shared.clone();
        detached(py, move || shared.pipeline.add_client(client)).py(py).inspect_err(|_| {
            if let (true, Some(to)) = (linked, &sink) {
                node.unlink(to);
            }
        })
    }

    /// This pipeline as a sink (`conveyor.PipelineSink`): a write publishes the event
    /// through a producer of its own (made with `on_ack`, `on_drop`, `guaranteed` as by
    /// `producer()`), waiting up to `publish_timeout` seconds for room (None: no
    /// limit); closing the sink closes the pipeline, waiting up to `close_timeout`
    /// seconds for delivery. The sink keeps the pipeline alive.
    #[pyo3(
        signature = (*, publish_timeout=None, close_timeout=Some(crate::sinks::DEFAULT_CLOSE_TIMEOUT), on_ack=None, on_drop=None, guaranteed=false),
        text_signature = "(self, *, publish_timeout=None, close_timeout=30.0, on_ack=None, on_drop=None, guaranteed=False)"
    )]
    fn as_sink(
        &self,
        py: Python<'_>,
        publish_timeout: Option<f64>,
        close_timeout: Option<f64>,
        on_ack: Option<Py<PyAny>>,
        on_drop: Option<Py<PyAny>>,
        guaranteed: bool,
    ) -> PyResult<Py<PyPipelineSink>> {
        let publish_timeout = crate::sinks::seconds(py, "publish_timeout", publish_timeout)?;
        let close_timeout = crate::sinks::seconds(py, "close_timeout", close_timeout)?.unwrap_or(Duration::MAX);
        let bridge = &self.shared.bridge;
        let options = ProducerOptions {
            on_ack: callable(py, "on_ack", on_ack)?.map(|f| ack_callback(f, bridge.clone())),
            on_drop: callable(py, "on_drop", on_drop)?.map(|f| drop_callback(f, bridge.clone())),
            guaranteed,
            drop_on_cancel: false,
        };
        let pipeline = self.shared.pipeline.clone();
        let sink =
            detached(py, move || conveyor::sink::PipelineSink::new(pipeline, options, publish_timeout, close_timeout))
                .py(py)?;
        let sink = SinkOfPipeline { sink, shared: self.shared.clone() };
        crate::sinks::pipeline_sink(py, Arc::new(sink), self.shared.node.clone())
    }

    /// Adds a client for `host` built by `factory(host)`, which also rebuilds it
    /// when it keeps failing past `error_threshold`; returns its id.
    fn add_host(&self, py: Python<'_>, host: String, factory: Py<PyAny>) -> PyResult<u64> {
        let factory = callable(py, "factory", Some(factory))?
            .ok_or_else(|| PyTypeError::new_err("`factory` must be callable"))?;
        let factory = crate::clients::factory(factory, self.shared.bridge.clone());
        let shared = self.shared.clone();
        detached(py, move || shared.pipeline.add_host(&host, factory)).py(py)
    }

    /// Removes a client while running; its batches go to the other clients.
    fn remove_client(&self, py: Python<'_>, client_id: u64) -> PyResult<()> {
        let shared = self.shared.clone();
        detached(py, move || shared.pipeline.remove_client(client_id)).py(py)
    }

    /// The output mode: "single", "failover" or "loadbalance".
    #[getter]
    fn mode(&self) -> &'static str {
        self.shared.pipeline.mode().as_str()
    }

    /// True once `close()` returned.
    #[getter]
    fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the pipeline: waiting up to 30 s for delivery, or not at all when the
    /// block is left by Ctrl-C (what is undelivered is reported dropped).
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
        self.close(py, Some(if interrupted { 0.0 } else { DEFAULT_CLOSE_TIMEOUT }))?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { "closed" } else { "open" };
        format!("<conveyor.Pipeline mode={} {state}>", self.mode())
    }
}

impl Drop for PyPipeline {
    fn drop(&mut self) {
        // The last reference closes the pipeline (zero timeout). Joining the workers
        // must not happen attached: they may be waiting to attach.
        if Arc::strong_count(&self.shared) == 1 && !self.shared.closed.load(Ordering::Acquire) {
            let shared = self.shared.clone();
            let close = move || drop(shared.pipeline.close(Duration::ZERO));
            match Python::try_attach(|py| detached(py, close.clone())) {
                Some(()) => {}
                None => close(),
            }
        }
    }
}

/// Closes every open pipeline with a zero timeout; the package registers it with
/// `atexit`, so that conveyor's threads are gone before the interpreter finalizes.
#[pyfunction]
pub(crate) fn _close_all_at_exit(py: Python<'_>) {
    // Queue sinks first: they may feed the pipelines, and their drop hooks need Python.
    crate::sinks::close_queues_at_exit(py);
    let open: Vec<Arc<Shared>> = open_pipelines().drain(..).filter_map(|p| p.upgrade()).collect();
    for shared in open {
        let s = shared.clone();
        detached(py, move || drop(s.pipeline.close(Duration::ZERO)));
        shared.closed.store(true, Ordering::Release);
    }
    drain_logs(py);
    crate::bridge::mark_exiting();
}

/// One event's payload: borrowed from `bytes`, copied from the mutable kinds.
pub(crate) fn payload<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Cow::Owned(b.to_vec()));
    }
    if obj.is_instance_of::<PyMemoryView>() {
        let copy = obj.call_method0("tobytes")?;
        return Ok(Cow::Owned(copy.cast::<PyBytes>()?.as_bytes().to_vec()));
    }
    let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    Err(PyTypeError::new_err(format!("an event must be bytes, bytearray or memoryview, not {type_name}")))
}

/// Publishes events into a pipeline and hears about their outcomes.
#[pyclass(frozen, module = "conveyor", name = "Producer")]
pub(crate) struct PyProducer {
    producer: conveyor::Producer,
}

#[pymethods]
impl PyProducer {
    /// Publishes one event, waiting up to `timeout` seconds for room (None: no
    /// limit). Raises `TimeoutError`, `ClosedError`, `CancelledError`.
    #[pyo3(signature = (data, timeout=None))]
    fn publish(&self, py: Python<'_>, data: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<()> {
        let data = payload(data)?;
        let timeout = timeout_arg(py, "timeout", timeout)?;
        match self.producer.try_publish(&data) {
            Err(Error::Full) => {}
            other => return other.py(py),
        }
        if timeout == Some(Duration::ZERO) {
            return Err(TIMEOUT.err(py, "timed out: the queue is full"));
        }
        let producer = &self.producer;
        let data: &[u8] = &data;
        wait_sliced(py, timeout, |slice| producer.publish(data, Some(slice)))
    }

    /// Publishes one event if there is room now; raises `FullError` otherwise.
    fn try_publish(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = payload(data)?;
        self.producer.try_publish(&data).py(py)
    }

    /// Publishes events in order, waiting up to `timeout` seconds for room; returns
    /// how many were accepted (a prefix: fewer than all only when the timeout
    /// passed). Raises `TimeoutError` if none was accepted in time.
    #[pyo3(signature = (events, timeout=None))]
    fn publish_batch(&self, py: Python<'_>, events: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<usize> {
        // A tuple owns every item: another thread may change a list while the
        // payloads are read detached. Borrowing from it costs no reference counting.
        let tuple = if let Ok(tuple) = events.cast::<PyTuple>() {
            tuple.clone()
        } else if let Ok(list) = events.cast::<PyList>() {
            list.to_tuple()
        } else {
            PyTuple::new(py, events.try_iter()?.collect::<PyResult<Vec<_>>>()?)?
        };
        let items: Vec<Borrowed<'_, '_, PyAny>> = tuple.iter_borrowed().collect();
        let payloads: Vec<Cow<'_, [u8]>> = items.iter().map(|item| payload(item)).collect::<PyResult<_>>()?;
        let views: Vec<&[u8]> = payloads.iter().map(|p| p.as_ref()).collect();
        if views.is_empty() {
            return Ok(0);
        }
        let timeout = timeout_arg(py, "timeout", timeout)?;
        let mut accepted = match self.producer.publish_batch(&views, Some(Duration::ZERO)) {
            Ok(n) => n,
            Err(Error::Timeout) => 0,
            Err(e) => return Err(to_py(py, e)),
        };
        if accepted == views.len() {
            return Ok(accepted);
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let producer = &self.producer;
        while accepted < views.len() {
            let slice = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()).min(SLICE));
            let rest = &views[accepted..];
            match detached(py, || producer.publish_batch(rest, Some(slice))) {
                Ok(n) => accepted += n,
                Err(Error::Timeout) => {}
                Err(e) if accepted == 0 => return Err(to_py(py, e)),
                Err(_) => return Ok(accepted),
            }
            if accepted == views.len() {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return if accepted == 0 { Err(TIMEOUT.err(py, "timed out: the queue is full")) } else { Ok(accepted) };
            }
            py.check_signals()?;
        }
        Ok(accepted)
    }

    /// Cancels the producer: later publishes raise `CancelledError`. With
    /// `drop_on_cancel`, removes its events not yet taken by a client (reported to
    /// `on_drop`) and returns how many.
    fn cancel(&self) -> usize {
        self.producer.cancel()
    }

    /// This producer's accounting: `{"accepted", "acked", "dropped", "in_flight"}`.
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        counts_dict(py, self.producer.counts())
    }

    fn __repr__(&self) -> String {
        let c = self.producer.counts();
        format!("<conveyor.Producer accepted={} acked={} dropped={}>", c.accepted, c.acked, c.dropped)
    }
}
