//! `Sink::write_batch` through every combinator, checked event by event: order, exactly
//! once per member, refusals named by their place in the batch, the queue sink's
//! overflow policies with batches larger than its buffer, retry give-ups and pipeline
//! closes in the middle of a batch, and close-with-deadline accounting while a batch
//! is with the destination.
//!
//! The randomised test prints its seed; `CONVEYOR_SEED=s` replays it.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use conveyor::sink::*;
use conveyor::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The index `i` of a [`payload`]`(p, i)`.
fn index(event: &[u8]) -> u32 {
    u32::from_le_bytes(event[4..8].try_into().expect("a payload"))
}

fn events(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    range.map(|i| payload(0, i)).collect()
}

fn views(events: &[Vec<u8>]) -> Vec<&[u8]> {
    events.iter().map(Vec::as_slice).collect()
}

fn indexes(events: &[Vec<u8>]) -> Vec<u32> {
    events.iter().map(|e| index(e)).collect()
}

/// A destination that records what it accepted and the size of every batch it was
/// handed; it refuses chosen events, reports closed after a number of events, or holds
/// one event until released.
#[derive(Default)]
struct Dest {
    got: Mutex<Vec<Vec<u8>>>,
    batches: Mutex<Vec<usize>>,
    /// Event index → refusals left (`usize::MAX` = always).
    refuse: Mutex<HashMap<u32, usize>>,
    closed_after: Mutex<Option<usize>>,
    /// A write of the event with this index waits until the sender is dropped.
    hold: Mutex<Option<(u32, crossbeam_channel::Receiver<()>)>>,
    closes: AtomicUsize,
}

impl Dest {
    fn new() -> Arc<Dest> {
        Arc::default()
    }

    fn refusing(self: &Arc<Self>, index: u32, times: usize) -> Arc<Self> {
        self.refuse.lock().unwrap().insert(index, times);
        self.clone()
    }

    /// Makes the write of event `index` wait until the returned sender is dropped.
    fn hold_at(&self, index: u32) -> crossbeam_channel::Sender<()> {
        let (tx, rx) = crossbeam_channel::bounded(0);
        *self.hold.lock().unwrap() = Some((index, rx));
        tx
    }

    fn got(&self) -> Vec<u32> {
        indexes(&self.got.lock().unwrap())
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    fn batches(&self) -> Vec<usize> {
        self.batches.lock().unwrap().clone()
    }
}

impl Sink for Dest {
    fn write(&self, event: &[u8]) -> Result<()> {
        let i = index(event);
        let held = self.hold.lock().unwrap().as_ref().filter(|(at, _)| *at == i).map(|(_, rx)| rx.clone());
        if let Some(rx) = held {
            let _ = rx.recv();
        }
        if let Some(left) = self.refuse.lock().unwrap().get_mut(&i).filter(|left| **left > 0) {
            if *left != usize::MAX {
                *left -= 1;
            }
            return Err(Error::Client(format!("refusing event {i}")));
        }
        let mut got = self.got.lock().unwrap();
        if self.closed_after.lock().unwrap().is_some_and(|n| got.len() >= n) {
            return Err(Error::Closed);
        }
        got.push(event.to_vec());
        Ok(())
    }

    fn write_batch(&self, events: &[&[u8]]) -> std::result::Result<usize, BatchError> {
        self.batches.lock().unwrap().push(events.len());
        for (accepted, event) in events.iter().enumerate() {
            self.write(event).map_err(|error| BatchError { accepted, error })?;
        }
        Ok(events.len())
    }

