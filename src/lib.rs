//! conveyor: reliable event delivery.
//!
//! Applications publish events (opaque byte payloads) through [`Producer`]s;
//! conveyor queues them in a bounded [`queue`], cuts them into batches and delivers
//! them through protocol [`Client`]s in one of three [`Mode`]s, with retries,
//! backoff, in-order ACKs and exact accounting of every event (see DESIGN §1):
//! every accepted event gets exactly one outcome, acked or dropped, reported to the
//! producer that published it.
//!
//! ```
//! use conveyor::{Config, Events, Pipeline, ProducerOptions, Published};
//! use std::time::Duration;
//!
//! struct Stdout;
//! impl conveyor::Client for Stdout {
//!     fn publish(&mut self, events: &Events) -> Published {
//!         for e in events.iter() {
//!             let _ = e; // send it somewhere
//!         }
//!         Published::all(events.len())
//!     }
//! }
//!
//! let pipeline = Pipeline::builder(Config::default()).client(Stdout).build().unwrap();
//! let producer = pipeline.producer(ProducerOptions::default()).unwrap();
//! producer.publish(b"hello", None).unwrap();
//! pipeline.flush(Duration::from_secs(5)).unwrap();
//! assert_eq!(producer.counts().acked, 1);
//! pipeline.close(Duration::from_secs(5)).unwrap();
//! ```

#[cfg(feature = "capi")]
pub mod capi;
pub mod client;
pub mod config;
pub mod error;
pub mod event;
pub mod log;
pub(crate) mod mode;
pub mod pipeline;
pub mod queue;
pub mod retry;
pub mod sink;
pub mod stats;

pub use client::{AnyClient, AsyncClient, Client, ClientFactory, Completion, ConnectError, Published, Status};
pub use config::{Config, FailoverPolicy, Mode};
pub use error::{Error, ErrorKind, Result};
pub use event::{Events, Packed};
pub use log::{Level, LogFn, Logger};
pub use pipeline::{CloseReport, Pipeline, PipelineBuilder};
pub use queue::{AckCallback, Batch, DropCallback, Producer, ProducerCounts, ProducerOptions, Queue, QueueSettings, QueueStats};
pub use retry::{Breaker, ExponentialBackoff, RetryStrategy, Shutdown, StrategyFactory};
pub use stats::{ClientStats, Stats, WorkerState};

/// The crate version, as `MAJOR.MINOR.PATCH`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
