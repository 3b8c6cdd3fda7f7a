//! Supervision, stats and configuration: research/goevents-aresdb.md §4 cases 23–28,
//! and DESIGN §3 (every key parsed and validated in one place).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use conveyor::*;

fn factory(rec: &Arc<Recorder>, built: &Arc<AtomicUsize>, bad_host: &'static str) -> Arc<dyn ClientFactory> {
    let (rec, built) = (rec.clone(), built.clone());
    Arc::new(move |host: &str| -> Result<AnyClient, ConnectError> {
        built.fetch_add(1, Ordering::SeqCst);
        if host == bad_host {
            Ok(AnyClient::sync(Mock::new(host, &rec, Box::new(|_, _| Published::broken(0)))))
        } else {
            Ok(AnyClient::sync(Mock::ok(host, &rec)))
        }
    })
}

// Case 23: a worker past error_threshold is restarted (its client rebuilt by the
// factory); the others are untouched.
#[test]
fn worker_past_error_threshold_is_rebuilt_by_the_factory() {
    let rec = Recorder::new();
    let built = Arc::new(AtomicUsize::new(0));
    let mut c = fast_config();
    c.error_threshold = 3;
    c.max_retries = None;
    let p = Pipeline::builder(c).hosts(&["h1", "h2", "h3"], factory(&rec, &built, "h2")).build().unwrap();
    assert_eq!(built.load(Ordering::SeqCst), 3);
    let ledger = Ledger::new();
    let producer = p.producer(ledger.options(false)).unwrap();
    let mut i = 0;
    wait_until("h2 restarted", || {
        let e = payload(0, i);
        i += 1;
        ledger.will_publish(&e);
        producer.publish(&e, Some(PATIENCE)).unwrap();
        p.stats().clients.iter().any(|c| c.host.as_deref() == Some("h2") && c.restarts >= 1)
    });
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("restart"), (i as usize, 0));
    let stats = p.stats();
    for c in &stats.clients {
        if c.host.as_deref() == Some("h2") {
            assert!(c.failures >= 3, "{c:?}");
        } else {
            assert_eq!(c.restarts, 0, "{c:?}");
        }
    }
    assert!(built.load(Ordering::SeqCst) >= 4, "the factory rebuilt h2's client");
}

// Case 24: backoff state is local to each incident: after a success the next
// failure starts from the initial wait again, and an exhausted budget is a drop,
// never a silent success.
#[test]
fn backoff_state_resets_per_incident() {
    let mut b = ExponentialBackoff::seeded(Duration::from_millis(1), Duration::from_millis(50), 1);
    let first: Vec<Duration> = (0..6).map(|_| { let n = b.nominal(); b.failure(); n }).collect();
    assert_eq!(first.iter().map(|d| d.as_millis()).collect::<Vec<_>>(), vec![1, 2, 4, 8, 16, 32]);
    b.success();
    assert_eq!(b.nominal(), Duration::from_millis(1), "the next incident starts from init");
}

#[test]
fn exhausted_attempts_are_reported_as_drops_not_success() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = Some(1);
    let p = Pipeline::builder(c).client(Mock::new("a", &rec, Box::new(|_, _| Published::retry(0)))).build().unwrap();
    let ledger = Ledger::new();
    let producer = p.producer(ledger.options(false)).unwrap();
    for i in 0..5 {
        let e = payload(0, i);
        ledger.will_publish(&e);
        producer.publish(&e, None).unwrap();
    }
    p.flush(PATIENCE).unwrap();
    assert_eq!(ledger.assert_settled("exhausted"), (0, 5));
    assert_eq!(p.stats().acked, 0);
}

