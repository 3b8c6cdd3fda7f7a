package conveyor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stagedCount is how many events wait in prod's stage.
func stagedCount(prod *Producer) int {
	s := prod.stage
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n - s.head
}

// exclusive wraps a producer's callbacks and fails the test if two of them ever
// run at the same time (the binding's own drop reports included).
type exclusive struct {
	t       *testing.T
	running atomic.Int32
}

func (x *exclusive) enter() {
	if x.running.Add(1) != 1 {
		x.t.Error("two callbacks of one producer ran at the same time")
	}
}

func (x *exclusive) exit() { x.running.Add(-1) }

func (x *exclusive) config(o *outcomes) ProducerConfig {
	return ProducerConfig{
		OnACK: func(n int) {
			x.enter()
			defer x.exit()
			o.onACK(n)
		},
		OnDrop: func(events [][]byte) {
			x.enter()
			defer x.exit()
			o.onDrop(events)
		},
	}
}

// checkOrder fails unless order is 0, 1, ... n-1.
func checkOrder(t *testing.T, l *ledger, n int) {
	t.Helper()
	_, order, bad := l.snapshot()
	if len(bad) > 0 {
		t.Fatalf("corrupt payloads: %v", bad[0])
	}
	if len(order) != n {
		t.Fatalf("delivered %d events, want %d", len(order), n)
	}
	for i, id := range order {
		if id != uint64(i) {
			t.Fatalf("delivery %d is event %d: order lost", i, id)
		}
	}
}

// checkOrderPerGoroutine fails unless the ledger got each event once, intact, with
// every goroutine's events (id: goroutine << 32 | index) in their order.
func checkOrderPerGoroutine(t *testing.T, l *ledger, goroutines, each int) {
	t.Helper()
	_, order, bad := l.snapshot()
	if len(bad) > 0 {
		t.Fatal(bad[0])
	}
	if len(order) != goroutines*each {
		t.Fatalf("delivered %d, want %d", len(order), goroutines*each)
	}
	next := make([]uint64, goroutines)
	for _, id := range order {
		g, i := id>>32, id&0xffffffff
		if i != next[g] {
			t.Fatalf("goroutine %d: event %d delivered where %d was due", g, i, next[g])
		}
		next[g]++
	}
}

func TestStagedDirectBatchAndTryPublishKeepPublishOrder(t *testing.T) {
	rng := newRand(seed(t))
	l := newLedger()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 512, BulkMaxSize: 64}), &recordingClient{ledger: l})
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))
	ctx := patientContext(t)
	next := uint64(0)
	for next < 6000 {
		switch op := rng.IntN(20); {
		case op < 14:
			if err := prod.Publish(ctx, event(next, 8+rng.IntN(300))); err != nil {
				t.Fatalf("Publish %d: %v", next, err)
			}
			next++
		case op == 14: // bypasses the stage
			if err := prod.Publish(ctx, event(next, pinThreshold+rng.IntN(3000))); err != nil {
				t.Fatalf("Publish %d (large): %v", next, err)
			}
			next++
		case op == 15:
			batch := make([][]byte, 1+rng.IntN(20))
			for i := range batch {
				batch[i] = event(next+uint64(i), 8+rng.IntN(100))
			}
			if k, err := prod.PublishBatch(ctx, batch); k != len(batch) || err != nil {
				t.Fatalf("PublishBatch: %d, %v", k, err)
			}
			next += uint64(len(batch))
		case op == 16:
			e := event(next, 8+rng.IntN(100))
			err := prod.TryPublish(e)
			if errors.Is(err, ErrFull) {
				err = prod.Publish(ctx, e)
			}
			if err != nil {
				t.Fatalf("TryPublish %d: %v", next, err)
			}
			next++
		case op == 17:
			c, err := prod.Counts()
			if err != nil || c.Accepted != next || c.Accepted != c.Acked+c.Dropped+c.InFlight {
				t.Fatalf("Counts %+v, %v after %d accepted", c, err, next)
			}
		default:
			s, err := p.Stats()
			if err != nil || s.Accepted != next || s.Accepted != s.Acked+s.Dropped+s.InFlight {
				t.Fatalf("Stats %+v, %v after %d accepted", s, err, next)
			}
		}
	}
	mustFlush(t, p)
	checkOrder(t, l, int(next))
	if acked, dropped := o.totals(); acked != int(next) || len(dropped) != 0 {
		t.Fatalf("acked %d, dropped %d; want %d, 0", acked, len(dropped), next)
	}
	if c, err := prod.Counts(); err != nil || c != (Counts{Accepted: next, Acked: next}) {
		t.Fatalf("Counts = %+v, %v", c, err)
	}
}

