//! `conveyor_producer`: publish events and hear about their outcomes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::boundary::{arg, ffi_status, ffi_value, flag, timeout_arg, Failure, FfiResult};
use super::conveyor_result;
use super::pipeline::conveyor_pipeline;
use super::types::{conveyor_bytes, conveyor_counts, conveyor_producer_config};
use crate::event::Packed;
use crate::queue::{Producer, ProducerOptions};

/// A producer of one pipeline.
///
/// Thread-safe: publish functions may be called from any thread concurrently, also
/// from conveyor callbacks. Free it with conveyor_producer_free() before freeing its
/// pipeline (a producer that outlives its pipeline only gets CONVEYOR_ERR_CLOSED).
pub struct conveyor_producer {
    inner: Producer,
    /// Keeps the userdata until the handle, and every callback holding it, is gone.
    _callbacks: Arc<ProducerCallbacks>,
}

/// The C callbacks of a producer; frees the userdata when the last holder drops it,
/// once conveyor owns it (`owned`: the producer was created).
pub(crate) struct ProducerCallbacks {
    config: conveyor_producer_config,
    owned: AtomicBool,
}

// SAFETY: the header requires the producer callbacks to accept calls from conveyor's
// dispatcher thread and `free_userdata` from any thread; the struct is read-only.
unsafe impl Send for ProducerCallbacks {}
// SAFETY: as above: shared read-only; callbacks run one at a time on the dispatcher.
unsafe impl Sync for ProducerCallbacks {}

impl ProducerCallbacks {
    /// The producer exists: conveyor owns the userdata from now on.
    pub(crate) fn commit(&self) {
        self.owned.store(true, Ordering::Release);
    }

    fn ack(&self, count: u64) {
        if let Some(on_ack) = self.config.on_ack {
            // SAFETY: the callback and its userdata stay valid while `self` lives; it
            // runs on the dispatcher thread, one call at a time (header contract).
            unsafe { on_ack(self.config.userdata, count) }
        }
    }

    fn dropped(&self, events: &[&[u8]]) {
        if let Some(on_drop) = self.config.on_drop {
            let views: Vec<conveyor_bytes> = events.iter().map(|e| conveyor_bytes::of(e)).collect();
            // SAFETY: as in `ack`; the views point into `events`, which outlive the call.
            unsafe { on_drop(self.config.userdata, views.as_ptr(), views.len()) }
        }
    }
}

impl Drop for ProducerCallbacks {
    fn drop(&mut self) {
        if !self.owned.load(Ordering::Acquire) {
            return;
        }
        if let Some(free) = self.config.free_userdata {
            // SAFETY: the last reference is gone, so no callback can run again; conveyor
            // owns the userdata since conveyor_producer_new succeeded.
            unsafe { free(self.config.userdata) }
        }
    }
}

/// # Safety
/// `p` is NULL or a live producer, not being freed.
unsafe fn producer<'a>(p: *const conveyor_producer) -> FfiResult<&'a conveyor_producer> {
    // SAFETY: forwarded from this function's contract; the producer is `Sync`.
    unsafe { arg(p, "producer") }
}

/// # Safety
/// `config` is NULL or a readable struct starting with `struct_size`.
unsafe fn read_config(config: *const conveyor_producer_config) -> FfiResult<Option<conveyor_producer_config>> {
    if config.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, and its first field (offset 0, `#[repr(C)]`) is the `uint32_t
    // struct_size` (contract); only it is read until it says the rest is there.
    let size = unsafe { config.cast::<u32>().read() } as usize;
    if size != std::mem::size_of::<conveyor_producer_config>() {
        return Err(Failure::invalid(format!(
            "producer config struct_size is {size}, expected {} (sizeof(conveyor_producer_config))",
            std::mem::size_of::<conveyor_producer_config>()
        )));
    }
    // SAFETY: `struct_size` says the struct is complete; it is plain data.
    Ok(Some(unsafe { std::ptr::read(config) }))
}

