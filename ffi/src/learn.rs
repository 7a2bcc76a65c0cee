//! Feedback, demonstrations, updates and `attune_update_report`.

use std::ffi::{c_char, c_void, CString};

use attune::learn::{FeedbackOutcome, Reward, UpdateOutcome, UpdateReport};

use crate::boundary::{self, handle, utf8, Fail, Out, Outcome};
use crate::generate::parse_prompt;
use crate::session::{attune_session, find};
use crate::status::*;

/// The feedback was stored; it will be learned from at the next update.
pub const ATTUNE_FEEDBACK_QUEUED: u32 = 0;
/// The feedback was accepted but will not be learned from: beyond `learner.max_same_sign_run` (off
/// by default), or a rating under the `supervised` algorithm without `learner.imitate_rated`. The
/// episode stays and takes later signals.
pub const ATTUNE_FEEDBACK_IGNORED: u32 = 1;
/// The feedback completed a batch (`learner.auto_update_after`) and an update applied a step that
/// passed every safeguard; read its report with `attune_session_last_report`.
pub const ATTUNE_FEEDBACK_UPDATED: u32 = 2;
/// The feedback completed a batch and an update ran but applied no step (no signal, importance
/// ratios too large, no step inside the trust region); the report says why. A rate-limited update
/// is `ATTUNE_FEEDBACK_QUEUED` instead: the rewards wait for the next update.
pub const ATTUNE_FEEDBACK_SKIPPED: u32 = 3;
/// The feedback completed a batch and an update applied a step, but a safeguard (KL budget,
/// coherence, entropy, a non-finite value) undid it and halved the learning rate. Nothing was
/// lost: the rewards and corrections of that update went back to the queue and are retried by the
/// next update at the smaller step (the report's `returned_episodes`); a signal is dropped only
/// after 3 such tries (`dropped_signals`, counted in the user's stats).
pub const ATTUNE_FEEDBACK_ROLLED_BACK: u32 = 4;

/// The `ATTUNE_FEEDBACK_*` code of what happened to a signal.
fn feedback_code(out: &FeedbackOutcome) -> u32 {
    match out {
        FeedbackOutcome::Queued => ATTUNE_FEEDBACK_QUEUED,
        FeedbackOutcome::Ignored(_) => ATTUNE_FEEDBACK_IGNORED,
        FeedbackOutcome::Updated(r) => match r.outcome {
            UpdateOutcome::Accepted => ATTUNE_FEEDBACK_UPDATED,
            UpdateOutcome::RolledBack(_) => ATTUNE_FEEDBACK_ROLLED_BACK,
            UpdateOutcome::Skipped(_) => ATTUNE_FEEDBACK_SKIPPED,
        },
    }
}

/// The update's step was applied and passed every safeguard.
pub const ATTUNE_UPDATE_ACCEPTED: u32 = 0;
/// The step was applied, failed a safeguard (KL budget, drift) and was undone.
pub const ATTUNE_UPDATE_ROLLED_BACK: u32 = 1;
/// No step was applied (rate limit, no signal, ...).
pub const ATTUNE_UPDATE_SKIPPED: u32 = 2;

/// What one update did. Owned by the caller, freed with `attune_update_report_free`; immutable, so
/// it may be read from any thread.
pub struct attune_update_report {
    outcome: u32,
    /// The report as JSON, NUL-terminated.
    json: Vec<u8>,
}

impl attune_update_report {
    fn new(r: &UpdateReport) -> attune_update_report {
        let outcome = match r.outcome {
            UpdateOutcome::Accepted => ATTUNE_UPDATE_ACCEPTED,
            UpdateOutcome::RolledBack(_) => ATTUNE_UPDATE_ROLLED_BACK,
            UpdateOutcome::Skipped(_) => ATTUNE_UPDATE_SKIPPED,
        };
        let mut json = serde_json::to_string(r).unwrap_or_default().into_bytes();
        json.push(0);
        attune_update_report { outcome, json }
    }

    fn boxed(r: &UpdateReport) -> *mut attune_update_report {
        Box::into_raw(Box::new(attune_update_report::new(r)))
    }
}

