//! Rewards: explicit feedback, rule rewards on the reply's text, and model scores, combined with
//! weights into one scalar per episode. Non-finite or out-of-range values are rejected, never
//! learned from; no feedback is not a reward of 0. The sources a session computes itself
//! (coherence, sentiment, task checks, the host's callback) are resolved into named scores before
//! they reach [`combine`] (see `runtime::UserSession::feedback` and [`super::sources`]).

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::coherence::CoherenceWeights;
use super::report::RewardPart;
use crate::error::{Error, Result};

/// One source of reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardSource {
    /// Thumbs up (+1) or down (-1).
    Thumbs(bool),
    /// A star rating 1 ..= 5, mapped linearly onto [-1, 1].
    Stars(u8),
    /// An outcome already in [-1, 1] (call resolved, user hung up, ...).
    Scalar(f32),
    /// The value of a [`RuleSet`] on the reply, in [-1, 1].
    Rule(f32),
    /// A model or classifier score on any scale; z-scored with running statistics kept per `source`
    /// and clipped to `+-score_clip`.
    Score {
        /// Which scorer produced it (each has its own statistics).
        source: String,
        /// The raw score.
        value: f32,
    },
    /// Computed by the session from the reply: its coherence (`docs/learning.md`), z-scored as
    /// the score `"coherence"`.
    Coherence(CoherenceWeights),
    /// Computed by the session: VADER's compound score of the reply or of a text the host passes
    /// (the caller's next message), z-scored as the score `"sentiment"`.
    Sentiment(SentimentOf),
    /// Computed by the session: the weighted mean of host-defined checks on the reply (a
    /// [`RuleSet`]), z-scored as the score `"task"`.
    Task(Vec<(f32, Rule)>),
    /// Computed by the session: the host's reward callback on the reply text, z-scored as the
    /// score `"callback"`.
    Callback,
}

/// Whose text a sentiment reward reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SentimentOf {
    /// The reply itself.
    Reply,
    /// A text the host passes, such as the caller's next message.
    Text(String),
}

impl RewardSource {
    /// The name the source has in update reports (a score's own source name).
    pub fn name(&self) -> &str {
        match self {
            RewardSource::Thumbs(_) => "thumbs",
            RewardSource::Stars(_) => "stars",
            RewardSource::Scalar(_) => "outcome",
            RewardSource::Rule(_) => "rule",
            RewardSource::Score { source, .. } => source,
            RewardSource::Coherence(_) => "coherence",
            RewardSource::Sentiment(_) => "sentiment",
            RewardSource::Task(_) => "task",
            RewardSource::Callback => "callback",
        }
    }

    /// Whether a session must compute the source from the reply before it can be combined.
    pub fn is_computed(&self) -> bool {
        matches!(self, RewardSource::Coherence(_) | RewardSource::Sentiment(_) | RewardSource::Task(_) | RewardSource::Callback)
    }
}

/// The feedback of one episode: weighted sources, summed after each is normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reward {
    /// `(weight, source)` pairs.
    pub parts: Vec<(f32, RewardSource)>,
}

impl Reward {
    /// A thumbs up or down.
    pub fn thumbs(up: bool) -> Reward {
        Reward { parts: vec![(1.0, RewardSource::Thumbs(up))] }
    }

    /// A star rating 1 ..= 5.
    pub fn stars(stars: u8) -> Reward {
        Reward { parts: vec![(1.0, RewardSource::Stars(stars))] }
    }

    /// An outcome in [-1, 1].
    pub fn scalar(value: f32) -> Reward {
        Reward { parts: vec![(1.0, RewardSource::Scalar(value))] }
    }

    /// A model or classifier score.
    pub fn score(source: impl Into<String>, value: f32) -> Reward {
        Reward { parts: vec![(1.0, RewardSource::Score { source: source.into(), value })] }
    }

    /// The value of `rules` on the reply `text`.
    pub fn rules(rules: &RuleSet, text: &str) -> Reward {
        Reward { parts: vec![(1.0, RewardSource::Rule(rules.evaluate(text)))] }
    }

    /// Adds another source with a weight.
    pub fn and(mut self, weight: f32, source: RewardSource) -> Reward {
        self.parts.push((weight, source));
        self
    }
}

/// Running mean and variance: an exact running mean for the first `1 / rate` values, then an
/// exponential moving average with that rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningStats {
    /// Values seen.
    pub count: u64,
    /// The running mean.
    pub mean: f64,
    /// The running (population) variance.
    pub var: f64,
}

