package conveyor

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// patience bounds every wait in these tests: reaching it is a failure (a hang), never
// a way to let time pass.
const patience = 60 * time.Second

func patientContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

// event is a payload carrying its id (and, for some tests, the producer's) in its
// first 8 bytes, padded to size.
func event(id uint64, size int) []byte {
	b := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(b, id)
	for i := 8; i < len(b); i++ {
		b[i] = byte(id + uint64(i))
	}
	return b
}

func eventID(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// checkPayload fails unless b is exactly what event(eventID(b), len(b)) built.
func checkPayload(b []byte) error {
	if len(b) < 8 {
		return fmt.Errorf("payload of %d bytes", len(b))
	}
	id := eventID(b)
	for i := 8; i < len(b); i++ {
		if b[i] != byte(id+uint64(i)) {
			return fmt.Errorf("event %d: byte %d is %d, want %d", id, i, b[i], byte(id+uint64(i)))
		}
	}
	return nil
}

// seed returns the random seed of a randomised test: CONVEYOR_GO_SEED replays one.
func seed(t *testing.T) uint64 {
	t.Helper()
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("CONVEYOR_GO_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CONVEYOR_GO_SEED=%q: %v", v, err)
		}
		s = n
	}
	t.Logf("seed %d (replay with CONVEYOR_GO_SEED=%d)", s, s)
	return s
}

// ledger records what clients reported as published, event by event.
type ledger struct {
	mu        sync.Mutex
	delivered map[uint64]int
	order     []uint64
	bad       []error
}

func newLedger() *ledger { return &ledger{delivered: make(map[uint64]int)} }

func (l *ledger) record(events [][]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range events {
		if err := checkPayload(e); err != nil {
			l.bad = append(l.bad, err)
			continue
		}
		id := eventID(e)
		l.delivered[id]++
		l.order = append(l.order, id)
	}
}

func (l *ledger) snapshot() (map[uint64]int, []uint64, []error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := make(map[uint64]int, len(l.delivered))
	for k, v := range l.delivered {
		d[k] = v
	}
	return d, append([]uint64(nil), l.order...), append([]error(nil), l.bad...)
}

// recordingClient delivers to a ledger; fail, when set, decides each batch's outcome
// (how many leading events go out, and the error).
type recordingClient struct {
	ledger  *ledger
	fail    func(events [][]byte) (int, error)
	connect func() error
	closes  atomic.Int64
}

func (c *recordingClient) Connect(time.Duration) error {
	if c.connect != nil {
		return c.connect()
	}
	return nil
}

func (c *recordingClient) Close() error {
	c.closes.Add(1)
	return nil
}

func (c *recordingClient) Publish(events [][]byte) (int, error) {
	n, err := len(events), error(nil)
	if c.fail != nil {
		n, err = c.fail(events)
	}
	if n >= 0 && n <= len(events) {
		c.ledger.record(events[:n])
	}
	return n, err
}

// outcomes collects a producer's ACK counts and dropped payloads.
type outcomes struct {
	mu      sync.Mutex
	acked   int
	dropped []uint64
	changed chan struct{}
}

func newOutcomes() *outcomes { return &outcomes{changed: make(chan struct{}, 1)} }

func (o *outcomes) config(guaranteed bool) ProducerConfig {
	return ProducerConfig{OnACK: o.onACK, OnDrop: o.onDrop, Guaranteed: guaranteed}
}

func (o *outcomes) onACK(n int) {
	o.mu.Lock()
	o.acked += n
	o.mu.Unlock()
	o.notify()
}

func (o *outcomes) onDrop(events [][]byte) {
	o.mu.Lock()
	for _, e := range events {
		o.dropped = append(o.dropped, eventID(e))
	}
	o.mu.Unlock()
	o.notify()
}

func (o *outcomes) notify() {
	select {
	case o.changed <- struct{}{}:
	default:
	}
}

func (o *outcomes) totals() (int, []uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.acked, append([]uint64(nil), o.dropped...)
}

// waitUntil waits for cond, re-checking whenever o reports a change.
func (o *outcomes) waitUntil(t *testing.T, what string, cond func(acked int, dropped []uint64) bool) {
	t.Helper()
	deadline := time.After(patience)
	for {
		if cond(o.totals()) {
			return
		}
		select {
		case <-o.changed:
		case <-deadline:
			acked, dropped := o.totals()
			t.Fatalf("waiting for %s: still not there after %v (acked %d, dropped %d)", what, patience, acked, len(dropped))
		}
	}
}

// logRecorder is a Config.Logger keeping every message.
type logRecorder struct {
	mu       sync.Mutex
	messages []string
}

func (l *logRecorder) log(level LogLevel, msg string) {
	l.mu.Lock()
	l.messages = append(l.messages, level.String()+": "+msg)
	l.mu.Unlock()
}

func (l *logRecorder) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.messages {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

// fastRetries makes failures cheap to retry in tests.
func fastRetries(cfg Config) Config {
	cfg.BackoffInit = 10 * time.Microsecond
	cfg.BackoffMax = time.Millisecond
	if cfg.FlushMinEvents == 0 {
		cfg.FlushMinEvents = 1
	}
	return cfg
}

// startPipeline builds a pipeline that the test closes at its end; after every
// pipeline of the test is closed, every cgo handle they created must be deleted.
func startPipeline(t *testing.T, cfg Config, clients ...Client) *Pipeline {
	t.Helper()
	if _, checked := handleChecks.LoadOrStore(t, true); !checked {
		before := liveHandles.Load()
		// Registered before any Close below, so it runs after all of them.
		t.Cleanup(func() {
			handleChecks.Delete(t)
			checkHandles(t, before)
		})
	}
	p, err := NewPipeline(cfg, clients...)
	if err != nil {
		t.Fatalf("NewPipeline: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(5 * time.Second); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// handleChecks holds the tests that already check their handles at the end.
var handleChecks sync.Map

// checkHandles fails unless the live handles are back to before.
func checkHandles(t *testing.T, before int64) {
	t.Helper()
	if now := liveHandles.Load(); now != before {
		t.Errorf("%d cgo handles leaked (before %d, now %d)", now-before, before, now)
	}
}

func mustProducer(t *testing.T, p *Pipeline, cfg ProducerConfig) *Producer {
	t.Helper()
	prod, err := p.NewProducer(cfg)
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	return prod
}

func mustFlush(t *testing.T, p *Pipeline) {
	t.Helper()
	if err := p.Flush(patientContext(t)); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func newRand(s uint64) *rand.Rand { return rand.New(rand.NewPCG(s, s^0x9e3779b97f4a7c15)) }

// gate blocks clients until it is opened; opening twice is harmless.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate() *gate  { return &gate{ch: make(chan struct{})} }
func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }
func (g *gate) wait() { <-g.ch }

// repeatInBackground calls step on a goroutine of its own, again and again, until step
// returns false or stop is called; stop returns once the goroutine has ended.
func repeatInBackground(step func() bool) (stop func()) {
	quit, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		for {
			select {
			case <-quit:
				return
			default:
			}
			if !step() {
				return
			}
		}
	}()
	return func() {
		close(quit)
		<-ended
	}
}
