package conveyor

// Sinks from Go: the go-events cases of research/goevents-aresdb.md §4 (1-22, with
// the "Fixed" behaviour) that make sense in Go, pipelines as sinks, sinks as
// clients, and the release of every cgo handle.

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// everySink builds one sink of each kind over fresh recordSinks.
func everySink(t *testing.T) map[string]Sink {
	p := startPipeline(t, fastRetries(Config{}), &recordingClient{ledger: newLedger()})
	return map[string]Sink{
		"broadcaster": must(NewBroadcaster(newRecordSink())),
		"queue":       must(NewQueueSink(newRecordSink(), 4, OverflowBlock)),
		"filter":      must(NewFilter(newRecordSink(), func([]byte) bool { return true })),
		"retrying":    must(NewRetryingSink(newRecordSink(), NewBreaker(3, time.Millisecond))),
		"channel":     must(NewChannelSink(4)),
		"pipeline":    must(p.AsSink()),
	}
}

// Case 1.
func TestEverySinkClosesTwiceAndRefusesWritesAfter(t *testing.T) {
	checkSinkHandles(t)
	for name, s := range everySink(t) {
		if err := s.Write([]byte("before")); err != nil {
			t.Fatalf("%s: Write before Close: %v", name, err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("%s: Close: %v", name, err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("%s: second Close: %v", name, err)
		}
		if err := s.Write([]byte("after")); !errors.Is(err, ErrClosed) {
			t.Fatalf("%s: Write after Close = %v, want ErrClosed", name, err)
		}
		if n, ok := s.(native); ok {
			if stats, err := n.native().Stats(); err != nil || stats.Written != 1 {
				t.Fatalf("%s: Stats after Close = %+v, %v; want the final snapshot with 1 written", name, stats, err)
			}
		}
	}
}

// Case 2.
func TestBroadcastOfConcurrentWritesReachesEveryMemberExactlyOnce(t *testing.T) {
	checkSinkHandles(t)
	const writers, perWriter, members = 10, 100, 10
	records := make([]*recordSink, members)
	b := must(NewBroadcaster())
	closeAtEnd(t, b)
	for i := range records {
		records[i] = newRecordSink()
		member := Sink(records[i])
		if i%2 == 1 { // half of them behind a conveyor sink, half called directly
			member = must(NewFilter(records[i], func([]byte) bool { return true }))
			closeAtEnd(t, member)
		}
		if err := b.Add(member); err != nil {
			t.Fatal(err)
		}
	}
	writeTaggedConcurrently(t, b, writers, perWriter)
	for m, r := range records {
		seen := map[[2]uint32]int{}
		for _, e := range r.waitEvents(t, writers*perWriter) {
			w, i := untag(e)
			seen[[2]uint32{w, i}]++
		}
		if len(seen) != writers*perWriter {
			t.Fatalf("member %d got %d distinct events, want %d", m, len(seen), writers*perWriter)
		}
	}
	if s := must(b.Stats()); s.Written != writers*perWriter || s.Forwarded != writers*perWriter*members {
		t.Fatalf("broadcaster stats %+v", s)
	}
}

// Cases 3 and 4.
func TestMembershipAddTwiceRemoveUnknownRemoveWithoutClose(t *testing.T) {
	checkSinkHandles(t)
	direct, behind := newRecordSink(), newRecordSink()
	filter := must(NewFilter(behind, func([]byte) bool { return true }))
	b := must(NewBroadcaster(direct, direct, filter, filter))
	closeAtEnd(t, b)
	if err := b.Add(direct); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(filter); err != nil {
		t.Fatal(err)
	}
	unknownFilter := must(NewFilter(newRecordSink(), func([]byte) bool { return true }))
	closeAtEnd(t, unknownFilter)
	if err := b.Remove(newRecordSink()); err != nil {
		t.Fatalf("removing an unknown sink: %v", err)
	}
	if err := b.Remove(unknownFilter); err != nil {
		t.Fatalf("removing an unknown conveyor sink: %v", err)
	}
	if err := b.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	if len(direct.taken()) != 1 || len(behind.taken()) != 1 {
		t.Fatalf("a member added twice got %d and %d copies, want 1", len(direct.taken()), len(behind.taken()))
	}
	if err := b.Remove(direct); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(filter); err != nil {
		t.Fatal(err)
	}
	if err := b.Write([]byte("two")); err != nil {
		t.Fatal(err)
	}
	if len(direct.taken()) != 1 || len(behind.taken()) != 1 {
		t.Fatal("a removed member still got events")
	}
	if direct.closes.Load() != 0 || behind.closes.Load() != 0 {
		t.Fatal("Remove closed the member")
	}
	if err := filter.Write([]byte("still open")); err != nil {
		t.Fatalf("a removed conveyor sink is not usable on its own: %v", err)
	}
	closeAtEnd(t, filter)
}

// Case 5.
func TestAMemberReportingClosedIsRemovedAndTheOthersGetTheEventOnce(t *testing.T) {
	checkSinkHandles(t)
	first, last := newRecordSink(), newRecordSink()
	gone := newRecordSink()
	gone.fail = func([]byte) error { return fmt.Errorf("my connection: %w", ErrClosed) }
	goneNative := newRecordSink()
	goneNative.fail = gone.fail
	goneBehindFilter := must(NewFilter(goneNative, func([]byte) bool { return true }))
	closeAtEnd(t, goneBehindFilter)
	b := must(NewBroadcaster(first, gone, goneBehindFilter, last))
	closeAtEnd(t, b)
	for i := range 3 {
		if err := b.Write(tagged(0, uint32(i))); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	for _, r := range []*recordSink{first, last} {
		got := r.taken()
		if len(got) != 3 {
			t.Fatalf("a member got %d events, want 3", len(got))
		}
		for i, e := range got {
			if _, index := untag(e); index != uint32(i) {
				t.Fatalf("event %d is %d", i, index)
			}
		}
	}
	if gone.writes.Load() != 1 || goneNative.writes.Load() != 1 {
		t.Fatalf("members answering closed were written %d and %d times, want once", gone.writes.Load(), goneNative.writes.Load())
	}
}

// Case 6.
func TestBroadcasterCloseClosesEachMemberOnce(t *testing.T) {
	checkSinkHandles(t)
	direct, behind := newRecordSink(), newRecordSink()
	filter := must(NewFilter(behind, func([]byte) bool { return true }))
	closeAtEnd(t, filter)
	b := must(NewBroadcaster(direct, filter))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if direct.closes.Load() != 1 || behind.closes.Load() != 1 {
		t.Fatalf("members closed %d and %d times, want once", direct.closes.Load(), behind.closes.Load())
	}
	for what, err := range map[string]error{
		"Add": b.Add(newRecordSink()), "Remove": b.Remove(direct), "Write": b.Write([]byte("x")),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("%s after Close = %v, want ErrClosed", what, err)
		}
	}
	if err := filter.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("a member closed by its broadcaster took a write: %v", err)
	}
}

func TestAMembershipMakingASinkWriteIntoItselfIsRefused(t *testing.T) {
	checkSinkHandles(t)
	b := must(NewBroadcaster())
	closeAtEnd(t, b)
	f := must(NewFilter(b, func([]byte) bool { return true }))
	closeAtEnd(t, f)
	if err := b.Add(b); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("adding a broadcaster to itself: %v, want ErrInvalidArgument", err)
	}
	if err := b.Add(f); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("adding a filter over the broadcaster: %v, want ErrInvalidArgument naming the cycle", err)
	}
	if err := b.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
}

