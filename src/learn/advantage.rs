//! How each algorithm turns a reward into per-token weights `c_t` (`docs/learning.md`, "One surrogate,
//! several algorithms"). Pure functions, so that tests can check them against hand computations.

/// The clipped normalised advantage `clip((R - b) / sigma, -clip, clip)`.
pub fn clipped_advantage(reward: f64, baseline: f64, sigma: f64, clip: f64) -> f64 {
    ((reward - baseline) / sigma).clamp(-clip, clip)
}

/// REINFORCE's weight for every token of a reply: `(clip((R - b) / sigma, -clip, clip) - center) /
/// T_norm`, where `center` is the running mean of the clipped advantages (0: not centred).
///
/// Clipping alone is not mean-preserving: at a 5 % success rate with thumbs a success is about
/// +4.4 sigma and a failure -0.23 sigma, so a clip at 2 makes the expected step
/// `0.05 * 2 - 0.95 * 0.23 = -0.12` per reply, a push down on whatever was sampled even when the
/// rewards do not depend on the reply. Subtracting the clipped advantages' mean makes the expected
/// step zero again, and for two-valued rewards it restores the ratio of a success's weight to a
/// failure's to the unclipped `(1 - p) / p`: a rare success is not cut relative to the failures.
pub fn reinforce_weight(reward: f64, baseline: f64, sigma: f64, clip: f64, center: f64, t_norm: usize) -> f64 {
    (clipped_advantage(reward, baseline, sigma, clip) - center) / t_norm.max(1) as f64
}

/// Where a correction differs from the disliked reply, by a Myers diff of the token ids: on the
/// corrected reply `chosen`, the inserted or replaced tokens and the `after` tokens following each
/// such run (the continuation has to fit the edit); on the disliked reply `rejected`, the first
/// `1 + after` tokens of each deleted or replaced run (where the reply took the turn the user undid;
/// what follows is conditioned on that turn).
pub fn edit_masks(chosen: &[u32], rejected: &[u32], after: usize) -> (Vec<bool>, Vec<bool>) {
    use similar::{capture_diff_slices, Algorithm, DiffTag};
    let (mut mw, mut ml) = (vec![false; chosen.len()], vec![false; rejected.len()]);
    for op in capture_diff_slices(Algorithm::Myers, rejected, chosen) {
        let (tag, old, new) = op.as_tag_tuple();
        if matches!(tag, DiffTag::Insert | DiffTag::Replace) {
            let end = (new.end + after).min(chosen.len());
            mw[new.start..end].iter_mut().for_each(|x| *x = true);
        }
        if matches!(tag, DiffTag::Delete | DiffTag::Replace) {
            let end = (old.start + 1 + after).min(old.end).min(rejected.len());
            ml[old.start..end].iter_mut().for_each(|x| *x = true);
        }
    }
    (mw, ml)
}

/// A correction's NLL weights, one per token of the corrected reply `chosen`: `changed` where
/// [`edit_masks`] marks it, `copied` for the rest.
pub fn edit_weights(chosen: &[u32], rejected: &[u32], changed: f64, copied: f64, after: usize) -> Vec<f64> {
    edit_masks(chosen, rejected, after).0.into_iter().map(|m| if m { changed } else { copied }).collect()
}

/// `log(1 + exp(x))`, without overflow.
pub fn softplus(x: f64) -> f64 {
    if x > 30.0 { x } else { x.exp().ln_1p() }
}

/// A correction's pair weights (DPO with the base model as the reference): with
/// `margin = sum_w (log p - log q) - sum_l (log p - log q)` over the corrected (`w`) and disliked
/// (`l`) replies, the loss `-log sigmoid(beta margin)` has the gradient of the surrogate
/// `g (sum_w log p - sum_l log p)` with `g = beta sigmoid(-beta margin)`. Returns `g` and the loss.
pub fn pair_weight(margin: f64, beta: f64) -> (f64, f64) {
    let z = beta * margin;
    (beta / (1.0 + z.exp()), softplus(-z))
}

/// Leave-one-out baselines: for each reply, the mean reward of the others of its prompt.
/// Returns `None` for fewer than two rewards.
pub fn rloo_baselines(rewards: &[f64]) -> Option<Vec<f64>> {
    let k = rewards.len();
    if k < 2 {
        return None;
    }
    let sum: f64 = rewards.iter().sum();
    Some(rewards.iter().map(|r| (sum - r) / (k - 1) as f64).collect())
}

/// Token rewards of a reply rewarded as a whole: `R` at the last token, 0 elsewhere.
pub fn terminal_rewards(reward: f64, len: usize) -> Vec<f64> {
    let mut r = vec![0.0; len];
    if let Some(last) = r.last_mut() {
        *last = reward;
    }
    r
}

