//! A bounded asynchronous buffer in front of a sink.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Counters, Sink, SinkStats};
use crate::error::{Error, Result};
use crate::queue::{lock, DropCallback};

/// What a full [`QueueSink`] does with a new event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The writer waits for room (back-pressure).
    Block,
    /// The new event is dropped (reported) and the write fails with [`Error::Full`].
    DropNewest,
    /// The oldest buffered event is dropped (reported) to make room.
    DropOldest,
}

/// What [`QueueSink::close_within`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSinkClose {
    /// Events delivered to the destination over the sink's life.
    pub delivered: u64,
    /// Events dropped over the sink's life (overflow, failed writes, close deadline).
    pub dropped: u64,
    /// Whether the buffer drained before the deadline.
    pub drained: bool,
}

struct Buffer {
    bytes: VecDeque<u8>,
    lens: VecDeque<usize>,
    closed: bool,
    deadline: Option<Instant>,
    worker_done: bool,
    /// The worker sleeps waiting for an event: only then does a write wake it, so a
    /// busy queue costs no wake-up per event.
    worker_waiting: bool,
    /// Writers blocked on a full buffer (`Overflow::Block`).
    writers_waiting: usize,
}

struct Shared {
    dst: Arc<dyn Sink>,
    capacity: usize,
    overflow: Overflow,
    buffer: Mutex<Buffer>,
    not_empty: Condvar,
    not_full: Condvar,
    done: Condvar,
    counters: Counters,
    on_drop: Option<DropCallback>,
}

impl Shared {
    fn pop(&self, b: &mut Buffer, into: &mut Vec<u8>) -> bool {
        let Some(len) = b.lens.pop_front() else { return false };
        into.clear();
        into.extend(b.bytes.drain(..len));
        // Blocked writers wake once half the buffer is free, not once per event.
        if b.writers_waiting > 0 && b.lens.len() <= self.capacity / 2 {
            self.not_full.notify_all();
        }
        true
    }

    fn report_drop(&self, events: &[&[u8]]) {
        Counters::bump(&self.counters.dropped, events.len() as u64);
        if let Some(cb) = &self.on_drop {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(events)));
        }
    }

    fn run(&self) {
        let mut event = Vec::new();
        loop {
            {
                let mut b = lock(&self.buffer);
                loop {
                    if b.deadline.is_some_and(|d| Instant::now() >= d) {
                        let late = self.take_all(&mut b);
                        if !late.is_empty() {
                            drop(b);
                            self.report_all(late);
                            b = lock(&self.buffer);
                            continue;
                        }
                    }
                    if self.pop(&mut b, &mut event) {
                        break;
                    }
                    if b.closed {
                        b.worker_done = true;
                        self.done.notify_all();
                        return;
                    }
                    b.worker_waiting = true;
                    b = self.not_empty.wait(b).unwrap_or_else(|e| e.into_inner());
                    b.worker_waiting = false;
                }
            }
            match self.dst.write(&event) {
                Ok(()) => Counters::bump(&self.counters.forwarded, 1),
                Err(_) => {
                    Counters::bump(&self.counters.failures, 1);
                    self.report_drop(&[&event]);
                }
            }
        }
    }

    /// Empties the buffer. The caller reports the events with `report_all` once it
    /// released the lock: the drop hook may look at this queue, or write into it.
    fn take_all(&self, b: &mut Buffer) -> Vec<Vec<u8>> {
        let mut dropped = Vec::with_capacity(b.lens.len());
        let mut event = Vec::new();
        while self.pop(b, &mut event) {
            dropped.push(std::mem::take(&mut event));
        }
        dropped
    }

    fn report_all(&self, dropped: Vec<Vec<u8>>) {
        if !dropped.is_empty() {
            let views: Vec<&[u8]> = dropped.iter().map(Vec::as_slice).collect();
            self.report_drop(&views);
        }
    }
}

/// Buffers up to `capacity` events and delivers them to a destination sink from its
/// own thread, so the writer never waits on the destination (unless it chose
/// [`Overflow::Block`] and the buffer is full). Failed deliveries are counted and
/// reported to the drop hook, never lost silently.
pub struct QueueSink {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
    close_timeout: Duration,
    closing: AtomicBool,
}

