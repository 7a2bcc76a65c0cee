//! The [`Learner`]: episodes in, feedback in, updates out, state for the store.
//!
//! Its state has owners: [`Policy`] (the adapter, its optimiser and the learning rate),
//! [`RewardStats`] (baseline, score statistics, reward history, critic pairs), [`Guards`] (probes,
//! rate limit, same-sign run), the KL coefficient `beta`, and the [`EpisodeBuffer`] with the user's
//! episode-id counter. An update (`update.rs`) reads as a short sequence of steps over them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::config::{Algorithm, LearnerConfig};
use super::episode::{Episode, EpisodeBuffer, EpisodeKind, RecordSource};
use super::guard::{Probes, RateLimiter, SignRun};
use super::report::{FeedbackOutcome, ProbeStats, SkipReason, UpdateOutcome};
use super::report::RewardPart;
use super::reward::{combine_parts, Reward, RunningStats, ScoreStats};
use super::softq::SoftQState;
use super::state::{Counters, LearnerState, RewardHistory, STATE_VERSION};
use crate::adapter::{AdamParams, AdamState, AdapterMath, BaseScratch, CpuMath, HeadGrad, LoraHead, TokenEval};
use crate::error::{Error, Result};
use crate::generate::{RecordedSampling, TokenRecord};

/// A copy of a learner's state from before an update ([`Learner::checkpoint`]).
pub(crate) struct Checkpoint {
    config: LearnerConfig,
    head: LoraHead,
    adam: AdamState,
    lr: f64,
    stats: RewardStats,
    rate: RateLimiter,
    sign_run: SignRun,
    beta: f64,
    episodes: EpisodeBuffer,
    counters: Counters,
    softq: SoftQState,
}

/// The adapter, its optimiser, the math that runs them and the current learning rate.
pub(crate) struct Policy {
    pub head: LoraHead,
    pub adam: AdamState,
    pub math: Box<dyn AdapterMath + Send>,
    pub grad: HeadGrad,
    pub scratch: BaseScratch,
    pub evals: Vec<TokenEval>,
    pub lr: f64,
}

impl Policy {
    fn new(head: LoraHead, lr: f64) -> Policy {
        let adam = AdamState::new(&head);
        Policy { grad: HeadGrad::new(head.rank(), head.hidden_size()), adam, head, math: Box::new(CpuMath::new()), scratch: BaseScratch::default(), evals: Vec::new(), lr }
    }

    /// Adam's hyper-parameters at the current learning rate.
    pub fn adam_params(&self, c: &LearnerConfig) -> AdamParams {
        AdamParams { lr: self.lr, a_lr: self.lr * c.a_lr_mult, value_lr: self.lr * c.value_lr_mult, beta1: c.adam_beta1, beta2: c.adam_beta2, eps: c.adam_eps }
    }
}

/// What the rewards seen so far say: the baseline and its spread, per-source score statistics, the
/// reward summary, and recent critic predictions with their returns.
#[derive(Debug, Clone, Default)]
pub(crate) struct RewardStats {
    pub baseline: RunningStats,
    /// The running mean of the clipped normalised advantages (`center_advantages`).
    pub advantage_center: RunningStats,
    pub scores: ScoreStats,
    pub history: RewardHistory,
    pub critic: VecDeque<(f32, f32)>,
    /// A2C's least-squares critic statistics (`critic_ridge > 0`); not persisted.
    pub critic_fit: Option<super::critic::CriticFit>,
    /// What each source contributed to the rewards not yet learned from, for the next report.
    pub parts: Vec<RewardPart>,
}

/// The safeguards' own state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Guards {
    pub probes: Option<Probes>,
    pub rate: RateLimiter,
    pub sign_run: SignRun,
}

/// Learns a head adapter from rewards on recorded replies.
///
/// The engine records each reply ([`Learner::record_episode`]), the application passes feedback
/// when it comes ([`Learner::give_feedback`]), and updates run after `auto_update_after` rewards or
/// on [`Learner::update`]. Generation reads [`Learner::adapter`] and calls
/// [`LoraHead::add_delta`] on each position's logits.
pub struct Learner {
    pub(crate) config: LearnerConfig,
    pub(crate) policy: Policy,
    pub(crate) stats: RewardStats,
    pub(crate) guards: Guards,
    pub(crate) beta: f64,
    pub(crate) episodes: EpisodeBuffer,
    pub(crate) counters: Counters,
    pub(crate) source: Option<Arc<dyn RecordSource>>,
    pub(crate) softq: SoftQState,
}

