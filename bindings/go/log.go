package conveyor

import (
	"fmt"
	"log"
	"runtime/cgo"
	"runtime/debug"
	"sync/atomic"
)

// LogLevel is the severity of a log message (the CONVEYOR_LOG_* values).
type LogLevel uint32

const (
	// LogError: something was lost, or a callback misbehaved (a panic).
	LogError LogLevel = 1
	// LogWarn: a failure conveyor handles (retry, reconnect).
	LogWarn LogLevel = 2
	// LogInfo: lifecycle events (connects, restarts, close).
	LogInfo LogLevel = 3
	// LogDebug: detail for troubleshooting, such as the errors clients returned.
	LogDebug LogLevel = 4
)

func (l LogLevel) String() string {
	switch l {
	case LogError:
		return "error"
	case LogWarn:
		return "warn"
	case LogInfo:
		return "info"
	case LogDebug:
		return "debug"
	}
	return fmt.Sprintf("level(%d)", uint32(l))
}

// logSink is where a pipeline's messages go: Config.Logger, or, without one, errors
// to the standard log package (so a panic in a callback is never silent).
type logSink struct {
	fn func(LogLevel, string)
}

func (s *logSink) log(level LogLevel, msg string) {
	if s.fn == nil {
		if level == LogError {
			log.Print("conveyor: ", msg)
		}
		return
	}
	defer func() {
		if r := recover(); r != nil {
			log.Printf("conveyor: the Logger panicked (%v) on: %s", r, msg)
		}
	}()
	s.fn(level, msg)
}

// panicked reports a panic recovered at the boundary, with the stack where it happened.
func (s *logSink) panicked(what string, r any) {
	s.log(LogError, fmt.Sprintf("%s panicked: %v\n%s", what, r, debug.Stack()))
}

// liveHandles counts the cgo handles this package created and has not deleted yet;
// every one is deleted exactly once, from the free_userdata callback of what holds it
// (or at once when C never took it).
var liveHandles atomic.Int64

func newHandle(v any) cgo.Handle {
	liveHandles.Add(1)
	return cgo.NewHandle(v)
}

func deleteHandle(h cgo.Handle) {
	h.Delete()
	liveHandles.Add(-1)
}