/// The shared body of the feedback exports.
///
/// # Safety
/// `session` is NULL or live; `out_outcome` is NULL or writable.
unsafe fn feedback(session: *mut attune_session, episode_id: u64, reward: impl FnOnce() -> Outcome<Reward>, out_outcome: *mut u32) -> attune_status {
    boundary::status(|| {
        let s = find(session)?;
        let mut st = s.lock()?;
        // SAFETY: the caller's promise above.
        let out = unsafe { Out::optional(out_outcome) };
        let reward = reward()?;
        let outcome = feedback_code(&st.session.feedback(episode_id, &reward)?);
        if let Some(out) = out {
            out.write(outcome);
        }
        Ok(())
    })
}

/// Gives episode `episode_id` an outcome reward in [-1, 1] (call resolved = 1, caller hung up
/// angry = -1, ...). `*out_outcome` (may be NULL) receives `ATTUNE_FEEDBACK_*`. With
/// `"update_mode": "background"` it returns at once with `ATTUNE_FEEDBACK_QUEUED`: the update it
/// makes due runs on the runtime's learning thread, the session generates with the adapter it had
/// until the update lands (between two calls), and `attune_session_flush` waits for it and
/// returns its errors.
/// Several signals may be given for one reply (an immediate thumbs, a later call outcome and
/// survey): a signal that arrives before the reply's pending reward was learned is added to it;
/// one that arrives after the reply was learned from is learned on its own, through the importance
/// ratio to the adapter that sampled the reply. Episodes stay for later signals until
/// `learner.episode_ttl_s` (48 h by default) or until `learner.episode_capacity` newer ones exist,
/// also across `attune_session_rollback`, `_reset`, `_import` and a restart (they are saved in the
/// store with the user's state).
/// Statuses: `INVALID_REWARD` (NaN, inf or outside [-1, 1]; nothing recorded), `UNKNOWN_EPISODE`
/// (never issued, expired, evicted, or issued before the user was forgotten; the message says
/// which), `INVALID_ARGUMENT` (the episode is a demonstration), and the update's errors when this
/// feedback triggers one.
///
/// # Safety
/// `session` is NULL or a live session; `out_outcome` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_session_feedback(session: *mut attune_session, episode_id: u64, reward: f64, out_outcome: *mut u32) -> attune_status {
    // SAFETY: forwarded from the caller.
    unsafe { feedback(session, episode_id, || Ok(Reward::scalar(reward as f32)), out_outcome) }
}

/// Gives a thumbs up (`up` true, +1) or down (-1). Otherwise as `attune_session_feedback`.
///
/// # Safety
/// As for `attune_session_feedback`.
#[no_mangle]
pub unsafe extern "C" fn attune_session_feedback_thumbs(session: *mut attune_session, episode_id: u64, up: bool, out_outcome: *mut u32) -> attune_status {
    // SAFETY: forwarded from the caller.
    unsafe { feedback(session, episode_id, || Ok(Reward::thumbs(up)), out_outcome) }
}

/// Gives a star rating 1 ..= 5 (mapped onto [-1, 1]); others are `INVALID_REWARD`. Otherwise as
/// `attune_session_feedback`.
///
/// # Safety
/// As for `attune_session_feedback`.
#[no_mangle]
pub unsafe extern "C" fn attune_session_feedback_stars(session: *mut attune_session, episode_id: u64, stars: u32, out_outcome: *mut u32) -> attune_status {
    // SAFETY: forwarded from the caller.
    unsafe { feedback(session, episode_id, || Ok(Reward { parts: vec![(1.0, attune_host::json::stars(u64::from(stars))?)] }), out_outcome) }
}

/// Gives a model or classifier score on any scale (a satisfaction score, a sentiment value);
/// each `source` keeps its own running statistics that z-score it. `value` must be in
/// [-1e6, 1e6], else `INVALID_REWARD`.
/// Otherwise as `attune_session_feedback`.
///
/// # Safety
/// As for `attune_session_feedback`; `source` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn attune_session_feedback_score(
    session: *mut attune_session,
    episode_id: u64,
    source: *const c_char,
    value: f64,
    out_outcome: *mut u32,
) -> attune_status {
    // SAFETY: forwarded from the caller.
    unsafe { feedback(session, episode_id, || Ok(Reward::score(utf8(source, "source")?, value as f32)), out_outcome) }
}

