//! [`FallbackMath`]: the GPU math with the CPU math behind it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use ndarray::{ArrayView2, ArrayViewMut2};

use super::math::GpuMath;
use crate::adapter::{AdamParams, AdamState, AdapterMath, BaseStats, CpuMath, GradEpisode, GradStats, HeadGrad, LoraHead, TokenEval};
use crate::error::{Error, Result};
use crate::generate::TokenRecord;

/// Runs every call on the GPU while it works and on the CPU otherwise.
///
/// The first device failure (a lost device, a wgpu error, a panic inside wgpu) is logged and turns
/// the GPU off for the life of this value; that call and all later ones run on the CPU, so no GPU
/// problem reaches the caller. Any other error of the GPU path (bad input, a non-finite result of
/// the f32 arithmetic) reruns that one call on the CPU, whose answer (or error) is returned.
#[derive(Debug)]
pub struct FallbackMath {
    gpu: GpuMath,
    cpu: CpuMath,
    off: AtomicBool,
}

impl FallbackMath {
    /// Wraps `gpu`, with a fresh [`CpuMath`] as the fallback.
    pub fn new(gpu: GpuMath) -> FallbackMath {
        FallbackMath { gpu, cpu: CpuMath::new(), off: AtomicBool::new(false) }
    }

    /// Whether calls still go to the GPU.
    pub fn gpu_active(&self) -> bool {
        !self.off.load(Ordering::SeqCst)
    }

    /// The GPU math inside.
    pub fn gpu(&self) -> &GpuMath {
        &self.gpu
    }

    /// Runs `f` on the GPU; `Some` with its answer when the CPU need not run.
    fn try_gpu<T>(&self, what: &str, f: impl FnOnce(&GpuMath) -> Result<T>) -> Option<T> {
        if !self.gpu_active() {
            return None;
        }
        match catch_unwind(AssertUnwindSafe(|| f(&self.gpu))) {
            Ok(Ok(v)) => Some(v),
            Ok(Err(Error::Gpu(msg))) => {
                self.off.store(true, Ordering::SeqCst);
                log::warn!("GPU adapter math failed in {what} ({msg}); using the CPU from now on");
                None
            }
            Ok(Err(e)) => {
                log::debug!("GPU adapter math declined {what} ({e}); running it on the CPU");
                None
            }
            Err(_) => {
                self.off.store(true, Ordering::SeqCst);
                log::warn!("GPU adapter math panicked in {what}; using the CPU from now on");
                None
            }
        }
    }
}

impl AdapterMath for FallbackMath {
    // GpuMath touches the logits only after all device work succeeded, so a failed GPU call leaves
    // them as they were for the CPU to redo.
    fn add_delta(&self, head: &LoraHead, hidden: &[f32], logits: &mut [f32]) -> Result<()> {
        match self.try_gpu("add_delta", |g| g.add_delta(head, hidden, logits)) {
            Some(()) => Ok(()),
            None => self.cpu.add_delta(head, hidden, logits),
        }
    }

    fn add_delta_batch(&self, head: &LoraHead, hidden: ArrayView2<f32>, mut logits: ArrayViewMut2<f32>) -> Result<()> {
        match self.try_gpu("add_delta_batch", |g| g.add_delta_batch(head, hidden, logits.view_mut())) {
            Some(()) => Ok(()),
            None => self.cpu.add_delta_batch(head, hidden, logits),
        }
    }

    fn evaluate(&mut self, head: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats], out: &mut Vec<TokenEval>) -> Result<()> {
        match self.try_gpu("evaluate", |g| g.evaluate_shared(head, tokens, base)) {
            Some(got) => {
                *out = got;
                Ok(())
            }
            None => self.cpu.evaluate(head, tokens, base, out),
        }
    }

    fn step_kl(&mut self, old: &LoraHead, new: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats]) -> Result<f64> {
        match self.try_gpu("step_kl", |g| g.step_kl_shared(old, new, tokens, base)) {
            Some(kl) => Ok(kl),
            None => self.cpu.step_kl(old, new, tokens, base),
        }
    }

    fn gradient(&mut self, head: &LoraHead, batch: &[GradEpisode<'_>], grad: &mut HeadGrad) -> Result<GradStats> {
        match self.try_gpu("gradient", |g| g.gradient_shared(head, batch)) {
            Some((g, stats)) => {
                *grad = g;
                Ok(stats)
            }
            None => self.cpu.gradient(head, batch, grad),
        }
    }

    fn adam_step(&mut self, head: &mut LoraHead, adam: &mut AdamState, grad: &HeadGrad, params: &AdamParams) -> Result<()> {
        match self.try_gpu("adam_step", |g| g.adam_shared(head, adam, grad, params)) {
            Some(()) => Ok(()),
            None => self.cpu.adam_step(head, adam, grad, params),
        }
    }
}
