//! `conveyor_pipeline`: build, flush, close, stats, clients at runtime, free.

use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

use super::boundary::{arg, copy_out, ffi_status, ffi_value, str_arg, timeout_arg, Failure, FfiResult};
use super::config::{conveyor_config, ConfigClient};
use super::sink::Node;
use super::types::{conveyor_client_factory, conveyor_client_vtable, conveyor_close_report};
use super::vtable::{read_vtable, ForeignClient, ForeignFactory, Latch, LogCell};
use super::{conveyor_result, CONVEYOR_ERR_BUFFER_TOO_SMALL};
use crate::log::Level;
use crate::pipeline::{CloseReport, Pipeline};

/// A running pipeline: queue, output, workers, accounting.
///
/// Thread-safe: every function taking a pipeline may be called from any thread
/// concurrently, except conveyor_pipeline_free(), which must be the last call.
pub struct conveyor_pipeline {
    /// Shared with the sinks made by conveyor_pipeline_as_sink().
    pub(crate) inner: Arc<Pipeline>,
    log: LogCell,
    /// The pipeline in the graph of who writes into whom (see `sink::Node`).
    pub(crate) graph: Arc<Node>,
}

/// # Safety
/// `p` is NULL or a live pipeline from conveyor_pipeline_new, not being freed.
unsafe fn pipeline<'a>(p: *const conveyor_pipeline) -> FfiResult<&'a conveyor_pipeline> {
    // SAFETY: forwarded from this function's contract; the pipeline is `Sync`.
    unsafe { arg(p, "pipeline") }
}

/// # Safety
/// `out` is NULL or writable.
unsafe fn out_arg<'a, T>(out: *mut T, name: &str) -> FfiResult<&'a mut T> {
    // SAFETY: forwarded from this function's contract; only written, never read.
    unsafe { out.as_mut() }.ok_or_else(|| Failure::null(name))
}

/// Builds and starts a pipeline from `config` and stores it in `*out`.
///
/// On success the pipeline owns the config (do not free it) and its clients; on
/// failure nothing was started, `*out` is untouched and the caller still owns the
/// config and its clients (fix it and retry, or free it). Errors:
/// CONVEYOR_ERR_INVALID_CONFIG (e.g. backoff.max < backoff.init, mode "single" with
/// several clients, unknown queue.type), CONVEYOR_ERR_NO_CLIENTS, CONVEYOR_ERR_CLIENT (a
/// factory failed; then the clients it did build were freed), CONVEYOR_ERR_INTERNAL.
///
/// Worker threads start at once and begin connecting clients. Free the pipeline with
/// conveyor_pipeline_free().
#[no_mangle]
pub unsafe extern "C" fn conveyor_pipeline_new(
    config: *mut conveyor_config,
    out: *mut *mut conveyor_pipeline,
) -> conveyor_result {
    ffi_status("conveyor_pipeline_new", || {
        // SAFETY: the caller passes a live config it uses from this thread only.
        let c = unsafe { config.as_mut() }.ok_or_else(|| Failure::null("config"))?;
        // SAFETY: `out` is NULL or writable (header contract).
        let out = unsafe { out_arg(out, "out") }?;
        let latches: Vec<Latch> = c.clients.iter().map(|_| Latch::new()).collect();
        let mut builder = Pipeline::builder(c.config.clone());
        for (client, latch) in c.clients.iter().zip(&latches) {
            builder = builder.any_client(client.build(latch, &c.log));
        }
        for (hosts, factory) in &c.hosts {
            builder = builder.hosts(hosts, factory.clone());
        }
        if let Some(f) = &c.log_fn {
            builder = builder.logger(f.clone());
        }
        let inner = builder.build()?;
        for (client, latch) in c.clients.iter().zip(&latches) {
            if let ConfigClient::Foreign(vt) = client {
                latch.commit(vt);
            }
        }
        let sinks = c.clients.iter().filter_map(|client| match client {
            ConfigClient::Sink(_, node) => Some(node.clone()),
            ConfigClient::Foreign(_) => None,
        });
        let graph = Node::new(sinks);
        c.clients.clear();
        let log = c.log.clone();
        // SAFETY: the config came from conveyor_config_new and the caller gave it up on
        // success (header contract); `c` is not used after this.
        drop(unsafe { Box::from_raw(config) });
        *out = Box::into_raw(Box::new(conveyor_pipeline { inner: Arc::new(inner), log, graph }));
        Ok(())
    })
}

