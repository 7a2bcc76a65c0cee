//! The reward sources a session computes (fast tier, the tiny model): configured in the runtime
//! and asked for per call, each value equal to the same computation done another way (VADER read
//! again from `models/vader`, the checks evaluated on the reply, coherence from the episode's
//! records or rebuilt after a restart), z-scored per source and listed in the update report; a
//! non-finite callback result is an error and nothing is learned.

mod common;

use std::path::Path;
use std::sync::Arc;

use attune::generate::{GenerateOptions, Prompt, RecordedSampling, SamplingConfig, TokenRecord};
use attune::learn::sentiment::Vader;
use attune::learn::sources::{reward_from_json, CoherenceSource, SourceWeight, TaskSource};
use attune::learn::{CoherenceTerms, CoherenceWeights, FeedbackOutcome, LearnerConfig, Reward, RewardPart, RewardSource, RewardsConfig, Rule, RuleSet, SentimentOf};
use attune::runtime::{Reply, Runtime, RuntimeConfig, StoreConfig, UserSession};
use attune::tokenizer::Message;
use attune::Error;

fn checks() -> Vec<(f32, Rule)> {
    vec![(1.0, Rule::AvoidWord("sorry".into())), (2.0, Rule::Length { target: 6, tolerance: 6 }), (1.0, Rule::ValidJson)]
}

fn runtime(store: &Path, rewards: RewardsConfig) -> Arc<Runtime> {
    runtime_with(store, rewards, LearnerConfig { max_updates_per_minute: 0, ..LearnerConfig::default() })
}

fn runtime_with(store: &Path, rewards: RewardsConfig, learner: LearnerConfig) -> Arc<Runtime> {
    let cfg = RuntimeConfig {
        engine: common::cpu_config(common::tiny_dir()),
        store: StoreConfig { dir: Some(store.to_path_buf()), ..StoreConfig::default() },
        learner,
        probe_tokens: 8,
        rewards,
        ..RuntimeConfig::default()
    };
    Runtime::new(cfg).expect("runtime")
}

fn gen(s: &mut UserSession, seed: u64) -> Reply {
    let opts = GenerateOptions { sampling: SamplingConfig { temperature: 1.0, seed, ..SamplingConfig::default() }, max_new_tokens: 8, ..GenerateOptions::default() };
    let prompt = Prompt::Chat(vec![Message::user(format!("Tell me about day {seed}."))]);
    s.generate(&prompt, &opts, &mut |_| true).expect("generate")
}

fn report_parts(out: FeedbackOutcome) -> Vec<RewardPart> {
    match out {
        FeedbackOutcome::Updated(rep) => rep.rewards,
        other => panic!("expected an update, got {other:?}"),
    }
}

fn part<'a>(parts: &'a [RewardPart], source: &str) -> &'a RewardPart {
    parts.iter().find(|p| p.source == source).unwrap_or_else(|| panic!("no {source} in {parts:?}"))
}

/// The value a score carries (scores cross as f32).
fn as_score(x: f64) -> f64 {
    f64::from(x as f32)
}

