//! Adapters from C to the core: vtable clients (sync and async), client factories,
//! the asynchronous completion table and the log callback bridge.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CString};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::boundary::{ffi_value, Failure, FfiResult};
use super::types::{
    conveyor_bytes, conveyor_client_factory, conveyor_client_vtable, conveyor_completion, conveyor_log_callback,
    CONVEYOR_PUBLISH_BROKEN, CONVEYOR_PUBLISH_OK, CONVEYOR_PUBLISH_RETRY,
};
use crate::client::{AnyClient, AsyncClient, Client, ClientFactory, Completion, ConnectError, Published, Status};
use crate::event::Events;
use crate::log::{Level, LogFn, Logger};
use crate::queue::lock;

/// A `void *userdata` that may cross threads.
///
/// C code promised (header: thread contract of each callback) that its userdata may be
/// used from conveyor's threads as documented, so moving the pointer is sound; it is
/// only ever passed back to the C callbacks it came with.
#[derive(Clone, Copy)]
pub(crate) struct UserData(*mut c_void);

impl UserData {
    /// The pointer (a method, so closures capture the `Send` wrapper, not the field).
    pub(crate) fn ptr(self) -> *mut c_void {
        self.0
    }
}

// SAFETY: see the type's documentation: the C side owns the synchronization and
// promised that the callbacks tolerate being called from any conveyor thread.
unsafe impl Send for UserData {}
// SAFETY: as above; for the callbacks documented as possibly concurrent (log, factory,
// producer callbacks on the single dispatcher) the header requires thread safety.
unsafe impl Sync for UserData {}

/// The pipeline's log target, shared by the config, its clients and factories, so that
/// a logger set after a client was added still receives that client's messages.
#[derive(Clone, Default)]
pub(crate) struct LogCell(Arc<RwLock<Logger>>);

impl LogCell {
    pub(crate) fn log(&self, level: Level, msg: &str) {
        let logger = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        logger.log(level, msg);
    }

    /// Points the cell at a C callback (or at nothing) and returns the core log function.
    pub(crate) fn set(&self, callback: conveyor_log_callback, userdata: *mut c_void) -> Option<LogFn> {
        let f = callback.map(|cb| {
            let userdata = UserData(userdata);
            Arc::new(move |level: Level, msg: &str| {
                let mut text = Vec::with_capacity(msg.len() + 1);
                text.extend_from_slice(msg.as_bytes());
                text.push(0);
                let level = level as u32;
                // SAFETY: the caller of conveyor_config_set_logger promised `cb` and its
                // userdata stay valid until the pipeline is freed and accept calls from
                // any thread; `text` is NUL-terminated and outlives the call.
                unsafe { cb(userdata.ptr(), level, text.as_ptr().cast(), msg.len()) }
            }) as LogFn
        });
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = f.clone().map(Logger::new).unwrap_or_default();
        f
    }
}

/// Reads and validates a vtable passed by C (a copy is kept).
///
/// # Safety
/// `vt` is NULL or points to at least a `u32` followed, when that `u32` equals
/// `sizeof(conveyor_client_vtable)`, by the rest of the struct.
pub(crate) unsafe fn read_vtable(vt: *const conveyor_client_vtable) -> FfiResult<conveyor_client_vtable> {
    if vt.is_null() {
        return Err(Failure::null("vtable"));
    }
    // SAFETY: a readable struct whose first field (offset 0, `#[repr(C)]`) is the
    // `uint32_t struct_size` (contract); only it is read until it says the rest is there.
    let size = unsafe { vt.cast::<u32>().read() };
    if size as usize != std::mem::size_of::<conveyor_client_vtable>() {
        return Err(Failure::invalid(format!(
            "vtable struct_size is {size}, expected {} (sizeof(conveyor_client_vtable))",
            std::mem::size_of::<conveyor_client_vtable>()
        )));
    }
    // SAFETY: `struct_size` says the caller's struct is complete; it is plain data
    // (a null function pointer reads as `None`).
    let v = unsafe { std::ptr::read(vt) };
    check_vtable(&v).map(|()| v)
}

fn check_vtable(v: &conveyor_client_vtable) -> FfiResult {
    if v.publish.is_none() && v.publish_async.is_none() {
        return Err(Failure::invalid("vtable has neither publish nor publish_async"));
    }
    Ok(())
}

