//! `conveyor_sink`: composable sinks (crate::sink) from C: sinks written in C,
//! broadcaster, queue, filter, retrying and channel sinks, a pipeline as a sink and a
//! sink as a pipeline's client.
//!
//! A `conveyor_sink *` is a reference: the handle holds its own `Arc` of the sink, and
//! so does every combinator or pipeline wrapping it; conveyor_sink_free() drops the
//! handle's. Each sink (and each pipeline) is also a node of a graph of who writes into
//! whom, so that a membership that would make a sink write into itself is refused
//! instead of recursing until the stack overflows or feeding a pipeline its own output.

use std::collections::VecDeque;
use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::boundary::{arg, copy_out, ffi_status, ffi_value, timeout_arg, Failure, FfiResult};
use super::config::{conveyor_config, ConfigClient};
use super::pipeline::conveyor_pipeline;
use super::producer::{producer_options, ProducerCallbacks};
use super::types::{
    conveyor_bytes, conveyor_producer_config, conveyor_queue_sink_options, conveyor_queue_sink_report,
    conveyor_retry_strategy_vtable, conveyor_sink_matcher, conveyor_sink_vtable, CONVEYOR_OVERFLOW_BLOCK,
    CONVEYOR_OVERFLOW_DROP_NEWEST, CONVEYOR_OVERFLOW_DROP_OLDEST, CONVEYOR_SINK_CLOSE_TIMEOUT_MS,
};
use super::{conveyor_result, CONVEYOR_ERR_BUFFER_TOO_SMALL, CONVEYOR_ERR_CLOSED};
use crate::client::AnyClient;
use crate::error::{Error, Result};
use crate::queue::lock;
use crate::sink::{
    BatchError, Broadcaster, ChannelSink, Filter, FnSink, Overflow, PipelineSink, QueueSink, RetryingSink, Sink,
    SinkBreaker, SinkClient, SinkExponentialBackoff, SinkRetryStrategy, SinkStats,
};

// ---------------------------------------------------------------- the write graph

/// Who writes into whom (sinks and pipelines); refuses links that close a cycle.
pub(crate) type Node = crate::sink::WriteNode;

// ---------------------------------------------------------------- handles

/// A reference to a sink: something that takes events one at a time.
///
/// Created by conveyor_sink_new() and the combinator constructors; released by
/// conveyor_sink_free(). Every combinator, pipeline or config given a sink takes a
/// reference of its own, so a handle may be freed as soon as the caller no longer
/// calls functions on it: the sink lives while anything references it.
///
/// Thread-safe: every function taking a sink may be called from any thread
/// concurrently, except conveyor_sink_free(), which must be the handle's last call.
pub struct conveyor_sink {
    sink: Arc<dyn Sink>,
    kind: Kind,
    node: Arc<Node>,
}

/// What a sink is, for the functions that work on one kind only.
enum Kind {
    Custom,
    Broadcaster(Arc<Broadcaster>),
    Queue(Arc<QueueSink>),
    Filter,
    Retrying,
    Channel(Arc<ChannelReader>),
    Pipeline,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Custom => "a sink from conveyor_sink_new",
            Kind::Broadcaster(_) => "a broadcaster",
            Kind::Queue(_) => "a queue sink",
            Kind::Filter => "a filter sink",
            Kind::Retrying => "a retrying sink",
            Kind::Channel(_) => "a channel sink",
            Kind::Pipeline => "a pipeline sink",
        }
    }
}

impl conveyor_sink {
    fn new(sink: Arc<dyn Sink>, kind: Kind, writes_into: Vec<Arc<Node>>) -> *mut conveyor_sink {
        Box::into_raw(Box::new(conveyor_sink { sink, kind, node: Node::new(writes_into) }))
    }

    /// The wrong-kind failure of a function that needs `wanted`.
    fn not(&self, wanted: &str) -> Failure {
        Failure::invalid(format!("the sink is {}, not {wanted}", self.kind.name()))
    }

    /// The sink and its graph node, for a config that will serve it as a client.
    pub(crate) fn as_client(&self) -> ConfigClient {
        ConfigClient::Sink(self.sink.clone(), self.node.clone())
    }
}

/// A sink as a pipeline's client: each event of a batch is written in order; a failed
/// write publishes the prefix before it and is retried, a closed sink counts as a
/// broken connection.
pub(crate) fn sink_client(sink: &Arc<dyn Sink>) -> AnyClient {
    AnyClient::sync(SinkClient::new(sink.clone()))
}

/// # Safety
/// `s` is NULL or a live sink handle, not being freed.
unsafe fn sink_arg<'a>(s: *const conveyor_sink, name: &str) -> FfiResult<&'a conveyor_sink> {
    // SAFETY: forwarded from this function's contract; sinks are `Sync`.
    unsafe { arg(s, name) }
}

/// # Safety
/// `out` is NULL or writable.
unsafe fn out_arg<'a, T>(out: *mut T) -> FfiResult<&'a mut T> {
    // SAFETY: forwarded from this function's contract; only written, never read.
    unsafe { out.as_mut() }.ok_or_else(|| Failure::null("out"))
}

/// Copies a struct that starts with its `uint32_t struct_size`.
///
/// # Safety
/// `p` is NULL or points to at least a `u32` followed, when that `u32` equals
/// `sizeof(T)`, by the rest of a `T`.
unsafe fn read_sized<T: Copy>(p: *const T, name: &str, type_name: &str) -> FfiResult<T> {
    if p.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: a readable struct whose first field (offset 0, `#[repr(C)]`) is the
    // `uint32_t struct_size` (contract); only it is read until it says the rest is there.
    let size = unsafe { p.cast::<u32>().read() } as usize;
    if size != std::mem::size_of::<T>() {
        return Err(Failure::invalid(format!(
            "{name}: struct_size is {size}, expected {} (sizeof({type_name}))",
            std::mem::size_of::<T>()
        )));
    }
    // SAFETY: `struct_size` says the struct is complete; it is plain data (a NULL
    // function pointer reads as `None`).
    Ok(unsafe { std::ptr::read(p) })
}

