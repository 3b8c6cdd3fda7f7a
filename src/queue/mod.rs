//! Queues: bounded FIFO storage between producers and output workers, with ACKs
//! released strictly in queue order.
//!
//! A queue type implements [`Queue`]; it is registered by name in the [`registry`]
//! and built from [`QueueSettings`]. Every type must pass the [`conformance`] suite.

pub(crate) mod ack;
pub mod conformance;
pub mod mem;
pub mod registry;

use std::sync::Arc;
use std::time::Duration;

pub use ack::{AckCallback, AckListener, DropCallback, ProducerCounts, ProducerOptions};
pub(crate) use ack::{lock, AckTracker, ProducerState};

use crate::error::{Error, Result};
use crate::event::{Events, Packed};
use crate::log::Logger;

/// What a queue type is built from.
#[derive(Clone)]
pub struct QueueSettings {
    /// Most events accepted and not yet settled.
    pub events: usize,
    /// Most payload bytes accepted and not yet settled; 0 = no limit.
    pub bytes: usize,
    /// A consumer waits for this many events...
    pub flush_min_events: usize,
    /// ...or this long after the first one, whichever comes first.
    pub flush_timeout: Duration,
    /// Where the queue logs.
    pub logger: Logger,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            events: 4096,
            bytes: 0,
            flush_min_events: 0,
            flush_timeout: Duration::ZERO,
            logger: Logger::default(),
        }
    }
}

/// Occupancy figures of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Events accepted and not yet settled (waiting or taken).
    pub events: usize,
    /// Their payload bytes.
    pub bytes: usize,
    /// Of those, events no consumer has taken yet.
    pub waiting: usize,
    /// Batches taken and not yet released.
    pub open_batches: usize,
    /// Configured bound in events.
    pub capacity_events: usize,
    /// Configured bound in bytes (0 = none).
    pub capacity_bytes: usize,
}

/// A bounded queue with producers, consumers and in-order ACKs.
///
/// Producers are addressed by the [`ProducerKey`] [`Queue::register`] returns;
/// applications use the [`Producer`] handle instead of these methods.
pub trait Queue: Send + Sync {
    /// Adds a producer and returns its key.
    fn register(&self, options: ProducerOptions) -> Result<ProducerKey>;
    /// The producer's handle is gone; its remaining events are still reported.
    fn unregister(&self, producer: &ProducerKey);
    /// Enqueues one event, waiting up to `timeout` for room (`None` = no limit).
    fn publish(&self, producer: &ProducerKey, event: &[u8], timeout: Option<Duration>) -> Result<()>;
    /// Enqueues one event if there is room now; fails with [`Error::Full`] only when
    /// the queue really has no room.
    fn try_publish(&self, producer: &ProducerKey, event: &[u8]) -> Result<()>;
    /// Enqueues events in order, waiting up to `timeout` for room, and returns how
    /// many it accepted (a prefix). Fails only when it accepted none.
    fn publish_batch(&self, producer: &ProducerKey, events: &[&[u8]], timeout: Option<Duration>)
        -> Result<usize>;
    /// [`Queue::publish_batch`] of events laid end to end. Queue types that can copy
    /// runs of them at once override it.
    fn publish_packed(&self, producer: &ProducerKey, events: Packed<'_>, timeout: Option<Duration>) -> Result<usize> {
        let views: Vec<&[u8]> = events.iter().collect();
        self.publish_batch(producer, &views, timeout)
    }
    /// Cancels the producer: later publishes fail with [`Error::Cancelled`]. With
    /// `drop_on_cancel`, removes its untaken events (reported dropped) and returns how many.
    fn cancel(&self, producer: &ProducerKey) -> usize;
    /// Takes a batch of at most `max` events, waiting per the flush settings.
    /// Returns `Ok(None)` when [`Queue::wake_consumers`] was called since the wake
    /// epoch was `epoch` (see [`Queue::epoch`]), and [`Error::Closed`] once closed.
    fn get_since(&self, max: usize, epoch: u64) -> Result<Option<Batch>>;
    /// The current wake epoch: read it before checking other sources of work, then
    /// pass it to [`Queue::get_since`] so that no wake-up is missed in between.
    fn epoch(&self) -> u64;
    /// [`Queue::get_since`] from the current epoch.
    fn get(&self, max: usize) -> Result<Option<Batch>> {
        self.get_since(max, self.epoch())
    }
    /// Takes a batch if events are waiting now, without waiting.
    fn try_get(&self, max: usize) -> Result<Option<Batch>>;
    /// Makes every blocked [`Queue::get_since`] return `Ok(None)`.
    fn wake_consumers(&self);
    /// Stops accepting events; blocked publishes return [`Error::Closed`]. Consumers
    /// can still take what is queued.
    fn close_input(&self);
    /// Closes the queue: everything blocked returns [`Error::Closed`], and the events
    /// still waiting are handed back as one batch for the caller to settle.
    fn close(&self) -> Option<Batch>;
    /// Waits until the outcome of every accepted event has been reported.
    fn flush(&self, timeout: Option<Duration>) -> Result<()>;
    /// Stops the ACK dispatcher after it reported everything released so far.
    fn shutdown(&self);
    /// True when called from inside one of this queue's ACK or drop callbacks.
    fn in_callback(&self) -> bool;
    /// Accounting over every producer.
    fn totals(&self) -> ProducerCounts;
    /// Occupancy.
    fn stats(&self) -> QueueStats;
    /// Whether the events of the producer with this key are guaranteed.
    fn is_guaranteed(&self, producer: u32) -> bool;
}