// Case 25: an event is acknowledged only after a client reported it published; a
// drop goes to the dead-letter hook with its payload.
#[test]
fn acks_only_after_publish_and_drops_carry_payloads() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.max_retries = Some(0);
    let p = Pipeline::builder(c)
        .client(Mock::new("a", &rec, Box::new(|_, ev| if ev.get(0)[4] % 2 == 0 { Published::all(ev.len()) } else { Published::broken(0) })))
        .build()
        .unwrap();
    let ledger = Ledger::new();
    let producer = p.producer(ledger.options(false)).unwrap();
    for i in 0..20u32 {
        let e = payload(0, i);
        ledger.will_publish(&e);
        producer.publish(&e, None).unwrap();
        p.flush(PATIENCE).unwrap();
    }
    let (acked, dropped) = ledger.assert_settled("dead letter");
    assert_eq!(acked + dropped, 20);
    for e in ledger.acked_payloads() {
        assert_eq!(rec.times(&e), 1, "acked events were published");
    }
}

// Case 26: stats are a consistent snapshot rendered by a real serializer, valid
// even for host names with quotes.
#[test]
fn stats_json_is_valid_for_hosts_with_quotes() {
    let rec = Recorder::new();
    let built = Arc::new(AtomicUsize::new(0));
    let p = Pipeline::builder(fast_config())
        .hosts(&["tcp://\"quoted\"\\host:5044", "plain"], factory(&rec, &built, "none"))
        .build()
        .unwrap();
    let producer = p.producer(ProducerOptions::default()).unwrap();
    for i in 0..10 {
        producer.publish(&payload(0, i), None).unwrap();
    }
    p.flush(PATIENCE).unwrap();
    let stats = p.stats();
    let v: serde_json::Value = serde_json::from_str(&stats.to_json()).expect("valid JSON");
    assert_eq!(v["clients"][0]["host"], "tcp://\"quoted\"\\host:5044");
    assert_eq!(v["accepted"], 10);
    assert_eq!(v["acked"].as_u64().unwrap() + v["dropped"].as_u64().unwrap() + v["in_flight"].as_u64().unwrap(), 10);
    assert_eq!(v["mode"], "loadbalance");
    assert_eq!(stats.clients.iter().map(|c| c.events).sum::<u64>(), 10);
    wait_until("both clients connected", || p.stats().clients.iter().all(|c| c.state == WorkerState::Active));
}

#[test]
fn accounting_balances_at_quiescent_points() {
    let rec = Recorder::new();
    let p = Pipeline::builder(fast_config()).client(Mock::ok("a", &rec)).build().unwrap();
    let producers: Vec<Producer> = (0..3).map(|_| p.producer(ProducerOptions::default()).unwrap()).collect();
    for (k, prod) in producers.iter().enumerate() {
        for i in 0..(100 * (k as u32 + 1)) {
            prod.publish(&payload(k as u32, i), None).unwrap();
        }
    }
    p.flush(PATIENCE).unwrap();
    for (k, prod) in producers.iter().enumerate() {
        let c = prod.counts();
        assert_eq!(c.accepted, 100 * (k as u64 + 1));
        assert_eq!(c.accepted, c.acked + c.dropped + c.in_flight);
        assert_eq!(c.in_flight, 0);
    }
    let report = p.close(PATIENCE).unwrap();
    assert_eq!((report.accepted, report.acked, report.dropped, report.drained), (600, 600, 0, true));
    assert_eq!(p.close(PATIENCE).unwrap(), report, "a second close returns the same report");
    assert_eq!(producers[0].publish(b"late", None), Err(Error::Closed));
    assert_eq!(p.flush(PATIENCE), Err(Error::Closed));
    assert!(matches!(p.producer(ProducerOptions::default()), Err(Error::Closed)));
    assert_eq!(p.stats().in_flight, 0);
}

