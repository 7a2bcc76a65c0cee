//! Learning through the real engine: the tiny model (fast tier) and the real model (slow tier).
//! A rule reward for one token must raise that token's probability by a large factor within a bounded
//! number of updates while the KL stays inside the budget; adversarial reward streams must never
//! produce NaN and must trigger rollbacks when they should.

mod common;
mod learn_support;

use std::sync::Arc;

use attune::generate::{sampler, GenerateOptions, Prompt, SamplingConfig};
use attune::learn::{Algorithm, FeedbackOutcome, LearnerConfig, Reward, UpdateOutcome};
use attune::runtime::{Runtime, RuntimeConfig, UserSession};
use attune::tokenizer::Message;

fn runtime(dir: std::path::PathBuf, learner: LearnerConfig) -> Arc<Runtime> {
    let cfg = RuntimeConfig { engine: common::cpu_config(dir), learner, probe_tokens: 12, ..RuntimeConfig::default() };
    Runtime::new(cfg).expect("runtime")
}

/// The base model's first-reply position for `prompt`: (hidden state, logits).
fn first_position(rt: &Runtime, prompt: &Prompt) -> (Vec<f32>, Vec<f32>) {
    let model = rt.model();
    let ids = model.prompt_tokens(prompt).unwrap();
    let mut seq = model.take_sequence().unwrap();
    model.engine().forward(&mut seq, &ids, false).unwrap();
    let out = (seq.hidden().to_vec(), seq.logits().to_vec());
    model.give_back(seq);
    out
}

/// Probability of `target` as the first reply token under the session's adapter, at temperature `tau`.
fn first_token_prob(rt: &Runtime, s: &UserSession, prompt: &Prompt, target: u32, tau: f32) -> f64 {
    let (hidden, mut logits) = first_position(rt, prompt);
    s.learner().adapter().add_delta(&hidden, &mut logits).unwrap();
    let mut p = Vec::new();
    sampler::softmax_scaled(&logits, 1.0 / tau, &mut p);
    p[target as usize] as f64
}

/// The likeliest first-reply token whose base probability is at most `max_p`, so that rewards for it
/// are neither always nor never earned and there is room to raise it.
fn moderate_token(rt: &Arc<Runtime>, prompt: &Prompt, max_p: f64) -> u32 {
    let (_, logits) = first_position(rt, prompt);
    let mut probs = Vec::new();
    sampler::softmax_scaled(&logits, 1.0, &mut probs);
    let mut p: Vec<(f64, u32)> = probs.iter().enumerate().map(|(t, &x)| (x as f64, t as u32)).collect();
    p.sort_by(|a, b| b.0.total_cmp(&a.0));
    eprintln!("first-token distribution head: {:?}", &p[..4]);
    p.iter().find(|(x, _)| *x <= max_p).expect("a token under max_p").1
}

/// Trains `s` on `episodes` replies to `prompt` (seeds from `seed0`) with the rule reward +1 when
/// the reply starts with `target`, else -1.
fn train_on_first_token(s: &mut UserSession, prompt: &Prompt, target: u32, seed0: u64, episodes: usize, max_new: usize) {
    for i in 0..episodes {
        let opts = GenerateOptions {
            sampling: SamplingConfig { temperature: 1.0, seed: seed0 + i as u64, ..SamplingConfig::default() },
            max_new_tokens: max_new,
            ..GenerateOptions::default()
        };
        let reply = s.generate(prompt, &opts, &mut |_| true).unwrap();
        let first = s.learner().episode(reply.episode_id).unwrap().reply.first().copied();
        let r = if first == Some(target) { 1.0 } else { -1.0 };
        if let FeedbackOutcome::Updated(rep) = s.feedback(reply.episode_id, &Reward::scalar(r)).unwrap() {
            assert!(rep.mean_kl.is_finite() && rep.grad_norm.is_finite(), "{rep:?}");
        }
    }
}

/// Trains in rounds of `round` episodes until `p(target)` reaches `factor` times its base value or
/// `max_rounds` rounds have run; returns (p before, p after, episodes used, session).
fn train_until(rt: &Arc<Runtime>, prompt: &Prompt, target: u32, factor: f64, round: usize, max_rounds: usize, max_new: usize) -> (f64, f64, usize, UserSession) {
    let mut s = rt.open_session("rule-user").unwrap();
    let before = first_token_prob(rt, &s, prompt, target, 1.0);
    let mut after = before;
    let mut used = 0;
    for k in 0..max_rounds {
        train_on_first_token(&mut s, prompt, target, 100 + (k * round) as u64, round, max_new);
        used += round;
        after = first_token_prob(rt, &s, prompt, target, 1.0);
        eprintln!("after {used} episodes: p(target) {before:.3e} -> {after:.3e} ({:.1}x)", after / before);
        if after >= factor * before {
            break;
        }
    }
    (before, after, used, s)
}

