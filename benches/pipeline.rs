//! The benchmark suite: every scenario measured side by side with its reference in
//! the same run (research/perf-anchors.md §4).
//!
//! `cargo bench --bench pipeline [-- NAME...]` runs the scenarios whose name contains
//! one of the NAMEs (all by default). Each scenario runs one warm-up pair, then
//! `pairs` interleaved (candidate, reference) pairs, alternating which goes first,
//! and prints exactly one line on stdout:
//!
//! `bench <scenario> <events_per_s> ratio=<median ratio> goal=<goal ratio>`
//!
//! where events/s is the candidate's median and the ratio is the median of the
//! per-pair ratios candidate / reference. Progress and spreads go to stderr.
//! `BENCH_QUICK=1` cuts the run to a smoke test; `BENCH_EVENTS` and `BENCH_PAIRS`
//! set the sizes explicitly. `BENCH_PROFILE=1` runs only the candidates, `pairs`
//! times each, and prints no result line: run it under `perf record` to see where a
//! scenario's time goes without its reference in the profile.
//! `BENCH_CONFIG="queue.events=16384,bulk_max_size=4096"` applies further settings
//! to every pipeline, to compare configurations.
//!
//! Each result, with its reference's median, is also appended as one JSON line to
//! `$BENCH_RESULTS_DIR/rust.jsonl` (default `build/bench/`, emptied when the run
//! starts), which `benches/report.py` turns into the table and chart of `make bench`.
//!
//! To add a scenario, write a `fn(&Settings) -> f64` returning events/s (most are a
//! [`PipelineRun`] with other clients or settings) and list it in [`scenarios`].

use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor::{AnyClient, Client, Config, Events, Packed, Pipeline, ProducerOptions, Published};

const PAYLOAD_BYTES: usize = 100;
/// Events per `publish_batch` call, and per message of the batch reference.
const BATCH: usize = 1024;
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);

/// Pipeline settings for throughput. The queue holds 8 full batches so the producer
/// rarely blocks while a batch is out; a consumer is woken once per full batch
/// (`flush.min_events` = `bulk_max_size`), not per event; the 1 ms flush timeout only
/// matters for the last, partial batch of a run.
const THROUGHPUT_CONFIG: &[(&str, &str)] = &[
    ("queue.events", "8192"),
    ("bulk_max_size", "1024"),
    ("queue.flush.min_events", "1024"),
    ("queue.flush.timeout", "1ms"),
];

/// What every scenario runs with.
#[derive(Clone)]
struct Settings {
    /// `BENCH_CONFIG`: (key, value) pairs applied to every pipeline last.
    config: Vec<(String, String)>,
    /// Events per measured run.
    events: u64,
    /// Interleaved (candidate, reference) pairs per scenario.
    pairs: usize,
}

/// One headline scenario: a candidate, its reference and the goal for their ratio.
struct Scenario {
    name: &'static str,
    /// What the reference is, for the report.
    reference_name: &'static str,
    goal: f64,
    /// Multiplies the events per run, so fast scenarios still run long enough to measure.
    scale: u64,
    candidate: fn(&Settings) -> f64,
    reference: fn(&Settings) -> f64,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "h1-pipeline",
            reference_name: "crossbeam bounded(1024) 1P1C",
            goal: 0.8,
            scale: 1,
            candidate: h1_pipeline,
            reference: crossbeam_1p1c,
        },
        Scenario {
            name: "h2-contention",
            reference_name: "crossbeam bounded(1024) 2P2C",
            goal: 0.4,
            scale: 1,
            candidate: h2_contention,
            reference: crossbeam_2p2c,
        },
        Scenario {
            name: "h3-batch",
            reference_name: "crossbeam bounded(16), 1024-event buffers",
            goal: 0.5,
            scale: 4,
            candidate: h3_batch,
            reference: crossbeam_batches,
        },
        Scenario {
            name: "h3-packed",
            reference_name: "crossbeam bounded(16), 1024-event buffers",
            goal: 0.5,
            scale: 4,
            candidate: h3_packed,
            reference: crossbeam_batches,
        },
        Scenario {
            name: "h4-failover-faults",
            reference_name: "h1-pipeline",
            goal: 0.7,
            scale: 1,
            candidate: h4_failover_faults,
            reference: h1_pipeline,
        },
        Scenario {
            name: "h4-rust-lb",
            reference_name: "h1-pipeline",
            goal: 0.8,
            scale: 1,
            candidate: h4_rust_lb,
            reference: h1_pipeline,
        },
        Scenario {
            name: "h4-c-clients",
            reference_name: "h4-rust-lb (Rust clients)",
            goal: 0.95,
            scale: 1,
            candidate: h4_c_clients,
            reference: h4_rust_lb,
        },
        Scenario {
            name: "h4-c-program",
            reference_name: "h4-rust-lb (Rust program)",
            goal: 0.7,
            scale: 1,
            candidate: h4_c_program,
            reference: h4_rust_lb,
        },
        Scenario {
            name: "fanout-2-pipelines",
            reference_name: "h1-pipeline",
            goal: 0.3,
            scale: 1,
            candidate: fanout::each_event,
            reference: h1_pipeline,
        },
        Scenario {
            name: "fanout-2-pipelines-batch",
            reference_name: "h3-batch",
            goal: 0.3,
            scale: 4,
            candidate: fanout::batches,
            reference: h3_batch,
        },
    ]
}

