//! Per-token statistics of the base policy `q_t = softmax(z0_t / tau)` over the kept set, computed
//! once per recorded token in O(V).
//!
//! Everything later is O(active rows + top_k) per token, because the adapted policy differs from the
//! base one only on the active rows of `B`: with `lq_v = log q_v` and `delta_v = s B_v . u`,
//! `p_v = q_v exp(delta_v / tau) / Z` and `Z = sum_v q_v exp(delta_v / tau)`, a sum over active
//! rows plus the base mass of the rest. The top-k of `q` also holds the top-k of `p` among the
//! inactive rows, since there `p` is `q` scaled by one constant.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::fastmath::{exp_f64, max_f32};
use super::head::LoraHead;
use crate::error::{Error, Result};
use crate::generate::TokenRecord;

/// What the learner keeps about the base policy of one recorded token.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseStats {
    /// The temperature the statistics are for.
    pub tau: f32,
    /// `log sum_{v in kept} exp(base_logprobs[v] / tau)`.
    pub lse: f64,
    /// The base policy's entropy `-sum_v q_v log q_v` (nats).
    pub entropy: f64,
    /// The `top_k` most probable tokens of the base policy within the kept set, ascending by id.
    pub top: Vec<u32>,
}

/// Reusable buffers for [`BaseStats::compute`].
#[derive(Debug, Default)]
pub struct BaseScratch {
    logprobs: Vec<f32>,
    t: Vec<f64>,
    e: Vec<f64>,
}

impl BaseStats {
    /// Computes the statistics of `rec` at temperature `tau`, checking the record on the way: the
    /// base log-probabilities must be `vocab` values, none NaN or `+inf`; the kept set ascending,
    /// within the vocabulary, and holding the sampled token, whose base log-probability is finite.
    pub fn compute(rec: &TokenRecord, vocab: usize, tau: f32, top_k: usize, scratch: &mut BaseScratch) -> Result<BaseStats> {
        let bad = |why: String| Error::InvalidArgument(format!("token record: {why}"));
        if !(tau.is_finite() && tau > 0.0) {
            return Err(bad(format!("temperature {tau} is not a positive number")));
        }
        if rec.base_logprobs.len() != vocab {
            return Err(bad(format!("{} base log-probabilities for a vocabulary of {vocab}", rec.base_logprobs.len())));
        }
        let a = rec.token as usize;
        if a >= vocab {
            return Err(bad(format!("token {a} is outside the vocabulary of {vocab}")));
        }
        let BaseScratch { logprobs: x, t: t_buf, e: e_buf } = scratch;
        x.resize(vocab, 0.0);
        rec.base_logprobs.convert_to_f32_slice(x);
        if x.iter().any(|v| v.is_nan() || *v == f32::INFINITY) {
            return Err(bad("base log-probabilities hold NaN or +inf".into()));
        }
        if !x[a].is_finite() {
            return Err(bad(format!("the sampled token {a} has base log-probability {}", x[a])));
        }
        if let Some(kept) = &rec.kept {
            if kept.windows(2).any(|w| w[0] >= w[1]) || kept.last().is_some_and(|&v| v as usize >= vocab) {
                return Err(bad("kept set is not strictly ascending within the vocabulary".into()));
            }
            if kept.binary_search(&rec.token).is_err() {
                return Err(bad(format!("the sampled token {a} is not in the kept set")));
            }
        }
        // f64 throughout: the sparse path takes `1 - sum over active rows of q` as the base mass of
        // the other rows, so the normalisation must hold far below f32 precision.
        let tau_inv = 1.0 / f64::from(tau);
        let (m, s, e, top) = match &rec.kept {
            None => {
                let m = f64::from(max_f32(x));
                let (s, e) = exp_sums(x, m, tau_inv, t_buf, e_buf);
                (m, s, e, top_k_ids(x, top_k))
            }
            Some(kept) => {
                let m = f64::from(kept.iter().map(|&v| x[v as usize]).fold(f32::NEG_INFINITY, f32::max));
                let (mut s, mut e) = (0.0f64, 0.0f64);
                for &v in kept {
                    let t = ((f64::from(x[v as usize]) - m) * tau_inv).max(-1.0e4);
                    let p = exp_f64(t);
                    s += p;
                    e += p * t;
                }
                let mut top = heap_top_k(kept.iter().map(|&v| (x[v as usize], v)), top_k);
                top.sort_unstable();
                (m, s, e, top)
            }
        };
        let ln_s = s.ln();
        let (lse, entropy) = (m * tau_inv + ln_s, ln_s - e / s);
        Ok(BaseStats { tau, lse, entropy, top })
    }

