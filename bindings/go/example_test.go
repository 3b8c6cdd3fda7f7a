package conveyor_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	conveyor "github.com/conveyor-dev/conveyor/bindings/go"
)

// printClient is a protocol client that "delivers" by printing.
type printClient struct {
	name string
	down bool // refuses every connect
}

func (c *printClient) Connect(timeout time.Duration) error {
	if c.down {
		return errors.New(c.name + " is down")
	}
	return nil
}

func (c *printClient) Close() error { return nil }

// Publish gets views valid only during the call; printing them is fine, keeping
// them would need a copy.
func (c *printClient) Publish(events [][]byte) (int, error) {
	for _, e := range events {
		fmt.Printf("%s: %s\n", c.name, e)
	}
	return len(events), nil
}

// A failover pipeline over two endpoints, the first of which is down: the events go
// to the second, and every one of them is acknowledged to its producer.
func ExampleNewPipeline() {
	cfg := conveyor.Config{
		Mode:           conveyor.Failover,
		FailoverPolicy: conveyor.FailoverOrdered,
		MaxRetries:     conveyor.Retries(-1),
		BackoffInit:    time.Millisecond,
		BackoffMax:     10 * time.Millisecond,
	}
	p, err := conveyor.NewPipeline(cfg, &printClient{name: "primary", down: true}, &printClient{name: "backup"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close(5 * time.Second)

	var acked atomic.Int64
	prod, err := p.NewProducer(conveyor.ProducerConfig{OnACK: func(n int) { acked.Add(int64(n)) }})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	for _, e := range []string{"login", "search", "logout"} {
		if err := prod.Publish(ctx, []byte(e)); err != nil {
			fmt.Println(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println("acked:", acked.Load())
	// Output:
	// backup: login
	// backup: search
	// backup: logout
	// acked: 3
}

// Publishing a batch copies it in one call; the result says how many leading events
// were accepted.
func ExampleProducer_PublishBatch() {
	quiet := &funcClient{publish: func(events [][]byte) (int, error) { return len(events), nil }}
	p, err := conveyor.NewPipeline(conveyor.Config{}, quiet)
	if err != nil {
		fmt.Println(err)
		return
	}
	prod, _ := p.NewProducer(conveyor.ProducerConfig{})
	n, err := prod.PublishBatch(context.Background(), [][]byte{[]byte("a"), []byte("b"), []byte("c")})
	fmt.Println("accepted:", n, err)
	p.Close(5 * time.Second) // delivers what is queued, then frees the producer too
	s, _ := p.Stats()
	fmt.Printf("stats: accepted %d, acked %d, dropped %d\n", s.Accepted, s.Acked, s.Dropped)
	// Output:
	// accepted: 3 <nil>
	// stats: accepted 3, acked 3, dropped 0
}

// Events encoded one after another into one buffer go without a copy on the Go side.
func ExampleProducer_PublishPacked() {
	printer := &funcClient{publish: func(events [][]byte) (int, error) {
		for _, e := range events {
			fmt.Println(string(e))
		}
		return len(events), nil
	}}
	p, err := conveyor.NewPipeline(conveyor.Config{}, printer)
	if err != nil {
		fmt.Println(err)
		return
	}
	prod, _ := p.NewProducer(conveyor.ProducerConfig{})
	var data []byte
	var lens []uint32
	for _, user := range []string{"ada", "grace", "linus"} {
		before := len(data)
		data = fmt.Appendf(data, `{"login":%q}`, user)
		lens = append(lens, uint32(len(data)-before))
	}
	n, err := prod.PublishPacked(context.Background(), data, lens)
	p.Close(5 * time.Second) // delivers what is queued
	fmt.Println("accepted:", n, err)
	// Output:
	// {"login":"ada"}
	// {"login":"grace"}
	// {"login":"linus"}
	// accepted: 3 <nil>
}

// upperClient delivers asynchronously: PublishAsync hands the batch to a goroutine,
// which calls done when the endpoint answered.
type upperClient struct{ printClient }

func (c *upperClient) PublishAsync(events [][]byte, done func(int, error)) error {
	go func() {
		// The views stay valid until done is called.
		for _, e := range events {
			fmt.Println(strings.ToUpper(string(e)))
		}
		done(len(events), nil)
	}()
	return nil
}

func ExampleAsyncClient() {
	p, err := conveyor.NewPipeline(conveyor.Config{Pipelining: 4}, &upperClient{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close(5 * time.Second)
	prod, _ := p.NewProducer(conveyor.ProducerConfig{})
	ctx := context.Background()
	if _, err := prod.PublishBatch(ctx, [][]byte{[]byte("one"), []byte("two")}); err != nil {
		fmt.Println(err)
	}
	if err := p.Flush(ctx); err != nil {
		fmt.Println(err)
	}
	// Output:
	// ONE
	// TWO
}

// A client reports a temporary failure by wrapping ErrRetry: conveyor retries the
// events after the published prefix on the same connection. Events it gives up on
// reach the producer's OnDrop.
func ExampleErrRetry() {
	calls := 0
	flaky := &funcClient{publish: func(events [][]byte) (int, error) {
		calls++
		if calls == 1 {
			fmt.Printf("published %d of %d, then busy\n", 1, len(events))
			return 1, fmt.Errorf("endpoint busy: %w", conveyor.ErrRetry)
		}
		fmt.Printf("published %d\n", len(events))
		return len(events), nil
	}}
	p, err := conveyor.NewPipeline(conveyor.Config{BackoffInit: time.Millisecond, BackoffMax: time.Millisecond}, flaky)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close(5 * time.Second)
	prod, _ := p.NewProducer(conveyor.ProducerConfig{})
	ctx := context.Background()
	if _, err := prod.PublishBatch(ctx, [][]byte{[]byte("x"), []byte("y"), []byte("z")}); err != nil {
		fmt.Println(err)
	}
	if err := p.Flush(ctx); err != nil {
		fmt.Println(err)
	}
	// Output:
	// published 1 of 3, then busy
	// published 2
}

// funcClient is a Client whose Publish is a function.
type funcClient struct {
	publish func([][]byte) (int, error)
}

func (c *funcClient) Connect(time.Duration) error          { return nil }
func (c *funcClient) Close() error                         { return nil }
func (c *funcClient) Publish(events [][]byte) (int, error) { return c.publish(events) }

// printSink is a Sink of your own: it prints what it is given (a view, valid during
// the call).
type printSink struct{ name string }

func (s *printSink) Write(event []byte) error {
	fmt.Printf("%s: %s\n", s.name, event)
	return nil
}

func (s *printSink) Close() error { return nil }

// Fan-out: every event goes to a queued console sink, and the errors also to a
// channel the program reads. Closing the broadcaster closes its members: the queue
// delivers what it holds, the channel closes once drained.
func ExampleNewBroadcaster() {
	console, err := conveyor.NewQueueSink(&printSink{name: "console"}, 16, conveyor.OverflowBlock)
	if err != nil {
		fmt.Println(err)
		return
	}
	alerts, _ := conveyor.NewChannelSink(16)
	errorsOnly, _ := conveyor.NewFilter(alerts, func(e []byte) bool { return strings.HasPrefix(string(e), "error") })
	fanout, _ := conveyor.NewBroadcaster(console, errorsOnly)
	for _, e := range []string{"info: started", "error: disk full", "info: retrying"} {
		if err := fanout.Write([]byte(e)); err != nil {
			fmt.Println(err)
		}
	}
	fanout.Close()
	for e := range alerts.C() {
		fmt.Printf("alert: %s\n", e)
	}
	console.Close() // releases the handles held here (closing again does nothing)
	errorsOnly.Close()
	// Output:
	// console: info: started
	// console: error: disk full
	// console: info: retrying
	// alert: error: disk full
}

// Events published one at a time in quick succession wait, up to their producer's
// Linger, to cross into conveyor together (one cgo call per group); Flush, like
// every call that must see them, hands them over first. NoLinger hands each event
// over at once.
func ExampleProducerConfig_linger() {
	p, err := conveyor.NewPipeline(conveyor.Config{}, &printClient{name: "out"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close(5 * time.Second)
	grouped, _ := p.NewProducer(conveyor.ProducerConfig{Linger: 10 * time.Millisecond})
	direct, _ := p.NewProducer(conveyor.ProducerConfig{Linger: conveyor.NoLinger})
	ctx := context.Background()
	for _, e := range []string{"a", "b", "c"} {
		if err := grouped.Publish(ctx, []byte(e)); err != nil {
			fmt.Println(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		fmt.Println(err)
	}
	if err := direct.Publish(ctx, []byte("d")); err != nil {
		fmt.Println(err)
	}
	if err := p.Flush(ctx); err != nil {
		fmt.Println(err)
	}
	s, _ := p.Stats()
	fmt.Println("accepted:", s.Accepted, "staged:", s.Staged)
	// Output:
	// out: a
	// out: b
	// out: c
	// out: d
	// accepted: 4 staged: 0
}