/// # Safety
/// `data` is NULL or points to `len` readable bytes.
unsafe fn event_arg<'a>(data: *const u8, len: usize) -> FfiResult<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(Failure::null("data"));
    }
    // SAFETY: non-NULL with `len` readable bytes (contract), read-only during the call.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

fn nonzero(value: usize, name: &str) -> FfiResult<usize> {
    if value == 0 {
        return Err(Failure::invalid(format!("`{name}` must be at least 1")));
    }
    Ok(value)
}

// ---------------------------------------------------------------- sinks written in C

/// A C sink vtable; frees its userdata when the last reference goes.
struct ForeignSink {
    vt: conveyor_sink_vtable,
    write: unsafe extern "C" fn(*mut c_void, *const u8, usize) -> u32,
}

// SAFETY: the header requires the callbacks to accept calls from any thread, also
// concurrently (conveyor_sink_vtable's thread contract); the struct is read-only.
unsafe impl Send for ForeignSink {}
// SAFETY: as above.
unsafe impl Sync for ForeignSink {}

impl ForeignSink {
    fn write(&self, event: &[u8]) -> Result<()> {
        // SAFETY: the vtable's write callback with the userdata conveyor owns; `event`
        // outlives the call (thread contract above).
        match unsafe { (self.write)(self.vt.userdata, event.as_ptr(), event.len()) } {
            0 => Ok(()),
            CONVEYOR_ERR_CLOSED => Err(Error::Closed),
            code => Err(Error::Client(format!("the sink's write callback returned {code}"))),
        }
    }

    fn close(&self) {
        if let Some(close) = self.vt.close {
            // SAFETY: as in `write`; FnSink calls this once.
            unsafe { close(self.vt.userdata) }
        }
    }
}

impl Drop for ForeignSink {
    fn drop(&mut self) {
        if let Some(free) = self.vt.free_userdata {
            // SAFETY: the last reference is gone, so no callback runs again; conveyor
            // owns the userdata since conveyor_sink_new succeeded.
            unsafe { free(self.vt.userdata) }
        }
    }
}

/// Creates a sink from C callbacks (see conveyor_sink_vtable) and stores a reference to
/// it in `*out`.
///
/// The struct is copied; on success conveyor owns its `userdata` (`free_userdata` runs
/// once the last reference is released), on failure the caller still does.
/// CONVEYOR_ERR_INVALID_ARGUMENT for a wrong `struct_size` or a NULL `write`.
#[no_mangle]
pub unsafe extern "C" fn conveyor_sink_new(
    vtable: *const conveyor_sink_vtable,
    out: *mut *mut conveyor_sink,
) -> conveyor_result {
    ffi_status("conveyor_sink_new", || {
        // SAFETY: `out` is NULL or writable (header contract).
        let out = unsafe { out_arg(out) }?;
        // SAFETY: NULL or a struct starting with `struct_size` (header contract).
        let vt = unsafe { read_sized(vtable, "vtable", "conveyor_sink_vtable") }?;
        let write = vt.write.ok_or_else(|| Failure::invalid("the sink vtable has no write callback"))?;
        let foreign = Arc::new(ForeignSink { vt, write });
        let closer = foreign.clone();
        let sink = FnSink::new(move |event: &[u8]| foreign.write(event), move || closer.close());
        *out = conveyor_sink::new(Arc::new(sink), Kind::Custom, Vec::new());
        Ok(())
    })
}

/// Writes one event (the `len` bytes at `data`; `data` may be NULL when `len` is 0).
///
/// What CONVEYOR_OK means depends on the sink: taken by the C sink, given to every
/// member (broadcaster), buffered (queue), forwarded or discarded (filter), delivered
/// after retries (retrying), buffered for a reader (channel), accepted by the pipeline.
/// Errors: CONVEYOR_ERR_CLOSED after conveyor_sink_close() (or from a closed
/// destination), CONVEYOR_ERR_FULL (queue sink with CONVEYOR_OVERFLOW_DROP_NEWEST: the
/// event was dropped and reported), CONVEYOR_ERR_CLIENT (a C sink's write failed, or a
/// retry strategy gave up on the event; conveyor_last_error() says which),
/// CONVEYOR_ERR_TIMEOUT (a pipeline sink waited its publish timeout for room).
///
/// Blocks while a blocking queue sink or a channel sink is full, while a retrying
/// sink retries, and while a pipeline sink waits for room; closing the sink from
/// another thread ends the wait with CONVEYOR_ERR_CLOSED.
#[no_mangle]
pub unsafe extern "C" fn conveyor_sink_write(sink: *mut conveyor_sink, data: *const u8, len: usize) -> conveyor_result {
    ffi_status("conveyor_sink_write", || {
        // SAFETY: the caller passes a live sink (header contract).
        let s = unsafe { sink_arg(sink, "sink") }?;
        // SAFETY: `data` holds `len` readable bytes or is NULL (header contract).
        let event = unsafe { event_arg(data, len) }?;
        Ok(s.sink.write(event)?)
    })
}

/// Closes the sink: later writes fail with CONVEYOR_ERR_CLOSED. Closing again does
/// nothing and returns CONVEYOR_OK.
///
/// Combinators close what they wrap: a broadcaster closes its members, a filter or a
/// retrying sink its destination, a queue sink delivers what it buffers (for its close
/// timeout, CONVEYOR_SINK_CLOSE_TIMEOUT_MS unless set), drops and reports the rest,
/// then closes its destination; a pipeline sink closes the pipeline (waiting its close
/// timeout for delivery). A channel sink keeps what it buffered for its reader.
/// Returns the destination's close error, if any (e.g. CONVEYOR_ERR_INVALID_ARGUMENT
/// for a pipeline sink closed from one of conveyor's callbacks).
#[no_mangle]
pub unsafe extern "C" fn conveyor_sink_close(sink: *mut conveyor_sink) -> conveyor_result {
    ffi_status("conveyor_sink_close", || {
        // SAFETY: the caller passes a live sink (header contract).
        Ok(unsafe { sink_arg(sink, "sink") }?.sink.close()?)
    })
}

