//! Sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty, with a seeded RNG.
//!
//! Order of operations (documented in `record.rs`): repetition penalty on the base logits, the
//! adapter hook, temperature, then truncation to the kept set (top-k, then top-p, then min-p), then a
//! draw from the renormalised kept set.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The smallest positive temperature: below it `1 / temperature` overflows the logits' scale
/// (at 1e-45 it is infinite in f32 and the softmax turns NaN). Use 0 for greedy decoding.
pub const MIN_TEMPERATURE: f32 = 1e-3;

/// The largest temperature: far above it every token is equally likely.
pub const MAX_TEMPERATURE: f32 = 1e3;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// Softmax temperature; 0 means greedy (argmax, lowest id on ties), otherwise in
    /// [[`MIN_TEMPERATURE`], [`MAX_TEMPERATURE`]].
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose mass reaches `top_p`; 1 keeps all.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the top token's; 0 keeps all.
    pub min_p: f32,
    /// CTRL-style penalty on tokens already in the prompt or reply: positive logits are divided by it,
    /// negative ones multiplied; 1 disables it.
    pub repetition_penalty: f32,
    /// Seed of the random generator; the same seed and inputs give the same tokens.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig { temperature: 0.7, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, seed: 0 }
    }
}

impl SamplingConfig {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingConfig { temperature: 0.0, ..Default::default() }
    }

    /// Checks every value; an invalid one is an [`Error::InvalidArgument`] naming it.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if !(self.temperature == 0.0 || (MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&self.temperature)) {
            return bad(format!(
                "temperature must be 0 (greedy) or in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], got {}",
                self.temperature
            ));
        }
        if !self.top_p.is_finite() || self.top_p <= 0.0 || self.top_p > 1.0 {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !self.min_p.is_finite() || !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return bad(format!("repetition_penalty must be finite and > 0, got {}", self.repetition_penalty));
        }
        Ok(())
    }

    /// Whether any truncation is active (the kept set may be smaller than the vocabulary).
    pub fn truncates(&self) -> bool {
        self.top_k > 0 || self.top_p < 1.0 || self.min_p > 0.0
    }
}

/// Applies the repetition penalty to `logits` for every id in `seen` (each id once).
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32, scratch: &mut Vec<bool>) {
    if penalty == 1.0 {
        return;
    }
    scratch.clear();
    scratch.resize(logits.len(), false);
    for &t in seen {
        let i = t as usize;
        if i < logits.len() && !scratch[i] {
            scratch[i] = true;
            let z = logits[i];
            logits[i] = if z > 0.0 { z / penalty } else { z * penalty };
        }
    }
}

/// The result of one draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    /// The chosen token.
    pub token: u32,
    /// Its log-probability under the distribution drawn from (0 for greedy).
    pub logprob: f32,
    /// The kept set when truncation was active (sorted ascending), else `None`.
    pub kept: Option<Vec<u32>>,
}

/// A seeded sampler with reusable scratch buffers.
#[derive(Debug)]
pub struct Sampler {
    cfg: SamplingConfig,
    rng: ChaCha8Rng,
    probs: Vec<f32>,
    order: Vec<u32>,
}

impl Sampler {
    /// A sampler for `cfg` (validated).
    pub fn new(cfg: SamplingConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Sampler { cfg, rng: ChaCha8Rng::seed_from_u64(cfg.seed), probs: Vec::new(), order: Vec::new() })
    }

    /// The configuration.
    pub fn config(&self) -> &SamplingConfig {
        &self.cfg
    }

    /// Chooses a token from `logits` (already penalised and adapted).
    pub fn sample(&mut self, logits: &[f32]) -> Result<Draw> {
        if logits.is_empty() {
            return Err(Error::InvalidArgument("empty logits".into()));
        }
        if logits.iter().any(|z| z.is_nan()) {
            return Err(Error::Learning("logits contain NaN".into()));
        }
        if self.cfg.temperature == 0.0 {
            return Ok(Draw { token: argmax(logits) as u32, logprob: 0.0, kept: None });
        }
        softmax_scaled(logits, 1.0 / self.cfg.temperature, &mut self.probs);
        let kept = if self.cfg.truncates() { Some(self.truncate()) } else { None };
        let (token, p, mass) = match &kept {
            None => {
                let u: f32 = self.rng.random::<f32>();
                let i = draw_index(self.probs.iter().copied(), u, 1.0);
                (i as u32, self.probs[i], 1.0f64)
            }
            Some(set) => {
                let mass: f64 = set.iter().map(|&i| self.probs[i as usize] as f64).sum();
                let u: f32 = self.rng.random::<f32>();
                let j = draw_index(set.iter().map(|&i| self.probs[i as usize]), u, mass as f32);
                let tok = set[j];
                (tok, self.probs[tok as usize], mass)
            }
        };
        let logprob = ((p as f64).ln() - mass.ln()) as f32;
        Ok(Draw { token, logprob, kept })
    }

    /// The kept set under top-k, then top-p, then min-p, sorted by id.
    fn truncate(&mut self) -> Vec<u32> {
        let probs = &self.probs;
        let v = probs.len();
        self.order.clear();
        self.order.extend(0..v as u32);
        let by_prob_desc = |a: &u32, b: &u32| {
            probs[*b as usize].total_cmp(&probs[*a as usize]).then(a.cmp(b))
        };
        let k = if self.cfg.top_k > 0 { self.cfg.top_k.min(v) } else { v };
        if k < v {
            self.order.select_nth_unstable_by(k - 1, by_prob_desc);
            self.order.truncate(k);
        }
        self.order.sort_unstable_by(by_prob_desc);
        if self.cfg.top_p < 1.0 {
            let total: f64 = self.order.iter().map(|&i| probs[i as usize] as f64).sum();
            let target = self.cfg.top_p as f64 * total;
            let mut acc = 0.0f64;
            let mut keep = self.order.len();
            for (n, &i) in self.order.iter().enumerate() {
                acc += probs[i as usize] as f64;
                if acc >= target {
                    keep = n + 1;
                    break;
                }
            }
            self.order.truncate(keep.max(1));
        }
        if self.cfg.min_p > 0.0 {
            let top = probs[self.order[0] as usize];
            let floor = self.cfg.min_p * top;
            self.order.retain(|&i| probs[i as usize] >= floor);
        }
        let mut kept = self.order.clone();
        kept.sort_unstable();
        kept
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// `out = softmax(x * scale)`, computed stably.
pub fn softmax_scaled(x: &[f32], scale: f32, out: &mut Vec<f32>) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    out.clear();
    out.extend(x.iter().map(|&z| ((z - max) * scale).exp()));
    let sum: f32 = out.iter().sum();
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|p| *p *= inv);
}

/// `log_softmax(x)` at temperature 1.
pub fn log_softmax(x: &[f32], out: &mut Vec<f32>) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = x.iter().map(|&z| ((z - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    out.clear();
    out.extend(x.iter().map(|&z| z - lse));
}

/// Inverse-CDF draw: the first index where the running sum exceeds `u * total`.
fn draw_index(weights: impl Iterator<Item = f32>, u: f32, total: f32) -> usize {
    let target = u * total;
    let mut acc = 0.0f32;
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        acc += w;
        if w > 0.0 {
            last = i;
        }
        if acc > target {
            return i;
        }
    }
    last
}
