//! `make demo`: conveyor's delivery contract, shown and checked on a million events.
//!
//! Three endpoints sit behind one pipeline:
//! - `flaky`  publishes most batches, but sometimes fails after part of a batch
//!   (a temporary `Retry`, a short count, or a broken connection that even loses the
//!   acknowledgement of events it did deliver), and refuses a quarter of its connects;
//! - `dead`   never accepts a connection;
//! - `steady` always works.
//!
//! Every publish call takes a simulated network round trip (`ROUND_TRIP`), so the
//! endpoints, not the engine, set the pace, as they do in production: in `failover`
//! one endpoint carries the load, in `loadbalance` the two live ones share it.
//!
//! The same workload runs first in `failover` mode (one active endpoint at a time, in
//! list order) and then in `loadbalance` mode (every endpoint pulls batches while it
//! is connected). The producer is `guaranteed` and retries are unlimited, so the
//! contract (DESIGN §1) says: every accepted event is acknowledged exactly once,
//! nothing is dropped, and every event reaches an endpoint at least once. Each
//! endpoint records the sequence number carried in each payload in a shared bitmap;
//! the demo checks all of this at the end and exits non-zero if anything is off.
//!
//! `DEMO_SEED=<n>` replays the failure pattern of the endpoints; `DEMO_EVENTS=<n>`
//! changes the number of events per run (default 1,000,000).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor::{
    AnyClient, Client, ConnectError, Config, Events, Level, Pipeline, ProducerOptions, Published, Stats, Status,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const PAYLOAD_BYTES: usize = 100;
const DEFAULT_EVENTS: u64 = 1_000_000;
const HOSTS: [&str; 3] = ["flaky", "dead", "steady"];
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Time one publish call spends "on the network", whatever the batch size.
const ROUND_TRIP: Duration = Duration::from_millis(2);

/// What the endpoints received, shared by all of them: one bit per sequence number.
struct Ledger {
    seen: Vec<AtomicU64>,
    /// Events received again (the endpoint already had them).
    repeats: AtomicU64,
    /// Payloads whose bytes were not the ones published.
    corrupt: AtomicU64,
}