// Case 27: zero or out-of-range settings are rejected with the key named, never
// accepted into a pipeline that would hang.
#[test]
fn bad_config_values_are_rejected_with_the_key_named() {
    let bad = [
        ("mode", "roundrobin"),
        ("failover.policy", "sticky"),
        ("worker", "0"),
        ("worker", "-1"),
        ("max_retries", "-2"),
        ("max_retries", "x"),
        ("backoff.init", "fast"),
        ("backoff.max", "10"),
        ("timeout", "-1s"),
        ("publish_timeout", "1 fortnight"),
        ("bulk_max_size", "0"),
        ("pipelining", "0"),
        ("queue.type", ""),
        ("queue.events", "0"),
        ("queue.events", "99999999999"),
        ("queue.bytes", "-5"),
        ("queue.flush.min_events", "many"),
        ("queue.flush.timeout", "1y"),
        ("error_threshold", "-1"),
        ("no.such.key", "1"),
    ];
    for (key, value) in bad {
        let mut c = Config::default();
        match c.set(key, value) {
            Err(Error::Config { key: k, reason }) => {
                assert_eq!(k, key, "{key}={value}: {reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{key}={value} gave {other:?}"),
        }
        assert_eq!(c, Config::default(), "a rejected value changes nothing");
    }
}

#[test]
fn every_key_round_trips_through_its_string_form() {
    let values = [
        ("mode", "failover"),
        ("failover.policy", "ordered"),
        ("worker", "3"),
        ("max_retries", "-1"),
        ("backoff.init", "250ms"),
        ("backoff.max", "2s"),
        ("timeout", "90s"),
        ("publish_timeout", "500ms"),
        ("bulk_max_size", "100"),
        ("pipelining", "4"),
        ("queue.type", "mem"),
        ("queue.events", "8192"),
        ("queue.bytes", "1000000"),
        ("queue.flush.min_events", "16"),
        ("queue.flush.timeout", "5ms"),
        ("error_threshold", "7"),
    ];
    assert_eq!(values.len(), config::KEYS.len(), "every key is covered");
    let mut c = Config::default();
    for (key, value) in values {
        c.set(key, value).unwrap();
        assert_eq!(c.get(key).unwrap(), value, "{key}");
    }
    c.validate().unwrap();
    assert_eq!(c.max_retries, None);
    assert_eq!(c.backoff_init, Duration::from_millis(250));
    assert_eq!(c.publish_timeout, Some(Duration::from_millis(500)));
}

#[test]
fn durations_accept_units() {
    for (text, d) in [("0", 0.0), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0), ("10us", 0.00001), ("250ms", 0.25)] {
        assert_eq!(config::parse_duration("k", text).unwrap(), Duration::from_secs_f64(d), "{text}");
    }
}

#[test]
fn validate_checks_relations_between_keys() {
    let c = Config { backoff_init: Duration::from_secs(10), backoff_max: Duration::from_secs(1), ..Config::default() };
    assert!(matches!(c.validate(), Err(Error::Config { key, .. }) if key == "backoff.max"));
    let c = Config { worker: 0, ..Config::default() };
    let err = Pipeline::builder(c).client(Mock::ok("a", &Recorder::new())).build().unwrap_err();
    assert!(matches!(err, Error::Config { key, .. } if key == "worker"));
}

#[test]
fn defaults_match_the_design() {
    let c = Config::default();
    assert_eq!(c.get("mode").unwrap(), "auto");
    assert_eq!(c.get("failover.policy").unwrap(), "random");
    assert_eq!(c.get("worker").unwrap(), "1");
    assert_eq!(c.get("max_retries").unwrap(), "3");
    assert_eq!(c.get("backoff.init").unwrap(), "1s");
    assert_eq!(c.get("backoff.max").unwrap(), "60s");
    assert_eq!(c.get("timeout").unwrap(), "30s");
    assert_eq!(c.get("publish_timeout").unwrap(), "0s");
    assert_eq!(c.get("bulk_max_size").unwrap(), "2048");
    assert_eq!(c.get("pipelining").unwrap(), "2");
    assert_eq!(c.get("queue.type").unwrap(), "mem");
    assert_eq!(c.get("queue.events").unwrap(), "4096");
    assert_eq!(c.get("queue.bytes").unwrap(), "0");
    assert_eq!(c.get("queue.flush.min_events").unwrap(), "2048");
    assert_eq!(c.get("queue.flush.timeout").unwrap(), "1ms");
    assert_eq!(c.get("error_threshold").unwrap(), "0");
}

