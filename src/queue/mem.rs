//! The in-memory queue (`queue.type = "mem"`).
//!
//! One mutex guards the waiting events and the segment being written. Payloads are
//! copied once into shared segments; each waiting event is a length kept in chunks
//! sized like the batches consumers take, so a batch is usually a chunk handed over
//! as it is, and its references are built after the lock is dropped (see `Chunk`).
//!
//! Wake-ups are per batch, never per event: a consumer is woken when a batch can form
//! (`flush.min_events` reached, or the first event arrived and its flush timer must
//! start); while batches come every few microseconds, one consumer spins for the next
//! one instead of sleeping (see `SPIN`). Blocked producers are woken only when
//! capacity comes back; settled capacity comes back through atomic counters, so
//! releasing a batch takes the lock only when a producer waits for room, and
//! `publish_batch` copies at most `LOCKED_RUN` events per lock hold, so a consumer
//! never waits long for the lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::ack::lock;
use super::{check_event_len, max_event_len, timeout_deadline, AckTracker, Batch, ProducerCounts};
use super::{ProducerKey, ProducerOptions, Queue, QueueSettings, QueueStats};
use crate::error::{Error, Result};
use crate::event::{EventRef, Events, EventsData, Packed, Segment, SegmentPool, Selection};
use crate::queue::ack::ProducerState;

/// A run of waiting events, in order, as the producers leave them: each event's
/// length, and a span wherever the segment or the producer changes. Producers write 4
/// bytes per event; the consumer that takes a batch expands them into 16-byte
/// references, in memory the producers never touch. (Written by producers, the
/// references took most of a Go `PublishBatch` producer's profile: every line had
/// last been read by the consumer building its views, so every write took it back.)
#[derive(Default)]
struct Chunk {
    /// Every event's length; `lens[..taken]` are already taken.
    lens: Vec<u32>,
    /// Where `lens[taken..]` are, in order; `spans[0].first == taken`.
    spans: Vec<Span>,
    taken: usize,
    /// Most events the chunk takes.
    limit: usize,
}

/// Events a consumer took under the lock, and what their batch needs besides.
struct Taken {
    id: u64,
    events: Chunk,
    segs: Vec<Arc<Segment>>,
    seg_base: u32,
}

/// Events `first..` of a chunk, up to the next span: laid end to end in segment `seg`
/// (its id, wrapping) from `off` to `end`, all published by `producer`.
#[derive(Clone, Copy, Debug)]
struct Span {
    first: u32,
    seg: u32,
    off: u32,
    end: u32,
    producer: u32,
}

impl Chunk {
    fn with_limit(limit: usize) -> Chunk {
        Chunk { lens: Vec::with_capacity(limit), spans: Vec::new(), taken: 0, limit }
    }

    fn untaken_len(&self) -> usize {
        self.lens.len() - self.taken
    }

    fn room(&self) -> usize {
        self.limit - self.lens.len()
    }

    /// One past the index of the last event of span `k`.
    fn span_end(&self, k: usize) -> usize {
        self.spans.get(k + 1).map_or(self.lens.len(), |s| s.first as usize)
    }

    /// The segment of the last waiting event.
    fn last_seg(&self) -> Option<u32> {
        self.spans.last().map(|s| s.seg)
    }

    /// The segment of the `i`-th waiting event.
    fn seg_of(&self, i: usize) -> u32 {
        let i = (self.taken + i) as u32;
        self.spans[self.spans.partition_point(|s| s.first <= i) - 1].seg
    }

    /// Records the events whose lengths were just appended to `lens` from `first` on,
    /// laid end to end in `seg` from `off` to `end` by `producer`.
    fn add_span(&mut self, first: usize, seg: u32, off: u32, end: u32, producer: u32) {
        match self.spans.last_mut() {
            Some(last) if last.seg == seg && last.producer == producer && last.end == off => last.end = end,
            _ => self.spans.push(Span { first: first as u32, seg, off, end, producer }),
        }
    }

    fn push(&mut self, event: EventRef) {
        self.lens.push(event.len);
        self.add_span(self.lens.len() - 1, event.seg, event.off, event.off + event.len, event.producer);
    }

    /// Moves the first `n` waiting events to the end of `to`.
    fn move_into(&mut self, n: usize, to: &mut Chunk) {
        let end = self.taken + n;
        let mut i = self.taken;
        let mut spent = 0;
        while i < end {
            let span = self.spans[spent];
            let span_end = self.span_end(spent);
            let stop = span_end.min(end);
            let first = to.lens.len();
            to.lens.extend_from_slice(&self.lens[i..stop]);
            if stop == span_end {
                to.add_span(first, span.seg, span.off, span.end, span.producer);
                spent += 1;
            } else {
                let off = span.off + self.lens[i..stop].iter().sum::<u32>();
                to.add_span(first, span.seg, span.off, off, span.producer);
                self.spans[spent] = Span { first: stop as u32, off, ..span };
            }
            i = stop;
        }
        self.spans.drain(..spent);
        self.taken = end;
    }

    /// Appends the references of the waiting events to `refs`; returns their bytes and
    /// their producer, if they all have the same one.
    fn expand(&self, refs: &mut Vec<EventRef>) -> (usize, Option<u32>) {
        let mut bytes = 0;
        let mut producer = self.spans.first().map(|s| s.producer);
        for (k, span) in self.spans.iter().enumerate() {
            let stop = self.span_end(k);
            let (seg, mut off, sender) = (span.seg, span.off, span.producer);
            // `move`: the closure owns its copy of `off`, which then stays in a register;
            // captured by reference, it went through memory on every event.
            refs.extend(self.lens[span.first as usize..stop].iter().map(move |&len| {
                let r = EventRef { seg, off, len, producer: sender };
                off += len;
                r
            }));
            bytes += (span.end - span.off) as usize;
            if producer != Some(sender) {
                producer = None;
            }
        }
        (bytes, producer)
    }
}

