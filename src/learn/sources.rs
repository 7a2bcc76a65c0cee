//! The reward sources a session computes itself, and rewards as JSON.
//!
//! A runtime's configuration may enable sources (`"rewards"`: coherence, the sentiment of the
//! reply, task checks, the host's callback) that are added to the first feedback every reply gets,
//! and each feedback call may ask for them too (`{"coherence": {}}`, `{"sentiment": {"text":
//! "..."}}`, `{"task": [...]}`, `{"callback": true}`). Each computed value enters the reward as a
//! named score (`"coherence"`, `"sentiment"`, `"task"`, `"callback"`), z-scored with that name's
//! running statistics, and each appears in the next update's report with its contribution.

use std::path::PathBuf;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::coherence::CoherenceWeights;
use super::reward::{Reward, RewardSource, Rule, RuleSet, SentimentOf};
use crate::error::{Error, Result};

/// The sources a runtime computes for every reply, added to its first feedback.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardsConfig {
    /// Where VADER's lexicons are (`vader_lexicon.txt`, `emoji_utf8_lexicon.txt`); `None`: the
    /// folder `vader` beside the model folder (`models/vader`, made by `make setup`).
    pub vader_dir: Option<PathBuf>,
    /// The reply's coherence, with its weight and terms.
    pub coherence: Option<CoherenceSource>,
    /// VADER's compound score of the reply.
    pub sentiment: Option<SourceWeight>,
    /// Host-defined checks on the reply.
    pub task: Option<TaskSource>,
    /// The host's reward callback on the reply text (C: `attune_session_set_reward_callback`;
    /// Rust: `UserSession::set_reward_fn`); feedback fails while none is set.
    pub callback: Option<SourceWeight>,
}

/// A configured source's weight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceWeight {
    /// The weight of the source's z-score in the reward.
    pub weight: f32,
}

impl Default for SourceWeight {
    fn default() -> Self {
        SourceWeight { weight: 1.0 }
    }
}

/// The configured coherence source: its weight and the formula's weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoherenceSource {
    /// The weight of the coherence z-score in the reward.
    pub weight: f32,
    /// Weight of the mean NLL per token.
    pub nll: f64,
    /// Weight of the repeated-n-gram fraction.
    pub repetition: f64,
    /// Weight of a reply cut off mid-sentence.
    pub cutoff: f64,
    /// The n of the repeated n-grams (tokens).
    pub ngram: usize,
}

impl Default for CoherenceSource {
    fn default() -> Self {
        let w = CoherenceWeights::default();
        CoherenceSource { weight: 1.0, nll: w.nll, repetition: w.repetition, cutoff: w.cutoff, ngram: w.ngram }
    }
}

impl CoherenceSource {
    /// The formula's weights.
    pub fn weights(&self) -> CoherenceWeights {
        CoherenceWeights { nll: self.nll, repetition: self.repetition, cutoff: self.cutoff, ngram: self.ngram }
    }
}

/// The configured task checks and their weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSource {
    /// The weight of the task z-score in the reward.
    #[serde(default = "one")]
    pub weight: f32,
    /// The checks, each with its own weight (see [`checks_from_json`]).
    #[serde(serialize_with = "checks_to_json", deserialize_with = "checks_de")]
    pub checks: Vec<(f32, Rule)>,
}

fn one() -> f32 {
    1.0
}

impl RewardsConfig {
    /// Checks weights and compiles the task checks.
    pub fn validate(&self) -> Result<()> {
        let weight = |name: &str, w: f32| {
            let max = super::reward::MAX_REWARD_WEIGHT;
            if w.is_finite() && w.abs() <= max {
                Ok(())
            } else {
                Err(Error::Config(format!("rewards.{name}.weight must be in [-{max}, {max}], got {w}")))
            }
        };
        if let Some(c) = &self.coherence {
            weight("coherence", c.weight)?;
            c.weights().validate()?;
        }
        if let Some(s) = &self.sentiment {
            weight("sentiment", s.weight)?;
        }
        if let Some(c) = &self.callback {
            weight("callback", c.weight)?;
        }
        if let Some(t) = &self.task {
            weight("task", t.weight)?;
            RuleSet::new(t.checks.clone()).map_err(|e| Error::Config(format!("rewards.task.checks: {e}")))?;
        }
        Ok(())
    }

