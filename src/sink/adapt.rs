//! Bridges between sinks and pipelines.

use std::sync::Arc;
use std::time::Duration;

use super::{Counters, Sink, SinkStats};
use crate::client::{Client, Published};
use crate::error::{Error, Result};
use crate::event::Events;
use crate::pipeline::Pipeline;
use crate::queue::{Producer, ProducerOptions};

/// A pipeline used as a sink: `write` publishes (waiting up to `publish_timeout` for
/// room), `close` closes the pipeline within `close_timeout`.
pub struct PipelineSink {
    pipeline: Arc<Pipeline>,
    producer: Producer,
    publish_timeout: Option<Duration>,
    close_timeout: Duration,
    counters: Counters,
}

impl PipelineSink {
    /// A sink over `pipeline`, publishing through a producer made from `options`.
    pub fn new(
        pipeline: Arc<Pipeline>,
        options: ProducerOptions,
        publish_timeout: Option<Duration>,
        close_timeout: Duration,
    ) -> Result<PipelineSink> {
        let producer = pipeline.producer(options)?;
        Ok(PipelineSink { pipeline, producer, publish_timeout, close_timeout, counters: Counters::default() })
    }

    /// The pipeline behind the sink.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }
}

impl Sink for PipelineSink {
    fn write(&self, event: &[u8]) -> Result<()> {
        let r = self.producer.publish(event, self.publish_timeout);
        match &r {
            Ok(()) => Counters::bump(&self.counters.written, 1),
            Err(_) => Counters::bump(&self.counters.failures, 1),
        }
        r
    }

    fn close(&self) -> Result<()> {
        self.pipeline.close(self.close_timeout).map(|_| ())
    }

    fn stats(&self) -> SinkStats {
        let s = self.pipeline.stats();
        let mut out = self.counters.snapshot("pipeline", s.queue.waiting as u64, Vec::new());
        out.forwarded = s.acked;
        out.dropped = s.dropped;
        out
    }
}

/// A sink used as an output's client: each event of a batch is written in order; a
/// failed write publishes the prefix before it and reports a temporary failure (or a
/// broken connection when the sink is closed).
pub struct SinkClient {
    sink: Arc<dyn Sink>,
}

impl SinkClient {
    /// A client writing to `sink`.
    pub fn new(sink: Arc<dyn Sink>) -> SinkClient {
        SinkClient { sink }
    }
}

impl Client for SinkClient {
    fn publish(&mut self, events: &Events) -> Published {
        for (i, e) in events.iter().enumerate() {
            match self.sink.write(e) {
                Ok(()) => {}
                Err(Error::Closed) => return Published::broken(i),
                Err(_) => return Published::retry(i),
            }
        }
        Published::all(events.len())
    }
}
