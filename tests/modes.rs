//! Output-mode behaviour: the cases of research/libbeat.md §7, with mock clients.

mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use conveyor::*;

fn publish_n(pipeline: &Pipeline, ledger: &Arc<Ledger>, guaranteed: bool, n: u32) -> Producer {
    let producer = pipeline.producer(ledger.options(guaranteed)).unwrap();
    for i in 0..n {
        let p = payload(0, i);
        ledger.will_publish(&p);
        producer.publish(&p, Some(PATIENCE)).unwrap();
    }
    producer
}

fn single(config: Config, client: Mock) -> Pipeline {
    let mut c = config;
    c.mode = Some(Mode::Single);
    Pipeline::builder(c).client(client).build().unwrap()
}

// --- attempts and backoff -------------------------------------------------------

#[test]
fn backoff_doubles_to_max_and_resets_on_success() {
    let mut b = ExponentialBackoff::seeded(Duration::from_secs(1), Duration::from_secs(8), 7);
    let nominal: Vec<u64> = (0..5)
        .map(|_| {
            let n = b.nominal();
            let wait = b.failure();
            assert!(wait >= n / 2 && wait <= n, "jittered wait {wait:?} outside [{:?}, {n:?}]", n / 2);
            n.as_secs()
        })
        .collect();
    assert_eq!(nominal, vec![1, 2, 4, 8, 8]);
    b.success();
    assert_eq!(b.nominal(), Duration::from_secs(1));
}

#[test]
fn backoff_never_overflows() {
    let mut b = ExponentialBackoff::new(Duration::from_millis(1), Duration::from_secs(20));
    for _ in 0..10_000 {
        b.failure();
    }
    assert_eq!(b.nominal(), Duration::from_secs(20));
    let mut huge = ExponentialBackoff::new(Duration::from_secs(u64::MAX / 4), Duration::MAX);
    for _ in 0..200 {
        huge.failure();
    }
    assert_eq!(huge.nominal(), Duration::MAX);
}

#[test]
fn backoff_wait_is_cut_short_by_shutdown() {
    let s = Shutdown::new();
    let s2 = s.clone();
    let waiter = std::thread::spawn(move || s2.sleep(Duration::from_secs(600)));
    s.fire();
    assert!(!waiter.join().unwrap(), "sleep reports that shutdown fired");
    assert!(!s.sleep(Duration::from_secs(600)), "a fired latch never sleeps");
}

#[test]
fn breaker_waits_after_threshold_and_resets() {
    let mut b = Breaker::new(3, Duration::from_millis(100));
    assert_eq!(b.failure(), Duration::ZERO);
    assert_eq!(b.failure(), Duration::ZERO);
    assert_eq!(b.failure(), Duration::from_millis(100));
    assert_eq!(b.failure(), Duration::from_millis(100));
    b.success();
    assert_eq!(b.failure(), Duration::ZERO);
}

#[test]
fn max_retries_zero_means_one_attempt() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = Some(0);
    let p = single(c, Mock::failing("a", &rec, 1, Published::retry(0)));
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 1);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("max_retries 0"), (0, 1));
    assert_eq!(rec.publishes.load(Ordering::SeqCst), 1, "exactly one publish attempt");
    assert_eq!(p.stats().dropped_batches, 1);
}

#[test]
fn infinite_retries_deliver_exactly_once() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = None;
    let p = single(c, Mock::failing("a", &rec, 25, Published::broken(0)));
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 10);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("infinite"), (10, 0));
    for i in 0..10 {
        assert_eq!(rec.times(&payload(0, i)), 1);
    }
}

#[test]
fn guaranteed_overrides_a_finite_limit() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = Some(2);
    let p = single(c, Mock::failing("a", &rec, 25, Published::broken(0)));
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, true, 10);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("guaranteed"), (10, 0));
    assert_eq!(rec.distinct(), 10);
}

#[test]
fn progress_resets_the_attempt_count() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = Some(2);
    let p = single(c, Mock::new("a", &rec, Box::new(|_, _| Published::broken(1))));
    let ledger = Ledger::new();
    let producer = p.producer(ledger.options(false)).unwrap();
    let batch: Vec<Vec<u8>> = (0..10).map(|i| payload(0, i)).collect();
    let views: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
    batch.iter().for_each(|b| ledger.will_publish(b));
    assert_eq!(producer.publish_batch(&views, None).unwrap(), 10);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("progress"), (10, 0));
    assert!(batch.iter().all(|b| rec.times(b) == 1), "each event delivered exactly once");
}

