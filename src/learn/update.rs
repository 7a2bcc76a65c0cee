//! One update: weights from the algorithm, the gradient, clipping, Adam, the trust region, the
//! KL controller, and the safeguards that roll a bad step back.

use std::collections::HashMap;
use std::time::Instant;

use super::advantage::{self, ppo_weights, reinforce_weight};
use super::config::Algorithm;
use super::episode::{Episode, EpisodeKind};
use super::guard::{summarise, violation};
use super::learner::Learner;
use super::report::{RollbackReason, SkipReason, UpdateOutcome, UpdateReport};
use crate::adapter::{GradEpisode, LoraHead};
use crate::error::{Error, Result};

/// What becomes of an applied step.
enum Verdict {
    Accept,
    Rollback(RollbackReason),
    Reject,
}

/// One episode's share of the step.
struct Planned {
    ep: usize,
    weights: Vec<f64>,
    beta: f64,
    targets: Option<Vec<f64>>,
}

impl Learner {
    /// Runs an update on every episode that is ready. Fails with [`Error::Learning`] when none is;
    /// otherwise reports what happened, including skips (rate limit, ratios, trust region) and
    /// rollbacks.
    pub fn update(&mut self) -> Result<super::UpdateReport> {
        self.update_at(Instant::now())
    }

    /// [`Learner::update`] with an explicit clock (for tests and replays).
    pub fn update_at(&mut self, now: Instant) -> Result<UpdateReport> {
        let start = Instant::now();
        if self.buffer.ready_count() == 0 {
            return Err(Error::Learning("no episode is ready: give feedback or record a demonstration first".into()));
        }
        self.counters.updates += 1;
        if !self.rate.allows(now, self.config.max_updates_per_minute) {
            return Ok(self.skip(UpdateReport::new(self.config.algorithm, UpdateOutcome::Skipped(SkipReason::RateLimited), self.beta, self.lr), start));
        }
        self.rate.record(now);
        let episodes = self.buffer.take_ready();
        self.ready_rewards = 0;
        let mut rep = UpdateReport::new(self.config.algorithm, UpdateOutcome::Accepted, self.beta, self.lr);
        let planned = self.plan(&episodes, &mut rep)?;
        if planned.is_empty() {
            return Ok(self.skip(UpdateReport { outcome: UpdateOutcome::Skipped(SkipReason::RatioTooLarge), ..rep }, start));
        }
        self.step(&episodes, &planned, rep, start)
    }

    fn skip(&mut self, mut rep: UpdateReport, start: Instant) -> UpdateReport {
        self.counters.skipped += 1;
        rep.elapsed_s = start.elapsed().as_secs_f64();
        log::info!("update skipped: {:?}", rep.outcome);
        rep
    }

