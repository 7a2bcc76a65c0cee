//! What every host binding of Attune shares, so that the C API (`ffi/`), the JNI binding
//! (`bindings/java/`) and the Python binding (`bindings/python/`) read the same JSON the same way
//! and fail with the same status codes.
//!
//! Code map: [`status`] the stable status codes and names; [`json`] the JSON shapes (runtime
//! configuration, rewards, prompts, generation options, statistics); [`handle`] the runtime and
//! session handles of the bindings that hold objects by handle (close, busy and use-after-close
//! rules); [`HostError`] a failure with its status.
//!
//! Architecture invariant: nothing here depends on a host language; the C API links this crate
//! and nothing more, so `libattune` carries no binding's runtime.

pub mod handle;
pub mod json;
pub mod status;

use std::panic::{catch_unwind, AssertUnwindSafe};

/// A failed call: its status code (`status::*`, or an `attune::Error::code`) and message.
#[derive(Debug, Clone, PartialEq)]
pub struct HostError {
    pub status: u32,
    pub message: String,
}

impl HostError {
    pub fn new(status: u32, message: impl Into<String>) -> HostError {
        HostError { status, message: message.into() }
    }

    /// The status's name, e.g. `"ATTUNE_STATUS_INVALID_JSON"`.
    pub fn name(&self) -> &'static str {
        status::name(self.status)
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name(), self.message)
    }
}

impl std::error::Error for HostError {}

impl From<attune::Error> for HostError {
    fn from(e: attune::Error) -> HostError {
        HostError { status: e.code(), message: e.to_string() }
    }
}

/// What host calls return.
pub type HostResult<T> = Result<T, HostError>;

/// Runs `f`, turning a panic into [`status::PANIC`] with the panic's message: no binding lets a
/// panic unwind into its host.
pub fn catch<T>(f: impl FnOnce() -> HostResult<T>) -> HostResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            Err(HostError::new(status::PANIC, format!("internal error (panic): {what}")))
        }
    }
}
