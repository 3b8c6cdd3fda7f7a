package conveyor

// #include "conveyor.h"
import "C"

import (
	"context"
	"errors"
	"fmt"
)

// Errors returned by conveyor, matched with errors.Is. The errors themselves are
// *Error values carrying the detail conveyor gave (for example the configuration key
// that was rejected and why).
var (
	// ErrClosed: the pipeline (or the producer) is closed.
	ErrClosed = errors.New("conveyor: closed")
	// ErrFull: a non-blocking publish found no room in the queue.
	ErrFull = errors.New("conveyor: queue full")
	// ErrTimeout: a blocking call ran out of time. Errors from a context deadline
	// match both ErrTimeout and context.DeadlineExceeded.
	ErrTimeout = errors.New("conveyor: timeout")
	// ErrConfig: a configuration value is invalid; the message names the key.
	ErrConfig = errors.New("conveyor: invalid config")
	// ErrNoClients: a pipeline needs at least one client.
	ErrNoClients = errors.New("conveyor: no clients")
	// ErrCanceled: the producer was cancelled and accepts no more events.
	ErrCanceled = errors.New("conveyor: producer canceled")
	// ErrInvalidArgument: an argument is out of its domain, or a call was made where
	// it would deadlock (Pipeline.Close or Flush from a conveyor callback).
	ErrInvalidArgument = errors.New("conveyor: invalid argument")
	// ErrClient: a client failed outside of delivery.
	ErrClient = errors.New("conveyor: client error")
	// ErrInternal: a bug in conveyor, or a resource (a thread) could not be created.
	ErrInternal = errors.New("conveyor: internal error")
)

// ErrRetry is for clients: a Publish (or PublishAsync completion) error that wraps
// ErrRetry is a temporary failure and conveyor retries on the same connection; any
// other error means the connection is broken (conveyor closes it, backs off and
// reconnects or fails over).
var ErrRetry = errors.New("conveyor: temporary failure, retry on the same connection")

// Error is an error reported by the C library: its CONVEYOR_ERR_* code and the detail
// message of conveyor_last_error.
type Error struct {
	// Code is the conveyor_result code (CONVEYOR_ERR_*), or 0 for errors found by the
	// Go layer itself.
	Code uint32
	// Message is the detail, e.g. "conveyor_config_set: invalid config `worker`: ...".
	Message string
	kind    error
}

func (e *Error) Error() string { return e.kind.Error() + ": " + e.Message }

// Unwrap returns the sentinel (ErrClosed, ErrConfig, ...) this error is an instance of.
func (e *Error) Unwrap() error { return e.kind }

func kindOf(code C.conveyor_result) error {
	switch code {
	case C.CONVEYOR_ERR_INVALID_CONFIG:
		return ErrConfig
	case C.CONVEYOR_ERR_CLOSED:
		return ErrClosed
	case C.CONVEYOR_ERR_FULL:
		return ErrFull
	case C.CONVEYOR_ERR_TIMEOUT:
		return ErrTimeout
	case C.CONVEYOR_ERR_NO_CLIENTS:
		return ErrNoClients
	case C.CONVEYOR_ERR_CANCELLED:
		return ErrCanceled
	case C.CONVEYOR_ERR_NULL_PARAMETER, C.CONVEYOR_ERR_INVALID_ARGUMENT:
		return ErrInvalidArgument
	case C.CONVEYOR_ERR_CLIENT:
		return ErrClient
	default:
		return ErrInternal
	}
}

// lastError turns a failed call's code into an *Error with conveyor's detail message.
// The detail is per OS thread: call it on the thread that made the failed call
// (callers hold runtime.LockOSThread across both).
func lastError(code C.conveyor_result) error {
	var buf [512]C.char
	n := int(C.conveyor_last_error(&buf[0], C.size_t(len(buf))))
	msg := C.GoString(&buf[0])
	if n >= len(buf) {
		big := make([]C.char, n+1)
		C.conveyor_last_error(&big[0], C.size_t(len(big)))
		msg = C.GoString(&big[0])
	}
	return &Error{Code: uint32(code), Message: msg, kind: kindOf(code)}
}

// goError is an error found by the Go layer, of the given kind.
func goError(kind error, format string, args ...any) error {
	return &Error{Message: fmt.Sprintf(format, args...), kind: kind}
}

// contextError is what a blocking call returns when ctx ended first: it matches
// ctx.Err() (context.Canceled or context.DeadlineExceeded) and, for a deadline, also
// ErrTimeout.
func contextError(op string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("conveyor: %s: %w (%w)", op, err, ErrTimeout)
	}
	return fmt.Errorf("conveyor: %s: %w", op, err)
}
