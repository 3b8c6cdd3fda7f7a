package conveyor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestPublishDeliversInOrderAndACKsEveryEvent(t *testing.T) {
	l := newLedger()
	client := &recordingClient{ledger: l}
	p := startPipeline(t, fastRetries(Config{BulkMaxSize: 64}), client)
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))
	ctx := patientContext(t)
	const n = 5000
	for i := range n {
		if err := prod.Publish(ctx, event(uint64(i), 10+i%200)); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	mustFlush(t, p)
	acked, dropped := o.totals()
	if acked != n || len(dropped) != 0 {
		t.Fatalf("acked %d, dropped %d; want %d, 0", acked, len(dropped), n)
	}
	checkOrder(t, l, n)
	counts, err := prod.Counts()
	if err != nil || counts != (Counts{Accepted: n, Acked: n}) {
		t.Fatalf("Counts = %+v, %v", counts, err)
	}
	// The worker counts a batch's events in its client's stats just after settling
	// it, so the last batch's count may trail the ACK that let Flush return.
	var s Stats
	for deadline := time.Now().Add(patience); ; {
		if s, err = p.Stats(); err != nil {
			t.Fatal(err)
		}
		if len(s.Clients) != 1 || s.Clients[0].Events == n || time.Now().After(deadline) {
			break
		}
		runtime.Gosched()
	}
	if s.Mode != "single" || s.Accepted != n || s.Acked != n || s.InFlight != 0 || len(s.Clients) != 1 ||
		s.Clients[0].Events != n || s.Clients[0].State != "active" || s.Queue.CapacityEvents != 4096 {
		t.Fatalf("unexpected stats %+v", s)
	}
	if s.Clients[0].StartedAt.IsZero() || time.Since(s.Clients[0].StartedAt) > time.Hour {
		t.Fatalf("StartedAt %v is not a recent time", s.Clients[0].StartedAt)
	}
}

func TestPublishBatchCopiesEveryEventInOrder(t *testing.T) {
	l := newLedger()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 256, BulkMaxSize: 100}), &recordingClient{ledger: l})
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))
	ctx := patientContext(t)
	if n, err := prod.PublishBatch(ctx, nil); n != 0 || err != nil {
		t.Fatalf("empty batch: %d, %v", n, err)
	}
	// Batches larger than the queue wait for room part by part.
	next := uint64(0)
	for _, size := range []int{1, 7, 300, 1024, 1500, 3} {
		batch := numberedEvents(&next, size)
		n, err := prod.PublishBatch(ctx, batch)
		if n != size || err != nil {
			t.Fatalf("PublishBatch(%d events) = %d, %v", size, n, err)
		}
		// The batch was copied: scribbling over it must not change what is delivered.
		for _, e := range batch {
			clear(e)
		}
	}
	mustFlush(t, p)
	checkOrder(t, l, int(next))
	if acked, _ := o.totals(); acked != int(next) {
		t.Fatalf("acked %d, want %d", acked, next)
	}
}

// numberedEvents builds count events of 8 to 57 bytes with the ids from *next on.
func numberedEvents(next *uint64, count int) [][]byte {
	batch := make([][]byte, count)
	for i := range batch {
		batch[i] = event(*next, 8+int(*next%50))
		*next++
	}
	return batch
}

// emptyClient checks that zero-length events arrive as empty, usable slices.
type emptyClient struct {
	sizes chan []int
}

func (c *emptyClient) Connect(time.Duration) error { return nil }
func (c *emptyClient) Close() error                { return nil }
func (c *emptyClient) Publish(events [][]byte) (int, error) {
	sizes := make([]int, len(events))
	for i, e := range events {
		sizes[i] = len(e)
		if len(e) == 0 && e == nil {
			sizes[i] = -1
		}
	}
	c.sizes <- sizes
	return len(events), nil
}

func TestZeroLengthEvents(t *testing.T) {
	c := &emptyClient{sizes: make(chan []int, 64)}
	p := startPipeline(t, fastRetries(Config{}), c)
	prod := mustProducer(t, p, ProducerConfig{})
	ctx := patientContext(t)
	if _, err := prod.PublishBatch(ctx, [][]byte{{}, nil, []byte("x"), {}}); err != nil {
		t.Fatal(err)
	}
	if err := prod.Publish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	mustFlush(t, p)
	var got []int
	for len(got) < 5 {
		select {
		case s := <-c.sizes:
			got = append(got, s...)
		case <-time.After(patience):
			t.Fatalf("only %v delivered", got)
		}
	}
	if !slices.Equal(got, []int{0, 0, 1, 0, 0}) {
		t.Fatalf("event sizes %v, want [0 0 1 0 0] (-1 is a nil slice)", got)
	}
}

// faultyClient fails connects and publishes at random: partial publishes, temporary
// and broken failures, panics; as an AsyncClient it completes from other goroutines.
type faultyClient struct {
	recordingClient
	rng   *rand.Rand
	rngMu sync.Mutex
}

func (c *faultyClient) chance(p float64) bool {
	c.rngMu.Lock()
	defer c.rngMu.Unlock()
	return c.rng.Float64() < p
}

func (c *faultyClient) intn(n int) int {
	c.rngMu.Lock()
	defer c.rngMu.Unlock()
	return c.rng.IntN(n)
}

func (c *faultyClient) outcome(events [][]byte) (int, error) {
	switch {
	case c.chance(0.1):
		return c.intn(len(events) + 1), fmt.Errorf("injected: %w", ErrRetry)
	case c.chance(0.1):
		return c.intn(len(events) + 1), errors.New("injected: connection reset")
	case c.chance(0.1):
		return c.intn(len(events) + 1), nil
	case c.chance(0.03):
		panic("injected panic in Publish")
	case c.chance(0.02):
		return len(events) + 1 + c.intn(5), nil // out of range: the whole batch fails
	case c.chance(0.02):
		return -1 - c.intn(3), nil // negative: the whole batch fails
	}
	return len(events), nil
}

