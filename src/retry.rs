//! Backoff and retry strategies (the seeds' RetryStrategy), and the shutdown-aware wait.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Decides how long to wait after failures. One instance serves one worker's
/// connect attempts or its publish attempts (they keep separate state).
pub trait RetryStrategy: Send {
    /// Records a failure and returns how long to wait before the next attempt.
    fn failure(&mut self) -> Duration;
    /// Records a success: the next failure starts from scratch.
    fn success(&mut self);
}

/// Makes a fresh strategy for each worker and purpose.
pub type StrategyFactory = Arc<dyn Fn() -> Box<dyn RetryStrategy> + Send + Sync>;

/// Doubling backoff from `init` to `max`, with equal jitter: a wait of nominal `d`
/// is drawn from `[d/2, d]`. Overflow-safe: the nominal wait saturates at `max`.
pub struct ExponentialBackoff {
    init: Duration,
    max: Duration,
    next: Duration,
    rng: SmallRng,
}

impl ExponentialBackoff {
    /// A backoff starting at `init`, capped at `max`, seeded from the OS.
    pub fn new(init: Duration, max: Duration) -> ExponentialBackoff {
        Self::with_rng(init, max, SmallRng::from_entropy())
    }

    /// The same with a fixed seed (for replayable tests).
    pub fn seeded(init: Duration, max: Duration, seed: u64) -> ExponentialBackoff {
        Self::with_rng(init, max, SmallRng::seed_from_u64(seed))
    }

    fn with_rng(init: Duration, max: Duration, rng: SmallRng) -> ExponentialBackoff {
        let max = max.max(init);
        ExponentialBackoff { init, max, next: init, rng }
    }

    /// The nominal (un-jittered) wait the next failure will use.
    pub fn nominal(&self) -> Duration {
        self.next
    }
}

impl RetryStrategy for ExponentialBackoff {
    fn failure(&mut self) -> Duration {
        let d = self.next;
        self.next = d.saturating_mul(2).min(self.max);
        let half = d / 2;
        if half.is_zero() {
            return d;
        }
        half + self.rng.gen_range(Duration::ZERO..=d - half)
    }

    fn success(&mut self) {
        self.next = self.init;
    }
}

impl fmt::Debug for ExponentialBackoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExponentialBackoff")
            .field("init", &self.init)
            .field("max", &self.max)
            .field("next", &self.next)
            .finish()
    }
}

/// A circuit breaker: after `threshold` failures in a row, wait `cooldown` before
/// each further attempt (one probe per window); a success closes it again.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
}

impl Breaker {
    /// A breaker that opens after `threshold` consecutive failures.
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker { threshold, cooldown, failures: 0 }
    }
}

impl RetryStrategy for Breaker {
    fn failure(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.threshold {
            self.cooldown
        } else {
            Duration::ZERO
        }
    }

    fn success(&mut self) {
        self.failures = 0;
    }
}

/// A latch that every blocking wait in conveyor also watches.
#[derive(Default)]
pub struct Shutdown {
    fired: Mutex<bool>,
    cv: Condvar,
}

impl Shutdown {
    /// A latch that has not fired.
    pub fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown::default())
    }

    /// Fires the latch and wakes every waiter. Idempotent.
    pub fn fire(&self) {
        *self.fired.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// True once fired.
    pub fn is_fired(&self) -> bool {
        *self.fired.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps for `d` unless the latch fires first. Returns false if it fired.
    pub fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now().checked_add(d);
        let mut fired = self.fired.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *fired {
                return false;
            }
            let now = Instant::now();
            match deadline {
                Some(end) if now >= end => return true,
                Some(end) => fired = self.cv.wait_timeout(fired, end - now).unwrap_or_else(|e| e.into_inner()).0,
                None => fired = self.cv.wait(fired).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown").field("fired", &self.is_fired()).finish()
    }
}
