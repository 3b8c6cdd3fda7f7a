package conveyor

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestAPipelineAsASink(t *testing.T) {
	checkSinkHandles(t)
	l := newLedger()
	p := startPipeline(t, fastRetries(Config{}), &recordingClient{ledger: l})
	o := newOutcomes()
	s := must(p.AsSinkWith(PipelineSinkConfig{Producer: o.config(false)}))
	const events = 100
	for i := range events {
		if err := s.Write(event(uint64(i), 32)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil { // closes the pipeline, delivering first
		t.Fatal(err)
	}
	_, order, bad := l.snapshot()
	if len(bad) > 0 || len(order) != events {
		t.Fatalf("delivered %d events (%v corrupt), want %d", len(order), bad, events)
	}
	for i, id := range order {
		if id != uint64(i) {
			t.Fatalf("delivery %d is event %d", i, id)
		}
	}
	o.waitUntil(t, "every ACK", func(acked int, dropped []uint64) bool { return acked == events })
	if stats := must(s.Stats()); stats.Kind != "pipeline" || stats.Written != events || stats.Forwarded != events {
		t.Fatalf("pipeline sink stats %+v", stats)
	}
	if err := s.Write([]byte("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close = %v, want ErrClosed", err)
	}
	if err := p.Flush(patientContext(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("the pipeline is still open after its sink closed: Flush = %v", err)
	}
}

func TestAPipelineSinkWaitsItsPublishTimeoutForRoom(t *testing.T) {
	checkSinkHandles(t)
	client := newBlockingClient()
	defer client.gate.open()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 4, BulkMaxSize: 1}), client)
	s := must(p.AsSinkWith(PipelineSinkConfig{PublishTimeout: 20 * time.Millisecond}))
	closeAtEnd(t, s)
	for i := 0; ; i++ {
		err := s.Write([]byte("x"))
		if errors.Is(err, ErrTimeout) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i > 100 {
			t.Fatal("the pipeline never ran out of room")
		}
	}
	client.gate.open()
}

