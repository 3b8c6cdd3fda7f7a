package conveyor

// /* These calls never call back into Go on the calling thread (conveyor runs
//    callbacks on its own threads) and keep no pointer they are given: with both
//    directives an event passed to Publish need not escape to the heap. */
// #cgo noescape conveyor_producer_try_publish
// #cgo nocallback conveyor_producer_try_publish
// #cgo noescape conveyor_producer_publish
// #cgo nocallback conveyor_producer_publish
// #cgo noescape conveyor_producer_publish_batch
// #cgo nocallback conveyor_producer_publish_batch
// #cgo noescape conveyor_producer_publish_packed
// #cgo nocallback conveyor_producer_publish_packed
// #cgo nocallback conveyor_go_producer_in_callback
// #include "shims.h"
import "C"

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// ProducerConfig is how a producer hears about its events, and how long its events
// may wait to be handed to conveyor together (Linger). The callbacks run one at a
// time, once per ACK round or less often (never per event), on the pipeline's
// dispatcher thread; OnACK also on a goroutine the binding runs for the producer, for
// ACKs that arrive during a PublishBatch or PublishPacked call (delivered while the
// call waits and once it returns, so that conveyor's threads need not call into Go
// meanwhile), and on
// the goroutine of a Flush that waits for them; OnDrop also on the goroutine of the
// call that gave up on staged events (Cancel, Pipeline.Close). They may publish, but
// must not call Pipeline.Flush or Pipeline.Close (those return ErrInvalidArgument
// there). A panic in a callback is recovered and logged; the outcome still counts
// as reported.
type ProducerConfig struct {
	// OnACK: n more of this producer's events were delivered, in publish order.
	OnACK func(n int)
	// OnDrop: conveyor gave up on these events (a dead-letter hook). The views are
	// valid only during the call: copy what you keep.
	OnDrop func(events [][]byte)
	// Guaranteed: never drop these events for delivery failures; retry until
	// delivered or until the pipeline closes.
	Guaranteed bool
	// DropOnCancel: Cancel removes this producer's events no client has taken yet
	// (reported through OnDrop) instead of delivering them.
	DropOnCancel bool
	// Linger is the longest an event published with Publish may wait in the
	// producer's stage before it is handed to conveyor. Events published one at a
	// time while others came less than Linger before are copied into the stage and
	// handed over together, with one cgo call per group (256 events or 32 KiB)
	// instead of one per event; an event published after a quiet spell of Linger
	// or more is handed over at once. A staged event is accepted (Publish returned
	// nil) and gets its outcome like any other. Zero means DefaultLinger (1 ms);
	// NoLinger (negative) turns the stage off. It does not apply to the producer of
	// a PipelineSink, whose writes go to conveyor directly.
	Linger time.Duration
}

// producerBox is what a cgo handle of a producer's callbacks refers to.
type producerBox struct {
	onACK  func(int)
	onDrop func([][]byte)
	log    *logSink
	// callbacks is held while a callback runs, so that the drops the binding reports
	// itself never overlap the dispatcher's callbacks of the producer.
	callbacks sync.Mutex
	// views is reused by every OnDrop call: callbacks run one at a time.
	views [][]byte
	// handle is the box's own cgo handle. memory is the C userdata holding it and
	// the ACK relay (see ackrelay.go), kept alive by refs; wake wakes the acker.
	handle       C.uintptr_t
	memory       *C.conveyor_go_producer_callbacks
	relay        *atomic.Uint64
	refs         atomic.Int32
	wake         chan struct{}
	ackerStarted atomic.Bool
}

// Producer publishes events into a pipeline. All methods are safe for concurrent use.
// Every event a publish call accepted gets exactly one outcome, OnACK or OnDrop, also
// after the producer is closed.
type Producer struct {
	// mu guards c as Pipeline.mu guards its handle; publishing holds it for reading
	// only for one bounded wait at a time, so Close never waits long. With a stage,
	// c is also stable under stage.mu: it is freed only under both.
	mu       sync.RWMutex
	c        *C.conveyor_producer
	pipeline *Pipeline
	// box holds the callbacks (nil without any).
	box          *producerBox
	dropOnCancel bool
	// stage is nil with NoLinger.
	stage *stage
}

// Counts is a producer's accounting: at any quiescent point
// Accepted == Acked + Dropped + InFlight.
type Counts struct {
	Accepted, Acked, Dropped, InFlight uint64
}