    fn close(&self) -> Result<()> {
        self.closes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        SinkStats { kind: "custom", written: self.count() as u64, ..Default::default() }
    }
}

fn dyn_sink(d: &Arc<Dest>) -> Arc<dyn Sink> {
    d.clone()
}

/// Events a drop hook was told about, in the order reported.
type Dropped = Arc<Mutex<Vec<Vec<u8>>>>;

/// A drop hook recording the dropped events.
fn drop_recorder() -> (DropCallback, Dropped) {
    let dropped: Dropped = Arc::default();
    let d = dropped.clone();
    (Box::new(move |events: &[&[u8]]| d.lock().unwrap().extend(events.iter().map(|e| e.to_vec()))), dropped)
}

fn refused(accepted: usize, error: Error) -> std::result::Result<usize, BatchError> {
    Err(BatchError { accepted, error })
}

#[test]
fn the_default_write_batch_stops_at_the_first_refusal() {
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let s = seen.clone();
    let sink = FnSink::new(
        move |e: &[u8]| {
            if index(e) == 3 {
                return Err(Error::Full);
            }
            s.lock().unwrap().push(index(e));
            Ok(())
        },
        || {},
    );
    let batch = events(0..10);
    assert_eq!(sink.write_batch(&views(&batch)), refused(3, Error::Full));
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2], "nothing after the refused event was attempted");
    let stats = sink.stats();
    assert_eq!((stats.written, stats.failures), (3, 1));
    assert_eq!(sink.write_batch(&views(&batch[4..])), Ok(6));
    let e = BatchError { accepted: 3, error: Error::Full };
    assert_eq!(e.to_string(), format!("event 3 of the batch was refused: {}", Error::Full));
    assert_eq!(Error::from(e), Error::Full);
}

#[test]
fn every_sink_takes_an_empty_batch_and_refuses_a_batch_after_close() {
    let rec = Recorder::new();
    let pipeline = Arc::new(Pipeline::builder(fast_config()).client(Mock::ok("a", &rec)).build().unwrap());
    let sinks: Vec<Arc<dyn Sink>> = vec![
        Arc::new(Broadcaster::new(vec![dyn_sink(&Dest::new())])),
        Arc::new(QueueSink::new(dyn_sink(&Dest::new()), 8, Overflow::Block, PATIENCE, None).unwrap()),
        Arc::new(QueueSink::new(dyn_sink(&Dest::new()), 8, Overflow::DropOldest, PATIENCE, None).unwrap()),
        Arc::new(Filter::new(dyn_sink(&Dest::new()), |_: &[u8]| true)),
        Arc::new(RetryingSink::new(dyn_sink(&Dest::new()), Box::new(SinkBreaker::new(3, Duration::from_millis(1))))),
        Arc::new(ChannelSink::new(4)),
        Arc::new(FnSink::new(|_: &[u8]| Ok(()), || {})),
        Arc::new(PipelineSink::new(pipeline, ProducerOptions::default(), None, PATIENCE).unwrap()),
    ];
    let batch = events(0..3);
    for sink in &sinks {
        assert_eq!(sink.write_batch(&[]), Ok(0));
        assert_eq!(sink.write_batch(&views(&batch)), Ok(3));
        sink.close().unwrap();
        assert_eq!(sink.write_batch(&[]), Ok(0), "an empty batch has nothing to refuse");
        assert_eq!(sink.write_batch(&views(&batch)), refused(0, Error::Closed), "{}", sink.stats().kind);
    }
}

#[test]
fn batches_through_every_combinator_arrive_in_order_exactly_once() {
    let (evens, all) = (Dest::new(), Dest::new());
    let rec = Recorder::new();
    let pipeline = Arc::new(Pipeline::builder(fast_config()).client(Mock::ok("p", &rec)).build().unwrap());
    let fanout = Broadcaster::new(vec![
        Arc::new(Filter::new(dyn_sink(&evens), |e: &[u8]| index(e) % 2 == 0)),
        Arc::new(
            QueueSink::new(
                Arc::new(RetryingSink::new(dyn_sink(&all), Box::new(SinkBreaker::new(3, Duration::from_millis(1))))),
                256,
                Overflow::Block,
                PATIENCE,
                None,
            )
            .unwrap(),
        ),
        Arc::new(PipelineSink::new(pipeline.clone(), ProducerOptions::default(), None, PATIENCE).unwrap()),
    ]);
    let batch = events(0..5000);
    for chunk in batch.chunks(1000) {
        assert_eq!(fanout.write_batch(&views(chunk)), Ok(1000));
    }
    let stats = fanout.stats();
    assert_eq!((stats.written, stats.forwarded, stats.failures), (5000, 15_000, 0));
    fanout.close().unwrap();
    assert_eq!(evens.got(), (0..5000).filter(|i| i % 2 == 0).collect::<Vec<_>>());
    assert_eq!(all.got(), (0..5000).collect::<Vec<_>>());
    assert!(all.batches().iter().any(|&n| n > 1), "the queue sink hands batches on: {:?}", all.batches());
    assert!(evens.batches().iter().all(|&n| n == 1), "runs of kept events between discarded ones");
    assert_eq!(rec.distinct(), 5000);
    assert!(batch.iter().all(|e| rec.times(e) == 1), "the pipeline published every event once");
    assert_eq!(pipeline.stats().acked, 5000);
}

