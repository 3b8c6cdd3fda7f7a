package conveyor

// #include "shims.h"
import "C"

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// Sink takes events one at a time (the go-events Sink). Every combinator of this
// package is a Sink, and any Sink, yours included, can be wrapped by them or serve
// as a pipeline's client (SinkClient).
//
// A Sink of yours that a combinator or a pipeline wraps is called from conveyor's
// threads, possibly from several at once: make Write and Close safe for concurrent
// use. The event given to Write is then a view of conveyor's memory, valid only
// during the call: copy what you keep. Return an error matching ErrClosed from Write
// when the sink is closed for good (a Broadcaster then drops it, a RetryingSink stops
// retrying, a pipeline counts a broken connection); any other error is a failed
// write. A panic is recovered and counts as a failed write.
type Sink interface {
	// Write takes one event.
	Write(event []byte) error
	// Close closes the sink: later writes fail with an error matching ErrClosed.
	// Closing again does nothing.
	Close() error
}

// SinkStats are the counters of a conveyor sink and of the sinks it wraps.
type SinkStats struct {
	Kind      string      `json:"kind"`      // broadcaster, queue, filter, retrying, pipeline or custom (a Sink of yours)
	Written   uint64      `json:"written"`   // events written into this sink and accepted
	Forwarded uint64      `json:"forwarded"` // events passed on (to members, downstream; acked for a pipeline)
	Dropped   uint64      `json:"dropped"`   // events given up on (reported to the writer or to OnDrop)
	Filtered  uint64      `json:"filtered"`  // events a Filter discarded on purpose
	Failures  uint64      `json:"failures"`  // downstream write failures
	Queued    uint64      `json:"queued"`    // events waiting in a buffer
	Inner     []SinkStats `json:"inner"`     // the sinks it wraps
}

// sinkLog receives what sinks have to report: panics (to the standard log package)
// and, discarded, the errors of Sinks of yours (they reach the writer as ErrClient).
var sinkLog = &logSink{}

func errSinkClosed() error { return goError(ErrClosed, "the sink is closed") }

// releasedBit marks a sinkRef whose owner let go of it; the bits below count the
// calls in progress.
const releasedBit = int64(1) << 62

// sinkRef is the reference to a C sink that one Go value holds. It is released once,
// by Close or, for a value dropped without Close, by a cleanup when the value is
// garbage collected; the C handle is freed when the last call in progress ends, so
// Close never waits for a blocked Write.
type sinkRef struct {
	c     *C.conveyor_sink
	state atomic.Int64
	// final is the last stats snapshot, taken when the sink was closed.
	final atomic.Pointer[SinkStats]
	// members are a Broadcaster's references to the Sinks of yours it wraps.
	members *memberSet
}

// newSinkRef takes over the C handle c for owner, releasing it if owner is dropped
// without Close.
func newSinkRef[T any](owner *T, c *C.conveyor_sink) *sinkRef {
	r := &sinkRef{c: c}
	// On a goroutine of its own: releasing may close what a queue sink wraps (a
	// pipeline: up to its close timeout), which must not hold up other cleanups.
	runtime.AddCleanup(owner, func(r *sinkRef) { go r.release() }, r)
	return r
}

// acquire starts a call on the C handle; false once released.
func (r *sinkRef) acquire() bool {
	for {
		s := r.state.Load()
		if s&releasedBit != 0 {
			return false
		}
		if r.state.CompareAndSwap(s, s+1) {
			return true
		}
	}
}

// done ends a call started by acquire.
func (r *sinkRef) done() {
	if r.state.Add(-1) == releasedBit {
		r.free()
	}
}

// release lets go of the reference; the C handle goes when no call is in progress.
func (r *sinkRef) release() {
	if old := r.state.Or(releasedBit); old == 0 {
		r.free()
	}
}

func (r *sinkRef) free() {
	C.conveyor_sink_free(r.c)
	if r.members != nil {
		r.members.free()
	}
}

// nativeSink is a conveyor sink held from Go: Write, Close and Stats of every
// combinator.
type nativeSink struct {
	ref *sinkRef
}

func (s *nativeSink) native() *nativeSink { return s }

// Write writes one event (copied, or handed on during the call). It blocks while a
// blocking QueueSink is full, while a RetryingSink retries and while a PipelineSink
// waits for room; Close from another goroutine ends the wait with ErrClosed.
func (s *nativeSink) Write(event []byte) error {
	// s points into the value that owns the reference: keeping it reachable until
	// the call returns keeps the cleanup from releasing the reference meanwhile.
	defer runtime.KeepAlive(s)
	r := s.ref
	if !r.acquire() {
		return errSinkClosed()
	}
	defer r.done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if rc := C.conveyor_sink_write(r.c, bytesArg(event), C.size_t(len(event))); rc != C.CONVEYOR_OK {
		return lastError(rc)
	}
	return nil
}

// Close closes the sink and what it wraps (see each combinator), then releases it:
// later calls return ErrClosed, except Stats, which returns the last snapshot.
// Closing again does nothing. A PipelineSink closed from one of conveyor's callbacks
// returns an error matching ErrInvalidArgument and stays open.
func (s *nativeSink) Close() error {
	defer runtime.KeepAlive(s)
	r := s.ref
	if !r.acquire() {
		return nil
	}
	runtime.LockOSThread()
	var err error
	if rc := C.conveyor_sink_close(r.c); rc != C.CONVEYOR_OK {
		err = lastError(rc)
	}
	runtime.UnlockOSThread()
	if errors.Is(err, ErrInvalidArgument) {
		r.done()
		return err
	}
	r.closed()
	return err
}