impl RunningStats {
    /// Adds a value.
    pub fn push(&mut self, x: f64, rate: f64) {
        self.count += 1;
        let alpha = (1.0 / self.count as f64).max(rate);
        let delta = x - self.mean;
        self.mean += alpha * delta;
        self.var = (1.0 - alpha) * (self.var + alpha * delta * delta);
    }

    /// The standard deviation, at least `floor`.
    pub fn std(&self, floor: f64) -> f64 {
        self.var.max(0.0).sqrt().max(floor)
    }
}

/// Per-source statistics used to z-score model scores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreStats {
    /// `(source, statistics)`, sorted by source.
    pub sources: Vec<(String, RunningStats)>,
}

impl ScoreStats {
    /// Returns the z-score of `x` under `source`'s statistics so far (0 before two values), clipped
    /// to `+-clip`, then adds `x` to them.
    pub fn z_score(&mut self, source: &str, x: f64, rate: f64, floor: f64, clip: f64) -> f64 {
        let i = match self.sources.binary_search_by(|(s, _)| s.as_str().cmp(source)) {
            Ok(i) => i,
            Err(i) => {
                self.sources.insert(i, (source.to_string(), RunningStats::default()));
                i
            }
        };
        let st = &mut self.sources[i].1;
        let z = if st.count >= 2 { ((x - st.mean) / st.std(floor)).clamp(-clip, clip) } else { 0.0 };
        st.push(x, rate);
        z
    }
}

/// The largest weight of one reward signal, in absolute value. Weights are relative (a signal's
/// share of the reward), so a larger one only scales the reward, and a huge one (3e38) moved the
/// running baseline so far that later advantages collapsed to a constant for thousands of updates.
pub const MAX_REWARD_WEIGHT: f32 = 100.0;

/// The largest model score, in absolute value. Scores are on the source's own scale and are
/// z-scored under its name; values beyond this would dominate its running statistics.
pub const MAX_SCORE: f32 = 1e6;

/// Turns feedback into one finite scalar: thumbs +-1, stars (n - 3) / 2, scalars and rules as given
/// (they must lie in [-1, 1]), scores z-scored; then the weighted sum.
pub fn combine(reward: &Reward, scores: &mut ScoreStats, rate: f64, floor: f64, clip: f64) -> Result<f64> {
    combine_parts(reward, scores, rate, floor, clip).map(|(total, _)| total)
}

/// [`combine`], with what each source contributed (`episode_id` 0: the caller sets it).
pub fn combine_parts(reward: &Reward, scores: &mut ScoreStats, rate: f64, floor: f64, clip: f64) -> Result<(f64, Vec<RewardPart>)> {
    let bad = |why: String| Err(Error::InvalidReward(why));
    if reward.parts.is_empty() {
        return bad("a reward needs at least one source".into());
    }
    // Check everything before any score statistic changes.
    for (w, src) in &reward.parts {
        if !(w.is_finite() && w.abs() <= MAX_REWARD_WEIGHT) {
            return bad(format!("weight {w} is outside [-{MAX_REWARD_WEIGHT}, {MAX_REWARD_WEIGHT}]"));
        }
        match src {
            RewardSource::Stars(n) if !(1..=5).contains(n) => return bad(format!("{n} stars is outside 1..=5")),
            RewardSource::Scalar(x) | RewardSource::Rule(x) if !(x.is_finite() && (-1.0..=1.0).contains(x)) => {
                return bad(format!("value {x} is not a finite number in [-1, 1]"));
            }
            RewardSource::Score { value, .. } if !(value.is_finite() && value.abs() <= MAX_SCORE) => {
                return bad(format!("score {value} is outside [-{MAX_SCORE:e}, {MAX_SCORE:e}]"))
            }
            s if s.is_computed() => {
                return bad(format!("the {} reward is computed from the reply by a session (UserSession::feedback), not by the learner", s.name()))
            }
            _ => {}
        }
    }
    let mut total = 0.0;
    let mut parts = Vec::with_capacity(reward.parts.len());
    for (w, src) in &reward.parts {
        let v = match src {
            RewardSource::Thumbs(up) => {
                if *up {
                    1.0
                } else {
                    -1.0
                }
            }
            RewardSource::Stars(n) => (f64::from(*n) - 3.0) / 2.0,
            RewardSource::Scalar(x) | RewardSource::Rule(x) => f64::from(*x),
            RewardSource::Score { source, value } => scores.z_score(source, f64::from(*value), rate, floor, clip),
            _ => unreachable!("computed sources are refused above"),
        };
        let raw = match src {
            RewardSource::Score { value, .. } => f64::from(*value),
            _ => v,
        };
        let weight = f64::from(*w);
        total += weight * v;
        parts.push(RewardPart { episode_id: 0, source: src.name().to_string(), raw, value: v, weight, contribution: weight * v });
    }
    if !total.is_finite() {
        return bad(format!("combined reward {total} is not finite"));
    }
    Ok((total, parts))
}

