//! The learner's configuration: which algorithm, its hyper-parameters, and the safeguards.
//! `docs/learning.md` explains each setting and why its default is what it is.

use serde::{Deserialize, Serialize};

use crate::adapter::LoraConfig;
use crate::error::{Error, Result};

/// Which learning algorithm turns rewards into token weights `c_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// REINFORCE with an exponential-moving-average baseline; leave-one-out (RLOO) baselines for
    /// episodes that share a prompt within one update.
    Reinforce,
    /// Advantage actor-critic: a residual value head predicts what REINFORCE's normalised advantage
    /// leaves, and GAE on its estimates gives each token's advantage; REINFORCE's weights stand in
    /// while the critic's recent predictions miss by more than the moving-average baseline's.
    A2c,
    /// PPO-clip: REINFORCE advantages weighted by the importance ratio to the recorded behaviour
    /// policy, zero where the clip is active.
    Ppo,
    /// REINFORCE advantages with a trust region: the step is shrunk until the exact KL between the
    /// old and new policies on the episode's tokens is small enough, or rejected.
    Trpo,
    /// Soft Q-learning (Guo et al. 2021): the adapted logits read as Q-values relative to the base,
    /// regressed toward `r_t + gamma V_soft_target(s_{t+1})` with a target adapter refreshed every
    /// `soft_q_target_period` updates and past episodes replayed from the episode buffer.
    SoftQ,
    /// Learns from the user, not from its own replies: demonstrations (corrections) and, when
    /// `user_text_weight > 0`, the user's own messages as language-model targets, teacher-forced
    /// with `beta = 0`. Ratings teach only through `imitate_rated` (off by default).
    Supervised,
}