/// Creates a producer on `pipeline` and stores it in `*out`.
///
/// `config` may be NULL for a producer without callbacks, not guaranteed, not
/// dropping on cancel. Otherwise it is copied; on success conveyor owns its `userdata`
/// (see conveyor_producer_config for when `free_userdata` runs); on failure the caller
/// still does. CONVEYOR_ERR_INVALID_ARGUMENT for a wrong `struct_size` or a flag other
/// than 0/1, CONVEYOR_ERR_CLOSED after close.
#[no_mangle]
pub unsafe extern "C" fn conveyor_producer_new(
    pipeline: *mut conveyor_pipeline,
    config: *const conveyor_producer_config,
    out: *mut *mut conveyor_producer,
) -> conveyor_result {
    ffi_status("conveyor_producer_new", || {
        // SAFETY: the caller passes a live pipeline (header contract).
        let p = unsafe { arg(pipeline, "pipeline") }?;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: NULL or a struct starting with `struct_size` (header contract).
        let (options, callbacks) = unsafe { producer_options(config) }?;
        // On failure `owned` stays false, so the userdata stays with the caller.
        let inner = p.inner.producer(options)?;
        callbacks.commit();
        // SAFETY: `out` is non-NULL and writable (header contract).
        unsafe { *out = Box::into_raw(Box::new(conveyor_producer { inner, _callbacks: callbacks })) };
        Ok(())
    })
}

/// The core options for a C producer config (NULL: no callbacks, not guaranteed, not
/// dropping on cancel), and the callbacks they call. Call `commit` on the callbacks
/// once the producer exists: until then the userdata stays the caller's.
///
/// # Safety
/// `config` is NULL or a readable struct starting with `struct_size`.
pub(crate) unsafe fn producer_options(
    config: *const conveyor_producer_config,
) -> FfiResult<(ProducerOptions, Arc<ProducerCallbacks>)> {
    // SAFETY: forwarded from this function's contract.
    let config = unsafe { read_config(config) }?;
    let mut options = ProducerOptions::default();
    let callbacks = match config {
        None => Arc::new(ProducerCallbacks { config: no_callbacks(), owned: AtomicBool::new(false) }),
        Some(c) => {
            options.guaranteed = flag(c.guaranteed, "guaranteed")?;
            options.drop_on_cancel = flag(c.drop_on_cancel, "drop_on_cancel")?;
            let callbacks = Arc::new(ProducerCallbacks { config: c, owned: AtomicBool::new(false) });
            if c.on_ack.is_some() {
                let cb = callbacks.clone();
                options.on_ack = Some(Box::new(move |count| cb.ack(count)));
            }
            if c.on_drop.is_some() {
                let cb = callbacks.clone();
                options.on_drop = Some(Box::new(move |events: &[&[u8]]| cb.dropped(events)));
            }
            callbacks
        }
    };
    Ok((options, callbacks))
}

fn no_callbacks() -> conveyor_producer_config {
    conveyor_producer_config {
        struct_size: std::mem::size_of::<conveyor_producer_config>() as u32,
        userdata: std::ptr::null_mut(),
        on_ack: None,
        on_drop: None,
        guaranteed: 0,
        drop_on_cancel: 0,
        free_userdata: None,
    }
}

fn publish_result(r: crate::Result<()>) -> FfiResult {
    Ok(r?)
}

/// Publishes one event (the `len` bytes at `data` are copied), waiting at most
/// `timeout_ms` milliseconds for room in the queue (UINT64_MAX: no limit; 0: do not
/// wait). On CONVEYOR_OK the event is accepted and will get exactly one outcome
/// (on_ack or on_drop); on any error it was not accepted and nothing is reported later.
///
/// `data` may be NULL only when `len` is 0. Errors: CONVEYOR_ERR_TIMEOUT,
/// CONVEYOR_ERR_CLOSED, CONVEYOR_ERR_CANCELLED, CONVEYOR_ERR_INVALID_ARGUMENT (an
/// event larger than queue.bytes or 4 GiB). May be called from conveyor callbacks.
#[no_mangle]
pub unsafe extern "C" fn conveyor_producer_publish(
    p: *mut conveyor_producer,
    data: *const u8,
    len: usize,
    timeout_ms: u64,
) -> conveyor_result {
    ffi_status("conveyor_producer_publish", || {
        // SAFETY: the caller passes a live producer (header contract).
        let p = unsafe { producer(p) }?;
        // SAFETY: `data` holds `len` readable bytes or is NULL (header contract).
        let event = unsafe { bytes_arg(data, len, "data") }?;
        publish_result(p.inner.publish(event, timeout_arg(timeout_ms)))
    })
}