func newFaultyClient(l *ledger, s uint64) *faultyClient {
	c := &faultyClient{recordingClient: recordingClient{ledger: l}, rng: newRand(s)}
	c.fail = c.outcome
	c.connect = func() error {
		if c.chance(0.2) {
			return errors.New("injected: connection refused")
		}
		if c.chance(0.02) {
			panic("injected panic in Connect")
		}
		return nil
	}
	return c
}

// faultyAsyncClient completes every batch from a goroutine of its own, sometimes
// twice, and sometimes refuses to take a batch.
type faultyAsyncClient struct {
	*faultyClient
	wg sync.WaitGroup
}

func (c *faultyAsyncClient) PublishAsync(events [][]byte, done func(int, error)) error {
	if c.chance(0.05) {
		return errors.New("injected: not taken")
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		n, err := c.safeOutcome(events)
		if n >= 0 && n <= len(events) {
			c.ledger.record(events[:n])
		}
		done(n, err)
		if c.chance(0.05) {
			done(len(events), nil) // ignored: a batch completes once
		}
	}()
	return nil
}

func (c *faultyAsyncClient) safeOutcome(events [][]byte) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = 0, fmt.Errorf("client panicked: %v", r)
		}
	}()
	return c.outcome(events)
}

func TestGuaranteedDeliveryUnderFaultsEventByEvent(t *testing.T) {
	s := seed(t)
	rounds := 12
	if testing.Short() {
		rounds = 3
	}
	for round := range rounds {
		roundSeed := s + uint64(round)
		t.Run(fmt.Sprintf("seed=%d", roundSeed), func(t *testing.T) { guaranteedRound(t, roundSeed) })
	}
}

func guaranteedRound(t *testing.T, s uint64) {
	rng := newRand(s)
	l := newLedger()
	logs := &logRecorder{}
	var clients []Client
	var asyncs []*faultyAsyncClient
	nClients := 1 + rng.IntN(3)
	for i := range nClients {
		fc := newFaultyClient(l, s*31+uint64(i))
		if rng.IntN(2) == 0 {
			ac := &faultyAsyncClient{faultyClient: fc}
			asyncs = append(asyncs, ac)
			clients = append(clients, ac)
		} else {
			clients = append(clients, fc)
		}
	}
	cfg := fastRetries(Config{
		MaxRetries:  Retries(rng.IntN(3)),
		BulkMaxSize: 1 + rng.IntN(64),
		QueueEvents: 32 + rng.IntN(256),
		Pipelining:  1 + rng.IntN(4),
		Logger:      logs.log,
	})
	if nClients > 1 {
		cfg.Mode = []Mode{Failover, LoadBalance}[rng.IntN(2)]
	}
	t.Logf("%d clients (%d async), mode %v, max_retries %d, bulk_max_size %d, queue.events %d, pipelining %d",
		nClients, len(asyncs), cfg.Mode, *cfg.MaxRetries, cfg.BulkMaxSize, cfg.QueueEvents, cfg.Pipelining)
	before := liveHandles.Load()
	p, err := NewPipeline(cfg, clients...)
	if err != nil {
		t.Fatal(err)
	}
	const producers, perProducer = 2, 1500
	outs := make([]*outcomes, producers)
	var wg sync.WaitGroup
	ctx := patientContext(t)
	for g := range producers {
		outs[g] = newOutcomes()
		prod := mustProducer(t, p, outs[g].config(true))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer prod.Close()
			for i := 0; i < perProducer; {
				id := uint64(g*perProducer + i)
				if i%3 == 0 {
					batch := [][]byte{event(id, 20), event(id+1, 30), event(id+2, 40)}[:min(3, perProducer-i)]
					if n, err := prod.PublishBatch(ctx, batch); err != nil || n != len(batch) {
						t.Errorf("PublishBatch: %d, %v", n, err)
						return
					}
					i += len(batch)
					continue
				}
				if err := prod.Publish(ctx, event(id, 100)); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				i++
			}
		}()
	}
	wg.Wait()
	mustFlush(t, p)
	if err := p.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, ac := range asyncs {
		ac.wg.Wait()
	}
	checkHandles(t, before)

	delivered, _, bad := l.snapshot()
	if len(bad) > 0 {
		t.Fatalf("corrupt payloads: %v", bad[0])
	}
	for g, o := range outs {
		acked, dropped := o.totals()
		if len(dropped) != 0 {
			t.Errorf("producer %d: guaranteed events dropped: %v", g, dropped[:min(10, len(dropped))])
		}
		if acked != perProducer {
			t.Errorf("producer %d: acked %d, want %d", g, acked, perProducer)
		}
	}
	for id := range uint64(producers * perProducer) {
		if delivered[id] == 0 {
			t.Fatalf("event %d acked but never reported published by a client", id)
		}
	}
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Accepted != producers*perProducer || st.Acked != st.Accepted || st.Dropped != 0 || st.InFlight != 0 {
		t.Fatalf("final stats %+v", st)
	}
}

