//! Moving events through sinks does not allocate per event: a fan-out of two queue
//! sinks, fed one event at a time and in batches, is counted by a global allocator.
//! Buffers still grow to their working size (a few dozen allocations per chunk of
//! events, a bounded number of chunks), so the check is "far fewer than one per
//! hundred events" rather than zero.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor::sink::{Broadcaster, FnSink, Overflow, QueueSink, Sink};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const EVENTS: usize = 500_000;

#[test]
fn a_fan_out_of_queue_sinks_allocates_nothing_per_event() {
    let delivered = Arc::new(AtomicUsize::new(0));
    let outputs: Vec<Arc<dyn Sink>> = (0..2)
        .map(|_| {
            let d = delivered.clone();
            let dst = FnSink::new(
                move |_: &[u8]| {
                    d.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                },
                || {},
            );
            Arc::new(QueueSink::new(Arc::new(dst), 8192, Overflow::Block, Duration::from_secs(30), None).unwrap())
                as Arc<dyn Sink>
        })
        .collect();
    let fanout = Broadcaster::new(outputs);
    let storage = vec![[7u8; 100]; 1024];
    let batch: Vec<&[u8]> = storage.iter().map(|e| &e[..]).collect();
    let wait_delivered = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while delivered.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "the queue sinks never delivered {n} events");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let mut sent = 0;
    // Warm-up: the chunks and view lists grow to their working size.
    for _ in 0..3 {
        for event in &batch {
            fanout.write(event).unwrap();
        }
        fanout.write_batch(&batch).unwrap();
        sent += 2 * batch.len();
        wait_delivered(2 * sent);
    }

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..EVENTS / batch.len() {
        for event in &batch {
            fanout.write(event).unwrap();
        }
        sent += batch.len();
    }
    wait_delivered(2 * sent);
    let one_at_a_time = ALLOCATIONS.load(Ordering::Relaxed) - before;

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..EVENTS / batch.len() {
        fanout.write_batch(&batch).unwrap();
        sent += batch.len();
    }
    wait_delivered(2 * sent);
    let in_batches = ALLOCATIONS.load(Ordering::Relaxed) - before;
    fanout.close().unwrap();

    let bound = (EVENTS / 100) as u64;
    assert!(one_at_a_time < bound, "{one_at_a_time} allocations for {EVENTS} events written one at a time");
    assert!(in_batches < bound, "{in_batches} allocations for {EVENTS} events written in batches");
}