struct State {
    input_closed: bool,
    closed: bool,
    /// Events not taken yet: the full chunks, in order, then `open_chunk`, which
    /// producers append to.
    chunks: VecDeque<Chunk>,
    open_chunk: Chunk,
    /// How many events the chunks hold.
    waiting: usize,
    /// Events per new chunk: the size consumers last asked for, so that chunks and
    /// batches line up.
    chunk_events: usize,
    /// The segment being written; owned by the queue alone.
    open: Vec<u8>,
    open_id: u32,
    /// Frozen segments that still hold waiting events: ids `frozen_base..open_id`.
    frozen: VecDeque<Arc<Segment>>,
    frozen_base: u32,
    /// Events (and their bytes) ever accepted, less those removed by `cancel`; minus
    /// `MemQueue::released_*`, the events accepted and not yet settled.
    events_in: usize,
    bytes_in: usize,
    blocked_consumers: usize,
    /// Blocked consumers that found the queue empty and sleep without a timer: the
    /// first event must wake one. The others sleep at most a flush timeout and find
    /// `first_waiting_at` when they wake, so the first event wakes nobody and a batch
    /// costs one wake-up, when it is complete.
    deep_sleepers: usize,
    /// When the oldest waiting event arrived, or (after a take left events waiting)
    /// when that take happened. Meaningful while events wait.
    first_waiting_at: Instant,
    /// The smallest batch a blocked consumer waits for.
    consumer_want: usize,
    /// A consumer spins for `spinner_want` events (at most one spins at a time).
    spinning: bool,
    spinner_want: usize,
    /// When the last batch was taken, and whether it came within [`SHORT_WAIT`] of
    /// the one before (by any consumer): batches come often enough to spin for.
    last_take_at: Instant,
    short_waits: bool,
}

/// The in-memory queue. Build it with [`MemQueue::new`] or through the registry.
pub struct MemQueue {
    settings: QueueSettings,
    state: Mutex<State>,
    not_full: Condvar,
    not_empty: Condvar,
    tracker: Arc<AckTracker>,
    pool: Arc<SegmentPool>,
    /// Chunks kept for reuse (see `MemQueue::spare_chunk`); taken under the lock or
    /// without it, never the other way round.
    spare_chunks: Mutex<VecDeque<Chunk>>,
    /// Bumped (under the lock) by every `wake_consumers`.
    epoch: AtomicU64,
    /// Events (and bytes) settled and released, ever: added without the lock.
    released_events: AtomicUsize,
    released_bytes: AtomicUsize,
    /// Producers waiting for room; changed under the lock, read by `release` without it.
    blocked_producers: AtomicUsize,
    /// Bumped for a spinning consumer when its batch is complete or it must stop.
    spin_signal: SpinSignal,
}

/// A counter on its own cache line, so that a consumer spinning on it is not
/// disturbed by writes to its neighbours; and whether a consumer spins for the lock.
#[repr(align(128))]
#[derive(Default)]
struct SpinSignal(AtomicU64, AtomicBool);

/// How long a consumer spins for its batch before it sleeps, when batches are taken
/// within [`SHORT_WAIT`] of each other: a wake-up costs the producer more than a
/// batch arriving every few microseconds is worth.
const SPIN: Duration = Duration::from_micros(30);
const SHORT_WAIT: Duration = Duration::from_micros(60);

/// Most events `publish_batch` copies per lock hold: about a microsecond, less than a
/// consumer spins on the lock before it sleeps.
const LOCKED_RUN: usize = 128;

/// Pause instructions between two tries of the lock in `MemQueue::spin_for_lock`:
/// with a try per pause, h3-batch ran 88 M events/s, with 16 pauses 108-125 M
/// (h1-pipeline unchanged, 64 pauses slower again).
const LOCK_TRY_PAUSES: u32 = 16;

/// Taken chunks held before one is reused: 32 KiB of lengths with 1024-event chunks.
const SPARE_CHUNKS: usize = 8;

/// Bounds of `State::chunk_events`.
const CHUNK_EVENTS: std::ops::RangeInclusive<usize> = 16..=16384;

impl MemQueue {
    /// Builds a queue; `listener` sees the total of every ACK round.
    pub fn new(settings: QueueSettings, listener: Option<super::AckListener>) -> Result<Arc<MemQueue>> {
        if settings.events == 0 {
            return Err(Error::config("queue.events", "must be at least 1"));
        }
        let pool = Arc::new(SegmentPool::default());
        Ok(Arc::new_cyclic(|me: &Weak<MemQueue>| {
            let me = me.clone();
            let release = Box::new(move |events: usize, bytes: usize| {
                if let Some(q) = me.upgrade() {
                    q.release(events, bytes);
                }
            });
            MemQueue {
                tracker: AckTracker::new(release, listener, settings.logger.clone()),
                state: Mutex::new(State {
                    input_closed: false,
                    closed: false,
                    chunks: VecDeque::new(),
                    open_chunk: Chunk::default(),
                    waiting: 0,
                    chunk_events: Self::chunk_size(&settings, settings.flush_min_events),
                    open: pool.take(0),
                    open_id: 0,
                    frozen: VecDeque::new(),
                    frozen_base: 0,
                    events_in: 0,
                    bytes_in: 0,
                    blocked_consumers: 0,
                    deep_sleepers: 0,
                    first_waiting_at: Instant::now(),
                    consumer_want: usize::MAX,
                    spinning: false,
                    spinner_want: usize::MAX,
                    last_take_at: Instant::now(),
                    short_waits: false,
                }),
                not_full: Condvar::new(),
                not_empty: Condvar::new(),
                pool,
                spare_chunks: Mutex::new(VecDeque::new()),
                settings,
                epoch: AtomicU64::new(0),
                released_events: AtomicUsize::new(0),
                released_bytes: AtomicUsize::new(0),
                blocked_producers: AtomicUsize::new(0),
                spin_signal: SpinSignal::default(),
            }
        }))
    }

    /// Returns settled capacity. A producer that found no room announced itself in
    /// `blocked_producers` before checking again (both sequentially consistent), so
    /// either it sees this release or this sees it and wakes it under the lock.
    fn release(&self, events: usize, bytes: usize) {
        self.released_events.fetch_add(events, Ordering::SeqCst);
        self.released_bytes.fetch_add(bytes, Ordering::SeqCst);
        if self.blocked_producers.load(Ordering::SeqCst) > 0 {
            // Taking the lock waits until the producer is inside `wait`; notifying
            // after dropping it spares the producer waking up to a held lock.
            drop(lock(&self.state));
            self.not_full.notify_all();
        }
    }

