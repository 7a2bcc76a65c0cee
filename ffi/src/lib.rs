//! The C API of Attune: `libattune` (shared and static) and `include/attune.h`, generated from
//! this crate by cbindgen (`make header`). The rules it follows are in `docs/c-api.md`; the
//! header's preamble (`cbindgen.toml`) states the thread and lifetime rules hosts rely on.
//!
//! Code map: [`boundary`] is the one place raw arguments are checked and panics caught; [`status`]
//! the stable status codes; [`runtime`], [`session`], [`generate`] and [`learn`] the exports by
//! object; [`log`] the log callback.
//!
//! Architecture invariant: every export's body runs inside `boundary::guard`, and out-parameters
//! are written only after everything that can fail has succeeded.
#![allow(non_camel_case_types)]
#![deny(unsafe_op_in_unsafe_fn)]

// Declared in the order the header presents them.
mod boundary;
pub mod generate;
pub mod learn;
pub mod log;
pub mod runtime;
pub mod session;
pub mod status;

use std::ffi::c_char;

use status::attune_status;

/// The major version of this header (`ATTUNE_VERSION_MAJOR.MINOR.PATCH`); the same as the
/// library's Cargo version (checked when the library is built, and by the C tests).
pub const ATTUNE_VERSION_MAJOR: u32 = 0;
/// The minor version of this header.
pub const ATTUNE_VERSION_MINOR: u32 = 1;
/// The patch version of this header.
pub const ATTUNE_VERSION_PATCH: u32 = 0;
/// `MAJOR * 10000 + MINOR * 100 + PATCH`; compare with `attune_version_number()` to detect a
/// header and library mismatch.
pub const ATTUNE_VERSION_NUMBER: u32 = ATTUNE_VERSION_MAJOR * 10000 + ATTUNE_VERSION_MINOR * 100 + ATTUNE_VERSION_PATCH;

/// The library's version number at run time (`MAJOR * 10000 + MINOR * 100 + PATCH`, the same
/// formula as `ATTUNE_VERSION_NUMBER`).
#[no_mangle]
pub extern "C" fn attune_version_number() -> u32 {
    boundary::infallible(0, || ATTUNE_VERSION_NUMBER)
}

/// The library's version as text, e.g. "0.1.0" (static: never freed).
#[no_mangle]
pub extern "C" fn attune_version_string() -> *const c_char {
    boundary::infallible(std::ptr::null(), || concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast())
}

/// Copies the message of this thread's most recent failed call (NUL-terminated; "" when no call
/// on this thread has failed) into `buf` (`len` bytes). Calls that succeed leave the message
/// unchanged; messages are per thread, so another thread's failure never overwrites it.
///
/// When `len` is too small, returns `ATTUNE_STATUS_BUFFER_TOO_SMALL`, leaves `buf` untouched and
/// writes the size needed (NUL included) to `*needed`; on success `*needed` is the size written.
/// `needed` may be NULL; `buf` may be NULL when `len` is 0 (a size query). This function never
/// changes the message itself.
///
/// # Safety
/// `buf` is NULL or writable for `len` bytes; `needed` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_last_error_message(buf: *mut c_char, len: usize, needed: *mut usize) -> attune_status {
    let copy = || {
        // SAFETY: the caller's promises above.
        boundary::with_last_error(|msg| unsafe { boundary::fill(msg, buf, len, needed) }).map_err(|fail| fail.status)
    };
    // Not `boundary::status`: a failure here must not replace the message being read.
    match boundary::guard(|| Ok(copy())) {
        Ok(Ok(())) => status::ATTUNE_STATUS_OK,
        Ok(Err(status)) | Err(status) => status,
    }
}

// A compile-time check that the literal version constants above (cbindgen needs literals) match
// Cargo.toml: bumping the version without them fails the build.
const _: () = {
    const fn parse(s: &str) -> u32 {
        let b = s.as_bytes();
        let (mut i, mut n) = (0, 0u32);
        while i < b.len() {
            n = n * 10 + (b[i] - b'0') as u32;
            i += 1;
        }
        n
    }
    assert!(parse(env!("CARGO_PKG_VERSION_MAJOR")) == ATTUNE_VERSION_MAJOR);
    assert!(parse(env!("CARGO_PKG_VERSION_MINOR")) == ATTUNE_VERSION_MINOR);
    assert!(parse(env!("CARGO_PKG_VERSION_PATCH")) == ATTUNE_VERSION_PATCH);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_matches_cargo() {
        let v = format!("{ATTUNE_VERSION_MAJOR}.{ATTUNE_VERSION_MINOR}.{ATTUNE_VERSION_PATCH}");
        assert_eq!(v, env!("CARGO_PKG_VERSION"));
        // SAFETY: a static C string.
        let s = unsafe { std::ffi::CStr::from_ptr(attune_version_string()) };
        assert_eq!(s.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
        assert_eq!(attune_version_number(), ATTUNE_VERSION_NUMBER);
    }
}
