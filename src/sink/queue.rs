//! A bounded asynchronous buffer in front of a sink.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{BatchError, Counters, Sink, SinkStats, Views};
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

/// Events per chunk of the buffer, so at most per destination write. Fewer, larger
/// hand-overs cost fewer wake-ups downstream: into a pipeline, 4096 instead of 1024
/// halved the context switches of a two-output fan-out and took it from ~23 to ~35 M
/// events/s per output (`fanout-2-pipelines-batch`, 2 vCPUs).
const DRAIN_MAX: usize = 4096;

/// How long a worker that found the buffer empty after a delivery waits for a batch to
/// gather before it sleeps until the next event: events written meanwhile wait at most
/// this long, and a busy queue costs a wake-up per batch instead of one per event.
const LINGER: Duration = Duration::from_micros(500);

/// How the worker waits for events, which decides when a write wakes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Worker {
    /// Taking or delivering events: writes do not wake it.
    Busy,
    /// Waiting up to [`LINGER`] for a batch: woken once a batch is buffered.
    Lingering,
    /// Asleep until the next event: woken by it.
    Asleep,
}

/// Events in arrival order. Writers append to the last chunk of the buffer, and the
/// worker takes the first one whole (handing back the one it delivered before), so an
/// event is copied once, by its writer.
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    lens: Vec<usize>,
    /// Leading events already gone (evicted, or handed on alone), and their bytes.
    gone: usize,
    gone_bytes: usize,
}

impl Chunk {
    fn len(&self) -> usize {
        self.lens.len() - self.gone
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.lens.clear();
        self.gone = 0;
        self.gone_bytes = 0;
    }

    fn push(&mut self, event: &[u8]) {
        self.bytes.extend_from_slice(event);
        self.lens.push(event.len());
    }

    fn views<'a>(&'a self, into: &mut Vec<&'a [u8]>) {
        let mut at = self.gone_bytes;
        into.extend(self.lens[self.gone..].iter().map(|&len| {
            at += len;
            &self.bytes[at - len..at]
        }));
    }
}

struct Buffer {
    /// Oldest first, none empty, each of at most [`DRAIN_MAX`] events.
    chunks: VecDeque<Chunk>,
    /// Emptied chunks, kept for reuse.
    spare: Vec<Chunk>,
    /// Events in `chunks`.
    len: usize,
    closed: bool,
    deadline: Option<Instant>,
    worker_done: bool,
    worker: Worker,
    /// Events accepted over the sink's life, counted under the lock already held rather
    /// than with an atomic operation more per write.
    written: u64,
    /// Writers blocked on a full buffer (`Overflow::Block`).
    writers_waiting: usize,
    /// Storage for the events a writer evicts (`Overflow::DropOldest`) and their views,
    /// kept between writes; a writer takes it while it reports them unlocked.
    evicted: (Chunk, Views),
}

impl Buffer {
    fn free(&self, capacity: usize) -> usize {
        capacity.saturating_sub(self.len)
    }

    /// Buffers `events` and wakes the worker if it waits for them (`not_empty`).
    fn push(&mut self, events: &[&[u8]], wake_at: usize, not_empty: &Condvar) {
        let mut rest = events;
        while !rest.is_empty() {
            let room = self.chunks.back().map_or(0, |last| DRAIN_MAX.saturating_sub(last.lens.len()));
            if room == 0 {
                let chunk = self.spare.pop().unwrap_or_default();
                self.chunks.push_back(chunk);
                continue;
            }
            let (run, later) = rest.split_at(room.min(rest.len()));
            if let Some(last) = self.chunks.back_mut() {
                run.iter().for_each(|event| last.push(event));
            }
            rest = later;
        }
        self.len += events.len();
        let wake = match self.worker {
            Worker::Busy => false,
            Worker::Lingering => self.len >= wake_at,
            Worker::Asleep => true,
        };
        if wake {
            self.worker = Worker::Busy;
            not_empty.notify_one();
        }
    }