// deliveryClient reports every event it publishes on a channel.
func deliveryClient() (*recordingClient, chan uint64) {
	delivered := make(chan uint64, 1024)
	return &recordingClient{ledger: newLedger(), fail: func(events [][]byte) (int, error) {
		for _, e := range events {
			delivered <- eventID(e)
		}
		return len(events), nil
	}}, delivered
}

func TestALoneEventIsHandedOverWithoutWaitingForItsLinger(t *testing.T) {
	client, delivered := deliveryClient()
	p := startPipeline(t, fastRetries(Config{}), client)
	prod := mustProducer(t, p, ProducerConfig{Linger: time.Hour})
	ctx := patientContext(t)
	if err := prod.Publish(ctx, event(1, 8)); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-delivered:
		if id != 1 {
			t.Fatalf("delivered event %d, want 1", id)
		}
	case <-time.After(patience):
		t.Fatal("a lone event waited for its linger (1 h)")
	}
	// The next one comes less than a linger after that hand-over: it waits for company.
	if err := prod.Publish(ctx, event(2, 8)); err != nil {
		t.Fatal(err)
	}
	if n := stagedCount(prod); n != 1 {
		t.Fatalf("%d events staged, want 1", n)
	}
	mustFlush(t, p)
	if id := <-delivered; id != 2 {
		t.Fatalf("delivered event %d, want 2", id)
	}
}

func TestABurstIsHandedOverByTheTimer(t *testing.T) {
	l := newLedger()
	p := startPipeline(t, fastRetries(Config{}), &recordingClient{ledger: l})
	o := newOutcomes()
	cfg := o.config(false)
	cfg.Linger = 2 * time.Millisecond
	prod := mustProducer(t, p, cfg)
	ctx := patientContext(t)
	const n = 100
	for i := range n {
		if err := prod.Publish(ctx, event(uint64(i), 40)); err != nil {
			t.Fatal(err)
		}
	}
	// No further call: only the timer hands the stage over.
	o.waitUntil(t, "the burst's ACKs", func(acked int, _ []uint64) bool { return acked == n })
	checkOrder(t, l, n)
}

// Events staged while the queue is full reach it once it drains, with no further
// call: the timer tries again until the stage is empty.
func TestTheTimerRetriesUntilTheQueueHasRoom(t *testing.T) {
	client := newBlockingClient()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 8, BulkMaxSize: 2}), client)
	defer client.gate.open()
	o := newOutcomes()
	cfg := o.config(false)
	cfg.Linger = time.Millisecond
	prod := mustProducer(t, p, cfg)
	accepted := fillQueue(t, prod)
	ctx := patientContext(t)
	for i := range 8 {
		if err := prod.Publish(ctx, event(uint64(accepted+i), 16)); err != nil {
			t.Fatal(err)
		}
	}
	client.gate.open()
	o.waitUntil(t, "the staged events' ACKs", func(acked int, _ []uint64) bool { return acked == accepted+8 })
	checkOrder(t, client.ledger, accepted+8)
}

func TestFlushHandsOverStagedEvents(t *testing.T) {
	l := newLedger()
	p := startPipeline(t, fastRetries(Config{}), &recordingClient{ledger: l})
	o := newOutcomes()
	cfg := o.config(false)
	cfg.Linger = time.Hour
	prod := mustProducer(t, p, cfg)
	ctx := patientContext(t)
	const n = 300 // more than a stage holds
	for i := range n {
		if err := prod.Publish(ctx, event(uint64(i), 20)); err != nil {
			t.Fatal(err)
		}
	}
	if stagedCount(prod) == 0 {
		t.Fatal("nothing was staged with a linger of 1 h")
	}
	mustFlush(t, p)
	if acked, _ := o.totals(); acked != n {
		t.Fatalf("Flush returned with %d of %d events acked", acked, n)
	}
	checkOrder(t, l, n)
	if s, err := p.Stats(); err != nil || s.Staged != 0 || s.Accepted != n || s.Acked != n {
		t.Fatalf("Stats %+v, %v", s, err)
	}
}

