//! In-order settlement: outcomes are recorded per event as batches settle, released
//! strictly in the order the batches were taken, and reported to producers by one
//! dispatcher thread (coalesced counts for ACKs, payloads for drops).
//!
//! Queue capacity is returned as soon as a run of batches is released, before the
//! callbacks run, so a callback that publishes (even blocking) never waits on itself.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::event::{Events, EventsData, Selection};
use crate::log::{Level, Logger};

/// Called with the number of further events of a producer that were acknowledged,
/// in the order they were published.
pub type AckCallback = Box<dyn Fn(u64) + Send + Sync>;
/// Called with the payloads of a producer's events that conveyor gave up on.
pub type DropCallback = Box<dyn Fn(&[&[u8]]) + Send + Sync>;
/// Called with the total number of events acknowledged in one round, all producers.
pub type AckListener = Box<dyn Fn(u64) + Send + Sync>;

/// How a producer wants to hear about its events.
#[derive(Default)]
pub struct ProducerOptions {
    /// ACK counts, in publish order, coalesced per round.
    pub on_ack: Option<AckCallback>,
    /// Payloads of dropped events (a dead-letter hook).
    pub on_drop: Option<DropCallback>,
    /// Retry this producer's events until delivered or the pipeline closes.
    pub guaranteed: bool,
    /// On cancel, remove this producer's events that no consumer has taken yet.
    pub drop_on_cancel: bool,
}

impl std::fmt::Debug for ProducerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerOptions")
            .field("on_ack", &self.on_ack.is_some())
            .field("on_drop", &self.on_drop.is_some())
            .field("guaranteed", &self.guaranteed)
            .field("drop_on_cancel", &self.drop_on_cancel)
            .finish()
    }
}

/// Per-producer state shared by the queue and the dispatcher.
pub(crate) struct ProducerState {
    pub(crate) options: ProducerOptions,
    pub(crate) cancelled: AtomicBool,
    /// The handle was dropped; the slot is freed once nothing is in flight.
    detached: AtomicBool,
    pub(crate) accepted: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

impl ProducerState {
    fn settled(&self) -> u64 {
        self.acked.load(Ordering::Acquire) + self.dropped.load(Ordering::Acquire)
    }

    pub(crate) fn counts(&self) -> ProducerCounts {
        let acked = self.acked.load(Ordering::Acquire);
        let dropped = self.dropped.load(Ordering::Acquire);
        let accepted = self.accepted.load(Ordering::Acquire).max(acked + dropped);
        ProducerCounts { accepted, acked, dropped, in_flight: accepted - acked - dropped }
    }
}

/// Accounting of one producer (DESIGN §1 rule 5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProducerCounts {
    /// Events a publish call accepted.
    pub accepted: u64,
    /// Events reported acknowledged.
    pub acked: u64,
    /// Events reported dropped.
    pub dropped: u64,
    /// `accepted - acked - dropped`.
    pub in_flight: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Acked,
    Dropped,
}

struct Entry {
    /// Set by `fill` once the consumer built the batch; always set by the time any of
    /// its events can be settled.
    data: Option<Arc<EventsData>>,
    outcomes: Vec<Outcome>,
    pending: usize,
    /// Some event was settled as dropped (otherwise every settled one is acked).
    any_dropped: bool,
}

impl Entry {
    fn data(&self) -> &Arc<EventsData> {
        self.data.as_ref().expect("a batch is filled before any of its events is settled")
    }
}

/// Outcome vectors kept for reuse: enough for the batches a queue has open at once.
const SPARE_OUTCOMES: usize = 16;

#[derive(Default)]
struct Order {
    /// Id of `entries[0]`.
    base: u64,
    entries: VecDeque<Entry>,
    /// Outcome vectors of released entries, reused by `open`: no allocation per batch.
    spare: Vec<Vec<Outcome>>,
}

enum Report {
    Acked(u64),
    Dropped(Events),
    DroppedOwned(Vec<Vec<u8>>),
}

/// Reports released and not yet delivered, merged as they arrive so that a producer
/// whose ACKs came in several releases while the dispatcher was busy gets one callback.
#[derive(Default)]
struct Pending {
    /// What each producer learns, in order.
    items: Vec<(u32, Report)>,
    /// Index in `items` of each producer's last report.
    last_of: HashMap<u32, usize>,
    acked: u64,
    dropped: u64,
    /// No more reports are accepted; the dispatcher stops once it delivered the rest.
    closed: bool,
    /// The dispatcher waits for a first report and nobody has woken it yet.
    parked: bool,
    /// Someone waits for outcomes to be reported: deliver without coalescing.
    hurry: bool,
}

