package conveyor

// #include "shims.h"
import "C"

import (
	"math"
	"runtime"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"time"
)

// ---------------------------------------------------------------- Broadcaster

// Broadcaster writes every event to every member, in member order (fan-out). A write
// succeeds whatever the members answer (their failures are counted in Stats); a
// member answering ErrClosed is removed, and every other member still gets that event
// exactly once. Membership changes never wait for a write in progress: wrap slow
// members in a QueueSink so that none holds back the others. Close closes every
// member once.
type Broadcaster struct {
	nativeSink
}

// memberSet holds a Broadcaster's C references to the Sinks of yours among its
// members, so that Remove can name them.
type memberSet struct {
	mu      sync.Mutex
	members []goMember
}

type goMember struct {
	sink Sink
	c    *C.conveyor_sink
}

// NewBroadcaster returns a broadcaster over members (a sink given twice is kept once).
func NewBroadcaster(members ...Sink) (*Broadcaster, error) {
	runtime.LockOSThread()
	var c *C.conveyor_sink
	rc := C.conveyor_broadcaster_new(nil, 0, &c)
	var err error
	if rc != C.CONVEYOR_OK {
		err = lastError(rc)
	}
	runtime.UnlockOSThread()
	if err != nil {
		return nil, err
	}
	b := &Broadcaster{}
	b.ref = newSinkRef(b, c)
	b.ref.members = &memberSet{}
	for _, m := range members {
		if err := b.Add(m); err != nil {
			b.ref.release()
			return nil, err
		}
	}
	return b, nil
}

// Add adds member; adding a member already there does nothing (a Sink of yours is
// recognised with ==). Errors: ErrClosed after Close, ErrInvalidArgument when the
// member writes into this broadcaster (directly or through other sinks and
// pipelines).
func (b *Broadcaster) Add(member Sink) error {
	defer runtime.KeepAlive(b)
	r := b.ref
	if !r.acquire() {
		return errSinkClosed()
	}
	defer r.done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if _, ok := member.(native); !ok {
		return r.members.add(r.c, member)
	}
	m, err := borrow(member, "the member")
	if err != nil {
		return err
	}
	defer m.giveBack()
	if rc := C.conveyor_broadcaster_add(r.c, m.c); rc != C.CONVEYOR_OK {
		return lastError(rc)
	}
	return nil
}

// Remove removes member without closing it; an unknown member is ignored. Writes
// starting after Remove returned do not reach it. ErrClosed after Close.
func (b *Broadcaster) Remove(member Sink) error {
	defer runtime.KeepAlive(b)
	r := b.ref
	if !r.acquire() {
		return errSinkClosed()
	}
	defer r.done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	n, ok := member.(native)
	if !ok {
		return r.members.remove(r.c, member)
	}
	mr := n.native().ref
	if !mr.acquire() {
		// A closed member: the broadcaster drops it at its next write.
		return nil
	}
	runtime.KeepAlive(member)
	defer mr.done()
	if rc := C.conveyor_broadcaster_remove(r.c, mr.c); rc != C.CONVEYOR_OK {
		return lastError(rc)
	}
	return nil
}

// add adds a Sink of yours to the broadcaster bc, once.
func (m *memberSet) add(bc *C.conveyor_sink, s Sink) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, x := range m.members {
		if sameSink(x.sink, s) {
			return nil
		}
	}
	w, err := borrow(s, "the member")
	if err != nil {
		return err
	}
	if rc := C.conveyor_broadcaster_add(bc, w.c); rc != C.CONVEYOR_OK {
		err := lastError(rc)
		w.giveBack()
		return err
	}
	m.members = append(m.members, goMember{sink: s, c: w.c})
	return nil
}

// remove removes a Sink of yours from the broadcaster bc, if it is a member.
func (m *memberSet) remove(bc *C.conveyor_sink, s Sink) error {
	if s == nil {
		return goError(ErrInvalidArgument, "the member is a nil Sink")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, x := range m.members {
		if !sameSink(x.sink, s) {
			continue
		}
		var err error
		if rc := C.conveyor_broadcaster_remove(bc, x.c); rc != C.CONVEYOR_OK {
			err = lastError(rc)
		}
		C.conveyor_sink_free(x.c)
		m.members = append(m.members[:i], m.members[i+1:]...)
		return err
	}
	return nil
}

func (m *memberSet) free() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, x := range m.members {
		C.conveyor_sink_free(x.c)
	}
	m.members = nil
}

// ---------------------------------------------------------------- QueueSink

// Overflow is what a full QueueSink does with a new event.
type Overflow int

const (
	// OverflowBlock: the writer waits for room (back-pressure).
	OverflowBlock Overflow = iota
	// OverflowDropNewest: the new event is dropped (reported to OnDrop) and Write
	// returns an error matching ErrFull.
	OverflowDropNewest
	// OverflowDropOldest: the oldest buffered event is dropped (reported to OnDrop)
	// to make room; the write succeeds.
	OverflowDropOldest
)

