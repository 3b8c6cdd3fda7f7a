//! Counters and snapshots (serialized with serde: JSON in C, dict in Python, struct in Go).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::queue::{ProducerCounts, QueueStats};

/// What a client's worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Opening the connection.
    Connecting,
    /// Connected and publishing (or waiting for work).
    Active,
    /// Waiting before the next attempt.
    Backoff,
    /// A failover standby: configured, not the active client.
    Standby,
    /// Stopped (removed or pipeline closed).
    Stopped,
}

impl WorkerState {
    fn from_u8(v: u8) -> WorkerState {
        match v {
            0 => WorkerState::Connecting,
            1 => WorkerState::Active,
            2 => WorkerState::Backoff,
            3 => WorkerState::Standby,
            _ => WorkerState::Stopped,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Live counters of one client, updated by its worker without locks.
#[derive(Debug)]
pub(crate) struct ClientCounters {
    pub(crate) id: u64,
    pub(crate) host: Option<String>,
    state: AtomicU8,
    pub(crate) batches: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) invalid_results: AtomicU64,
    started_ms: u64,
    updated_ms: AtomicU64,
    last_error: Mutex<Option<(String, u64)>>,
}

impl ClientCounters {
    pub(crate) fn new(id: u64, host: Option<String>) -> ClientCounters {
        let now = now_ms();
        ClientCounters {
            id,
            host,
            state: AtomicU8::new(WorkerState::Connecting as u8),
            batches: AtomicU64::new(0),
            events: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            invalid_results: AtomicU64::new(0),
            started_ms: now,
            updated_ms: AtomicU64::new(now),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn set_state(&self, s: WorkerState) {
        self.state.store(s as u8, Ordering::Relaxed);
        self.touch();
    }

    pub(crate) fn state(&self) -> WorkerState {
        WorkerState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub(crate) fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
        self.touch();
    }

    fn touch(&self) {
        self.updated_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn error(&self, msg: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some((msg, now_ms()));
        self.add(&self.failures, 1);
    }

    pub(crate) fn snapshot(&self) -> ClientStats {
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClientStats {
            id: self.id,
            host: self.host.clone(),
            state: self.state(),
            batches: get(&self.batches),
            events: get(&self.events),
            failures: get(&self.failures),
            retries: get(&self.retries),
            connects: get(&self.connects),
            connect_failures: get(&self.connect_failures),
            restarts: get(&self.restarts),
            invalid_results: get(&self.invalid_results),
            last_error: last.as_ref().map(|l| l.0.clone()),
            last_error_ms: last.map(|l| l.1),
            started_ms: self.started_ms,
            updated_ms: self.updated_ms.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of one client's worker (the aresDB processor context).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientStats {
    /// The id `add_client` returned (1-based, never reused).
    pub id: u64,
    /// The host it was built for, when built by a factory.
    pub host: Option<String>,
    /// What its worker is doing.
    pub state: WorkerState,
    /// Batches it fully published.
    pub batches: u64,
    /// Events it reported published.
    pub events: u64,
    /// Failed connects and publishes.
    pub failures: u64,
    /// Retried attempts.
    pub retries: u64,
    /// Successful connects.
    pub connects: u64,
    /// Failed connects.
    pub connect_failures: u64,
    /// Times the client was rebuilt past `error_threshold`.
    pub restarts: u64,
    /// Results out of range (a count beyond the batch, an unknown status).
    pub invalid_results: u64,
    /// The last error message.
    pub last_error: Option<String>,
    /// When it happened (ms since the Unix epoch).
    pub last_error_ms: Option<u64>,
    /// When the client was added (ms since the Unix epoch).
    pub started_ms: u64,
    /// Last change of any counter (ms since the Unix epoch).
    pub updated_ms: u64,
}

/// Pipeline-wide counters not kept by the queue.
#[derive(Debug, Default)]
pub(crate) struct OutputCounters {
    pub(crate) duplicates: AtomicU64,
    pub(crate) dropped_batches: AtomicU64,
    pub(crate) retried_batches: AtomicU64,
    pub(crate) handoffs: AtomicU64,
}

/// A consistent snapshot of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// The output mode.
    pub mode: &'static str,
    /// Events accepted by publish calls.
    pub accepted: u64,
    /// Events reported acknowledged.
    pub acked: u64,
    /// Events reported dropped.
    pub dropped: u64,
    /// `accepted - acked - dropped`.
    pub in_flight: u64,
    /// Events a client may have received twice (a late result after a hand-off or close).
    pub duplicates: u64,
    /// Batches (or their remainders) given up on.
    pub dropped_batches: u64,
    /// Failed attempts that were retried.
    pub retried_batches: u64,
    /// Batches handed to another worker after `publish_timeout`.
    pub handoffs: u64,
    /// Queue occupancy.
    pub queue: QueueStats,
    /// One entry per client.
    pub clients: Vec<ClientStats>,
}

impl Stats {
    /// The accounting totals of the snapshot.
    pub fn totals(&self) -> ProducerCounts {
        ProducerCounts { accepted: self.accepted, acked: self.acked, dropped: self.dropped, in_flight: self.in_flight }
    }

    /// The snapshot as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("stats serialize")
    }
}