#[test]
fn drops_are_counted_per_batch() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = Some(0);
    c.bulk_max_size = 5;
    c.flush_min_events = 5;
    c.flush_timeout = Duration::from_secs(5);
    let p = single(c, Mock::new("a", &rec, Box::new(|_, _| Published::retry(0))));
    let ledger = Ledger::new();
    let producer = p.producer(ledger.options(false)).unwrap();
    let events: Vec<Vec<u8>> = (0..15).map(|i| payload(0, i)).collect();
    events.iter().for_each(|e| ledger.will_publish(e));
    let views: Vec<&[u8]> = events.iter().map(Vec::as_slice).collect();
    producer.publish_batch(&views, None).unwrap();
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("per batch"), (0, 15));
    assert_eq!(p.stats().dropped_batches, 3, "three batches of five");
}

// --- single ----------------------------------------------------------------------

#[test]
fn single_connect_fails_twice_then_succeeds() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = Some(2);
    let p = single(c, Mock::ok("a", &rec).connect_failures(2));
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 3);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("connect retry"), (3, 0));
    assert_eq!(rec.calls().iter().filter(|c| c.starts_with("connect")).count(), 3);
    assert_eq!(rec.distinct(), 3);
}

#[test]
fn single_connect_always_fails_drops_after_the_limit() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = Some(2);
    let p = single(c, Mock::ok("a", &rec).connect_failures(usize::MAX));
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 1);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("connect always fails"), (0, 1));
    assert_eq!(rec.calls().iter().filter(|c| c.starts_with("connect")).count(), 3, "exactly 3 tries");
    let stats = p.stats();
    assert_eq!(stats.clients[0].connect_failures, 3);
    assert!(stats.clients[0].last_error.as_deref().unwrap_or("").contains("refuses"));
}

#[test]
fn single_send_failure_closes_then_reconnects() {
    let rec = Recorder::new();
    let p = single(fast_config(), Mock::failing("a", &rec, 1, Published::broken(0)));
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 1);
    p.flush(PATIENCE).unwrap();
    let calls = rec.calls();
    let publish = calls.iter().position(|c| c.starts_with("publish")).unwrap();
    assert_eq!(&calls[publish..publish + 4], ["publish a 1", "close a", "connect a", "publish a 1"]);
}

#[test]
fn single_partial_publish_resends_only_the_rest() {
    let rec = Recorder::new();
    let p = single(fast_config(), Mock::new("a", &rec, Box::new(|call, ev| if call == 0 { Published::broken(4) } else { Published::all(ev.len()) })));
    let ledger = Ledger::new();
    let producer = p.producer(ledger.options(false)).unwrap();
    let events: Vec<Vec<u8>> = (0..10).map(|i| payload(0, i)).collect();
    events.iter().for_each(|e| ledger.will_publish(e));
    let views: Vec<&[u8]> = events.iter().map(Vec::as_slice).collect();
    producer.publish_batch(&views, None).unwrap();
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("partial"), (10, 0));
    assert_eq!(rec.calls().iter().filter(|c| c.starts_with("publish")).cloned().collect::<Vec<_>>(), ["publish a 10", "publish a 6"]);
    assert!(events.iter().all(|e| rec.times(e) == 1));
}

#[test]
fn single_close_during_infinite_retries_drops_promptly() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = None;
    let p = single(c, Mock::new("a", &rec, Box::new(|_, _| Published::broken(0))));
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, true, 5);
    wait_until("a few attempts", || rec.publishes.load(Ordering::SeqCst) >= 3);
    let started = Instant::now();
    let report = p.close(Duration::from_millis(20)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "close took {:?}", started.elapsed());
    assert_eq!((report.acked, report.dropped, report.drained), (0, 5, false));
    assert_eq!(ledger.assert_settled("close"), (0, 5));
}

// --- failover --------------------------------------------------------------------

fn failover(config: Config, clients: Vec<Mock>) -> Pipeline {
    let mut c = config;
    c.mode = Some(Mode::Failover);
    clients.into_iter().fold(Pipeline::builder(c), |b, m| b.client(m)).build().unwrap()
}