func errProducerClosed() error { return goError(ErrClosed, "the producer is closed") }

func bytesArg(b []byte) *C.uint8_t { return (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(b))) }

// Publish publishes one event (copied; event may be reused when Publish returns).
// It returns nil once the event is accepted: handed to conveyor, or copied into the
// producer's stage, from which it is handed over within the producer's Linger (see
// ProducerConfig.Linger), when the stage is full, or before a TryPublish,
// PublishBatch, Cancel, Counts or Close of the producer and a Flush, Stats or Close
// of the pipeline. Events of 2 KiB or more are handed over directly, after the
// staged ones.
//
// Publish waits only when there is no room, in the stage nor in the queue behind it,
// until ctx ends. ctx bounds only that wait: an event that fits at once is accepted
// even if ctx has already ended. Errors: ctx's error (see Flush), ErrClosed (the
// producer is closed, or the pipeline is closing), ErrCanceled, ErrInvalidArgument
// (an event larger than queue.bytes); on any error the event was not accepted (the
// events staged before it stay accepted).
func (p *Producer) Publish(ctx context.Context, event []byte) error {
	s := p.stage
	if s == nil {
		return p.publishNow(ctx, event)
	}
	if len(event) >= s.bypass {
		if err := p.handOverStage(ctx, "publish", watchPublish); err != nil {
			return err
		}
		return p.publishNow(ctx, event)
	}
	s.mu.Lock()
	if err := s.refusal(); err != nil {
		s.mu.Unlock()
		return err
	}
	if !s.has(len(event)) {
		if drop, err := s.makeRoom(ctx, len(event), "publish", watchPublish); err != nil {
			s.mu.Unlock()
			p.report(drop)
			return err
		}
	}
	if s.n == 0 {
		if now := time.Now(); now.Sub(s.lastHandOver) >= s.linger {
			// Idle: no reason to wait for company.
			if accepted, err := s.publishAlone(event); accepted || err != nil {
				s.lastHandOver = now
				s.mu.Unlock()
				return err
			}
		}
		s.arm(s.linger)
	}
	s.add(event)
	s.mu.Unlock()
	return nil
}

// publishAlone hands one event over if the queue has room for it now; the caller
// holds s.mu and the stage is empty.
func (s *stage) publishAlone(event []byte) (accepted bool, err error) {
	runtime.LockOSThread()
	r := C.conveyor_producer_try_publish(s.prod.c, bytesArg(event), C.size_t(len(event)))
	if r != C.CONVEYOR_OK && r != C.CONVEYOR_ERR_FULL {
		err = lastError(r)
	}
	runtime.UnlockOSThread()
	return r == C.CONVEYOR_OK, err
}

// handOverStage empties the stage (if any), waiting for room until ctx ends or w
// says stop.
func (p *Producer) handOverStage(ctx context.Context, op string, w watch) error {
	s := p.stage
	if s == nil {
		return nil
	}
	s.mu.Lock()
	drop, err := s.makeRoom(ctx, wholeStage, op, w)
	s.mu.Unlock()
	p.report(drop)
	return err
}

// publishNow hands one event to conveyor, trying first, then waiting for room one
// slice at a time (see blockSlice).
func (p *Producer) publishNow(ctx context.Context, event []byte) error {
	p.mu.RLock()
	if p.c == nil {
		p.mu.RUnlock()
		return errProducerClosed()
	}
	runtime.LockOSThread()
	r := C.conveyor_producer_try_publish(p.c, bytesArg(event), C.size_t(len(event)))
	var err error
	if r != C.CONVEYOR_OK && r != C.CONVEYOR_ERR_FULL {
		err = lastError(r)
	}
	runtime.UnlockOSThread()
	p.mu.RUnlock()
	if r != C.CONVEYOR_ERR_FULL {
		return err
	}
	return p.publishWaiting(ctx, event)
}

// publishWaiting waits for room one slice at a time (see blockSlice).
func (p *Producer) publishWaiting(ctx context.Context, event []byte) error {
	for {
		ms, err := waitSlice(ctx, "publish")
		if err != nil {
			return err
		}
		p.mu.RLock()
		if p.c == nil {
			p.mu.RUnlock()
			return errProducerClosed()
		}
		runtime.LockOSThread()
		r := C.conveyor_producer_publish(p.c, bytesArg(event), C.size_t(len(event)), ms)
		if r != C.CONVEYOR_OK && r != C.CONVEYOR_ERR_TIMEOUT {
			err = lastError(r)
		}
		runtime.UnlockOSThread()
		p.mu.RUnlock()
		if r != C.CONVEYOR_ERR_TIMEOUT {
			return err
		}
	}
}

