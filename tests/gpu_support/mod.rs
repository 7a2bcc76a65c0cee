//! Shared helpers of the GPU tests and benchmark: a device or a reason to skip, random adapters and
//! token records of any size, and comparisons with readable messages.
#![allow(dead_code)]

use std::sync::OnceLock;

use attune::adapter::gpu::GpuDevice;
use attune::adapter::{BaseScratch, BaseStats, LoraConfig, LoraHead};
use attune::generate::TokenRecord;
use half::f16;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The shared wgpu device (software adapters allowed), or `None` when the GPU tier is deselected
/// (`ATTUNE_NO_GPU=1`). A missing adapter fails the test with the command that installs one.
pub fn device() -> Option<GpuDevice> {
    static DEVICE: OnceLock<Result<GpuDevice, String>> = OnceLock::new();
    if std::env::var("ATTUNE_NO_GPU").is_ok_and(|v| v == "1") {
        eprintln!("GPU tier deselected (ATTUNE_NO_GPU=1)");
        return None;
    }
    match DEVICE.get_or_init(|| GpuDevice::request(true).map_err(|e| e.to_string())) {
        Ok(dev) => Some(dev.clone()),
        Err(why) => panic!(
            "no wgpu adapter ({why}): install Mesa's software Vulkan from bookworm-backports (`make test` does: `apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1`) or deselect the GPU tier with ATTUNE_NO_GPU=1"
        ),
    }
}

/// A seeded random generator.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A roughly standard normal value.
pub fn normal(r: &mut ChaCha8Rng) -> f32 {
    (0..6).map(|_| r.random_range(-1.0f32..1.0)).sum::<f32>() / 2.0f32.sqrt()
}

/// The hidden size used with each vocabulary in these tests (the sizes of real models of that
/// vocabulary, scaled down for the smallest).
pub fn hidden_for(vocab: usize) -> usize {
    match vocab {
        v if v <= 1000 => 48,
        v if v <= 50_000 => 576,
        _ => 896,
    }
}

/// An adapter of rank `r` with LoRA's initial `A`, `n_active` random rows of `B` (deltas of
/// about 0.5 in the logits) and a random value head.
pub fn random_head(vocab: usize, d: usize, r: usize, n_active: usize, seed: u64) -> LoraHead {
    let cfg = LoraConfig { rank: r, alpha: 32.0, top_k: 256, seed };
    let mut head = LoraHead::new(&cfg, d, vocab).expect("valid adapter shape");
    let mut g = rng(seed + 1);
    let sigma = 0.027 * (r as f32).sqrt() * 32.0 / (r as f32 * head.scale());
    for _ in 0..n_active {
        let v = g.random_range(0..vocab);
        let row: Vec<f32> = (0..r).map(|_| normal(&mut g) * sigma).collect();
        head.set_b_row(v, &row).expect("row fits");
    }
    let w: Vec<f32> = (0..d).map(|_| normal(&mut g) * 0.05).collect();
    head.set_value_head(&w, 0.1).expect("value head fits");
    head
}

/// `n` token records over a vocabulary of `vocab`: random base logits (spread 3), random hidden
/// states, every third token truncated to its 40 most probable tokens.
pub fn records(vocab: usize, d: usize, n: usize, seed: u64) -> Vec<TokenRecord> {
    let mut g = rng(seed);
    (0..n)
        .map(|i| {
            let z: Vec<f32> = (0..vocab).map(|_| 3.0 * normal(&mut g)).collect();
            let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
            let base_logprobs: Vec<f16> = z.iter().map(|x| f16::from_f32(x - lse)).collect();
            let kept = (i % 3 == 2).then(|| {
                let mut idx: Vec<u32> = (0..vocab as u32).collect();
                idx.sort_by(|&a, &b| z[b as usize].total_cmp(&z[a as usize]));
                idx.truncate(40.min(vocab));
                idx.sort_unstable();
                idx
            });
            let token = match &kept {
                Some(k) => k[g.random_range(0..k.len())],
                None => g.random_range(0..vocab as u32),
            };
            let hidden = (0..d).map(|_| normal(&mut g)).collect();
            TokenRecord { token, hidden, base_logprobs, behaviour_logprob: 0.0, kept }
        })
        .collect()
}