    /// Takes the oldest chunk into `into`; the chunk `into` held goes back to the spares.
    fn take_chunk(&mut self, into: &mut Chunk) {
        if let Some(chunk) = self.chunks.pop_front() {
            self.len -= chunk.len();
            let mut emptied = std::mem::replace(into, chunk);
            emptied.clear();
            self.spare.push(emptied);
        }
    }

    /// Moves (copies) the `n` oldest events to the end of `into`.
    fn move_front(&mut self, mut n: usize, into: &mut Chunk) {
        while n > 0 {
            let Some(first) = self.chunks.front_mut() else { return };
            let k = n.min(first.len());
            for _ in 0..k {
                let len = first.lens[first.gone];
                into.push(&first.bytes[first.gone_bytes..first.gone_bytes + len]);
                first.gone += 1;
                first.gone_bytes += len;
            }
            n -= k;
            self.len -= k;
            if first.len() == 0 {
                if let Some(mut emptied) = self.chunks.pop_front() {
                    emptied.clear();
                    self.spare.push(emptied);
                }
            }
        }
    }
}

struct Shared {
    dst: Arc<dyn Sink>,
    capacity: usize,
    /// Buffered events that end the worker's linger: a batch, or half the buffer when
    /// that is less (writers of a full buffer then need not wait for the linger).
    wake_at: usize,
    overflow: Overflow,
    buffer: Mutex<Buffer>,
    not_empty: Condvar,
    not_full: Condvar,
    done: Condvar,
    counters: Counters,
    on_drop: Option<DropCallback>,
}

impl Shared {
    /// Wakes writers blocked on a full buffer once half of it is free, not once per event.
    fn room_made(&self, b: &Buffer) {
        if b.writers_waiting > 0 && b.len <= self.capacity / 2 {
            self.not_full.notify_all();
        }
    }

    /// Empties the buffer into `into`. The caller reports the events with
    /// `report_taken` once it released the lock: the drop hook may look at this queue,
    /// or write into it.
    fn take_all(&self, b: &mut Buffer, into: &mut Chunk) {
        b.move_front(b.len, into);
        self.room_made(b);
    }

