//! Helpers shared by the adapter store's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attune::store::{
    AdapterConfig, AdapterRecord, AdapterStore, ModelFingerprint, RewardSummary, StoreOptions,
    Tensor,
};
use proptest::prelude::*;

/// The fingerprint most tests use.
pub fn fp() -> ModelFingerprint {
    ModelFingerprint::of_parts(["test model", "test tokenizer"])
}

/// A fingerprint of some other base model.
pub fn other_fp() -> ModelFingerprint {
    ModelFingerprint::of_parts(["another model", "test tokenizer"])
}

/// Opens a store with default options and the test fingerprint.
pub fn open(root: &Path) -> AdapterStore {
    AdapterStore::open(root, StoreOptions::new(fp())).expect("open store")
}

/// Opens a store after letting `tweak` change the options.
pub fn open_with(root: &Path, tweak: impl FnOnce(&mut StoreOptions)) -> AdapterStore {
    let mut options = StoreOptions::new(fp());
    tweak(&mut options);
    AdapterStore::open(root, options).expect("open store")
}

/// A realistic small record whose contents all depend on `seed`.
pub fn sample(seed: u64) -> AdapterRecord {
    let (r, d, v) = (2u32, 6u32, 10u32);
    let config = AdapterConfig {
        rank: r,
        alpha: 16.0,
        hidden: d,
        vocab: v,
        top_k_rows: 4,
        algorithm: "reinforce".into(),
        extra: BTreeMap::from([("entropy_bonus".into(), 0.01), ("clip".into(), 1.5)]),
    };
    let mut rec = AdapterRecord::new(config, 1_700_000_000 + seed);
    let fill =
        |n: u32, k: f32| (0..n).map(|i| (i as f32 * 0.25 + k) * (seed as f32 + 1.0)).collect();
    rec.tensors.insert("lora.A".into(), Tensor { shape: vec![r, d], data: fill(r * d, 0.5) });
    rec.tensors.insert("lora.B".into(), Tensor { shape: vec![v, r], data: fill(v * r, -1.0) });
    rec.tensors
        .insert("adam.m.lora.B".into(), Tensor { shape: vec![v, r], data: fill(v * r, 2.0) });
    rec.tensors.insert("value.w".into(), Tensor { shape: vec![d], data: fill(d, 0.0) });
    rec.tensors.insert("empty".into(), Tensor { shape: vec![0, r], data: vec![] });
    rec.counters.insert("adam.steps".into(), 10 * seed);
    rec.counters.insert("episodes".into(), seed);
    rec.scalars.insert("baseline_ema".into(), 0.125 * seed as f64);
    rec.scalars.insert("lr".into(), 1e-4);
    rec.rewards = RewardSummary {
        count: seed,
        mean: 0.5,
        recent: (0..seed.min(64)).map(|i| i as f32 / 64.0).collect(),
        thumbs_up: seed / 2,
        thumbs_down: seed / 3,
    };
    rec.updated_unix += 60;
    rec
}

/// Returns the path of version `seq` in `dir`.
pub fn version_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("v{seq:010}.attune"))
}

/// Flips one bit of a file in place.
pub fn flip_bit(path: &Path, byte: usize, bit: u8) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[byte] ^= 1 << bit;
    std::fs::write(path, bytes).expect("write");
}

