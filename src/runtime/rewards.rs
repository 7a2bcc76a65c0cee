//! The reward sources a session computes itself: what it keeps of each reply for them, and how
//! a reward's computed sources become named scores before the learner combines them.
//!
//! A reply's text, finish reason and base log-probabilities are kept in memory from generation
//! (4 bytes a token). For a reply restored after a restart they are rebuilt: the text decoded from
//! its tokens, the log-probabilities by one teacher-forced pass, and the finish reason is unknown
//! (so it is never counted as cut off).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::generate::FinishReason;
use crate::learn::{CoherenceTerms, Episode, RecordSource, Reward, RewardSource, RuleSet, SentimentOf};

use super::Runtime;

/// The host's reward for a reply text (Rust: `UserSession::set_reward_fn`; C: a callback). A
/// result that is not finite is an error, never learned from.
pub type RewardFn = Box<dyn FnMut(&str) -> f64 + Send>;

/// What a computed source needs of one reply.
#[derive(Debug, Clone)]
pub(super) struct ReplyFacts {
    text: String,
    by_length: Option<bool>,
    /// The base log-probability of each reply token (`None` until needed, for a restored reply).
    logprobs: Option<Vec<f32>>,
}

/// The facts of the newest replies, bounded by the learner's episode capacity.
#[derive(Debug, Default)]
pub(super) struct Replies {
    facts: BTreeMap<u64, ReplyFacts>,
}

impl Replies {
    /// Keeps a generated reply's facts.
    pub fn insert(&mut self, id: u64, text: &str, finish: FinishReason, logprobs: Vec<f32>, capacity: usize) {
        self.facts.insert(id, ReplyFacts { text: text.to_string(), by_length: Some(finish == FinishReason::Length), logprobs: Some(logprobs) });
        while self.facts.len() > capacity.max(1) {
            self.facts.pop_first();
        }
    }

    /// Forgets everything (forget-me).
    pub fn clear(&mut self) {
        self.facts.clear();
    }
}

pub(super) use crate::learn::coherence::token_logprobs;

/// `reward` with every computed source replaced by its named score, and the runtime's configured
/// sources added when `first` (the reply's first feedback). Fails before anything is learned:
/// an unknown episode, a missing lexicon or callback, a value that is not finite.
pub(super) fn resolve(
    runtime: &Runtime,
    replies: &mut Replies,
    reward_fn: &mut Option<RewardFn>,
    ep: &Episode,
    first: bool,
    reward: &Reward,
) -> Result<Reward> {
    let mut parts = reward.parts.clone();
    if first {
        parts.extend(runtime.config().rewards.parts());
    }
    if !parts.iter().any(|(_, s)| s.is_computed()) {
        return Ok(Reward { parts });
    }
    let facts = match replies.facts.entry(ep.id) {
        Entry::Occupied(known) => known.into_mut(),
        Entry::Vacant(slot) => {
            // A reply restored after a restart: its text from its tokens, its finish unknown.
            let text = runtime.model().tokenizer().decode(&ep.reply, true)?;
            slot.insert(ReplyFacts { text, by_length: None, logprobs: None })
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (w, src) in parts {
        let value = match &src {
            RewardSource::Coherence(weights) => {
                if facts.logprobs.is_none() {
                    let records = if ep.is_resident() { ep.tokens.clone() } else { runtime.rebuild(&ep.prompt, &ep.reply, &ep.sampling)? };
                    facts.logprobs = Some(token_logprobs(&records));
                }
                let lp = facts.logprobs.as_deref().unwrap_or_default();
                CoherenceTerms::measure(lp, &ep.reply, &facts.text, facts.by_length, weights.ngram)?.score(weights)
            }
            RewardSource::Sentiment(of) => {
                let text = match of {
                    SentimentOf::Reply => facts.text.as_str(),
                    SentimentOf::Text(t) => t.as_str(),
                };
                runtime.vader()?.compound(text)
            }
            RewardSource::Task(checks) => f64::from(RuleSet::new(checks.clone())?.evaluate(&facts.text)),
            RewardSource::Callback => {
                let f = reward_fn.as_mut().ok_or_else(|| Error::InvalidArgument("a callback reward needs a reward callback; none is set".into()))?;
                f(&facts.text)
            }
            _ => {
                out.push((w, src));
                continue;
            }
        };
        if !value.is_finite() {
            return Err(Error::InvalidReward(format!("the {} reward of episode {} is {value}, not a finite number; nothing was learned", src.name(), ep.id)));
        }
        out.push((w, RewardSource::Score { source: src.name().to_string(), value: value as f32 }));
    }
    Ok(Reward { parts: out })
}