/// One rule on the reply's text, as configured (in JSON, see `sources::checks_from_json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// +1 at `target` words, falling linearly to -1 at `tolerance` words away or more.
    Length {
        /// The wanted number of whitespace-separated words.
        target: usize,
        /// How far off counts as fully wrong.
        tolerance: usize,
    },
    /// +1 when the word appears (whole word, case-insensitive), else -1.
    #[serde(alias = "contains")]
    UseWord(String),
    /// -1 when the word appears (whole word, case-insensitive), else +1.
    #[serde(alias = "avoids")]
    AvoidWord(String),
    /// +1 when the regular expression matches, else -1.
    #[serde(alias = "matches")]
    UseRegex(String),
    /// -1 when the regular expression matches, else +1.
    AvoidRegex(String),
    /// +1 when the reply (leading whitespace trimmed) starts with the text, case-insensitive, else -1.
    StartsWith(String),
    /// +1 when the reply, trimmed of white space and of one final `.`, equals the text
    /// (case-insensitive, also trimmed), else -1.
    Exact(String),
    /// +1 when the last number in the reply (`-1,234.5` style; thousands commas allowed) is within
    /// `tolerance` of `value`, else -1 (also when the reply has no number).
    Numeric {
        /// The expected answer.
        value: f64,
        /// The largest accepted absolute difference (default 0: exact).
        #[serde(default)]
        tolerance: f64,
    },
    /// +1 when the reply is valid JSON (trimmed; or, when it has one, the inside of its first
    /// ``` fenced block), else -1.
    ValidJson,
}

/// A number as `Rule::Numeric` reads it.
const NUMBER: &str = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?";

/// Weighted rules compiled once; their value on a text is the weighted mean, in [-1, 1].
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<(f32, Rule, Option<Regex>)>,
}

impl RuleSet {
    /// Compiles `(weight, rule)` pairs; weights must be in +-[`MAX_REWARD_WEIGHT`] and not all zero, regular expressions
    /// valid, length tolerances at least 1.
    pub fn new(rules: Vec<(f32, Rule)>) -> Result<RuleSet> {
        if rules.is_empty() || rules.iter().any(|(w, _)| !(w.is_finite() && w.abs() <= MAX_REWARD_WEIGHT)) || rules.iter().all(|(w, _)| *w == 0.0) {
            return Err(Error::InvalidArgument(format!("rule weights must be in [-{MAX_REWARD_WEIGHT}, {MAX_REWARD_WEIGHT}] and not all zero")));
        }
        let mut out = Vec::with_capacity(rules.len());
        for (w, rule) in rules {
            let re = match &rule {
                Rule::UseWord(word) | Rule::AvoidWord(word) => {
                    if word.trim().is_empty() {
                        return Err(Error::InvalidArgument("empty word in a rule".into()));
                    }
                    Some(compile(&format!(r"(?i)\b{}\b", regex::escape(word.trim())))?)
                }
                Rule::UseRegex(p) | Rule::AvoidRegex(p) => Some(compile(p)?),
                Rule::Length { tolerance: 0, .. } => return Err(Error::InvalidArgument("length tolerance must be at least 1".into())),
                Rule::Numeric { value, tolerance } => {
                    if !(value.is_finite() && tolerance.is_finite() && *tolerance >= 0.0) {
                        return Err(Error::InvalidArgument(format!("numeric rule: value {value} and tolerance {tolerance} must be finite, tolerance >= 0")));
                    }
                    Some(compile(NUMBER)?)
                }
                _ => None,
            };
            out.push((w, rule, re));
        }
        Ok(RuleSet { rules: out })
    }

