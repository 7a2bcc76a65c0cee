//! The adapter math on a GPU through wgpu (Vulkan, Metal, DX12, GL), with the CPU path as reference
//! and fallback.
//!
//! Code map: [`device`] picks where the math runs ([`ComputeDevice`], [`math_for`]) and opens a
//! [`GpuDevice`]; `math.rs` holds [`GpuMath`] (the [`crate::adapter::AdapterMath`] implementation)
//! and `grad.rs` its gradient and Adam step; `resident.rs` keeps the head on the device between
//! calls; `tokens.rs` packs recorded tokens for the kernels; `exec.rs` is the wgpu plumbing (pooled
//! buffers, dispatch, read-back, error scopes); [`FallbackMath`] switches to the CPU on the first
//! device failure. The WGSL kernels sit beside this file, one per `*.wgsl`.
//!
//! The GPU computes in f32 what the CPU computes in f64, with the same semantics: the adapted policy
//! differs from the base one only on the active rows of `B`, so every pass runs over those rows and
//! takes the base policy's normaliser and entropy from [`crate::adapter::BaseStats`]; log-partition
//! and KL are written (expm1/log1p forms, KL as a sum of non-negative Bregman terms) so that f32
//! keeps about 1e-6 relative accuracy even when the adapter barely moves the policy.
//!
//! Everything that touches wgpu is behind the `gpu` cargo feature (on for the CLI and the tests, off
//! by default so that `libattune` stays lean); without it [`math_for`] always builds the CPU math
//! and says why. Architecture invariant: no `wgpu` type appears outside this module; callers see [`GpuDevice`],
//! [`AdapterSummary`] and the `AdapterMath` trait only.
//!
//! ```ignore
//! use attune::adapter::gpu::{math_for, ComputeConfig, ComputeDevice};
//!
//! let (math, choice) = math_for(&ComputeConfig { device: ComputeDevice::Auto, allow_software: false });
//! println!("adapter math on {:?}: {}", choice.adapter.map(|a| a.name), choice.reason);
//! # drop(math);
//! ```

pub mod device;
#[cfg(feature = "gpu")]
mod exec;
#[cfg(feature = "gpu")]
mod fallback;
#[cfg(feature = "gpu")]
mod grad;
#[cfg(feature = "gpu")]
mod kernels;
#[cfg(feature = "gpu")]
mod math;
#[cfg(feature = "gpu")]
mod resident;
#[cfg(feature = "gpu")]
mod tokens;

#[cfg(feature = "gpu")]
pub use device::GpuDevice;
pub use device::{math_for, AdapterKind, AdapterSummary, ComputeConfig, ComputeDevice, DeviceChoice};
#[cfg(feature = "gpu")]
pub use fallback::FallbackMath;
#[cfg(feature = "gpu")]
pub use math::{GpuMath, TransferStats};
