//! The JSON every boundary reads and writes: the runtime configuration, rewards, prompts, the
//! generation options overlay and the session's statistics.

use attune::generate::{GenerateOptions, Prompt};
use attune::learn::{Reward, RewardSource, UpdateReport};
use attune::runtime::{RuntimeConfig, UserSession};
use attune::tokenizer::Message;

use crate::status::*;
use crate::{HostError, HostResult};

/// Parses a runtime configuration. Syntax first, so that "this is not JSON"
/// ([`INVALID_JSON`]) and "this JSON is not a valid configuration" (`CONFIG`) differ.
pub fn config(config_json: &str) -> HostResult<RuntimeConfig> {
    let value = serde_json::from_str::<serde_json::Value>(config_json)
        .map_err(|e| HostError::new(INVALID_JSON, format!("configuration is not valid JSON: {e}")))?;
    // serde would also read a struct from an array; the documented shape is an object.
    if !value.is_object() {
        return Err(HostError::new(INVALID_JSON, "configuration must be a JSON object"));
    }
    Ok(RuntimeConfig::from_json(config_json)?)
}

/// How a prompt string is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    /// Raw text, tokenised as is (no chat template).
    Text,
    /// One user message, rendered with the model's chat template.
    User,
    /// A JSON array of `{"role", "content"}` messages, rendered with the chat template.
    Chat,
}

/// Parses a prompt of the given kind.
pub fn prompt(kind: PromptKind, prompt: &str) -> HostResult<Prompt> {
    Ok(match kind {
        PromptKind::Text => Prompt::Text(prompt.to_string()),
        PromptKind::User => Prompt::Chat(vec![Message::user(prompt)]),
        PromptKind::Chat => Prompt::Chat(
            serde_json::from_str::<Vec<Message>>(prompt)
                .map_err(|e| HostError::new(INVALID_JSON, format!("chat messages must be a JSON array of {{\"role\", \"content\"}} objects: {e}")))?,
        ),
    })
}

/// Overlays `over` onto `base`: objects merge key by key (recursively), anything else replaces.
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// The runtime's default generation options with the fields of `json` (if any) overlaid.
pub fn options(defaults: &GenerateOptions, json: Option<&str>) -> HostResult<GenerateOptions> {
    let Some(json) = json else { return Ok(defaults.clone()) };
    let bad = |e: serde_json::Error| HostError::new(INVALID_JSON, format!("options_json: {e}"));
    let over: serde_json::Value = serde_json::from_str(json).map_err(bad)?;
    if !over.is_object() {
        return Err(HostError::new(INVALID_JSON, "options_json must be a JSON object"));
    }
    let mut base = serde_json::to_value(defaults).map_err(bad)?;
    merge(&mut base, over);
    serde_json::from_value(base).map_err(bad)
}

/// A star rating 1 ..= 5; anything else is [`INVALID_REWARD`].
pub fn stars(n: u64) -> HostResult<RewardSource> {
    match u8::try_from(n) {
        Ok(s @ 1..=5) => Ok(RewardSource::Stars(s)),
        _ => Err(HostError::new(INVALID_REWARD, format!("invalid reward: {n} stars is outside 1..=5"))),
    }
}

/// Parses a JSON reward: one signal object or an array of them, e.g. `[{"outcome": 1, "weight":
/// 0.7}, {"stars": 5, "weight": 0.3}]`.
pub fn reward(json: &str) -> HostResult<Reward> {
    // The library's parser (every signal, the computed sources too): a shape error is INVALID_JSON.
    attune::learn::sources::reward_from_json(json).map_err(|e| match e {
        attune::Error::InvalidArgument(m) => HostError::new(INVALID_JSON, format!("reward_json: {m}")),
        other => HostError::from(other),
    })
}

/// A session's statistics (the C API's `attune_session_stats_json`).
pub fn stats(user: &str, session: &mut UserSession, last_report: Option<&UpdateReport>) -> serde_json::Value {
    // The current adapter measured on the probes (KL to the base, NLL, entropy); `null` when the
    // measurement fails, which the other fields still report around.
    let probe = session.learner_mut().probe_stats().ok().flatten();
    let kv = session.kv_cache_usage();
    let l = session.learner();
    serde_json::json!({
        "probe": probe,
        "adapter_finite": l.adapter().all_finite(),
        "user": user,
        "pending_episodes": l.pending_episodes(),
        "pending_episodes_bytes": l.episodes_memory_bytes(),
        "kv_cache": {"tokens": kv.0, "bytes": kv.1},
        "next_episode_id": l.next_episode_id(),
        "restored_episodes": session.restored_episodes(),
        "counters": l.counters(),
        "rewards": l.history(),
        "beta": l.beta(),
        "lr": l.lr(),
        "last_update": last_report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rewards_parse_into_weighted_sources() {
        assert_eq!(reward(r#"{"thumbs": true}"#).unwrap(), Reward::thumbs(true));
        let r = reward(r#"[{"outcome": 1, "weight": 0.7}, {"score": {"source": "csat", "value": 72}, "weight": 0.3}]"#).unwrap();
        assert_eq!(r.parts, vec![(0.7, RewardSource::Scalar(1.0)), (0.3, RewardSource::Score { source: "csat".into(), value: 72.0 })]);
        for (bad, status) in [
            ("{}", INVALID_JSON),
            (r#"{"thumbs": true, "stars": 3}"#, INVALID_JSON),
            (r#"{"smile": 1}"#, INVALID_JSON),
            ("[", INVALID_JSON),
            (r#"{"stars": 300}"#, INVALID_REWARD),
            (r#"{"stars": 0}"#, INVALID_REWARD),
        ] {
            assert_eq!(reward(bad).unwrap_err().status, status, "{bad}");
        }
    }

    #[test]
    fn options_overlay_the_runtime_defaults() {
        let mut defaults = GenerateOptions::default();
        defaults.sampling.temperature = 0.3;
        defaults.max_new_tokens = 50;
        let o = options(&defaults, Some(r#"{"max_new_tokens": 7, "sampling": {"seed": 9}}"#)).unwrap();
        assert_eq!((o.max_new_tokens, o.sampling.seed, o.sampling.temperature), (7, 9, 0.3));
        assert_eq!(options(&defaults, None).unwrap(), defaults);
        for bad in ["[1]", "{", r#"{"max_tokens": 3}"#, r#"{"sampling": {"temperature": "hot"}}"#] {
            assert_eq!(options(&defaults, Some(bad)).unwrap_err().status, INVALID_JSON, "{bad}");
        }
    }

    #[test]
    fn configurations_and_chat_prompts_tell_syntax_from_shape() {
        assert_eq!(config("{").unwrap_err().status, INVALID_JSON);
        assert_eq!(config("[]").unwrap_err().status, INVALID_JSON);
        assert_eq!(config(r#"{"bogus": 1}"#).unwrap_err().name(), "ATTUNE_STATUS_CONFIG");
        assert_eq!(prompt(PromptKind::Chat, "{").unwrap_err().status, INVALID_JSON);
        assert_eq!(prompt(PromptKind::User, "hi").unwrap(), Prompt::Chat(vec![Message::user("hi")]));
    }
}
