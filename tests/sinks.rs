//! Sinks: research/goevents-aresdb.md §4 cases 1–22 (with the "Fixed" behaviour), and
//! fan-out of pipelines through sinks.

mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use conveyor::sink::*;
use conveyor::*;

/// A sink that records what it got; it can fail, block or report closed on demand.
#[derive(Default)]
struct Probe {
    got: Mutex<Vec<Vec<u8>>>,
    closes: AtomicUsize,
    fail_next: AtomicUsize,
    closed_after: Mutex<Option<usize>>,
    /// While set, writes wait until the paired sender is dropped.
    gate: Mutex<Option<crossbeam_channel::Receiver<()>>>,
}

impl Probe {
    fn new() -> Arc<Probe> {
        Arc::default()
    }
    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Makes writes wait until the returned sender is dropped.
    fn hold(&self) -> crossbeam_channel::Sender<()> {
        let (tx, rx) = crossbeam_channel::bounded(0);
        *self.gate.lock().unwrap() = Some(rx);
        tx
    }
}

impl Sink for Probe {
    fn write(&self, event: &[u8]) -> Result<()> {
        let gate = self.gate.lock().unwrap().clone();
        if let Some(g) = gate {
            let _ = g.recv();
        }
        if self.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(Error::Client("probe failure".into()));
        }
        let mut got = self.got.lock().unwrap();
        if self.closed_after.lock().unwrap().is_some_and(|n| got.len() >= n) {
            return Err(Error::Closed);
        }
        got.push(event.to_vec());
        Ok(())
    }
    fn close(&self) -> Result<()> {
        self.closes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn stats(&self) -> SinkStats {
        SinkStats { kind: "custom", written: self.count() as u64, ..Default::default() }
    }
}

fn dyn_sink(p: &Arc<Probe>) -> Arc<dyn Sink> {
    p.clone()
}

fn close_check(sink: &dyn Sink) {
    sink.close().expect("first close");
    sink.close().expect("second close");
    assert_eq!(sink.write(b"late"), Err(Error::Closed));
}

// Case 1
#[test]
fn every_sink_closes_twice_and_refuses_writes_after() {
    close_check(&Broadcaster::new(vec![dyn_sink(&Probe::new())]));
    close_check(&QueueSink::new(dyn_sink(&Probe::new()), 8, Overflow::Block, PATIENCE, None).unwrap());
    close_check(&Filter::new(dyn_sink(&Probe::new()), |_: &[u8]| true));
    close_check(&RetryingSink::new(dyn_sink(&Probe::new()), Box::new(SinkBreaker::new(3, Duration::from_millis(1)))));
    close_check(&ChannelSink::new(4));
    close_check(&FnSink::new(|_: &[u8]| Ok(()), || {}));
    let rec = Recorder::new();
    let p = Arc::new(Pipeline::builder(fast_config()).client(Mock::ok("a", &rec)).build().unwrap());
    close_check(&PipelineSink::new(p, ProducerOptions::default(), None, PATIENCE).unwrap());
}

// Case 2
#[test]
fn broadcast_of_concurrent_writes_reaches_every_member_exactly_once() {
    let probes: Vec<Arc<Probe>> = (0..10).map(|_| Probe::new()).collect();
    let b = Arc::new(Broadcaster::new(probes.iter().map(dyn_sink).collect()));
    let threads: Vec<_> = (0..10)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for i in 0..100u32 {
                    b.write(&payload(t, i)).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    for p in &probes {
        let mut got = p.got.lock().unwrap().clone();
        assert_eq!(got.len(), 1000);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 1000, "no event twice");
    }
    assert_eq!(b.stats().written, 1000);
}

// Case 3
#[test]
fn adding_twice_delivers_once_and_removing_unknown_is_a_no_op() {
    let p = Probe::new();
    let b = Broadcaster::new(vec![dyn_sink(&p), dyn_sink(&p)]);
    b.add(dyn_sink(&p)).unwrap();
    assert_eq!(b.len(), 1);
    b.remove(&dyn_sink(&Probe::new())).unwrap();
    b.write(b"x").unwrap();
    assert_eq!(p.count(), 1);
}

