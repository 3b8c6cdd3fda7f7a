//! The state a client's worker reports in stats follows what the worker really does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conveyor::{Client, Config, Events, Pipeline, ProducerOptions, Published, WorkerState};

/// Fails its first publish with a temporary error, then publishes everything.
struct RetriesOnce {
    calls: Arc<AtomicU64>,
}

impl Client for RetriesOnce {
    fn publish(&mut self, events: &Events) -> Published {
        if self.calls.fetch_add(1, Ordering::Relaxed) == 0 {
            Published::retry(0)
        } else {
            Published::all(events.len())
        }
    }
}

#[test]
fn a_client_is_active_again_after_backing_off_a_temporary_failure() {
    let mut config = Config::default();
    config.set("backoff.init", "1ms").unwrap();
    config.set("backoff.max", "1ms").unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let pipeline = Pipeline::builder(config).client(RetriesOnce { calls: calls.clone() }).build().unwrap();
    let producer = pipeline.producer(ProducerOptions::default()).unwrap();
    producer.publish(b"event", None).unwrap();
    pipeline.flush(Duration::from_secs(10)).unwrap();

    let stats = pipeline.stats();
    let client = &stats.clients[0];
    assert_eq!(calls.load(Ordering::Relaxed), 2, "one failed and one successful publish");
    assert_eq!((client.retries, client.connects), (1, 1), "retried on the same connection: {client:?}");
    assert_eq!(client.state, WorkerState::Active, "{client:?}");
    pipeline.close(Duration::from_secs(5)).unwrap();
}
