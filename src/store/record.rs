//! The adapter state as the store persists it. These types are decoupled from the runtime's
//! adapter and learner types: the learning module converts its state to and from an
//! [`AdapterRecord`], and the file format converts an `AdapterRecord` to and from its frozen,
//! versioned wire types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::StoreError;

/// The longest tensor, counter, scalar or setting name that is accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// The most dimensions a tensor may have.
pub const MAX_TENSOR_DIMS: usize = 8;
/// The most elements one tensor may hold (1 GiB of `f32`).
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 28;

/// The adapter's hyper-parameters, fixed when the adapter is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// The LoRA rank `r`.
    pub rank: u32,
    /// The LoRA scaling `alpha`.
    pub alpha: f32,
    /// The model's hidden size `d`.
    pub hidden: u32,
    /// The vocabulary size `V`.
    pub vocab: u32,
    /// How many output rows the adapter updates per step.
    pub top_k_rows: u32,
    /// The learning algorithm's name, e.g. `"reinforce"`.
    pub algorithm: String,
    /// Further numeric settings the algorithm wants to keep with the adapter.
    pub extra: BTreeMap<String, f32>,
}

/// A named dense `f32` tensor in row-major order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    /// The dimensions; the product must equal `data.len()` (an empty shape holds one value).
    pub shape: Vec<u32>,
    /// The values in row-major order.
    pub data: Vec<f32>,
}

impl Tensor {
    /// Builds a tensor, checking that the shape and the data length agree.
    pub fn new(shape: Vec<u32>, data: Vec<f32>) -> Result<Self, StoreError> {
        let t = Tensor { shape, data };
        t.check("tensor")?;
        Ok(t)
    }

    /// Returns the element count that the shape implies, or `None` if it overflows `u64`.
    pub fn shape_elements(shape: &[u32]) -> Option<u64> {
        shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
    }

    /// Checks shape, length and finiteness; `name` only appears in the error message.
    fn check(&self, name: &str) -> Result<(), StoreError> {
        if self.shape.len() > MAX_TENSOR_DIMS {
            return Err(StoreError::InvalidRecord(format!(
                "tensor {name:?} has {} dimensions, at most {MAX_TENSOR_DIMS} allowed",
                self.shape.len()
            )));
        }
        let elements = Self::shape_elements(&self.shape)
            .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| {
                StoreError::InvalidRecord(format!(
                    "tensor {name:?} shape {:?} exceeds {MAX_TENSOR_ELEMENTS} elements",
                    self.shape
                ))
            })?;
        if elements != self.data.len() as u64 {
            return Err(StoreError::InvalidRecord(format!(
                "tensor {name:?} shape {:?} needs {elements} values but has {}",
                self.shape,
                self.data.len()
            )));
        }
        if let Some(i) = self.data.iter().position(|v| !v.is_finite()) {
            return Err(StoreError::InvalidRecord(format!(
                "tensor {name:?} has a non-finite value at index {i}"
            )));
        }
        Ok(())
    }
}

/// A summary of the rewards the user has given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardSummary {
    /// How many rewards were received in total.
    pub count: u64,
    /// The mean of all rewards received.
    pub mean: f64,
    /// The most recent rewards, oldest first (the learner keeps the last 64).
    pub recent: Vec<f32>,
    /// How many thumbs-up the user gave.
    pub thumbs_up: u64,
    /// How many thumbs-down the user gave.
    pub thumbs_down: u64,
}

/// Everything the store keeps for one user's adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterRecord {
    /// The adapter's hyper-parameters.
    pub config: AdapterConfig,
    /// Named tensors: the LoRA factors (`"lora.A"`, `"lora.B"`), value head, optimiser moments.
    pub tensors: BTreeMap<String, Tensor>,
    /// Named counters: optimiser steps, update count, episodes.
    pub counters: BTreeMap<String, u64>,
    /// Named scalars: baseline EMA, reward mean and variance, beta, learning rate.
    pub scalars: BTreeMap<String, f64>,
    /// The reward history summary.
    pub rewards: RewardSummary,
    /// When the adapter was created, in seconds since the Unix epoch.
    pub created_unix: u64,
    /// When the adapter was last changed, in seconds since the Unix epoch.
    pub updated_unix: u64,
}