#[test]
fn a_broadcaster_member_closing_mid_batch_is_removed_and_the_others_get_every_event_once() {
    let members: Vec<Arc<Dest>> = (0..4).map(|_| Dest::new()).collect();
    *members[1].closed_after.lock().unwrap() = Some(3);
    members[2].refusing(5, 1);
    let b = Broadcaster::new(members.iter().map(dyn_sink).collect());
    assert_eq!(b.write_batch(&views(&events(0..10))), Ok(10), "a broadcaster refuses only when closed itself");
    assert_eq!(members[0].got(), (0..10).collect::<Vec<_>>());
    assert_eq!(members[1].got(), vec![0, 1, 2]);
    assert_eq!(members[2].got(), vec![0, 1, 2, 3, 4, 6, 7, 8, 9], "the refused event is not written twice");
    assert_eq!(members[3].got(), (0..10).collect::<Vec<_>>());
    assert_eq!(b.len(), 3, "the closed member was removed");
    assert_eq!(members[0].batches(), vec![10], "one write_batch per member");
    assert_eq!(members[2].batches(), vec![10, 4], "the rest after the refused event");
    let stats = b.stats();
    assert_eq!((stats.written, stats.forwarded, stats.failures), (10, 3 + 10 + 9 + 10, 1));

    assert_eq!(b.write_batch(&views(&events(10..20))), Ok(10));
    assert_eq!(members[1].got(), vec![0, 1, 2], "a removed member gets nothing more");
    for m in [&members[0], &members[3]] {
        assert_eq!(m.got(), (0..20).collect::<Vec<_>>());
    }
}

#[test]
fn a_filter_passes_kept_runs_on_and_names_a_refusal_by_its_place_in_the_batch() {
    let dest = Dest::new();
    let f = Filter::new(dyn_sink(&dest), |e: &[u8]| index(e) % 3 != 0);
    assert_eq!(f.write_batch(&views(&events(0..12))), Ok(12));
    let kept: Vec<u32> = (0..12).filter(|i| i % 3 != 0).collect();
    assert_eq!(dest.got(), kept);
    assert_eq!(dest.batches(), vec![2, 2, 2, 2], "each run of kept events in one write_batch");
    let s = f.stats();
    assert_eq!((s.written, s.forwarded, s.filtered, s.failures), (12, 8, 4, 0));

    dest.refusing(17, usize::MAX);
    // 12 (discarded) 13 14 (kept) 15 (discarded) 16 17 (kept, 17 refused) ...
    assert_eq!(f.write_batch(&views(&events(12..24))), refused(5, Error::Client("refusing event 17".into())));
    assert_eq!(dest.got()[kept.len()..], [13, 14, 16]);
    let s = f.stats();
    assert_eq!((s.written, s.forwarded, s.filtered, s.failures), (12 + 6, 8 + 3, 4 + 2, 1), "as six single writes");
}

