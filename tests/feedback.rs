//! Feedback a host can trust: episode ids unique for the life of a user (across rollback, reset,
//! import, a new session and a new runtime), delayed feedback after a restart, several signals per
//! reply, expiry with its reason, consistent dissatisfaction learned rather than dropped, and the
//! model fingerprint covering the weights. Fast tier: the tiny model and a synthetic policy.

mod common;
mod learn_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use attune::adapter::LoraConfig;
use attune::generate::{GenerateOptions, Prompt, RecordedSampling, SamplingConfig, TokenRecord};
use attune::learn::{FeedbackOutcome, Learner, LearnerConfig, Reward, UpdateOutcome};
use attune::runtime::{Runtime, RuntimeConfig, StoreConfig, UserSession};
use attune::tokenizer::Message;
use attune::Error;
use learn_support::{rng, TinyLm};

fn runtime(model: PathBuf, store: &Path, learner: LearnerConfig) -> Arc<Runtime> {
    let cfg = RuntimeConfig {
        engine: common::cpu_config(model),
        store: StoreConfig { dir: Some(store.to_path_buf()), ..StoreConfig::default() },
        learner,
        probe_tokens: 8,
        ..RuntimeConfig::default()
    };
    Runtime::new(cfg).expect("runtime")
}

fn learner() -> LearnerConfig {
    LearnerConfig { max_updates_per_minute: 0, ..LearnerConfig::default() }
}

fn gen(s: &mut UserSession, seed: u64) -> u64 {
    let opts = GenerateOptions { sampling: SamplingConfig { temperature: 1.0, seed, ..SamplingConfig::default() }, max_new_tokens: 6, ..GenerateOptions::default() };
    let prompt = Prompt::Chat(vec![Message::user(format!("Tell me about day {seed}."))]);
    s.generate(&prompt, &opts, &mut |_| true).expect("generate").episode_id
}

/// The report of the update a signal ran, or of an explicit update when it only queued.
fn learn(s: &mut UserSession, id: u64, reward: &Reward) -> attune::learn::UpdateReport {
    match s.feedback(id, reward).expect("feedback accepted") {
        FeedbackOutcome::Updated(rep) => rep,
        FeedbackOutcome::Queued => s.update().expect("update"),
        other => panic!("feedback for {id}: {other:?}"),
    }
}

#[test]
fn ids_stay_unique_and_old_ids_train_their_own_reply() {
    let store = tempfile::tempdir().unwrap();
    let rt = runtime(common::tiny_dir(), store.path(), learner());
    let mut s = rt.open_session("caller-1").unwrap();
    let mut ids = vec![gen(&mut s, 1), gen(&mut s, 2)];
    assert!(learn(&mut s, ids[0], &Reward::thumbs(true)).episode_ids.contains(&ids[0]));
    s.save().unwrap();
    ids.push(gen(&mut s, 3));
    learn(&mut s, ids[2], &Reward::thumbs(false));
    s.save().unwrap();
    let before_rollback = gen(&mut s, 4);
    ids.push(before_rollback);
    s.rollback(1).unwrap();
    ids.push(gen(&mut s, 5));
    let exported = s.export().unwrap();
    s.import(&exported).unwrap();
    let before_reset = gen(&mut s, 6);
    ids.push(before_reset);
    s.reset().unwrap();
    ids.push(gen(&mut s, 7));
    drop(s);
    let mut s = rt.open_session("caller-1").unwrap();
    let before_restart = gen(&mut s, 8);
    ids.push(before_restart);
    drop(s);
    drop(rt);
    let rt = runtime(common::tiny_dir(), store.path(), learner());
    let mut s = rt.open_session("caller-1").unwrap();
    ids.push(gen(&mut s, 9));
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "every reply got its own id: {ids:?}");

    // Feedback for ids issued before the rollback, the reset and the restart trains exactly that
    // reply, as a sample of an earlier adapter (through the importance ratio).
    for (what, id) in [("rollback", before_rollback), ("reset", before_reset), ("restart", before_restart)] {
        let rep = learn(&mut s, id, &Reward::thumbs(true));
        assert_eq!(rep.episode_ids, vec![id], "{what}: {rep:?}");
        assert_eq!(rep.stale_episodes, 1, "{what}: sampled by an earlier adapter");
        assert!(rep.max_mean_ratio.is_some(), "{what}: importance-weighted");
        assert_ne!(rep.outcome, UpdateOutcome::Skipped(attune::learn::SkipReason::RatioTooLarge), "{what}");
        if what == "restart" {
            assert_eq!(rep.rebuilt_episodes, 1, "restored compact, rebuilt by a teacher-forced pass");
        }
    }
    // An id never issued is refused with the reason, and reaches no reply.
    let never = s.learner().next_episode_id() + 10;
    assert!(matches!(s.feedback(never, &Reward::thumbs(true)), Err(Error::UnknownEpisode { reason, .. }) if reason.contains("never") || reason.contains("no episode")));
    // Forget-me: the old ids are unknown from now on and never reissued in this session.
    s.forget().unwrap();
    assert!(matches!(s.feedback(before_restart, &Reward::thumbs(true)), Err(Error::UnknownEpisode { reason, .. }) if reason.contains("forgotten")));
    let after = gen(&mut s, 10);
    assert!(!unique.contains(&after));
}

