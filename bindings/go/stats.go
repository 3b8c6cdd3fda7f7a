package conveyor

// #include "conveyor.h"
import "C"

import (
	"encoding/json"
	"time"
	"unsafe"
)

// Stats is a consistent snapshot of a pipeline's counters, decoded from the JSON
// conveyor_pipeline_stats_json produces, with the Go producers' stages added (see
// Pipeline.Stats).
type Stats struct {
	Mode           string `json:"mode"`            // the output mode in use
	Accepted       uint64 `json:"accepted"`        // events accepted by publish calls
	Acked          uint64 `json:"acked"`           // events reported acknowledged
	Dropped        uint64 `json:"dropped"`         // events reported dropped
	InFlight       uint64 `json:"in_flight"`       // Accepted - Acked - Dropped
	Duplicates     uint64 `json:"duplicates"`      // events a client may have received twice
	DroppedBatches uint64 `json:"dropped_batches"` // batches (or their remainders) given up on
	RetriedBatches uint64 `json:"retried_batches"` // failed attempts that were retried
	Handoffs       uint64 `json:"handoffs"`        // batches handed to another worker after PublishTimeout
	// Staged: events accepted by Producer.Publish and still in their producers'
	// stages, not yet in the queue (see ProducerConfig.Linger and Pipeline.Stats);
	// counted in Accepted and InFlight.
	Staged  uint64        `json:"staged"`
	Queue   QueueStats    `json:"queue"`
	Clients []ClientStats `json:"clients"`
}

// QueueStats is the queue's occupancy.
type QueueStats struct {
	Events         int `json:"events"`          // accepted and not yet settled
	Bytes          int `json:"bytes"`           // their payload bytes
	Waiting        int `json:"waiting"`         // of those, not taken by a client yet
	OpenBatches    int `json:"open_batches"`    // batches taken and not yet released
	CapacityEvents int `json:"capacity_events"` // queue.events
	CapacityBytes  int `json:"capacity_bytes"`  // queue.bytes (0: none)
}

// ClientStats is one client's worker: its state and counters.
type ClientStats struct {
	ID              uint64    // the id AddClient returned (1-based, never reused)
	Host            string    // the host it was built for ("" for clients given directly)
	State           string    // connecting, active, backoff, standby or stopped
	Batches         uint64    // batches fully published
	Events          uint64    // events reported published
	Failures        uint64    // failed connects and publishes
	Retries         uint64    // retried attempts
	Connects        uint64    // successful connects
	ConnectFailures uint64    // failed connects
	Restarts        uint64    // rebuilds past ErrorThreshold
	InvalidResults  uint64    // results out of range (a count beyond the batch, a bad status)
	LastError       string    // the last error message ("" if none)
	LastErrorAt     time.Time // when it happened (zero if never)
	StartedAt       time.Time // when the client was added
	UpdatedAt       time.Time // last change of any counter
}

// clientStatsJSON is ClientStats as conveyor serializes it.
type clientStatsJSON struct {
	ID              uint64  `json:"id"`
	Host            *string `json:"host"`
	State           string  `json:"state"`
	Batches         uint64  `json:"batches"`
	Events          uint64  `json:"events"`
	Failures        uint64  `json:"failures"`
	Retries         uint64  `json:"retries"`
	Connects        uint64  `json:"connects"`
	ConnectFailures uint64  `json:"connect_failures"`
	Restarts        uint64  `json:"restarts"`
	InvalidResults  uint64  `json:"invalid_results"`
	LastError       *string `json:"last_error"`
	LastErrorMs     *int64  `json:"last_error_ms"`
	StartedMs       int64   `json:"started_ms"`
	UpdatedMs       int64   `json:"updated_ms"`
}

// UnmarshalJSON decodes conveyor's form (nullable strings, times in Unix ms).
func (c *ClientStats) UnmarshalJSON(data []byte) error {
	var j clientStatsJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	*c = ClientStats{
		ID: j.ID, State: j.State, Batches: j.Batches, Events: j.Events, Failures: j.Failures,
		Retries: j.Retries, Connects: j.Connects, ConnectFailures: j.ConnectFailures,
		Restarts: j.Restarts, InvalidResults: j.InvalidResults,
		StartedAt: time.UnixMilli(j.StartedMs), UpdatedAt: time.UnixMilli(j.UpdatedMs),
	}
	if j.Host != nil {
		c.Host = *j.Host
	}
	if j.LastError != nil {
		c.LastError = *j.LastError
	}
	if j.LastErrorMs != nil {
		c.LastErrorAt = time.UnixMilli(*j.LastErrorMs)
	}
	return nil
}

// statsJSON returns the pipeline's stats JSON; the caller holds p.mu and is locked
// to its OS thread.
func (p *Pipeline) statsJSON() ([]byte, error) {
	buf := make([]byte, 4096)
	for {
		var needed C.size_t
		r := C.conveyor_pipeline_stats_json(p.c, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &needed)
		switch r {
		case C.CONVEYOR_OK:
			return buf[:needed-1], nil
		case C.CONVEYOR_ERR_BUFFER_TOO_SMALL:
			// Counters keep moving: leave room for them to grow.
			buf = make([]byte, int(needed)+256)
		default:
			return nil, lastError(r)
		}
	}
}

func (p *Pipeline) statsOf() (Stats, error) {
	raw, err := p.statsJSON()
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	if err := json.Unmarshal(raw, &s); err != nil {
		return Stats{}, goError(ErrInternal, "decoding the stats JSON: %v", err)
	}
	return s, nil
}
