//! Soft Q-learning (Guo et al. 2021) on the head adapter, with DQN's two devices: a target adapter
//! and a replay of past episodes (`docs/learning.md`, "Soft Q-learning").
//!
//! At a position whose base policy (at the temperature `T` the episode is trained at) is `q` and
//! where the adapter changes the logits by `delta`, the adapted policy is `p_v ~ q_v exp(delta_v / T)`.
//! The adapted logits are read as Q-values relative to the base, `Q(s, v) = (tau / T) delta_v`, so
//! that `p = softmax(log q + Q / tau)`: the base model is the prior, an all-zero `Q` is the base
//! policy, and `V_soft(s) = tau log sum_v q_v exp(Q(s, v) / tau) = tau log Z` is the exact soft value
//! of the adapted policy. A reply's reward is placed on its last token (it ends there: the target
//! of the last token is the reward alone), so `Q(s_t, a_t)` regresses toward
//! `r_t + gamma V_soft_target(s_{t+1})` with `r_t = 0` before the last token.
//!
//! The regression's gradient with respect to the logits is `(tau / T) (Q_t - y_t)` on the sampled
//! token alone; it reaches the adapter through the logit weights of [`GradEpisode`], the same
//! backward pass (CPU or GPU) as every other objective, beside the exact KL to the base.
//!
//! Replay reuses the [`super::EpisodeBuffer`]: soft Q-learning remembers only the ids and rewards of
//! episodes it learned from; the episodes themselves stay in the buffer (compact, rebuilt when
//! replayed), so an evicted or expired episode leaves the replay too.
//!
//! [`GradEpisode`]: crate::adapter::GradEpisode

use std::collections::{HashMap, VecDeque};

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::advantage::{soft_q_targets, terminal_rewards};
use super::episode::{Episode, EpisodeKind};
use super::learner::Learner;
use crate::adapter::{LoraHead, MAX_RANK};
use crate::error::Result;
use crate::generate::TokenRecord;

/// The target adapter and the replay memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct SoftQState {
    /// The snapshot `V_soft_target` is computed with; taken at the first soft-Q update.
    target: Option<LoraHead>,
    /// Accepted updates since the snapshot.
    age: u32,
    /// `(episode id, reward)` of learned episodes, oldest first.
    replay: VecDeque<(u64, f64)>,
}

impl SoftQState {
    /// Drops the target (the adapter was replaced); the next update snapshots the new one.
    pub(crate) fn reset_target(&mut self) {
        self.target = None;
        self.age = 0;
    }

    /// Forgets the replay memory and the target.
    pub(crate) fn forget(&mut self) {
        self.reset_target();
        self.replay.clear();
    }

    /// Takes over another state's replay memory (its episodes moved to this learner).
    pub(crate) fn adopt_replay(&mut self, old: &mut SoftQState) {
        self.replay = std::mem::take(&mut old.replay);
    }
}

/// `delta[a] = s B_a . (A h)` of the record's sampled token, in f64 (0 for an inactive row).
fn sampled_delta(head: &LoraHead, rec: &TokenRecord) -> Result<f64> {
    let a = rec.token as usize;
    if !head.is_row_active(a) {
        return Ok(0.0);
    }
    let mut u = [0.0f32; MAX_RANK];
    let r = head.rank();
    head.project(&rec.hidden, &mut u[..r])?;
    let row = head.b().row(a);
    Ok(f64::from(head.scale()) * row.iter().zip(&u[..r]).map(|(&b, &x)| f64::from(b) * f64::from(x)).sum::<f64>())
}

