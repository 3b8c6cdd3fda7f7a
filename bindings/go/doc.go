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
//     dispatcher thread, one at a time, once per batch of outcomes. (OnDrop of
//     staged events the binding gave up on runs on the goroutine of the Cancel or
//     Pipeline.Close that did, never at the same time as another callback of the
//     producer.)
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
// # Publishing one event at a time
//
// A cgo call costs about as much as a Go channel send, so Producer.Publish does
// not make one per event: each producer copies the events published in quick
// succession into a small stage of its own (up to 256 events or 32 KiB) and hands
// them to conveyor together, at the latest ProducerConfig.Linger (default 1 ms)
// after the first of them, and before any call that must see them in order or
// counted (TryPublish, PublishBatch, Cancel, Counts, Close, Pipeline.Flush,
// Pipeline.Stats, Pipeline.Close). A producer that was idle for Linger hands its
// next event over at once, so a lone event waits for nothing. A staged event is
// accepted: it is counted, and gets its outcome, like any other; Pipeline.Close
// reports the staged events that never found room in the queue as dropped.
// NoLinger turns the stage off.
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