/// Copies a JSON snapshot of the sink's counters (`kind`, `written`, `forwarded`,
/// `dropped`, `filtered`, `failures`, `queued`, and `inner`: the same for the sinks it
/// wraps) as a NUL-terminated string into `buf` of `len` bytes.
///
/// `*needed` (required) receives the size needed including the NUL, on success and on
/// CONVEYOR_ERR_BUFFER_TOO_SMALL (then nothing is written; `buf` may be NULL when
/// `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn conveyor_sink_stats_json(
    sink: *const conveyor_sink,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> conveyor_result {
    ffi_status("conveyor_sink_stats_json", || {
        // SAFETY: the caller passes a live sink (header contract).
        let s = unsafe { sink_arg(sink, "sink") }?;
        // SAFETY: `needed` is NULL or writable (header contract).
        let needed = unsafe { needed.as_mut() }.ok_or_else(|| Failure::null("needed"))?;
        let json = serde_json::to_string(&s.sink.stats()).map_err(|e| Error::Internal(format!("sink stats: {e}")))?;
        *needed = json.len() + 1;
        // SAFETY: `buf` holds `len` writable bytes or is NULL (header contract).
        if unsafe { copy_out(json.as_bytes(), buf, len) }? {
            Ok(())
        } else {
            Err(Failure {
                code: CONVEYOR_ERR_BUFFER_TOO_SMALL,
                message: format!("the stats need {} bytes, the buffer has {len}", json.len() + 1),
            })
        }
    })
}

/// Releases this reference to the sink. It does not close the sink. When it was the
/// last reference (no combinator, pipeline or config holds the sink) the sink is gone:
/// a C sink's `free_userdata` runs, a queue sink that was not closed drops (and
/// reports) what it still buffers and closes its destination, a pipeline sink releases
/// its pipeline. NULL is ignored; never free a handle twice or while a call on it is
/// in progress.
#[no_mangle]
pub unsafe extern "C" fn conveyor_sink_free(sink: *mut conveyor_sink) {
    ffi_value("conveyor_sink_free", (), || {
        if !sink.is_null() {
            // SAFETY: created with Box::into_raw by a constructor of this file; the
            // caller gives it up and makes no other call on it (header contract).
            drop(unsafe { Box::from_raw(sink) });
        }
        Ok(())
    })
}

// ---------------------------------------------------------------- broadcaster

/// Creates a broadcaster over the `n` sinks in `members` (NULL when `n` is 0; a sink
/// listed twice is kept once) and stores it in `*out`. It takes a reference to each.
///
/// A write goes to every member, in member order, and succeeds (failures of members
/// are counted in its stats). A member whose write returns CONVEYOR_ERR_CLOSED is
/// removed; the other members still get that event exactly once. Membership changes
/// never wait for a write in progress; wrap slow members in queue sinks so that none
/// holds back the others. Closing the broadcaster closes every member once.
#[no_mangle]
pub unsafe extern "C" fn conveyor_broadcaster_new(
    members: *const *mut conveyor_sink,
    n: usize,
    out: *mut *mut conveyor_sink,
) -> conveyor_result {
    ffi_status("conveyor_broadcaster_new", || {
        // SAFETY: `out` is NULL or writable (header contract).
        let out = unsafe { out_arg(out) }?;
        let list: Vec<&conveyor_sink> = if n == 0 {
            Vec::new()
        } else {
            if members.is_null() {
                return Err(Failure::null("members"));
            }
            // SAFETY: `members` points to `n` readable pointers (header contract).
            let ptrs = unsafe { std::slice::from_raw_parts(members, n) };
            ptrs.iter()
                .enumerate()
                // SAFETY: each entry is NULL or a live sink (header contract).
                .map(|(i, &m)| unsafe { sink_arg(m, &format!("members[{i}]")) })
                .collect::<FfiResult<_>>()?
        };
        let broadcaster = Arc::new(Broadcaster::new(list.iter().map(|m| m.sink.clone()).collect()));
        let nodes = list.iter().map(|m| m.node.clone()).collect();
        *out = conveyor_sink::new(broadcaster.clone(), Kind::Broadcaster(broadcaster), nodes);
        Ok(())
    })
}

/// Adds `member` to `broadcaster` (taking a reference to it); adding a member already
/// there does nothing.
///
/// CONVEYOR_ERR_CLOSED after the broadcaster was closed; CONVEYOR_ERR_INVALID_ARGUMENT
/// when `broadcaster` is another kind of sink, or when the member writes (directly or
/// through other sinks and pipelines) into the broadcaster itself.
#[no_mangle]
pub unsafe extern "C" fn conveyor_broadcaster_add(
    broadcaster: *mut conveyor_sink,
    member: *mut conveyor_sink,
) -> conveyor_result {
    ffi_status("conveyor_broadcaster_add", || {
        // SAFETY: the caller passes live sinks (header contract).
        let (b, m) = unsafe { (sink_arg(broadcaster, "broadcaster")?, sink_arg(member, "member")?) };
        let Kind::Broadcaster(members) = &b.kind else { return Err(b.not("a broadcaster")) };
        let linked = b.node.link(&m.node, "adding this member")?;
        members.add(m.sink.clone()).map_err(|e| {
            if linked {
                b.node.unlink(&m.node);
            }
            Failure::from(e)
        })
    })
}

