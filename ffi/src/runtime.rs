//! `attune_runtime`: one model, one adapter store and the learning settings, shared by all threads.

use std::ffi::c_char;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use attune::runtime::Runtime;

use attune_host::handle::Registry;

use crate::boundary::{self, fill, utf8, Fail, Out, Outcome};
use crate::status::*;

/// A loaded model, its adapter store and learning settings. Shared by all threads: every
/// `attune_runtime_*` function may be called concurrently on the same runtime. Created by
/// `attune_runtime_new`, freed by `attune_runtime_free`. The handle's value is an id that is never
/// handed out again: a freed runtime's handle is refused with `ATTUNE_STATUS_INVALID_ARGUMENT`.
pub struct attune_runtime {
    pub(crate) shared: Arc<Shared>,
}

/// What a runtime handle and its sessions share. Sessions hold it too, so freeing the runtime
/// handle never frees memory a session still reads; it only closes the runtime.
pub(crate) struct Shared {
    pub runtime: Arc<Runtime>,
    closed: AtomicBool,
}

impl Shared {
    /// Whether `attune_runtime_free` was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Fails with [`ATTUNE_STATUS_RUNTIME_CLOSED`] once the runtime was freed.
    pub fn check_open(&self) -> Outcome<()> {
        if self.is_closed() {
            Err(Fail::new(ATTUNE_STATUS_RUNTIME_CLOSED, "the session's runtime was freed (attune_runtime_free); free the session"))
        } else {
            Ok(())
        }
    }
}

/// The live runtimes by handle (the bindings' shared registry: ids are never reused).
static RUNTIMES: Registry<attune_runtime> = Registry::new();

/// The runtime behind a handle: NULL is `NULL_ARGUMENT`; a freed, never-issued or forged handle is
/// `INVALID_ARGUMENT`. Never dereferences the handle.
pub(crate) fn find(runtime: *const attune_runtime) -> Outcome<Arc<attune_runtime>> {
    if runtime.is_null() {
        return Err(Fail::new(ATTUNE_STATUS_NULL_ARGUMENT, "runtime is NULL"));
    }
    RUNTIMES.get(runtime as usize as u64).ok_or_else(|| {
        Fail::new(ATTUNE_STATUS_INVALID_ARGUMENT, "runtime is not a live runtime (freed already, or never a runtime handle)")
    })
}

/// Parses the configuration and loads the runtime.
fn new_runtime(config_json: &str) -> Outcome<attune_runtime> {
    let runtime = Runtime::new(attune_host::json::config(config_json)?)?;
    Ok(attune_runtime { shared: Arc::new(Shared { runtime, closed: AtomicBool::new(false) }) })
}

/// Creates a runtime from a JSON configuration: loads ONNX Runtime (once per process), the model
/// and the adapter store. See "Configuration" at the top of this header for the fields.
///
/// ONNX Runtime is loaded by the first runtime of the process; later runtimes share it (their
/// `ort_library` is not used). Runtimes may be created concurrently and any number may coexist.
///
/// On success `*out_runtime` is an owned runtime: free it with `attune_runtime_free`.
/// Statuses: `INVALID_JSON` (not JSON), `CONFIG` (unknown field, bad value, a malformed
/// `store.encryption_key`), `ORT_LIBRARY`, `MODEL`, `TOKENIZER`, `EXECUTION_PROVIDER`, `STORE`,
/// `IO`, `ENCRYPTION_KEY` (the store was encrypted under another key, or a key is missing), ...
///
/// # Safety
/// `config_json` is NULL or a NUL-terminated string; `out_runtime` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_runtime_new(config_json: *const c_char, out_runtime: *mut *mut attune_runtime) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let (json, out) = unsafe { (utf8(config_json, "config_json")?, Out::new(out_runtime, "out_runtime")?) };
        let rt = new_runtime(json)?;
        let id = RUNTIMES.insert(Arc::new(rt));
        out.write(id as usize as *mut attune_runtime);
        Ok(())
    })
}