func TestCloseReportsStagedEventsThatFoundNoRoomLastAndOnce(t *testing.T) {
	logs := &logRecorder{}
	client := &stallingAsync{recordingClient: recordingClient{ledger: newLedger()}, taken: make(chan struct{}, 1)}
	before := liveHandles.Load()
	p, err := NewPipeline(fastRetries(Config{Pipelining: 1, BulkMaxSize: 4, QueueEvents: 8, Logger: logs.log}), client)
	if err != nil {
		t.Fatal(err)
	}
	o := newOutcomes()
	x := &exclusive{t: t}
	cfg := x.config(o)
	cfg.Guaranteed, cfg.Linger = true, time.Hour
	prod := mustProducer(t, p, cfg)
	accepted := fillQueue(t, prod) // the client never completes what it took
	ctx := patientContext(t)
	const staged = 8 // a stage holds queue.events
	for i := range staged {
		if err := prod.Publish(ctx, event(uint64(accepted+i), 16)); err != nil {
			t.Fatal(err)
		}
	}
	total := accepted + staged
	if c, err := prod.Counts(); err != nil || c != (Counts{Accepted: uint64(total), InFlight: uint64(total)}) {
		t.Fatalf("Counts before Close %+v, %v", c, err)
	}
	start := time.Now()
	if err := p.Close(50 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Close took %v", d)
	}
	checkHandles(t, before)
	acked, dropped := o.totals()
	if acked != 0 || len(dropped) != total {
		t.Fatalf("acked %d, dropped %d; want 0, %d", acked, len(dropped), total)
	}
	seen := make(map[uint64]bool)
	for _, id := range dropped {
		if seen[id] || id >= uint64(total) {
			t.Fatalf("event %d dropped twice or never published: %v", id, dropped)
		}
		seen[id] = true
	}
	// The staged events come last, in publish order, after conveyor's own drops.
	for i, id := range dropped[accepted:] {
		if id != uint64(accepted+i) {
			t.Fatalf("drop reports %v: the staged events are not last", dropped)
		}
	}
	if n := logs.count(fmt.Sprintf("%d staged events dropped: the pipeline closed", staged)); n != 1 {
		t.Errorf("the staged drops were logged %d times: %q", n, logs.messages)
	}
	s, err := p.Stats()
	if err != nil || s.Accepted != uint64(total) || s.Dropped != uint64(total) || s.InFlight != 0 || s.Staged != 0 {
		t.Fatalf("final Stats %+v, %v", s, err)
	}
	if _, err := prod.Counts(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Counts after Close: %v", err)
	}
	if err := prod.Publish(ctx, event(999, 8)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	client.completeAll()
	if acked, _ := o.totals(); acked != 0 {
		t.Fatalf("a late completion was counted: acked %d", acked)
	}
}

func TestCancelWithStagedEvents(t *testing.T) {
	t.Run("DropOnCancel", func(t *testing.T) { cancelWithStagedEvents(t, true) })
	t.Run("deliver", func(t *testing.T) { cancelWithStagedEvents(t, false) })
}

// The client holds event 0; events 1-5 wait in the queue, 6-15 in the stage.
func cancelWithStagedEvents(t *testing.T, dropOnCancel bool) {
	client := newBlockingClient()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 64, BulkMaxSize: 4}), client)
	defer client.gate.open()
	o := newOutcomes()
	x := &exclusive{t: t}
	cfg := x.config(o)
	cfg.DropOnCancel, cfg.Linger = dropOnCancel, time.Hour
	prod := mustProducer(t, p, cfg)
	ctx := patientContext(t)
	if err := prod.Publish(ctx, event(0, 16)); err != nil {
		t.Fatal(err)
	}
	<-client.entered
	for i := 1; i <= 5; i++ {
		if err := prod.TryPublish(event(uint64(i), 16)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 6; i <= 15; i++ {
		if err := prod.Publish(ctx, event(uint64(i), 16)); err != nil {
			t.Fatal(err)
		}
	}
	if n := stagedCount(prod); n != 10 {
		t.Fatalf("%d events staged, want 10", n)
	}
	removed := prod.Cancel()
	if n := stagedCount(prod); n != 0 {
		t.Fatalf("%d events still staged after Cancel", n)
	}
	if err := prod.Publish(ctx, event(99, 16)); !errors.Is(err, ErrCanceled) {
		t.Fatalf("Publish after Cancel: %v", err)
	}
	if err := prod.TryPublish(event(99, 16)); !errors.Is(err, ErrCanceled) {
		t.Fatalf("TryPublish after Cancel: %v", err)
	}
	if k, err := prod.PublishBatch(ctx, [][]byte{event(99, 16)}); k != 0 || !errors.Is(err, ErrCanceled) {
		t.Fatalf("PublishBatch after Cancel: %d, %v", k, err)
	}
	if again := prod.Cancel(); again != 0 {
		t.Fatalf("a second Cancel removed %d", again)
	}
	wantAcked := 16
	if dropOnCancel {
		if removed != 15 {
			t.Fatalf("Cancel removed %d, want 15 (5 queued, 10 staged)", removed)
		}
		o.waitUntil(t, "the drop reports", func(_ int, d []uint64) bool { return len(d) == 15 })
		_, dropped := o.totals()
		slices.Sort(dropped)
		for i, id := range dropped {
			if id != uint64(i+1) {
				t.Fatalf("dropped %v, want events 1-15", dropped)
			}
		}
		wantAcked = 1
	} else if removed != 0 {
		t.Fatalf("Cancel without DropOnCancel removed %d", removed)
	}
	client.gate.open()
	mustFlush(t, p)
	acked, dropped := o.totals()
	if acked != wantAcked || acked+len(dropped) != 16 {
		t.Fatalf("acked %d, dropped %d; want %d acked of 16", acked, len(dropped), wantAcked)
	}
	if !dropOnCancel {
		checkOrder(t, client.ledger, 16)
	}
	if c, err := prod.Counts(); err != nil || c.Accepted != 16 || c.Acked != uint64(acked) ||
		c.Dropped != uint64(len(dropped)) || c.InFlight != 0 {
		t.Fatalf("Counts %+v, %v", c, err)
	}
}

// Cancel from the producer's own OnACK reports the staged drops from inside that
// callback, which holds the producer's callback lock: it must not wait for itself.
func TestCancelFromOwnCallbackDropsStagedEvents(t *testing.T) {
	client := newBlockingClient()
	p := startPipeline(t, fastRetries(Config{}), client)
	defer client.gate.open()
	o := newOutcomes()
	var prod *Producer
	removed := make(chan int, 1)
	var once sync.Once
	prod = mustProducer(t, p, ProducerConfig{
		OnACK: func(n int) {
			once.Do(func() { removed <- prod.Cancel() })
			o.onACK(n)
		},
		OnDrop:       o.onDrop,
		DropOnCancel: true,
		Linger:       time.Hour,
	})
	ctx := patientContext(t)
	for i := range 11 {
		if err := prod.Publish(ctx, event(uint64(i), 16)); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-client.entered
		}
	}
	client.gate.open()
	select {
	case n := <-removed:
		if n != 10 {
			t.Fatalf("Cancel from OnACK removed %d, want the 10 staged events", n)
		}
	case <-time.After(patience):
		t.Fatal("Cancel from OnACK deadlocked")
	}
	mustFlush(t, p)
	if acked, dropped := o.totals(); acked != 1 || len(dropped) != 10 {
		t.Fatalf("acked %d, dropped %d; want 1, 10", acked, len(dropped))
	}
}

