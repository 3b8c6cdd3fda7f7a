package conveyor

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// packEvents lays events end to end in one buffer, with their lengths.
func packEvents(events [][]byte) ([]byte, []uint32) {
	var data []byte
	lens := make([]uint32, len(events))
	for i, e := range events {
		data = append(data, e...)
		lens[i] = uint32(len(e))
	}
	return data, lens
}

// checkDeliveredInOrder fails unless the ledger got events 0..n-1 once each, in order,
// intact, and the producer's ACKs count all of them.
func checkDeliveredInOrder(t *testing.T, l *ledger, o *outcomes, n int) {
	t.Helper()
	checkOrder(t, l, n)
	if acked, dropped := o.totals(); acked != n || len(dropped) != 0 {
		t.Fatalf("acked %d, dropped %d; want %d, 0", acked, len(dropped), n)
	}
}

func TestPublishPackedDeliversEveryEventInOrder(t *testing.T) {
	l := newLedger()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 256, BulkMaxSize: 100}), &recordingClient{ledger: l})
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))
	ctx := patientContext(t)
	if n, err := prod.PublishPacked(ctx, nil, nil); n != 0 || err != nil {
		t.Fatalf("no events: %d, %v", n, err)
	}
	// Runs larger than the queue wait for room part by part; events of varied sizes
	// check where each later part starts in data.
	next := uint64(0)
	for _, size := range []int{1, 7, 300, 1024, 1500, 3} {
		data, lens := packEvents(numberedEvents(&next, size))
		if n, err := prod.PublishPacked(ctx, data, lens); n != size || err != nil {
			t.Fatalf("PublishPacked(%d events) = %d, %v", size, n, err)
		}
		// Accepted means copied: the caller may reuse data at once.
		clear(data)
	}
	mustFlush(t, p)
	checkDeliveredInOrder(t, l, o, int(next))
}

func TestPublishPackedEndingInEmptyEventsThatWaitForRoom(t *testing.T) {
	c := &sizeClient{gate: make(chan struct{})}
	close(c.gate)
	p := startPipeline(t, fastRetries(Config{QueueEvents: 16, BulkMaxSize: 16}), c)
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))
	// The queue takes 16 events at a time: the last parts hold empty events only,
	// with no byte of data left to point to.
	want := make([]int, 50)
	lens := make([]uint32, len(want))
	data := make([]byte, 0, 20*5)
	for i := range 20 {
		want[i], lens[i] = 5, 5
		data = append(data, byte(i), 1, 2, 3, 4)
	}
	if n, err := prod.PublishPacked(patientContext(t), data, lens); n != len(want) || err != nil {
		t.Fatalf("PublishPacked = %d, %v; want %d, nil", n, err, len(want))
	}
	mustFlush(t, p)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Equal(c.sizes, want) {
		t.Fatalf("delivered lengths %v, want %v", c.sizes, want)
	}
	if acked, _ := o.totals(); acked != len(want) {
		t.Fatalf("acked %d, want %d", acked, len(want))
	}
}

func TestPublishPackedRejectsLengthsThatDoNotAddUp(t *testing.T) {
	l := newLedger()
	p := startPipeline(t, fastRetries(Config{}), &recordingClient{ledger: l})
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))
	ctx := patientContext(t)
	data, lens := packEvents([][]byte{event(0, 10), event(1, 12)})
	for name, bad := range map[string][]uint32{
		"short":   {10, 11},
		"long":    {10, 13},
		"missing": nil,
		"extra":   {10, 12, 1},
	} {
		n, err := prod.PublishPacked(ctx, data, bad)
		if n != 0 || !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s lengths: PublishPacked = %d, %v; want 0, ErrInvalidArgument", name, n, err)
		}
	}
	// Nothing of the refused calls was accepted: the valid call's events are the
	// only ones delivered.
	if n, err := prod.PublishPacked(ctx, data, lens); n != 2 || err != nil {
		t.Fatalf("PublishPacked = %d, %v", n, err)
	}
	mustFlush(t, p)
	checkDeliveredInOrder(t, l, o, 2)
}