    /// Chooses `c_t`, `beta` and value targets for each episode, and updates the baseline and
    /// critic statistics with this batch's rewards.
    fn plan(&mut self, episodes: &[Episode], rep: &mut UpdateReport) -> Result<Vec<Planned>> {
        let cfg = self.config.clone();
        let sigma = self.baseline.std(cfg.sigma_floor);
        // Leave-one-out baselines for rewarded replies that share a prompt.
        let mut groups: HashMap<&[u32], Vec<usize>> = HashMap::new();
        for (i, ep) in episodes.iter().enumerate() {
            if ep.kind == EpisodeKind::Sampled {
                groups.entry(&ep.prompt).or_default().push(i);
            }
        }
        let mut baselines = vec![self.baseline.mean; episodes.len()];
        for idx in groups.values() {
            let rewards: Vec<f64> = idx.iter().map(|&i| episodes[i].reward.unwrap_or(0.0)).collect();
            if let Some(b) = advantage::rloo_baselines(&rewards) {
                idx.iter().zip(b).for_each(|(&i, b)| baselines[i] = b);
            }
        }
        let critic_pairs: Vec<(f64, f64)> = self.critic.iter().map(|&(v, g)| (f64::from(v), f64::from(g))).collect();
        let critic_ready = cfg.algorithm == Algorithm::A2c && advantage::explained_variance(&critic_pairs).is_some_and(|ev| ev > 0.0);
        rep.critic_used = critic_ready;
        let mut planned = Vec::new();
        for (i, ep) in episodes.iter().enumerate() {
            let n = ep.tokens.len();
            let (reward, demo) = match (ep.kind, ep.reward) {
                (EpisodeKind::Demonstration, _) => (0.0, true),
                (EpisodeKind::Sampled, Some(r)) => (r, false),
                (EpisodeKind::Sampled, None) => continue,
            };
            if demo {
                planned.push(Planned { ep: i, weights: vec![1.0; n], beta: 0.0, targets: None });
                continue;
            }
            self.baseline.push(reward, cfg.baseline_rate);
            let flat = reinforce_weight(reward, baselines[i], sigma, cfg.advantage_clip, cfg.max_response_tokens);
            let mut weights = vec![flat; n];
            // The KL term is scaled like the policy term (divided by T_norm when the weights are),
            // so that the objective stays Ziegler's per-reply `R - beta sum_t KL_t` up to one factor.
            let mut kl_scale = 1.0 / cfg.max_response_tokens.max(1) as f64;
            let mut targets = None;
            if cfg.algorithm == Algorithm::A2c {
                let values: Vec<f64> = ep.tokens.iter().map(|r| self.head.value(&r.hidden).map(f64::from)).collect::<Result<_>>()?;
                let token_rewards = advantage::terminal_rewards(reward, n);
                let returns = advantage::returns(&token_rewards, cfg.gamma);
                if critic_ready {
                    weights = advantage::gae(&token_rewards, &values, cfg.gamma, cfg.gae_lambda).into_iter().map(|a| a / sigma).collect();
                    kl_scale = 1.0;
                }
                for (&v, &g) in values.iter().zip(&returns) {
                    if self.critic.len() >= cfg.critic_window {
                        self.critic.pop_front();
                    }
                    self.critic.push_back((v as f32, g as f32));
                }
                targets = Some(returns);
            }
            let stale = cfg.clip_stale && ep.created_step < self.counters.version;
            if (cfg.algorithm == Algorithm::Ppo || stale) && ep.sampling.temperature > 0.0 {
                self.math.evaluate(&self.head, &ep.tokens, &ep.base, &mut self.evals)?;
                let logp: Vec<f64> = self.evals.iter().map(|e| e.logp).collect();
                let behaviour: Vec<f64> = ep.tokens.iter().map(|r| f64::from(r.behaviour_logprob)).collect();
                let clipped = ppo_weights(&weights, &logp, &behaviour, cfg.ppo_clip);
                rep.max_mean_ratio = Some(rep.max_mean_ratio.map_or(clipped.mean_ratio, |m: f64| m.max(clipped.mean_ratio)));
                if clipped.mean_ratio > cfg.ppo_max_mean_ratio {
                    rep.skipped_episodes += 1;
                    self.counters.skipped_episodes += 1;
                    log::info!("episode {} skipped: mean importance ratio {:.3}", ep.id, clipped.mean_ratio);
                    continue;
                }
                rep.clipped_tokens += clipped.clipped;
                weights = clipped.weights;
            }
            planned.push(Planned { ep: i, weights, beta: self.beta * kl_scale, targets });
        }
        // The step averages over episodes: both terms of each episode's objective.
        let k = planned.len().max(1) as f64;
        planned.iter_mut().for_each(|p| {
            p.weights.iter_mut().for_each(|w| *w /= k);
            p.beta /= k;
        });
        Ok(planned)
    }

    fn step(&mut self, episodes: &[Episode], planned: &[Planned], mut rep: UpdateReport, start: Instant) -> Result<UpdateReport> {
        let cfg = self.config.clone();
        let batch: Vec<GradEpisode<'_>> = planned
            .iter()
            .map(|p| {
                let ep = &episodes[p.ep];
                GradEpisode { tokens: &ep.tokens, base: &ep.base, weights: &p.weights, beta: p.beta, value_targets: p.targets.as_deref() }
            })
            .collect();
        let stats = self.math.gradient(&self.head, &batch, &mut self.grad)?;
        let value_tokens: usize = planned.iter().filter(|p| p.targets.is_some()).map(|p| episodes[p.ep].tokens.len()).sum();
        if value_tokens > 0 {
            self.grad.scale_value(1.0 / value_tokens as f64);
        }
        rep.episodes = planned.len();
        rep.tokens = stats.tokens;
        rep.mean_kl = stats.kl_sum / stats.tokens.max(1) as f64;
        rep.loss.policy = -stats.policy_objective;
        rep.loss.kl = planned.iter().map(|p| p.beta).fold(0.0, f64::max) * stats.kl_sum;
        rep.loss.value = stats.value_loss / value_tokens.max(1) as f64;
        rep.grad_norm = self.grad.policy_norm();
        rep.value_grad_norm = self.grad.value_norm();
        if rep.grad_norm > cfg.max_grad_norm {
            self.grad.scale_policy(cfg.max_grad_norm / rep.grad_norm);
        }
        if rep.value_grad_norm > cfg.max_grad_norm {
            self.grad.scale_value(cfg.max_grad_norm / rep.value_grad_norm);
        }
        if rep.grad_norm == 0.0 && rep.value_grad_norm == 0.0 {
            return Ok(self.skip(UpdateReport { outcome: UpdateOutcome::Skipped(SkipReason::NoSignal), ..rep }, start));
        }
        // Ziegler's controller on the policy's KL on these tokens.
        let rl_episodes = planned.iter().filter(|p| episodes[p.ep].kind == EpisodeKind::Sampled).count();
        if cfg.adaptive_beta && rl_episodes > 0 {
            self.beta = advantage::adapt_beta(self.beta, rep.mean_kl, cfg.kl_target, rl_episodes, cfg.kl_horizon);
        }
        // The last good state, to return to.
        let (old_head, old_adam) = (self.head.clone(), self.adam.clone());
        let verdict = self.apply_step(&old_head, episodes, planned, &mut rep).unwrap_or_else(|e| {
            // The inputs were checked before the step, so a failure here is a numerical blow-up.
            log::warn!("update failed after its step: {e}");
            Verdict::Rollback(RollbackReason::NonFinite)
        });
        match verdict {
            Verdict::Accept => {
                self.counters.accepted += 1;
                self.counters.version += 1;
                self.lr = (self.lr * cfg.lr_recovery).min(cfg.lr.max(self.lr));
            }
            Verdict::Rollback(reason) => {
                self.head = old_head;
                self.adam = old_adam;
                self.lr = (self.lr * 0.5).max(cfg.min_lr);
                self.counters.rolled_back += 1;
                rep.outcome = UpdateOutcome::RolledBack(reason);
                log::warn!("update rolled back ({reason:?}); learning rate now {:.3e}", self.lr);
            }
            Verdict::Reject => {
                self.head = old_head;
                self.adam = old_adam;
                rep.beta = self.beta;
                return Ok(self.skip(UpdateReport { outcome: UpdateOutcome::Skipped(SkipReason::TrustRegion), ..rep }, start));
            }
        }
        rep.beta = self.beta;
        rep.lr = self.lr;
        rep.elapsed_s = start.elapsed().as_secs_f64();
        log::debug!("update: {rep:?}");
        Ok(rep)
    }

