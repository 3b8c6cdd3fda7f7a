//! Forward only the events a matcher accepts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{Counters, Sink, SinkStats};
use crate::error::{Error, Result};

/// Forwards events for which `matches` holds; the others are discarded and the
/// write still succeeds. The matcher runs on the writer's thread.
pub struct Filter<M> {
    dst: Arc<dyn Sink>,
    matches: M,
    closed: AtomicBool,
    counters: Counters,
}

impl<M: Fn(&[u8]) -> bool + Send + Sync> Filter<M> {
    /// A filter in front of `dst`.
    pub fn new(dst: Arc<dyn Sink>, matches: M) -> Filter<M> {
        Filter { dst, matches, closed: AtomicBool::new(false), counters: Counters::default() }
    }
}

impl<M: Fn(&[u8]) -> bool + Send + Sync> Sink for Filter<M> {
    fn write(&self, event: &[u8]) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Counters::bump(&self.counters.written, 1);
        if !(self.matches)(event) {
            Counters::bump(&self.counters.filtered, 1);
            return Ok(());
        }
        let r = self.dst.write(event);
        match &r {
            Ok(()) => Counters::bump(&self.counters.forwarded, 1),
            Err(_) => Counters::bump(&self.counters.failures, 1),
        }
        r
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.dst.close()
    }

    fn stats(&self) -> SinkStats {
        self.counters.snapshot("filter", 0, vec![self.dst.stats()])
    }
}
