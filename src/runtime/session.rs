//! One user's session: generation with the user's adapter, feedback, updates and persistence.
//!
//! Episode ids are unique for the life of the user. The session keeps a durable reservation of
//! ids in the store (`pending.attune`, raised [`ID_BLOCK`] ids at a time and fsynced) and starts
//! every new session past it, so neither a rollback, a reset, an import, a restart nor a crash can
//! make an id name another reply. Pending episodes are written to the same file after every
//! change, compact, so feedback given after the app was killed and restarted still trains.
//!
//! Disk failures (a full disk, a read-only store) never stop a session: `save` and the other
//! operations that must reach the disk return the error, while the pending-episode writes that
//! follow generate and feedback are best effort and only logged; the session keeps learning in
//! memory either way. A session whose user was forgotten writes nothing at all (see `claims`).

use std::sync::Arc;

use serde::Serialize;

mod background;

use super::claims::SessionClaim;
use super::rewards::{self, Replies, RewardFn};
use super::persist::{check_shape, episodes_from_pending, from_record, now_unix, pending_from_learner, to_record};
use super::Runtime;
use crate::error::{Error, Result};
use crate::generate::{CancelHandle, FinishReason, GenerateOptions, KvCache, Prompt, RecordedSampling, Timings};
use crate::learn::{Algorithm, EpisodeKind, FeedbackOutcome, Learner, RecordSource, Reward, UpdateReport};
use crate::store::RollbackTarget;

/// How many ids a reservation covers: one fsynced write per this many replies.
pub const ID_BLOCK: u64 = 64;

/// A generated reply and the episode it was recorded as.
#[derive(Debug, Clone, Serialize)]
pub struct Reply {
    /// The reply text.
    pub text: String,
    /// The episode id to give feedback for; [`NO_EPISODE`] when the generation was cancelled
    /// before its first token (nothing was said, so nothing is recorded).
    #[serde(serialize_with = "episode_json")]
    pub episode_id: u64,
    /// Why generation ended.
    pub finish: FinishReason,
    /// Number of generated tokens.
    pub tokens: usize,
    /// Timings.
    pub timings: Timings,
}

/// The episode id of a reply that has none: it was cancelled before its first token. No episode
/// ever has this id, so feedback for it is [`Error::UnknownEpisode`].
pub const NO_EPISODE: u64 = u64::MAX;

/// A reply's episode id as JSON: `null` for [`NO_EPISODE`].
fn episode_json<S: serde::Serializer>(id: &u64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if *id == NO_EPISODE {
        s.serialize_none()
    } else {
        s.serialize_u64(*id)
    }
}

/// One user's adapter and learner, bound to a runtime.
pub struct UserSession {
    runtime: Arc<Runtime>,
    user: String,
    learner: Learner,
    created_unix: u64,
    loaded_version: Option<u64>,
    /// Ids below this are durably reserved in the store.
    reserved_ids: u64,
    /// Episodes restored from the store when the session opened.
    restored_episodes: usize,
    /// This session's claim on its user: one open session per user and runtime, and the
    /// forget-me mark that stops every write.
    claim: SessionClaim,
    /// The conversation's KV cache, kept between chat turns (see [`GenerateOptions::reuse_kv`]).
    kv: KvCache,
    /// What the computed reward sources need of the newest replies.
    replies: Replies,
    /// The host's reward callback, for `callback` rewards.
    reward_fn: Option<RewardFn>,
    /// Stops this session's running generation from another thread.
    cancel: CancelHandle,
    /// The update running on the runtime's learning thread (`update_mode: "background"`).
    in_flight: Option<background::InFlight>,
    /// The first error of a background update or of feedback it held, for the next `flush`.
    deferred_error: Option<Error>,
    /// The most recent update's report.
    last_report: Option<UpdateReport>,
    /// The last background update's stand-in, kept for the next one.
    spare: Option<Learner>,
}

impl std::fmt::Debug for UserSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSession").field("user", &self.user).field("version", &self.loaded_version).finish()
    }
}

