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
// #include "shims.h"
import "C"

import (
	"context"
	"runtime"
	"sync"
	"unsafe"
)

// ProducerConfig is how a producer hears about its events. The callbacks run on the
// pipeline's dispatcher thread, one at a time, once per ACK round (never per event).
// They may publish, but must not call Pipeline.Flush or Pipeline.Close (those return
// ErrInvalidArgument there). A panic in a callback is recovered and logged; the
// outcome still counts as reported.
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
}

// producerBox is what a cgo handle of a producer's callbacks refers to.
type producerBox struct {
	onACK  func(int)
	onDrop func([][]byte)
	log    *logSink
	// views is reused by every OnDrop call: callbacks run one at a time.
	views [][]byte
}

// Producer publishes events into a pipeline. All methods are safe for concurrent use.
// Every event a publish call accepted gets exactly one outcome, OnACK or OnDrop, also
// after the producer is closed.
type Producer struct {
	// mu guards c as Pipeline.mu guards its handle; publishing holds it for reading
	// only for one bounded wait at a time, so Close never waits long.
	mu       sync.RWMutex
	c        *C.conveyor_producer
	pipeline *Pipeline
}

// Counts is a producer's accounting: at any quiescent point
// Accepted == Acked + Dropped + InFlight.
type Counts struct {
	Accepted, Acked, Dropped, InFlight uint64
}

func errProducerClosed() error { return goError(ErrClosed, "the producer is closed") }

func bytesArg(b []byte) *C.uint8_t { return (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(b))) }

// Publish publishes one event (copied; event may be reused when Publish returns),
// waiting for room in the queue until ctx ends. ctx bounds only that wait: an event
// that fits at once is accepted even if ctx has already ended. Errors: ctx's error
// (see Flush), ErrClosed, ErrCanceled, ErrInvalidArgument (an event larger than
// queue.bytes); on any error the event was not accepted.
func (p *Producer) Publish(ctx context.Context, event []byte) error {
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

// TryPublish publishes one event only if the queue has room now; ErrFull otherwise.
func (p *Producer) TryPublish(event []byte) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.c == nil {
		return errProducerClosed()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if r := C.conveyor_producer_try_publish(p.c, bytesArg(event), C.size_t(len(event))); r != C.CONVEYOR_OK {
		return lastError(r)
	}
	return nil
}

// PublishBatch publishes events in order (copied), waiting for room until ctx ends,
// and returns how many leading events were accepted: all of them with a nil error, or
// fewer with the reason (ctx's error, ErrClosed, ErrCanceled, ...). Events of
// pinThreshold bytes or more are read in place, pinned for the duration of the call;
// the others are copied once into C memory first (see batchArgs).
func (p *Producer) PublishBatch(ctx context.Context, events [][]byte) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	args := batchArgsPool.Get().(*batchArgs)
	views := args.prepare(events)
	defer args.release()
	accepted := 0
	timeout := C.uint64_t(0) // the first attempt takes what fits without waiting
	for {
		p.mu.RLock()
		if p.c == nil {
			p.mu.RUnlock()
			return accepted, errProducerClosed()
		}
		var taken C.size_t
		runtime.LockOSThread()
		r := C.conveyor_producer_publish_batch(p.c, &views[accepted], C.size_t(len(views)-accepted), timeout, &taken)
		var err error
		if r != C.CONVEYOR_OK && r != C.CONVEYOR_ERR_TIMEOUT {
			err = lastError(r)
		}
		runtime.UnlockOSThread()
		p.mu.RUnlock()
		accepted += int(taken)
		if accepted == len(events) {
			return accepted, nil
		}
		if err != nil {
			return accepted, err
		}
		if timeout, err = waitSlice(ctx, "publish batch"); err != nil {
			return accepted, err
		}
	}
}

// Cancel cancels the producer: later publishes fail with ErrCanceled. With
// DropOnCancel, its events no client has taken yet are removed and reported through
// OnDrop, and Cancel returns how many; events already taken are still delivered.
// Cancelling again removes nothing more.
func (p *Producer) Cancel() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.c == nil {
		return 0
	}
	var removed C.size_t
	C.conveyor_producer_cancel(p.c, &removed)
	return int(removed)
}

// Counts returns the producer's accounting (ErrClosed after Close).
func (p *Producer) Counts() (Counts, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.c == nil {
		return Counts{}, errProducerClosed()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var c C.conveyor_counts
	if r := C.conveyor_producer_counts(p.c, &c); r != C.CONVEYOR_OK {
		return Counts{}, lastError(r)
	}
	return Counts{Accepted: uint64(c.accepted), Acked: uint64(c.acked), Dropped: uint64(c.dropped),
		InFlight: uint64(c.in_flight)}, nil
}

// Close frees the producer; later calls on it return ErrClosed. Its events in flight
// are still delivered and reported through its callbacks. It waits for publish calls
// in progress on other goroutines to finish their current wait (see Publish). Closing
// again does nothing.
func (p *Producer) Close() {
	if p.free() {
		p.pipeline.forget(p)
	}
}

func (p *Producer) free() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.c == nil {
		return false
	}
	C.conveyor_producer_free(p.c)
	p.c = nil
	return true
}