/// Publishes one event only if the queue has room now: CONVEYOR_ERR_FULL otherwise
/// (never because a thread is busy). Otherwise as conveyor_producer_publish().
#[no_mangle]
pub unsafe extern "C" fn conveyor_producer_try_publish(
    p: *mut conveyor_producer,
    data: *const u8,
    len: usize,
) -> conveyor_result {
    ffi_status("conveyor_producer_try_publish", || {
        // SAFETY: the caller passes a live producer (header contract).
        let p = unsafe { producer(p) }?;
        // SAFETY: `data` holds `len` readable bytes or is NULL (header contract).
        let event = unsafe { bytes_arg(data, len, "data") }?;
        publish_result(p.inner.try_publish(event))
    })
}

/// # Safety
/// `data` is NULL or points to `len` readable bytes.
unsafe fn bytes_arg<'a>(data: *const u8, len: usize, name: &str) -> FfiResult<&'a [u8]> {
    // SAFETY: forwarded from this function's contract.
    unsafe { bytes_view(data, len) }.ok_or_else(|| Failure::null(name))
}

/// The bytes at `data`, or `None` when `data` is NULL with a non-zero `len`.
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes.
unsafe fn bytes_view<'a>(data: *const u8, len: usize) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if data.is_null() {
        return None;
    }
    // SAFETY: non-NULL with `len` readable bytes (contract), read-only during the call.
    Some(unsafe { std::slice::from_raw_parts(data, len) })
}

/// Publishes `n` events in order (copied), waiting at most `timeout_ms` for room
/// (UINT64_MAX: no limit), and stores in `*accepted` (required; set on every return
/// once checked non-NULL) how many leading events were accepted. A partial batch returns
/// CONVEYOR_OK with `*accepted < n` (the queue stayed full or closed); an error means
/// none was accepted. `events` may be NULL only when `n` is 0; an event with NULL data
/// and a non-zero length fails the whole call with CONVEYOR_ERR_NULL_PARAMETER before
/// anything is accepted.
#[no_mangle]
pub unsafe extern "C" fn conveyor_producer_publish_batch(
    p: *mut conveyor_producer,
    events: *const conveyor_bytes,
    n: usize,
    timeout_ms: u64,
    accepted: *mut usize,
) -> conveyor_result {
    ffi_status("conveyor_producer_publish_batch", || {
        // SAFETY: the caller passes a live producer (header contract).
        let p = unsafe { producer(p) }?;
        // SAFETY: `accepted` is NULL or writable (header contract).
        let accepted = unsafe { accepted.as_mut() }.ok_or_else(|| Failure::null("accepted"))?;
        *accepted = 0;
        if n == 0 {
            return Ok(());
        }
        if events.is_null() {
            return Err(Failure::null("events"));
        }
        // SAFETY: `events` points to `n` readable views (header contract).
        let views = unsafe { std::slice::from_raw_parts(events, n) };
        // Checked in a pass of its own so that the copy below has no failure path.
        if let Some(i) = views.iter().position(|v| v.data.is_null() && v.len != 0) {
            return Err(Failure::null(&format!("events[{i}].data")));
        }
        let slices: Vec<&[u8]> = views
            .iter()
            // SAFETY: each view's `data` holds `len` readable bytes (contract) and is
            // non-NULL unless `len` is 0 (checked above).
            .map(|v| unsafe { bytes_view(v.data, v.len) }.unwrap_or_default())
            .collect();
        *accepted = p.inner.publish_batch(&slices, timeout_arg(timeout_ms))?;
        Ok(())
    })
}