/// A protocol client written in C, for a pipeline built with the Rust API: a Rust
/// program that loads its clients from a C library registers them with this, through
/// the same adapter the C ABI's own pipelines use.
///
/// The vtable is validated as conveyor_config_add_client() validates it (`struct_size`,
/// a publish function). On success conveyor owns `userdata`: `free_userdata` runs once,
/// when the client is dropped (by its pipeline, or by you if it never joins one); on
/// error the caller keeps it. `log` receives
/// what the adapter reports about the client (e.g. a callback returning a status
/// outside CONVEYOR_PUBLISH_*, which fails that batch); `None` discards it.
///
/// # Safety
/// `vtable`'s callbacks and userdata honour the thread and lifetime contract of
/// `conveyor_client_vtable` (include/conveyor.h) for as long as the client lives.
pub unsafe fn foreign_client(vtable: &conveyor_client_vtable, log: Option<LogFn>) -> crate::Result<AnyClient> {
    // SAFETY: a reference to a whole struct of the current size.
    let vt = unsafe { read_vtable(vtable) }.map_err(|f| crate::Error::InvalidArgument(f.message))?;
    let log = LogCell(Arc::new(RwLock::new(log.map(Logger::new).unwrap_or_default())));
    Ok(ForeignClient::any(vt, None, log))
}

/// Calls the vtable's `free_userdata`, if any.
pub(crate) fn free_userdata(vt: &conveyor_client_vtable) {
    if let Some(free) = vt.free_userdata {
        // SAFETY: conveyor owns `userdata` and calls this exactly once (callers:
        // client drop, a rejected factory result, config free, ownership commit).
        unsafe { free(vt.userdata) }
    }
}

const PENDING: u8 = 0;
const OWNED: u8 = 1;
const ABANDONED: u8 = 2;

/// Decides who frees a client's userdata when handing it to the core may fail.
///
/// The API promises that a failed conveyor_pipeline_new / conveyor_pipeline_add_client
/// leaves the userdata with the caller, yet the core drops the clients of a failed
/// build. The latch starts `PENDING`; the adapter's drop frees only if the call was
/// committed, and committing frees if the adapter was already dropped (a concurrent
/// close), so the userdata is freed exactly once, by whichever side comes last.
#[derive(Clone)]
pub(crate) struct Latch(Arc<AtomicU8>);

impl Latch {
    pub(crate) fn new() -> Latch {
        Latch(Arc::new(AtomicU8::new(PENDING)))
    }

    /// The call succeeded: conveyor owns the userdata.
    pub(crate) fn commit(&self, vt: &conveyor_client_vtable) {
        if self.0.compare_exchange(PENDING, OWNED, Ordering::AcqRel, Ordering::Acquire) == Err(ABANDONED) {
            free_userdata(vt);
        }
    }

    /// The adapter is being dropped: whether it must free the userdata.
    fn release(&self) -> bool {
        self.0.compare_exchange(PENDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire) == Err(OWNED)
    }
}

/// Owner ids of adapters, so a dropped client can void its pending completions.
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// A C vtable seen as a core client.
pub(crate) struct ForeignClient {
    vt: conveyor_client_vtable,
    /// `None`: owned by conveyor from the start (built by a factory).
    latch: Option<Latch>,
    log: LogCell,
    /// Reused for every synchronous publish: no allocation per batch.
    views: Vec<conveyor_bytes>,
    id: u64,
}

// SAFETY: the header's thread contract: a client's callbacks may be called from any
// conveyor thread, never concurrently for the same client, which is exactly `Send`
// without `Sync`. `views` only holds pointers into the batch of the current call and
// is cleared before each use.
unsafe impl Send for ForeignClient {}

impl ForeignClient {
    /// Wraps a validated vtable as a sync or async core client.
    pub(crate) fn any(vt: conveyor_client_vtable, latch: Option<Latch>, log: LogCell) -> AnyClient {
        let client =
            ForeignClient { vt, latch, log, views: Vec::new(), id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed) };
        if vt.publish_async.is_some() {
            AnyClient::Async(Box::new(client))
        } else {
            AnyClient::Sync(Box::new(client))
        }
    }

    fn connect_now(&mut self, timeout: Duration) -> Result<(), ConnectError> {
        let Some(connect) = self.vt.connect else { return Ok(()) };
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        // SAFETY: a callback of a validated vtable, called on a worker thread per the
        // thread contract, with the userdata conveyor owns.
        match unsafe { connect(self.vt.userdata, ms) } {
            0 => Ok(()),
            code => Err(ConnectError(format!("connect callback returned {code}"))),
        }
    }

    fn close_now(&mut self) {
        if let Some(close) = self.vt.close {
            // SAFETY: as in `connect_now`.
            unsafe { close(self.vt.userdata) }
        }
    }
}

