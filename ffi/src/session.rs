//! `attune_session`: one user's adapter and learner. Used by one thread at a time, enforced with a
//! `try_lock`: a concurrent call gets `ATTUNE_STATUS_BUSY` instead of waiting or racing. The one
//! exception is `attune_session_cancel`, which takes only the registry's lock and never the
//! session's, so that it can stop a generation running on another thread.

use std::collections::BTreeSet;
use std::ffi::{c_char, CString};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use attune::generate::CancelHandle;
use attune::runtime::UserSession;

use crate::boundary::{self, bytes, fill, handle, utf8, Fail, Out, Outcome};
use crate::runtime::{attune_runtime, Shared};
use crate::status::*;

/// One user's session: the user's adapter, pending episodes and learner. Used by one thread at a
/// time; a call made while another call on the same session is running (on another thread, or
/// from this session's own text callback) returns `ATTUNE_STATUS_BUSY` and does nothing.
/// Different sessions may be used on different threads at the same time. The one call that may
/// run concurrently with another call on the same session is `attune_session_cancel`. Created by
/// `attune_session_new`, freed by `attune_session_free`.
pub struct attune_session {
    pub(crate) shared: Arc<Shared>,
    user: CString,
    /// Outside the session's lock: `attune_session_cancel` uses it while a generation holds the
    /// lock.
    cancel: CancelHandle,
    state: Mutex<SessionState>,
}

/// What the session's lock protects.
pub(crate) struct SessionState {
    pub session: UserSession,
}

/// The addresses of the sessions that exist. A call checks membership and takes the session's own
/// lock while holding this one, and `attune_session_free` checks that the session is idle and
/// removes it while holding it too, so a session can never be freed between a call's check and
/// its use (and a freed or foreign pointer is an error instead of a use after free).
static LIVE: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

fn live() -> MutexGuard<'static, BTreeSet<usize>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `session` as a reference if it is a live session.
///
/// # Safety
/// `session` is NULL or a pointer this library handed out; `live` is the held registry.
unsafe fn checked<'a>(session: *const attune_session, live: &BTreeSet<usize>) -> Outcome<&'a attune_session> {
    if !session.is_null() && !live.contains(&(session as usize)) {
        return Err(Fail::new(ATTUNE_STATUS_INVALID_ARGUMENT, "session is not a live session (already freed?)"));
    }
    // SAFETY: NULL is refused by `handle`; otherwise the registry says the session exists, and it
    // cannot be freed while the registry is held.
    unsafe { handle(session, "session") }
}

/// Locks `session` for one call: NULL, a freed session, a closed runtime, a busy session or a
/// session poisoned by an earlier panic fail here.
///
/// # Safety
/// `session` is NULL or a pointer from `attune_session_new`.
pub(crate) unsafe fn lock<'a>(session: *const attune_session) -> Outcome<(&'a attune_session, MutexGuard<'a, SessionState>)> {
    let registry = live();
    // SAFETY: forwarded from the caller; the registry is held.
    let s = unsafe { checked(session, &registry)? };
    s.shared.check_open()?;
    // The session's lock is taken before the registry is released: once it is held, free sees the
    // session busy and leaves it alone.
    match s.state.try_lock() {
        Ok(guard) => Ok((s, guard)),
        Err(TryLockError::WouldBlock) => Err(Fail::new(
            ATTUNE_STATUS_BUSY,
            "the session is in use by another call (another thread, or its own callback); a session is used by one thread at a time",
        )),
        Err(TryLockError::Poisoned(_)) => {
            Err(Fail::new(ATTUNE_STATUS_PANIC, "an earlier call on this session panicked; its state is unknown: free the session and open a new one"))
        }
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
        let (rt, user, out) = unsafe { (handle(runtime, "runtime")?, utf8(user_id, "user_id")?, Out::new(out_session, "out_session")?) };
        rt.shared.check_open()?;
        let session = rt.shared.runtime.open_session(user)?;
        let user = CString::new(user).map_err(|_| Fail::new(ATTUNE_STATUS_INVALID_ARGUMENT, "user_id contains NUL"))?;
        let cancel = session.cancel_handle();
        let handle = attune_session { shared: Arc::clone(&rt.shared), user, cancel, state: Mutex::new(SessionState { session }) };
        let ptr = Box::into_raw(Box::new(handle));
        live().insert(ptr as usize);
        out.write(ptr);
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
        let mut registry = live();
        // SAFETY: `session` is non-NULL; `checked` refuses pointers that are not live sessions.
        let s = unsafe { checked(session, &registry)? };
        if matches!(s.state.try_lock(), Err(TryLockError::WouldBlock)) {
            return Err(Fail::new(ATTUNE_STATUS_BUSY, "the session is in use by another call; it was not freed"));
        }
        // No call holds the session's lock, and none can start: they check the registry first.
        registry.remove(&(session as usize));
        drop(registry);
        // SAFETY: `session` came from `Box::into_raw` in `attune_session_new`, was live until the
        // line above and no call is using it.
        drop(unsafe { Box::from_raw(session) });
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
        let registry = live();
        // SAFETY: the caller's promises above; the registry is held, so the session cannot be
        // freed during the call.
        let (s, out) = unsafe { (checked(session, &registry)?, Out::optional(out_cancelled)) };
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
        let registry = live();
        // SAFETY: the caller's promises above; the registry is held.
        let (s, out) = unsafe { (checked(session, &registry)?, Out::new(out_user_id, "out_user_id")?) };
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
        // SAFETY: the caller's promises above.
        let ((_, mut st), out) = unsafe { (lock(session)?, Out::optional(out_version)) };
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
        // SAFETY: the caller's promise above.
        let (_, mut st) = unsafe { lock(session)? };
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
        // SAFETY: the caller's promise above.
        let (_, mut st) = unsafe { lock(session)? };
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
        // SAFETY: the caller's promise above.
        let (_, mut st) = unsafe { lock(session)? };
        st.session.forget()?;
        Ok(())
    })
}

/// Bytes owned by the caller (an exported adapter). Read with `attune_bytes_data`, freed with
/// `attune_bytes_free`. Immutable: may be read from any thread.
pub struct attune_bytes {
    data: Box<[u8]>,
}

/// Saves the adapter, then writes it as a self-contained file image (for backup or moving to a
/// new device) to `*out_bytes`: owned, free with `attune_bytes_free`. With `store.encryption_key`
/// the image is encrypted under that key, so only a store with the same key can import it.
/// Statuses: `STORE` (no store configured), `IO`, `USER_FORGOTTEN`.
///
/// # Safety
/// `session` is NULL or a live session; `out_bytes` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_session_export(session: *mut attune_session, out_bytes: *mut *mut attune_bytes) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let (out, (_, mut st)) = unsafe { (Out::new(out_bytes, "out_bytes")?, lock(session)?) };
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
        let (data, (_, mut st)) = unsafe { (bytes(data, len, "data")?, lock(session)?) };
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
        // SAFETY: the caller's promise above.
        let (s, mut guard) = unsafe { lock(session)? };
        let st = &mut *guard;
        let report = st.session.last_report().cloned();
        let mut json = attune_host::json::stats(s.user.to_str().unwrap_or_default(), &mut st.session, report.as_ref()).to_string().into_bytes();
        json.push(0);
        drop(guard);
        // SAFETY: the caller's promises above.
        unsafe { fill(&json, buf, len, needed) }
    })
}
