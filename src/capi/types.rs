//! The `#[repr(C)]` structs, callback types and constants shared with C.

use std::ffi::{c_char, c_void};

/// A borrowed byte view: `len` bytes at `data`. `data` may be any non-NULL value
/// when `len` is 0. Views conveyor hands out are valid only for the duration
/// stated by the function or callback that receives them.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct conveyor_bytes {
    /// First byte.
    pub data: *const u8,
    /// Number of bytes.
    pub len: usize,
}

impl conveyor_bytes {
    pub(crate) fn of(bytes: &[u8]) -> conveyor_bytes {
        conveyor_bytes { data: bytes.as_ptr(), len: bytes.len() }
    }
}

/// Publish status returned by a client: every event counted in `*published` went out.
pub const CONVEYOR_PUBLISH_OK: u32 = 0;
/// Publish status: temporary failure, the connection is fine; conveyor retries the
/// events after the published prefix on the same client (after a backoff).
pub const CONVEYOR_PUBLISH_RETRY: u32 = 1;
/// Publish status: the connection is broken; conveyor closes the client, backs off,
/// reconnects (or fails over) and retries the events after the published prefix.
pub const CONVEYOR_PUBLISH_BROKEN: u32 = 2;

/// Log level passed to a conveyor_log_callback: something was lost or a callback misbehaved.
pub const CONVEYOR_LOG_ERROR: u32 = 1;
/// Log level: a failure conveyor handles (retry, reconnect).
pub const CONVEYOR_LOG_WARN: u32 = 2;
/// Log level: lifecycle events (connects, restarts, close).
pub const CONVEYOR_LOG_INFO: u32 = 3;
/// Log level: detail for troubleshooting.
pub const CONVEYOR_LOG_DEBUG: u32 = 4;

/// A protocol client written in C: the callbacks conveyor's workers call to deliver
/// batches. Register it with conveyor_config_add_client() or
/// conveyor_pipeline_add_client() (which copy the struct), or return it from a
/// conveyor_client_factory.
///
/// Threads: callbacks run on conveyor's worker threads, possibly concurrently for
/// different clients, never concurrently for the same client (the same `userdata`);
/// conveyor_completion_done may be called from any thread. Callbacks must not unwind
/// (no C++ exception, no longjmp) out of their frame. A callback may publish through
/// a producer; it must not call conveyor_pipeline_close/_flush/_free or
/// conveyor_pipeline_remove_client (they return CONVEYOR_ERR_INVALID_ARGUMENT there).
///
/// Ownership: once conveyor accepted the client, it calls `free_userdata` exactly once,
/// after the last callback for this client returned: when the pipeline drops the
/// client (conveyor_pipeline_remove_client, a factory rebuild after error_threshold,
/// conveyor_pipeline_close/_free), or from conveyor_config_free if no pipeline was built.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct conveyor_client_vtable {
    /// Must be `sizeof(conveyor_client_vtable)`; other values are rejected with
    /// CONVEYOR_ERR_INVALID_ARGUMENT (the field lets the struct grow compatibly).
    pub struct_size: u32,
    /// Passed to every callback; owned by conveyor once the client is accepted.
    pub userdata: *mut c_void,
    /// Optional; NULL means always connected. Opens the connection within
    /// `timeout_ms`; returns 0 when connected, anything else is a failed connect
    /// (conveyor backs off and calls it again, or fails over).
    pub connect: Option<unsafe extern "C" fn(userdata: *mut c_void, timeout_ms: u64) -> u32>,
    /// Optional; NULL means nothing to close. Also called when the client never
    /// connected: be idempotent.
    pub close: Option<unsafe extern "C" fn(userdata: *mut c_void)>,
    /// Synchronous publish of `n` events; may be NULL when `publish_async` is set.
    /// The views in `events` are valid only until it returns. Set `*published`
    /// (preset to 0) to how many *leading* events went out and return a
    /// CONVEYOR_PUBLISH_* status. A status outside CONVEYOR_PUBLISH_* or a count above
    /// `n` is logged and counted as a failed publish of the whole batch.
    pub publish: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            events: *const conveyor_bytes,
            n: usize,
            published: *mut usize,
        ) -> u32,
    >,
    /// Optional asynchronous publish; when set, conveyor uses it (with up to
    /// `pipelining` batches in flight per client) and never calls `publish`.
    /// Return 0 when the request was taken, then call
    /// conveyor_completion_done(completion, published, status) exactly once, from any
    /// thread, possibly before returning. Any other return value means "not taken":
    /// conveyor counts a broken connection and retries the batch (do not complete it
    /// then; if you do anyway, that completion wins). The views in `events` (and the
    /// array) stay valid until conveyor_completion_done is called for this completion,
    /// or until conveyor frees the client (after `close` and during `free_userdata`),
    /// whichever comes first: stop reading them before `free_userdata` returns.
    pub publish_async: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            events: *const conveyor_bytes,
            n: usize,
            completion: *mut conveyor_completion,
        ) -> u32,
    >,
    /// Optional destructor of `userdata`.
    pub free_userdata: Option<unsafe extern "C" fn(userdata: *mut c_void)>,
}

