package conveyor

// #include "shims.h"
import "C"

import (
	"context"
	"runtime"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"time"
)

// Pipeline is a running pipeline: a bounded queue, the clients it delivers to, the
// workers, retries and accounting. All methods are safe for concurrent use. Close it
// when done: that stops conveyor's threads and frees the pipeline and its producers.
type Pipeline struct {
	// mu guards c: every call into the C pipeline holds it for reading; freeing it
	// takes it for writing, so no call can run on a freed pipeline.
	mu  sync.RWMutex
	c   *C.conveyor_pipeline
	log *logSink
	// logHandle is the Logger's handle given to C (0 without a Logger); conveyor
	// never frees it, so it is deleted after the pipeline is freed.
	logHandle cgo.Handle
	// final is the last stats snapshot, taken before the pipeline was freed.
	final *Stats
	// closing is set when Close starts: publishes fail from then on, and Close takes
	// the producers' stages over.
	closing atomic.Bool
	// queueEvents and queueBytes are the queue's bounds as configured (0: default),
	// which bound the producers' stages.
	queueEvents, queueBytes int
	// stagedDrops counts the staged events the binding gave up on, all producers.
	stagedDrops atomic.Uint64
	// stagesMu lets one call at a time (Stats) hold every producer's stage lock.
	stagesMu sync.Mutex

	producersMu sync.Mutex
	producers   map[*Producer]struct{}
}

// NewPipeline builds and starts a pipeline delivering to clients (at least one)
// according to cfg. The pipeline owns the clients from then on: it calls their
// Close before it lets go of them.
func NewPipeline(cfg Config, clients ...Client) (*Pipeline, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sink := &logSink{fn: cfg.Logger}
	// handles[i] is client i's cgo handle, 0 for a SinkClient (conveyor serves
	// those directly).
	handles := make([]C.uintptr_t, len(clients))
	asyncs := make([]C.int, len(clients))
	deleteFrom := func(i int) {
		for _, h := range handles[i:] {
			if h != 0 {
				deleteHandle(cgo.Handle(h))
			}
		}
	}
	for i, c := range clients {
		if _, ok := c.(*sinkClient); ok {
			continue
		}
		h, async, err := registerClient(c, sink)
		if err != nil {
			deleteFrom(0)
			return nil, err
		}
		handles[i], asyncs[i] = h, async
	}
	cc, err := cfg.newCConfig()
	if err != nil {
		deleteFrom(0)
		return nil, err
	}
	p := &Pipeline{log: sink, producers: make(map[*Producer]struct{}), queueEvents: cfg.QueueEvents,
		queueBytes: cfg.QueueBytes}
	// From here on the C config owns every handle it took: conveyor_config_free
	// releases them through free_userdata.
	fail := func(err error, untaken int) (*Pipeline, error) {
		C.conveyor_config_free(cc)
		deleteFrom(untaken)
		if p.logHandle != 0 {
			deleteHandle(p.logHandle)
		}
		return nil, err
	}
	if cfg.Logger != nil {
		p.logHandle = newHandle(sink)
		if r := C.conveyor_go_config_set_logger(cc, C.uintptr_t(p.logHandle)); r != C.CONVEYOR_OK {
			return fail(lastError(r), 0)
		}
	}
	for i, h := range handles {
		if sc, ok := clients[i].(*sinkClient); ok {
			if err := addSinkClient(sc, func(s *C.conveyor_sink) C.conveyor_result {
				return C.conveyor_config_add_sink(cc, s)
			}); err != nil {
				return fail(err, i+1)
			}
			continue
		}
		if r := C.conveyor_go_config_add_client(cc, h, asyncs[i]); r != C.CONVEYOR_OK {
			return fail(lastError(r), i)
		}
	}
	if r := C.conveyor_pipeline_new(cc, &p.c); r != C.CONVEYOR_OK {
		return fail(lastError(r), len(handles))
	}
	return p, nil
}

// addSinkClient lends the C sink behind sc to add, which takes a reference of its
// own. The caller is locked to its OS thread.
func addSinkClient(sc *sinkClient, add func(*C.conveyor_sink) C.conveyor_result) error {
	s, err := sc.lend()
	if err != nil {
		return err
	}
	defer s.giveBack()
	if r := add(s.c); r != C.CONVEYOR_OK {
		return lastError(r)
	}
	return nil
}