/// A C publish result as the core's. A status outside CONVEYOR_PUBLISH_* is logged and
/// fails the whole batch: nothing of it is trusted, not even the count.
fn published_as(count: usize, status: u32, len: usize, log: &LogCell, what: &str) -> Published {
    let status = match status {
        CONVEYOR_PUBLISH_OK => Status::Ok,
        CONVEYOR_PUBLISH_RETRY => Status::Retry,
        CONVEYOR_PUBLISH_BROKEN => Status::Broken,
        bad => {
            let msg = format!(
                "{what}: status {bad} is not a CONVEYOR_PUBLISH_* value; the publish of {len} events counts as failed"
            );
            log.log(Level::Error, &msg);
            return Published::broken(0);
        }
    };
    Published { count, status }
}

impl Client for ForeignClient {
    fn connect(&mut self, timeout: Duration) -> Result<(), ConnectError> {
        self.connect_now(timeout)
    }

    fn close(&mut self) {
        self.close_now()
    }

    fn publish(&mut self, events: &Events) -> Published {
        let Some(publish) = self.vt.publish else {
            return Published::broken(0);
        };
        self.views.clear();
        self.views.reserve(events.len());
        events.for_each_payload(|event| self.views.push(conveyor_bytes::of(event)));
        let mut published = 0usize;
        // SAFETY: a callback of a validated vtable (thread contract as above); the views
        // point into `events`, which outlives the call, and `published` is a live local.
        let code = unsafe { publish(self.vt.userdata, self.views.as_ptr(), self.views.len(), &mut published) };
        published_as(published, code, events.len(), &self.log, "publish callback")
    }
}

impl AsyncClient for ForeignClient {
    fn connect(&mut self, timeout: Duration) -> Result<(), ConnectError> {
        self.connect_now(timeout)
    }

    fn close(&mut self) {
        self.close_now()
    }

    fn publish_async(&mut self, events: Events, completion: Completion) -> Result<(), ConnectError> {
        let Some(publish_async) = self.vt.publish_async else {
            return Err(ConnectError("vtable has no publish_async".into()));
        };
        let mut views = Vec::with_capacity(events.len());
        events.for_each_payload(|event| views.push(conveyor_bytes::of(event)));
        let (ptr, n) = (views.as_ptr(), views.len());
        let handle = COMPLETIONS.insert(PendingCompletion {
            completion,
            owner: self.id,
            len: n,
            views,
            events,
            log: self.log.clone(),
        });
        // SAFETY: a callback of a validated vtable (thread contract as above). `ptr`
        // points into the views now kept in the completion table, valid until the
        // completion is done or voided when this client is dropped (header contract).
        let code = unsafe { publish_async(self.vt.userdata, ptr, n, handle as *mut conveyor_completion) };
        if code == 0 {
            return Ok(());
        }
        // Not taken: void the completion unless the client already completed it.
        if COMPLETIONS.take(handle).is_none() {
            self.log.log(
                Level::Error,
                &format!("publish_async returned {code} but had already completed the batch; its completion stands"),
            );
        }
        Err(ConnectError(format!("publish_async returned {code}")))
    }
}

impl Drop for ForeignClient {
    fn drop(&mut self) {
        let owned = self.latch.as_ref().map_or(true, Latch::release);
        if owned {
            free_userdata(&self.vt);
        }
        // After free_userdata, C no longer reads the views of uncompleted batches;
        // their completions (and views) can go. The core has already taken that work
        // back, so this only releases memory; a late conveyor_completion_done on them
        // is detected as stale.
        drop(COMPLETIONS.take_owned_by(self.id));
    }
}

/// An asynchronous batch handed to C: its completion, and the views C reads, kept
/// alive (with the events they point into) until it completes or its client is freed.
struct PendingCompletion {
    completion: Completion,
    owner: u64,
    len: usize,
    views: Vec<conveyor_bytes>,
    events: Events,
    log: LogCell,
}

// SAFETY: `views` points into the payloads that `events` keeps alive (immutable,
// `Send + Sync` data); the vector is only read by C and freed with the entry.
unsafe impl Send for PendingCompletion {}

