// The C trampolines behind the Go binding's vtables: each casts conveyor's `void *`
// userdata back to the cgo.Handle number it is and calls the exported Go function.
// They live here because a Go file with //export may only declare in its preamble.

#include <string.h>

#include "shims.h"
#include "_cgo_export.h"

/* Rust hands out dangling (non-NULL, unusable) array pointers for empty arrays;
   Go must only ever see NULL then. */
static conveyor_bytes *events_arg(const conveyor_bytes *events, size_t n) {
    return n ? (conveyor_bytes *)events : NULL;
}

static uint32_t client_connect(void *userdata, uint64_t timeout_ms) {
    return goConveyorConnect((uintptr_t)userdata, timeout_ms);
}

static void client_close(void *userdata) {
    goConveyorClose((uintptr_t)userdata);
}

static uint32_t client_publish(void *userdata, const conveyor_bytes *events, size_t n, size_t *published) {
    return goConveyorPublish((uintptr_t)userdata, events_arg(events, n), n, published);
}

static uint32_t client_publish_async(void *userdata, const conveyor_bytes *events, size_t n,
                                     conveyor_completion *completion) {
    return goConveyorPublishAsync((uintptr_t)userdata, events_arg(events, n), n, (uintptr_t)completion);
}

static void client_free(void *userdata) {
    goConveyorFreeClient((uintptr_t)userdata);
}

static void client_vtable(conveyor_client_vtable *vt, uintptr_t handle, int async) {
    memset(vt, 0, sizeof *vt);
    vt->struct_size = (uint32_t)sizeof *vt;
    vt->userdata = (void *)handle;
    vt->connect = client_connect;
    vt->close = client_close;
    if (async) {
        vt->publish_async = client_publish_async;
    } else {
        vt->publish = client_publish;
    }
    vt->free_userdata = client_free;
}

conveyor_result conveyor_go_config_add_client(conveyor_config *config, uintptr_t handle, int async) {
    conveyor_client_vtable vt;
    client_vtable(&vt, handle, async);
    return conveyor_config_add_client(config, &vt);
}

conveyor_result conveyor_go_pipeline_add_client(conveyor_pipeline *p, uintptr_t handle, int async,
                                                uint64_t *client_id) {
    conveyor_client_vtable vt;
    client_vtable(&vt, handle, async);
    return conveyor_pipeline_add_client(p, &vt, client_id);
}

static void log_message(void *userdata, uint32_t level, const char *message, size_t len) {
    goConveyorLog((uintptr_t)userdata, level, (char *)message, len);
}

conveyor_result conveyor_go_config_set_logger(conveyor_config *config, uintptr_t handle) {
    return conveyor_config_set_logger(config, log_message, (void *)handle);
}

/* The handle whose on_ack / on_drop is running on this thread (0: none), so that Go
   can tell whether it reports drops of its own from inside that producer's callback. */
static _Thread_local uintptr_t producer_in_callback;

uintptr_t conveyor_go_producer_in_callback(void) {
    return producer_in_callback;
}

uintptr_t conveyor_go_producer_enter_callback(uintptr_t handle) {
    uintptr_t outer = producer_in_callback;
    producer_in_callback = handle;
    return outer;
}

void conveyor_go_producer_leave_callback(uintptr_t outer) {
    producer_in_callback = outer;
}

/* An ACK count for a producer with a publish or flush call in progress is added to its
   relay, for that call to hand to Go's side (see ackrelay.go); only otherwise does the
   dispatcher thread call into Go. */
