//! `conveyor_config`: settings, clients, host lists and the logger of a future pipeline.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::boundary::{arg, copy_out, ffi_status, ffi_value, str_arg, Failure, FfiResult};
use super::sink::{sink_client, Node};
use super::types::{conveyor_client_factory, conveyor_client_vtable, conveyor_log_callback};
use super::vtable::{free_userdata, read_vtable, ForeignClient, ForeignFactory, Latch, LogCell};
use super::{conveyor_result, CONVEYOR_ERR_BUFFER_TOO_SMALL};
use crate::client::AnyClient;
use crate::config::Config;
use crate::log::LogFn;
use crate::sink::Sink;

/// The settings, clients, host lists and logger of a pipeline to build.
///
/// Created by conveyor_config_new(), consumed by a successful conveyor_pipeline_new(),
/// otherwise released by conveyor_config_free(). Not thread-safe: use it from one
/// thread at a time.
pub struct conveyor_config {
    pub(crate) config: Config,
    /// The clients, in the order added.
    pub(crate) clients: Vec<ConfigClient>,
    pub(crate) hosts: Vec<(Vec<String>, Arc<ForeignFactory>)>,
    pub(crate) log: LogCell,
    pub(crate) log_fn: Option<LogFn>,
}

/// A client added to a config.
pub(crate) enum ConfigClient {
    /// A C vtable whose userdata the config owns until a pipeline takes it.
    Foreign(conveyor_client_vtable),
    /// A sink serving as a client (conveyor_config_add_sink), with its write-graph node.
    Sink(Arc<dyn Sink>, Arc<Node>),
}

impl ConfigClient {
    /// The core client for one build attempt; `latch` settles who frees a vtable's
    /// userdata should the build fail.
    pub(crate) fn build(&self, latch: &Latch, log: &LogCell) -> AnyClient {
        match self {
            ConfigClient::Foreign(vt) => ForeignClient::any(*vt, Some(latch.clone()), log.clone()),
            ConfigClient::Sink(sink, _) => sink_client(sink),
        }
    }
}

impl Drop for conveyor_config {
    fn drop(&mut self) {
        for client in self.clients.drain(..) {
            if let ConfigClient::Foreign(vt) = client {
                free_userdata(&vt);
            }
        }
    }
}

/// # Safety
/// `c` is NULL or a live config from conveyor_config_new used by this thread only.
unsafe fn config_mut<'a>(c: *mut conveyor_config) -> FfiResult<&'a mut conveyor_config> {
    // SAFETY: forwarded from this function's contract.
    unsafe { c.as_mut() }.ok_or_else(|| Failure::null("config"))
}

/// A new configuration with every key at its default (see docs/c-api.md and the
/// key table in the README). Returns NULL only if conveyor panicked (see
/// conveyor_last_error()). Release it with conveyor_config_free() unless
/// conveyor_pipeline_new() took it.
#[no_mangle]
pub extern "C" fn conveyor_config_new() -> *mut conveyor_config {
    ffi_value("conveyor_config_new", std::ptr::null_mut(), || {
        Ok(Box::into_raw(Box::new(conveyor_config {
            config: Config::default(),
            clients: Vec::new(),
            hosts: Vec::new(),
            log: LogCell::default(),
            log_fn: None,
        })))
    })
}

/// Sets configuration `key` from its string form, e.g. ("backoff.init", "250ms"),
/// ("mode", "failover"), ("max_retries", "-1"). Both strings are copied.
///
/// Returns CONVEYOR_ERR_INVALID_CONFIG for an unknown key or a bad value (the last
/// error names the key and says why; the config is unchanged), and
/// CONVEYOR_ERR_NULL_PARAMETER / CONVEYOR_ERR_INVALID_ARGUMENT (not UTF-8) for bad
/// pointers. Relations between keys (backoff.max >= backoff.init, ...) are checked by
/// conveyor_pipeline_new().
#[no_mangle]
pub unsafe extern "C" fn conveyor_config_set(
    config: *mut conveyor_config,
    key: *const c_char,
    value: *const c_char,
) -> conveyor_result {
    ffi_status("conveyor_config_set", || {
        // SAFETY: the caller passes a live config it uses from this thread only.
        let c = unsafe { config_mut(config) }?;
        // SAFETY: NUL-terminated strings valid during the call (header contract).
        let (key, value) = unsafe { (str_arg(key, "key")?, str_arg(value, "value")?) };
        Ok(c.config.set(key, value)?)
    })
}