/// Removes `member` from `broadcaster` without closing it (and drops the
/// broadcaster's reference to it); an unknown member is ignored. Writes starting after
/// this returns do not reach it.
///
/// CONVEYOR_ERR_CLOSED after the broadcaster was closed; CONVEYOR_ERR_INVALID_ARGUMENT
/// when `broadcaster` is another kind of sink.
#[no_mangle]
pub unsafe extern "C" fn conveyor_broadcaster_remove(
    broadcaster: *mut conveyor_sink,
    member: *mut conveyor_sink,
) -> conveyor_result {
    ffi_status("conveyor_broadcaster_remove", || {
        // SAFETY: the caller passes live sinks (header contract).
        let (b, m) = unsafe { (sink_arg(broadcaster, "broadcaster")?, sink_arg(member, "member")?) };
        let Kind::Broadcaster(members) = &b.kind else { return Err(b.not("a broadcaster")) };
        members.remove(&m.sink)?;
        b.node.unlink(&m.node);
        Ok(())
    })
}

// ---------------------------------------------------------------- queue sink

fn overflow_arg(overflow: u32) -> FfiResult<Overflow> {
    match overflow {
        CONVEYOR_OVERFLOW_BLOCK => Ok(Overflow::Block),
        CONVEYOR_OVERFLOW_DROP_NEWEST => Ok(Overflow::DropNewest),
        CONVEYOR_OVERFLOW_DROP_OLDEST => Ok(Overflow::DropOldest),
        other => Err(Failure::invalid(format!("`overflow` must be a CONVEYOR_OVERFLOW_* value, got {other}"))),
    }
}

/// A queue sink's drop hook; frees its userdata when the queue and its thread are gone,
/// once conveyor owns it (`owned`: the queue sink was created).
struct DropHook {
    options: conveyor_queue_sink_options,
    owned: AtomicBool,
}

// SAFETY: the header requires `on_drop` to accept calls from any thread, also
// concurrently, and `free_userdata` from any thread; the struct is read-only.
unsafe impl Send for DropHook {}
// SAFETY: as above.
unsafe impl Sync for DropHook {}

impl DropHook {
    fn dropped(&self, events: &[&[u8]]) {
        if let Some(on_drop) = self.options.on_drop {
            let views: Vec<conveyor_bytes> = events.iter().map(|e| conveyor_bytes::of(e)).collect();
            // SAFETY: the callback and its userdata stay valid while `self` lives; the
            // views point into `events`, which outlive the call.
            unsafe { on_drop(self.options.userdata, views.as_ptr(), views.len()) }
        }
    }
}

impl Drop for DropHook {
    fn drop(&mut self) {
        if !self.owned.load(Ordering::Acquire) {
            return;
        }
        if let Some(free) = self.options.free_userdata {
            // SAFETY: the last holder is gone, so `on_drop` runs no more; conveyor owns
            // the userdata since the queue sink was created.
            unsafe { free(self.options.userdata) }
        }
    }
}

/// # Safety
/// `dst` and `out` as in conveyor_queue_sink_new_with_options.
unsafe fn queue_sink(
    dst: *const conveyor_sink,
    capacity: usize,
    overflow: u32,
    options: Option<conveyor_queue_sink_options>,
    out: *mut *mut conveyor_sink,
) -> FfiResult {
    // SAFETY: the caller passes a live sink and a writable `out` (header contract).
    let (dst, out) = unsafe { (sink_arg(dst, "dst")?, out_arg(out)?) };
    let capacity = nonzero(capacity, "capacity")?;
    let overflow = overflow_arg(overflow)?;
    let close_timeout = options.map_or(CONVEYOR_SINK_CLOSE_TIMEOUT_MS, |o| o.close_timeout_ms);
    let hook = options.map(|options| Arc::new(DropHook { options, owned: AtomicBool::new(false) }));
    let on_drop = hook.clone().map(|h| Box::new(move |events: &[&[u8]]| h.dropped(events)) as crate::DropCallback);
    let close_timeout = timeout_arg(close_timeout).unwrap_or(Duration::MAX);
    // On failure `owned` stays false, so the userdata stays with the caller.
    let queue = Arc::new(QueueSink::new(dst.sink.clone(), capacity, overflow, close_timeout, on_drop)?);
    if let Some(h) = hook {
        h.owned.store(true, Ordering::Release);
    }
    *out = conveyor_sink::new(queue.clone(), Kind::Queue(queue), vec![dst.node.clone()]);
    Ok(())
}

/// Creates a queue sink in front of `dst` (taking a reference to it) and stores it in
/// `*out`: it buffers up to `capacity` events (at least 1) and delivers them to `dst`
/// in order from a thread of its own, so writers never wait on `dst` (unless the
/// buffer is full and `overflow` is CONVEYOR_OVERFLOW_BLOCK). `overflow` is a
/// CONVEYOR_OVERFLOW_* value. Deliveries that fail are counted as dropped (see its
/// stats); conveyor_sink_close() drains for CONVEYOR_SINK_CLOSE_TIMEOUT_MS. For a drop
/// hook and another close timeout use conveyor_queue_sink_new_with_options().
///
/// CONVEYOR_ERR_INVALID_ARGUMENT for a zero capacity or an unknown overflow policy;
/// CONVEYOR_ERR_INTERNAL when its thread cannot be started.
#[no_mangle]
pub unsafe extern "C" fn conveyor_queue_sink_new(
    dst: *mut conveyor_sink,
    capacity: usize,
    overflow: u32,
    out: *mut *mut conveyor_sink,
) -> conveyor_result {
    ffi_status("conveyor_queue_sink_new", || {
        // SAFETY: forwarded from the header contract.
        unsafe { queue_sink(dst, capacity, overflow, None, out) }
    })
}

