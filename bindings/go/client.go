package conveyor

// #include "shims.h"
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Client is a protocol client: the code that delivers batches to one endpoint.
//
// conveyor calls a client's methods from its worker threads, never two at a time for
// the same registered client, so a client needs no locking of its own unless it shares
// state with other code. A value registered twice (two arguments of NewPipeline, or
// AddClient again) counts as two clients whose calls may overlap.
type Client interface {
	// Connect opens the connection within timeout; an error is a failed connect
	// (conveyor backs off and tries again, or fails over).
	Connect(timeout time.Duration) error
	// Close closes the connection. It is also called when Connect failed or never
	// ran: make it idempotent.
	Close() error
	// Publish delivers events and returns how many leading events went out. The
	// views are valid only during the call: copy what you keep. (n, nil) with
	// n < len(events) publishes a prefix and the rest is retried; an error wrapping
	// ErrRetry is a temporary failure on a healthy connection; any other error means
	// the connection is broken. A count outside [0, len(events)] or a panic counts
	// as a failed publish of the whole batch (and is logged).
	Publish(events [][]byte) (published int, err error)
}

// AsyncClient is a Client that takes batches without waiting for their outcome, up
// to Config.Pipelining batches in flight. When a registered client implements
// AsyncClient, conveyor calls PublishAsync and never Publish.
type AsyncClient interface {
	Client
	// PublishAsync starts delivering events and returns nil when it took the batch;
	// it (or any goroutine, later) then calls done exactly once with how many leading
	// events went out and an error classified as for Client.Publish. A non-nil
	// return means the batch was not taken: do not call done then (if done was called
	// before returning, that outcome stands). The views stay valid until done is
	// called, or until Close of this client returned if done never is: stop reading
	// them by then. Extra calls of done are ignored.
	PublishAsync(events [][]byte, done func(published int, err error)) error
}

// clientBox is what a cgo handle of a client refers to.
type clientBox struct {
	client Client
	async  AsyncClient
	log    *logSink
	// views is reused by every synchronous Publish of this client: conveyor never
	// calls one client concurrently, so one buffer serves all its batches.
	views [][]byte
}

// registerClient wraps c in a handle for C; the caller hands the handle to C, or
// deletes it when C refused it.
func registerClient(c Client, sink *logSink) (C.uintptr_t, C.int, error) {
	if c == nil {
		return 0, 0, goError(ErrInvalidArgument, "a nil Client")
	}
	box := &clientBox{client: c, log: sink}
	async := C.int(0)
	if a, ok := c.(AsyncClient); ok {
		box.async = a
		async = 1
	}
	return C.uintptr_t(newHandle(box)), async, nil
}

// publishStatus maps a client's error to a CONVEYOR_PUBLISH_* status.
func publishStatus(err error) C.uint32_t {
	switch {
	case err == nil:
		return C.CONVEYOR_PUBLISH_OK
	case errors.Is(err, ErrRetry):
		return C.CONVEYOR_PUBLISH_RETRY
	default:
		return C.CONVEYOR_PUBLISH_BROKEN
	}
}

// publishedCount converts a client's count for C, which checks it against the batch:
// a negative count becomes one C rejects as out of range instead of wrapping into it.
func publishedCount(n int) C.size_t {
	if n < 0 {
		return ^C.size_t(0)
	}
	return C.size_t(n)
}

// emptyEvent stands for zero-length events: conveyor may give those a dangling data
// pointer, which must never reach a Go pointer.
var emptyEvent = []byte{}

// appendViews appends Go views of the n C events at events to dst, without copying.
func appendViews(dst [][]byte, events *C.conveyor_bytes, n C.size_t) [][]byte {
	for _, e := range unsafe.Slice(events, int(n)) {
		if e.len == 0 {
			dst = append(dst, emptyEvent)
			continue
		}
		dst = append(dst, unsafe.Slice((*byte)(unsafe.Pointer(e.data)), int(e.len)))
	}
	return dst
}

// viewBuffers recycles the views of asynchronous batches, which stay in use until
// their completion and so cannot share one per-client buffer.
var viewBuffers = sync.Pool{New: func() any { return new(viewBuffer) }}

type viewBuffer struct{ views [][]byte }

// asyncCall is one batch handed to PublishAsync.
type asyncCall struct {
	completion C.uintptr_t
	views      *viewBuffer
	settled    atomic.Bool
	box        *clientBox
}

// done is the completion function given to PublishAsync.
func (a *asyncCall) done(published int, err error) {
	if !a.settled.CompareAndSwap(false, true) {
		a.box.log.log(LogWarn, fmt.Sprintf("client %T called done twice for one batch; the first outcome stands", a.box.client))
		return
	}
	if err != nil {
		a.box.log.log(LogDebug, fmt.Sprintf("client %T: PublishAsync of %d events: %d published, then: %v",
			a.box.client, len(a.views.views), published, err))
	}
	C.conveyor_go_completion_done(a.completion, publishedCount(published), publishStatus(err))
	a.recycle()
}

// abandon is for a batch PublishAsync did not take: a later done must not reach C.
func (a *asyncCall) abandon() {
	if a.settled.CompareAndSwap(false, true) {
		a.recycle()
	}
}

func (a *asyncCall) recycle() {
	clear(a.views.views)
	a.views.views = a.views.views[:0]
	viewBuffers.Put(a.views)
}
