//! The gradient and the sparse-row Adam step of [`GpuMath`].
//!
//! The gradient runs in two passes. The first (`token_pass`) computes, per token, `u = A h`, the
//! deltas of the active rows, `log Z`, the exact KL, `g = dJ/dz` on the active rows, `B^T g`, and the
//! outer products that give `dA` and the value head's `dw`. The host then picks the rows of `B` that
//! carried mass exactly as the CPU path does (the sampled token and the top-k of `p` among the same
//! candidates, with the same selection call, so ties fall the same way). The second pass (`rowgrad`)
//! sums `dB` on those rows over all tokens.

use ndarray::Array2;

use super::exec::{groups_for, Read};
use super::kernels::{Kernel, Params, TokGpu, STAT_WORDS};
use super::math::GpuMath;
use super::tokens;
use crate::adapter::{AdamParams, AdamState, BaseStats, GradEpisode, GradStats, HeadGrad, LoraHead};
use crate::error::{Error, Result};
use crate::generate::TokenRecord;

/// `1 - beta^t` as the CPU computes it.
fn bias_correction(beta: f64, t: u64) -> f32 {
    (1.0 - beta.powi(t.min(i32::MAX as u64) as i32)) as f32
}

impl GpuMath {
    pub(super) fn gradient_gpu(&self, head: &LoraHead, batch: &[GradEpisode<'_>]) -> Result<(HeadGrad, GradStats)> {
        let (r, d, vocab) = (head.rank(), head.hidden_size(), head.vocab_size());
        let top_k = head.config().top_k;
        let mut grad = HeadGrad::new(r, d);
        grad.has_value = batch.iter().any(|e| e.value_targets.is_some());
        let (mut recs, mut bases, mut toks) = (Vec::new(), Vec::new(), Vec::new());
        let mut targets: Vec<Option<f64>> = Vec::new();
        let mut weights = Vec::new();
        for ep in batch {
            tokens::check_lengths(ep.tokens, ep.base)?;
            ep.check_weights()?;
            for (t, (rec, bs)) in ep.tokens.iter().zip(ep.base).enumerate() {
                tokens::check_token(head, rec, bs)?;
                let target = ep.value_targets.map(|g| g[t]);
                let tk = TokGpu {
                    c: ep.weights[t] as f32,
                    beta: ep.beta as f32,
                    k: ep.logit_weights.map_or(0.0, |k| k[t] as f32),
                    goal: target.unwrap_or(0.0) as f32,
                    has_target: u32::from(target.is_some()),
                    ..tokens::tok(rec, bs)
                };
                recs.push(rec);
                bases.push(bs);
                toks.push(tk);
                targets.push(target);
                weights.push(ep.weights[t]);
            }
        }
        let mut stats = GradStats::default();
        if recs.is_empty() {
            return Ok((grad, stats));
        }
        let mut guard = self.lock()?;
        let st = &mut *guard;
        self.sync(st, 0, head)?;
        let pass = self.token_pass(st, head, &recs, &toks, true)?;
        let act = head.active_rows();
        let n_act = act.len();
        st.mark.clear();
        st.mark.resize(vocab, false);
        let mut cands: Vec<(u32, f64)> = Vec::new();
        let mut sel: Vec<(f64, u32)> = Vec::new();
        let mut k = 0;
        for (ci, &(_, count)) in pass.plan.chunks.iter().enumerate() {
            for local in 0..count {
                let (rec, bs) = (recs[k], bases[k]);
                let s = &pass.stats[k * STAT_WORDS..(k + 1) * STAT_WORDS];
                let (lz, kl) = (f64::from(s[0]), f64::from(s[1]));
                let logp_a = bs.log_q(rec.base_logprobs[rec.token as usize]) + f64::from(s[2]) - lz;
                if !(lz.is_finite() && kl.is_finite() && logp_a.is_finite()) {
                    return Err(Error::Learning("non-finite adapted distribution (adapter weights blew up?)".into()));
                }
                stats.tokens += 1;
                stats.policy_objective += weights[k] * logp_a;
                stats.kl_sum += kl;
                let deltas = pass.deltas.get(ci).map_or(&[][..], |e| &e[local * n_act..(local + 1) * n_act]);
                candidates(rec, bs, act, deltas, lz, &mut cands);
                // The rows that carried mass: the sampled token and the top-k of p (as the CPU picks them).
                sel.clear();
                sel.extend(cands.iter().map(|&(v, p)| (p, v)));
                if sel.len() > top_k {
                    sel.select_nth_unstable_by(top_k - 1, |a, b| b.0.total_cmp(&a.0));
                    sel.truncate(top_k);
                }
                for &(_, v) in &sel {
                    st.mark[v as usize] = true;
                }
                st.mark[rec.token as usize] = true;
                if let Some(target) = targets[k] {
                    let diff = f64::from(s[6]) - target;
                    grad.value_b += diff;
                    stats.value_loss += 0.5 * diff * diff;
                }
                k += 1;
            }
        }
        grad.rows.clear();
        for (v, m) in st.mark.iter_mut().enumerate() {
            if *m {
                grad.rows.push(v as u32);
                *m = false;
            }
        }
        let n_rows = grad.rows.len();
        let db = if n_rows == 0 {
            Vec::new()
        } else {
            let pool = &mut st.pool;
            let rb = pool.get(&self.core, "rows", 0, 4 * n_rows as u64)?;
            let dbb = pool.get(&self.core, "db", 0, (4 * n_rows * r) as u64)?;
            self.core.upload(&rb, 0, bytemuck::cast_slice(&grad.rows));
            st.transfers.input_bytes += 4 * n_rows as u64;
            let slot = Self::slot(&st.slots, 0)?;
            let mut work = self.core.work(&self.kernels);
            work.clear(&dbb, (4 * n_rows * r) as u64);
            for (ci, &(start, count)) in pass.plan.chunks.iter().enumerate() {
                let p = Params {
                    r: r as u32,
                    n_tok: count as u32,
                    t0: start as u32,
                    n_rows: n_rows as u32,
                    lp_words: pass.plan.lp_words as u32,
                    kept_off: (count * pass.plan.lp_words) as u32,
                    kept_words: pass.plan.kept_words as u32,
                    ustride: (r + 1) as u32,
                    scale: slot.scale,
                    ..Params::default()
                };
                let bb = &pass.chunk_bufs[ci].1;
                work.dispatch(Kernel::RowGrad, &p, &[&rb, &pass.u, &slot.b, bb, &pass.toks, &pass.st, &dbb], (n_rows.div_ceil(64) as u32, 1));
            }
            let mut got = work.read(pool, &[Read { buffer: &dbb, offset: 0, words: n_rows * r }])?;
            st.transfers.readback_bytes += (4 * n_rows * r) as u64;
            got.pop().unwrap_or_default()
        };
        let wide = |x: &[f32]| x.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
        if pass.outer.len() != (r + 1) * d || db.len() != n_rows * r {
            return Err(Error::Gpu("the GPU returned results of the wrong size".into()));
        }
        grad.a = Array2::from_shape_vec((r, d), wide(&pass.outer[..r * d])).map_err(|e| Error::Gpu(e.to_string()))?;
        if grad.has_value {
            grad.value_w = wide(&pass.outer[r * d..]);
        }
        grad.b = Array2::from_shape_vec((n_rows, r), wide(&db)).map_err(|e| Error::Gpu(e.to_string()))?;
        if !grad.is_finite() {
            return Err(Error::Learning("non-finite gradient".into()));
        }
        Ok((grad, stats))
    }

    pub(super) fn adam_gpu(&self, head: &mut LoraHead, adam: &mut AdamState, grad: &HeadGrad, p: &AdamParams) -> Result<()> {
        let (r, d) = (head.rank(), head.hidden_size());
        if grad.a.dim() != (r, d) || grad.b.dim() != (grad.rows.len(), r) || grad.value_w.len() != d || adam.a_m.dim() != (r, d) || adam.b_steps.len() != head.vocab_size() {
            return Err(Error::Learning("gradient, optimiser state and adapter shapes disagree".into()));
        }
        if grad.rows.windows(2).any(|w| w[0] >= w[1]) || grad.rows.last().is_some_and(|&v| v as usize >= head.vocab_size()) {
            return Err(Error::Learning("gradient rows are not strictly ascending within the vocabulary".into()));
        }
        if !grad.is_finite() {
            return Err(Error::Learning("non-finite gradient".into()));
        }
        let n_rows = grad.rows.len();
        let (off_b, off_v) = (r * d, r * d + n_rows * r);
        let n = off_v + if grad.has_value { d + 1 } else { 0 };
        let (mut x, mut m, mut v, mut g) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        x.extend(head.a().iter());
        m.extend(adam.a_m.iter());
        v.extend(adam.a_v.iter());
        g.extend(grad.a.iter().map(|&e| e as f32));
        let mut tab = vec![[p.a_lr as f32, bias_correction(p.beta1, adam.a_step + 1), bias_correction(p.beta2, adam.a_step + 1), 0.0]];
        for (i, &row) in grad.rows.iter().enumerate() {
            let row = row as usize;
            x.extend(head.b().row(row).iter());
            m.extend(adam.b_m.row(row).iter());
            v.extend(adam.b_v.row(row).iter());
            g.extend(grad.b.row(i).iter().map(|&e| e as f32));
            let t = u64::from(adam.b_steps[row].saturating_add(1));
            tab.push([p.lr as f32, bias_correction(p.beta1, t), bias_correction(p.beta2, t), 0.0]);
        }
        let t = adam.value_step + 1;
        tab.push([p.value_lr as f32, bias_correction(p.beta1, t), bias_correction(p.beta2, t), 0.0]);
        if grad.has_value {
            x.extend(head.value_w().iter());
            x.push(head.value_b());
            m.extend(&adam.w_m);
            m.push(adam.bias_m);
            v.extend(&adam.w_v);
            v.push(adam.bias_v);
            g.extend(grad.value_w.iter().map(|&e| e as f32));
            g.push(grad.value_b as f32);
        }
        let mut guard = self.lock()?;
        let st = &mut *guard;
        self.sync(st, 0, head)?;
        let pool = &mut st.pool;
        let bytes = 4 * n as u64;
        let (xb, mb, vb, gb) = (pool.get(&self.core, "adam x", 0, bytes)?, pool.get(&self.core, "adam m", 0, bytes)?, pool.get(&self.core, "adam v", 0, bytes)?, pool.get(&self.core, "adam g", 0, bytes)?);
        let tb = pool.get(&self.core, "adam table", 0, 16 * tab.len() as u64)?;
        let rb = pool.get(&self.core, "rows", 0, 4 * n_rows as u64)?;
        for (buf, data) in [(&xb, &x), (&mb, &m), (&vb, &v), (&gb, &g)] {
            self.core.upload(buf, 0, bytemuck::cast_slice(data));
        }
        self.core.upload(&tb, 0, bytemuck::cast_slice(&tab));
        self.core.upload(&rb, 0, bytemuck::cast_slice(&grad.rows));
        st.transfers.input_bytes += 4 * bytes + 16 * tab.len() as u64 + 4 * n_rows as u64;
        let slot = Self::slot(&st.slots, 0)?;
        let params = Params {
            r: r as u32,
            n_rows: n_rows as u32,
            n_elems: n as u32,
            beta1: p.beta1 as f32,
            beta2: p.beta2 as f32,
            eps: p.eps as f32,
            off_b: off_b as u32,
            off_v: off_v as u32,
            n_groups: tab.len() as u32,
            src_off: off_b as u32,
            ..Params::default()
        };
        let mut work = self.core.work(&self.kernels);
        work.dispatch(Kernel::Adam, &params, &[&xb, &mb, &vb, &gb, &tb], groups_for(n, 64));
        // The moved values go straight into the resident copy of the head.
        work.dispatch(Kernel::Scatter, &params, &[&rb, &xb, &slot.b], groups_for(n_rows * r, 64));
        work.copy(&xb, 0, &slot.a, 0, 4 * off_b as u64);
        if grad.has_value {
            work.copy(&xb, 4 * off_v as u64, &slot.val, 0, 4 * (d + 1) as u64);
        }
        let reads = [Read { buffer: &xb, offset: 0, words: n }, Read { buffer: &mb, offset: 0, words: n }, Read { buffer: &vb, offset: 0, words: n }];
        let got = work.read(pool, &reads)?;
        st.transfers.readback_bytes += 3 * bytes;
        let (x, m, v) = match got.as_slice() {
            [x, m, v] if x.len() == n && m.len() == n && v.len() == n => (x, m, v),
            _ => return Err(Error::Gpu("the GPU returned results of the wrong size".into())),
        };
        // Only now, with every result in hand, the head and the optimiser state change.
        head.a_mut().iter_mut().zip(&x[..off_b]).for_each(|(dst, &src)| *dst = src);
        adam.a_m.iter_mut().zip(&m[..off_b]).for_each(|(dst, &src)| *dst = src);
        adam.a_v.iter_mut().zip(&v[..off_b]).for_each(|(dst, &src)| *dst = src);
        adam.a_step += 1;
        for (i, &row) in grad.rows.iter().enumerate() {
            let (row, span) = (row as usize, off_b + i * r..off_b + (i + 1) * r);
            head.b_mut().row_mut(row).iter_mut().zip(&x[span.clone()]).for_each(|(dst, &src)| *dst = src);
            adam.b_m.row_mut(row).iter_mut().zip(&m[span.clone()]).for_each(|(dst, &src)| *dst = src);
            adam.b_v.row_mut(row).iter_mut().zip(&v[span]).for_each(|(dst, &src)| *dst = src);
            adam.b_steps[row] = adam.b_steps[row].saturating_add(1);
        }
        head.activate_rows(&grad.rows);
        if grad.has_value {
            adam.value_step += 1;
            let (w, bias) = head.value_mut();
            w.iter_mut().zip(&x[off_v..off_v + d]).for_each(|(dst, &src)| *dst = src);
            *bias = x[off_v + d];
            adam.w_m.copy_from_slice(&m[off_v..off_v + d]);
            adam.w_v.copy_from_slice(&v[off_v..off_v + d]);
            adam.bias_m = m[off_v + d];
            adam.bias_v = v[off_v + d];
        }
        let sent = match st.slots[0].as_mut() {
            Some(slot) => slot.stepped(&self.core, head)?,
            None => 0,
        };
        st.transfers.head_bytes += sent;
        Ok(())
    }
}

/// The candidate rows of one token with their adapted probabilities, ascending by id, built as the
/// CPU path builds them: the base top-k, the active rows in the kept set, and the sampled token.
fn candidates(rec: &TokenRecord, bs: &BaseStats, act: &[u32], deltas: &[f32], lz: f64, out: &mut Vec<(u32, f64)>) {
    out.clear();
    let tau_inv = 1.0 / f64::from(bs.tau);
    let p = |v: u32, delta: f64| (bs.log_q(rec.base_logprobs[v as usize]) + delta * tau_inv - lz).exp();
    let delta_at = |j: usize| deltas.get(j).map_or(0.0, |&e| f64::from(e));
    let (top, mut i, mut j) = (&bs.top, 0, 0);
    loop {
        match (top.get(i), act.get(j)) {
            (Some(&x), Some(&y)) if x < y => {
                out.push((x, p(x, 0.0)));
                i += 1;
            }
            (Some(&x), Some(&y)) if x == y => {
                out.push((x, p(x, delta_at(j))));
                i += 1;
                j += 1;
            }
            (_, Some(&y)) => {
                if tokens::in_kept(rec, y) {
                    out.push((y, p(y, delta_at(j))));
                }
                j += 1;
            }
            (Some(&x), None) => {
                out.push((x, p(x, 0.0)));
                i += 1;
            }
            (None, None) => break,
        }
    }
    if let Err(pos) = out.binary_search_by_key(&rec.token, |c| c.0) {
        out.insert(pos, (rec.token, p(rec.token, 0.0)));
    }
}