    /// Events and bytes accepted and not yet settled. Exact under the lock, except
    /// that releases may land at any time (the figures only shrink then).
    fn occupancy(&self, st: &State) -> (usize, usize) {
        let events = st.events_in.wrapping_sub(self.released_events.load(Ordering::SeqCst));
        let bytes = st.bytes_in.wrapping_sub(self.released_bytes.load(Ordering::SeqCst));
        (events, bytes)
    }

    /// Events per chunk for consumers that take `max` events at a time.
    fn chunk_size(settings: &QueueSettings, max: usize) -> usize {
        let max = if max == 0 { 1024 } else { max };
        max.min(settings.events).clamp(*CHUNK_EVENTS.start(), *CHUNK_EVENTS.end())
    }

    fn has_room(&self, st: &State, len: usize) -> bool {
        let (events, bytes) = self.occupancy(st);
        events < self.settings.events && (self.settings.bytes == 0 || bytes + len <= self.settings.bytes)
    }

    fn check_open(st: &State, p: &ProducerState) -> Result<()> {
        if st.input_closed {
            Err(Error::Closed)
        } else if p.cancelled.load(Ordering::Acquire) {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Moves the open segment behind an `Arc` so consumers can share it.
    fn freeze(&self, st: &mut State, min_next: usize) {
        // An empty segment still needs freezing when empty events refer to it.
        let last = st.open_chunk.last_seg().or_else(|| st.chunks.back().and_then(Chunk::last_seg));
        let referenced = last == Some(st.open_id);
        if st.open.is_empty() && !referenced {
            if st.open.capacity() < min_next {
                st.open = self.pool.take(min_next);
            }
            return;
        }
        let data = std::mem::replace(&mut st.open, self.pool.take(min_next));
        st.frozen.push_back(Arc::new(Segment::new(data, self.pool.clone())));
        st.open_id = st.open_id.wrapping_add(1);
    }

    /// Makes sure `open_chunk` has room for one more event.
    fn open_chunk_room(&self, st: &mut State) {
        if st.open_chunk.room() > 0 {
            return;
        }
        let fresh = self.spare_chunk(st.chunk_events);
        let full = std::mem::replace(&mut st.open_chunk, fresh);
        if full.untaken_len() > 0 {
            st.chunks.push_back(full);
        } else {
            self.recycle(full);
        }
    }

    /// Copies the payload of one event into the open segment and returns its reference.
    fn store(&self, st: &mut State, producer: u32, event: &[u8]) -> EventRef {
        if st.open.capacity() - st.open.len() < event.len() {
            self.freeze(st, event.len());
        }
        let off = st.open.len() as u32;
        st.open.extend_from_slice(event);
        EventRef { seg: st.open_id, off, len: event.len() as u32, producer }
    }

    /// Stores one event (the caller checked room and state) and counts it.
    fn push_one(&self, st: &mut State, producer: u32, event: &[u8]) {
        if st.waiting == 0 {
            st.first_waiting_at = Instant::now();
        }
        let r = self.store(st, producer, event);
        self.open_chunk_room(st);
        st.open_chunk.push(r);
        st.waiting += 1;
        st.events_in += 1;
        st.bytes_in += event.len();
    }

    /// Stores `events` (the caller checked room and state) and counts them: payloads
    /// are copied run by run (the longest run that fits the open segment), their
    /// references appended to the last chunk (then to new ones).
    fn push<R: EventRun>(&self, st: &mut State, producer: u32, events: R) {
        if st.waiting == 0 && events.count() > 0 {
            st.first_waiting_at = Instant::now();
        }
        let mut bytes = 0;
        let mut rest = events;
        while rest.count() > 0 {
            self.open_chunk_room(st);
            let mut chunk = std::mem::take(&mut st.open_chunk);
            let room = chunk.room();
            let (now, later) = if rest.count() <= room { (rest, R::default()) } else { rest.split_at(room) };
            bytes += self.store_run(st, producer, now, &mut chunk);
            st.open_chunk = chunk;
            rest = later;
        }
        st.waiting += events.count();
        st.events_in += events.count();
        st.bytes_in += bytes;
    }

    /// Copies the payloads of `events` and appends them to `chunk`; returns their bytes.
    fn store_run<R: EventRun>(&self, st: &mut State, producer: u32, events: R, chunk: &mut Chunk) -> usize {
        let mut bytes = 0;
        let mut rest = events;
        while rest.count() > 0 {
            let (start, first) = (st.open.len(), chunk.lens.len());
            let stored = rest.copy_fitting(&mut st.open, &mut chunk.lens);
            if stored > 0 {
                chunk.add_span(first, st.open_id, start as u32, st.open.len() as u32, producer);
            }
            bytes += st.open.len() - start;
            if stored == rest.count() {
                break;
            }
            self.freeze(st, rest.event_len(stored));
            rest = rest.split_at(stored).1;
        }
        bytes
    }

    /// How many of the first `max` of `events` fit in the queue now.
    fn fitting<R: EventRun>(&self, st: &State, events: R, max: usize) -> usize {
        let (queued, mut bytes) = self.occupancy(st);
        let n = events.count().min(max).min(self.settings.events.saturating_sub(queued));
        if self.settings.bytes == 0 {
            return n;
        }
        (0..n)
            .position(|i| {
                bytes += events.event_len(i);
                bytes > self.settings.bytes
            })
            .unwrap_or(n)
    }

    /// `publish_batch` and `publish_packed`: runs of at most [`LOCKED_RUN`] events
    /// per lock hold, each as many as fit now.
    fn publish_run<R: EventRun>(&self, producer: &ProducerKey, events: R, timeout: Option<Duration>) -> Result<usize> {
        if !events.none_longer_than(max_event_len(&self.settings)) {
            for i in 0..events.count() {
                check_event_len(events.event_len(i), &self.settings)?;
            }
        }
        let deadline = timeout_deadline(timeout);
        let mut accepted = 0;
        let mut rest = events;
        while rest.count() > 0 {
            let st = lock(&self.state);
            let mut st = match self.wait_room(st, &producer.state, rest.event_len(0), deadline) {
                Ok(g) => g,
                Err(e) if accepted == 0 => return Err(e),
                Err(_) => return Ok(accepted),
            };
            let before = st.waiting;
            let (run, after) = rest.split_at(self.fitting(&st, rest, LOCKED_RUN));
            self.push(&mut st, producer.key, run);
            accepted += run.count();
            self.tracker.accept(&producer.state, run.count() as u64);
            self.signal_consumers(st, before);
            rest = after;
        }
        Ok(accepted)
    }

    /// Unlocks, then wakes a blocked consumer if `waiting` went from `before` across
    /// the size it waits for, or from empty while a consumer sleeps without a timer
    /// (its flush timer must start). The consumer was inside `wait` when `st` was
    /// taken, so the wake cannot be lost; notifying after unlocking spares it waking
    /// up to a held lock.
    fn signal_consumers(&self, st: MutexGuard<'_, State>, before: usize) {
        let after = st.waiting;
        if st.spinning && before < st.spinner_want && after >= st.spinner_want {
            self.spin_signal.0.fetch_add(1, Ordering::Release);
        }
        // A spinning consumer takes the batch (and keeps the flush timer) itself:
        // waking a sleeper as well would only have it find nothing.
        let spinner_covers = st.spinning && st.spinner_want <= st.consumer_want;
        let fills_batch = st.blocked_consumers > 0 && before < st.consumer_want && after >= st.consumer_want;
        let wake = !spinner_covers && (fills_batch || (before == 0 && st.deep_sleepers > 0));
        drop(st);
        if wake {
            self.not_empty.notify_one();
        }
    }

    /// Waits for room for an event of `len` bytes. Returns the guard with room, or the error.
    fn wait_room<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        p: &ProducerState,
        len: usize,
        deadline: Option<Instant>,
    ) -> Result<MutexGuard<'a, State>> {
        loop {
            Self::check_open(&st, p)?;
            if self.has_room(&st, len) {
                return Ok(st);
            }
            self.blocked_producers.fetch_add(1, Ordering::SeqCst);
            if self.has_room(&st, len) {
                self.blocked_producers.fetch_sub(1, Ordering::SeqCst);
                return Ok(st);
            }
            let result = match deadline {
                None => Ok(self.not_full.wait(st).unwrap_or_else(|e| e.into_inner())),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        Err(st)
                    } else {
                        Ok(self.not_full.wait_timeout(st, d - now).unwrap_or_else(|e| e.into_inner()).0)
                    }
                }
            };
            self.blocked_producers.fetch_sub(1, Ordering::SeqCst);
            match result {
                Ok(g) => st = g,
                Err(_) => return Err(Error::Timeout),
            }
        }
    }

    /// Takes up to `max` waiting events off the chunks. Called under the lock, with
    /// events waiting; the batch is built from them after the lock is dropped.
    fn take(&self, st: &mut State, max: usize) -> Taken {
        let n = max.min(st.waiting);
        let last_seg = Self::nth_waiting_seg(st, n - 1);
        if last_seg == st.open_id {
            self.freeze(st, 0);
        }
        let events = self.take_chunk(st, n);
        st.waiting -= n;
        if st.waiting > 0 {
            st.first_waiting_at = Instant::now();
        }
        let seg_base = events.spans[0].seg;
        let first = seg_base.wrapping_sub(st.frozen_base) as usize;
        let span = last_seg.wrapping_sub(seg_base) as usize + 1;
        let segs: Vec<Arc<Segment>> = st.frozen.range(first..first + span).cloned().collect();
        let oldest_needed = match st.waiting {
            0 => st.open_id,
            _ => Self::nth_waiting_seg(st, 0),
        };
        for _ in 0..oldest_needed.wrapping_sub(st.frozen_base) {
            st.frozen.pop_front();
        }
        st.frozen_base = oldest_needed;
        Taken { id: self.tracker.open(n), events, segs, seg_base }
    }

    /// The batch of events taken under the lock: their references are built here,
    /// without it, so producers never wait for them.
    fn batch(&self, taken: Taken) -> Batch {
        let Taken { id, events, segs, seg_base } = taken;
        let n = events.untaken_len();
        let mut refs = self.pool.take_refs(n);
        let (bytes, producer) = events.expand(&mut refs);
        self.recycle(events);
        let data = Arc::new(EventsData::new(segs, seg_base, refs, bytes, producer, Some(self.pool.clone())));
        self.tracker.fill(id, data.clone());
        Batch::new(id, Events::new(data, Selection::Range(0..n as u32)), self.tracker.clone())
    }

    /// Spins without the lock until a producer completes a batch of `want` events, the
    /// queue is woken or closed, or `until`; returns the lock.
    fn spin<'a>(&'a self, mut st: MutexGuard<'a, State>, want: usize, until: Instant) -> MutexGuard<'a, State> {
        st.spinning = true;
        st.spinner_want = want;
        let signal = self.spin_signal.0.load(Ordering::Acquire);
        drop(st);
        let mut turns = 0u32;
        while self.spin_signal.0.load(Ordering::Acquire) == signal {
            std::hint::spin_loop();
            turns = turns.wrapping_add(1);
            if turns % 64 == 0 && Instant::now() >= until {
                break;
            }
        }
        let mut st = self.lock_spinning();
        st.spinning = false;
        st.spinner_want = usize::MAX;
        st
    }

    /// The lock, spinning up to [`SPIN`] for it first: producers hold it for short
    /// runs (see [`LOCKED_RUN`]), and a consumer that sleeps on it costs the producer
    /// a wake-up.
    fn lock_spinning(&self) -> MutexGuard<'_, State> {
        // One spinner at a time: with several consumers, the others would only take
        // the CPU the lock holder needs.
        if self.spin_signal.1.swap(true, Ordering::Acquire) {
            return lock(&self.state);
        }
        let st = self.spin_for_lock();
        self.spin_signal.1.store(false, Ordering::Release);
        st
    }

    /// Tries the lock every [`LOCK_TRY_PAUSES`] pauses: each try takes the lock's
    /// cache line, which is also the start of `State`, from the producer copying
    /// under the lock.
    fn spin_for_lock(&self) -> MutexGuard<'_, State> {
        let until = Instant::now() + SPIN;
        let mut turns = 0u32;
        loop {
            match self.state.try_lock() {
                Ok(st) => return st,
                Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
            for _ in 0..LOCK_TRY_PAUSES {
                std::hint::spin_loop();
            }
            turns = turns.wrapping_add(1);
            if turns % 8 == 0 && Instant::now() >= until {
                return lock(&self.state);
            }
        }
    }

    /// The segment of the `i`-th waiting event.
    fn nth_waiting_seg(st: &State, mut i: usize) -> u32 {
        for c in st.chunks.iter().chain([&st.open_chunk]) {
            if i < c.untaken_len() {
                return c.seg_of(i);
            }
            i -= c.untaken_len();
        }
        unreachable!("fewer events wait than counted")
    }

    /// A chunk of `limit` events: a recycled one once there are a few (the oldest,
    /// whose lines the consumer read longest ago), or a new one.
    fn spare_chunk(&self, limit: usize) -> Chunk {
        let mut spare = lock(&self.spare_chunks);
        let reusable = if spare.len() >= SPARE_CHUNKS { spare.pop_front() } else { None };
        drop(spare);
        match reusable {
            Some(mut c) => {
                c.lens.reserve(limit);
                c.limit = limit;
                c
            }
            None => Chunk::with_limit(limit),
        }
    }

    fn recycle(&self, mut chunk: Chunk) {
        chunk.lens.clear();
        chunk.spans.clear();
        chunk.taken = 0;
        let mut spare = lock(&self.spare_chunks);
        if spare.len() < 2 * SPARE_CHUNKS {
            spare.push_back(chunk);
        }
    }

    /// Removes the first `n` waiting events from the chunks, as one chunk: a chunk
    /// that is exactly those events is handed over whole.
    fn take_chunk(&self, st: &mut State, n: usize) -> Chunk {
        let front = st.chunks.front().unwrap_or(&st.open_chunk);
        if front.taken == 0 && front.lens.len() == n {
            return match st.chunks.pop_front() {
                Some(c) => c,
                None => {
                    let fresh = self.spare_chunk(st.chunk_events);
                    std::mem::replace(&mut st.open_chunk, fresh)
                }
            };
        }
        let mut taken = self.spare_chunk(n);
        while taken.lens.len() < n {
            let c = match st.chunks.front_mut() {
                Some(c) => c,
                None => &mut st.open_chunk,
            };
            c.move_into((n - taken.lens.len()).min(c.untaken_len()), &mut taken);
            if c.untaken_len() == 0 && !st.chunks.is_empty() {
                let c = st.chunks.pop_front().expect("front exists");
                self.recycle(c);
            }
        }
        taken
    }

    fn copy_payload(st: &State, event: &EventRef) -> Vec<u8> {
        let (start, end) = (event.off as usize, event.off as usize + event.len as usize);
        if event.seg == st.open_id {
            st.open[start..end].to_vec()
        } else {
            st.frozen[event.seg.wrapping_sub(st.frozen_base) as usize].bytes()[start..end].to_vec()
        }
    }
}

