//! Learning from rewards: episodes, rewards, the algorithms that turn them into token weights, the
//! optimiser step and the safeguards around it (see `docs/learning.md`).
//!
//! Code map: [`episode`] holds replies until feedback arrives; [`reward`] turns feedback into one
//! scalar; [`sources`] configures the sources a session computes itself ([`coherence`], VADER
//! [`sentiment`], task checks, a host callback) and parses rewards as JSON; [`advantage`] has each
//! algorithm's weights as pure functions; [`guard`] the probes, budgets, rate limit and same-sign
//! cap; `softq` holds soft Q-learning's target adapter and replay; [`learner`] and `update` tie them
//! together; [`state`] is the plain-data state a store
//! persists; [`report`] what every update says about itself.
//!
//! Architecture invariant: a step that breaks a budget is undone before anyone can generate with
//! it, and non-finite rewards never reach the statistics or the gradient.
//!
//! ```
//! use attune::generate::{RecordedSampling, TokenRecord};
//! use attune::learn::{FeedbackOutcome, Learner, LearnerConfig, Reward};
//! use half::f16;
//!
//! // A model with hidden size 4 and a vocabulary of 8 (the engine supplies real records).
//! let mut learner = Learner::new(LearnerConfig::default(), 4, 8)?;
//! let logprobs: Vec<f16> = (0..8).map(|v| f16::from_f32(-(8f32).ln() - 0.1 * (v as f32 - 3.5))).collect();
//! let record = TokenRecord { token: 2, hidden: vec![0.5, -1.0, 0.25, 2.0], base_logprobs: logprobs, behaviour_logprob: -2.0, kept: None };
//! let id = learner.record_episode(vec![1, 2, 3], vec![record], RecordedSampling::at(0.7))?;
//! // With the default `auto_update_after = 1`, the feedback runs an update at once.
//! if let FeedbackOutcome::Updated(report) = learner.give_feedback(id, &Reward::thumbs(true))? {
//!     assert!(report.accepted());
//! }
//! // Generation adds the adapter's change to each position's logits.
//! let mut logits = vec![0.0f32; 8];
//! learner.adapter().add_delta(&[0.5, -1.0, 0.25, 2.0], &mut logits)?;
//! # Ok::<(), attune::Error>(())
//! ```

pub mod advantage;
pub mod coherence;
pub mod config;
mod critic;
pub mod episode;
pub mod guard;
pub mod learner;
pub mod report;
pub mod reward;
pub mod sentiment;
mod softq;
pub mod sources;
pub mod state;
mod update;

pub use config::{Algorithm, LearnerConfig};
pub use episode::{DropReason, Episode, EpisodeBuffer, EpisodeKind, RecordSource, MAX_ROLLBACKS};
pub use guard::Probes;
pub use learner::Learner;
pub use report::{FeedbackOutcome, LossTerms, ProbeStats, RewardPart, RollbackReason, SkipReason, UpdateOutcome, UpdateReport};
pub use coherence::{CoherenceTerms, CoherenceWeights};
pub use reward::{Reward, RewardSource, Rule, RuleSet, RunningStats, ScoreStats, SentimentOf, MAX_REWARD_WEIGHT, MAX_SCORE};
pub use sources::RewardsConfig;
pub use state::{Counters, LearnerState, RewardHistory, STATE_VERSION};