impl std::fmt::Debug for Learner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learner")
            .field("algorithm", &self.config.algorithm)
            .field("rank", &self.policy.head.rank())
            .field("hidden_size", &self.policy.head.hidden_size())
            .field("vocab_size", &self.policy.head.vocab_size())
            .field("pending", &self.episodes.len())
            .field("beta", &self.beta)
            .field("lr", &self.policy.lr)
            .field("counters", &self.counters)
            .finish()
    }
}

impl Learner {
    /// A learner with a fresh (identity) adapter for a model of hidden size `d` and vocabulary `V`.
    pub fn new(config: LearnerConfig, hidden_size: usize, vocab_size: usize) -> Result<Learner> {
        config.validate()?;
        let head = LoraHead::new(&config.adapter, hidden_size, vocab_size)?;
        Ok(Learner {
            episodes: EpisodeBuffer::new(config.episode_capacity, config.resident_episodes, config.episode_ttl_s, config.pair_capacity),
            policy: Policy::new(head, config.lr),
            beta: config.beta,
            config,
            stats: RewardStats::default(),
            guards: Guards::default(),
            counters: Counters::default(),
            source: None,
            softq: SoftQState::default(),
        })
    }

    /// Replaces the math implementation (for instance a GPU one).
    pub fn with_math(mut self, math: Box<dyn AdapterMath + Send>) -> Learner {
        self.policy.math = math;
        self
    }

    /// Lets the learner keep episodes compact and rebuild their records through `source` (the
    /// runtime's model) when they are learned from.
    pub fn set_record_source(&mut self, source: Arc<dyn RecordSource>) {
        self.source = Some(source);
        self.episodes.set_rebuildable(true);
    }

    /// The configuration.
    pub fn config(&self) -> &LearnerConfig {
        &self.config
    }

    /// The adapter generation should use.
    pub fn adapter(&self) -> &LoraHead {
        &self.policy.head
    }

    /// The current KL coefficient.
    pub fn beta(&self) -> f64 {
        self.beta
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.policy.lr
    }

    /// Counters of what happened so far.
    pub fn counters(&self) -> Counters {
        Counters { next_id: self.episodes.next_id(), ..self.counters }
    }

    /// The reward summary.
    pub fn history(&self) -> &RewardHistory {
        &self.stats.history
    }

    /// Episodes held (waiting for feedback, for the next update, or for later signals).
    pub fn pending_episodes(&self) -> usize {
        self.episodes.len()
    }

    /// Bytes held by the episodes.
    pub fn episodes_memory_bytes(&self) -> usize {
        self.episodes.memory_bytes()
    }

    /// A held episode.
    pub fn episode(&self, id: u64) -> Result<&Episode> {
        self.episodes.get(id)
    }

    /// Every held episode, oldest first.
    pub fn episodes(&self) -> impl Iterator<Item = &Episode> {
        self.episodes.iter()
    }

    /// The id the next episode will get.
    pub fn next_episode_id(&self) -> u64 {
        self.episodes.next_id()
    }

    /// Moves the episode-id counter forward to at least `id` (a restored or reserved counter).
    pub fn advance_episode_ids(&mut self, id: u64) {
        self.episodes.advance_ids(id);
    }

    /// Moves the adapter version above `version` (a restored session's high-water mark): episodes
    /// sampled at or below it count as sampled by another adapter.
    pub fn advance_version(&mut self, version: u64) {
        self.counters.version = self.counters.version.max(version.saturating_add(1));
    }

    /// Sets the probe tokens every update is measured on (replies of the base model to held-out
    /// prompts, say), evaluated at `temperature` (0 means the configured greedy temperature).
    /// Without probes, updates are checked against the KL budget on their own tokens only.
    pub fn set_probes(&mut self, records: Vec<TokenRecord>, temperature: f32) -> Result<()> {
        let tau = self.train_tau(temperature)?;
        self.guards.probes = Some(Probes::new(records, tau, &self.policy.head)?);
        Ok(())
    }