// closed records the final stats of a closed sink and releases it; the caller holds
// a call (acquire), which this ends.
func (r *sinkRef) closed() {
	if stats, err := r.stats(); err == nil {
		r.final.Store(&stats)
	}
	r.release()
	r.done()
}

// Stats returns a snapshot of the sink's counters (after Close: the last one).
func (s *nativeSink) Stats() (SinkStats, error) {
	defer runtime.KeepAlive(s)
	r := s.ref
	if !r.acquire() {
		if final := r.final.Load(); final != nil {
			return *final, nil
		}
		return SinkStats{}, errSinkClosed()
	}
	defer r.done()
	return r.stats()
}

// stats reads the C sink's counters; the caller holds a call.
func (r *sinkRef) stats() (SinkStats, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 512)
	for {
		var needed C.size_t
		rc := C.conveyor_sink_stats_json(r.c, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &needed)
		switch rc {
		case C.CONVEYOR_OK:
			var s SinkStats
			if err := json.Unmarshal(buf[:needed-1], &s); err != nil {
				return SinkStats{}, goError(ErrInternal, "decoding the sink stats JSON: %v", err)
			}
			return s, nil
		case C.CONVEYOR_ERR_BUFFER_TOO_SMALL:
			buf = make([]byte, int(needed)+256)
		default:
			return SinkStats{}, lastError(rc)
		}
	}
}

// native is implemented by the sinks of this package that are conveyor sinks.
type native interface {
	native() *nativeSink
}

// sinkBox is what the cgo handle of a Sink of yours wrapped for conveyor refers to.
type sinkBox struct {
	sink Sink
	log  *logSink
}

// cSink is a C reference to a Sink, lent to a constructor (which takes a reference
// of its own) for the duration of a call.
type cSink struct {
	c *C.conveyor_sink
	// ref is the conveyor sink's Go reference, with a call in progress; nil for a
	// Sink of yours, whose C wrapper belongs to this cSink.
	ref *sinkRef
}

// borrow returns a C reference to s: a conveyor sink's own handle, or a new C sink
// calling s. The caller must be locked to its OS thread (see lastError).
func borrow(s Sink, what string) (cSink, error) {
	if s == nil || isNilPointer(s) {
		return cSink{}, goError(ErrInvalidArgument, "%s is a nil Sink", what)
	}
	if n, ok := s.(native); ok {
		r := n.native().ref
		if !r.acquire() {
			return cSink{}, goError(ErrClosed, "%s is a closed sink", what)
		}
		runtime.KeepAlive(s)
		return cSink{c: r.c, ref: r}, nil
	}
	h := newHandle(&sinkBox{sink: s, log: sinkLog})
	var c *C.conveyor_sink
	if rc := C.conveyor_go_sink_new(C.uintptr_t(h), &c); rc != C.CONVEYOR_OK {
		err := lastError(rc)
		deleteHandle(h)
		return cSink{}, err
	}
	return cSink{c: c}, nil
}

// giveBack ends the loan: the constructor that wanted the sink holds its own
// reference by now (or failed, and the wrapper goes with this last reference).
func (b cSink) giveBack() {
	if b.ref != nil {
		b.ref.done()
		return
	}
	C.conveyor_sink_free(b.c)
}

// isNilPointer reports a typed nil pointer in an interface, which would only panic
// later on a conveyor thread.
func isNilPointer(s Sink) bool {
	v := reflect.ValueOf(s)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// sameSink reports whether a and b are the same Sink value; values of types that
// cannot be compared are never the same.
func sameSink(a, b Sink) bool {
	ta := reflect.TypeOf(a)
	return ta == reflect.TypeOf(b) && ta.Comparable() && a == b
}

// SinkClient makes a Sink a client of a pipeline (NewPipeline, AddClient): each
// event of a batch is written in order; a failed write publishes the events before
// it and the rest is retried on the same client; a sink answering ErrClosed counts as
// a broken connection (in Failover and LoadBalance the events go to another client).
// The pipeline never closes the sink: close it yourself after the pipeline.
func SinkClient(s Sink) Client { return &sinkClient{sink: s} }

// sinkClient is what SinkClient returns. Registered with a pipeline it is served by
// conveyor directly (conveyor_config_add_sink); its methods do the same for callers
// that use it as a plain Client.
type sinkClient struct {
	sink Sink
}

func (c *sinkClient) Connect(time.Duration) error { return nil }
func (c *sinkClient) Close() error                { return nil }

func (c *sinkClient) Publish(events [][]byte) (int, error) {
	for i, e := range events {
		if err := c.sink.Write(e); err != nil {
			if errors.Is(err, ErrClosed) {
				return i, err
			}
			return i, fmt.Errorf("%w: %w", ErrRetry, err)
		}
	}
	return len(events), nil
}

// lendClient returns the C sink behind a SinkClient registered with a pipeline.
func (c *sinkClient) lend() (cSink, error) {
	return borrow(c.sink, "the SinkClient's sink")
}
