// Package conveyor is the Go binding of conveyor, an engine for reliable event
// delivery: a bounded queue, batching, output modes (single, failover, load
// balancing) over protocol clients written in Go, retries with backoff, and exact
// accounting of every event. It wraps the C library libconveyor with cgo.
//
// An application implements Client (or AsyncClient) for its endpoint, builds a
// Pipeline over one or more clients, creates a Producer and publishes events. Every
// event a publish call accepted gets exactly one outcome reported back to its
// producer: OnACK (delivered, counted in publish order) or OnDrop (given up on, with
// the payloads).
//
// # Threads and lifetimes
//
//   - Pipelines and producers are safe for concurrent use.
//   - Client methods run on conveyor's worker threads, never two at a time for one
//     registered client. Producer callbacks (OnACK, OnDrop) run on the pipeline's
//     dispatcher thread, one at a time, once per batch of outcomes.
//   - Event views handed to Client.Publish and OnDrop are slices over conveyor's
//     memory, valid only during the call (for AsyncClient.PublishAsync: until done is
//     called): copy what you keep. Publishing copies the caller's bytes.
//   - A panic in a client or a callback is recovered at the boundary and logged; in a
//     client it counts as a failed publish (or connect).
//   - Calls that would wait for the calling callback itself (Pipeline.Close and Flush
//     from a conveyor callback, RemoveClient from a client callback) return an error
//     matching ErrInvalidArgument instead of deadlocking.
//   - Close pipelines when done. Closing a pipeline also frees its open producers;
//     every later call returns ErrClosed, except Stats, which returns the final
//     snapshot.
//
// # Sinks
//
// The composable sinks of go-events: Sink, and the combinators Broadcaster,
// QueueSink, Filter, RetryingSink and ChannelSink, which are Sinks themselves; a
// pipeline is a sink (Pipeline.AsSink) and a sink can be a pipeline's client
// (SinkClient). Sending every event to two outputs, neither holding back the other,
// is a Broadcaster of two QueueSinks over two pipelines.
//
// Blocking calls take a context.Context. The C library waits with timeouts, so they
// wait in slices of a few milliseconds and return ctx's error within one slice of
// ctx ending.
package conveyor
