package main

// The H6 runs as `go test -bench` benchmarks: b.N events per run, 100-byte events, a
// Go no-op client; ns/op is per event and events/s is measured from the first
// publish until the last event was delivered (acknowledged, for conveyor).
//
//	go test -bench . -benchtime 2000000x

import (
	"testing"
	"time"
)

func benchEvents(b *testing.B, run func(n int) (time.Duration, error)) {
	b.SetBytes(payloadSize)
	d, err := run(b.N)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/d.Seconds(), "events/s")
}

func BenchmarkConveyorPublish(b *testing.B) {
	benchEvents(b, func(n int) (time.Duration, error) { return runConveyor(n, perEvent) })
}

func BenchmarkConveyorPublishBatch(b *testing.B) {
	benchEvents(b, func(n int) (time.Duration, error) { return runConveyor(n, batched) })
}

func BenchmarkConveyorPublishPacked(b *testing.B) {
	benchEvents(b, func(n int) (time.Duration, error) { return runConveyor(n, packed) })
}

func BenchmarkChannelPipeline(b *testing.B) { benchEvents(b, runChannel) }

func BenchmarkGoEventsQueueRetryingSink(b *testing.B) { benchEvents(b, runGoEvents) }