// ---------------------------------------------------------------------------
// Candidates: conveyor pipelines.

/// Reads the first byte of every event, as the references' consumers do, and reports
/// the batch published; the ACK still goes through the normal path.
struct NoopClient;

impl Client for NoopClient {
    fn publish(&mut self, events: &Events) -> Published {
        black_box(first_bytes_sum(events.iter()));
        Published::all(events.len())
    }
}

/// What a no-op client reads of its batch: the first byte of every event.
fn first_bytes_sum<'a>(events: impl Iterator<Item = &'a [u8]>) -> u64 {
    events.fold(0u64, |sum, e| sum.wrapping_add(u64::from(e.first().copied().unwrap_or(0))))
}

/// A no-op client whose every `fail_every`-th publish reports a broken connection.
struct FaultyClient {
    calls: u64,
    fail_every: u64,
}

impl Client for FaultyClient {
    fn publish(&mut self, events: &Events) -> Published {
        self.calls += 1;
        if self.calls % self.fail_every == 0 {
            Published::broken(0)
        } else {
            NoopClient.publish(events)
        }
    }
}

/// How the producers publish.
#[derive(Clone, Copy)]
enum Publish {
    /// One `publish` call per event.
    EachEvent,
    /// `publish_batch` of [`BATCH`] events.
    Batches,
    /// `publish_packed` of [`BATCH`] events laid end to end.
    Packed,
}

/// A pipeline fed by `producers` threads, timed from the first publish until every
/// event is acknowledged back to its producer.
struct PipelineRun {
    /// Extra configuration on top of [`THROUGHPUT_CONFIG`].
    config: &'static [(&'static str, &'static str)],
    clients: Vec<AnyClient>,
    producers: usize,
    publish: Publish,
}

impl PipelineRun {
    fn single_noop() -> PipelineRun {
        PipelineRun { config: &[], clients: vec![AnyClient::sync(NoopClient)], producers: 1, publish: Publish::EachEvent }
    }