// Case 4
#[test]
fn a_removed_member_gets_nothing_more_and_is_not_closed() {
    let (a, c) = (Probe::new(), Probe::new());
    let b = Broadcaster::new(vec![dyn_sink(&a), dyn_sink(&c)]);
    b.write(b"1").unwrap();
    b.remove(&dyn_sink(&a)).unwrap();
    b.write(b"2").unwrap();
    assert_eq!((a.count(), c.count()), (1, 2));
    assert_eq!(a.closes.load(Ordering::SeqCst), 0);
}

// Case 5 (Fixed: no skipped or doubled member)
#[test]
fn a_member_reporting_closed_is_removed_and_the_others_get_the_event_once() {
    let probes: Vec<Arc<Probe>> = (0..4).map(|_| Probe::new()).collect();
    *probes[1].closed_after.lock().unwrap() = Some(0);
    let b = Broadcaster::new(probes.iter().map(dyn_sink).collect());
    b.write(b"e").unwrap();
    assert_eq!(probes.iter().map(|p| p.count()).collect::<Vec<_>>(), vec![1, 0, 1, 1]);
    assert_eq!(b.len(), 3);
    b.write(b"f").unwrap();
    assert_eq!(probes.iter().map(|p| p.count()).collect::<Vec<_>>(), vec![2, 0, 2, 2]);
}

// Case 6
#[test]
fn broadcaster_close_closes_each_member_once() {
    let probes: Vec<Arc<Probe>> = (0..3).map(|_| Probe::new()).collect();
    let b = Broadcaster::new(probes.iter().map(dyn_sink).collect());
    b.close().unwrap();
    b.close().unwrap();
    assert!(probes.iter().all(|p| p.closes.load(Ordering::SeqCst) == 1));
    assert_eq!(b.add(dyn_sink(&Probe::new())), Err(Error::Closed));
    assert_eq!(b.remove(&dyn_sink(&probes[0])), Err(Error::Closed));
    assert_eq!(b.write(b"x"), Err(Error::Closed));
}

// Case 7 (Fixed: isolation built in with queues)
#[test]
fn a_stalled_member_behind_a_queue_does_not_delay_the_others() {
    let (stalled, fast) = (Probe::new(), Probe::new());
    let hold = stalled.hold();
    let q = Arc::new(QueueSink::new(dyn_sink(&stalled), 10_000, Overflow::Block, PATIENCE, None).unwrap());
    let b = Broadcaster::new(vec![q.clone() as Arc<dyn Sink>, dyn_sink(&fast)]);
    for i in 0..1000 {
        b.write(&payload(0, i)).unwrap();
    }
    assert_eq!(fast.count(), 1000, "the fast member got everything while the other is stuck");
    drop(hold);
    let report = q.close_within(PATIENCE);
    assert_eq!((report.delivered, report.dropped, report.drained), (1000, 0, true));
}

// Case 8 (Fixed: deterministic)
#[test]
fn a_closed_channel_with_room_always_refuses_and_keeps_what_it_buffered() {
    let ch = ChannelSink::new(100);
    ch.write(b"a").unwrap();
    ch.write(b"b").unwrap();
    ch.close().unwrap();
    for _ in 0..100 {
        assert_eq!(ch.write(b"c"), Err(Error::Closed));
    }
    assert_eq!(ch.recv(None).unwrap(), b"a");
    assert_eq!(ch.recv(None).unwrap(), b"b");
    assert_eq!(ch.recv(None), Err(Error::Closed));
}

#[test]
fn closing_a_full_channel_wakes_a_blocked_writer() {
    let ch = Arc::new(ChannelSink::new(1));
    ch.write(b"a").unwrap();
    let c = ch.clone();
    let writer = std::thread::spawn(move || c.write(b"b"));
    ch.close().unwrap();
    assert_eq!(writer.join().unwrap(), Err(Error::Closed));
    assert_eq!(ch.recv(Some(Duration::ZERO)).unwrap(), b"a");
}

