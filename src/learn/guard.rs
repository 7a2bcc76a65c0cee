//! Safeguards: probe measurements with the budget checks that trigger a rollback, the rate limit on
//! updates, and the cap on runs of same-sign feedback.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::LearnerConfig;
use super::report::{ProbeStats, RollbackReason};
use crate::adapter::{AdapterMath, BaseScratch, BaseStats, LoraHead, TokenEval};
use crate::error::{Error, Result};
use crate::generate::TokenRecord;

/// A fixed set of probe tokens (say, replies of the base model to held-out prompts) on which every
/// update is measured against the base model.
#[derive(Debug, Clone)]
pub struct Probes {
    records: Vec<TokenRecord>,
    base: Vec<BaseStats>,
}

impl Probes {
    /// Checks the records and computes their base statistics at temperature `tau`.
    pub fn new(records: Vec<TokenRecord>, tau: f32, head: &LoraHead) -> Result<Probes> {
        if records.is_empty() {
            return Err(Error::InvalidArgument("probe set is empty".into()));
        }
        let mut scratch = BaseScratch::default();
        let mut base = Vec::with_capacity(records.len());
        for (t, rec) in records.iter().enumerate() {
            if rec.hidden.len() != head.hidden_size() || rec.hidden.iter().any(|x| !x.is_finite()) {
                return Err(Error::InvalidArgument(format!("probe token {t}: hidden state of the wrong size or not finite")));
            }
            base.push(BaseStats::compute(rec, head.vocab_size(), tau, head.config().top_k, &mut scratch)?);
        }
        Ok(Probes { records, base })
    }

    /// How many probe tokens there are.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Measures `head` on the probes.
    pub fn measure(&self, math: &mut dyn AdapterMath, head: &LoraHead, evals: &mut Vec<TokenEval>) -> Result<ProbeStats> {
        math.evaluate(head, &self.records, &self.base, evals)?;
        Ok(summarise(evals))
    }
}

/// Means of a set of token evaluations.
pub fn summarise(evals: &[TokenEval]) -> ProbeStats {
    let n = evals.len().max(1) as f64;
    let mean = |f: &dyn Fn(&TokenEval) -> f64| evals.iter().map(f).sum::<f64>() / n;
    ProbeStats {
        kl: mean(&|e| e.kl),
        nll: mean(&|e| -e.logp),
        base_nll: mean(&|e| -e.base_logp),
        entropy: mean(&|e| e.entropy),
        base_entropy: mean(&|e| e.base_entropy),
        cross_entropy: mean(&|e| e.entropy + e.kl),
        tokens: evals.len(),
    }
}

/// The first budget `stats` break, if any. With `full` false only the KL budget and finiteness are
/// checked (measurements on the update's own tokens, whose likelihood is meant to move).
pub fn violation(stats: &ProbeStats, cfg: &LearnerConfig, full: bool) -> Option<RollbackReason> {
    let all = [stats.kl, stats.nll, stats.base_nll, stats.entropy, stats.base_entropy, stats.cross_entropy];
    if all.iter().any(|x| !x.is_finite()) {
        return Some(RollbackReason::NonFinite);
    }
    if stats.kl > cfg.kl_budget {
        return Some(RollbackReason::KlBudget);
    }
    if full {
        if cfg.max_nll_drift > 0.0 && stats.base_nll > 0.0 && (stats.nll - stats.base_nll) / stats.base_nll > cfg.max_nll_drift {
            return Some(RollbackReason::NllDrift);
        }
        if cfg.max_coherence_drift > 0.0 && stats.coherence_drift() > cfg.max_coherence_drift {
            return Some(RollbackReason::CoherenceDrift);
        }
        if stats.entropy < (1.0 - cfg.max_entropy_drop) * stats.base_entropy {
            return Some(RollbackReason::EntropyDrop);
        }
    }
    None
}

/// At most `max` updates in any 60 s.
#[derive(Debug, Clone, Default)]
pub struct RateLimiter {
    recent: VecDeque<Instant>,
}

