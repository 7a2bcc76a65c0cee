//! Corrections learned as pairs on a tiny synthetic policy: the pair margin the learner reports is
//! the one computed here from the adapted and base log-probabilities, the corrected token rises
//! and the disliked one falls, kept corrections are replayed, a rolled-back update's reward and
//! pair are learned by a later one (the baseline counting the reward once), and every misuse is a
//! clear error.

mod learn_support;

use attune::adapter::{CpuMath, LoraConfig};
use attune::generate::{RecordedSampling, TokenRecord};
use attune::learn::{FeedbackOutcome, Learner, LearnerConfig, Reward, RollbackReason, UpdateOutcome};
use attune::Error;
use learn_support::{log_softmax, rng, TinyLm};

const V: usize = 32;
const D: usize = 16;
const TAU: f32 = 0.7;

fn config() -> LearnerConfig {
    LearnerConfig {
        adapter: LoraConfig { rank: 4, alpha: 8.0, top_k: 8, seed: 3 },
        lr: 0.01,
        auto_update_after: 1,
        max_updates_per_minute: 0,
        max_response_tokens: 4,
        // Replay is off by default; these tests check it.
        pair_replay: 2,
        ..LearnerConfig::default()
    }
}

/// Log-probability of `rec.token` at `rec.hidden` at temperature 1, adapted or base.
fn logp(l: &Learner, rec: &TokenRecord, adapted: bool) -> f64 {
    let mut z: Vec<f32> = rec.base_logprobs.iter().map(|x| x.to_f32()).collect();
    if adapted {
        l.adapter().add_delta(&rec.hidden, &mut z).unwrap();
    }
    f64::from(log_softmax(&z)[rec.token as usize])
}

/// The DPO margin computed here: `sum_w (log p - log q) - sum_l (log p - log q)`.
fn margin(l: &Learner, chosen: &[TokenRecord], rejected: &[TokenRecord]) -> f64 {
    let side = |recs: &[TokenRecord]| -> f64 { recs.iter().map(|r| logp(l, r, true) - logp(l, r, false)).sum() };
    side(chosen) - side(rejected)
}

/// A sampled reply of three tokens and a correction that replaces its first token by `wanted`
/// (teacher-forced records: the same positions, so the rest is copied).
fn pair(lm: &TinyLm, l: &Learner, seed: u64, wanted: u32) -> (Vec<TokenRecord>, Vec<TokenRecord>) {
    let mut r = rng(seed);
    let rejected: Vec<TokenRecord> = (0..3).map(|_| lm.sample(l.adapter(), lm.hidden(&mut r), TAU, None, &mut r)).collect();
    let mut chosen = rejected.clone();
    chosen[0].token = if rejected[0].token == wanted { (wanted + 1) % V as u32 } else { wanted };
    for rec in chosen.iter_mut() {
        rec.behaviour_logprob = 0.0;
    }
    (chosen, rejected)
}

fn record(l: &mut Learner, recs: &[TokenRecord]) -> u64 {
    l.record_episode(vec![7], recs.to_vec(), RecordedSampling::at(TAU)).unwrap()
}

/// Teacher-forced records of a reply (as the runtime makes them): behaviour 0, no kept set.
fn forced(recs: &[TokenRecord]) -> Vec<TokenRecord> {
    recs.iter().map(|r| TokenRecord { behaviour_logprob: 0.0, kept: None, ..r.clone() }).collect()
}