#[test]
fn failover_moves_to_the_other_host() {
    let rec = Recorder::new();
    let p = failover(fast_config(), vec![Mock::failing("a", &rec, 1, Published::broken(0)), Mock::failing("b", &rec, 1, Published::broken(0))]);
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 1);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("failover"), (1, 0));
    let connects: Vec<String> = rec.calls().into_iter().filter(|c| c.starts_with("connect")).collect();
    assert!(connects.len() >= 2, "{connects:?}");
    assert_ne!(connects[0], connects[1], "the second connect goes to the other host");
    assert_eq!(rec.times(&payload(0, 0)), 1);
}

fn failover_sequence(policy: FailoverPolicy) -> Vec<String> {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.failover_policy = policy;
    c.max_retries = None;
    c.bulk_max_size = 1;
    let mocks = ["a", "b", "c", "d"].iter().map(|n| Mock::new(n, &rec, Box::new(|call, ev| if call < 3 { Published::broken(0) } else { Published::all(ev.len()) }))).collect();
    let p = failover(c, mocks);
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 1);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("sequence"), (1, 0));
    assert_eq!(rec.max_active.load(Ordering::SeqCst), 1, "no two hosts in use at once");
    rec.calls().into_iter().filter_map(|c| c.strip_prefix("connect ").map(str::to_string)).collect()
}

#[test]
fn failover_random_never_picks_the_host_that_just_failed() {
    for _ in 0..5 {
        let seq = failover_sequence(FailoverPolicy::Random);
        assert!(seq.len() >= 2);
        for w in seq.windows(2) {
            assert_ne!(w[0], w[1], "random failover repeated {} in {seq:?}", w[0]);
        }
    }
}

#[test]
fn failover_ordered_walks_the_list() {
    let seq = failover_sequence(FailoverPolicy::Ordered);
    let expected: Vec<String> = ["a", "b", "c", "d"].iter().cycle().take(seq.len()).map(|s| s.to_string()).collect();
    assert_eq!(seq, expected);
}

#[test]
fn failover_all_hosts_refuse_drops_after_the_limit() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = Some(2);
    let p = failover(c, vec![Mock::ok("a", &rec).connect_failures(usize::MAX), Mock::ok("b", &rec).connect_failures(usize::MAX)]);
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 1);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("all refuse"), (0, 1));
    assert_eq!(rec.calls().len(), 3, "three connect attempts, alternating: {:?}", rec.calls());
}

#[test]
fn failover_random_first_pick_spreads() {
    let mut firsts: std::collections::HashMap<String, usize> = Default::default();
    for _ in 0..60 {
        let rec = Recorder::new();
        let p = failover(fast_config(), vec![Mock::ok("a", &rec), Mock::ok("b", &rec), Mock::ok("c", &rec)]);
        let ledger = Ledger::new();
        let _prod = publish_n(&p, &ledger, false, 1);
        p.flush(PATIENCE).unwrap();
        let first = rec.calls().into_iter().find(|c| c.starts_with("connect")).unwrap();
        *firsts.entry(first).or_default() += 1;
    }
    assert_eq!(firsts.len(), 3, "all hosts picked first at least once: {firsts:?}");
    assert!(firsts.values().all(|&n| n >= 5), "first picks spread: {firsts:?}");
}

// --- load balancing --------------------------------------------------------------

fn loadbalance(config: Config, clients: Vec<Mock>) -> Pipeline {
    let mut c = config;
    c.mode = Some(Mode::LoadBalance);
    clients.into_iter().fold(Pipeline::builder(c), |b, m| b.client(m)).build().unwrap()
}

#[test]
fn loadbalance_start_stop_with_clients_that_never_connect() {
    let rec = Recorder::new();
    let p = loadbalance(fast_config(), vec![Mock::ok("a", &rec).connect_failures(usize::MAX), Mock::ok("b", &rec).connect_failures(usize::MAX)]);
    let started = Instant::now();
    let report = p.close(Duration::from_millis(10)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(report.accepted, 0);
    assert!(p.stats().clients.iter().all(|c| c.state == WorkerState::Stopped));
}

#[test]
fn loadbalance_no_worker_connects_drops_after_the_limit() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = Some(1);
    c.timeout = Duration::from_millis(10);
    let p = loadbalance(c, vec![Mock::ok("a", &rec).connect_failures(usize::MAX), Mock::ok("b", &rec).connect_failures(usize::MAX)]);
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 1);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("no worker"), (0, 1));
}

