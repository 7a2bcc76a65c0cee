//! Shared helpers of the learning tests: a random "tiny LM head" and token records made from it.
#![allow(dead_code)]

use attune::adapter::LoraHead;
use attune::generate::TokenRecord;
use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded random generator.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A roughly standard normal value (sum of uniforms, enough for tests).
pub fn normal(rng: &mut ChaCha8Rng) -> f32 {
    (0..6).map(|_| rng.random_range(-1.0f32..1.0)).sum::<f32>() / 2.0_f32.sqrt()
}

/// A fixed base LM head `W` (`V x d`) with logits of a realistic spread.
pub struct TinyLm {
    pub vocab: usize,
    pub d: usize,
    pub w: Vec<f32>,
}

impl TinyLm {
    pub fn new(vocab: usize, d: usize, spread: f32, seed: u64) -> TinyLm {
        let mut r = rng(seed);
        let w = (0..vocab * d).map(|_| normal(&mut r) * spread / (d as f32).sqrt()).collect();
        TinyLm { vocab, d, w }
    }

    pub fn hidden(&self, rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..self.d).map(|_| normal(rng)).collect()
    }

    /// Base logits `W h`.
    pub fn logits(&self, h: &[f32]) -> Vec<f32> {
        (0..self.vocab).map(|v| self.w[v * self.d..(v + 1) * self.d].iter().zip(h).map(|(a, b)| a * b).sum()).collect()
    }

    /// `log_softmax(W h)` in f16, as generation records it.
    pub fn base_logprobs(&self, h: &[f32]) -> Vec<f16> {
        log_softmax(&self.logits(h)).into_iter().map(f16::from_f32).collect()
    }

    /// Samples one token from the adapted policy at temperature `tau` (optionally truncated to the
    /// `top_k` most probable), returning its record.
    pub fn sample(&self, head: &LoraHead, h: Vec<f32>, tau: f32, top_k: Option<usize>, rng: &mut ChaCha8Rng) -> TokenRecord {
        let base = self.base_logprobs(&h);
        let mut z: Vec<f32> = base.iter().map(|x| x.to_f32()).collect();
        head.add_delta(&h, &mut z).unwrap();
        let kept = top_k.map(|k| {
            let mut idx: Vec<u32> = (0..self.vocab as u32).collect();
            idx.sort_by(|&a, &b| z[b as usize].total_cmp(&z[a as usize]));
            idx.truncate(k);
            idx.sort_unstable();
            idx
        });
        let scaled: Vec<f32> = (0..self.vocab)
            .map(|v| if kept.as_ref().is_none_or(|k| k.binary_search(&(v as u32)).is_ok()) { z[v] / tau } else { f32::NEG_INFINITY })
            .collect();
        let lp = log_softmax(&scaled);
        let x: f32 = rng.random_range(0.0..1.0);
        let mut acc = 0.0;
        let mut token = 0;
        for (v, l) in lp.iter().enumerate() {
            if *l == f32::NEG_INFINITY {
                continue;
            }
            token = v;
            acc += l.exp();
            if acc > x {
                break;
            }
        }
        TokenRecord { token: token as u32, hidden: h, base_logprobs: base, behaviour_logprob: lp[token], kept }
    }
}

pub fn log_softmax(z: &[f32]) -> Vec<f32> {
    let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
    z.iter().map(|x| x - lse).collect()
}

/// The mean KL per token from the base policy to the adapted one at the records' positions, at
/// temperature `tau`, over each record's kept set when it has one, computed here in f64 from the
/// recorded base log-probabilities and the adapter's change of the logits (not through the
/// learner's math): what the probe guard must measure.
pub fn probe_kl(head: &LoraHead, records: &[TokenRecord], tau: f32) -> f64 {
    let mut total = 0.0;
    for rec in records {
        let base: Vec<f32> = rec.base_logprobs.iter().map(|x| x.to_f32()).collect();
        let mut adapted = base.clone();
        head.add_delta(&rec.hidden, &mut adapted).unwrap();
        let keep = |v: usize| rec.kept.as_ref().is_none_or(|k| k.binary_search(&(v as u32)).is_ok());
        let lsm = |z: &[f32]| -> Vec<f64> {
            let scaled: Vec<f64> = z.iter().enumerate().map(|(v, &x)| if keep(v) { f64::from(x) / f64::from(tau) } else { f64::NEG_INFINITY }).collect();
            let m = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + scaled.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            scaled.iter().map(|x| x - lse).collect()
        };
        let (lp, lq) = (lsm(&adapted), lsm(&base));
        total += lp.iter().zip(&lq).filter(|(p, _)| p.is_finite()).map(|(p, q)| p.exp() * (p - q)).sum::<f64>();
    }
    total / records.len().max(1) as f64
}

/// `|a - b| <= atol + rtol |b|`, with a readable message.
pub fn assert_close(what: &str, a: f64, b: f64, rtol: f64, atol: f64) {
    assert!((a - b).abs() <= atol + rtol * b.abs(), "{what}: got {a}, expected {b} (diff {})", (a - b).abs());
}

/// A math implementation whose first `n` optimiser steps blow the adapter up (`usize::MAX`: every
/// one); later ones are sound.
pub struct ExplodeFirst(pub attune::adapter::CpuMath, pub usize);

impl attune::adapter::AdapterMath for ExplodeFirst {
    fn add_delta(&self, head: &attune::adapter::LoraHead, h: &[f32], z: &mut [f32]) -> attune::Result<()> {
        self.0.add_delta(head, h, z)
    }
    fn add_delta_batch(&self, head: &attune::adapter::LoraHead, h: ndarray::ArrayView2<f32>, z: ndarray::ArrayViewMut2<f32>) -> attune::Result<()> {
        self.0.add_delta_batch(head, h, z)
    }
    fn evaluate(&mut self, head: &attune::adapter::LoraHead, t: &[attune::generate::TokenRecord], b: &[attune::adapter::BaseStats], out: &mut Vec<attune::adapter::TokenEval>) -> attune::Result<()> {
        self.0.evaluate(head, t, b, out)
    }
    fn step_kl(&mut self, old: &attune::adapter::LoraHead, new: &attune::adapter::LoraHead, t: &[attune::generate::TokenRecord], b: &[attune::adapter::BaseStats]) -> attune::Result<f64> {
        self.0.step_kl(old, new, t, b)
    }
    fn gradient(&mut self, head: &attune::adapter::LoraHead, batch: &[attune::adapter::GradEpisode<'_>], grad: &mut attune::adapter::HeadGrad) -> attune::Result<attune::adapter::GradStats> {
        self.0.gradient(head, batch, grad)
    }
    fn adam_step(&mut self, head: &mut attune::adapter::LoraHead, adam: &mut attune::adapter::AdamState, grad: &attune::adapter::HeadGrad, p: &attune::adapter::AdamParams) -> attune::Result<()> {
        self.0.adam_step(head, adam, grad, p)?;
        if self.1 == 0 {
            return Ok(());
        }
        self.1 -= 1;
        let rows: Vec<u32> = head.active_rows().to_vec();
        head.set_b_row(rows[0] as usize, &vec![f32::INFINITY; head.rank()])
    }
}