/// How a producer hears about its events; pass to conveyor_producer_new().
///
/// Callbacks run on the pipeline's single dispatcher thread, one at a time, once per
/// ACK round (never per event). They may publish (even blocking) through any producer,
/// but must not call conveyor_pipeline_flush/_close/_free (those return
/// CONVEYOR_ERR_INVALID_ARGUMENT there). They must not unwind out of their frame.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct conveyor_producer_config {
    /// Must be `sizeof(conveyor_producer_config)`.
    pub struct_size: u32,
    /// Passed to the callbacks; owned by conveyor once conveyor_producer_new succeeded.
    pub userdata: *mut c_void,
    /// Optional: `count` more of this producer's events were acknowledged, in publish
    /// order.
    pub on_ack: Option<unsafe extern "C" fn(userdata: *mut c_void, count: u64)>,
    /// Optional: conveyor gave up on these events (a dead-letter hook). The views are
    /// valid only during the call: copy what you keep.
    pub on_drop: Option<unsafe extern "C" fn(userdata: *mut c_void, events: *const conveyor_bytes, n: usize)>,
    /// 1: never drop these events for delivery failures (retry until delivered or the
    /// pipeline closes); 0: drop after max_retries. Other values are rejected.
    pub guaranteed: u32,
    /// 1: conveyor_producer_cancel() removes this producer's events that no client has
    /// taken yet (reported through on_drop); 0: they are still delivered.
    pub drop_on_cancel: u32,
    /// Optional destructor of `userdata`, called exactly once, after the last callback
    /// returned: once the producer is freed and all its events have been reported (at
    /// the latest when the pipeline is freed). It may run on the dispatcher thread or
    /// in conveyor_producer_free / conveyor_pipeline_free.
    pub free_userdata: Option<unsafe extern "C" fn(userdata: *mut c_void)>,
}

/// Builds the client for one host of a host list (conveyor_config_add_hosts,
/// conveyor_pipeline_add_host). `out` arrives zeroed except for `struct_size`; fill it
/// in and return 0, and conveyor owns `out->userdata` from then on (also if it rejects
/// the vtable, in which case it calls `out->free_userdata` at once). Any other return
/// value is a failure and conveyor ignores `*out`.
///
/// Called from conveyor_pipeline_new / conveyor_pipeline_add_host on the caller's
/// thread, and from worker threads when a client is rebuilt after `error_threshold`
/// failures: it must be safe to call from any thread, also concurrently. `host` is
/// valid only during the call.
pub type conveyor_client_factory =
    Option<unsafe extern "C" fn(userdata: *mut c_void, host: *const c_char, out: *mut conveyor_client_vtable) -> u32>;