/// As conveyor_queue_sink_new(), with `options` (see conveyor_queue_sink_options;
/// copied): the close timeout and a drop hook hearing about every dropped event. On
/// success conveyor owns `options->userdata`; on failure the caller still does.
/// CONVEYOR_ERR_INVALID_ARGUMENT also for a wrong `struct_size`.
#[no_mangle]
pub unsafe extern "C" fn conveyor_queue_sink_new_with_options(
    dst: *mut conveyor_sink,
    capacity: usize,
    overflow: u32,
    options: *const conveyor_queue_sink_options,
    out: *mut *mut conveyor_sink,
) -> conveyor_result {
    ffi_status("conveyor_queue_sink_new_with_options", || {
        // SAFETY: NULL or a struct starting with `struct_size` (header contract).
        let options = unsafe { read_sized(options, "options", "conveyor_queue_sink_options") }?;
        // SAFETY: forwarded from the header contract.
        unsafe { queue_sink(dst, capacity, overflow, Some(options), out) }
    })
}

/// Closes a queue sink with a deadline: stops accepting events, delivers what it
/// buffers for up to `timeout_ms` (UINT64_MAX: no limit), drops and reports the rest,
/// then closes the destination; a write still under way gets the timeout again to
/// return (closing the destination usually ends it), so the report counts its events.
/// Returns within twice the timeout plus the destination's close even when the
/// destination blocks (a write that outlasts that finishes on its own; the queue's
/// thread ends after it).
/// `*report` (may be NULL) receives the counts over the queue's life and whether it
/// drained. Calling it again (or after conveyor_sink_close()) reports again.
///
/// CONVEYOR_ERR_INVALID_ARGUMENT when `sink` is another kind of sink.
#[no_mangle]
pub unsafe extern "C" fn conveyor_queue_sink_close(
    sink: *mut conveyor_sink,
    timeout_ms: u64,
    report: *mut conveyor_queue_sink_report,
) -> conveyor_result {
    ffi_status("conveyor_queue_sink_close", || {
        // SAFETY: the caller passes a live sink (header contract).
        let s = unsafe { sink_arg(sink, "sink") }?;
        let Kind::Queue(queue) = &s.kind else { return Err(s.not("a queue sink")) };
        let r = queue.close_within(timeout_arg(timeout_ms).unwrap_or(Duration::MAX));
        // SAFETY: `report` is NULL or writable (header contract).
        if let Some(out) = unsafe { report.as_mut() } {
            *out = conveyor_queue_sink_report { delivered: r.delivered, dropped: r.dropped, drained: r.drained.into() };
        }
        Ok(())
    })
}

// ---------------------------------------------------------------- filter

/// A filter's matcher and its userdata, freed (when a destructor was given) once the
/// filter is gone.
struct Matcher {
    matches: unsafe extern "C" fn(*mut c_void, *const u8, usize) -> u32,
    userdata: *mut c_void,
    free_userdata: Option<unsafe extern "C" fn(*mut c_void)>,
}

// SAFETY: the header requires the matcher to accept calls from any thread, also
// concurrently, and `free_userdata` from any thread; the struct is read-only.
unsafe impl Send for Matcher {}
// SAFETY: as above.
unsafe impl Sync for Matcher {}

impl Matcher {
    fn matches(&self, event: &[u8]) -> bool {
        // SAFETY: the matcher and its userdata stay valid while the filter exists
        // (header contract); `event` outlives the call.
        unsafe { (self.matches)(self.userdata, event.as_ptr(), event.len()) != 0 }
    }
}

impl Drop for Matcher {
    fn drop(&mut self) {
        if let Some(free) = self.free_userdata {
            // SAFETY: the filter is gone, so the matcher runs no more; conveyor owns the
            // userdata since the filter was created.
            unsafe { free(self.userdata) }
        }
    }
}

/// # Safety
/// `dst` and `out` as in conveyor_filter_sink_new_with_free.
unsafe fn filter_sink(
    dst: *const conveyor_sink,
    matches: conveyor_sink_matcher,
    userdata: *mut c_void,
    free_userdata: Option<unsafe extern "C" fn(*mut c_void)>,
    out: *mut *mut conveyor_sink,
) -> FfiResult {
    // SAFETY: the caller passes a live sink and a writable `out` (header contract).
    let (dst, out) = unsafe { (sink_arg(dst, "dst")?, out_arg(out)?) };
    let matches = matches.ok_or_else(|| Failure::null("matches"))?;
    // Nothing below fails: from here on conveyor owns the userdata.
    let matcher = Matcher { matches, userdata, free_userdata };
    let filter = Filter::new(dst.sink.clone(), move |event: &[u8]| matcher.matches(event));
    *out = conveyor_sink::new(Arc::new(filter), Kind::Filter, vec![dst.node.clone()]);
    Ok(())
}

/// Creates a filter in front of `dst` (taking a reference to it) and stores it in
/// `*out`: a write forwards the event when `matches(userdata, data, len)` returns
/// non-zero and discards it otherwise (the write still succeeds; counted as
/// `filtered`). Closing it closes `dst`.
///
/// `userdata` is passed to `matches` and must stay valid as long as the filter exists
/// (until its last reference is released); conveyor never frees it (see
/// conveyor_filter_sink_new_with_free()).
#[no_mangle]
pub unsafe extern "C" fn conveyor_filter_sink_new(
    dst: *mut conveyor_sink,
    matches: conveyor_sink_matcher,
    userdata: *mut c_void,
    out: *mut *mut conveyor_sink,
) -> conveyor_result {
    ffi_status("conveyor_filter_sink_new", || {
        // SAFETY: forwarded from the header contract.
        unsafe { filter_sink(dst, matches, userdata, None, out) }
    })
}

/// As conveyor_filter_sink_new(), and conveyor owns `userdata` once the filter is
/// created: `free_userdata` (may be NULL) runs exactly once, after the last `matches`
/// call returned, when the filter is gone (its last reference released), possibly on
/// another thread. On failure the caller still owns `userdata`.
#[no_mangle]
pub unsafe extern "C" fn conveyor_filter_sink_new_with_free(
    dst: *mut conveyor_sink,
    matches: conveyor_sink_matcher,
    userdata: *mut c_void,
    free_userdata: Option<unsafe extern "C" fn(userdata: *mut c_void)>,
    out: *mut *mut conveyor_sink,
) -> conveyor_result {
    ffi_status("conveyor_filter_sink_new_with_free", || {
        // SAFETY: forwarded from the header contract.
        unsafe { filter_sink(dst, matches, userdata, free_userdata, out) }
    })
}