/// The probe KL the guard measured is the one computed here from the runtime's probe records, and
/// learning spent some of it: the guard alone would pass an adapter that never moved.
fn spent_within_budget(rt: &Runtime, s: &UserSession, measured: Option<f64>, learner: &LearnerConfig) {
    let here = learn_support::probe_kl(s.learner().adapter(), rt.probes().unwrap(), learner.greedy_tau);
    learn_support::assert_close("probe KL", measured.expect("probes are set"), here, 1e-3, 1e-7);
    assert!(here > 1e-4 && here <= learner.kl_budget, "probe KL {here}");
}

#[test]
fn tiny_model_rule_reward_raises_the_target_token_within_budget() {
    let learner = LearnerConfig {
        lr: 3e-3,
        max_nll_drift: 0.5,
        max_entropy_drop: 0.9,
        max_same_sign_run: 0,
        max_updates_per_minute: 0,
        ..LearnerConfig::default()
    };
    let rt = runtime(common::tiny_dir(), learner.clone());
    let prompt = Prompt::Text("Tell me".into());
    // A token that the random base model gives a low but non-negligible probability.
    let tok = moderate_token(&rt, &prompt, 0.1);
    let (before, after, used, mut s) = train_until(&rt, &prompt, tok, 5.0, 25, 20, 1);
    let probe = s.learner_mut().probe_stats().unwrap();
    eprintln!("tiny: p(target) {before:.3e} -> {after:.3e} ({:.1}x) in {used} episodes; probe {:?}; counters {:?}", after / before, probe, s.learner().counters());
    assert!(after >= 5.0 * before, "p(target) {before} -> {after} after {used} episodes");
    spent_within_budget(&rt, &s, probe.map(|p| p.kl), &learner);
}

#[test]
fn tiny_model_adversarial_streams_stay_finite_and_roll_back() {
    let learner = LearnerConfig { lr: 5e-2, kl_budget: 0.02, max_same_sign_run: 0, max_updates_per_minute: 0, ..LearnerConfig::default() };
    let rt = runtime(common::tiny_dir(), learner);
    let prompt = Prompt::Chat(vec![Message::user("Hi")]);
    let streams: [(&str, Box<dyn Fn(usize) -> f32>); 3] = [
        ("always -1", Box::new(|_| -1.0)),
        ("random", Box::new(|i| if (i * 7919 + 13) % 5 < 2 { 1.0 } else { -1.0 })),
        ("sign flipping", Box::new(|i| if i % 2 == 0 { 1.0 } else { -1.0 })),
    ];
    for (name, f) in streams {
        let mut s = rt.open_session(name).unwrap();
        let (mut rolled, mut cut) = (0, 0);
        for i in 0..40 {
            let opts = GenerateOptions {
                sampling: SamplingConfig { temperature: 1.0, seed: i as u64, ..SamplingConfig::default() },
                max_new_tokens: 6,
                ..GenerateOptions::default()
            };
            let reply = s.generate(&prompt, &opts, &mut |_| true).unwrap();
            if let FeedbackOutcome::Updated(r) = s.feedback(reply.episode_id, &Reward::scalar(f(i))).unwrap() {
                assert!(r.mean_kl.is_finite() && r.grad_norm.is_finite() && r.beta.is_finite() && r.lr.is_finite(), "{name}: {r:?}");
                if matches!(r.outcome, UpdateOutcome::RolledBack(_)) {
                    rolled += 1;
                }
                if r.backtracks > 0 || r.projected.is_some() {
                    cut += 1;
                }
            }
            assert!(s.learner().adapter().all_finite(), "{name}: non-finite adapter");
        }
        let probe = s.learner_mut().probe_stats().unwrap().unwrap();
        eprintln!("{name}: {rolled} rollbacks, {cut} steps cut back to the budget, probe {probe:?}");
        assert!(probe.kl.is_finite() && probe.kl <= 0.02 + 1e-9, "{name}: KL {} after rollbacks", probe.kl);
        if name == "always -1" {
            // Steps that break the budget are halved or projected back inside it, else rolled back.
            assert!(rolled + cut > 0, "a large learning rate on a constant -1 stream must hit the KL budget");
        }
        // Non-finite rewards are rejected and change nothing.
        let reply = s.generate(&prompt, &GenerateOptions { max_new_tokens: 2, ..GenerateOptions::default() }, &mut |_| true).unwrap();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert!(s.feedback(reply.episode_id, &Reward::scalar(bad)).is_err());
        }
        assert!(s.feedback(u64::MAX, &Reward::thumbs(true)).is_err(), "unknown episode id");
    }
}