static int relay_ack(conveyor_go_producer_callbacks *cb, uint64_t count) {
    uint64_t state = __atomic_load_n(&cb->relay, __ATOMIC_RELAXED);
    while (state >= CONVEYOR_GO_RELAY_PUBLISHING &&
           count <= CONVEYOR_GO_RELAY_PENDING - (state & CONVEYOR_GO_RELAY_PENDING)) {
        if (__atomic_compare_exchange_n(&cb->relay, &state, state + count, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
            return 1;
        }
    }
    return 0;
}

static void producer_ack(void *userdata, uint64_t count) {
    conveyor_go_producer_callbacks *cb = userdata;
    if (relay_ack(cb, count)) {
        return;
    }
    uintptr_t outer = conveyor_go_producer_enter_callback(cb->handle);
    goConveyorOnACK(cb->handle, count);
    conveyor_go_producer_leave_callback(outer);
}

static void producer_drop(void *userdata, const conveyor_bytes *events, size_t n) {
    conveyor_go_producer_callbacks *cb = userdata;
    uintptr_t outer = conveyor_go_producer_enter_callback(cb->handle);
    goConveyorOnDrop(cb->handle, events_arg(events, n), n);
    conveyor_go_producer_leave_callback(outer);
}

/* Go frees `cb` once neither conveyor nor a Go call uses it any more. */
static void producer_free(void *userdata) {
    conveyor_go_producer_callbacks *cb = userdata;
    goConveyorFreeProducer(cb->handle);
}

static void producer_config(conveyor_producer_config *pc, conveyor_go_producer_callbacks *cb, int has_ack,
                            int has_drop, uint32_t guaranteed, uint32_t drop_on_cancel) {
    memset(pc, 0, sizeof *pc);
    pc->struct_size = (uint32_t)sizeof *pc;
    pc->userdata = cb;
    pc->on_ack = has_ack ? producer_ack : NULL;
    pc->on_drop = has_drop ? producer_drop : NULL;
    pc->guaranteed = guaranteed;
    pc->drop_on_cancel = drop_on_cancel;
    pc->free_userdata = cb ? producer_free : NULL;
}

conveyor_result conveyor_go_producer_new(conveyor_pipeline *p, conveyor_go_producer_callbacks *cb, int has_ack,
                                         int has_drop, uint32_t guaranteed, uint32_t drop_on_cancel,
                                         conveyor_producer **out) {
    conveyor_producer_config pc;
    producer_config(&pc, cb, has_ack, has_drop, guaranteed, drop_on_cancel);
    return conveyor_producer_new(p, &pc, out);
}

void conveyor_go_completion_done(uintptr_t completion, size_t published, uint32_t status) {
    conveyor_completion_done((conveyor_completion *)completion, published, status);
}

/* ---------------------------------------------------------------- sinks */

static uint32_t sink_write(void *userdata, const uint8_t *data, size_t len) {
    return goConveyorSinkWrite((uintptr_t)userdata, len ? (uint8_t *)data : NULL, len);
}

static void sink_close(void *userdata) {
    goConveyorSinkClose((uintptr_t)userdata);
}

static void handle_free(void *userdata) {
    goConveyorFreeHandle((uintptr_t)userdata);
}

conveyor_result conveyor_go_sink_new(uintptr_t handle, conveyor_sink **out) {
    conveyor_sink_vtable vt;
    memset(&vt, 0, sizeof vt);
    vt.struct_size = (uint32_t)sizeof vt;
    vt.userdata = (void *)handle;
    vt.write = sink_write;
    vt.close = sink_close;
    vt.free_userdata = handle_free;
    return conveyor_sink_new(&vt, out);
}

static uint32_t sink_match(void *userdata, const uint8_t *data, size_t len) {
    return goConveyorSinkMatch((uintptr_t)userdata, len ? (uint8_t *)data : NULL, len);
}

conveyor_result conveyor_go_filter_new(conveyor_sink *dst, uintptr_t handle, conveyor_sink **out) {
    return conveyor_filter_sink_new_with_free(dst, sink_match, (void *)handle, handle_free, out);
}

static void queue_sink_drop(void *userdata, const conveyor_bytes *events, size_t n) {
    goConveyorSinkDrop((uintptr_t)userdata, events_arg(events, n), n);
}

conveyor_result conveyor_go_queue_sink_new(conveyor_sink *dst, size_t capacity, uint32_t overflow,
                                           uint64_t close_timeout_ms, uintptr_t drop_handle, conveyor_sink **out) {
    conveyor_queue_sink_options options;
    memset(&options, 0, sizeof options);
    options.struct_size = (uint32_t)sizeof options;
    options.close_timeout_ms = close_timeout_ms;
    options.userdata = (void *)drop_handle;
    options.on_drop = drop_handle ? queue_sink_drop : NULL;
    options.free_userdata = drop_handle ? handle_free : NULL;
    return conveyor_queue_sink_new_with_options(dst, capacity, overflow, &options, out);
}

static uint64_t retry_proceed(void *userdata) {
    return goConveyorRetryProceed((uintptr_t)userdata);
}

static uint32_t retry_failure(void *userdata) {
    return goConveyorRetryFailure((uintptr_t)userdata);
}

static void retry_success(void *userdata) {
    goConveyorRetrySuccess((uintptr_t)userdata);
}

conveyor_result conveyor_go_retry_strategy_new(uintptr_t handle, conveyor_retry_strategy **out) {
    conveyor_retry_strategy_vtable vt;
    memset(&vt, 0, sizeof vt);
    vt.struct_size = (uint32_t)sizeof vt;
    vt.userdata = (void *)handle;
    vt.proceed = retry_proceed;
    vt.failure = retry_failure;
    vt.success = retry_success;
    vt.free_userdata = handle_free;
    return conveyor_retry_strategy_new(&vt, out);
}

conveyor_result conveyor_go_pipeline_as_sink(conveyor_pipeline *p, conveyor_go_producer_callbacks *cb, int has_ack,
                                             int has_drop, uint32_t guaranteed, uint32_t drop_on_cancel,
                                             uint64_t publish_timeout_ms, uint64_t close_timeout_ms,
                                             conveyor_sink **out) {
    conveyor_producer_config pc;
    producer_config(&pc, cb, has_ack, has_drop, guaranteed, drop_on_cancel);
    return conveyor_pipeline_as_sink_with(p, &pc, publish_timeout_ms, close_timeout_ms, out);
}