    /// The configured sources as reward parts.
    pub fn parts(&self) -> Vec<(f32, RewardSource)> {
        let mut out = Vec::new();
        if let Some(c) = &self.coherence {
            out.push((c.weight, RewardSource::Coherence(c.weights())));
        }
        if let Some(s) = &self.sentiment {
            out.push((s.weight, RewardSource::Sentiment(SentimentOf::Reply)));
        }
        if let Some(t) = &self.task {
            out.push((t.weight, RewardSource::Task(t.checks.clone())));
        }
        if let Some(c) = &self.callback {
            out.push((c.weight, RewardSource::Callback));
        }
        out
    }
}

/// Parses task checks: a list whose entries are `"valid_json"` or an object with one check and an
/// optional `"weight"` (default 1): `{"use_word": "refund"}` (alias `contains`), `{"avoid_word":
/// "sorry"}` (alias `avoids`), `{"use_regex": "..."}` (alias `matches`), `{"avoid_regex": "..."}`,
/// `{"starts_with": "Sure"}`, `{"length": {"target": 40, "tolerance": 20}}`, `{"exact": "Paris"}`,
/// `{"numeric": {"value": 42, "tolerance": 0.5}}`, `{"valid_json": true}`. The checks are compiled
/// (regular expressions, tolerances) before they are returned.
pub fn checks_from_json(value: &Value) -> Result<Vec<(f32, Rule)>> {
    let bad = |why: String| Error::InvalidArgument(format!("task checks: {why}"));
    let Value::Array(items) = value else { return Err(bad("expected a list of checks".into())) };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let mut item = item.clone();
        let mut weight = 1.0f32;
        if let Value::Object(map) = &mut item {
            if let Some(w) = map.remove("weight") {
                weight = w.as_f64().ok_or_else(|| bad(format!("weight {w} is not a number")))? as f32;
            }
            // `{"valid_json": true}` reads better than the unit variant's `null`.
            if map.get("valid_json") == Some(&Value::Bool(true)) {
                map.insert("valid_json".into(), Value::Null);
            }
        }
        let rule: Rule = serde_json::from_value(item).map_err(|e| bad(e.to_string()))?;
        out.push((weight, rule));
    }
    RuleSet::new(out.clone()).map_err(|e| bad(e.to_string()))?;
    Ok(out)
}

fn checks_de<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<(f32, Rule)>, D::Error> {
    let v = Value::deserialize(d)?;
    checks_from_json(&v).map_err(D::Error::custom)
}

fn checks_to_json<S: Serializer>(checks: &[(f32, Rule)], s: S) -> std::result::Result<S::Ok, S::Error> {
    let mut list = Vec::with_capacity(checks.len());
    for (w, rule) in checks {
        let mut v = serde_json::to_value(rule).map_err(serde::ser::Error::custom)?;
        if let Value::Object(map) = &mut v {
            map.insert("weight".into(), Value::from(f64::from(*w)));
        } else {
            v = serde_json::json!({ "valid_json": true, "weight": f64::from(*w) });
        }
        list.push(v);
    }
    list.serialize(s)
}

/// One signal of a JSON reward.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Signal {
    #[serde(default = "one")]
    weight: f32,
    thumbs: Option<bool>,
    stars: Option<u64>,
    outcome: Option<f64>,
    rule: Option<f64>,
    score: Option<Score>,
    coherence: Option<CoherenceWeights>,
    sentiment: Option<SentimentOf>,
    task: Option<Value>,
    callback: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Score {
    source: String,
    value: f64,
}

