//! Output modes: workers that pull batches from the queue and deliver them through
//! protocol clients.
//!
//! Every mode runs the same worker loop. `single` and `loadbalance` give each
//! client its own worker; `failover` gives one worker all clients and lets it
//! switch between them. Workers pull work only while connected (so faster
//! endpoints take more), read the retry lane before new work, and never block on
//! re-queueing: the retry lane is unbounded, yet bounded in practice by the queue,
//! since every event in it still holds its queue slot.

pub(crate) mod failover;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::client::{AnyClient, ClientFactory, Published, Status};
use crate::config::{Config, Mode};
use crate::error::{Error, Result};
use crate::event::Events;
use crate::log::{Level, Logger};
use crate::queue::{lock, Batch, Queue};
use crate::retry::{Shutdown, StrategyFactory};
use crate::stats::{ClientCounters, ClientStats, OutputCounters};

use worker::{Control, Worker};

/// A client with what is needed to rebuild it.
pub(crate) struct ClientSpec {
    pub(crate) client: AnyClient,
    pub(crate) host: Option<String>,
    pub(crate) factory: Option<Arc<dyn ClientFactory>>,
}

/// Events of one batch still to deliver, and the attempts they have left.
pub(crate) struct Work {
    batch: Arc<Batch>,
    rest: Events,
    /// `None` retries forever.
    attempts_left: Option<u32>,
}

/// The in-flight window of one asynchronous client.
#[derive(Default)]
pub(crate) struct Window {
    state: Mutex<WindowState>,
    cv: Condvar,
}

#[derive(Default)]
struct WindowState {
    in_flight: usize,
    /// Failed completions the worker has not backed off for yet.
    failures: u32,
    /// A completion reported the connection broken.
    broken: bool,
    /// A completion succeeded since the worker last looked.
    succeeded: bool,
}

impl Window {
    fn release(&self, failed: bool, broken: bool) {
        let mut st = lock(&self.state);
        st.in_flight -= 1;
        st.failures += u32::from(failed);
        st.broken |= broken;
        st.succeeded |= !failed;
        self.cv.notify_all();
    }

    fn wake(&self) {
        let _st = lock(&self.state);
        self.cv.notify_all();
    }
}

/// A batch handed to a client: whoever takes the work back first (the client's
/// result, the publish-timeout watchdog, or close) settles it; the others find nothing.
pub(crate) struct InFlight {
    work: Mutex<Option<Work>>,
    started: Instant,
    window: Option<Arc<Window>>,
}

