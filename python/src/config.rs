//! Keyword arguments to a core `Config`: one keyword per key, dots spelled as
//! underscores; durations in seconds; every value goes through `Config::set`, so the
//! core's rules are the only ones.

use conveyor::config::KEYS;
use conveyor::Config;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyString};

use crate::errors::{config_error, python_key, to_py};

/// Keys whose value is a duration; Python passes them as seconds.
const DURATION_KEYS: &[&str] = &["backoff.init", "backoff.max", "timeout", "publish_timeout", "queue.flush.timeout"];

/// Builds a configuration from keyword arguments.
pub(crate) fn from_kwargs(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Config> {
    let mut config = Config::default();
    let Some(kwargs) = kwargs else { return Ok(config) };
    for (name, value) in kwargs.iter() {
        let name: String = name.extract()?;
        let Some(key) = KEYS.iter().find(|k| python_key(k) == name) else {
            let known: Vec<String> = KEYS.iter().map(|k| python_key(k)).collect();
            return Err(config_error(py, &name, &format!("unknown key; the keys are {}", known.join(", "))));
        };
        let text = value_text(py, &name, key, &value)?;
        config.set(key, &text).map_err(|e| to_py(py, e))?;
    }
    Ok(config)
}

/// The string form `Config::set` takes. Strings pass through as they are (`"250ms"`).
fn value_text(py: Python<'_>, name: &str, key: &str, value: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = value.cast::<PyString>() {
        return s.extract::<String>();
    }
    let type_name = || value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    if value.is_instance_of::<PyBool>() {
        return Err(config_error(py, name, "expected a number, got a bool"));
    }
    if DURATION_KEYS.contains(&key) {
        let seconds: f64 = if value.hasattr("total_seconds")? {
            value.call_method0("total_seconds")?.extract()?
        } else {
            value
                .extract()
                .map_err(|_| config_error(py, name, &format!("expected seconds as a number, got {}", type_name())))?
        };
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(config_error(py, name, &format!("expected a non-negative number of seconds, got {seconds}")));
        }
        return Ok(format!("{seconds}s"));
    }
    if value.is_instance_of::<PyInt>() {
        return Ok(value.str()?.to_string());
    }
    Err(config_error(py, name, &format!("expected an integer or a string, got {}", type_name())))
}