/// Gives named signals as JSON: one object or an array of them, each with exactly one signal and
/// an optional `"weight"` (default 1, in [-100, 100]); the weighted signals are summed. Signals: `{"thumbs":
/// true}`, `{"stars": 4}`, `{"outcome": -0.5}` (in [-1, 1]), `{"rule": 0.2}` (in [-1, 1]),
/// `{"score": {"source": "csat", "value": 72}}`, and the sources the library computes from the
/// reply: `{"coherence": {}}` (optionally the formula's weights `"nll"`, `"repetition"`,
/// `"cutoff"`, `"ngram"`), `{"sentiment": "reply"}` or `{"sentiment": {"text": "the caller's next
/// message"}}` (VADER), `{"task": [{"use_word": "refund"}, {"numeric": {"value": 42}}, ...]}`
/// (host-defined checks, see docs/learning.md) and `{"callback": true}` (the session's reward
/// callback, `attune_session_set_reward_callback`). Computed sources are z-scored per name. The
/// runtime's `rewards` configuration adds its sources to a reply's first feedback; `[]` asks for
/// those alone. Example: `[{"outcome": 1, "weight": 0.7}, {"stars": 5, "weight": 0.3}]`. Statuses
/// as `attune_session_feedback`, plus `INVALID_JSON` (unknown keys are named), `INVALID_REWARD`
/// (a weight outside [-100, 100], a score outside [-1e6, 1e6], a computed value or the
/// callback's result that is not finite or out of range; nothing is learned),
/// `INVALID_ARGUMENT` (a callback reward without a callback) and `CONFIG` (VADER's lexicon is
/// missing: run `make setup`).
///
/// # Safety
/// As for `attune_session_feedback`; `reward_json` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn attune_session_feedback_json(
    session: *mut attune_session,
    episode_id: u64,
    reward_json: *const c_char,
    out_outcome: *mut u32,
) -> attune_status {
    // SAFETY: forwarded from the caller.
    unsafe { feedback(session, episode_id, || attune_host::json::reward(utf8(reward_json, "reward_json")?), out_outcome) }
}

/// The host's reward for a reply: `user_data` as given to `attune_session_set_reward_callback`,
/// and the reply's text (`len` bytes of UTF-8 followed by a NUL, borrowed until the callback
/// returns). Returns the reward on any scale within [-1e6, 1e6] (it is z-scored as the score
/// "callback"); NaN, an infinity or a value outside that range makes the feedback call fail with
/// `ATTUNE_STATUS_INVALID_REWARD`, and nothing is learned from it.
pub type attune_reward_callback = Option<unsafe extern "C" fn(user_data: *mut c_void, text: *const c_char, len: usize) -> f64>;

/// The callback and its `user_data`, moved into the session's reward function.
struct HostReward {
    callback: unsafe extern "C" fn(*mut c_void, *const c_char, usize) -> f64,
    user_data: *mut c_void,
}

// SAFETY: the callback is called only while the session's lock is held, on the thread of the
// feedback call that the host made; `attune_session_set_reward_callback` documents that
// `user_data` is used there, which is the host's promise.
unsafe impl Send for HostReward {}

impl HostReward {
    fn call(&self, text: &str) -> f64 {
        // Decoded text has no NUL in practice; one would end the C string early, so it is dropped.
        let c = CString::new(text.replace('\0', "")).unwrap_or_default();
        // SAFETY: the host's callback with its own `user_data` and a NUL-terminated string that
        // lives until the call returns.
        unsafe { (self.callback)(self.user_data, c.as_ptr(), c.as_bytes().len()) }
    }
}

