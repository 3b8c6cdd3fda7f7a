//! The crossing between conveyor's threads and the interpreter: attaching (once per
//! batch, counted), logging to the `conveyor` logger, and keeping clear of
//! interpreter shutdown.
//!
//! Locks: conveyor's threads may hold core locks when they log, and Python threads
//! may wait on those locks while attached; so nothing here attaches on the logging
//! path. Log records go through a channel to one forwarder thread, which attaches on
//! its own (and `drain_logs` lets an attached caller flush the channel).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use conveyor::{Level, LogFn};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyDictMethods};

/// Set by the exit hook once every pipeline is closed: from then on conveyor's
/// threads no longer attach, and a thread coming back from a detached wait parks
/// instead of re-attaching to an interpreter that is finalizing.
static EXITING: AtomicBool = AtomicBool::new(false);
/// The thread that runs the exit hook (it goes on finalizing; it must never park).
static EXIT_THREAD: OnceLock<ThreadId> = OnceLock::new();

pub(crate) fn exiting() -> bool {
    EXITING.load(Ordering::Acquire)
}

/// Called by the exit hook after it closed every pipeline.
pub(crate) fn mark_exiting() {
    let _ = EXIT_THREAD.set(thread::current().id());
    EXITING.store(true, Ordering::Release);
}

/// Runs `f` detached from the interpreter, so that other Python threads and
/// conveyor's callbacks can run meanwhile.
///
/// A daemon thread that comes back after the exit hook ran would re-attach to a
/// finalizing interpreter, which CPython answers by killing the thread under our
/// Rust frames; such a thread parks for good instead (the process is exiting).
pub(crate) fn detached<T, F>(py: Python<'_>, f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    py.detach(|| {
        let result = f();
        if exiting() && EXIT_THREAD.get() != Some(&thread::current().id()) {
            loop {
                thread::park();
            }
        }
        result
    })
}

/// Holds the Python thread state of a conveyor thread from its first attach to its
/// exit. Without it every attach would create a thread state and delete it again
/// (with its frame stack, a fresh mapping and an unmapping each time): a cost
/// per batch that measured as large as the batch's own Python work.
struct KeptThreadState;

thread_local! {
    static KEPT: std::cell::RefCell<Option<KeptThreadState>> = const { std::cell::RefCell::new(None) };
}

/// Gives the calling conveyor thread a thread state that outlives each attach.
/// Threads that already have one (Python's own threads) are left alone.
fn keep_thread_state() {
    let _ = KEPT.try_with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.is_some() {
            return;
        }
        // SAFETY: the interpreter is initialized (this module is loaded) and not
        // finalizing (`exiting()` is checked first, and the exit hook runs before
        // finalization). This thread holds no thread state, so `PyGILState_Ensure`
        // creates one and takes the interpreter, and `PyEval_SaveThread` releases it
        // again while the state stays registered (its counter stays at one). pyo3's
        // later attaches on this thread find the state and only take the interpreter.
        unsafe {
            if !ffi::PyGILState_GetThisThreadState().is_null() {
                return;
            }
            ffi::PyGILState_Ensure();
            ffi::PyEval_SaveThread();
        }
        *kept = Some(KeptThreadState);
    });
}

impl Drop for KeptThreadState {
    /// Runs when the thread exits: deletes its thread state. After the exit hook the
    /// interpreter may be finalizing; the state is then left to the interpreter.
    fn drop(&mut self) {
        if exiting() {
            return;
        }
        // SAFETY: this thread's state was created by `keep_thread_state` and is not
        // current (every attach released it). Restoring it takes the interpreter;
        // releasing the original `PyGILState_Ensure` (the thread had no state then:
        // UNLOCKED) drops the counter to zero, which deletes the state and releases
        // the interpreter.
        unsafe {
            let state = ffi::PyGILState_GetThisThreadState();
            if state.is_null() {
                return;
            }
            ffi::PyEval_RestoreThread(state);
            ffi::PyGILState_Release(ffi::PyGILState_STATE::PyGILState_UNLOCKED);
        }
    }
}

/// Counters of the crossings of one pipeline (reported in `stats()["python"]`).
#[derive(Default)]
pub(crate) struct Bridge {
    attaches: AtomicU64,
    client_calls: AtomicU64,
    client_errors: AtomicU64,
    callback_calls: AtomicU64,
    callback_errors: AtomicU64,
}

/// Which counter a crossing adds to.
#[derive(Clone, Copy)]
pub(crate) enum Crossing {
    /// A client method (connect, publish, publish_async, close) or the factory.
    Client,
    /// A producer's on_ack or on_drop.
    Callback,
}