#[test]
fn a_blocking_queue_sink_takes_a_batch_larger_than_its_buffer_as_room_comes() {
    let dest = Dest::new();
    let hold = dest.hold_at(0);
    let q = Arc::new(QueueSink::new(dyn_sink(&dest), 8, Overflow::Block, PATIENCE, None).unwrap());
    let writer = {
        let q = q.clone();
        std::thread::spawn(move || q.write_batch(&views(&events(0..100))))
    };
    // The writer filled the buffer in one run, the worker took event 0 to the
    // destination, and blocked writers wait for half the buffer to be free.
    wait_until("the destination holds event 0", || {
        let s = q.stats();
        (s.written, s.queued) == (8, 7)
    });
    assert!(!writer.is_finished(), "the writer waits for room");
    drop(hold);
    assert_eq!(writer.join().unwrap(), Ok(100));
    let r = q.close_within(PATIENCE);
    assert_eq!((r.delivered, r.dropped, r.drained), (100, 0, true));
    assert_eq!(dest.got(), (0..100).collect::<Vec<_>>());
}

/// A queue sink of `capacity` whose worker holds event 1000 at the destination.
fn held_queue(overflow: Overflow, capacity: usize) -> (Arc<QueueSink>, Arc<Dest>, crossbeam_channel::Sender<()>, Dropped) {
    let dest = Dest::new();
    let hold = dest.hold_at(1000);
    let (hook, dropped) = drop_recorder();
    let q = Arc::new(QueueSink::new(dyn_sink(&dest), capacity, overflow, PATIENCE, Some(hook)).unwrap());
    q.write(&payload(0, 1000)).unwrap();
    wait_until("the worker holds event 1000", || q.stats().queued == 0);
    (q, dest, hold, dropped)
}

#[test]
fn a_drop_newest_queue_sink_refuses_the_first_event_of_a_batch_that_finds_no_room() {
    let (q, dest, hold, dropped) = held_queue(Overflow::DropNewest, 4);
    let batch = events(0..10);
    assert_eq!(q.write_batch(&views(&batch)), refused(4, Error::Full));
    assert_eq!(indexes(&dropped.lock().unwrap()), vec![4], "only the refused event is reported; the rest is the writer's");
    assert_eq!(q.write_batch(&views(&batch[5..])), refused(0, Error::Full));
    assert_eq!(indexes(&dropped.lock().unwrap()), vec![4, 5]);
    let s = q.stats();
    assert_eq!((s.written, s.dropped, s.queued), (5, 2, 4));
    drop(hold);
    let r = q.close_within(PATIENCE);
    assert_eq!((r.delivered, r.dropped, r.drained), (5, 2, true));
    assert_eq!(dest.got(), vec![1000, 0, 1, 2, 3]);
}

#[test]
fn a_drop_oldest_queue_sink_keeps_the_newest_of_a_batch_larger_than_its_buffer() {
    let (q, dest, hold, dropped) = held_queue(Overflow::DropOldest, 4);
    q.write_batch(&views(&events(100..102))).unwrap();
    assert_eq!(q.write_batch(&views(&events(0..10))), Ok(10));
    assert_eq!(
        indexes(&dropped.lock().unwrap()),
        vec![100, 101, 0, 1, 2, 3, 4, 5],
        "what writes of one event at a time would have evicted, oldest first"
    );
    let s = q.stats();
    assert_eq!((s.written, s.dropped, s.queued), (13, 8, 4));
    drop(hold);
    let r = q.close_within(PATIENCE);
    assert_eq!((r.delivered, r.dropped, r.drained), (5, 8, true));
    assert_eq!(dest.got(), vec![1000, 6, 7, 8, 9]);
}