func TestAPanicInOnDropOfStagedEventsIsRecovered(t *testing.T) {
	logs := &logRecorder{}
	client := newBlockingClient()
	p := startPipeline(t, fastRetries(Config{Logger: logs.log}), client)
	defer client.gate.open()
	var drops atomic.Int64
	prod := mustProducer(t, p, ProducerConfig{
		OnDrop: func(events [][]byte) {
			drops.Add(int64(len(events)))
			panic("OnDrop panic")
		},
		DropOnCancel: true,
		Linger:       time.Hour,
	})
	ctx := patientContext(t)
	for i := range 4 {
		if err := prod.Publish(ctx, event(uint64(i), 16)); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-client.entered
		}
	}
	if removed := prod.Cancel(); removed != 3 || drops.Load() != 3 {
		t.Fatalf("Cancel removed %d, OnDrop saw %d; want 3, 3", removed, drops.Load())
	}
	if logs.count("OnDrop of 3 staged events panicked: OnDrop panic") != 1 {
		t.Fatalf("the panic was not logged once: %q", logs.messages)
	}
	client.gate.open()
	mustFlush(t, p)
	if c, err := prod.Counts(); err != nil || c != (Counts{Accepted: 4, Acked: 1, Dropped: 3}) {
		t.Fatalf("Counts %+v, %v", c, err)
	}
}