/// Asynchronous completions, addressed by handles that are never reused: the
/// `conveyor_completion *` given to C is a handle number, not a pointer, so a second
/// conveyor_completion_done (or a made-up pointer) finds nothing and is reported
/// instead of being undefined behaviour. One lock per batch, never per event.
struct CompletionTable {
    next: AtomicUsize,
    pending: Mutex<BTreeMap<usize, PendingCompletion>>,
}

static COMPLETIONS: CompletionTable =
    CompletionTable { next: AtomicUsize::new(1), pending: Mutex::new(BTreeMap::new()) };

impl CompletionTable {
    fn insert(&self, p: PendingCompletion) -> usize {
        let handle = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(handle, p);
        handle
    }

    fn take(&self, handle: usize) -> Option<PendingCompletion> {
        lock(&self.pending).remove(&handle)
    }

    fn take_owned_by(&self, owner: u64) -> Vec<PendingCompletion> {
        let mut pending = lock(&self.pending);
        let handles: Vec<usize> = pending.iter().filter(|(_, p)| p.owner == owner).map(|(h, _)| *h).collect();
        handles.into_iter().filter_map(|h| pending.remove(&h)).collect()
    }
}

/// Reports the outcome of an asynchronous publish: the first `published` events went
/// out, then `status` (a CONVEYOR_PUBLISH_* value) applies to the rest.
///
/// Call it exactly once per completion, from any thread (also from inside
/// publish_async). A status outside CONVEYOR_PUBLISH_* or a count above the batch size
/// is logged and counted as a failed publish. A completion that was already done, was
/// voided because its client was freed, or was never issued is ignored: nothing
/// happens except that conveyor_last_error() on this thread describes it.
#[no_mangle]
pub extern "C" fn conveyor_completion_done(completion: *mut conveyor_completion, published: usize, status: u32) {
    ffi_value("conveyor_completion_done", (), || {
        if completion.is_null() {
            return Err(Failure::null("completion"));
        }
        let handle = completion as usize;
        let Some(p) = COMPLETIONS.take(handle) else {
            return Err(Failure::invalid(format!(
                "completion {handle:#x} is not pending: already done, voided when its client was freed, or never issued"
            )));
        };
        let result = published_as(published, status, p.len, &p.log, "conveyor_completion_done");
        let PendingCompletion { completion, views, events, .. } = p;
        completion.done(result);
        // C may read the views until it calls done; only now can they go.
        drop((views, events));
        Ok(())
    })
}

/// A C client factory seen as a core factory.
pub(crate) struct ForeignFactory {
    factory: unsafe extern "C" fn(*mut c_void, *const c_char, *mut conveyor_client_vtable) -> u32,
    userdata: UserData,
    log: LogCell,
}

impl ForeignFactory {
    pub(crate) fn new(factory: conveyor_client_factory, userdata: *mut c_void, log: LogCell) -> FfiResult<Arc<Self>> {
        let factory = factory.ok_or_else(|| Failure::null("factory"))?;
        Ok(Arc::new(ForeignFactory { factory, userdata: UserData(userdata), log }))
    }
}

impl ClientFactory for ForeignFactory {
    fn build(&self, host: &str) -> Result<AnyClient, ConnectError> {
        let c_host = CString::new(host).map_err(|_| ConnectError(format!("host {host:?} contains a NUL byte")))?;
        let mut out = conveyor_client_vtable {
            struct_size: std::mem::size_of::<conveyor_client_vtable>() as u32,
            userdata: std::ptr::null_mut(),
            connect: None,
            close: None,
            publish: None,
            publish_async: None,
            free_userdata: None,
        };
        // SAFETY: the factory's caller promised it is callable from any thread with this
        // userdata until the pipeline is freed; `c_host` and `out` outlive the call.
        let code = unsafe { (self.factory)(self.userdata.ptr(), c_host.as_ptr(), &mut out) };
        if code != 0 {
            return Err(ConnectError(format!("client factory returned {code} for host {host}")));
        }
        let expected = std::mem::size_of::<conveyor_client_vtable>();
        let checked = if out.struct_size as usize != expected {
            Err(format!("struct_size {} (expected {expected})", out.struct_size))
        } else {
            check_vtable(&out).map_err(|f| f.message)
        };
        if let Err(why) = checked {
            free_userdata(&out);
            let msg = format!("client factory built an invalid vtable for host {host}: {why}");
            self.log.log(Level::Error, &msg);
            return Err(ConnectError(msg));
        }
        Ok(ForeignClient::any(out, None, self.log.clone()))
    }
}