/// Publishes `n` events laid end to end in `data` (`data_len` bytes): event `i` is the
/// next `lens[i]` bytes. As conveyor_producer_publish_batch() otherwise (the copy, the
/// wait, `*accepted`, a partial batch), but whole runs of events are copied at once: the
/// fastest way to publish many small events. `data` may be NULL only when `data_len` is
/// 0, `lens` only when `n` is 0. The lengths must add up to `data_len`
/// (CONVEYOR_ERR_INVALID_ARGUMENT otherwise, nothing accepted).
#[no_mangle]
pub unsafe extern "C" fn conveyor_producer_publish_packed(
    p: *mut conveyor_producer,
    data: *const u8,
    data_len: usize,
    lens: *const u32,
    n: usize,
    timeout_ms: u64,
    accepted: *mut usize,
) -> conveyor_result {
    ffi_status("conveyor_producer_publish_packed", || {
        // SAFETY: the caller passes a live producer (header contract).
        let p = unsafe { producer(p) }?;
        // SAFETY: `accepted` is NULL or writable (header contract).
        let accepted = unsafe { accepted.as_mut() }.ok_or_else(|| Failure::null("accepted"))?;
        *accepted = 0;
        // SAFETY: `data` holds `data_len` readable bytes or is NULL (header contract).
        let data = unsafe { bytes_arg(data, data_len, "data") }?;
        let lens = if n == 0 {
            &[][..]
        } else if lens.is_null() {
            return Err(Failure::null("lens"));
        } else {
            // SAFETY: non-NULL, pointing to `n` readable lengths (header contract).
            unsafe { std::slice::from_raw_parts(lens, n) }
        };
        *accepted = p.inner.publish_packed(Packed::new(data, lens)?, timeout_arg(timeout_ms))?;
        Ok(())
    })
}

/// Cancels the producer: later publishes fail with CONVEYOR_ERR_CANCELLED. With
/// `drop_on_cancel`, its events no client has taken yet are removed and reported
/// through on_drop; `*removed` (may be NULL) receives how many. Events already taken
/// are still delivered and reported. Cancelling twice removes nothing more.
#[no_mangle]
pub unsafe extern "C" fn conveyor_producer_cancel(p: *mut conveyor_producer, removed: *mut usize) -> conveyor_result {
    ffi_status("conveyor_producer_cancel", || {
        // SAFETY: the caller passes a live producer (header contract).
        let p = unsafe { producer(p) }?;
        let n = p.inner.cancel();
        // SAFETY: `removed` is NULL or writable (header contract).
        if let Some(out) = unsafe { removed.as_mut() } {
            *out = n;
        }
        Ok(())
    })
}

/// Stores the producer's accounting in `*counts` (required).
#[no_mangle]
pub unsafe extern "C" fn conveyor_producer_counts(
    p: *const conveyor_producer,
    counts: *mut conveyor_counts,
) -> conveyor_result {
    ffi_status("conveyor_producer_counts", || {
        // SAFETY: the caller passes a live producer (header contract).
        let p = unsafe { producer(p) }?;
        // SAFETY: `counts` is NULL or writable (header contract).
        let out = unsafe { counts.as_mut() }.ok_or_else(|| Failure::null("counts"))?;
        let c = p.inner.counts();
        *out = conveyor_counts { accepted: c.accepted, acked: c.acked, dropped: c.dropped, in_flight: c.in_flight };
        Ok(())
    })
}

/// Frees a producer. Its events in flight are still delivered and reported through its
/// callbacks; its `free_userdata` runs after the last of them (or here, when nothing is
/// in flight). NULL is ignored; never free twice. May be called from a conveyor callback.
#[no_mangle]
pub unsafe extern "C" fn conveyor_producer_free(p: *mut conveyor_producer) {
    ffi_value("conveyor_producer_free", (), || {
        if !p.is_null() {
            // SAFETY: created by conveyor_producer_new with Box::into_raw; the caller
            // gives it up and makes no other call on it (header contract).
            drop(unsafe { Box::from_raw(p) });
        }
        Ok(())
    })
}