impl RateLimiter {
    /// Whether an update may run at `now` under a limit of `max` a minute (0: no limit).
    pub fn allows(&mut self, now: Instant, max: u32) -> bool {
        while self.recent.front().is_some_and(|&t| now.saturating_duration_since(t) >= Duration::from_secs(60)) {
            self.recent.pop_front();
        }
        max == 0 || self.recent.len() < max as usize
    }

    /// Notes an update at `now`.
    pub fn record(&mut self, now: Instant) {
        self.recent.push_back(now);
    }
}

/// The current run of same-sign rewards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignRun {
    /// The sign of the run (-1, 0 or +1).
    pub sign: i8,
    /// Its length.
    pub len: u32,
}

impl SignRun {
    /// Extends or restarts the run with `reward`; returns whether it stays within `cap` (0: no cap).
    /// A zero reward ends the run and is always allowed.
    pub fn push(&mut self, reward: f64, cap: u32) -> bool {
        let sign = if reward > 0.0 {
            1
        } else if reward < 0.0 {
            -1
        } else {
            0
        };
        if sign == 0 || sign != self.sign {
            *self = SignRun { sign, len: u32::from(sign != 0) };
        } else {
            self.len = self.len.saturating_add(1);
        }
        cap == 0 || self.len <= cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_uses_a_sliding_minute() {
        let mut r = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(r.allows(t0 + Duration::from_secs(i), 3));
            r.record(t0 + Duration::from_secs(i));
        }
        assert!(!r.allows(t0 + Duration::from_secs(30), 3));
        assert!(r.allows(t0 + Duration::from_secs(60), 3));
        assert!(r.allows(t0, 0));
    }

    #[test]
    fn same_sign_runs_are_capped() {
        let mut s = SignRun::default();
        assert!(s.push(-1.0, 2) && s.push(-0.5, 2));
        assert!(!s.push(-1.0, 2));
        assert!(s.push(1.0, 2), "a sign change restarts the run");
        assert!(s.push(0.0, 2) && s.len == 0);
        assert!((0..100).all(|_| s.push(1.0, 0)));
    }

    #[test]
    fn budgets() {
        let cfg = LearnerConfig { max_nll_drift: 0.02, ..LearnerConfig::default() };
        let ok = ProbeStats { kl: 0.01, nll: 2.0, base_nll: 2.0, entropy: 3.0, base_entropy: 3.0, cross_entropy: 3.01, tokens: 4 };
        assert_eq!(violation(&ok, &cfg, true), None);
        assert_eq!(violation(&ProbeStats { kl: 0.2, ..ok }, &cfg, true), Some(RollbackReason::KlBudget));
        assert_eq!(violation(&ProbeStats { nll: 2.1, ..ok }, &cfg, true), Some(RollbackReason::NllDrift));
        assert_eq!(violation(&ProbeStats { nll: 2.1, ..ok }, &LearnerConfig::default(), true), None, "the NLL drift guard is off by default");
        // A sharper policy on what the base finds likely is coherent; a more random one is not.
        assert_eq!(violation(&ProbeStats { entropy: 2.5, kl: 0.09, cross_entropy: 2.59, ..ok }, &cfg, true), None);
        assert_eq!(violation(&ProbeStats { entropy: 3.3, kl: 0.09, cross_entropy: 3.39, ..ok }, &cfg, true), Some(RollbackReason::CoherenceDrift));
        assert_eq!(violation(&ProbeStats { nll: 2.1, ..ok }, &cfg, false), None);
        assert_eq!(violation(&ProbeStats { nll: 1.0, ..ok }, &cfg, true), None, "a falling NLL is not drift");
        assert_eq!(violation(&ProbeStats { entropy: 2.0, ..ok }, &cfg, true), Some(RollbackReason::EntropyDrop));
        assert_eq!(violation(&ProbeStats { kl: f64::NAN, ..ok }, &cfg, true), Some(RollbackReason::NonFinite));
    }
}