/// Finite `f32` values of every kind: normal, subnormal, zero, both signs.
pub fn finite_f32() -> impl Strategy<Value = f32> {
    use proptest::num::f32::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

/// Finite `f64` values of every kind.
pub fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

/// Arbitrary names, including empty and non-ASCII ones.
pub fn name() -> impl Strategy<Value = String> {
    ".{0,12}"
}

/// Arbitrary tensors of up to three dimensions, including empty and scalar ones.
pub fn tensor() -> impl Strategy<Value = Tensor> {
    prop::collection::vec(0u32..6, 0..=3).prop_flat_map(|shape| {
        let n = shape.iter().product::<u32>() as usize;
        prop::collection::vec(finite_f32(), n)
            .prop_map(move |data| Tensor { shape: shape.clone(), data })
    })
}

/// Arbitrary valid records.
pub fn record() -> impl Strategy<Value = AdapterRecord> {
    let config =
        (
            any::<u32>(),
            finite_f32(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            name(),
            prop::collection::btree_map(name(), finite_f32(), 0..4),
        )
            .prop_map(|(rank, alpha, hidden, vocab, top_k_rows, algorithm, extra)| {
                AdapterConfig { rank, alpha, hidden, vocab, top_k_rows, algorithm, extra }
            });
    let rewards =
        (any::<u64>(), finite_f64(), prop::collection::vec(finite_f32(), 0..70)).prop_flat_map(
            |(count, mean, recent)| {
                (any::<u64>(), any::<u64>()).prop_map(move |(thumbs_up, thumbs_down)| {
                    RewardSummary { count, mean, recent: recent.clone(), thumbs_up, thumbs_down }
                })
            },
        );
    (
        config,
        prop::collection::btree_map(name(), tensor(), 0..5),
        prop::collection::btree_map(name(), any::<u64>(), 0..5),
        prop::collection::btree_map(name(), finite_f64(), 0..5),
        rewards,
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(config, tensors, counters, scalars, rewards, created_unix, updated_unix)| {
                AdapterRecord {
                    config,
                    tensors,
                    counters,
                    scalars,
                    rewards,
                    created_unix,
                    updated_unix,
                }
            },
        )
}

/// Asserts that two records are equal bit for bit (so `-0.0` and `0.0` are told apart).
pub fn assert_same(a: &AdapterRecord, b: &AdapterRecord) {
    assert_eq!(a, b);
    for (name, t) in &a.tensors {
        let bits = |t: &Tensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(t), bits(&b.tensors[name]), "tensor {name:?} bits");
    }
    let sb = |r: &AdapterRecord| r.scalars.values().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(sb(a), sb(b), "scalar bits");
    assert_eq!(a.rewards.mean.to_bits(), b.rewards.mean.to_bits());
    assert_eq!(a.config.alpha.to_bits(), b.config.alpha.to_bits());
}

/// A hand-written mirror of the version-1 wire types, for crafting hostile files. Fields with a
/// type parameter can be swapped for a bare `u64`, which postcard encodes exactly like a sequence
/// length prefix, to claim absurd lengths.
pub mod wire {
    use serde::Serialize;

    /// Mirrors `MetaV1`.
    #[derive(Serialize, Clone)]
    pub struct Meta<T = Vec<Header>, R = Vec<f32>> {
        pub config: Config,
        pub tensors: T,
        pub counters: Vec<(String, u64)>,
        pub scalars: Vec<(String, f64)>,
        pub rewards: Rewards<R>,
        pub created_unix: u64,
        pub updated_unix: u64,
    }

    /// Mirrors `ConfigV1`.
    #[derive(Serialize, Clone)]
    pub struct Config {
        pub rank: u32,
        pub alpha: f32,
        pub hidden: u32,
        pub vocab: u32,
        pub top_k_rows: u32,
        pub algorithm: String,
        pub extra: Vec<(String, f32)>,
    }

    /// Mirrors `TensorHeaderV1`.
    #[derive(Serialize, Clone)]
    pub struct Header {
        pub name: String,
        pub shape: Vec<u32>,
    }

    /// Mirrors `RewardsV1`.
    #[derive(Serialize, Clone)]
    pub struct Rewards<R = Vec<f32>> {
        pub count: u64,
        pub mean: f64,
        pub recent: R,
        pub thumbs_up: u64,
        pub thumbs_down: u64,
    }

    /// A small valid metadata block with the given tensor headers.
    pub fn meta(tensors: Vec<Header>) -> Meta {
        Meta {
            config: Config {
                rank: 1,
                alpha: 1.0,
                hidden: 1,
                vocab: 1,
                top_k_rows: 1,
                algorithm: "x".into(),
                extra: vec![],
            },
            tensors,
            counters: vec![("a".into(), 1)],
            scalars: vec![("b".into(), 2.0)],
            rewards: Rewards { count: 0, mean: 0.0, recent: vec![], thumbs_up: 0, thumbs_down: 0 },
            created_unix: 1,
            updated_unix: 2,
        }
    }

    /// Builds a complete version-1 file with a valid checksum from any metadata and data bytes.
    pub fn file<M: Serialize>(
        fp: &attune::store::ModelFingerprint,
        meta: &M,
        data: &[u8],
    ) -> Vec<u8> {
        let meta = postcard::to_allocvec(meta).expect("postcard");
        file_raw(fp, meta.len() as u32, &meta, data)
    }

    /// Like [`file`], with the metadata length field given separately.
    pub fn file_raw(
        fp: &attune::store::ModelFingerprint,
        meta_len: u32,
        meta: &[u8],
        data: &[u8],
    ) -> Vec<u8> {
        let mut body = fp.as_bytes().to_vec();
        body.extend_from_slice(&meta_len.to_le_bytes());
        body.extend_from_slice(meta);
        body.extend_from_slice(data);
        attune::store::seal_raw(1, &body)
    }

    /// Little-endian bytes of `values`.
    pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}