#[test]
fn configured_sources_are_computed_reported_and_z_scored() {
    let store = tempfile::tempdir().unwrap();
    let rewards = RewardsConfig {
        coherence: Some(CoherenceSource { weight: 0.5, ..CoherenceSource::default() }),
        sentiment: Some(SourceWeight { weight: 0.25 }),
        task: Some(TaskSource { weight: 0.5, checks: checks() }),
        callback: Some(SourceWeight { weight: 2.0 }),
        vader_dir: None,
    };
    let rt = runtime(store.path(), rewards);
    let vader = Vader::load(&common::vader_dir()).unwrap();
    let mut s = rt.open_session("host").unwrap();
    let reply = gen(&mut s, 1);
    // The configured callback without a callback: refused, nothing recorded.
    assert!(matches!(s.feedback(reply.episode_id, &Reward::thumbs(true)), Err(Error::InvalidArgument(_))));
    assert_eq!(s.learner().counters().feedback, 0);
    s.set_reward_fn(Some(Box::new(|text: &str| text.chars().count() as f64)));

    let mut coherence_seen = Vec::new();
    for seed in 1..=3u64 {
        let reply = if seed == 1 { reply.clone() } else { gen(&mut s, seed) };
        let ep = s.learner().episode(reply.episode_id).unwrap();
        let want_coherence = CoherenceTerms::from_records(&ep.tokens, &reply.text, Some(reply.finish == attune::generate::FinishReason::Length), 3)
            .unwrap()
            .score(&CoherenceWeights::default());
        let parts = report_parts(s.feedback(reply.episode_id, &Reward::thumbs(seed != 2)).unwrap());
        assert_eq!(parts.iter().map(|p| p.source.as_str()).collect::<Vec<_>>(), ["thumbs", "coherence", "sentiment", "task", "callback"]);
        assert!(parts.iter().all(|p| p.episode_id == reply.episode_id));
        assert_eq!(part(&parts, "coherence").raw, as_score(want_coherence));
        assert_eq!(part(&parts, "sentiment").raw, as_score(vader.compound(&reply.text)));
        assert_eq!(part(&parts, "task").raw, f64::from(RuleSet::new(checks()).unwrap().evaluate(&reply.text)));
        assert_eq!(part(&parts, "callback").raw, reply.text.chars().count() as f64);
        for p in &parts {
            assert_eq!(p.contribution, p.weight * p.value, "{p:?}");
        }
        coherence_seen.push(as_score(want_coherence));
        if seed <= 2 {
            assert!(parts[1..].iter().all(|p| p.value == 0.0), "no statistics before two values: {parts:?}");
        } else {
            // The third value is z-scored against the first two (exact mean and spread).
            let (a, b, c) = (coherence_seen[0], coherence_seen[1], coherence_seen[2]);
            let (mean, sd) = ((a + b) / 2.0, ((a - b) / 2.0).abs().max(1e-3));
            let z = ((c - mean) / sd).clamp(-5.0, 5.0);
            assert!((part(&parts, "coherence").value - z).abs() < 1e-9, "{parts:?} vs {z}");
        }
    }
    // A second signal for a reply that was learned from adds only itself.
    let parts = report_parts(s.feedback(reply.episode_id, &Reward::scalar(0.5)).unwrap());
    assert_eq!(parts.iter().map(|p| p.source.as_str()).collect::<Vec<_>>(), ["outcome"]);
}

