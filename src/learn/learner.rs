//! The [`Learner`]: episodes in, feedback in, updates out, state for the store.

use std::collections::VecDeque;
use std::time::Instant;

use super::config::{Algorithm, LearnerConfig};
use super::episode::{Episode, EpisodeBuffer, EpisodeKind};
use super::guard::{Probes, RateLimiter, SignRun};
use super::report::{FeedbackOutcome, ProbeStats, SkipReason};
use super::reward::{combine, Reward, RunningStats, ScoreStats};
use super::state::{Counters, LearnerState, RewardHistory, STATE_VERSION};
use crate::adapter::{AdamParams, AdamState, AdapterMath, BaseScratch, CpuMath, HeadGrad, LoraHead, TokenEval};
use crate::error::{Error, Result};
use crate::generate::{RecordedSampling, TokenRecord};

/// Learns a head adapter from rewards on recorded replies.
///
/// The engine records each reply ([`Learner::record_episode`]), the application passes feedback
/// when it comes ([`Learner::give_feedback`]), and updates run after `auto_update_after` rewards or
/// on [`Learner::update`]. Generation reads [`Learner::adapter`] and calls
/// [`LoraHead::add_delta`] on each position's logits.
pub struct Learner {
    pub(crate) config: LearnerConfig,
    pub(crate) head: LoraHead,
    pub(crate) adam: AdamState,
    pub(crate) math: Box<dyn AdapterMath + Send>,
    pub(crate) buffer: EpisodeBuffer,
    pub(crate) probes: Option<Probes>,
    pub(crate) baseline: RunningStats,
    pub(crate) scores: ScoreStats,
    pub(crate) beta: f64,
    pub(crate) lr: f64,
    pub(crate) counters: Counters,
    pub(crate) history: RewardHistory,
    pub(crate) critic: VecDeque<(f32, f32)>,
    pub(crate) sign_run: SignRun,
    pub(crate) rate: RateLimiter,
    pub(crate) scratch: BaseScratch,
    pub(crate) grad: HeadGrad,
    pub(crate) evals: Vec<TokenEval>,
    pub(crate) ready_rewards: usize,
}

impl std::fmt::Debug for Learner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learner")
            .field("algorithm", &self.config.algorithm)
            .field("rank", &self.head.rank())
            .field("hidden_size", &self.head.hidden_size())
            .field("vocab_size", &self.head.vocab_size())
            .field("pending", &self.buffer.len())
            .field("beta", &self.beta)
            .field("lr", &self.lr)
            .field("counters", &self.counters)
            .finish()
    }
}

impl Learner {
    /// A learner with a fresh (identity) adapter for a model of hidden size `d` and vocabulary `V`.
    pub fn new(config: LearnerConfig, hidden_size: usize, vocab_size: usize) -> Result<Learner> {
        config.validate()?;
        let head = LoraHead::new(&config.adapter, hidden_size, vocab_size)?;
        let adam = AdamState::new(&head);
        Ok(Learner {
            buffer: EpisodeBuffer::new(config.episode_capacity),
            grad: HeadGrad::new(head.rank(), hidden_size),
            beta: config.beta,
            lr: config.lr,
            config,
            head,
            adam,
            math: Box::new(CpuMath::new()),
            probes: None,
            baseline: RunningStats::default(),
            scores: ScoreStats::default(),
            counters: Counters::default(),
            history: RewardHistory::default(),
            critic: VecDeque::new(),
            sign_run: SignRun::default(),
            rate: RateLimiter::default(),
            scratch: BaseScratch::default(),
            evals: Vec::new(),
            ready_rewards: 0,
        })
    }

