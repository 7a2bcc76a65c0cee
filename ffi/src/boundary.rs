//! The one boundary every export goes through: panics become `ATTUNE_STATUS_PANIC`, failures
//! become a status plus a per-thread message, and raw arguments (pointers, C strings, enums) are
//! checked here before any library code sees them.
//!
//! Architecture invariant: no export touches a raw argument outside these helpers, and no export
//! body runs outside [`guard`].

use std::cell::RefCell;
use std::ffi::{c_char, CStr};

use crate::status::*;

/// A failed call: the status it returns and the message kept for `attune_last_error_message`
/// (the bindings' shared error, so that every boundary fails the same way).
pub(crate) type Fail = attune_host::HostError;

/// What an export body returns.
pub(crate) type Outcome<T> = Result<T, Fail>;

thread_local! {
    /// The message of this thread's most recent failed call, NUL-terminated when handed out.
    static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Records `message` as this thread's last error (interior NULs become spaces, so that C sees it
/// whole).
pub(crate) fn set_last_error(message: &str) {
    let mut bytes: Vec<u8> = message.bytes().map(|b| if b == 0 { b' ' } else { b }).collect();
    bytes.push(0);
    // `try_with`: a call during thread teardown (after the slot is gone) keeps no message.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = bytes);
}

/// Runs `f` with this thread's last error message (NUL included; just a NUL when there is none).
pub(crate) fn with_last_error<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    LAST_ERROR.with(|slot| {
        let msg = slot.borrow();
        if msg.is_empty() {
            f(b"\0")
        } else {
            f(&msg)
        }
    })
}

/// Runs an export body: a panic becomes [`ATTUNE_STATUS_PANIC`] and a failure records its message.
pub(crate) fn guard<T>(f: impl FnOnce() -> Outcome<T>) -> Result<T, attune_status> {
    attune_host::catch(f).map_err(|fail| {
        set_last_error(&fail.message);
        fail.status
    })
}

/// [`guard`] for exports that return a status.
pub(crate) fn status(f: impl FnOnce() -> Outcome<()>) -> attune_status {
    match guard(f) {
        Ok(()) => ATTUNE_STATUS_OK,
        Err(s) => s,
    }
}

/// [`guard`] for exports that cannot fail (frees, version queries): `fallback` if `f` panics.
pub(crate) fn infallible<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    guard(|| Ok(f())).unwrap_or(fallback)
}