// The client never publishes an event whose id is a multiple of 7: it publishes the
// prefix before it and reports the connection broken, until conveyor gives up.
func TestDropsAreReportedEventByEvent(t *testing.T) {
	l := newLedger()
	poison := func(id uint64) bool { return id%7 == 0 }
	client := &recordingClient{ledger: l, fail: func(events [][]byte) (int, error) {
		for i, e := range events {
			if poison(eventID(e)) {
				return i, errors.New("poison event")
			}
		}
		return len(events), nil
	}}
	p := startPipeline(t, fastRetries(Config{MaxRetries: Retries(1), BulkMaxSize: 16}), client)
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))
	ctx := patientContext(t)
	const n = 700
	for i := range n {
		if err := prod.Publish(ctx, event(uint64(i), 50)); err != nil {
			t.Fatal(err)
		}
	}
	mustFlush(t, p)
	acked, dropped := o.totals()
	delivered, _, _ := l.snapshot()
	droppedSet := make(map[uint64]bool)
	for _, id := range dropped {
		if droppedSet[id] {
			t.Fatalf("event %d dropped twice", id)
		}
		droppedSet[id] = true
	}
	if acked+len(dropped) != n {
		t.Fatalf("acked %d + dropped %d != %d accepted", acked, len(dropped), n)
	}
	for id := range uint64(n) {
		switch {
		case poison(id) && !droppedSet[id]:
			t.Fatalf("poison event %d was not dropped", id)
		case !droppedSet[id] && delivered[id] == 0:
			t.Fatalf("event %d counted as acked but never published", id)
		case droppedSet[id] && delivered[id] != 0:
			t.Fatalf("event %d both published and dropped", id)
		}
	}
	counts, _ := prod.Counts()
	if counts.Acked != uint64(acked) || counts.Dropped != uint64(len(dropped)) || counts.InFlight != 0 {
		t.Fatalf("Counts %+v disagree with callbacks (%d acked, %d dropped)", counts, acked, len(dropped))
	}
}

// panicClient panics in its first Connect and in every other Publish.
type panicClient struct {
	recordingClient
	connects, publishes atomic.Int64
}

func (c *panicClient) Connect(time.Duration) error {
	if c.connects.Add(1) == 1 {
		panic("connect panic")
	}
	return nil
}

func (c *panicClient) Publish(events [][]byte) (int, error) {
	if c.publishes.Add(1)%2 == 1 {
		panic(fmt.Sprintf("publish panic with %d events", len(events)))
	}
	return c.recordingClient.Publish(events)
}

func TestPanicsInClientsAreFailedCallsAndLogged(t *testing.T) {
	l := newLedger()
	logs := &logRecorder{}
	client := &panicClient{recordingClient: recordingClient{ledger: l}}
	p := startPipeline(t, fastRetries(Config{MaxRetries: Retries(-1), Logger: logs.log, BulkMaxSize: 10}), client)
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))
	ctx := patientContext(t)
	for i := range 100 {
		if err := prod.Publish(ctx, event(uint64(i), 30)); err != nil {
			t.Fatal(err)
		}
	}
	mustFlush(t, p)
	if acked, dropped := o.totals(); acked != 100 || len(dropped) != 0 {
		t.Fatalf("acked %d dropped %d", acked, len(dropped))
	}
	if delivered, _, _ := l.snapshot(); len(delivered) != 100 {
		t.Fatalf("%d events delivered, want 100", len(delivered))
	}
	if logs.count("Connect panicked: connect panic") != 1 {
		t.Errorf("the Connect panic was not logged once: %q", logs.messages)
	}
	if n := logs.count("Publish of"); n < 2 || n != logs.count("panicked: publish panic") {
		t.Errorf("publish panics logged %d times: %q", n, logs.messages)
	}
	s, _ := p.Stats()
	if s.Clients[0].Failures < 2 || s.Clients[0].ConnectFailures != 1 {
		t.Errorf("stats do not count the panics as failures: %+v", s.Clients[0])
	}
}

func TestPanicsInProducerCallbacksAreLogged(t *testing.T) {
	logs := &logRecorder{}
	client := &recordingClient{ledger: newLedger(), fail: func(events [][]byte) (int, error) {
		return 0, errors.New("always down")
	}}
	p := startPipeline(t, fastRetries(Config{MaxRetries: Retries(0), Logger: logs.log}), client)
	var acks, drops atomic.Int64
	okClient := &recordingClient{ledger: newLedger()}
	p2 := startPipeline(t, fastRetries(Config{Logger: logs.log}), okClient)
	ctx := patientContext(t)

	dropper := mustProducer(t, p, ProducerConfig{OnDrop: func(events [][]byte) {
		drops.Add(int64(len(events)))
		panic("OnDrop panic")
	}})
	acker := mustProducer(t, p2, ProducerConfig{OnACK: func(n int) {
		acks.Add(int64(n))
		panic("OnACK panic")
	}})
	for i := range 20 {
		if err := dropper.Publish(ctx, event(uint64(i), 10)); err != nil {
			t.Fatal(err)
		}
		if err := acker.Publish(ctx, event(uint64(i), 10)); err != nil {
			t.Fatal(err)
		}
	}
	mustFlush(t, p)
	mustFlush(t, p2)
	if drops.Load() != 20 || acks.Load() != 20 {
		t.Fatalf("callbacks saw %d drops, %d acks; want 20 each", drops.Load(), acks.Load())
	}
	if logs.count("OnDrop of") == 0 || logs.count("panicked: OnACK panic") == 0 {
		t.Fatalf("callback panics not logged: %q", logs.messages)
	}
	c1, _ := dropper.Counts()
	c2, _ := acker.Counts()
	if c1.Dropped != 20 || c2.Acked != 20 {
		t.Fatalf("outcomes not counted: %+v %+v", c1, c2)
	}
}