    /// `log q_v` for a token in the kept set, computed the same way everywhere.
    pub fn log_q(&self, base_logprob: f16) -> f64 {
        f64::from(base_logprob.to_f32()) / f64::from(self.tau) - self.lse
    }

    /// Heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.top.capacity() * std::mem::size_of::<u32>()
    }
}

/// `(sum exp(t), sum t exp(t))` with `t = (x - m) tau_inv`: two map sweeps the compiler
/// vectorises, then the sums in four f64 lanes.
fn exp_sums(x: &[f32], m: f64, tau_inv: f64, t: &mut Vec<f64>, e: &mut Vec<f64>) -> (f64, f64) {
    t.clear();
    t.extend(x.iter().map(|&xv| ((f64::from(xv) - m) * tau_inv).max(-1.0e4)));
    e.clear();
    e.extend(t.iter().map(|&tv| exp_f64(tv)));
    let (mut s, mut st) = ([0.0f64; 4], [0.0f64; 4]);
    let (ec, tc) = (e.chunks_exact(4), t.chunks_exact(4));
    let tail: (f64, f64) = ec.remainder().iter().zip(tc.remainder()).fold((0.0, 0.0), |acc, (&p, &tv)| (acc.0 + p, acc.1 + p * tv));
    for (pe, pt) in ec.zip(tc) {
        for k in 0..4 {
            s[k] += pe[k];
            st[k] += pe[k] * pt[k];
        }
    }
    (s.iter().sum::<f64>() + tail.0, st.iter().sum::<f64>() + tail.1)
}

/// One candidate of the top-k selection; the heap keeps the worst on top.
#[derive(Clone, Copy)]
pub(crate) struct Entry(pub(crate) f32, pub(crate) u32);

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Greater means worse: a lower log-probability, or the same one at a higher id.
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

/// The ids of the `k` largest values (ties to the lower id) among `items`, which come in ascending
/// id order; unsorted.
fn heap_top_k(items: impl Iterator<Item = (f32, u32)>, k: usize) -> Vec<u32> {
    // Never more slots than there are items (a configured `k` may exceed a small kept set).
    let most = items.size_hint().1.unwrap_or(k);
    let mut heap: BinaryHeap<Entry> = BinaryHeap::with_capacity(k.min(most).saturating_add(1));
    for (x, v) in items {
        if heap.len() < k {
            heap.push(Entry(x, v));
        } else if let Some(mut worst) = heap.peek_mut() {
            // Ids ascend, so an equal value never beats the current worst.
            if x > worst.0 {
                *worst = Entry(x, v);
            }
        }
    }
    heap.into_iter().map(|e| e.1).collect()
}

/// The ids of the `k` largest values of `x` (ties to the lower id), ascending. The `k`-th largest
/// block maximum bounds the `k`-th largest value from below (those maxima are `k` distinct values),
/// so only blocks reaching it are scanned.
fn top_k_ids(x: &[f32], k: usize) -> Vec<u32> {
    const BLOCK: usize = 16;
    if k == 0 {
        return Vec::new();
    }
    let maxima: Vec<f32> = x.chunks(BLOCK).map(max_f32).collect();
    let threshold = if maxima.len() > k {
        let mut m = maxima.clone();
        *m.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a)).1
    } else {
        f32::NEG_INFINITY
    };
    let candidates = maxima
        .iter()
        .enumerate()
        .filter(|(_, &m)| m >= threshold)
        .flat_map(|(bi, _)| (bi * BLOCK..((bi + 1) * BLOCK).min(x.len())).map(|v| (x[v], v as u32)))
        .filter(|&(xv, _)| xv >= threshold);
    let mut ids = heap_top_k(candidates, k);
    ids.sort_unstable();
    ids
}