func TestProducerCloseHandsOverWhatIsStagedOnceThereIsRoom(t *testing.T) {
	client := newBlockingClient()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 8, BulkMaxSize: 2}), client)
	defer client.gate.open()
	o := newOutcomes()
	cfg := o.config(false)
	cfg.Linger = time.Hour
	prod := mustProducer(t, p, cfg)
	accepted := fillQueue(t, prod)
	ctx := patientContext(t)
	for i := range 5 {
		if err := prod.Publish(ctx, event(uint64(accepted+i), 16)); err != nil {
			t.Fatal(err)
		}
	}
	prod.Close()
	if err := prod.Publish(ctx, event(99, 16)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if _, err := prod.Counts(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Counts after Close: %v", err)
	}
	client.gate.open()
	// No call hands them over but the producer's timer.
	o.waitUntil(t, "the staged events' ACKs", func(acked int, _ []uint64) bool { return acked == accepted+5 })
	checkOrder(t, client.ledger, accepted+5)
	prod.stage.mu.Lock()
	freed := prod.stage.freed
	prod.stage.mu.Unlock()
	if !freed {
		t.Fatal("the closed producer was not freed once its stage was empty")
	}
}

// A PipelineSink closes the C pipeline without the Go Pipeline knowing: the producer
// finds out at its next hand-over, and reports what it had staged as dropped.
func TestStagedEventsOfAPipelineClosedByItsSinkAreReportedDropped(t *testing.T) {
	logs := &logRecorder{}
	p := startPipeline(t, fastRetries(Config{Logger: logs.log}), &recordingClient{ledger: newLedger()})
	o := newOutcomes()
	x := &exclusive{t: t}
	cfg := x.config(o)
	cfg.Linger = time.Hour
	prod := mustProducer(t, p, cfg)
	ctx := patientContext(t)
	for i := range 10 {
		if err := prod.Publish(ctx, event(uint64(i), 16)); err != nil {
			t.Fatal(err)
		}
	}
	if err := must(p.AsSink()).Close(); err != nil {
		t.Fatal(err)
	}
	if err := prod.TryPublish(event(10, 16)); !errors.Is(err, ErrClosed) {
		t.Fatalf("TryPublish after the sink closed the pipeline: %v", err)
	}
	if err := prod.Publish(ctx, event(11, 16)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after a failed hand-over: %v", err)
	}
	acked, dropped := o.totals()
	if acked+len(dropped) != 10 || len(dropped) != 9 {
		t.Fatalf("acked %d, dropped %d; want 1 and the 9 staged", acked, len(dropped))
	}
	if logs.count("9 staged events dropped: handing it to conveyor failed") != 1 {
		t.Errorf("the drop was not logged: %q", logs.messages)
	}
	if c, err := prod.Counts(); err != nil || c != (Counts{Accepted: 10, Acked: 1, Dropped: 9}) {
		t.Fatalf("Counts %+v, %v", c, err)
	}
}