/// State shared by the workers of one output.
pub(crate) struct Shared {
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) config: Config,
    pub(crate) shutdown: Arc<Shutdown>,
    pub(crate) logger: Logger,
    pub(crate) counters: OutputCounters,
    pub(crate) strategy: StrategyFactory,
    pub(crate) mode: Mode,
    retry_lane: Mutex<VecDeque<Work>>,
    connected: AtomicUsize,
    /// Since when no load-balancing worker has been connected (or last charged).
    starved_since: Mutex<Instant>,
    in_flight: Mutex<HashMap<u64, Arc<InFlight>>>,
    next_in_flight: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        queue: Arc<dyn Queue>,
        mode: Mode,
        config: Config,
        shutdown: Arc<Shutdown>,
        logger: Logger,
        strategy: StrategyFactory,
    ) -> Shared {
        Shared {
            queue,
            config,
            shutdown,
            logger,
            counters: OutputCounters::default(),
            strategy,
            mode,
            retry_lane: Mutex::new(VecDeque::new()),
            connected: AtomicUsize::new(0),
            starved_since: Mutex::new(Instant::now()),
            in_flight: Mutex::new(HashMap::new()),
            next_in_flight: AtomicU64::new(0),
        }
    }

    fn attempts(&self) -> Option<u32> {
        self.config.max_retries.map(|r| r.saturating_add(1))
    }

    pub(crate) fn new_work(&self, batch: Batch) -> Work {
        let rest = batch.events().clone();
        Work { batch: Arc::new(batch), rest, attempts_left: self.attempts() }
    }

    /// Puts work where any worker finds it before new batches.
    pub(crate) fn push_retry(&self, work: Work) {
        lock(&self.retry_lane).push_back(work);
        self.queue.wake_consumers();
    }

    fn pop_retry(&self) -> Option<Work> {
        lock(&self.retry_lane).pop_front()
    }

    pub(crate) fn connected(&self) -> usize {
        self.connected.load(Ordering::Acquire)
    }

    pub(crate) fn set_connected(&self, up: bool) {
        if up {
            self.connected.fetch_add(1, Ordering::AcqRel);
        } else if self.connected.fetch_sub(1, Ordering::AcqRel) == 1 {
            *lock(&self.starved_since) = Instant::now();
        }
    }

    /// While no load-balancing worker is connected, every `timeout` counts as one
    /// failed attempt for each waiting batch (libbeat's "no worker available"), so
    /// non-guaranteed events are not held forever when every host is down.
    pub(crate) fn charge_starved(&self) {
        {
            let mut since = lock(&self.starved_since);
            if self.connected() > 0 || since.elapsed() < self.config.timeout {
                return;
            }
            *since = Instant::now();
        }
        let mut waiting: Vec<Work> = lock(&self.retry_lane).drain(..).collect();
        while let Ok(Some(batch)) = self.queue.try_get(self.config.effective_batch_size()) {
            waiting.push(self.new_work(batch));
        }
        let survivors: Vec<Work> = waiting.into_iter().filter_map(|w| self.charge(w, false)).collect();
        if !survivors.is_empty() {
            lock(&self.retry_lane).extend(survivors);
            self.queue.wake_consumers();
        }
    }

    /// Settles the first `published` events of `work` as acked and returns the rest.
    pub(crate) fn settle_prefix(&self, mut work: Work, published: usize) -> Work {
        let (done, rest) = work.rest.split_at(published);
        if !done.is_empty() {
            if let Err(e) = work.batch.settle(&done, true) {
                self.logger.log(Level::Error, &format!("settling published events: {e}"));
            }
        }
        work.rest = rest;
        work
    }

    /// Counts one failed attempt of `work` (none if the call made progress, which
    /// resets the count). Past the limit, drops the non-guaranteed events and keeps
    /// the guaranteed ones retrying forever. Returns what is left to retry.
    pub(crate) fn charge(&self, mut work: Work, progressed: bool) -> Option<Work> {
        if progressed {
            work.attempts_left = self.attempts();
        }
        match work.attempts_left {
            None => {}
            Some(_) if progressed => {}
            Some(n) if n > 1 => work.attempts_left = Some(n - 1),
            Some(_) => {
                let queue = &self.queue;
                let dropped = work.rest.filter_producers(|p| !queue.is_guaranteed(p));
                if !dropped.is_empty() {
                    self.counters.dropped_batches.fetch_add(1, Ordering::Relaxed);
                    self.logger.log(
                        Level::Warn,
                        &format!("dropping {} events after {} attempts", dropped.len(), self.attempts().unwrap_or(0)),
                    );
                    if let Err(e) = work.batch.settle(&dropped, false) {
                        self.logger.log(Level::Error, &format!("settling dropped events: {e}"));
                    }
                }
                let kept = work.rest.filter_producers(|p| queue.is_guaranteed(p));
                if kept.is_empty() {
                    return None;
                }
                work.rest = kept;
                work.attempts_left = None;
            }
        }
        self.counters.retried_batches.fetch_add(1, Ordering::Relaxed);
        Some(work)
    }

    /// Registers work handed to a client, so a late result, the watchdog and close
    /// agree on who settles it.
    pub(crate) fn hand_out(&self, work: Work, window: Option<Arc<Window>>) -> (u64, Arc<InFlight>) {
        let id = self.next_in_flight.fetch_add(1, Ordering::Relaxed);
        let f = Arc::new(InFlight { work: Mutex::new(Some(work)), started: Instant::now(), window });
        lock(&self.in_flight).insert(id, f.clone());
        (id, f)
    }

    /// Takes handed-out work back; `None` if someone else already did.
    pub(crate) fn take_back(&self, id: u64, f: &InFlight, failed: bool, broken: bool) -> Option<Work> {
        let work = lock(&f.work).take();
        if work.is_some() {
            lock(&self.in_flight).remove(&id);
            if let Some(w) = &f.window {
                w.release(failed, broken);
            }
        }
        work
    }

    /// Applies a client's result to handed-out work: acks the published prefix and
    /// re-queues or drops the rest. Returns whether the whole batch is done.
    pub(crate) fn complete(&self, work: Work, result: Published, counters: &ClientCounters) -> bool {
        let published = result.count;
        // Counted before the ACKs go out, so stats read after a flush include them.
        counters.add(&counters.events, published as u64);
        let whole = published >= work.rest.len();
        if whole {
            counters.add(&counters.batches, 1);
        }
        let work = self.settle_prefix(work, published);
        if whole {
            return true;
        }
        if result.status == Status::Ok && published > 0 {
            self.push_retry(work);
            return false;
        }
        counters.add(&counters.retries, 1);
        if let Some(w) = self.charge(work, published > 0) {
            self.push_retry(w);
        }
        false
    }

    /// Steals work that stayed with one client longer than `publish_timeout`.
    fn hand_off_stuck(&self, timeout: Duration) {
        let now = Instant::now();
        let stuck: Vec<(u64, Arc<InFlight>)> = lock(&self.in_flight)
            .iter()
            .filter(|(_, f)| now.duration_since(f.started) >= timeout)
            .map(|(id, f)| (*id, f.clone()))
            .collect();
        for (id, f) in stuck {
            if let Some(work) = self.take_back(id, &f, false, false) {
                self.counters.handoffs.fetch_add(1, Ordering::Relaxed);
                self.logger.log(
                    Level::Warn,
                    &format!("batch of {} events exceeded publish_timeout; handing it to another worker", work.rest.len()),
                );
                self.push_retry(work);
            }
        }
    }

    /// Takes back everything handed out through `window` and re-queues it.
    fn reclaim(&self, window: &Arc<Window>) {
        let mine: Vec<(u64, Arc<InFlight>)> = lock(&self.in_flight)
            .iter()
            .filter(|(_, f)| f.window.as_ref().is_some_and(|w| Arc::ptr_eq(w, window)))
            .map(|(id, f)| (*id, f.clone()))
            .collect();
        for (id, f) in mine {
            if let Some(work) = self.take_back(id, &f, false, false) {
                self.push_retry(work);
            }
        }
    }

    /// Wakes every worker waiting on an async window (to see stop or shutdown).
    fn wake_windows(&self) {
        let windows: Vec<Arc<Window>> = lock(&self.in_flight).values().filter_map(|f| f.window.clone()).collect();
        for w in windows {
            w.wake();
        }
    }

    /// Drops everything still held: the retry lane and handed-out work.
    fn drop_all_held(&self) {
        let lane: Vec<Work> = lock(&self.retry_lane).drain(..).collect();
        drop(lane);
        let held: Vec<(u64, Arc<InFlight>)> = lock(&self.in_flight).drain().collect();
        for (_, f) in held {
            lock(&f.work).take();
        }
    }

    /// Records a result that arrived for work someone else already settled.
    pub(crate) fn late_result(&self, published: usize) {
        self.counters.duplicates.fetch_add(published as u64, Ordering::Relaxed);
    }
}