#[test]
fn zero_adapter_generation_equals_base_generation() {
    let rt = runtime(common::tiny_dir(), LearnerConfig::default());
    let mut s = rt.open_session("fresh").unwrap();
    let opts = GenerateOptions { sampling: SamplingConfig { temperature: 0.9, seed: 9, ..SamplingConfig::default() }, max_new_tokens: 16, ..GenerateOptions::default() };
    let p = Prompt::Text("Same text".into());
    let with = s.generate(&p, &opts, &mut |_| true).unwrap();
    let base = rt.model().generate(&p, &opts, None, &mut |_| true).unwrap();
    assert_eq!(with.text, base.text);
}

#[test]
fn real_model_rule_reward_learning_stays_within_budget() {
    let Some(dir) = common::real_dir() else { return };
    for alg in [Algorithm::Reinforce, Algorithm::A2c] {
        // The probe-NLL guard is relaxed to 10 % (as in the demo); the KL budget (0.1) is asserted.
        let learner = LearnerConfig { algorithm: alg, lr: 1e-3, max_nll_drift: 0.1, lr_recovery: 1.1, max_same_sign_run: 0, max_updates_per_minute: 0, ..LearnerConfig::default() };
        let rt = runtime(dir.clone(), learner.clone());
        let prompt = Prompt::Chat(vec![Message::user("What should I cook tonight?")]);
        let tok = moderate_token(&rt, &prompt, 0.2);
        let (before, after, used, mut s) = train_until(&rt, &prompt, tok, 2.0, 20, 10, 1);
        let probe = s.learner_mut().probe_stats().unwrap().unwrap();
        eprintln!(
            "real {alg:?}: p(target first) {before:.3e} -> {after:.3e} ({:.1}x) in {used} episodes; probe KL {:.4}, NLL drift {:.2}%; rollbacks {}",
            after / before,
            probe.kl,
            100.0 * (probe.nll - probe.base_nll) / probe.base_nll,
            s.learner().counters().rolled_back
        );
        assert!(after >= 2.0 * before, "{alg:?}: p(target) {before} -> {after} after {used} episodes");
        spent_within_budget(&rt, &s, Some(probe.kl), &learner);
    }
}

#[test]
#[ignore = "not met yet: soft-Q plateaued near 4x and ended at 2.0x in 500 episodes (soft_q_tau 0.5) against the 5x asserted; run with --ignored"]
fn tiny_model_soft_q_raises_the_rule_rewarded_token_within_budget() {
    // As the REINFORCE test above, under soft Q-learning: compact episodes are rebuilt by the model
    // when they are replayed, and the target adapter lags the adapter by up to 4 updates.
    let learner = LearnerConfig {
        algorithm: Algorithm::SoftQ,
        lr: 3e-3,
        max_nll_drift: 0.5,
        max_entropy_drop: 0.9,
        max_same_sign_run: 0,
        max_updates_per_minute: 0,
        ..LearnerConfig::default()
    };
    let rt = runtime(common::tiny_dir(), learner.clone());
    let prompt = Prompt::Text("Tell me".into());
    let tok = moderate_token(&rt, &prompt, 0.1);
    let (before, after, used, mut s) = train_until(&rt, &prompt, tok, 5.0, 25, 20, 1);
    let probe = s.learner_mut().probe_stats().unwrap();
    eprintln!("tiny soft-Q: p(target) {before:.3e} -> {after:.3e} ({:.1}x) in {used} episodes; probe {:?}; counters {:?}", after / before, probe, s.learner().counters());
    assert!(after >= 5.0 * before, "p(target) {before} -> {after} after {used} episodes");
    spent_within_budget(&rt, &s, probe.map(|p| p.kl), &learner);
    // One more rewarded reply: its update replays past episodes, rebuilt from their compact form.
    let opts = GenerateOptions { sampling: SamplingConfig { temperature: 1.0, seed: 7, ..SamplingConfig::default() }, max_new_tokens: 1, ..GenerateOptions::default() };
    let reply = s.generate(&prompt, &opts, &mut |_| true).unwrap();
    let FeedbackOutcome::Updated(rep) = s.feedback(reply.episode_id, &Reward::scalar(1.0)).unwrap() else { panic!("no update") };
    assert_eq!(rep.replayed_episodes, learner.soft_q_replay_batch, "{rep:?}");
    assert!(rep.rebuilt_episodes >= rep.replayed_episodes, "learned episodes are held compact: {rep:?}");
    assert!(rep.target_age.is_some_and(|a| a < learner.soft_q_target_period));
}
