//! Status codes: the number every fallible export returns. They are stable: a number keeps its
//! meaning forever and is never reused. 1 ..= 19 are the C boundary's own; 20 and up are the core
//! library's error kinds (`attune::Error::code`). The names live in `attune_host::status` (shared
//! with the Java and Python bindings); the tests below check every constant here against them.

use std::ffi::c_char;

use crate::boundary;

/// The result of every fallible call: `ATTUNE_STATUS_OK` (0) or one of the `ATTUNE_STATUS_*` codes.
/// Later versions may add codes; treat an unknown nonzero value as an error.
pub type attune_status = u32;

/// Success.
pub const ATTUNE_STATUS_OK: attune_status = 0;
/// A pointer argument that must not be NULL was NULL (the message names it).
pub const ATTUNE_STATUS_NULL_ARGUMENT: attune_status = 1;
/// A string argument is not valid UTF-8 (the message names it and the byte offset).
pub const ATTUNE_STATUS_INVALID_UTF8: attune_status = 2;
/// An enumeration argument (`uint32_t`) has a value outside its documented set.
pub const ATTUNE_STATUS_INVALID_ENUM: attune_status = 3;
/// The caller's buffer is too small; `*needed` holds the size needed (NUL included).
pub const ATTUNE_STATUS_BUFFER_TOO_SMALL: attune_status = 4;
/// A JSON argument is not valid JSON or does not have the documented shape (unknown field, wrong
/// type).
pub const ATTUNE_STATUS_INVALID_JSON: attune_status = 5;
/// The session is in use by another call (another thread, or this session's own callback), or
/// (from `attune_session_new`) the user already has an open session on this runtime. Nothing was
/// done; try again later.
pub const ATTUNE_STATUS_BUSY: attune_status = 6;
/// The session's runtime was freed with `attune_runtime_free`; only `attune_session_free` is
/// still useful.
pub const ATTUNE_STATUS_RUNTIME_CLOSED: attune_status = 7;
/// The thing asked for does not exist (for instance no update has run in this session yet).
pub const ATTUNE_STATUS_NOT_FOUND: attune_status = 8;
/// The operation is not possible in this process or build (for instance another `log` logger is
/// already installed, so the log callback cannot be).
pub const ATTUNE_STATUS_UNSUPPORTED: attune_status = 9;
/// A bug: the library panicked. The call had no effect that can be relied on; a session that
/// panicked answers `ATTUNE_STATUS_PANIC` from then on and should be freed.
pub const ATTUNE_STATUS_PANIC: attune_status = 10;
/// ONNX Runtime's shared library could not be found or loaded (the message names every path tried).
pub const ATTUNE_STATUS_ORT_LIBRARY: attune_status = 20;
/// ONNX Runtime returned an error (session creation, a run).
pub const ATTUNE_STATUS_ORT: attune_status = 21;
/// The model folder is unusable (a missing file, an unexpected graph).
pub const ATTUNE_STATUS_MODEL: attune_status = 22;
/// The tokenizer could not be loaded or failed to encode or decode.
pub const ATTUNE_STATUS_TOKENIZER: attune_status = 23;
/// The chat template failed to parse or render.
pub const ATTUNE_STATUS_TEMPLATE: attune_status = 24;
/// A configuration value is invalid (an unknown field or provider, an out-of-range value).
pub const ATTUNE_STATUS_CONFIG: attune_status = 25;
/// An argument is invalid (an empty prompt or user id, a bad generation setting, rollback of 0
/// steps, ...).
pub const ATTUNE_STATUS_INVALID_ARGUMENT: attune_status = 26;
/// The prompt plus one new token does not fit the context window.
pub const ATTUNE_STATUS_CONTEXT_OVERFLOW: attune_status = 27;
/// A required execution provider failed to register (`strict_providers`).
pub const ATTUNE_STATUS_EXECUTION_PROVIDER: attune_status = 28;
/// Feedback named an episode id that does not exist or has expired.
pub const ATTUNE_STATUS_UNKNOWN_EPISODE: attune_status = 29;
/// A reward was not finite or out of range (NaN, inf, 0 stars, an outcome outside [-1, 1]); it was
/// not recorded.
pub const ATTUNE_STATUS_INVALID_REWARD: attune_status = 30;
/// A learning step could not run.
pub const ATTUNE_STATUS_LEARNING: attune_status = 31;
/// The adapter store failed, or none is configured (`store.dir`).
pub const ATTUNE_STATUS_STORE: attune_status = 32;
/// An adapter file or imported bytes are corrupt, truncated, or for another model.
pub const ATTUNE_STATUS_CORRUPT_ADAPTER: attune_status = 33;
/// A file-system operation failed.
pub const ATTUNE_STATUS_IO: attune_status = 34;
/// The GPU compute path failed.
pub const ATTUNE_STATUS_GPU: attune_status = 35;
/// The store or imported bytes were encrypted with another key than `store.encryption_key` (the
/// message says "wrong encryption key"), or are encrypted and no key is configured.
pub const ATTUNE_STATUS_ENCRYPTION_KEY: attune_status = 36;
/// The session's user was forgotten (`attune_runtime_forget_user` or `attune_session_forget`)
/// while the session was open: it goes on in memory but never writes to the store again. Free it;
/// a session opened afterwards works normally.
pub const ATTUNE_STATUS_USER_FORGOTTEN: attune_status = 37;