/// Waits until every event accepted so far has had its outcome reported (ACK and drop
/// callbacks returned), at most `timeout_ms` milliseconds (UINT64_MAX: no limit).
///
/// CONVEYOR_ERR_TIMEOUT when time ran out (nothing is lost: delivery goes on),
/// CONVEYOR_ERR_CLOSED after close, CONVEYOR_ERR_INVALID_ARGUMENT when called from a
/// conveyor callback (it would wait for itself).
#[no_mangle]
pub unsafe extern "C" fn conveyor_pipeline_flush(p: *mut conveyor_pipeline, timeout_ms: u64) -> conveyor_result {
    ffi_status("conveyor_pipeline_flush", || {
        // SAFETY: the caller passes a live pipeline (header contract).
        let p = unsafe { pipeline(p) }?;
        Ok(p.inner.flush(timeout_arg(timeout_ms).unwrap_or(Duration::MAX))?)
    })
}

fn close(p: &conveyor_pipeline, timeout_ms: u64) -> FfiResult<CloseReport> {
    Ok(p.inner.close(timeout_arg(timeout_ms).unwrap_or(Duration::MAX))?)
}

/// Closes the pipeline: stops accepting events (publishes fail with
/// CONVEYOR_ERR_CLOSED), delivers what it can within `timeout_ms` (UINT64_MAX: no
/// limit), then drops and reports the rest through on_drop, closes and frees the
/// clients and joins conveyor's threads. Returns within the timeout plus one client
/// call in progress. Closing again does nothing and returns CONVEYOR_OK. The handle
/// stays valid until conveyor_pipeline_free().
///
/// CONVEYOR_ERR_INVALID_ARGUMENT when called from a conveyor callback.
#[no_mangle]
pub unsafe extern "C" fn conveyor_pipeline_close(p: *mut conveyor_pipeline, timeout_ms: u64) -> conveyor_result {
    ffi_status("conveyor_pipeline_close", || {
        // SAFETY: the caller passes a live pipeline (header contract).
        close(unsafe { pipeline(p) }?, timeout_ms).map(drop)
    })
}

/// As conveyor_pipeline_close(), and stores what close did in `*report` (required):
/// totals, and whether everything was delivered in time. A repeated close reports the
/// first one's figures.
#[no_mangle]
pub unsafe extern "C" fn conveyor_pipeline_close_report(
    p: *mut conveyor_pipeline,
    timeout_ms: u64,
    report: *mut conveyor_close_report,
) -> conveyor_result {
    ffi_status("conveyor_pipeline_close_report", || {
        // SAFETY: the caller passes a live pipeline (header contract).
        let p = unsafe { pipeline(p) }?;
        // SAFETY: `report` is NULL or writable (header contract).
        let report = unsafe { out_arg(report, "report") }?;
        let r = close(p, timeout_ms)?;
        *report = conveyor_close_report {
            accepted: r.accepted,
            acked: r.acked,
            dropped: r.dropped,
            drained: r.drained.into(),
        };
        Ok(())
    })
}

