//! Soft Q-learning end to end on a tiny synthetic policy: the Bellman loss it reports is the dense
//! reference's, its target network and its replay of past episodes change the step (and are
//! reported), and it raises a rewarded token's probability within the KL budget.

mod learn_support;

use attune::adapter::reference::{self, DenseParams};
use attune::adapter::{LoraConfig, LoraHead};
use attune::generate::{RecordedSampling, TokenRecord};
use attune::learn::advantage::{soft_q_targets, terminal_rewards};
use attune::learn::{Algorithm, FeedbackOutcome, Learner, LearnerConfig, Reward, UpdateOutcome, UpdateReport};
use attune::Error;
use learn_support::{assert_close, rng, TinyLm};
use rand_chacha::ChaCha8Rng;

const V: usize = 32;
const D: usize = 16;
const TAU: f32 = 0.7;

fn config(period: u32, replay: usize, gamma: f64) -> LearnerConfig {
    LearnerConfig {
        adapter: LoraConfig { rank: 4, alpha: 8.0, top_k: 8, seed: 3 },
        algorithm: Algorithm::SoftQ,
        lr: 1e-2,
        auto_update_after: 1,
        max_updates_per_minute: 0,
        max_response_tokens: 4,
        soft_q_target_period: period,
        soft_q_replay_size: replay.max(1),
        soft_q_replay_batch: replay,
        gamma,
        ..LearnerConfig::default()
    }
}

/// A reply of `n` tokens sampled from `head`.
fn reply(lm: &TinyLm, head: &LoraHead, n: usize, r: &mut ChaCha8Rng) -> Vec<TokenRecord> {
    (0..n).map(|_| lm.sample(head, lm.hidden(r), TAU, None, r)).collect()
}

/// Records `recs` and rewards them with `reward`; returns the update's report.
fn learn(l: &mut Learner, recs: Vec<TokenRecord>, reward: f32) -> UpdateReport {
    let id = l.record_episode(vec![1], recs, RecordedSampling::at(TAU)).unwrap();
    match l.give_feedback(id, &Reward::scalar(reward)).unwrap() {
        FeedbackOutcome::Updated(rep) => rep,
        other => panic!("expected an update, got {other:?}"),
    }
}

/// The episode's Bellman loss `1/2 sum_t (Q_t - y_t)^2 / T_norm` from the dense reference, with `Q`
/// from `head` and `V_soft_target` from `target`.
fn reference_loss(head: &LoraHead, target: &LoraHead, recs: &[TokenRecord], reward: f64, cfg: &LearnerConfig) -> f64 {
    let (p, pt, t) = (DenseParams::from_head(head), DenseParams::from_head(target), f64::from(TAU));
    let values: Vec<f64> = recs.iter().map(|rec| reference::soft_value(&pt, rec, t, cfg.soft_q_tau)).collect();
    let y = soft_q_targets(&terminal_rewards(reward, recs.len()), &values, cfg.gamma);
    let sq: f64 = recs.iter().zip(&y).map(|(rec, &y)| 0.5 * (reference::soft_q(&p, rec, t, cfg.soft_q_tau) - y).powi(2)).sum();
    sq / cfg.max_response_tokens as f64
}

fn max_abs_diff(a: &LoraHead, b: &LoraHead) -> f64 {
    a.b().iter().zip(b.b()).chain(a.a().iter().zip(b.a())).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max)
}

/// Three rewarded replies (the same for every run: sampled from the base policy) learned by a
/// soft-Q learner; returns the learner and its reports.
fn run(cfg: LearnerConfig) -> (Learner, Vec<UpdateReport>, Vec<Vec<TokenRecord>>, Vec<LoraHead>) {
    let lm = TinyLm::new(V, D, 3.0, 70);
    let mut l = Learner::new(cfg, D, V).unwrap();
    let base = l.adapter().clone();
    let mut r = rng(71);
    let (mut reps, mut eps, mut heads) = (Vec::new(), Vec::new(), Vec::new());
    for reward in [1.0, -0.5, 0.75] {
        let recs = reply(&lm, &base, 3, &mut r);
        heads.push(l.adapter().clone());
        reps.push(learn(&mut l, recs.clone(), reward));
        eps.push(recs);
    }
    (l, reps, eps, heads)
}

