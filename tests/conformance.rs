//! Runs the queue conformance suite against every registered queue type.
//! `CONVEYOR_SEEDS=n` runs n seeds per case (default 4); `CONVEYOR_SEED=s` replays one.

use std::sync::Arc;

use conveyor::queue::conformance::{self, QueueMaker};
use conveyor::queue::{registry, Queue, QueueSettings};

fn for_each_type(check: impl Fn(&str, QueueMaker)) {
    for name in registry::types() {
        let type_name = name.clone();
        let make = move |s: QueueSettings| -> Arc<dyn Queue> { registry::build(&type_name, s, None).expect("build queue") };
        check(&name, &make);
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("CONVEYOR_SEED") {
        return vec![s.parse().expect("CONVEYOR_SEED is a number")];
    }
    let n: u64 = std::env::var("CONVEYOR_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let base: u64 = rand::random::<u32>() as u64;
    (base..base + n).collect()
}

fn run_cases(flush: bool) {
    for_each_type(|name, make| {
        for case in conformance::cases() {
            for seed in seeds() {
                eprintln!("conformance {name} {case:?} flush={flush} seed={seed} (replay: CONVEYOR_SEED={seed})");
                conformance::producer_consumer(make, case, seed, flush);
            }
        }
    });
}

#[test]
fn conformance_producer_consumer_direct() {
    run_cases(false);
}

#[test]
fn conformance_producer_consumer_flush() {
    run_cases(true);
}

#[test]
fn conformance_has_eighteen_cases() {
    assert_eq!(conformance::cases().len(), 18);
}

#[test]
fn conformance_cancel_removes_events() {
    for_each_type(|_, make| conformance::cancel_removes_events(make));
}

#[test]
fn conformance_cancel_keeps_taken_events() {
    for_each_type(|_, make| conformance::cancel_keeps_taken_events(make));
}

#[test]
fn conformance_ack_in_order_when_settled_in_reverse() {
    for_each_type(|_, make| conformance::ack_in_order_when_settled_in_reverse(make));
}

#[test]
fn conformance_failed_try_publish_does_not_advance() {
    for_each_type(|_, make| conformance::failed_try_publish_does_not_advance(make));
}

#[test]
fn conformance_try_publish_fails_only_when_full() {
    for_each_type(|_, make| conformance::try_publish_fails_only_when_full(make));
}

#[test]
fn conformance_close_unblocks_publish_and_get() {
    for_each_type(|_, make| conformance::close_unblocks_publish_and_get(make));
}

#[test]
fn conformance_flush_min_events() {
    for_each_type(|_, make| conformance::flush_min_events(make));
}

#[test]
fn conformance_settle_exactly_once() {
    for_each_type(|_, make| conformance::settle_exactly_once(make));
}

#[test]
fn conformance_byte_bound() {
    for_each_type(|_, make| conformance::byte_bound(make));
}

#[test]
fn conformance_packed_events() {
    for_each_type(|_, make| conformance::packed_events(make));
}

#[test]
fn conformance_outcomes_in_publish_order() {
    for_each_type(|_, make| conformance::outcomes_in_publish_order(make));
}

#[test]
fn conformance_unknown_queue_type_names_the_key() {
    let err = registry::build("nope", QueueSettings::default(), None).err().expect("unknown type fails");
    assert!(err.to_string().contains("queue.type"), "{err}");
}
