package conveyor

import (
	"bytes"
	"sync"
)

// ChannelSink hands the events written to it to the application through a Go
// channel (C). A write copies the event and waits for room in the channel; Close
// ends the waits with ErrClosed and closes the channel once the writes in progress
// have returned: the reader gets every event buffered before, then sees the channel
// closed. Writes after Close fail with ErrClosed.
type ChannelSink struct {
	events chan []byte
	// done is closed first by Close: it wakes writers waiting for room.
	done      chan struct{}
	closeOnce sync.Once
	// mu is held for reading by each write, for writing by Close when it closes
	// events, so that no write can send on a closed channel.
	mu     sync.RWMutex
	closed bool
}

// NewChannelSink returns a channel sink buffering up to capacity events (0: a write
// waits for a reader).
func NewChannelSink(capacity int) (*ChannelSink, error) {
	if capacity < 0 {
		return nil, goError(ErrInvalidArgument, "a negative channel capacity (%d)", capacity)
	}
	return &ChannelSink{events: make(chan []byte, capacity), done: make(chan struct{})}, nil
}

// C is the channel the events arrive on, each a copy the reader owns.
func (s *ChannelSink) C() <-chan []byte { return s.events }

// Write copies event into the channel, waiting for room.
func (s *ChannelSink) Write(event []byte) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errSinkClosed()
	}
	e := bytes.Clone(event)
	if e == nil {
		e = []byte{}
	}
	select {
	case s.events <- e:
		return nil
	case <-s.done:
		return errSinkClosed()
	}
}

// Close refuses later writes, ends the waiting ones and closes C. Closing again does
// nothing.
func (s *ChannelSink) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.mu.Lock()
		s.closed = true
		close(s.events)
		s.mu.Unlock()
	})
	return nil
}
