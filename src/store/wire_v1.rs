//! Format version 1: the frozen wire types and the body codec.
//!
//! ```text
//! body offset  size      field
//! 0            32        base-model fingerprint
//! 32           4         metadata length M, u32 little-endian
//! 36           M         metadata: `MetaV1` in postcard
//! 36+M         4*sum(n)  tensor data: each tensor's n values as f32 little-endian, in metadata order
//! ```
//!
//! These types are never changed once released: a new layout gets a new `wire_vN` module and
//! `format::decode` a new arm. Tensor data stays out of postcard so that the decoder can compare
//! the element counts that the shapes claim with the bytes actually present before it allocates.
//! Names in every list are written strictly ascending, and the decoder insists on it, which also
//! rules out duplicates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::fingerprint::ModelFingerprint;
use super::format::{PREAMBLE_LEN, TRAILER_LEN};
use super::record::{
    AdapterConfig, AdapterRecord, RewardSummary, Tensor, MAX_TENSOR_DIMS, MAX_TENSOR_ELEMENTS,
};

/// The fixed part of the body before the metadata.
const FIXED_LEN: usize = 32 + 4;

/// Version 1 metadata: everything except the tensor values.
#[derive(Serialize, Deserialize)]
struct MetaV1 {
    config: ConfigV1,
    tensors: Vec<TensorHeaderV1>,
    counters: Vec<(String, u64)>,
    scalars: Vec<(String, f64)>,
    rewards: RewardsV1,
    created_unix: u64,
    updated_unix: u64,
}

/// Version 1 adapter configuration.
#[derive(Serialize, Deserialize)]
struct ConfigV1 {
    rank: u32,
    alpha: f32,
    hidden: u32,
    vocab: u32,
    top_k_rows: u32,
    algorithm: String,
    extra: Vec<(String, f32)>,
}

/// Version 1 tensor header; the values follow the metadata.
#[derive(Serialize, Deserialize)]
struct TensorHeaderV1 {
    name: String,
    shape: Vec<u32>,
}

/// Version 1 reward summary.
#[derive(Serialize, Deserialize)]
struct RewardsV1 {
    count: u64,
    mean: f64,
    recent: Vec<f32>,
    thumbs_up: u64,
    thumbs_down: u64,
}

/// Copies a map into the wire's sorted list of pairs.
fn pairs<T: Copy>(map: &BTreeMap<String, T>) -> Vec<(String, T)> {
    map.iter().map(|(k, &v)| (k.clone(), v)).collect()
}

/// Turns a wire list back into a map, refusing names that are not strictly ascending.
fn map_of<T>(what: &str, list: Vec<(String, T)>) -> Result<BTreeMap<String, T>, StoreError> {
    if list.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(StoreError::Malformed(format!("{what} names are not strictly ascending")));
    }
    Ok(list.into_iter().collect())
}

/// Appends the version 1 body for `record` to `out`; the caller has validated the record.
pub(crate) fn encode_body(
    record: &AdapterRecord,
    fingerprint: &ModelFingerprint,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let c = &record.config;
    let meta = MetaV1 {
        config: ConfigV1 {
            rank: c.rank,
            alpha: c.alpha,
            hidden: c.hidden,
            vocab: c.vocab,
            top_k_rows: c.top_k_rows,
            algorithm: c.algorithm.clone(),
            extra: pairs(&c.extra),
        },
        tensors: record
            .tensors
            .iter()
            .map(|(name, t)| TensorHeaderV1 { name: name.clone(), shape: t.shape.clone() })
            .collect(),
        counters: pairs(&record.counters),
        scalars: pairs(&record.scalars),
        rewards: RewardsV1 {
            count: record.rewards.count,
            mean: record.rewards.mean,
            recent: record.rewards.recent.clone(),
            thumbs_up: record.rewards.thumbs_up,
            thumbs_down: record.rewards.thumbs_down,
        },
        created_unix: record.created_unix,
        updated_unix: record.updated_unix,
    };
    let meta_bytes = postcard::to_allocvec(&meta)
        .map_err(|e| StoreError::Malformed(format!("metadata does not encode: {e}")))?;
    let meta_len = u32::try_from(meta_bytes.len()).map_err(|_| StoreError::TooLarge {
        what: "metadata length",
        claimed: meta_bytes.len() as u64,
        limit: u64::from(u32::MAX),
    })?;
    let values: usize = record.tensors.values().map(|t| t.data.len()).sum();
    out.reserve(FIXED_LEN + meta_bytes.len() + values * 4 + TRAILER_LEN);
    out.extend_from_slice(fingerprint.as_bytes());
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&meta_bytes);
    for t in record.tensors.values() {
        for v in &t.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(())
}