func TestPublishPackedAfterPerEventPublishKeepsOrder(t *testing.T) {
	l := newLedger()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 64}), &recordingClient{ledger: l})
	o := newOutcomes()
	// A long linger keeps the per-event publishes staged until PublishPacked hands
	// them over ahead of its own events.
	cfg := o.config(false)
	cfg.Linger = time.Hour
	prod := mustProducer(t, p, cfg)
	ctx := patientContext(t)
	for id := range uint64(5) {
		if err := prod.Publish(ctx, event(id, 16)); err != nil {
			t.Fatal(err)
		}
	}
	data, lens := packEvents([][]byte{event(5, 9), event(6, 30), event(7, 8)})
	if n, err := prod.PublishPacked(ctx, data, lens); n != 3 || err != nil {
		t.Fatalf("PublishPacked = %d, %v", n, err)
	}
	mustFlush(t, p)
	checkDeliveredInOrder(t, l, o, 8)
}

func TestPublishBatchReadsEventsCutFromOneBufferInPlace(t *testing.T) {
	// Each event keeps the rest of the buffer as its capacity; the buffer never grows.
	buffer := make([]byte, 0, 4096)
	var cut [][]byte
	for id := range uint64(40) {
		start := len(buffer)
		buffer = append(buffer, event(id, 8+int(id%30))...)
		cut = append(cut, buffer[start:])
	}
	limited := slices.Clone(cut)
	limited[0] = limited[0][:len(limited[0]):len(limited[0])]
	foreign := slices.Clone(cut)
	foreign[20] = event(20, len(cut[20]))
	withEmpty := slices.Insert(slices.Clone(cut), 10, nil, []byte{})

	args := &batchArgs{mem: new(batchMemory)}
	defer args.mem.free()
	for name, c := range map[string]struct {
		events  [][]byte
		inPlace bool
	}{
		"cut from one buffer":       {cut, true},
		"with empty events":         {withEmpty, true},
		"first capacity ends early": {limited, false},
		"one allocated elsewhere":   {foreign, false},
		"separately allocated":      {[][]byte{event(0, 10), event(1, 10)}, false},
		"gap between events":        {[][]byte{cut[0], cut[2]}, false},
	} {
		if _, ok := args.inPlace(c.events); ok != c.inPlace {
			t.Errorf("%s: read in place %v, want %v", name, ok, c.inPlace)
		}
		l := newLedger()
		p := startPipeline(t, fastRetries(Config{QueueEvents: 16, BulkMaxSize: 16}), &recordingClient{ledger: l})
		o := newOutcomes()
		prod := mustProducer(t, p, o.config(false))
		nonEmpty := slices.DeleteFunc(slices.Clone(c.events), func(e []byte) bool { return len(e) == 0 })
		if n, err := prod.PublishBatch(patientContext(t), c.events); n != len(c.events) || err != nil {
			t.Fatalf("%s: PublishBatch = %d, %v", name, n, err)
		}
		mustFlush(t, p)
		_, order, bad := l.snapshot()
		if len(bad) != len(c.events)-len(nonEmpty) {
			t.Errorf("%s: %d events are not intact: %v", name, len(bad), bad)
		}
		want := make([]uint64, len(nonEmpty))
		for i, e := range nonEmpty {
			want[i] = eventID(e)
		}
		if !slices.Equal(order, want) {
			t.Errorf("%s: delivered %v, want %v", name, order, want)
		}
	}
}

func TestPublishPackedAllocatesNothingPerCall(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are not checked under the race detector")
	}
	p := startPipeline(t, Config{QueueEvents: 1 << 16, BulkMaxSize: 1024}, &countingClient{})
	prod := mustProducer(t, p, ProducerConfig{OnACK: func(int) {}})
	ctx := patientContext(t)
	data, lens := packEvents(slices.Repeat([][]byte{make([]byte, 100)}, 64))
	if allocs := testing.AllocsPerRun(200, func() {
		if _, err := prod.PublishPacked(ctx, data, lens); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("PublishPacked allocates %.2f times per call", allocs)
	}
	mustFlush(t, p)
}
