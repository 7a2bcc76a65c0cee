//! A slow, dense f64 reference of the adapter math: full softmax over the vocabulary, no caches.
//! Tests check the fast path and finite differences against it; nothing else should call it.

use ndarray::{Array1, Array2};

use super::head::LoraHead;
use crate::generate::TokenRecord;

/// The adapter's parameters in f64, so that finite differences can perturb them exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseParams {
    /// `A`, `r x d`.
    pub a: Array2<f64>,
    /// `B`, `V x r`.
    pub b: Array2<f64>,
    /// `s = alpha / r`.
    pub scale: f64,
    /// Value head weights.
    pub w: Array1<f64>,
    /// Value head bias.
    pub bias: f64,
}

impl DenseParams {
    /// The parameters of `head`, widened to f64.
    pub fn from_head(head: &LoraHead) -> DenseParams {
        DenseParams {
            a: head.a().mapv(f64::from),
            b: head.b().mapv(f64::from),
            scale: f64::from(head.scale()),
            w: head.value_w().mapv(f64::from),
            bias: f64::from(head.value_b()),
        }
    }

    /// `delta = s B (A h)` for every token.
    pub fn delta(&self, hidden: &[f32]) -> Vec<f64> {
        let h = Array1::from_iter(hidden.iter().map(|&x| f64::from(x)));
        let u = self.a.dot(&h);
        (self.b.dot(&u) * self.scale).to_vec()
    }

    /// The value head's estimate.
    pub fn value(&self, hidden: &[f32]) -> f64 {
        self.bias + self.w.iter().zip(hidden).map(|(&w, &h)| w * f64::from(h)).sum::<f64>()
    }
}

/// `(p, q)`: the adapted and base policies at temperature `tau` over the whole vocabulary (zero
/// outside the kept set).
pub fn policies(params: &DenseParams, rec: &TokenRecord, tau: f64) -> (Vec<f64>, Vec<f64>) {
    let delta = params.delta(&rec.hidden);
    let vocab = rec.base_logprobs.len();
    let kept: Vec<bool> = match &rec.kept {
        None => vec![true; vocab],
        Some(k) => {
            let mut m = vec![false; vocab];
            k.iter().for_each(|&v| m[v as usize] = true);
            m
        }
    };
    let softmax = |with_delta: bool| {
        let z: Vec<f64> = (0..vocab)
            .map(|v| {
                if !kept[v] {
                    return f64::NEG_INFINITY;
                }
                let base = f64::from(rec.base_logprobs[v].to_f32());
                (base + if with_delta { delta[v] } else { 0.0 }) / tau
            })
            .collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|x| (x - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|x| x / s).collect::<Vec<f64>>()
    };
    (softmax(true), softmax(false))
}

/// `KL(p || q)`.
pub fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).filter(|(&pv, _)| pv > 0.0).map(|(&pv, &qv)| pv * (pv.ln() - qv.ln())).sum()
}

/// The entropy of `p`.
pub fn entropy(p: &[f64]) -> f64 {
    -p.iter().filter(|&&x| x > 0.0).map(|&x| x * x.ln()).sum::<f64>()
}

/// `J = sum_t c_t log p_t[a_t] - beta sum_t KL_t` for one episode at temperature `tau`.
pub fn objective(params: &DenseParams, tokens: &[TokenRecord], tau: f64, weights: &[f64], beta: f64) -> f64 {
    tokens
        .iter()
        .zip(weights)
        .map(|(rec, &c)| {
            let (p, q) = policies(params, rec, tau);
            c * p[rec.token as usize].ln() - beta * kl(&p, &q)
        })
        .sum()
}

/// The value loss `1/2 sum_t (V_t - G_t)^2`.
pub fn value_loss(params: &DenseParams, tokens: &[TokenRecord], targets: &[f64]) -> f64 {
    tokens.iter().zip(targets).map(|(rec, &g)| 0.5 * (params.value(&rec.hidden) - g).powi(2)).sum()
}

/// The mean over tokens of `KL(p_old || p_new)`.
pub fn step_kl(old: &DenseParams, new: &DenseParams, tokens: &[TokenRecord], tau: f64) -> f64 {
    let total: f64 = tokens
        .iter()
        .map(|rec| {
            let (p_old, _) = policies(old, rec, tau);
            let (p_new, _) = policies(new, rec, tau);
            kl(&p_old, &p_new)
        })
        .sum();
    total / tokens.len().max(1) as f64
}

/// Soft Q-learning's `Q(s_t, a_t) = (tau / t) delta_t[a_t]` for a policy at temperature `t`.
pub fn soft_q(params: &DenseParams, rec: &TokenRecord, t: f64, tau: f64) -> f64 {
    tau / t * params.delta(&rec.hidden)[rec.token as usize]
}

/// `V_soft(s) = tau log sum_v q_v exp(Q(s, v) / tau)` over the whole kept set, `q` the base policy
/// at temperature `t` (a dense log-sum-exp).
pub fn soft_value(params: &DenseParams, rec: &TokenRecord, t: f64, tau: f64) -> f64 {
    let (_, q) = policies(params, rec, t);
    let delta = params.delta(&rec.hidden);
    let y: Vec<f64> = q.iter().zip(&delta).filter(|(&qv, _)| qv > 0.0).map(|(&qv, &d)| qv.ln() + (tau / t) * d / tau).collect();
    let m = y.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    tau * (m + y.iter().map(|x| (x - m).exp()).sum::<f64>().ln())
}

/// Soft Q-learning's loss against fixed targets: `1/2 sum_t (Q_t - y_t)^2 + beta sum_t KL_t`.
pub fn soft_q_loss(params: &DenseParams, tokens: &[TokenRecord], t: f64, tau: f64, targets: &[f64], beta: f64) -> f64 {
    tokens
        .iter()
        .zip(targets)
        .map(|(rec, &y)| {
            let (p, q) = policies(params, rec, t);
            0.5 * (soft_q(params, rec, t, tau) - y).powi(2) + beta * kl(&p, &q)
        })
        .sum()
}