#[test]
fn channel_reads_concurrent_writers_completely() {
    let ch = Arc::new(ChannelSink::new(0));
    let writers: Vec<_> = (0..10)
        .map(|t| {
            let c = ch.clone();
            std::thread::spawn(move || (0..10).for_each(|i| c.write(&payload(t, i)).unwrap()))
        })
        .collect();
    let mut n = 0;
    while n < 100 {
        ch.recv(Some(PATIENCE)).unwrap();
        n += 1;
    }
    writers.into_iter().for_each(|w| w.join().unwrap());
    assert_eq!(ch.recv(Some(Duration::from_millis(1))), Err(Error::Timeout));
}

// Case 9
#[test]
fn filter_keeps_evens() {
    let p = Probe::new();
    let f = Filter::new(dyn_sink(&p), |e: &[u8]| e[0] % 2 == 0);
    for i in 0u8..100 {
        f.write(&[i]).unwrap();
    }
    assert_eq!(p.count(), 50);
    let s = f.stats();
    assert_eq!((s.written, s.forwarded, s.filtered), (100, 50, 50));
}

// Case 10
#[test]
fn queue_sink_keeps_fifo_with_a_slow_consumer() {
    let p = Probe::new();
    let q = QueueSink::new(dyn_sink(&p), 64, Overflow::Block, PATIENCE, None).unwrap();
    for i in 0..10_000 {
        q.write(&payload(0, i)).unwrap();
    }
    q.close().unwrap();
    let got = p.got.lock().unwrap();
    assert_eq!(got.len(), 10_000);
    assert!(got.iter().enumerate().all(|(i, e)| *e == payload(0, i as u32)));
}

// Case 11
#[test]
fn queue_sink_close_drains_then_closes_downstream() {
    let p = Probe::new();
    let q = QueueSink::new(dyn_sink(&p), 1000, Overflow::Block, PATIENCE, None).unwrap();
    for i in 0..500 {
        q.write(&payload(0, i)).unwrap();
    }
    let r = q.close_within(PATIENCE);
    assert_eq!((r.delivered, r.dropped, r.drained), (500, 0, true));
    assert_eq!(p.count(), 500);
    assert_eq!(p.closes.load(Ordering::SeqCst), 1);
}

// Case 12 (Fixed: close has a deadline and reports the drops)
#[test]
fn queue_sink_in_front_of_a_dead_sink_closes_within_its_deadline() {
    let dead = Probe::new();
    let hold = dead.hold();
    let dropped = Arc::new(AtomicU64::new(0));
    let d = dropped.clone();
    let q = QueueSink::new(
        dyn_sink(&dead),
        100,
        Overflow::Block,
        PATIENCE,
        Some(Box::new(move |evs| {
            d.fetch_add(evs.len() as u64, Ordering::SeqCst);
        })),
    )
    .unwrap();
    for i in 0..50 {
        q.write(&payload(0, i)).unwrap();
    }
    wait_until("the dead sink holds the first event", || q.stats().queued == 49);
    let started = Instant::now();
    let r = q.close_within(Duration::from_millis(50));
    assert!(started.elapsed() < Duration::from_secs(5), "close took {:?}", started.elapsed());
    assert!(!r.drained);
    assert_eq!(r.dropped, 49, "all but the one stuck in the dead sink");
    assert_eq!(dropped.load(Ordering::SeqCst), 49);
    drop(hold);
}

