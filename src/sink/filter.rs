//! Forward only the events a matcher accepts.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{BatchError, Counters, Sink, SinkStats};
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

    /// Writes the kept events `events[run]` downstream; a refusal names its place in
    /// the whole batch.
    fn pass_on(&self, events: &[&[u8]], run: Range<usize>) -> Result<(), BatchError> {
        if run.is_empty() {
            return Ok(());
        }
        let start = run.start;
        match self.dst.write_batch(&events[run]) {
            Ok(n) => {
                Counters::bump(&self.counters.written, n as u64);
                Counters::bump(&self.counters.forwarded, n as u64);
                Ok(())
            }
            Err(BatchError { accepted, error }) => {
                Counters::bump(&self.counters.written, accepted as u64 + 1);
                Counters::bump(&self.counters.forwarded, accepted as u64);
                Counters::bump(&self.counters.failures, 1);
                Err(BatchError { accepted: start + accepted, error })
            }
        }
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

    /// Passes each run of kept events on with one `write_batch`. The matcher sees an
    /// event once per write of it: when the destination refuses an event, the events
    /// after it that the matcher already saw (up to the end of that run, plus the
    /// discarded one that ended it) are seen again if the writer writes them again.
    fn write_batch(&self, events: &[&[u8]]) -> Result<usize, BatchError> {
        if events.is_empty() {
            return Ok(0);
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(BatchError { accepted: 0, error: Error::Closed });
        }
        let mut run_start = 0;
        for (i, event) in events.iter().enumerate() {
            if !(self.matches)(event) {
                self.pass_on(events, run_start..i)?;
                Counters::bump(&self.counters.written, 1);
                Counters::bump(&self.counters.filtered, 1);
                run_start = i + 1;
            }
        }
        self.pass_on(events, run_start..events.len())?;
        Ok(events.len())
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