/// Sets the session's reward callback, used by `{"callback": true}` rewards and by the runtime's
/// `rewards.callback` configuration; NULL removes it. The callback runs on the thread that calls a
/// feedback function, before that call returns; inside it, calls on the same session return
/// `ATTUNE_STATUS_BUSY`. It must not unwind (no C++ exception, no `longjmp`). `user_data` is passed
/// through unchanged and must stay valid until the callback is replaced or the session is freed.
///
/// # Safety
/// `session` is NULL or a live session; `callback` is NULL or a function of this signature that is
/// safe to call with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn attune_session_set_reward_callback(session: *mut attune_session, callback: attune_reward_callback, user_data: *mut c_void) -> attune_status {
    boundary::status(|| {
        let s = find(session)?;
        let mut st = s.lock()?;
        let f = callback.map(|callback| {
            let host = HostReward { callback, user_data };
            Box::new(move |text: &str| host.call(text)) as attune::runtime::RewardFn
        });
        st.session.set_reward_fn(f);
        Ok(())
    })
}

/// "The user wanted this instead of episode `episode_id`'s reply": `corrected_reply` (UTF-8,
/// NUL-terminated, not blank) and the reply it replaces are teacher-forced through the model after
/// that reply's prompt and learned as a pair: a DPO-style loss with the base model as the
/// reference, plus likelihood on the tokens the user changed (`learner.pair_*`). The correction is
/// learned at the next update, which it may trigger like feedback, and kept (at most
/// `learner.pair_capacity`, saved with the pending episodes) for later updates to replay
/// (`learner.pair_replay`, off by default).
/// Works for any sampled reply the session still holds: before or after its reward was learned,
/// and after a restart; the reply keeps taking its own feedback. `*out_outcome` (may be NULL)
/// receives `ATTUNE_FEEDBACK_*` as for `attune_session_feedback` (in background mode it waits for
/// a running update to land and returns `ATTUNE_FEEDBACK_QUEUED`).
/// Statuses: `UNKNOWN_EPISODE` (never issued, expired, evicted, forgotten; the message says
/// which), `INVALID_ARGUMENT` (NULL, invalid UTF-8 or blank `corrected_reply`, one equal to the
/// reply, or an episode that is a demonstration or correction), `CONTEXT_OVERFLOW` (the prompt and
/// the correction do not fit the context), `IO` (its episode id could not be durably reserved),
/// and the update's errors when it triggers one.
///
/// # Safety
/// `session` is NULL or a live session; `corrected_reply` is NULL or NUL-terminated;
/// `out_outcome` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_session_correct(session: *mut attune_session, episode_id: u64, corrected_reply: *const c_char, out_outcome: *mut u32) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let (corrected, out) = unsafe { (utf8(corrected_reply, "corrected_reply")?, Out::optional(out_outcome)) };
        let s = find(session)?;
        let mut st = s.lock()?;
        let (_, outcome) = st.session.correct(episode_id, corrected)?;
        if let Some(out) = out {
            out.write(feedback_code(&outcome));
        }
        Ok(())
    })
}

/// Teaches the reply the user wanted for a prompt when there is no reply of the model's to
/// replace (to correct a reply, use `attune_session_correct`): `reply` is teacher-forced
/// through the model and learned as a demonstration at the next update. `prompt_kind` and
/// `prompt` as for `attune_session_generate`. Writes the demonstration's episode id to
/// `*out_episode_id` (may be NULL); it takes no feedback. `IO` when its episode id could not be
/// durably reserved (as for `attune_session_generate`).
///
/// # Safety
/// `session` is NULL or a live session; `prompt` and `reply` are NULL or NUL-terminated;
/// `out_episode_id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_session_demonstrate(
    session: *mut attune_session,
    prompt_kind: u32,
    prompt: *const c_char,
    reply: *const c_char,
    out_episode_id: *mut u64,
) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let (prompt, reply, out) = unsafe { (utf8(prompt, "prompt")?, utf8(reply, "reply")?, Out::optional(out_episode_id)) };
        let prompt = parse_prompt(prompt_kind, prompt)?;
        let s = find(session)?;
        let mut st = s.lock()?;
        let id = st.session.demonstrate(&prompt, reply)?;
        if let Some(out) = out {
            out.write(id);
        }
        Ok(())
    })
}

