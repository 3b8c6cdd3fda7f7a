//! Status codes, the per-thread last error, and the panic boundary every export runs in.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::Error;

/// Status of a call: CONVEYOR_OK (0) or one of the CONVEYOR_ERR_* codes.
///
/// Codes are explicit and never reused; new codes may be added, so treat an unknown
/// non-zero value as an error. conveyor_result_str() names a code and
/// conveyor_last_error() gives the detail of the last failed call on this thread.
pub type conveyor_result = u32;

/// The call succeeded.
pub const CONVEYOR_OK: conveyor_result = 0;
/// A required pointer parameter was NULL. Nothing was done.
pub const CONVEYOR_ERR_NULL_PARAMETER: conveyor_result = 1;
/// A parameter is out of its domain (a flag other than 0/1, a bad struct_size, a
/// vtable without publish functions, an unknown client id, a call from inside a
/// conveyor callback that would deadlock...). Nothing was done.
pub const CONVEYOR_ERR_INVALID_ARGUMENT: conveyor_result = 2;
/// A configuration key is unknown or its value is invalid; the message names the key.
pub const CONVEYOR_ERR_INVALID_CONFIG: conveyor_result = 3;
/// The pipeline is closed (or its producer's pipeline is).
pub const CONVEYOR_ERR_CLOSED: conveyor_result = 4;
/// A non-blocking publish found no room in the queue.
pub const CONVEYOR_ERR_FULL: conveyor_result = 5;
/// A blocking call reached its timeout.
pub const CONVEYOR_ERR_TIMEOUT: conveyor_result = 6;
/// The pipeline has no client to deliver to.
pub const CONVEYOR_ERR_NO_CLIENTS: conveyor_result = 7;
/// The producer was cancelled; it accepts no more events.
pub const CONVEYOR_ERR_CANCELLED: conveyor_result = 8;
/// conveyor panicked (a bug in conveyor: please report it with the last error text).
/// The handle stays usable; the call had no effect or an unknown part of it.
pub const CONVEYOR_ERR_PANIC: conveyor_result = 9;
/// An internal error (a bug in conveyor, or a resource such as a thread could not be
/// created).
pub const CONVEYOR_ERR_INTERNAL: conveyor_result = 10;
/// The caller's buffer is too small; the size needed was reported. Nothing was written.
pub const CONVEYOR_ERR_BUFFER_TOO_SMALL: conveyor_result = 11;
/// A client failed outside of delivery, e.g. a client factory refused to build one.
pub const CONVEYOR_ERR_CLIENT: conveyor_result = 12;
/// A batch or event was settled twice (a bug in a queue type).
pub const CONVEYOR_ERR_ALREADY_SETTLED: conveyor_result = 13;

/// A failed call: its status code and the detail kept as the thread's last error.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: conveyor_result,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn null(parameter: &str) -> Failure {
        Failure { code: CONVEYOR_ERR_NULL_PARAMETER, message: format!("`{parameter}` is NULL") }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure { code: CONVEYOR_ERR_INVALID_ARGUMENT, message: message.into() }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = match &e {
            Error::Config { .. } => CONVEYOR_ERR_INVALID_CONFIG,
            Error::InvalidArgument(_) => CONVEYOR_ERR_INVALID_ARGUMENT,
            Error::Closed => CONVEYOR_ERR_CLOSED,
            Error::Full => CONVEYOR_ERR_FULL,
            Error::Timeout => CONVEYOR_ERR_TIMEOUT,
            Error::NoClients => CONVEYOR_ERR_NO_CLIENTS,
            Error::Cancelled => CONVEYOR_ERR_CANCELLED,
            Error::AlreadySettled => CONVEYOR_ERR_ALREADY_SETTLED,
            Error::Client(_) => CONVEYOR_ERR_CLIENT,
            Error::Internal(_) => CONVEYOR_ERR_INTERNAL,
        };
        Failure { code, message: e.to_string() }
    }
}

pub(crate) type FfiResult<T = ()> = Result<T, Failure>;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(crate) fn set_last_error(function: &str, message: &str) {
    // A thread being torn down has no last error to keep; the status code still tells.
    let _ = LAST_ERROR.try_with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.push_str(function);
        e.push_str(": ");
        e.push_str(message);
    });
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic")
}

