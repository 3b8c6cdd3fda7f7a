package conveyor

// #include <stdlib.h>
// #include "shims.h"
import "C"

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

const (
	// DefaultLinger is the Linger of a producer whose ProducerConfig leaves it zero:
	// conveyor's default queue.flush.timeout, which a batch may wait in the queue
	// anyway.
	DefaultLinger = time.Millisecond
	// NoLinger, as ProducerConfig.Linger, turns the stage off: every Publish hands its
	// event to conveyor at once, with one cgo call per event.
	NoLinger time.Duration = -1
)

// The bounds of a stage, and so of the memory a producer holds beyond the queue: a
// group of 256 events spreads the cost of a cgo call (30-40 ns) and of a
// publish_packed's fixed work to well under a nanosecond per event, and 32 KiB of
// 100-byte events stays in the CPU's cache between the copy in and the copy out.
// Groups of 1024 measured the same in h6-go-event, groups of 64 slower. Neither
// bound exceeds the queue's own (queue.events, queue.bytes).
const (
	stageEvents = 256
	stageBytes  = 32 << 10
)

// stage is where the events a producer publishes one at a time wait, at most the
// producer's linger, to cross into conveyor together: one
// conveyor_producer_publish_packed per group instead of one cgo call per event (the
// events lie end to end in the arena, so conveyor copies the group at once). A
// staged event is accepted: counted as accepted and in flight, it gets its outcome
// like any other.
//
// Invariant: a non-empty stage has its timer pending (or running), except once the
// pipeline is closing, when Pipeline.Close takes the stages over.
type stage struct {
	mu       sync.Mutex
	prod     *Producer
	pipeline *Pipeline
	linger   time.Duration
	// maxEvents and maxBytes bound the stage; events of bypass bytes or more are
	// handed over directly (see stageBypass).
	maxEvents, maxBytes, bypass int
	// timer hands the stage over linger after it became non-empty; created at the
	// first staged event.
	timer *time.Timer

	// lens and arena are C memory, allocated at the first staged event and freed
	// with the producer: the events waiting are lens[head:n] long, their bytes
	// arena[headBytes:used], end to end.
	lens                     []uint32
	arena                    []byte
	head, n, headBytes, used int
	// taken is publish_packed's out-parameter, kept here so no call allocates one.
	taken        C.size_t
	lastHandOver time.Time

	closed   bool // Producer.Close was called
	freed    bool // the C producer and the memory are freed
	canceled bool
	// dead is why a hand-over failed for good (the C pipeline was closed behind
	// the Go Pipeline's back, by a PipelineSink): later publishes fail with it.
	dead error
	// refused is closed || canceled || dead != nil, the one test a publish makes
	// (with the pipeline's closing) before it looks for the reason.
	refused bool
	// dropped counts the staged events this binding gave up on (reported through
	// OnDrop by Go, not by conveyor).
	dropped uint64
}

// stageDrop is staged events given up on, copied out of the stage, to be reported
// through OnDrop once the stage's lock is released.
type stageDrop struct {
	events [][]byte
	reason string
}

// watch is what a wait for room in the queue stops for, besides its context.
type watch int

const (
	// watchPublish: whatever makes a publish fail (the producer closed or
	// cancelled, the pipeline closing).
	watchPublish watch = iota
	// watchClosing: the pipeline closing (Pipeline.Close then takes the stage over).
	watchClosing
	// watchNothing: only the context (Pipeline.Close handing stages over).
	watchNothing
)

// wholeStage, as the size makeRoom makes room for, asks for the stage to be emptied.
const wholeStage = -1

// stageBypass is the size from which events skip the stage: copying them once more
// costs more than the cgo call it saves (about 20 ns per KiB against 30-40 ns per
// call, the trade-off of pinThreshold). Events larger than queue.bytes skip it too,
// so that they are refused by Publish itself.
func stageBypass(queueBytes int) int {
	if queueBytes > 0 {
		return min(pinThreshold, queueBytes+1)
	}
	return pinThreshold
}