/// Identifies a producer to its queue.
pub struct ProducerKey {
    pub(crate) key: u32,
    pub(crate) state: Arc<ProducerState>,
}

impl ProducerKey {
    /// This producer's accounting.
    pub fn counts(&self) -> ProducerCounts {
        self.state.counts()
    }
}

/// A batch of events taken by a consumer. It is settled exactly once per event:
/// [`Batch::ack`], [`Batch::drop_events`] or, per view, [`Batch::settle`]. Dropping
/// a batch with unsettled events reports them dropped, so nothing is lost silently.
pub struct Batch {
    id: u64,
    events: Events,
    tracker: Arc<AckTracker>,
}

impl Batch {
    pub(crate) fn new(id: u64, events: Events, tracker: Arc<AckTracker>) -> Batch {
        Batch { id, events, tracker }
    }

    /// All events of the batch.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True for a batch without events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Acknowledges every event. Fails with [`Error::AlreadySettled`] if any was settled.
    pub fn ack(&self) -> Result<()> {
        self.tracker.settle(self.id, &self.events, true)
    }

    /// Gives up on every event (reported dropped to their producers).
    pub fn drop_events(&self) -> Result<()> {
        self.tracker.settle(self.id, &self.events, false)
    }

    /// Settles the events of `view` (a view of this batch) as acked or dropped.
    pub fn settle(&self, view: &Events, acked: bool) -> Result<()> {
        self.tracker.settle(self.id, view, acked)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.tracker.finish(self.id);
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("id", &self.id).field("len", &self.len()).finish()
    }
}

/// A producer of one queue: publishes events and hears about their outcomes.
/// `Send + Sync`; dropping it keeps its in-flight events and their callbacks.
pub struct Producer {
    queue: Arc<dyn Queue>,
    key: ProducerKey,
}

impl Producer {
    /// Registers a producer on `queue`.
    pub fn new(queue: Arc<dyn Queue>, options: ProducerOptions) -> Result<Producer> {
        let key = queue.register(options)?;
        Ok(Producer { queue, key })
    }

    /// Publishes one event, waiting up to `timeout` for room (`None` = no limit).
    pub fn publish(&self, event: &[u8], timeout: Option<Duration>) -> Result<()> {
        self.queue.publish(&self.key, event, timeout)
    }

    /// Publishes one event if there is room now.
    pub fn try_publish(&self, event: &[u8]) -> Result<()> {
        self.queue.try_publish(&self.key, event)
    }

    /// Publishes events in order; returns how many were accepted.
    pub fn publish_batch(&self, events: &[&[u8]], timeout: Option<Duration>) -> Result<usize> {
        self.queue.publish_batch(&self.key, events, timeout)
    }

    /// Publishes events laid end to end in one buffer, in order; returns how many
    /// were accepted, as [`Producer::publish_batch`] does. Copies runs of events at
    /// once: the fastest way in for events that arrive framed in one buffer.
    pub fn publish_packed(&self, events: Packed<'_>, timeout: Option<Duration>) -> Result<usize> {
        self.queue.publish_packed(&self.key, events, timeout)
    }

    /// Cancels the producer; returns how many untaken events were removed.
    pub fn cancel(&self) -> usize {
        self.queue.cancel(&self.key)
    }

    /// This producer's accounting.
    pub fn counts(&self) -> ProducerCounts {
        self.key.counts()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.queue.unregister(&self.key);
    }
}

pub(crate) fn timeout_deadline(timeout: Option<Duration>) -> Option<std::time::Instant> {
    timeout.and_then(|t| std::time::Instant::now().checked_add(t))
}

/// The longest event `check_event_len` accepts.
pub(crate) fn max_event_len(settings: &QueueSettings) -> usize {
    match settings.bytes {
        0 => u32::MAX as usize,
        bytes => bytes.min(u32::MAX as usize),
    }
}

pub(crate) fn check_event_len(len: usize, settings: &QueueSettings) -> Result<()> {
    if len > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!("event of {len} bytes exceeds the 4 GiB limit")));
    }
    if settings.bytes > 0 && len > settings.bytes {
        return Err(Error::InvalidArgument(format!(
            "event of {len} bytes can never fit queue.bytes = {}",
            settings.bytes
        )));
    }
    Ok(())
}
