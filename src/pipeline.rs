//! The pipeline: a queue, an output with its workers, accounting, flush and close.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{AnyClient, AsyncClient, Client, ClientFactory};
use crate::config::{Config, Mode};
use crate::error::{Error, Result};
use crate::log::{Level, LogFn, Logger};
use crate::mode::{on_worker_thread, ClientSpec, Output, Shared};
use crate::queue::{lock, registry, AckListener, Producer, ProducerOptions, Queue, QueueSettings};
use crate::retry::{ExponentialBackoff, RetryStrategy, Shutdown, StrategyFactory};
use crate::stats::Stats;

/// What `close` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CloseReport {
    /// Events ever accepted.
    pub accepted: u64,
    /// Of those, acknowledged.
    pub acked: u64,
    /// Of those, dropped (including what close could not deliver in time).
    pub dropped: u64,
    /// Whether everything was settled before the timeout (nothing dropped by close itself).
    pub drained: bool,
}

struct HostList {
    hosts: Vec<String>,
    factory: Arc<dyn ClientFactory>,
}

/// Builds a [`Pipeline`].
pub struct PipelineBuilder {
    config: Config,
    clients: Vec<ClientSpec>,
    host_lists: Vec<HostList>,
    logger: Logger,
    strategy: Option<StrategyFactory>,
    listener: Option<AckListener>,
}

impl PipelineBuilder {
    /// Adds a synchronous client.
    pub fn client(self, client: impl Client + 'static) -> Self {
        self.any_client(AnyClient::sync(client))
    }

    /// Adds an asynchronous client.
    pub fn async_client(self, client: impl AsyncClient + 'static) -> Self {
        self.any_client(AnyClient::asynchronous(client))
    }

    /// Adds a client of either kind.
    pub fn any_client(mut self, client: AnyClient) -> Self {
        self.clients.push(ClientSpec { client, host: None, factory: None });
        self
    }

    /// Adds clients built by `factory`: one per host in `failover`, `worker` per host
    /// otherwise. A client whose worker fails past `error_threshold` is rebuilt by it.
    pub fn hosts<S: AsRef<str>>(mut self, hosts: &[S], factory: Arc<dyn ClientFactory>) -> Self {
        let hosts = hosts.iter().map(|h| h.as_ref().to_string()).collect();
        self.host_lists.push(HostList { hosts, factory });
        self
    }

    /// Sends the pipeline's log messages to `f`.
    pub fn logger(mut self, f: LogFn) -> Self {
        self.logger = Logger::new(f);
        self
    }

    /// Replaces the backoff strategy (default: exponential from `backoff.init` to
    /// `backoff.max` with jitter). `f` makes one per worker and purpose.
    pub fn retry_strategy(mut self, f: StrategyFactory) -> Self {
        self.strategy = Some(f);
        self
    }

    /// Sees the total count of every ACK round, all producers together.
    pub fn on_ack(mut self, listener: AckListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Validates the configuration, builds the clients and starts the workers.
    pub fn build(mut self) -> Result<Pipeline> {
        let config = self.config.clone();
        config.validate()?;
        let per_host = |mode: Option<Mode>| if mode == Some(Mode::Failover) { 1 } else { config.worker };
        let host_count: usize = self.host_lists.iter().map(|l| l.hosts.len()).sum();
        let total = self.clients.len() + host_count * per_host(config.mode);
        if total == 0 {
            return Err(Error::NoClients);
        }
        let mode = match config.mode {
            Some(Mode::Single) if total > 1 => {
                return Err(Error::config("mode", format!("`single` takes exactly one client, got {total}")))
            }
            Some(m) => m,
            None if total > 1 => Mode::LoadBalance,
            None => Mode::Single,
        };
        for list in std::mem::take(&mut self.host_lists) {
            for host in &list.hosts {
                for _ in 0..per_host(Some(mode)) {
                    let client = list
                        .factory
                        .build(host)
                        .map_err(|e| Error::Client(format!("building the client for {host}: {e}")))?;
                    self.clients.push(ClientSpec { client, host: Some(host.clone()), factory: Some(list.factory.clone()) });
                }
            }
        }
        let settings = QueueSettings {
            events: config.queue_events,
            bytes: config.queue_bytes,
            flush_min_events: config.flush_min_events,
            flush_timeout: config.flush_timeout,
            logger: self.logger.clone(),
        };
        let queue = registry::build(&config.queue_type, settings, self.listener.take())?;
        let strategy = self.strategy.take().unwrap_or_else(|| {
            let (init, max) = (config.backoff_init, config.backoff_max);
            Arc::new(move || Box::new(ExponentialBackoff::new(init, max)) as Box<dyn RetryStrategy>)
        });
        let shutdown = Shutdown::new();
        let shared = Shared::new(queue.clone(), mode, config.clone(), shutdown.clone(), self.logger.clone(), strategy);
        let output = Output::start(shared, mode, std::mem::take(&mut self.clients))?;
        self.logger.log(Level::Info, &format!("pipeline started in mode {}", mode.as_str()));
        let (closed, closing) = (Mutex::new(None), AtomicBool::new(false));
        Ok(Pipeline { queue, output, shutdown, closed, closing, logger: self.logger.clone() })
    }
}

/// Queue + output + workers + accounting. `Send + Sync`: share it by reference or
/// in an `Arc`. Dropping it closes it with a zero timeout.
pub struct Pipeline {
    queue: Arc<dyn Queue>,
    output: Output,
    shutdown: Arc<Shutdown>,
    closed: Mutex<Option<CloseReport>>,
    /// Set when a close starts. A close holds `closed` while it waits for the ACK
    /// dispatcher, so a callback asking whether the pipeline is closed (to create a
    /// producer, flush, add a client) must not wait for that lock.
    closing: AtomicBool,
    logger: Logger,
}

impl Pipeline {
    /// Starts building a pipeline with `config`.
    pub fn builder(config: Config) -> PipelineBuilder {
        PipelineBuilder {
            config,
            clients: Vec::new(),
            host_lists: Vec::new(),
            logger: Logger::default(),
            strategy: None,
            listener: None,
        }
    }