// QueueSinkOptions are the optional settings of a QueueSink.
type QueueSinkOptions struct {
	// CloseTimeout is how long Close delivers what is buffered before dropping the
	// rest (zero: 30 s).
	CloseTimeout time.Duration
	// OnDrop hears about every event the queue gives up on: overflow, a failed
	// delivery, the close deadline. The views are valid only during the call (copy
	// what you keep). It runs on the queue's thread, on a writer's goroutine
	// (overflow) or on the one closing the queue, possibly concurrently.
	OnDrop func(events [][]byte)
}

// QueueSinkReport is what a QueueSink did over its life, as Close found it.
type QueueSinkReport struct {
	Delivered uint64 // events delivered to the destination
	Dropped   uint64 // events dropped (each one reported to OnDrop)
	Drained   bool   // the buffer was empty before the close deadline
}

// QueueSink buffers up to a bound and delivers to its destination, in order, from a
// thread of its own: writers never wait on the destination (unless the buffer is full
// and the policy is OverflowBlock). A delivery that fails is counted as dropped and
// reported to OnDrop.
type QueueSink struct {
	nativeSink
	closeTimeout time.Duration
	report       atomic.Pointer[QueueSinkReport]
}

type dropBox struct {
	onDrop func([][]byte)
	log    *logSink
}

// NewQueueSink returns a queue of capacity events (at least 1) in front of dst.
func NewQueueSink(dst Sink, capacity int, overflow Overflow) (*QueueSink, error) {
	return NewQueueSinkWith(dst, capacity, overflow, QueueSinkOptions{})
}