/// A shared reference to the object behind a handle argument.
///
/// # Safety
/// `p` is NULL or points to a live `T` that no one mutates for `'a`.
pub(crate) unsafe fn handle<'a, T>(p: *const T, name: &str) -> Outcome<&'a T> {
    // SAFETY: the caller promises `p` is NULL or valid; `as_ref` maps NULL to `None`.
    unsafe { p.as_ref() }.ok_or_else(|| null(name))
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives and does not change for `'a`.
pub(crate) unsafe fn utf8<'a>(p: *const c_char, name: &str) -> Outcome<&'a str> {
    if p.is_null() {
        return Err(null(name));
    }
    // SAFETY: `p` is non-NULL and NUL-terminated (the caller's promise).
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    std::str::from_utf8(bytes)
        .map_err(|e| Fail::new(ATTUNE_STATUS_INVALID_UTF8, format!("{name} is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to())))
}

/// An optional string argument: NULL is `None`.
///
/// # Safety
/// As for [`utf8`].
pub(crate) unsafe fn utf8_opt<'a>(p: *const c_char, name: &str) -> Outcome<Option<&'a str>> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { utf8(p, name) }.map(Some)
    }
}

/// A `(ptr, len)` byte buffer argument; `ptr` must not be NULL even when `len` is 0.
///
/// # Safety
/// `p` is NULL or points to `len` readable bytes that live and do not change for `'a`.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize, name: &str) -> Outcome<&'a [u8]> {
    if p.is_null() {
        return Err(null(name));
    }
    // SAFETY: `p` is non-NULL and valid for `len` bytes (the caller's promise).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// An enumeration argument: `value` must be below `count` (the enum's values are `0 .. count`,
/// or `1 ..= count - 1` where the caller checks 0 itself).
pub(crate) fn enum_value(value: u32, count: u32, name: &str) -> Outcome<u32> {
    if value < count {
        Ok(value)
    } else {
        Err(Fail::new(ATTUNE_STATUS_INVALID_ENUM, format!("{name} = {value} is not one of the documented values (0 ..= {})", count - 1)))
    }
}

/// An out-parameter, checked for NULL before any work is done and written only on success.
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    /// Checks `p`.
    ///
    /// # Safety
    /// `p` is NULL or valid for writing a `T` until [`Out::write`] is called.
    pub unsafe fn new(p: *mut T, name: &str) -> Outcome<Out<T>> {
        if p.is_null() {
            Err(null(name))
        } else {
            Ok(Out(p))
        }
    }

    /// Like [`Out::new`], but NULL means the caller does not want the value.
    ///
    /// # Safety
    /// As for [`Out::new`].
    pub unsafe fn optional(p: *mut T) -> Option<Out<T>> {
        (!p.is_null()).then_some(Out(p))
    }

    /// Writes the value (without reading or dropping what was there).
    pub fn write(self, value: T) {
        // SAFETY: `self.0` is non-NULL and writable (promised at construction).
        unsafe { self.0.write(value) }
    }
}

fn null(name: &str) -> Fail {
    Fail::new(ATTUNE_STATUS_NULL_ARGUMENT, format!("{name} is NULL"))
}

/// Copies `src` (NUL included) into a caller's `(buf, len)` buffer; when it does not fit,
/// `*needed` is set and [`ATTUNE_STATUS_BUFFER_TOO_SMALL`] returned with `buf` untouched.
///
/// # Safety
/// `buf` is NULL or valid for writing `len` bytes; `needed` is NULL or valid for writing.
pub(crate) unsafe fn fill(src: &[u8], buf: *mut c_char, len: usize, needed: *mut usize) -> Result<(), Fail> {
    debug_assert_eq!(src.last(), Some(&0));
    // SAFETY: forwarded from the caller.
    let needed = unsafe { Out::optional(needed) };
    if len < src.len() {
        if let Some(n) = needed {
            n.write(src.len());
        }
        return Err(Fail::new(ATTUNE_STATUS_BUFFER_TOO_SMALL, format!("the buffer holds {len} bytes; {} are needed", src.len())));
    }
    if buf.is_null() {
        return Err(null("buf"));
    }
    // SAFETY: `buf` is non-NULL and holds at least `src.len()` bytes (checked above); `src` is a
    // separate Rust allocation, so the two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), buf.cast::<u8>(), src.len()) };
    if let Some(n) = needed {
        n.write(src.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_a_status_with_a_message() {
        let s = status(|| panic!("boom {}", 42));
        assert_eq!(s, ATTUNE_STATUS_PANIC);
        with_last_error(|m| assert!(std::str::from_utf8(m).unwrap().contains("boom 42")));
        let s = status(|| Err(Fail::new(ATTUNE_STATUS_STORE, "disk\0full")));
        assert_eq!(s, ATTUNE_STATUS_STORE);
        with_last_error(|m| assert_eq!(m, b"disk full\0"));
        assert_eq!(status(|| Ok(())), ATTUNE_STATUS_OK);
        with_last_error(|m| assert_eq!(m, b"disk full\0"));
        assert_eq!(infallible(7, || panic!("x")), 7);
    }

    #[test]
    fn arguments_are_checked() {
        // SAFETY: NULL and valid C strings.
        unsafe {
            assert_eq!(utf8(std::ptr::null(), "prompt").unwrap_err().status, ATTUNE_STATUS_NULL_ARGUMENT);
            let bad = [b'a', 0xff, 0];
            let e = utf8(bad.as_ptr().cast(), "prompt").unwrap_err();
            assert_eq!(e.status, ATTUNE_STATUS_INVALID_UTF8);
            assert!(e.message.contains("offset 1"), "{}", e.message);
            assert_eq!(utf8(c"héllo".as_ptr(), "x").unwrap(), "héllo");
        }
        assert_eq!(enum_value(3, 3, "kind").unwrap_err().status, ATTUNE_STATUS_INVALID_ENUM);
        assert_eq!(enum_value(2, 3, "kind").unwrap(), 2);
    }

    #[test]
    fn fill_reports_the_size_needed() {
        let mut buf = [1 as c_char; 4];
        let mut needed = 0usize;
        // SAFETY: `buf` holds 4 bytes; `needed` is a local.
        unsafe {
            let e = fill(b"hello\0", buf.as_mut_ptr(), 4, &mut needed).unwrap_err();
            assert_eq!((e.status, needed), (ATTUNE_STATUS_BUFFER_TOO_SMALL, 6));
            assert_eq!(buf, [1; 4], "untouched when too small");
            fill(b"hey\0", buf.as_mut_ptr(), 4, &mut needed).unwrap();
            assert_eq!((buf[0] as u8, buf[3], needed), (b'h', 0, 4));
        }
    }
}
