//! Bridges between sinks and pipelines.

use std::sync::Arc;
use std::time::Duration;

use super::{BatchError, Counters, Sink, SinkStats, Views};
use crate::client::{Client, Published};
use crate::error::{Error, Result};
use crate::event::Events;
use crate::pipeline::Pipeline;
use crate::queue::{Producer, ProducerOptions};

/// A pipeline used as a sink: `write` publishes (waiting up to `publish_timeout` for
/// room), `write_batch` publishes the batch with [`Producer::publish_batch`] (an event
/// is refused only once `publish_timeout` passed without room for it, or the pipeline
/// closed), `close` closes the pipeline within `close_timeout`.
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

    fn write_batch(&self, events: &[&[u8]]) -> Result<usize, BatchError> {
        let mut accepted = 0;
        // `publish_batch` returns the prefix it took when it had to stop; asking again
        // for the rest tells why (or goes on, if room came meanwhile), with a full
        // `publish_timeout` for the next event, as `write` would give it.
        while accepted < events.len() {
            match self.producer.publish_batch(&events[accepted..], self.publish_timeout) {
                Ok(n) => {
                    accepted += n;
                    Counters::bump(&self.counters.written, n as u64);
                }
                Err(Error::InvalidArgument(_)) if events.len() - accepted > 1 => {
                    // An event too large to ever fit makes `publish_batch` refuse the
                    // whole batch; one at a time, the events before it go in.
                    for event in &events[accepted..] {
                        self.write(event).map_err(|error| BatchError { accepted, error })?;
                        accepted += 1;
                    }
                }
                Err(error) => {
                    Counters::bump(&self.counters.failures, 1);
                    return Err(BatchError { accepted, error });
                }
            }
        }
        Ok(accepted)
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

/// A sink used as an output's client: each batch is written with one
/// [`Sink::write_batch`]; a refused event publishes the prefix before it and reports a
/// temporary failure (or a broken connection when the sink is closed).
pub struct SinkClient {
    sink: Arc<dyn Sink>,
    views: Views,
}

impl SinkClient {
    /// A client writing to `sink`.
    pub fn new(sink: Arc<dyn Sink>) -> SinkClient {
        SinkClient { sink, views: Views::default() }
    }
}

impl Client for SinkClient {
    fn publish(&mut self, events: &Events) -> Published {
        let mut batch = self.views.take();
        batch.extend(events.iter());
        let published = match self.sink.write_batch(&batch) {
            Ok(n) => Published::all(n),
            Err(BatchError { accepted, error: Error::Closed }) => Published::broken(accepted),
            Err(BatchError { accepted, .. }) => Published::retry(accepted),
        };
        self.views.give_back(batch);
        published
    }
}
