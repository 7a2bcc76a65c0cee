//! What generation records for learning: one [`TokenRecord`] per generated token.
//!
//! The logits pipeline for each step is
//! `base logits -> repetition penalty -> adapter hook (z = z0' + delta) -> / temperature -> truncation
//! (top-k, top-p, min-p) -> sample`. The penalty acts on the base logits before the adapter, so the
//! adapted policy is `p = softmax((z0' + delta) / tau)` restricted to the kept set, and the base policy
//! (adapter off) is the same with `delta = 0`. Both can be recomputed exactly from this record.

use half::f16;
use serde::{Deserialize, Serialize};

/// One generated token and what the learning update needs to recompute its distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The sampled token id.
    pub token: u32,
    /// The final post-norm hidden state `h_t` (the LM head's input), `d` values.
    pub hidden: Vec<f32>,
    /// `log_softmax(z0')` at temperature 1, where `z0'` are the base logits after the repetition
    /// penalty; `V` values stored as f16 (about 1e-3 relative precision, 2 bytes a value).
    /// Any temperature's base policy follows: `softmax(z0'/tau) = softmax(base_logprobs/tau)`.
    pub base_logprobs: Vec<f16>,
    /// Log-probability of `token` under the distribution actually sampled from (adapter, temperature
    /// and truncation included): the behaviour policy for importance ratios.
    pub behaviour_logprob: f32,
    /// The truncated support (top-k / top-p / min-p) the token was sampled from, sorted ascending;
    /// `None` when the whole vocabulary was kept.
    pub kept: Option<Vec<u32>>,
}

/// The sampling distribution's shape shared by all tokens of one reply: what, beside the kept sets,
/// rebuilding the records by a teacher-forced pass needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RecordedSampling {
    /// Temperature used to sample; 0 means greedy decoding.
    pub temperature: f32,
    /// The repetition penalty applied to the base logits (1: none).
    pub repetition_penalty: f32,
}

impl RecordedSampling {
    /// Sampling at `temperature` with no repetition penalty.
    pub fn at(temperature: f32) -> RecordedSampling {
        RecordedSampling { temperature, repetition_penalty: 1.0 }
    }
}