    /// Events per second; panics if the accounting does not balance, so a broken
    /// pipeline never reports a throughput.
    fn run(self, s: &Settings) -> f64 {
        let mut config = Config::default();
        for (key, value) in THROUGHPUT_CONFIG.iter().chain(self.config) {
            config.set(key, value).expect("benchmark configuration");
        }
        for (key, value) in &s.config {
            config.set(key, value).unwrap_or_else(|e| panic!("BENCH_CONFIG: {e}"));
        }
        let pipeline =
            self.clients.into_iter().fold(Pipeline::builder(config), |b, c| b.any_client(c)).build().expect("pipeline");
        let acked = Arc::new(AtomicU64::new(0));
        let producers: Vec<_> = (0..self.producers)
            .map(|_| {
                let acked = acked.clone();
                let on_ack = Box::new(move |n: u64| {
                    acked.fetch_add(n, Ordering::Relaxed);
                });
                pipeline.producer(ProducerOptions { on_ack: Some(on_ack), ..Default::default() }).expect("producer")
            })
            .collect();
        let share = s.events / self.producers as u64;
        let total = share * self.producers as u64;
        let started = Instant::now();
        std::thread::scope(|scope| {
            for producer in &producers {
                scope.spawn(move || match self.publish {
                    Publish::EachEvent => {
                        let mut event = [0u8; PAYLOAD_BYTES];
                        for seq in 0..share {
                            event[..8].copy_from_slice(&seq.to_le_bytes());
                            producer.publish(&event, None).expect("publish");
                        }
                    }
                    Publish::Batches => {
                        let storage = vec![[7u8; PAYLOAD_BYTES]; BATCH];
                        let views: Vec<&[u8]> = storage.iter().map(|e| &e[..]).collect();
                        let mut left = share as usize;
                        while left > 0 {
                            let n = left.min(BATCH);
                            let mut done = 0;
                            while done < n {
                                done += producer.publish_batch(&views[done..n], None).expect("publish_batch");
                            }
                            left -= n;
                        }
                    }
                    Publish::Packed => {
                        let data = vec![7u8; PAYLOAD_BYTES * BATCH];
                        let lens = vec![PAYLOAD_BYTES as u32; BATCH];
                        let mut left = share as usize;
                        while left > 0 {
                            let n = left.min(BATCH);
                            let mut done = 0;
                            while done < n {
                                let bytes = &data[done * PAYLOAD_BYTES..n * PAYLOAD_BYTES];
                                let events = Packed::new(bytes, &lens[done..n]).expect("packed events");
                                done += producer.publish_packed(events, None).expect("publish_packed");
                            }
                            left -= n;
                        }
                    }
                });
            }
        });
        pipeline.flush(FLUSH_TIMEOUT).expect("flush");
        let elapsed = started.elapsed();
        let report = pipeline.close(Duration::from_secs(10)).expect("close");
        let acked = acked.load(Ordering::Relaxed);
        assert!(
            acked == total && report.acked == total && report.dropped == 0,
            "accounting does not balance: {total} published, {acked} acked by callback, report {report:?}"
        );
        total as f64 / elapsed.as_secs_f64()
    }
}

fn h1_pipeline(s: &Settings) -> f64 {
    PipelineRun::single_noop().run(s)
}

fn h2_contention(s: &Settings) -> f64 {
    PipelineRun { producers: 2, ..PipelineRun::single_noop() }.run(s)
}

fn h3_batch(s: &Settings) -> f64 {
    PipelineRun { publish: Publish::Batches, ..PipelineRun::single_noop() }.run(s)
}

fn h3_packed(s: &Settings) -> f64 {
    PipelineRun { publish: Publish::Packed, ..PipelineRun::single_noop() }.run(s)
}

/// Failover over two clients, 1% of whose batches fail (broken connection: close,
/// reconnect on the other client), with unlimited retries and zero backoff.
fn h4_failover_faults(s: &Settings) -> f64 {
    let faulty = || AnyClient::sync(FaultyClient { calls: 0, fail_every: 100 });
    PipelineRun {
        config: &[("mode", "failover"), ("max_retries", "-1"), ("backoff.init", "0"), ("backoff.max", "0")],
        clients: vec![faulty(), faulty()],
        ..PipelineRun::single_noop()
    }
    .run(s)
}

fn h4_rust_lb(s: &Settings) -> f64 {
    PipelineRun {
        config: &[("mode", "loadbalance")],
        clients: (0..4).map(|_| AnyClient::sync(NoopClient)).collect(),
        ..PipelineRun::single_noop()
    }
    .run(s)
}

/// `h4-rust-lb` with its four no-op clients written against the C vtable
/// (`conveyor_client_vtable`, through `capi::foreign_client`, the adapter the C ABI's
/// pipelines use): only the clients differ, so the ratio is what the C client
/// interface costs.
fn h4_c_clients(s: &Settings) -> f64 {
    PipelineRun {
        config: &[("mode", "loadbalance")],
        clients: (0..4).map(|_| c_abi::noop_client()).collect(),
        ..PipelineRun::single_noop()
    }
    .run(s)
}

/// `h4-rust-lb` as a C program does it: the configuration, four no-op clients
/// registered as C vtables, the producer with its ACK callback, every publish, the
/// flush and the close all go through the `conveyor_*` exports of `src/capi`.
fn h4_c_program(s: &Settings) -> f64 {
    c_abi::loadbalance_run(s, 4)
}