// Case 7.
func TestAStalledMemberBehindAQueueDoesNotDelayTheOthers(t *testing.T) {
	checkSinkHandles(t)
	stalled, fast := newRecordSink(), newRecordSink()
	stalled.gate = newGate()
	defer stalled.gate.open()
	queue := must(NewQueueSink(stalled, 1000, OverflowBlock))
	closeAtEnd(t, queue)
	b := must(NewBroadcaster(queue, fast))
	closeAtEnd(t, b)
	for i := range 200 {
		if err := b.Write(tagged(0, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	fast.waitEvents(t, 200)
	if n := len(stalled.taken()); n != 0 {
		t.Fatalf("the stalled member took %d events before it was released", n)
	}
	stalled.gate.open()
	stalled.waitEvents(t, 200)
}

// Case 8.
func TestChannelClosedWithRoomAlwaysRefusesAndKeepsWhatItBuffered(t *testing.T) {
	ch := must(NewChannelSink(8))
	for i := range 3 {
		if err := ch.Write(tagged(0, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if err := ch.Write([]byte("late")); !errors.Is(err, ErrClosed) {
			t.Fatalf("a write after Close with room left: %v, want ErrClosed", err)
		}
	}
	var got []uint32
	for e := range ch.C() {
		_, i := untag(e)
		got = append(got, i)
	}
	if !slices.Equal(got, []uint32{0, 1, 2}) {
		t.Fatalf("read %v after close, want [0 1 2] then a closed channel", got)
	}
}

func TestClosingAChannelWakesBlockedWriters(t *testing.T) {
	ch := must(NewChannelSink(0))
	errs := make(chan error, 3)
	for range 3 {
		go func() { errs <- ch.Write([]byte("waits for a reader")) }()
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("a blocked write ended with %v, want ErrClosed", err)
			}
		case <-time.After(patience):
			t.Fatal("Close left a writer blocked")
		}
	}
	if _, open := <-ch.C(); open {
		t.Fatal("the channel is open after Close")
	}
}

func TestAChannelSinkBehindConveyorSinksGetsCopies(t *testing.T) {
	checkSinkHandles(t)
	ch := must(NewChannelSink(16))
	q := must(NewQueueSink(ch, 16, OverflowBlock))
	const events = 1000
	go func() {
		for i := range events {
			if err := q.Write(tagged(0, uint32(i))); err != nil {
				t.Error(err)
			}
		}
		if err := q.Close(); err != nil { // drains, then closes the channel sink
			t.Error(err)
		}
	}()
	next := uint32(0)
	for e := range ch.C() {
		if _, i := untag(e); i != next {
			t.Fatalf("read event %d, want %d", i, next)
		}
		next++
	}
	if next != events {
		t.Fatalf("read %d events, want %d", next, events)
	}
}

// Case 9.
func TestFilterKeepsEvens(t *testing.T) {
	checkSinkHandles(t)
	r := newRecordSink()
	f := must(NewFilter(r, func(e []byte) bool { _, i := untag(e); return i%2 == 0 }))
	closeAtEnd(t, f)
	for i := range 100 {
		if err := f.Write(tagged(0, uint32(i))); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	got := r.taken()
	if len(got) != 50 {
		t.Fatalf("%d events passed, want 50", len(got))
	}
	for k, e := range got {
		if _, i := untag(e); i != uint32(2*k) {
			t.Fatalf("passed event %d is %d", k, i)
		}
	}
	if s := must(f.Stats()); s.Kind != "filter" || s.Written != 100 || s.Forwarded != 50 || s.Filtered != 50 {
		t.Fatalf("filter stats %+v", s)
	}
}

func TestAPanickingMatcherDiscardsTheEventAndIsLogged(t *testing.T) {
	checkSinkHandles(t)
	logged := captureLog(t)
	r := newRecordSink()
	f := must(NewFilter(r, func(e []byte) bool {
		if string(e) == "boom" {
			panic("matcher bug")
		}
		return true
	}))
	closeAtEnd(t, f)
	for _, e := range []string{"a", "boom", "b"} {
		if err := f.Write([]byte(e)); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.taken(); len(got) != 2 || string(got[0]) != "a" || string(got[1]) != "b" {
		t.Fatalf("passed %q, want [a b]", got)
	}
	if !strings.Contains(logged(), "matcher bug") {
		t.Fatalf("the panic was not logged: %q", logged())
	}
}

// Case 10.
func TestQueueSinkKeepsFIFO(t *testing.T) {
	checkSinkHandles(t)
	r := newRecordSink()
	r.fail = func([]byte) error {
		time.Sleep(time.Microsecond) // a consumer slower than the writer
		return nil
	}
	q := must(NewQueueSink(r, 64, OverflowBlock))
	closeAtEnd(t, q)
	const events = 10000
	for i := range events {
		if err := q.Write(tagged(0, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	for k, e := range r.waitEvents(t, events) {
		if _, i := untag(e); i != uint32(k) {
			t.Fatalf("delivery %d is event %d", k, i)
		}
	}
}

// Case 11.
func TestQueueSinkCloseDrainsThenClosesDownstream(t *testing.T) {
	checkSinkHandles(t)
	r := newRecordSink()
	r.gate = newGate()
	q := must(NewQueueSink(r, 100, OverflowBlock))
	for i := range 50 {
		if err := q.Write(tagged(0, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	var takenAtClose atomic.Int64
	r.fail = func([]byte) error {
		if r.closes.Load() != 0 {
			takenAtClose.Add(1)
		}
		return nil
	}
	r.gate.open()
	report, err := q.CloseWithin(patience)
	if err != nil {
		t.Fatal(err)
	}
	if report != (QueueSinkReport{Delivered: 50, Dropped: 0, Drained: true}) {
		t.Fatalf("report %+v, want 50 delivered, drained", report)
	}
	if len(r.taken()) != 50 || r.closes.Load() != 1 || takenAtClose.Load() != 0 {
		t.Fatalf("downstream took %d events (%d after its close), closed %d times", len(r.taken()), takenAtClose.Load(), r.closes.Load())
	}
	if again, err := q.CloseWithin(0); err != nil || again != report {
		t.Fatalf("closing again: %+v, %v; want the same report", again, err)
	}
}

// deadSink stands for an endpoint that stopped answering: every write hangs until
// the sink is closed, then fails.
type deadSink struct {
	entered chan struct{}
	closed  chan struct{}
	once    sync.Once
}

func newDeadSink() *deadSink {
	return &deadSink{entered: make(chan struct{}, 1), closed: make(chan struct{})}
}

func (d *deadSink) Write([]byte) error {
	select {
	case d.entered <- struct{}{}:
	default:
	}
	<-d.closed
	return errors.New("the endpoint never answered")
}

func (d *deadSink) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}

// Case 12.
func TestAQueueSinkInFrontOfADeadSinkClosesWithinItsDeadlineAndReportsEveryDrop(t *testing.T) {
	checkSinkHandles(t)
	dead := newDeadSink()
	var mu sync.Mutex
	dropped := map[uint32]int{}
	dropCalls := make(chan struct{}, 1000)
	q := must(NewQueueSinkWith(dead, 1000, OverflowBlock, QueueSinkOptions{
		OnDrop: func(events [][]byte) {
			mu.Lock()
			for _, e := range events {
				_, i := untag(e)
				dropped[i]++
			}
			mu.Unlock()
			dropCalls <- struct{}{}
		},
	}))
	const events = 300
	for i := range events {
		if err := q.Write(tagged(0, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	<-dead.entered
	const deadline = 200 * time.Millisecond
	start := time.Now()
	report, err := q.CloseWithin(deadline)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if elapsed < deadline || elapsed > deadline+5*time.Second {
		t.Fatalf("CloseWithin(%v) took %v", deadline, elapsed)
	}
	if report.Drained || report.Delivered != 0 || report.Dropped < events-1 {
		t.Fatalf("report %+v: want not drained, nothing delivered, at least %d dropped", report, events-1)
	}
	// Close closed the dead sink, so its stuck write fails: that event is dropped
	// too, by the queue's thread.
	deadline2 := time.After(patience)
	for {
		mu.Lock()
		n := len(dropped)
		mu.Unlock()
		if n == events {
			break
		}
		select {
		case <-dropCalls:
		case <-deadline2:
			t.Fatalf("%d of %d events reported dropped", n, events)
		}
	}
	for i, n := range dropped {
		if n != 1 {
			t.Fatalf("event %d reported dropped %d times", i, n)
		}
	}
}

// Case 13.
func TestBoundedQueueSinkOverflowPolicies(t *testing.T) {
	checkSinkHandles(t)
	setup := func(overflow Overflow) (*recordSink, *QueueSink, *[]uint32) {
		r := newRecordSink()
		r.gate, r.entered = newGate(), make(chan struct{}, 16)
		var mu sync.Mutex
		var dropped []uint32
		q := must(NewQueueSinkWith(r, 2, overflow, QueueSinkOptions{OnDrop: func(events [][]byte) {
			mu.Lock()
			defer mu.Unlock()
			for _, e := range events {
				_, i := untag(e)
				dropped = append(dropped, i)
			}
		}}))
		closeAtEnd(t, q)
		t.Cleanup(r.gate.open)
		// Event 0 is taken by the queue's thread and held at the gate; 1 and 2 fill
		// the buffer.
		if err := q.Write(tagged(0, 0)); err != nil {
			t.Fatal(err)
		}
		<-r.entered
		for i := uint32(1); i <= 2; i++ {
			if err := q.Write(tagged(0, i)); err != nil {
				t.Fatal(err)
			}
		}
		return r, q, &dropped
	}
	indexes := func(events [][]byte) []uint32 {
		var out []uint32
		for _, e := range events {
			_, i := untag(e)
			out = append(out, i)
		}
		return out
	}

	r, q, dropped := setup(OverflowDropNewest)
	if err := q.Write(tagged(0, 3)); !errors.Is(err, ErrFull) {
		t.Fatalf("DropNewest: a write into a full queue = %v, want ErrFull", err)
	}
	if !slices.Equal(*dropped, []uint32{3}) {
		t.Fatalf("DropNewest dropped %v, want [3]", *dropped)
	}
	r.gate.open()
	if got := indexes(r.waitEvents(t, 3)); !slices.Equal(got, []uint32{0, 1, 2}) {
		t.Fatalf("DropNewest delivered %v", got)
	}

	r, q, dropped = setup(OverflowDropOldest)
	if err := q.Write(tagged(0, 3)); err != nil {
		t.Fatalf("DropOldest: %v", err)
	}
	if !slices.Equal(*dropped, []uint32{1}) {
		t.Fatalf("DropOldest dropped %v, want [1]", *dropped)
	}
	if s := must(q.Stats()); s.Dropped != 1 || s.Queued != 2 {
		t.Fatalf("DropOldest stats %+v", s)
	}
	r.gate.open()
	if got := indexes(r.waitEvents(t, 3)); !slices.Equal(got, []uint32{0, 2, 3}) {
		t.Fatalf("DropOldest delivered %v", got)
	}

	r, q, dropped = setup(OverflowBlock)
	returned := make(chan error, 1)
	go func() { returned <- q.Write(tagged(0, 3)) }()
	select {
	case err := <-returned:
		t.Fatalf("Block: a write into a full queue returned (%v) before there was room", err)
	default:
	}
	r.gate.open()
	if err := <-returned; err != nil {
		t.Fatal(err)
	}
	if got := indexes(r.waitEvents(t, 4)); !slices.Equal(got, []uint32{0, 1, 2, 3}) || len(*dropped) != 0 {
		t.Fatalf("Block delivered %v, dropped %v", got, *dropped)
	}
}

// Case 14.
func TestDownstreamErrorsAreCountedAndReported(t *testing.T) {
	checkSinkHandles(t)
	r := newRecordSink()
	r.fail = func(e []byte) error {
		if _, i := untag(e); i%3 == 0 {
			return errors.New("refused")
		}
		return nil
	}
	var mu sync.Mutex
	var dropped []uint32
	q := must(NewQueueSinkWith(r, 16, OverflowBlock, QueueSinkOptions{OnDrop: func(events [][]byte) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range events {
			_, i := untag(e)
			dropped = append(dropped, i)
		}
	}}))
	for i := range 9 {
		if err := q.Write(tagged(0, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	report := must(q.CloseWithin(patience))
	if report.Delivered != 6 || report.Dropped != 3 {
		t.Fatalf("report %+v, want 6 delivered and 3 dropped", report)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(dropped, []uint32{0, 3, 6}) {
		t.Fatalf("dropped %v, want [0 3 6]", dropped)
	}
	if s := must(q.Stats()); s.Failures != 3 || s.Dropped != 3 || s.Forwarded != 6 {
		t.Fatalf("stats after close %+v", s)
	}
}

// Case 15.
func TestEmptyPayloadsPassThroughEverySink(t *testing.T) {
	checkSinkHandles(t)
	r := newRecordSink()
	ch := must(NewChannelSink(4))
	retrying := must(NewRetryingSink(r, NewExponentialBackoff(0, time.Millisecond, time.Millisecond)))
	filter := must(NewFilter(retrying, func(e []byte) bool { return len(e) == 0 }))
	q := must(NewQueueSink(filter, 4, OverflowBlock))
	for _, s := range []Sink{retrying, filter, q} {
		closeAtEnd(t, s)
	}
	b := must(NewBroadcaster(q, ch))
	for _, e := range [][]byte{nil, {}, []byte("not empty"), {}} {
		if err := b.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	got := r.waitEvents(t, 3)
	for _, e := range got {
		if e == nil || len(e) != 0 {
			t.Fatalf("an empty event arrived as %#v", e)
		}
	}
	var sizes []int
	for e := range ch.C() {
		sizes = append(sizes, len(e))
	}
	if !slices.Equal(sizes, []int{0, 0, 9, 0}) {
		t.Fatalf("the channel got sizes %v", sizes)
	}
}

// Case 16.
func TestRetryingSinkDeliversEverythingThroughAFlakySink(t *testing.T) {
	checkSinkHandles(t)
	rng := newRand(seed(t))
	var attempts atomic.Int64
	r := newRecordSink()
	r.fail = func([]byte) error {
		n := attempts.Add(1)
		if n <= 50 || rng.Float64() < 0.9 {
			return errors.New("flaky")
		}
		return nil
	}
	s := must(NewRetryingSink(r, NewExponentialBackoff(0, time.Millisecond, time.Millisecond)))
	closeAtEnd(t, s)
	for i := range 100 {
		if err := s.Write(tagged(0, uint32(i))); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	for k, e := range r.taken() {
		if _, i := untag(e); i != uint32(k) {
			t.Fatalf("delivery %d is event %d", k, i)
		}
	}
	if n := len(r.taken()); n != 100 {
		t.Fatalf("%d events delivered, want 100", n)
	}
}

// countingRetry is a RetryFuncs counting its calls; it gives up after giveUpAfter
// failures in a row (0: never).
type countingRetry struct {
	proceeds, failures, successes atomic.Int64
	giveUpAfter                   int64
}

func (c *countingRetry) funcs() RetryFuncs {
	var inARow atomic.Int64
	return RetryFuncs{
		Proceed: func() time.Duration { c.proceeds.Add(1); return 0 },
		Failure: func() bool {
			c.failures.Add(1)
			return c.giveUpAfter > 0 && inARow.Add(1) >= c.giveUpAfter
		},
		Success: func() { c.successes.Add(1); inARow.Store(0) },
	}
}

// Case 17.
func TestDownstreamClosedIsReturnedAtOnce(t *testing.T) {
	checkSinkHandles(t)
	r := newRecordSink()
	r.fail = func([]byte) error { return ErrClosed }
	c := &countingRetry{}
	s := must(NewRetryingSink(r, c.funcs()))
	closeAtEnd(t, s)
	if err := s.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write = %v, want ErrClosed", err)
	}
	if r.writes.Load() != 1 || c.failures.Load() != 0 {
		t.Fatalf("%d attempts, %d failures reported to the strategy; want 1 and 0", r.writes.Load(), c.failures.Load())
	}
}

// Case 18.
func TestAStrategyGivingUpIsReportedToTheWriter(t *testing.T) {
	checkSinkHandles(t)
	r := newRecordSink()
	r.fail = func([]byte) error { return errors.New("down") }
	c := &countingRetry{giveUpAfter: 3}
	s := must(NewRetryingSink(r, c.funcs()))
	closeAtEnd(t, s)
	err := s.Write([]byte("x"))
	if !errors.Is(err, ErrClient) || !strings.Contains(err.Error(), "retry strategy") {
		t.Fatalf("Write = %v, want ErrClient saying the retry strategy dropped it", err)
	}
	if r.writes.Load() != 3 || c.proceeds.Load() != 3 {
		t.Fatalf("%d attempts, %d Proceed calls; want 3 and 3", r.writes.Load(), c.proceeds.Load())
	}
	if stats := must(s.Stats()); stats.Dropped != 1 {
		t.Fatalf("retrying sink stats %+v, want 1 dropped", stats)
	}
}

func TestPanicsInRetryFuncsAndGoSinksAreLogged(t *testing.T) {
	checkSinkHandles(t)
	logged := captureLog(t)
	r := newRecordSink()
	r.fail = func([]byte) error { return errors.New("down") }
	s := must(NewRetryingSink(r, RetryFuncs{
		Proceed: func() time.Duration { panic("proceed bug") },
		Failure: func() bool { panic("failure bug") },
	}))
	closeAtEnd(t, s)
	if err := s.Write([]byte("x")); !errors.Is(err, ErrClient) {
		t.Fatalf("Write = %v: a panicking Failure gives up on the event", err)
	}
	panicking := must(NewFilter(sinkFunc(func([]byte) error { panic("sink bug") }), func([]byte) bool { return true }))
	closeAtEnd(t, panicking)
	if err := panicking.Write([]byte("x")); !errors.Is(err, ErrClient) {
		t.Fatalf("Write through a panicking sink = %v, want ErrClient", err)
	}
	for _, want := range []string{"proceed bug", "failure bug", "sink bug"} {
		if !strings.Contains(logged(), want) {
			t.Fatalf("%q was not logged: %q", want, logged())
		}
	}
}

// sinkFunc is a Sink from a write function.
type sinkFunc func([]byte) error

func (f sinkFunc) Write(e []byte) error { return f(e) }
func (f sinkFunc) Close() error         { return nil }

// Case 19.
func TestCloseDuringABackoffWaitReturnsClosedPromptly(t *testing.T) {
	checkSinkHandles(t)
	r := newRecordSink()
	r.fail = func([]byte) error { return errors.New("down") }
	r.entered = make(chan struct{}, 4)
	s := must(NewRetryingSink(r, NewBreaker(1, time.Hour)))
	returned := make(chan error, 1)
	go func() { returned <- s.Write([]byte("x")) }()
	<-r.entered // the first attempt failed: the breaker now waits an hour
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-returned:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("the waiting write ended with %v, want ErrClosed", err)
		}
	case <-time.After(patience):
		t.Fatal("Close did not end the backoff wait")
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Fatalf("the write took %v to see the close", elapsed)
	}
}

// Case 20.
func TestRetryingSinkSerializesConcurrentWritersInOrder(t *testing.T) {
	checkSinkHandles(t)
	rng := newRand(seed(t))
	var rngMu sync.Mutex
	r := newRecordSink()
	r.fail = func([]byte) error {
		rngMu.Lock()
		defer rngMu.Unlock()
		if rng.Float64() < 0.3 {
			return errors.New("flaky")
		}
		return nil
	}
	s := must(NewRetryingSink(r, RetryFuncs{}))
	closeAtEnd(t, s)
	const writers, perWriter = 4, 250
	writeTaggedConcurrently(t, s, writers, perWriter)
	next := make([]uint32, writers)
	for _, e := range r.taken() {
		w, i := untag(e)
		if i != next[w] {
			t.Fatalf("writer %d: event %d delivered when %d was next", w, i, next[w])
		}
		next[w]++
	}
	for w, n := range next {
		if n != perWriter {
			t.Fatalf("writer %d: %d events delivered, want %d", w, n, perWriter)
		}
	}
}

// Case 21.
func TestBreakerWaitsAfterThresholdFailuresAndResetsOnSuccess(t *testing.T) {
	checkSinkHandles(t)
	const backoff = 300 * time.Millisecond
	var mu sync.Mutex
	var times []time.Time
	failures := 4
	r := newRecordSink()
	r.fail = func([]byte) error {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if failures > 0 {
			failures--
			return errors.New("down")
		}
		return nil
	}
	s := must(NewRetryingSink(r, NewBreaker(3, backoff)))
	closeAtEnd(t, s)
	if err := s.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(times) != 5 {
		t.Fatalf("%d attempts, want 5 (4 failures, then success)", len(times))
	}
	// Attempts 1-3 are not delayed; 4 and 5 each wait a window after the failure before.
	if d := times[2].Sub(times[0]); d >= backoff {
		t.Fatalf("the first three attempts took %v, as if the breaker waited before its threshold", d)
	}
	for k := 3; k < 5; k++ {
		if d := times[k].Sub(times[k-1]); d < backoff-time.Millisecond {
			t.Fatalf("attempt %d came %v after the failure before, want at least %v", k+1, d, backoff)
		}
	}
	// The success reset the breaker: two failures in a row are below its threshold.
	times, failures = nil, 2
	mu.Unlock()
	if err := s.Write([]byte("second")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(times) != 3 || times[2].Sub(times[0]) >= backoff {
		t.Fatalf("after a success: %d attempts over %v, want 3 without a wait", len(times), times[len(times)-1].Sub(times[0]))
	}
}

// Case 22 (the bounds and the seeded samples are tested in Rust; what matters here is
// that a long failure streak never waits beyond the maximum).
func TestExponentialBackoffStaysWithinItsMaximumAfterManyFailures(t *testing.T) {
	checkSinkHandles(t)
	const streak, maxWait = 200, 5 * time.Millisecond
	var attempts atomic.Int64
	r := newRecordSink()
	r.fail = func([]byte) error {
		if attempts.Add(1) <= streak {
			return errors.New("down")
		}
		return nil
	}
	s := must(NewRetryingSink(r, NewExponentialBackoff(time.Millisecond, time.Millisecond, maxWait)))
	closeAtEnd(t, s)
	start := time.Now()
	if err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// 200 waits below 5 ms each: an overflowing bound (2^199 ms) would never end.
	if elapsed := time.Since(start); elapsed > streak*maxWait+10*time.Second {
		t.Fatalf("%d failures took %v, more than %d waits of at most %v", streak, elapsed, streak, maxWait)
	}
}

func TestConstructorsRefuseBadArguments(t *testing.T) {
	checkSinkHandles(t)
	r := newRecordSink()
	var nilRecord *recordSink
	closed := must(NewFilter(r, func([]byte) bool { return true }))
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{
		"nil dst":            second(NewQueueSink(nil, 1, OverflowBlock)),
		"typed nil dst":      second(NewFilter(nilRecord, func([]byte) bool { return true })),
		"zero capacity":      second(NewQueueSink(r, 0, OverflowBlock)),
		"unknown overflow":   second(NewQueueSink(r, 1, Overflow(7))),
		"negative timeout":   second(NewQueueSinkWith(r, 1, OverflowBlock, QueueSinkOptions{CloseTimeout: -1})),
		"nil match":          second(NewFilter(r, nil)),
		"nil strategy":       second(NewRetryingSink(r, nil)),
		"nil breaker":        second(NewRetryingSink(r, (*Breaker)(nil))),
		"negative threshold": second(NewRetryingSink(r, NewBreaker(-1, time.Second))),
		"negative backoff":   second(NewRetryingSink(r, NewExponentialBackoff(0, -time.Second, time.Second))),
		"negative capacity":  second(NewChannelSink(-1)),
		"nil member":         second(NewBroadcaster(r, nil)),
	} {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", what, err)
		}
	}
	if _, err := NewQueueSink(closed, 1, OverflowBlock); !errors.Is(err, ErrClosed) {
		t.Errorf("a closed dst: %v, want ErrClosed", err)
	}
	if r.closes.Load() != 1 || len(r.taken()) != 0 {
		t.Fatalf("refused constructors touched the destination: %d closes, %d events", r.closes.Load(), len(r.taken()))
	}
}

func second[T any](_ T, err error) error { return err }

func TestStatsNestTheWrappedSinks(t *testing.T) {
	checkSinkHandles(t)
	r := newRecordSink()
	f := must(NewFilter(r, func(e []byte) bool { return len(e) > 1 }))
	closeAtEnd(t, f)
	q := must(NewQueueSink(f, 8, OverflowBlock))
	for _, e := range []string{"a", "bb", "cc"} {
		if err := q.Write([]byte(e)); err != nil {
			t.Fatal(err)
		}
	}
	must(q.CloseWithin(patience))
	s := must(q.Stats())
	if s.Kind != "queue" || s.Written != 3 || s.Forwarded != 3 || len(s.Inner) != 1 {
		t.Fatalf("queue stats %+v", s)
	}
	inner := s.Inner[0]
	if inner.Kind != "filter" || inner.Filtered != 1 || inner.Forwarded != 2 || len(inner.Inner) != 1 || inner.Inner[0].Kind != "custom" {
		t.Fatalf("filter stats %+v", inner)
	}
}

func TestASinkDroppedWithoutCloseIsReleasedByTheGarbageCollector(t *testing.T) {
	checkSinkHandles(t)
	r := newRecordSink()
	var dropped atomic.Int64
	func() {
		r.gate = newGate()
		q := must(NewQueueSinkWith(r, 8, OverflowBlock, QueueSinkOptions{
			OnDrop: func(events [][]byte) { dropped.Add(int64(len(events))) },
		}))
		r.entered = make(chan struct{}, 8)
		for i := range 3 {
			if err := q.Write(tagged(0, uint32(i))); err != nil {
				t.Fatal(err)
			}
		}
		<-r.entered
	}()
	r.gate.open()
	// Unreachable now: its cleanup releases the last reference, which (the queue was
	// never closed) drops what it still buffers, reported, and closes the destination.
	deadline := time.Now().Add(patience)
	for r.closes.Load() == 0 || int64(len(r.taken()))+dropped.Load() != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the unreachable queue sink: %d closes of its destination, %d delivered + %d dropped of 3",
				r.closes.Load(), len(r.taken()), dropped.Load())
		}
		runtime.GC()
		time.Sleep(time.Millisecond) // polling: cleanups run on their own goroutine
	}
}