impl Pending {
    fn acked(&mut self, producer: u32, n: u64) {
        self.acked += n;
        if let Some(Report::Acked(count)) = self.last_of.get(&producer).map(|&k| &mut self.items[k].1) {
            *count += n;
            return;
        }
        self.last_of.insert(producer, self.items.len());
        self.items.push((producer, Report::Acked(n)));
    }

    fn dropped(&mut self, producer: u32, n: u64, report: Report) {
        self.dropped += n;
        self.last_of.insert(producer, self.items.len());
        self.items.push((producer, report));
    }
}

/// How long the dispatcher lets reports gather after a delivery before the next one:
/// under load, one wake-up and one callback per producer for many batches; after a
/// quiet spell, the first report is delivered at once, and a flush hurries it. Its
/// wake-ups land on the CPU the producer and the worker leave idle, and each one
/// keeps that CPU from pulling either of them over when they end up sharing the
/// other (h6-go-batch median 80 → 90 M events/s with 1 ms instead of 100 µs).
const COALESCE: Duration = Duration::from_millis(1);

/// The dispatcher's inbox: it parks on `ready` without spinning, and is woken only
/// when reports arrive while it is parked (or someone hurries it).
#[derive(Default)]
struct Mailbox {
    pending: Mutex<Pending>,
    ready: Condvar,
}

impl Mailbox {
    /// Adds reports and wakes the dispatcher if it is parked. Once closed, `add` still
    /// runs but what it adds is discarded: the dispatcher reports nothing new.
    fn post(&self, add: impl FnOnce(&mut Pending)) {
        let mut pending = lock(&self.pending);
        if pending.closed {
            add(&mut Pending::default());
            return;
        }
        add(&mut pending);
        if pending.parked && !pending.items.is_empty() {
            pending.parked = false;
            self.ready.notify_one();
        }
    }

    fn close(&self) {
        lock(&self.pending).closed = true;
        self.ready.notify_one();
    }

    /// Ends the current coalescing wait: a flush is waiting.
    fn hurry(&self) {
        lock(&self.pending).hurry = true;
        self.ready.notify_one();
    }