mod c_abi {
    use std::ffi::{c_void, CString};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use conveyor::capi::*;
    use conveyor::AnyClient;

    use super::{black_box, first_bytes_sum, Settings, FLUSH_TIMEOUT, PAYLOAD_BYTES, THROUGHPUT_CONFIG};

    /// The C counterpart of `NoopClient`: reads the first byte of every event and
    /// reports them all published.
    unsafe extern "C" fn noop_publish(
        _userdata: *mut c_void,
        events: *const conveyor_bytes,
        n: usize,
        published: *mut usize,
    ) -> u32 {
        // SAFETY: conveyor passes `n` views of live bytes and a writable count
        // (conveyor_client_vtable.publish); `n` is never 0 for a publish.
        unsafe {
            let views = std::slice::from_raw_parts(events, n);
            black_box(first_bytes_sum(views.iter().map(|v| std::slice::from_raw_parts(v.data, v.len))));
            *published = n;
        }
        CONVEYOR_PUBLISH_OK
    }

    fn noop_vtable() -> conveyor_client_vtable {
        conveyor_client_vtable {
            struct_size: std::mem::size_of::<conveyor_client_vtable>() as u32,
            userdata: std::ptr::null_mut(),
            connect: None,
            close: None,
            publish: Some(noop_publish),
            publish_async: None,
            free_userdata: None,
        }
    }

    /// `noop_publish` as a client of a pipeline built in Rust.
    pub(super) fn noop_client() -> AnyClient {
        // SAFETY: `noop_publish` only writes the count conveyor passes; no userdata.
        unsafe { foreign_client(&noop_vtable(), None) }.expect("a valid vtable")
    }

    /// The producer's on_ack: adds to the `AtomicU64` behind `userdata`.
    unsafe extern "C" fn count_acks(userdata: *mut c_void, count: u64) {
        // SAFETY: `userdata` is the counter `loadbalance_run` keeps alive until after
        // the producer is freed.
        let acked = unsafe { &*userdata.cast::<AtomicU64>() };
        acked.fetch_add(count, Ordering::Relaxed);
    }

    fn check(call: &str, code: conveyor_result) {
        if code != CONVEYOR_OK {
            let mut buf = [0u8; 512];
            // SAFETY: `buf` is writable for its length.
            let len = unsafe { conveyor_last_error(buf.as_mut_ptr().cast(), buf.len()) }.min(buf.len() - 1);
            panic!("{call} returned {code}: {}", String::from_utf8_lossy(&buf[..len]));
        }
    }

    /// Events per second of one producer publishing each event into a `loadbalance`
    /// pipeline over `clients` C no-op clients; panics if the accounting does not balance.
    pub(super) fn loadbalance_run(s: &Settings, clients: usize) -> f64 {
        let acked = AtomicU64::new(0);
        // SAFETY (whole block): every pointer passed is either a live local or a handle
        // returned by the previous calls, freed once, producer before pipeline.
        unsafe {
            let config = conveyor_config_new();
            assert!(!config.is_null(), "conveyor_config_new");
            let settings = THROUGHPUT_CONFIG
                .iter()
                .map(|&(k, v)| (k.to_string(), v.to_string()))
                .chain([("mode".to_string(), "loadbalance".to_string())])
                .chain(s.config.iter().cloned());
            for (key, value) in settings {
                let (k, v) = (CString::new(key).expect("key"), CString::new(value).expect("value"));
                check("conveyor_config_set", conveyor_config_set(config, k.as_ptr(), v.as_ptr()));
            }
            for _ in 0..clients {
                check("conveyor_config_add_client", conveyor_config_add_client(config, &noop_vtable()));
            }
            let mut pipeline = std::ptr::null_mut();
            check("conveyor_pipeline_new", conveyor_pipeline_new(config, &mut pipeline));
            let producer_config = conveyor_producer_config {
                struct_size: std::mem::size_of::<conveyor_producer_config>() as u32,
                userdata: (&acked as *const AtomicU64).cast_mut().cast(),
                on_ack: Some(count_acks),
                on_drop: None,
                guaranteed: 0,
                drop_on_cancel: 0,
                free_userdata: None,
            };
            let mut producer = std::ptr::null_mut();
            check("conveyor_producer_new", conveyor_producer_new(pipeline, &producer_config, &mut producer));

            let started = Instant::now();
            let mut event = [0u8; PAYLOAD_BYTES];
            for seq in 0..s.events {
                event[..8].copy_from_slice(&seq.to_le_bytes());
                let code = conveyor_producer_publish(producer, event.as_ptr(), event.len(), u64::MAX);
                if code != CONVEYOR_OK {
                    check("conveyor_producer_publish", code);
                }
            }
            let flush_ms = FLUSH_TIMEOUT.as_millis() as u64;
            check("conveyor_pipeline_flush", conveyor_pipeline_flush(pipeline, flush_ms));
            let elapsed = started.elapsed();

            let mut report = conveyor_close_report::default();
            check("conveyor_pipeline_close_report", conveyor_pipeline_close_report(pipeline, 10_000, &mut report));
            conveyor_producer_free(producer);
            conveyor_pipeline_free(pipeline);
            let acked = acked.load(Ordering::Relaxed);
            assert!(
                acked == s.events && report.acked == s.events && report.dropped == 0 && report.drained == 1,
                "accounting does not balance: {} published, {acked} acked by callback, report {report:?}",
                s.events
            );
            s.events as f64 / elapsed.as_secs_f64()
        }
    }
}