#[test]
fn per_call_sources_and_non_finite_results() {
    let store = tempfile::tempdir().unwrap();
    let rt = runtime(store.path(), RewardsConfig::default());
    let vader = Vader::load(&common::vader_dir()).unwrap();
    let mut s = rt.open_session("caller").unwrap();
    let reply = gen(&mut s, 5);
    let reward = reward_from_json(r#"[{"sentiment": {"text": "Thank you, that was really helpful!"}, "weight": 0.5}, {"task": [{"exact": "x"}]}]"#).unwrap();
    let parts = report_parts(s.feedback(reply.episode_id, &reward).unwrap());
    assert_eq!(part(&parts, "sentiment").raw, as_score(vader.compound("Thank you, that was really helpful!")));
    assert!(part(&parts, "sentiment").raw > 0.5);
    assert_eq!(part(&parts, "task").raw, -1.0);

    // Non-finite callback results are errors before anything is recorded.
    let reply = gen(&mut s, 6);
    let before = (s.learner().counters(), s.learner().history().clone());
    for bad in [f64::NAN, f64::INFINITY, 1e300] {
        s.set_reward_fn(Some(Box::new(move |_: &str| bad)));
        let e = s.feedback(reply.episode_id, &Reward::thumbs(true).and(1.0, RewardSource::Callback)).unwrap_err();
        assert!(matches!(e, Error::InvalidReward(_)), "{bad}: {e}");
    }
    assert_eq!((s.learner().counters(), s.learner().history().clone()), before, "nothing was learned");
    s.set_reward_fn(None);
    assert!(matches!(s.feedback(reply.episode_id, &Reward { parts: vec![(1.0, RewardSource::Callback)] }), Err(Error::InvalidArgument(_))));
    // Sentiment of the reply itself, per call.
    let parts = report_parts(s.feedback(reply.episode_id, &Reward { parts: vec![(1.0, RewardSource::Sentiment(SentimentOf::Reply))] }).unwrap());
    assert_eq!(part(&parts, "sentiment").raw, as_score(vader.compound(&reply.text)));
    // A bare learner has no model to compute them with.
    let mut l = attune::learn::Learner::new(LearnerConfig::default(), 4, 8).unwrap();
    let logprobs = (0..8).map(|_| half::f16::from_f32(-(8f32).ln())).collect();
    let record = TokenRecord { token: 2, hidden: vec![0.5, -1.0, 0.25, 2.0], base_logprobs: logprobs, behaviour_logprob: -(8f32).ln(), kept: None };
    let id = l.record_episode(vec![1, 2], vec![record], RecordedSampling::at(1.0)).unwrap();
    let e = l.give_feedback(id, &Reward::thumbs(true).and(1.0, RewardSource::Callback)).unwrap_err();
    assert!(matches!(&e, Error::InvalidReward(m) if m.contains("session")), "{e}");
    assert_eq!(l.counters().feedback, 0);
}

#[test]
fn coherence_of_a_reply_restored_after_a_restart_is_rebuilt() {
    let store = tempfile::tempdir().unwrap();
    let rewards = RewardsConfig { coherence: Some(CoherenceSource::default()), ..RewardsConfig::default() };
    let (id, want) = {
        let rt = runtime(store.path(), rewards.clone());
        let mut s = rt.open_session("restart").unwrap();
        let reply = gen(&mut s, 9);
        let ep = s.learner().episode(reply.episode_id).unwrap();
        // Restored replies have no finish reason: never counted as cut off.
        let terms = CoherenceTerms::from_records(&ep.tokens, &reply.text, None, 3).unwrap();
        (reply.episode_id, terms.score(&CoherenceWeights::default()))
    };
    let rt = runtime(store.path(), rewards);
    let mut s = rt.open_session("restart").unwrap();
    assert_eq!(s.restored_episodes(), 1);
    let parts = report_parts(s.feedback(id, &Reward::thumbs(true)).unwrap());
    let got = part(&parts, "coherence").raw;
    // Rebuilt by one teacher-forced pass: the same log-probabilities up to f16 rounding.
    assert!((got - want).abs() < 2e-2, "restored {got}, at generation {want}");
}

#[test]
fn vader_lexicon_missing_is_a_clear_error() {
    let store = tempfile::tempdir().unwrap();
    let rewards = RewardsConfig { vader_dir: Some(store.path().join("nowhere")), sentiment: Some(SourceWeight::default()), ..RewardsConfig::default() };
    let rt = runtime(store.path(), rewards);
    let mut s = rt.open_session("lexicon").unwrap();
    let reply = gen(&mut s, 3);
    let e = s.feedback(reply.episode_id, &Reward::thumbs(true)).unwrap_err();
    assert!(matches!(&e, Error::Config(m) if m.contains("make setup")), "{e}");
    assert_eq!(s.learner().counters().feedback, 0);
}

#[test]
fn queued_rewards_report_their_sources_after_a_reset() {
    let store = tempfile::tempdir().unwrap();
    let learner = LearnerConfig { max_updates_per_minute: 0, auto_update_after: 0, ..LearnerConfig::default() };
    let rt = runtime_with(store.path(), RewardsConfig { coherence: Some(CoherenceSource::default()), ..RewardsConfig::default() }, learner);
    let mut s = rt.open_session("queued").unwrap();
    let ids = [gen(&mut s, 11).episode_id, gen(&mut s, 12).episode_id];
    for id in ids {
        assert_eq!(s.feedback(id, &Reward::thumbs(true)).unwrap(), FeedbackOutcome::Queued);
    }
    // A reset changes the adapter, not the held episodes or what their rewards came from.
    s.reset().unwrap();
    let rep = s.update().unwrap();
    let mut got: Vec<(u64, &str)> = rep.rewards.iter().map(|p| (p.episode_id, p.source.as_str())).collect();
    got.sort();
    assert_eq!(got, vec![(ids[0], "coherence"), (ids[0], "thumbs"), (ids[1], "coherence"), (ids[1], "thumbs")]);
}