// Close stops accepting events, hands the producers' staged events to conveyor,
// delivers what it can within timeout, drops the rest (reporting each dropped event
// through its producer's OnDrop; staged events that never found room in the queue
// last, after every other outcome), closes the clients, stops conveyor's threads,
// then frees every producer still open and the pipeline. It returns within timeout
// plus one client call in progress. Closing again does nothing and returns nil.
// Called from a conveyor callback it returns an error matching ErrInvalidArgument
// and does nothing (it would wait for itself).
func (p *Pipeline) Close(timeout time.Duration) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := time.Now()
	p.mu.RLock()
	if p.c == nil {
		p.mu.RUnlock()
		return nil
	}
	if inProducerCallback() {
		p.mu.RUnlock()
		return errInCallback("Close")
	}
	// A flush that does not wait refuses exactly where close would: from a callback.
	if r := C.conveyor_pipeline_flush(p.c, 0); r == C.CONVEYOR_ERR_INVALID_ARGUMENT {
		err := lastError(r)
		p.mu.RUnlock()
		return err
	}
	p.closing.Store(true)
	p.mu.RUnlock()
	// No lock of the pipeline is held while the stages are handed over (for up to
	// the whole timeout) nor while drops are reported (OnDrop may call Stats).
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	for _, prod := range p.stagedProducers() {
		// Once the time is up each stage still gets one try (what fits now).
		_ = prod.handOverStage(ctx, "close", watchNothing)
	}
	cancel()
	p.mu.RLock()
	if p.c == nil { // another Close finished meanwhile
		p.mu.RUnlock()
		return nil
	}
	var err error
	if r := C.conveyor_pipeline_close(p.c, durationMs(timeout-time.Since(start))); r != C.CONVEYOR_OK {
		err = lastError(r)
	}
	var left []producerDrop
	if err == nil {
		for _, prod := range p.stagedProducers() {
			left = append(left, producerDrop{prod, prod.takeStage("the pipeline closed before it was delivered")})
		}
	}
	p.mu.RUnlock()
	reportAll(left)
	if err != nil {
		return err
	}
	p.release()
	return nil
}

// producerDrop is a stageDrop and the producer to report it to.
type producerDrop struct {
	prod *Producer
	drop stageDrop
}

func reportAll(drops []producerDrop) {
	for _, d := range drops {
		d.prod.report(d.drop)
	}
}

// stagedProducers lists the open producers that have a stage.
func (p *Pipeline) stagedProducers() []*Producer {
	p.producersMu.Lock()
	defer p.producersMu.Unlock()
	var staged []*Producer
	for prod := range p.producers {
		if prod.stage != nil {
			staged = append(staged, prod)
		}
	}
	return staged
}

// handOverStages hands every producer's staged events to conveyor, waiting for room
// until ctx ends or w says stop.
func (p *Pipeline) handOverStages(ctx context.Context, op string, w watch) error {
	for _, prod := range p.stagedProducers() {
		if err := prod.handOverStage(ctx, op, w); err != nil {
			return err
		}
	}
	return nil
}

// takeStage gives up on what is left in the stage, to be reported through OnDrop.
func (p *Producer) takeStage(reason string) stageDrop {
	s := p.stage
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takeOut(reason)
}

// release frees a closed pipeline and its remaining producers, once.
func (p *Pipeline) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.c == nil {
		return
	}
	// Close took the stages over: this hands nothing over and finds nothing to drop.
	if s, _, err := p.statsWithStages(); err == nil {
		p.final = &s
	}
	p.producersMu.Lock()
	producers := p.producers
	p.producers = nil
	p.producersMu.Unlock()
	for prod := range producers {
		prod.free()
	}
	C.conveyor_pipeline_free(p.c)
	p.c = nil
	if p.logHandle != 0 {
		deleteHandle(p.logHandle)
	}
}

