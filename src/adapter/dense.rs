//! Dense f32 passes over the whole vocabulary, for adapters with many active rows (where the sparse
//! per-row path of [`super::cpu`] stops paying off). Tokens go in chunks: the deltas of a chunk are
//! one matrix product `s U B^T`, each token is then a few vectorised sweeps (one `exp` each), and
//! the gradient's `B^T g` and `g u^T` are two more matrix products. Token ranges are split over a
//! few scoped threads, each with its own buffers; their partial sums are added at the end.

use std::collections::BinaryHeap;
use std::ops::Range;

use half::slice::HalfFloatSliceExt;
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2};

use super::base::{BaseStats, Entry};
use super::fastmath::{dot_wide, exp_f32, max_f32};
use super::head::LoraHead;
use super::math::{GradEpisode, GradStats, HeadGrad, TokenEval};
use crate::generate::TokenRecord;

/// Tokens per chunk (the delta buffer is `CHUNK x V` f32).
const CHUNK: usize = 16;

/// Fewer tokens than this per thread are not worth a thread.
const MIN_TOKENS_PER_THREAD: usize = 16;

/// One thread's buffers and partial results.
#[derive(Debug, Default)]
struct Worker {
    x: Vec<f32>,
    t: Vec<f32>,
    e: Vec<f32>,
    e2: Vec<f32>,
    keep: Vec<bool>,
    in_heap: Vec<bool>,
    mark: Vec<bool>,
    d: Array2<f32>,
    d2: Array2<f32>,
    u: Array2<f32>,
    u2: Array2<f32>,
    w: Array2<f32>,
    db: Array2<f32>,
    ga: Array2<f64>,
    stats: GradStats,
    evals: Vec<TokenEval>,
    kl: f64,
}

/// Reusable buffers of the dense passes, one set per thread.
#[derive(Debug, Default)]
pub(crate) struct DenseScratch {
    workers: Vec<Worker>,
}

/// Softmax sums of one token: `e_v = exp(y_v - m)` with `y_v = (x_v + delta_v) / tau`.
struct Soft {
    m: f32,
    /// `sum e`.
    s: f64,
    /// `sum e (y - m)`.
    ey: f64,
    /// `sum e delta`.
    ed: f64,
}

impl Soft {
    fn lse(&self) -> f64 {
        f64::from(self.m) + self.s.ln()
    }
}

impl Worker {
    fn prepare(&mut self, rank: usize, vocab: usize) {
        for v in [&mut self.x, &mut self.t, &mut self.e] {
            v.resize(vocab, 0.0);
        }
        for v in [&mut self.keep, &mut self.in_heap, &mut self.mark] {
            v.resize(vocab, false);
        }
        if self.d.dim() != (CHUNK, vocab) {
            self.d = Array2::zeros((CHUNK, vocab));
        }
        for m in [&mut self.u, &mut self.w] {
            if m.dim() != (CHUNK, rank) {
                *m = Array2::zeros((CHUNK, rank));
            }
        }
        self.stats = GradStats::default();
        self.evals.clear();
        self.kl = 0.0;
    }
}

impl DenseScratch {
    /// Splits `0..n` over up to `threads` workers and runs `f` on each part (in scoped threads when
    /// there is more than one), after preparing the workers' buffers.
    fn run<F>(&mut self, n: usize, threads: usize, rank: usize, vocab: usize, f: F) -> usize
    where
        F: Fn(&mut Worker, Range<usize>) + Sync,
    {
        let parts = threads.clamp(1, (n / MIN_TOKENS_PER_THREAD).max(1));
        if self.workers.len() < parts {
            self.workers.resize_with(parts, Worker::default);
        }
        let per = n.div_ceil(parts);
        let ranges: Vec<Range<usize>> = (0..parts).map(|i| (i * per).min(n)..((i + 1) * per).min(n)).collect();
        for w in &mut self.workers[..parts] {
            w.prepare(rank, vocab);
        }
        if parts == 1 {
            f(&mut self.workers[0], 0..n);
        } else {
            let f = &f;
            std::thread::scope(|scope| {
                for (w, range) in self.workers[..parts].iter_mut().zip(ranges) {
                    scope.spawn(move || f(w, range));
                }
            });
        }
        parts
    }
}

/// `u_t = A h_t` for a chunk, then `d = s U B^T` (`n x V`).
fn deltas(head: &LoraHead, hidden: &[&[f32]], u: &mut Array2<f32>, d: &mut Array2<f32>) {
    let n = hidden.len();
    for (i, h) in hidden.iter().enumerate() {
        for j in 0..head.rank() {
            u[[i, j]] = head.a().row(j).iter().zip(h.iter()).map(|(&a, &x)| f64::from(a) * f64::from(x)).sum::<f64>() as f32;
        }
    }
    let mut out = d.slice_mut(s![..n, ..]);
    general_mat_mul(head.scale(), &u.slice(s![..n, ..]), &head.b().t(), 0.0, &mut out);
}

