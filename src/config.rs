//! Configuration keys (DESIGN §3): parsing, defaults and validation in one place.
//!
//! Every binding sets keys by their dotted names through [`Config::set`], so the
//! rules below are the only ones: an unknown key or a bad value is an
//! [`Error::Config`] naming the key.

use std::time::Duration;

use crate::error::{Error, Result};

/// How an output spreads batches over its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One client; on failure close, back off, reconnect, retry.
    Single,
    /// One active client among several; on failure move to another.
    Failover,
    /// One worker per client, all pulling batches from the queue.
    #[serde(rename = "loadbalance")]
    LoadBalance,
}

impl Mode {
    /// The configuration spelling of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::Failover => "failover",
            Mode::LoadBalance => "loadbalance",
        }
    }
}

/// Which host failover moves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailoverPolicy {
    /// First pick at random; the next pick is never the host that just failed.
    Random,
    /// First host first, then the next one in list order.
    Ordered,
}

/// Retry limit of a batch: `Some(n)` allows `n` retries (`n + 1` attempts), `None` retries forever.
pub type MaxRetries = Option<u32>;

/// Every setting of a pipeline. Build with [`Config::default`] and [`Config::set`]
/// (or assign the public fields), then hand it to the pipeline, which validates it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `mode`; `None` means `loadbalance` with more than one client, else `single`.
    pub mode: Option<Mode>,
    /// `failover.policy`.
    pub failover_policy: FailoverPolicy,
    /// `worker`: workers (clients) per host in `loadbalance`.
    pub worker: usize,
    /// `max_retries`: −1 (here `None`) retries forever.
    pub max_retries: MaxRetries,
    /// `backoff.init`.
    pub backoff_init: Duration,
    /// `backoff.max`.
    pub backoff_max: Duration,
    /// `timeout`: connect timeout, and how long batches wait for a worker per attempt
    /// when no client is connected.
    pub timeout: Duration,
    /// `publish_timeout`: hand a batch to another worker after this long; `None` = off.
    pub publish_timeout: Option<Duration>,
    /// `bulk_max_size`: most events given to a client in one call.
    pub bulk_max_size: usize,
    /// `pipelining`: batches in flight per async client.
    pub pipelining: usize,
    /// `queue.type`: a name from the queue registry.
    pub queue_type: String,
    /// `queue.events`: most events accepted and not yet settled.
    pub queue_events: usize,
    /// `queue.bytes`: most payload bytes accepted and not yet settled; 0 = no limit.
    pub queue_bytes: usize,
    /// `queue.flush.min_events`: a consumer waits for this many events...
    pub flush_min_events: usize,
    /// `queue.flush.timeout`: ...or this long, whichever comes first.
    pub flush_timeout: Duration,
    /// `error_threshold`: failures in a row before a worker's client is rebuilt; 0 = off.
    pub error_threshold: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: None,
            failover_policy: FailoverPolicy::Random,
            worker: 1,
            max_retries: Some(3),
            backoff_init: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
            publish_timeout: None,
            bulk_max_size: 2048,
            pipelining: 2,
            queue_type: "mem".to_string(),
            queue_events: 4096,
            queue_bytes: 0,
            flush_min_events: 2048,
            flush_timeout: Duration::from_millis(1),
            error_threshold: 0,
        }
    }
}

/// The configuration keys, in documentation order.
pub const KEYS: &[&str] = &[
    "mode",
    "failover.policy",
    "worker",
    "max_retries",
    "backoff.init",
    "backoff.max",
    "timeout",
    "publish_timeout",
    "bulk_max_size",
    "pipelining",
    "queue.type",
    "queue.events",
    "queue.bytes",
    "queue.flush.min_events",
    "queue.flush.timeout",
    "error_threshold",
];

/// Largest value accepted for the count keys; keeps arithmetic far from overflow.
const MAX_COUNT: usize = 1 << 30;