// TryPublish publishes one event only if the queue has room now, for the events
// staged before it and for this one; ErrFull otherwise.
func (p *Producer) TryPublish(event []byte) error {
	s := p.stage
	if s == nil {
		p.mu.RLock()
		defer p.mu.RUnlock()
		if p.c == nil {
			return errProducerClosed()
		}
		return tryPublish(p.c, event)
	}
	s.mu.Lock()
	if err := s.refusal(); err != nil {
		s.mu.Unlock()
		return err
	}
	if drop, stuck := s.handOver(0); stuck {
		err := s.refusal()
		s.mu.Unlock()
		p.report(drop)
		return err
	}
	if s.n > 0 {
		s.mu.Unlock()
		return goError(ErrFull, "the queue has no room for the events staged before this one")
	}
	err := tryPublish(p.c, event)
	s.mu.Unlock()
	return err
}

func tryPublish(c *C.conveyor_producer, event []byte) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if r := C.conveyor_producer_try_publish(c, bytesArg(event), C.size_t(len(event))); r != C.CONVEYOR_OK {
		return lastError(r)
	}
	return nil
}

// PublishBatch publishes events in order (copied), after the events staged before,
// waiting for room until ctx ends, and returns how many leading events were
// accepted: all of them with a nil error, or fewer with the reason (ctx's error,
// ErrClosed, ErrCanceled, ...). Events cut one after another from one buffer (each
// starting where the one before ends) are read in place, as PublishPacked reads its
// data; otherwise events of pinThreshold bytes or more are read in place, pinned
// for the duration of the call, and the others are copied once into C memory first
// (see batchArgs).
func (p *Producer) PublishBatch(ctx context.Context, events [][]byte) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	if err := p.handOverStage(ctx, "publish batch", watchPublish); err != nil {
		return 0, err
	}
	args := batchArgsPool.Get().(*batchArgs)
	defer args.release()
	return p.publishPrepared(ctx, args.prepare(events), len(events), "publish batch")
}

// PublishPacked publishes the events laid end to end in data, event i being the
// next lens[i] bytes, as PublishBatch publishes a batch: in order, after the events
// staged before, returning how many leading events were accepted. conveyor copies
// whole runs of them straight from data, so nothing is copied on the Go side: the
// fastest way to publish many small events. The lengths must add up to len(data)
// (ErrInvalidArgument otherwise, nothing accepted). data is only read, and not
// after the call returns.
func (p *Producer) PublishPacked(ctx context.Context, data []byte, lens []uint32) (int, error) {
	if len(lens) == 0 && len(data) == 0 {
		return 0, nil
	}
	if err := p.handOverStage(ctx, "publish packed", watchPublish); err != nil {
		return 0, err
	}
	return p.publishPrepared(ctx, preparedBatch{data: data, lens: lens}, len(lens), "publish packed")
}

// publishPrepared hands the n events of batch to conveyor, the first attempt taking
// what fits without waiting, the next ones waiting for room in slices until ctx ends.
// The producer's ACKs go through the ACK relay meanwhile, and are delivered between
// slices too, so that a long wait holds none back.
func (p *Producer) publishPrepared(ctx context.Context, batch preparedBatch, n int, op string) (int, error) {
	relayed := p.box.enterRelay()
	if relayed {
		defer p.box.leaveRelay(false)
	}
	accepted, skipped := 0, 0
	timeout := C.uint64_t(0)
	for {
		p.mu.RLock()
		if p.c == nil {
			p.mu.RUnlock()
			return accepted, errProducerClosed()
		}
		var taken C.size_t
		runtime.LockOSThread()
		r := batch.publish(p.c, accepted, skipped, timeout, &taken)
		var err error
		if r != C.CONVEYOR_OK && r != C.CONVEYOR_ERR_TIMEOUT {
			err = lastError(r)
		}
		runtime.UnlockOSThread()
		p.mu.RUnlock()
		if err != nil || accepted+int(taken) == n {
			return accepted + int(taken), err
		}
		if batch.views == nil {
			skipped += batch.bytes(accepted, int(taken))
		}
		accepted += int(taken)
		if relayed {
			p.box.wakeAcker()
		}
		if timeout, err = waitSlice(ctx, op); err != nil {
			return accepted, err
		}
	}
}