// Case 13
#[test]
fn bounded_queue_sink_overflow_policies() {
    struct Held {
        hold: crossbeam_channel::Sender<()>,
        queue: Arc<QueueSink>,
        dropped: Arc<Mutex<Vec<Vec<u8>>>>,
    }
    impl Held {
        fn release(self) -> Arc<QueueSink> {
            drop(self.hold);
            self.queue
        }
    }
    let make = |overflow| {
        let probe = Probe::new();
        let hold = probe.hold();
        let dropped: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let d = dropped.clone();
        let queue = Arc::new(
            QueueSink::new(dyn_sink(&probe), 2, overflow, Duration::ZERO, Some(Box::new(move |evs| d.lock().unwrap().extend(evs.iter().map(|e| e.to_vec())))))
                .unwrap(),
        );
        queue.write(b"0").unwrap();
        wait_until("the worker holds event 0", || queue.stats().queued == 0);
        queue.write(b"1").unwrap();
        queue.write(b"2").unwrap();
        Held { hold, queue, dropped }
    };
    let newest = make(Overflow::DropNewest);
    assert_eq!(newest.queue.write(b"3"), Err(Error::Full));
    assert_eq!(*newest.dropped.lock().unwrap(), vec![b"3".to_vec()]);
    newest.release();

    let oldest = make(Overflow::DropOldest);
    oldest.queue.write(b"3").unwrap();
    assert_eq!(*oldest.dropped.lock().unwrap(), vec![b"1".to_vec()]);
    assert_eq!(oldest.queue.stats().dropped, 1);
    oldest.release();

    let block = make(Overflow::Block);
    let q = block.queue.clone();
    let writer = std::thread::spawn(move || q.write(b"3"));
    std::thread::sleep(Duration::from_millis(20));
    assert!(!writer.is_finished(), "a full blocking queue applies back-pressure");
    let queue = block.release();
    writer.join().unwrap().unwrap();
    let r = queue.close_within(PATIENCE);
    assert_eq!((r.delivered, r.dropped), (4, 0));
}

// Case 14 (Fixed: surfaced)
#[test]
fn downstream_errors_are_counted_and_reported() {
    let p = Probe::new();
    p.fail_next.store(3, Ordering::SeqCst);
    let dropped = Arc::new(AtomicU64::new(0));
    let d = dropped.clone();
    let q = QueueSink::new(dyn_sink(&p), 16, Overflow::Block, PATIENCE, Some(Box::new(move |e| { d.fetch_add(e.len() as u64, Ordering::SeqCst); }))).unwrap();
    for i in 0..10 {
        q.write(&payload(0, i)).unwrap();
    }
    let r = q.close_within(PATIENCE);
    assert_eq!((r.delivered, r.dropped), (7, 3));
    assert_eq!(dropped.load(Ordering::SeqCst), 3);
    assert_eq!(q.stats().failures, 3);
}

// Case 15 (Fixed: empty payloads are fine)
#[test]
fn empty_payloads_pass_through_every_sink() {
    let p = Probe::new();
    let chain: Arc<dyn Sink> = Arc::new(QueueSink::new(Arc::new(Filter::new(dyn_sink(&p), |_: &[u8]| true)), 4, Overflow::Block, PATIENCE, None).unwrap());
    let b = Broadcaster::new(vec![chain.clone()]);
    b.write(b"").unwrap();
    b.close().unwrap();
    assert_eq!(*p.got.lock().unwrap(), vec![Vec::<u8>::new()]);
}

/// Fails the first 50 writes, then 90% of writes (a fixed pseudo-random sequence).
struct Flaky {
    attempts: AtomicUsize,
    ok: Mutex<Vec<Vec<u8>>>,
    rng: Mutex<u64>,
}

impl Sink for Flaky {
    fn write(&self, e: &[u8]) -> Result<()> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        let mut r = self.rng.lock().unwrap();
        *r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        if attempt < 50 || (*r >> 33) % 10 != 0 {
            return Err(Error::Client("flaky".into()));
        }
        self.ok.lock().unwrap().push(e.to_vec());
        Ok(())
    }
    fn close(&self) -> Result<()> {
        Ok(())
    }
    fn stats(&self) -> SinkStats {
        SinkStats::default()
    }
}

fn flaky_run(strategy: Box<dyn SinkRetryStrategy>) {
    let flaky = Arc::new(Flaky { attempts: AtomicUsize::new(0), ok: Default::default(), rng: Mutex::new(42) });
    let r = Arc::new(RetryingSink::new(flaky.clone(), strategy));
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let r = r.clone();
            std::thread::spawn(move || r.write(&payload(0, i)))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(flaky.ok.lock().unwrap().len(), 100);
    close_check(r.as_ref());
}

// Case 16
#[test]
fn retrying_sink_delivers_everything_through_a_flaky_sink() {
    flaky_run(Box::new(SinkBreaker::new(3, Duration::from_micros(100))));
    flaky_run(Box::new(SinkExponentialBackoff::new(Duration::from_micros(10), Duration::from_micros(10), Duration::from_micros(500), 9)));
}

