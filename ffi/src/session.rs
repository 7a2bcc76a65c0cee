//! `attune_session`: one user's adapter and learner. Used by one thread at a time, enforced with a
//! `try_lock`: a concurrent call gets `ATTUNE_STATUS_BUSY` instead of waiting or racing. The one
//! exception is `attune_session_cancel`, which never takes the session's lock, so that it can stop
//! a generation running on another thread.
//!
//! A session handle is not an address: it is a number from the bindings' shared [`Registry`]
//! (the same layer the JNI binding uses), never reused for the life of the process, so a freed
//! (stale) or made-up handle is refused, never a use after free and never another user's session.

use std::ffi::{c_char, CString};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use attune::generate::CancelHandle;
use attune::runtime::UserSession;
use attune_host::handle::Registry;

use crate::boundary::{self, bytes, fill, handle, utf8, Fail, Out, Outcome};
use crate::runtime::{self as rt_handle, attune_runtime, Shared};
use crate::status::*;

/// One user's session: the user's adapter, pending episodes and learner. Used by one thread at a
/// time; a call made while another call on the same session is running (on another thread, or
/// from this session's own text callback) returns `ATTUNE_STATUS_BUSY` and does nothing.
/// Different sessions may be used on different threads at the same time. The one call that may
/// run concurrently with another call on the same session is `attune_session_cancel`. Created by
/// `attune_session_new`, freed by `attune_session_free`. The handle's value is an id that is never
/// handed out again: a freed session's handle is refused with `ATTUNE_STATUS_INVALID_ARGUMENT`.
pub struct attune_session {
    pub(crate) shared: Arc<Shared>,
    user: CString,
    /// Outside the session's lock: `attune_session_cancel` uses it while a generation holds the
    /// lock.
    cancel: CancelHandle,
    /// `None` once `attune_session_free` ran (a call that found the session just before the free
    /// then sees it freed).
    state: Mutex<Option<SessionState>>,
}

/// What the session's lock protects.
pub(crate) struct SessionState {
    pub session: UserSession,
}

/// The live sessions by handle.
static SESSIONS: Registry<attune_session> = Registry::new();

/// The registry id a handle carries.
fn id_of(session: *const attune_session) -> u64 {
    session as usize as u64
}

/// The session behind a handle: NULL is `NULL_ARGUMENT`; a freed, never-issued or forged handle
/// is `INVALID_ARGUMENT`. Never dereferences the handle.
pub(crate) fn find(session: *const attune_session) -> Outcome<Arc<attune_session>> {
    if session.is_null() {
        return Err(Fail::new(ATTUNE_STATUS_NULL_ARGUMENT, "session is NULL"));
    }
    SESSIONS.get(id_of(session)).ok_or_else(|| {
        Fail::new(ATTUNE_STATUS_INVALID_ARGUMENT, "session is not a live session (freed already, or never a session handle)")
    })
}

/// The session's state, locked for one call.
pub(crate) struct Locked<'a>(MutexGuard<'a, Option<SessionState>>);

impl Deref for Locked<'_> {
    type Target = SessionState;
    fn deref(&self) -> &SessionState {
        // `Locked` is only built around `Some` (see `attune_session::lock`).
        self.0.as_ref().expect("a locked session is open")
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut SessionState {
        self.0.as_mut().expect("a locked session is open")
    }
}

impl attune_session {
    /// Locks the session for one call: a closed runtime, a busy session, a session poisoned by an
    /// earlier panic or one freed meanwhile fail here.
    pub(crate) fn lock(&self) -> Outcome<Locked<'_>> {
        self.shared.check_open()?;
        let guard = match self.state.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::WouldBlock) => {
                return Err(Fail::new(
                    ATTUNE_STATUS_BUSY,
                    "the session is in use by another call (another thread, or its own callback); a session is used by one thread at a time",
                ))
            }
            Err(TryLockError::Poisoned(_)) => {
                return Err(Fail::new(
                    ATTUNE_STATUS_PANIC,
                    "an earlier call on this session panicked; its state is unknown: free the session and open a new one",
                ))
            }
        };
        if guard.is_none() {
            return Err(Fail::new(ATTUNE_STATUS_INVALID_ARGUMENT, "session is not a live session (freed already)"));
        }
        Ok(Locked(guard))
    }
}