    /// Waits for reports and moves them into `items`; returns the round's (acked,
    /// dropped) totals, or `None` once closed and empty.
    fn next_round(&self, items: &mut Vec<(u32, Report)>) -> Option<(u64, u64)> {
        let mut pending = lock(&self.pending);
        let mut deliver_at = Instant::now() + COALESCE;
        loop {
            let ready = pending.closed || pending.hurry || Instant::now() >= deliver_at;
            if ready && !pending.items.is_empty() {
                break;
            }
            if pending.closed {
                return None;
            }
            if ready {
                pending.hurry = false;
                pending.parked = true;
                pending = self.ready.wait(pending).unwrap_or_else(|e| e.into_inner());
                deliver_at = Instant::now();
            } else {
                let wait = deliver_at.saturating_duration_since(Instant::now());
                pending = self.ready.wait_timeout(pending, wait).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
        pending.parked = false;
        pending.hurry = false;
        std::mem::swap(&mut pending.items, items);
        pending.last_of.clear();
        Some((std::mem::take(&mut pending.acked), std::mem::take(&mut pending.dropped)))
    }
}

/// Events whose outcome has been reported, and whether anyone waits for that count.
#[derive(Default)]
struct Reported {
    events: u64,
    waiters: usize,
}

/// Returns capacity to the queue: (events, bytes).
pub(crate) type Release = Box<dyn Fn(usize, usize) + Send + Sync>;

/// The settlement bookkeeping of one queue. See the module documentation.
pub(crate) struct AckTracker {
    order: Mutex<Order>,
    producers: RwLock<Vec<Option<Arc<ProducerState>>>>,
    mailbox: Arc<Mailbox>,
    release: Release,
    accepted: AtomicU64,
    acked: AtomicU64,
    dropped: AtomicU64,
    /// Events whose outcome has been reported (callbacks returned).
    reported: Mutex<Reported>,
    reported_cv: Condvar,
    dispatcher: Mutex<Option<thread::JoinHandle<()>>>,
    dispatcher_id: Mutex<Option<ThreadId>>,
    logger: Logger,
}

impl AckTracker {
    pub(crate) fn new(release: Release, listener: Option<AckListener>, logger: Logger) -> Arc<AckTracker> {
        let mailbox = Arc::new(Mailbox::default());
        let tracker = Arc::new(AckTracker {
            order: Mutex::new(Order::default()),
            producers: RwLock::new(Vec::new()),
            mailbox: mailbox.clone(),
            release,
            accepted: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reported: Mutex::new(Reported::default()),
            reported_cv: Condvar::new(),
            dispatcher: Mutex::new(None),
            dispatcher_id: Mutex::new(None),
            logger,
        });
        let weak = Arc::downgrade(&tracker);
        let handle = thread::Builder::new()
            .name("conveyor-ack".into())
            .spawn(move || dispatch(weak, &mailbox, listener))
            .expect("spawn conveyor-ack thread");
        *lock(&tracker.dispatcher_id) = Some(handle.thread().id());
        *lock(&tracker.dispatcher) = Some(handle);
        tracker
    }

    pub(crate) fn register(&self, options: ProducerOptions) -> (u32, Arc<ProducerState>) {
        let state = Arc::new(ProducerState {
            options,
            cancelled: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let mut slab = self.producers.write().unwrap_or_else(|e| e.into_inner());
        let key = match slab.iter().position(Option::is_none) {
            Some(key) => {
                slab[key] = Some(state.clone());
                key
            }
            None => {
                slab.push(Some(state.clone()));
                slab.len() - 1
            }
        };
        (key as u32, state)
    }

    pub(crate) fn producer(&self, key: u32) -> Option<Arc<ProducerState>> {
        self.producers.read().unwrap_or_else(|e| e.into_inner()).get(key as usize).cloned().flatten()
    }

    /// The handle of `key` is gone: free its slot now, or once its last event is reported.
    pub(crate) fn detach(&self, key: u32, p: &ProducerState) {
        p.detached.store(true, Ordering::Release);
        self.reap(key, p);
    }

    fn reap(&self, key: u32, p: &ProducerState) {
        if p.detached.load(Ordering::Acquire) && p.settled() == p.accepted.load(Ordering::Acquire) {
            let mut slab = self.producers.write().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = slab.get_mut(key as usize) {
                if slot.as_ref().is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), p)) {
                    *slot = None;
                }
            }
        }
    }

    /// Counts `n` events of `producer` as accepted. Called under the queue lock, so
    /// an event is counted before any consumer can take it.
    pub(crate) fn accept(&self, producer: &ProducerState, n: u64) {
        producer.accepted.store(producer.accepted.load(Ordering::Relaxed) + n, Ordering::Release);
        self.accepted.store(self.accepted.load(Ordering::Relaxed) + n, Ordering::Release);
    }

    /// Records a batch of `n` events taken by a consumer and returns its id. Must be
    /// called in take order (the queue holds its lock while calling); the consumer
    /// then builds the batch without that lock and hands it to `fill`.
    pub(crate) fn open(&self, n: usize) -> u64 {
        let mut order = lock(&self.order);
        let mut outcomes = order.spare.pop().unwrap_or_default();
        outcomes.resize(n, Outcome::Pending);
        let id = order.base + order.entries.len() as u64;
        order.entries.push_back(Entry { data: None, outcomes, pending: n, any_dropped: false });
        id
    }

    /// Sets the events of batch `id`, opened and not settled yet.
    pub(crate) fn fill(&self, id: u64, data: Arc<EventsData>) {
        let mut order = lock(&self.order);
        let pos = (id - order.base) as usize;
        debug_assert_eq!(order.entries[pos].outcomes.len(), data.refs.len());
        order.entries[pos].data = Some(data);
    }

    /// Settles the events of `events` (a view of batch `id`) as acked or dropped.
    /// Settling an event twice is an error and changes nothing.
    pub(crate) fn settle(&self, id: u64, events: &Events, acked: bool) -> Result<()> {
        let outcome = if acked { Outcome::Acked } else { Outcome::Dropped };
        let mut order = lock(&self.order);
        let Some(pos) = id.checked_sub(order.base).filter(|&p| p < order.entries.len() as u64) else {
            return Err(Error::AlreadySettled);
        };
        let entry = &mut order.entries[pos as usize];
        if !entry.data.as_ref().is_some_and(|data| events.same_batch(data)) {
            return Err(Error::InvalidArgument("events do not belong to this batch".into()));
        }
        match &events.sel {
            Selection::Range(r) => {
                let outcomes = &mut entry.outcomes[r.start as usize..r.end as usize];
                if outcomes.iter().any(|&o| o != Outcome::Pending) {
                    return Err(Error::AlreadySettled);
                }
                outcomes.fill(outcome);
            }
            Selection::List(_) => {
                let mut clash = false;
                events.sel.for_each(|i| clash |= entry.outcomes[i] != Outcome::Pending);
                if clash {
                    return Err(Error::AlreadySettled);
                }
                events.sel.for_each(|i| entry.outcomes[i] = outcome);
            }
        }
        entry.pending -= events.len();
        entry.any_dropped |= !acked && !events.is_empty();
        if pos == 0 && entry.pending == 0 {
            self.release_head(order);
        }
        Ok(())
    }

    /// Drops whatever of batch `id` is still unsettled (a batch dropped without
    /// settling loses nothing silently). Returns how many events that dropped.
    pub(crate) fn finish(&self, id: u64) -> usize {
        let mut order = lock(&self.order);
        let Some(pos) = id.checked_sub(order.base).filter(|&p| p < order.entries.len() as u64) else {
            return 0;
        };
        let entry = &mut order.entries[pos as usize];
        let n = entry.pending;
        if n == 0 {
            return 0;
        }
        for o in entry.outcomes.iter_mut().filter(|o| **o == Outcome::Pending) {
            *o = Outcome::Dropped;
        }
        entry.pending = 0;
        entry.any_dropped = true;
        if pos == 0 {
            self.release_head(order);
        }
        n
    }

    /// Pops every settled batch at the head, posts their reports to the dispatcher,
    /// and returns the capacity they held.
    fn release_head(&self, mut guard: MutexGuard<'_, Order>) {
        let (mut events, mut bytes) = (0usize, 0usize);
        let order = &mut *guard;
        // Posted under the order lock, so reports reach the dispatcher in release order.
        self.mailbox.post(|pending| {
            while order.entries.front().is_some_and(|e| e.pending == 0) {
                let mut entry = order.entries.pop_front().expect("front exists");
                order.base += 1;
                events += entry.outcomes.len();
                bytes += entry.data().bytes;
                collect_reports(&entry, pending);
                if order.spare.len() < SPARE_OUTCOMES {
                    entry.outcomes.clear();
                    order.spare.push(std::mem::take(&mut entry.outcomes));
                }
            }
        });
        // The queue takes its own lock, then this one: never the other way round.
        drop(guard);
        if events > 0 {
            (self.release)(events, bytes);
        }
    }

    /// Reports events removed from the queue before any consumer took them.
    pub(crate) fn report_removed(&self, producer: u32, payloads: Vec<Vec<u8>>) {
        let n = payloads.len() as u64;
        if n == 0 {
            return;
        }
        self.mailbox.post(|pending| pending.dropped(producer, n, Report::DroppedOwned(payloads)));
    }

    /// Totals over every producer.
    pub(crate) fn totals(&self) -> ProducerCounts {
        let acked = self.acked.load(Ordering::Acquire);
        let dropped = self.dropped.load(Ordering::Acquire);
        let accepted = self.accepted.load(Ordering::Acquire).max(acked + dropped);
        ProducerCounts { accepted, acked, dropped, in_flight: accepted - acked - dropped }
    }

    pub(crate) fn is_guaranteed(&self, key: u32) -> bool {
        self.producer(key).is_some_and(|p| p.options.guaranteed)
    }

    /// Waits until every accepted event's outcome has been reported, or `deadline`.
    pub(crate) fn wait_reported(&self, deadline: Option<Instant>) -> Result<()> {
        if self.on_dispatcher() {
            return Err(Error::InvalidArgument(
                "flush or close cannot wait from an ACK or drop callback".into(),
            ));
        }
        let mut reported = lock(&self.reported);
        loop {
            if reported.events >= self.accepted.load(Ordering::Acquire) {
                return Ok(());
            }
            self.mailbox.hurry();
            reported.waiters += 1;
            reported = match deadline {
                None => self.reported_cv.wait(reported).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        reported.waiters -= 1;
                        return Err(Error::Timeout);
                    }
                    self.reported_cv.wait_timeout(reported, d - now).unwrap_or_else(|e| e.into_inner()).0
                }
            };
            reported.waiters -= 1;
        }
    }

    /// True on the dispatcher thread (inside an ACK or drop callback).
    pub(crate) fn on_dispatcher(&self) -> bool {
        *lock(&self.dispatcher_id) == Some(thread::current().id())
    }

    /// Stops the dispatcher after it has reported everything already released.
    pub(crate) fn shutdown(&self) {
        self.mailbox.close();
        if self.on_dispatcher() {
            return;
        }
        if let Some(h) = lock(&self.dispatcher).take() {
            let _ = h.join();
        }
    }

    /// Unsettled batches (taken by consumers, not yet released).
    pub(crate) fn open_batches(&self) -> usize {
        lock(&self.order).entries.len()
    }
}