func TestASinkServesAsAClient(t *testing.T) {
	checkSinkHandles(t)
	r := newRecordSink()
	ch := must(NewChannelSink(1024))
	p := startPipeline(t, fastRetries(Config{Mode: LoadBalance}), SinkClient(r))
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))
	ctx := patientContext(t)
	for i := range 50 {
		if err := prod.Publish(ctx, tagged(0, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	mustFlush(t, p)
	for k, e := range r.waitEvents(t, 50) {
		if _, i := untag(e); i != uint32(k) {
			t.Fatalf("delivery %d is event %d", k, i)
		}
	}
	id, err := p.AddClient(SinkClient(ch))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.RemoveClient(1); err != nil { // the record sink: the channel takes over
		t.Fatal(err)
	}
	for i := 50; i < 60; i++ {
		if err := prod.Publish(ctx, tagged(0, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	mustFlush(t, p)
	for i := 50; i < 60; i++ {
		if _, got := untag(<-ch.C()); got != uint32(i) {
			t.Fatalf("the sink added as client %d got event %d, want %d", id, got, i)
		}
	}
	if acked, dropped := o.totals(); acked != 60 || len(dropped) != 0 {
		t.Fatalf("acked %d, dropped %d; want 60, 0", acked, len(dropped))
	}
	if r.closes.Load() != 0 {
		t.Fatal("the pipeline closed a sink serving as its client")
	}
	closeAtEnd(t, ch)
}

func TestAClosedSinkClientCountsAsBrokenAndEventsGoElsewhere(t *testing.T) {
	checkSinkHandles(t)
	closed := newRecordSink()
	closed.fail = func([]byte) error { return ErrClosed }
	closedQueue := must(NewQueueSink(newRecordSink(), 4, OverflowBlock))
	if err := closedQueue.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewPipeline(Config{}, SinkClient(closedQueue)); !errors.Is(err, ErrClosed) {
		t.Fatalf("a released sink as a client: %v, want ErrClosed", err)
	}
	live := newRecordSink()
	p := startPipeline(t, fastRetries(Config{Mode: Failover, FailoverPolicy: FailoverOrdered, MaxRetries: Retries(-1)}),
		SinkClient(closed), SinkClient(live))
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))
	ctx := patientContext(t)
	for i := range 20 {
		if err := prod.Publish(ctx, tagged(0, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	mustFlush(t, p)
	if got := len(live.waitEvents(t, 20)); got != 20 || len(closed.taken()) != 0 {
		t.Fatalf("the live sink got %d events, the closed one %d", got, len(closed.taken()))
	}
	if acked, _ := o.totals(); acked != 20 {
		t.Fatalf("acked %d, want 20", acked)
	}
}

func TestAPipelineSinkCannotServeItsOwnPipeline(t *testing.T) {
	checkSinkHandles(t)
	p := startPipeline(t, fastRetries(Config{Mode: LoadBalance}), &recordingClient{ledger: newLedger()})
	s := must(p.AsSink())
	closeAtEnd(t, s)
	q := must(NewQueueSink(s, 4, OverflowBlock))
	closeAtEnd(t, q)
	for _, c := range []Sink{s, q} {
		if _, err := p.AddClient(SinkClient(c)); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("%T writing into the pipeline as its client: %v, want ErrInvalidArgument", c, err)
		}
	}
}

// deadClient is an endpoint whose every connect fails.
type deadClient struct{ connects atomic.Int64 }

func (c *deadClient) Connect(time.Duration) error {
	c.connects.Add(1)
	return errors.New("connection refused")
}
func (c *deadClient) Close() error                  { return nil }
func (c *deadClient) Publish([][]byte) (int, error) { return 0, errors.New("not connected") }

func TestABroadcasterOfTwoPipelinesKeepsDeliveringWhenOneOutputIsDead(t *testing.T) {
	checkSinkHandles(t)
	liveLedger := newLedger()
	live := startPipeline(t, fastRetries(Config{Mode: LoadBalance, QueueEvents: 256}),
		&recordingClient{ledger: liveLedger}, &recordingClient{ledger: liveLedger})
	deadHosts := []*deadClient{{}, {}}
	dead := startPipeline(t, fastRetries(Config{Mode: Failover, MaxRetries: Retries(-1), QueueEvents: 64}),
		deadHosts[0], deadHosts[1])

	liveOutcomes, deadOutcomes := newOutcomes(), newOutcomes()
	liveSink := must(live.AsSinkWith(PipelineSinkConfig{Producer: liveOutcomes.config(false)}))
	deadSink := must(dead.AsSinkWith(PipelineSinkConfig{Producer: deadOutcomes.config(false), CloseTimeout: 50 * time.Millisecond}))
	var deadQueueDrops atomic.Int64
	liveQueue := must(NewQueueSink(liveSink, 256, OverflowBlock))
	// The dead output's queue sheds load instead of holding back the broadcaster.
	deadQueue := must(NewQueueSinkWith(deadSink, 256, OverflowDropNewest, QueueSinkOptions{
		CloseTimeout: 100 * time.Millisecond,
		OnDrop:       func(events [][]byte) { deadQueueDrops.Add(int64(len(events))) },
	}))
	fanout := must(NewBroadcaster(liveQueue, deadQueue))

	const events = 5000
	for i := range events {
		if err := fanout.Write(event(uint64(i), 64)); err != nil {
			t.Fatal(err)
		}
	}
	// Every event reaches the live output, in order, while the other one is dead.
	liveOutcomes.waitUntil(t, "the live output's ACKs", func(acked int, _ []uint64) bool { return acked == events })
	_, order, bad := liveLedger.snapshot()
	if len(bad) > 0 || len(order) != events {
		t.Fatalf("the live output delivered %d events (%d corrupt), want %d", len(order), len(bad), events)
	}
	if deadHosts[0].connects.Load() == 0 || deadHosts[1].connects.Load() == 0 {
		t.Fatal("the dead output never tried both of its hosts")
	}

	if err := fanout.Close(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []Sink{liveQueue, deadQueue, liveSink, deadSink} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// The dead output accounts for every event: dropped by its queue sink, or
	// accepted by its pipeline and dropped when it closed.
	deadOutcomes.waitUntil(t, "the dead output's drops", func(acked int, dropped []uint64) bool {
		return int64(len(dropped))+deadQueueDrops.Load() == events
	})
	if acked, dropped := deadOutcomes.totals(); acked != 0 || int64(len(dropped))+deadQueueDrops.Load() != events {
		t.Fatalf("dead output: %d acked, %d dropped by the pipeline + %d by its queue; want 0 and %d in all",
			acked, len(dropped), deadQueueDrops.Load(), events)
	}
	if acked, dropped := liveOutcomes.totals(); acked != events || len(dropped) != 0 {
		t.Fatalf("live output: acked %d, dropped %d", acked, len(dropped))
	}
}

func TestSinkClientUsedAsAPlainClient(t *testing.T) {
	r := newRecordSink()
	r.fail = func(e []byte) error {
		switch string(e) {
		case "refused":
			return errors.New("refused")
		case "gone":
			return ErrClosed
		}
		return nil
	}
	c := SinkClient(r)
	if n, err := c.Publish([][]byte{[]byte("a"), []byte("refused"), []byte("b")}); n != 1 || !errors.Is(err, ErrRetry) {
		t.Fatalf("a failed write: (%d, %v), want (1, ErrRetry)", n, err)
	}
	if n, err := c.Publish([][]byte{[]byte("gone")}); n != 0 || !errors.Is(err, ErrClosed) || errors.Is(err, ErrRetry) {
		t.Fatalf("a closed sink: (%d, %v), want (0, ErrClosed: a broken connection)", n, err)
	}
}