/// The panic boundary of an export returning a status: runs `body`, records a failure
/// (or a panic) as the thread's last error and returns its code.
pub(crate) fn ffi_status(function: &str, body: impl FnOnce() -> FfiResult) -> conveyor_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CONVEYOR_OK,
        Ok(Err(failure)) => {
            set_last_error(function, &failure.message);
            failure.code
        }
        Err(payload) => {
            set_last_error(function, &format!("panic: {}", panic_message(payload.as_ref())));
            CONVEYOR_ERR_PANIC
        }
    }
}

/// The panic boundary of an export returning a value: `fallback` on failure or panic.
pub(crate) fn ffi_value<T>(function: &str, fallback: T, body: impl FnOnce() -> FfiResult<T>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err(failure)) => {
            set_last_error(function, &failure.message);
            fallback
        }
        Err(payload) => {
            set_last_error(function, &format!("panic: {}", panic_message(payload.as_ref())));
            fallback
        }
    }
}

/// A shared reference from a handle pointer, or the NULL-parameter failure.
///
/// # Safety
/// `p` is NULL or points to a live `T` that nobody mutates during the borrow.
pub(crate) unsafe fn arg<'a, T>(p: *const T, name: &str) -> FfiResult<&'a T> {
    // SAFETY: forwarded from this function's contract.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::null(name))
}

/// A NUL-terminated UTF-8 string parameter.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: non-NULL, and NUL-terminated per this function's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| Failure::invalid(format!("`{name}` is not valid UTF-8")))
}

/// A `uint32_t` flag from C: exactly 0 or 1.
pub(crate) fn flag(value: u32, name: &str) -> FfiResult<bool> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(Failure::invalid(format!("`{name}` must be 0 or 1, got {v}"))),
    }
}

/// A millisecond timeout from C; `UINT64_MAX` means no limit.
pub(crate) fn timeout_arg(timeout_ms: u64) -> Option<std::time::Duration> {
    (timeout_ms != u64::MAX).then(|| std::time::Duration::from_millis(timeout_ms))
}

/// Copies `text` and a terminating NUL into `buf` if it fits in `len` bytes.
/// Returns whether it did; `buf` may be NULL only when `len` is 0.
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes.
pub(crate) unsafe fn copy_out(text: &[u8], buf: *mut c_char, len: usize) -> FfiResult<bool> {
    if text.len() >= len {
        return Ok(false);
    }
    if buf.is_null() {
        return Err(Failure::null("buf"));
    }
    // SAFETY: `buf` holds `len > text.len()` writable bytes (contract); `text` is a
    // separate Rust allocation, so the ranges cannot overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
    }
    Ok(true)
}

/// The version of the library, "MAJOR.MINOR.PATCH" (compare with the
/// CONVEYOR_VERSION_* macros of the header you compiled against).
///
/// Returns a static string: never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn conveyor_version() -> *const c_char {
    ffi_value("conveyor_version", std::ptr::null(), || Ok(concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()))
}

/// The name and meaning of a status code, e.g. "CONVEYOR_ERR_FULL: the queue is full".
///
/// Returns a static string (never free it), also for codes it does not know.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn conveyor_result_str(result: conveyor_result) -> *const c_char {
    ffi_value("conveyor_result_str", std::ptr::null(), || {
        let s: &'static str = match result {
            CONVEYOR_OK => "CONVEYOR_OK: success\0",
            CONVEYOR_ERR_NULL_PARAMETER => "CONVEYOR_ERR_NULL_PARAMETER: a required pointer was NULL\0",
            CONVEYOR_ERR_INVALID_ARGUMENT => "CONVEYOR_ERR_INVALID_ARGUMENT: an argument is out of its domain\0",
            CONVEYOR_ERR_INVALID_CONFIG => "CONVEYOR_ERR_INVALID_CONFIG: unknown configuration key or invalid value\0",
            CONVEYOR_ERR_CLOSED => "CONVEYOR_ERR_CLOSED: the pipeline is closed\0",
            CONVEYOR_ERR_FULL => "CONVEYOR_ERR_FULL: the queue is full\0",
            CONVEYOR_ERR_TIMEOUT => "CONVEYOR_ERR_TIMEOUT: the call timed out\0",
            CONVEYOR_ERR_NO_CLIENTS => "CONVEYOR_ERR_NO_CLIENTS: no client to deliver to\0",
            CONVEYOR_ERR_CANCELLED => "CONVEYOR_ERR_CANCELLED: the producer was cancelled\0",
            CONVEYOR_ERR_PANIC => "CONVEYOR_ERR_PANIC: conveyor panicked (a bug)\0",
            CONVEYOR_ERR_INTERNAL => "CONVEYOR_ERR_INTERNAL: internal error\0",
            CONVEYOR_ERR_BUFFER_TOO_SMALL => "CONVEYOR_ERR_BUFFER_TOO_SMALL: the buffer is too small\0",
            CONVEYOR_ERR_CLIENT => "CONVEYOR_ERR_CLIENT: a client or client factory failed\0",
            CONVEYOR_ERR_ALREADY_SETTLED => "CONVEYOR_ERR_ALREADY_SETTLED: settled twice\0",
            _ => "unknown conveyor_result\0",
        };
        Ok(s.as_ptr().cast())
    })
}