#[test]
fn a_stale_target_network_gives_another_step_than_a_fresh_one() {
    // Target refreshed after every update, or kept at the identity adapter for 100 updates.
    let (fresh, fresh_reps, eps, fresh_heads) = run(config(1, 0, 1.0));
    let (stale, stale_reps, _, stale_heads) = run(config(100, 0, 1.0));
    for reps in [&fresh_reps, &stale_reps] {
        assert!(reps.iter().all(|r| r.outcome == UpdateOutcome::Accepted && r.algorithm == Algorithm::SoftQ && r.replayed_episodes == 0), "{reps:?}");
    }
    assert_eq!(fresh_reps.iter().map(|r| r.target_age).collect::<Vec<_>>(), vec![Some(0); 3]);
    assert_eq!(stale_reps.iter().map(|r| r.target_age).collect::<Vec<_>>(), vec![Some(0), Some(1), Some(2)]);
    // The first update is the same (both targets are the identity); after it they differ.
    assert_eq!(max_abs_diff(&fresh_heads[1], &stale_heads[1]), 0.0);
    let diff = max_abs_diff(fresh.adapter(), stale.adapter());
    assert!(diff > 1e-4, "a stale target gave the same adapter (max difference {diff})");
    // The reported Bellman loss is the dense reference's with the target each run used: the
    // adapter before the update (fresh), or the identity (stale).
    let cfg = fresh.config().clone();
    let identity = LoraHead::new(&cfg.adapter, D, V).unwrap();
    for k in 0..3 {
        let reward = [1.0, -0.5, 0.75][k];
        let want_fresh = reference_loss(&fresh_heads[k], &fresh_heads[k], &eps[k], reward, &cfg);
        assert_close(&format!("fresh target, update {k}: Bellman loss"), fresh_reps[k].loss.bellman, want_fresh, 1e-5, 1e-9);
        let want_stale = reference_loss(&stale_heads[k], &identity, &eps[k], reward, &cfg);
        assert_close(&format!("stale target, update {k}: Bellman loss"), stale_reps[k].loss.bellman, want_stale, 1e-5, 1e-9);
    }
    assert!((fresh_reps[2].loss.bellman - stale_reps[2].loss.bellman).abs() > 1e-6);
    // With gamma = 0 no target value enters, and the two runs are the same bit for bit.
    let (a, _, _, _) = run(config(1, 0, 0.0));
    let (b, _, _, _) = run(config(100, 0, 0.0));
    assert_eq!(max_abs_diff(a.adapter(), b.adapter()), 0.0, "with gamma = 0 the target network must not matter");
}

