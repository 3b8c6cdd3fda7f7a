//! Fault-injection soak: random modes, configs and clients that fail connects, fail
//! or partly publish, return retry, stall past `publish_timeout` or complete late.
//! After every run the delivery contract (DESIGN §1) is checked event by event.
//!
//! `SOAK_SEEDS=n` sets the total number of seeds (default 2000, split over four
//! tests); `SOAK_SEED=s` replays one seed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use conveyor::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// How one client misbehaves, as probabilities per call.
#[derive(Debug, Clone, Copy)]
struct Faults {
    connect_fail: f64,
    retry: f64,
    broken: f64,
    partial: f64,
    stall: f64,
    late: f64,
}

impl Faults {
    fn draw(rng: &mut SmallRng, mild: bool) -> Faults {
        let cap = if mild { 0.3 } else { 0.9 };
        Faults {
            connect_fail: rng.gen_range(0.0..cap),
            retry: rng.gen_range(0.0..cap / 3.0),
            broken: rng.gen_range(0.0..cap / 3.0),
            partial: rng.gen_range(0.0..0.3),
            stall: if rng.gen_bool(0.2) { 0.05 } else { 0.0 },
            late: rng.gen_range(0.0..0.3),
        }
    }

    /// The answer for a batch of `len` events.
    fn answer(&self, rng: &mut SmallRng, len: usize) -> Published {
        let roll: f64 = rng.gen();
        let some = if len > 1 && rng.gen_bool(self.partial) { rng.gen_range(0..len) } else { 0 };
        if roll < self.retry {
            Published::retry(some)
        } else if roll < self.retry + self.broken {
            Published::broken(some)
        } else if rng.gen_bool(self.partial) {
            Published { count: rng.gen_range(0..=len), status: Status::Ok }
        } else {
            Published::all(len)
        }
    }
}

struct SoakClient {
    name: String,
    faults: Faults,
    rng: Arc<Mutex<SmallRng>>,
    rec: Arc<Recorder>,
    stall: Duration,
}

impl SoakClient {
    fn connect(&mut self) -> Result<(), ConnectError> {
        if self.rng.lock().unwrap().gen_bool(self.faults.connect_fail) {
            return Err(format!("{} refuses", self.name).into());
        }
        Ok(())
    }

    fn decide(&self, len: usize) -> (Published, bool) {
        let mut rng = self.rng.lock().unwrap();
        let stall = rng.gen_bool(self.faults.stall);
        (self.faults.answer(&mut rng, len), stall)
    }
}

impl Client for SoakClient {
    fn connect(&mut self, _t: Duration) -> Result<(), ConnectError> {
        SoakClient::connect(self)
    }

    fn publish(&mut self, events: &Events) -> Published {
        let (answer, stall) = self.decide(events.len());
        if stall {
            std::thread::sleep(self.stall);
        }
        self.rec.record(&self.name, events, answer.count.min(events.len()));
        answer
    }
}

struct AsyncSoakClient(SoakClient);

impl AsyncClient for AsyncSoakClient {
    fn connect(&mut self, _t: Duration) -> Result<(), ConnectError> {
        self.0.connect()
    }

    fn publish_async(&mut self, events: Events, completion: Completion) -> Result<(), ConnectError> {
        let (answer, stall) = self.0.decide(events.len());
        let late = self.0.rng.lock().unwrap().gen_bool(self.0.faults.late);
        let (rec, name, pause) = (self.0.rec.clone(), self.0.name.clone(), if stall { self.0.stall } else { Duration::ZERO });
        let finish = move || {
            std::thread::sleep(pause);
            rec.record(&name, &events, answer.count.min(events.len()));
            completion.done(answer);
        };
        if late || stall {
            std::thread::spawn(finish);
        } else {
            finish();
        }
        Ok(())
    }
}

