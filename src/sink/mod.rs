//! Composable sinks (the go-events seed), fixed where it was weak: every buffer is
//! bounded, drops are reported, close never hangs, and one slow member of a
//! broadcaster does not hold back the others when members are wrapped in queues.
//!
//! A [`Sink`] takes one event at a time, or a batch of them ([`Sink::write_batch`]:
//! the combinators pass batches on whole, so a fan-out costs a lock and a wake-up per
//! batch rather than per event). Every combinator is itself a sink, a
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

use crate::error::{Error, Result};

/// Something that takes events, one at a time or in batches. Safe to share between threads.
pub trait Sink: Send + Sync {
    /// Writes one event. After [`Sink::close`], fails with [`crate::Error::Closed`].
    fn write(&self, event: &[u8]) -> Result<()>;

    /// Writes `events` in order with the outcome of a [`Sink::write`] of each in turn,
    /// stopping at the first refusal:
    ///
    /// - `Ok(n)`: every event was accepted; `n` is `events.len()` (an empty batch is
    ///   `Ok(0)`, also on a closed sink: there was nothing to refuse).
    /// - `Err(BatchError { accepted, error })`: `events[..accepted]` were accepted,
    ///   `events[accepted]` was refused with `error` exactly as `write` would have
    ///   refused it (and reported where `write` reports a refused event, such as a
    ///   [`QueueSink`]'s drop hook under [`Overflow::DropNewest`]), and the events after
    ///   it were not attempted: they are still the caller's.
    ///
    /// As with `write`, an accepted event is the sink's responsibility from then on.
    /// The default writes each event with `write`; the combinators override it to pass
    /// the batch on whole.
    fn write_batch(&self, events: &[&[u8]]) -> Result<usize, BatchError> {
        for (accepted, event) in events.iter().enumerate() {
            if let Err(error) = self.write(event) {
                return Err(BatchError { accepted, error });
            }
        }
        Ok(events.len())
    }

    /// Closes the sink; later calls succeed and do nothing.
    fn close(&self) -> Result<()>;
    /// Counters of this sink and of the sinks it wraps.
    fn stats(&self) -> SinkStats;
}

/// Why [`Sink::write_batch`] stopped before the end of its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// How many leading events of the batch were accepted.
    pub accepted: usize,
    /// Why the event after them (`events[accepted]`) was refused.
    pub error: Error,
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "event {} of the batch was refused: {}", self.accepted, self.error)
    }
}

impl std::error::Error for BatchError {}

impl From<BatchError> for Error {
    fn from(e: BatchError) -> Error {
        e.error
    }
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

/// A list of event views whose allocation is reused from one batch to the next,
/// although each batch's views borrow from different storage.
#[derive(Default)]
pub(crate) struct Views(Vec<&'static [u8]>);

impl Views {
    /// The (empty) list, to fill with views of any lifetime.
    pub(crate) fn take<'a>(&mut self) -> Vec<&'a [u8]> {
        relabel(std::mem::take(&mut self.0))
    }

    /// Keeps the allocation of `views` for the next [`Views::take`].
    pub(crate) fn give_back(&mut self, views: Vec<&[u8]>) {
        self.0 = relabel(views);
    }
}

/// Empties `views` and returns its allocation typed for another lifetime: collecting
/// an empty vector's iterator into a vector of the same layout reuses the allocation.
fn relabel<'b>(mut views: Vec<&[u8]>) -> Vec<&'b [u8]> {
    views.clear();
    views.into_iter().map(|_| -> &'b [u8] { &[] }).collect()
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
            return Err(Error::Closed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_keep_their_allocation_across_batches() {
        let mut views = Views::default();
        let first = [1u8; 8];
        let mut v = views.take();
        v.extend(first.chunks(2));
        let (ptr, capacity) = (v.as_ptr() as usize, v.capacity());
        views.give_back(v);
        let second = [2u8; 8];
        let mut v = views.take();
        assert!(v.is_empty());
        assert_eq!((v.as_ptr() as usize, v.capacity()), (ptr, capacity), "the allocation was kept");
        v.extend(second.chunks(4));
        assert_eq!(v, vec![&[2u8; 4][..], &[2u8; 4][..]]);
    }
}
