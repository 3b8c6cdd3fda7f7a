//! Test support: scriptable mock clients, a delivery recorder and a producer ledger
//! that checks the delivery contract (DESIGN §1) event by event.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conveyor::{Client, Config, ConnectError, Events, ProducerOptions, Published};

/// Generous bound on any wait in a test; reaching it fails the test.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A config with fast backoff and small batches for tests.
pub fn fast_config() -> Config {
    Config {
        backoff_init: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        timeout: Duration::from_millis(200),
        flush_min_events: 0,
        flush_timeout: Duration::ZERO,
        bulk_max_size: 64,
        queue_events: 1024,
        ..Config::default()
    }
}

/// Everything the mock clients of one test saw.
#[derive(Default)]
pub struct Recorder {
    pub delivered: Mutex<HashMap<Vec<u8>, u32>>,
    pub by_client: Mutex<HashMap<String, u64>>,
    pub calls: Mutex<Vec<String>>,
    pub connects: AtomicU64,
    pub closes: AtomicU64,
    pub publishes: AtomicU64,
    pub active_now: AtomicUsize,
    pub max_active: AtomicUsize,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::default()
    }

    pub fn record(&self, client: &str, events: &Events, n: usize) {
        let mut d = self.delivered.lock().unwrap();
        for e in events.iter().take(n) {
            *d.entry(e.to_vec()).or_default() += 1;
        }
        *self.by_client.lock().unwrap().entry(client.to_string()).or_default() += n as u64;
    }

    pub fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    pub fn times(&self, payload: &[u8]) -> u32 {
        self.delivered.lock().unwrap().get(payload).copied().unwrap_or(0)
    }

    pub fn distinct(&self) -> usize {
        self.delivered.lock().unwrap().len()
    }

    pub fn client_events(&self, client: &str) -> u64 {
        self.by_client.lock().unwrap().get(client).copied().unwrap_or(0)
    }
}

/// What a mock's publish does on its `call`-th invocation (0-based).
pub type Plan = Box<dyn FnMut(usize, &Events) -> Published + Send>;

/// A synchronous client that follows a script.
pub struct Mock {
    pub name: String,
    rec: Arc<Recorder>,
    /// Connect attempts left to fail (`usize::MAX` = always fail).
    connect_failures: usize,
    plan: Plan,
    calls: usize,
    connected: bool,
    pub delay: Duration,
}

impl Mock {
    pub fn new(name: &str, rec: &Arc<Recorder>, plan: Plan) -> Mock {
        Mock { name: name.into(), rec: rec.clone(), connect_failures: 0, plan, calls: 0, connected: false, delay: Duration::ZERO }
    }

    /// A client that publishes everything.
    pub fn ok(name: &str, rec: &Arc<Recorder>) -> Mock {
        Mock::new(name, rec, Box::new(|_, ev| Published::all(ev.len())))
    }

    /// Fails the first `n` publishes with `fail`, then publishes everything.
    pub fn failing(name: &str, rec: &Arc<Recorder>, n: usize, fail: Published) -> Mock {
        Mock::new(name, rec, Box::new(move |call, ev| if call < n { fail } else { Published::all(ev.len()) }))
    }

    pub fn connect_failures(mut self, n: usize) -> Mock {
        self.connect_failures = n;
        self
    }

    pub fn delay(mut self, d: Duration) -> Mock {
        self.delay = d;
        self
    }
}

impl Client for Mock {
    fn connect(&mut self, _timeout: Duration) -> Result<(), ConnectError> {
        self.rec.log(format!("connect {}", self.name));
        if self.connect_failures > 0 {
            if self.connect_failures != usize::MAX {
                self.connect_failures -= 1;
            }
            return Err(ConnectError(format!("{} refuses", self.name)));
        }
        self.rec.connects.fetch_add(1, Ordering::SeqCst);
        self.connected = true;
        Ok(())
    }

    fn close(&mut self) {
        self.rec.log(format!("close {}", self.name));
        self.rec.closes.fetch_add(1, Ordering::SeqCst);
        self.connected = false;
    }

    fn publish(&mut self, events: &Events) -> Published {
        assert!(self.connected, "{} published while not connected", self.name);
        let now = self.rec.active_now.fetch_add(1, Ordering::SeqCst) + 1;
        self.rec.max_active.fetch_max(now, Ordering::SeqCst);
        self.rec.publishes.fetch_add(1, Ordering::SeqCst);
        let _active = ActiveGuard(&self.rec.active_now);
        self.rec.log(format!("publish {} {}", self.name, events.len()));
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.calls += 1;
        let result = (self.plan)(self.calls - 1, events);
        self.rec.record(&self.name, events, result.count.min(events.len()));
        result
    }
}