// ---------------------------------------------------------------- retrying sink

/// A retry strategy for conveyor_retrying_sink_new(), which takes it over.
///
/// Created by conveyor_breaker_new(), conveyor_exponential_backoff_new() or
/// conveyor_retry_strategy_new(); freed by conveyor_retry_strategy_free() unless a
/// retrying sink took it. Not thread-safe until a retrying sink took it.
pub struct conveyor_retry_strategy {
    strategy: Box<dyn SinkRetryStrategy>,
}

fn strategy_handle(strategy: Box<dyn SinkRetryStrategy>) -> *mut conveyor_retry_strategy {
    Box::into_raw(Box::new(conveyor_retry_strategy { strategy }))
}

/// A breaker: after `threshold` failed attempts in a row, at most one attempt per
/// `backoff_ms` window (each failed attempt starts a new window); a success resets
/// it; it never gives up on an event. Returns NULL only if conveyor panicked.
#[no_mangle]
pub extern "C" fn conveyor_breaker_new(threshold: u32, backoff_ms: u64) -> *mut conveyor_retry_strategy {
    ffi_value("conveyor_breaker_new", std::ptr::null_mut(), || {
        Ok(strategy_handle(Box::new(SinkBreaker::new(threshold, Duration::from_millis(backoff_ms)))))
    })
}

/// Full-jitter exponential backoff: after `n` failed attempts in a row the wait is
/// uniform in [0, min(base_ms + factor_ms * 2^(n-1), max_ms)) milliseconds (the
/// bound saturates at `max_ms` however many failures); a success resets it; it never
/// gives up on an event. Returns NULL only if conveyor panicked.
#[no_mangle]
pub extern "C" fn conveyor_exponential_backoff_new(
    base_ms: u64,
    factor_ms: u64,
    max_ms: u64,
) -> *mut conveyor_retry_strategy {
    ffi_value("conveyor_exponential_backoff_new", std::ptr::null_mut(), || {
        let ms = Duration::from_millis;
        Ok(strategy_handle(Box::new(SinkExponentialBackoff::new(
            ms(base_ms),
            ms(factor_ms),
            ms(max_ms),
            rand::random(),
        ))))
    })
}

/// A C retry strategy; frees its userdata when dropped.
struct ForeignStrategy {
    vt: conveyor_retry_strategy_vtable,
    failure: unsafe extern "C" fn(*mut c_void) -> u32,
}

// SAFETY: the header's thread contract: the callbacks may run on any thread writing to
// the retrying sink, never concurrently (the sink serializes them), which is `Send`.
unsafe impl Send for ForeignStrategy {}

impl SinkRetryStrategy for ForeignStrategy {
    fn proceed(&mut self) -> Duration {
        // SAFETY (both calls below): callbacks of a validated vtable with the userdata
        // conveyor owns, called one at a time (thread contract above).
        self.vt.proceed.map_or(Duration::ZERO, |proceed| Duration::from_millis(unsafe { proceed(self.vt.userdata) }))
    }

    fn failure(&mut self) -> bool {
        // SAFETY: as in `proceed`.
        unsafe { (self.failure)(self.vt.userdata) != 0 }
    }

    fn success(&mut self) {
        if let Some(success) = self.vt.success {
            // SAFETY: as in `proceed`.
            unsafe { success(self.vt.userdata) }
        }
    }
}

impl Drop for ForeignStrategy {
    fn drop(&mut self) {
        if let Some(free) = self.vt.free_userdata {
            // SAFETY: the strategy is gone, so no callback runs again; conveyor owns the
            // userdata since conveyor_retry_strategy_new succeeded.
            unsafe { free(self.vt.userdata) }
        }
    }
}

/// Creates a retry strategy from C callbacks (see conveyor_retry_strategy_vtable) and
/// stores it in `*out`. The struct is copied; on success conveyor owns its `userdata`,
/// on failure the caller still does. CONVEYOR_ERR_INVALID_ARGUMENT for a wrong
/// `struct_size` or a NULL `failure`.
#[no_mangle]
pub unsafe extern "C" fn conveyor_retry_strategy_new(
    vtable: *const conveyor_retry_strategy_vtable,
    out: *mut *mut conveyor_retry_strategy,
) -> conveyor_result {
    ffi_status("conveyor_retry_strategy_new", || {
        // SAFETY: `out` is NULL or writable (header contract).
        let out = unsafe { out_arg(out) }?;
        // SAFETY: NULL or a struct starting with `struct_size` (header contract).
        let vt = unsafe { read_sized(vtable, "vtable", "conveyor_retry_strategy_vtable") }?;
        let failure = vt.failure.ok_or_else(|| Failure::invalid("the strategy vtable has no failure callback"))?;
        *out = strategy_handle(Box::new(ForeignStrategy { vt, failure }));
        Ok(())
    })
}

/// Frees a strategy no retrying sink took (a C strategy's `free_userdata` runs).
/// NULL is ignored; never free a strategy a retrying sink took, nor twice.
#[no_mangle]
pub unsafe extern "C" fn conveyor_retry_strategy_free(strategy: *mut conveyor_retry_strategy) {
    ffi_value("conveyor_retry_strategy_free", (), || {
        if !strategy.is_null() {
            // SAFETY: created by a strategy constructor with Box::into_raw and not taken
            // by a retrying sink (header contract).
            drop(unsafe { Box::from_raw(strategy) });
        }
        Ok(())
    })
}