func TestManyGoroutinesPublishing(t *testing.T) {
	l := newLedger()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 64, BulkMaxSize: 32}), &recordingClient{ledger: l})
	shared := newOutcomes()
	sharedProd := mustProducer(t, p, shared.config(false))
	const goroutines, each = 8, 1000
	own := make([]*outcomes, goroutines)
	ctx := patientContext(t)
	var wg sync.WaitGroup
	for g := range goroutines {
		prod := sharedProd
		if g%2 == 1 {
			own[g] = newOutcomes()
			prod = mustProducer(t, p, own[g].config(false))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id := uint64(g)<<32 | uint64(i)
				var err error
				switch i % 3 {
				case 0:
					err = prod.Publish(ctx, event(id, 64))
				case 1:
					if err = prod.TryPublish(event(id, 64)); errors.Is(err, ErrFull) {
						err = prod.Publish(ctx, event(id, 64))
					}
				case 2:
					var n int
					n, err = prod.PublishBatch(ctx, [][]byte{event(id, 64)})
					if n != 1 && err == nil {
						err = fmt.Errorf("accepted %d", n)
					}
				}
				if err != nil {
					t.Errorf("goroutine %d event %d: %v", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	mustFlush(t, p)
	checkOrderPerGoroutine(t, l, goroutines, each)
	acked := 0
	if a, _ := shared.totals(); a != goroutines/2*each {
		t.Fatalf("shared producer acked %d", a)
	}
	for _, o := range own {
		if o != nil {
			a, _ := o.totals()
			acked += a
		}
	}
	if acked != goroutines/2*each {
		t.Fatalf("own producers acked %d", acked)
	}
}

// blockingClient holds every Publish until its gate opens.
type blockingClient struct {
	recordingClient
	gate    *gate
	entered chan struct{}
}

func newBlockingClient() *blockingClient {
	return &blockingClient{recordingClient: recordingClient{ledger: newLedger()}, gate: newGate(),
		entered: make(chan struct{}, 1024)}
}

func (c *blockingClient) Publish(events [][]byte) (int, error) {
	c.entered <- struct{}{}
	c.gate.wait()
	return c.recordingClient.Publish(events)
}

// fillQueue publishes until the queue is full; returns how many were accepted.
func fillQueue(t *testing.T, prod *Producer) int {
	t.Helper()
	for i := 0; ; i++ {
		err := prod.TryPublish(event(uint64(i), 16))
		if errors.Is(err, ErrFull) {
			var e *Error
			if !errors.As(err, &e) || !strings.Contains(e.Message, "full") {
				t.Fatalf("ErrFull without conveyor's detail: %#v", err)
			}
			return i
		}
		if err != nil {
			t.Fatalf("TryPublish: %v", err)
		}
		if i > 1000 {
			t.Fatal("the queue never filled up")
		}
	}
}

// fillStage publishes into a producer whose queue is full until its stage is full
// too (a publish would wait); returns how many were accepted.
func fillStage(t *testing.T, prod *Producer) int {
	t.Helper()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; ; i++ {
		err := prod.Publish(ended, event(uint64(1_000_000+i), 16))
		if errors.Is(err, context.Canceled) {
			return i
		}
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if i > stageEvents {
			t.Fatal("the stage never filled up")
		}
	}
}

func TestContextCancelsBlockedCalls(t *testing.T) {
	t.Run("NoLinger", func(t *testing.T) { contextCancelsBlockedCalls(t, NoLinger) })
	t.Run("staged", func(t *testing.T) { contextCancelsBlockedCalls(t, 0) })
}

// With a stage, a publish blocks only once the stage is full too: with queue.events
// 8 the stage holds 8 events.
func contextCancelsBlockedCalls(t *testing.T, linger time.Duration) {
	client := newBlockingClient()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 8, BulkMaxSize: 2}), client)
	defer client.gate.open()
	o := newOutcomes()
	cfg := o.config(false)
	cfg.Linger = linger
	prod := mustProducer(t, p, cfg)
	accepted := fillQueue(t, prod) // the client holds the first batch it took

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	staged := 0
	if linger != NoLinger {
		for ; staged < 8; staged++ {
			if err := prod.Publish(ctx, event(uint64(accepted+staged), 16)); err != nil {
				t.Fatalf("staged publish %d into a full queue: %v", staged, err)
			}
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- prod.Publish(ctx, event(999, 16)) }()
	cancelled := time.Now()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
			t.Fatalf("Publish after cancel: %v", err)
		}
	case <-time.After(patience):
		t.Fatal("cancel did not unblock Publish")
	}
	if d := time.Since(cancelled); d > time.Second {
		t.Errorf("Publish returned %v after cancel", d)
	}

	deadline, stop := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer stop()
	start := time.Now()
	n, err := prod.PublishBatch(deadline, [][]byte{event(1000, 8), event(1001, 8)})
	if n != 0 || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("PublishBatch past its deadline: %d, %v", n, err)
	}
	if d := time.Since(start); d < 30*time.Millisecond || d > 5*time.Second {
		t.Errorf("PublishBatch waited %v for a 30ms deadline", d)
	}
	flushCtx, stopFlush := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer stopFlush()
	if err := p.Flush(flushCtx); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("Flush past its deadline: %v", err)
	}
	want := Counts{Accepted: uint64(accepted + staged), InFlight: uint64(accepted + staged)}
	if c, err := prod.Counts(); c != want || err != nil {
		t.Fatalf("Counts = %+v, %v; want %+v: a cancelled publish must accept nothing", c, err, want)
	}
	if s, err := p.Stats(); err != nil || s.Staged != uint64(staged) || s.Accepted != want.Accepted || s.InFlight != want.InFlight {
		t.Fatalf("Stats: staged %d, accepted %d, in flight %d (%v); want %d, %d, %d",
			s.Staged, s.Accepted, s.InFlight, err, staged, want.Accepted, want.InFlight)
	}
	client.gate.open()
	mustFlush(t, p)
	if acked, _ := o.totals(); acked != accepted+staged {
		t.Fatalf("acked %d, want %d", acked, accepted+staged)
	}
}

func TestCancelRemovesUntakenEvents(t *testing.T) {
	client := newBlockingClient()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 64, BulkMaxSize: 4}), client)
	defer client.gate.open()
	o := newOutcomes()
	prod := mustProducer(t, p, ProducerConfig{OnACK: o.onACK, OnDrop: o.onDrop, DropOnCancel: true})
	ctx := patientContext(t)
	for i := range 20 {
		if err := prod.Publish(ctx, event(uint64(i), 16)); err != nil {
			t.Fatal(err)
		}
	}
	<-client.entered
	removed := prod.Cancel()
	if removed < 1 || removed > 19 {
		t.Fatalf("Cancel removed %d of 20 with one batch taken", removed)
	}
	if err := prod.Publish(ctx, event(99, 16)); !errors.Is(err, ErrCanceled) {
		t.Fatalf("Publish after Cancel: %v", err)
	}
	if again := prod.Cancel(); again != 0 {
		t.Fatalf("second Cancel removed %d", again)
	}
	o.waitUntil(t, "the cancelled events' drop reports", func(_ int, d []uint64) bool { return len(d) == removed })
	client.gate.open()
	mustFlush(t, p)
	acked, dropped := o.totals()
	if acked+len(dropped) != 20 || len(dropped) != removed {
		t.Fatalf("acked %d dropped %d removed %d", acked, len(dropped), removed)
	}
	// The cancelled events are the newest ones.
	slices.Sort(dropped)
	if dropped[0] != uint64(20-removed) {
		t.Fatalf("dropped %v: not the untaken tail", dropped)
	}
}