/// Everything the [`super::Learner`] can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnerConfig {
    /// Shape and initialisation of the adapter.
    pub adapter: LoraConfig,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Adam's learning rate for `A` and `B` (halved at every rollback).
    pub lr: f64,
    /// `A`'s learning rate as a multiple of `lr` (LoRA+, Hayou et al. 2024: `A` slower than `B`).
    /// Every row of `B` reads `A h`, so noisy sign-like Adam steps on `A` scramble what `B` learned.
    pub a_lr_mult: f64,
    /// The value head's learning rate as a multiple of `lr`. A common suggestion is 10; the head
    /// reads the raw final hidden state, and Adam moves `V = w.h + b` by up to `lr_v * sum_j |h_j|`
    /// per update (about 490 * lr_v for SmolLM2-135M), so 10x left the critic oscillating by several
    /// units around returns in [-1, 1] and it never explained variance in the demo; 0.1x does.
    pub value_lr_mult: f64,
    /// The floor that rollbacks cannot halve `lr` below.
    pub min_lr: f64,
    /// After each accepted update `lr` is multiplied by this, up to the configured `lr`, so that it
    /// recovers from rollbacks (1: it never does).
    pub lr_recovery: f64,
    /// Adam's first-moment decay.
    pub adam_beta1: f64,
    /// Adam's second-moment decay.
    pub adam_beta2: f64,
    /// Adam's epsilon.
    pub adam_eps: f64,
    /// Gradients with a larger Euclidean norm are scaled down to it (policy and value separately).
    pub max_grad_norm: f64,
    /// The temperature greedy episodes (sampled at temperature 0) are trained at.
    pub greedy_tau: f32,
    /// The initial KL coefficient `beta`.
    pub beta: f64,
    /// Whether `beta` follows Ziegler's controller toward `kl_target`.
    pub adaptive_beta: bool,
    /// The controller's target mean KL per token (nats).
    pub kl_target: f64,
    /// The controller's horizon in episodes.
    pub kl_horizon: f64,
    /// The rate of the moving-average baseline and of the reward statistics.
    pub baseline_rate: f64,
    /// The floor of the running reward standard deviation.
    pub sigma_floor: f64,
    /// Normalised advantages are clipped to `+-advantage_clip`.
    pub advantage_clip: f64,
    /// Whether the running mean of the clipped advantages is subtracted from them, so that the
    /// expected step is zero when rewards do not depend on the reply and a rare success is not cut
    /// relative to the failures by the clip (see `advantage::reinforce_weight`).
    pub center_advantages: bool,
    /// `T_norm`: REINFORCE weights are divided by this constant (the longest reply), so long replies
    /// are not favoured.
    pub max_response_tokens: usize,
    /// The discount within a turn: GAE's, and soft Q-learning's in `r_t + gamma V(s_{t+1})`.
    pub gamma: f64,
    /// GAE's lambda. 1 by default: the reward comes at a reply's last token, and with `lambda < 1`
    /// a token `k` tokens before the end gets `lambda^k` of whatever the critic has not predicted
    /// (0.95^63 = 0.04 for a 64-token reply's first token), so while the critic is weak the first
    /// words, where many preferences are decided, learn almost nothing. With 1, `A_t = G_t - V_t`.
    pub gae_lambda: f64,
    /// How A2C's critic learns. Above 0: in closed form, by ridge regression on the last
    /// `critic_window` tokens (forgotten exponentially) with the penalty `critic_ridge * trace(S) /
    /// (d + 1)` toward the baseline; 0: by Adam steps at `lr * value_lr_mult` on each update's
    /// replies. The value head's Adam steps chase one reply's noisy thumbs at a time (see
    /// `value_lr_mult`).
    pub critic_ridge: f64,
    /// How many recent tokens' (prediction, target) pairs decide whether the critic beats the
    /// moving-average baseline (its skill, `advantage::critic_skill`).
    pub critic_window: usize,
    /// Soft Q-learning's temperature `tau`: `Q = (tau / T) delta` for a policy trained at temperature
    /// `T`, `V_soft = tau log sum_v q_v exp(Q_v / tau)`; the reward a nat of KL to the base is worth.
    pub soft_q_tau: f64,
    /// How many past rewarded episodes soft Q-learning remembers for replay (ids and rewards; the
    /// episodes stay in the episode buffer, so at most `episode_capacity` of them are held).
    pub soft_q_replay_size: usize,
    /// How many remembered episodes each soft-Q update replays, drawn uniformly (0: no replay).
    pub soft_q_replay_batch: usize,
    /// The target adapter is a snapshot of the adapter, refreshed after this many accepted updates.
    pub soft_q_target_period: u32,
    /// PPO's clip range `eps`.
    pub ppo_clip: f64,
    /// Episodes whose mean importance ratio exceeds this are skipped.
    pub ppo_max_mean_ratio: f64,
    /// Whether episodes sampled before the adapter last changed get PPO's ratio and clip under the
    /// other algorithms too (a policy gradient on another policy's samples is biased).
    pub clip_stale: bool,
    /// TRPO's bound on the mean `KL(p_old || p_new)` per token.
    pub trpo_max_kl: f64,
    /// TRPO's step shrink factor.
    pub trpo_backtrack: f64,
    /// TRPO's number of shrinks before the step is rejected.
    pub trpo_max_backtracks: u32,
    /// Roll back when the mean KL to the base on the probe tokens exceeds this (nats per token).
    pub kl_budget: f64,
    /// Roll back when the probe tokens' NLL under the adapter rises by more than this fraction of
    /// their base NLL (0: off). Any wanted change of style raises it, so it is off by default;
    /// `max_coherence_drift` guards coherence instead.
    pub max_nll_drift: f64,
    /// Roll back when the base model's NLL per token of what the adapted policy says at the probe
    /// positions (its cross-entropy to the base: entropy plus KL) exceeds the base policy's own
    /// (its entropy) by more than this fraction (0: off).
    pub max_coherence_drift: f64,
    /// Roll back when the probe entropy falls by more than this fraction of the base entropy.
    pub max_entropy_drop: f64,
    /// Model or classifier scores are z-scored and clipped to `+-score_clip`.
    pub score_clip: f64,
    /// How many episodes are held for feedback (and for later signals after they were learned
    /// from); the oldest is evicted beyond it.
    pub episode_capacity: usize,
    /// How many of the newest waiting episodes keep their full records in memory; older ones are
    /// compact and rebuilt by a teacher-forced pass when learned from (sessions of a runtime only).
    pub resident_episodes: usize,
    /// Episodes older than this many seconds are dropped; feedback for them is an unknown episode
    /// that says "expired" (0: no limit).
    pub episode_ttl_s: u64,
    /// How many times a step that breaks the KL budget on the probes is halved before it is rolled
    /// back.
    pub kl_backtracks: u32,
    /// Under `supervised`, a reply rated above 0 becomes a demonstration (reward-filtered imitation).
    pub imitate_rated: bool,
    /// Under `supervised`, the weight `c_t` of the user's own message tokens as targets (0: off).
    pub user_text_weight: f64,
    /// A correction's pair loss: `-log sigmoid(pair_beta * margin)`, where the margin is how much
    /// more the adapter raised the corrected reply's log-likelihood over the base model's than the
    /// disliked reply's (DPO, Rafailov et al. 2023, with the base model as the exact reference). The
    /// loss stops pushing once the margin is a few times `1 / pair_beta` nats, about the KL of one
    /// changed decision.
    pub pair_beta: f64,
    /// The NLL weight `c_t` of the corrected reply's tokens the user changed (and the two after
    /// each change), so that the corrected reply's likelihood rises and does not fall with the
    /// disliked one's (RPO, DPO-Positive).
    pub pair_nll_weight: f64,
    /// The NLL weight of the corrected reply's tokens copied from the disliked reply: low, so the
    /// KL budget is spent where the edit is.
    pub pair_copied_weight: f64,
    /// Whether the pair loss reads only the tokens where the replies differ (the corrected reply's
    /// changed tokens and the two after each change; the disliked reply's first tokens of each
    /// deleted or replaced run) instead of every token of both.
    pub pair_dpo_edited: bool,
    /// How many learned corrections are kept (and persisted) for replay; the oldest go first.
    pub pair_capacity: usize,
    /// How many kept corrections each update replays beside its new signals (the least replayed
    /// first; 0, the default: none). A replayed pair is rebuilt by two teacher-forced passes (1 to 2
    /// s an update on two cores), and in the simulated-user suite replaying 2 per update learned
    /// less than learning each correction once (BENCHMARKS.md).
    pub pair_replay: usize,
    /// Run an update after this many usable rewards (0: only when `update` is called).
    pub auto_update_after: usize,
    /// At most this many updates in any 60 s (0: no limit).
    pub max_updates_per_minute: u32,
    /// Feedback beyond this many consecutive rewards of the same sign is ignored (0: no cap, the
    /// default: a user who keeps disliking what the model does is giving signal, and the KL budget,
    /// drift guards and moving baseline already bound what a stuck stream can do).
    pub max_same_sign_run: u32,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        LearnerConfig {
            adapter: LoraConfig::default(),
            algorithm: Algorithm::Reinforce,
            lr: 2e-3,
            a_lr_mult: 1.0,
            value_lr_mult: 0.1,
            min_lr: 1e-6,
            lr_recovery: 1.1,
            adam_beta1: 0.9,
            adam_beta2: 0.95,
            adam_eps: 1e-8,
            max_grad_norm: 1.0,
            greedy_tau: 0.7,
            beta: 0.05,
            adaptive_beta: true,
            kl_target: 0.05,
            kl_horizon: 200.0,
            baseline_rate: 0.05,
            sigma_floor: 1e-3,
            advantage_clip: 2.0,
            center_advantages: true,
            max_response_tokens: 256,
            gamma: 1.0,
            gae_lambda: 1.0,
            critic_window: 2048,
            critic_ridge: 1.0,
            soft_q_tau: 0.25,
            soft_q_replay_size: 32,
            soft_q_replay_batch: 4,
            soft_q_target_period: 4,
            ppo_clip: 0.2,
            ppo_max_mean_ratio: 10.0,
            clip_stale: true,
            trpo_max_kl: 0.01,
            trpo_backtrack: 0.8,
            trpo_max_backtracks: 10,
            kl_budget: 0.1,
            max_nll_drift: 0.0,
            max_coherence_drift: 0.1,
            max_entropy_drop: 0.3,
            score_clip: 5.0,
            episode_capacity: 64,
            resident_episodes: 8,
            episode_ttl_s: 48 * 3600,
            kl_backtracks: 3,
            imitate_rated: false,
            user_text_weight: 0.25,
            pair_beta: 0.5,
            pair_nll_weight: 1.0,
            pair_copied_weight: 0.1,
            pair_dpo_edited: false,
            pair_capacity: 16,
            pair_replay: 0,
            auto_update_after: 1,
            max_updates_per_minute: 30,
            max_same_sign_run: 0,
        }
    }
}