#[test]
fn delayed_feedback_after_a_restart_trains_and_expired_ids_say_so() {
    let store = tempfile::tempdir().unwrap();
    let cfg = LearnerConfig { auto_update_after: 0, ..learner() };
    let rt = runtime(common::tiny_dir(), store.path(), cfg.clone());
    let mut s = rt.open_session("+1 555 0100").unwrap();
    let ids: Vec<u64> = (0..5).map(|i| gen(&mut s, 20 + i)).collect();
    let bytes_in_ram = s.learner().episodes_memory_bytes();
    // The app is killed: no save, the session and the runtime are gone.
    drop(s);
    drop(rt);
    let pending = store.path().read_dir().unwrap().flatten().map(|d| d.path().join(attune::store::PENDING_FILE)).find(|p| p.is_file());
    let on_disk = std::fs::metadata(pending.expect("pending episodes on disk")).unwrap().len();
    eprintln!("5 episodes of 6 tokens: {bytes_in_ram} bytes in RAM, {on_disk} bytes on disk");
    let rt = runtime(common::tiny_dir(), store.path(), cfg);
    let mut s = rt.open_session("+1 555 0100").unwrap();
    assert_eq!(s.restored_episodes(), 5);
    for (i, &id) in ids.iter().enumerate() {
        let r = if i % 2 == 0 { Reward::thumbs(true) } else { Reward::scalar(-0.5) };
        assert_eq!(s.feedback(id, &r).unwrap(), FeedbackOutcome::Queued);
    }
    let rep = s.update().unwrap();
    assert_eq!(rep.episode_ids, ids, "the update used the five delayed signals: {rep:?}");
    assert_eq!(rep.rebuilt_episodes, 5);
    assert!(rep.accepted(), "{rep:?}");

    // A short time to live: the id is refused with "expired", after a restart too.
    let cfg = LearnerConfig { episode_ttl_s: 1, ..learner() };
    let store2 = tempfile::tempdir().unwrap();
    let rt = runtime(common::tiny_dir(), store2.path(), cfg.clone());
    let mut s = rt.open_session("u").unwrap();
    let old = gen(&mut s, 40);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let fresh = gen(&mut s, 41);
    assert!(matches!(s.feedback(old, &Reward::thumbs(true)), Err(Error::UnknownEpisode { reason, .. }) if reason.contains("expired")));
    drop(s);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let mut s = rt.open_session("u").unwrap();
    assert!(matches!(s.feedback(fresh, &Reward::thumbs(true)), Err(Error::UnknownEpisode { reason, .. }) if reason.contains("expired")));
}