// Case 17
#[test]
fn downstream_closed_is_returned_at_once() {
    let p = Probe::new();
    *p.closed_after.lock().unwrap() = Some(0);
    let strategy = CountingRetries::new(100);
    let calls = strategy.proceeds.clone();
    let r = RetryingSink::new(dyn_sink(&p), Box::new(strategy));
    assert_eq!(r.write(b"x"), Err(Error::Closed));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one attempt, no retry");
}

// Case 18 (Fixed: a give-up is distinguishable)
#[test]
fn a_strategy_drop_is_reported_to_the_writer() {
    let p = Probe::new();
    p.fail_next.store(10, Ordering::SeqCst);
    let r = RetryingSink::new(dyn_sink(&p), Box::new(CountingRetries::new(3)));
    match r.write(b"x") {
        Err(Error::Client(msg)) => assert!(msg.contains("dropped by the retry strategy after 3 attempts"), "{msg}"),
        other => panic!("expected a reported drop, got {other:?}"),
    }
    assert_eq!(r.stats().dropped, 1);
}

// Case 19
#[test]
fn close_during_a_backoff_wait_returns_closed_promptly() {
    let p = Probe::new();
    p.fail_next.store(usize::MAX, Ordering::SeqCst);
    let r = Arc::new(RetryingSink::new(dyn_sink(&p), Box::new(SinkBreaker::new(1, Duration::from_secs(600)))));
    let w = r.clone();
    let writer = std::thread::spawn(move || w.write(b"x"));
    wait_until("the first attempt failed", || r.stats().failures >= 1);
    let started = Instant::now();
    r.close().unwrap();
    assert_eq!(writer.join().unwrap(), Err(Error::Closed));
    assert!(started.elapsed() < Duration::from_secs(5));
}

// Case 20
#[test]
fn retrying_sink_serializes_concurrent_writers_in_order() {
    let p = Probe::new();
    p.fail_next.store(5, Ordering::SeqCst);
    let r = Arc::new(RetryingSink::new(dyn_sink(&p), Box::new(SinkBreaker::new(100, Duration::ZERO))));
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let r = r.clone();
            std::thread::spawn(move || (0..200u32).for_each(|i| r.write(&payload(t, i)).unwrap()))
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let got = p.got.lock().unwrap();
    for t in 0..4u32 {
        let mine: Vec<&Vec<u8>> = got.iter().filter(|e| e[..4] == t.to_le_bytes()).collect();
        assert_eq!(mine.len(), 200);
        assert!(mine.iter().enumerate().all(|(i, e)| **e == payload(t, i as u32)), "writer {t} out of order");
    }
}

// Case 21
#[test]
fn breaker_delays_after_threshold_and_resets_on_success() {
    let mut b = SinkBreaker::new(3, Duration::from_millis(100));
    for _ in 0..3 {
        assert_eq!(b.proceed(), Duration::ZERO);
        assert!(!b.failure(), "a breaker never drops");
    }
    let wait = b.proceed();
    assert!(wait > Duration::from_millis(50) && wait <= Duration::from_millis(100), "{wait:?}");
    b.success();
    assert_eq!(b.proceed(), Duration::ZERO);
}

// Case 22 (Fixed: overflow-safe, seeded)
#[test]
fn exponential_backoff_bounds_and_overflow() {
    let s = Duration::from_secs;
    let mut e = SinkExponentialBackoff::new(s(1), s(1), s(20), 5);
    assert_eq!(e.proceed(), Duration::ZERO);
    let mut bounds = Vec::new();
    for _ in 0..7 {
        assert!(!e.failure());
        bounds.push(e.bound().as_secs());
        for _ in 0..1000 {
            assert!(e.proceed() < e.bound());
        }
    }
    assert_eq!(bounds, vec![2, 3, 5, 9, 17, 20, 20]);
    for _ in 0..10_000 {
        e.failure();
    }
    assert_eq!(e.bound(), s(20));
    e.success();
    assert_eq!(e.proceed(), Duration::ZERO);
}

// --- pipelines as sinks, sinks as clients ------------------------------------------