// Cancel cancels the producer: later publishes fail with ErrCanceled. With
// DropOnCancel, its events no client has taken yet, staged ones included, are
// removed and reported through OnDrop, and Cancel returns how many; events already
// taken are still delivered. Without it, staged events are handed to conveyor first,
// waiting for room as a publish would (until the pipeline closes). Cancelling again
// removes nothing more.
func (p *Producer) Cancel() int {
	s := p.stage
	if s == nil {
		p.mu.RLock()
		defer p.mu.RUnlock()
		if p.c == nil {
			return 0
		}
		return cancel(p.c)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0
	}
	s.refuse(false, true, nil)
	var drop stageDrop
	removed := 0
	if p.dropOnCancel {
		drop = s.takeOut("the producer was cancelled")
		removed = len(drop.events)
	} else {
		drop, _ = s.makeRoom(context.Background(), wholeStage, "cancel", watchClosing)
	}
	if !s.freed {
		removed += cancel(p.c)
	}
	s.mu.Unlock()
	p.report(drop)
	return removed
}

func cancel(c *C.conveyor_producer) int {
	var removed C.size_t
	C.conveyor_producer_cancel(c, &removed)
	return int(removed)
}

// Counts returns the producer's accounting (ErrClosed after Close). Staged events
// count as accepted and in flight; staged events the binding gave up on (see
// Pipeline.Close) as accepted and dropped. Acked may run ahead of OnACK by the ACKs
// relayed during a PublishBatch or PublishPacked call until their OnACK has run
// (see ProducerConfig).
func (p *Producer) Counts() (Counts, error) {
	s := p.stage
	if s == nil {
		p.mu.RLock()
		defer p.mu.RUnlock()
		if p.c == nil {
			return Counts{}, errProducerClosed()
		}
		return counts(p.c)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Counts{}, errProducerClosed()
	}
	drop, _ := s.handOver(0)
	c, err := counts(p.c)
	staged := uint64(s.n - s.head)
	c.Accepted += staged + s.dropped
	c.InFlight += staged
	c.Dropped += s.dropped
	s.mu.Unlock()
	p.report(drop)
	return c, err
}

func counts(p *C.conveyor_producer) (Counts, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var c C.conveyor_counts
	if r := C.conveyor_producer_counts(p, &c); r != C.CONVEYOR_OK {
		return Counts{}, lastError(r)
	}
	return Counts{Accepted: uint64(c.accepted), Acked: uint64(c.acked), Dropped: uint64(c.dropped),
		InFlight: uint64(c.in_flight)}, nil
}

// Close closes the producer; later calls on it return ErrClosed. Its events in
// flight are still delivered and reported through its callbacks. Its staged events
// are handed over: at once if the queue has room, else by the producer's timer
// while Close returns (the producer is freed once its stage is empty; Pipeline.Close
// drops, and reports, what never found room). It waits for publish calls in progress
// on other goroutines to finish their current wait (see Publish). Closing again does
// nothing.
func (p *Producer) Close() {
	s := p.stage
	if s == nil {
		if p.freeC() {
			p.pipeline.forget(p)
		}
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.refuse(true, false, nil)
	drop, _ := s.handOver(0)
	freed := false
	switch {
	case s.n == 0:
		freed = p.freeLocked()
	case !p.pipeline.closing.Load():
		s.arm(s.retryDelay())
	}
	s.mu.Unlock()
	p.report(drop)
	if freed {
		p.pipeline.forget(p)
	}
}

// free frees the producer for Pipeline.release, reporting as dropped what is still
// staged (Pipeline.Close has taken it out already).
func (p *Producer) free() {
	s := p.stage
	if s == nil {
		p.freeC()
		return
	}
	s.mu.Lock()
	s.refuse(true, false, nil)
	drop := s.takeOut("the pipeline was freed before it was delivered")
	p.freeLocked()
	s.mu.Unlock()
	p.report(drop)
}

// freeLocked frees the C producer and the stage's memory; the caller holds s.mu and
// the stage is empty.
func (p *Producer) freeLocked() bool {
	s := p.stage
	if s.freed {
		return false
	}
	s.freed = true
	if s.timer != nil {
		s.timer.Stop()
	}
	s.freeMemory()
	return p.freeC()
}

func (p *Producer) freeC() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.c == nil {
		return false
	}
	C.conveyor_producer_free(p.c)
	p.c = nil
	return true
}
