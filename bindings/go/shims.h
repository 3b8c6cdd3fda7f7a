/*
 * C side of the Go binding: builds the C structs that carry a cgo.Handle, so Go never
 * holds a handle (a small integer) or a completion number in a pointer-typed value,
 * which the Go runtime would take for an invalid pointer.
 */
#ifndef CONVEYOR_GO_SHIMS_H
#define CONVEYOR_GO_SHIMS_H

#include <stddef.h>
#include <stdint.h>

#include "conveyor.h"

/* Adds a client whose callbacks are the Go trampolines for `handle`. */
conveyor_result conveyor_go_config_add_client(conveyor_config *config, uintptr_t handle, int async);
conveyor_result conveyor_go_pipeline_add_client(conveyor_pipeline *p, uintptr_t handle, int async,
                                                uint64_t *client_id);
/* Sends the config's log messages to the Go logger behind `handle`. */
conveyor_result conveyor_go_config_set_logger(conveyor_config *config, uintptr_t handle);
/* The userdata of a producer with Go callbacks (allocated with C.malloc and freed by
   Go, once conveyor has freed the producer and no Go call uses it): the callbacks'
   handle, and the relay that holds the producer's ACK counts while a publish or flush
   call is in progress, instead of the dispatcher calling into Go (see ackrelay.go). The
   relay counts those calls in units of CONVEYOR_GO_RELAY_PUBLISHING, above the ACK
   count waiting for Go (at most CONVEYOR_GO_RELAY_PENDING). */
typedef struct conveyor_go_producer_callbacks {
    uintptr_t handle;
    uint64_t relay; /* accessed atomically only */
} conveyor_go_producer_callbacks;

#define CONVEYOR_GO_RELAY_PUBLISHING (UINT64_C(1) << 40)
#define CONVEYOR_GO_RELAY_PENDING (CONVEYOR_GO_RELAY_PUBLISHING - 1)

/* A producer whose callbacks are the Go trampolines for `cb` (NULL: no callbacks). */
conveyor_result conveyor_go_producer_new(conveyor_pipeline *p, conveyor_go_producer_callbacks *cb, int has_ack,
                                         int has_drop, uint32_t guaranteed, uint32_t drop_on_cancel,
                                         conveyor_producer **out);
/* The producer handle whose callback runs on this thread, 0 outside producer callbacks. */
uintptr_t conveyor_go_producer_in_callback(void);
/* Marks this thread as running a callback of the producer behind `handle` (which
   conveyor_go_producer_in_callback then returns), and returns the mark it replaces,
   for conveyor_go_producer_leave_callback to restore. */
uintptr_t conveyor_go_producer_enter_callback(uintptr_t handle);
void conveyor_go_producer_leave_callback(uintptr_t outer);
/* conveyor_completion_done for a completion Go holds as a number. */
void conveyor_go_completion_done(uintptr_t completion, size_t published, uint32_t status);

/* A sink whose callbacks are the Go trampolines for the Sink behind `handle`. */
conveyor_result conveyor_go_sink_new(uintptr_t handle, conveyor_sink **out);
/* A filter over `dst` matching with the Go function behind `handle` (freed with it). */
conveyor_result conveyor_go_filter_new(conveyor_sink *dst, uintptr_t handle, conveyor_sink **out);
/* A queue sink over `dst`; `drop_handle` (0: none) names the Go drop hook. */
conveyor_result conveyor_go_queue_sink_new(conveyor_sink *dst, size_t capacity, uint32_t overflow,
                                           uint64_t close_timeout_ms, uintptr_t drop_handle, conveyor_sink **out);
/* A retry strategy whose callbacks are the Go functions behind `handle`. */
conveyor_result conveyor_go_retry_strategy_new(uintptr_t handle, conveyor_retry_strategy **out);
/* conveyor_pipeline_as_sink_with with a producer config as conveyor_go_producer_new builds. */
conveyor_result conveyor_go_pipeline_as_sink(conveyor_pipeline *p, conveyor_go_producer_callbacks *cb, int has_ack,
                                             int has_drop, uint32_t guaranteed, uint32_t drop_on_cancel,
                                             uint64_t publish_timeout_ms, uint64_t close_timeout_ms,
                                             conveyor_sink **out);

#endif