impl Queue for MemQueue {
    fn register(&self, options: ProducerOptions) -> Result<ProducerKey> {
        if lock(&self.state).input_closed {
            return Err(Error::Closed);
        }
        let (key, state) = self.tracker.register(options);
        Ok(ProducerKey { key, state })
    }

    fn unregister(&self, producer: &ProducerKey) {
        self.tracker.detach(producer.key, &producer.state);
    }

    fn publish(&self, producer: &ProducerKey, event: &[u8], timeout: Option<Duration>) -> Result<()> {
        check_event_len(event.len(), &self.settings)?;
        let st = lock(&self.state);
        let mut st = self.wait_room(st, &producer.state, event.len(), timeout_deadline(timeout))?;
        let before = st.waiting;
        self.push_one(&mut st, producer.key, event);
        self.tracker.accept(&producer.state, 1);
        self.signal_consumers(st, before);
        Ok(())
    }

    fn try_publish(&self, producer: &ProducerKey, event: &[u8]) -> Result<()> {
        check_event_len(event.len(), &self.settings)?;
        let mut st = lock(&self.state);
        Self::check_open(&st, &producer.state)?;
        if !self.has_room(&st, event.len()) {
            return Err(Error::Full);
        }
        let before = st.waiting;
        self.push_one(&mut st, producer.key, event);
        self.tracker.accept(&producer.state, 1);
        self.signal_consumers(st, before);
        Ok(())
    }