/// Frees a runtime handle and closes the runtime. Sessions opened from it stay valid objects but
/// every later call on them returns `ATTUNE_STATUS_RUNTIME_CLOSED` (free them with
/// `attune_session_free`); a generation running on another thread stops at its next piece of text
/// and returns `ATTUNE_STATUS_RUNTIME_CLOSED`. The model's memory is released when the runtime
/// and all its sessions are freed. `attune_runtime_free(NULL)` does nothing, and so does freeing
/// a handle that was freed already (or was never a runtime): handles are ids, never reused.
///
/// # Safety
/// None beyond the C signature: the handle is looked up, never dereferenced. After this call the
/// handle is refused (`ATTUNE_STATUS_INVALID_ARGUMENT`) by every function.
#[no_mangle]
pub unsafe extern "C" fn attune_runtime_free(runtime: *mut attune_runtime) {
    boundary::infallible((), || {
        // A NULL, freed or unknown handle does nothing.
        if let Some(rt) = RUNTIMES.remove(runtime as usize as u64) {
            rt.shared.closed.store(true, Ordering::Release);
        }
    })
}

/// Writes the number of tokens one generation can hold (prompt plus reply: the KV-cache capacity,
/// `engine.max_context` or the model's context) to `*out_tokens`.
///
/// # Safety
/// `runtime` is NULL or a live runtime; `out_tokens` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_runtime_context_tokens(runtime: *const attune_runtime, out_tokens: *mut usize) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let out = unsafe { Out::new(out_tokens, "out_tokens")? };
        let rt = find(runtime)?;
        out.write(rt.shared.runtime.model().engine().capacity());
        Ok(())
    })
}

/// Copies what the runtime runs on as a JSON object (NUL-terminated) into `buf` (`len` bytes):
/// `{"provider": the highest-priority active execution provider ("webgpu", "qnn", ..., "cpu"),
/// "compute_device": what it computes on ("cpu", "gpu", "npu", "accelerator"), "providers": [{"name",
/// "compute_device", "devices": [{"type", "vendor", "id"}] (as ONNX Runtime lists them; may be
/// empty), "options": {...} (those configured)}, ...] (every active provider in priority order, the
/// CPU provider last), "failed_providers": [{"name", "reason"}] (configured but not registered,
/// without `strict_providers`), "context_tokens", "kv_cache_in_place", "adapter_compute": {"device",
/// "allow_software"} (the `compute` configuration), "model_profile": the model folder's converter
/// profile ("fast", "exact", "custom"; null when its attune_model.json records none)}`. When `len` is too small, returns
/// `ATTUNE_STATUS_BUFFER_TOO_SMALL`, leaves `buf` untouched and writes the size needed (NUL
/// included) to `*needed`. `needed` may be NULL; `buf` may be NULL when `len` is 0.
///
/// # Safety
/// `runtime` is NULL or a live runtime; `buf` is NULL or writable for `len` bytes; `needed` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_runtime_stats_json(runtime: *const attune_runtime, buf: *mut c_char, len: usize, needed: *mut usize) -> attune_status {
    boundary::status(|| {
        let rt = find(runtime)?;
        let stats = rt.shared.runtime.stats();
        // Plain structs with string keys: serialising cannot fail (a panic would become
        // ATTUNE_STATUS_PANIC at the boundary).
        let mut json = serde_json::to_vec(&stats).expect("runtime statistics serialise to JSON");
        json.push(0);
        // SAFETY: the caller's promises above.
        unsafe { fill(&json, buf, len, needed) }
    })
}

/// Deletes everything the store holds for `user_id` (forget-me: every saved version of the adapter
/// and the pending episodes), without opening a session. Final: a session of that user that is
/// open goes on in memory, but it never writes to the store again (its save, rollback, reset,
/// export and import return `ATTUNE_STATUS_USER_FORGOTTEN`), so it cannot bring the data back; a
/// session opened after it is freed works normally. `*out_existed` (may be NULL) tells whether
/// anything was saved. Without a store nothing is deleted and `*out_existed` is false.
///
/// # Safety
/// `runtime` is NULL or a live runtime; `user_id` is NULL or a NUL-terminated string;
/// `out_existed` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_runtime_forget_user(runtime: *const attune_runtime, user_id: *const c_char, out_existed: *mut bool) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let (user, out) = unsafe { (utf8(user_id, "user_id")?, Out::optional(out_existed)) };
        let rt = find(runtime)?;
        if user.is_empty() {
            return Err(Fail::new(ATTUNE_STATUS_INVALID_ARGUMENT, "user_id must not be empty"));
        }
        let existed = rt.shared.runtime.forget(user)?;
        if let Some(out) = out {
            out.write(existed);
        }
        Ok(())
    })
}
