//! The adapter: a LoRA update on the LM head plus a value head, and the math that trains them
//! (see `docs/learning.md`).
//!
//! Code map: [`head`] holds the parameters and the logits hook; [`base`] the per-token statistics of
//! the base policy that make every later pass independent of the vocabulary size; [`math`] the
//! [`AdapterMath`] interface; [`cpu`] its CPU implementation (sparse per-row passes while few rows of `B` are active, dense vectorised
//! passes after); [`adam`] the sparse-row optimiser;
//! [`reference`] a dense f64 reference that tests compare against.
//!
//! Architecture invariant: a row of `B` that was never updated is exactly zero and inactive, and
//! nothing adds its (zero) change to a logit, so the identity adapter is bit for bit the base model.

pub mod adam;
pub mod base;
pub mod cpu;
mod dense;
mod fastmath;
pub mod gpu;
pub mod head;
pub mod math;
pub mod reference;
mod sparse;

pub use adam::{AdamParams, AdamParts, AdamState};
pub use base::{BaseScratch, BaseStats};
pub use cpu::{CpuMath, Strategy};
pub use head::{HeadParts, LoraConfig, LoraHead, MAX_RANK, MAX_TOP_K};
pub use math::{AdapterMath, GradEpisode, GradStats, HeadGrad, TokenEval};