impl Drop for AckTracker {
    fn drop(&mut self) {
        self.mailbox.close();
    }
}

/// Adds the reports of one released batch, coalescing each producer's consecutive
/// ACKs into one count.
fn collect_reports(entry: &Entry, pending: &mut Pending) {
    let n = entry.outcomes.len();
    let data = entry.data();
    if let (false, Some(producer)) = (entry.any_dropped, data.sole_producer) {
        pending.acked(producer, n as u64);
        return;
    }
    let mut run_start = 0;
    for i in 1..=n {
        let ends = i == n
            || entry.outcomes[i] != entry.outcomes[run_start]
            || data.refs[i].producer != data.refs[run_start].producer;
        if !ends {
            continue;
        }
        let producer = data.refs[run_start].producer;
        let count = (i - run_start) as u64;
        if entry.outcomes[run_start] == Outcome::Acked {
            pending.acked(producer, count);
        } else {
            let sel = Selection::Range(run_start as u32..i as u32);
            pending.dropped(producer, count, Report::Dropped(Events::new(data.clone(), sel)));
        }
        run_start = i;
    }
}

/// The dispatcher thread: delivers the posted reports, in order, until the mailbox
/// is closed and empty or the tracker is gone.
fn dispatch(tracker: Weak<AckTracker>, mailbox: &Mailbox, listener: Option<AckListener>) {
    let mut items = Vec::new();
    let mut keys = Vec::new();
    while let Some((acked, dropped)) = mailbox.next_round(&mut items) {
        let Some(t) = tracker.upgrade() else { return };
        let mut reported_now = 0u64;
        for (key, report) in items.drain(..) {
            let n = match &report {
                Report::Acked(n) => *n,
                Report::Dropped(ev) => ev.len() as u64,
                Report::DroppedOwned(v) => v.len() as u64,
            };
            if let Some(p) = t.producer(key) {
                deliver(&t.logger, &p, &report);
                match report {
                    Report::Acked(_) => p.acked.fetch_add(n, Ordering::AcqRel),
                    _ => p.dropped.fetch_add(n, Ordering::AcqRel),
                };
            }
            reported_now += n;
            keys.push(key);
        }
        if acked > 0 {
            if let Some(l) = &listener {
                if catch_unwind(AssertUnwindSafe(|| l(acked))).is_err() {
                    t.logger.log(Level::Error, "the pipeline ACK listener panicked");
                }
            }
        }
        t.acked.fetch_add(acked, Ordering::AcqRel);
        t.dropped.fetch_add(dropped, Ordering::AcqRel);
        {
            let mut reported = lock(&t.reported);
            reported.events += reported_now;
            if reported.waiters > 0 {
                t.reported_cv.notify_all();
            }
        }
        keys.sort_unstable();
        keys.dedup();
        for key in keys.drain(..) {
            if let Some(p) = t.producer(key) {
                t.reap(key, &p);
            }
        }
    }
}

fn deliver(logger: &Logger, p: &ProducerState, report: &Report) {
    let result = catch_unwind(AssertUnwindSafe(|| match report {
        Report::Acked(n) => {
            if let Some(cb) = &p.options.on_ack {
                cb(*n)
            }
        }
        Report::Dropped(ev) => {
            if let Some(cb) = &p.options.on_drop {
                let views: Vec<&[u8]> = ev.iter().collect();
                cb(&views)
            }
        }
        Report::DroppedOwned(v) => {
            if let Some(cb) = &p.options.on_drop {
                let views: Vec<&[u8]> = v.iter().map(Vec::as_slice).collect();
                cb(&views)
            }
        }
    }));
    if result.is_err() {
        logger.log(Level::Error, "a producer's ACK or drop callback panicked; the outcome is still counted");
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
