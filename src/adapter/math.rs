//! The adapter math behind one interface, so that a GPU implementation can replace the CPU one.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::adam::{AdamParams, AdamState};
use super::base::BaseStats;
use super::head::LoraHead;
use crate::error::{Error, Result};
use crate::generate::TokenRecord;

/// One episode's share of a gradient: its tokens, their base statistics, and the weights the
/// algorithm chose.
///
/// The objective is `J = sum_t c_t log p_t[a_t] + sum_t k_t delta_t[a_t] - beta sum_t KL_t` (the
/// `c_t` and `k_t` held constant; `delta_t[a_t]` is the adapter's change of the sampled token's logit)
/// and, when `value_targets` is given, the value loss `1/2 sum_t (V_t - G_t)^2`. The `k_t` term is
/// how a loss on the adapted logits themselves (soft Q-learning's Bellman residual) reaches the same
/// backward pass: its gradient with respect to the logits is `k_t` on the sampled token alone.
#[derive(Debug, Clone, Copy)]
pub struct GradEpisode<'a> {
    /// The recorded tokens.
    pub tokens: &'a [TokenRecord],
    /// [`BaseStats`] of each token, at the temperature the policy is evaluated at.
    pub base: &'a [BaseStats],
    /// `c_t` for each token.
    pub weights: &'a [f64],
    /// The KL coefficient `beta`.
    pub beta: f64,
    /// `k_t` for each token, or `None` for no logit term.
    pub logit_weights: Option<&'a [f64]>,
    /// The value head's targets `G_t` for each token, or `None` to leave the value head alone.
    pub value_targets: Option<&'a [f64]>,
}

impl GradEpisode<'_> {
    /// Checks that the weights, logit weights and value targets match the tokens and are finite.
    pub fn check_weights(&self) -> Result<()> {
        let n = self.tokens.len();
        let (logit, value) = (self.logit_weights.unwrap_or(&[]), self.value_targets.unwrap_or(&[]));
        if self.weights.len() != n || self.logit_weights.is_some_and(|k| k.len() != n) || self.value_targets.is_some_and(|g| g.len() != n) {
            return Err(Error::Learning("weights, logit weights or value targets do not match the tokens".into()));
        }
        if !self.beta.is_finite() || self.weights.iter().chain(logit).chain(value).any(|x| !x.is_finite()) {
            return Err(Error::Learning("non-finite weights, logit weights, value targets or beta".into()));
        }
        Ok(())
    }
}

/// The gradient of the loss `L = -J + 1/2 sum_t (V_t - G_t)^2` (so an optimiser descends it).
///
/// `B`'s gradient is kept only for [`HeadGrad::rows`]: the tokens that carried mass (each position's
/// sampled token and the `top_k` of its adapted policy). It is exact on those rows.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadGrad {
    /// `dL/dA`, `r x d`.
    pub a: Array2<f64>,
    /// The rows of `B` with a gradient, ascending.
    pub rows: Vec<u32>,
    /// `dL/dB` for those rows, `rows.len() x r`.
    pub b: Array2<f64>,
    /// `dL/dw` of the value head.
    pub value_w: Vec<f64>,
    /// `dL/db` of the value head.
    pub value_b: f64,
    /// Whether the value head has a gradient at all.
    pub has_value: bool,
}

impl HeadGrad {
    /// An empty gradient for rank `r` and hidden size `d`.
    pub fn new(rank: usize, hidden_size: usize) -> HeadGrad {
        HeadGrad {
            a: Array2::zeros((rank, hidden_size)),
            rows: Vec::new(),
            b: Array2::zeros((0, rank)),
            value_w: vec![0.0; hidden_size],
            value_b: 0.0,
            has_value: false,
        }
    }

    /// The Euclidean norm of the policy part (`A` and the rows of `B`).
    pub fn policy_norm(&self) -> f64 {
        (self.a.iter().map(|x| x * x).sum::<f64>() + self.b.iter().map(|x| x * x).sum::<f64>()).sqrt()
    }

    /// The Euclidean norm of the value-head part.
    pub fn value_norm(&self) -> f64 {
        (self.value_w.iter().map(|x| x * x).sum::<f64>() + self.value_b * self.value_b).sqrt()
    }

    /// Multiplies the policy part by `k`.
    pub fn scale_policy(&mut self, k: f64) {
        self.a.mapv_inplace(|x| x * k);
        self.b.mapv_inplace(|x| x * k);
    }

    /// Multiplies the value part by `k`.
    pub fn scale_value(&mut self, k: f64) {
        self.value_w.iter_mut().for_each(|x| *x *= k);
        self.value_b *= k;
    }

    /// Whether every value is finite.
    pub fn is_finite(&self) -> bool {
        self.a.iter().chain(self.b.iter()).chain(self.value_w.iter()).all(|x| x.is_finite()) && self.value_b.is_finite()
    }
}

/// Sums that come out of a gradient pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GradStats {
    /// Tokens seen.
    pub tokens: usize,
    /// `sum_t c_t log p_t[a_t]` (the policy term of `J`).
    pub policy_objective: f64,
    /// `sum_t KL_t`, the exact KL of the adapted policy to the base one (unweighted by beta).
    pub kl_sum: f64,
    /// `1/2 sum_t (V_t - G_t)^2` over tokens with a value target.
    pub value_loss: f64,
}

/// The adapted and base policies at one recorded token.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TokenEval {
    /// `log p_t[a_t]` under the adapter.
    pub logp: f64,
    /// `log q_t[a_t]` under the base model.
    pub base_logp: f64,
    /// `KL(p_t || q_t)`.
    pub kl: f64,
    /// The adapted policy's entropy.
    pub entropy: f64,
    /// The base policy's entropy.
    pub base_entropy: f64,
}

/// The adapter's arithmetic. [`super::CpuMath`] implements it with ndarray; a wgpu implementation
/// can take its place with the same interface.
pub trait AdapterMath {
    /// Adds `s * B (A h)` to one position's logits in place (see [`LoraHead::add_delta`]).
    fn add_delta(&self, head: &LoraHead, hidden: &[f32], logits: &mut [f32]) -> Result<()>;

    /// Adds the change for `n` positions: `hidden` is `n x d`, `logits` is `n x V`.
    fn add_delta_batch(&self, head: &LoraHead, hidden: ArrayView2<f32>, logits: ArrayViewMut2<f32>) -> Result<()>;

    /// Evaluates the adapted and base policies at each token, replacing the contents of `out`.
    fn evaluate(&mut self, head: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats], out: &mut Vec<TokenEval>) -> Result<()>;

    /// The mean over tokens of the exact `KL(p_old || p_new)` between two adapters.
    fn step_kl(&mut self, old: &LoraHead, new: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats]) -> Result<f64>;

    /// Computes the loss gradient of a batch of episodes into `grad` (replacing it).
    fn gradient(&mut self, head: &LoraHead, batch: &[GradEpisode<'_>], grad: &mut HeadGrad) -> Result<GradStats>;

    /// One Adam step on `A`, on the rows of `B` that `grad` names, and (when it has a gradient) on the
    /// value head; rows of `B` it touches become active.
    fn adam_step(&mut self, head: &mut LoraHead, adam: &mut AdamState, grad: &HeadGrad, params: &AdamParams) -> Result<()>;
}