/// Counts a publish as active until it returns or unwinds.
struct ActiveGuard<'a>(&'a AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The outcomes one producer heard, checked against what it published, in order.
#[derive(Default)]
pub struct Ledger {
    published: Mutex<Vec<Vec<u8>>>,
    cursor: Mutex<usize>,
    pub acked: Mutex<Vec<usize>>,
    pub dropped: Mutex<Vec<usize>>,
    pub errors: Mutex<Vec<String>>,
    pub ack_calls: AtomicU64,
    pub cancelled: AtomicBool,
}

impl Ledger {
    pub fn new() -> Arc<Ledger> {
        Arc::default()
    }

    /// Producer options whose callbacks feed this ledger.
    pub fn options(self: &Arc<Self>, guaranteed: bool) -> ProducerOptions {
        let (a, d) = (self.clone(), self.clone());
        ProducerOptions {
            on_ack: Some(Box::new(move |n| a.on_ack(n as usize))),
            on_drop: Some(Box::new(move |evs| d.on_drop(evs))),
            guaranteed,
            drop_on_cancel: false,
        }
    }

    /// Call before publishing `payload`; `rejected` afterwards if the publish failed.
    pub fn will_publish(&self, payload: &[u8]) {
        self.published.lock().unwrap().push(payload.to_vec());
    }

    pub fn rejected(&self) {
        self.published.lock().unwrap().pop();
    }

    fn on_ack(&self, n: usize) {
        self.ack_calls.fetch_add(1, Ordering::SeqCst);
        let published = self.published.lock().unwrap().len();
        let mut c = self.cursor.lock().unwrap();
        if *c + n > published {
            self.errors.lock().unwrap().push(format!("ACK of {n} at {} exceeds {published} published", *c));
            return;
        }
        self.acked.lock().unwrap().extend(*c..*c + n);
        *c += n;
    }

    fn on_drop(&self, events: &[&[u8]]) {
        let published = self.published.lock().unwrap();
        let mut c = self.cursor.lock().unwrap();
        for e in events {
            match published.get(*c) {
                Some(p) if p.as_slice() == *e => {
                    self.dropped.lock().unwrap().push(*c);
                    *c += 1;
                }
                other => {
                    self.errors.lock().unwrap().push(format!("drop of {e:?} at {} but published {other:?}", *c));
                    return;
                }
            }
        }
    }

    pub fn published(&self) -> Vec<Vec<u8>> {
        self.published.lock().unwrap().clone()
    }

    pub fn acked_payloads(&self) -> Vec<Vec<u8>> {
        let p = self.published.lock().unwrap();
        self.acked.lock().unwrap().iter().map(|&i| p[i].clone()).collect()
    }

    /// Asserts every published event got exactly one outcome, in order, and returns
    /// (acked, dropped).
    pub fn assert_settled(&self, ctx: &str) -> (usize, usize) {
        let errors = self.errors.lock().unwrap();
        assert!(errors.is_empty(), "{ctx}: ledger errors: {errors:?}");
        let published = self.published.lock().unwrap().len();
        let c = *self.cursor.lock().unwrap();
        assert_eq!(c, published, "{ctx}: {published} published but {c} have an outcome");
        (self.acked.lock().unwrap().len(), self.dropped.lock().unwrap().len())
    }
}

/// A distinct 16-byte payload for event `i` of producer `p`.
pub fn payload(p: u32, i: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&p.to_le_bytes());
    v.extend_from_slice(&i.to_le_bytes());
    v.extend_from_slice(b"conveyor");
    v
}

/// Waits until `cond` holds, failing the test after [`PATIENCE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A sink retry strategy that counts its `proceed` calls (each attempt) and gives up
/// after `limit` failures in a row.
pub struct CountingRetries {
    pub proceeds: Arc<AtomicUsize>,
    failures: usize,
    limit: usize,
}

impl CountingRetries {
    pub fn new(limit: usize) -> CountingRetries {
        CountingRetries { proceeds: Arc::default(), failures: 0, limit }
    }
}

impl conveyor::sink::SinkRetryStrategy for CountingRetries {
    fn proceed(&mut self) -> Duration {
        self.proceeds.fetch_add(1, Ordering::SeqCst);
        Duration::ZERO
    }
    fn failure(&mut self) -> bool {
        self.failures += 1;
        self.failures >= self.limit
    }
    fn success(&mut self) {
        self.failures = 0;
    }
}
