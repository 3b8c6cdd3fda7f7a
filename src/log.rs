//! Per-pipeline log delivery (no process-global logger).

use std::fmt;
use std::sync::Arc;

/// Severity of a log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something was lost or a callback misbehaved.
    Error = 1,
    /// A failure conveyor handles (retry, reconnect).
    Warn = 2,
    /// Lifecycle: connects, restarts, close.
    Info = 3,
    /// Detail for troubleshooting.
    Debug = 4,
}

impl Level {
    /// Lower-case name of the level.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A log sink; runs on conveyor's threads and must not block for long.
pub type LogFn = Arc<dyn Fn(Level, &str) + Send + Sync>;

/// Where a pipeline's log messages go; silent unless a function is set.
#[derive(Clone, Default)]
pub struct Logger {
    sink: Option<LogFn>,
}

impl Logger {
    /// A logger sending messages to `f`.
    pub fn new(f: LogFn) -> Logger {
        Logger { sink: Some(f) }
    }

    /// Sends `msg` at `level`. A panicking sink is ignored: logging never breaks delivery.
    pub fn log(&self, level: Level, msg: &str) {
        if let Some(f) = &self.sink {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(level, msg)));
        }
    }
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger").field("set", &self.sink.is_some()).finish()
    }
}