impl UserSession {
    pub(super) fn open(runtime: Arc<Runtime>, user: &str) -> Result<UserSession> {
        if user.is_empty() {
            return Err(Error::InvalidArgument("user id must not be empty".into()));
        }
        // Claimed before anything is loaded: a forget that starts after this point marks this
        // session, so what it loads can never be written back.
        let claim = runtime.sessions.claim(user)?;
        let learner = Self::fresh_learner_for(&runtime)?;
        let mut s = UserSession {
            runtime,
            user: user.to_string(),
            learner,
            created_unix: now_unix(),
            loaded_version: None,
            reserved_ids: 0,
            restored_episodes: 0,
            claim,
            replies: Replies::default(),
            reward_fn: None,
            kv: KvCache::default(),
            cancel: CancelHandle::new(),
            in_flight: None,
            deferred_error: None,
            last_report: None,
            spare: None,
        };
        if let Some(store) = s.runtime.store() {
            if let Some(rec) = store.load(user)? {
                s.install(&rec)?;
            }
            s.restore_pending()?;
        }
        Ok(s)
    }

    /// Reads the pending episodes and the id reservation; a damaged file loses its episodes but
    /// never lets an id be issued twice (the counter jumps far past anything it could have held).
    fn restore_pending(&mut self) -> Result<()> {
        let Some(store) = self.runtime.store() else { return Ok(()) };
        match store.load_pending(&self.user)? {
            None => {}
            Some(Ok(rec)) => {
                self.reserved_ids = rec.reserved_ids;
                self.learner.advance_episode_ids(rec.reserved_ids);
                self.learner.advance_version(rec.adapter_version);
                let eps = episodes_from_pending(&rec)?;
                self.restored_episodes = eps.len();
                for ep in eps {
                    self.learner.restore_episode(ep)?;
                }
                self.learner.expire_episodes(now_unix());
            }
            Some(Err(e)) => {
                let jump = self.learner.next_episode_id().saturating_add(1 << 32);
                log::error!("pending episodes of this user are damaged ({e}); they are dropped and episode ids continue at {jump}");
                self.learner.advance_episode_ids(jump);
            }
        }
        Ok(())
    }

    fn fresh_learner_for(runtime: &Arc<Runtime>) -> Result<Learner> {
        let info = runtime.model().engine().info();
        let math = crate::adapter::gpu::math_for(&runtime.config().compute).0;
        let mut l = Learner::new(runtime.config().learner.clone(), info.hidden_size, info.vocab_size)?.with_math(math);
        l.set_probes(runtime.probes()?.to_vec(), runtime.config().learner.greedy_tau)?;
        l.set_record_source(Arc::clone(runtime) as Arc<dyn RecordSource>);
        Ok(l)
    }

    /// A fresh adapter that keeps this session's episodes and id counter.
    fn fresh_learner(&mut self) -> Result<Learner> {
        let mut l = Self::fresh_learner_for(&self.runtime)?;
        l.adopt_episodes(&mut self.learner);
        Ok(l)
    }

    /// Installs a stored adapter, keeping the held episodes and the id counter (which never moves
    /// back).
    fn install(&mut self, rec: &crate::store::AdapterRecord) -> Result<()> {
        let info = self.runtime.model().engine().info();
        check_shape(rec, info.hidden_size, info.vocab_size).map_err(|e| Error::CorruptAdapter { path: "<stored adapter>".into(), reason: e.to_string() })?;
        let state = from_record(rec, self.runtime.config().learner.clone())?;
        let mut l = self.fresh_learner()?;
        l.restore(state)?;
        self.learner = l;
        self.created_unix = rec.created_unix;
        Ok(())
    }

    /// The user id.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The learner (adapter, counters, statistics). While a background update runs this is the
    /// stand-in that generation uses (the adapter before the update, the replies since); call
    /// [`UserSession::flush`] first for the learner itself.
    pub fn learner(&self) -> &Learner {
        &self.learner
    }

    /// Mutable access to the learner, for hosts that drive it directly (waits for a background
    /// update first).
    pub fn learner_mut(&mut self) -> &mut Learner {
        self.settle();
        &mut self.learner
    }

    /// How many episodes were restored from the store when the session opened.
    pub fn restored_episodes(&self) -> usize {
        self.restored_episodes
    }