/// Runs an update now on the episodes that have feedback (and demonstrations). Writes the report
/// to `*out_report` (owned: free with `attune_update_report_free`). With no reward or
/// demonstration waiting it returns `ATTUNE_STATUS_LEARNING` and writes nothing; an update that
/// ran but applied no step (rate limited, no signal, ratios too large) is `ATTUNE_STATUS_OK` with
/// outcome `ATTUNE_UPDATE_SKIPPED`.
///
/// # Safety
/// `session` is NULL or a live session; `out_report` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_session_update(session: *mut attune_session, out_report: *mut *mut attune_update_report) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let out = unsafe { Out::new(out_report, "out_report")? };
        let s = find(session)?;
        let mut st = s.lock()?;
        let report = st.session.update()?;
        out.write(attune_update_report::boxed(&report));
        Ok(())
    })
}

/// Writes a copy of the report of the most recent update in this session (run by
/// `attune_session_update`, by feedback, `ATTUNE_FEEDBACK_UPDATED`, or on the learning thread in
/// `"update_mode": "background"`, see `attune_session_flush`) to `*out_report` (owned:
/// free with `attune_update_report_free`). `ATTUNE_STATUS_NOT_FOUND` when none ran since the
/// session was opened, rolled back, reset, forgotten or imported into (the report
/// described an adapter that is no longer the live one).
///
/// # Safety
/// `session` is NULL or a live session; `out_report` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_session_last_report(session: *mut attune_session, out_report: *mut *mut attune_update_report) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let out = unsafe { Out::new(out_report, "out_report")? };
        let s = find(session)?;
        let st = s.lock()?;
        let report = st.session.last_report().ok_or_else(|| Fail::new(ATTUNE_STATUS_NOT_FOUND, "no update has run in this session yet"))?;
        out.write(attune_update_report::boxed(report));
        Ok(())
    })
}

/// Waits until no update of this session is queued or running on the runtime's learning thread
/// (`"update_mode": "background"`; also the updates that the feedback given meanwhile makes due),
/// so that `attune_session_last_report` has the newest report. Returns the first error since the
/// last flush of a background update (`LEARNING`, ...) or of feedback given while an update ran
/// (`UNKNOWN_EPISODE`, `INVALID_REWARD`, ...: that feedback was not learned); the other feedback
/// and updates are not affected. In `"sync"` mode it returns `ATTUNE_STATUS_OK` at once.
///
/// # Safety
/// `session` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn attune_session_flush(session: *mut attune_session) -> attune_status {
    boundary::status(|| {
        let s = find(session)?;
        let mut st = s.lock()?;
        st.session.flush()?;
        Ok(())
    })
}

/// Writes the update's outcome (`ATTUNE_UPDATE_*`) to `*out_outcome`.
///
/// # Safety
/// `report` is NULL or live; `out_outcome` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_update_report_outcome(report: *const attune_update_report, out_outcome: *mut u32) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let (r, out) = unsafe { (handle(report, "report")?, Out::new(out_outcome, "out_outcome")?) };
        out.write(r.outcome);
        Ok(())
    })
}

/// Writes the report as JSON to `*out_json` (NUL-terminated; borrowed: valid until
/// `attune_update_report_free`): `{"algorithm", "outcome" ("accepted", {"rolled_back": reason},
/// {"skipped": reason}), "episodes", "tokens", "loss": {...}, "mean_kl", "probe": {...} or null,
/// "grad_norm", "beta", "lr", "elapsed_s", "rewards": [{"episode_id", "source", "raw", "value",
/// "weight", "contribution"}, ...], ...}`; `rewards` lists each reward source of the feedback the
/// update learned from (`value` is a score's z-score, `contribution = weight * value`).
///
/// # Safety
/// `report` is NULL or live; `out_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_update_report_json(report: *const attune_update_report, out_json: *mut *const c_char) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let (r, out) = unsafe { (handle(report, "report")?, Out::new(out_json, "out_json")?) };
        out.write(r.json.as_ptr().cast());
        Ok(())
    })
}

/// Frees a report. `attune_update_report_free(NULL)` does nothing.
///
/// # Safety
/// `report` is NULL or from `attune_session_update` / `attune_session_last_report`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn attune_update_report_free(report: *mut attune_update_report) {
    boundary::infallible((), || {
        if !report.is_null() {
            // SAFETY: from `Box::into_raw` in `boxed`, freed once.
            drop(unsafe { Box::from_raw(report) });
        }
    })
}