/// Discounted returns `G_t = sum_l gamma^l r_{t+l}`.
pub fn returns(rewards: &[f64], gamma: f64) -> Vec<f64> {
    let mut g = vec![0.0; rewards.len()];
    let mut acc = 0.0;
    for t in (0..rewards.len()).rev() {
        acc = rewards[t] + gamma * acc;
        g[t] = acc;
    }
    g
}

/// Soft Q-learning's regression targets: `y_t = r_t + gamma V_{t+1}` for every token but the last,
/// whose target is its reward alone (the reply ends there). `values[t]` is the target network's soft
/// value `V_soft(s_t)` of the state the token `t` was sampled in.
pub fn soft_q_targets(rewards: &[f64], values: &[f64], gamma: f64) -> Vec<f64> {
    let n = rewards.len().min(values.len());
    (0..n).map(|t| rewards[t] + if t + 1 < n { gamma * values[t + 1] } else { 0.0 }).collect()
}

/// Generalised advantage estimation: `delta_t = r_t + gamma V_{t+1} - V_t` (with `V` after the last
/// token 0) and `A_t = sum_l (gamma lambda)^l delta_{t+l}`.
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lambda: f64) -> Vec<f64> {
    let n = rewards.len().min(values.len());
    let mut adv = vec![0.0; n];
    let mut acc = 0.0;
    for t in (0..n).rev() {
        let next = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next - values[t];
        acc = delta + gamma * lambda * acc;
        adv[t] = acc;
    }
    adv
}

/// The critic's skill over the moving-average baseline: A2C's critic predicts the normalised,
/// centred advantage `y = clip((R - b) / sigma) - c` that the baseline alone leaves (the baseline
/// predicts 0 in these units), so `1 - sum (y - u)^2 / sum y^2` over recent `(u, y)` pairs is the
/// fraction of the baseline's squared error the critic removes. Positive: the critic explains more
/// variance than the baseline does. `None` with fewer than two pairs or targets all zero.
pub fn critic_skill(pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.len() < 2 {
        return None;
    }
    let base: f64 = pairs.iter().map(|&(_, y)| y * y).sum();
    if base <= 1e-12 {
        return None;
    }
    let err: f64 = pairs.iter().map(|&(u, y)| (y - u) * (y - u)).sum();
    Some(1.0 - err / base)
}

/// PPO-clip's weights for one reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ClippedWeights {
    /// `c_t = rho_t A_t` where the clip is inactive, 0 where it is active.
    pub weights: Vec<f64>,
    /// The mean importance ratio `rho_t`.
    pub mean_ratio: f64,
    /// Tokens where the clip was active.
    pub clipped: usize,
}

/// `rho_t = exp(log p_t[a_t] - log p_behaviour_t)`; the clipped branch of
/// `min(rho A, clip(rho, 1 - eps, 1 + eps) A)` is active (and has no gradient) when `A > 0` and
/// `rho > 1 + eps`, or `A < 0` and `rho < 1 - eps`.
pub fn ppo_weights(advantages: &[f64], logp: &[f64], behaviour: &[f64], eps: f64) -> ClippedWeights {
    let n = advantages.len().min(logp.len()).min(behaviour.len());
    let mut weights = Vec::with_capacity(n);
    let (mut sum, mut clipped) = (0.0, 0);
    for t in 0..n {
        let rho = (logp[t] - behaviour[t]).exp();
        sum += rho;
        let a = advantages[t];
        let active = (a > 0.0 && rho > 1.0 + eps) || (a < 0.0 && rho < 1.0 - eps);
        if active {
            clipped += 1;
            weights.push(0.0);
        } else {
            weights.push(rho * a);
        }
    }
    ClippedWeights { weights, mean_ratio: if n > 0 { sum / n as f64 } else { 1.0 }, clipped }
}

