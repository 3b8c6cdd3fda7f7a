package conveyor

// #include <stdlib.h>
// #include "conveyor.h"
import "C"

import (
	"math"
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

// batchArgs is what one PublishBatch call hands to conveyor: the staging area the
// small events are copied into, end to end, with their lengths, or, when some event
// is large enough to be pinned instead, an array of views; all in C memory (so
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
	lens       *C.uint32_t
	lensCap    int
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
	C.free(unsafe.Pointer(m.lens))
	C.free(unsafe.Pointer(m.staging))
}

// grownCap is a capacity of at least need, with room to grow, so that alternating
// batch sizes do not reallocate every call.
func grownCap(need int) int { return max(need+need/4, 64) }

// reserveViews makes room for n views; what they held is lost.
func (m *batchMemory) reserveViews(n int) {
	if m.viewsCap < n {
		C.free(unsafe.Pointer(m.views))
		m.viewsCap = grownCap(n)
		m.views = (*C.conveyor_bytes)(C.malloc(C.size_t(m.viewsCap) * C.sizeof_conveyor_bytes))
	}
}

// reserveLens makes room for n lengths; what they held is lost.
func (m *batchMemory) reserveLens(n int) {
	if m.lensCap < n {
		C.free(unsafe.Pointer(m.lens))
		m.lensCap = grownCap(n)
		m.lens = (*C.uint32_t)(C.malloc(C.size_t(m.lensCap) * C.sizeof_uint32_t))
	}
}

// reserveStaging makes room for staged bytes; what it held is lost.
func (m *batchMemory) reserveStaging(staged int) {
	if m.stagingCap < staged {
		C.free(unsafe.Pointer(m.staging))
		m.stagingCap = grownCap(staged)
		m.staging = (*C.uint8_t)(C.malloc(C.size_t(m.stagingCap)))
	}
}

// growStaging makes room for at least need bytes, keeping the first keep, and
// returns all of it. (C.malloc, unlike C.realloc, never returns nil.)
func (m *batchMemory) growStaging(keep, need int) []byte {
	kept := unsafe.Slice((*byte)(unsafe.Pointer(m.staging)), keep)
	m.stagingCap = max(grownCap(need), 2*m.stagingCap)
	grown := (*C.uint8_t)(C.malloc(C.size_t(m.stagingCap)))
	staging := unsafe.Slice((*byte)(unsafe.Pointer(grown)), m.stagingCap)
	copy(staging, kept)
	C.free(unsafe.Pointer(m.staging))
	m.staging = grown
	return staging
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

// preparedBatch is a batch's events as conveyor reads them: packed end to end in
// data (C memory, or Go memory holding no pointers) with their lens, or, when some
// are pinned, as views.
type preparedBatch struct {
	data  []byte
	lens  []uint32
	views []C.conveyor_bytes
}

// prepare lays the events out for conveyor: read in place when they lie end to end
// already (see inPlace); otherwise copied into C memory, end to end, unless one is of
// pinThreshold bytes or more: then small events are copied, large ones pinned and
// viewed in place, empty ones viewed as NULL. It stays valid until release.
func (a *batchArgs) prepare(events [][]byte) preparedBatch {
	if batch, ok := a.inPlace(events); ok {
		return batch
	}
	if batch, ok := a.staged(events); ok {
		return batch
	}
	return a.viewed(events)
}

// staged is the events copied end to end into C memory, in the one pass over them
// that the common case needs, unless one is too large to copy (see pinThreshold).
func (a *batchArgs) staged(events [][]byte) (preparedBatch, bool) {
	m := a.mem
	m.reserveLens(len(events))
	lens := unsafe.Slice((*uint32)(unsafe.Pointer(m.lens)), len(events))
	var staging []byte
	if m.stagingCap > 0 {
		staging = unsafe.Slice((*byte)(unsafe.Pointer(m.staging)), m.stagingCap)
	}
	offset := 0
	for i, e := range events {
		if len(e) >= pinThreshold {
			return preparedBatch{}, false
		}
		if len(e) > len(staging)-offset {
			staging = m.growStaging(offset, offset+len(e))
		}
		lens[i] = uint32(copy(staging[offset:], e))
		offset += len(e)
	}
	return preparedBatch{data: staging[:offset], lens: lens}, true
}

// viewed is the events as views: small ones copied into C memory, large ones pinned
// and viewed in place, empty ones viewed as NULL.
func (a *batchArgs) viewed(events [][]byte) preparedBatch {
	staged := 0
	for _, e := range events {
		if len(e) < pinThreshold {
			staged += len(e)
		}
	}
	m := a.mem
	m.reserveStaging(staged)
	var staging []byte
	if staged > 0 {
		staging = unsafe.Slice((*byte)(unsafe.Pointer(m.staging)), staged)
	}
	m.reserveViews(len(events))
	views := unsafe.Slice(m.views, len(events))
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
	return preparedBatch{views: views}
}

// inPlace is the events as one packed run read where they are, when each starts
// where the one before ends, all within the backing array of the first (events cut
// one after another from one buffer). That array holds no Go pointers, so conveyor
// may read it during the call; only the lengths are written to C memory.
func (a *batchArgs) inPlace(events [][]byte) (preparedBatch, bool) {
	first := events[0]
	// Addresses as numbers: the end of one event may be past its array, where no
	// pointer may point.
	base := uintptr(unsafe.Pointer(unsafe.SliceData(first)))
	m := a.mem
	m.reserveLens(len(events))
	lens := unsafe.Slice((*uint32)(unsafe.Pointer(m.lens)), len(events))
	total := 0
	for i, e := range events {
		if len(e) > 0 && (uintptr(unsafe.Pointer(unsafe.SliceData(e))) != base+uintptr(total) ||
			len(e) > cap(first)-total || len(e) > math.MaxUint32) {
			return preparedBatch{}, false
		}
		lens[i] = uint32(len(e))
		total += len(e)
	}
	return preparedBatch{data: first[:total], lens: lens}, true
}

// publish hands the events from the first not yet accepted to conveyor, waiting up
// to timeout for room, and stores in *taken how many it accepted. skipped is the
// bytes of the events accepted so far.
func (b preparedBatch) publish(c *C.conveyor_producer, accepted, skipped int, timeout C.uint64_t,
	taken *C.size_t) C.conveyor_result {
	if b.views != nil {
		return C.conveyor_producer_publish_batch(c, &b.views[accepted], C.size_t(len(b.views)-accepted), timeout, taken)
	}
	// NULL when no byte is left (the events left are empty): a pointer to the end of
	// data may point past its array, into memory that is not data's.
	var data *C.uint8_t
	if skipped < len(b.data) {
		data = (*C.uint8_t)(unsafe.Pointer(&b.data[skipped]))
	}
	var lens *C.uint32_t
	if accepted < len(b.lens) {
		lens = (*C.uint32_t)(unsafe.Pointer(&b.lens[accepted]))
	}
	return C.conveyor_producer_publish_packed(c, data, C.size_t(len(b.data)-skipped),
		lens, C.size_t(len(b.lens)-accepted), timeout, taken)
}

// bytes is the size of the events accepted..accepted+taken, for the packed form.
func (b preparedBatch) bytes(accepted, taken int) int {
	n := 0
	for _, l := range b.lens[accepted : accepted+taken] {
		n += int(l)
	}
	return n
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
