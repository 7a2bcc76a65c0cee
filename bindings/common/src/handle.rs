//! Runtime and session handles for bindings whose host objects hold a Rust object (Java through
//! JNI, Python through PyO3), with the C API's rules: a runtime closed while sessions are open
//! makes their calls fail with `RUNTIME_CLOSED`; a session is used by one call at a time (a second
//! call, also one from its own text callback, fails with `BUSY` instead of waiting), except
//! [`SessionHandle::cancel`], which may run at any time from any thread; closing twice does
//! nothing; any call after close fails.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use attune::generate::{CancelHandle, FinishReason};
use attune::learn::{FeedbackOutcome, Reward, UpdateOutcome};
pub use attune::learn::UpdateReport;
use attune::runtime::{Runtime, UserSession};

use crate::json::{self, PromptKind};
use crate::status::*;
use crate::{HostError, HostResult};

/// A loaded runtime, shared by every session opened from it.
pub struct RuntimeHandle {
    runtime: Arc<Runtime>,
    closed: AtomicBool,
}

impl RuntimeHandle {
    /// Parses the JSON configuration (see [`json::config`]) and loads the runtime.
    pub fn open(config_json: &str) -> HostResult<Arc<RuntimeHandle>> {
        let runtime = Runtime::new(json::config(config_json)?)?;
        Ok(Arc::new(RuntimeHandle { runtime, closed: AtomicBool::new(false) }))
    }

    /// Closes the runtime: later calls on it and on its sessions fail with `RUNTIME_CLOSED`, and a
    /// generation running on another thread stops at its next piece of text. The model's memory is
    /// released once every session is closed too. Closing again does nothing.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn check_open(&self) -> HostResult<()> {
        if self.is_closed() {
            Err(HostError::new(RUNTIME_CLOSED, "the runtime was closed; close the session"))
        } else {
            Ok(())
        }
    }

    /// The tokens one generation can hold (prompt plus reply).
    pub fn context_tokens(&self) -> HostResult<usize> {
        self.check_open()?;
        Ok(self.runtime.model().engine().capacity())
    }

    /// Deletes everything the store holds for `user` (forget-me); whether anything was saved.
    pub fn forget_user(&self, user: &str) -> HostResult<bool> {
        self.check_open()?;
        if user.is_empty() {
            return Err(HostError::new(INVALID_ARGUMENT, "user id must not be empty"));
        }
        Ok(self.runtime.forget(user)?)
    }

    /// Opens `user`'s session (`BUSY` while that user has another open session on this runtime).
    pub fn open_session(self: &Arc<Self>, user: &str) -> HostResult<SessionHandle> {
        self.check_open()?;
        let session = self.runtime.open_session(user)?;
        let cancel = session.cancel_handle();
        Ok(SessionHandle { runtime: Arc::clone(self), user: user.to_string(), cancel, state: Mutex::new(Some(SessionState { session })) })
    }
}

/// What a session's lock protects; `None` once the session is closed.
struct SessionState {
    session: UserSession,
}

/// A finished generation as the bindings hand it out.
#[derive(Debug, Clone)]
pub struct ReplyData {
    pub text: String,
    /// `None` for an unrecorded generation, or one cancelled before its first token.
    pub episode_id: Option<u64>,
    pub finish: FinishReason,
    pub tokens: usize,
    /// The whole reply as JSON (text, episode id, finish, tokens, timings).
    pub json: String,
}

/// What a piece of feedback is.
#[derive(Debug, Clone)]
pub enum Feedback {
    /// An outcome in [-1, 1].
    Scalar(f64),
    Thumbs(bool),
    /// 1 ..= 5.
    Stars(u64),
    /// A score on any scale from a named source.
    Score(String, f64),
    /// Named signals as JSON (see [`json::reward`]).
    Json(String),
}

/// What happened to a piece of feedback: the C API's `ATTUNE_FEEDBACK_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackKind {
    /// Stored; learned from at the next update.
    Queued,
    /// Accepted but not learned from.
    Ignored,
    /// It completed a batch and an update applied a step that passed every safeguard (the report
    /// is the last report).
    Updated,
    /// It completed a batch and an update ran but applied no step.
    Skipped,
    /// It completed a batch, an update applied a step and a safeguard undid it; its signals went
    /// back to the queue for the next update.
    RolledBack,
}

impl FeedbackKind {
    /// `"queued"`, `"ignored"`, `"updated"`, `"skipped"` or `"rolled_back"`.
    pub fn name(self) -> &'static str {
        match self {
            FeedbackKind::Queued => "queued",
            FeedbackKind::Ignored => "ignored",
            FeedbackKind::Updated => "updated",
            FeedbackKind::Skipped => "skipped",
            FeedbackKind::RolledBack => "rolled_back",
        }
    }

    /// What happened to a signal.
    pub fn of(out: &FeedbackOutcome) -> FeedbackKind {
        match out {
            FeedbackOutcome::Queued => FeedbackKind::Queued,
            FeedbackOutcome::Ignored(_) => FeedbackKind::Ignored,
            FeedbackOutcome::Updated(r) => match r.outcome {
                UpdateOutcome::Accepted => FeedbackKind::Updated,
                UpdateOutcome::RolledBack(_) => FeedbackKind::RolledBack,
                UpdateOutcome::Skipped(_) => FeedbackKind::Skipped,
            },
        }
    }
}