impl LearnerConfig {
    /// Checks that every value is usable.
    pub fn validate(&self) -> Result<()> {
        self.adapter.validate()?;
        let positive = [
            ("lr", self.lr),
            ("value_lr_mult", self.value_lr_mult),
            ("min_lr", self.min_lr),
            ("adam_eps", self.adam_eps),
            ("max_grad_norm", self.max_grad_norm),
            ("kl_target", self.kl_target),
            ("kl_horizon", self.kl_horizon),
            ("sigma_floor", self.sigma_floor),
            ("advantage_clip", self.advantage_clip),
            ("ppo_clip", self.ppo_clip),
            ("ppo_max_mean_ratio", self.ppo_max_mean_ratio),
            ("trpo_max_kl", self.trpo_max_kl),
            ("kl_budget", self.kl_budget),
            ("score_clip", self.score_clip),
            ("soft_q_tau", self.soft_q_tau),
            ("pair_beta", self.pair_beta),
        ];
        for (name, x) in positive {
            if !(x.is_finite() && x > 0.0) {
                return Err(Error::Config(format!("{name} must be finite and > 0, got {x}")));
            }
        }
        let unit = [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
            ("baseline_rate", self.baseline_rate),
            ("trpo_backtrack", self.trpo_backtrack),
            ("max_entropy_drop", self.max_entropy_drop),
        ];
        for (name, x) in unit {
            if !(x > 0.0 && x < 1.0) {
                return Err(Error::Config(format!("{name} must be in (0, 1), got {x}")));
            }
        }
        for (name, x) in [("max_nll_drift", self.max_nll_drift), ("max_coherence_drift", self.max_coherence_drift), ("critic_ridge", self.critic_ridge)] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(Error::Config(format!("{name} must be finite and >= 0 (0: off), got {x}")));
            }
        }
        for (name, x) in [("gamma", self.gamma), ("gae_lambda", self.gae_lambda)] {
            if !(0.0..=1.0).contains(&x) {
                return Err(Error::Config(format!("{name} must be in [0, 1], got {x}")));
            }
        }
        if self.min_lr > self.lr {
            return Err(Error::Config(format!("min_lr {} is above lr {}", self.min_lr, self.lr)));
        }
        if !(self.lr_recovery.is_finite() && self.lr_recovery >= 1.0) {
            return Err(Error::Config(format!("lr_recovery must be finite and >= 1, got {}", self.lr_recovery)));
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(Error::Config(format!("beta must be finite and >= 0, got {}", self.beta)));
        }
        if !(self.greedy_tau.is_finite() && self.greedy_tau > 0.0) {
            return Err(Error::Config(format!("greedy_tau must be finite and > 0, got {}", self.greedy_tau)));
        }
        for (name, x) in [("user_text_weight", self.user_text_weight), ("pair_nll_weight", self.pair_nll_weight), ("pair_copied_weight", self.pair_copied_weight)] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(Error::Config(format!("{name} must be finite and >= 0, got {x}")));
            }
        }
        if self.pair_replay > self.pair_capacity {
            return Err(Error::Config(format!("pair_replay {} is above pair_capacity {}: an update cannot replay more corrections than are kept", self.pair_replay, self.pair_capacity)));
        }
        if self.max_response_tokens == 0 || self.episode_capacity == 0 || self.critic_window < 2 {
            return Err(Error::Config("max_response_tokens and episode_capacity must be >= 1, critic_window >= 2".into()));
        }
        if self.soft_q_target_period == 0 {
            return Err(Error::Config("soft_q_target_period must be >= 1 (updates between target refreshes)".into()));
        }
        if self.soft_q_replay_batch > self.soft_q_replay_size {
            return Err(Error::Config(format!(
                "soft_q_replay_batch {} is above soft_q_replay_size {}: a batch cannot replay more episodes than are remembered",
                self.soft_q_replay_batch, self.soft_q_replay_size
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_refused() {
        LearnerConfig::default().validate().unwrap();
        let bad = [
            LearnerConfig { lr: f64::NAN, ..LearnerConfig::default() },
            LearnerConfig { lr: 1e-7, ..LearnerConfig::default() },
            LearnerConfig { adam_beta2: 1.0, ..LearnerConfig::default() },
            LearnerConfig { gae_lambda: 1.5, ..LearnerConfig::default() },
            LearnerConfig { beta: -0.1, ..LearnerConfig::default() },
            LearnerConfig { kl_budget: 0.0, ..LearnerConfig::default() },
            LearnerConfig { max_coherence_drift: -0.1, ..LearnerConfig::default() },
            LearnerConfig { max_nll_drift: f64::INFINITY, ..LearnerConfig::default() },
            LearnerConfig { episode_capacity: 0, ..LearnerConfig::default() },
            LearnerConfig { soft_q_tau: 0.0, ..LearnerConfig::default() },
            LearnerConfig { soft_q_tau: f64::NAN, ..LearnerConfig::default() },
            LearnerConfig { soft_q_target_period: 0, ..LearnerConfig::default() },
            LearnerConfig { soft_q_replay_batch: 33, ..LearnerConfig::default() },
            LearnerConfig { lr_recovery: 0.5, ..LearnerConfig::default() },
            LearnerConfig { pair_beta: 0.0, ..LearnerConfig::default() },
            LearnerConfig { pair_copied_weight: -1.0, ..LearnerConfig::default() },
            LearnerConfig { pair_replay: 17, ..LearnerConfig::default() },
            LearnerConfig { adapter: LoraConfig { rank: 0, ..LoraConfig::default() }, ..LearnerConfig::default() },
            LearnerConfig { adapter: LoraConfig { rank: 65, ..LoraConfig::default() }, ..LearnerConfig::default() },
        ];
        for cfg in bad {
            assert!(matches!(cfg.validate(), Err(Error::Config(_))), "{cfg:?}");
        }
    }
}
