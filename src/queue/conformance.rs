//! The conformance suite every queue type must pass.
//!
//! Each check takes a [`QueueMaker`] (settings in, queue out) and panics with a
//! message naming the seed on failure. `tests/conformance.rs` runs every check
//! against every type in the [`registry`](super::registry).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Producer, ProducerOptions, Queue, QueueSettings};
use crate::error::Error;
use crate::event::Packed;

/// Builds a queue of the type under test.
pub type QueueMaker<'a> = &'a (dyn Fn(QueueSettings) -> Arc<dyn Queue> + Sync);

/// How long any single wait in the suite may take before the check fails (a hang).
const PATIENCE: Duration = Duration::from_secs(20);

/// Whether consumers ask for everything (`Get(-1)`) or a limited batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStyle {
    /// `get(usize::MAX)`.
    Complete,
    /// `get(batch_size)`.
    Limited,
}

/// Which producers have an ACK callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMix {
    /// None has one.
    NoAck,
    /// All have one.
    AllAck,
    /// The first has one, the others not.
    Mixed,
}

/// One producer/consumer case of the suite.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Number of producers.
    pub producers: usize,
    /// Number of consumers.
    pub consumers: usize,
    /// Which producers get ACK callbacks.
    pub acks: AckMix,
    /// How consumers ask for batches.
    pub style: BatchStyle,
}

/// The 18 producer/consumer cases (libbeat's queue test suite, research/libbeat.md §3.6).
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let styles = [BatchStyle::Complete, BatchStyle::Limited];
    for acks in [AckMix::NoAck, AckMix::AllAck] {
        for style in styles {
            out.push(Case { producers: 1, consumers: 1, acks, style });
        }
    }
    for (producers, consumers) in [(2, 1), (2, 2)] {
        for acks in [AckMix::NoAck, AckMix::AllAck, AckMix::Mixed] {
            for style in styles {
                out.push(Case { producers, consumers, acks, style });
            }
        }
    }
    for style in styles {
        out.push(Case { producers: 1, consumers: 2, acks: AckMix::AllAck, style });
    }
    out
}

/// Random sizes of one run, as libbeat's suite draws them.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Events per producer, in [32, 1024).
    pub events: usize,
    /// Batch size, in [4, events - 4).
    pub batch: usize,
    /// Queue capacity, in [4, 2 * batch + 4): may be smaller than a batch.
    pub buffer: usize,
}

impl Sizes {
    /// Draws sizes from `seed`.
    pub fn from_seed(seed: u64) -> Sizes {
        let mut rng = SmallRng::seed_from_u64(seed);
        let events = rng.gen_range(32..1024);
        let batch = rng.gen_range(4..events - 4);
        let buffer = rng.gen_range(4..2 * batch + 4);
        Sizes { events, batch, buffer }
    }
}

