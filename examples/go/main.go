// The Go demo of conveyor: events published from several goroutines through a flaky
// endpoint, a dead one and a steady asynchronous one, first in failover mode, then
// load balanced. It prints where the events went and checks the delivery contract:
// every event acknowledged exactly once to its producer, none dropped, each one
// delivered at least once.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	conveyor "github.com/conveyor-dev/conveyor/bindings/go"
)

// endpoint is a pretend remote service: it records which events reached it.
type endpoint struct {
	name      string
	seen      []atomic.Uint32 // deliveries per event id
	delivered atomic.Int64
}

func (e *endpoint) receive(events [][]byte) {
	for _, ev := range events {
		e.seen[binary.BigEndian.Uint64(ev)].Add(1)
	}
	e.delivered.Add(int64(len(events)))
}

// flakyClient fails one batch in ten: half of those after delivering part of the
// batch with a temporary error, the other half with a broken connection.
type flakyClient struct {
	*endpoint
	rng *rand.Rand // only used from conveyor's calls, never two at a time
}

func (c *flakyClient) Connect(time.Duration) error { return nil }
func (c *flakyClient) Close() error                { return nil }

func (c *flakyClient) Publish(events [][]byte) (int, error) {
	switch c.rng.IntN(20) {
	case 0:
		n := c.rng.IntN(len(events))
		c.receive(events[:n])
		return n, fmt.Errorf("%s: overloaded: %w", c.name, conveyor.ErrRetry)
	case 1:
		return 0, errors.New(c.name + ": connection reset")
	}
	c.receive(events)
	return len(events), nil
}

// deadClient never connects.
type deadClient struct{ *endpoint }

func (c *deadClient) Connect(time.Duration) error          { return errors.New(c.name + ": connection refused") }
func (c *deadClient) Close() error                         { return nil }
func (c *deadClient) Publish(events [][]byte) (int, error) { return 0, errors.New("not connected") }

// steadyClient is asynchronous: a goroutine of its own answers each batch.
type steadyClient struct {
	*endpoint
	batches chan steadyBatch
}

type steadyBatch struct {
	events [][]byte
	done   func(int, error)
}

func newSteadyClient(e *endpoint) *steadyClient {
	c := &steadyClient{endpoint: e, batches: make(chan steadyBatch, 8)}
	go func() {
		for b := range c.batches {
			c.receive(b.events) // the views are valid until done is called
			b.done(len(b.events), nil)
		}
	}()
	return c
}

func (c *steadyClient) Connect(time.Duration) error { return nil }
func (c *steadyClient) Close() error                { return nil }
func (c *steadyClient) Publish(events [][]byte) (int, error) {
	c.receive(events)
	return len(events), nil
}
func (c *steadyClient) PublishAsync(events [][]byte, done func(int, error)) error {
	c.batches <- steadyBatch{events, done}
	return nil
}

func run(mode conveyor.Mode, events int) error {
	endpoints := []*endpoint{
		{name: "flaky", seen: make([]atomic.Uint32, events)},
		{name: "dead", seen: make([]atomic.Uint32, events)},
		{name: "steady", seen: make([]atomic.Uint32, events)},
	}
	steady := newSteadyClient(endpoints[2])
	defer close(steady.batches)
	clients := []conveyor.Client{
		&flakyClient{endpoint: endpoints[0], rng: rand.New(rand.NewPCG(1, 2))},
		&deadClient{endpoints[1]},
		steady,
	}
	var warnings atomic.Int64
	cfg := conveyor.Config{
		Mode:           mode,
		FailoverPolicy: conveyor.FailoverOrdered,
		MaxRetries:     conveyor.Retries(-1),
		BackoffInit:    time.Millisecond,
		BackoffMax:     20 * time.Millisecond,
		BulkMaxSize:    1024,
		QueueEvents:    8192,
		FlushMinEvents: 1024,
		Logger: func(level conveyor.LogLevel, msg string) {
			if level <= conveyor.LogWarn {
				warnings.Add(1)
			}
		},
	}
	p, err := conveyor.NewPipeline(cfg, clients...)
	if err != nil {
		return err
	}
	defer p.Close(5 * time.Second)

	const producers = 4
	var acked, dropped atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for g := range producers {
		prod, err := p.NewProducer(conveyor.ProducerConfig{
			OnACK:      func(n int) { acked.Add(int64(n)) },
			OnDrop:     func(events [][]byte) { dropped.Add(int64(len(events))) },
			Guaranteed: true,
		})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer prod.Close()
			payload := make([]byte, 100)
			batch := make([][]byte, 0, 64)
			for id := g; id < events; id += producers {
				// Producers 0 and 1 publish one event at a time, 2 and 3 in batches.
				if g < 2 {
					binary.BigEndian.PutUint64(payload, uint64(id))
					if err := prod.Publish(ctx, payload); err != nil {
						errs <- err
						return
					}
					continue
				}
				ev := make([]byte, 100)
				binary.BigEndian.PutUint64(ev, uint64(id))
				if batch = append(batch, ev); len(batch) == cap(batch) || id+producers >= events {
					if _, err := prod.PublishBatch(ctx, batch); err != nil {
						errs <- err
						return
					}
					batch = batch[:0]
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if err := p.Flush(ctx); err != nil {
		return err
	}
	elapsed := time.Since(start)
	stats, err := p.Stats()
	if err != nil {
		return err
	}

	fmt.Printf("\n%s: %d events in %v (%.0f events/s), %d warnings logged\n", stats.Mode, events,
		elapsed.Round(time.Millisecond), float64(events)/elapsed.Seconds(), warnings.Load())
	for i, c := range stats.Clients {
		fmt.Printf("  %-7s %-10s %9d events %6d batches %5d failures %4d connects\n",
			endpoints[i].name, c.State, endpoints[i].delivered.Load(), c.Batches, c.Failures, c.Connects)
	}
	fmt.Printf("  accepted %d, acked %d, dropped %d, retried batches %d, possible duplicates %d\n",
		stats.Accepted, stats.Acked, stats.Dropped, stats.RetriedBatches, stats.Duplicates)

	if acked.Load() != int64(events) || dropped.Load() != 0 || stats.Acked != uint64(events) {
		return fmt.Errorf("contract broken: %d acked, %d dropped of %d", acked.Load(), dropped.Load(), events)
	}
	for id := range events {
		n := uint32(0)
		for _, e := range endpoints {
			n += e.seen[id].Load()
		}
		if n == 0 {
			return fmt.Errorf("contract broken: event %d acknowledged but never delivered", id)
		}
	}
	fmt.Println("  contract holds: every event acknowledged once, none dropped, each delivered")
	return nil
}

func main() {
	events := flag.Int("events", 500_000, "events per mode")
	flag.Parse()
	fmt.Printf("conveyor %s, linked %s\n", conveyor.Version(), conveyor.Linkage)
	for _, mode := range []conveyor.Mode{conveyor.Failover, conveyor.LoadBalance} {
		if err := run(mode, *events); err != nil {
			fmt.Fprintln(os.Stderr, "demo failed:", err)
			os.Exit(1)
		}
	}
}