/// Creates a retrying sink in front of `dst` (taking a reference to it) and stores it
/// in `*out`. On success it takes `strategy` (do not free it or pass it again); on
/// failure the caller still owns it.
///
/// Each write is retried under the strategy until `dst` takes it; it fails with
/// CONVEYOR_ERR_CLIENT when the strategy gives up ("dropped by the retry strategy
/// after N attempts"), with CONVEYOR_ERR_CLOSED at once when `dst` reports closed, and
/// with CONVEYOR_ERR_CLOSED when this sink is closed meanwhile (a pending backoff ends
/// at once). Writes are serialized, so concurrent writers keep their order. Closing it
/// closes `dst`.
#[no_mangle]
pub unsafe extern "C" fn conveyor_retrying_sink_new(
    dst: *mut conveyor_sink,
    strategy: *mut conveyor_retry_strategy,
    out: *mut *mut conveyor_sink,
) -> conveyor_result {
    ffi_status("conveyor_retrying_sink_new", || {
        // SAFETY: the caller passes a live sink and a writable `out` (header contract).
        let (dst, out) = unsafe { (sink_arg(dst, "dst")?, out_arg(out)?) };
        if strategy.is_null() {
            return Err(Failure::null("strategy"));
        }
        // SAFETY: a live strategy from a constructor of this file, given up by the caller
        // on success (header contract); nothing below can fail.
        let strategy = unsafe { Box::from_raw(strategy) }.strategy;
        let retrying = RetryingSink::new(dst.sink.clone(), strategy);
        *out = conveyor_sink::new(Arc::new(retrying), Kind::Retrying, vec![dst.node.clone()]);
        Ok(())
    })
}

// ---------------------------------------------------------------- channel sink

/// The reading side of a channel sink: an event too large for the reader's buffer
/// waits here, first in line, for the next call.
struct ChannelReader {
    channel: Arc<ChannelSink>,
    held: Mutex<VecDeque<Vec<u8>>>,
}

/// Creates a channel sink holding up to `capacity` events (at least 1) for the
/// application to read with conveyor_channel_sink_recv(), and stores it in `*out`. A
/// write waits for room; after close, writes fail with CONVEYOR_ERR_CLOSED (also those
/// waiting) while buffered events stay readable.
#[no_mangle]
pub unsafe extern "C" fn conveyor_channel_sink_new(capacity: usize, out: *mut *mut conveyor_sink) -> conveyor_result {
    ffi_status("conveyor_channel_sink_new", || {
        // SAFETY: `out` is NULL or writable (header contract).
        let out = unsafe { out_arg(out) }?;
        let channel = Arc::new(ChannelSink::new(nonzero(capacity, "capacity")?));
        let reader = Arc::new(ChannelReader { channel: channel.clone(), held: Mutex::new(VecDeque::new()) });
        *out = conveyor_sink::new(channel, Kind::Channel(reader), Vec::new());
        Ok(())
    })
}

/// Takes the next event of a channel sink, waiting up to `timeout_ms` (UINT64_MAX: no
/// limit; 0: do not wait), and copies it into `buf` of `len` bytes. `*needed`
/// (required) receives the event's length on CONVEYOR_OK and on
/// CONVEYOR_ERR_BUFFER_TOO_SMALL; in that case nothing is copied and the event stays
/// first in line for the next call (so `recv(sink, NULL, 0, &needed, t)` waits for an
/// event and tells its size). `buf` may be NULL when `len` is 0.
///
/// CONVEYOR_ERR_TIMEOUT when nothing came in time, CONVEYOR_ERR_CLOSED once the sink is
/// closed and everything buffered was read, CONVEYOR_ERR_INVALID_ARGUMENT when `sink`
/// is another kind of sink. Readers on several threads each get different events.
#[no_mangle]
pub unsafe extern "C" fn conveyor_channel_sink_recv(
    sink: *mut conveyor_sink,
    buf: *mut u8,
    len: usize,
    needed: *mut usize,
    timeout_ms: u64,
) -> conveyor_result {
    ffi_status("conveyor_channel_sink_recv", || {
        // SAFETY: the caller passes a live sink (header contract).
        let s = unsafe { sink_arg(sink, "sink") }?;
        let Kind::Channel(reader) = &s.kind else { return Err(s.not("a channel sink")) };
        // SAFETY: `needed` is NULL or writable (header contract).
        let needed = unsafe { needed.as_mut() }.ok_or_else(|| Failure::null("needed"))?;
        if buf.is_null() && len > 0 {
            return Err(Failure::null("buf"));
        }
        let held = lock(&reader.held).pop_front();
        let event = match held {
            Some(event) => event,
            None => reader.channel.recv(timeout_arg(timeout_ms))?,
        };
        *needed = event.len();
        if event.len() > len {
            let message =
                format!("the event needs {} bytes, the buffer has {len}; it stays first in line", event.len());
            lock(&reader.held).push_front(event);
            return Err(Failure { code: CONVEYOR_ERR_BUFFER_TOO_SMALL, message });
        }
        if !event.is_empty() {
            // SAFETY: `buf` is non-NULL (checked: `len >= event.len() > 0`) and holds
            // `len` writable bytes (header contract); `event` is a separate allocation.
            unsafe { std::ptr::copy_nonoverlapping(event.as_ptr(), buf, event.len()) };
        }
        Ok(())
    })
}

// ---------------------------------------------------------------- pipelines and sinks

/// The pipeline as a sink: conveyor_pipeline_as_sink_with(pipeline, NULL, UINT64_MAX,
/// CONVEYOR_SINK_CLOSE_TIMEOUT_MS, out).
#[no_mangle]
pub unsafe extern "C" fn conveyor_pipeline_as_sink(
    pipeline: *mut conveyor_pipeline,
    out: *mut *mut conveyor_sink,
) -> conveyor_result {
    ffi_status("conveyor_pipeline_as_sink", || {
        // SAFETY: forwarded from the header contract.
        unsafe { pipeline_sink(pipeline, std::ptr::null(), u64::MAX, CONVEYOR_SINK_CLOSE_TIMEOUT_MS, out) }
    })
}