    /// The weighted mean of the rules' values on `text`.
    pub fn evaluate(&self, text: &str) -> f32 {
        let (mut sum, mut weight) = (0.0f32, 0.0f32);
        for (w, rule, re) in &self.rules {
            let hit = |yes: bool| if yes { 1.0 } else { -1.0 };
            let v = match rule {
                Rule::Length { target, tolerance } => {
                    let n = text.split_whitespace().count();
                    let off = n.abs_diff(*target) as f32 / *tolerance as f32;
                    1.0 - 2.0 * off.min(1.0)
                }
                Rule::UseWord(_) | Rule::UseRegex(_) => hit(re.as_ref().is_some_and(|r| r.is_match(text))),
                Rule::AvoidWord(_) | Rule::AvoidRegex(_) => hit(!re.as_ref().is_some_and(|r| r.is_match(text))),
                Rule::StartsWith(p) => hit(text.trim_start().to_lowercase().starts_with(&p.to_lowercase())),
                Rule::Exact(want) => {
                    let norm = |t: &str| t.trim().strip_suffix('.').unwrap_or(t.trim()).trim().to_lowercase();
                    hit(norm(text) == norm(want))
                }
                Rule::Numeric { value, tolerance } => {
                    let last = re.as_ref().and_then(|r| r.find_iter(text).last());
                    let got = last.and_then(|m| m.as_str().replace(',', "").parse::<f64>().ok());
                    hit(got.is_some_and(|x| (x - value).abs() <= *tolerance))
                }
                Rule::ValidJson => hit(json_body(text).is_some_and(|body| serde_json::from_str::<serde_json::Value>(body).is_ok())),
            };
            sum += w * v;
            weight += w.abs();
        }
        (sum / weight).clamp(-1.0, 1.0)
    }
}

/// What `Rule::ValidJson` parses: the inside of the first ``` fenced block, else the trimmed text.
fn json_body(text: &str) -> Option<&str> {
    if let Some((_, rest)) = text.split_once("```") {
        let rest = rest.strip_prefix("json").unwrap_or(rest);
        if let Some((inside, _)) = rest.split_once("```") {
            return Some(inside.trim());
        }
    }
    let t = text.trim();
    (!t.is_empty()).then_some(t)
}