#[test]
fn hosts_get_worker_clients_each_in_loadbalance_and_one_in_failover() {
    let rec = Recorder::new();
    let built = Arc::new(AtomicUsize::new(0));
    let mut c = fast_config();
    c.worker = 3;
    let lb = Pipeline::builder(c.clone()).hosts(&["a", "b"], factory(&rec, &built, "none")).build().unwrap();
    assert_eq!(lb.stats().clients.len(), 6);
    assert_eq!(lb.mode(), Mode::LoadBalance);
    c.mode = Some(Mode::Failover);
    let fo = Pipeline::builder(c).hosts(&["a", "b"], factory(&rec, &built, "none")).build().unwrap();
    assert_eq!(fo.stats().clients.len(), 2);
}

#[test]
fn a_failing_factory_fails_the_build() {
    let f: Arc<dyn ClientFactory> = Arc::new(|host: &str| -> Result<AnyClient, ConnectError> { Err(format!("no route to {host}").into()) });
    let err = Pipeline::builder(fast_config()).hosts(&["x"], f).build().unwrap_err();
    assert!(err.to_string().contains("no route to x"), "{err}");
}

// Case 28: re-sync of the client set: removing then adding keeps exactly one worker
// per live client, and ids are never reused.
#[test]
fn resync_keeps_one_worker_per_client_and_never_reuses_ids() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.mode = Some(Mode::LoadBalance);
    let p = Pipeline::builder(c).client(Mock::ok("a", &rec)).client(Mock::ok("b", &rec)).build().unwrap();
    p.remove_client(2).unwrap();
    let id = p.add_client(AnyClient::sync(Mock::ok("b2", &rec))).unwrap();
    assert_eq!(id, 3, "ids are never reused");
    let stats = p.stats();
    let live: Vec<u64> = stats.clients.iter().filter(|c| c.state != WorkerState::Stopped).map(|c| c.id).collect();
    assert_eq!(live, vec![1, 3]);
    assert_eq!(p.remove_client(2), Err(Error::InvalidArgument("no client with id 2".into())));
}

#[test]
fn a_logger_sees_connect_failures() {
    let rec = Recorder::new();
    let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let l = lines.clone();
    let mut c = fast_config();
    c.max_retries = Some(0);
    let p = Pipeline::builder(c)
        .client(Mock::ok("a", &rec).connect_failures(1))
        .logger(Arc::new(move |level, msg| l.lock().unwrap().push(format!("{level}: {msg}"))))
        .build()
        .unwrap();
    let producer = p.producer(ProducerOptions::default()).unwrap();
    producer.publish(b"x", None).unwrap();
    p.flush(PATIENCE).unwrap();
    let lines = lines.lock().unwrap();
    assert!(lines.iter().any(|l| l.starts_with("warn: connect to client 1 failed: a refuses")), "{lines:?}");
}

struct CompletesAtOnce;

impl AsyncClient for CompletesAtOnce {
    fn publish_async(&mut self, events: Events, completion: Completion) -> Result<(), ConnectError> {
        completion.done(Published::all(events.len()));
        Ok(())
    }
}

// A client's event and batch counts are taken before the ACKs go out: stats read
// right after a flush include every event the flush waited for.
#[test]
fn client_counts_are_complete_when_a_flush_returns() {
    let rec = Recorder::new();
    for (mode, asynchronous) in [("single", false), ("single", true), ("loadbalance", false)] {
        let mut config = fast_config();
        config.set("mode", mode).unwrap();
        let client =
            if asynchronous { AnyClient::asynchronous(CompletesAtOnce) } else { AnyClient::sync(Mock::ok("a", &rec)) };
        let p = Pipeline::builder(config).any_client(client).build().unwrap();
        let producer = p.producer(ProducerOptions::default()).unwrap();
        for round in 1..=200u64 {
            producer.publish(&round.to_le_bytes(), Some(PATIENCE)).unwrap();
            p.flush(PATIENCE).unwrap();
            let stats = p.stats();
            let (events, batches) = (stats.clients[0].events, stats.clients[0].batches);
            assert_eq!((stats.acked, events), (round, round), "{mode} async={asynchronous}: {stats:?}");
            assert!(batches >= 1 && batches <= round, "{mode}: {batches} batches");
        }
        p.close(PATIENCE).unwrap();
    }
}