#[test]
fn a_weights_file_that_differs_by_one_byte_refuses_the_adapter_without_rehashing_every_open() {
    let model = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(common::tiny_dir()).unwrap().flatten() {
        std::fs::copy(f.path(), model.path().join(f.file_name())).unwrap();
    }
    let store = tempfile::tempdir().unwrap();
    let rt = runtime(model.path().to_path_buf(), store.path(), learner());
    assert!(rt.weights_check().hashed_bytes > 0, "the first open hashes the weights");
    let mut s = rt.open_session("u").unwrap();
    gen(&mut s, 1);
    s.save().unwrap();
    drop(s);
    drop(rt);
    let rt = runtime(model.path().to_path_buf(), store.path(), learner());
    assert_eq!((rt.weights_check().hashed_bytes, rt.weights_check().cached), (0, 1), "an unchanged file is not read again");
    rt.open_session("u").expect("the adapter loads on the same weights");
    drop(rt);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let data = model.path().join("model.onnx.data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[4096] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();
    let rt = runtime(model.path().to_path_buf(), store.path(), learner());
    assert!(rt.weights_check().hashed_bytes > 0);
    match rt.open_session("u") {
        Err(Error::CorruptAdapter { reason, .. }) => assert!(reason.contains("another base model"), "{reason}"),
        other => panic!("expected the fingerprint error, got {other:?}"),
    }
}

const V: usize = 32;
const D: usize = 16;

/// The learner's defaults with an adapter shaped for the 32-token synthetic policy.
fn small_defaults() -> LearnerConfig {
    LearnerConfig { adapter: LoraConfig { rank: 4, alpha: 8.0, top_k: 8, seed: 3 }, max_response_tokens: 4, ..LearnerConfig::default() }
}

fn probe_mass(l: &Learner, probes: &[TokenRecord], token: usize) -> f64 {
    probes
        .iter()
        .map(|rec| {
            let mut z: Vec<f32> = rec.base_logprobs.iter().map(|x| x.to_f32()).collect();
            l.adapter().add_delta(&rec.hidden, &mut z).unwrap();
            let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let e: Vec<f64> = z.iter().map(|&x| (((x - m) / 0.7) as f64).exp()).collect();
            e[token] / e.iter().sum::<f64>()
        })
        .sum::<f64>()
        / probes.len() as f64
}

/// 150 thumbs from a user who wants `target`, which the model rarely says: returns (negative
/// thumbs, ignored thumbs, p(target) before, after).
fn mostly_negative_stream(cfg: LearnerConfig) -> (usize, usize, f64, f64) {
    let lm = TinyLm::new(V, D, 3.0, 700);
    let mut l = Learner::new(cfg, D, V).unwrap();
    let mut r = rng(701);
    let fresh = Learner::new(small_defaults(), D, V).unwrap();
    let probes: Vec<TokenRecord> = (0..48).map(|_| lm.sample(fresh.adapter(), lm.hidden(&mut r), 0.7, None, &mut r)).collect();
    l.set_probes(probes.clone(), 0.7).unwrap();
    let target = (0..V).min_by(|&a, &b| (probe_mass(&l, &probes, a) - 0.01).abs().total_cmp(&(probe_mass(&l, &probes, b) - 0.01).abs())).unwrap();
    let p0 = probe_mass(&l, &probes, target);
    let (mut negative, mut ignored) = (0, 0);
    for _ in 0..150 {
        let recs: Vec<TokenRecord> = (0..4).map(|_| lm.sample(l.adapter(), lm.hidden(&mut r), 0.7, None, &mut r)).collect();
        let liked = recs.iter().any(|t| t.token as usize == target);
        negative += usize::from(!liked);
        let id = l.record_episode(vec![0], recs, RecordedSampling::at(0.7)).unwrap();
        if let FeedbackOutcome::Ignored(_) = l.give_feedback(id, &Reward::thumbs(liked)).unwrap() {
            ignored += 1;
        }
    }
    assert_eq!(l.counters().ignored_feedback as usize, ignored);
    assert!(l.adapter().all_finite());
    (negative, ignored, p0, probe_mass(&l, &probes, target))
}

#[test]
fn a_mostly_negative_stream_is_learned_not_dropped() {
    // The library's defaults (adapter shaped for the synthetic policy; no rate limit so that the
    // test does not depend on the clock) against the same stream under the former same-sign cap.
    let defaults = LearnerConfig { max_updates_per_minute: 0, ..small_defaults() };
    let (negative, ignored, p0, p1) = mostly_negative_stream(defaults.clone());
    let (_, ignored_capped, _, p1_capped) = mostly_negative_stream(LearnerConfig { max_same_sign_run: 8, ..defaults });
    eprintln!("{negative} of 150 negative; defaults: {ignored} ignored, p(target) {p0:.4} -> {p1:.4}; cap 8: {ignored_capped} ignored, -> {p1_capped:.4}");
    assert!(negative as f64 >= 0.85 * 150.0, "the stream is mostly negative ({negative})");
    assert!(ignored as f64 <= 0.05 * 150.0, "{ignored} of 150 thumbs ignored");
    assert!(ignored_capped >= 30, "the old cap dropped a real user's feedback ({ignored_capped})");
    assert!(p1 > p0, "the consistent dislike moved mass toward what the user wants: p(target) {p0} -> {p1}");
}

#[test]
fn signals_before_an_update_add_up_and_later_ones_are_learned_too() {
    let lm = TinyLm::new(V, D, 3.0, 800);
    let mut l = Learner::new(LearnerConfig { auto_update_after: 0, ..small_defaults() }, D, V).unwrap();
    let mut r = rng(801);
    let recs: Vec<TokenRecord> = (0..4).map(|_| lm.sample(l.adapter(), lm.hidden(&mut r), 0.7, None, &mut r)).collect();
    let id = l.record_episode(vec![0], recs, RecordedSampling::at(0.7)).unwrap();
    assert_eq!(l.give_feedback(id, &Reward::thumbs(true)).unwrap(), FeedbackOutcome::Queued);
    assert_eq!(l.give_feedback(id, &Reward::scalar(-0.25)).unwrap(), FeedbackOutcome::Queued);
    assert_eq!(l.episode(id).unwrap().reward(), Some(0.75), "a barge-in and an outcome merge by summing");
    let first = l.update().unwrap();
    assert_eq!(first.episode_ids, vec![id]);
    assert!(first.accepted(), "{first:?}");
    assert_eq!(l.give_feedback(id, &Reward::stars(5)).unwrap(), FeedbackOutcome::Queued, "a survey after the update is taken");
    let rep = l.update().unwrap();
    assert_eq!((rep.episode_ids, rep.stale_episodes), (vec![id], 1), "learned again, as a sample of the adapter before the first update");
}

/// A rollback installs the saved adapter itself: the live session then measures exactly what a
/// session reopened on that version measures, and its weights are the saved ones.
#[test]
fn rollback_installs_the_saved_adapter_in_the_live_session() {
    let store = tempfile::tempdir().unwrap();
    let rt = runtime(common::tiny_dir(), store.path(), learner());
    let mut s = rt.open_session("caller-rb").unwrap();
    s.save().unwrap();
    let fresh = s.learner().snapshot().head;
    for seed in 0..4 {
        let id = gen(&mut s, 100 + seed);
        learn(&mut s, id, &Reward::thumbs(seed % 2 == 0));
    }
    let trained_kl = s.learner_mut().probe_stats().unwrap().expect("probes").kl;
    assert!(trained_kl > 0.0, "four updates must move the adapter off the base (probe KL {trained_kl})");
    s.save().unwrap();
    s.rollback(1).unwrap();
    let live = s.learner_mut().probe_stats().unwrap().expect("probes");
    assert_eq!(s.learner().snapshot().head, fresh, "rollback(1) must install the version saved before training");
    assert_eq!(live.kl, 0.0, "the rolled-back (fresh) adapter measured {} on the probes, the trained one {trained_kl}", live.kl);
}

#[test]
fn corrections_are_learned_as_pairs_kept_across_a_restart_and_forgotten_with_the_user() {
    let store = tempfile::tempdir().unwrap();
    // Replay is off by default; this test checks it.
    let learner = || LearnerConfig { pair_replay: 2, ..learner() };
    let rt = runtime(common::tiny_dir(), store.path(), learner());
    let mut s = rt.open_session("fixer").unwrap();
    let a = gen(&mut s, 1);
    // Before the reply's reward: the correction completes a batch of one and is learned as a pair.
    let (c1, out) = s.correct(a, "Sure, here it is.").unwrap();
    let FeedbackOutcome::Updated(rep) = out else { panic!("{out:?}") };
    assert_eq!(rep.outcome, UpdateOutcome::Accepted, "{rep:?}");
    assert_eq!((rep.episode_ids.clone(), rep.pairs, rep.replayed_pairs), (vec![c1], 1, 0));
    assert_eq!(s.last_report().map(|r| r.pairs), Some(1));
    // The reply still takes its reward; that update replays the kept correction.
    let rep = learn(&mut s, a, &Reward::thumbs(false));
    assert_eq!((rep.episode_ids.clone(), rep.pairs, rep.replayed_pairs), (vec![a, c1], 1, 1));
    assert!(rep.pair_margin.is_some_and(|m| m > 0.0), "the first step moved the pair apart: {rep:?}");
    // After its reward was learned, the same reply can be corrected again.
    let (c2, _) = s.correct(a, "A second answer.").unwrap();
    assert!(matches!(s.correct(u64::MAX, "x"), Err(Error::UnknownEpisode { .. })));
    assert!(matches!(s.correct(a, "  "), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.correct(c1, "No."), Err(Error::InvalidArgument(m)) if m.contains("sampled reply")));
    s.save().unwrap();
    drop(s);
    drop(rt);

    // After a restart the kept corrections come back (compact) with their disliked replies, and
    // the next update rebuilds and replays them.
    let rt = runtime(common::tiny_dir(), store.path(), learner());
    let mut s = rt.open_session("fixer").unwrap();
    for c in [c1, c2] {
        let ep = s.learner().episode(c).unwrap();
        assert_eq!(ep.rejected().map(|r| (r.id, r.reply.clone())), Some((a, s.learner().episode(a).unwrap().reply.clone())));
        assert!(!ep.is_resident());
    }
    let (c3, out) = s.correct(a, "After a restart.").unwrap();
    let FeedbackOutcome::Updated(rep) = out else { panic!("{out:?}") };
    assert_eq!(rep.outcome, UpdateOutcome::Accepted, "{rep:?}");
    assert_eq!((rep.pairs, rep.replayed_pairs, rep.rebuilt_episodes), (3, 2, 2), "{rep:?}");
    assert_eq!(rep.episode_ids, vec![c1, c2, c3]);
    // Rollback and reset keep them (like every held episode); forgetting the user drops them.
    s.save().unwrap();
    s.reset().unwrap();
    assert!(s.learner().episode(c3).is_ok());
    s.forget().unwrap();
    drop(s);
    let mut s = rt.open_session("fixer").unwrap();
    assert!(matches!(s.correct(a, "Gone."), Err(Error::UnknownEpisode { .. })));
    assert!(s.learner().episode(c1).is_err());
}