    /// Forgets the probes.
    pub fn clear_probes(&mut self) {
        self.guards.probes = None;
    }

    /// The current adapter measured on the probes, if any are set.
    pub fn probe_stats(&mut self) -> Result<Option<ProbeStats>> {
        let p = &mut self.policy;
        match &self.guards.probes {
            None => Ok(None),
            Some(probes) => Ok(Some(probes.measure(p.math.as_mut(), &p.head, &mut p.evals)?)),
        }
    }

    /// Stores a sampled reply until its feedback comes and returns its id.
    pub fn record_episode(&mut self, prompt: Vec<u32>, tokens: Vec<TokenRecord>, sampling: RecordedSampling) -> Result<u64> {
        self.record(prompt, tokens, sampling, EpisodeKind::Sampled, 1.0)
    }

    /// Stores a demonstration (the reply the user wanted, teacher-forced through the model, with
    /// its records) to be learned with `c_t = 1` and `beta = 0` at the next update.
    pub fn record_demonstration(&mut self, prompt: Vec<u32>, tokens: Vec<TokenRecord>, sampling: RecordedSampling) -> Result<u64> {
        self.record(prompt, tokens, sampling, EpisodeKind::Demonstration, 1.0)
    }

    /// Stores a correction of the sampled reply `rejected_id`: "the user wanted this instead".
    /// `chosen` are the teacher-forced records of the corrected reply after that reply's prompt,
    /// `rejected` those of the disliked reply itself (both at temperature 1, no repetition
    /// penalty). It is learned as a pair at the next update (and kept for replay, up to
    /// `pair_capacity` kept) and may complete a batch like feedback. The reply keeps its own
    /// rewards and takes later ones. Returns the correction's episode id and what happened.
    ///
    /// Errors: [`Error::UnknownEpisode`] for an id not held; [`Error::InvalidArgument`] for an
    /// episode that is not a sampled reply, records that do not match the reply, or a corrected
    /// reply equal to it.
    pub fn give_correction(&mut self, rejected_id: u64, chosen: Vec<TokenRecord>, rejected: Vec<TokenRecord>) -> Result<(u64, FeedbackOutcome)> {
        let id = self.record_correction(rejected_id, chosen, rejected)?;
        Ok((id, self.maybe_update(Instant::now())?))
    }

    /// [`Learner::give_correction`] without the update it may trigger.
    pub fn record_correction(&mut self, rejected_id: u64, chosen: Vec<TokenRecord>, rejected: Vec<TokenRecord>) -> Result<u64> {
        let orig = self.episodes.get(rejected_id)?;
        if orig.kind != EpisodeKind::Sampled {
            return Err(Error::InvalidArgument(format!("episode {rejected_id} is not a sampled reply (a demonstration or correction); only a reply can be corrected")));
        }
        if rejected.len() != orig.reply.len() || rejected.iter().zip(&orig.reply).any(|(r, &t)| r.token != t) {
            return Err(Error::InvalidArgument(format!("the records given for episode {rejected_id}'s reply do not match its tokens")));
        }
        if chosen.iter().map(|r| r.token).eq(orig.reply.iter().copied()) {
            return Err(Error::InvalidArgument(format!("the corrected reply is the same as episode {rejected_id}'s reply")));
        }
        let prompt = orig.prompt.clone();
        let sampling = RecordedSampling::at(1.0);
        let disliked = Episode::new(rejected_id, prompt.clone(), rejected, sampling.clone(), self.counters.version, EpisodeKind::Sampled);
        self.record_with(prompt, chosen, sampling, EpisodeKind::Correction, 1.0, Some(disliked))
    }

    /// Stores the user's own text (teacher-forced records of their message after its context) as
    /// language-model targets with `c_t = user_text_weight`, learned at the next update.
    pub fn record_user_text(&mut self, prompt: Vec<u32>, tokens: Vec<TokenRecord>) -> Result<u64> {
        let w = self.config.user_text_weight as f32;
        self.record(prompt, tokens, RecordedSampling::at(1.0), EpisodeKind::UserText, w)
    }