/// The fan-out users build from sinks: one writer, a [`Broadcaster`] of two outputs,
/// each a [`QueueSink`] (so a slow output cannot stall the other) over a
/// [`PipelineSink`] whose pipeline has one no-op client. Every event reaches both
/// pipelines, so the rate is events per second per output.
///
/// [`Broadcaster`]: conveyor::sink::Broadcaster
/// [`QueueSink`]: conveyor::sink::QueueSink
/// [`PipelineSink`]: conveyor::sink::PipelineSink
mod fanout {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use conveyor::sink::{Broadcaster, Overflow, PipelineSink, QueueSink, Sink};
    use conveyor::{AnyClient, Config, Pipeline, ProducerOptions};

    use super::{NoopClient, Settings, BATCH, FLUSH_TIMEOUT, PAYLOAD_BYTES, THROUGHPUT_CONFIG};

    const OUTPUTS: usize = 2;
    /// Each output's buffer holds as many events as its pipeline's queue.
    const QUEUE_SINK_EVENTS: usize = 8192;

    /// One `write` per event.
    pub(super) fn each_event(s: &Settings) -> f64 {
        run(s, |fanout, events| {
            let mut event = [0u8; PAYLOAD_BYTES];
            for seq in 0..events {
                event[..8].copy_from_slice(&seq.to_le_bytes());
                fanout.write(&event).expect("write");
            }
        })
    }

    /// `write_batch` of [`BATCH`] events.
    pub(super) fn batches(s: &Settings) -> f64 {
        run(s, |fanout, events| {
            let storage = vec![[7u8; PAYLOAD_BYTES]; BATCH];
            let views: Vec<&[u8]> = storage.iter().map(|e| &e[..]).collect();
            let mut left = events as usize;
            while left > 0 {
                let n = left.min(BATCH);
                fanout.write_batch(&views[..n]).expect("write_batch");
                left -= n;
            }
        })
    }