/// Opens `user_id`'s session on `runtime`: loads the newest valid saved adapter of that user, or
/// creates a fresh one. The first session of a runtime also measures the base model's probe
/// replies (a few short generations).
///
/// One open session per user and runtime: while a session of `user_id` is open on `runtime`,
/// this returns `ATTUNE_STATUS_BUSY` ("user ... already has an open session on this runtime")
/// and opens nothing; `attune_session_free` of that session releases the user. (Two sessions of
/// one user would each learn on their own copy of the adapter, and the last save would drop the
/// other's learning.)
///
/// On success `*out_session` is an owned session: free it with `attune_session_free`.
/// Statuses: `BUSY` (the user has an open session), `INVALID_ARGUMENT` (empty user id), `STORE`,
/// `CORRUPT_ADAPTER`, `IO`, ...
///
/// # Safety
/// `runtime` is NULL or a live runtime; `user_id` is NULL or a NUL-terminated string;
/// `out_session` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_session_new(runtime: *const attune_runtime, user_id: *const c_char, out_session: *mut *mut attune_session) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let (user, out) = unsafe { (utf8(user_id, "user_id")?, Out::new(out_session, "out_session")?) };
        let rt = rt_handle::find(runtime)?;
        rt.shared.check_open()?;
        let session = rt.shared.runtime.open_session(user)?;
        let user = CString::new(user).map_err(|_| Fail::new(ATTUNE_STATUS_INVALID_ARGUMENT, "user_id contains NUL"))?;
        let cancel = session.cancel_handle();
        let handle = attune_session { shared: Arc::clone(&rt.shared), user, cancel, state: Mutex::new(Some(SessionState { session })) };
        let id = SESSIONS.insert(Arc::new(handle));
        out.write(id as usize as *mut attune_session);
        Ok(())
    })
}

/// Frees a session. Unsaved adapter changes are lost (call `attune_session_save` first); pending
/// episodes are already in the store (with a store configured), so feedback for them can still be
/// given after the user's next `attune_session_new`, also in a new process. Returns
/// `ATTUNE_STATUS_BUSY` and frees nothing while another call on the session is running (including
/// from inside its own text callback); a pointer that is not a live session (freed already) is
/// `ATTUNE_STATUS_INVALID_ARGUMENT`; `attune_session_free(NULL)` returns `ATTUNE_STATUS_OK`.
/// Works after the runtime was freed. Freeing releases the user: `attune_session_new` for them
/// works again.
///
/// # Safety
/// `session` is NULL or a session from `attune_session_new` not yet freed; after
/// `ATTUNE_STATUS_OK` it must not be used again.
#[no_mangle]
pub unsafe extern "C" fn attune_session_free(session: *mut attune_session) -> attune_status {
    boundary::status(|| {
        if session.is_null() {
            return Ok(());
        }
        let s = find(session)?;
        let taken = match s.state.try_lock() {
            Ok(mut guard) => guard.take(),
            Err(TryLockError::WouldBlock) => return Err(Fail::new(ATTUNE_STATUS_BUSY, "the session is in use by another call; it was not freed")),
            Err(TryLockError::Poisoned(p)) => p.into_inner().take(),
        };
        // The user is released here (their claim goes with the `UserSession`), even while a call
        // that found the handle just before still holds the object: it sees the session freed.
        drop(taken);
        SESSIONS.remove(id_of(session));
        Ok(())
    })
}

/// Stops the generation running on `session` (`attune_session_generate` or `_unrecorded` on
/// another thread): it returns `ATTUNE_STATUS_OK` with a reply that ends `ATTUNE_FINISH_CANCELLED`
/// after at most the prefill chunk in flight (`generation.prefill_chunk` prompt tokens) or the
/// decode step in flight (one token). The reply and its episode hold the tokens drawn before the
/// cancel; one cancelled during the prefill has no tokens and no episode
/// (`attune_reply_episode_id` returns `ATTUNE_STATUS_NOT_FOUND`).
///
/// This is the one call allowed on a session while another call on it runs: it may be called
/// from any thread at any time, also from the session's own text callback, and never returns
/// `ATTUNE_STATUS_BUSY`. When no generation runs it does nothing: a cancel never stops a later
/// generation. `*out_cancelled` (may be NULL) receives whether a generation was running and is
/// now stopping. Works after the runtime was freed.
///
/// # Safety
/// `session` is NULL or a session from `attune_session_new` (a freed one is
/// `ATTUNE_STATUS_INVALID_ARGUMENT`); `out_cancelled` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_session_cancel(session: *const attune_session, out_cancelled: *mut bool) -> attune_status {
    boundary::status(|| {
        let s = find(session)?;
        // SAFETY: the caller's promise above.
        let out = unsafe { Out::optional(out_cancelled) };
        let stopped = s.cancel.cancel();
        if let Some(out) = out {
            out.write(stopped);
        }
        Ok(())
    })
}