impl AdapterRecord {
    /// Creates an empty record with `config`, stamped as created and updated at `now_unix`.
    pub fn new(config: AdapterConfig, now_unix: u64) -> Self {
        AdapterRecord {
            config,
            tensors: BTreeMap::new(),
            counters: BTreeMap::new(),
            scalars: BTreeMap::new(),
            rewards: RewardSummary::default(),
            created_unix: now_unix,
            updated_unix: now_unix,
        }
    }

    /// Checks every invariant the file format relies on: names at most [`MAX_NAME_BYTES`] long,
    /// shapes that match their data, and only finite numbers (a NaN adapter would poison every
    /// later load, so it is refused at the door).
    pub fn validate(&self) -> Result<(), StoreError> {
        let c = &self.config;
        check_name("algorithm", &c.algorithm)?;
        check_finite("config.alpha", f64::from(c.alpha))?;
        for (name, &v) in &c.extra {
            check_name("config.extra", name)?;
            check_finite(name, f64::from(v))?;
        }
        for (name, t) in &self.tensors {
            check_name("tensor", name)?;
            t.check(name)?;
        }
        for name in self.counters.keys() {
            check_name("counter", name)?;
        }
        for (name, &v) in &self.scalars {
            check_name("scalar", name)?;
            check_finite(name, v)?;
        }
        check_finite("rewards.mean", self.rewards.mean)?;
        for &v in &self.rewards.recent {
            check_finite("rewards.recent", f64::from(v))?;
        }
        Ok(())
    }

    /// Estimates the memory the record occupies, which is what the cache's byte limit counts.
    pub fn approx_bytes(&self) -> usize {
        let names = |n: usize| n + 48;
        let mut total = std::mem::size_of::<Self>() + self.config.algorithm.len();
        total += self.config.extra.keys().map(|k| names(k.len()) + 4).sum::<usize>();
        for (name, t) in &self.tensors {
            total += names(name.len()) + 48 + t.shape.len() * 4 + t.data.len() * 4;
        }
        total += self.counters.keys().map(|k| names(k.len()) + 8).sum::<usize>();
        total += self.scalars.keys().map(|k| names(k.len()) + 8).sum::<usize>();
        total + self.rewards.recent.len() * 4
    }
}

/// Refuses names longer than [`MAX_NAME_BYTES`].
fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(StoreError::InvalidRecord(format!(
            "{what} name of {} bytes exceeds {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

/// Refuses NaN and infinities.
fn check_finite(what: &str, v: f64) -> Result<(), StoreError> {
    if !v.is_finite() {
        return Err(StoreError::InvalidRecord(format!("{what} is not finite ({v})")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AdapterConfig {
        AdapterConfig {
            rank: 2,
            alpha: 4.0,
            hidden: 3,
            vocab: 5,
            top_k_rows: 1,
            algorithm: "reinforce".into(),
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn validate_catches_shape_and_nan() {
        let mut r = AdapterRecord::new(config(), 1);
        r.tensors.insert("a".into(), Tensor { shape: vec![2, 3], data: vec![0.0; 5] });
        assert!(matches!(r.validate(), Err(StoreError::InvalidRecord(_))));
        r.tensors.insert("a".into(), Tensor { shape: vec![2, 3], data: vec![0.0; 6] });
        assert_eq!(r.validate(), Ok(()));
        r.scalars.insert("lr".into(), f64::NAN);
        assert!(matches!(r.validate(), Err(StoreError::InvalidRecord(_))));
    }

    #[test]
    fn scalar_and_empty_tensors() {
        assert!(Tensor::new(vec![], vec![1.0]).is_ok());
        assert!(Tensor::new(vec![0, 8], vec![]).is_ok());
        assert!(Tensor::new(vec![1 << 20, 1 << 20], vec![]).is_err());
        assert!(Tensor::new(vec![1; 9], vec![1.0]).is_err());
        assert_eq!(Tensor::shape_elements(&[u32::MAX; 3]), None);
    }
}