#[test]
fn a_queue_sink_worker_drops_exactly_the_events_its_destination_refuses() {
    let dest = Dest::new().refusing(10, 1).refusing(11, 1).refusing(500, 1);
    let (hook, dropped) = drop_recorder();
    let q = QueueSink::new(dyn_sink(&dest), 4096, Overflow::Block, PATIENCE, Some(hook)).unwrap();
    q.write_batch(&views(&events(0..2000))).unwrap();
    let r = q.close_within(PATIENCE);
    assert_eq!((r.delivered, r.dropped, r.drained), (1997, 3, true));
    assert_eq!(indexes(&dropped.lock().unwrap()), vec![10, 11, 500]);
    assert_eq!(dest.got(), (0..2000).filter(|i| ![10, 11, 500].contains(i)).collect::<Vec<_>>());
    assert_eq!(q.stats().failures, 3);

    // A destination that reports closed refuses the rest of the batch at once.
    let dest = Dest::new();
    *dest.closed_after.lock().unwrap() = Some(700);
    let (hook, dropped) = drop_recorder();
    let q = QueueSink::new(dyn_sink(&dest), 4096, Overflow::Block, PATIENCE, Some(hook)).unwrap();
    q.write_batch(&views(&events(0..2000))).unwrap();
    let r = q.close_within(PATIENCE);
    assert_eq!((r.delivered, r.dropped), (700, 1300));
    assert_eq!(indexes(&dropped.lock().unwrap()), (700..2000).collect::<Vec<_>>());
    assert_eq!(q.stats().failures, 1300, "one failure per refused event, as with single writes");
}