impl Ledger {
    fn new(events: u64) -> Ledger {
        Ledger {
            seen: (0..events.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            repeats: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
        }
    }

    fn receive(&self, payload: &[u8]) {
        let Some(seq) = decode(payload) else {
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(word) = self.seen.get((seq / 64) as usize) else {
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let bit = 1u64 << (seq % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            self.repeats.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn distinct(&self) -> u64 {
        self.seen.iter().map(|w| u64::from(w.load(Ordering::Relaxed).count_ones())).sum()
    }
}

/// Event `seq`: its sequence number, then a byte pattern derived from it.
fn encode(seq: u64, buf: &mut [u8; PAYLOAD_BYTES]) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in buf[8..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8);
    }
}

/// The sequence number of an intact payload.
fn decode(payload: &[u8]) -> Option<u64> {
    if payload.len() != PAYLOAD_BYTES {
        return None;
    }
    let seq = u64::from_le_bytes(payload[..8].try_into().ok()?);
    let intact = payload[8..].iter().enumerate().all(|(i, &b)| b == (seq as u8).wrapping_add(i as u8));
    intact.then_some(seq)
}

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Flaky,
    Dead,
    Steady,
}

/// A simulated endpoint connection.
struct DemoClient {
    behaviour: Behaviour,
    ledger: Arc<Ledger>,
    /// Events this endpoint received, repeats included.
    received: Arc<AtomicU64>,
    rng: SmallRng,
}

impl DemoClient {
    fn deliver(&self, events: &Events, n: usize) {
        for payload in events.iter().take(n) {
            self.ledger.receive(payload);
        }
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Client for DemoClient {
    fn connect(&mut self, _timeout: Duration) -> Result<(), ConnectError> {
        match self.behaviour {
            Behaviour::Dead => Err("no route to host (simulated)".into()),
            Behaviour::Flaky if self.rng.gen_bool(0.25) => Err("connection refused (simulated)".into()),
            _ => Ok(()),
        }
    }

    fn publish(&mut self, events: &Events) -> Published {
        std::thread::sleep(ROUND_TRIP);
        let n = events.len();
        if self.behaviour != Behaviour::Flaky {
            self.deliver(events, n);
            return Published::all(n);
        }
        let roll: f64 = self.rng.gen();
        if roll < 0.010 {
            let k = self.rng.gen_range(0..n);
            self.deliver(events, k);
            Published::retry(k)
        } else if roll < 0.015 {
            // The connection dropped mid-batch: events up to `sent` arrived, but only
            // the first `k` were confirmed, so the rest will be sent again.
            let k = self.rng.gen_range(0..n);
            let sent = self.rng.gen_range(k..=n);
            self.deliver(events, sent);
            Published::broken(k)
        } else if roll < 0.025 {
            let k = self.rng.gen_range(1..=n);
            self.deliver(events, k);
            Published { count: k, status: Status::Ok }
        } else {
            self.deliver(events, n);
            Published::all(n)
        }
    }
}

/// What one run observed, for the checks.
struct RunResult {
    mode: &'static str,
    events: u64,
    elapsed: Duration,
    stats: Stats,
    acked_by_callback: u64,
    dropped_by_callback: u64,
    distinct_received: u64,
    endpoint_repeats: u64,
    corrupt: u64,
    received: Vec<(&'static str, u64)>,
    drained: bool,
    errors_logged: u64,
}

fn run(mode: &'static str, events: u64, seed: u64) -> Result<RunResult, conveyor::Error> {
    let ledger = Arc::new(Ledger::new(events));
    let received: HashMap<&'static str, Arc<AtomicU64>> =
        HOSTS.iter().map(|&h| (h, Arc::new(AtomicU64::new(0)))).collect();

    let mut config = Config::default();
    for (key, value) in [
        ("mode", mode),
        ("failover.policy", "ordered"),
        ("max_retries", "-1"),
        ("backoff.init", "1ms"),
        ("backoff.max", "50ms"),
        ("timeout", "1s"),
        ("bulk_max_size", "1024"),
        ("queue.events", "8192"),
        ("queue.flush.min_events", "1024"),
        ("queue.flush.timeout", "1ms"),
    ] {
        config.set(key, value)?;
    }

    let factory = {
        let ledger = ledger.clone();
        let received = received.clone();
        let next_seed = AtomicU64::new(seed);
        move |host: &str| -> Result<AnyClient, ConnectError> {
            let behaviour = match host {
                "flaky" => Behaviour::Flaky,
                "dead" => Behaviour::Dead,
                "steady" => Behaviour::Steady,
                other => return Err(format!("unknown demo host {other}").into()),
            };
            Ok(AnyClient::sync(DemoClient {
                behaviour,
                ledger: ledger.clone(),
                received: received[host].clone(),
                rng: SmallRng::seed_from_u64(next_seed.fetch_add(1, Ordering::Relaxed)),
            }))
        }
    };
    let errors_logged = Arc::new(AtomicU64::new(0));
    let logger = {
        let errors_logged = errors_logged.clone();
        Arc::new(move |level: Level, msg: &str| {
            if level == Level::Error {
                errors_logged.fetch_add(1, Ordering::Relaxed);
                eprintln!("  conveyor error: {msg}");
            }
        })
    };
    let pipeline = Pipeline::builder(config).hosts(&HOSTS, Arc::new(factory)).logger(logger).build()?;

    let acked = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let producer = pipeline.producer(ProducerOptions {
        on_ack: Some({
            let acked = acked.clone();
            Box::new(move |n| {
                acked.fetch_add(n, Ordering::Relaxed);
            })
        }),
        on_drop: Some({
            let dropped = dropped.clone();
            Box::new(move |events: &[&[u8]]| {
                dropped.fetch_add(events.len() as u64, Ordering::Relaxed);
            })
        }),
        guaranteed: true,
        drop_on_cancel: false,
    })?;

    println!("── {mode}: {events} events of {PAYLOAD_BYTES} bytes through {} ──", HOSTS.join(", "));
    let started = Instant::now();
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| show_progress(&pipeline, mode, started, &done_rx));
        let mut buf = [0u8; PAYLOAD_BYTES];
        let published = (0..events).try_for_each(|seq| {
            encode(seq, &mut buf);
            producer.publish(&buf, None)
        });
        let flushed = published.and_then(|()| pipeline.flush(Duration::from_secs(60)));
        drop(done_tx);
        flushed
    });
    let elapsed = started.elapsed();
    outcome?;
    drop(producer);
    let report = pipeline.close(Duration::from_secs(10))?;
    let stats = pipeline.stats();
    Ok(RunResult {
        mode,
        events,
        elapsed,
        stats,
        acked_by_callback: acked.load(Ordering::Relaxed),
        dropped_by_callback: dropped.load(Ordering::Relaxed),
        distinct_received: ledger.distinct(),
        endpoint_repeats: ledger.repeats.load(Ordering::Relaxed),
        corrupt: ledger.corrupt.load(Ordering::Relaxed),
        received: HOSTS.iter().map(|&h| (h, received[h].load(Ordering::Relaxed))).collect(),
        drained: report.drained,
        errors_logged: errors_logged.load(Ordering::Relaxed),
    })
}

/// Prints a line every half second until `done` is closed.
fn show_progress(pipeline: &Pipeline, mode: &str, started: Instant, done: &crossbeam_channel::Receiver<()>) {
    let (mut last_acked, mut last_at) = (0u64, started);
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = done.recv_timeout(PROGRESS_EVERY) {
        let s = pipeline.stats();
        let now = Instant::now();
        let rate = (s.acked - last_acked) as f64 / now.duration_since(last_at).as_secs_f64();
        (last_acked, last_at) = (s.acked, now);
        let clients: Vec<String> = s
            .clients
            .iter()
            .map(|c| format!("{}:{}", c.host.as_deref().unwrap_or("?"), state_name(c.state)))
            .collect();
        println!(
            "  {mode:<11} {:>5.1}s  published {:>9}  acked {:>9}  {:>6.2} M ev/s  queue {:>5}  [{}]",
            now.duration_since(started).as_secs_f64(),
            s.accepted,
            s.acked,
            rate / 1e6,
            s.queue.events,
            clients.join(" ")
        );
    }
}

fn state_name(state: conveyor::WorkerState) -> &'static str {
    use conveyor::WorkerState::*;
    match state {
        Connecting => "connecting",
        Active => "active",
        Backoff => "backoff",
        Standby => "standby",
        Stopped => "stopped",
    }
}

/// Prints the accounting of one run and returns the contract violations found.
fn account(r: &RunResult) -> Vec<String> {
    let s = &r.stats;
    let rate = s.acked as f64 / r.elapsed.as_secs_f64();
    println!();
    println!("  {}: {} events acked in {:.2} s = {:.2} M events/s", r.mode, s.acked, r.elapsed.as_secs_f64(), rate / 1e6);
    println!();
    println!(
        "  {:>10} {:>10} {:>8} {:>10} {:>11} {:>17}",
        "accepted", "acked", "dropped", "in flight", "duplicates", "endpoint repeats"
    );
    println!(
        "  {:>10} {:>10} {:>8} {:>10} {:>11} {:>17}",
        s.accepted, s.acked, s.dropped, s.in_flight, s.duplicates, r.endpoint_repeats
    );
    println!("  (duplicates = late results conveyor counted; endpoint repeats = events sent again because");
    println!("   a broken connection lost their confirmation: at-least-once delivery, DESIGN §1 rule 3)");
    println!();
    println!(
        "  {:<8} {:>10} {:>10} {:>8} {:>9} {:>8} {:>9} {:>14} {:>9}",
        "client", "published", "received", "batches", "failures", "retries", "connects", "connect fails", "state"
    );
    for c in &s.clients {
        let host = c.host.as_deref().unwrap_or("?");
        let received = r.received.iter().find(|(h, _)| *h == host).map_or(0, |(_, n)| *n);
        println!(
            "  {:<8} {:>10} {:>10} {:>8} {:>9} {:>8} {:>9} {:>14} {:>9}",
            host,
            c.events,
            received,
            c.batches,
            c.failures,
            c.retries,
            c.connects,
            c.connect_failures,
            state_name(c.state)
        );
    }
    println!("  (published = confirmed by the client; received = arrived at the endpoint, repeats included)");
    println!();

    let published_by_clients: u64 = s.clients.iter().map(|c| c.events).sum();
    let checks = [
        ("every event was accepted", s.accepted == r.events, format!("{} of {}", s.accepted, r.events)),
        (
            "every accepted event acked exactly once (on_ack total)",
            r.acked_by_callback == s.accepted && s.acked == s.accepted,
            format!("on_ack total {}, stats acked {}, accepted {}", r.acked_by_callback, s.acked, s.accepted),
        ),
        (
            "nothing dropped (guaranteed producer)",
            s.dropped == 0 && r.dropped_by_callback == 0,
            format!("stats dropped {}, on_drop total {}", s.dropped, r.dropped_by_callback),
        ),
        ("nothing left in flight after close", s.in_flight == 0 && r.drained, format!("in flight {}", s.in_flight)),
        (
            "every event reached an endpoint at least once",
            r.distinct_received == r.events,
            format!("{} distinct of {}", r.distinct_received, r.events),
        ),
        ("every payload arrived intact", r.corrupt == 0, format!("{} corrupt", r.corrupt)),
        (
            "clients' confirmed counts add up to the acks",
            published_by_clients == s.acked,
            format!("{} confirmed, {} acked", published_by_clients, s.acked),
        ),
        ("no errors logged", r.errors_logged == 0, format!("{} errors", r.errors_logged)),
    ];
    let mut violations = Vec::new();
    for (what, ok, detail) in checks {
        println!("  {} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            violations.push(format!("{}: {what} ({detail})", r.mode));
        }
    }
    println!();
    violations
}

fn env_u64(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| format!("{name}={v} is not a whole number")),
        Err(_) => Ok(default),
    }
}

fn main() -> ExitCode {
    let settings = env_u64("DEMO_EVENTS", DEFAULT_EVENTS).and_then(|events| {
        let seed = env_u64("DEMO_SEED", rand::random::<u32>().into())?;
        Ok((events.max(1), seed))
    });
    let (events, seed) = match settings {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    println!("conveyor {} demo (replay the endpoints' failures with DEMO_SEED={seed})", conveyor::VERSION);
    println!();
    let mut violations = Vec::new();
    for mode in ["failover", "loadbalance"] {
        match run(mode, events, seed) {
            Ok(result) => violations.extend(account(&result)),
            Err(e) => violations.push(format!("{mode}: the run failed: {e}")),
        }
    }
    if violations.is_empty() {
        println!("contract held in both modes: every accepted event acked exactly once, none lost.");
        ExitCode::SUCCESS
    } else {
        println!("CONTRACT VIOLATED (DEMO_SEED={seed}):");
        for v in &violations {
            println!("  - {v}");
        }
        ExitCode::FAILURE
    }
}
