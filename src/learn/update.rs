//! One update: weights from the algorithm, the gradient, clipping, Adam, the trust region, the
//! KL controller, and the safeguards that roll a bad step back.

use std::collections::HashMap;
use std::time::Instant;

use super::critic::CriticFit;
use super::advantage::{self, pair_weight, ppo_weights, reinforce_weight};
use super::config::Algorithm;
use super::episode::{BaselineUsed, Episode, EpisodeKind};
use super::guard::{summarise, violation};
use super::learner::Learner;
use super::report::{RollbackReason, SkipReason, UpdateOutcome, UpdateReport};
use crate::adapter::{BaseStats, GradEpisode, LoraHead};
use crate::generate::TokenRecord;
use crate::error::{Error, Result};

/// The scales of `B` tried, in order, to project a step back inside the KL budget.
const PROJECTION_SCALES: [f32; 4] = [0.9, 0.8, 0.65, 0.5];

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
    logit_weights: Option<Vec<f64>>,
    /// The disliked reply of a correction (the episode's [`Episode::rejected`]), not its own.
    rejected: bool,
}

impl Planned {
    fn on(ep: usize, weights: Vec<f64>, beta: f64) -> Planned {
        Planned { ep, weights, beta, targets: None, logit_weights: None, rejected: false }
    }