func newStage(prod *Producer, linger time.Duration, queueEvents, queueBytes int) *stage {
	if linger == 0 {
		linger = DefaultLinger
	}
	s := &stage{prod: prod, pipeline: prod.pipeline, linger: linger, maxEvents: stageEvents, maxBytes: stageBytes,
		bypass: stageBypass(queueBytes)}
	if queueEvents > 0 {
		s.maxEvents = min(s.maxEvents, queueEvents)
	}
	if queueBytes > 0 {
		s.maxBytes = min(s.maxBytes, queueBytes)
	}
	return s
}

// refusal is why a publish must fail now, or nil.
func (s *stage) refusal() error {
	if !s.refused && !s.pipeline.closing.Load() {
		return nil
	}
	return s.reason()
}

func (s *stage) reason() error {
	switch {
	case s.closed:
		return errProducerClosed()
	case s.pipeline.closing.Load():
		return errPipelineClosed()
	case s.canceled:
		return goError(ErrCanceled, "the producer was cancelled")
	}
	return s.dead
}

// refuse records a reason for publishes to fail from now on.
func (s *stage) refuse(closed, canceled bool, dead error) {
	s.closed = s.closed || closed
	s.canceled = s.canceled || canceled
	if s.dead == nil {
		s.dead = dead
	}
	s.refused = true
}

// stopped is why a wait of kind w must end now, or nil.
func (s *stage) stopped(w watch) error {
	switch {
	case w == watchPublish:
		return s.refusal()
	case s.dead != nil:
		return s.dead
	case w == watchClosing && s.pipeline.closing.Load():
		return errPipelineClosed()
	}
	return nil
}

// has reports whether an event of size bytes fits in the stage now (for wholeStage:
// whether it is empty).
func (s *stage) has(size int) bool {
	if size == wholeStage {
		return s.n == 0
	}
	return s.n < s.maxEvents && s.used+size <= s.maxBytes
}

// add copies event into the stage, which has room for it.
func (s *stage) add(event []byte) {
	if s.lens == nil {
		s.allocate()
	}
	s.lens[s.n] = uint32(copy(s.arena[s.used:], event))
	s.used += len(event)
	s.n++
}

func (s *stage) allocate() {
	s.lens = unsafe.Slice((*uint32)(C.malloc(C.size_t(s.maxEvents)*C.sizeof_uint32_t)), s.maxEvents)
	s.arena = unsafe.Slice((*byte)(C.malloc(C.size_t(s.maxBytes))), s.maxBytes)
}

// empty forgets the events waiting (handed over or taken out).
func (s *stage) empty() {
	s.head, s.n, s.headBytes, s.used = 0, 0, 0, 0
}

// arm makes the timer hand the stage over after d.
func (s *stage) arm(d time.Duration) {
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.fire)
		return
	}
	s.timer.Reset(d)
}

// retryDelay is how soon the timer tries again when the queue had no room for the
// whole stage: the events have waited their linger already.
func (s *stage) retryDelay() time.Duration { return min(s.linger, blockSlice) }

// handOver hands the waiting events to conveyor in one call, waiting up to timeout
// for room (0: only what fits now). The caller holds s.mu. stuck reports a failure
// other than a lack of room: then, once the pipeline is closing, the events stay
// for Pipeline.Close; otherwise the stage is dead and its events come back as drop.
func (s *stage) handOver(timeout C.uint64_t) (drop stageDrop, stuck bool) {
	if s.freed || s.head == s.n {
		return stageDrop{}, false
	}
	runtime.LockOSThread()
	// Not &s.arena[s.headBytes]: the events left may all be empty, after a full arena.
	data := (*C.uint8_t)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(s.arena)), s.headBytes))
	r := C.conveyor_producer_publish_packed(s.prod.c, data, C.size_t(s.used-s.headBytes),
		(*C.uint32_t)(unsafe.Pointer(&s.lens[s.head])), C.size_t(s.n-s.head), timeout, &s.taken)
	var err error
	if r != C.CONVEYOR_OK && r != C.CONVEYOR_ERR_TIMEOUT {
		err = lastError(r)
	}
	runtime.UnlockOSThread()
	if s.taken > 0 {
		for _, n := range s.lens[s.head : s.head+int(s.taken)] {
			s.headBytes += int(n)
		}
		s.head += int(s.taken)
		if s.head == s.n {
			s.empty()
		}
		s.lastHandOver = time.Now()
	}
	if err == nil {
		return stageDrop{}, false
	}
	if r == C.CONVEYOR_ERR_CLOSED && s.pipeline.closing.Load() {
		return stageDrop{}, true
	}
	s.refuse(false, false, err)
	return s.takeOut(fmt.Sprintf("handing it to conveyor failed: %v", err)), true
}