/// The name of a status code (`"ATTUNE_STATUS_BUSY"`), or `"ATTUNE_STATUS_UNKNOWN"` for a number
/// this version does not know.
///
/// Returns a static string: never freed, valid for the life of the process.
#[no_mangle]
pub extern "C" fn attune_status_name(status: attune_status) -> *const c_char {
    boundary::infallible(c"ATTUNE_STATUS_UNKNOWN".as_ptr(), || attune_host::status::name_c(status).as_ptr())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use attune::Error;

    use super::*;

    #[test]
    fn every_core_error_maps_onto_a_named_status() {
        let io = std::io::Error::other("x");
        let cases = [
            (Error::OrtLibrary("x".into()), ATTUNE_STATUS_ORT_LIBRARY),
            (Error::Ort("x".into()), ATTUNE_STATUS_ORT),
            (Error::model("m", "x"), ATTUNE_STATUS_MODEL),
            (Error::Tokenizer("x".into()), ATTUNE_STATUS_TOKENIZER),
            (Error::Template("x".into()), ATTUNE_STATUS_TEMPLATE),
            (Error::Config("x".into()), ATTUNE_STATUS_CONFIG),
            (Error::InvalidArgument("x".into()), ATTUNE_STATUS_INVALID_ARGUMENT),
            (Error::ContextOverflow { prompt: 1, context: 1 }, ATTUNE_STATUS_CONTEXT_OVERFLOW),
            (Error::ExecutionProvider { name: "x".into(), reason: "y".into() }, ATTUNE_STATUS_EXECUTION_PROVIDER),
            (Error::UnknownEpisode { id: 1, reason: "expired".into() }, ATTUNE_STATUS_UNKNOWN_EPISODE),
            (Error::InvalidReward("x".into()), ATTUNE_STATUS_INVALID_REWARD),
            (Error::Learning("x".into()), ATTUNE_STATUS_LEARNING),
            (Error::Store("x".into()), ATTUNE_STATUS_STORE),
            (Error::CorruptAdapter { path: PathBuf::from("a"), reason: "x".into() }, ATTUNE_STATUS_CORRUPT_ADAPTER),
            (Error::io("p", io), ATTUNE_STATUS_IO),
            (Error::Gpu("x".into()), ATTUNE_STATUS_GPU),
            (Error::Busy("x".into()), ATTUNE_STATUS_BUSY),
            (Error::EncryptionKey { path: PathBuf::from("a"), reason: "x".into() }, ATTUNE_STATUS_ENCRYPTION_KEY),
            (Error::UserForgotten("x".into()), ATTUNE_STATUS_USER_FORGOTTEN),
        ];
        for (err, status) in cases {
            assert_eq!(err.code(), status, "{err}");
            assert_ne!(attune_host::status::name(status), "ATTUNE_STATUS_UNKNOWN");
        }
    }

    #[test]
    fn every_constant_has_its_own_name() {
        macro_rules! check {
            ($($c:ident),* $(,)?) => {$(
                // SAFETY: the returned pointer is a static NUL-terminated string.
                let back = unsafe { std::ffi::CStr::from_ptr(attune_status_name($c)) };
                assert_eq!(back.to_str().unwrap(), stringify!($c));
            )*};
        }
        check!(
            ATTUNE_STATUS_OK, ATTUNE_STATUS_NULL_ARGUMENT, ATTUNE_STATUS_INVALID_UTF8, ATTUNE_STATUS_INVALID_ENUM,
            ATTUNE_STATUS_BUFFER_TOO_SMALL, ATTUNE_STATUS_INVALID_JSON, ATTUNE_STATUS_BUSY, ATTUNE_STATUS_RUNTIME_CLOSED,
            ATTUNE_STATUS_NOT_FOUND, ATTUNE_STATUS_UNSUPPORTED, ATTUNE_STATUS_PANIC, ATTUNE_STATUS_ORT_LIBRARY, ATTUNE_STATUS_ORT,
            ATTUNE_STATUS_MODEL, ATTUNE_STATUS_TOKENIZER, ATTUNE_STATUS_TEMPLATE, ATTUNE_STATUS_CONFIG,
            ATTUNE_STATUS_INVALID_ARGUMENT, ATTUNE_STATUS_CONTEXT_OVERFLOW, ATTUNE_STATUS_EXECUTION_PROVIDER,
            ATTUNE_STATUS_UNKNOWN_EPISODE, ATTUNE_STATUS_INVALID_REWARD, ATTUNE_STATUS_LEARNING, ATTUNE_STATUS_STORE,
            ATTUNE_STATUS_CORRUPT_ADAPTER, ATTUNE_STATUS_IO, ATTUNE_STATUS_GPU, ATTUNE_STATUS_ENCRYPTION_KEY,
            ATTUNE_STATUS_USER_FORGOTTEN,
        );
        assert_eq!(attune_host::status::NAMES.len(), 29, "a status without a constant here");
        // SAFETY: as above.
        let unknown = unsafe { std::ffi::CStr::from_ptr(attune_status_name(12345)) };
        assert_eq!(unknown.to_str().unwrap(), "ATTUNE_STATUS_UNKNOWN");
    }
}
