package conveyor

// The Go functions behind the sink vtables of shims.c: Go sinks, filter matchers,
// queue sink drop hooks and retry strategies. Each one recovers panics, which must
// never unwind into C.

// #include "conveyor.h"
import "C"

import (
	"errors"
	"fmt"
	"runtime/cgo"
	"unsafe"
)

// eventView is a Go view of one event in conveyor's memory, valid during the call.
func eventView(data *C.uint8_t, n C.size_t) []byte {
	if n == 0 {
		return emptyEvent
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(data)), int(n))
}

//export goConveyorSinkWrite
func goConveyorSinkWrite(h C.uintptr_t, data *C.uint8_t, n C.size_t) (rc C.uint32_t) {
	box := cgo.Handle(h).Value().(*sinkBox)
	defer func() {
		if r := recover(); r != nil {
			box.log.panicked(fmt.Sprintf("sink %T: Write of %d bytes", box.sink, n), r)
			rc = C.CONVEYOR_ERR_CLIENT
		}
	}()
	err := box.sink.Write(eventView(data, n))
	switch {
	case err == nil:
		return C.CONVEYOR_OK
	case errors.Is(err, ErrClosed):
		return C.CONVEYOR_ERR_CLOSED
	default:
		box.log.log(LogDebug, fmt.Sprintf("sink %T: Write: %v", box.sink, err))
		return C.CONVEYOR_ERR_CLIENT
	}
}

//export goConveyorSinkClose
func goConveyorSinkClose(h C.uintptr_t) {
	box := cgo.Handle(h).Value().(*sinkBox)
	defer func() {
		if r := recover(); r != nil {
			box.log.panicked(fmt.Sprintf("sink %T: Close", box.sink), r)
		}
	}()
	if err := box.sink.Close(); err != nil {
		box.log.log(LogWarn, fmt.Sprintf("sink %T: Close: %v", box.sink, err))
	}
}

//export goConveyorFreeHandle
func goConveyorFreeHandle(h C.uintptr_t) {
	deleteHandle(cgo.Handle(h))
}

//export goConveyorSinkMatch
func goConveyorSinkMatch(h C.uintptr_t, data *C.uint8_t, n C.size_t) (rc C.uint32_t) {
	box := cgo.Handle(h).Value().(*matcherBox)
	defer func() {
		if r := recover(); r != nil {
			box.log.panicked(fmt.Sprintf("filter matcher on an event of %d bytes (the event is discarded)", n), r)
			rc = 0
		}
	}()
	if box.match(eventView(data, n)) {
		return 1
	}
	return 0
}

//export goConveyorSinkDrop
func goConveyorSinkDrop(h C.uintptr_t, events *C.conveyor_bytes, n C.size_t) {
	box := cgo.Handle(h).Value().(*dropBox)
	// Drop hooks may run concurrently (writers, the delivery thread, close): each call
	// gets views of its own.
	views := appendViews(make([][]byte, 0, int(n)), events, n)
	defer func() {
		if r := recover(); r != nil {
			box.log.panicked(fmt.Sprintf("queue sink OnDrop of %d events", n), r)
		}
	}()
	box.onDrop(views)
}

//export goConveyorRetryProceed
func goConveyorRetryProceed(h C.uintptr_t) (ms C.uint64_t) {
	box := cgo.Handle(h).Value().(*retryBox)
	if box.funcs.Proceed == nil {
		return 0
	}
	defer func() {
		if r := recover(); r != nil {
			box.log.panicked("RetryFuncs.Proceed (trying again now)", r)
			ms = 0
		}
	}()
	return durationMs(box.funcs.Proceed())
}

//export goConveyorRetryFailure
func goConveyorRetryFailure(h C.uintptr_t) (giveUp C.uint32_t) {
	box := cgo.Handle(h).Value().(*retryBox)
	if box.funcs.Failure == nil {
		return 0
	}
	defer func() {
		if r := recover(); r != nil {
			box.log.panicked("RetryFuncs.Failure (giving up on the event)", r)
			giveUp = 1
		}
	}()
	if box.funcs.Failure() {
		return 1
	}
	return 0
}

//export goConveyorRetrySuccess
func goConveyorRetrySuccess(h C.uintptr_t) {
	box := cgo.Handle(h).Value().(*retryBox)
	if box.funcs.Success == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			box.log.panicked("RetryFuncs.Success", r)
		}
	}()
	box.funcs.Success()
}
