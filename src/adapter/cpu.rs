//! The CPU implementation of [`AdapterMath`]: checks the inputs, then runs each pass on the sparse
//! f64 path ([`super::sparse`], cost grows with the active rows of `B`) or the dense f32 path
//! ([`super::dense`], cost grows with the vocabulary, vectorised and threaded).

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::adam::{self, AdamParams, AdamState};
use super::base::{check_token, BaseStats};
use super::dense::{self, DenseScratch};
use super::sparse::SparseScratch;
use super::head::LoraHead;
use super::math::{AdapterMath, GradEpisode, GradStats, HeadGrad, TokenEval};
use crate::error::{Error, Result};
use crate::generate::TokenRecord;

/// How [`CpuMath`] evaluates a token's distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Sparse while few rows of `B` are active (and, for gradients, few tokens), dense after.
    #[default]
    Auto,
    /// Always the f64 per-row path (cost grows with the active rows).
    Sparse,
    /// Always the f32 vectorised path over the whole vocabulary.
    Dense,
}

/// The CPU implementation, holding reusable buffers so that a pass allocates little.
#[derive(Debug)]
pub struct CpuMath {
    strategy: Strategy,
    threads: usize,
    dense: DenseScratch,
    sparse: SparseScratch,
    mark: Vec<bool>,
}

impl CpuMath {
    /// A CPU implementation with empty buffers, using up to four threads for dense passes.
    pub fn new() -> CpuMath {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
        CpuMath {
            strategy: Strategy::Auto,
            threads,
            dense: DenseScratch::default(),
            sparse: SparseScratch::default(),
            mark: Vec::new(),
        }
    }

    /// The same with a fixed strategy (tests compare both paths).
    pub fn with_strategy(strategy: Strategy) -> CpuMath {
        CpuMath { strategy, ..CpuMath::new() }
    }

    /// Sets how many threads dense passes may use (at least one; each holds about
    /// `(16 + 2 r) V` f32 of buffers).
    pub fn with_threads(mut self, threads: usize) -> CpuMath {
        self.threads = threads.max(1);
        self
    }

    /// Whether a pass over `tokens` tokens takes the dense path. The sparse path costs about
    /// `active rows` per token, and its gradient also `tokens x (tokens x top_k)` for the rows of `B`;
    /// the dense one `V / 8` (vectorised) per token.
    fn dense_for(&self, head: &LoraHead, tokens: usize, gradient: bool) -> bool {
        match self.strategy {
            Strategy::Auto => {
                let vocab = head.vocab_size();
                head.active_rows().len() * 16 > vocab || (gradient && tokens * (head.config().top_k + 1) * 4 > vocab)
            }
            Strategy::Sparse => false,
            Strategy::Dense => true,
        }
    }
}

fn finite_evals(out: &[TokenEval]) -> Result<()> {
    if out.iter().all(|e| e.logp.is_finite() && e.kl.is_finite() && e.entropy.is_finite()) {
        Ok(())
    } else {
        Err(Error::Learning("non-finite adapted distribution (adapter weights blew up?)".into()))
    }
}

fn check_lengths(tokens: &[TokenRecord], base: &[BaseStats]) -> Result<()> {
    if tokens.len() != base.len() {
        return Err(Error::Learning(format!("{} tokens but {} base statistics", tokens.len(), base.len())));
    }
    Ok(())
}

impl Default for CpuMath {
    fn default() -> Self {
        CpuMath::new()
    }
}

impl AdapterMath for CpuMath {
    fn add_delta(&self, head: &LoraHead, hidden: &[f32], logits: &mut [f32]) -> Result<()> {
        head.add_delta(hidden, logits)
    }

    fn add_delta_batch(&self, head: &LoraHead, hidden: ArrayView2<f32>, logits: ArrayViewMut2<f32>) -> Result<()> {
        head.add_delta_batch(hidden, logits)
    }

    fn evaluate(&mut self, head: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats], out: &mut Vec<TokenEval>) -> Result<()> {
        check_lengths(tokens, base)?;
        out.clear();
        for (rec, bs) in tokens.iter().zip(base) {
            check_token(head, rec, bs)?;
        }
        if self.dense_for(head, tokens.len(), false) {
            dense::evaluate(&mut self.dense, self.threads, head, tokens, base, out);
            return finite_evals(out);
        }
        self.sparse.evaluate(head, tokens, base, out)?;
        Ok(())
    }

    fn step_kl(&mut self, old: &LoraHead, new: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats]) -> Result<f64> {
        check_lengths(tokens, base)?;
        if old.rank() != new.rank() || old.hidden_size() != new.hidden_size() || old.vocab_size() != new.vocab_size() {
            return Err(Error::Learning("adapters of different shapes".into()));
        }
        if tokens.is_empty() {
            return Ok(0.0);
        }
        for (rec, bs) in tokens.iter().zip(base) {
            check_token(new, rec, bs)?;
        }
        if self.dense_for(new, tokens.len(), false) {
            let kl = dense::step_kl(&mut self.dense, self.threads, old, new, tokens, base) / tokens.len() as f64;
            return if kl.is_finite() { Ok(kl) } else { Err(Error::Learning("non-finite KL between adapters".into())) };
        }
        self.sparse.step_kl(old, new, tokens, base)
    }

    fn gradient(&mut self, head: &LoraHead, batch: &[GradEpisode<'_>], grad: &mut HeadGrad) -> Result<GradStats> {
        let (r, d, vocab) = (head.rank(), head.hidden_size(), head.vocab_size());
        for ep in batch {
            check_lengths(ep.tokens, ep.base)?;
            ep.check_weights()?;
            for (rec, bs) in ep.tokens.iter().zip(ep.base) {
                check_token(head, rec, bs)?;
            }
        }
        grad.a = Array2::zeros((r, d));
        grad.value_w.clear();
        grad.value_w.resize(d, 0.0);
        grad.value_b = 0.0;
        grad.has_value = batch.iter().any(|e| e.value_targets.is_some());
        let mut stats = GradStats::default();
        for ep in batch {
            if let Some(targets) = ep.value_targets {
                for (rec, &target) in ep.tokens.iter().zip(targets) {
                    let v_t = f64::from(head.value_b()) + head.value_w().iter().zip(&rec.hidden).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>();
                    let diff = v_t - target;
                    grad.value_w.iter_mut().zip(&rec.hidden).for_each(|(gw, &h)| *gw += diff * f64::from(h));
                    grad.value_b += diff;
                    stats.value_loss += 0.5 * diff * diff;
                }
            }
        }
        self.mark.clear();
        self.mark.resize(vocab, false);
        let n_tokens: usize = batch.iter().map(|e| e.tokens.len()).sum();
        if self.dense_for(head, n_tokens, true) {
            dense::policy_gradient(&mut self.dense, self.threads, head, batch, grad, &mut stats, &mut self.mark);
        } else {
            self.sparse.policy_gradient(head, batch, grad, &mut stats, &mut self.mark)?;
        }
        if !grad.is_finite() {
            return Err(Error::Learning("non-finite gradient".into()));
        }
        Ok(stats)
    }

    fn adam_step(&mut self, head: &mut LoraHead, adam: &mut AdamState, grad: &HeadGrad, params: &AdamParams) -> Result<()> {
        adam::adam_step(head, adam, grad, params)
    }
}