    fn publish_batch(&self, producer: &ProducerKey, events: &[&[u8]], timeout: Option<Duration>) -> Result<usize> {
        self.publish_run(producer, events, timeout)
    }

    fn publish_packed(&self, producer: &ProducerKey, events: Packed<'_>, timeout: Option<Duration>) -> Result<usize> {
        self.publish_run(producer, events, timeout)
    }

    fn cancel(&self, producer: &ProducerKey) -> usize {
        producer.state.cancelled.store(true, Ordering::Release);
        let mut st = lock(&self.state);
        let mut removed = Vec::new();
        if producer.state.options.drop_on_cancel {
            let mut freed_bytes = 0;
            let open = std::mem::take(&mut st.open_chunk);
            let mut waiting = Vec::new();
            for chunk in std::mem::take(&mut st.chunks).into_iter().chain([open]) {
                waiting.clear();
                chunk.expand(&mut waiting);
                let mut kept = Chunk { limit: chunk.limit, ..Chunk::default() };
                for event in &waiting {
                    if event.producer == producer.key {
                        removed.push(Self::copy_payload(&st, event));
                        freed_bytes += event.len as usize;
                    } else {
                        kept.push(*event);
                    }
                }
                if kept.untaken_len() > 0 {
                    st.chunks.push_back(kept);
                }
                self.recycle(chunk);
            }
            st.waiting -= removed.len();
            st.events_in -= removed.len();
            st.bytes_in -= freed_bytes;
        }
        self.not_full.notify_all();
        drop(st);
        let n = removed.len();
        self.tracker.report_removed(producer.key, removed);
        n
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn get_since(&self, max: usize, epoch: u64) -> Result<Option<Batch>> {
        let max = max.max(1);
        let want = max.min(self.settings.flush_min_events.max(1));
        let flush_timeout = self.settings.flush_timeout;
        let mut st = self.lock_spinning();
        st.chunk_events = Self::chunk_size(&self.settings, max);
        // Found empty, a consumer first sleeps one flush timeout without asking
        // producers to wake it at their first event (see `State::deep_sleepers`).
        let mut light_sleep = !flush_timeout.is_zero();
        let mut may_spin = true;
        loop {
            if st.closed {
                return Err(Error::Closed);
            }
            if self.epoch.load(Ordering::Acquire) != epoch {
                return Ok(None);
            }
            let avail = st.waiting;
            let mut wake_at = None;
            if avail > 0 {
                let flush_at = st.first_waiting_at.checked_add(flush_timeout);
                let due = avail >= want
                    || st.input_closed
                    || flush_timeout.is_zero()
                    || flush_at.is_some_and(|d| Instant::now() >= d);
                if due {
                    let now = Instant::now();
                    st.short_waits = now.duration_since(st.last_take_at) < SHORT_WAIT;
                    st.last_take_at = now;
                    let taken = self.take(&mut st, max);
                    // Another consumer is woken for what is left only if that is a
                    // batch, or if it sleeps without a timer (the flush timer must run).
                    let chain = st.blocked_consumers > 0
                        && (st.waiting >= st.consumer_want || (st.waiting > 0 && st.deep_sleepers > 0));
                    drop(st);
                    if chain {
                        self.not_empty.notify_one();
                    }
                    return Ok(Some(self.batch(taken)));
                }
                wake_at = flush_at;
            }
            let now = Instant::now();
            if std::mem::take(&mut may_spin) && st.short_waits && !st.spinning && !st.input_closed {
                let until = wake_at.map_or(now + SPIN, |d| d.min(now + SPIN));
                st = self.spin(st, want, until);
                continue;
            }
            if avail == 0 && std::mem::take(&mut light_sleep) {
                wake_at = now.checked_add(flush_timeout);
            }
            let deep = avail == 0 && wake_at.is_none();
            st.blocked_consumers += 1;
            st.deep_sleepers += usize::from(deep);
            st.consumer_want = st.consumer_want.min(want);
            st = match wake_at {
                None => self.not_empty.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let wait = d.saturating_duration_since(Instant::now());
                    self.not_empty.wait_timeout(st, wait).unwrap_or_else(|e| e.into_inner()).0
                }
            };
            st.blocked_consumers -= 1;
            st.deep_sleepers -= usize::from(deep);
            if st.blocked_consumers == 0 {
                st.consumer_want = usize::MAX;
            }
        }
    }

