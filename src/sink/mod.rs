//! Composable sinks (the go-events seed), fixed where it was weak: every buffer is
//! bounded, drops are reported, close never hangs, and one slow member of a
//! broadcaster does not hold back the others when members are wrapped in queues.
//!
//! A [`Sink`] takes one event at a time. Every combinator is itself a sink, a
//! pipeline is a sink ([`PipelineSink`]), and any sink can serve as an output's client
//! ([`SinkClient`]), so "every event to two outputs, each load-balanced over its own
//! hosts, neither blocking the other" is a [`Broadcaster`] of two [`QueueSink`]s over
//! two [`PipelineSink`]s.

mod adapt;
mod broadcast;
mod channel;
mod filter;
mod graph;
mod queue;
mod retry;

use std::sync::atomic::{AtomicU64, Ordering};

pub use adapt::{PipelineSink, SinkClient};
pub use broadcast::Broadcaster;
pub use channel::ChannelSink;
pub use filter::Filter;
pub use graph::WriteNode;
pub use queue::{Overflow, QueueSink, QueueSinkClose};
pub use retry::{RetryingSink, SinkBreaker, SinkExponentialBackoff, SinkRetryStrategy};

use crate::error::Result;

/// Something that takes events one at a time. Safe to share between threads.
pub trait Sink: Send + Sync {
    /// Writes one event. After [`Sink::close`], fails with [`crate::Error::Closed`].
    fn write(&self, event: &[u8]) -> Result<()>;
    /// Closes the sink; later calls succeed and do nothing.
    fn close(&self) -> Result<()>;
    /// Counters of this sink and of the sinks it wraps.
    fn stats(&self) -> SinkStats;
}

/// Counters of one sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkStats {
    /// The combinator: `broadcaster`, `queue`, `filter`, `retrying`, `channel`, `pipeline`, `custom`.
    pub kind: &'static str,
    /// Events written into this sink and accepted.
    pub written: u64,
    /// Events passed on (to members, downstream, or a reader).
    pub forwarded: u64,
    /// Events given up on (reported to the writer or to the drop hook).
    pub dropped: u64,
    /// Events a filter discarded on purpose.
    pub filtered: u64,
    /// Downstream write failures.
    pub failures: u64,
    /// Events waiting in a buffer.
    pub queued: u64,
    /// The wrapped sinks.
    pub inner: Vec<SinkStats>,
}

/// Counters shared by the combinators.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) written: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) filtered: AtomicU64,
    pub(crate) failures: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, kind: &'static str, queued: u64, inner: Vec<SinkStats>) -> SinkStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SinkStats {
            kind,
            written: get(&self.written),
            forwarded: get(&self.forwarded),
            dropped: get(&self.dropped),
            filtered: get(&self.filtered),
            failures: get(&self.failures),
            queued,
            inner,
        }
    }
}

/// A sink from a pair of functions (handy in tests and bindings).
pub struct FnSink<W, C> {
    write: W,
    close: C,
    closed: std::sync::atomic::AtomicBool,
    counters: Counters,
}

impl<W, C> FnSink<W, C>
where
    W: Fn(&[u8]) -> Result<()> + Send + Sync,
    C: Fn() + Send + Sync,
{
    /// A sink calling `write` per event and `close` once.
    pub fn new(write: W, close: C) -> FnSink<W, C> {
        FnSink { write, close, closed: Default::default(), counters: Counters::default() }
    }
}

impl<W, C> Sink for FnSink<W, C>
where
    W: Fn(&[u8]) -> Result<()> + Send + Sync,
    C: Fn() + Send + Sync,
{
    fn write(&self, event: &[u8]) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(crate::Error::Closed);
        }
        let r = (self.write)(event);
        match &r {
            Ok(()) => Counters::bump(&self.counters.written, 1),
            Err(_) => Counters::bump(&self.counters.failures, 1),
        }
        r
    }

    fn close(&self) -> Result<()> {
        if !self.closed.swap(true, Ordering::AcqRel) {
            (self.close)();
        }
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        self.counters.snapshot("custom", 0, Vec::new())
    }
}