#[test]
fn loadbalance_failed_batch_is_requeued_and_delivered_once() {
    let rec = Recorder::new();
    let p = loadbalance(fast_config(), vec![Mock::failing("a", &rec, 1, Published::broken(0)), Mock::failing("b", &rec, 1, Published::broken(0))]);
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 1);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("requeue"), (1, 0));
    assert_eq!(rec.times(&payload(0, 0)), 1);
}

#[test]
fn loadbalance_fast_worker_takes_most_batches() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.bulk_max_size = 4;
    let p = loadbalance(c, vec![Mock::ok("slow", &rec).delay(Duration::from_millis(20)), Mock::ok("fast", &rec)]);
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 400);
    p.flush(PATIENCE).unwrap();
    ledger.assert_settled("pull");
    let (slow, fast) = (rec.client_events("slow"), rec.client_events("fast"));
    assert!(fast > 3 * slow, "fast {fast} vs slow {slow}");
}

#[test]
fn loadbalance_retry_status_keeps_the_connection() {
    let rec = Recorder::new();
    let p = loadbalance(fast_config(), vec![Mock::failing("a", &rec, 1, Published::retry(0)), Mock::ok("b", &rec).connect_failures(usize::MAX)]);
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 1);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("retry"), (1, 0));
    let a_calls: Vec<String> = rec.calls().into_iter().filter(|c| c.ends_with(" a") || c.starts_with("publish a")).collect();
    assert_eq!(a_calls, ["connect a", "publish a 1", "publish a 1"], "no close/reconnect between");
}

#[test]
fn loadbalance_temporary_failures_beyond_the_limit_drop() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = Some(2);
    let p = loadbalance(c, vec![Mock::failing("a", &rec, 6, Published::retry(0)), Mock::failing("b", &rec, 6, Published::retry(0))]);
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 1);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("temp beyond"), (0, 1));
    assert_eq!(rec.publishes.load(Ordering::SeqCst), 3);
}

#[test]
fn loadbalance_requeued_work_goes_before_new_work() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.bulk_max_size = 1;
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = order.clone();
    let plan: Plan = Box::new(move |call, ev| {
        o.lock().unwrap().push(ev.get(0).to_vec());
        if call == 0 {
            Published::retry(0)
        } else {
            Published::all(ev.len())
        }
    });
    let p = single(c, Mock::new("a", &rec, plan));
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 5);
    p.flush(PATIENCE).unwrap();
    ledger.assert_settled("priority");
    let order = order.lock().unwrap();
    assert_eq!(order[0], order[1], "the failed batch is retried before the next one: {order:?}");
}

#[test]
fn loadbalance_no_deadlock_with_many_failures_and_infinite_retries() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = None;
    c.backoff_init = Duration::ZERO;
    c.backoff_max = Duration::ZERO;
    c.bulk_max_size = 8;
    let failures = Arc::new(AtomicUsize::new(1000));
    let mocks = (0..4)
        .map(|i| {
            let f = failures.clone();
            Mock::new(&format!("w{i}"), &rec, Box::new(move |_, ev| {
                if f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                    Published::retry(0)
                } else {
                    Published::all(ev.len())
                }
            }))
        })
        .collect();
    let p = loadbalance(c, mocks);
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 2000);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("deadlock regression"), (2000, 0));
}

#[test]
fn loadbalance_close_drops_and_reports_what_is_in_the_retry_lane() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = None;
    c.backoff_init = Duration::from_secs(60);
    c.backoff_max = Duration::from_secs(60);
    let p = loadbalance(c, vec![Mock::new("a", &rec, Box::new(|_, _| Published::broken(0))), Mock::new("b", &rec, Box::new(|_, _| Published::broken(0)))]);
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, true, 50);
    wait_until("both workers failed once", || rec.publishes.load(Ordering::SeqCst) >= 2);
    let report = p.close(Duration::ZERO).unwrap();
    assert_eq!((report.acked, report.dropped), (0, 50));
    assert_eq!(ledger.assert_settled("retry lane at close"), (0, 50));
}

// --- async clients ---------------------------------------------------------------

