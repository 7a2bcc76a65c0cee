//! One user's session: generation with the user's adapter, feedback, updates and persistence.

use std::sync::Arc;

use serde::Serialize;

use super::persist::{from_record, now_unix, to_record};
use super::Runtime;
use crate::error::{Error, Result};
use crate::generate::{FinishReason, GenerateOptions, Prompt, RecordedSampling, Timings};
use crate::learn::{FeedbackOutcome, Learner, Reward, UpdateReport};
use crate::store::RollbackTarget;

/// A generated reply and the episode it was recorded as.
#[derive(Debug, Clone, Serialize)]
pub struct Reply {
    /// The reply text.
    pub text: String,
    /// The episode id to give feedback for.
    pub episode_id: u64,
    /// Why generation ended.
    pub finish: FinishReason,
    /// Number of generated tokens.
    pub tokens: usize,
    /// Timings.
    pub timings: Timings,
}

/// One user's adapter and learner, bound to a runtime.
pub struct UserSession {
    runtime: Arc<Runtime>,
    user: String,
    learner: Learner,
    created_unix: u64,
    loaded_version: Option<u64>,
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
        let mut s = UserSession { runtime, user: user.to_string(), learner: Self::fresh_learner_cfg()?, created_unix: now_unix(), loaded_version: None };
        s.learner = s.fresh_learner()?;
        if let Some(store) = s.runtime.store() {
            if let Some(rec) = store.load(user)? {
                s.install(&rec)?;
            }
        }
        Ok(s)
    }

    fn fresh_learner_cfg() -> Result<Learner> {
        // A placeholder replaced at once by `fresh_learner`; a 1 x 1 adapter costs nothing.
        Learner::new(crate::learn::LearnerConfig::default(), 1, 1)
    }

    fn fresh_learner(&self) -> Result<Learner> {
        let info = self.runtime.model().engine().info();
        let mut l = Learner::new(self.runtime.config().learner.clone(), info.hidden_size, info.vocab_size)?.with_math(self.math());
        let tau = self.runtime.config().learner.greedy_tau;
        l.set_probes(self.runtime.probes()?.to_vec(), tau)?;
        Ok(l)
    }

    fn install(&mut self, rec: &crate::store::AdapterRecord) -> Result<()> {
        let state = from_record(rec, self.runtime.config().learner.clone())?;
        let mut l = Learner::from_state(state)?.with_math(self.math());
        l.set_probes(self.runtime.probes()?.to_vec(), self.runtime.config().learner.greedy_tau)?;
        self.learner = l;
        self.created_unix = rec.created_unix;
        Ok(())
    }

    /// The adapter math the configuration asks for (the choice and its reason are logged).
    fn math(&self) -> Box<dyn crate::adapter::AdapterMath + Send> {
        crate::adapter::gpu::math_for(&self.runtime.config().compute).0
    }

    /// The user id.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The learner (adapter, counters, statistics).
    pub fn learner(&self) -> &Learner {
        &self.learner
    }

    /// Mutable access to the learner, for hosts that drive it directly.
    pub fn learner_mut(&mut self) -> &mut Learner {
        &mut self.learner
    }

    /// Generates a reply with this user's adapter and records it as an episode.
    pub fn generate(&mut self, prompt: &Prompt, opts: &GenerateOptions, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Reply> {
        let opts = GenerateOptions { record: true, ..opts.clone() };
        let model = self.runtime.model();
        let g = {
            let mut hook = self.learner.adapter();
            model.generate(prompt, &opts, Some(&mut hook), on_text)?
        };
        let n = g.tokens.len();
        let id = self.learner.record_episode(g.prompt_tokens, g.records, g.sampling)?;
        Ok(Reply { text: g.text, episode_id: id, finish: g.finish, tokens: n, timings: g.timings })
    }

    /// Generates without recording an episode (for evaluation); the adapter still applies.
    pub fn generate_unrecorded(&mut self, prompt: &Prompt, opts: &GenerateOptions, on_text: &mut dyn FnMut(&str) -> bool) -> Result<crate::generate::Generation> {
        let opts = GenerateOptions { record: false, ..opts.clone() };
        let mut hook = self.learner.adapter();
        self.runtime.model().generate(prompt, &opts, Some(&mut hook), on_text)
    }

    /// Teaches the reply the user wanted for `prompt` (a correction): teacher-forced through the
    /// model and learned as a demonstration at the next update. Returns its episode id.
    pub fn demonstrate(&mut self, prompt: &Prompt, reply: &str) -> Result<u64> {
        let model = self.runtime.model();
        let prompt_tokens = model.prompt_tokens(prompt)?;
        let records = model.teacher_force(&prompt_tokens, reply)?;
        self.learner.record_demonstration(prompt_tokens, records, RecordedSampling { temperature: 1.0 })
    }

    /// Gives the reward for an episode; an update may run (see the learner's `auto_update_after`).
    pub fn feedback(&mut self, episode_id: u64, reward: &Reward) -> Result<FeedbackOutcome> {
        self.learner.give_feedback(episode_id, reward)
    }

    /// Runs an update now on the episodes that have feedback.
    pub fn update(&mut self) -> Result<UpdateReport> {
        self.learner.update()
    }

    /// Saves the adapter as a new version; returns the version number. Without a store this is an
    /// error.
    pub fn save(&mut self) -> Result<u64> {
        let store = self.store()?;
        let rec = to_record(&self.learner.snapshot(), self.created_unix)?;
        let v = store.save(&self.user, rec)?;
        self.loaded_version = Some(v);
        Ok(v)
    }

    /// Rolls back to the version `steps_back` versions before the newest, and loads it.
    pub fn rollback(&mut self, steps_back: usize) -> Result<()> {
        let store = self.store()?;
        match store.rollback(&self.user, RollbackTarget::StepsBack(steps_back))? {
            Some(rec) => self.install(&rec),
            None => {
                self.learner = self.fresh_learner()?;
                Ok(())
            }
        }
    }

    /// Starts this user over with a fresh adapter (saved versions stay recoverable by rollback).
    pub fn reset(&mut self) -> Result<()> {
        if let Some(store) = self.runtime.store() {
            store.reset(&self.user)?;
        }
        self.learner = self.fresh_learner()?;
        self.created_unix = now_unix();
        Ok(())
    }

    /// The newest saved adapter as bytes (backup, moving to a new phone); saves first.
    pub fn export(&mut self) -> Result<Vec<u8>> {
        self.save()?;
        self.store()?.export(&self.user)
    }

    /// Replaces this user's adapter with exported bytes (validated before anything is written).
    pub fn import(&mut self, bytes: &[u8]) -> Result<()> {
        let store = self.store()?;
        store.import(&self.user, bytes)?;
        match store.load(&self.user)? {
            Some(rec) => self.install(&rec),
            None => Err(Error::Store("imported adapter could not be loaded back".into())),
        }
    }

    /// Deletes every saved version of this user's adapter and starts over (forget-me).
    pub fn forget(&mut self) -> Result<()> {
        if let Some(store) = self.runtime.store() {
            store.forget(&self.user)?;
        }
        self.learner = self.fresh_learner()?;
        self.created_unix = now_unix();
        Ok(())
    }

    fn store(&self) -> Result<&crate::store::AdapterStore> {
        self.runtime.store().ok_or_else(|| Error::Store("no adapter store configured (store.dir)".into()))
    }
}