/// `(log sum exp y, log Z, KL)` of a token. For the identity adapter the policy is the base one
/// exactly, so `log Z` and the KL are exact zeros rather than f32 round-off (which Adam would turn
/// into a full-size step on an otherwise zero gradient).
fn normaliser(head: &LoraHead, sm: &Soft, bs: &BaseStats, tau_inv: f64) -> (f64, f64, f64) {
    if head.is_identity() {
        return (bs.lse, 0.0, 0.0);
    }
    let lse = sm.lse();
    let log_z = lse - bs.lse;
    (lse, log_z, (sm.ed * tau_inv / sm.s - log_z).max(0.0))
}

/// Sets (or clears) the kept set in `keep` and says whether to mask at all.
fn set_keep(keep: &mut [bool], kept: Option<&Vec<u32>>, on: bool) -> bool {
    match kept {
        None => false,
        Some(k) => {
            k.iter().for_each(|&v| keep[v as usize] = on);
            true
        }
    }
}

/// The softmax sweeps of one token: `e` receives `exp(y - m)` (0 outside the kept set) and `t`
/// receives `y - m` floored at -1e4 (so that masked entries give `0 * finite`, never `0 * -inf`).
fn soft(x: &[f32], delta: &[f32], tau_inv: f32, keep: Option<&[bool]>, e: &mut [f32], t: &mut [f32]) -> Soft {
    match keep {
        None => t.iter_mut().zip(x.iter().zip(delta)).for_each(|(t, (&x, &d))| *t = (x + d) * tau_inv),
        Some(k) => t.iter_mut().zip(x.iter().zip(delta).zip(k)).for_each(|(t, ((&x, &d), &k))| *t = if k { (x + d) * tau_inv } else { f32::NEG_INFINITY }),
    }
    let m = max_f32(t);
    e.iter_mut().zip(t.iter_mut()).for_each(|(e, t)| {
        *t = (*t - m).max(-1.0e4);
        *e = exp_f32(*t);
    });
    let (s, ed, ey) = sums3(e, delta, t);
    Soft { m, s, ey, ed }
}
/// `(sum e, sum e d, sum e t)` in one sweep, eight f32 lanes each, flushed into f64 every 512.
fn sums3(e: &[f32], d: &[f32], t: &[f32]) -> (f64, f64, f64) {
    let (mut s, mut sd, mut st) = (0.0f64, 0.0f64, 0.0f64);
    let wide = |a: &[f32; 8]| a.iter().map(|&v| f64::from(v)).sum::<f64>();
    for ((eb, db), tb) in e.chunks(512).zip(d.chunks(512)).zip(t.chunks(512)) {
        let (mut a0, mut a1, mut a2) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
        let (ec, dc, tc) = (eb.chunks_exact(8), db.chunks_exact(8), tb.chunks_exact(8));
        for ((x, y), z) in ec.remainder().iter().zip(dc.remainder()).zip(tc.remainder()) {
            a0[0] += x;
            a1[0] += x * y;
            a2[0] += x * z;
        }
        for ((x, y), z) in ec.zip(dc).zip(tc) {
            for k in 0..8 {
                a0[k] += x[k];
                a1[k] += x[k] * y[k];
                a2[k] += x[k] * z[k];
            }
        }
        s += wide(&a0);
        sd += wide(&a1);
        st += wide(&a2);
    }
    (s, sd, st)
}
/// Marks the `k` largest entries of `e` in `mark`, seeding the selection with `seed` (the base
/// top-k, usually close to the answer) and skipping blocks whose maximum cannot enter.
fn mark_top_k(e: &[f32], k: usize, seed: &[u32], in_heap: &mut [bool], mark: &mut [bool]) {
    let mut heap: BinaryHeap<Entry> = BinaryHeap::with_capacity(k.min(e.len()) + 1);
    let offer = |heap: &mut BinaryHeap<Entry>, in_heap: &mut [bool], v: usize| {
        if in_heap[v] {
            return;
        }
        let ev = e[v];
        if heap.len() < k {
            heap.push(Entry(ev, v as u32));
            in_heap[v] = true;
        } else if let Some(mut worst) = heap.peek_mut() {
            if ev > worst.0 {
                in_heap[worst.1 as usize] = false;
                *worst = Entry(ev, v as u32);
                in_heap[v] = true;
            }
        }
    };
    for &v in seed {
        offer(&mut heap, in_heap, v as usize);
    }
    for (bi, block) in e.chunks(64).enumerate() {
        let full = heap.len() >= k;
        if full && heap.peek().is_some_and(|w| max_f32(block) <= w.0) {
            continue;
        }
        for i in 0..block.len() {
            offer(&mut heap, in_heap, bi * 64 + i);
        }
    }
    for Entry(_, v) in heap {
        in_heap[v as usize] = false;
        mark[v as usize] = true;
    }
}