func TestCloseWhilePublishing(t *testing.T) {
	slow := &recordingClient{ledger: newLedger(), fail: func(events [][]byte) (int, error) {
		time.Sleep(200 * time.Microsecond) // a slow endpoint, so the queue stays full
		return len(events), nil
	}}
	before := liveHandles.Load()
	p, err := NewPipeline(fastRetries(Config{QueueEvents: 32, BulkMaxSize: 8}), slow)
	if err != nil {
		t.Fatal(err)
	}
	const publishers = 4
	outs := make([]*outcomes, publishers)
	published := make([]int, publishers)
	errs := make([]error, publishers)
	var wg sync.WaitGroup
	for g := range publishers {
		outs[g] = newOutcomes()
		prod := mustProducer(t, p, outs[g].config(g%2 == 0))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				var err error
				if i%2 == 0 {
					err = prod.Publish(context.Background(), event(uint64(i), 40))
				} else {
					_, err = prod.PublishBatch(context.Background(), [][]byte{event(uint64(i), 40)})
				}
				if err != nil {
					errs[g] = err
					return
				}
				published[g]++
			}
		}()
	}
	outs[0].waitUntil(t, "some deliveries", func(acked int, _ []uint64) bool { return acked >= 100 })
	closed := make(chan error, 1)
	go func() { closed <- p.Close(50 * time.Millisecond) }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(patience):
		t.Fatal("Close hung while producers were publishing")
	}
	wg.Wait()
	for g := range publishers {
		if !errors.Is(errs[g], ErrClosed) {
			t.Errorf("publisher %d stopped with %v, want ErrClosed", g, errs[g])
		}
		acked, dropped := outs[g].totals()
		if acked+len(dropped) != published[g] {
			t.Errorf("publisher %d: %d accepted, but %d acked + %d dropped", g, published[g], acked, len(dropped))
		}
	}
	checkHandles(t, before)
}