/// Decodes a version 1 body (the bytes between the version field and the checksum trailer).
/// `file_len` only serves error messages, which count in whole-file offsets.
pub(crate) fn decode_body(
    body: &[u8],
    expected: &ModelFingerprint,
    file_len: u64,
) -> Result<AdapterRecord, StoreError> {
    let overhead = (PREAMBLE_LEN + TRAILER_LEN) as u64;
    if body.len() < FIXED_LEN {
        return Err(StoreError::Truncated {
            needed: overhead + FIXED_LEN as u64,
            available: file_len,
        });
    }
    let mut fp = [0u8; 32];
    fp.copy_from_slice(&body[..32]);
    let found = ModelFingerprint::from_bytes(fp);
    if found != *expected {
        return Err(StoreError::ModelMismatch { expected: *expected, found });
    }
    let meta_len = u32::from_le_bytes([body[32], body[33], body[34], body[35]]) as usize;
    let rest = &body[FIXED_LEN..];
    if meta_len > rest.len() {
        return Err(StoreError::Truncated {
            needed: overhead + (FIXED_LEN + meta_len) as u64,
            available: file_len,
        });
    }
    let (meta_bytes, data) = rest.split_at(meta_len);
    // Postcard reads every length prefix from these bytes; serde caps the up-front capacity of
    // each `Vec` it builds, and every element consumes input, so memory stays bounded by `M`.
    let (meta, trailing) = postcard::take_from_bytes::<MetaV1>(meta_bytes)
        .map_err(|e| StoreError::Malformed(format!("metadata: {e}")))?;
    if !trailing.is_empty() {
        return Err(StoreError::Malformed(format!(
            "{} unused bytes after the metadata",
            trailing.len()
        )));
    }

    // Check every tensor's claimed size against the limits and the bytes present, before any
    // tensor allocation happens.
    let mut total: u64 = 0;
    for h in &meta.tensors {
        if h.shape.len() > MAX_TENSOR_DIMS {
            return Err(StoreError::TooLarge {
                what: "tensor dimension count",
                claimed: h.shape.len() as u64,
                limit: MAX_TENSOR_DIMS as u64,
            });
        }
        let n = Tensor::shape_elements(&h.shape).unwrap_or(u64::MAX);
        if n > MAX_TENSOR_ELEMENTS {
            return Err(StoreError::TooLarge {
                what: "tensor element count",
                claimed: n,
                limit: MAX_TENSOR_ELEMENTS,
            });
        }
        total = total.saturating_add(n);
    }
    let needed_bytes = total.saturating_mul(4);
    let present = data.len() as u64;
    if needed_bytes > present {
        return Err(StoreError::Truncated {
            needed: file_len.saturating_sub(present).saturating_add(needed_bytes),
            available: file_len,
        });
    }
    if needed_bytes < present {
        return Err(StoreError::Malformed(format!(
            "{} unused bytes after the tensor data",
            present - needed_bytes
        )));
    }
    if meta.tensors.windows(2).any(|w| w[0].name >= w[1].name) {
        return Err(StoreError::Malformed("tensor names are not strictly ascending".into()));
    }

    let mut tensors = BTreeMap::new();
    let mut offset = 0usize;
    for h in meta.tensors {
        // The counts were checked above to sum to exactly `data.len() / 4`, so the range check
        // below never fails; it is kept so that no input can reach a panic.
        let len = Tensor::shape_elements(&h.shape).unwrap_or(0) as usize * 4;
        let bytes = data
            .get(offset..offset + len)
            .ok_or_else(|| StoreError::Malformed("tensor data out of range".into()))?;
        offset += len;
        let values =
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        tensors.insert(h.name, Tensor { shape: h.shape, data: values });
    }

    let c = meta.config;
    let record = AdapterRecord {
        config: AdapterConfig {
            rank: c.rank,
            alpha: c.alpha,
            hidden: c.hidden,
            vocab: c.vocab,
            top_k_rows: c.top_k_rows,
            algorithm: c.algorithm,
            extra: map_of("config.extra", c.extra)?,
        },
        tensors,
        counters: map_of("counter", meta.counters)?,
        scalars: map_of("scalar", meta.scalars)?,
        rewards: RewardSummary {
            count: meta.rewards.count,
            mean: meta.rewards.mean,
            recent: meta.rewards.recent,
            thumbs_up: meta.rewards.thumbs_up,
            thumbs_down: meta.rewards.thumbs_down,
        },
        created_unix: meta.created_unix,
        updated_unix: meta.updated_unix,
    };
    record.validate()?;
    Ok(record)
}