    /// Builds the fan-out, runs `write(fanout, events)` on this thread and returns events
    /// per second per output, timed until both pipelines acknowledged every event;
    /// panics if either pipeline's accounting does not balance.
    fn run(s: &Settings, write: impl FnOnce(&Broadcaster, u64)) -> f64 {
        let mut config = Config::default();
        for (key, value) in THROUGHPUT_CONFIG {
            config.set(key, value).expect("benchmark configuration");
        }
        for (key, value) in &s.config {
            config.set(key, value).unwrap_or_else(|e| panic!("BENCH_CONFIG: {e}"));
        }
        let total = s.events;
        // Each output's ACK callback says when its pipeline acknowledged the last event.
        let (all_acked, wait_all_acked) = crossbeam_channel::bounded::<()>(OUTPUTS);
        let mut pipelines = Vec::new();
        let mut outputs: Vec<Arc<dyn Sink>> = Vec::new();
        for _ in 0..OUTPUTS {
            let pipeline = Arc::new(
                Pipeline::builder(config.clone()).any_client(AnyClient::sync(NoopClient)).build().expect("pipeline"),
            );
            let acked = AtomicU64::new(0);
            let all_acked = all_acked.clone();
            let on_ack = Box::new(move |n: u64| {
                if acked.fetch_add(n, Ordering::Relaxed) + n == total {
                    let _ = all_acked.send(());
                }
            });
            let options = ProducerOptions { on_ack: Some(on_ack), ..Default::default() };
            let sink = PipelineSink::new(pipeline.clone(), options, None, Duration::from_secs(10)).expect("pipeline sink");
            let queue = QueueSink::new(Arc::new(sink), QUEUE_SINK_EVENTS, Overflow::Block, FLUSH_TIMEOUT, None)
                .expect("queue sink");
            outputs.push(Arc::new(queue));
            pipelines.push(pipeline);
        }
        let fanout = Broadcaster::new(outputs);
        let started = Instant::now();
        write(&fanout, total);
        for _ in 0..OUTPUTS {
            wait_all_acked.recv_timeout(FLUSH_TIMEOUT).expect("every output acknowledged every event");
        }
        let elapsed = started.elapsed();
        fanout.close().expect("close");
        for pipeline in &pipelines {
            let stats = pipeline.stats();
            assert!(
                stats.acked == total && stats.dropped == 0 && stats.in_flight == 0,
                "accounting does not balance: {total} written, pipeline stats {stats:?}"
            );
        }
        total as f64 / elapsed.as_secs_f64()
    }
}

// ---------------------------------------------------------------------------
// References: crossbeam channels moving the same events.

/// `producers` threads send `[u8; 100]` events by value through `bounded(1024)` to
/// `consumers` threads, which read each one.
fn crossbeam_events(s: &Settings, producers: u64, consumers: usize) -> f64 {
    let (tx, rx) = crossbeam_channel::bounded::<[u8; PAYLOAD_BYTES]>(1024);
    let share = s.events / producers;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..consumers {
            let rx = rx.clone();
            scope.spawn(move || {
                let mut sum = 0u64;
                for event in rx {
                    sum = sum.wrapping_add(u64::from(event[0]));
                }
                black_box(sum);
            });
        }
        for _ in 0..producers {
            let tx = tx.clone();
            scope.spawn(move || {
                let mut event = [0u8; PAYLOAD_BYTES];
                for seq in 0..share {
                    event[..8].copy_from_slice(&seq.to_le_bytes());
                    tx.send(event).expect("send");
                }
            });
        }
        drop((tx, rx));
    });
    (share * producers) as f64 / started.elapsed().as_secs_f64()
}

fn crossbeam_1p1c(s: &Settings) -> f64 {
    crossbeam_events(s, 1, 1)
}

fn crossbeam_2p2c(s: &Settings) -> f64 {
    crossbeam_events(s, 2, 2)
}

/// One producer fills contiguous `Vec<[u8; 100]>` batches of 1024 (copying every
/// event, as the queue does) and sends them through `bounded(16)`; one consumer reads
/// every event and hands the buffer back for reuse. Without the reuse, a 100 KB
/// buffer allocated on one thread and freed on the other per batch made glibc's heap
/// part of the measurement (runs of 30 to 60 M events/s among runs of 250 M).
fn crossbeam_batches(s: &Settings) -> f64 {
    type Buffer = Vec<[u8; PAYLOAD_BYTES]>;
    let (tx, rx) = crossbeam_channel::bounded::<Buffer>(16);
    // At most 16 queued + 1 per thread exist, so returning a buffer never blocks.
    let (give_back, take_back) = crossbeam_channel::bounded::<Buffer>(32);
    let template = vec![[7u8; PAYLOAD_BYTES]; BATCH];
    let batches = s.events.div_ceil(BATCH as u64);
    let started = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut sum = 0u64;
            for mut batch in rx {
                for event in &batch {
                    sum = sum.wrapping_add(u64::from(event[0]));
                }
                batch.clear();
                let _ = give_back.send(batch);
            }
            black_box(sum);
        });
        for _ in 0..batches {
            let mut batch = take_back.try_recv().unwrap_or_else(|_| Vec::with_capacity(BATCH));
            batch.extend_from_slice(&template);
            tx.send(batch).expect("send");
        }
        drop(tx);
    });
    (batches * BATCH as u64) as f64 / started.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------------------