// takeOut empties the stage, copying the events out for OnDrop and counting them
// as dropped. The caller holds s.mu.
func (s *stage) takeOut(reason string) stageDrop {
	pending := s.lens[s.head:s.n]
	if len(pending) == 0 {
		return stageDrop{}
	}
	payloads := append([]byte(nil), s.arena[s.headBytes:s.used]...)
	events := make([][]byte, len(pending))
	start := 0
	for i, n := range pending {
		end := start + int(n)
		events[i] = payloads[start:end:end]
		start = end
	}
	s.dropped += uint64(len(events))
	s.pipeline.stagedDrops.Add(uint64(len(events)))
	s.empty()
	return stageDrop{events: events, reason: reason}
}

// makeRoom hands the stage over until an event of size bytes fits (wholeStage: until
// it is empty), waiting for room in the queue one slice at a time until ctx ends or
// w says stop. The caller holds s.mu, which is released between two waits so that
// Close, Cancel, Stats and the timer are never held up longer than one slice. A
// failed hand-over comes back as drop (to report once s.mu is released).
func (s *stage) makeRoom(ctx context.Context, size int, op string, w watch) (drop stageDrop, err error) {
	for waited := false; ; waited = true {
		if err := s.stopped(w); err != nil {
			return stageDrop{}, err
		}
		if s.has(size) {
			return stageDrop{}, nil
		}
		var timeout C.uint64_t
		if waited {
			if timeout, err = waitSlice(ctx, op); err != nil {
				return stageDrop{}, err
			}
		}
		if drop, stuck := s.handOver(timeout); stuck {
			if s.dead != nil {
				return drop, s.dead
			}
			return stageDrop{}, errPipelineClosed()
		}
		if timeout != 0 {
			s.mu.Unlock()
			s.mu.Lock()
		}
	}
}

// fire is the timer: it hands the stage over, tries again soon if the queue had no
// room for all of it, and frees a closed producer once its stage is empty.
func (s *stage) fire() {
	s.mu.Lock()
	if s.freed || (s.n == 0 && !s.closed) {
		s.mu.Unlock()
		return
	}
	drop, _ := s.handOver(0)
	freed := false
	switch {
	case s.n == 0 && s.closed:
		freed = s.prod.freeLocked()
	case s.n > 0 && !s.pipeline.closing.Load():
		s.arm(s.retryDelay())
	}
	s.mu.Unlock()
	s.prod.report(drop)
	if freed {
		s.pipeline.forget(s.prod)
	}
}

// freeMemory frees the stage's C memory; the caller holds s.mu.
func (s *stage) freeMemory() {
	if s.lens != nil {
		C.free(unsafe.Pointer(unsafe.SliceData(s.lens)))
		C.free(unsafe.Pointer(unsafe.SliceData(s.arena)))
		s.lens, s.arena = nil, nil
	}
}

// report hands staged events the binding gave up on to OnDrop, never while one of
// the dispatcher's callbacks of this producer runs: under the producer's callback
// lock, unless it is called from inside such a callback (which holds the lock
// already, on this thread). The caller holds no stage lock.
func (p *Producer) report(drop stageDrop) {
	if len(drop.events) == 0 {
		return
	}
	n := len(drop.events)
	p.pipeline.log.log(LogWarn, fmt.Sprintf("%d staged events dropped: %s", n, drop.reason))
	box := p.box
	if box == nil || box.onDrop == nil {
		return
	}
	if C.conveyor_go_producer_in_callback() != box.handle {
		box.callbacks.Lock()
		defer box.callbacks.Unlock()
	}
	defer func() {
		if r := recover(); r != nil {
			box.log.panicked(fmt.Sprintf("OnDrop of %d staged events", n), r)
		}
	}()
	box.onDrop(drop.events)
}