    /// A pipeline over `clients` with `config`.
    pub fn new(config: Config, clients: Vec<AnyClient>) -> Result<Pipeline> {
        clients.into_iter().fold(Pipeline::builder(config), PipelineBuilder::any_client).build()
    }

    /// A new producer.
    pub fn producer(&self, options: ProducerOptions) -> Result<Producer> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Producer::new(self.queue.clone(), options)
    }

    /// Waits until every event accepted so far has its outcome reported.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        if on_worker_thread() {
            // The worker would wait for the batch it is itself publishing.
            return Err(Error::InvalidArgument("flush cannot be called from a client callback".into()));
        }
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.queue.flush(Some(timeout))
    }

    fn is_closed(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Stops accepting events, delivers what it can within `timeout`, then drops
    /// (and reports) the rest, closes the clients and joins the threads. Returns
    /// within `timeout` plus the client call in progress. A second close returns the
    /// first one's report.
    pub fn close(&self, timeout: Duration) -> Result<CloseReport> {
        if on_worker_thread() || self.queue.in_callback() {
            return Err(Error::InvalidArgument("close cannot be called from a conveyor callback".into()));
        }
        self.closing.store(true, Ordering::Release);
        let mut closed = lock(&self.closed);
        if let Some(report) = *closed {
            return Ok(report);
        }
        let started = Instant::now();
        self.queue.close_input();
        let drained = self.queue.flush(Some(timeout)).is_ok();
        self.shutdown.fire();
        drop(self.queue.close());
        self.output.stop();
        if let Err(e) = self.queue.flush(None) {
            self.logger.log(Level::Error, &format!("waiting for the last reports: {e}"));
        }
        self.queue.shutdown();
        let t = self.queue.totals();
        let report = CloseReport { accepted: t.accepted, acked: t.acked, dropped: t.dropped, drained };
        self.logger.log(
            Level::Info,
            &format!(
                "pipeline closed in {:?}: {} accepted, {} acked, {} dropped",
                started.elapsed(),
                t.accepted,
                t.acked,
                t.dropped
            ),
        );
        *closed = Some(report);
        Ok(report)
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> Stats {
        let totals = self.queue.totals();
        let c = &self.output.shared().counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        Stats {
            mode: self.output.mode().as_str(),
            accepted: totals.accepted,
            acked: totals.acked,
            dropped: totals.dropped,
            in_flight: totals.in_flight,
            duplicates: get(&c.duplicates),
            dropped_batches: get(&c.dropped_batches),
            retried_batches: get(&c.retried_batches),
            handoffs: get(&c.handoffs),
            queue: self.queue.stats(),
            clients: self.output.client_stats(),
        }
    }

    /// Adds a client while running; returns its id.
    pub fn add_client(&self, client: AnyClient) -> Result<u64> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.output.add_client(ClientSpec { client, host: None, factory: None })
    }

    /// Adds a client for `host` built by `factory` (which also rebuilds it on restart).
    pub fn add_host(&self, host: &str, factory: Arc<dyn ClientFactory>) -> Result<u64> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let client = factory.build(host).map_err(|e| Error::Client(format!("building the client for {host}: {e}")))?;
        self.output.add_client(ClientSpec { client, host: Some(host.to_string()), factory: Some(factory) })
    }

    /// Removes a client while running; its batches go to the other clients.
    pub fn remove_client(&self, id: u64) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.output.remove_client(id)
    }

    /// The output mode in use.
    pub fn mode(&self) -> Mode {
        self.output.mode()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if !self.is_closed() && !on_worker_thread() {
            let _ = self.close(Duration::ZERO);
        }
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("mode", &self.output.mode()).field("closed", &self.is_closed()).finish()
    }
}
