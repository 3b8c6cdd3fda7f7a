package conveyor

// The ACK relay keeps conveyor's dispatcher thread from calling into Go while a
// producer is publishing batches. A C thread that calls into Go needs one of Go's Ps,
// and once back in C it keeps that P until Go's sysmon takes it back (20 µs to 10 ms
// later): with as many Ps as CPUs, the publishing goroutine then waits for a P while
// a CPU idles (BENCHMARKS.md, h6-go-batch). So while a PublishBatch, PublishPacked
// or Flush call is in progress, the dispatcher adds the producer's ACK counts to the
// relay, in C memory, and returns at once; the call that finds counts there wakes
// the producer's acker goroutine, which runs OnACK as the dispatcher would have: one
// callback at a time, under the producer's callback lock (a Flush runs what is left
// itself, so that every OnACK has returned when it does). Counts are taken from the
// relay only under that lock, and every callback of the producer (OnACK, OnDrop, the
// final free) first delivers what waits there, so OnACK and OnDrop keep the order in
// which conveyor settled the events.

// #include <stdlib.h>
// #include "shims.h"
import "C"

import (
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync/atomic"
	"unsafe"
)

const (
	relayPublishing = uint64(C.CONVEYOR_GO_RELAY_PUBLISHING)
	relayPending    = uint64(C.CONVEYOR_GO_RELAY_PENDING)
	// relayLeaving added to the relay subtracts relayPublishing.
	relayLeaving = ^(relayPublishing - 1)
)

// newProducerCallbacks is the C userdata of box's producer: its handle and its
// relay. conveyor frees it with the producer (goConveyorFreeProducer);
// freeProducerCallbacks frees it (and box's handle) when no producer took it.
func newProducerCallbacks(box *producerBox) *C.conveyor_go_producer_callbacks {
	cb := (*C.conveyor_go_producer_callbacks)(C.malloc(C.sizeof_conveyor_go_producer_callbacks))
	cb.handle = C.uintptr_t(newHandle(box))
	box.handle = cb.handle
	box.memory = cb
	box.relay = (*atomic.Uint64)(unsafe.Pointer(&cb.relay))
	box.relay.Store(0)
	// conveyor's reference, given back by goConveyorFreeProducer.
	box.refs.Store(1)
	box.wake = make(chan struct{}, 1)
	return cb
}

func freeProducerCallbacks(box *producerBox) {
	deleteHandle(cgo.Handle(box.handle))
	box.release()
}

// hold keeps the relay's memory alive until release; false once conveyor and every
// holder let go of it.
func (b *producerBox) hold() bool {
	for {
		refs := b.refs.Load()
		if refs == 0 {
			return false
		}
		if b.refs.CompareAndSwap(refs, refs+1) {
			return true
		}
	}
}

// release lets go of the relay: the last one out frees it and stops the acker.
func (b *producerBox) release() {
	if b.refs.Add(-1) == 0 {
		C.free(unsafe.Pointer(b.memory))
		close(b.wake)
	}
}

// enterRelay starts a call during which the dispatcher relays this producer's ACKs;
// false when there is nothing to relay (no OnACK, or the producer is gone).
func (b *producerBox) enterRelay() bool {
	if b == nil || b.onACK == nil || !b.hold() {
		return false
	}
	b.relay.Add(relayPublishing)
	return true
}

// leaveRelay ends such a call. The acker delivers what was relayed meanwhile, unless
// deliverHere: a Flush that saw every outcome reported delivers it itself, after any
// callback in progress, so that every OnACK has returned when Flush does.
func (b *producerBox) leaveRelay(deliverHere bool) {
	b.relay.Add(relayLeaving)
	if deliverHere {
		b.deliverRelayed()
	} else {
		b.wakeAcker()
	}
	b.release()
}

// wakeAcker has the acker deliver the relayed ACKs, if there are any. The caller
// holds the relay.
func (b *producerBox) wakeAcker() {
	if b.relay.Load()&relayPending == 0 {
		return
	}
	if b.ackerStarted.CompareAndSwap(false, true) {
		go b.acker()
	}
	select {
	case b.wake <- struct{}{}:
	default: // woken already: it takes all there is
	}
}

// acker delivers relayed ACKs whenever woken, until the relay is freed.
func (b *producerBox) acker() {
	for range b.wake {
		if !b.hold() {
			return
		}
		b.deliverRelayed()
		b.release()
	}
}

// deliverRelayed runs OnACK for the relayed ACKs on this goroutine, marked as in a
// callback of the producer (see report), waiting for a callback in progress first.
// The caller holds the relay and no callback lock.
func (b *producerBox) deliverRelayed() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	outer := C.conveyor_go_producer_enter_callback(b.handle)
	defer C.conveyor_go_producer_leave_callback(outer)
	b.callbacks.Lock()
	b.unlockCallbacks()
}

// takeRelayed takes the ACK count waiting in the relay; the caller holds b.callbacks.
func (b *producerBox) takeRelayed() int {
	for {
		s := b.relay.Load()
		if s&relayPending == 0 {
			return 0
		}
		if b.relay.CompareAndSwap(s, s&^relayPending) {
			return int(s & relayPending)
		}
	}
}

// unlockCallbacks delivers what was relayed while the caller held b.callbacks
// (callbacks may publish, and so relay more), then lets go of the lock.
func (b *producerBox) unlockCallbacks() {
	for n := b.takeRelayed(); n > 0; n = b.takeRelayed() {
		b.runOnACK(n)
	}
	b.callbacks.Unlock()
}

// runOnACK runs OnACK(n), recovering a panic; the caller holds b.callbacks.
func (b *producerBox) runOnACK(n int) {
	defer func() {
		if r := recover(); r != nil {
			b.log.panicked(fmt.Sprintf("OnACK(%d)", n), r)
		}
	}()
	b.onACK(n)
}

// inProducerCallback reports whether a producer callback runs on this thread: there
// Flush and Close would wait for the callback they are called from.
func inProducerCallback() bool {
	return C.conveyor_go_producer_in_callback() != 0
}