func TestUseAfterClose(t *testing.T) {
	before := liveHandles.Load()
	client := &recordingClient{ledger: newLedger()}
	p, err := NewPipeline(fastRetries(Config{Mode: LoadBalance}), client)
	if err != nil {
		t.Fatal(err)
	}
	o := newOutcomes()
	open := mustProducer(t, p, o.config(false))
	closed := mustProducer(t, p, ProducerConfig{})
	closed.Close()
	closed.Close()
	ctx := patientContext(t)
	for i := range 10 {
		if err := open.Publish(ctx, event(uint64(i), 10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(time.Second); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if client.closes.Load() == 0 {
		t.Fatal("the client was not closed")
	}
	checkHandles(t, before)
	if acked, _ := o.totals(); acked != 10 {
		t.Fatalf("close did not deliver: acked %d", acked)
	}
	for _, prod := range []*Producer{open, closed} {
		if err := prod.Publish(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
			t.Errorf("Publish: %v", err)
		}
		if err := prod.TryPublish([]byte("x")); !errors.Is(err, ErrClosed) {
			t.Errorf("TryPublish: %v", err)
		}
		if n, err := prod.PublishBatch(ctx, [][]byte{[]byte("x")}); n != 0 || !errors.Is(err, ErrClosed) {
			t.Errorf("PublishBatch: %d, %v", n, err)
		}
		if n, err := prod.PublishPacked(ctx, []byte("xy"), []uint32{1, 1}); n != 0 || !errors.Is(err, ErrClosed) {
			t.Errorf("PublishPacked: %d, %v", n, err)
		}
		if n := prod.Cancel(); n != 0 {
			t.Errorf("Cancel: %d", n)
		}
		if _, err := prod.Counts(); !errors.Is(err, ErrClosed) {
			t.Errorf("Counts: %v", err)
		}
		prod.Close()
	}
	if err := p.Flush(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush: %v", err)
	}
	if _, err := p.NewProducer(ProducerConfig{OnACK: func(int) {}}); !errors.Is(err, ErrClosed) {
		t.Errorf("NewProducer: %v", err)
	}
	if _, err := p.AddClient(&recordingClient{ledger: newLedger()}); !errors.Is(err, ErrClosed) {
		t.Errorf("AddClient: %v", err)
	}
	if err := p.RemoveClient(1); !errors.Is(err, ErrClosed) {
		t.Errorf("RemoveClient: %v", err)
	}
	s, err := p.Stats()
	if err != nil || s.Accepted != 10 || s.Acked != 10 {
		t.Errorf("Stats after Close: %+v, %v", s, err)
	}
	checkHandles(t, before)
}

// asyncRecorder completes batches from a pool of goroutines, in any order.
type asyncRecorder struct {
	recordingClient
	work chan func()
	wg   sync.WaitGroup
	seen atomic.Int64
}

func newAsyncRecorder(l *ledger, workers int) *asyncRecorder {
	c := &asyncRecorder{recordingClient: recordingClient{ledger: l}, work: make(chan func(), 64)}
	for range workers {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for f := range c.work {
				f()
			}
		}()
	}
	return c
}

func (c *asyncRecorder) stop() {
	close(c.work)
	c.wg.Wait()
}

func (c *asyncRecorder) Publish([][]byte) (int, error) {
	return 0, errors.New("conveyor calls PublishAsync on an AsyncClient")
}

func (c *asyncRecorder) PublishAsync(events [][]byte, done func(int, error)) error {
	batch := c.seen.Add(1)
	c.work <- func() {
		n, err := len(events), error(nil)
		switch batch % 5 {
		case 1:
			n, err = len(events)/2, fmt.Errorf("half: %w", ErrRetry)
		case 3:
			n = len(events) + 7 // out of range: counted as a failed publish
		}
		if n <= len(events) {
			c.ledger.record(events[:n])
		}
		done(n, err)
		done(n, err) // ignored
	}
	return nil
}

func TestAsyncClientCompletesFromOtherGoroutines(t *testing.T) {
	l := newLedger()
	logs := &logRecorder{}
	client := newAsyncRecorder(l, 4)
	defer client.stop()
	p := startPipeline(t, fastRetries(Config{Pipelining: 4, BulkMaxSize: 16, MaxRetries: Retries(-1), Logger: logs.log}),
		client)
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))
	ctx := patientContext(t)
	const n = 2000
	for i := 0; i < n; i += 10 {
		batch := make([][]byte, 10)
		for j := range batch {
			batch[j] = event(uint64(i+j), 60)
		}
		if _, err := prod.PublishBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	mustFlush(t, p)
	if acked, dropped := o.totals(); acked != n || len(dropped) != 0 {
		t.Fatalf("acked %d dropped %d", acked, len(dropped))
	}
	delivered, _, bad := l.snapshot()
	if len(bad) > 0 {
		t.Fatal(bad[0])
	}
	for id := range uint64(n) {
		if delivered[id] == 0 {
			t.Fatalf("event %d never published", id)
		}
	}
	if logs.count("called done twice") == 0 {
		t.Error("a second done was not reported")
	}
	s, _ := p.Stats()
	if s.Clients[0].InvalidResults == 0 || s.RetriedBatches == 0 {
		t.Errorf("stats miss the bad completions: %+v", s)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	client := func() Client { return &recordingClient{ledger: newLedger()} }
	cases := []struct {
		name   string
		cfg    Config
		n      int
		target error
		detail string
	}{
		{"negative worker", Config{Worker: -1}, 1, ErrConfig, "`worker`"},
		{"max_retries below -1", Config{MaxRetries: Retries(-2)}, 1, ErrConfig, "`max_retries`"},
		{"negative duration", Config{BackoffInit: -time.Second}, 1, ErrConfig, "`backoff.init`"},
		{"backoff.max below init", Config{BackoffInit: time.Second, BackoffMax: time.Millisecond}, 1, ErrConfig, "backoff.max"},
		{"unknown queue type", Config{QueueType: "disk"}, 1, ErrConfig, "disk"},
		{"unknown mode", Config{Mode: Mode(42)}, 1, ErrConfig, "`mode`"},
		{"single with two clients", Config{Mode: Single}, 2, ErrConfig, "single"},
		{"no clients", Config{}, 0, ErrNoClients, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := liveHandles.Load()
			clients := make([]Client, tc.n)
			for i := range clients {
				clients[i] = client()
			}
			p, err := NewPipeline(tc.cfg, clients...)
			if err == nil {
				p.Close(0)
				t.Fatal("NewPipeline accepted it")
			}
			var e *Error
			if !errors.Is(err, tc.target) || !errors.As(err, &e) || !strings.Contains(e.Message, tc.detail) {
				t.Fatalf("error %q (%#v), want %v mentioning %q", err, err, tc.target, tc.detail)
			}
			checkHandles(t, before)
		})
	}
	before := liveHandles.Load()
	if _, err := NewPipeline(Config{}, client(), nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("a nil client: %v", err)
	}
	checkHandles(t, before)
}

func TestEveryConfigFieldIsAccepted(t *testing.T) {
	cfg := Config{
		Mode: Failover, FailoverPolicy: FailoverOrdered, Worker: 2, MaxRetries: Retries(-1),
		BackoffInit: 1500 * time.Microsecond, BackoffMax: 2 * time.Second, Timeout: 3 * time.Second,
		PublishTimeout: time.Minute, BulkMaxSize: 100, Pipelining: 3, QueueType: "mem", QueueEvents: 500,
		QueueBytes: 1 << 20, FlushMinEvents: 10, FlushTimeout: 2500 * time.Nanosecond, ErrorThreshold: 5,
	}
	want := [][2]string{{"mode", "failover"}, {"failover.policy", "ordered"}, {"worker", "2"}, {"max_retries", "-1"},
		{"backoff.init", "1500us"}, {"backoff.max", "2s"}, {"timeout", "3s"}, {"publish_timeout", "60s"},
		{"bulk_max_size", "100"}, {"pipelining", "3"}, {"queue.type", "mem"}, {"queue.events", "500"},
		{"queue.bytes", "1048576"}, {"queue.flush.min_events", "10"}, {"queue.flush.timeout", "2500ns"},
		{"error_threshold", "5"}}
	if got := cfg.settings(); !slices.Equal(got, want) {
		t.Fatalf("settings\n got %v\nwant %v", got, want)
	}
	if got := (&Config{}).settings(); len(got) != 0 {
		t.Fatalf("zero Config sets %v", got)
	}
	l := newLedger()
	p := startPipeline(t, cfg, &recordingClient{ledger: l}, &recordingClient{ledger: l})
	s, err := p.Stats()
	if err != nil || s.Mode != "failover" || s.Queue.CapacityEvents != 500 || s.Queue.CapacityBytes != 1<<20 {
		t.Fatalf("stats %+v, %v", s, err)
	}
}

func TestAddAndRemoveClients(t *testing.T) {
	l := newLedger()
	first := &recordingClient{ledger: l}
	p := startPipeline(t, fastRetries(Config{Mode: LoadBalance, BulkMaxSize: 4}), first)
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))
	ctx := patientContext(t)

	gotWork := make(chan struct{}, 1)
	second := &recordingClient{ledger: l, fail: func(events [][]byte) (int, error) {
		select {
		case gotWork <- struct{}{}:
		default:
		}
		return len(events), nil
	}}
	handles := liveHandles.Load()
	id, err := p.AddClient(second)
	if err != nil {
		t.Fatal(err)
	}
	// Publish until the new client has taken a batch.
	published := 0
	for waiting := true; waiting; {
		if err := prod.Publish(ctx, event(uint64(published), 20)); err != nil {
			t.Fatal(err)
		}
		published++
		select {
		case <-gotWork:
			waiting = false
		default:
			if published > 1_000_000 {
				t.Fatal("the added client never got work")
			}
		}
	}
	if err := p.RemoveClient(id); err != nil {
		t.Fatal(err)
	}
	if second.closes.Load() == 0 || liveHandles.Load() != handles {
		t.Fatalf("removed client: %d closes, %d handles (want >0, %d)", second.closes.Load(), liveHandles.Load(), handles)
	}
	if err := p.RemoveClient(id); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("removing it again: %v", err)
	}
	if err := p.RemoveClient(1); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("removing the last client: %v", err)
	}
	for range 100 {
		if err := prod.Publish(ctx, event(uint64(published), 20)); err != nil {
			t.Fatal(err)
		}
		published++
	}
	mustFlush(t, p)
	delivered, _, _ := l.snapshot()
	if acked, _ := o.totals(); acked != published || len(delivered) != published {
		t.Fatalf("published %d, acked %d, delivered %d", published, acked, len(delivered))
	}
	single := startPipeline(t, Config{}, &recordingClient{ledger: l})
	if _, err := single.AddClient(&recordingClient{ledger: l}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("AddClient in mode single: %v", err)
	}
	if _, err := single.AddClient(nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("AddClient(nil): %v", err)
	}
}