    /// Whether the user was forgotten while this session was open: it then runs in memory only.
    pub fn is_forgotten(&self) -> bool {
        self.claim.is_forgotten()
    }

    /// Makes sure the next id is durably reserved before it is issued. A failed write is the error
    /// of the call that needed the id (which then issues none): an id issued past the durable
    /// reservation could name another reply after a crash.
    fn reserve_ids(&mut self) -> Result<()> {
        let next = self.learner.next_episode_id();
        if self.runtime.store().is_none() || next < self.reserved_ids {
            return Ok(());
        }
        // The reservation is written with the pending episodes, which are away during an update.
        self.settle();
        let reserved = next + ID_BLOCK;
        self.write_pending(reserved, true)
    }

    /// Writes the pending episodes (best effort: a failure is logged and learning goes on in
    /// memory). A failed durable write leaves the reservation where it was.
    fn persist_pending(&mut self) {
        // During a background update the learner holding the episodes is away; they are written
        // when it lands.
        if self.runtime.store().is_none() || !self.runtime.config().store.persist_pending || self.in_flight.is_some() {
            return;
        }
        if let Err(e) = self.write_pending(self.reserved_ids.max(self.learner.next_episode_id()), false) {
            log::warn!("could not save pending episodes of user {}: {e}", self.user);
        }
    }

    fn write_pending(&mut self, reserved: u64, durable: bool) -> Result<()> {
        let Some(store) = self.runtime.store() else { return Ok(()) };
        // A forgotten user's episodes stay in memory: writing them would bring the user's
        // directory back.
        let Ok(_write) = self.claim.writable() else { return Ok(()) };
        let keep = self.runtime.config().store.persist_pending;
        let rec = pending_from_learner(&self.learner, reserved, keep);
        store.save_pending(&self.user, &rec, durable)?;
        if durable {
            self.reserved_ids = reserved;
        }
        Ok(())
    }