/// Receives a pipeline's log messages: `level` is a CONVEYOR_LOG_* value, `message`
/// is `len` bytes of UTF-8 followed by a NUL, valid only during the call. Called from
/// any conveyor thread and from API calls, possibly concurrently: keep it short and
/// thread-safe, and do not call conveyor from it.
pub type conveyor_log_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, level: u32, message: *const c_char, len: usize)>;

/// Accounting of one producer (see conveyor_producer_counts()): at any quiescent point
/// `accepted == acked + dropped + in_flight`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct conveyor_counts {
    /// Events a publish call accepted.
    pub accepted: u64,
    /// Events reported acknowledged.
    pub acked: u64,
    /// Events reported dropped.
    pub dropped: u64,
    /// Events without an outcome yet.
    pub in_flight: u64,
}

/// What conveyor_pipeline_close_report() did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct conveyor_close_report {
    /// Events ever accepted by the pipeline.
    pub accepted: u64,
    /// Of those, acknowledged.
    pub acked: u64,
    /// Of those, dropped (including what close could not deliver in time).
    pub dropped: u64,
    /// 1 when everything was settled before the timeout, else 0.
    pub drained: u32,
}

/// An asynchronous publish waiting for its outcome (see conveyor_client_vtable.publish_async).
/// Opaque: only ever passed back to conveyor_completion_done().
pub struct conveyor_completion {
    _private: [u8; 0],
}

/// Queue sink overflow policy: a writer finding the buffer full waits for room.
pub const CONVEYOR_OVERFLOW_BLOCK: u32 = 0;
/// Queue sink overflow policy: the new event is dropped (reported to the drop hook)
/// and conveyor_sink_write() returns CONVEYOR_ERR_FULL.
pub const CONVEYOR_OVERFLOW_DROP_NEWEST: u32 = 1;
/// Queue sink overflow policy: the oldest buffered event is dropped (reported to the
/// drop hook) to make room; the write succeeds.
pub const CONVEYOR_OVERFLOW_DROP_OLDEST: u32 = 2;

/// How long conveyor_sink_close() lets a queue sink or a pipeline sink deliver what it
/// holds when no other close timeout was given, in milliseconds.
pub const CONVEYOR_SINK_CLOSE_TIMEOUT_MS: u64 = 30_000;

/// A sink written in C: takes events one at a time. Wrap it with conveyor_sink_new().
///
/// Threads: `write` may be called from several threads at once (your threads calling
/// conveyor_sink_write() on it or on a combinator over it, a queue sink's delivery
/// thread, pipeline workers when it serves as a client), and concurrently with
/// `close`: make both thread-safe. Callbacks must not unwind out of their frame.
///
/// Ownership: once conveyor_sink_new() succeeded, conveyor calls `free_userdata`
/// exactly once, after the last callback returned, when the last reference to the
/// sink is released (its handle and every combinator or pipeline holding it).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct conveyor_sink_vtable {
    /// Must be `sizeof(conveyor_sink_vtable)`.
    pub struct_size: u32,
    /// Passed to every callback; owned by conveyor once the sink is created.
    pub userdata: *mut c_void,
    /// Required. Takes one event: the `len` bytes at `data`, valid only during the
    /// call (`data` may be any non-NULL value when `len` is 0). Return 0 when the
    /// event was taken; CONVEYOR_ERR_CLOSED when this sink is closed for good (a
    /// broadcaster then removes it, a retrying sink stops retrying, a pipeline
    /// counts a broken connection); any other value is a failed write, which
    /// conveyor_sink_write() reports as CONVEYOR_ERR_CLIENT.
    pub write: Option<unsafe extern "C" fn(userdata: *mut c_void, data: *const u8, len: usize) -> u32>,
    /// Optional. Called once, by the first conveyor_sink_close() (directly or from a
    /// combinator closing its destination); writes after it fail with
    /// CONVEYOR_ERR_CLOSED without reaching `write`.
    pub close: Option<unsafe extern "C" fn(userdata: *mut c_void)>,
    /// Optional destructor of `userdata`.
    pub free_userdata: Option<unsafe extern "C" fn(userdata: *mut c_void)>,
}

