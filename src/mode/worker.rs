//! The worker loop shared by every mode.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::failover::HostChooser;
use super::{guarded, validate, ClientSpec, Shared, Window, Work};
use crate::client::{AnyClient, Completion, Published, Status};
use crate::config::Mode;
use crate::error::{Error, Result};
use crate::log::Level;
use crate::queue::lock;
use crate::retry::RetryStrategy;
use crate::stats::{ClientCounters, WorkerState};

/// One client of a worker, with its connection state.
pub(crate) struct ClientSlot {
    spec: ClientSpec,
    pub(crate) counters: Arc<ClientCounters>,
    connected: bool,
    window: Arc<Window>,
}

impl ClientSlot {
    pub(crate) fn new(spec: ClientSpec, counters: Arc<ClientCounters>) -> ClientSlot {
        ClientSlot { spec, counters, connected: false, window: Arc::new(Window::default()) }
    }
}

/// Requests to a failover worker, which owns its clients.
pub(crate) enum Control {
    Add(ClientSlot),
    Remove(u64, Sender<Result<()>>),
}

pub(crate) struct Worker {
    shared: Arc<Shared>,
    clients: Vec<ClientSlot>,
    active: usize,
    chooser: HostChooser,
    stop: Arc<AtomicBool>,
    control: Option<Arc<std::sync::Mutex<Vec<Control>>>>,
    connect_backoff: Box<dyn RetryStrategy>,
    publish_backoff: Box<dyn RetryStrategy>,
    failures_in_a_row: u32,
    /// Work taken before connecting, when no worker of the output was connected.
    held: Option<Work>,
}

impl Worker {
    pub(crate) fn new(
        shared: Arc<Shared>,
        clients: Vec<ClientSlot>,
        stop: Arc<AtomicBool>,
        control: Option<Arc<std::sync::Mutex<Vec<Control>>>>,
    ) -> Worker {
        let mut chooser = HostChooser::new(shared.config.failover_policy);
        let active = chooser.first(clients.len());
        Worker {
            connect_backoff: (shared.strategy)(),
            publish_backoff: (shared.strategy)(),
            shared,
            clients,
            active,
            chooser,
            stop,
            control,
            failures_in_a_row: 0,
            held: None,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire) || self.shared.shutdown.is_fired()
    }

    fn slot(&mut self) -> &mut ClientSlot {
        &mut self.clients[self.active]
    }

    fn mark_states(&self) {
        for (i, c) in self.clients.iter().enumerate() {
            if i != self.active && c.counters.state() != WorkerState::Stopped {
                c.counters.set_state(WorkerState::Standby);
            }
        }
    }

    pub(crate) fn run(mut self) {
        self.mark_states();
        loop {
            match catch_unwind(AssertUnwindSafe(|| self.step())) {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => {
                    let msg = "a conveyor worker hit an internal error (panic); it carries on";
                    self.shared.logger.log(Level::Error, msg);
                    if let Some(c) = self.clients.get(self.active) {
                        c.counters.error(msg.into());
                    }
                }
            }
        }
        if let Some(w) = self.held.take() {
            self.shared.push_retry(w);
        }
        for i in 0..self.clients.len() {
            self.retire(i);
        }
    }

    /// One turn of the worker loop; false once the worker should stop.
    fn step(&mut self) -> bool {
        self.apply_control();
        if self.stopping() {
            return false;
        }
        if !self.clients[self.active].connected && !self.connect() {
            return true;
        }
        let is_async = matches!(self.clients[self.active].spec.client, AnyClient::Async(_));
        if is_async && !self.wait_window() {
            return true;
        }
        let work = match self.held.take() {
            Some(w) => w,
            None => match self.next_work() {
                Some(w) => w,
                None => return true,
            },
        };
        if is_async {
            self.publish_async(work);
        } else {
            self.publish_sync(work);
        }
        true
    }

    /// The next batch: the retry lane first, then the queue. `None` when woken
    /// without work (stop, control request) or closed.
    fn next_work(&self) -> Option<Work> {
        if self.stopping() {
            return None;
        }
        let epoch = self.shared.queue.epoch();
        // A control request is posted before the epoch moves: one posted after
        // `apply_control` but before `epoch` was read would not end the wait below.
        if self.control.as_ref().is_some_and(|c| !lock(c).is_empty()) {
            return None;
        }
        if let Some(w) = self.shared.pop_retry() {
            return Some(w);
        }
        match self.shared.queue.get_since(self.shared.config.effective_batch_size(), epoch) {
            Ok(Some(batch)) => Some(self.shared.new_work(batch)),
            Ok(None) | Err(_) => None,
        }
    }