    /// The records and base statistics this share is learned on.
    fn records<'a>(&self, episodes: &'a [Episode]) -> (&'a [TokenRecord], &'a [BaseStats]) {
        let ep = &episodes[self.ep];
        match (self.rejected, ep.rejected.as_deref()) {
            (true, Some(r)) => (&r.tokens, &r.base),
            _ => (&ep.tokens, &ep.base),
        }
    }
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
        self.episodes.expire(super::episode::now_unix());
        if self.episodes.ready_count() == 0 {
            return Err(Error::Learning("no episode is ready: give feedback or record a demonstration first".into()));
        }
        self.counters.updates += 1;
        if !self.guards.rate.allows(now, self.config.max_updates_per_minute) {
            let rep = UpdateReport::new(self.config.algorithm, UpdateOutcome::Skipped(SkipReason::RateLimited), self.beta, self.policy.lr);
            return Ok(self.skip(rep, start));
        }
        self.guards.rate.record(now);
        let mut rep = UpdateReport::new(self.config.algorithm, UpdateOutcome::Accepted, self.beta, self.policy.lr);
        let mut episodes = self.episodes.take_ready();
        let soft_q = self.config.algorithm == Algorithm::SoftQ;
        let fresh: Vec<u64> = episodes.iter().map(|e| e.id).collect();
        // A few corrections learned before are replayed beside the new signals.
        let pairs = self.episodes.take_replay(self.config.pair_replay);
        rep.replayed_pairs = pairs.len();
        episodes.extend(pairs);
        let mut replayed = HashMap::new();
        if soft_q {
            let (more, rewards) = self.soft_q_prepare(&fresh);
            episodes.extend(more);
            replayed = rewards;
            rep.target_age = Some(self.soft_q_target_age());
        }
        self.make_resident(&mut episodes, &mut rep);
        let mut baselined = Vec::new();
        let result = self.plan(&episodes, &replayed, &mut rep, &mut baselined).and_then(|planned| {
            if planned.is_empty() {
                let outcome = if rep.failed_episodes > 0 && rep.skipped_episodes == 0 { SkipReason::NoSignal } else { SkipReason::RatioTooLarge };
                Ok(self.skip(UpdateReport { outcome: UpdateOutcome::Skipped(outcome), ..rep }, start))
            } else {
                self.step(&episodes, &planned, rep, start)
            }
        });
        // Their rewards are consumed (learned, or dropped by a ratio check); replies stay for later
        // signals. After an error, or a rolled-back step, they keep their rewards for the next
        // update (a rollback counts as one of their tries), and the baseline, which has seen
        // them, does not count them again. Replayed episodes go back as they were.
        baselined.into_iter().for_each(|(i, used)| episodes[i].baseline_used = Some(used));
        let rolled_back = matches!(&result, Ok(r) if matches!(r.outcome, UpdateOutcome::RolledBack(_)));
        let consumed: Vec<bool> = episodes.iter().map(|e| result.is_ok() && !rolled_back && !replayed.contains_key(&e.id)).collect();
        // Signals that wait for the next update (kept corrections replayed here are not signals).
        let returned = if rolled_back { episodes.iter().filter(|e| e.awaits_learning()).count() } else { 0 };
        self.counters.returned_signals += returned as u64;
        if soft_q {
            if let Ok(r) = &result {
                let learned: Vec<(u64, f64)> = episodes
                    .iter()
                    .zip(&consumed)
                    .filter(|(e, &c)| c && e.kind == EpisodeKind::Sampled)
                    .filter_map(|(e, _)| e.reward.map(|x| (e.id, x)))
                    .collect();
                self.soft_q_finish(&learned, r.accepted());
            }
        }
        let dropped = self.episodes.return_learned(episodes, &consumed, rolled_back);
        self.counters.dropped_signals += dropped as u64;
        result.map(|mut rep| {
            if rolled_back {
                rep.returned_episodes = returned;
                rep.dropped_signals = dropped;
            }
            self.report_parts(rep, &fresh)
        })
    }

    /// Rebuilds the records of compact episodes; those that cannot be rebuilt are dropped.
    fn make_resident(&mut self, episodes: &mut Vec<Episode>, rep: &mut UpdateReport) {
        let mut i = 0;
        while i < episodes.len() {
            if episodes[i].is_resident() {
                i += 1;
                continue;
            }
            let res = match (&self.source, self.train_tau(episodes[i].sampling.temperature)) {
                (Some(src), Ok(tau)) => episodes[i].make_resident(src.as_ref(), &self.policy.head, tau, &mut self.policy.scratch),
                (None, _) => Err(Error::Learning("no record source to rebuild a compact episode".into())),
                (_, Err(e)) => Err(e),
            };
            match res {
                Ok(()) => {
                    rep.rebuilt_episodes += 1;
                    i += 1;
                }
                Err(e) => {
                    log::warn!("episode {} dropped: its records could not be rebuilt: {e}", episodes[i].id);
                    rep.failed_episodes += 1;
                    episodes.remove(i);
                }
            }
        }
    }

    fn skip(&mut self, mut rep: UpdateReport, start: Instant) -> UpdateReport {
        self.counters.skipped += 1;
        rep.elapsed_s = start.elapsed().as_secs_f64();
        log::info!("update skipped: {:?}", rep.outcome);
        rep
    }

    /// Chooses `c_t`, `beta` and value targets for each episode, and updates the baseline and
    /// critic statistics with this batch's rewards.
    /// `baselined` receives the episodes whose rewards entered the baseline now, with the
    /// baseline's mean, `sigma` and advantage centre before they did (what a retry of them is
    /// measured against).
    fn plan(&mut self, episodes: &[Episode], replayed: &HashMap<u64, f64>, rep: &mut UpdateReport, baselined: &mut Vec<(usize, BaselineUsed)>) -> Result<Vec<Planned>> {
        let cfg = self.config.clone();
        let (mean0, sigma0) = (self.stats.baseline.mean, self.stats.baseline.std(cfg.sigma_floor));
        // Leave-one-out baselines for rewarded replies that share a prompt.
        let mut groups: HashMap<&[u32], Vec<usize>> = HashMap::new();
        for (i, ep) in episodes.iter().enumerate() {
            if ep.kind == EpisodeKind::Sampled {
                groups.entry(&ep.prompt).or_default().push(i);
            }
        }
        // A retried reward is measured against the baseline it first met, not one that has
        // absorbed it.
        let mut baselines: Vec<f64> = episodes.iter().map(|e| e.baseline_used.map_or(mean0, |u| u.mean)).collect();
        let sigmas: Vec<f64> = episodes.iter().map(|e| e.baseline_used.map_or(sigma0, |u| u.sigma)).collect();
        let mut rloo = vec![false; episodes.len()];
        for idx in groups.values() {
            let rewards: Vec<f64> = idx.iter().map(|&i| episodes[i].reward.unwrap_or(0.0)).collect();
            if let Some(b) = advantage::rloo_baselines(&rewards) {
                idx.iter().zip(b).for_each(|(&i, b)| {
                    baselines[i] = b;
                    rloo[i] = true;
                });
            }
        }
        // The running mean of the clipped advantages measured against the running baseline
        // (leave-one-out advantages have mean zero by construction and are not centred).
        let center0 = self.stats.advantage_center.mean;
        let used0 = BaselineUsed { mean: mean0, sigma: sigma0, center: center0 };
        // A2C's critic is residual: the value head predicts the normalised, centred advantage the
        // moving-average baseline leaves, so a fresh head (zero) is that baseline exactly and the
        // critic serves from the first update on, unless its recent predictions missed by more than
        // the baseline's (negative skill).
        let critic_pairs: Vec<(f64, f64)> = self.stats.critic.iter().map(|&(v, g)| (f64::from(v), f64::from(g))).collect();
        let skill = advantage::critic_skill(&critic_pairs);
        let critic_ready = cfg.algorithm == Algorithm::A2c && skill.is_none_or(|s| s >= 0.0);
        rep.critic_used = critic_ready;
        rep.critic_skill = skill.filter(|_| cfg.algorithm == Algorithm::A2c);
        let mut planned = Vec::new();
        let (mut critic_fitted, mut value_tokens) = (false, 0usize);
        for (i, ep) in episodes.iter().enumerate() {
            let n = ep.tokens.len();
            let reward = match (ep.kind, ep.reward) {
                (EpisodeKind::Demonstration | EpisodeKind::UserText, _) => {
                    planned.push(Planned::on(i, vec![f64::from(ep.weight); n], 0.0));
                    continue;
                }
                (EpisodeKind::Correction, _) => {
                    let [w, l] = self.pair_plan(ep, rep)?;
                    planned.push(Planned::on(i, w, 0.0));
                    planned.push(Planned { rejected: true, ..Planned::on(i, l, 0.0) });
                    continue;
                }
                (EpisodeKind::Sampled, Some(r)) => r,
                (EpisodeKind::Sampled, None) => match replayed.get(&ep.id) {
                    Some(&r) => r,
                    None => continue,
                },
            };
            let kl_scale = 1.0 / cfg.max_response_tokens.max(1) as f64;
            if cfg.algorithm == Algorithm::SoftQ {
                // Off-policy by construction: no importance ratio, old and replayed episodes alike.
                let (k, loss) = self.soft_q_weights(ep, reward)?;
                rep.loss.bellman += loss;
                rep.replayed_episodes += usize::from(replayed.contains_key(&ep.id));
                if !replayed.contains_key(&ep.id) && ep.baseline_used.is_none() {
                    self.stats.baseline.push(reward, cfg.baseline_rate);
                    baselined.push((i, used0));
                }
                planned.push(Planned { logit_weights: Some(k), ..Planned::on(i, vec![0.0; n], self.beta * kl_scale) });
                continue;
            }
            let retried = ep.baseline_used.is_some();
            if !retried {
                self.stats.baseline.push(reward, cfg.baseline_rate);
                baselined.push((i, used0));
            }
            let sigma = sigmas[i];
            let center = match (cfg.center_advantages && !rloo[i], ep.baseline_used) {
                (false, _) => 0.0,
                (true, Some(u)) => u.center,
                (true, None) => center0,
            };
            if !rloo[i] && !retried {
                let z = advantage::clipped_advantage(reward, baselines[i], sigma, cfg.advantage_clip);
                self.stats.advantage_center.push(z, cfg.baseline_rate);
            }
            let flat = reinforce_weight(reward, baselines[i], sigma, cfg.advantage_clip, center, cfg.max_response_tokens);
            let mut weights = vec![flat; n];
            // The KL term is scaled like the policy term (divided by T_norm, as the weights are),
            // so that the objective stays Ziegler's per-reply `R - beta sum_t KL_t` up to one factor.
            let mut targets = None;
            if cfg.algorithm == Algorithm::A2c {
                // In the units of REINFORCE's advantage: the reply's reward is `y`, the flat weight
                // times `T_norm`, at its last token, and the critic predicts what is left of it.
                let values: Vec<f64> = ep.tokens.iter().map(|r| self.policy.head.value(&r.hidden).map(f64::from)).collect::<Result<_>>()?;
                let y = flat * cfg.max_response_tokens.max(1) as f64;
                let token_rewards = advantage::terminal_rewards(y, n);
                let returns = advantage::returns(&token_rewards, cfg.gamma);
                if critic_ready {
                    let bound = 2.0 * cfg.advantage_clip;
                    let t_norm = cfg.max_response_tokens.max(1) as f64;
                    weights = advantage::gae(&token_rewards, &values, cfg.gamma, cfg.gae_lambda).into_iter().map(|a| a.clamp(-bound, bound) / t_norm).collect();
                }
                for (&v, &g) in values.iter().zip(&returns) {
                    if self.stats.critic.len() >= cfg.critic_window {
                        self.stats.critic.pop_front();
                    }
                    self.stats.critic.push_back((v as f32, g as f32));
                }
                if cfg.critic_ridge > 0.0 {
                    // The closed-form critic learns each reply once (a retry's targets are in).
                    if !retried {
                        let d = self.policy.head.hidden_size();
                        let fit = self.stats.critic_fit.get_or_insert_with(|| CriticFit::new(d));
                        let hidden = ndarray::Array2::from_shape_fn((n, d), |(t, j)| ep.tokens[t].hidden.get(j).copied().unwrap_or(0.0));
                        fit.add(hidden.view(), &returns, cfg.critic_window);
                        critic_fitted = true;
                        rep.loss.value += values.iter().zip(&returns).map(|(v, g)| 0.5 * (v - g) * (v - g)).sum::<f64>();
                        value_tokens += n;
                    }
                } else {
                    targets = Some(returns);
                }
            }
            let older = ep.created_step < self.counters.version;
            rep.stale_episodes += usize::from(older);
            let stale = cfg.clip_stale && older;
            if (cfg.algorithm == Algorithm::Ppo || stale) && ep.sampling.temperature > 0.0 {
                let p = &mut self.policy;
                p.math.evaluate(&p.head, &ep.tokens, &ep.base, &mut p.evals)?;
                let logp: Vec<f64> = p.evals.iter().map(|e| e.logp).collect();
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
            planned.push(Planned { targets, ..Planned::on(i, weights, self.beta * kl_scale) });
        }
        if critic_fitted {
            rep.loss.value /= value_tokens.max(1) as f64;
            let head = &mut self.policy.head;
            if let Some((w, b)) = self.stats.critic_fit.as_ref().and_then(|f| f.solve(cfg.critic_ridge, (head.value_w().as_slice().unwrap_or(&[]), head.value_b()))) {
                head.set_value_head(&w, b)?;
            }
        }
        // The step averages over episodes (a correction's two replies are one): both terms of
        // each episode's objective.
        let k = planned.iter().filter(|p| !p.rejected).count().max(1) as f64;
        planned.iter_mut().for_each(|p| {
            p.weights.iter_mut().chain(p.logit_weights.iter_mut().flatten()).for_each(|w| *w /= k);
            p.beta /= k;
        });
        rep.loss.bellman /= k;
        if rep.pairs > 0 {
            rep.loss.pair /= rep.pairs as f64;
            rep.pair_margin = rep.pair_margin.map(|m| m / rep.pairs as f64);
        }
        Ok(planned)
    }

    /// A correction's two weight vectors (corrected reply, disliked reply): the DPO gradient
    /// `+-g` on every token of each, and NLL on the corrected reply's tokens weighted by what the
    /// user changed ([`advantage::edit_weights`]). Adds to the report's pair loss and margin.
    fn pair_plan(&mut self, ep: &Episode, rep: &mut UpdateReport) -> Result<[Vec<f64>; 2]> {
        let cfg = &self.config;
        let Some(rej) = ep.rejected.as_deref() else {
            return Err(Error::Learning(format!("correction {} holds no disliked reply", ep.id)));
        };
        let (mw, ml) = advantage::edit_masks(&ep.reply, &rej.reply, 2);
        let edited = cfg.pair_dpo_edited;
        let p = &mut self.policy;
        let mut ratio = |tokens: &[TokenRecord], base: &[BaseStats], mask: &[bool]| -> Result<f64> {
            p.math.evaluate(&p.head, tokens, base, &mut p.evals)?;
            Ok(p.evals.iter().zip(mask).filter(|(_, &m)| m || !edited).map(|(e, _)| e.logp - e.base_logp).sum())
        };
        let margin = ratio(&ep.tokens, &ep.base, &mw)? - ratio(&rej.tokens, &rej.base, &ml)?;
        let (g, loss) = pair_weight(margin, cfg.pair_beta);
        rep.pairs += 1;
        rep.loss.pair += loss;
        rep.pair_margin = Some(rep.pair_margin.unwrap_or(0.0) + margin);
        let on = |m: bool| if m || !edited { g } else { 0.0 };
        let chosen = mw.iter().map(|&m| (if m { cfg.pair_nll_weight } else { cfg.pair_copied_weight }) + on(m)).collect();
        let rejected = ml.iter().map(|&m| -on(m)).collect();
        Ok([chosen, rejected])
    }

    fn step(&mut self, episodes: &[Episode], planned: &[Planned], mut rep: UpdateReport, start: Instant) -> Result<UpdateReport> {
        let cfg = self.config.clone();
        let batch: Vec<GradEpisode<'_>> = planned
            .iter()
            .map(|p| {
                let (tokens, base) = p.records(episodes);
                GradEpisode { tokens, base, weights: &p.weights, beta: p.beta, logit_weights: p.logit_weights.as_deref(), value_targets: p.targets.as_deref() }
            })
            .collect();
        rep.episode_ids = planned.iter().filter(|p| !p.rejected).map(|p| episodes[p.ep].id).collect();
        rep.episode_ids.sort_unstable();
        let p = &mut self.policy;
        let stats = p.math.gradient(&p.head, &batch, &mut p.grad)?;
        let value_tokens: usize = planned.iter().filter(|p| p.targets.is_some()).map(|p| p.records(episodes).0.len()).sum();
        if value_tokens > 0 {
            p.grad.scale_value(1.0 / value_tokens as f64);
        }
        rep.episodes = rep.episode_ids.len();
        rep.tokens = stats.tokens;
        rep.mean_kl = stats.kl_sum / stats.tokens.max(1) as f64;
        rep.loss.policy = -stats.policy_objective;
        rep.loss.kl = planned.iter().map(|p| p.beta).fold(0.0, f64::max) * stats.kl_sum;
        if value_tokens > 0 {
            rep.loss.value = stats.value_loss / value_tokens as f64;
        }
        rep.grad_norm = p.grad.policy_norm();
        rep.value_grad_norm = p.grad.value_norm();
        if rep.grad_norm > cfg.max_grad_norm {
            p.grad.scale_policy(cfg.max_grad_norm / rep.grad_norm);
        }
        if rep.value_grad_norm > cfg.max_grad_norm {
            p.grad.scale_value(cfg.max_grad_norm / rep.value_grad_norm);
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
        let (old_head, old_adam) = (self.policy.head.clone(), self.policy.adam.clone());
        let verdict = self.apply_step(&old_head, episodes, planned, &mut rep).unwrap_or_else(|e| {
            // The inputs were checked before the step, so a failure here is a numerical blow-up.
            log::warn!("update failed after its step: {e}");
            Verdict::Rollback(RollbackReason::NonFinite)
        });
        match verdict {
            Verdict::Accept => {
                self.counters.accepted += 1;
                self.counters.version += 1;
                let p = &mut self.policy;
                p.lr = (p.lr * cfg.lr_recovery).min(cfg.lr.max(p.lr));
            }
            Verdict::Rollback(reason) => {
                let p = &mut self.policy;
                p.head = old_head;
                p.adam = old_adam;
                p.lr = (p.lr * 0.5).max(cfg.min_lr);
                self.counters.rolled_back += 1;
                rep.outcome = UpdateOutcome::RolledBack(reason);
                log::warn!("update rolled back ({reason:?}); learning rate now {:.3e}", p.lr);
            }
            Verdict::Reject => {
                self.policy.head = old_head;
                self.policy.adam = old_adam;
                rep.beta = self.beta;
                return Ok(self.skip(UpdateReport { outcome: UpdateOutcome::Skipped(SkipReason::TrustRegion), ..rep }, start));
            }
        }
        rep.beta = self.beta;
        rep.lr = self.policy.lr;
        rep.elapsed_s = start.elapsed().as_secs_f64();
        log::debug!("update: {rep:?}");
        Ok(rep)
    }

    /// Takes the Adam step, shrinks it into TRPO's trust region, and checks the safeguards.
    fn apply_step(&mut self, old_head: &LoraHead, episodes: &[Episode], planned: &[Planned], rep: &mut UpdateReport) -> Result<Verdict> {
        let cfg = &self.config;
        let (trpo, max_kl, shrink, tries) = (cfg.algorithm == Algorithm::Trpo, cfg.trpo_max_kl, cfg.trpo_backtrack, cfg.trpo_max_backtracks);
        let params = self.adam_params();
        let p = &mut self.policy;
        p.math.adam_step(&mut p.head, &mut p.adam, &p.grad, &params)?;
        if trpo {
            // A full pass over the tokens, so only for TRPO.
            let mut kl = self.batch_step_kl(old_head, episodes, planned)?;
            rep.step_kl = Some(kl);
            if kl > max_kl {
                let full = self.policy.head.clone();
                let mut inside = false;
                for i in 1..=tries {
                    self.policy.head = LoraHead::interpolate(old_head, &full, shrink.powi(i as i32) as f32)?;
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
        let mut verdict = self.check(episodes, planned, rep)?;
        if verdict == Some(RollbackReason::KlBudget) {
            // Near the budget the step shrinks (and beta follows Ziegler's controller), rather than
            // the whole step being undone and the learning rate halved: first the step is halved
            // until it fits; if even the smallest does not, the adapter is projected back inside
            // the budget by scaling its change of the logits, so learning goes on along the
            // budget's edge.
            let full = self.policy.head.clone();
            for i in 1..=self.config.kl_backtracks {
                self.policy.head = LoraHead::interpolate(old_head, &full, 0.5f32.powi(i as i32))?;
                rep.backtracks = i;
                verdict = self.check(episodes, planned, rep)?;
                if verdict != Some(RollbackReason::KlBudget) {
                    break;
                }
            }
            if verdict == Some(RollbackReason::KlBudget) {
                for &s in &PROJECTION_SCALES {
                    self.policy.head = full.with_b_scaled(s);
                    verdict = self.check(episodes, planned, rep)?;
                    if verdict != Some(RollbackReason::KlBudget) {
                        rep.projected = Some(f64::from(s));
                        break;
                    }
                }
            }
        }
        Ok(match verdict {
            None => Verdict::Accept,
            Some(reason) => Verdict::Rollback(reason),
        })
    }

    /// Mean `KL(p_old || p_current)` per token over the planned episodes.
    fn batch_step_kl(&mut self, old: &LoraHead, episodes: &[Episode], planned: &[Planned]) -> Result<f64> {
        let (mut sum, mut n) = (0.0, 0usize);
        for pl in planned {
            let (tokens, base) = pl.records(episodes);
            let p = &mut self.policy;
            sum += p.math.step_kl(old, &p.head, tokens, base)? * tokens.len() as f64;
            n += tokens.len();
        }
        Ok(sum / n.max(1) as f64)
    }

    /// The safeguards after a step: finiteness, then the probes' budgets, or without probes the KL
    /// budget on the update's own tokens.
    fn check(&mut self, episodes: &[Episode], planned: &[Planned], rep: &mut UpdateReport) -> Result<Option<RollbackReason>> {
        let p = &mut self.policy;
        if !p.head.all_finite() {
            return Ok(Some(RollbackReason::NonFinite));
        }
        if let Some(probes) = &self.guards.probes {
            let stats = probes.measure(p.math.as_mut(), &p.head, &mut p.evals)?;
            rep.probe = Some(stats);
            return Ok(violation(&stats, &self.config, true));
        }
        let mut all = Vec::new();
        for pl in planned {
            let (tokens, base) = pl.records(episodes);
            p.math.evaluate(&p.head, tokens, base, &mut p.evals)?;
            all.extend_from_slice(&p.evals);
        }
        Ok(violation(&summarise(&all), &self.config, false))
    }
}