/// Runs `case` with sizes from `seed`; `flush` selects the "flush" setting
/// (`min_events = batch / 2`, a short timeout) instead of "direct".
///
/// Asserts every event is delivered exactly once, per-producer FIFO with one
/// consumer, and exact ACK totals for producers with a callback.
pub fn producer_consumer(make: QueueMaker, case: Case, seed: u64, flush: bool) {
    let sizes = Sizes::from_seed(seed);
    let ctx = format!("case {case:?} sizes {sizes:?} flush={flush} seed={seed}");
    let settings = QueueSettings {
        events: sizes.buffer,
        flush_min_events: if flush { sizes.batch / 2 } else { 0 },
        flush_timeout: if flush { Duration::from_millis(5) } else { Duration::ZERO },
        ..QueueSettings::default()
    };
    let queue = make(settings);
    let total = (sizes.events * case.producers) as u64;
    let remaining = Arc::new(AtomicU64::new(total));
    let seen: Arc<Mutex<HashMap<(u8, u32), u32>>> = Arc::default();
    let max = match case.style {
        BatchStyle::Complete => usize::MAX,
        BatchStyle::Limited => sizes.batch,
    };

    let mut consumers = Vec::new();
    for _ in 0..case.consumers {
        let (q, remaining, seen, ctx) = (queue.clone(), remaining.clone(), seen.clone(), ctx.clone());
        consumers.push(thread::spawn(move || {
            let mut last_per_producer: HashMap<u8, u32> = HashMap::new();
            loop {
                let epoch = q.epoch();
                if remaining.load(Ordering::Acquire) == 0 {
                    return;
                }
                let batch = match q.get_since(max, epoch) {
                    Ok(Some(b)) => b,
                    Ok(None) => continue,
                    Err(e) => panic!("{ctx}: get failed: {e}"),
                };
                assert!(batch.len() <= max, "{ctx}: batch of {} exceeds {max}", batch.len());
                {
                    let mut seen = seen.lock().unwrap();
                    for ev in batch.events().iter() {
                        let (p, i) = decode(ev);
                        *seen.entry((p, i)).or_default() += 1;
                        if case.consumers == 1 {
                            let last = last_per_producer.entry(p).or_insert(u32::MAX);
                            assert!(*last == u32::MAX || i == *last + 1, "{ctx}: producer {p} out of order: {i} after {last}");
                            *last = i;
                        }
                    }
                }
                batch.ack().unwrap_or_else(|e| panic!("{ctx}: ack failed: {e}"));
                if remaining.fetch_sub(batch.len() as u64, Ordering::AcqRel) == batch.len() as u64 {
                    q.wake_consumers();
                }
            }
        }));
    }

    let mut producers = Vec::new();
    let mut ack_counters = Vec::new();
    for p in 0..case.producers {
        let with_ack = match case.acks {
            AckMix::NoAck => false,
            AckMix::AllAck => true,
            AckMix::Mixed => p == 0,
        };
        let acked = Arc::new(AtomicU64::new(0));
        let on_ack: Option<super::AckCallback> = with_ack.then(|| {
            let a = acked.clone();
            Box::new(move |n: u64| {
                a.fetch_add(n, Ordering::AcqRel);
            }) as super::AckCallback
        });
        ack_counters.push((with_ack, acked));
        let producer = Producer::new(queue.clone(), ProducerOptions { on_ack, ..Default::default() }).unwrap();
        let (events, batch, ctx) = (sizes.events, sizes.batch, ctx.clone());
        let mut rng = SmallRng::seed_from_u64(seed ^ (p as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        producers.push(thread::spawn(move || {
            // Runs of events through each way in: one by one, publish_batch, publish_packed.
            let mut i = 0;
            while i < events {
                let run: Vec<[u8; 5]> =
                    (i..events.min(i + rng.gen_range(1..=2 * batch))).map(|i| encode(p as u8, i as u32)).collect();
                let way = rng.gen_range(0..3);
                let mut done = 0;
                while done < run.len() {
                    let rest = &run[done..];
                    let accepted = match way {
                        0 => producer.publish(&rest[0], Some(PATIENCE)).map(|()| 1),
                        1 => producer.publish_batch(&rest.iter().map(|e| &e[..]).collect::<Vec<_>>(), Some(PATIENCE)),
                        _ => producer.publish_packed(
                            Packed::new(&rest.concat(), &vec![5; rest.len()]).expect("lengths add up"),
                            Some(PATIENCE),
                        ),
                    };
                    done += accepted.unwrap_or_else(|e| panic!("{ctx}: publish {} (way {way}) failed: {e}", i + done));
                }
                i += run.len();
            }
            producer
        }));
    }
    let producers: Vec<Producer> = producers.into_iter().map(|h| h.join().expect("producer thread")).collect();
    for c in consumers {
        c.join().expect("consumer thread");
    }
    queue.flush(Some(PATIENCE)).unwrap_or_else(|e| panic!("{ctx}: flush: {e}"));

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len() as u64, total, "{ctx}: distinct events delivered");
    assert!(seen.values().all(|&n| n == 1), "{ctx}: an event was delivered twice");
    for (p, (with_ack, acked)) in ack_counters.iter().enumerate() {
        let counts = producers[p].counts();
        assert_eq!(counts.accepted, sizes.events as u64, "{ctx}: producer {p} accepted");
        assert_eq!(counts.acked, sizes.events as u64, "{ctx}: producer {p} acked");
        if *with_ack {
            assert_eq!(acked.load(Ordering::Acquire), sizes.events as u64, "{ctx}: producer {p} ACK callbacks");
        }
    }
    assert_eq!(queue.stats().events, 0, "{ctx}: queue not empty after every batch was acked");
}

/// Cancel with drop-on-cancel removes exactly the producer's untaken events (and
/// reports them dropped); FIFO holds for the rest (values 3..9).
pub fn cancel_removes_events(make: QueueMaker) {
    let queue = make(QueueSettings { events: 1024, ..QueueSettings::default() });
    let dropped: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let d = dropped.clone();
    let a = Producer::new(
        queue.clone(),
        ProducerOptions {
            on_ack: Some(Box::new(|_| {})),
            on_drop: Some(Box::new(move |evs| d.lock().unwrap().extend(evs.iter().map(|e| e.to_vec())))),
            drop_on_cancel: true,
            ..Default::default()
        },
    )
    .unwrap();
    let b = Producer::new(queue.clone(), ProducerOptions::default()).unwrap();
    for v in 0u8..3 {
        a.publish(&[v], None).unwrap();
    }
    assert_eq!(a.cancel(), 3, "cancel removes the 3 untaken events");
    assert_eq!(a.publish(&[42], None), Err(Error::Cancelled));
    assert_eq!(a.try_publish(&[42]), Err(Error::Cancelled));
    for v in 3u8..10 {
        b.publish(&[v], None).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 7 {
        let batch = queue.get(usize::MAX).unwrap().expect("a batch");
        got.extend(batch.events().iter().map(|e| e[0]));
        batch.ack().unwrap();
    }
    assert_eq!(got, (3u8..10).collect::<Vec<_>>());
    queue.flush(Some(PATIENCE)).unwrap();
    assert_eq!(*dropped.lock().unwrap(), vec![vec![0u8], vec![1], vec![2]]);
    let counts = a.counts();
    assert_eq!((counts.accepted, counts.acked, counts.dropped, counts.in_flight), (3, 0, 3, 0));
}

/// Events a consumer took before the cancel are still acknowledged after it.
pub fn cancel_keeps_taken_events(make: QueueMaker) {
    let queue = make(QueueSettings { events: 64, ..QueueSettings::default() });
    let acked = Arc::new(AtomicU64::new(0));
    let ac = acked.clone();
    let p = Producer::new(
        queue.clone(),
        ProducerOptions {
            on_ack: Some(Box::new(move |n| {
                ac.fetch_add(n, Ordering::AcqRel);
            })),
            drop_on_cancel: true,
            ..Default::default()
        },
    )
    .unwrap();
    for v in 0u8..5 {
        p.publish(&[v], None).unwrap();
    }
    let taken = queue.get(2).unwrap().expect("a batch");
    assert_eq!(p.cancel(), 3);
    taken.ack().unwrap();
    queue.flush(Some(PATIENCE)).unwrap();
    assert_eq!(acked.load(Ordering::Acquire), 2);
    let c = p.counts();
    assert_eq!((c.acked, c.dropped, c.in_flight), (2, 3, 0));
}

/// 100 single-event batches settled in reverse: nothing is released until batch 0
/// is, then one coalesced ACK of 100 arrives.
pub fn ack_in_order_when_settled_in_reverse(make: QueueMaker) {
    let queue = make(QueueSettings { events: 256, ..QueueSettings::default() });
    let calls: Arc<Mutex<Vec<u64>>> = Arc::default();
    let c = calls.clone();
    let p = Producer::new(
        queue.clone(),
        ProducerOptions { on_ack: Some(Box::new(move |n| c.lock().unwrap().push(n))), ..Default::default() },
    )
    .unwrap();
    for i in 0..100u32 {
        p.publish(&i.to_le_bytes(), None).unwrap();
    }
    let batches: Vec<_> = (0..100).map(|_| queue.get(1).unwrap().expect("a batch")).collect();
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(b.events().get(0), &(i as u32).to_le_bytes(), "batches come in queue order");
    }
    for b in batches.iter().skip(1).rev() {
        b.ack().unwrap();
    }
    assert_eq!(queue.stats().open_batches, 100, "no batch may be released before batch 0");
    assert_eq!(queue.totals().acked, 0);
    batches[0].ack().unwrap();
    queue.flush(Some(PATIENCE)).unwrap();
    assert_eq!(*calls.lock().unwrap(), vec![100], "one coalesced ACK of 100");
    assert_eq!(queue.stats().open_batches, 0);
}

/// A failed `try_publish` accepts nothing and never advances the count.
pub fn failed_try_publish_does_not_advance(make: QueueMaker) {
    let queue = make(QueueSettings { events: 2, ..QueueSettings::default() });
    let acked = Arc::new(AtomicU64::new(0));
    let ac = acked.clone();
    let p = Producer::new(
        queue.clone(),
        ProducerOptions {
            on_ack: Some(Box::new(move |n| {
                ac.fetch_add(n, Ordering::AcqRel);
            })),
            ..Default::default()
        },
    )
    .unwrap();
    p.try_publish(b"a").unwrap();
    p.try_publish(b"b").unwrap();
    for _ in 0..5 {
        assert_eq!(p.try_publish(b"c"), Err(Error::Full));
    }
    assert_eq!(p.publish(b"c", Some(Duration::from_millis(1))), Err(Error::Timeout));
    assert_eq!(p.counts().accepted, 2);
    let batch = queue.get(10).unwrap().expect("a batch");
    assert_eq!(batch.len(), 2);
    batch.ack().unwrap();
    queue.flush(Some(PATIENCE)).unwrap();
    assert_eq!(acked.load(Ordering::Acquire), 2);
    p.try_publish(b"d").expect("room again after the ACK");
}

/// `try_publish` succeeds whenever there is room, even while a consumer is
/// blocked waiting for a batch to form (libbeat#8080: it failed when the queue was busy).
pub fn try_publish_fails_only_when_full(make: QueueMaker) {
    let queue = make(QueueSettings {
        events: 64,
        flush_min_events: 1000,
        flush_timeout: PATIENCE,
        ..QueueSettings::default()
    });
    let p = Producer::new(queue.clone(), ProducerOptions::default()).unwrap();
    let q = queue.clone();
    let consumer = thread::spawn(move || q.get(1000).map(|b| b.map_or(0, |b| b.len())));
    for i in 0..64u32 {
        p.try_publish(&i.to_le_bytes()).unwrap_or_else(|e| panic!("try_publish {i} with room: {e}"));
    }
    assert_eq!(p.try_publish(b"x"), Err(Error::Full));
    assert_eq!(p.counts().accepted, 64);
    queue.close_input();
    assert_eq!(join_within(consumer), Ok(64), "closing input serves the waiting consumer");
}

/// Closing the queue unblocks a publish waiting for room, and a get waiting for events.
pub fn close_unblocks_publish_and_get(make: QueueMaker) {
    let queue = make(QueueSettings { events: 2, ..QueueSettings::default() });
    let p = Producer::new(queue.clone(), ProducerOptions::default()).unwrap();
    p.publish(b"1", None).unwrap();
    p.publish(b"2", None).unwrap();
    let blocked = thread::spawn(move || p.publish(b"3", None));
    wait_until("the third publish blocks", || queue.stats().events == 2 && !blocked.is_finished());
    let rest = queue.close();
    assert_eq!(rest.as_ref().map(|b| b.len()), Some(2), "close hands back the waiting events");
    drop(rest);
    assert_eq!(join_within(blocked), Err(Error::Closed));
    assert!(matches!(queue.get(1), Err(Error::Closed)));

    let empty = make(QueueSettings { events: 2, ..QueueSettings::default() });
    let q = empty.clone();
    let getter = thread::spawn(move || q.get(1).map(|b| b.is_some()));
    wait_until("get blocks", || !getter.is_finished());
    assert!(empty.close().is_none());
    assert_eq!(join_within(getter), Err(Error::Closed));
}

/// `flush.min_events` with a timeout: 3 events wait for the timeout, 10 are served
/// at once, and `min <= 1` always serves at once.
pub fn flush_min_events(make: QueueMaker) {
    let timeout = Duration::from_millis(50);
    let queue = make(QueueSettings { events: 64, flush_min_events: 10, flush_timeout: timeout, ..QueueSettings::default() });
    let p = Producer::new(queue.clone(), ProducerOptions::default()).unwrap();
    for _ in 0..3 {
        p.publish(b"e", None).unwrap();
    }
    let started = Instant::now();
    let b = queue.get(10).unwrap().expect("a batch");
    assert_eq!(b.len(), 3);
    assert!(started.elapsed() >= timeout - Duration::from_millis(5), "served before the flush timeout");
    b.ack().unwrap();

    let slow = make(QueueSettings { events: 64, flush_min_events: 10, flush_timeout: PATIENCE, ..QueueSettings::default() });
    let p = Producer::new(slow.clone(), ProducerOptions::default()).unwrap();
    for _ in 0..10 {
        p.publish(b"e", None).unwrap();
    }
    let started = Instant::now();
    assert_eq!(slow.get(10).unwrap().expect("a batch").len(), 10);
    assert!(started.elapsed() < PATIENCE / 2, "a full batch must not wait for the timeout");

    let direct = make(QueueSettings { events: 64, flush_min_events: 1, flush_timeout: PATIENCE, ..QueueSettings::default() });
    let p = Producer::new(direct.clone(), ProducerOptions::default()).unwrap();
    p.publish(b"e", None).unwrap();
    let started = Instant::now();
    assert_eq!(direct.get(10).unwrap().expect("a batch").len(), 1);
    assert!(started.elapsed() < PATIENCE / 2, "min_events 1 serves at once");
}

/// A batch settled twice is an error, not a double release; an unsettled batch
/// that is dropped reports its events dropped.
pub fn settle_exactly_once(make: QueueMaker) {
    let queue = make(QueueSettings { events: 16, ..QueueSettings::default() });
    let dropped = Arc::new(AtomicU64::new(0));
    let d = dropped.clone();
    let p = Producer::new(
        queue.clone(),
        ProducerOptions {
            on_drop: Some(Box::new(move |evs| {
                d.fetch_add(evs.len() as u64, Ordering::AcqRel);
            })),
            ..Default::default()
        },
    )
    .unwrap();
    for _ in 0..4 {
        p.publish(b"e", None).unwrap();
    }
    let b = queue.get(2).unwrap().expect("a batch");
    b.ack().unwrap();
    assert_eq!(b.ack(), Err(Error::AlreadySettled));
    assert_eq!(b.drop_events(), Err(Error::AlreadySettled));
    let unsettled = queue.get(2).unwrap().expect("a batch");
    drop(unsettled);
    queue.flush(Some(PATIENCE)).unwrap();
    assert_eq!(dropped.load(Ordering::Acquire), 2);
    let c = p.counts();
    assert_eq!((c.accepted, c.acked, c.dropped), (4, 2, 2));
}

/// `queue.bytes` bounds payload bytes; an event larger than the bound is rejected.
pub fn byte_bound(make: QueueMaker) {
    let queue = make(QueueSettings { events: 1000, bytes: 1000, ..QueueSettings::default() });
    let p = Producer::new(queue.clone(), ProducerOptions::default()).unwrap();
    let event = [7u8; 100];
    for _ in 0..10 {
        p.try_publish(&event).unwrap();
    }
    assert_eq!(p.try_publish(&event), Err(Error::Full));
    assert!(matches!(p.try_publish(&[0u8; 1001]), Err(Error::InvalidArgument(_))));
    let accepted = p.publish_batch(&[&event[..], &event[..]], Some(Duration::from_millis(1)));
    assert_eq!(accepted, Err(Error::Timeout));
    queue.get(3).unwrap().expect("a batch").ack().unwrap();
    assert_eq!(p.publish_batch(&[&event[..]; 5], Some(Duration::from_millis(1))), Ok(3), "a prefix fits");
}

/// `publish_packed` carries events of any size (empty ones, ones larger than a
/// segment's remaining room), keeps the byte bound with a fitting prefix, and refuses
/// lengths that do not add up to the buffer or an event that can never fit.
pub fn packed_events(make: QueueMaker) {
    let queue = make(QueueSettings { events: 64, bytes: 600_000, ..QueueSettings::default() });
    let p = Producer::new(queue.clone(), ProducerOptions::default()).unwrap();
    let sizes = [0usize, 1, 100, 0, 200_000, 3, 150_000, 7];
    let events: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| vec![i as u8; n]).collect();
    let data = events.concat();
    let lens: Vec<u32> = sizes.iter().map(|&n| n as u32).collect();
    assert!(matches!(Packed::new(&data, &lens[..lens.len() - 1]), Err(Error::InvalidArgument(_))), "lengths must add up");
    assert_eq!(p.publish_packed(Packed::new(&data, &lens).unwrap(), Some(PATIENCE)), Ok(sizes.len()));
    let mut got = Vec::new();
    while got.len() < sizes.len() {
        let batch = queue.get(64).unwrap().expect("a batch");
        got.extend(batch.events().iter().map(<[u8]>::to_vec));
        batch.ack().unwrap();
    }
    assert_eq!(got, events, "every event, in order, byte for byte");

    let big = vec![9u8; 250_000];
    let three = [&big[..], &big[..], &big[..]].concat();
    let accepted = p.publish_packed(Packed::new(&three, &[250_000; 3]).unwrap(), Some(Duration::from_millis(1)));
    assert_eq!(accepted, Ok(2), "the prefix within queue.bytes");
    let too_big = vec![0u8; 600_001];
    assert!(matches!(
        p.publish_packed(Packed::new(&too_big, &[600_001]).unwrap(), None),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(p.publish_packed(Packed::new(&[], &[]).unwrap(), None), Ok(0));
}

/// A partly delivered batch: each producer hears its ACKs and drops in publish order.
pub fn outcomes_in_publish_order(make: QueueMaker) {
    let queue = make(QueueSettings { events: 64, ..QueueSettings::default() });
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (l1, l2) = (log.clone(), log.clone());
    let p = Producer::new(
        queue.clone(),
        ProducerOptions {
            on_ack: Some(Box::new(move |n| l1.lock().unwrap().push(format!("ack {n}")))),
            on_drop: Some(Box::new(move |evs| {
                let v: Vec<u8> = evs.iter().map(|e| e[0]).collect();
                l2.lock().unwrap().push(format!("drop {v:?}"));
            })),
            ..Default::default()
        },
    )
    .unwrap();
    for v in 0u8..6 {
        p.publish(&[v], None).unwrap();
    }
    let b = queue.get(6).unwrap().expect("a batch");
    let events = b.events().clone();
    let (first, rest) = events.split_at(2);
    let (middle, last) = rest.split_at(2);
    b.settle(&last, true).unwrap();
    b.settle(&middle, false).unwrap();
    b.settle(&first, true).unwrap();
    queue.flush(Some(PATIENCE)).unwrap();
    assert_eq!(*log.lock().unwrap(), vec!["ack 2", "drop [2, 3]", "ack 2"]);
}

fn encode(p: u8, i: u32) -> [u8; 5] {
    let b = i.to_le_bytes();
    [p, b[0], b[1], b[2], b[3]]
}

fn decode(e: &[u8]) -> (u8, u32) {
    (e[0], u32::from_le_bytes([e[1], e[2], e[3], e[4]]))
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting until {what}");
        thread::yield_now();
    }
}

fn join_within<T: Send + 'static>(h: thread::JoinHandle<T>) -> T {
    wait_until("a blocked call returns", || h.is_finished());
    h.join().expect("thread")
}
