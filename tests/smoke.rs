use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conveyor::*;

struct Noop(Arc<AtomicU64>);
impl Client for Noop {
    fn publish(&mut self, events: &Events) -> Published {
        self.0.fetch_add(events.len() as u64, Ordering::Relaxed);
        Published::all(events.len())
    }
}

#[test]
fn smoke_single_and_loadbalance() {
    for n in [1, 3] {
        let seen = Arc::new(AtomicU64::new(0));
        let mut b = Pipeline::builder(Config::default());
        for _ in 0..n {
            b = b.client(Noop(seen.clone()));
        }
        let p = b.build().unwrap();
        let acked = Arc::new(AtomicU64::new(0));
        let a = acked.clone();
        let prod = p
            .producer(ProducerOptions { on_ack: Some(Box::new(move |k| { a.fetch_add(k, Ordering::Relaxed); })), ..Default::default() })
            .unwrap();
        for i in 0..100_000u32 {
            prod.publish(&i.to_le_bytes(), None).unwrap();
        }
        p.flush(Duration::from_secs(10)).unwrap();
        assert_eq!(acked.load(Ordering::Relaxed), 100_000);
        assert_eq!(seen.load(Ordering::Relaxed), 100_000);
        let r = p.close(Duration::from_secs(1)).unwrap();
        assert_eq!(r.acked, 100_000);
    }
}