// The harness.

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn millions(rate: f64) -> String {
    format!("{:.2} M/s", rate / 1e6)
}

/// Runs the pairs of one scenario, prints its result line and returns its JSON record.
fn measure(scenario: &Scenario, s: &Settings) -> serde_json::Value {
    let s = &Settings { events: s.events * scenario.scale, ..s.clone() };
    eprintln!("{}: warm-up", scenario.name);
    (scenario.candidate)(s);
    (scenario.reference)(s);
    let (mut rates, mut references, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..s.pairs {
        let (candidate, reference) = if pair % 2 == 0 {
            let c = (scenario.candidate)(s);
            (c, (scenario.reference)(s))
        } else {
            let r = (scenario.reference)(s);
            ((scenario.candidate)(s), r)
        };
        eprintln!(
            "{}: pair {}/{}  {} vs reference {}  ratio {:.3}",
            scenario.name,
            pair + 1,
            s.pairs,
            millions(candidate),
            millions(reference),
            candidate / reference
        );
        rates.push(candidate);
        references.push(reference);
        ratios.push(candidate / reference);
    }
    let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = ratios.iter().copied().fold(0.0, f64::max);
    let ratio = median(&mut ratios);
    let rate = median(&mut rates);
    let reference = median(&mut references);
    eprintln!(
        "{}: median {} vs reference {} ({}); ratios {lowest:.3} .. {highest:.3}, spread {:.0}%",
        scenario.name,
        millions(rate),
        millions(reference),
        scenario.reference_name,
        (highest - lowest) / ratio * 100.0
    );
    println!("bench {} {:.0} ratio={ratio:.3} goal={}", scenario.name, rate, scenario.goal);
    serde_json::json!({
        "scenario": scenario.name,
        "events_per_s": rate.round(),
        "reference": scenario.reference_name,
        "reference_events_per_s": reference.round(),
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "ratio_min": (lowest * 1000.0).round() / 1000.0,
        "ratio_max": (highest * 1000.0).round() / 1000.0,
        "goal": scenario.goal,
        "pairs": s.pairs,
        "events_per_run": s.events,
    })
}

/// `$BENCH_RESULTS_DIR/rust.jsonl` (default `build/bench/rust.jsonl`), emptied.
fn open_results() -> File {
    let dir = std::env::var_os("BENCH_RESULTS_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("build/bench"), PathBuf::from);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let path = dir.join("rust.jsonl");
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// Runs only the candidate, for a profiler.
fn profile(scenario: &Scenario, s: &Settings) {
    let s = &Settings { events: s.events * scenario.scale, ..s.clone() };
    for run in 0..s.pairs {
        eprintln!("{}: run {}/{}  {}", scenario.name, run + 1, s.pairs, millions((scenario.candidate)(s)));
    }
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.parse() {
        Ok(n) if n > 0 => Some(n),
        _ => panic!("{name}={value} must be a positive whole number"),
    }
}

fn main() {
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0");
    let quick = flag("BENCH_QUICK");
    let profiling = flag("BENCH_PROFILE");
    let (events, pairs) = if quick { (200_000, 3) } else { (4_000_000, 7) };
    let config = std::env::var("BENCH_CONFIG").unwrap_or_default();
    let config = config
        .split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => panic!("BENCH_CONFIG: `{item}` is not key=value"),
        })
        .collect();
    let settings = Settings {
        config,
        events: env_number("BENCH_EVENTS").unwrap_or(events),
        pairs: env_number("BENCH_PAIRS").map_or(pairs, |p| p as usize),
    };
    // `cargo bench` passes `--bench`; other arguments select scenarios by name.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    eprintln!(
        "conveyor {} benchmarks: {} events of {PAYLOAD_BYTES} bytes per run, {} pairs per scenario, config {:?} + {:?}",
        conveyor::VERSION,
        settings.events,
        settings.pairs,
        THROUGHPUT_CONFIG,
        settings.config
    );
    let mut results = (!profiling).then(open_results);
    for scenario in scenarios() {
        if filters.is_empty() || filters.iter().any(|f| scenario.name.contains(f.as_str())) {
            match &mut results {
                None => profile(&scenario, &settings),
                Some(file) => {
                    let record = measure(&scenario, &settings);
                    writeln!(file, "{record}").expect("writing the results file");
                }
            }
        }
    }
}