/// Checks that a recorded token fits `head` (hidden size, vocabulary, token id) and that its base
/// statistics have a usable temperature; shared by every [`super::AdapterMath`] implementation.
pub(crate) fn check_token(head: &LoraHead, rec: &TokenRecord, base: &BaseStats) -> Result<()> {
    if rec.hidden.len() != head.hidden_size() || rec.base_logprobs.len() != head.vocab_size() || rec.token as usize >= head.vocab_size() {
        return Err(Error::Learning(format!(
            "token record with d = {}, V = {} does not fit the adapter (d = {}, V = {})",
            rec.hidden.len(),
            rec.base_logprobs.len(),
            head.hidden_size(),
            head.vocab_size()
        )));
    }
    if !(base.tau.is_finite() && base.tau > 0.0) {
        return Err(Error::Learning(format!("base statistics at temperature {}", base.tau)));
    }
    Ok(())
}


#[cfg(test)]
mod tests {
    use super::*;

    fn record(logits: &[f32], token: u32, kept: Option<Vec<u32>>) -> TokenRecord {
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let lse = m + logits.iter().map(|z| (z - m).exp()).sum::<f32>().ln();
        TokenRecord {
            token,
            hidden: vec![0.0; 4],
            base_logprobs: logits.iter().map(|z| f16::from_f32(z - lse)).collect(),
            behaviour_logprob: 0.0,
            kept,
        }
    }

    #[test]
    fn normalises_and_picks_the_top_tokens() {
        let logits = [0.5, 2.0, -1.0, 2.0, 1.0, -3.0];
        let rec = record(&logits, 4, None);
        let st = BaseStats::compute(&rec, 6, 0.7, 3, &mut BaseScratch::default()).unwrap();
        let total: f64 = rec.base_logprobs.iter().map(|&b| st.log_q(b).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        assert_eq!(st.top, vec![1, 3, 4]);
        let h: f64 = rec.base_logprobs.iter().map(|&b| st.log_q(b)).map(|l| -l.exp() * l).sum();
        assert!((h - st.entropy).abs() < 1e-12);
    }

    #[test]
    fn respects_the_kept_set() {
        let logits = [0.5, 2.0, -1.0, 2.0, 1.0, -3.0];
        let rec = record(&logits, 0, Some(vec![0, 2, 5]));
        let st = BaseStats::compute(&rec, 6, 1.0, 2, &mut BaseScratch::default()).unwrap();
        let total: f64 = [0usize, 2, 5].iter().map(|&v| st.log_q(rec.base_logprobs[v]).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert_eq!(st.top, vec![0, 2]);
    }

    #[test]
    fn top_k_matches_a_full_sort() {
        let mut x: Vec<f32> = (0..1000u32).map(|i| ((i * 7919) % 613) as f32 * 0.5 - 100.0).collect();
        x[17] = f32::NEG_INFINITY;
        for k in [1, 5, 64, 255, 999, 1000, 1200] {
            let mut order: Vec<u32> = (0..1000).collect();
            order.sort_by(|&a, &b| x[b as usize].total_cmp(&x[a as usize]).then(a.cmp(&b)));
            let mut want = order[..k.min(1000)].to_vec();
            want.sort_unstable();
            assert_eq!(top_k_ids(&x, k), want, "k = {k}");
        }
    }

    #[test]
    fn rejects_broken_records() {
        let logits = [0.5, 2.0, -1.0];
        let mut s = BaseScratch::default();
        assert!(BaseStats::compute(&record(&logits, 3, None), 3, 1.0, 2, &mut s).is_err());
        assert!(BaseStats::compute(&record(&logits, 1, Some(vec![0, 2])), 3, 1.0, 2, &mut s).is_err());
        assert!(BaseStats::compute(&record(&logits, 1, Some(vec![2, 1])), 3, 1.0, 2, &mut s).is_err());
        assert!(BaseStats::compute(&record(&logits, 1, None), 4, 1.0, 2, &mut s).is_err());
        assert!(BaseStats::compute(&record(&logits, 1, None), 3, 0.0, 2, &mut s).is_err());
        let mut nan = record(&logits, 1, None);
        nan.base_logprobs[0] = f16::NAN;
        assert!(BaseStats::compute(&nan, 3, 1.0, 2, &mut s).is_err());
        let mut minus_inf = record(&logits, 1, None);
        minus_inf.base_logprobs[0] = f16::NEG_INFINITY;
        let st = BaseStats::compute(&minus_inf, 3, 1.0, 2, &mut s).unwrap();
        assert!(st.entropy.is_finite() && st.lse.is_finite());
    }
}