    fn try_get(&self, max: usize) -> Result<Option<Batch>> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(Error::Closed);
        }
        if st.waiting == 0 {
            return Ok(None);
        }
        let taken = self.take(&mut st, max.max(1));
        drop(st);
        Ok(Some(self.batch(taken)))
    }

    fn wake_consumers(&self) {
        let _st = lock(&self.state);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.spin_signal.0.fetch_add(1, Ordering::Release);
        self.not_empty.notify_all();
    }

    fn close_input(&self) {
        let mut st = lock(&self.state);
        st.input_closed = true;
        self.spin_signal.0.fetch_add(1, Ordering::Release);
        self.not_full.notify_all();
        self.not_empty.notify_all();
    }

    fn close(&self) -> Option<Batch> {
        let mut st = lock(&self.state);
        st.input_closed = true;
        let rest = if st.closed || st.waiting == 0 {
            None
        } else {
            let n = st.waiting;
            Some(self.take(&mut st, n))
        };
        st.closed = true;
        self.spin_signal.0.fetch_add(1, Ordering::Release);
        self.not_full.notify_all();
        self.not_empty.notify_all();
        drop(st);
        rest.map(|taken| self.batch(taken))
    }

    fn flush(&self, timeout: Option<Duration>) -> Result<()> {
        self.tracker.wait_reported(timeout_deadline(timeout))
    }

    fn shutdown(&self) {
        self.tracker.shutdown();
    }

    fn in_callback(&self) -> bool {
        self.tracker.on_dispatcher()
    }

    fn totals(&self) -> ProducerCounts {
        self.tracker.totals()
    }

    fn stats(&self) -> QueueStats {
        let st = lock(&self.state);
        let (events, bytes) = self.occupancy(&st);
        QueueStats {
            events,
            bytes,
            waiting: st.waiting,
            open_batches: self.tracker.open_batches(),
            capacity_events: self.settings.events,
            capacity_bytes: self.settings.bytes,
        }
    }

    fn is_guaranteed(&self, producer: u32) -> bool {
        self.tracker.is_guaranteed(producer)
    }
}

/// Events as a publish call passes them: separate slices, or packed end to end.
/// The default is no events.
trait EventRun: Copy + Default {
    fn count(&self) -> usize;
    fn event_len(&self, i: usize) -> usize;
    /// Whether every event has at most `max` bytes.
    fn none_longer_than(&self, max: usize) -> bool;
    /// The first `n` events, and the rest.
    fn split_at(self, n: usize) -> (Self, Self);
    /// Copies the leading events that fit in the spare capacity of `open` (never
    /// grown) end to end, appends their lengths to `lens`, and returns how many. Apart
    /// from the queue state so that the loop keeps both vectors in registers.
    fn copy_fitting(self, open: &mut Vec<u8>, lens: &mut Vec<u32>) -> usize;
}

impl EventRun for &[&[u8]] {
    fn count(&self) -> usize {
        self.len()
    }

    fn event_len(&self, i: usize) -> usize {
        self[i].len()
    }

    fn none_longer_than(&self, max: usize) -> bool {
        self.iter().all(|e| e.len() <= max)
    }

    fn split_at(self, n: usize) -> (Self, Self) {
        <[&[u8]]>::split_at(self, n)
    }