// Many goroutines on one producer, with a short linger and a small queue (so that
// stages fill, wait and are handed over by the timer), Stats and Counts called
// meanwhile: every event gets one outcome, each goroutine's in publish order.
func TestManyGoroutinesOnOneStagedProducer(t *testing.T) {
	s := seed(t)
	l := newLedger()
	client := &recordingClient{ledger: l, fail: func(events [][]byte) (int, error) {
		if len(events) > 0 && eventID(events[0])%97 == 0 {
			time.Sleep(50 * time.Microsecond) // a slow batch now and then: the queue fills
		}
		return len(events), nil
	}}
	p := startPipeline(t, fastRetries(Config{QueueEvents: 128, BulkMaxSize: 32}), client)
	o := newOutcomes()
	x := &exclusive{t: t}
	cfg := x.config(o)
	cfg.Linger = 200 * time.Microsecond
	prod := mustProducer(t, p, cfg)
	ctx := patientContext(t)
	const goroutines, each = 6, 1500
	var wg sync.WaitGroup
	stopChecking := repeatInBackground(func() bool {
		if s, err := p.Stats(); err != nil || s.Accepted != s.Acked+s.Dropped+s.InFlight {
			t.Errorf("Stats %+v, %v", s, err)
			return false
		}
		if c, err := prod.Counts(); err != nil || c.Accepted != c.Acked+c.Dropped+c.InFlight {
			t.Errorf("Counts %+v, %v", c, err)
			return false
		}
		return true
	})
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := newRand(s + uint64(g))
			for i := 0; i < each; {
				id := uint64(g)<<32 | uint64(i)
				var err error
				switch rng.IntN(12) {
				case 0:
					err = prod.Publish(ctx, event(id, pinThreshold+rng.IntN(500)))
				case 1:
					if err = prod.TryPublish(event(id, 32)); errors.Is(err, ErrFull) {
						err = prod.Publish(ctx, event(id, 32))
					}
				case 2:
					var k int
					if k, err = prod.PublishBatch(ctx, [][]byte{event(id, 32)}); k != 1 && err == nil {
						err = fmt.Errorf("accepted %d", k)
					}
				default:
					err = prod.Publish(ctx, event(id, 8+rng.IntN(200)))
				}
				if err != nil {
					t.Errorf("goroutine %d event %d: %v", g, i, err)
					return
				}
				i++
			}
		}()
	}
	wg.Wait()
	stopChecking()
	mustFlush(t, p)
	checkOrderPerGoroutine(t, l, goroutines, each)
	if acked, dropped := o.totals(); acked != goroutines*each || len(dropped) != 0 {
		t.Fatalf("acked %d, dropped %d", acked, len(dropped))
	}
}

func TestNoLingerHandsEveryEventOverAtOnce(t *testing.T) {
	client := newBlockingClient()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 8, BulkMaxSize: 2}), client)
	defer client.gate.open()
	prod := mustProducer(t, p, ProducerConfig{Linger: NoLinger})
	if prod.stage != nil {
		t.Fatal("a producer with NoLinger has a stage")
	}
	accepted := fillQueue(t, prod)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Nothing to stage into: the queue is full, so the publish waits (and ctx ended).
	if err := prod.Publish(ctx, event(99, 16)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish into a full queue: %v", err)
	}
	if c, err := prod.Counts(); err != nil || c.Accepted != uint64(accepted) {
		t.Fatalf("Counts %+v, %v; want %d accepted", c, err, accepted)
	}
}

// sizeClient waits for its gate, then records the size of every event it publishes.
type sizeClient struct {
	gate  chan struct{}
	mu    sync.Mutex
	sizes []int
}

func (c *sizeClient) Connect(time.Duration) error { return nil }
func (c *sizeClient) Close() error                { return nil }
func (c *sizeClient) Publish(events [][]byte) (int, error) {
	<-c.gate
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range events {
		c.sizes = append(c.sizes, len(e))
	}
	return len(events), nil
}

// A partial hand-over can take every byte of a full stage and leave only empty
// events, whose data starts at the very end of the stage's memory: they go over too.
func TestEmptyEventsLeftAfterAFullStageAreHandedOver(t *testing.T) {
	client := &sizeClient{gate: make(chan struct{})}
	// One event handed over at once (the producer is idle), then a stage of 18 (the
	// queue's size): 16 events below the bypass size and one of 16 bytes fill its
	// memory exactly, and an empty one; the queue has room for 17 of them.
	p := startPipeline(t, fastRetries(Config{QueueEvents: 18, BulkMaxSize: 1}), client)
	prod := mustProducer(t, p, ProducerConfig{Linger: time.Hour})
	ctx := patientContext(t)
	const staged = stageBytes/16 - 1
	want := []int{1}
	for range 16 {
		want = append(want, staged)
	}
	want = append(want, stageBytes-16*staged, 0)
	for _, size := range want {
		if err := prod.Publish(ctx, make([]byte, size)); err != nil {
			t.Fatal(err)
		}
	}
	if err := prod.TryPublish([]byte("x")); !errors.Is(err, ErrFull) {
		t.Fatalf("TryPublish with a full queue: %v, want ErrFull", err)
	}
	if n := stagedCount(prod); n != 1 {
		t.Fatalf("%d events still staged, want the empty one", n)
	}
	close(client.gate)
	mustFlush(t, p)
	client.mu.Lock()
	defer client.mu.Unlock()
	if !slices.Equal(client.sizes, want) {
		t.Fatalf("delivered sizes %v, want %v", client.sizes, want)
	}
}