/// Checks a client's answer: a count beyond the batch is a failed publish.
pub(crate) fn validate(result: Published, len: usize, counters: &ClientCounters, logger: &Logger) -> Published {
    if result.count <= len {
        return result;
    }
    counters.add(&counters.invalid_results, 1);
    let msg = format!("client reported {} published of a batch of {len}; treating the publish as failed", result.count);
    logger.log(Level::Error, &msg);
    counters.error(msg);
    Published::broken(0)
}

/// Runs a client callback, turning a panic into `on_panic` (and a log line).
pub(crate) fn guarded<T>(logger: &Logger, what: &str, on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            logger.log(Level::Error, &format!("client {what} panicked; counted as a failure"));
            on_panic
        }
    }
}

thread_local! {
    static ON_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True on a conveyor worker thread (inside a client callback).
pub(crate) fn on_worker_thread() -> bool {
    ON_WORKER.with(|w| w.get())
}

struct WorkerHandle {
    client_ids: Vec<u64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The workers of one output and what they share.
pub(crate) struct Output {
    shared: Arc<Shared>,
    mode: Mode,
    workers: Mutex<Vec<WorkerHandle>>,
    counters: Mutex<Vec<Arc<ClientCounters>>>,
    next_client_id: AtomicU64,
    failover_control: Option<Arc<Mutex<Vec<Control>>>>,
    watchdog: Mutex<Option<JoinHandle<()>>>,
}

impl Output {
    pub(crate) fn start(
        shared: Shared,
        mode: Mode,
        clients: Vec<ClientSpec>,
    ) -> Result<Output> {
        let shared = Arc::new(shared);
        let failover_control = (mode == Mode::Failover).then(|| Arc::new(Mutex::new(Vec::new())));
        let output = Output {
            shared: shared.clone(),
            mode,
            workers: Mutex::new(Vec::new()),
            counters: Mutex::new(Vec::new()),
            next_client_id: AtomicU64::new(1),
            failover_control,
            watchdog: Mutex::new(None),
        };
        if mode == Mode::Failover {
            let slots: Vec<_> = clients.into_iter().map(|c| output.slot(c)).collect();
            output.spawn(slots)?;
        } else {
            for c in clients {
                let slot = output.slot(c);
                output.spawn(vec![slot])?;
            }
        }
        if let Some(timeout) = shared.config.publish_timeout {
            let s = shared.clone();
            let tick = (timeout / 4).clamp(Duration::from_millis(1), Duration::from_secs(1));
            let h = thread::Builder::new()
                .name("conveyor-watchdog".into())
                .spawn(move || {
                    while s.shutdown.sleep(tick) {
                        s.hand_off_stuck(timeout);
                    }
                })
                .map_err(|e| Error::Internal(format!("spawning watchdog: {e}")))?;
            *lock(&output.watchdog) = Some(h);
        }
        Ok(output)
    }

    fn slot(&self, spec: ClientSpec) -> worker::ClientSlot {
        let id = self.next_client_id.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::new(ClientCounters::new(id, spec.host.clone()));
        lock(&self.counters).push(counters.clone());
        worker::ClientSlot::new(spec, counters)
    }

    fn spawn(&self, slots: Vec<worker::ClientSlot>) -> Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let client_ids = slots.iter().map(|s| s.counters.id).collect();
        let w = Worker::new(self.shared.clone(), slots, stop.clone(), self.failover_control.clone());
        let thread = thread::Builder::new()
            .name("conveyor-worker".into())
            .spawn(move || {
                ON_WORKER.with(|f| f.set(true));
                w.run()
            })
            .map_err(|e| Error::Internal(format!("spawning worker: {e}")))?;
        lock(&self.workers).push(WorkerHandle { client_ids, stop, thread: Some(thread) });
        Ok(())
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Adds a client while running; returns its id.
    pub(crate) fn add_client(&self, spec: ClientSpec) -> Result<u64> {
        if self.shared.shutdown.is_fired() {
            return Err(Error::Closed);
        }
        if self.mode == Mode::Single {
            return Err(Error::InvalidArgument(
                "mode `single` has exactly one client; use `loadbalance` or `failover` to add clients".into(),
            ));
        }
        let slot = self.slot(spec);
        let id = slot.counters.id;
        match &self.failover_control {
            Some(control) => {
                lock(control).push(Control::Add(slot));
                self.shared.queue.wake_consumers();
            }
            None => self.spawn(vec![slot])?,
        }
        Ok(id)
    }

    /// Removes a client while running. Its work goes back to the retry lane first.
    pub(crate) fn remove_client(&self, id: u64) -> Result<()> {
        if on_worker_thread() {
            return Err(Error::InvalidArgument("remove_client cannot be called from a client callback".into()));
        }
        if self.shared.shutdown.is_fired() {
            return Err(Error::Closed);
        }
        let known = lock(&self.counters).iter().any(|c| c.id == id && c.state() != crate::stats::WorkerState::Stopped);
        if !known {
            return Err(Error::InvalidArgument(format!("no client with id {id}")));
        }
        if let Some(control) = &self.failover_control {
            let (tx, rx) = crossbeam_channel::bounded(1);
            lock(control).push(Control::Remove(id, tx));
            self.shared.queue.wake_consumers();
            return rx.recv().map_err(|_| Error::Closed)?;
        }
        let handle = {
            let mut workers = lock(&self.workers);
            let Some(pos) = workers.iter().position(|w| w.client_ids.contains(&id)) else {
                return Err(Error::InvalidArgument(format!("no client with id {id}")));
            };
            if workers.len() == 1 {
                return Err(Error::InvalidArgument("cannot remove the last client of a pipeline".into()));
            }
            workers.remove(pos)
        };
        handle.stop.store(true, Ordering::Release);
        self.shared.queue.wake_consumers();
        self.shared.wake_windows();
        if let Some(t) = handle.thread {
            let _ = t.join();
        }
        Ok(())
    }

    /// Stops every worker, then drops whatever is still held. Called after the
    /// shutdown latch fired and the queue was closed.
    pub(crate) fn stop(&self) {
        let workers: Vec<WorkerHandle> = lock(&self.workers).drain(..).collect();
        for w in &workers {
            w.stop.store(true, Ordering::Release);
        }
        self.shared.queue.wake_consumers();
        self.shared.wake_windows();
        for mut w in workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
        if let Some(h) = lock(&self.watchdog).take() {
            let _ = h.join();
        }
        self.shared.drop_all_held();
    }

    pub(crate) fn client_stats(&self) -> Vec<ClientStats> {
        lock(&self.counters).iter().map(|c| c.snapshot()).collect()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}
