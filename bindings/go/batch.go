package conveyor

// #include <stdlib.h>
// #include "conveyor.h"
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// pinThreshold is the event size from which PublishBatch lets conveyor read an event
// where it is, pinned (runtime.Pinner) for the duration of the call, instead of
// copying it into C memory first. Pinning costs about 40-60 ns per event whatever its
// size; copying costs about 5 ns per 100 bytes and 20 ns per KiB: they break even
// near 2 KiB (measured on the 2-vCPU development VM, Go 1.26; see README.md).
const pinThreshold = 2048

// batchArgs is what one PublishBatch call hands to conveyor: the array of views,
// and the staging area the small events are copied into, both in C memory (so
// conveyor reads no unpinned Go memory and Go keeps no pointer in C) and reused by
// later calls through batchArgsPool.
type batchArgs struct {
	mem    *batchMemory
	pinner runtime.Pinner
	// pinnedViews are the views of the last prepare when some of them point to
	// pinned Go memory: release clears them before unpinning, so that C memory never
	// holds a pointer to unpinned Go memory.
	pinnedViews []C.conveyor_bytes
}

// batchMemory is the C memory of a batchArgs, freed by a cleanup once the pool has
// let go of its batchArgs (it holds no reference back, so it cannot keep it alive).
type batchMemory struct {
	views      *C.conveyor_bytes
	viewsCap   int
	staging    *C.uint8_t
	stagingCap int
}

var batchArgsPool = sync.Pool{New: func() any {
	args := &batchArgs{mem: new(batchMemory)}
	runtime.AddCleanup(args, (*batchMemory).free, args.mem)
	return args
}}

func (m *batchMemory) free() {
	C.free(unsafe.Pointer(m.views))
	C.free(unsafe.Pointer(m.staging))
}

// grownCap is a capacity of at least need, with room to grow, so that alternating
// batch sizes do not reallocate every call.
func grownCap(need int) int { return max(need+need/4, 64) }

// reserve makes room for n views and staged bytes of staging; what it held is lost.
func (m *batchMemory) reserve(n, staged int) {
	if m.viewsCap < n {
		C.free(unsafe.Pointer(m.views))
		m.viewsCap = grownCap(n)
		m.views = (*C.conveyor_bytes)(C.malloc(C.size_t(m.viewsCap) * C.sizeof_conveyor_bytes))
	}
	if m.stagingCap < staged {
		C.free(unsafe.Pointer(m.staging))
		m.stagingCap = grownCap(staged)
		m.staging = (*C.uint8_t)(C.malloc(C.size_t(m.stagingCap)))
	}
}

// rawView is a conveyor_bytes written as numbers. Views live in C memory, whose
// previous contents (left by conveyor or an earlier use) may look like pointers
// into Go's heap: a pointer store there would hand that old value to the garbage
// collector's write barrier, which aborts on a pointer to a freed span. Stored as
// numbers, nothing is shaded. What a view points to is C memory, or Go memory
// pinned for as long as the view is used.
type rawView struct{ data, len uintptr }

// rawView must have conveyor_bytes' layout.
var _ [unsafe.Sizeof(C.conveyor_bytes{}) - unsafe.Sizeof(rawView{})]byte
var _ [unsafe.Sizeof(rawView{}) - unsafe.Sizeof(C.conveyor_bytes{})]byte
var _ [unsafe.Offsetof(C.conveyor_bytes{}.len) - unsafe.Offsetof(rawView{}.len)]byte

// setView stores a view of data (empty: NULL) in *view.
func setView(view *C.conveyor_bytes, data []byte) {
	raw := (*rawView)(unsafe.Pointer(view))
	if len(data) == 0 {
		*raw = rawView{}
		return
	}
	*raw = rawView{data: uintptr(unsafe.Pointer(&data[0])), len: uintptr(len(data))}
}

// prepare fills the views of events: small events copied into the staging area,
// large ones pinned and viewed in place, empty ones as NULL. The views stay valid
// until release.
func (a *batchArgs) prepare(events [][]byte) []C.conveyor_bytes {
	staged := 0
	for _, e := range events {
		if len(e) < pinThreshold {
			staged += len(e)
		}
	}
	m := a.mem
	m.reserve(len(events), staged)
	views := unsafe.Slice(m.views, len(events))
	var staging []byte
	if staged > 0 {
		staging = unsafe.Slice((*byte)(unsafe.Pointer(m.staging)), staged)
	}
	offset := 0
	for i, e := range events {
		switch {
		case len(e) == 0:
			setView(&views[i], nil)
		case len(e) < pinThreshold:
			n := copy(staging[offset:], e)
			setView(&views[i], staging[offset:offset+n])
			offset += n
		default:
			a.pinner.Pin(&e[0])
			a.pinnedViews = views
			setView(&views[i], e)
		}
	}
	return views
}

// release unpins what prepare pinned and returns a to the pool.
func (a *batchArgs) release() {
	a.unpin()
	batchArgsPool.Put(a)
}

// unpin clears the views of pinned memory, then unpins it.
func (a *batchArgs) unpin() {
	if a.pinnedViews != nil {
		for i := range a.pinnedViews {
			setView(&a.pinnedViews[i], nil)
		}
		a.pinnedViews = nil
		a.pinner.Unpin()
	}
}