    fn record(&mut self, prompt: Vec<u32>, tokens: Vec<TokenRecord>, sampling: RecordedSampling, kind: EpisodeKind, weight: f32) -> Result<u64> {
        self.record_with(prompt, tokens, sampling, kind, weight, None)
    }

    /// Checks and stores a new episode (with a correction's disliked reply) under the next id.
    fn record_with(&mut self, prompt: Vec<u32>, tokens: Vec<TokenRecord>, sampling: RecordedSampling, kind: EpisodeKind, weight: f32, rejected: Option<Episode>) -> Result<u64> {
        let tau = self.train_tau(sampling.temperature)?;
        let id = self.episodes.next_id();
        let mut ep = Episode::new(id, prompt, tokens, sampling, self.counters.version, kind);
        ep.weight = weight;
        ep.rejected = rejected.map(Box::new);
        ep.prepare(&self.policy.head, tau, &mut self.policy.scratch)?;
        self.episodes.issue_id();
        self.counters.episodes += 1;
        self.episodes.expire(ep.created_unix);
        self.push_episode(ep);
        Ok(id)
    }

    fn push_episode(&mut self, ep: Episode) {
        for old in self.episodes.push(ep) {
            if old.learned == 0 {
                self.counters.evicted += 1;
                log::debug!("episode {} evicted before it was learned from", old.id);
            }
        }
    }

    /// Puts back an episode restored from storage (compact; rebuilt when learned from). Its id
    /// must be below the counter, which the restored counter guarantees.
    pub fn restore_episode(&mut self, ep: Episode) -> Result<()> {
        if ep.id >= self.episodes.next_id() {
            return Err(Error::InvalidArgument(format!("restored episode {} is not below the id counter {}", ep.id, self.episodes.next_id())));
        }
        if self.episodes.get(ep.id).is_ok() {
            return Ok(());
        }
        self.push_episode(ep);
        Ok(())
    }

    /// Drops episodes older than the time to live; returns how many.
    pub fn expire_episodes(&mut self, now_unix: u64) -> usize {
        self.episodes.expire(now_unix)
    }