    /// One copy per event: they are separate slices.
    fn copy_fitting(self, open: &mut Vec<u8>, lens: &mut Vec<u32>) -> usize {
        let mut stored = 0;
        for event in self {
            if open.capacity() - open.len() < event.len() {
                break;
            }
            open.extend_from_slice(event);
            lens.push(event.len() as u32);
            stored += 1;
        }
        stored
    }
}

impl EventRun for Packed<'_> {
    fn count(&self) -> usize {
        self.len()
    }

    fn event_len(&self, i: usize) -> usize {
        self.lens()[i] as usize
    }

    /// Without a pass over the lengths when all the events together are not longer.
    fn none_longer_than(&self, max: usize) -> bool {
        self.bytes().len() <= max || self.lens().iter().all(|&n| n as usize <= max)
    }

    fn split_at(self, n: usize) -> (Self, Self) {
        Packed::split_at(&self, n)
    }

    /// One copy for every event that fits: they are contiguous already.
    fn copy_fitting(self, open: &mut Vec<u8>, lens: &mut Vec<u32>) -> usize {
        let spare = open.capacity() - open.len();
        let (fit, run_bytes) = if self.bytes().len() <= spare {
            (self.len(), self.bytes().len())
        } else {
            let mut bytes = 0;
            let fit = self.lens().iter().position(|&len| {
                bytes += len as usize;
                bytes > spare
            });
            let fit = fit.expect("the events do not fit, so one of them overflows");
            (fit, bytes - self.lens()[fit] as usize)
        };
        open.extend_from_slice(&self.bytes()[..run_bytes]);
        lens.extend_from_slice(&self.lens()[..fit]);
        fit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SEGMENT_BYTES;
    use crate::queue::Producer;

    #[test]
    fn events_larger_than_a_segment_and_across_segments_round_trip() {
        let q = MemQueue::new(QueueSettings { events: 64, ..QueueSettings::default() }, None).unwrap();
        let p = Producer::new(q.clone(), ProducerOptions::default()).unwrap();
        let big: Vec<u8> = (0..SEGMENT_BYTES * 2 + 7).map(|i| i as u8).collect();
        let mid: Vec<u8> = vec![9; SEGMENT_BYTES / 2 + 1];
        let payloads = [mid.clone(), mid.clone(), big.clone(), b"tail".to_vec()];
        for e in &payloads {
            p.publish(e, None).unwrap();
        }
        let batch = q.get(64).unwrap().expect("a batch");
        assert_eq!(batch.events().to_vec(), payloads.to_vec());
        batch.ack().unwrap();
        q.flush(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(q.stats().bytes, 0);
    }

    #[test]
    fn segment_ids_wrap_around() {
        let q = MemQueue::new(QueueSettings { events: 64, ..QueueSettings::default() }, None).unwrap();
        {
            let mut st = lock(&q.state);
            st.open_id = u32::MAX - 1;
            st.frozen_base = u32::MAX - 1;
        }
        let p = Producer::new(q.clone(), ProducerOptions::default()).unwrap();
        let payloads: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; SEGMENT_BYTES / 2 + 1]).collect();
        let views: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        assert_eq!(p.publish_batch(&views[..4], None).unwrap(), 4);
        let first = q.get(3).unwrap().expect("a batch");
        assert_eq!(first.events().to_vec(), payloads[..3].to_vec());
        assert_eq!(p.publish_batch(&views[4..], None).unwrap(), 2);
        let rest = q.get(64).unwrap().expect("a second batch");
        assert_eq!(rest.events().to_vec(), payloads[3..].to_vec());
        assert!(lock(&q.state).open_id < 8, "the ids wrapped");
        first.ack().unwrap();
        rest.ack().unwrap();
        q.flush(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(q.stats().events, 0);
    }

    /// Whole chunks handed over and runs moved across chunks and segments carry the
    /// right events, byte totals and sole producers, however they were published.
    #[test]
    fn taken_batches_match_their_events_whole_chunks_or_not() {
        // Chunks of 64 (the batch size consumers wait for): some takes below cover
        // exactly one chunk, others span two or part of one.
        let settings = QueueSettings { events: 100_000, flush_min_events: 64, ..QueueSettings::default() };
        let q = MemQueue::new(settings, None).unwrap();
        let (a, b) = (
            Producer::new(q.clone(), ProducerOptions::default()).unwrap(),
            Producer::new(q.clone(), ProducerOptions::default()).unwrap(),
        );
        let event = |n: usize| -> Vec<u8> { vec![(n % 251) as u8; 40 + n % 3000] };
        let mut expected = std::collections::VecDeque::new();
        let mut n = 0;
        for round in 0..40 {
            let (producer, key) = if round % 3 == 2 { (&b, b.key.key) } else { (&a, a.key.key) };
            let events: Vec<Vec<u8>> = (0..[64, 1, 100, 27][round % 4]).map(|i| event(n + i)).collect();
            n += events.len();
            if round % 4 == 1 {
                producer.publish(&events[0], None).unwrap();
            } else if round % 4 == 3 {
                let (data, lens) = (events.concat(), events.iter().map(|e| e.len() as u32).collect::<Vec<_>>());
                let packed = Packed::new(&data, &lens).unwrap();
                assert_eq!(producer.publish_packed(packed, None).unwrap(), events.len());
            } else {
                let views: Vec<&[u8]> = events.iter().map(Vec::as_slice).collect();
                assert_eq!(producer.publish_batch(&views, None).unwrap(), views.len());
            }
            expected.extend(events.into_iter().map(|e| (key, e)));
            while expected.len() >= 64 || (round == 39 && !expected.is_empty()) {
                let batch = q.get(if round % 2 == 0 { 64 } else { 50 }).unwrap().expect("events wait");
                let want: Vec<(u32, Vec<u8>)> = expected.drain(..batch.len()).collect();
                let data = &batch.events().data;
                assert_eq!(batch.events().to_vec(), want.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>());
                assert_eq!(data.bytes, want.iter().map(|(_, e)| e.len()).sum::<usize>());
                let producers: Vec<u32> = data.refs.iter().map(|r| r.producer).collect();
                assert_eq!(producers, want.iter().map(|(p, _)| *p).collect::<Vec<_>>());
                let sole = producers.iter().all(|&p| p == producers[0]).then_some(producers[0]);
                assert_eq!(data.sole_producer, sole, "{producers:?}");
                batch.ack().unwrap();
            }
        }
        q.flush(Some(Duration::from_secs(10))).unwrap();
        assert_eq!((q.stats().events, q.stats().bytes), (0, 0));
        assert_eq!(a.counts().acked + b.counts().acked, n as u64);
    }

    /// A cancel that drops one producer's events from between another's leaves the
    /// other's where they are, taken before the cancel or after it.
    #[test]
    fn cancel_between_another_producers_events_keeps_theirs() {
        let q = MemQueue::new(QueueSettings { events: 64, ..QueueSettings::default() }, None).unwrap();
        let options = || ProducerOptions { drop_on_cancel: true, ..ProducerOptions::default() };
        let (a, b) = (Producer::new(q.clone(), options()).unwrap(), Producer::new(q.clone(), options()).unwrap());
        let event = |i: u8| vec![i; 1 + i as usize];
        for i in 0..12u8 {
            let producer = if i % 3 == 1 { &b } else { &a };
            producer.publish(&event(i), None).unwrap();
        }
        let first = q.get(2).unwrap().expect("a batch");
        assert_eq!(first.events().to_vec(), vec![event(0), event(1)]);
        assert_eq!(b.cancel(), 3, "b's events 4, 7 and 10 wait");
        let rest = q.get(64).unwrap().expect("a second batch");
        let kept: Vec<Vec<u8>> = [2, 3, 5, 6, 8, 9, 11].into_iter().map(event).collect();
        assert_eq!(rest.events().to_vec(), kept);
        assert_eq!(rest.events().data.sole_producer, Some(a.key.key));
        assert_eq!(rest.events().data.bytes, kept.iter().map(Vec::len).sum::<usize>());
        first.ack().unwrap();
        rest.ack().unwrap();
        q.flush(Some(Duration::from_secs(10))).unwrap();
        assert_eq!((a.counts().acked, b.counts().acked, b.counts().dropped), (8, 1, 3));
    }

    /// A consumer blocked on an empty queue gets a partial batch one flush timeout
    /// after its first event: right after it went to sleep (its first, timed sleep:
    /// nobody wakes it) and after a long idle spell (it sleeps without a timer then,
    /// and the first event must wake it).
    #[test]
    fn a_blocked_consumer_gets_a_partial_batch_one_flush_timeout_after_the_first_event() {
        let timeout = Duration::from_millis(40);
        let settings = QueueSettings { events: 64, flush_min_events: 10, flush_timeout: timeout, ..QueueSettings::default() };
        let q = MemQueue::new(settings, None).unwrap();
        let p = Producer::new(q.clone(), ProducerOptions::default()).unwrap();
        for idle in [Duration::ZERO, timeout * 3] {
            let (tx, rx) = std::sync::mpsc::channel();
            let consumer = {
                let q = q.clone();
                std::thread::spawn(move || {
                    let batch = q.get(10).unwrap().expect("a batch");
                    tx.send((Instant::now(), batch.len())).unwrap();
                    batch.ack().unwrap();
                })
            };
            // The scenario: how long the consumer has been waiting when the event comes.
            std::thread::sleep(idle);
            let published = Instant::now();
            p.publish(b"e", None).unwrap();
            let (served, len) = rx.recv_timeout(Duration::from_secs(20)).expect("the batch was served");
            assert_eq!(len, 1);
            assert!(served - published >= timeout - Duration::from_millis(5), "served before the flush timeout");
            consumer.join().unwrap();
        }
    }

    #[test]
    fn a_batch_with_an_event_that_can_never_fit_is_refused_whole() {
        let q = MemQueue::new(QueueSettings { bytes: 100, ..QueueSettings::default() }, None).unwrap();
        let p = Producer::new(q.clone(), ProducerOptions::default()).unwrap();
        let (small, big, bigger) = (vec![1u8; 10], vec![2u8; 101], vec![3u8; 150]);
        let err = p.publish_batch(&[&small, &big, &small, &bigger], None).unwrap_err();
        assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("event of 101 bytes")), "{err}");
        assert_eq!(p.counts().accepted, 0);
        assert_eq!(q.stats().waiting, 0);
    }

    #[test]
    fn empty_events_are_carried() {
        let q = MemQueue::new(QueueSettings::default(), None).unwrap();
        let p = Producer::new(q.clone(), ProducerOptions::default()).unwrap();
        p.publish(b"", None).unwrap();
        p.publish(b"x", None).unwrap();
        let batch = q.get(8).unwrap().expect("a batch");
        assert_eq!(batch.events().to_vec(), vec![b"".to_vec(), b"x".to_vec()]);
    }

    #[test]
    fn a_batch_of_only_empty_events_is_carried() {
        let q = MemQueue::new(QueueSettings::default(), None).unwrap();
        let p = Producer::new(q.clone(), ProducerOptions::default()).unwrap();
        p.publish(b"", None).unwrap();
        p.publish(b"", None).unwrap();
        let batch = q.get(8).unwrap().expect("a batch");
        assert_eq!(batch.events().to_vec(), vec![b"".to_vec(), b"".to_vec()]);
        p.publish(b"", None).unwrap();
        let batch = q.get(8).unwrap().expect("a second batch");
        assert_eq!(batch.events().to_vec(), vec![b"".to_vec()]);
    }

    #[test]
    fn publish_after_close_input_is_refused_and_register_too() {
        let q = MemQueue::new(QueueSettings::default(), None).unwrap();
        let p = Producer::new(q.clone(), ProducerOptions::default()).unwrap();
        q.close_input();
        assert_eq!(p.publish(b"x", None), Err(Error::Closed));
        assert_eq!(p.publish_batch(&[b"x"], None), Err(Error::Closed));
        assert!(matches!(Producer::new(q.clone(), ProducerOptions::default()), Err(Error::Closed)));
    }

    #[test]
    fn a_wake_returns_a_blocked_get_without_work() {
        let q = MemQueue::new(QueueSettings::default(), None).unwrap();
        let epoch = q.epoch();
        q.wake_consumers();
        assert!(q.get_since(8, epoch).unwrap().is_none());
    }
}