    fn report_drop(&self, events: &[&[u8]]) {
        if events.is_empty() {
            return;
        }
        Counters::bump(&self.counters.dropped, events.len() as u64);
        if let Some(cb) = &self.on_drop {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(events)));
        }
    }

    fn report_taken(&self, taken: &Chunk, views: &mut Views) {
        let mut dropped = views.take();
        taken.views(&mut dropped);
        self.report_drop(&dropped);
        views.give_back(dropped);
    }

    fn deadline_passed(&self) -> bool {
        lock(&self.buffer).deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn run(&self) {
        let mut taken = Chunk::default();
        let mut views = Views::default();
        // The worker starts as after a sleep until the next event.
        let mut woken_by_event = true;
        // Until when the worker waits for a batch to gather, once it started to.
        let mut linger_until: Option<Instant> = None;
        loop {
            {
                let mut b = lock(&self.buffer);
                loop {
                    let now = Instant::now();
                    if b.deadline.is_some_and(|d| now >= d) && b.len > 0 {
                        taken.clear();
                        self.take_all(&mut b, &mut taken);
                        drop(b);
                        self.report_taken(&taken, &mut views);
                        b = lock(&self.buffer);
                        continue;
                    }
                    let buffered = b.len;
                    let lingered = linger_until.is_some_and(|until| now >= until);
                    if buffered > 0 && (woken_by_event || lingered || b.closed || buffered >= self.wake_at) {
                        // After a sleep until the next event, the worker hands on that
                        // event alone: a destination that got stuck meanwhile then holds
                        // one event, and those behind it stay buffered, where a close
                        // deadline drops and reports them.
                        if woken_by_event {
                            taken.clear();
                            b.move_front(1, &mut taken);
                        } else {
                            b.take_chunk(&mut taken);
                        }
                        self.room_made(&b);
                        woken_by_event = false;
                        linger_until = None;
                        break;
                    }
                    if b.closed {
                        b.worker_done = true;
                        self.done.notify_all();
                        return;
                    }
                    if buffered == 0 && lingered {
                        b.worker = Worker::Asleep;
                        b = self.not_empty.wait(b).unwrap_or_else(|e| e.into_inner());
                        woken_by_event = true;
                        linger_until = None;
                    } else {
                        // Taking the few events just written would have the worker
                        // chase the writers through the cache lines they are writing
                        // (measured: it halves a writer's rate); a batch gathers first.
                        let until = *linger_until.get_or_insert(now + LINGER);
                        b.worker = Worker::Lingering;
                        b = self.not_empty.wait_timeout(b, until - now).unwrap_or_else(|e| e.into_inner()).0;
                    }
                    b.worker = Worker::Busy;
                }
            }
            let mut batch = views.take();
            taken.views(&mut batch);
            self.deliver(&batch);
            views.give_back(batch);
        }
    }

    /// Writes `batch` to the destination. A refused event is counted as a failure and
    /// dropped, and the events after it are written again, as writes of one event at a
    /// time would be, unless the destination is closed (it refuses all of them: they
    /// are dropped at once) or the close deadline passed (they would have been dropped
    /// from the buffer).
    fn deliver(&self, batch: &[&[u8]]) {
        let mut start = 0;
        while start < batch.len() {
            match self.dst.write_batch(&batch[start..]) {
                Ok(n) => {
                    Counters::bump(&self.counters.forwarded, n as u64);
                    return;
                }
                Err(BatchError { accepted, error }) => {
                    Counters::bump(&self.counters.forwarded, accepted as u64);
                    let refused = start + accepted;
                    // A closed destination refuses every later event too.
                    start = if error == Error::Closed { batch.len() } else { refused + 1 };
                    Counters::bump(&self.counters.failures, (start - refused) as u64);
                    if self.deadline_passed() {
                        self.report_drop(&batch[refused..]);
                        return;
                    }
                    self.report_drop(&batch[refused..start]);
                }
            }
        }
    }
}

/// Buffers up to `capacity` events and delivers them to a destination sink from its
/// own thread, so the writer never waits on the destination (unless it chose
/// [`Overflow::Block`] and the buffer is full). The worker hands up to 4096 events on
/// per [`Sink::write_batch`]; while it has work it waits up to 500 µs for a batch to
/// gather rather than take events one by one (after an idle spell the first event goes
/// on at once). Failed deliveries are counted and reported to the drop hook, never lost
/// silently: an event the destination refuses is dropped and the events after it are
/// written again, as with writes of one event at a time.
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
            wake_at: (capacity / 2).clamp(1, DRAIN_MAX),
            overflow,
            buffer: Mutex::new(Buffer {
                chunks: VecDeque::new(),
                spare: Vec::new(),
                len: 0,
                closed: false,
                deadline: None,
                worker_done: false,
                worker: Worker::Busy,
                written: 0,
                writers_waiting: 0,
                evicted: Default::default(),
            }),
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
    /// reports the rest, then closes the destination and gives a write still under way
    /// `timeout` again to return (closing a pipeline, for one, ends it), so that the
    /// report counts the events it carried. Returns within twice `timeout` plus the
    /// destination's close even when the destination blocks: a write that outlasts
    /// that is left to finish on its own, and the events handed over in it (up to
    /// 4096) are counted and reported, delivered or dropped, when it returns.
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
        b = self.wait_for_worker(b, deadline);
        let drained = b.worker_done;
        let mut late = Chunk::default();
        if !drained {
            self.shared.take_all(&mut b, &mut late);
        }
        drop(b);
        self.shared.report_taken(&late, &mut Views::default());
        if first {
            let _ = self.shared.dst.close();
            // Closing the destination usually ends a write the worker is stuck in (a
            // pipeline, queue or retrying sink does): that write gets as long again to
            // return, so the report includes the events it carried.
            let finished = drained || {
                let b = lock(&self.shared.buffer);
                self.wait_for_worker(b, Instant::now().checked_add(timeout)).worker_done
            };
            if finished {
                if let Some(w) = lock(&self.worker).take() {
                    let _ = w.join();
                }
            }
        }
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        QueueSinkClose { delivered: get(&self.shared.counters.forwarded), dropped: get(&self.shared.counters.dropped), drained }
    }
}