#[test]
fn a_correction_moves_the_pair_and_reports_the_margin_computed_here() {
    let lm = TinyLm::new(V, D, 2.0, 2100);
    let mut l = Learner::new(config(), D, V).unwrap();
    let (chosen, rejected) = pair(&lm, &l, 2101, 5);
    let id = record(&mut l, &rejected);
    let (w0, l0) = (logp(&l, &chosen[0], true), logp(&l, &rejected[0], true));
    let (cid, out) = l.give_correction(id, chosen.clone(), forced(&rejected)).unwrap();
    let FeedbackOutcome::Updated(rep) = out else { panic!("a correction completes a batch of 1: {out:?}") };
    assert_eq!(rep.outcome, UpdateOutcome::Accepted, "{rep:?}");
    assert_eq!((rep.pairs, rep.replayed_pairs, rep.episode_ids.clone()), (1, 0, vec![cid]));
    assert_eq!(rep.pair_margin, Some(0.0), "the identity adapter is the reference");
    assert!((rep.loss.pair - std::f64::consts::LN_2).abs() < 1e-12, "{}", rep.loss.pair);
    // Each later update (here: feedback for other replies) replays the kept correction; the
    // margin it reports before its step is the one computed here after the previous step.
    let mut r = rng(2102);
    let mut last = 0.0;
    for k in 0..4 {
        let expect = margin(&l, &chosen, &rejected);
        assert!(expect > last, "update {k}: the margin grows ({last} -> {expect})");
        last = expect;
        let other: Vec<TokenRecord> = (0..3).map(|_| lm.sample(l.adapter(), lm.hidden(&mut r), TAU, None, &mut r)).collect();
        let oid = record(&mut l, &other);
        let FeedbackOutcome::Updated(rep) = l.give_feedback(oid, &Reward::thumbs(k % 2 == 0)).unwrap() else { panic!("no update") };
        assert_eq!((rep.pairs, rep.replayed_pairs), (1, 1), "update {k}: {rep:?}");
        assert_eq!(rep.episode_ids, vec![cid, oid]);
        let got = rep.pair_margin.unwrap();
        assert!((got - expect).abs() < 1e-4 * (1.0 + expect.abs()), "update {k}: reported {got}, computed {expect}");
    }
    assert!(logp(&l, &chosen[0], true) > w0 + 0.3, "the corrected token rose: {w0} -> {}", logp(&l, &chosen[0], true));
    assert!(logp(&l, &rejected[0], true) < l0 - 0.03, "the disliked token fell: {l0} -> {}", logp(&l, &rejected[0], true));
    assert_eq!(l.episode(cid).unwrap().times_learned(), 5);
    // The corrected reply still takes rewards of its own; the correction takes none.
    assert!(l.give_feedback(id, &Reward::thumbs(false)).is_ok());
    assert!(matches!(l.give_feedback(cid, &Reward::thumbs(true)), Err(Error::InvalidArgument(m)) if m.contains("correction")));
}

#[test]
fn misused_corrections_are_clear_errors_and_record_nothing() {
    let lm = TinyLm::new(V, D, 6.0, 2200);
    let mut l = Learner::new(LearnerConfig { auto_update_after: 0, ..config() }, D, V).unwrap();
    let (chosen, rejected) = pair(&lm, &l, 2201, 9);
    let id = record(&mut l, &rejected);
    let held = l.pending_episodes();
    assert!(matches!(l.give_correction(999, chosen.clone(), forced(&rejected)), Err(Error::UnknownEpisode { id: 999, .. })));
    assert!(matches!(l.give_correction(id, forced(&rejected), forced(&rejected)), Err(Error::InvalidArgument(m)) if m.contains("same")));
    assert!(matches!(l.give_correction(id, chosen.clone(), chosen.clone()), Err(Error::InvalidArgument(m)) if m.contains("do not match")));
    assert!(matches!(l.give_correction(id, chosen.clone(), Vec::new()), Err(Error::InvalidArgument(_))));
    assert!(matches!(l.give_correction(id, Vec::new(), forced(&rejected)), Err(Error::InvalidArgument(_))));
    let demo = l.record_demonstration(vec![7], chosen.clone(), RecordedSampling::at(1.0)).unwrap();
    assert!(matches!(l.give_correction(demo, chosen.clone(), forced(&chosen)), Err(Error::InvalidArgument(m)) if m.contains("sampled reply")));
    assert_eq!(l.pending_episodes(), held + 1, "only the demonstration was recorded");
    let (cid, out) = l.give_correction(id, chosen.clone(), forced(&rejected)).unwrap();
    assert_eq!(out, FeedbackOutcome::Queued, "auto updates are off");
    assert!(matches!(l.give_correction(cid, chosen, forced(&rejected)), Err(Error::InvalidArgument(m)) if m.contains("sampled reply")));
}