fn compile(pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|e| Error::InvalidArgument(format!("rule regex: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(reward: &Reward) -> Result<f64> {
        combine(reward, &mut ScoreStats::default(), 0.05, 1e-3, 5.0)
    }

    #[test]
    fn maps_explicit_feedback() {
        assert_eq!(r(&Reward::thumbs(true)).unwrap(), 1.0);
        assert_eq!(r(&Reward::thumbs(false)).unwrap(), -1.0);
        assert_eq!(r(&Reward::stars(1)).unwrap(), -1.0);
        assert_eq!(r(&Reward::stars(4)).unwrap(), 0.5);
        assert_eq!(r(&Reward::stars(5)).unwrap(), 1.0);
        assert_eq!(r(&Reward::thumbs(true).and(0.5, RewardSource::Scalar(-1.0))).unwrap(), 0.5);
    }

    #[test]
    fn rejects_unusable_rewards() {
        for bad in [
            Reward::scalar(f32::NAN),
            Reward::scalar(f32::INFINITY),
            Reward::scalar(1.5),
            Reward::stars(0),
            Reward::stars(6),
            Reward::score("m", f32::NAN),
            Reward::thumbs(true).and(f32::NAN, RewardSource::Thumbs(true)),
            Reward { parts: vec![] },
            // Finite but absurd: these moved the running baseline to about 1e37.
            Reward { parts: vec![(3e38, RewardSource::Thumbs(true))] },
            Reward { parts: vec![(-1e30, RewardSource::Scalar(1.0))] },
            Reward { parts: vec![(MAX_REWARD_WEIGHT * 1.01, RewardSource::Thumbs(true))] },
            Reward::score("m", 1e7),
            Reward::score("m", -MAX_SCORE * 2.0),
        ] {
            assert!(matches!(r(&bad), Err(Error::InvalidReward(_))), "{bad:?}");
        }
        // The limits themselves are accepted.
        for good in [
            Reward { parts: vec![(MAX_REWARD_WEIGHT, RewardSource::Thumbs(true))] },
            Reward { parts: vec![(-MAX_REWARD_WEIGHT, RewardSource::Scalar(-1.0))] },
            Reward::score("m", MAX_SCORE),
            Reward::score("m", -MAX_SCORE),
        ] {
            assert!(r(&good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn z_scores_scores_per_source_and_clips() {
        let mut st = ScoreStats::default();
        let mut z = |s: &str, x: f32| combine(&Reward::score(s, x), &mut st, 0.05, 1e-3, 5.0).unwrap();
        assert_eq!(z("a", 50.0), 0.0);
        assert_eq!(z("a", 70.0), 0.0, "no statistics before two values");
        assert!((z("a", 80.0) - 2.0).abs() < 1e-12, "mean 60, std 10");
        assert_eq!(z("b", 0.1), 0.0, "each source has its own statistics");
        assert_eq!(z("a", MAX_SCORE), 5.0);
        z("c", 0.0);
        z("c", 1.0);
        assert_eq!(z("c", -MAX_SCORE), -5.0);
    }

    #[test]
    fn running_stats_are_exact_early_then_exponential() {
        let mut s = RunningStats::default();
        for x in [1.0, 2.0, 3.0, 4.0] {
            s.push(x, 0.05);
        }
        assert!((s.mean - 2.5).abs() < 1e-12 && (s.var - 1.25).abs() < 1e-12);
        for _ in 0..1000 {
            s.push(10.0, 0.05);
        }
        assert!((s.mean - 10.0).abs() < 1e-6 && s.var < 1e-6);
        assert_eq!(s.std(1e-3), 1e-3);
    }

    #[test]
    fn rules_score_text() {
        let rules = RuleSet::new(vec![
            (1.0, Rule::UseWord("please".into())),
            (1.0, Rule::AvoidRegex("(?i)sorry".into())),
            (2.0, Rule::Length { target: 4, tolerance: 4 }),
            (0.0, Rule::StartsWith("Sure".into())),
        ])
        .unwrap();
        assert_eq!(rules.evaluate("Please do it now"), 1.0);
        assert_eq!(rules.evaluate("sorry, pleased to do it"), (-1.0 - 1.0 + 2.0 * 0.5) / 4.0);
        assert!(RuleSet::new(vec![(1.0, Rule::UseRegex("(".into()))]).is_err());
        assert!(RuleSet::new(vec![(0.0, Rule::UseWord("x".into()))]).is_err());
        let start = RuleSet::new(vec![(1.0, Rule::StartsWith("sure".into()))]).unwrap();
        assert_eq!(start.evaluate("  Sure thing"), 1.0);
        assert_eq!(start.evaluate("No"), -1.0);
        assert_eq!(r(&Reward::rules(&start, "No")).unwrap(), -1.0);
    }

    #[test]
    fn answer_checks_score_text() {
        let one = |rule: Rule, text: &str| RuleSet::new(vec![(1.0, rule)]).unwrap().evaluate(text);
        assert_eq!(one(Rule::Exact("Paris".into()), "  paris. "), 1.0);
        assert_eq!(one(Rule::Exact("Paris".into()), "Paris, France"), -1.0);
        let n = |value: f64, tolerance: f64| Rule::Numeric { value, tolerance };
        assert_eq!(one(n(42.0, 0.0), "6 times 7 is 42."), 1.0);
        assert_eq!(one(n(1234.5, 0.0), "It costs $1,234.5 in total"), 1.0);
        assert_eq!(one(n(-3.0, 0.0), "x = -3"), 1.0);
        assert_eq!(one(n(3.14, 0.01), "pi is about 3.1416"), 1.0);
        assert_eq!(one(n(3.14, 0.0), "pi is about 3.1416"), -1.0);
        assert_eq!(one(n(4.0, 0.0), "no number here"), -1.0);
        assert_eq!(one(n(4.0, 0.0), "2 + 2 = 5"), -1.0, "the last number is the answer");
        assert_eq!(one(Rule::ValidJson, r#" {"a": [1, 2]} "#), 1.0);
        assert_eq!(one(Rule::ValidJson, "Here you go:\n```json\n{\"ok\": true}\n```\nDone."), 1.0);
        assert_eq!(one(Rule::ValidJson, "{\"a\": 1"), -1.0);
        assert_eq!(one(Rule::ValidJson, ""), -1.0);
        assert!(RuleSet::new(vec![(1.0, n(f64::NAN, 0.0))]).is_err());
        assert!(RuleSet::new(vec![(1.0, n(1.0, -1.0))]).is_err());
    }

    #[test]
    fn computed_sources_need_a_session_and_parts_are_reported() {
        let e = r(&Reward::thumbs(true).and(1.0, RewardSource::Coherence(CoherenceWeights::default()))).unwrap_err();
        assert!(matches!(&e, Error::InvalidReward(m) if m.contains("coherence")), "{e}");
        let mut st = ScoreStats::default();
        let reward = Reward::thumbs(false).and(0.5, RewardSource::Scalar(0.5));
        let (total, parts) = combine_parts(&reward, &mut st, 0.05, 1e-3, 5.0).unwrap();
        assert_eq!(total, -0.75);
        assert_eq!(parts.iter().map(|p| (p.source.as_str(), p.contribution)).collect::<Vec<_>>(), vec![("thumbs", -1.0), ("outcome", 0.25)]);
    }
}
