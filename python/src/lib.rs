//! `conveyor._conveyor`: the Python binding of conveyor, over its Rust API.
//!
//! The package `conveyor` (python/conveyor) re-exports what is here, adds the
//! `Client` / `AsyncClient` / `Sink` / `RetryStrategy` base classes, the exceptions
//! and the async helpers, and registers the exit hook.

mod bridge;
mod clients;
mod config;
mod errors;
mod pipeline;
mod sinks;

use pyo3::prelude::*;

#[pymodule]
fn _conveyor(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", conveyor::VERSION)?;
    m.add("CONFIG_KEYS", conveyor::config::KEYS.iter().map(|k| errors::python_key(k)).collect::<Vec<_>>())?;
    m.add_class::<pipeline::PyPipeline>()?;
    m.add_class::<pipeline::PyProducer>()?;
    m.add_class::<clients::PyCompletion>()?;
    m.add_class::<sinks::PySink>()?;
    m.add_class::<sinks::PyBroadcaster>()?;
    m.add_class::<sinks::PyQueueSink>()?;
    m.add_class::<sinks::PyFilter>()?;
    m.add_class::<sinks::PyRetryingSink>()?;
    m.add_class::<sinks::PyChannelSink>()?;
    m.add_class::<sinks::PyPipelineSink>()?;
    m.add_class::<sinks::PyBreaker>()?;
    m.add_class::<sinks::PyExponentialBackoff>()?;
    m.add_function(wrap_pyfunction!(pipeline::_close_all_at_exit, m)?)?;
    let py = m.py();
    errors::preload(py)?;
    bridge::preload(py)?;
    pipeline::preload(py)
}
