//! The learner's state as plain data, for the store to persist (postcard-friendly: no untagged or
//! flattened enums, fixed-width integers). Pending episodes and probes are not part of it.

use serde::{Deserialize, Serialize};

use super::config::LearnerConfig;
use super::guard::SignRun;
use super::reward::{RunningStats, ScoreStats};
use crate::adapter::{AdamParts, HeadParts};

/// The version of [`LearnerState`]'s layout; a store refuses others.
pub const STATE_VERSION: u32 = 1;

/// Running counts of what the learner did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Episodes recorded.
    pub episodes: u64,
    /// Rewards accepted.
    pub feedback: u64,
    /// Rewards ignored (same-sign cap).
    pub ignored_feedback: u64,
    /// Episodes evicted from the buffer before they were learned from.
    pub evicted: u64,
    /// Updates attempted (including skipped ones).
    pub updates: u64,
    /// Updates kept.
    pub accepted: u64,
    /// Updates undone by a safeguard.
    pub rolled_back: u64,
    /// Updates skipped.
    pub skipped: u64,
    /// Episodes dropped inside updates (importance ratio too large).
    pub skipped_episodes: u64,
    /// Signals (an episode's pending reward, a demonstration) that a rolled-back update returned to
    /// the queue, to be retried by the next update.
    pub returned_signals: u64,
    /// Signals dropped after [`crate::learn::MAX_ROLLBACKS`] rolled-back updates.
    pub dropped_signals: u64,
    /// The id the next episode gets.
    pub next_id: u64,
    /// The adapter's version: bumped whenever its parameters change for good.
    pub version: u64,
}

/// A short summary of the rewards seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardHistory {
    /// Rewards accepted.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// How many were positive.
    pub positive: u64,
    /// How many were negative.
    pub negative: u64,
    /// The most recent ones, oldest first (at most [`RewardHistory::RECENT`]).
    pub recent: Vec<f32>,
}

impl RewardHistory {
    /// How many recent rewards are kept.
    pub const RECENT: usize = 64;

    /// Adds a reward.
    pub fn push(&mut self, r: f64) {
        self.count += 1;
        self.sum += r;
        if r > 0.0 {
            self.positive += 1;
        } else if r < 0.0 {
            self.negative += 1;
        }
        if self.recent.len() >= Self::RECENT {
            self.recent.remove(0);
        }
        self.recent.push(r as f32);
    }

    /// The mean reward, 0 before any.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Everything the learner needs to continue where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnerState {
    /// [`STATE_VERSION`] when written.
    pub version: u32,
    /// The configuration.
    pub config: LearnerConfig,
    /// The adapter.
    pub head: HeadParts,
    /// Adam's moments and step counts.
    pub adam: AdamParts,
    /// The moving-average baseline and the running reward variance (`sigma`).
    pub baseline: RunningStats,
    /// The running mean of the clipped normalised advantages (absent in older states: none yet).
    #[serde(default)]
    pub advantage_center: RunningStats,
    /// Per-source statistics of model scores.
    pub scores: ScoreStats,
    /// The current KL coefficient.
    pub beta: f64,
    /// The current learning rate.
    pub lr: f64,
    /// Counters.
    pub counters: Counters,
    /// The reward summary.
    pub history: RewardHistory,
    /// Recent `(value prediction, return)` pairs that decide whether the critic is used.
    pub critic: Vec<(f32, f32)>,
    /// The current run of same-sign feedback.
    pub sign_run: SignRun,
}