    pub(crate) fn train_tau(&self, temperature: f32) -> Result<f32> {
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(Error::InvalidArgument(format!("temperature {temperature} is invalid")));
        }
        Ok(if temperature > 0.0 { temperature } else { self.config.greedy_tau })
    }

    /// Gives feedback for episode `id`. Unknown, expired or evicted ids are
    /// [`Error::UnknownEpisode`] with the reason; unusable rewards [`Error::InvalidReward`]
    /// (nothing is recorded then); feedback for a demonstration is [`Error::InvalidArgument`].
    ///
    /// Several signals for one reply are all learned: one that arrives before the reply's pending
    /// reward was learned is added to it; one that arrives after is learned on its own, as a
    /// sample of the adapter that produced the reply (through the importance ratio).
    pub fn give_feedback(&mut self, id: u64, reward: &Reward) -> Result<FeedbackOutcome> {
        self.give_feedback_at(id, reward, Instant::now())
    }

    /// [`Learner::give_feedback`] with an explicit clock (for tests and replays).
    pub fn give_feedback_at(&mut self, id: u64, reward: &Reward, now: Instant) -> Result<FeedbackOutcome> {
        let ep = self.episodes.get(id)?;
        if ep.kind != EpisodeKind::Sampled {
            return Err(Error::InvalidArgument(format!("episode {id} is a demonstration or correction; it takes no feedback")));
        }
        let c = &self.config;
        let (r, parts) = combine_parts(reward, &mut self.stats.scores, c.baseline_rate, c.sigma_floor, c.score_clip)?;
        self.stats.history.push(r);
        self.counters.feedback += 1;
        if self.config.algorithm == Algorithm::Supervised {
            return Ok(self.supervised_feedback(id, r));
        }
        if !self.guards.sign_run.push(r, self.config.max_same_sign_run) {
            self.counters.ignored_feedback += 1;
            log::info!("feedback for episode {id} ignored: {} same-sign rewards in a row", self.guards.sign_run.len);
            return Ok(FeedbackOutcome::Ignored(SkipReason::SameSignRun));
        }
        let ep = self.episodes.get_mut(id)?;
        ep.reward = Some(ep.reward.unwrap_or(0.0) + r);
        self.note_parts(id, parts);
        self.maybe_update(now)
    }

    /// Keeps what each source of episode `id`'s feedback contributed until an update reports it
    /// (bounded: the oldest go first beyond a few per held episode).
    fn note_parts(&mut self, id: u64, parts: Vec<RewardPart>) {
        self.stats.parts.extend(parts.into_iter().map(|p| RewardPart { episode_id: id, ..p }));
        let cap = 16 * self.config.episode_capacity;
        if self.stats.parts.len() > cap {
            let extra = self.stats.parts.len() - cap;
            self.stats.parts.drain(..extra);
        }
    }

    /// Moves the reward parts of the episodes `ids` into `rep`.
    pub(crate) fn report_parts(&mut self, mut rep: super::UpdateReport, ids: &[u64]) -> super::UpdateReport {
        let (mine, rest) = std::mem::take(&mut self.stats.parts).into_iter().partition(|p| ids.contains(&p.episode_id));
        rep.rewards = mine;
        self.stats.parts = rest;
        rep
    }

    /// Under the supervised algorithm a rating teaches only through imitation: a well-rated reply
    /// becomes a demonstration when `imitate_rated` is on; otherwise it is counted and ignored.
    fn supervised_feedback(&mut self, id: u64, r: f64) -> FeedbackOutcome {
        if self.config.imitate_rated && r > 0.0 {
            if let Ok(ep) = self.episodes.get_mut(id) {
                ep.kind = EpisodeKind::Demonstration;
                ep.learned = 0;
                return self.maybe_update(Instant::now()).unwrap_or_else(|e| {
                    log::warn!("update after imitation feedback failed: {e}");
                    FeedbackOutcome::Queued
                });
            }
        }
        self.counters.ignored_feedback += 1;
        FeedbackOutcome::Ignored(SkipReason::Supervised)
    }

    fn maybe_update(&mut self, now: Instant) -> Result<FeedbackOutcome> {
        let due = self.config.auto_update_after > 0 && self.episodes.ready_count() >= self.config.auto_update_after;
        if !due {
            return Ok(FeedbackOutcome::Queued);
        }
        let rep = self.update_at(now)?;
        Ok(match rep.outcome {
            UpdateOutcome::Skipped(SkipReason::RateLimited) => FeedbackOutcome::Queued,
            _ => FeedbackOutcome::Updated(rep),
        })
    }

    /// Adam's hyper-parameters at the current learning rate.
    pub(crate) fn adam_params(&self) -> AdamParams {
        self.policy.adam_params(&self.config)
    }

    /// The learner's state as plain data (episodes and probes are not included; the episode-id
    /// counter is).
    pub fn snapshot(&self) -> LearnerState {
        LearnerState {
            version: STATE_VERSION,
            config: self.config.clone(),
            head: self.policy.head.to_parts(),
            adam: self.policy.adam.to_parts(),
            baseline: self.stats.baseline,
            advantage_center: self.stats.advantage_center,
            scores: self.stats.scores.clone(),
            beta: self.beta,
            lr: self.policy.lr,
            counters: self.counters(),
            history: self.stats.history.clone(),
            critic: self.stats.critic.iter().copied().collect(),
            sign_run: self.guards.sign_run,
        }
    }

    /// Replaces the adapter and its statistics with `state` (same hidden size and vocabulary).
    /// Held episodes and the episode-id counter stay (the counter never moves back); the adapter
    /// version moves forward, so the held episodes count as sampled by another adapter and are
    /// learned through the importance ratio.
    pub fn restore(&mut self, state: LearnerState) -> Result<()> {
        if state.version != STATE_VERSION {
            return Err(Error::InvalidArgument(format!("learner state version {} (this build reads {STATE_VERSION})", state.version)));
        }
        let head = &self.policy.head;
        if state.head.hidden_size as usize != head.hidden_size() || state.head.vocab_size as usize != head.vocab_size() {
            return Err(Error::InvalidArgument(format!(
                "learner state for d = {}, V = {} does not fit d = {}, V = {}",
                state.head.hidden_size,
                state.head.vocab_size,
                head.hidden_size(),
                head.vocab_size()
            )));
        }
        state.config.validate()?;
        let head = LoraHead::from_parts(&state.config.adapter, &state.head)?;
        let adam = AdamState::from_parts(&head, &state.adam)?;
        if !(state.beta.is_finite() && state.beta >= 0.0) || !(state.lr.is_finite() && state.lr > 0.0) {
            return Err(Error::InvalidArgument(format!("learner state has beta = {}, lr = {}", state.beta, state.lr)));
        }
        let version = self.counters.version.max(state.counters.version) + 1;
        let next_id = self.episodes.next_id().max(state.counters.next_id);
        self.episodes.set_limits(state.config.episode_capacity, state.config.resident_episodes, state.config.episode_ttl_s, state.config.pair_capacity);
        self.episodes.advance_ids(next_id);
        self.policy.grad = HeadGrad::new(head.rank(), head.hidden_size());
        self.policy.head = head;
        self.policy.adam = adam;
        self.policy.lr = state.lr;
        self.config = state.config;
        let parts = std::mem::take(&mut self.stats.parts);
        self.stats = RewardStats { baseline: state.baseline, advantage_center: state.advantage_center, scores: state.scores, history: state.history, critic: state.critic.into_iter().collect(), critic_fit: None, parts };
        self.beta = state.beta;
        self.counters = Counters { next_id, version, ..state.counters };
        self.guards.sign_run = state.sign_run;
        self.softq.reset_target();
        Ok(())
    }

    /// Takes over `old`'s held episodes, its episode-id counter and its adapter version (moved
    /// forward): a reset or a rollback to a fresh adapter changes the adapter, never the ids.
    pub fn adopt_episodes(&mut self, old: &mut Learner) {
        let next_id = old.episodes.next_id().max(self.episodes.next_id());
        let mut buffer = std::mem::replace(&mut old.episodes, EpisodeBuffer::new(1, 0, 0, 0));
        let c = &self.config;
        buffer.set_limits(c.episode_capacity, c.resident_episodes, c.episode_ttl_s, c.pair_capacity);
        buffer.advance_ids(next_id);
        self.episodes = buffer;
        // The sources of rewards those episodes still wait to learn, for the next report.
        self.stats.parts = std::mem::take(&mut old.stats.parts);
        self.softq.adopt_replay(&mut old.softq);
        self.counters.version = self.counters.version.max(old.counters.version) + 1;
        if self.source.is_none() {
            self.source = old.source.clone();
        }
        self.episodes.set_rebuildable(self.source.is_some());
    }

    /// Drops every held episode (forget-me); the counter stays, so their ids are never reissued in
    /// this process.
    pub fn forget_episodes(&mut self) {
        self.episodes.forget_all();
        self.softq.forget();
    }

    /// Everything an update may change, copied (the math implementation and its scratch buffers
    /// excepted): what [`Learner::rewind`] goes back to when an update did not finish.
    pub(crate) fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            config: self.config.clone(),
            head: self.policy.head.clone(),
            adam: self.policy.adam.clone(),
            lr: self.policy.lr,
            stats: self.stats.clone(),
            // The probes (the base model's replies) do not change in an update: not copied.
            rate: self.guards.rate.clone(),
            sign_run: self.guards.sign_run,
            beta: self.beta,
            episodes: self.episodes.clone(),
            counters: self.counters,
            softq: self.softq.clone(),
        }
    }

    /// Goes back to `cp`: the adapter, its optimiser and statistics, and the held episodes with
    /// their rewards, as they were when it was taken.
    pub(crate) fn rewind(&mut self, cp: Checkpoint) {
        self.config = cp.config;
        self.policy.head = cp.head;
        self.policy.adam = cp.adam;
        self.policy.lr = cp.lr;
        self.stats = cp.stats;
        self.guards.rate = cp.rate;
        self.guards.sign_run = cp.sign_run;
        self.beta = cp.beta;
        self.episodes = cp.episodes;
        self.counters = cp.counters;
        self.softq = cp.softq;
    }

    /// A learner rebuilt from a stored state.
    pub fn from_state(state: LearnerState) -> Result<Learner> {
        let mut l = Learner::new(state.config.clone(), state.head.hidden_size as usize, state.head.vocab_size as usize)?;
        l.restore(state)?;
        Ok(l)
    }
}
