//! Sink edge cases the bindings reach: "no limit" durations (what C passes as
//! UINT64_MAX and Python as None) wait without a deadline instead of overflowing the
//! clock, a closed, drained channel answers a non-blocking read with `Closed`, and a
//! queue's drop hook may call into its own queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use conveyor::sink::*;
use conveyor::Error;

#[test]
fn queue_sink_close_without_a_deadline_drains_everything() {
    let delivered = Arc::new(AtomicUsize::new(0));
    let d = delivered.clone();
    let slow = FnSink::new(
        move |_: &[u8]| {
            std::thread::sleep(Duration::from_micros(200));
            d.fetch_add(1, Ordering::SeqCst);
            Ok(())
        },
        || {},
    );
    let q = QueueSink::new(Arc::new(slow), 64, Overflow::Block, Duration::MAX, None).unwrap();
    for i in 0..200u32 {
        q.write(&i.to_le_bytes()).unwrap();
    }
    q.close().unwrap();
    assert_eq!(delivered.load(Ordering::SeqCst), 200);
    let r = q.close_within(Duration::MAX);
    assert_eq!((r.delivered, r.dropped, r.drained), (200, 0, true));
}

#[test]
fn a_breaker_window_beyond_the_clock_waits_until_close() {
    let mut b = SinkBreaker::new(1, Duration::MAX);
    assert!(!b.failure());
    assert_eq!(b.proceed(), Duration::MAX);

    let failing = Arc::new(FnSink::new(|_: &[u8]| Err(Error::Client("down".into())), || {}));
    let r = Arc::new(RetryingSink::new(failing, Box::new(SinkBreaker::new(1, Duration::MAX))));
    let w = r.clone();
    let writer = std::thread::spawn(move || w.write(b"x"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.stats().failures == 0 {
        assert!(Instant::now() < deadline, "the first attempt never failed");
        std::thread::sleep(Duration::from_millis(1));
    }
    r.close().unwrap();
    assert_eq!(writer.join().unwrap(), Err(Error::Closed));
}

#[test]
fn a_closed_drained_channel_answers_closed_even_without_waiting() {
    let ch = ChannelSink::new(4);
    ch.write(b"kept").unwrap();
    ch.close().unwrap();
    assert_eq!(ch.recv(Some(Duration::ZERO)).unwrap(), b"kept");
    for _ in 0..1000 {
        assert_eq!(ch.recv(Some(Duration::ZERO)), Err(Error::Closed));
    }
}

#[test]
fn a_drop_hook_may_call_into_its_own_queue() {
    // The destination holds each event until released; the hook asks the queue for its
    // stats, which takes the queue's lock.
    let (release, held) = crossbeam_channel::unbounded::<()>();
    let gate = FnSink::new(
        move |_: &[u8]| {
            let _ = held.recv();
            Ok(())
        },
        || {},
    );
    let me: Arc<OnceLock<Arc<QueueSink>>> = Arc::default();
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (m, s) = (me.clone(), seen.clone());
    let hook = move |events: &[&[u8]]| {
        let queued = m.get().map_or(u64::MAX, |q| q.stats().queued);
        s.lock().unwrap().extend(events.iter().map(|_| queued));
    };
    let q = Arc::new(
        QueueSink::new(Arc::new(gate), 1, Overflow::DropOldest, Duration::from_secs(20), Some(Box::new(hook))).unwrap(),
    );
    assert!(me.set(q.clone()).is_ok());
    q.write(b"0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while q.stats().queued != 0 {
        assert!(Instant::now() < deadline, "the destination never took event 0");
        std::thread::sleep(Duration::from_millis(1));
    }
    q.write(b"1").unwrap();
    let writer = {
        let q = q.clone();
        std::thread::spawn(move || q.write(b"2")) // drops "1" from the full queue
    };
    while !writer.is_finished() {
        assert!(Instant::now() < deadline, "the drop hook deadlocked on its own queue");
        std::thread::sleep(Duration::from_millis(1));
    }
    writer.join().unwrap().unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![0]);
    let r = q.close_within(Duration::ZERO); // drops "2", still waiting behind "0"
    assert_eq!((r.dropped, r.drained), (2, false));
    assert_eq!(seen.lock().unwrap().len(), 2);
    drop(release);
}