    /// Generates a reply with this user's adapter and records it as an episode. Under the
    /// supervised algorithm the user's last message is also recorded as language-model targets.
    /// The episode id is durably reserved first (a block of [`ID_BLOCK`] at a time); when that
    /// write fails this is the store's error ([`Error::Io`]) and nothing is generated or issued.
    pub fn generate(&mut self, prompt: &Prompt, opts: &GenerateOptions, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Reply> {
        let opts = GenerateOptions { record: true, ..opts.clone() };
        // A finished background update's adapter is swapped in here, between two generations.
        self.land(false);
        self.reserve_ids()?;
        let model = self.runtime.model();
        let g = {
            let mut hook = self.learner.adapter();
            let cancel = Some(&self.cancel);
            if opts.reuse_kv && matches!(prompt, Prompt::Chat(_)) {
                model.generate_cached_with(&mut self.kv, prompt, &opts, Some(&mut hook), cancel, on_text)?
            } else {
                model.generate_with(prompt, &opts, Some(&mut hook), cancel, on_text)?
            }
        };
        let n = g.tokens.len();
        if n == 0 {
            // Cancelled during the prefill: nothing was said.
            return Ok(Reply { text: g.text, episode_id: NO_EPISODE, finish: g.finish, tokens: 0, timings: g.timings });
        }
        let logprobs = rewards::token_logprobs(&g.records);
        let id = self.learner.record_episode(g.prompt_tokens, g.records, g.sampling)?;
        self.replies.insert(id, &g.text, g.finish, logprobs, self.learner.config().episode_capacity);
        if let Err(e) = self.record_user_text(prompt) {
            log::warn!("the user's message was not recorded as a target: {e}");
        }
        self.persist_pending();
        Ok(Reply { text: g.text, episode_id: id, finish: g.finish, tokens: n, timings: g.timings })
    }

    /// The self-supervised part of `supervised`: the user's last chat message, teacher-forced after
    /// its context, as targets of the same adapter.
    fn record_user_text(&mut self, prompt: &Prompt) -> Result<()> {
        let cfg = self.learner.config();
        if cfg.algorithm != Algorithm::Supervised || cfg.user_text_weight <= 0.0 {
            return Ok(());
        }
        let Prompt::Chat(msgs) = prompt else { return Ok(()) };
        let model = self.runtime.model();
        let Some((context, text)) = model.user_text_targets(msgs)? else { return Ok(()) };
        let records = model.teacher_force_ids(&context, &text, 1.0)?;
        self.reserve_ids()?;
        self.learner.record_user_text(context, records)?;
        Ok(())
    }

    /// Tokens the conversation's KV cache holds, and the bytes its buffers take (0 before the first
    /// chat turn).
    pub fn kv_cache_usage(&self) -> (usize, usize) {
        let bytes = if self.kv.is_allocated() { self.runtime.model().engine().kv_bytes_per_sequence() } else { 0 };
        (self.kv.len(), bytes)
    }

    /// Forgets the conversation's KV cache (the next chat turn prefills its whole prompt) and frees
    /// its buffers.
    pub fn clear_kv_cache(&mut self) {
        self.kv.release();
    }

    /// Generates without recording an episode (for evaluation); the adapter still applies.
    pub fn generate_unrecorded(&mut self, prompt: &Prompt, opts: &GenerateOptions, on_text: &mut dyn FnMut(&str) -> bool) -> Result<crate::generate::Generation> {
        let opts = GenerateOptions { record: false, ..opts.clone() };
        let mut hook = self.learner.adapter();
        self.runtime.model().generate_with(prompt, &opts, Some(&mut hook), Some(&self.cancel), on_text)
    }

    /// A handle that stops this session's running generation from any thread ([`UserSession::cancel`]
    /// without borrowing the session): the generation returns [`FinishReason::Cancelled`] within
    /// one prefill chunk (`generation.prefill_chunk` tokens) or one decode step, and its episode
    /// holds the tokens drawn before the cancel. A cancel while no generation runs does nothing.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// Stops the running generation (see [`UserSession::cancel_handle`]); whether one was running.
    pub fn cancel(&self) -> bool {
        self.cancel.cancel()
    }

    /// Teaches the reply the user wanted for `prompt` (a correction): teacher-forced through the
    /// model and learned as a demonstration at the next update. Returns its episode id.
    pub fn demonstrate(&mut self, prompt: &Prompt, reply: &str) -> Result<u64> {
        let model = self.runtime.model();
        let prompt_tokens = model.prompt_tokens(prompt)?;
        let records = model.teacher_force(&prompt_tokens, reply)?;
        self.reserve_ids()?;
        let id = self.learner.record_demonstration(prompt_tokens, records, RecordedSampling::at(1.0))?;
        self.persist_pending();
        Ok(id)
    }

    /// Corrects episode `episode_id`'s reply: the user wanted `corrected` instead. Both replies are
    /// teacher-forced through the model after the reply's prompt and learned as a pair (see
    /// [`Learner::give_correction`]): at the next update, which this may trigger like feedback,
    /// and kept (replayed by later updates with `pair_replay`). Works for any sampled reply the session still holds, before or after
    /// its reward was learned and after a restart. Returns the correction's episode id and what
    /// happened; in background mode it waits for a running update to land and returns
    /// [`FeedbackOutcome::Queued`], the update it makes due running on the learning thread.
    ///
    /// Errors: [`Error::UnknownEpisode`] for an id not held (the message says why);
    /// [`Error::InvalidArgument`] for an empty correction, one equal to the reply, or an episode that
    /// is a demonstration or correction; [`Error::ContextOverflow`] when the prompt and the
    /// correction do not fit the context.
    pub fn correct(&mut self, episode_id: u64, corrected: &str) -> Result<(u64, FeedbackOutcome)> {
        self.settle();
        let ep = self.learner.episode(episode_id)?;
        if ep.kind != EpisodeKind::Sampled {
            return Err(Error::InvalidArgument(format!("episode {episode_id} is a demonstration or correction; only a sampled reply can be corrected")));
        }
        let (prompt, reply) = (ep.prompt.clone(), ep.reply.clone());
        let model = self.runtime.model();
        // The reply as the user saw it (special tokens such as the end of turn left out).
        if model.tokenizer().decode(&reply, true)?.trim() == corrected.trim() {
            return Err(Error::InvalidArgument(format!("the corrected reply is the same as episode {episode_id}'s reply")));
        }
        let chosen = model.teacher_force(&prompt, corrected)?;
        let rejected = model.teacher_force_ids(&prompt, &reply, 1.0)?;
        self.reserve_ids()?;
        let out = if self.background() {
            let after = std::mem::replace(&mut self.learner.config.auto_update_after, 0);
            let r = self.learner.give_correction(episode_id, chosen, rejected);
            self.learner.config.auto_update_after = after;
            let (id, _) = r?;
            self.persist_pending();
            if self.update_due() {
                self.launch()?;
            }
            return Ok((id, FeedbackOutcome::Queued));
        } else {
            self.learner.give_correction(episode_id, chosen, rejected)
        };
        self.persist_pending();
        if let Ok((_, FeedbackOutcome::Updated(rep))) = &out {
            self.last_report = Some(rep.clone());
        }
        out
    }

    /// Sets (or, with `None`, removes) the host's reward callback: `callback` rewards call it with
    /// the reply text, on this thread, before the feedback call returns. A result that is not
    /// finite makes that feedback [`Error::InvalidReward`], and nothing is learned from it.
    pub fn set_reward_fn(&mut self, f: Option<RewardFn>) {
        self.reward_fn = f;
    }

    /// Gives the reward for an episode; an update may run (see the learner's `auto_update_after`).
    /// Several signals for one reply are all learned (see [`Learner::give_feedback`]). Computed
    /// sources (coherence, sentiment, task checks, the callback) are computed here, and the
    /// runtime's configured ones (`rewards`) are added to a reply's first feedback; each enters as
    /// a score of its own name. A computed value that is not finite is [`Error::InvalidReward`]
    /// and nothing is recorded.
    ///
    /// With `update_mode: "background"` it returns at once ([`FeedbackOutcome::Queued`]): a due
    /// update runs on the runtime's learning thread, its report is [`UserSession::last_report`]
    /// after [`UserSession::flush`], and the errors of feedback given while an update ran (for
    /// an episode recorded before it) come from `flush`.
    pub fn feedback(&mut self, episode_id: u64, reward: &Reward) -> Result<FeedbackOutcome> {
        if self.background() {
            return self.feedback_background(episode_id, reward);
        }
        let reward = self.resolve(episode_id, reward)?;
        let out = self.learner.give_feedback(episode_id, &reward);
        self.persist_pending();
        if let Ok(FeedbackOutcome::Updated(rep)) = &out {
            self.last_report = Some(rep.clone());
        }
        out
    }

    /// The reward with its computed sources (and, at a reply's first feedback, the runtime's).
    fn resolve(&mut self, episode_id: u64, reward: &Reward) -> Result<Reward> {
        let ep = self.learner.episode(episode_id)?;
        let first = ep.kind == EpisodeKind::Sampled && ep.reward.is_none() && ep.learned == 0;
        rewards::resolve(&self.runtime, &mut self.replies, &mut self.reward_fn, ep, first, reward)
    }

    /// Runs an update now on the episodes that have feedback, on this thread (after any
    /// background update has landed).
    pub fn update(&mut self) -> Result<UpdateReport> {
        self.settle();
        let out = self.learner.update();
        self.persist_pending();
        if let Ok(rep) = &out {
            self.last_report = Some(rep.clone());
        }
        out
    }

    /// Saves the adapter as a new version (and the pending episodes); returns the version number.
    /// Without a store this is an error; after the user was forgotten it is
    /// [`Error::UserForgotten`]. A failed write (full disk, read-only store) leaves the previous
    /// version as it was and the session as it was, so the host may try again later.
    pub fn save(&mut self) -> Result<u64> {
        self.settle();
        let store = self.store()?;
        let rec = to_record(&self.learner.snapshot(), self.created_unix)?;
        let v = {
            let _write = self.claim.writable()?;
            store.save(&self.user, rec)?
        };
        self.loaded_version = Some(v);
        let reserved = self.reserved_ids.max(self.learner.next_episode_id());
        if let Err(e) = self.write_pending(reserved, true) {
            log::warn!("could not save pending episodes of user {}: {e}", self.user);
        }
        Ok(v)
    }

    /// Rolls back to the version `steps_back` versions before the newest, and loads it. Held
    /// episodes and the id counter stay: feedback for a reply sampled before the rollback is
    /// learned through the importance ratio against the adapter that sampled it.
    pub fn rollback(&mut self, steps_back: usize) -> Result<()> {
        self.settle();
        let store = self.store()?;
        let target = {
            let _write = self.claim.writable()?;
            store.rollback(&self.user, RollbackTarget::StepsBack(steps_back))?
        };
        match target {
            Some(rec) => self.install(&rec)?,
            None => self.learner = self.fresh_learner()?,
        }
        // The last report described the adapter this one replaced.
        self.last_report = None;
        self.persist_pending();
        Ok(())
    }

    /// Starts this user over with a fresh adapter (saved versions stay recoverable by rollback).
    /// Held episodes and the id counter stay.
    pub fn reset(&mut self) -> Result<()> {
        self.settle();
        self.last_report = None;
        if let Some(store) = self.runtime.store() {
            let _write = self.claim.writable()?;
            store.reset(&self.user)?;
        }
        self.learner = self.fresh_learner()?;
        self.created_unix = now_unix();
        self.persist_pending();
        Ok(())
    }

    /// The session's adapter as bytes (backup, moving to a new phone): the file image a save would
    /// write, sealed under the store's key when it has one. Writes nothing: no new version pushes
    /// the saved ones out of the rollback history, and it works while the disk is full. Needs a
    /// store (its fingerprint and key), and a user that was not forgotten.
    pub fn export(&mut self) -> Result<Vec<u8>> {
        self.settle();
        let store = self.store()?;
        let _write = self.claim.writable()?;
        let rec = to_record(&self.learner.snapshot(), self.created_unix)?;
        store.encode_record(&rec)
    }

    /// Replaces this user's adapter with exported bytes (validated before anything is written).
    /// Held episodes stay; the id counter keeps the higher of the two.
    pub fn import(&mut self, bytes: &[u8]) -> Result<()> {
        self.settle();
        let store = self.store()?;
        {
            let _write = self.claim.writable()?;
            // The learner's own checks run before anything is written, so bytes that decode but
            // describe an unusable adapter never become the newest version.
            let config = self.runtime.config().learner.clone();
            let info = self.runtime.model().engine().info();
            let (hidden, vocab) = (info.hidden_size, info.vocab_size);
            // The dimensions are compared with the model before the learner allocates anything.
            store.import_checked(&self.user, bytes, |rec| {
                check_shape(rec, hidden, vocab)?;
                Learner::from_state(from_record(rec, config)?).map(drop)
            })?;
        }
        match store.load(&self.user)? {
            Some(rec) => self.install(&rec)?,
            None => return Err(Error::Store("imported adapter could not be loaded back".into())),
        }
        self.last_report = None;
        self.persist_pending();
        Ok(())
    }

    /// Deletes every saved version of this user's adapter and their pending episodes, and starts
    /// over in memory (forget-me). Feedback for the old ids is an unknown episode from now on;
    /// this session never reissues them. Final: from now on this session writes nothing to the
    /// store (save, rollback, reset, export and import fail with [`Error::UserForgotten`]); a
    /// session opened after this one is dropped works normally.
    pub fn forget(&mut self) -> Result<()> {
        self.settle();
        self.last_report = None;
        self.deferred_error = None;
        // The stand-in's copy of the adapter is the user's data too.
        self.spare = None;
        let (runtime, user) = (&self.runtime, &self.user);
        self.claim.forget(|| match runtime.store() {
            Some(store) => store.forget(user).map(|_| ()),
            None => Ok(()),
        })?;
        let mut l = self.fresh_learner()?;
        l.forget_episodes();
        self.learner = l;
        // The conversation is the user's data too.
        self.kv.release();
        self.replies.clear();
        self.reserved_ids = 0;
        self.created_unix = now_unix();
        Ok(())
    }

    fn store(&self) -> Result<&crate::store::AdapterStore> {
        self.runtime.store().ok_or_else(|| Error::Store("no adapter store configured (store.dir)".into()))
    }
}
