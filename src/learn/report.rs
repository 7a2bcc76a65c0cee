//! What every update reports.

use serde::{Deserialize, Serialize};

use super::config::Algorithm;

/// Why an update was undone after it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackReason {
    /// The mean KL to the base on the probe tokens exceeded the budget.
    KlBudget,
    /// The probe tokens' NLL rose by more than the allowed fraction.
    NllDrift,
    /// The base model's NLL of what the adapted policy says at the probes (its cross-entropy to
    /// the base) rose above the base policy's own by more than the allowed fraction.
    CoherenceDrift,
    /// The probe entropy fell by more than the allowed fraction.
    EntropyDrop,
    /// A parameter or a measurement was not finite.
    NonFinite,
}

/// Why an update (or one piece of feedback) was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The limit on updates per minute was reached; the episodes wait for the next update.
    RateLimited,
    /// Every episode's mean importance ratio was too large (the adapter moved too far since).
    RatioTooLarge,
    /// TRPO found no step within the trust region.
    TrustRegion,
    /// Every weight was zero (rewards equal to their baseline, or everything clipped).
    NoSignal,
    /// Feedback beyond the cap on runs of same-sign rewards.
    SameSignRun,
    /// A rating under the supervised algorithm, which learns from demonstrations and the user's
    /// text (and from well-rated replies only with `imitate_rated`).
    Supervised,
}

/// The result of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateOutcome {
    /// The step was applied and passed every check.
    Accepted,
    /// The step was applied, failed a check, and was undone; the learning rate was halved.
    RolledBack(RollbackReason),
    /// No step was applied.
    Skipped(SkipReason),
}

/// The loss terms of an update, averaged over its episodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LossTerms {
    /// `-sum_t c_t log p_t[a_t]` per episode.
    pub policy: f64,
    /// `beta` times the summed KL per episode.
    pub kl: f64,
    /// The value loss `1/2 sum_t (V_t - G_t)^2` per token with a target.
    pub value: f64,
    /// Soft Q-learning's Bellman loss `1/2 sum_t (Q_t - y_t)^2 / T_norm` per episode, before the step.
    #[serde(default)]
    pub bellman: f64,
    /// Corrections' pair loss `-log sigmoid(pair_beta * margin)` per pair, before the step.
    #[serde(default)]
    pub pair: f64,
}

/// The probe measurements after an update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeStats {
    /// Mean KL to the base per probe token.
    pub kl: f64,
    /// Mean negative log-likelihood of the probe tokens under the adapter.
    pub nll: f64,
    /// The same under the base model.
    pub base_nll: f64,
    /// Mean entropy of the adapted policy at the probe tokens.
    pub entropy: f64,
    /// The same for the base model.
    pub base_entropy: f64,
    /// The base model's expected NLL per token of what the adapted policy says at the probe
    /// positions: `H(p, q) = entropy + kl`; the base policy's own is `base_entropy`.
    pub cross_entropy: f64,
    /// Probe tokens measured.
    pub tokens: usize,
}

impl ProbeStats {
    /// How far the base model's NLL of what the adapted policy says at the probes exceeds the base
    /// policy's own, as a fraction: `cross_entropy / base_entropy - 1` (0 when the base entropy is
    /// not positive).
    pub fn coherence_drift(&self) -> f64 {
        if self.base_entropy > 0.0 { (self.cross_entropy - self.base_entropy) / self.base_entropy } else { 0.0 }
    }
}

/// What one reward source contributed to one episode's reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardPart {
    /// The episode the feedback was for.
    pub episode_id: u64,
    /// The source: `thumbs`, `stars`, `outcome`, `rule`, or a score's name (`coherence`,
    /// `sentiment`, `task`, `callback`, or the host's own).
    pub source: String,
    /// Its value before normalisation (a score's raw value; the mapped value otherwise).
    pub raw: f64,
    /// Its value as combined: the mapped value, or a score's clipped z-score.
    pub value: f64,
    /// Its weight.
    pub weight: f64,
    /// `weight * value`: its share of the episode's reward.
    pub contribution: f64,
}