/// The policy part of the gradient, densely: fills `grad.a`, `grad.rows` and `grad.b`.
pub(crate) fn policy_gradient(sc: &mut DenseScratch, threads: usize, head: &LoraHead, batch: &[GradEpisode<'_>], grad: &mut HeadGrad, stats: &mut GradStats, mark: &mut [bool]) {
    let (r, d, vocab) = (head.rank(), head.hidden_size(), head.vocab_size());
    let s = f64::from(head.scale());
    let items: Vec<(usize, usize)> = batch.iter().enumerate().flat_map(|(ei, ep)| (0..ep.tokens.len()).map(move |t| (ei, t))).collect();
    let parts = sc.run(items.len(), threads, r, vocab, |w, range| {
        if w.db.dim() != (vocab, r) {
            w.db = Array2::zeros((vocab, r));
        } else {
            w.db.fill(0.0);
        }
        if w.ga.dim() != (r, d) {
            w.ga = Array2::zeros((r, d));
        } else {
            w.ga.fill(0.0);
        }
        for chunk in items[range].chunks(CHUNK) {
            gradient_chunk(w, head, batch, chunk);
        }
    });
    for w in &mut sc.workers[..parts] {
        stats.tokens += w.stats.tokens;
        stats.policy_objective += w.stats.policy_objective;
        stats.kl_sum += w.stats.kl_sum;
        grad.a += &w.ga;
        for (m, wm) in mark.iter_mut().zip(w.mark.iter_mut()) {
            *m |= *wm;
            *wm = false;
        }
    }
    let (first, rest) = sc.workers.split_at_mut(1);
    for w in &rest[..parts - 1] {
        first[0].db += &w.db;
    }
    grad.rows.clear();
    for (v, m) in mark.iter_mut().enumerate() {
        if *m {
            grad.rows.push(v as u32);
            *m = false;
        }
    }
    let db = &first[0].db;
    grad.b = Array2::from_shape_fn((grad.rows.len(), r), |(i, j)| -s * f64::from(db[[grad.rows[i] as usize, j]]));
}

/// One chunk of the dense gradient into a worker's partial sums.
fn gradient_chunk(w: &mut Worker, head: &LoraHead, batch: &[GradEpisode<'_>], chunk: &[(usize, usize)]) {
    let (n, r, s) = (chunk.len(), head.rank(), f64::from(head.scale()));
    let top_k = head.config().top_k;
    let hidden: Vec<&[f32]> = chunk.iter().map(|&(ei, t)| &batch[ei].tokens[t].hidden[..]).collect();
    deltas(head, &hidden, &mut w.u, &mut w.d);
    for (i, &(ei, t)) in chunk.iter().enumerate() {
        let ep = &batch[ei];
        let (rec, bs, c, beta) = (&ep.tokens[t], &ep.base[t], ep.weights[t], ep.beta);
        let tau_inv = 1.0 / f64::from(bs.tau);
        rec.base_logprobs.convert_to_f32_slice(&mut w.x);
        let masked = set_keep(&mut w.keep, rec.kept.as_ref(), true);
        let mut row = w.d.row_mut(i);
        let delta = row.as_slice_mut().unwrap_or_default();
        let sm = soft(&w.x, delta, tau_inv as f32, masked.then_some(&w.keep[..]), &mut w.e, &mut w.t);
        set_keep(&mut w.keep, rec.kept.as_ref(), false);
        let (lse, log_z, kl) = normaliser(head, &sm, bs, tau_inv);
        let a = rec.token as usize;
        let logp_a = (f64::from(w.x[a]) + f64::from(delta[a])) * tau_inv - lse;
        w.stats.tokens += 1;
        w.stats.policy_objective += c * logp_a;
        w.stats.kl_sum += kl;
        // g = p (k0 - k1 delta), plus c / tau and the logit weight k at the sampled token.
        let inv_s = (1.0 / sm.s) as f32;
        let k0 = (tau_inv * (-c + beta * (log_z + kl))) as f32;
        let k1 = (beta * tau_inv * tau_inv) as f32;
        delta.iter_mut().zip(&w.e).for_each(|(g, &e)| *g = e * inv_s * (k0 - k1 * *g));
        delta[a] += (c * tau_inv + ep.logit_weights.map_or(0.0, |k| k[t])) as f32;
        mark_top_k(&w.e, top_k, &bs.top, &mut w.in_heap, &mut w.mark);
        w.mark[a] = true;
    }
    let g = w.d.slice(s![..n, ..]);
    let mut wt = w.w.slice_mut(s![..n, ..]);
    general_mat_mul(1.0, &g, head.b(), 0.0, &mut wt);
    for (i, h) in hidden.iter().enumerate() {
        for j in 0..r {
            let coef = -s * f64::from(w.w[[i, j]]);
            if coef != 0.0 {
                w.ga.row_mut(j).iter_mut().zip(h.iter()).for_each(|(ga, &x)| *ga += coef * f64::from(x));
            }
        }
    }
    general_mat_mul(1.0, &g.t(), &w.u.slice(s![..n, ..]), 1.0, &mut w.db);
}

/// Evaluates the adapted and base policies densely, appending to `out`.
pub(crate) fn evaluate(sc: &mut DenseScratch, threads: usize, head: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats], out: &mut Vec<TokenEval>) {
    let parts = sc.run(tokens.len(), threads, head.rank(), head.vocab_size(), |w, range| {
        let start = range.start;
        for (ci, chunk) in tokens[range].chunks(CHUNK).enumerate() {
            let hidden: Vec<&[f32]> = chunk.iter().map(|r| &r.hidden[..]).collect();
            deltas(head, &hidden, &mut w.u, &mut w.d);
            for (i, rec) in chunk.iter().enumerate() {
                let bs = &base[start + ci * CHUNK + i];
                let tau_inv = 1.0 / f64::from(bs.tau);
                rec.base_logprobs.convert_to_f32_slice(&mut w.x);
                let masked = set_keep(&mut w.keep, rec.kept.as_ref(), true);
                let delta = w.d.row(i);
                let delta = delta.as_slice().unwrap_or_default();
                let sm = soft(&w.x, delta, tau_inv as f32, masked.then_some(&w.keep[..]), &mut w.e, &mut w.t);
                set_keep(&mut w.keep, rec.kept.as_ref(), false);
                let (lse, _, kl) = normaliser(head, &sm, bs, tau_inv);
                let a = rec.token as usize;
                w.evals.push(TokenEval {
                    logp: (f64::from(w.x[a]) + f64::from(delta[a])) * tau_inv - lse,
                    base_logp: bs.log_q(rec.base_logprobs[a]),
                    kl,
                    entropy: (sm.s.ln() - sm.ey / sm.s).max(0.0),
                    base_entropy: bs.entropy,
                });
            }
        }
    });
    for w in &sc.workers[..parts] {
        out.extend_from_slice(&w.evals);
    }
}

/// The summed `KL(p_old || p_new)` over `tokens`, densely.
pub(crate) fn step_kl(sc: &mut DenseScratch, threads: usize, old: &LoraHead, new: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats]) -> f64 {
    let (rank, vocab) = (new.rank(), new.vocab_size());
    let parts = sc.run(tokens.len(), threads, rank, vocab, |w, range| {
        // The second policy's buffers are only needed here.
        w.e2.resize(vocab, 0.0);
        if w.d2.dim() != (CHUNK, vocab) {
            w.d2 = Array2::zeros((CHUNK, vocab));
        }
        if w.u2.dim() != (CHUNK, rank) {
            w.u2 = Array2::zeros((CHUNK, rank));
        }
        let start = range.start;
        for (ci, chunk) in tokens[range].chunks(CHUNK).enumerate() {
            let hidden: Vec<&[f32]> = chunk.iter().map(|r| &r.hidden[..]).collect();
            deltas(old, &hidden, &mut w.u, &mut w.d);
            deltas(new, &hidden, &mut w.u2, &mut w.d2);
            for (i, rec) in chunk.iter().enumerate() {
                let tau_inv = 1.0 / f64::from(base[start + ci * CHUNK + i].tau);
                rec.base_logprobs.convert_to_f32_slice(&mut w.x);
                let masked = set_keep(&mut w.keep, rec.kept.as_ref(), true);
                let (d_old, d_new) = (w.d.row(i), w.d2.row(i));
                let (d_old, d_new): (&[f32], &[f32]) = (d_old.as_slice().unwrap_or_default(), d_new.as_slice().unwrap_or_default());
                let keep = masked.then_some(&w.keep[..]);
                let so = soft(&w.x, d_old, tau_inv as f32, keep, &mut w.e, &mut w.t);
                let sn = soft(&w.x, d_new, tau_inv as f32, keep, &mut w.e2, &mut w.t);
                set_keep(&mut w.keep, rec.kept.as_ref(), false);
                // Reuse t for d_old - d_new.
                w.t.iter_mut().zip(d_old.iter().zip(d_new)).for_each(|(t, (&o, &n))| *t = o - n);
                let cross = dot_wide(&w.e, &w.t);
                w.kl += (cross * tau_inv / so.s - so.lse() + sn.lse()).max(0.0);
            }
        }
    });
    sc.workers[..parts].iter().map(|w| w.kl).sum()
}