// Flush hands the producers' staged events to conveyor (waiting for room as a
// publish would), then waits until every event accepted so far has had its outcome
// reported (its OnACK or OnDrop returned), or until ctx ends (an error matching
// ctx.Err(); delivery goes on). Called from a conveyor callback it returns an error
// matching ErrInvalidArgument.
func (p *Pipeline) Flush(ctx context.Context) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p.mu.RLock()
	if p.c == nil {
		p.mu.RUnlock()
		return errPipelineClosed()
	}
	if inProducerCallback() {
		p.mu.RUnlock()
		return errInCallback("Flush")
	}
	// Refused from a callback (or once closed) before it waits for anything.
	r := C.conveyor_pipeline_flush(p.c, 0)
	var err error
	if r != C.CONVEYOR_OK && r != C.CONVEYOR_ERR_TIMEOUT {
		err = lastError(r)
	}
	p.mu.RUnlock()
	if err != nil {
		return err
	}
	if err := p.handOverStages(ctx, "flush", watchClosing); err != nil {
		return err
	}
	relays := p.enterRelays()
	err = p.waitFlushed(ctx)
	for _, box := range relays {
		box.leaveRelay(err == nil)
	}
	return err
}

// waitFlushed waits until every event accepted so far has had its outcome reported
// by conveyor, in slices (see blockSlice).
func (p *Pipeline) waitFlushed(ctx context.Context) error {
	for {
		ms, err := waitSlice(ctx, "flush")
		if err != nil {
			return err
		}
		p.mu.RLock()
		if p.c == nil {
			p.mu.RUnlock()
			return errPipelineClosed()
		}
		r := C.conveyor_pipeline_flush(p.c, ms)
		if r != C.CONVEYOR_OK && r != C.CONVEYOR_ERR_TIMEOUT {
			err = lastError(r)
		}
		p.mu.RUnlock()
		if r != C.CONVEYOR_ERR_TIMEOUT {
			return err
		}
	}
}

// NewProducer creates a producer: the handle events are published through, and
// whose callbacks hear about their outcomes. Close it when done (Pipeline.Close
// closes the producers still open).
func (p *Pipeline) NewProducer(cfg ProducerConfig) (*Producer, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.c == nil || p.closing.Load() {
		return nil, errPipelineClosed()
	}
	prod := &Producer{pipeline: p, dropOnCancel: cfg.DropOnCancel}
	var cb *C.conveyor_go_producer_callbacks
	if cfg.OnACK != nil || cfg.OnDrop != nil {
		prod.box = &producerBox{onACK: cfg.OnACK, onDrop: cfg.OnDrop, log: p.log}
		cb = newProducerCallbacks(prod.box)
	}
	if cfg.Linger >= 0 {
		prod.stage = newStage(prod, cfg.Linger, p.queueEvents, p.queueBytes)
	}
	r := C.conveyor_go_producer_new(p.c, cb, cbool(cfg.OnACK != nil), cbool(cfg.OnDrop != nil),
		C.uint32_t(cbool(cfg.Guaranteed)), C.uint32_t(cbool(cfg.DropOnCancel)), &prod.c)
	if r != C.CONVEYOR_OK {
		err := lastError(r)
		if prod.box != nil {
			freeProducerCallbacks(prod.box)
		}
		return nil, err
	}
	p.producersMu.Lock()
	p.producers[prod] = struct{}{}
	p.producersMu.Unlock()
	return prod, nil
}

// enterRelays has the dispatcher relay the ACKs of the open producers during a
// Flush (see ackrelay.go).
func (p *Pipeline) enterRelays() []*producerBox {
	p.producersMu.Lock()
	defer p.producersMu.Unlock()
	var relays []*producerBox
	for prod := range p.producers {
		if prod.box.enterRelay() {
			relays = append(relays, prod.box)
		}
	}
	return relays
}

// forget drops a producer closed on its own from the set Close frees.
func (p *Pipeline) forget(prod *Producer) {
	p.producersMu.Lock()
	delete(p.producers, prod)
	p.producersMu.Unlock()
}