/// Everything one update did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateReport {
    /// The algorithm used.
    pub algorithm: Algorithm,
    /// Accepted, rolled back, or skipped, and why.
    pub outcome: UpdateOutcome,
    /// Episodes that contributed to the step.
    pub episodes: usize,
    /// Their ids, ascending (replayed ones included).
    pub episode_ids: Vec<u64>,
    /// Of them, episodes sampled by an earlier adapter (before an update, rollback, reset or
    /// restart), learned through the importance ratio.
    pub stale_episodes: usize,
    /// Episodes whose records were rebuilt by a teacher-forced pass (compact or restored ones).
    pub rebuilt_episodes: usize,
    /// Episodes dropped because their records could not be rebuilt.
    pub failed_episodes: usize,
    /// Episodes dropped before the step (importance ratio too large).
    pub skipped_episodes: usize,
    /// Of the episodes in the step, past ones replayed by soft Q-learning (their rewards learned
    /// before).
    #[serde(default)]
    pub replayed_episodes: usize,
    /// Corrections learned as pairs in the step (replayed ones included).
    #[serde(default)]
    pub pairs: usize,
    /// Of them, corrections learned before and replayed.
    #[serde(default)]
    pub replayed_pairs: usize,
    /// The pairs' mean margin before the step: how many nats more the adapter raised the
    /// corrected replies' log-likelihood over the base model's than the disliked replies'.
    #[serde(default)]
    pub pair_margin: Option<f64>,
    /// Soft Q-learning: accepted updates since the target adapter was taken (`None` under other
    /// algorithms).
    #[serde(default)]
    pub target_age: Option<u32>,
    /// Tokens in the step.
    pub tokens: usize,
    /// The loss terms.
    pub loss: LossTerms,
    /// Mean KL to the base per token of the update's episodes, before the step.
    pub mean_kl: f64,
    /// Probe measurements after the step (`None` without probes or when nothing was applied).
    pub probe: Option<ProbeStats>,
    /// Mean `KL(p_old || p_new)` per token of the applied step (measured by TRPO only).
    pub step_kl: Option<f64>,
    /// Step halvings: TRPO's shrinks into its trust region, or those that brought a step back
    /// inside the KL budget on the probes.
    pub backtracks: u32,
    /// When no halved step fitted the KL budget: the scale of `B` that projected the adapter back
    /// inside it.
    pub projected: Option<f64>,
    /// The policy gradient's norm before clipping.
    pub grad_norm: f64,
    /// The value gradient's norm before clipping.
    pub value_grad_norm: f64,
    /// Whether A2C's advantages came from its critic (GAE on the value head's estimates); false
    /// while the critic's recent predictions missed by more than the moving-average baseline's.
    pub critic_used: bool,
    /// A2C only: the fraction of the baseline's squared error the critic removed over its recent
    /// window (`critic_window` tokens), `None` before it has two predictions.
    pub critic_skill: Option<f64>,
    /// The largest mean importance ratio among the episodes that were importance-weighted (PPO, or
    /// stale episodes); `None` when none was.
    pub max_mean_ratio: Option<f64>,
    /// Tokens whose PPO clip was active.
    pub clipped_tokens: usize,
    /// `beta` after the update.
    pub beta: f64,
    /// The learning rate after the update.
    pub lr: f64,
    /// Wall-clock time of the update in seconds.
    pub elapsed_s: f64,
    /// The reward sources of the feedback this update learned from, with their contributions.
    #[serde(default)]
    pub rewards: Vec<RewardPart>,
    /// A rolled-back update: the episodes whose signals went back to the queue, to be retried
    /// by the next update at the halved learning rate (0 otherwise).
    #[serde(default)]
    pub returned_episodes: usize,
    /// A rolled-back update: the signals dropped because this was their last try
    /// ([`crate::learn::MAX_ROLLBACKS`]).
    #[serde(default)]
    pub dropped_signals: usize,
}

impl UpdateReport {
    /// An empty report for `algorithm` with the given outcome.
    pub fn new(algorithm: Algorithm, outcome: UpdateOutcome, beta: f64, lr: f64) -> UpdateReport {
        UpdateReport {
            algorithm,
            outcome,
            episodes: 0,
            episode_ids: Vec::new(),
            stale_episodes: 0,
            rebuilt_episodes: 0,
            failed_episodes: 0,
            skipped_episodes: 0,
            replayed_episodes: 0,
            pairs: 0,
            replayed_pairs: 0,
            pair_margin: None,
            target_age: None,
            tokens: 0,
            loss: LossTerms::default(),
            mean_kl: 0.0,
            probe: None,
            step_kl: None,
            backtracks: 0,
            projected: None,
            grad_norm: 0.0,
            value_grad_norm: 0.0,
            critic_used: false,
            critic_skill: None,
            max_mean_ratio: None,
            clipped_tokens: 0,
            beta,
            lr,
            elapsed_s: 0.0,
            rewards: Vec::new(),
            returned_episodes: 0,
            dropped_signals: 0,
        }
    }

    /// Whether the step was kept.
    pub fn accepted(&self) -> bool {
        self.outcome == UpdateOutcome::Accepted
    }
}

/// What happened to one piece of feedback.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedbackOutcome {
    /// Stored; it will be learned from at the next update.
    Queued,
    /// Not learned from (the episode was dropped), and why.
    Ignored(SkipReason),
    /// It completed a batch and an update ran.
    Updated(UpdateReport),
}