#[test]
fn a_retrying_sink_gives_up_on_one_event_in_the_middle_of_a_batch() {
    let dest = Dest::new().refusing(3, usize::MAX);
    let strategy = CountingRetries::new(2);
    let proceeds = strategy.proceeds.clone();
    let r = RetryingSink::new(dyn_sink(&dest), Box::new(strategy));
    match r.write_batch(&views(&events(0..10))) {
        Err(BatchError { accepted: 3, error: Error::Client(msg) }) => {
            assert!(msg.contains("dropped by the retry strategy after 2 attempts"), "{msg}")
        }
        other => panic!("expected event 3 given up on, got {other:?}"),
    }
    assert_eq!(dest.got(), vec![0, 1, 2], "nothing after the given-up event was attempted");
    assert_eq!(dest.batches(), vec![10, 7], "the first attempt carried the batch, the retry the rest");
    assert_eq!(proceeds.load(Ordering::SeqCst), 2, "the strategy is consulted before every attempt");
    let s = r.stats();
    assert_eq!((s.written, s.forwarded, s.failures, s.dropped), (4, 3, 2, 1));

    assert_eq!(r.write_batch(&views(&events(4..10))), Ok(6));
    assert_eq!(dest.got(), vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
}

#[test]
fn a_retrying_sink_retries_a_refused_event_and_goes_on_with_the_batch() {
    let dest = Dest::new().refusing(5, 2).refusing(8, 1);
    let r = RetryingSink::new(dyn_sink(&dest), Box::new(SinkBreaker::new(100, Duration::ZERO)));
    assert_eq!(r.write_batch(&views(&events(0..10))), Ok(10));
    assert_eq!(dest.got(), (0..10).collect::<Vec<_>>(), "in order, each once");
    let s = r.stats();
    assert_eq!((s.written, s.forwarded, s.failures, s.dropped), (10, 10, 3, 0));
}

#[test]
fn a_retrying_sink_closed_during_a_backoff_reports_the_prefix() {
    let dest = Dest::new().refusing(2, usize::MAX);
    let r = Arc::new(RetryingSink::new(dyn_sink(&dest), Box::new(SinkBreaker::new(1, Duration::from_secs(600)))));
    let writer = {
        let r = r.clone();
        std::thread::spawn(move || r.write_batch(&views(&events(0..5))))
    };
    wait_until("the first attempt failed", || r.stats().failures >= 1);
    r.close().unwrap();
    assert_eq!(writer.join().unwrap(), refused(2, Error::Closed));
    assert_eq!(dest.got(), vec![0, 1]);
}

/// A pipeline whose client always fails, over a queue of four events: a fifth publish
/// waits for room until the pipeline closes or the publish times out.
fn stuck_pipeline() -> Arc<Pipeline> {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.queue_events = 4;
    c.bulk_max_size = 2;
    c.max_retries = None;
    Arc::new(Pipeline::builder(c).client(Mock::new("stuck", &rec, Box::new(|_, _| Published::retry(0)))).build().unwrap())
}

#[test]
fn a_pipeline_sink_whose_pipeline_closes_mid_batch_accepts_a_prefix_and_reports_the_rest() {
    let pipeline = stuck_pipeline();
    let sink = Arc::new(PipelineSink::new(pipeline.clone(), ProducerOptions::default(), None, PATIENCE).unwrap());
    let writer = {
        let sink = sink.clone();
        std::thread::spawn(move || sink.write_batch(&views(&events(0..10))))
    };
    wait_until("the queue is full", || pipeline.stats().accepted == 4);
    pipeline.close(Duration::from_millis(50)).unwrap();
    assert_eq!(writer.join().unwrap(), refused(4, Error::Closed));
    let stats = pipeline.stats();
    assert_eq!((stats.accepted, stats.acked + stats.dropped, stats.in_flight), (4, 4, 0), "the prefix has its outcomes");
    let s = sink.stats();
    assert_eq!((s.written, s.failures), (4, 1));
}

#[test]
fn a_pipeline_sink_refuses_the_rest_of_a_batch_after_its_publish_timeout() {
    let pipeline = stuck_pipeline();
    let sink = PipelineSink::new(pipeline.clone(), ProducerOptions::default(), Some(Duration::from_millis(20)), PATIENCE).unwrap();
    assert_eq!(sink.write_batch(&views(&events(0..10))), refused(4, Error::Timeout));
    assert_eq!(pipeline.stats().accepted, 4);
    pipeline.close(Duration::ZERO).unwrap();
}

#[test]
fn a_pipeline_sink_batch_with_an_event_too_large_accepts_the_events_before_it() {
    let rec = Recorder::new();
    let mut c = fast_config();
    c.queue_bytes = 64;
    let pipeline = Arc::new(Pipeline::builder(c).client(Mock::ok("a", &rec)).build().unwrap());
    let sink = PipelineSink::new(pipeline.clone(), ProducerOptions::default(), None, PATIENCE).unwrap();
    let mut batch = events(0..4);
    batch[2] = vec![7; 65];
    match sink.write_batch(&views(&batch)) {
        Err(BatchError { accepted: 2, error: Error::InvalidArgument(_) }) => {}
        other => panic!("expected event 2 refused as too large, got {other:?}"),
    }
    pipeline.flush(PATIENCE).unwrap();
    assert_eq!(pipeline.stats().acked, 2);
    assert_eq!((rec.times(&batch[0]), rec.times(&batch[1]), rec.times(&batch[3])), (1, 1, 0));
}

/// Close with a deadline while the destination holds event 5000 of a batch of 10 000:
/// the report counts what was delivered and what the deadline dropped from the buffer;
/// the events handed over with the stuck one get their outcome when its write returns
/// (`refuse`: the destination refuses it once released). Every event ends up with
/// exactly one.
fn close_with_a_batch_in_flight(refuse: bool) {
    const EVENTS: u32 = 10_000;
    const STUCK: u32 = 5000;
    let dest = Dest::new();
    let hold = dest.hold_at(STUCK);
    if refuse {
        dest.refusing(STUCK, 1);
    }
    let (hook, dropped) = drop_recorder();
    let q = QueueSink::new(dyn_sink(&dest), EVENTS as usize, Overflow::Block, PATIENCE, Some(hook)).unwrap();
    assert_eq!(q.write_batch(&views(&events(0..EVENTS))), Ok(EVENTS as usize));
    wait_until("the destination holds the stuck event", || dest.count() == STUCK as usize);
    let r = q.close_within(Duration::from_millis(20));
    assert!(!r.drained);
    assert!(r.delivered <= u64::from(STUCK), "events written with the stuck one are counted when its write returns: {r:?}");
    // The worker hands on at most 4096 events per write: the tail was still buffered.
    assert!(r.dropped > 0, "the deadline dropped the buffered tail: {r:?}");
    assert_eq!(r.dropped, dropped.lock().unwrap().len() as u64, "every drop counted was reported");
    assert!(r.delivered + r.dropped < u64::from(EVENTS), "a batch is still with the destination: {r:?}");
    drop(hold);
    wait_until("every event has an outcome", || {
        let s = q.stats();
        s.forwarded + s.dropped == u64::from(EVENTS)
    });
    let delivered = dest.got();
    let dropped = indexes(&dropped.lock().unwrap());
    assert_eq!(delivered, (0..delivered.len() as u32).collect::<Vec<_>>(), "delivered in order, no gap");
    let mut outcomes: Vec<u32> = delivered.iter().chain(&dropped).copied().collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes, (0..EVENTS).collect::<Vec<_>>(), "each event delivered or dropped, once");
    if refuse {
        assert_eq!(delivered.len(), STUCK as usize, "after the deadline the rest of the batch is dropped, not written");
    }
}