/// Decides which events a filter sink forwards: return 0 to discard the event (the
/// write still succeeds), any other value to forward it. The `len` bytes at `data`
/// are valid only during the call. Runs on the writer's thread, possibly from
/// several threads at once.
pub type conveyor_sink_matcher =
    Option<unsafe extern "C" fn(userdata: *mut c_void, data: *const u8, len: usize) -> u32>;

/// Options of conveyor_queue_sink_new_with_options().
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct conveyor_queue_sink_options {
    /// Must be `sizeof(conveyor_queue_sink_options)`.
    pub struct_size: u32,
    /// How long conveyor_sink_close() lets the queue deliver what it buffers before
    /// dropping the rest (UINT64_MAX: no limit).
    pub close_timeout_ms: u64,
    /// Passed to the callbacks; owned by conveyor once the queue sink is created.
    pub userdata: *mut c_void,
    /// Optional dead-letter hook: these events were dropped (overflow, a failed
    /// delivery, the close deadline). The views are valid only during the call. Runs
    /// on the queue's delivery thread, on a writer's thread (overflow) or on the thread
    /// closing the queue, possibly concurrently: make it thread-safe.
    pub on_drop: Option<unsafe extern "C" fn(userdata: *mut c_void, events: *const conveyor_bytes, n: usize)>,
    /// Optional destructor of `userdata`, called exactly once, after the last
    /// `on_drop` returned: when the queue sink and its delivery thread are both gone
    /// (possibly on that thread).
    pub free_userdata: Option<unsafe extern "C" fn(userdata: *mut c_void)>,
}

/// What conveyor_queue_sink_close() did (counts over the queue sink's life).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct conveyor_queue_sink_report {
    /// Events delivered to the destination.
    pub delivered: u64,
    /// Events dropped (overflow, failed deliveries, the close deadline), each one
    /// reported to the drop hook.
    pub dropped: u64,
    /// 1 when the buffer drained before the deadline, else 0.
    pub drained: u32,
}

/// A retry strategy written in C, for a retrying sink (see
/// conveyor_retry_strategy_new()).
///
/// Threads: the retrying sink serializes its writes, so the callbacks are never called
/// concurrently; they run on the threads writing to the retrying sink. They must not
/// unwind out of their frame.
///
/// Ownership: once conveyor_retry_strategy_new() succeeded, `free_userdata` is called
/// exactly once, by conveyor_retry_strategy_free() or when the retrying sink that took
/// the strategy is gone.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct conveyor_retry_strategy_vtable {
    /// Must be `sizeof(conveyor_retry_strategy_vtable)`.
    pub struct_size: u32,
    /// Passed to every callback; owned by conveyor once the strategy is created.
    pub userdata: *mut c_void,
    /// Optional (NULL: never wait). Milliseconds to wait before the next attempt, 0
    /// for now, UINT64_MAX until the retrying sink is closed. Consulted before every
    /// attempt, including an event's first.
    pub proceed: Option<unsafe extern "C" fn(userdata: *mut c_void) -> u64>,
    /// Required. An attempt failed: return 0 to try again, any other value to give
    /// up on the event (the write then fails with CONVEYOR_ERR_CLIENT).
    pub failure: Option<unsafe extern "C" fn(userdata: *mut c_void) -> u32>,
    /// Optional. An attempt succeeded.
    pub success: Option<unsafe extern "C" fn(userdata: *mut c_void)>,
    /// Optional destructor of `userdata`.
    pub free_userdata: Option<unsafe extern "C" fn(userdata: *mut c_void)>,
}