// reentrantClient calls back into the pipeline from its Publish.
type reentrantClient struct {
	recordingClient
	p       *Pipeline
	results chan [2]error
}

func (c *reentrantClient) Publish(events [][]byte) (int, error) {
	select {
	case c.results <- [2]error{c.p.Flush(context.Background()), c.p.RemoveClient(1)}:
	default:
	}
	return c.recordingClient.Publish(events)
}

func TestCallsFromCallbacksDoNotDeadlock(t *testing.T) {
	client := &reentrantClient{recordingClient: recordingClient{ledger: newLedger()}, results: make(chan [2]error, 1)}
	p := startPipeline(t, fastRetries(Config{Mode: LoadBalance}), client)
	client.p = p
	fromACK := make(chan [2]error, 1)
	var follow *Producer
	var once sync.Once
	o := newOutcomes()
	prod := mustProducer(t, p, ProducerConfig{OnACK: func(n int) {
		once.Do(func() {
			// Publishing from a callback is served; waiting for the pipeline is refused.
			fromACK <- [2]error{p.Close(time.Second), follow.Publish(context.Background(), event(1000, 8))}
			if err := p.Flush(context.Background()); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("Flush from OnACK: %v", err)
			}
		})
		o.onACK(n)
	}})
	follow = mustProducer(t, p, o.config(false))
	if err := prod.Publish(patientContext(t), event(1, 8)); err != nil {
		t.Fatal(err)
	}
	r := <-fromACK
	if !errors.Is(r[0], ErrInvalidArgument) || r[1] != nil {
		t.Fatalf("from OnACK: Close %v, Publish %v", r[0], r[1])
	}
	c := <-client.results
	if !errors.Is(c[0], ErrInvalidArgument) || !errors.Is(c[1], ErrInvalidArgument) {
		t.Fatalf("from a client: Flush %v, RemoveClient %v", c[0], c[1])
	}
	mustFlush(t, p)
	if acked, _ := o.totals(); acked != 2 {
		t.Fatalf("acked %d, want 2", acked)
	}
}

// Callbacks calling the pipeline while another goroutine closes it must not hang
// the close.
func TestCallbacksDuringClose(t *testing.T) {
	for round := range 5 {
		client := &recordingClient{ledger: newLedger(), fail: func(events [][]byte) (int, error) {
			time.Sleep(100 * time.Microsecond)
			return len(events), nil
		}}
		before := liveHandles.Load()
		p, err := NewPipeline(fastRetries(Config{Mode: LoadBalance, BulkMaxSize: 4, QueueEvents: 64}), client)
		if err != nil {
			t.Fatal(err)
		}
		var calls atomic.Int64
		acks := make(chan struct{}, 1)
		prod := mustProducer(t, p, ProducerConfig{OnACK: func(int) {
			calls.Add(1)
			_, _ = p.Stats()
			if prod, err := p.NewProducer(ProducerConfig{}); err == nil {
				prod.Close()
			}
			_ = p.Flush(context.Background())
			_, _ = p.AddClient(&recordingClient{ledger: newLedger()})
			select {
			case acks <- struct{}{}:
			default:
			}
		}})
		for i := range 200 {
			if err := prod.TryPublish(event(uint64(i), 8)); err != nil && !errors.Is(err, ErrFull) {
				t.Fatal(err)
			}
		}
		<-acks
		closed := make(chan error, 1)
		go func() { closed <- p.Close(time.Second) }()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(patience):
			t.Fatalf("round %d: Close hung while ACK callbacks called the pipeline", round)
		}
		checkHandles(t, before)
	}
}

