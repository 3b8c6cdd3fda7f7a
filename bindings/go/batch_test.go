package conveyor

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// forwardingClient publishes every batch it receives into another pipeline: the
// views it passes on are conveyor's C memory, which PublishBatch reads in place
// without pinning.
type forwardingClient struct {
	to  *Producer
	ctx context.Context
}

func (c *forwardingClient) Connect(time.Duration) error { return nil }
func (c *forwardingClient) Close() error                { return nil }
func (c *forwardingClient) Publish(events [][]byte) (int, error) {
	return c.to.PublishBatch(c.ctx, events)
}

// largeBatch builds events of sizes on both sides of pinThreshold, ids first..; every
// other event lives in one shared buffer, so that one Go object is pinned many times.
func largeBatch(first uint64, count int) [][]byte {
	sizes := []int{8, pinThreshold - 1, pinThreshold, 3*pinThreshold + 5, 64 << 10}
	shared := make([]byte, count*(64<<10))
	offset := 0
	batch := make([][]byte, count)
	for i := range batch {
		size := sizes[i%len(sizes)]
		e := event(first+uint64(i), size)
		if i%2 == 0 {
			copy(shared[offset:], e)
			e = shared[offset : offset+size : offset+size]
			offset += size
		}
		batch[i] = e
	}
	return batch
}

func TestPublishBatchReadsLargeEventsInPlaceDuringTheCall(t *testing.T) {
	ctx := patientContext(t)
	l := newLedger()
	back := startPipeline(t, fastRetries(Config{QueueEvents: 8}), &recordingClient{ledger: l})
	backOutcomes := newOutcomes()
	forward := mustProducer(t, back, backOutcomes.config(false))
	// The front queue holds fewer events than a batch: PublishBatch waits for room
	// with its large events pinned, then returns; the forwarding client republishes
	// from conveyor's memory.
	front := startPipeline(t, fastRetries(Config{QueueEvents: 16, BulkMaxSize: 16}), &forwardingClient{to: forward, ctx: ctx})
	frontOutcomes := newOutcomes()
	prod := mustProducer(t, front, frontOutcomes.config(false))

	const count = 40
	batch := largeBatch(0, count)
	if n, err := prod.PublishBatch(ctx, batch); n != count || err != nil {
		t.Fatalf("PublishBatch = %d, %v; want %d, nil", n, err, count)
	}
	// Accepted means copied into the queue: the caller may reuse its memory at once.
	for _, e := range batch {
		clear(e)
	}
	mustFlush(t, front)
	mustFlush(t, back)

	checkOrder(t, l, count)
	for name, o := range map[string]*outcomes{"front": frontOutcomes, "back": backOutcomes} {
		if acked, dropped := o.totals(); acked != count || len(dropped) != 0 {
			t.Fatalf("%s producer: acked %d, dropped %d; want %d, 0", name, acked, len(dropped), count)
		}
	}
}

func TestConcurrentBatchesPinTheSameEvents(t *testing.T) {
	ctx := patientContext(t)
	l := newLedger()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 32, BulkMaxSize: 32}), &recordingClient{ledger: l})
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))

	const count, publishers = 30, 4
	batch := largeBatch(0, count)
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n, err := prod.PublishBatch(ctx, batch); n != count || err != nil {
				errs <- fmt.Errorf("PublishBatch = %d, %v; want %d, nil", n, err, count)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	mustFlush(t, p)
	delivered, _, bad := l.snapshot()
	if len(bad) > 0 {
		t.Fatalf("corrupt payloads: %v", bad[0])
	}
	for id := range uint64(count) {
		if delivered[id] != publishers {
			t.Fatalf("event %d delivered %d times, want %d", id, delivered[id], publishers)
		}
	}
	if acked, _ := o.totals(); acked != count*publishers {
		t.Fatalf("acked %d, want %d", acked, count*publishers)
	}
}

// The C memory views are written into was used before (malloc hands out what
// conveyor freed, such as its own arrays of views of pinned events): what it held
// may look like pointers into Go's heap, to objects since freed. Views must be
// stored without a write barrier, which would hand those old values to the garbage
// collector, and it aborts the program on a pointer to a freed span (seen as a
// "found bad pointer in Go heap" crash of concurrent pinned batches).
func TestViewsOverReusedCMemoryAreNotSeenByTheGarbageCollector(t *testing.T) {
	stale := func() uintptr {
		b := make([]byte, 1<<20)
		return uintptr(unsafe.Pointer(&b[0]))
	}()
	runtime.GC()
	runtime.GC()
	stopCollecting := repeatInBackground(func() bool {
		runtime.GC()
		return true
	})
	args := &batchArgs{mem: new(batchMemory)}
	defer args.mem.free()
	events := [][]byte{event(1, 10), nil, event(2, pinThreshold)}
	for range 3000 {
		args.mem.reserveViews(len(events))
		words := unsafe.Slice((*uintptr)(unsafe.Pointer(args.mem.views)), args.mem.viewsCap*2)
		for i := range words {
			words[i] = stale
		}
		views := args.prepare(events).views
		if views[1].data != nil || views[1].len != 0 || uint64(views[2].len) != pinThreshold {
			t.Fatalf("views %v", views)
		}
		args.unpin()
	}
	stopCollecting()
}
