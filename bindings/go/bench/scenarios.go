package main

// The runs the H6 benchmark compares: conveyor through the Go binding, a hand-written
// channel pipeline, and go-events, all delivering the same 100-byte events to the
// same Go no-op client. Each run returns its elapsed time after checking that every
// event reached the client (and, for conveyor, was acknowledged), so a broken run
// never reports a throughput.

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	events "github.com/docker/go-events"

	conveyor "github.com/conveyor-dev/conveyor/bindings/go"
)

const (
	payloadSize = 100
	batchSize   = 1024
)

// noopClient accepts every batch; it counts events so a run can check delivery.
type noopClient struct {
	events atomic.Int64
}

func (c *noopClient) Connect(time.Duration) error { return nil }
func (c *noopClient) Close() error                { return nil }
func (c *noopClient) Publish(events [][]byte) (int, error) {
	c.events.Add(int64(len(events)))
	return len(events), nil
}

func (c *noopClient) check(n int) error {
	if got := c.events.Load(); got != int64(n) {
		return fmt.Errorf("the client got %d events, want %d", got, n)
	}
	return nil
}

// pipelineConfig is the configuration of the Rust suite's scenarios
// (BENCHMARKS.md): 8 batches of 1024 in the queue, consumers woken per full batch.
func pipelineConfig() conveyor.Config {
	return conveyor.Config{
		QueueEvents:    8 * batchSize,
		BulkMaxSize:    batchSize,
		FlushMinEvents: batchSize,
		FlushTimeout:   time.Millisecond,
	}
}

// publishStyle is how a run hands its events to the producer.
type publishStyle int

const (
	perEvent publishStyle = iota // Publish, one event per call
	batched                      // PublishBatch of batchSize separately allocated events
	packed                       // PublishPacked of batchSize events laid end to end
)

// runConveyor publishes n events from one goroutine in the given style, and is timed
// until every event is acknowledged back to the producer.
func runConveyor(n int, style publishStyle) (time.Duration, error) {
	client := &noopClient{}
	p, err := conveyor.NewPipeline(pipelineConfig(), client)
	if err != nil {
		return 0, err
	}
	defer p.Close(10 * time.Second)
	var acked, dropped atomic.Int64
	prod, err := p.NewProducer(conveyor.ProducerConfig{
		OnACK:  func(k int) { acked.Add(int64(k)) },
		OnDrop: func(e [][]byte) { dropped.Add(int64(len(e))) },
	})
	if err != nil {
		return 0, err
	}
	ctx := context.Background()
	payload := make([]byte, payloadSize)
	views := make([][]byte, batchSize)
	for i := range views {
		views[i] = make([]byte, payloadSize)
	}
	data := make([]byte, batchSize*payloadSize)
	lens := make([]uint32, batchSize)
	for i := range lens {
		lens[i] = payloadSize
	}

	start := time.Now()
	for i := 0; i < n; {
		k := min(batchSize, n-i)
		switch style {
		case perEvent:
			k, err = 1, prod.Publish(ctx, payload)
		case batched:
			_, err = prod.PublishBatch(ctx, views[:k])
		case packed:
			_, err = prod.PublishPacked(ctx, data[:k*payloadSize], lens[:k])
		}
		if err != nil {
			return 0, err
		}
		i += k
	}
	if err := p.Flush(ctx); err != nil {
		return 0, err
	}
	elapsed := time.Since(start)

	if acked.Load() != int64(n) || dropped.Load() != 0 {
		return 0, fmt.Errorf("acked %d, dropped %d of %d", acked.Load(), dropped.Load(), n)
	}
	return elapsed, client.check(n)
}

// runChannel is the reference pipeline: a buffered chan []byte of 1024 and one
// consumer goroutine that collects up to 1024 waiting events per batch and hands them
// to the client. Timed until the consumer delivered every event.
func runChannel(n int) (time.Duration, error) {
	client := &noopClient{}
	ch := make(chan []byte, batchSize)
	done := make(chan struct{})
	go func() {
		defer close(done)
		batch := make([][]byte, 0, batchSize)
		for delivered := 0; delivered < n; {
			batch = append(batch[:0], <-ch)
		collect:
			for len(batch) < batchSize {
				select {
				case e := <-ch:
					batch = append(batch, e)
				default:
					break collect
				}
			}
			k, _ := client.Publish(batch)
			delivered += k
		}
	}()
	payload := make([]byte, payloadSize)

	start := time.Now()
	for range n {
		ch <- payload
	}
	<-done
	elapsed := time.Since(start)
	return elapsed, client.check(n)
}

// clientSink adapts the client to go-events: one event per Write, as go-events
// delivers them.
type clientSink struct {
	client *noopClient
	one    [][]byte
	want   int
	seen   int
	done   chan struct{}
}

func (s *clientSink) Write(event events.Event) error {
	s.one[0] = event.([]byte)
	if _, err := s.client.Publish(s.one); err != nil {
		return err
	}
	if s.seen++; s.seen == s.want {
		close(s.done)
	}
	return nil
}

func (s *clientSink) Close() error { return nil }

// runGoEvents is go-events' composition for reliable delivery: a Queue (unbounded,
// asynchronous) in front of a RetryingSink (circuit breaker) in front of the client.
// Timed until the client got every event.
func runGoEvents(n int) (time.Duration, error) {
	client := &noopClient{}
	sink := &clientSink{client: client, one: make([][]byte, 1), want: n, done: make(chan struct{})}
	queue := events.NewQueue(events.NewRetryingSink(sink, events.NewBreaker(10, time.Millisecond)))
	defer queue.Close()
	payload := make([]byte, payloadSize)

	start := time.Now()
	for range n {
		if err := queue.Write(payload); err != nil {
			return 0, err
		}
	}
	<-sink.done
	elapsed := time.Since(start)
	return elapsed, client.check(n)
}