const SIGNALS: &str = "\"thumbs\", \"stars\", \"outcome\", \"rule\", \"score\", \"coherence\", \"sentiment\", \"task\", \"callback\"";

impl Signal {
    fn source(self) -> Result<(f32, RewardSource)> {
        let given = [
            self.thumbs.is_some(),
            self.stars.is_some(),
            self.outcome.is_some(),
            self.rule.is_some(),
            self.score.is_some(),
            self.coherence.is_some(),
            self.sentiment.is_some(),
            self.task.is_some(),
            self.callback.is_some(),
        ];
        if given.iter().filter(|&&g| g).count() != 1 {
            return Err(Error::InvalidArgument(format!("reward JSON: each signal needs exactly one of {SIGNALS}")));
        }
        let src = if let Some(up) = self.thumbs {
            RewardSource::Thumbs(up)
        } else if let Some(n) = self.stars {
            match u8::try_from(n) {
                Ok(s @ 1..=5) => RewardSource::Stars(s),
                _ => return Err(Error::InvalidReward(format!("{n} stars is outside 1..=5"))),
            }
        } else if let Some(x) = self.outcome {
            RewardSource::Scalar(x as f32)
        } else if let Some(x) = self.rule {
            RewardSource::Rule(x as f32)
        } else if let Some(s) = self.score {
            RewardSource::Score { source: s.source, value: s.value as f32 }
        } else if let Some(w) = self.coherence {
            w.validate().map_err(|e| Error::InvalidArgument(format!("reward JSON: {e}")))?;
            RewardSource::Coherence(w)
        } else if let Some(of) = self.sentiment {
            RewardSource::Sentiment(of)
        } else if let Some(checks) = self.task {
            RewardSource::Task(checks_from_json(&checks)?)
        } else if self.callback == Some(true) {
            RewardSource::Callback
        } else {
            return Err(Error::InvalidArgument("reward JSON: \"callback\" takes true".into()));
        };
        Ok((self.weight, src))
    }
}

