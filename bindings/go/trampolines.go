package conveyor

// The Go functions conveyor's threads call through the C shims in shims.c. Each one
// recovers panics: a panic must never unwind into C (the process would die), so a
// panicking client counts as a failed call and the panic is logged.

// #include "conveyor.h"
import "C"

import (
	"fmt"
	"runtime/cgo"
	"time"
)

func clientOf(h C.uintptr_t) *clientBox { return cgo.Handle(h).Value().(*clientBox) }

//export goConveyorConnect
func goConveyorConnect(h C.uintptr_t, timeoutMs C.uint64_t) (rc C.uint32_t) {
	box := clientOf(h)
	defer func() {
		if r := recover(); r != nil {
			box.log.panicked(fmt.Sprintf("client %T: Connect", box.client), r)
			rc = 1
		}
	}()
	timeout := time.Duration(timeoutMs) * time.Millisecond
	if uint64(timeoutMs) > uint64(maxDuration/time.Millisecond) {
		timeout = maxDuration
	}
	if err := box.client.Connect(timeout); err != nil {
		box.log.log(LogDebug, fmt.Sprintf("client %T: Connect: %v", box.client, err))
		return 1
	}
	return 0
}

//export goConveyorClose
func goConveyorClose(h C.uintptr_t) {
	box := clientOf(h)
	defer func() {
		if r := recover(); r != nil {
			box.log.panicked(fmt.Sprintf("client %T: Close", box.client), r)
		}
	}()
	if err := box.client.Close(); err != nil {
		box.log.log(LogDebug, fmt.Sprintf("client %T: Close: %v", box.client, err))
	}
}

//export goConveyorPublish
func goConveyorPublish(h C.uintptr_t, events *C.conveyor_bytes, n C.size_t, published *C.size_t) (status C.uint32_t) {
	box := clientOf(h)
	box.views = appendViews(box.views[:0], events, n)
	defer func() {
		// Views of C memory must not outlive the call, even in the reused buffer.
		clear(box.views)
		if r := recover(); r != nil {
			box.log.panicked(fmt.Sprintf("client %T: Publish of %d events", box.client, n), r)
			*published = 0
			status = C.CONVEYOR_PUBLISH_BROKEN
		}
	}()
	count, err := box.client.Publish(box.views)
	if err != nil {
		box.log.log(LogDebug, fmt.Sprintf("client %T: Publish of %d events: %d published, then: %v", box.client, n, count, err))
	}
	*published = publishedCount(count)
	return publishStatus(err)
}

//export goConveyorPublishAsync
func goConveyorPublishAsync(h C.uintptr_t, events *C.conveyor_bytes, n C.size_t, completion C.uintptr_t) (rc C.uint32_t) {
	box := clientOf(h)
	call := &asyncCall{completion: completion, views: viewBuffers.Get().(*viewBuffer), box: box}
	call.views.views = appendViews(call.views.views[:0], events, n)
	defer func() {
		if r := recover(); r != nil {
			box.log.panicked(fmt.Sprintf("client %T: PublishAsync of %d events", box.client, n), r)
			call.abandon()
			rc = 1
		}
	}()
	if err := box.async.PublishAsync(call.views.views, call.done); err != nil {
		box.log.log(LogDebug, fmt.Sprintf("client %T: PublishAsync of %d events not taken: %v", box.client, n, err))
		call.abandon()
		return 1
	}
	return 0
}

//export goConveyorFreeClient
func goConveyorFreeClient(h C.uintptr_t) {
	deleteHandle(cgo.Handle(h))
}

func producerOf(h C.uintptr_t) *producerBox { return cgo.Handle(h).Value().(*producerBox) }

//export goConveyorOnACK
func goConveyorOnACK(h C.uintptr_t, count C.uint64_t) {
	box := producerOf(h)
	box.callbacks.Lock()
	defer box.unlockCallbacks()
	box.runOnACK(int(count) + box.takeRelayed())
}

//export goConveyorOnDrop
func goConveyorOnDrop(h C.uintptr_t, events *C.conveyor_bytes, n C.size_t) {
	box := producerOf(h)
	box.callbacks.Lock()
	defer box.unlockCallbacks()
	// Relayed ACKs were settled before these drops.
	if acked := box.takeRelayed(); acked > 0 {
		box.runOnACK(acked)
	}
	box.views = appendViews(box.views[:0], events, n)
	defer func() {
		clear(box.views)
		if r := recover(); r != nil {
			box.log.panicked(fmt.Sprintf("OnDrop of %d events", n), r)
		}
	}()
	box.onDrop(box.views)
}

//export goConveyorFreeProducer
func goConveyorFreeProducer(h C.uintptr_t) {
	box := producerOf(h)
	deleteHandle(cgo.Handle(h))
	if box.relay.Load()&relayPending != 0 {
		box.deliverRelayed()
	}
	box.release()
}

//export goConveyorLog
func goConveyorLog(h C.uintptr_t, level C.uint32_t, message *C.char, length C.size_t) {
	cgo.Handle(h).Value().(*logSink).log(LogLevel(level), C.GoStringN(message, C.int(length)))
}