    fn connect(&mut self) -> bool {
        let shared = self.shared.clone();
        let counters = self.clients[self.active].counters.clone();
        counters.set_state(WorkerState::Connecting);
        if shared.mode != Mode::LoadBalance && self.held.is_none() {
            // The only worker: take work first so that failed connects count
            // against it (a batch is not stranded while every host is down).
            match self.next_work() {
                Some(w) => self.held = Some(w),
                None => return false,
            }
        }
        let timeout = shared.config.timeout;
        let logger = shared.logger.clone();
        let slot = self.slot();
        let result = guarded(&logger, "connect", Err("connect panicked".into()), || slot.spec.client.connect(timeout));
        match result {
            Ok(()) => {
                slot.connected = true;
                shared.set_connected(true);
                counters.add(&counters.connects, 1);
                counters.set_state(WorkerState::Active);
                self.connect_backoff.success();
                true
            }
            Err(e) => {
                counters.add(&counters.connect_failures, 1);
                let host = counters.host.clone().unwrap_or_else(|| format!("client {}", counters.id));
                let msg = format!("connect to {host} failed: {e}");
                logger.log(Level::Warn, &msg);
                counters.error(msg);
                if let Some(w) = self.held.take() {
                    if let Some(w) = shared.charge(w, false) {
                        shared.push_retry(w);
                    }
                }
                if shared.mode == Mode::LoadBalance {
                    shared.charge_starved();
                }
                self.after_failure(true);
                let wait = self.connect_backoff.failure();
                self.backoff(wait);
                false
            }
        }
    }

    fn backoff(&mut self, wait: Duration) {
        if wait.is_zero() {
            return;
        }
        let counters = self.clients.get(self.active).map(|c| c.counters.clone());
        if let Some(c) = &counters {
            c.set_state(WorkerState::Backoff);
        }
        self.shared.shutdown.sleep(wait);
        // A temporary failure backs off on a live connection: the worker resumes
        // publishing on it without reconnecting, so it is active again, not connecting.
        let connected = self.clients.get(self.active).is_some_and(|c| c.connected);
        if let Some(c) = &counters {
            if c.state() == WorkerState::Backoff {
                c.set_state(if connected { WorkerState::Active } else { WorkerState::Connecting });
            }
        }
    }

    fn disconnect(&mut self) {
        let logger = self.shared.logger.clone();
        let slot = self.slot();
        if slot.connected {
            slot.connected = false;
            guarded(&logger, "close", (), || slot.spec.client.close());
            self.shared.set_connected(false);
        }
    }

    /// After a failure: restart past `error_threshold`, and in failover move on
    /// when the connection is gone (`switch`).
    fn after_failure(&mut self, switch: bool) {
        self.failures_in_a_row += 1;
        let threshold = self.shared.config.error_threshold;
        if threshold > 0 && self.failures_in_a_row >= threshold {
            self.failures_in_a_row = 0;
            self.restart();
        }
        if switch && self.clients.len() > 1 {
            self.disconnect();
            let n = self.clients.len();
            self.active = self.chooser.next(self.active, n);
            self.mark_states();
        }
    }

    /// Closes the active client and rebuilds it with its factory, if it has one.
    fn restart(&mut self) {
        self.disconnect();
        let deadline = Instant::now() + self.shared.config.timeout;
        self.drain_window(self.active, deadline);
        let logger = self.shared.logger.clone();
        let slot = self.slot();
        slot.counters.add(&slot.counters.restarts, 1);
        let (Some(factory), Some(host)) = (slot.spec.factory.clone(), slot.spec.host.clone()) else {
            logger.log(Level::Info, &format!("restarting client {} (reconnect)", slot.counters.id));
            return;
        };
        let built = guarded(&logger, "factory", Err("factory panicked".into()), || factory.build(&host));
        match built {
            Ok(client) => {
                logger.log(Level::Info, &format!("restarted client {} for {host}", slot.counters.id));
                slot.spec.client = client;
            }
            Err(e) => logger.log(Level::Error, &format!("rebuilding the client for {host} failed: {e}")),
        }
    }

    fn publish_sync(&mut self, mut work: Work) {
        let shared = self.shared.clone();
        let logger = shared.logger.clone();
        let counters = self.clients[self.active].counters.clone();
        loop {
            let rest = work.rest.clone();
            let len = rest.len();
            let (owned, handed) = match shared.config.publish_timeout {
                Some(_) => (None, Some(shared.hand_out(work, None))),
                None => (Some(work), None),
            };
            let slot = self.slot();
            let AnyClient::Sync(client) = &mut slot.spec.client else { unreachable!("sync path for an async client") };
            let result = guarded(&logger, "publish", Published::broken(0), || client.publish(&rest));
            drop(rest);
            let result = validate(result, len, &counters, &logger);
            let taken = match handed {
                Some((id, f)) => shared.take_back(id, &f, false, false),
                None => owned,
            };
            let Some(w) = taken else {
                // Handed to another worker meanwhile: this result comes too late.
                shared.late_result(result.count);
                if result.status == Status::Broken {
                    self.disconnect();
                    self.after_failure(true);
                }
                return;
            };
            let published = result.count;
            // Counted before the ACKs go out, so stats read after a flush include them.
            counters.add(&counters.events, published as u64);
            let whole = published >= w.rest.len();
            if whole {
                counters.add(&counters.batches, 1);
            }
            let w = shared.settle_prefix(w, published);
            if whole {
                self.publish_backoff.success();
                self.failures_in_a_row = 0;
                return;
            }
            if result.status == Status::Ok && published > 0 {
                work = w;
                continue;
            }
            counters.add(&counters.retries, 1);
            let broken = result.status == Status::Broken;
            let reason = if broken { "connection broken" } else { "temporary failure" };
            counters.error(format!("publish of {} events failed after {published} ({reason})", w.rest.len()));
            let left = shared.charge(w, published > 0);
            if broken {
                if let Some(w) = left {
                    shared.push_retry(w);
                }
                self.disconnect();
                self.after_failure(true);
                let wait = self.publish_backoff.failure();
                self.backoff(wait);
                return;
            }
            self.after_failure(false);
            let wait = self.publish_backoff.failure();
            self.backoff(wait);
            let Some(w) = left else { return };
            if self.stopping() || !self.clients[self.active].connected {
                shared.push_retry(w);
                return;
            }
            work = w;
        }
    }