/// Parses a JSON reward: one signal object or a list of them, each with exactly one signal and an
/// optional `"weight"` (default 1). Signals: `{"thumbs": true}`, `{"stars": 4}`, `{"outcome":
/// -0.5}`, `{"rule": 0.2}`, `{"score": {"source": "csat", "value": 72}}`, `{"coherence": {}}` (or
/// with its terms' weights: `{"nll": 1, "repetition": 4, "cutoff": 1, "ngram": 3}`),
/// `{"sentiment": "reply"}`, `{"sentiment": {"text": "the caller's next message"}}`, `{"task":
/// [checks]}` (see [`checks_from_json`]), `{"callback": true}`. An empty list asks for the
/// configured sources alone. Shape errors are [`Error::InvalidArgument`] (unknown keys name the
/// key), stars outside 1..=5 [`Error::InvalidReward`].
pub fn reward_from_json(json: &str) -> Result<Reward> {
    let bad = |e: serde_json::Error| Error::InvalidArgument(format!("reward JSON: {e}"));
    let v: Value = serde_json::from_str(json).map_err(bad)?;
    let signals: Vec<Signal> = if v.is_array() { serde_json::from_value(v).map_err(bad)? } else { vec![serde_json::from_value(v).map_err(bad)?] };
    let parts = signals.into_iter().map(Signal::source).collect::<Result<Vec<_>>>()?;
    Ok(Reward { parts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_err(json: &str) -> String {
        match serde_json::from_str::<RewardsConfig>(json) {
            Ok(c) => match c.validate() {
                Err(e) => e.to_string(),
                Ok(()) => panic!("{json} was accepted"),
            },
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn configuration_parses_and_refuses_unknown_keys() {
        let c: RewardsConfig = serde_json::from_str(
            r#"{"coherence": {"weight": 0.5, "repetition": 2}, "sentiment": {}, "callback": {"weight": 2},
                "task": {"checks": [{"contains": "refund", "weight": 2}, {"numeric": {"value": 42}}, {"valid_json": true}, "valid_json"]}}"#,
        )
        .unwrap();
        c.validate().unwrap();
        let parts = c.parts();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], (0.5, RewardSource::Coherence(CoherenceWeights { repetition: 2.0, ..CoherenceWeights::default() })));
        assert_eq!(parts[1], (1.0, RewardSource::Sentiment(SentimentOf::Reply)));
        let RewardSource::Task(checks) = &parts[2].1 else { panic!("{parts:?}") };
        assert_eq!(checks, &vec![(2.0, Rule::UseWord("refund".into())), (1.0, Rule::Numeric { value: 42.0, tolerance: 0.0 }), (1.0, Rule::ValidJson), (1.0, Rule::ValidJson)]);
        assert_eq!(parts[3], (2.0, RewardSource::Callback));
        // It survives a round trip (the CLI prints its configuration).
        let back: RewardsConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(RewardsConfig::default().parts().is_empty());

        for (json, says) in [
            (r#"{"coherance": {}}"#, "unknown field `coherance`"),
            (r#"{"coherence": {"nl": 1}}"#, "unknown field `nl`"),
            (r#"{"sentiment": {"of": "reply"}}"#, "unknown field `of`"),
            (r#"{"task": {"checks": [{"containz": "x"}]}}"#, "unknown variant `containz`"),
            (r#"{"task": {"checks": [{"use_regex": "("}]}}"#, "regex"),
            (r#"{"task": {"checks": [{"length": {"target": 3, "tolerance": 0}}]}}"#, "tolerance"),
            (r#"{"task": {"checks": []}}"#, "rule weights"),
            (r#"{"task": {"weight": 1}}"#, "missing field `checks`"),
            (r#"{"coherence": {"ngram": 0}}"#, "ngram"),
            (r#"{"coherence": {"nll": -1}}"#, "nll"),
        ] {
            let e = config_err(json);
            assert!(e.contains(says), "{json}: {e}");
        }
    }

    #[test]
    fn json_rewards_parse_every_signal() {
        let r = reward_from_json(
            r#"[{"thumbs": true}, {"coherence": {}, "weight": 0.3}, {"sentiment": {"text": "thanks!"}}, {"sentiment": "reply"},
                {"task": [{"exact": "Paris"}]}, {"callback": true, "weight": 2}]"#,
        )
        .unwrap();
        assert_eq!(
            r.parts,
            vec![
                (1.0, RewardSource::Thumbs(true)),
                (0.3, RewardSource::Coherence(CoherenceWeights::default())),
                (1.0, RewardSource::Sentiment(SentimentOf::Text("thanks!".into()))),
                (1.0, RewardSource::Sentiment(SentimentOf::Reply)),
                (1.0, RewardSource::Task(vec![(1.0, Rule::Exact("Paris".into()))])),
                (2.0, RewardSource::Callback),
            ]
        );
        assert!(reward_from_json("[]").unwrap().parts.is_empty());
        for (bad, says) in [
            (r#"{"sentiment": "caller"}"#, "unknown variant `caller`"),
            (r#"{"coherence": {"weight": 1}}"#, "unknown field `weight`"),
            (r#"{"task": {"exact": "x"}}"#, "list of checks"),
            (r#"{"callback": false}"#, "takes true"),
            (r#"{"coherence": {}, "thumbs": true}"#, "exactly one"),
            (r#"{"smile": 1}"#, "unknown field `smile`"),
            (r#"{"coherence": {"ngram": 0}}"#, "ngram"),
        ] {
            let e = reward_from_json(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().contains(says), "{bad}: {e}");
        }
        assert!(matches!(reward_from_json(r#"{"stars": 9}"#), Err(Error::InvalidReward(_))));
    }
}