/// Stores in `*out` a sink that publishes into `pipeline` through a producer of its
/// own, made from `producer` as by conveyor_producer_new() (NULL: no callbacks; same
/// ownership of its userdata): `on_ack` / `on_drop` report the outcome of every event
/// the sink accepted. A write publishes the event, waiting up to `publish_timeout_ms`
/// for room (UINT64_MAX: no limit; the wait ends with CONVEYOR_ERR_CLOSED when the
/// pipeline closes); closing the sink closes the pipeline, waiting up to
/// `close_timeout_ms` for delivery. The sink keeps the pipeline alive:
/// conveyor_pipeline_free() still closes it (with a zero timeout), after which writes
/// fail with CONVEYOR_ERR_CLOSED. The sink's stats show the pipeline's totals
/// (`forwarded` = acked, `dropped`).
///
/// CONVEYOR_ERR_CLOSED when the pipeline is closed; CONVEYOR_ERR_INVALID_ARGUMENT for a
/// bad producer config.
#[no_mangle]
pub unsafe extern "C" fn conveyor_pipeline_as_sink_with(
    pipeline: *mut conveyor_pipeline,
    producer: *const conveyor_producer_config,
    publish_timeout_ms: u64,
    close_timeout_ms: u64,
    out: *mut *mut conveyor_sink,
) -> conveyor_result {
    ffi_status("conveyor_pipeline_as_sink_with", || {
        // SAFETY: forwarded from the header contract.
        unsafe { pipeline_sink(pipeline, producer, publish_timeout_ms, close_timeout_ms, out) }
    })
}

/// A pipeline sink holding the C callbacks of its producer until it is gone (events
/// still in flight then hold their own reference).
struct CallbackPipelineSink {
    sink: PipelineSink,
    _callbacks: Arc<ProducerCallbacks>,
}

impl Sink for CallbackPipelineSink {
    fn write(&self, event: &[u8]) -> Result<()> {
        self.sink.write(event)
    }

    fn write_batch(&self, events: &[&[u8]]) -> Result<usize, BatchError> {
        self.sink.write_batch(events)
    }

    fn close(&self) -> Result<()> {
        self.sink.close()
    }

    fn stats(&self) -> SinkStats {
        self.sink.stats()
    }
}

/// # Safety
/// `pipeline` is NULL or live; `producer` is NULL or a struct starting with
/// `struct_size`; `out` is NULL or writable.
unsafe fn pipeline_sink(
    pipeline: *const conveyor_pipeline,
    producer: *const conveyor_producer_config,
    publish_timeout_ms: u64,
    close_timeout_ms: u64,
    out: *mut *mut conveyor_sink,
) -> FfiResult {
    // SAFETY: forwarded from this function's contract.
    let (p, out) = unsafe { (arg(pipeline, "pipeline")?, out_arg(out)?) };
    // SAFETY: forwarded from this function's contract.
    let (options, callbacks) = unsafe { producer_options(producer) }?;
    let close_timeout = timeout_arg(close_timeout_ms).unwrap_or(Duration::MAX);
    // On failure the callbacks were not committed, so the userdata stays the caller's.
    let sink = PipelineSink::new(p.inner.clone(), options, timeout_arg(publish_timeout_ms), close_timeout)?;
    callbacks.commit();
    let sink = CallbackPipelineSink { sink, _callbacks: callbacks };
    *out = conveyor_sink::new(Arc::new(sink), Kind::Pipeline, vec![p.graph.clone()]);
    Ok(())
}

/// Makes `sink` a client of the pipeline built from `config` (taking a reference to
/// it), after the clients added before it: each event of a batch is written to the
/// sink in order; a failed write publishes the events before it and the rest is
/// retried; a sink that reports closed counts as a broken connection (the events go to
/// another client in failover and loadbalance modes). The pipeline never closes the
/// sink: close it yourself when you no longer need it.
#[no_mangle]
pub unsafe extern "C" fn conveyor_config_add_sink(
    config: *mut conveyor_config,
    sink: *mut conveyor_sink,
) -> conveyor_result {
    ffi_status("conveyor_config_add_sink", || {
        // SAFETY: the caller passes a live config it uses from this thread only.
        let c = unsafe { config.as_mut() }.ok_or_else(|| Failure::null("config"))?;
        // SAFETY: the caller passes a live sink (header contract).
        let s = unsafe { sink_arg(sink, "sink") }?;
        c.clients.push(s.as_client());
        Ok(())
    })
}

/// Makes `sink` a client of a running pipeline (modes failover and loadbalance), as
/// conveyor_config_add_sink() does, and stores its id in `*client_id` (may be NULL;
/// see conveyor_pipeline_remove_client()).
///
/// CONVEYOR_ERR_INVALID_ARGUMENT in mode "single" or when the sink writes (directly
/// or through other sinks and pipelines) into this pipeline; CONVEYOR_ERR_CLOSED after
/// close.
#[no_mangle]
pub unsafe extern "C" fn conveyor_pipeline_add_sink(
    pipeline: *mut conveyor_pipeline,
    sink: *mut conveyor_sink,
    client_id: *mut u64,
) -> conveyor_result {
    ffi_status("conveyor_pipeline_add_sink", || {
        // SAFETY: the caller passes a live pipeline and sink (header contract).
        let (p, s) = unsafe { (arg(pipeline, "pipeline")?, sink_arg(sink, "sink")?) };
        let linked = p.graph.link(&s.node, "serving this sink as a client of the pipeline")?;
        let id = p.inner.add_client(sink_client(&s.sink)).map_err(|e| {
            if linked {
                p.graph.unlink(&s.node);
            }
            Failure::from(e)
        })?;
        // SAFETY: `client_id` is NULL or writable (header contract).
        if let Some(out) = unsafe { client_id.as_mut() } {
            *out = id;
        }
        Ok(())
    })
}