    /// Replaces the math implementation (for instance a GPU one).
    pub fn with_math(mut self, math: Box<dyn AdapterMath + Send>) -> Learner {
        self.math = math;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &LearnerConfig {
        &self.config
    }

    /// The adapter generation should use.
    pub fn adapter(&self) -> &LoraHead {
        &self.head
    }

    /// The current KL coefficient.
    pub fn beta(&self) -> f64 {
        self.beta
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Counters of what happened so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The reward summary.
    pub fn history(&self) -> &RewardHistory {
        &self.history
    }

    /// Episodes held (waiting for feedback or for the next update).
    pub fn pending_episodes(&self) -> usize {
        self.buffer.len()
    }

    /// Bytes held by pending episodes.
    pub fn episodes_memory_bytes(&self) -> usize {
        self.buffer.memory_bytes()
    }

    /// A pending episode.
    pub fn episode(&self, id: u64) -> Result<&Episode> {
        self.buffer.get(id)
    }

    /// Sets the probe tokens every update is measured on (replies of the base model to held-out
    /// prompts, say), evaluated at `temperature` (0 means the configured greedy temperature).
    /// Without probes, updates are checked against the KL budget on their own tokens only.
    pub fn set_probes(&mut self, records: Vec<TokenRecord>, temperature: f32) -> Result<()> {
        let tau = self.train_tau(temperature)?;
        self.probes = Some(Probes::new(records, tau, &self.head)?);
        Ok(())
    }

    /// Forgets the probes.
    pub fn clear_probes(&mut self) {
        self.probes = None;
    }

    /// The current adapter measured on the probes, if any are set.
    pub fn probe_stats(&mut self) -> Result<Option<ProbeStats>> {
        match &self.probes {
            None => Ok(None),
            Some(p) => Ok(Some(p.measure(self.math.as_mut(), &self.head, &mut self.evals)?)),
        }
    }

    /// Stores a sampled reply until its feedback comes and returns its id. Under
    /// [`Algorithm::Supervised`] the reply is a demonstration instead.
    pub fn record_episode(&mut self, prompt: Vec<u32>, tokens: Vec<TokenRecord>, sampling: RecordedSampling) -> Result<u64> {
        let kind = if self.config.algorithm == Algorithm::Supervised { EpisodeKind::Demonstration } else { EpisodeKind::Sampled };
        self.record(prompt, tokens, sampling, kind)
    }

    /// Stores a demonstration (the reply the user wanted, teacher-forced through the model, with
    /// its records) to be learned with `c_t = 1` and `beta = 0` at the next update.
    pub fn record_demonstration(&mut self, prompt: Vec<u32>, tokens: Vec<TokenRecord>, sampling: RecordedSampling) -> Result<u64> {
        self.record(prompt, tokens, sampling, EpisodeKind::Demonstration)
    }

    fn record(&mut self, prompt: Vec<u32>, tokens: Vec<TokenRecord>, sampling: RecordedSampling, kind: EpisodeKind) -> Result<u64> {
        let tau = self.train_tau(sampling.temperature)?;
        let id = self.counters.next_id;
        let mut ep = Episode::new(id, prompt, tokens, sampling, self.counters.version, kind);
        ep.prepare(&self.head, tau, &mut self.scratch)?;
        self.counters.next_id += 1;
        self.counters.episodes += 1;
        if let Some(old) = self.buffer.push(ep) {
            self.counters.evicted += 1;
            if old.kind == EpisodeKind::Sampled && old.reward.is_some() {
                self.ready_rewards = self.ready_rewards.saturating_sub(1);
            }
            log::debug!("episode {} evicted before it was learned from", old.id);
        }
        Ok(id)
    }

    fn train_tau(&self, temperature: f32) -> Result<f32> {
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(Error::InvalidArgument(format!("temperature {temperature} is invalid")));
        }
        Ok(if temperature > 0.0 { temperature } else { self.config.greedy_tau })
    }

    /// Gives the feedback of episode `id`. Unknown or evicted ids are [`Error::UnknownEpisode`];
    /// unusable rewards [`Error::InvalidReward`] (nothing is recorded then); a second feedback for
    /// the same episode, or one for a demonstration, is [`Error::InvalidArgument`].
    pub fn give_feedback(&mut self, id: u64, reward: &Reward) -> Result<FeedbackOutcome> {
        self.give_feedback_at(id, reward, Instant::now())
    }

    /// [`Learner::give_feedback`] with an explicit clock (for tests and replays).
    pub fn give_feedback_at(&mut self, id: u64, reward: &Reward, now: Instant) -> Result<FeedbackOutcome> {
        let ep = self.buffer.get(id)?;
        if ep.kind == EpisodeKind::Demonstration {
            return Err(Error::InvalidArgument(format!("episode {id} is a demonstration; it takes no feedback")));
        }
        if ep.reward.is_some() {
            return Err(Error::InvalidArgument(format!("episode {id} already has feedback")));
        }
        let c = &self.config;
        let r = combine(reward, &mut self.scores, c.baseline_rate, c.sigma_floor, c.score_clip)?;
        self.history.push(r);
        self.counters.feedback += 1;
        if !self.sign_run.push(r, self.config.max_same_sign_run) {
            self.buffer.remove(id);
            self.counters.ignored_feedback += 1;
            log::info!("feedback for episode {id} ignored: {} same-sign rewards in a row", self.sign_run.len);
            return Ok(FeedbackOutcome::Ignored(SkipReason::SameSignRun));
        }
        self.buffer.get_mut(id)?.reward = Some(r);
        self.ready_rewards += 1;
        if self.config.auto_update_after > 0 && self.ready_rewards >= self.config.auto_update_after {
            return Ok(FeedbackOutcome::Updated(self.update_at(now)?));
        }
        Ok(FeedbackOutcome::Queued)
    }

    /// Adam's hyper-parameters at the current learning rate.
    pub(crate) fn adam_params(&self) -> AdamParams {
        let c = &self.config;
        AdamParams { lr: self.lr, a_lr: self.lr * c.a_lr_mult, value_lr: self.lr * c.value_lr_mult, beta1: c.adam_beta1, beta2: c.adam_beta2, eps: c.adam_eps }
    }

    /// The learner's state as plain data (pending episodes and probes are not included).
    pub fn snapshot(&self) -> LearnerState {
        LearnerState {
            version: STATE_VERSION,
            config: self.config.clone(),
            head: self.head.to_parts(),
            adam: self.adam.to_parts(),
            baseline: self.baseline,
            scores: self.scores.clone(),
            beta: self.beta,
            lr: self.lr,
            counters: self.counters,
            history: self.history.clone(),
            critic: self.critic.iter().copied().collect(),
            sign_run: self.sign_run,
        }
    }

    /// Replaces the state with `state` (same hidden size and vocabulary). Pending episodes stay;
    /// they count as sampled by another adapter from now on.
    pub fn restore(&mut self, state: LearnerState) -> Result<()> {
        if state.version != STATE_VERSION {
            return Err(Error::InvalidArgument(format!("learner state version {} (this build reads {STATE_VERSION})", state.version)));
        }
        if state.head.hidden_size as usize != self.head.hidden_size() || state.head.vocab_size as usize != self.head.vocab_size() {
            return Err(Error::InvalidArgument(format!(
                "learner state for d = {}, V = {} does not fit d = {}, V = {}",
                state.head.hidden_size,
                state.head.vocab_size,
                self.head.hidden_size(),
                self.head.vocab_size()
            )));
        }
        state.config.validate()?;
        let head = LoraHead::from_parts(&state.config.adapter, &state.head)?;
        let adam = AdamState::from_parts(&head, &state.adam)?;
        for (name, x) in [("beta", state.beta), ("lr", state.lr)] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(Error::InvalidArgument(format!("learner state has {name} = {x}")));
            }
        }
        let (next_id, version) = (self.counters.next_id.max(state.counters.next_id), self.counters.version.max(state.counters.version) + 1);
        self.grad = HeadGrad::new(head.rank(), head.hidden_size());
        self.buffer = {
            let mut b = EpisodeBuffer::new(state.config.episode_capacity);
            for ep in std::mem::replace(&mut self.buffer, EpisodeBuffer::new(1)).into_episodes() {
                b.push(ep);
            }
            b
        };
        self.config = state.config;
        self.head = head;
        self.adam = adam;
        self.baseline = state.baseline;
        self.scores = state.scores;
        self.beta = state.beta;
        self.lr = state.lr;
        self.counters = Counters { next_id, version, ..state.counters };
        self.history = state.history;
        self.critic = state.critic.into_iter().collect();
        self.sign_run = state.sign_run;
        self.ready_rewards = self.buffer.ready_count();
        Ok(())
    }

    /// A learner rebuilt from a stored state.
    pub fn from_state(state: LearnerState) -> Result<Learner> {
        let mut l = Learner::new(state.config.clone(), state.head.hidden_size as usize, state.head.vocab_size as usize)?;
        l.restore(state)?;
        Ok(l)
    }
}