/// An async client that completes from its own thread, following a plan.
struct AsyncMock {
    rec: Arc<Recorder>,
    plan: Arc<Mutex<Plan>>,
    calls: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    hold: Arc<Mutex<Vec<(Events, Completion)>>>,
    hold_until: usize,
    sync_errors: usize,
}

impl AsyncMock {
    fn new(rec: &Arc<Recorder>, plan: Plan) -> AsyncMock {
        AsyncMock {
            rec: rec.clone(),
            plan: Arc::new(Mutex::new(plan)),
            calls: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            hold: Arc::default(),
            hold_until: 0,
            sync_errors: 0,
        }
    }
}

impl AsyncClient for AsyncMock {
    fn publish_async(&mut self, events: Events, completion: Completion) -> Result<(), ConnectError> {
        if self.sync_errors > 0 {
            self.sync_errors -= 1;
            return Err("not accepted".into());
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.hold_until {
            self.hold.lock().unwrap().push((events, completion));
            return Ok(());
        }
        let (rec, plan, in_flight) = (self.rec.clone(), self.plan.clone(), self.in_flight.clone());
        std::thread::spawn(move || {
            let result = (plan.lock().unwrap())(call, &events);
            rec.record("async", &events, result.count.min(events.len()));
            in_flight.fetch_sub(1, Ordering::SeqCst);
            completion.done(result);
        });
        Ok(())
    }
}

#[test]
fn async_partial_completion_requeues_the_rest() {
    let rec = Recorder::new();
    let mock = AsyncMock::new(&rec, Box::new(|call, ev| if call == 0 { Published::all(ev.len() / 2) } else { Published::all(ev.len()) }));
    let p = Pipeline::builder(fast_config()).async_client(mock).build().unwrap();
    let ledger = Ledger::new();
    let producer = p.producer(ledger.options(false)).unwrap();
    let events: Vec<Vec<u8>> = (0..10).map(|i| payload(0, i)).collect();
    events.iter().for_each(|e| ledger.will_publish(e));
    let views: Vec<&[u8]> = events.iter().map(Vec::as_slice).collect();
    producer.publish_batch(&views, None).unwrap();
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("async partial"), (10, 0));
    assert!(events.iter().all(|e| rec.times(e) == 1), "no duplicates");
}

#[test]
fn async_request_not_accepted_is_requeued_and_reconnects() {
    let rec = Recorder::new();
    let mut mock = AsyncMock::new(&rec, Box::new(|_, ev| Published::all(ev.len())));
    mock.sync_errors = 2;
    let p = Pipeline::builder(fast_config()).async_client(mock).build().unwrap();
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 5);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("sync error"), (5, 0));
    let stats = p.stats();
    assert!(stats.clients[0].connects >= 2, "reconnected after the rejected request: {:?}", stats.clients[0]);
}

#[test]
fn async_window_allows_exactly_pipelining_batches() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.pipelining = 3;
    c.bulk_max_size = 1;
    let mut mock = AsyncMock::new(&rec, Box::new(|_, ev| Published::all(ev.len())));
    mock.hold_until = 1000;
    let (hold, max_in_flight, in_flight) = (mock.hold.clone(), mock.max_in_flight.clone(), mock.in_flight.clone());
    let p = Pipeline::builder(c).async_client(mock).build().unwrap();
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 10);
    wait_until("the window fills", || hold.lock().unwrap().len() == 3);
    assert_eq!(max_in_flight.load(Ordering::SeqCst), 3);
    let (events, completion) = hold.lock().unwrap().remove(0);
    in_flight.fetch_sub(1, Ordering::SeqCst);
    completion.done(Published::all(events.len()));
    wait_until("one more batch enters", || hold.lock().unwrap().len() == 3);
    assert_eq!(max_in_flight.load(Ordering::SeqCst), 3, "never more than pipelining in flight");
    for (events, completion) in hold.lock().unwrap().drain(..) {
        in_flight.fetch_sub(1, Ordering::SeqCst);
        completion.done(Published::all(events.len()));
    }
    let report = p.close(Duration::from_millis(100)).unwrap();
    assert_eq!(report.acked + report.dropped, 10);
    ledger.assert_settled("window");
}