impl QueueSink {
    /// Waits until the worker is done or `deadline` (`None`: no deadline) passes.
    fn wait_for_worker<'a>(&self, mut b: MutexGuard<'a, Buffer>, deadline: Option<Instant>) -> MutexGuard<'a, Buffer> {
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
        b
    }
}

impl Sink for QueueSink {
    fn write(&self, event: &[u8]) -> Result<()> {
        self.write_batch(&[event]).map(drop).map_err(Error::from)
    }

    /// Buffers the batch under one lock (a full buffer under [`Overflow::Block`] takes
    /// it in runs as room comes) with at most one wake-up of the worker per run.
    /// Under [`Overflow::DropOldest`] room is made first, the evicted events are
    /// reported, then the batch goes in; the leading events of a batch longer than the
    /// buffer, which it would evict itself, are reported as dropped without being
    /// buffered.
    fn write_batch(&self, events: &[&[u8]]) -> Result<usize, BatchError> {
        if events.is_empty() {
            return Ok(0);
        }
        let s = &self.shared;
        if s.overflow == Overflow::DropOldest {
            return self.write_evicting(events);
        }
        let mut accepted = 0;
        let mut b = lock(&s.buffer);
        loop {
            if b.closed {
                return Err(BatchError { accepted, error: Error::Closed });
            }
            let run = &events[accepted..(accepted + b.free(s.capacity)).min(events.len())];
            if !run.is_empty() {
                b.push(run, s.wake_at, &s.not_empty);
                accepted += run.len();
                b.written += run.len() as u64;
            }
            if accepted == events.len() {
                return Ok(accepted);
            }
            if s.overflow == Overflow::DropNewest {
                drop(b);
                s.report_drop(&events[accepted..=accepted]);
                return Err(BatchError { accepted, error: Error::Full });
            }
            b.writers_waiting += 1;
            b = s.not_full.wait(b).unwrap_or_else(|e| e.into_inner());
            b.writers_waiting -= 1;
        }
    }

    fn close(&self) -> Result<()> {
        self.close_within(self.close_timeout);
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        let (queued, written) = {
            let b = lock(&self.shared.buffer);
            (b.len as u64, b.written)
        };
        let mut stats = self.shared.counters.snapshot("queue", queued, vec![self.shared.dst.stats()]);
        stats.written = written;
        stats
    }
}

impl QueueSink {
    /// `write_batch` under [`Overflow::DropOldest`].
    fn write_evicting(&self, events: &[&[u8]]) -> Result<usize, BatchError> {
        let s = &self.shared;
        let (overrun, kept) = events.split_at(events.len().saturating_sub(s.capacity));
        let mut b = lock(&s.buffer);
        loop {
            if b.closed {
                return Err(BatchError { accepted: 0, error: Error::Closed });
            }
            let short = kept.len().saturating_sub(b.free(s.capacity));
            if short == 0 {
                break;
            }
            let (mut evicted, mut views) = std::mem::take(&mut b.evicted);
            b.move_front(short, &mut evicted);
            // Reported unlocked: the drop hook may look at this queue, or write into it.
            drop(b);
            s.report_taken(&evicted, &mut views);
            evicted.clear();
            b = lock(&s.buffer);
            b.evicted = (evicted, views);
        }
        b.push(kept, s.wake_at, &s.not_empty);
        b.written += events.len() as u64;
        drop(b);
        s.report_drop(overrun);
        Ok(events.len())
    }
}

impl Drop for QueueSink {
    fn drop(&mut self) {
        if !self.closing.load(Ordering::Acquire) {
            self.close_within(Duration::ZERO);
        }
    }
}
