//! Recorded tokens as the kernels read them: checks, the per-token table, and chunks of positions
//! whose hidden states, packed f16 base log-probabilities and kept-set bitsets fit one binding.

use super::exec::{Core, Pool};
use super::kernels::TokGpu;
use crate::adapter::BaseStats;
use crate::error::{Error, Result};
use crate::generate::TokenRecord;

/// How many bytes one chunk buffer aims at (less when the device allows less).
const CHUNK_BYTES: u64 = 64 << 20;

pub(super) use crate::adapter::base::check_token;

/// Checks that there is one [`BaseStats`] per token.
pub(super) fn check_lengths(tokens: &[TokenRecord], base: &[BaseStats]) -> Result<()> {
    if tokens.len() != base.len() {
        return Err(Error::Learning(format!("{} tokens but {} base statistics", tokens.len(), base.len())));
    }
    Ok(())
}

/// Whether `v` is in the record's kept set.
pub(super) fn in_kept(rec: &TokenRecord, v: u32) -> bool {
    rec.kept.as_ref().is_none_or(|k| k.binary_search(&v).is_ok())
}

/// The kernel's view of one token; `c`, `beta` and the value target default to "none".
pub(super) fn tok(rec: &TokenRecord, base: &BaseStats) -> TokGpu {
    TokGpu { token: rec.token, kept: u32::from(rec.kept.is_some()), tau: base.tau, lse: base.lse as f32, ..TokGpu::default() }
}

/// How the positions of one call split into chunks.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// `(first, count)` of each chunk.
    pub(super) chunks: Vec<(usize, usize)>,
    /// Words of packed f16 log-probabilities per position.
    pub(super) lp_words: usize,
    /// Words of kept-set bitset per position (0 when no token has a kept set).
    pub(super) kept_words: usize,
}

impl Plan {
    /// Splits `n` positions so that every per-chunk buffer (base data, hidden states, and `per_pos`
    /// more f32 values a position) fits one binding.
    pub(super) fn new(core: &Core, n: usize, vocab: usize, d: usize, per_pos: usize, any_kept: bool) -> Result<Plan> {
        let lp_words = vocab.div_ceil(2);
        let kept_words = if any_kept { vocab.div_ceil(32) } else { 0 };
        let widest = 4 * (lp_words + kept_words).max(d).max(per_pos).max(1) as u64;
        let budget = CHUNK_BYTES.min(core.max_binding);
        if widest > core.max_binding {
            return Err(Error::Gpu(format!("one position needs {widest} bytes, above the device's binding limit of {}", core.max_binding)));
        }
        let per_chunk = ((budget / widest) as usize).clamp(1, 65_535);
        let chunks = (0..n).step_by(per_chunk).map(|s| (s, per_chunk.min(n - s))).collect();
        Ok(Plan { chunks, lp_words, kept_words })
    }

    /// Uploads the hidden states and the base buffer of chunk `ci` of `recs`; returns them as
    /// `(hidden, base, bytes sent)`.
    pub(super) fn upload(&self, core: &Core, pool: &mut Pool, ci: usize, recs: &[&TokenRecord]) -> Result<(wgpu::Buffer, wgpu::Buffer, u64)> {
        let (start, count) = self.chunks[ci];
        let recs = &recs[start..start + count];
        let d = recs.first().map_or(0, |r| r.hidden.len());
        let mut h = Vec::with_capacity(count * d);
        for rec in recs {
            h.extend_from_slice(&rec.hidden);
        }
        let mut words = vec![0u32; count * (self.lp_words + self.kept_words)];
        let (lp, kept) = words.split_at_mut(count * self.lp_words);
        for (k, rec) in recs.iter().enumerate() {
            let out = &mut lp[k * self.lp_words..(k + 1) * self.lp_words];
            for (w, pair) in out.iter_mut().zip(rec.base_logprobs.chunks(2)) {
                let lo = u32::from(pair[0].to_bits());
                let hi = pair.get(1).map_or(0, |x| u32::from(x.to_bits()));
                *w = lo | (hi << 16);
            }
            if let Some(set) = &rec.kept {
                let bits = &mut kept[k * self.kept_words..(k + 1) * self.kept_words];
                for &v in set {
                    if let Some(w) = bits.get_mut(v as usize / 32) {
                        *w |= 1 << (v % 32);
                    }
                }
            }
        }
        let hb = pool.get(core, "hidden", ci, 4 * h.len() as u64)?;
        let bb = pool.get(core, "base", ci, 4 * words.len() as u64)?;
        core.upload(&hb, 0, bytemuck::cast_slice(&h));
        core.upload(&bb, 0, bytemuck::cast_slice(&words));
        Ok((hb, bb, 4 * (h.len() + words.len()) as u64))
    }
}