    fn publish_async(&mut self, work: Work) {
        let shared = self.shared.clone();
        let logger = shared.logger.clone();
        let index = self.active;
        let counters = self.clients[index].counters.clone();
        let window = self.clients[index].window.clone();
        let rest = work.rest.clone();
        let len = rest.len();
        lock(&window.state).in_flight += 1;
        let (id, f) = shared.hand_out(work, Some(window));
        let (s, fl, c) = (shared.clone(), f.clone(), counters.clone());
        let completion = Completion::new(move |result: Published| {
            let result = validate(result, len, &c, &s.logger);
            let progressed_ok = result.status == Status::Ok && result.count > 0;
            let failed = result.count < len && !progressed_ok;
            let broken = result.status == Status::Broken;
            let Some(w) = s.take_back(id, &fl, failed, broken) else {
                s.late_result(result.count);
                return;
            };
            if failed {
                c.error(format!("async publish of {len} events failed after {} ({:?})", result.count, result.status));
            }
            s.complete(w, result, &c);
        });
        let slot = &mut self.clients[index];
        let AnyClient::Async(client) = &mut slot.spec.client else { unreachable!("async path for a sync client") };
        let accepted =
            guarded(&logger, "publish_async", Err("publish_async panicked".into()), || client.publish_async(rest, completion));
        if let Err(e) = accepted {
            counters.error(format!("publish_async not accepted: {e}"));
            if let Some(w) = shared.take_back(id, &f, true, true) {
                counters.add(&counters.retries, 1);
                if let Some(w) = shared.charge(w, false) {
                    shared.push_retry(w);
                }
            }
        }
    }

    /// Waits for room in the active async client's window, acting first on what
    /// completions reported. Returns false when the worker should loop again.
    fn wait_window(&mut self) -> bool {
        let window = self.clients[self.active].window.clone();
        let pipelining = self.shared.config.pipelining;
        let mut st = lock(&window.state);
        loop {
            if self.stopping() {
                return false;
            }
            if st.succeeded {
                st.succeeded = false;
                self.publish_backoff.success();
                self.failures_in_a_row = 0;
            }
            if st.broken || st.failures > 0 {
                let broken = std::mem::take(&mut st.broken);
                st.failures = 0;
                drop(st);
                if broken {
                    self.disconnect();
                }
                self.after_failure(broken);
                let wait = self.publish_backoff.failure();
                self.backoff(wait);
                return false;
            }
            if st.in_flight < pipelining {
                return true;
            }
            st = window.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits until client `index` has nothing in flight, or `deadline`; then takes
    /// back whatever it still holds and re-queues it.
    fn drain_window(&mut self, index: usize, deadline: Instant) {
        let window = self.clients[index].window.clone();
        let mut st = lock(&window.state);
        while st.in_flight > 0 && !self.shared.shutdown.is_fired() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = window.cv.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        drop(st);
        self.shared.reclaim(&window);
    }

    fn apply_control(&mut self) {
        let Some(control) = self.control.clone() else { return };
        let requests: Vec<Control> = lock(&control).drain(..).collect();
        for request in requests {
            match request {
                Control::Add(slot) => {
                    self.clients.push(slot);
                    self.mark_states();
                }
                Control::Remove(id, reply) => {
                    let result = match self.clients.iter().position(|c| c.counters.id == id) {
                        None => Err(Error::InvalidArgument(format!("no client with id {id}"))),
                        Some(_) if self.clients.len() == 1 => {
                            Err(Error::InvalidArgument("cannot remove the last client of a pipeline".into()))
                        }
                        Some(i) => {
                            self.retire(i);
                            self.clients.remove(i);
                            if self.active > i {
                                self.active -= 1;
                            } else if self.active == i {
                                self.active = i % self.clients.len();
                            }
                            self.mark_states();
                            Ok(())
                        }
                    };
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Closes client `index` for good (after its in-flight batches came back).
    fn retire(&mut self, index: usize) {
        let deadline = Instant::now() + self.shared.config.timeout;
        self.drain_window(index, deadline);
        let logger = self.shared.logger.clone();
        let slot = &mut self.clients[index];
        if slot.connected {
            slot.connected = false;
            self.shared.set_connected(false);
        }
        guarded(&logger, "close", (), || slot.spec.client.close());
        slot.counters.set_state(WorkerState::Stopped);
    }
}