func TestStatsDecodeEveryField(t *testing.T) {
	logs := &logRecorder{}
	flaky := &recordingClient{ledger: newLedger(), connect: func() error { return errors.New("refused") }}
	p := startPipeline(t, fastRetries(Config{Mode: Failover, Logger: logs.log}), &recordingClient{ledger: newLedger()}, flaky)
	prod := mustProducer(t, p, ProducerConfig{})
	if err := prod.Publish(patientContext(t), event(1, 10)); err != nil {
		t.Fatal(err)
	}
	mustFlush(t, p)
	raw := statsJSONOf(t, p)
	// Decoding conveyor's JSON strictly: a field the Go structs do not know fails.
	var top struct {
		Stats
		Clients []json.RawMessage `json:"clients"`
	}
	strictDecode(t, raw, &top)
	if len(top.Clients) != 2 {
		t.Fatalf("%d clients in %s", len(top.Clients), raw)
	}
	for _, c := range top.Clients {
		var cs clientStatsJSON
		strictDecode(t, c, &cs)
	}
	s, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Accepted != 1 || s.Acked != 1 || len(s.Clients) != 2 || s.Clients[0].ID != 1 || s.Clients[1].ID != 2 {
		t.Fatalf("stats %+v", s)
	}
	if logs.count("pipeline started") == 0 {
		t.Errorf("conveyor's own log messages did not reach the Logger: %q", logs.messages)
	}
}

func statsJSONOf(t *testing.T, p *Pipeline) []byte {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p.mu.RLock()
	defer p.mu.RUnlock()
	raw, err := p.statsJSON()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func strictDecode(t *testing.T, raw []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %s into %T: %v", raw, v, err)
	}
}

func TestProducerCloseUnblocksPublish(t *testing.T) {
	client := newBlockingClient()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 4, BulkMaxSize: 1}), client)
	defer client.gate.open()
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))
	accepted := fillQueue(t, prod) + fillStage(t, prod)
	errc := make(chan error, 2)
	go func() { errc <- prod.Publish(context.Background(), event(100, 8)) }()
	go func() {
		_, err := prod.PublishBatch(context.Background(), [][]byte{event(101, 8)})
		errc <- err
	}()
	closed := make(chan struct{})
	go func() {
		prod.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(patience):
		t.Fatal("Producer.Close waited for publishes blocked on a full queue")
	}
	for range 2 {
		select {
		case err := <-errc:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("a publish blocked during Close returned %v", err)
			}
		case <-time.After(patience):
			t.Fatal("a publish stayed blocked after Close")
		}
	}
	// The events accepted before Close are still delivered and reported.
	client.gate.open()
	mustFlush(t, p)
	if acked, _ := o.totals(); acked != accepted {
		t.Fatalf("acked %d of %d after the producer closed", acked, accepted)
	}
}

// stallingAsync takes batches and never completes them, until told to complete
// them all, late.
type stallingAsync struct {
	recordingClient
	mu      sync.Mutex
	pending []func()
	taken   chan struct{}
}

func (c *stallingAsync) PublishAsync(events [][]byte, done func(int, error)) error {
	c.mu.Lock()
	c.pending = append(c.pending, func() { done(len(events), nil) })
	c.mu.Unlock()
	select {
	case c.taken <- struct{}{}:
	default:
	}
	return nil
}

func (c *stallingAsync) completeAll() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, done := range c.pending {
		done()
	}
	return len(c.pending)
}

func TestAsyncBatchesPendingAtCloseAreDroppedAndLateCompletionsIgnored(t *testing.T) {
	logs := &logRecorder{}
	client := &stallingAsync{recordingClient: recordingClient{ledger: newLedger()}, taken: make(chan struct{}, 1)}
	before := liveHandles.Load()
	p, err := NewPipeline(fastRetries(Config{Pipelining: 2, BulkMaxSize: 4, Logger: logs.log}), client)
	if err != nil {
		t.Fatal(err)
	}
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(true))
	for i := range 10 {
		if err := prod.Publish(patientContext(t), event(uint64(i), 8)); err != nil {
			t.Fatal(err)
		}
	}
	<-client.taken
	start := time.Now()
	if err := p.Close(50 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Close took %v with batches that never complete", d)
	}
	checkHandles(t, before)
	acked, dropped := o.totals()
	if acked != 0 || len(dropped) != 10 {
		t.Fatalf("acked %d, dropped %d: close must drop (and report) what was never completed", acked, len(dropped))
	}
	// The client's late answers reach a freed client: conveyor ignores them.
	if n := client.completeAll(); n == 0 {
		t.Fatal("no batch was pending")
	}
	if acked, _ := o.totals(); acked != 0 {
		t.Fatalf("a late completion was counted: acked %d", acked)
	}
}

// countingClient only counts: AllocsPerRun counts the allocations of every goroutine,
// also those of the callbacks running meanwhile on conveyor's threads.
type countingClient struct{ events atomic.Int64 }

func (c *countingClient) Connect(time.Duration) error { return nil }
func (c *countingClient) Close() error                { return nil }
func (c *countingClient) Publish(events [][]byte) (int, error) {
	c.events.Add(int64(len(events)))
	return len(events), nil
}

func TestPublishingAllocatesNothingPerCall(t *testing.T) {
	p := startPipeline(t, Config{QueueEvents: 1 << 16, BulkMaxSize: 1024}, &countingClient{})
	prod := mustProducer(t, p, ProducerConfig{OnACK: func(int) {}})
	direct := mustProducer(t, p, ProducerConfig{OnACK: func(int) {}, Linger: NoLinger})
	ctx := patientContext(t)
	payload := make([]byte, 100)
	for _, prod := range []*Producer{prod, direct} {
		if allocs := testing.AllocsPerRun(2000, func() {
			if err := prod.Publish(ctx, payload); err != nil {
				t.Fatal(err)
			}
		}); allocs != 0 {
			t.Errorf("Publish (staged: %v) allocates %.2f times per call", prod.stage != nil, allocs)
		}
	}
	batch := make([][]byte, 64)
	for i := range batch {
		batch[i] = payload
	}
	if raceEnabled {
		t.Log("PublishBatch's allocations are not checked under the race detector")
	} else if allocs := testing.AllocsPerRun(200, func() {
		if _, err := prod.PublishBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("PublishBatch allocates %.2f times per call", allocs)
	}
	mustFlush(t, p)
}