/// Copies a JSON snapshot of every counter (totals, queue occupancy, one object per
/// client with its state, counters and last error) as a NUL-terminated string into
/// `buf` of `len` bytes.
///
/// `*needed` (required) receives the size the snapshot needs including the NUL, on
/// success and on CONVEYOR_ERR_BUFFER_TOO_SMALL (then nothing is written: call again
/// with a buffer of at least `*needed` bytes, a little more since counters move).
/// `buf` may be NULL when `len` is 0. Works before and after close.
#[no_mangle]
pub unsafe extern "C" fn conveyor_pipeline_stats_json(
    p: *const conveyor_pipeline,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> conveyor_result {
    ffi_status("conveyor_pipeline_stats_json", || {
        // SAFETY: the caller passes a live pipeline (header contract).
        let p = unsafe { pipeline(p) }?;
        // SAFETY: `needed` is NULL or writable (header contract).
        let needed = unsafe { out_arg(needed, "needed") }?;
        let json = p.inner.stats().to_json();
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

/// Adds a client to a running pipeline (modes failover and loadbalance) and stores its
/// id in `*client_id` (may be NULL). Ownership of `vtable->userdata` as in
/// conveyor_config_add_client(): conveyor's on success, still the caller's on failure.
///
/// CONVEYOR_ERR_INVALID_ARGUMENT for a bad vtable or a pipeline in mode "single",
/// CONVEYOR_ERR_CLOSED after close.
#[no_mangle]
pub unsafe extern "C" fn conveyor_pipeline_add_client(
    p: *mut conveyor_pipeline,
    vtable: *const conveyor_client_vtable,
    client_id: *mut u64,
) -> conveyor_result {
    ffi_status("conveyor_pipeline_add_client", || {
        // SAFETY: the caller passes a live pipeline (header contract).
        let p = unsafe { pipeline(p) }?;
        // SAFETY: NULL or a vtable struct starting with `struct_size` (header contract).
        let vt = unsafe { read_vtable(vtable) }?;
        let latch = Latch::new();
        let id = p.inner.add_client(ForeignClient::any(vt, Some(latch.clone()), p.log.clone()))?;
        latch.commit(&vt);
        // SAFETY: `client_id` is NULL or writable (header contract).
        if let Some(out) = unsafe { client_id.as_mut() } {
            *out = id;
        }
        Ok(())
    })
}

/// Adds a client for `host` built by `factory` (see conveyor_client_factory) to a
/// running pipeline, and stores its id in `*client_id` (may be NULL). `userdata` must
/// stay valid until the pipeline is freed; conveyor never frees it.
///
/// CONVEYOR_ERR_CLIENT when the factory fails, CONVEYOR_ERR_INVALID_ARGUMENT in mode
/// "single", CONVEYOR_ERR_CLOSED after close.
#[no_mangle]
pub unsafe extern "C" fn conveyor_pipeline_add_host(
    p: *mut conveyor_pipeline,
    host: *const c_char,
    factory: conveyor_client_factory,
    userdata: *mut c_void,
    client_id: *mut u64,
) -> conveyor_result {
    ffi_status("conveyor_pipeline_add_host", || {
        // SAFETY: the caller passes a live pipeline (header contract).
        let p = unsafe { pipeline(p) }?;
        // SAFETY: a NUL-terminated string valid during the call (header contract).
        let host = unsafe { str_arg(host, "host") }?;
        let factory = ForeignFactory::new(factory, userdata, p.log.clone())?;
        let id = p.inner.add_host(host, factory)?;
        // SAFETY: `client_id` is NULL or writable (header contract).
        if let Some(out) = unsafe { client_id.as_mut() } {
            *out = id;
        }
        Ok(())
    })
}

/// Removes a client from a running pipeline; its batches go to the other clients and
/// its `free_userdata` has been called when this returns.
///
/// CONVEYOR_ERR_INVALID_ARGUMENT for an unknown id, the last client, or a call from a
/// client callback; CONVEYOR_ERR_CLOSED after close.
#[no_mangle]
pub unsafe extern "C" fn conveyor_pipeline_remove_client(p: *mut conveyor_pipeline, client_id: u64) -> conveyor_result {
    ffi_status("conveyor_pipeline_remove_client", || {
        // SAFETY: the caller passes a live pipeline (header contract).
        Ok(unsafe { pipeline(p) }?.inner.remove_client(client_id)?)
    })
}

/// Frees a pipeline; an open pipeline is first closed with a zero timeout (events not
/// yet delivered are dropped and reported through on_drop). Free its producers first.
/// NULL is ignored; never free twice. Called from a conveyor callback it does nothing
/// (the pipeline cannot tear down the thread running the call): the handle stays valid,
/// an error is logged and conveyor_last_error() says so.
#[no_mangle]
pub unsafe extern "C" fn conveyor_pipeline_free(p: *mut conveyor_pipeline) {
    ffi_value("conveyor_pipeline_free", (), || {
        if p.is_null() {
            return Ok(());
        }
        // SAFETY: a live pipeline (header contract).
        let handle = unsafe { pipeline(p) }?;
        if let Err(e) = handle.inner.close(Duration::ZERO) {
            let msg = format!("not freed: {e}");
            handle.log.log(Level::Error, &format!("conveyor_pipeline_free: {msg}"));
            return Err(Failure::invalid(msg));
        }
        // SAFETY: created by conveyor_pipeline_new with Box::into_raw; the caller gives
        // it up and makes no other call on it (header contract).
        drop(unsafe { Box::from_raw(p) });
        Ok(())
    })
}