#[test]
fn close_with_a_deadline_accounts_for_a_batch_in_flight() {
    close_with_a_batch_in_flight(false);
    close_with_a_batch_in_flight(true);
}

#[test]
fn a_sink_client_hands_a_pipeline_batch_over_whole_and_retries_from_a_refused_event() {
    let dest = Dest::new().refusing(50, 1);
    let pipeline = Pipeline::builder(fast_config()).client(SinkClient::new(dest.clone())).build().unwrap();
    let producer = pipeline.producer(ProducerOptions::default()).unwrap();
    assert_eq!(producer.publish_batch(&views(&events(0..200)), None), Ok(200));
    pipeline.flush(PATIENCE).unwrap();
    assert_eq!(dest.got(), (0..200).collect::<Vec<_>>(), "in order, each once");
    assert!(dest.batches().iter().any(|&n| n > 1), "client batches are written whole: {:?}", dest.batches());
    let stats = pipeline.stats();
    assert_eq!((stats.acked, stats.dropped), (200, 0));
}

fn seed() -> u64 {
    let seed = std::env::var("CONVEYOR_SEED")
        .map(|s| s.parse().expect("CONVEYOR_SEED is a number"))
        .unwrap_or_else(|_| rand::random());
    eprintln!("sink_batches seed={seed} (replay: CONVEYOR_SEED={seed})");
    seed
}

#[test]
fn concurrent_batch_writers_reach_every_member_once_each_in_its_order() {
    const WRITERS: u32 = 4;
    const PER_WRITER: u32 = 3000;
    let seed = seed();
    let (queued, direct, filtered) = (Dest::new(), Dest::new(), Dest::new());
    let fanout = Arc::new(Broadcaster::new(vec![
        Arc::new(QueueSink::new(dyn_sink(&queued), 64, Overflow::Block, PATIENCE, None).unwrap()),
        dyn_sink(&direct),
        Arc::new(Filter::new(dyn_sink(&filtered), |e: &[u8]| index(e) % 5 != 0)),
    ]));
    let accepted = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (fanout, accepted) = (fanout.clone(), accepted.clone());
            let mut rng = SmallRng::seed_from_u64(seed ^ u64::from(w));
            std::thread::spawn(move || {
                let mine: Vec<Vec<u8>> = (0..PER_WRITER).map(|i| payload(w, i)).collect();
                let mut at = 0;
                while at < mine.len() {
                    let n = rng.gen_range(1..=300).min(mine.len() - at);
                    let written = fanout.write_batch(&views(&mine[at..at + n])).expect("write_batch");
                    accepted.fetch_add(written as u64, Ordering::SeqCst);
                    at += n;
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    fanout.close().unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), u64::from(WRITERS * PER_WRITER));
    for (dest, keep) in [(&queued, 1), (&direct, 1), (&filtered, 5)] {
        let got = dest.got.lock().unwrap().clone();
        let distinct: HashSet<&Vec<u8>> = got.iter().collect();
        assert_eq!(distinct.len(), got.len(), "no event twice (seed {seed})");
        for w in 0..WRITERS {
            let mine: Vec<u32> = got.iter().filter(|e| e[..4] == w.to_le_bytes()).map(|e| index(e)).collect();
            let expected: Vec<u32> = (0..PER_WRITER).filter(|i| keep == 1 || i % keep != 0).collect();
            assert_eq!(mine, expected, "writer {w}'s events, in its order (seed {seed})");
        }
    }
}