fn run(seed: u64) {
    let ctx = format!("soak seed {seed} (replay: SOAK_SEED={seed} cargo test --release --test soak)");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mode = [Mode::Single, Mode::Failover, Mode::LoadBalance][rng.gen_range(0..3)];
    let n_clients = if mode == Mode::Single { 1 } else { rng.gen_range(2..=4) };
    let mut c = Config { mode: Some(mode), ..Config::default() };
    c.failover_policy = if rng.gen() { FailoverPolicy::Random } else { FailoverPolicy::Ordered };
    c.max_retries = [None, Some(0), Some(1), Some(3)][rng.gen_range(0..4)];
    c.backoff_init = Duration::from_micros(rng.gen_range(0..500));
    c.backoff_max = c.backoff_init * 4;
    c.timeout = Duration::from_millis(rng.gen_range(1..20));
    c.bulk_max_size = rng.gen_range(1..64);
    c.pipelining = rng.gen_range(1..5);
    c.queue_events = rng.gen_range(4..256);
    c.queue_bytes = if rng.gen_bool(0.2) { rng.gen_range(64..4096) } else { 0 };
    c.flush_min_events = rng.gen_range(0..=c.bulk_max_size);
    c.flush_timeout = Duration::from_micros(rng.gen_range(0..2000));
    c.publish_timeout = rng.gen_bool(0.2).then(|| Duration::from_millis(rng.gen_range(5..15)));
    c.error_threshold = if rng.gen_bool(0.3) { rng.gen_range(2..6) } else { 0 };
    let stall = c.publish_timeout.map_or(Duration::from_millis(2), |t| t * 2);

    let rec = Recorder::new();
    let mut builder = Pipeline::builder(c.clone());
    for i in 0..n_clients {
        let client = SoakClient {
            name: format!("c{i}"),
            faults: Faults::draw(&mut rng, i == 0),
            rng: Arc::new(Mutex::new(SmallRng::seed_from_u64(seed ^ (i as u64 + 1) << 32))),
            rec: rec.clone(),
            stall,
        };
        builder = if rng.gen_bool(0.3) { builder.async_client(AsyncSoakClient(client)) } else { builder.client(client) };
    }
    let pipeline = builder.build().unwrap_or_else(|e| panic!("{ctx}: build: {e}"));

    let n_producers = rng.gen_range(1..=3);
    let close_early = rng.gen_bool(0.1);
    let mut threads = Vec::new();
    let pipeline = Arc::new(pipeline);
    let mut ledgers = Vec::new();
    for p in 0..n_producers {
        let ledger = Ledger::new();
        let guaranteed = rng.gen_bool(0.5);
        ledgers.push((ledger.clone(), guaranteed));
        let producer = pipeline.producer(ledger.options(guaranteed)).unwrap();
        let events = rng.gen_range(20..300u32);
        let style = rng.gen_range(0..4);
        let ctx = ctx.clone();
        let max_len = if c.queue_bytes > 0 { 16 } else { 64 };
        let mut prng = SmallRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(p as u64));
        threads.push(std::thread::spawn(move || {
            let mut i = 0;
            while i < events {
                let mut e = payload(p as u32, i);
                e.resize(prng.gen_range(16..=max_len), b'x');
                let mut announced = 1;
                let result = match style {
                    0 => {
                        ledger.will_publish(&e);
                        producer.publish(&e, Some(PATIENCE)).map(|_| 1)
                    }
                    1 => {
                        ledger.will_publish(&e);
                        let r = producer.try_publish(&e);
                        if r == Err(Error::Full) {
                            ledger.rejected();
                            std::thread::yield_now();
                            continue;
                        }
                        r.map(|_| 1)
                    }
                    _ => {
                        let n = prng.gen_range(1..8).min(events - i);
                        let batch: Vec<Vec<u8>> = (0..n).map(|k| { let mut b = payload(p as u32, i + k); b.resize(16, b'y'); b }).collect();
                        let views: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                        batch.iter().for_each(|b| ledger.will_publish(b));
                        announced = batch.len();
                        let r = if style == 2 {
                            producer.publish_batch(&views, Some(PATIENCE))
                        } else {
                            let lens: Vec<u32> = batch.iter().map(|b| b.len() as u32).collect();
                            let data = batch.concat();
                            producer.publish_packed(Packed::new(&data, &lens).expect("lengths add up"), Some(PATIENCE))
                        };
                        if let Ok(k) = r {
                            (k..batch.len()).for_each(|_| ledger.rejected());
                        }
                        r.map(|k| k as u32)
                    }
                };
                match result {
                    Ok(k) => i += k,
                    Err(Error::Closed) if close_early => {
                        (0..announced).for_each(|_| ledger.rejected());
                        return producer;
                    }
                    Err(e) => panic!("{ctx}: publish: {e}"),
                }
            }
            producer
        }));
    }
    if close_early {
        let report = pipeline.close(Duration::from_millis(rng.gen_range(0..5))).unwrap();
        assert_eq!(report.accepted, report.acked + report.dropped, "{ctx}: close leaves nothing in flight");
    }
    let producers: Vec<Producer> = threads.into_iter().map(|t| t.join().unwrap_or_else(|_| panic!("{ctx}: producer thread"))).collect();
    if !close_early {
        if let Err(e) = pipeline.flush(PATIENCE) {
            panic!("{ctx}: flush did not finish: {e}; stats {:?}", pipeline.stats());
        }
    }
    let stats = pipeline.stats();
    let report = pipeline.close(Duration::ZERO).unwrap();

    let mut published = 0;
    for (k, (ledger, guaranteed)) in ledgers.iter().enumerate() {
        let (acked, dropped) = ledger.assert_settled(&format!("{ctx} producer {k}"));
        published += acked + dropped;
        if *guaranteed && !close_early {
            assert_eq!(dropped, 0, "{ctx}: guaranteed producer {k} lost {dropped} events");
        }
        for e in ledger.acked_payloads() {
            assert!(rec.times(&e) >= 1, "{ctx}: an acked event was never published by a client");
        }
        let counts = producers[k].counts();
        assert_eq!((counts.acked as usize, counts.dropped as usize, counts.in_flight), (acked, dropped, 0), "{ctx}: counts");
    }
    assert_eq!(report.accepted as usize, published, "{ctx}: accepted");
    let repeated: u64 = rec.delivered.lock().unwrap().values().map(|&n| u64::from(n.saturating_sub(1))).sum();
    let allowed = pipeline.stats().duplicates;
    assert!(repeated <= allowed, "{ctx}: {repeated} repeated deliveries but {allowed} counted duplicates ({stats:?})");
}

fn seeds(part: u64, parts: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("SOAK_SEED") {
        return if part == 0 { vec![s.parse().expect("SOAK_SEED is a number")] } else { vec![] };
    }
    let total: u64 = std::env::var("SOAK_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let base: u64 = std::env::var("SOAK_BASE").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| rand::random::<u32>() as u64);
    let per = total.div_ceil(parts);
    (base + part * per..base + (part + 1) * per).collect()
}

fn soak_part(part: u64) {
    let seeds = seeds(part, 4);
    if let (Some(first), Some(last)) = (seeds.first(), seeds.last()) {
        eprintln!("soak part {part}: seeds {first}..={last}");
    }
    for seed in seeds {
        run(seed);
    }
}

#[test]
fn soak_part_0() {
    soak_part(0);
}

#[test]
fn soak_part_1() {
    soak_part(1);
}

#[test]
fn soak_part_2() {
    soak_part(2);
}

#[test]
fn soak_part_3() {
    soak_part(3);
}