#[test]
fn async_dropped_completion_counts_as_failure() {
    let rec = Recorder::new();
    let mut mock = AsyncMock::new(&rec, Box::new(|_, ev| Published::all(ev.len())));
    mock.hold_until = 1;
    let hold = mock.hold.clone();
    let mut c = fast_config();
    c.max_retries = None;
    let p = Pipeline::builder(c).async_client(mock).build().unwrap();
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 1);
    wait_until("the first request is held", || hold.lock().unwrap().len() == 1);
    hold.lock().unwrap().clear();
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("dropped completion"), (1, 0));
}

// --- slow is not dead ------------------------------------------------------------

#[test]
fn publish_timeout_hands_a_stuck_batch_to_another_worker() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.publish_timeout = Some(Duration::from_millis(50));
    let release = Arc::new(std::sync::Barrier::new(2));
    let r = release.clone();
    let stuck = Mock::new("stuck", &rec, Box::new(move |call, ev| {
        if call == 0 {
            r.wait();
        }
        Published::all(ev.len())
    }));
    let p = loadbalance(c, vec![stuck, Mock::ok("fast", &rec).connect_failures(3)]);
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 1);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("hand-off"), (1, 0));
    assert_eq!(rec.client_events("fast"), 1);
    assert!(p.stats().handoffs >= 1);
    release.wait();
    wait_until("the late result is counted", || p.stats().duplicates == 1);
    assert_eq!(rec.times(&payload(0, 0)), 2, "delivered twice, and counted as a duplicate");
}

// --- runtime membership ----------------------------------------------------------

#[test]
fn add_and_remove_clients_while_publishing_loses_nothing() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.mode = Some(Mode::LoadBalance);
    c.bulk_max_size = 16;
    let p = Pipeline::builder(c).client(Mock::ok("a", &rec)).build().unwrap();
    let ledger = Ledger::new();
    let producer = p.producer(ledger.options(false)).unwrap();
    let mut ids = Vec::new();
    for i in 0..3000u32 {
        if i % 500 == 250 {
            ids.push(p.add_client(AnyClient::sync(Mock::ok(&format!("n{i}"), &rec))).unwrap());
        }
        if i % 1000 == 999 {
            p.remove_client(ids.remove(0)).unwrap();
        }
        let e = payload(0, i);
        ledger.will_publish(&e);
        producer.publish(&e, Some(PATIENCE)).unwrap();
    }
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("membership"), (3000, 0));
    assert_eq!(rec.distinct(), 3000);
    let stats = p.stats();
    assert_eq!(stats.clients.iter().filter(|c| c.state == WorkerState::Stopped).count(), 3);
    assert!(matches!(p.remove_client(999), Err(Error::InvalidArgument(_))));
}

#[test]
fn failover_add_and_remove_clients() {
    let rec = Recorder::new();
    let p = failover(fast_config(), vec![Mock::ok("a", &rec)]);
    let b = p.add_client(AnyClient::sync(Mock::ok("b", &rec))).unwrap();
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 100);
    p.remove_client(1).unwrap();
    let _prod2 = publish_n(&p, &ledger, false, 0);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("failover membership"), (100, 0));
    assert!(matches!(p.remove_client(b), Err(Error::InvalidArgument(_))), "the last client stays");
}

#[test]
fn single_mode_rejects_a_second_client() {
    let rec = Recorder::new();
    let p = single(fast_config(), Mock::ok("a", &rec));
    assert!(matches!(p.add_client(AnyClient::sync(Mock::ok("b", &rec))), Err(Error::InvalidArgument(_))));
    let mut c = fast_config();
    c.mode = Some(Mode::Single);
    let err = Pipeline::builder(c).client(Mock::ok("a", &rec)).client(Mock::ok("b", &rec)).build().unwrap_err();
    assert!(err.to_string().contains("mode"), "{err}");
}

#[test]
fn default_mode_follows_the_client_count() {
    let rec = Recorder::new();
    assert_eq!(Pipeline::builder(fast_config()).client(Mock::ok("a", &rec)).build().unwrap().mode(), Mode::Single);
    let two = Pipeline::builder(fast_config()).client(Mock::ok("a", &rec)).client(Mock::ok("b", &rec)).build().unwrap();
    assert_eq!(two.mode(), Mode::LoadBalance);
    assert_eq!(Pipeline::builder(fast_config()).build().unwrap_err(), Error::NoClients);
}