/// `"accepted"`, `"rolled_back"` or `"skipped"`.
pub fn outcome_name(r: &UpdateReport) -> &'static str {
    match r.outcome {
        UpdateOutcome::Accepted => "accepted",
        UpdateOutcome::RolledBack(_) => "rolled_back",
        UpdateOutcome::Skipped(_) => "skipped",
    }
}

/// A report as JSON (see the C API's `attune_update_report_json`).
pub fn report_json(r: &UpdateReport) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

/// `"stop_token"`, `"stop_string"`, `"length"`, `"context_full"` or `"cancelled"`.
pub fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::StopToken => "stop_token",
        FinishReason::StopString => "stop_string",
        FinishReason::Length => "length",
        FinishReason::ContextFull => "context_full",
        FinishReason::Cancelled => "cancelled",
    }
}

/// One user's session.
pub struct SessionHandle {
    runtime: Arc<RuntimeHandle>,
    user: String,
    /// Outside the lock, so that [`SessionHandle::cancel`] works while a generation holds it.
    cancel: CancelHandle,
    state: Mutex<Option<SessionState>>,
}

impl SessionHandle {
    /// The user id (works after close).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Stops the generation running on this session (on another thread): it returns `Cancelled`
    /// within one prefill chunk or one token. The one call that never takes the session's lock,
    /// so it never fails with `BUSY`; when nothing runs it does nothing. Whether a generation was
    /// stopped.
    pub fn cancel(&self) -> bool {
        self.cancel.cancel()
    }