/// Copies the detail of the last failed conveyor call made on the calling thread
/// (e.g. "conveyor_config_set: invalid config `worker`: `x` is not a whole number")
/// into `buf`, truncated to `len - 1` bytes and always NUL-terminated when `len > 0`.
///
/// Returns the length of the whole message without its NUL (0 when no call has failed
/// on this thread), so `conveyor_last_error(NULL, 0) + 1` is the buffer size needed.
/// Successful calls leave the last error unchanged. `buf` may be NULL only if `len` is 0.
#[no_mangle]
pub unsafe extern "C" fn conveyor_last_error(buf: *mut c_char, len: usize) -> usize {
    ffi_value("conveyor_last_error", 0, || {
        let message = LAST_ERROR.try_with(|e| e.borrow().clone()).unwrap_or_default();
        if len == 0 {
            return Ok(message.len());
        }
        if buf.is_null() {
            return Ok(message.len());
        }
        // Truncate on a character boundary so the copy stays valid UTF-8.
        let mut keep = message.len().min(len - 1);
        while !message.is_char_boundary(keep) {
            keep -= 1;
        }
        // SAFETY: `buf` holds `len` writable bytes (contract) and `keep < len`.
        unsafe { copy_out(&message.as_bytes()[..keep], buf, len) }?;
        Ok(message.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        let mut buf = vec![0 as c_char; 256];
        // SAFETY: `buf` holds 256 writable bytes.
        let n = unsafe { conveyor_last_error(buf.as_mut_ptr(), buf.len()) };
        let bytes: Vec<u8> = buf[..n].iter().map(|&c| c as u8).collect();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_panic_becomes_a_status_and_the_last_error() {
        let code = ffi_status("conveyor_test", || panic!("boom {}", 42));
        assert_eq!(code, CONVEYOR_ERR_PANIC);
        assert_eq!(last_error(), "conveyor_test: panic: boom 42");
        assert_eq!(ffi_value("conveyor_test_value", 7, || -> FfiResult<i32> { panic!("static") }), 7);
        assert_eq!(last_error(), "conveyor_test_value: panic: static");
    }

    #[test]
    fn every_core_error_has_its_own_code() {
        let errors = [
            Error::config("k", "r"),
            Error::InvalidArgument("a".into()),
            Error::Closed,
            Error::Full,
            Error::Timeout,
            Error::NoClients,
            Error::Cancelled,
            Error::AlreadySettled,
            Error::Client("c".into()),
            Error::Internal("i".into()),
        ];
        let mut codes: Vec<conveyor_result> = errors.into_iter().map(|e| Failure::from(e).code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 10);
        assert!(!codes.contains(&CONVEYOR_OK) && !codes.contains(&CONVEYOR_ERR_PANIC));
    }

    #[test]
    fn truncation_keeps_utf8_whole() {
        set_last_error("f", "\u{e9}\u{e9}\u{e9}");
        let mut buf = [0 as c_char; 6];
        // SAFETY: `buf` holds 6 writable bytes.
        let n = unsafe { conveyor_last_error(buf.as_mut_ptr(), buf.len()) };
        assert_eq!(n, "f: ".len() + 6);
        // "f: " plus one two-byte character fits in 5 bytes; half a character never.
        // SAFETY: the function NUL-terminates within the buffer.
        let copied = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
        assert_eq!(copied, "f: \u{e9}");
    }
}