/// Ziegler's adaptive KL controller: `beta (1 + clip(KL / target - 1, -0.2, 0.2) n / horizon)`.
pub fn adapt_beta(beta: f64, kl: f64, target: f64, episodes: usize, horizon: f64) -> f64 {
    let err = (kl / target - 1.0).clamp(-0.2, 0.2);
    beta * (1.0 + err * episodes as f64 / horizon).max(0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn rloo_matches_a_hand_computation() {
        // Rewards 1, 0, -1, 1: the others' means are (0-1+1)/3, (1-1+1)/3, (1+0+1)/3, (1+0-1)/3.
        let b = rloo_baselines(&[1.0, 0.0, -1.0, 1.0]).unwrap();
        close(&b, &[0.0, 1.0 / 3.0, 2.0 / 3.0, 0.0]);
        close(&rloo_baselines(&[2.0, -1.0]).unwrap(), &[-1.0, 2.0]);
        assert!(rloo_baselines(&[1.0]).is_none());
        // Advantages R - b of a group sum to zero times k/(k-1) of the centred rewards.
        assert!((reinforce_weight(1.0, 0.0, 0.5, 2.0, 0.0, 4) - 0.5).abs() < 1e-12);
        assert!((reinforce_weight(-3.0, 0.0, 1.0, 2.0, 0.0, 1) + 2.0).abs() < 1e-12);
        assert!((reinforce_weight(-3.0, 0.0, 1.0, 2.0, -0.5, 1) + 1.5).abs() < 1e-12);
    }

    #[test]
    fn centred_clipped_advantages_have_zero_mean_and_keep_the_success_to_failure_ratio() {
        // Thumbs (+1 / -1) independent of the reply, success rate p: the exact baseline and sigma.
        for p in [0.02f64, 0.05, 0.1, 0.3, 0.5] {
            let b = p - (1.0 - p);
            let sigma = 2.0 * (p * (1.0 - p)).sqrt();
            let (up, down) = (clipped_advantage(1.0, b, sigma, 2.0), clipped_advantage(-1.0, b, sigma, 2.0));
            let center = p * up + (1.0 - p) * down;
            let (wu, wd) = (reinforce_weight(1.0, b, sigma, 2.0, center, 1), reinforce_weight(-1.0, b, sigma, 2.0, center, 1));
            assert!((p * wu + (1.0 - p) * wd).abs() < 1e-12, "p {p}: the expected step is zero");
            assert!((wu / -wd - (1.0 - p) / p).abs() < 1e-9, "p {p}: success / failure weight {} vs {}", wu / -wd, (1.0 - p) / p);
            if p < 0.15 {
                // Uncentred, the clip makes the expected step negative.
                assert!(p * up + (1.0 - p) * down < -0.01, "p {p}");
            }
        }
    }

    #[test]
    fn edit_weights_mark_what_the_user_changed() {
        // "the cat sat" -> "Sure, the cat sat": the two inserted tokens and the two after them.
        close(&edit_weights(&[9, 8, 1, 2, 3], &[1, 2, 3], 1.0, 0.1, 2), &[1.0, 1.0, 1.0, 1.0, 0.1]);
        // One word replaced in the middle; nothing after it within reach but the next token.
        close(&edit_weights(&[1, 2, 7, 4, 5, 6], &[1, 2, 3, 4, 5, 6], 1.0, 0.0, 1), &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        // A deletion changes no token of the corrected reply; identical replies change none.
        close(&edit_weights(&[1, 2, 4], &[1, 2, 3, 4], 1.0, 0.1, 2), &[0.1, 0.1, 0.1]);
        close(&edit_weights(&[1, 2], &[1, 2], 1.0, 0.25, 2), &[0.25, 0.25]);
        // A question appended at the end.
        close(&edit_weights(&[1, 2, 3, 5, 6], &[1, 2, 3], 1.0, 0.1, 2), &[0.1, 0.1, 0.1, 1.0, 1.0]);
        // The disliked side: the first 1 + after tokens of each deleted or replaced run only.
        let (_, ml) = edit_masks(&[1, 2, 9], &[1, 2, 3, 4, 5, 6, 7], 1);
        assert_eq!(ml, [false, false, true, true, false, false, false]);
        let (mw, ml) = edit_masks(&[1, 2, 4], &[1, 2, 3, 4], 2);
        assert_eq!((mw, ml), (vec![false; 3], vec![false, false, true, false]));
    }

    #[test]
    fn pair_weight_is_the_dpo_gradient() {
        // At margin 0: g = beta / 2 and the loss is ln 2.
        let (g, loss) = pair_weight(0.0, 0.5);
        assert!((g - 0.25).abs() < 1e-15 && (loss - std::f64::consts::LN_2).abs() < 1e-15);
        // g is -d loss / d margin, checked by a central difference.
        for (m, b) in [(3.0, 0.5), (-2.0, 0.1), (10.0, 1.0)] {
            let h = 1e-6;
            let num = -(pair_weight(m + h, b).1 - pair_weight(m - h, b).1) / (2.0 * h);
            assert!((pair_weight(m, b).0 - num).abs() < 1e-8, "margin {m}, beta {b}");
        }
        // A large margin saturates; a very negative one does not overflow.
        assert!(pair_weight(100.0, 1.0).0 < 1e-40);
        let (g, loss) = pair_weight(-1e4, 1.0);
        assert!((g - 1.0).abs() < 1e-12 && (loss - 1e4).abs() < 1e-6);
    }

    #[test]
    fn soft_q_targets_match_a_hand_computation() {
        // Three tokens, R = 1 at the end, target values V(s_t) = (0.5, 0.2, 0.6), gamma 0.9:
        // y = (0 + 0.9 * 0.2, 0 + 0.9 * 0.6, 1) = (0.18, 0.54, 1); V(s_0) is never a target.
        let r = terminal_rewards(1.0, 3);
        close(&soft_q_targets(&r, &[0.5, 0.2, 0.6], 0.9), &[0.18, 0.54, 1.0]);
        close(&soft_q_targets(&r, &[0.5, 0.2, 0.6], 0.0), &[0.0, 0.0, 1.0]);
        close(&soft_q_targets(&[-2.0], &[7.0], 1.0), &[-2.0]);
    }

    #[test]
    fn gae_matches_a_hand_computation() {
        // Three tokens, R = 1 at the end, V = (0.5, 0.2, 0.6), gamma 1, lambda 0.5:
        // delta = (0.2 - 0.5, 0.6 - 0.2, 1 - 0.6) = (-0.3, 0.4, 0.4)
        // A_2 = 0.4, A_1 = 0.4 + 0.5 * 0.4 = 0.6, A_0 = -0.3 + 0.5 * 0.6 = 0.0
        let r = terminal_rewards(1.0, 3);
        close(&gae(&r, &[0.5, 0.2, 0.6], 1.0, 0.5), &[0.0, 0.6, 0.4]);
        // lambda = 1 gives the Monte Carlo advantage G_t - V_t.
        close(&gae(&r, &[0.5, 0.2, 0.6], 1.0, 1.0), &[0.5, 0.8, 0.4]);
        // lambda = 0 gives one-step TD errors.
        close(&gae(&r, &[0.5, 0.2, 0.6], 1.0, 0.0), &[-0.3, 0.4, 0.4]);
        close(&returns(&r, 0.9), &[0.81, 0.9, 1.0]);
    }

    #[test]
    fn ppo_clip_zeroes_only_the_active_branch() {
        let ln = f64::ln;
        let logp = [ln(0.5), ln(0.5), ln(0.5), ln(0.5), ln(0.5)];
        // rho = 2, 2, 0.5, 0.5, 1.1
        let behaviour = [ln(0.25), ln(0.25), ln(1.0), ln(1.0), ln(0.5 / 1.1)];
        let adv = [1.0, -1.0, 1.0, -1.0, 1.0];
        let w = ppo_weights(&adv, &logp, &behaviour, 0.2);
        close(&w.weights, &[0.0, -2.0, 0.5, 0.0, 1.1]);
        assert_eq!(w.clipped, 2);
        assert!((w.mean_ratio - (2.0 + 2.0 + 0.5 + 0.5 + 1.1) / 5.0).abs() < 1e-12);
        // On policy, PPO is REINFORCE.
        let on = ppo_weights(&adv, &logp, &logp, 0.2);
        close(&on.weights, &adv);
    }

    #[test]
    fn critic_skill_and_beta_controller() {
        assert_eq!(critic_skill(&[(1.0, 1.0), (2.0, 2.0)]), Some(1.0));
        assert!(critic_skill(&[(0.5, 0.0), (0.0, 0.0)]).is_none());
        assert!(critic_skill(&[(0.0, 1.0)]).is_none());
        // A critic at zero is the baseline: no skill either way.
        assert_eq!(critic_skill(&[(0.0, -1.0), (0.0, 1.0)]), Some(0.0));
        // Half the error left: (0.5^2 + 0.5^2) / (1 + 1).
        assert!((critic_skill(&[(-0.5, -1.0), (0.5, 1.0)]).unwrap() - 0.75).abs() < 1e-12);
        assert!(critic_skill(&[(1.0, -1.0), (-1.0, 1.0)]).unwrap() < 0.0);
        // KL twice the target raises beta by 0.2 * n / horizon; far below lowers it by 0.2 * n / horizon.
        assert!((adapt_beta(0.05, 0.2, 0.1, 10, 200.0) - 0.05 * 1.01).abs() < 1e-15);
        assert!((adapt_beta(0.05, 0.0, 0.1, 10, 200.0) - 0.05 * 0.99).abs() < 1e-15);
        assert!((adapt_beta(0.05, 0.105, 0.1, 200, 200.0) - 0.05 * 1.05).abs() < 1e-12);
    }
}