    /// Locks the session for one call.
    fn lock(&self) -> HostResult<MutexGuard<'_, Option<SessionState>>> {
        self.runtime.check_open()?;
        let guard = match self.state.try_lock() {
            Ok(g) => g,
            Err(TryLockError::WouldBlock) => {
                return Err(HostError::new(BUSY, "the session is in use by another call (another thread, or its own callback); a session is used by one thread at a time"))
            }
            Err(TryLockError::Poisoned(_)) => {
                return Err(HostError::new(PANIC, "an earlier call on this session panicked; its state is unknown: close the session and open a new one"))
            }
        };
        if guard.is_none() {
            return Err(HostError::new(INVALID_ARGUMENT, "the session is closed"));
        }
        Ok(guard)
    }

    /// Runs `f` on the open session.
    fn with<T>(&self, f: impl FnOnce(&mut SessionState) -> HostResult<T>) -> HostResult<T> {
        let mut guard = self.lock()?;
        match guard.as_mut() {
            Some(st) => f(st),
            None => Err(HostError::new(INVALID_ARGUMENT, "the session is closed")),
        }
    }

    /// Closes the session and releases its user (unsaved adapter changes are lost; pending
    /// episodes are already in the store). `BUSY` while a call is running, also from the
    /// session's own callback; closing a closed session does nothing. Works after the runtime
    /// was closed.
    pub fn close(&self) -> HostResult<()> {
        let taken = match self.state.try_lock() {
            Ok(mut g) => g.take(),
            Err(TryLockError::WouldBlock) => return Err(HostError::new(BUSY, "the session is in use by another call; it was not closed")),
            Err(TryLockError::Poisoned(p)) => p.into_inner().take(),
        };
        drop(taken);
        Ok(())
    }

    /// Whether [`SessionHandle::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).is_none()
    }

    /// Generates a reply (recorded as an episode when `record`). `options_json` overlays the
    /// runtime's generation settings; `on_text` receives each piece and returns false to stop
    /// (barge-in: the reply then ends `Cancelled` with the text so far).
    pub fn generate(&self, kind: PromptKind, prompt: &str, options_json: Option<&str>, record: bool, on_text: &mut dyn FnMut(&str) -> bool) -> HostResult<ReplyData> {
        let prompt = json::prompt(kind, prompt)?;
        let reply = self.with(|st| {
            let opts = json::options(&self.runtime.runtime.config().generation, options_json)?;
            let rt = &self.runtime;
            let mut stream = |text: &str| !rt.is_closed() && on_text(text);
            if record {
                let r = st.session.generate(&prompt, &opts, &mut stream)?;
                let json = serde_json::to_string(&r).unwrap_or_default();
                let id = (r.episode_id != attune::runtime::NO_EPISODE).then_some(r.episode_id);
                Ok(ReplyData { text: r.text, episode_id: id, finish: r.finish, tokens: r.tokens, json })
            } else {
                let g = st.session.generate_unrecorded(&prompt, &opts, &mut stream)?;
                let json = serde_json::json!({
                    "text": g.text, "episode_id": null, "finish": g.finish, "tokens": g.tokens.len(), "timings": g.timings,
                });
                Ok(ReplyData { text: g.text, episode_id: None, finish: g.finish, tokens: g.tokens.len(), json: json.to_string() })
            }
        })?;
        self.runtime.check_open()?;
        Ok(reply)
    }

    /// Gives episode `episode_id` feedback. `UNKNOWN_EPISODE`, `INVALID_REWARD` (nothing is
    /// recorded), `INVALID_JSON`, and the update's errors when it completes a batch.
    pub fn feedback(&self, episode_id: u64, feedback: Feedback) -> HostResult<FeedbackKind> {
        let reward = match feedback {
            Feedback::Scalar(x) => Reward::scalar(x as f32),
            Feedback::Thumbs(up) => Reward::thumbs(up),
            Feedback::Stars(n) => Reward { parts: vec![(1.0, json::stars(n)?)] },
            Feedback::Score(source, value) => Reward::score(source, value as f32),
            Feedback::Json(text) => json::reward(&text)?,
        };
        self.with(|st| Ok(FeedbackKind::of(&st.session.feedback(episode_id, &reward)?)))
    }

    /// "The user wanted `corrected` instead of episode `episode_id`'s reply", learned as a pair
    /// (see the C API's `attune_session_correct`); what happened, as for feedback.
    pub fn correct(&self, episode_id: u64, corrected: &str) -> HostResult<FeedbackKind> {
        self.with(|st| Ok(FeedbackKind::of(&st.session.correct(episode_id, corrected)?.1)))
    }

    /// Teaches the reply wanted for a prompt; the demonstration's episode id.
    pub fn demonstrate(&self, kind: PromptKind, prompt: &str, reply: &str) -> HostResult<u64> {
        let prompt = json::prompt(kind, prompt)?;
        self.with(|st| Ok(st.session.demonstrate(&prompt, reply)?))
    }

    /// Runs an update now (`LEARNING` when no reward or demonstration waits).
    pub fn update(&self) -> HostResult<UpdateReport> {
        self.with(|st| Ok(st.session.update()?))
    }

    /// The most recent update's report (`NOT_FOUND` when none ran in this session).
    pub fn last_report(&self) -> HostResult<UpdateReport> {
        self.with(|st| st.session.last_report().cloned().ok_or_else(|| HostError::new(NOT_FOUND, "no update has run in this session yet")))
    }

    /// Waits for the session's background updates (see `UserSession::flush`); their first error.
    pub fn flush(&self) -> HostResult<()> {
        self.with(|st| Ok(st.session.flush()?))
    }

    /// Saves the adapter as a new version; its number.
    pub fn save(&self) -> HostResult<u64> {
        self.with(|st| Ok(st.session.save()?))
    }

    /// Goes back `steps_back` (>= 1) saved versions.
    pub fn rollback(&self, steps_back: usize) -> HostResult<()> {
        self.with(|st| Ok(st.session.rollback(steps_back)?))
    }

    /// Starts over with a fresh adapter (saved versions stay recoverable).
    pub fn reset(&self) -> HostResult<()> {
        self.with(|st| {
            st.session.reset()?;
            Ok(())
        })
    }

    /// Forget-me: deletes the user's saved data; the session never writes again.
    pub fn forget(&self) -> HostResult<()> {
        self.with(|st| {
            st.session.forget()?;
            Ok(())
        })
    }

    /// Saves, then returns the adapter as a self-contained file image.
    pub fn export(&self) -> HostResult<Vec<u8>> {
        self.with(|st| Ok(st.session.export()?))
    }

    /// Replaces the adapter with exported bytes (validated first).
    pub fn import(&self, bytes: &[u8]) -> HostResult<()> {
        self.with(|st| {
            st.session.import(bytes)?;
            Ok(())
        })
    }

    /// The session's statistics as JSON (see [`json::stats`]).
    pub fn stats_json(&self) -> HostResult<String> {
        self.with(|st| {
            let report = st.session.last_report().cloned();
            Ok(json::stats(&self.user, &mut st.session, report.as_ref()).to_string())
        })
    }
}

/// Objects a host refers to by number (a Java `long`): a number names one object for the life of
/// the process and is never reused, so a closed or made-up handle is an error, never a use after
/// free. A call clones the object's `Arc` out, so closing while another thread runs is safe.
pub struct Registry<T> {
    objects: Mutex<BTreeMap<u64, Arc<T>>>,
    next: AtomicU64,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry::new()
    }
}

impl<T> Registry<T> {
    pub const fn new() -> Registry<T> {
        Registry { objects: Mutex::new(BTreeMap::new()), next: AtomicU64::new(1) }
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<T>>> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `object`; its handle (never 0).
    pub fn insert(&self, object: Arc<T>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.objects().insert(id, object);
        id
    }

    /// The object behind `id`, if it is registered.
    pub fn get(&self, id: u64) -> Option<Arc<T>> {
        self.objects().get(&id).cloned()
    }

    /// Unregisters `id` (nothing when it is not registered).
    pub fn remove(&self, id: u64) -> Option<Arc<T>> {
        self.objects().remove(&id)
    }
}