impl Learner {
    /// Before a soft-Q update: snapshots the target adapter if there is none, and takes up to
    /// `soft_q_replay_batch` remembered episodes (drawn uniformly, none of `fresh`) out of the
    /// buffer, with their rewards. Remembered episodes the buffer no longer holds are forgotten.
    pub(crate) fn soft_q_prepare(&mut self, fresh: &[u64]) -> (Vec<Episode>, HashMap<u64, f64>) {
        let sq = &mut self.softq;
        if sq.target.is_none() {
            sq.target = Some(self.policy.head.clone());
            sq.age = 0;
        }
        let held: std::collections::HashSet<u64> = self.episodes.iter().map(|e| e.id).collect();
        sq.replay.retain(|(id, _)| held.contains(id) || fresh.contains(id));
        let pool: Vec<(u64, f64)> = sq.replay.iter().copied().filter(|(id, _)| !fresh.contains(id)).collect();
        let k = self.config.soft_q_replay_batch.min(pool.len());
        let mut rng = ChaCha8Rng::seed_from_u64(self.counters.updates ^ 0x5F7_0A11);
        let (mut out, mut rewards) = (Vec::with_capacity(k), HashMap::new());
        for i in sample(&mut rng, pool.len(), k).into_iter() {
            let (id, r) = pool[i];
            if let Some(ep) = self.episodes.remove(id) {
                rewards.insert(id, r);
                out.push(ep);
            }
        }
        (out, rewards)
    }

    /// After a soft-Q update that learned from `learned` (id, reward): remembers them for replay
    /// (an id learned again keeps its latest reward), and after an accepted step ages the target,
    /// refreshing it every `soft_q_target_period` accepted updates.
    pub(crate) fn soft_q_finish(&mut self, learned: &[(u64, f64)], accepted: bool) {
        let cap = self.config.soft_q_replay_size;
        let sq = &mut self.softq;
        for &(id, r) in learned {
            sq.replay.retain(|(i, _)| *i != id);
            sq.replay.push_back((id, r));
        }
        while sq.replay.len() > cap {
            sq.replay.pop_front();
        }
        if accepted {
            sq.age += 1;
            if sq.age >= self.config.soft_q_target_period {
                sq.target = Some(self.policy.head.clone());
                sq.age = 0;
            }
        }
    }

    /// Accepted updates since the target adapter was taken.
    pub(crate) fn soft_q_target_age(&self) -> u32 {
        self.softq.age
    }

    /// One episode's logit weights `k_t` (the negated gradient of its Bellman loss with respect to
    /// the sampled tokens' logits, divided by `T_norm`) and that loss,
    /// `1/2 sum_t (Q_t - y_t)^2 / T_norm`, for a reply rewarded `reward` as a whole.
    pub(crate) fn soft_q_weights(&mut self, ep: &Episode, reward: f64) -> Result<(Vec<f64>, f64)> {
        debug_assert_eq!(ep.kind, EpisodeKind::Sampled);
        let (tau, gamma) = (self.config.soft_q_tau, self.config.gamma);
        let t_norm = self.config.max_response_tokens.max(1) as f64;
        let p = &mut self.policy;
        let target = self.softq.target.as_ref().unwrap_or(&p.head);
        let scale: Vec<f64> = ep.base.iter().map(|bs| tau / f64::from(bs.tau)).collect();
        let q: Vec<f64> = ep.tokens.iter().zip(&scale).map(|(rec, &k)| sampled_delta(&p.head, rec).map(|d| k * d)).collect::<Result<_>>()?;
        // V_target(s_t) = tau log Z_t, with log Z = log q[a] + delta[a] / T - log p[a] at the sampled token.
        p.math.evaluate(target, &ep.tokens, &ep.base, &mut p.evals)?;
        let values: Vec<f64> = ep
            .tokens
            .iter()
            .zip(&ep.base)
            .zip(&p.evals)
            .map(|((rec, bs), e)| sampled_delta(target, rec).map(|d| tau * (e.base_logp + d / f64::from(bs.tau) - e.logp)))
            .collect::<Result<_>>()?;
        let y = soft_q_targets(&terminal_rewards(reward, ep.tokens.len()), &values, gamma);
        let mut loss = 0.0;
        let k = q
            .iter()
            .zip(&y)
            .zip(&scale)
            .map(|((&q, &y), &s)| {
                loss += 0.5 * (q - y) * (q - y) / t_norm;
                -s * (q - y) / t_norm
            })
            .collect();
        Ok((k, loss))
    }
}