// NewQueueSinkWith is NewQueueSink with options.
func NewQueueSinkWith(dst Sink, capacity int, overflow Overflow, opts QueueSinkOptions) (*QueueSink, error) {
	if capacity < 1 {
		return nil, goError(ErrInvalidArgument, "a queue sink's capacity must be at least 1, got %d", capacity)
	}
	if overflow < OverflowBlock || overflow > OverflowDropOldest {
		return nil, goError(ErrInvalidArgument, "unknown Overflow %d", int(overflow))
	}
	if opts.CloseTimeout < 0 {
		return nil, goError(ErrInvalidArgument, "a negative CloseTimeout (%v)", opts.CloseTimeout)
	}
	closeTimeout := opts.CloseTimeout
	if closeTimeout == 0 {
		closeTimeout = C.CONVEYOR_SINK_CLOSE_TIMEOUT_MS * time.Millisecond
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	d, err := borrow(dst, "dst")
	if err != nil {
		return nil, err
	}
	defer d.giveBack()
	var h C.uintptr_t
	if opts.OnDrop != nil {
		h = C.uintptr_t(newHandle(&dropBox{onDrop: opts.OnDrop, log: sinkLog}))
	}
	var c *C.conveyor_sink
	if rc := C.conveyor_go_queue_sink_new(d.c, C.size_t(capacity), C.uint32_t(overflow), durationMs(closeTimeout), h, &c); rc != C.CONVEYOR_OK {
		err := lastError(rc)
		if h != 0 {
			deleteHandle(cgo.Handle(h))
		}
		return nil, err
	}
	q := &QueueSink{closeTimeout: closeTimeout}
	q.ref = newSinkRef(q, c)
	return q, nil
}

// Close is CloseWithin(the CloseTimeout of its options).
func (q *QueueSink) Close() error {
	_, err := q.CloseWithin(q.closeTimeout)
	return err
}

// CloseWithin stops accepting events, delivers what is buffered for up to timeout,
// drops (reporting to OnDrop) the rest, closes the destination, gives a write still
// in progress timeout again to return (closing the destination usually ends it) and
// releases the queue. It returns within twice timeout even when the destination is
// stuck (its write in progress finishes on its own). Calling it again returns the
// same report.
func (q *QueueSink) CloseWithin(timeout time.Duration) (QueueSinkReport, error) {
	defer runtime.KeepAlive(q)
	r := q.ref
	if !r.acquire() {
		if report := q.report.Load(); report != nil {
			return *report, nil
		}
		return QueueSinkReport{}, errSinkClosed()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var c C.conveyor_queue_sink_report
	if rc := C.conveyor_queue_sink_close(r.c, durationMs(timeout), &c); rc != C.CONVEYOR_OK {
		err := lastError(rc)
		r.done()
		return QueueSinkReport{}, err
	}
	report := QueueSinkReport{Delivered: uint64(c.delivered), Dropped: uint64(c.dropped), Drained: c.drained != 0}
	q.report.Store(&report)
	r.closed()
	return report, nil
}

// ---------------------------------------------------------------- Filter

// Filter forwards the events match accepts to its destination and discards the
// others (the write still succeeds; counted as Filtered). Close closes the
// destination.
type Filter struct {
	nativeSink
}

type matcherBox struct {
	match func([]byte) bool
	log   *logSink
}

// NewFilter returns a filter in front of dst. match is called on the writer's
// goroutine or conveyor thread, possibly concurrently; the event is valid only during
// the call. A panic in match is logged and discards the event.
func NewFilter(dst Sink, match func(event []byte) bool) (*Filter, error) {
	if match == nil {
		return nil, goError(ErrInvalidArgument, "a nil match function")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	d, err := borrow(dst, "dst")
	if err != nil {
		return nil, err
	}
	defer d.giveBack()
	h := newHandle(&matcherBox{match: match, log: sinkLog})
	var c *C.conveyor_sink
	if rc := C.conveyor_go_filter_new(d.c, C.uintptr_t(h), &c); rc != C.CONVEYOR_OK {
		err := lastError(rc)
		deleteHandle(h)
		return nil, err
	}
	f := &Filter{}
	f.ref = newSinkRef(f, c)
	return f, nil
}

// ---------------------------------------------------------------- RetryingSink

// RetryStrategy decides when a RetryingSink tries again and when it gives up:
// NewBreaker, NewExponentialBackoff or RetryFuncs. A strategy is a description:
// every RetryingSink made with it keeps a state of its own.
type RetryStrategy interface {
	newCStrategy() (*C.conveyor_retry_strategy, error)
}

// Breaker: after Threshold failed attempts in a row, at most one attempt per backoff
// window (each failed attempt starts a new one); a success resets it. It never gives
// up on an event.
type Breaker struct {
	threshold int
	backoff   time.Duration
}

// NewBreaker returns a breaker opening after threshold failures in a row, for
// backoff (rounded up to a millisecond) after each failure.
func NewBreaker(threshold int, backoff time.Duration) *Breaker {
	return &Breaker{threshold: threshold, backoff: backoff}
}

func (b *Breaker) newCStrategy() (*C.conveyor_retry_strategy, error) {
	if b.threshold < 0 || b.threshold > math.MaxUint32 || b.backoff < 0 {
		return nil, goError(ErrInvalidArgument, "NewBreaker(%d, %v): the threshold must be in [0, 2^32) and the backoff not negative",
			b.threshold, b.backoff)
	}
	return strategyOrPanic(C.conveyor_breaker_new(C.uint32_t(b.threshold), durationMs(b.backoff)))
}

// ExponentialBackoff: full-jitter exponential backoff. After n failed attempts in a
// row the wait is uniform in [0, min(base + factor*2^(n-1), max)), however many
// failures (no overflow); a success resets it. It never gives up on an event.
type ExponentialBackoff struct {
	base, factor, max time.Duration
}

// NewExponentialBackoff returns the strategy (durations rounded up to milliseconds).
func NewExponentialBackoff(base, factor, max time.Duration) *ExponentialBackoff {
	return &ExponentialBackoff{base: base, factor: factor, max: max}
}

func (e *ExponentialBackoff) newCStrategy() (*C.conveyor_retry_strategy, error) {
	if e.base < 0 || e.factor < 0 || e.max < 0 {
		return nil, goError(ErrInvalidArgument, "NewExponentialBackoff(%v, %v, %v): a negative duration", e.base, e.factor, e.max)
	}
	return strategyOrPanic(C.conveyor_exponential_backoff_new(durationMs(e.base), durationMs(e.factor), durationMs(e.max)))
}

func strategyOrPanic(s *C.conveyor_retry_strategy) (*C.conveyor_retry_strategy, error) {
	if s == nil {
		return nil, lastError(C.CONVEYOR_ERR_PANIC)
	}
	return s, nil
}

// RetryFuncs is a retry strategy of your own. A RetryingSink calls them one at a
// time, on the goroutine or thread writing to it; a RetryFuncs used by several
// retrying sinks may be called concurrently.
type RetryFuncs struct {
	// Proceed returns how long to wait before the next attempt (also before an
	// event's first); nil or <= 0: now. Close ends the wait.
	Proceed func() time.Duration
	// Failure hears that an attempt failed and returns true to give up on the event
	// (the write then fails with ErrClient); nil: never give up.
	Failure func() (giveUp bool)
	// Success hears that an attempt succeeded; may be nil.
	Success func()
}

type retryBox struct {
	funcs RetryFuncs
	log   *logSink
}

func (f RetryFuncs) newCStrategy() (*C.conveyor_retry_strategy, error) {
	h := newHandle(&retryBox{funcs: f, log: sinkLog})
	var s *C.conveyor_retry_strategy
	if rc := C.conveyor_go_retry_strategy_new(C.uintptr_t(h), &s); rc != C.CONVEYOR_OK {
		err := lastError(rc)
		deleteHandle(h)
		return nil, err
	}
	return s, nil
}

// RetryingSink retries each write on its destination under a RetryStrategy until the
// destination takes it. Write fails with an error matching ErrClient when the
// strategy gives up ("dropped by the retry strategy after N attempts"), and with
// ErrClosed at once when the destination answers closed or when the retrying sink is
// closed meanwhile (a pending backoff ends at once). Writes are serialized: concurrent
// writers keep their order. Close closes the destination.
type RetryingSink struct {
	nativeSink
}

// NewRetryingSink returns a retrying sink in front of dst.
func NewRetryingSink(dst Sink, strategy RetryStrategy) (*RetryingSink, error) {
	if strategy == nil || isNilStrategy(strategy) {
		return nil, goError(ErrInvalidArgument, "a nil RetryStrategy")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	d, err := borrow(dst, "dst")
	if err != nil {
		return nil, err
	}
	defer d.giveBack()
	s, err := strategy.newCStrategy()
	if err != nil {
		return nil, err
	}
	var c *C.conveyor_sink
	if rc := C.conveyor_retrying_sink_new(d.c, s, &c); rc != C.CONVEYOR_OK {
		err := lastError(rc)
		C.conveyor_retry_strategy_free(s)
		return nil, err
	}
	rs := &RetryingSink{}
	rs.ref = newSinkRef(rs, c)
	return rs, nil
}

func isNilStrategy(s RetryStrategy) bool {
	switch v := s.(type) {
	case *Breaker:
		return v == nil
	case *ExponentialBackoff:
		return v == nil
	}
	return false
}

// ---------------------------------------------------------------- PipelineSink

// PipelineSinkConfig are the settings of Pipeline.AsSinkWith.
type PipelineSinkConfig struct {
	// Producer: the callbacks (and flags) of the sink's own producer, which hear
	// about the outcome of every event the sink accepted.
	Producer ProducerConfig
	// PublishTimeout: how long a write waits for room in the queue before failing
	// with ErrTimeout (zero: as long as needed; closing ends the wait).
	PublishTimeout time.Duration
	// CloseTimeout: how long Close lets the pipeline deliver (zero: 30 s).
	CloseTimeout time.Duration
}

// PipelineSink is a pipeline used as a sink: a write publishes the event through the
// sink's own producer, and Close closes the pipeline (waiting its CloseTimeout for
// delivery). The sink keeps the pipeline's engine alive after Pipeline.Close (which
// then closes it with its own timeout); writes then fail with ErrClosed. Its Stats
// show the pipeline's totals (Forwarded = acked, Dropped).
type PipelineSink struct {
	nativeSink
}

// AsSink returns the pipeline as a sink: AsSinkWith(PipelineSinkConfig{}).
func (p *Pipeline) AsSink() (*PipelineSink, error) {
	return p.AsSinkWith(PipelineSinkConfig{})
}

// AsSinkWith returns the pipeline as a sink with cfg.
func (p *Pipeline) AsSinkWith(cfg PipelineSinkConfig) (*PipelineSink, error) {
	if cfg.PublishTimeout < 0 || cfg.CloseTimeout < 0 {
		return nil, goError(ErrInvalidArgument, "a negative timeout in PipelineSinkConfig")
	}
	publishMs := C.uint64_t(math.MaxUint64)
	if cfg.PublishTimeout > 0 {
		publishMs = durationMs(cfg.PublishTimeout)
	}
	closeMs := C.uint64_t(C.CONVEYOR_SINK_CLOSE_TIMEOUT_MS)
	if cfg.CloseTimeout > 0 {
		closeMs = durationMs(cfg.CloseTimeout)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.c == nil {
		return nil, errPipelineClosed()
	}
	pc := cfg.Producer
	var box *producerBox
	var cb *C.conveyor_go_producer_callbacks
	if pc.OnACK != nil || pc.OnDrop != nil {
		box = &producerBox{onACK: pc.OnACK, onDrop: pc.OnDrop, log: p.log}
		cb = newProducerCallbacks(box)
	}
	var c *C.conveyor_sink
	rc := C.conveyor_go_pipeline_as_sink(p.c, cb, cbool(pc.OnACK != nil), cbool(pc.OnDrop != nil),
		C.uint32_t(cbool(pc.Guaranteed)), C.uint32_t(cbool(pc.DropOnCancel)), publishMs, closeMs, &c)
	if rc != C.CONVEYOR_OK {
		err := lastError(rc)
		if box != nil {
			freeProducerCallbacks(box)
		}
		return nil, err
	}
	s := &PipelineSink{}
	s.ref = newSinkRef(s, c)
	return s, nil
}