impl Bridge {
    /// Runs `f` attached to the interpreter, counting one attach; `None` when the
    /// interpreter is shutting down (the caller counts the batch as failed).
    pub(crate) fn attach<R>(&self, f: impl FnOnce(Python<'_>) -> R) -> Option<R> {
        if exiting() {
            return None;
        }
        keep_thread_state();
        Python::try_attach(|py| {
            self.attaches.fetch_add(1, Ordering::Relaxed);
            f(py)
        })
    }

    /// Counts a call into Python code and whether it raised.
    pub(crate) fn count(&self, kind: Crossing, raised: bool) {
        let (calls, errors) = match kind {
            Crossing::Client => (&self.client_calls, &self.client_errors),
            Crossing::Callback => (&self.callback_calls, &self.callback_errors),
        };
        calls.fetch_add(1, Ordering::Relaxed);
        if raised {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        d.set_item("gil_acquisitions", get(&self.attaches))?;
        d.set_item("client_calls", get(&self.client_calls))?;
        d.set_item("client_errors", get(&self.client_errors))?;
        d.set_item("callback_calls", get(&self.callback_calls))?;
        d.set_item("callback_errors", get(&self.callback_errors))?;
        d.set_item("log_records_lost", LOST_RECORDS.load(Ordering::Relaxed))?;
        Ok(d)
    }
}

/// Most engine log records waiting for the forwarder; beyond it they are counted
/// as lost rather than held without bound.
const LOG_BACKLOG: usize = 4096;
static LOST_RECORDS: AtomicU64 = AtomicU64::new(0);

struct LogChannel {
    tx: Sender<(Level, String)>,
    rx: Receiver<(Level, String)>,
    /// Records sent, and records emitted (or lost): `drain_logs` waits for the
    /// second to reach what the first was when it started.
    sent: AtomicU64,
    finished: AtomicU64,
    emitted: Mutex<()>,
    emitted_cv: Condvar,
}

impl LogChannel {
    fn done(&self, n: usize) {
        self.finished.fetch_add(n as u64, Ordering::AcqRel);
        let _guard = self.emitted.lock().unwrap_or_else(|e| e.into_inner());
        self.emitted_cv.notify_all();
    }
}

static LOG_CHANNEL: OnceLock<LogChannel> = OnceLock::new();
static PY_LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn log_channel() -> &'static LogChannel {
    LOG_CHANNEL.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::bounded(LOG_BACKLOG);
        let forwarder_rx = rx.clone();
        // Without the forwarder, records still reach Python through `drain_logs`.
        let _ = thread::Builder::new().name("conveyor-log".into()).spawn(move || forward(forwarder_rx));
        LogChannel {
            tx,
            rx,
            sent: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            emitted: Mutex::new(()),
            emitted_cv: Condvar::new(),
        }
    })
}

fn forward(rx: Receiver<(Level, String)>) {
    while let Ok(first) = rx.recv() {
        let mut records = vec![first];
        records.extend(rx.try_iter());
        if !exiting() {
            Python::try_attach(|py| records.iter().for_each(|(level, msg)| emit(py, *level, msg)));
        }
        log_channel().done(records.len());
    }
}

/// The engine's logger for one pipeline: records go to the `conveyor` Python logger.
pub(crate) fn engine_logger() -> LogFn {
    Arc::new(|level, msg| {
        let channel = log_channel();
        channel.sent.fetch_add(1, Ordering::AcqRel);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = channel.tx.try_send((level, msg.to_owned()))
        {
            channel.done(1);
            LOST_RECORDS.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Longest `drain_logs` waits for the records the forwarder holds.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Emits every engine record sent so far before returning (those still queued on
/// the calling, attached thread; those the forwarder holds by letting it attach),
/// so that what `close()` logged is visible when it returns.
pub(crate) fn drain_logs(py: Python<'_>) {
    let Some(channel) = LOG_CHANNEL.get() else { return };
    let target = channel.sent.load(Ordering::Acquire);
    for (level, msg) in channel.rx.try_iter() {
        emit(py, level, &msg);
        channel.done(1);
    }
    if channel.finished.load(Ordering::Acquire) >= target {
        return;
    }
    detached(py, || {
        let deadline = Instant::now() + DRAIN_WAIT;
        let mut guard = channel.emitted.lock().unwrap_or_else(|e| e.into_inner());
        while channel.finished.load(Ordering::Acquire) < target {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            guard = channel.emitted_cv.wait_timeout(guard, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    });
}

fn python_level(level: Level) -> u32 {
    match level {
        Level::Error => 40,
        Level::Warn => 30,
        Level::Info => 20,
        Level::Debug => 10,
    }
}

/// Looks the `conveyor` logger up now, when the module loads (see `errors::preload`).
pub(crate) fn preload(py: Python<'_>) -> PyResult<()> {
    logger(py).map(drop)
}

fn logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    PY_LOGGER
        .get_or_try_init(py, || py.import("logging")?.call_method1("getLogger", ("conveyor",)).map(Bound::unbind))
        .map(|l| l.bind(py))
}

fn emit(py: Python<'_>, level: Level, msg: &str) {
    let result = logger(py).and_then(|l| l.call_method1("log", (python_level(level), "%s", msg)));
    if let Err(e) = result {
        e.write_unraisable(py, None);
    }
}

/// Reports an exception raised by Python code that conveyor called (a client or a
/// callback) on the `conveyor` logger, with its traceback.
pub(crate) fn log_exception(py: Python<'_>, what: &str, error: PyErr) {
    let result = logger(py).and_then(|l| {
        let kwargs = PyDict::new(py);
        kwargs.set_item("exc_info", error.value(py))?;
        l.call_method("error", ("%s", what), Some(&kwargs))
    });
    if let Err(e) = result {
        e.write_unraisable(py, None);
        error.write_unraisable(py, None);
    }
}

/// Logs a message on the `conveyor` logger from an attached thread.
pub(crate) fn log_now(py: Python<'_>, level: Level, msg: &str) {
    emit(py, level, msg);
}
