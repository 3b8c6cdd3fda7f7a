package conveyor

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recordSink is a Sink of the tests: it keeps a copy of every event it took. fail,
// when set, decides each write's outcome (an error refuses the event); gate, when
// set, holds every write until it opens; entered hears about every write that began.
type recordSink struct {
	mu      sync.Mutex
	events  [][]byte
	changed chan struct{}
	writes  atomic.Int64
	closes  atomic.Int64
	fail    func(event []byte) error
	gate    *gate
	entered chan struct{}
}

func newRecordSink() *recordSink { return &recordSink{changed: make(chan struct{}, 1)} }

func (s *recordSink) Write(event []byte) error {
	s.writes.Add(1)
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	if s.gate != nil {
		s.gate.wait()
	}
	if s.fail != nil {
		if err := s.fail(event); err != nil {
			s.notify()
			return err
		}
	}
	s.mu.Lock()
	s.events = append(s.events, bytes.Clone(event))
	s.mu.Unlock()
	s.notify()
	return nil
}

func (s *recordSink) Close() error {
	s.closes.Add(1)
	s.notify()
	return nil
}

func (s *recordSink) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *recordSink) taken() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.events...)
}

// waitFor waits until cond holds, re-checking whenever the sink saw a write or a close.
func (s *recordSink) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(patience)
	for !cond() {
		select {
		case <-s.changed:
		case <-deadline:
			t.Fatalf("waiting for %s: not there after %v (%d events taken, %d closes)",
				what, patience, len(s.taken()), s.closes.Load())
		}
	}
}

func (s *recordSink) waitEvents(t *testing.T, n int) [][]byte {
	t.Helper()
	s.waitFor(t, "events", func() bool { return len(s.taken()) >= n })
	got := s.taken()
	if len(got) != n {
		t.Fatalf("the sink took %d events, want %d", len(got), n)
	}
	return got
}

// tagged is an event naming its writer and its index among that writer's events.
func tagged(writer, index uint32) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, writer)
	binary.BigEndian.PutUint32(b[4:], index)
	return b
}

// writeTaggedConcurrently has writers goroutines each write perWriter tagged events
// to sink, in index order, and returns when all are done.
func writeTaggedConcurrently(t *testing.T, sink Sink, writers, perWriter int) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				if err := sink.Write(tagged(uint32(w), uint32(i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func untag(b []byte) (writer, index uint32) {
	return binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
}

// checkSinkHandles fails the test unless, once its sinks are closed (cleanups
// registered after this one run first), every cgo handle it created is deleted.
// Conveyor's own threads (a queue sink's, a pipeline's) let go of what they hold on
// their own schedule, so this waits for that, within patience.
func checkSinkHandles(t *testing.T) {
	t.Helper()
	before := liveHandles.Load()
	t.Cleanup(func() {
		deadline := time.Now().Add(patience)
		for liveHandles.Load() != before {
			if time.Now().After(deadline) {
				t.Errorf("%d cgo handles still live %v after the test (before %d, now %d)",
					liveHandles.Load()-before, patience, before, liveHandles.Load())
				return
			}
			time.Sleep(time.Millisecond) // polling the condition: no event marks it
		}
	})
}

// closeAtEnd closes s when the test ends.
func closeAtEnd(t *testing.T, s Sink) {
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close of %T: %v", s, err)
		}
	})
}

// must returns v, or fails the test (by a panic: it takes a call's two results).
func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}

// captureLog collects what the standard log package prints during the test (where
// sinks report panics).
func captureLog(t *testing.T) func() string {
	var mu sync.Mutex
	var buf strings.Builder
	previous := log.Writer()
	log.SetOutput(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}))
	t.Cleanup(func() { log.SetOutput(previous) })
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		return buf.String()
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
