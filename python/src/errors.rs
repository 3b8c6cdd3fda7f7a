//! conveyor's errors as Python exceptions (the classes live in `conveyor._errors`).

use conveyor::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

const MODULE: &str = "conveyor._errors";

/// One exception class, imported on first use.
pub(crate) struct ExceptionClass {
    name: &'static str,
    class: PyOnceLock<Py<PyType>>,
}

impl ExceptionClass {
    const fn new(name: &'static str) -> ExceptionClass {
        ExceptionClass { name, class: PyOnceLock::new() }
    }

    pub(crate) fn get<'py>(&self, py: Python<'py>) -> PyResult<&Bound<'py, PyType>> {
        self.class.import(py, MODULE, self.name)
    }

    /// An instance raised with `message`.
    pub(crate) fn err(&self, py: Python<'_>, message: impl Into<String>) -> PyErr {
        match self.get(py) {
            Ok(class) => PyErr::from_type(class.clone(), message.into()),
            Err(e) => e,
        }
    }
}

pub(crate) static CONFIG_ERROR: ExceptionClass = ExceptionClass::new("ConfigError");
pub(crate) static INVALID_ARGUMENT: ExceptionClass = ExceptionClass::new("InvalidArgumentError");
pub(crate) static CLOSED: ExceptionClass = ExceptionClass::new("ClosedError");
pub(crate) static CANCELLED: ExceptionClass = ExceptionClass::new("CancelledError");
pub(crate) static FULL: ExceptionClass = ExceptionClass::new("FullError");
pub(crate) static TIMEOUT: ExceptionClass = ExceptionClass::new("TimeoutError");
pub(crate) static CLIENT: ExceptionClass = ExceptionClass::new("ClientError");
pub(crate) static ERROR: ExceptionClass = ExceptionClass::new("Error");
pub(crate) static RETRY: ExceptionClass = ExceptionClass::new("Retry");

/// Imports every class now, when the module loads. A first import later (say the
/// first `ClosedError`, raised after the exit hook closed the pipeline) would
/// release and retake the interpreter inside our frames, which a daemon thread
/// cannot survive once the interpreter finalizes.
pub(crate) fn preload(py: Python<'_>) -> PyResult<()> {
    for class in [&CONFIG_ERROR, &INVALID_ARGUMENT, &CLOSED, &CANCELLED, &FULL, &TIMEOUT, &CLIENT, &ERROR, &RETRY] {
        class.get(py)?;
    }
    Ok(())
}

/// The Python spelling of a configuration key: `backoff.init` is `backoff_init`.
pub(crate) fn python_key(key: &str) -> String {
    key.replace('.', "_")
}

/// A `ConfigError` naming `key` (in its Python spelling) in its message and its `key` attribute.
pub(crate) fn config_error(py: Python<'_>, key: &str, reason: &str) -> PyErr {
    let message = format!("invalid config `{key}`: {reason}");
    match CONFIG_ERROR.get(py).and_then(|class| class.call1((message, key))) {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

/// Translates a core error into the matching exception.
pub(crate) fn to_py(py: Python<'_>, error: Error) -> PyErr {
    match error {
        Error::Config { key, reason } => {
            // The reason may name related keys too ("must not be smaller than backoff.init").
            let reason = conveyor::config::KEYS
                .iter()
                .filter(|k| k.contains('.'))
                .fold(reason, |r, k| r.replace(k, &python_key(k)));
            config_error(py, &python_key(&key), &reason)
        }
        Error::NoClients => config_error(py, "clients", "no clients configured; pass at least one client"),
        Error::InvalidArgument(m) => INVALID_ARGUMENT.err(py, m),
        Error::Closed => CLOSED.err(py, "the pipeline is closed"),
        Error::Cancelled => CANCELLED.err(py, "the producer was cancelled"),
        Error::Full => FULL.err(py, "the queue is full"),
        Error::Timeout => TIMEOUT.err(py, "timed out"),
        Error::Client(m) => CLIENT.err(py, m),
        other => ERROR.err(py, other.to_string()),
    }
}

/// Extension for `conveyor::Result`: `.py(py)?` raises the matching exception.
pub(crate) trait IntoPyResult<T> {
    fn py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for conveyor::Result<T> {
    fn py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}