#[test]
fn panicking_client_counts_as_failed_publish() {
    let rec = Recorder::new();
    let p = single(fast_config(), Mock::new("a", &rec, Box::new(|call, ev| {
        if call == 0 {
            panic!("client bug");
        }
        Published::all(ev.len())
    })));
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 3);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("panic"), (3, 0));
}

#[test]
fn out_of_range_count_counts_as_failed_publish() {
    let rec = Recorder::new();
    let p = single(fast_config(), Mock::new("a", &rec, Box::new(|call, ev| if call == 0 { Published::all(ev.len() + 5) } else { Published::all(ev.len()) })));
    let ledger = Ledger::new();
    let _prod = publish_n(&p, &ledger, false, 2);
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("out of range"), (2, 0));
    assert_eq!(p.stats().clients[0].invalid_results, 1);
}

#[test]
fn publish_from_an_ack_callback_is_served() {
    let rec = Recorder::new();
    let p = Arc::new(single(fast_config(), Mock::ok("a", &rec)));
    let acks = Arc::new(AtomicU64::new(0));
    let slot: Arc<Mutex<Option<Producer>>> = Arc::default();
    let (s, a) = (slot.clone(), acks.clone());
    let producer = p
        .producer(ProducerOptions {
            on_ack: Some(Box::new(move |n| {
                if a.fetch_add(n, Ordering::SeqCst) == 0 {
                    let guard = s.lock().unwrap();
                    guard.as_ref().unwrap().publish(b"from callback", Some(PATIENCE)).unwrap();
                }
            })),
            ..Default::default()
        })
        .unwrap();
    producer.publish(b"first", None).unwrap();
    *slot.lock().unwrap() = Some(producer);
    wait_until("both acked", || acks.load(Ordering::SeqCst) == 2);
    assert_eq!(rec.times(b"from callback"), 1);
    drop(slot.lock().unwrap().take());
    p.close(PATIENCE).unwrap();
}

#[test]
fn flush_and_close_from_a_callback_are_refused() {
    let rec = Recorder::new();
    let p = Arc::new(single(fast_config(), Mock::ok("a", &rec)));
    let results: Arc<Mutex<Vec<String>>> = Arc::default();
    let (r, weak) = (results.clone(), Arc::downgrade(&p));
    let producer = p
        .producer(ProducerOptions {
            on_ack: Some(Box::new(move |_| {
                let p = weak.upgrade().unwrap();
                r.lock().unwrap().push(format!("{:?} {:?}", p.flush(PATIENCE).is_err(), p.close(PATIENCE).is_err()));
            })),
            ..Default::default()
        })
        .unwrap();
    producer.publish(b"x", None).unwrap();
    wait_until("the callback ran", || !results.lock().unwrap().is_empty());
    assert_eq!(*results.lock().unwrap(), ["true true"]);
    drop(producer);
    p.close(PATIENCE).unwrap();
}

#[test]
fn callbacks_calling_the_pipeline_during_close_do_not_deadlock() {
    let rec = Recorder::new();
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let blocking = Mock::new("a", &rec, Box::new(move |_, ev| {
        let _ = release_rx.recv();
        Published::all(ev.len())
    }));
    let p = Arc::new(single(fast_config(), blocking));
    let answers: Arc<Mutex<Vec<String>>> = Arc::default();
    let (a, weak) = (answers.clone(), Arc::downgrade(&p));
    let producer = p
        .producer(ProducerOptions {
            on_ack: Some(Box::new(move |_| {
                let p = weak.upgrade().unwrap();
                let made = p.producer(ProducerOptions::default()).err();
                a.lock().unwrap().push(format!("{made:?} {:?}", p.flush(Duration::from_millis(1)).err()));
            })),
            ..Default::default()
        })
        .unwrap();
    producer.publish(b"x", None).unwrap();
    wait_until("the client holds the batch", || rec.publishes.load(Ordering::SeqCst) == 1);
    let closer = {
        let p = p.clone();
        std::thread::spawn(move || p.close(PATIENCE))
    };
    wait_until("close started", || matches!(p.producer(ProducerOptions::default()), Err(Error::Closed)));
    drop(release_tx);
    wait_until("close returns", || closer.is_finished());
    let report = closer.join().unwrap().unwrap();
    assert_eq!((report.acked, report.dropped), (1, 0));
    assert_eq!(*answers.lock().unwrap(), ["Some(Closed) Some(Closed)"]);
}