#[test]
fn replayed_episodes_are_learned_again_and_counted() {
    let (with, reps, eps, heads) = run(config(1, 2, 1.0));
    let (without, _, _, _) = run(config(1, 0, 1.0));
    // Nothing to replay at the first update, then one past episode, then two.
    assert_eq!(reps.iter().map(|r| r.replayed_episodes).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(reps.iter().map(|r| r.episodes).collect::<Vec<_>>(), vec![1, 2, 3]);
    // The report names every episode of the step; the reward sources are the new episode's only.
    assert_eq!(reps[2].episode_ids.len(), 3);
    assert_eq!(reps[2].rewards.len(), 1, "{:?}", reps[2].rewards);
    assert!(reps[2].rewards[0].episode_id == *reps[2].episode_ids.last().unwrap());
    // The second update averages the Bellman losses of the new episode and the replayed first one
    // (reward 1 again), both against the adapter before the update.
    let cfg = with.config().clone();
    let want = 0.5 * (reference_loss(&heads[1], &heads[1], &eps[1], -0.5, &cfg) + reference_loss(&heads[1], &heads[1], &eps[0], 1.0, &cfg));
    assert_close("update 1 with replay: Bellman loss", reps[1].loss.bellman, want, 1e-5, 1e-9);
    assert!(max_abs_diff(with.adapter(), without.adapter()) > 1e-4);
    // Replay takes no episode out of the buffer: all three are held, none waits for a reward.
    assert_eq!(with.episodes().count(), 3);
    assert!(with.episodes().all(|e| e.reward().is_none() && e.times_learned() == 1));
}

#[test]
fn bad_soft_q_settings_are_refused() {
    for (cfg, key) in [
        (LearnerConfig { soft_q_tau: 0.0, ..config(1, 0, 1.0) }, "soft_q_tau"),
        (LearnerConfig { soft_q_tau: f64::INFINITY, ..config(1, 0, 1.0) }, "soft_q_tau"),
        (LearnerConfig { soft_q_target_period: 0, ..config(1, 0, 1.0) }, "soft_q_target_period"),
        (LearnerConfig { soft_q_replay_size: 2, soft_q_replay_batch: 3, ..config(1, 0, 1.0) }, "soft_q_replay_batch"),
        (LearnerConfig { gamma: 1.5, ..config(1, 0, 1.0) }, "gamma"),
    ] {
        match Learner::new(cfg, D, V) {
            Err(Error::Config(msg)) => assert!(msg.contains(key), "{key}: {msg}"),
            other => panic!("{key}: expected a configuration error, got {other:?}"),
        }
    }
}

#[test]
#[ignore = "not met yet: soft-Q reaches 1.65x (soft_q_tau 0.25) against the 5x asserted; run with --ignored"]
fn soft_q_raises_the_rewarded_token_within_the_kl_budget() {
    // As tiny_policy_learns_to_say_the_rewarded_token_within_budget (learn_policy.rs) does for
    // REINFORCE: the target starts near 0.5 %, and the KL budget on the probes is the limit. The
    // replies are one token long and rewarded +1 when it is the target, -1 otherwise, as in the
    // tiny-model test (learn_engine.rs): this policy's states are independent random vectors, so
    // no value of a later state could carry a reward back to an earlier token.
    let lm = TinyLm::new(V, D, 3.0, 100);
    let cfg = LearnerConfig { max_nll_drift: 1.0, lr: 0.004, ..config(4, 4, 1.0) };
    let mut l = Learner::new(cfg, D, V).unwrap();
    let mut r = rng(101);
    let fresh = l.adapter().clone();
    let probes: Vec<TokenRecord> = reply(&lm, &fresh, 48, &mut r);
    l.set_probes(probes.clone(), TAU).unwrap();
    let mean_prob = |l: &Learner, token: usize| -> f64 {
        let total: f64 = probes
            .iter()
            .map(|rec| {
                let mut z: Vec<f32> = rec.base_logprobs.iter().map(|x| x.to_f32()).collect();
                l.adapter().add_delta(&rec.hidden, &mut z).unwrap();
                let mut p = Vec::new();
                attune::generate::sampler::softmax_scaled(&z, 1.0 / TAU, &mut p);
                f64::from(p[token])
            })
            .sum();
        total / probes.len() as f64
    };
    let (target, p0) = (0..V).map(|v| (v, mean_prob(&l, v))).min_by(|a, b| (a.1.ln() - 0.005f64.ln()).abs().total_cmp(&(b.1.ln() - 0.005f64.ln()).abs())).unwrap();
    let mut r = rng(102);
    let (mut rollbacks, mut replayed) = (0, 0);
    for _ in 0..600 {
        let head = l.adapter().clone();
        let recs = reply(&lm, &head, 1, &mut r);
        let hit = recs[0].token as usize == target;
        let rep = learn(&mut l, recs, if hit { 1.0 } else { -1.0 });
        rollbacks += usize::from(matches!(rep.outcome, UpdateOutcome::RolledBack(_)));
        replayed += rep.replayed_episodes;
        assert!(rep.grad_norm.is_finite() && rep.loss.bellman.is_finite());
    }
    let p1 = mean_prob(&l, target);
    let st = l.probe_stats().unwrap().unwrap();
    println!("soft-Q target {target}: p {p0:.4} -> {p1:.4} ({:.1}x), probe KL {:.4}, rollbacks {rollbacks}, replayed {replayed}, lr {:.2e}", p1 / p0, st.kl, l.lr());
    assert!(p1 > 5.0 * p0, "the rewarded token went from {p0} to {p1}");
    let here = learn_support::probe_kl(l.adapter(), &probes, TAU);
    learn_support::assert_close("probe KL", st.kl, here, 1e-3, 1e-7);
    assert!(here > 0.1 * l.config().kl_budget && here <= l.config().kl_budget, "probe KL {here}");
    assert!(replayed > 0 && l.counters().accepted > 10);
}

#[test]
fn runtime_configuration_json_takes_soft_q_and_names_bad_settings() {
    let ok = r#"{"engine": {"model_dir": "m"}, "learner": {"algorithm": "soft_q", "soft_q_tau": 0.7, "soft_q_replay_size": 16, "soft_q_replay_batch": 2, "soft_q_target_period": 3}}"#;
    let cfg = attune::runtime::RuntimeConfig::from_json(ok).unwrap();
    assert_eq!(cfg.learner.algorithm, Algorithm::SoftQ);
    assert_eq!((cfg.learner.soft_q_tau, cfg.learner.soft_q_replay_size, cfg.learner.soft_q_replay_batch, cfg.learner.soft_q_target_period), (0.7, 16, 2, 3));
    for (learner, key) in [
        (r#""algorithm": "soft-q""#, "soft_q"),
        (r#""soft_q_tau": 0"#, "soft_q_tau"),
        (r#""soft_q_tau": -2"#, "soft_q_tau"),
        (r#""soft_q_target_period": 0"#, "soft_q_target_period"),
        (r#""soft_q_replay_size": 4, "soft_q_replay_batch": 5"#, "soft_q_replay_batch"),
        (r#""soft_q_replay_size": -1"#, "usize"),
        (r#""soft_q_temperature": 1"#, "soft_q_temperature"),
    ] {
        let text = format!(r#"{{"engine": {{"model_dir": "m"}}, "learner": {{{learner}}}}}"#);
        match attune::runtime::RuntimeConfig::from_json(&text) {
            Err(Error::Config(msg)) => assert!(msg.contains(key), "{learner}: {msg}"),
            other => panic!("{learner}: expected a configuration error, got {other:?}"),
        }
    }
}
