// Fan-out with sinks: one event stream to two outputs, and a live tail.
//
//	broadcaster ─┬─ queue sink ─ pipeline "search"   (load balanced over search-1, search-2)
//	             ├─ filter (errors only) ─ queue sink ─ pipeline "archive"
//	             │                          (failover: archive-1 is down, archive-2 takes over)
//	             └─ channel sink ─ a goroutine counting what it reads
//
// Each output is a pipeline over its own clients; the queue sinks isolate them, so a
// slow or failing output never holds back the other. The program checks that every
// event reached search once, every error event reached the archive once, and that
// each output acknowledged everything it accepted.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	conveyor "github.com/conveyor-dev/conveyor/bindings/go"
)

// endpoint is a pretend remote host.
type endpoint struct {
	host     string
	down     bool
	received atomic.Int64
}

func (e *endpoint) Connect(time.Duration) error {
	if e.down {
		return errors.New(e.host + ": connection refused")
	}
	return nil
}

func (e *endpoint) Close() error { return nil }

func (e *endpoint) Publish(events [][]byte) (int, error) {
	e.received.Add(int64(len(events)))
	return len(events), nil
}

// output is a pipeline used as a sink, with the count of what it acknowledged and
// dropped.
type output struct {
	name      string
	pipeline  *conveyor.Pipeline
	sink      *conveyor.PipelineSink
	hosts     []*endpoint
	acked     atomic.Int64
	dropped   atomic.Int64
	queueDrop atomic.Int64
}

func newOutput(name string, cfg conveyor.Config, hosts ...*endpoint) (*output, error) {
	clients := make([]conveyor.Client, len(hosts))
	for i, h := range hosts {
		clients[i] = h
	}
	p, err := conveyor.NewPipeline(cfg, clients...)
	if err != nil {
		return nil, err
	}
	o := &output{name: name, pipeline: p, hosts: hosts}
	o.sink, err = p.AsSinkWith(conveyor.PipelineSinkConfig{Producer: conveyor.ProducerConfig{
		OnACK:  func(n int) { o.acked.Add(int64(n)) },
		OnDrop: func(events [][]byte) { o.dropped.Add(int64(len(events))) },
	}})
	if err != nil {
		p.Close(time.Second)
		return nil, err
	}
	return o, nil
}

// queued puts a queue sink in front of the output: the broadcaster never waits on it.
func (o *output) queued() (*conveyor.QueueSink, error) {
	return conveyor.NewQueueSinkWith(o.sink, 4096, conveyor.OverflowBlock, conveyor.QueueSinkOptions{
		OnDrop: func(events [][]byte) { o.queueDrop.Add(int64(len(events))) },
	})
}

func (o *output) received() int64 {
	var n int64
	for _, h := range o.hosts {
		n += h.received.Load()
	}
	return n
}

func main() {
	events := flag.Int("events", 20000, "events to send")
	flag.Parse()
	if err := run(*events); err != nil {
		fmt.Fprintln(os.Stderr, "fanout:", err)
		os.Exit(1)
	}
}

func run(events int) error {
	fast := conveyor.Config{BackoffInit: time.Millisecond, BackoffMax: 10 * time.Millisecond, MaxRetries: conveyor.Retries(-1)}
	searchCfg, archiveCfg := fast, fast
	searchCfg.Mode = conveyor.LoadBalance
	archiveCfg.Mode, archiveCfg.FailoverPolicy = conveyor.Failover, conveyor.FailoverOrdered
	search, err := newOutput("search", searchCfg, &endpoint{host: "search-1"}, &endpoint{host: "search-2"})
	if err != nil {
		return err
	}
	archive, err := newOutput("archive", archiveCfg, &endpoint{host: "archive-1", down: true}, &endpoint{host: "archive-2"})
	if err != nil {
		return err
	}
	searchQueue, err := search.queued()
	if err != nil {
		return err
	}
	archiveQueue, err := archive.queued()
	if err != nil {
		return err
	}
	errorsOnly, err := conveyor.NewFilter(archiveQueue, func(e []byte) bool { return strings.HasPrefix(string(e), "level=error") })
	if err != nil {
		return err
	}
	tail, err := conveyor.NewChannelSink(1024)
	if err != nil {
		return err
	}
	var tailed atomic.Int64
	tailDone := make(chan struct{})
	go func() {
		defer close(tailDone)
		for range tail.C() {
			tailed.Add(1)
		}
	}()
	fanout, err := conveyor.NewBroadcaster(searchQueue, errorsOnly, tail)
	if err != nil {
		return err
	}

	errorEvents := 0
	start := time.Now()
	for i := range events {
		level := "info"
		if i%10 == 0 {
			level = "error"
			errorEvents++
		}
		if err := fanout.Write(fmt.Appendf(nil, "level=%s seq=%d msg=\"request served\"", level, i)); err != nil {
			return err
		}
	}
	stats, err := fanout.Stats()
	if err != nil {
		return err
	}
	// Closing the broadcaster closes every member: the queues deliver what they hold,
	// then close the outputs, which deliver what they accepted; the channel closes.
	if err := fanout.Close(); err != nil {
		return err
	}
	for _, s := range []conveyor.Sink{searchQueue, archiveQueue, errorsOnly, search.sink, archive.sink} {
		if err := s.Close(); err != nil {
			return err
		}
	}
	<-tailDone
	elapsed := time.Since(start)
	for _, o := range []*output{search, archive} {
		if err := o.pipeline.Close(time.Second); err != nil {
			return err
		}
	}

	fmt.Printf("%d events (%d errors) fanned out to %d members in %v\n", events, errorEvents,
		len(stats.Inner), elapsed.Round(time.Millisecond))
	for _, o := range []*output{search, archive} {
		fmt.Printf("  %-8s acked %6d, dropped %d (queue %d);", o.name, o.acked.Load(), o.dropped.Load(), o.queueDrop.Load())
		for _, h := range o.hosts {
			fmt.Printf(" %s: %d", h.host, h.received.Load())
		}
		fmt.Println()
	}
	fmt.Printf("  tail     read %d\n", tailed.Load())

	for _, c := range []struct {
		name string
		o    *output
		want int
	}{{"search", search, events}, {"archive", archive, errorEvents}} {
		if c.o.acked.Load() != int64(c.want) || c.o.received() != int64(c.want) || c.o.dropped.Load()+c.o.queueDrop.Load() != 0 {
			return fmt.Errorf("%s: acked %d, received %d, dropped %d; want %d, %d, 0", c.name, c.o.acked.Load(),
				c.o.received(), c.o.dropped.Load()+c.o.queueDrop.Load(), c.want, c.want)
		}
	}
	if tailed.Load() != int64(events) {
		return fmt.Errorf("the tail read %d events, want %d", tailed.Load(), events)
	}
	fmt.Println("fanout: every event reached each output it was meant for exactly once")
	return nil
}