/// The base statistics of each record at temperature `tau`.
pub fn stats(head: &LoraHead, recs: &[TokenRecord], tau: f32) -> Vec<BaseStats> {
    let mut s = BaseScratch::default();
    recs.iter().map(|r| BaseStats::compute(r, head.vocab_size(), tau, head.config().top_k, &mut s).expect("valid record")).collect()
}

/// `s B (A h)` on the active rows in f64, one row of `n_act` values per hidden state, with the
/// magnitude f32 rounding acts on: the largest `s |B| (|A| |h|)` of the position.
pub fn reference_deltas(head: &LoraHead, hidden: &Array2<f32>) -> Vec<(Vec<f64>, f64)> {
    let s = f64::from(head.scale());
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    hidden
        .outer_iter()
        .map(|h| {
            let h: Vec<f64> = h.iter().map(|&x| f64::from(x)).collect();
            let habs: Vec<f64> = h.iter().map(|x| x.abs()).collect();
            let rows_a: Vec<Vec<f64>> = head.a().outer_iter().map(|a| a.iter().map(|&x| f64::from(x)).collect()).collect();
            let u: Vec<f64> = rows_a.iter().map(|a| dot(a, &h)).collect();
            let uabs: Vec<f64> = rows_a.iter().map(|a| a.iter().zip(&habs).map(|(x, y)| x.abs() * y).sum()).collect();
            let (mut deltas, mut scale) = (Vec::new(), 0.0f64);
            for &v in head.active_rows() {
                let b: Vec<f64> = head.b().row(v as usize).iter().map(|&x| f64::from(x)).collect();
                deltas.push(s * dot(&b, &u));
                scale = scale.max(s * b.iter().zip(&uabs).map(|(x, y)| x.abs() * y).sum::<f64>());
            }
            (deltas, scale)
        })
        .collect()
}

/// The parity rule: every element within `rel` of the reference, relative to its own magnitude
/// with a floor of 1e-2 of the largest magnitude in the array. The floor is there because f32 sums
/// whose terms cancel (a gradient entry summed over hundreds of tokens) carry rounding at the scale
/// of their terms, not of their result; elements above 1 % of the largest are held to `rel` of
/// their own size, smaller ones to `rel / 100` of the largest. Returns the worst ratio
/// error / allowed, for reports.
pub fn assert_parity(what: &str, got: &[f64], want: &[f64], rel: f64) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert_parity_at(what, got, want, rel, scale)
}

/// [`assert_parity`] with the floor at 1e-2 of `scale` instead of the largest reference value.
pub fn assert_parity_at(what: &str, got: &[f64], want: &[f64], rel: f64, scale: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    let mut worst = (0.0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let allowed = rel * w.abs().max(1e-2 * scale).max(f64::MIN_POSITIVE);
        let ratio = (g - w).abs() / allowed;
        if ratio.is_nan() || ratio > worst.0 {
            worst = (ratio, i);
        }
    }
    let i = worst.1;
    assert!(worst.0 <= 1.0, "{what}: element {i} is {} but the reference is {} (error {:.2e} relative, scale {scale:.3e})", got[i], want[i], (got[i] - want[i]).abs() / want[i].abs().max(1e-300));
    worst.0
}

/// [`assert_parity`] for one number.
pub fn assert_scalar(what: &str, got: f64, want: f64, rel: f64) {
    let allowed = rel * want.abs().max(1e-12);
    assert!((got - want).abs() <= allowed, "{what}: {got} but the reference is {want} (error {:.2e} relative)", (got - want).abs() / want.abs().max(1e-300));
}