#[test]
fn a_rolled_back_updates_reward_and_pair_are_learned_later_and_the_baseline_counts_the_reward_once() {
    let lm = TinyLm::new(V, D, 6.0, 2300);
    let mut l = Learner::new(LearnerConfig { auto_update_after: 0, ..config() }, D, V).unwrap().with_math(Box::new(learn_support::ExplodeFirst(CpuMath::new(), 1)));
    let (chosen, rejected) = pair(&lm, &l, 2301, 11);
    let id = record(&mut l, &rejected);
    assert_eq!(l.give_feedback(id, &Reward::thumbs(false)).unwrap(), FeedbackOutcome::Queued);
    let (cid, _) = l.give_correction(id, chosen.clone(), forced(&rejected)).unwrap();
    let rep = l.update().unwrap();
    assert_eq!(rep.outcome, UpdateOutcome::RolledBack(RollbackReason::NonFinite));
    assert_eq!((rep.pairs, rep.returned_episodes, rep.dropped_signals), (1, 2, 0), "{rep:?}");
    assert!(l.adapter().is_identity());
    assert_eq!(l.episode(id).unwrap().reward(), Some(-1.0), "the reward waits");
    assert_eq!(l.episode(cid).unwrap().times_learned(), 0, "the pair waits");
    assert_eq!(l.snapshot().baseline.count, 1);
    assert_eq!(l.counters().returned_signals, 2);
    let mean = l.snapshot().baseline.mean;

    let rep = l.update().unwrap();
    assert_eq!(rep.outcome, UpdateOutcome::Accepted, "{rep:?}");
    assert_eq!((rep.episode_ids.clone(), rep.pairs, rep.replayed_pairs), (vec![id, cid], 1, 0));
    assert_eq!(rep.pair_margin, Some(0.0), "retried from the same adapter");
    assert_eq!((l.snapshot().baseline.count, l.snapshot().baseline.mean), (1, mean), "the reward entered the baseline once");
    assert_eq!((l.episode(id).unwrap().reward(), l.episode(id).unwrap().times_learned()), (None, 1));
    assert_eq!(l.episode(cid).unwrap().times_learned(), 1);
    assert!(margin(&l, &chosen, &rejected) > 0.0);
}

#[test]
fn kept_corrections_are_bounded_and_the_least_replayed_go_first() {
    let lm = TinyLm::new(V, D, 6.0, 2400);
    let cfg = LearnerConfig { pair_capacity: 3, pair_replay: 2, ..config() };
    let mut l = Learner::new(cfg, D, V).unwrap();
    let mut ids = Vec::new();
    for k in 0..5u64 {
        let (chosen, rejected) = pair(&lm, &l, 2401 + k, 3 + k as u32);
        let id = record(&mut l, &rejected);
        let (cid, out) = l.give_correction(id, chosen, forced(&rejected)).unwrap();
        let FeedbackOutcome::Updated(rep) = out else { panic!("no update") };
        // The new pair plus up to two kept ones, never more than are kept.
        assert_eq!(rep.replayed_pairs, (k as usize).min(2), "{rep:?}");
        assert_eq!(rep.pairs, rep.replayed_pairs + 1);
        ids.push(cid);
    }
    let kept: Vec<u64> = ids.iter().copied().filter(|&c| l.episode(c).is_ok()).collect();
    assert_eq!(kept.len(), 3, "pair_capacity");
    assert!(matches!(l.episode(ids[0]), Err(Error::UnknownEpisode { reason, .. }) if reason.contains("pair_capacity")));
}