/// Writes the session's user id to `*out_user_id` (NUL-terminated; borrowed: valid until
/// `attune_session_free`). Does not take the session's lock, so it never returns `BUSY`.
///
/// # Safety
/// `session` is NULL or a live session; `out_user_id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_session_user_id(session: *const attune_session, out_user_id: *mut *const c_char) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promise above.
        let out = unsafe { Out::new(out_user_id, "out_user_id")? };
        let s = find(session)?;
        // The name lives in the session object, which the registry holds until the free.
        out.write(s.user.as_ptr());
        Ok(())
    })
}

/// Saves the adapter as a new version in the store and writes its version number to
/// `*out_version` (may be NULL). Statuses: `STORE` (no store configured, or it failed), `IO` (a
/// full disk, a read-only store: the previous version stays as it was and the session keeps
/// working in memory, so the save may be tried again), `USER_FORGOTTEN` (the user was forgotten
/// while the session was open).
///
/// # Safety
/// `session` is NULL or a live session; `out_version` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_session_save(session: *mut attune_session, out_version: *mut u64) -> attune_status {
    boundary::status(|| {
        let s = find(session)?;
        let mut st = s.lock()?;
        // SAFETY: the caller's promise above.
        let out = unsafe { Out::optional(out_version) };
        let v = st.session.save()?;
        if let Some(out) = out {
            out.write(v);
        }
        Ok(())
    })
}

/// Goes back `steps_back` (>= 1) saved versions and loads that adapter; the versions in between
/// stay in the history, so a rollback can itself be undone. Pending episodes and episode ids are
/// kept: feedback for a reply generated before the rollback is learned through the importance ratio
/// to the adapter that sampled it.
/// Statuses: `INVALID_ARGUMENT` (0 steps), `STORE` (not that many versions, or no store).
///
/// # Safety
/// `session` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn attune_session_rollback(session: *mut attune_session, steps_back: u32) -> attune_status {
    boundary::status(|| {
        let s = find(session)?;
        let mut st = s.lock()?;
        st.session.rollback(steps_back as usize)?;
        Ok(())
    })
}

/// Starts the user over with a fresh adapter. Saved versions stay recoverable with
/// `attune_session_rollback(session, 1)`. Pending episodes and episode ids stay: feedback for a
/// reply generated before the reset trains the fresh adapter through the importance ratio.
///
/// # Safety
/// `session` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn attune_session_reset(session: *mut attune_session) -> attune_status {
    boundary::status(|| {
        let s = find(session)?;
        let mut st = s.lock()?;
        st.session.reset()?;
        Ok(())
    })
}

/// Deletes every saved version of this user's adapter and starts over with a fresh one
/// (forget-me), and drops the pending episodes: feedback for their ids is `UNKNOWN_EPISODE` from
/// now on, and this session never issues those ids again. Without a store only the in-memory
/// adapter is reset. Final: the session goes on in memory, but it never writes to the store
/// again (save, rollback, reset, export and import return `ATTUNE_STATUS_USER_FORGOTTEN`); free
/// it, and a session opened afterwards works normally.
///
/// # Safety
/// `session` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn attune_session_forget(session: *mut attune_session) -> attune_status {
    boundary::status(|| {
        let s = find(session)?;
        let mut st = s.lock()?;
        st.session.forget()?;
        Ok(())
    })
}

/// Bytes owned by the caller (an exported adapter). Read with `attune_bytes_data`, freed with
/// `attune_bytes_free`. Immutable: may be read from any thread.
pub struct attune_bytes {
    data: Box<[u8]>,
}

