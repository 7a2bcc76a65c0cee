//! The stable status codes of every Attune boundary (the C API's `ATTUNE_STATUS_*`) and their
//! names. `ffi/src/status.rs` declares the same numbers as the header's constants and checks them
//! against this table; the Java and Python bindings report these names in their exceptions.

use std::ffi::CStr;

/// Success.
pub const OK: u32 = 0;
/// A required argument was missing (NULL in C).
pub const NULL_ARGUMENT: u32 = 1;
/// A string argument is not valid UTF-8.
pub const INVALID_UTF8: u32 = 2;
/// An enumeration argument is outside its documented set.
pub const INVALID_ENUM: u32 = 3;
/// The caller's buffer is too small.
pub const BUFFER_TOO_SMALL: u32 = 4;
/// A JSON argument is not valid JSON or does not have the documented shape.
pub const INVALID_JSON: u32 = 5;
/// The session is in use by another call, or the user already has an open session.
pub const BUSY: u32 = 6;
/// The session's runtime was closed.
pub const RUNTIME_CLOSED: u32 = 7;
/// The thing asked for does not exist (no update has run yet, ...).
pub const NOT_FOUND: u32 = 8;
/// Not possible in this process or build.
pub const UNSUPPORTED: u32 = 9;
/// The library panicked (a bug).
pub const PANIC: u32 = 10;
/// An argument is invalid (also: a session used after it was closed).
pub const INVALID_ARGUMENT: u32 = 26;
/// A reward was not finite or out of range.
pub const INVALID_REWARD: u32 = 30;

/// Every status and its name, in order. 20 and up are `attune::Error::code`'s numbers.
pub const NAMES: [(u32, &CStr); 29] = [
    (OK, c"ATTUNE_STATUS_OK"),
    (NULL_ARGUMENT, c"ATTUNE_STATUS_NULL_ARGUMENT"),
    (INVALID_UTF8, c"ATTUNE_STATUS_INVALID_UTF8"),
    (INVALID_ENUM, c"ATTUNE_STATUS_INVALID_ENUM"),
    (BUFFER_TOO_SMALL, c"ATTUNE_STATUS_BUFFER_TOO_SMALL"),
    (INVALID_JSON, c"ATTUNE_STATUS_INVALID_JSON"),
    (BUSY, c"ATTUNE_STATUS_BUSY"),
    (RUNTIME_CLOSED, c"ATTUNE_STATUS_RUNTIME_CLOSED"),
    (NOT_FOUND, c"ATTUNE_STATUS_NOT_FOUND"),
    (UNSUPPORTED, c"ATTUNE_STATUS_UNSUPPORTED"),
    (PANIC, c"ATTUNE_STATUS_PANIC"),
    (20, c"ATTUNE_STATUS_ORT_LIBRARY"),
    (21, c"ATTUNE_STATUS_ORT"),
    (22, c"ATTUNE_STATUS_MODEL"),
    (23, c"ATTUNE_STATUS_TOKENIZER"),
    (24, c"ATTUNE_STATUS_TEMPLATE"),
    (25, c"ATTUNE_STATUS_CONFIG"),
    (INVALID_ARGUMENT, c"ATTUNE_STATUS_INVALID_ARGUMENT"),
    (27, c"ATTUNE_STATUS_CONTEXT_OVERFLOW"),
    (28, c"ATTUNE_STATUS_EXECUTION_PROVIDER"),
    (29, c"ATTUNE_STATUS_UNKNOWN_EPISODE"),
    (INVALID_REWARD, c"ATTUNE_STATUS_INVALID_REWARD"),
    (31, c"ATTUNE_STATUS_LEARNING"),
    (32, c"ATTUNE_STATUS_STORE"),
    (33, c"ATTUNE_STATUS_CORRUPT_ADAPTER"),
    (34, c"ATTUNE_STATUS_IO"),
    (35, c"ATTUNE_STATUS_GPU"),
    (36, c"ATTUNE_STATUS_ENCRYPTION_KEY"),
    (37, c"ATTUNE_STATUS_USER_FORGOTTEN"),
];

/// The name of a status (`"ATTUNE_STATUS_BUSY"`), or `"ATTUNE_STATUS_UNKNOWN"` for a number this
/// version does not know.
pub fn name_c(status: u32) -> &'static CStr {
    NAMES.iter().find(|(s, _)| *s == status).map_or(c"ATTUNE_STATUS_UNKNOWN", |(_, n)| n)
}

/// [`name_c`] as a `&str`.
pub fn name(status: u32) -> &'static str {
    // Every name is ASCII (checked by a test), so this never takes the fallback.
    name_c(status).to_str().unwrap_or("ATTUNE_STATUS_UNKNOWN")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use attune::Error;

    use super::*;

    #[test]
    fn names_are_unique_ascii_and_cover_every_core_error() {
        for (i, (s, n)) in NAMES.iter().enumerate() {
            assert!(name(*s).starts_with("ATTUNE_STATUS_") && n.to_str().unwrap().is_ascii());
            assert!(NAMES[i + 1..].iter().all(|(t, m)| t != s && m != n), "{n:?} repeated");
        }
        assert_eq!(name(12345), "ATTUNE_STATUS_UNKNOWN");
        let errors = [
            (Error::Config("x".into()), "ATTUNE_STATUS_CONFIG"),
            (Error::UnknownEpisode { id: 1, reason: "x".into() }, "ATTUNE_STATUS_UNKNOWN_EPISODE"),
            (Error::InvalidReward("x".into()), "ATTUNE_STATUS_INVALID_REWARD"),
            (Error::model(PathBuf::from("m"), "x"), "ATTUNE_STATUS_MODEL"),
            (Error::UserForgotten("x".into()), "ATTUNE_STATUS_USER_FORGOTTEN"),
            (Error::Busy("x".into()), "ATTUNE_STATUS_BUSY"),
        ];
        for (e, n) in errors {
            assert_eq!(name(e.code()), n);
        }
    }
}