// AddClient adds a client to the running pipeline (modes Failover and LoadBalance)
// and returns its id for RemoveClient.
func (p *Pipeline) AddClient(c Client) (uint64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.c == nil {
		return 0, errPipelineClosed()
	}
	if sc, ok := c.(*sinkClient); ok {
		var id C.uint64_t
		err := addSinkClient(sc, func(s *C.conveyor_sink) C.conveyor_result {
			return C.conveyor_pipeline_add_sink(p.c, s, &id)
		})
		return uint64(id), err
	}
	h, async, err := registerClient(c, p.log)
	if err != nil {
		return 0, err
	}
	var id C.uint64_t
	if r := C.conveyor_go_pipeline_add_client(p.c, h, async, &id); r != C.CONVEYOR_OK {
		err := lastError(r)
		deleteHandle(cgo.Handle(h))
		return 0, err
	}
	return uint64(id), nil
}

// RemoveClient removes a client from the running pipeline; its batches go to the
// other clients, and its Close has been called when RemoveClient returns. The last
// client cannot be removed (ErrInvalidArgument), nor can a client from inside a client
// callback.
func (p *Pipeline) RemoveClient(id uint64) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.c == nil {
		return errPipelineClosed()
	}
	if r := C.conveyor_pipeline_remove_client(p.c, C.uint64_t(id)); r != C.CONVEYOR_OK {
		return lastError(r)
	}
	return nil
}

// Stats returns a snapshot of every counter. It first hands the producers' staged
// events to conveyor, without waiting for room; what is still staged then (the queue
// was full) is counted in Staged, and in Accepted and InFlight. Staged events the
// binding gave up on (at Close) count in Accepted and Dropped. After Close it
// returns the final snapshot, taken when the pipeline was freed.
func (p *Pipeline) Stats() (Stats, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p.mu.RLock()
	if p.c == nil {
		defer p.mu.RUnlock()
		if p.final != nil {
			return *p.final, nil
		}
		return Stats{}, errPipelineClosed()
	}
	s, drops, err := p.statsWithStages()
	p.mu.RUnlock()
	reportAll(drops)
	return s, err
}

// statsWithStages is statsOf with the producers' stages, handed over first without
// waiting: it holds every stage's lock while it reads conveyor's counters, so that
// no event is counted in both or in neither. A failed hand-over comes back as drops
// to report once the caller released p.mu. The caller holds p.mu and is locked to
// its OS thread.
func (p *Pipeline) statsWithStages() (Stats, []producerDrop, error) {
	p.stagesMu.Lock()
	defer p.stagesMu.Unlock()
	producers := p.stagedProducers()
	var drops []producerDrop
	var staged uint64
	for _, prod := range producers {
		s := prod.stage
		s.mu.Lock()
		if drop, _ := s.handOver(0); drop.events != nil {
			drops = append(drops, producerDrop{prod, drop})
		}
		staged += uint64(s.n - s.head)
	}
	st, err := p.statsOf()
	given := p.stagedDrops.Load()
	for _, prod := range producers {
		prod.stage.mu.Unlock()
	}
	if err != nil {
		return Stats{}, drops, err
	}
	st.Staged = staged
	st.Accepted += staged + given
	st.InFlight += staged
	st.Dropped += given
	return st, drops, nil
}

func errPipelineClosed() error { return goError(ErrClosed, "the pipeline is closed") }

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// durationMs converts a timeout for C, rounding up so that a short positive timeout
// still waits; negative means zero.
func durationMs(d time.Duration) C.uint64_t {
	if d <= 0 {
		return 0
	}
	return C.uint64_t((d + time.Millisecond - 1) / time.Millisecond)
}

// blockSlice is the longest single wait in C of a call that takes a context: between
// slices the call checks ctx and whether its handle was closed, so cancellation and
// Close take effect within one slice. Waking from a slice costs one cgo call.
const blockSlice = 5 * time.Millisecond

// waitSlice returns how long the next wait in C may last, or ctx's error when it
// ended.
func waitSlice(ctx context.Context, op string) (C.uint64_t, error) {
	if done := ctx.Done(); done != nil {
		select {
		case <-done:
			return 0, contextError(op, ctx.Err())
		default:
		}
	}
	slice := blockSlice
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline)
		if left <= 0 {
			return 0, contextError(op, context.DeadlineExceeded)
		}
		slice = min(slice, left)
	}
	return durationMs(slice), nil
}

func errInCallback(op string) error {
	return goError(ErrInvalidArgument, "%s cannot be called from a producer callback", op)
}