/// Writes the session's adapter as a self-contained file image (for backup or moving to a new
/// device) to `*out_bytes`: owned, free with `attune_bytes_free`. Saves no version and writes
/// nothing to the store (unsaved changes are in the bytes; call `attune_session_save` to keep them
/// in the store too). With `store.encryption_key` the image is encrypted under that key, so only a
/// store with the same key can import it. Statuses: `STORE` (no store configured: the image carries
/// the store's model fingerprint), `USER_FORGOTTEN`.
///
/// # Safety
/// `session` is NULL or a live session; `out_bytes` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_session_export(session: *mut attune_session, out_bytes: *mut *mut attune_bytes) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let out = unsafe { Out::new(out_bytes, "out_bytes")? };
        let s = find(session)?;
        let mut st = s.lock()?;
        let data = st.session.export()?.into_boxed_slice();
        out.write(Box::into_raw(Box::new(attune_bytes { data })));
        Ok(())
    })
}

/// Replaces this user's adapter with exported bytes (`data`, `len`). The bytes are validated
/// before anything is written: corrupt, truncated or other-model bytes return
/// `ATTUNE_STATUS_CORRUPT_ADAPTER` (or `STORE`), bytes encrypted under another key than this
/// store's (or encrypted, with no key configured) `ATTUNE_STATUS_ENCRYPTION_KEY`, and change
/// nothing. Pending episodes stay, and the episode-id counter keeps the higher of the session's
/// and the imported one's.
///
/// # Safety
/// `session` is NULL or a live session; `data` is NULL or readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn attune_session_import(session: *mut attune_session, data: *const u8, len: usize) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let data = unsafe { bytes(data, len, "data")? };
        let s = find(session)?;
        let mut st = s.lock()?;
        st.session.import(data)?;
        Ok(())
    })
}

/// Writes the bytes' address and length to `*out_data` and `*out_len` (borrowed: valid until
/// `attune_bytes_free`).
///
/// # Safety
/// `bytes` is NULL or live; `out_data` and `out_len` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_bytes_data(bytes: *const attune_bytes, out_data: *mut *const u8, out_len: *mut usize) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let (b, data, len) = unsafe { (handle(bytes, "bytes")?, Out::new(out_data, "out_data")?, Out::new(out_len, "out_len")?) };
        data.write(b.data.as_ptr());
        len.write(b.data.len());
        Ok(())
    })
}

/// Frees bytes from `attune_session_export`. `attune_bytes_free(NULL)` does nothing.
///
/// # Safety
/// `bytes` is NULL or from `attune_session_export` and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn attune_bytes_free(bytes: *mut attune_bytes) {
    boundary::infallible((), || {
        if !bytes.is_null() {
            // SAFETY: from `Box::into_raw` in `attune_session_export`, freed once.
            drop(unsafe { Box::from_raw(bytes) });
        }
    })
}

/// Copies the session's statistics as a JSON object (NUL-terminated) into `buf` (`len` bytes):
/// `{"user", "pending_episodes", "counters": {"episodes", "feedback", "updates", "accepted",
/// "rolled_back", "skipped", "version", ...}, "rewards": {"count", "sum", "positive", "negative",
/// "recent"}, "beta", "lr", "last_update", "probe": {"kl", "nll", "base_nll", "entropy",
/// "base_entropy", "cross_entropy", "tokens"} (the current adapter on the probe replies, or null),
/// "adapter_finite", "pending_episodes_bytes", "kv_cache": {"tokens", "bytes"} (the conversation's
/// KV cache kept between chat turns), "next_episode_id", "restored_episodes"}`. When `len` is too
/// small, returns
/// `ATTUNE_STATUS_BUFFER_TOO_SMALL`, leaves `buf` untouched and writes the size needed (NUL
/// included) to `*needed`. `needed` may be NULL; `buf` may be NULL when `len` is 0.
///
/// # Safety
/// `session` is NULL or a live session; `buf` is NULL or writable for `len` bytes; `needed` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_session_stats_json(session: *mut attune_session, buf: *mut c_char, len: usize, needed: *mut usize) -> attune_status {
    boundary::status(|| {
        let s = find(session)?;
        let mut guard = s.lock()?;
        let st = &mut *guard;
        let report = st.session.last_report().cloned();
        let mut json = attune_host::json::stats(s.user.to_str().unwrap_or_default(), &mut st.session, report.as_ref()).to_string().into_bytes();
        json.push(0);
        drop(guard);
        // SAFETY: the caller's promises above.
        unsafe { fill(&json, buf, len, needed) }
    })
}