impl Config {
    /// Sets `key` from its string form, as the C API and config files spell it.
    ///
    /// Durations take a unit (`250ms`, `1s`, `2m`, `1h`, `500us`); a bare `0` is zero.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let v = value.trim();
        match key {
            "mode" => {
                self.mode = Some(match v {
                    "single" => Mode::Single,
                    "failover" => Mode::Failover,
                    "loadbalance" => Mode::LoadBalance,
                    _ => return Err(Error::config(key, format!("`{v}` is not one of single, failover, loadbalance"))),
                })
            }
            "failover.policy" => {
                self.failover_policy = match v {
                    "random" => FailoverPolicy::Random,
                    "ordered" => FailoverPolicy::Ordered,
                    _ => return Err(Error::config(key, format!("`{v}` is not one of random, ordered"))),
                }
            }
            "worker" => self.worker = parse_count(key, v, 1)?,
            "max_retries" => self.max_retries = parse_retries(key, v)?,
            "backoff.init" => self.backoff_init = parse_duration(key, v)?,
            "backoff.max" => self.backoff_max = parse_duration(key, v)?,
            "timeout" => self.timeout = parse_duration(key, v)?,
            "publish_timeout" => {
                let d = parse_duration(key, v)?;
                self.publish_timeout = if d.is_zero() { None } else { Some(d) };
            }
            "bulk_max_size" => self.bulk_max_size = parse_count(key, v, 1)?,
            "pipelining" => self.pipelining = parse_count(key, v, 1)?,
            "queue.type" => {
                if v.is_empty() {
                    return Err(Error::config(key, "must not be empty"));
                }
                self.queue_type = v.to_string();
            }
            "queue.events" => self.queue_events = parse_count(key, v, 1)?,
            "queue.bytes" => self.queue_bytes = parse_count(key, v, 0)?,
            "queue.flush.min_events" => self.flush_min_events = parse_count(key, v, 0)?,
            "queue.flush.timeout" => self.flush_timeout = parse_duration(key, v)?,
            "error_threshold" => {
                self.error_threshold = u32::try_from(parse_count(key, v, 0)?)
                    .map_err(|_| Error::config(key, "too large"))?
            }
            _ => return Err(Error::config(key, "unknown key")),
        }
        Ok(())
    }

    /// Returns the string form of `key`, as [`Config::set`] accepts it.
    pub fn get(&self, key: &str) -> Result<String> {
        Ok(match key {
            "mode" => self.mode.map_or("auto", Mode::as_str).to_string(),
            "failover.policy" => match self.failover_policy {
                FailoverPolicy::Random => "random".into(),
                FailoverPolicy::Ordered => "ordered".into(),
            },
            "worker" => self.worker.to_string(),
            "max_retries" => self.max_retries.map_or("-1".into(), |n| n.to_string()),
            "backoff.init" => format_duration(self.backoff_init),
            "backoff.max" => format_duration(self.backoff_max),
            "timeout" => format_duration(self.timeout),
            "publish_timeout" => format_duration(self.publish_timeout.unwrap_or_default()),
            "bulk_max_size" => self.bulk_max_size.to_string(),
            "pipelining" => self.pipelining.to_string(),
            "queue.type" => self.queue_type.clone(),
            "queue.events" => self.queue_events.to_string(),
            "queue.bytes" => self.queue_bytes.to_string(),
            "queue.flush.min_events" => self.flush_min_events.to_string(),
            "queue.flush.timeout" => format_duration(self.flush_timeout),
            "error_threshold" => self.error_threshold.to_string(),
            _ => return Err(Error::config(key, "unknown key")),
        })
    }

    /// Checks the relations between keys that no single [`Config::set`] can see.
    /// Assigning the public fields directly skips `set`'s checks, so this repeats them.
    pub fn validate(&self) -> Result<()> {
        let count = |key: &str, v: usize, min: usize| {
            if v < min || v > MAX_COUNT {
                Err(Error::config(key, format!("{v} is out of range [{min}, {MAX_COUNT}]")))
            } else {
                Ok(())
            }
        };
        count("worker", self.worker, 1)?;
        count("bulk_max_size", self.bulk_max_size, 1)?;
        count("pipelining", self.pipelining, 1)?;
        count("queue.events", self.queue_events, 1)?;
        count("queue.bytes", self.queue_bytes, 0)?;
        count("queue.flush.min_events", self.flush_min_events, 0)?;
        if self.backoff_max < self.backoff_init {
            return Err(Error::config("backoff.max", "must not be smaller than backoff.init"));
        }
        if self.queue_type.is_empty() {
            return Err(Error::config("queue.type", "must not be empty"));
        }
        Ok(())
    }

    /// `bulk_max_size` bounded by the queue, which can never hold more.
    pub(crate) fn effective_batch_size(&self) -> usize {
        self.bulk_max_size.min(self.queue_events)
    }
}

fn parse_count(key: &str, v: &str, min: usize) -> Result<usize> {
    let n: usize = v.parse().map_err(|_| Error::config(key, format!("`{v}` is not a whole number")))?;
    if n < min || n > MAX_COUNT {
        return Err(Error::config(key, format!("{n} is out of range [{min}, {MAX_COUNT}]")));
    }
    Ok(n)
}

fn parse_retries(key: &str, v: &str) -> Result<MaxRetries> {
    let n: i64 = v.parse().map_err(|_| Error::config(key, format!("`{v}` is not a whole number")))?;
    match n {
        -1 => Ok(None),
        n if (0..=i64::from(u32::MAX)).contains(&n) => Ok(Some(n as u32)),
        n => Err(Error::config(key, format!("{n} is out of range (-1 = infinite, or 0..{})", u32::MAX))),
    }
}

/// Parses `250ms`, `1.5s`, `2m`, `1h`, `10us`, `0`.
pub fn parse_duration(key: &str, v: &str) -> Result<Duration> {
    let bad = || Error::config(key, format!("`{v}` is not a duration (like 250ms, 1s, 2m)"));
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(Error::config(key, format!("`{v}` is out of range")));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}
