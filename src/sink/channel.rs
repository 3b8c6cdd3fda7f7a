//! Events handed to the application through a channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::{Counters, Sink, SinkStats};
use crate::error::{Error, Result};
use crate::queue::lock;

/// A bounded channel the application reads events from. A write waits for room;
/// once closed, every write fails with [`Error::Closed`] (deterministically), while
/// events already buffered stay readable. A batch is written event by event (the
/// default [`Sink::write_batch`]): each event becomes a buffer the reader owns.
pub struct ChannelSink {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    closed: AtomicBool,
    /// Dropped on close, which wakes writers blocked on a full channel.
    done: std::sync::Mutex<Option<Sender<()>>>,
    done_rx: Receiver<()>,
    counters: Counters,
}

impl ChannelSink {
    /// A channel holding up to `capacity` events (at least 1).
    pub fn new(capacity: usize) -> ChannelSink {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let (done, done_rx) = crossbeam_channel::bounded(0);
        ChannelSink { tx, rx, closed: AtomicBool::new(false), done: std::sync::Mutex::new(Some(done)), done_rx, counters: Counters::default() }
    }

    /// Takes the next event, waiting up to `timeout` (`None` = no limit). After
    /// close, returns what is buffered, then [`Error::Closed`].
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Vec<u8>> {
        if let Ok(e) = self.rx.try_recv() {
            Counters::bump(&self.counters.forwarded, 1);
            return Ok(e);
        }
        if self.closed.load(Ordering::Acquire) {
            // Closed and drained: say so, rather than let `select!` pick between the
            // closed signal and an expired deadline at random.
            return Err(Error::Closed);
        }
        let deadline = timeout.map(crossbeam_channel::after).unwrap_or_else(crossbeam_channel::never);
        crossbeam_channel::select! {
            recv(self.rx) -> e => {
                Counters::bump(&self.counters.forwarded, 1);
                Ok(e.expect("the sink holds a sender"))
            }
            recv(self.done_rx) -> _ => {
                let e = self.rx.try_recv().map_err(|_| Error::Closed)?;
                Counters::bump(&self.counters.forwarded, 1);
                Ok(e)
            }
            recv(deadline) -> _ => Err(Error::Timeout),
        }
    }

    /// Events buffered now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl Sink for ChannelSink {
    fn write(&self, event: &[u8]) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        crossbeam_channel::select! {
            send(self.tx, event.to_vec()) -> _ => {
                Counters::bump(&self.counters.written, 1);
                Ok(())
            }
            recv(self.done_rx) -> _ => Err(Error::Closed),
        }
    }

    fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        lock(&self.done).take();
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        self.counters.snapshot("channel", self.rx.len() as u64, Vec::new())
    }
}
