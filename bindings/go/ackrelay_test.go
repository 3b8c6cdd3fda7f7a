package conveyor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// steppedClient holds each Publish until the test lets that batch through.
type steppedClient struct {
	recordingClient
	entered chan int
	next    chan struct{}
}

func (c *steppedClient) Publish(events [][]byte) (int, error) {
	c.entered <- len(events)
	<-c.next
	return c.recordingClient.Publish(events)
}

// ACKs that arrive while a PublishBatch waits for room are relayed to the producer's
// goroutine side; they must reach OnACK while the call still waits, not when it ends.
func TestACKsRelayedDuringALongPublishBatchAreNotHeldBack(t *testing.T) {
	client := &steppedClient{recordingClient: recordingClient{ledger: newLedger()}, entered: make(chan int, 1),
		next: make(chan struct{})}
	p := startPipeline(t, Config{QueueEvents: 4, BulkMaxSize: 4, FlushMinEvents: 1}, client)
	o := newOutcomes()
	prod := mustProducer(t, p, o.config(false))
	batch := make([][]byte, 12)
	for i := range batch {
		batch[i] = event(uint64(i), 16)
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := prod.PublishBatch(patientContext(t), batch)
		done <- result{n, err}
	}()
	// Each round: the client holds a batch (so the queue is full and PublishBatch
	// waits), then lets it through; its ACK must arrive before the next round.
	for acked := 0; acked < len(batch); {
		acked += <-client.entered
		client.next <- struct{}{}
		o.waitUntil(t, fmt.Sprintf("OnACK for the first %d events", acked), func(a int, _ []uint64) bool {
			return a == acked
		})
	}
	if r := <-done; r.n != len(batch) || r.err != nil {
		t.Fatalf("PublishBatch: %d, %v", r.n, r.err)
	}
	mustFlush(t, p)
	if acked, dropped := o.totals(); acked != len(batch) || len(dropped) != 0 {
		t.Fatalf("acked %d, dropped %d", acked, len(dropped))
	}
}

// OnACK runs on the dispatcher thread or, for ACKs relayed during a publish call, on
// the producer's acker goroutine or in Flush. From either place, callbacks that
// publish to their own producer and to another one (whose callbacks publish back)
// are served, Flush and Close are refused, and every event gets one outcome.
func TestCallbacksPublishingToEachOtherFromEveryPlaceTheyRun(t *testing.T) {
	l := newLedger()
	p := startPipeline(t, fastRetries(Config{QueueEvents: 64, BulkMaxSize: 16}), &recordingClient{ledger: l})
	const (
		producers    = 2
		batches      = 300
		batchEvents  = 8
		fromCallback = 500 // events each producer's OnACK publishes, one per call
	)
	var (
		prods     [producers]*Producer
		acked     [producers]atomic.Int64
		published [producers]atomic.Int64
		extra     [producers]atomic.Int64
		refusals  sync.Map // error text -> true, for calls that were not refused
		nextID    atomic.Uint64
	)
	for i := range prods {
		other := (i + 1) % producers
		prods[i] = mustProducer(t, p, ProducerConfig{OnACK: func(n int) {
			acked[i].Add(int64(n))
			if err := p.Flush(context.Background()); !errors.Is(err, ErrInvalidArgument) {
				refusals.Store(fmt.Sprintf("Flush from OnACK: %v", err), true)
			}
			if err := p.Close(0); !errors.Is(err, ErrInvalidArgument) {
				refusals.Store(fmt.Sprintf("Close from OnACK: %v", err), true)
			}
			for _, target := range []int{i, other} {
				if extra[target].Add(1) > fromCallback {
					continue
				}
				ev := [][]byte{event(nextID.Add(1), 16)}
				if n, err := prods[target].PublishBatch(context.Background(), ev); n != 1 || err != nil {
					refusals.Store(fmt.Sprintf("PublishBatch from OnACK: %d, %v", n, err), true)
					continue
				}
				published[target].Add(1)
			}
		}})
	}
	var wg sync.WaitGroup
	for i, prod := range prods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := make([][]byte, batchEvents)
			for range batches {
				for j := range batch {
					batch[j] = event(nextID.Add(1), 16)
				}
				if n, err := prod.PublishBatch(patientContext(t), batch); n != batchEvents || err != nil {
					t.Errorf("producer %d: PublishBatch: %d, %v", i, n, err)
					return
				}
				published[i].Add(batchEvents)
			}
		}()
	}
	wg.Wait()
	// Callbacks go on publishing until each producer's share is used up; Flush
	// returns once what was accepted before it has been acknowledged, so flush until
	// a Flush saw no new event accepted.
	for {
		before := published[0].Load() + published[1].Load()
		mustFlush(t, p)
		if published[0].Load()+published[1].Load() == before {
			break
		}
	}
	refusals.Range(func(k, _ any) bool {
		t.Error(k)
		return true
	})
	for i := range prods {
		if a, want := acked[i].Load(), published[i].Load(); a != want {
			t.Errorf("producer %d: acked %d of %d published", i, a, want)
		}
	}
	delivered, _, bad := l.snapshot()
	if len(bad) > 0 {
		t.Fatal(bad[0])
	}
	total := published[0].Load() + published[1].Load()
	if int64(len(delivered)) != total {
		t.Fatalf("%d distinct events delivered, %d published", len(delivered), total)
	}
}