    /// Takes the Adam step, shrinks it into TRPO's trust region, and checks the safeguards.
    fn apply_step(&mut self, old_head: &LoraHead, episodes: &[Episode], planned: &[Planned], rep: &mut UpdateReport) -> Result<Verdict> {
        let cfg = &self.config;
        let (trpo, max_kl, shrink, tries) = (cfg.algorithm == Algorithm::Trpo, cfg.trpo_max_kl, cfg.trpo_backtrack, cfg.trpo_max_backtracks);
        let params = self.adam_params();
        self.math.adam_step(&mut self.head, &mut self.adam, &self.grad, &params)?;
        if trpo {
            // A full pass over the tokens, so only for TRPO.
            let mut kl = self.batch_step_kl(old_head, episodes, planned)?;
            rep.step_kl = Some(kl);
            if kl > max_kl {
                let full = self.head.clone();
                let mut inside = false;
                for i in 1..=tries {
                    self.head = LoraHead::interpolate(old_head, &full, shrink.powi(i as i32) as f32)?;
                    kl = self.batch_step_kl(old_head, episodes, planned)?;
                    rep.backtracks = i;
                    if kl <= max_kl {
                        inside = true;
                        break;
                    }
                }
                rep.step_kl = Some(kl);
                if !inside {
                    return Ok(Verdict::Reject);
                }
            }
        }
        Ok(match self.check(episodes, planned, rep)? {
            None => Verdict::Accept,
            Some(reason) => Verdict::Rollback(reason),
        })
    }

    /// Mean `KL(p_old || p_current)` per token over the planned episodes.
    fn batch_step_kl(&mut self, old: &LoraHead, episodes: &[Episode], planned: &[Planned]) -> Result<f64> {
        let (mut sum, mut n) = (0.0, 0usize);
        for p in planned {
            let ep = &episodes[p.ep];
            sum += self.math.step_kl(old, &self.head, &ep.tokens, &ep.base)? * ep.tokens.len() as f64;
            n += ep.tokens.len();
        }
        Ok(sum / n.max(1) as f64)
    }

    /// The safeguards after a step: finiteness, then the probes' budgets, or without probes the KL
    /// budget on the update's own tokens.
    fn check(&mut self, episodes: &[Episode], planned: &[Planned], rep: &mut UpdateReport) -> Result<Option<RollbackReason>> {
        if !self.head.all_finite() {
            return Ok(Some(RollbackReason::NonFinite));
        }
        if let Some(probes) = &self.probes {
            let stats = probes.measure(self.math.as_mut(), &self.head, &mut self.evals)?;
            rep.probe = Some(stats);
            return Ok(violation(&stats, &self.config, true));
        }
        let mut all = Vec::new();
        for p in planned {
            let ep = &episodes[p.ep];
            self.math.evaluate(&self.head, &ep.tokens, &ep.base, &mut self.evals)?;
            all.extend_from_slice(&self.evals);
        }
        Ok(violation(&summarise(&all), &self.config, false))
    }
}
