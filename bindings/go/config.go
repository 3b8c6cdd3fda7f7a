package conveyor

// #include <stdlib.h>
// #include "conveyor.h"
import "C"

import (
	"math"
	"strconv"
	"time"
	"unsafe"
)

// Mode is how a pipeline spreads batches over its clients.
type Mode int

const (
	// ModeAuto (the zero value): LoadBalance with more than one client, else Single.
	ModeAuto Mode = iota
	// Single: one client; on failure close, back off, reconnect, retry.
	Single
	// Failover: one active client among several; on failure move to another.
	Failover
	// LoadBalance: one worker per client (Config.Worker per client), all pulling
	// batches from the queue while connected.
	LoadBalance
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case Single:
		return "single"
	case Failover:
		return "failover"
	case LoadBalance:
		return "loadbalance"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// FailoverPolicy is which client Failover moves to.
type FailoverPolicy int

const (
	// FailoverRandom (the zero value): first pick at random; the next pick is never
	// the client that just failed.
	FailoverRandom FailoverPolicy = iota
	// FailoverOrdered: the first client first, then the next one in order.
	FailoverOrdered
)

func (f FailoverPolicy) String() string {
	switch f {
	case FailoverRandom:
		return "random"
	case FailoverOrdered:
		return "ordered"
	}
	return "policy(" + strconv.Itoa(int(f)) + ")"
}

// Config holds a pipeline's settings, the keys of the README's table in CamelCase. A
// zero field means the key's default; conveyor validates every value and rejects a bad
// one with an error matching ErrConfig that names the key.
type Config struct {
	Mode           Mode           // mode (default: ModeAuto)
	FailoverPolicy FailoverPolicy // failover.policy (default: FailoverRandom)
	Worker         int            // worker: workers per client in LoadBalance (1)
	MaxRetries     *int           // max_retries: set with Retries(n); nil = 3; Retries(-1) = infinite
	BackoffInit    time.Duration  // backoff.init (1s)
	BackoffMax     time.Duration  // backoff.max (60s)
	Timeout        time.Duration  // timeout: connect timeout and wait for a worker (30s)
	PublishTimeout time.Duration  // publish_timeout: hand a batch to another worker after this long (off)
	BulkMaxSize    int            // bulk_max_size: most events per client call (2048)
	Pipelining     int            // pipelining: batches in flight per AsyncClient (2)
	QueueType      string         // queue.type ("mem")
	QueueEvents    int            // queue.events: queue bound in events (4096)
	QueueBytes     int            // queue.bytes: queue bound in payload bytes (off)
	FlushMinEvents int            // queue.flush.min_events: batch forming (2048; 1 = never wait)
	FlushTimeout   time.Duration  // queue.flush.timeout: longest wait for FlushMinEvents (1ms)
	ErrorThreshold int            // error_threshold: failures in a row before a client is restarted (off)

	// Logger receives conveyor's log messages and the panics recovered from
	// callbacks. It is called from conveyor's threads, possibly concurrently: keep it
	// short and do not call conveyor from it. Nil: errors (such as panics) go to the
	// standard log package and the rest is discarded.
	Logger func(level LogLevel, message string)
}

// Retries returns a MaxRetries value: n retries after the first attempt, or -1 to
// retry forever.
func Retries(n int) *int { return &n }

// maxDuration is the longest time.Duration.
const maxDuration = time.Duration(math.MaxInt64)

// settings lists the C key and string value of every non-zero field.
func (c *Config) settings() [][2]string {
	var kv [][2]string
	set := func(key, value string) { kv = append(kv, [2]string{key, value}) }
	if c.Mode != ModeAuto {
		set("mode", c.Mode.String())
	}
	if c.FailoverPolicy != FailoverRandom {
		set("failover.policy", c.FailoverPolicy.String())
	}
	count := func(key string, v int) {
		if v != 0 {
			set(key, strconv.Itoa(v))
		}
	}
	duration := func(key string, d time.Duration) {
		if d != 0 {
			set(key, formatDuration(d))
		}
	}
	count("worker", c.Worker)
	if c.MaxRetries != nil {
		set("max_retries", strconv.Itoa(*c.MaxRetries))
	}
	duration("backoff.init", c.BackoffInit)
	duration("backoff.max", c.BackoffMax)
	duration("timeout", c.Timeout)
	duration("publish_timeout", c.PublishTimeout)
	count("bulk_max_size", c.BulkMaxSize)
	count("pipelining", c.Pipelining)
	if c.QueueType != "" {
		set("queue.type", c.QueueType)
	}
	count("queue.events", c.QueueEvents)
	count("queue.bytes", c.QueueBytes)
	count("queue.flush.min_events", c.FlushMinEvents)
	duration("queue.flush.timeout", c.FlushTimeout)
	count("error_threshold", c.ErrorThreshold)
	return kv
}

// formatDuration writes d in the form conveyor's config parser reads, exactly: whole
// units where possible, nanoseconds otherwise. Negative values stay negative, so
// conveyor rejects them naming the key.
func formatDuration(d time.Duration) string {
	switch {
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	case d%time.Millisecond == 0:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	case d%time.Microsecond == 0:
		return strconv.FormatInt(int64(d/time.Microsecond), 10) + "us"
	}
	return strconv.FormatInt(int64(d), 10) + "ns"
}

// newCConfig builds a C config with every setting of c. The caller frees it (or hands
// it to conveyor_pipeline_new) and must be locked to its OS thread (see lastError).
func (c *Config) newCConfig() (*C.conveyor_config, error) {
	cfg := C.conveyor_config_new()
	if cfg == nil {
		return nil, lastError(C.CONVEYOR_ERR_PANIC)
	}
	for _, kv := range c.settings() {
		key, value := C.CString(kv[0]), C.CString(kv[1])
		r := C.conveyor_config_set(cfg, key, value)
		C.free(unsafe.Pointer(key))
		C.free(unsafe.Pointer(value))
		if r != C.CONVEYOR_OK {
			err := lastError(r)
			C.conveyor_config_free(cfg)
			return nil, err
		}
	}
	return cfg, nil
}