/// Copies the current value of configuration `key` in the form conveyor_config_set()
/// accepts ("auto" for an unset mode), NUL-terminated, into `buf` of `len` bytes.
///
/// `*needed` (required) receives the size needed including the NUL on success and on
/// CONVEYOR_ERR_BUFFER_TOO_SMALL (then nothing is written; `buf` may be NULL when
/// `len` is 0). CONVEYOR_ERR_INVALID_CONFIG for an unknown key.
#[no_mangle]
pub unsafe extern "C" fn conveyor_config_get(
    config: *const conveyor_config,
    key: *const c_char,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> conveyor_result {
    ffi_status("conveyor_config_get", || {
        // SAFETY: the caller passes a live config it uses from this thread only.
        let c = unsafe { arg(config, "config") }?;
        // SAFETY: a NUL-terminated string valid during the call (header contract).
        let key = unsafe { str_arg(key, "key") }?;
        if needed.is_null() {
            return Err(Failure::null("needed"));
        }
        let value = c.config.get(key)?;
        // SAFETY: `needed` is non-NULL and writable (header contract).
        unsafe { *needed = value.len() + 1 };
        // SAFETY: `buf` holds `len` writable bytes or is NULL (header contract).
        if unsafe { copy_out(value.as_bytes(), buf, len) }? {
            Ok(())
        } else {
            Err(Failure {
                code: CONVEYOR_ERR_BUFFER_TOO_SMALL,
                message: format!("`{key}` needs {} bytes, the buffer has {len}", value.len() + 1),
            })
        }
    })
}

/// Adds a client (see conveyor_client_vtable). The struct is copied; its `userdata`
/// belongs to conveyor from now on: `free_userdata` is called exactly once, by the
/// pipeline when it drops the client, or by conveyor_config_free() if no pipeline is
/// built from this config.
///
/// CONVEYOR_ERR_INVALID_ARGUMENT for a wrong `struct_size` or a vtable with neither
/// `publish` nor `publish_async`; then nothing is kept and the caller still owns
/// `userdata`.
#[no_mangle]
pub unsafe extern "C" fn conveyor_config_add_client(
    config: *mut conveyor_config,
    vtable: *const conveyor_client_vtable,
) -> conveyor_result {
    ffi_status("conveyor_config_add_client", || {
        // SAFETY: the caller passes a live config it uses from this thread only.
        let c = unsafe { config_mut(config) }?;
        // SAFETY: NULL or a vtable struct starting with `struct_size` (header contract).
        let vt = unsafe { read_vtable(vtable) }?;
        c.clients.push(ConfigClient::Foreign(vt));
        Ok(())
    })
}

/// Adds `n` hosts whose clients `factory` builds (one per host in failover mode,
/// `worker` per host otherwise), called when the pipeline is built and again to
/// rebuild a client that failed `error_threshold` times in a row. The host strings are
/// copied. `userdata` is passed to `factory` and must stay valid until the pipeline
/// built from this config is freed (or this config, if no pipeline is built); conveyor
/// never frees it.
///
/// CONVEYOR_ERR_NULL_PARAMETER if `hosts`, any `hosts[i]` or `factory` is NULL;
/// CONVEYOR_ERR_INVALID_ARGUMENT if `n` is 0 or a host is not UTF-8.
#[no_mangle]
pub unsafe extern "C" fn conveyor_config_add_hosts(
    config: *mut conveyor_config,
    hosts: *const *const c_char,
    n: usize,
    factory: conveyor_client_factory,
    userdata: *mut c_void,
) -> conveyor_result {
    ffi_status("conveyor_config_add_hosts", || {
        // SAFETY: the caller passes a live config it uses from this thread only.
        let c = unsafe { config_mut(config) }?;
        // SAFETY: `hosts` is NULL or an array of `n` string pointers (header contract).
        let list = unsafe { host_list(hosts, n) }?;
        let factory = ForeignFactory::new(factory, userdata, c.log.clone())?;
        c.hosts.push((list, factory));
        Ok(())
    })
}

/// Copies `n` C strings into a host list.
///
/// # Safety
/// `hosts` is NULL or points to `n` pointers, each NULL or a NUL-terminated string.
pub(crate) unsafe fn host_list(hosts: *const *const c_char, n: usize) -> FfiResult<Vec<String>> {
    if hosts.is_null() {
        return Err(Failure::null("hosts"));
    }
    if n == 0 {
        return Err(Failure::invalid("`n` is 0: give at least one host"));
    }
    // SAFETY: `hosts` points to `n` readable pointers (contract).
    let ptrs = unsafe { std::slice::from_raw_parts(hosts, n) };
    ptrs.iter()
        .enumerate()
        // SAFETY: each entry is NULL or a NUL-terminated string (contract).
        .map(|(i, &h)| unsafe { str_arg(h, &format!("hosts[{i}]")) }.map(str::to_string))
        .collect()
}

/// Sends the log messages of the pipeline built from this config (and of its clients)
/// to `callback` (see conveyor_log_callback); NULL turns logging off (the default).
/// `userdata` must stay valid until that pipeline is freed (or this config, if no
/// pipeline is built); conveyor never frees it.
#[no_mangle]
pub unsafe extern "C" fn conveyor_config_set_logger(
    config: *mut conveyor_config,
    callback: conveyor_log_callback,
    userdata: *mut c_void,
) -> conveyor_result {
    ffi_status("conveyor_config_set_logger", || {
        // SAFETY: the caller passes a live config it uses from this thread only.
        let c = unsafe { config_mut(config) }?;
        c.log_fn = c.log.set(callback, userdata);
        Ok(())
    })
}

/// Releases a config that no pipeline took, calling `free_userdata` of every client
/// added to it. NULL is ignored. Never call it on a config that conveyor_pipeline_new()
/// accepted, nor twice.
#[no_mangle]
pub unsafe extern "C" fn conveyor_config_free(config: *mut conveyor_config) {
    ffi_value("conveyor_config_free", (), || {
        if !config.is_null() {
            // SAFETY: a config from conveyor_config_new, not yet freed nor taken by a
            // pipeline (header contract), so this is the only owner.
            drop(unsafe { Box::from_raw(config) });
        }
        Ok(())
    })
}
