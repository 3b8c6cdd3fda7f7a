//! Retrying a sink's writes under a strategy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{BatchError, Counters, Sink, SinkStats};
use crate::error::{Error, Result};
use crate::queue::lock;
use crate::retry::Shutdown;

/// Decides when a [`RetryingSink`] tries again, and whether it gives up.
pub trait SinkRetryStrategy: Send {
    /// How long to wait before the next attempt (zero = now). Consulted before every
    /// attempt, including an event's first.
    fn proceed(&mut self) -> Duration;
    /// Records a failed attempt; returns true to give up on the event.
    fn failure(&mut self) -> bool;
    /// Records a successful attempt.
    fn success(&mut self);
}

/// After `threshold` failures in a row, at most one attempt per `backoff` window;
/// never gives up.
#[derive(Debug, Clone)]
pub struct SinkBreaker {
    threshold: u32,
    backoff: Duration,
    failures: u32,
    last_failure: Option<Instant>,
}

impl SinkBreaker {
    /// A breaker that opens after `threshold` consecutive failures.
    pub fn new(threshold: u32, backoff: Duration) -> SinkBreaker {
        SinkBreaker { threshold, backoff, failures: 0, last_failure: None }
    }
}

impl SinkRetryStrategy for SinkBreaker {
    fn proceed(&mut self) -> Duration {
        match self.last_failure {
            Some(last) if self.failures >= self.threshold => {
                // A window too large for the clock waits for good (until the sink closes).
                last.checked_add(self.backoff).map_or(Duration::MAX, |end| end.saturating_duration_since(Instant::now()))
            }
            _ => Duration::ZERO,
        }
    }

    fn failure(&mut self) -> bool {
        self.failures = self.failures.saturating_add(1);
        self.last_failure = Some(Instant::now());
        false
    }

    fn success(&mut self) {
        self.failures = 0;
        self.last_failure = None;
    }
}

/// Full-jitter exponential backoff: after `n` failures in a row the wait is uniform
/// in `[0, min(base + factor * 2^(n-1), max))`. Overflow-safe: the bound saturates at
/// `max` however many failures; never gives up.
#[derive(Debug)]
pub struct SinkExponentialBackoff {
    base: Duration,
    factor: Duration,
    max: Duration,
    failures: u32,
    rng: SmallRng,
}

impl SinkExponentialBackoff {
    /// A backoff with the given parameters and a seeded RNG (replayable).
    pub fn new(base: Duration, factor: Duration, max: Duration, seed: u64) -> SinkExponentialBackoff {
        SinkExponentialBackoff { base, factor, max, failures: 0, rng: SmallRng::seed_from_u64(seed) }
    }

    /// The upper bound of the next wait.
    pub fn bound(&self) -> Duration {
        if self.failures == 0 {
            return Duration::ZERO;
        }
        let shift = (self.failures - 1).min(62);
        let growth = self.factor.checked_mul(1u32 << shift.min(31)).and_then(|d| d.checked_mul(1u32 << shift.saturating_sub(31)));
        growth.and_then(|g| self.base.checked_add(g)).map_or(self.max, |b| b.min(self.max))
    }
}

impl SinkRetryStrategy for SinkExponentialBackoff {
    fn proceed(&mut self) -> Duration {
        let bound = self.bound();
        if bound.is_zero() {
            return Duration::ZERO;
        }
        self.rng.gen_range(Duration::ZERO..bound)
    }

    fn failure(&mut self) -> bool {
        self.failures = self.failures.saturating_add(1);
        false
    }

    fn success(&mut self) {
        self.failures = 0;
    }
}

/// Retries each write to `dst` until it succeeds, the strategy gives up (the write
/// fails with [`Error::Client`] saying so — a drop is never reported as success), the
/// destination reports [`Error::Closed`] (returned at once), or this sink is closed
/// (a pending backoff ends at once). Writes are serialized, so concurrent writers keep
/// their order.
pub struct RetryingSink {
    dst: Arc<dyn Sink>,
    strategy: Mutex<Box<dyn SinkRetryStrategy>>,
    serial: Mutex<()>,
    shutdown: Arc<Shutdown>,
    closed: AtomicBool,
    counters: Counters,
}

impl RetryingSink {
    /// Retries writes to `dst` under `strategy`.
    pub fn new(dst: Arc<dyn Sink>, strategy: Box<dyn SinkRetryStrategy>) -> RetryingSink {
        RetryingSink {
            dst,
            strategy: Mutex::new(strategy),
            serial: Mutex::new(()),
            shutdown: Shutdown::new(),
            closed: AtomicBool::new(false),
            counters: Counters::default(),
        }
    }
}

impl Sink for RetryingSink {
    fn write(&self, event: &[u8]) -> Result<()> {
        self.write_batch(&[event]).map(drop).map_err(Error::from)
    }

    /// Retries the batch from its first event not yet accepted, under the same rules
    /// as `write`, event by event: an event the strategy gives up on is refused
    /// ([`Error::Client`], counting that event's attempts) and the events after it are
    /// left to the caller. Each attempt writes the rest of the batch at once, so the
    /// strategy is consulted once per attempt (not per event it carries): `proceed`
    /// before it, `success` after it if it moved any event, `failure` if it stopped at
    /// a failing one.
    fn write_batch(&self, events: &[&[u8]]) -> Result<usize, BatchError> {
        if events.is_empty() {
            return Ok(0);
        }
        let _turn = lock(&self.serial);
        let mut accepted = 0;
        // Attempts at `events[accepted]`.
        let mut attempts = 0u64;
        let error = loop {
            if self.closed.load(Ordering::Acquire) {
                break Error::Closed;
            }
            let wait = lock(&self.strategy).proceed();
            if !wait.is_zero() && !self.shutdown.sleep(wait) {
                break Error::Closed;
            }
            attempts += 1;
            let (moved, failed) = match self.dst.write_batch(&events[accepted..]) {
                Ok(n) => (n, None),
                Err(BatchError { accepted, error }) => (accepted, Some(error)),
            };
            if moved > 0 {
                lock(&self.strategy).success();
                Counters::bump(&self.counters.forwarded, moved as u64);
                accepted += moved;
                attempts = 1;
            }
            match failed {
                None => {
                    Counters::bump(&self.counters.written, events.len() as u64);
                    return Ok(events.len());
                }
                Some(Error::Closed) => break Error::Closed,
                Some(e) => {
                    Counters::bump(&self.counters.failures, 1);
                    if lock(&self.strategy).failure() {
                        Counters::bump(&self.counters.dropped, 1);
                        break Error::Client(format!("dropped by the retry strategy after {attempts} attempts: {e}"));
                    }
                }
            }
        };
        // Like `write`, counts each event it started on, the refused one included.
        Counters::bump(&self.counters.written, accepted as u64 + 1);
        Err(BatchError { accepted, error })
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.shutdown.fire();
        self.dst.close()
    }

    fn stats(&self) -> SinkStats {
        self.counters.snapshot("retrying", 0, vec![self.dst.stats()])
    }
}