#[test]
fn a_broadcaster_of_two_pipelines_keeps_delivering_when_one_output_is_dead() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = None;
    let live = Arc::new(Pipeline::builder(c.clone()).client(Mock::ok("live1", &rec)).client(Mock::ok("live2", &rec)).build().unwrap());
    let dead = Arc::new(
        Pipeline::builder(c)
            .client(Mock::ok("dead1", &rec).connect_failures(usize::MAX))
            .client(Mock::ok("dead2", &rec).connect_failures(usize::MAX))
            .build()
            .unwrap(),
    );
    let live_sink: Arc<dyn Sink> = Arc::new(PipelineSink::new(live.clone(), ProducerOptions::default(), None, PATIENCE).unwrap());
    let dead_sink: Arc<dyn Sink> = Arc::new(PipelineSink::new(dead.clone(), ProducerOptions::default(), None, Duration::ZERO).unwrap());
    let dropped = Arc::new(AtomicU64::new(0));
    let d = dropped.clone();
    let isolate = |s: Arc<dyn Sink>, overflow, hook: Option<DropCallback>| -> Arc<dyn Sink> {
        Arc::new(QueueSink::new(s, 256, overflow, Duration::from_millis(50), hook).unwrap())
    };
    let fanout = Broadcaster::new(vec![
        isolate(live_sink, Overflow::Block, None),
        isolate(dead_sink, Overflow::DropOldest, Some(Box::new(move |e| { d.fetch_add(e.len() as u64, Ordering::SeqCst); }))),
    ]);
    for i in 0..20_000 {
        fanout.write(&payload(0, i)).unwrap();
    }
    wait_until("the live output acked everything", || live.stats().acked == 20_000);
    assert_eq!(dead.stats().acked, 0);
    fanout.close().unwrap();
    let dead_stats = dead.stats();
    assert_eq!(dead_stats.in_flight, 0);
    assert_eq!(dead_stats.acked + dead_stats.dropped + dropped.load(Ordering::SeqCst), 20_000, "every event has an outcome on the dead side too");
}

#[test]
fn a_sink_serves_as_a_client() {
    let ch = Arc::new(ChannelSink::new(10_000));
    let p = Pipeline::builder(fast_config()).client(SinkClient::new(ch.clone())).build().unwrap();
    let producer = p.producer(ProducerOptions::default()).unwrap();
    for i in 0..1000 {
        producer.publish(&payload(0, i), None).unwrap();
    }
    p.flush(PATIENCE).unwrap();
    for i in 0..1000 {
        assert_eq!(ch.recv(Some(PATIENCE)).unwrap(), payload(0, i));
    }
    assert_eq!(p.stats().acked, 1000);
}

#[test]
fn a_closed_sink_client_counts_as_broken_and_events_are_retried_elsewhere() {
    let rec = Recorder::new();
    let ch = Arc::new(ChannelSink::new(10));
    ch.close().unwrap();
    let mut c = fast_config();
    c.mode = Some(Mode::Failover);
    c.failover_policy = FailoverPolicy::Ordered;
    let p = Pipeline::builder(c).client(SinkClient::new(ch)).client(Mock::ok("backup", &rec)).build().unwrap();
    let producer = p.producer(ProducerOptions::default()).unwrap();
    producer.publish(b"x", None).unwrap();
    p.flush(PATIENCE).unwrap();
    assert_eq!(rec.times(b"x"), 1);
}

#[test]
fn sink_stats_nest() {
    let p = Probe::new();
    let q = QueueSink::new(Arc::new(Filter::new(dyn_sink(&p), |e: &[u8]| !e.is_empty())), 8, Overflow::Block, PATIENCE, None).unwrap();
    q.write(b"a").unwrap();
    q.write(b"").unwrap();
    q.close().unwrap();
    let s = q.stats();
    assert_eq!((s.kind, s.written, s.forwarded), ("queue", 2, 2));
    assert_eq!((s.inner[0].kind, s.inner[0].filtered, s.inner[0].forwarded), ("filter", 1, 1));
    assert!(serde_json::to_string(&s).unwrap().contains("\"filter\""));
}