impl QueueSink {
    /// A queue of `capacity` events (at least 1) in front of `dst`. `close()` drains
    /// for up to `close_timeout`; `on_drop` hears about every dropped event.
    pub fn new(
        dst: Arc<dyn Sink>,
        capacity: usize,
        overflow: Overflow,
        close_timeout: Duration,
        on_drop: Option<DropCallback>,
    ) -> Result<QueueSink> {
        let shared = Arc::new(Shared {
            dst,
            capacity: capacity.max(1),
            overflow,
            buffer: Mutex::new(Buffer { bytes: VecDeque::new(), lens: VecDeque::new(), closed: false, deadline: None, worker_done: false, worker_waiting: false, writers_waiting: 0 }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            done: Condvar::new(),
            counters: Counters::default(),
            on_drop,
        });
        let s = shared.clone();
        let worker = thread::Builder::new()
            .name("conveyor-queue-sink".into())
            .spawn(move || s.run())
            .map_err(|e| Error::Internal(format!("spawning queue sink worker: {e}")))?;
        Ok(QueueSink { shared, worker: Mutex::new(Some(worker)), close_timeout, closing: AtomicBool::new(false) })
    }

    /// Stops accepting events, delivers what is buffered until `timeout`, drops and
    /// reports the rest, then closes the destination. Returns within `timeout` even
    /// when the destination blocks (its stuck write is left to finish on its own).
    pub fn close_within(&self, timeout: Duration) -> QueueSinkClose {
        let first = !self.closing.swap(true, Ordering::AcqRel);
        // A timeout too large for the clock (Duration::MAX) means no deadline.
        let deadline = Instant::now().checked_add(timeout);
        let mut b = lock(&self.shared.buffer);
        if first {
            b.closed = true;
            b.deadline = deadline;
            self.shared.not_empty.notify_all();
            self.shared.not_full.notify_all();
        }
        while !b.worker_done {
            b = match deadline {
                None => self.shared.done.wait(b).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    self.shared.done.wait_timeout(b, d - now).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
        let drained = b.worker_done;
        let late = if drained { Vec::new() } else { self.shared.take_all(&mut b) };
        drop(b);
        self.shared.report_all(late);
        if first {
            let _ = self.shared.dst.close();
            if drained {
                if let Some(w) = lock(&self.worker).take() {
                    let _ = w.join();
                }
            }
        }
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        QueueSinkClose { delivered: get(&self.shared.counters.forwarded), dropped: get(&self.shared.counters.dropped), drained }
    }
}

impl Sink for QueueSink {
    fn write(&self, event: &[u8]) -> Result<()> {
        let s = &self.shared;
        let mut b = lock(&s.buffer);
        loop {
            if b.closed {
                return Err(Error::Closed);
            }
            if b.lens.len() < s.capacity {
                break;
            }
            match s.overflow {
                Overflow::Block => {
                    b.writers_waiting += 1;
                    b = s.not_full.wait(b).unwrap_or_else(|e| e.into_inner());
                    b.writers_waiting -= 1;
                }
                Overflow::DropNewest => {
                    drop(b);
                    s.report_drop(&[event]);
                    return Err(Error::Full);
                }
                Overflow::DropOldest => {
                    let mut oldest = Vec::new();
                    s.pop(&mut b, &mut oldest);
                    // Not under the lock: the drop hook may look at this queue.
                    drop(b);
                    s.report_drop(&[&oldest]);
                    b = lock(&s.buffer);
                }
            }
        }
        b.bytes.extend(event);
        b.lens.push_back(event.len());
        Counters::bump(&s.counters.written, 1);
        if b.worker_waiting {
            s.not_empty.notify_one();
        }
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.close_within(self.close_timeout);
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        let queued = lock(&self.shared.buffer).lens.len() as u64;
        self.shared.counters.snapshot("queue", queued, vec![self.shared.dst.stats()])
    }
}

impl Drop for QueueSink {
    fn drop(&mut self) {
        if !self.closing.load(Ordering::Acquire) {
            self.close_within(Duration::ZERO);
        }
    }
}
