//! The sparse f64 path: per token only the candidate rows (the base top-k, the active rows of `B`
//! in the kept set, the sampled token) are touched. The adapted policy is still exact everywhere
//! (see [`super::base`]): outside the candidates `p_v = q_v / Z`, so the gradient there is
//! `kappa_t q_v / Z` for one scalar `kappa_t` per token.

use ndarray::Array2;

use super::base::BaseStats;
use super::fastmath::exp_f64;
use super::head::LoraHead;
use super::math::{GradEpisode, GradStats, HeadGrad, TokenEval};
use crate::error::{Error, Result};
use crate::generate::TokenRecord;

/// One candidate row of a token's distribution.
#[derive(Debug, Clone, Copy, Default)]
struct Cand {
    v: u32,
    /// `log q_v`.
    lq: f64,
    /// `delta_v = s B_v . u` (0 for inactive rows).
    delta: f64,
    active: bool,
    /// `log p_v`.
    lp: f64,
    /// `p_v`.
    p: f64,
    /// `dJ/dz_v`.
    g: f64,
}

/// What a pass over one token yields besides its candidates.
#[derive(Debug, Clone, Copy)]
struct TokenPass {
    log_z: f64,
    kl: f64,
    logp_a: f64,
}

/// A token's summary kept between the two halves of the gradient.
#[derive(Debug, Clone, Copy)]
struct TokSummary {
    ep: usize,
    t: usize,
    start: usize,
    end: usize,
    log_z: f64,
    kappa: f64,
}

/// Reusable buffers of the sparse path.
#[derive(Debug, Default)]
pub(crate) struct SparseScratch {
    cands: Vec<Cand>,
    flat: Vec<(u32, f64)>,
    toks: Vec<TokSummary>,
    us: Vec<f64>,
    sel: Vec<(f64, u32)>,
    pairs: Vec<(f64, f64, f64)>,
}

/// `u = A h` in f64.
fn project(head: &LoraHead, hidden: &[f32], u: &mut [f64]) {
    for (j, uj) in u.iter_mut().enumerate() {
        *uj = head.a().row(j).iter().zip(hidden).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    }
}

/// `s B_v . u` in f64.
fn row_delta(head: &LoraHead, v: usize, u: &[f64]) -> f64 {
    let s = f64::from(head.scale());
    s * head.b().row(v).iter().zip(u).map(|(&b, &x)| f64::from(b) * x).sum::<f64>()
}

/// Whether `v` is in the record's kept set (always, without truncation).
fn in_kept(rec: &TokenRecord, v: u32) -> bool {
    rec.kept.as_ref().is_none_or(|k| k.binary_search(&v).is_ok())
}

/// `log Z` for rows given as `(log q_v, log q_v + delta_v / tau)`, which must include every row
/// whose delta is not zero; the base mass of all other rows enters as one remainder.
fn log_partition<I: Iterator<Item = (f64, f64)> + Clone>(rows: I) -> f64 {
    let (mut any, mut mass, mut m) = (false, 0.0f64, f64::NEG_INFINITY);
    for (lq, y) in rows.clone() {
        any = true;
        mass += lq.exp();
        m = m.max(y);
    }
    if !any {
        return 0.0;
    }
    let rest = (1.0 - mass).max(0.0);
    let ln_rest = if rest > 0.0 { rest.ln() } else { f64::NEG_INFINITY };
    let m = m.max(ln_rest);
    if m == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let s = (ln_rest - m).exp() + rows.map(|(_, y)| (y - m).exp()).sum::<f64>();
    m + s.ln()
}

/// Fills `cands` (ascending by id) for one token and computes `log Z`, the exact KL and
/// `log p[a]`. With `with_top` the base top-k joins the candidates.
fn token_pass(head: &LoraHead, u: &[f64], rec: &TokenRecord, base: &BaseStats, with_top: bool, cands: &mut Vec<Cand>) -> Result<TokenPass> {
    cands.clear();
    let top: &[u32] = if with_top { &base.top } else { &[] };
    let act = head.active_rows();
    let (mut i, mut j) = (0, 0);
    loop {
        let v = match (top.get(i), act.get(j)) {
            (Some(&x), Some(&y)) if x < y => {
                i += 1;
                x
            }
            (Some(&x), Some(&y)) if x == y => {
                i += 1;
                j += 1;
                x
            }
            (_, Some(&y)) => {
                j += 1;
                if !in_kept(rec, y) {
                    continue;
                }
                y
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, None) => break,
        };
        cands.push(Cand { v, ..Cand::default() });
    }
    if let Err(pos) = cands.binary_search_by_key(&rec.token, |c| c.v) {
        cands.insert(pos, Cand { v: rec.token, ..Cand::default() });
    }
    let tau_inv = 1.0 / f64::from(base.tau);
    for c in cands.iter_mut() {
        c.lq = base.log_q(rec.base_logprobs[c.v as usize]);
        c.active = head.is_row_active(c.v as usize);
        c.delta = if c.active { row_delta(head, c.v as usize, u) } else { 0.0 };
    }
    let log_z = log_partition(cands.iter().filter(|c| c.active).map(|c| (c.lq, c.lq + c.delta * tau_inv)));
    let (mut kl, mut logp_a) = (-log_z, f64::NAN);
    for c in cands.iter_mut() {
        c.lp = c.lq + c.delta * tau_inv - log_z;
        c.p = c.lp.exp();
        if c.active && c.p > 0.0 {
            kl += c.p * c.delta * tau_inv;
        }
        if c.v == rec.token {
            logp_a = c.lp;
        }
    }
    if !(log_z.is_finite() && kl.is_finite() && logp_a.is_finite()) {
        return Err(Error::Learning("non-finite adapted distribution (adapter weights blew up?)".into()));
    }
    Ok(TokenPass { log_z, kl: kl.max(0.0), logp_a })
}

impl SparseScratch {
    /// The policy part of the gradient: fills `grad.a`, `grad.rows`, `grad.b`.
    pub(crate) fn policy_gradient(&mut self, head: &LoraHead, batch: &[GradEpisode<'_>], grad: &mut HeadGrad, stats: &mut GradStats, mark: &mut [bool]) -> Result<()> {
        let r = head.rank();
        let s = f64::from(head.scale());
        let top_k = head.config().top_k;
        self.flat.clear();
        self.toks.clear();
        self.us.clear();
        let mut u = vec![0.0; r];
        let mut w = vec![0.0; r];
        for (ei, ep) in batch.iter().enumerate() {
            for (t, (rec, bs)) in ep.tokens.iter().zip(ep.base).enumerate() {
                let (c, beta) = (ep.weights[t], ep.beta);
                let k = ep.logit_weights.map_or(0.0, |k| k[t]);
                let tau_inv = 1.0 / f64::from(bs.tau);
                project(head, &rec.hidden, &mut u);
                self.us.extend_from_slice(&u);
                let pass = token_pass(head, &u, rec, bs, true, &mut self.cands)?;
                let (lz, kl) = (pass.log_z, pass.kl);
                stats.tokens += 1;
                stats.policy_objective += c * pass.logp_a;
                stats.kl_sum += kl;
                // dJ/dz on the candidates, and w = B^T g over the active ones.
                w.iter_mut().for_each(|x| *x = 0.0);
                for cand in self.cands.iter_mut() {
                    let onehot = if cand.v == rec.token { 1.0 } else { 0.0 };
                    cand.g = if cand.p > 0.0 {
                        c * tau_inv * (onehot - cand.p) - beta * tau_inv * cand.p * (cand.delta * tau_inv - lz - kl)
                    } else {
                        c * tau_inv * onehot
                    } + k * onehot;
                    if cand.active {
                        for (wj, &b) in w.iter_mut().zip(head.b().row(cand.v as usize)) {
                            *wj += cand.g * f64::from(b);
                        }
                    }
                }
                for (j, &wj) in w.iter().enumerate() {
                    if wj != 0.0 {
                        let coef = -s * wj;
                        for (ga, &h) in grad.a.row_mut(j).iter_mut().zip(&rec.hidden) {
                            *ga += coef * f64::from(h);
                        }
                    }
                }
                // The rows that carried mass: the sampled token and the top-k of p.
                self.sel.clear();
                self.sel.extend(self.cands.iter().map(|c| (c.p, c.v)));
                if self.sel.len() > top_k {
                    self.sel.select_nth_unstable_by(top_k - 1, |a, b| b.0.total_cmp(&a.0));
                    self.sel.truncate(top_k);
                }
                for &(_, v) in &self.sel {
                    mark[v as usize] = true;
                }
                mark[rec.token as usize] = true;
                let start = self.flat.len();
                self.flat.extend(self.cands.iter().map(|c| (c.v, c.g)));
                let kappa = -tau_inv * (c - beta * (lz + kl));
                self.toks.push(TokSummary { ep: ei, t, start, end: self.flat.len(), log_z: lz, kappa });
            }
        }
        grad.rows.clear();
        for (v, m) in mark.iter_mut().enumerate() {
            if *m {
                grad.rows.push(v as u32);
                *m = false;
            }
        }
        grad.b = Array2::zeros((grad.rows.len(), r));
        // dB on the chosen rows, summed over every token (exact there).
        for (k, ts) in self.toks.iter().enumerate() {
            let ep = &batch[ts.ep];
            let (rec, bs) = (&ep.tokens[ts.t], &ep.base[ts.t]);
            let u = &self.us[k * r..(k + 1) * r];
            let cands = &self.flat[ts.start..ts.end];
            let mut ci = 0;
            for (i, &v) in grad.rows.iter().enumerate() {
                while ci < cands.len() && cands[ci].0 < v {
                    ci += 1;
                }
                let g = if ci < cands.len() && cands[ci].0 == v {
                    cands[ci].1
                } else if ts.kappa != 0.0 && in_kept(rec, v) {
                    ts.kappa * exp_f64(bs.log_q(rec.base_logprobs[v as usize]) - ts.log_z)
                } else {
                    0.0
                };
                if g != 0.0 {
                    let coef = -s * g;
                    for (gb, &uj) in grad.b.row_mut(i).iter_mut().zip(u) {
                        *gb += coef * uj;
                    }
                }
            }
        }
        Ok(())
    }

    /// Evaluates the adapted and base policies, appending to `out`.
    pub(crate) fn evaluate(&mut self, head: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats], out: &mut Vec<TokenEval>) -> Result<()> {
        let mut u = vec![0.0; head.rank()];
        for (rec, bs) in tokens.iter().zip(base) {
            project(head, &rec.hidden, &mut u);
            let pass = token_pass(head, &u, rec, bs, false, &mut self.cands)?;
            // Entropy: candidates directly, the rest as the base entropy's remainder scaled by 1/Z.
            let (mut neg_plogp, mut qlq, mut q_c) = (0.0, 0.0, 0.0);
            for c in &self.cands {
                if c.p > 0.0 {
                    neg_plogp -= c.p * c.lp;
                }
                let q = c.lq.exp();
                if q > 0.0 {
                    qlq += q * c.lq;
                    q_c += q;
                }
            }
            let inv_z = (-pass.log_z).exp();
            let rest = (1.0 - q_c).max(0.0);
            let entropy = neg_plogp + inv_z * (bs.entropy + qlq).max(0.0) + rest * inv_z * pass.log_z;
            let base_logp = bs.log_q(rec.base_logprobs[rec.token as usize]);
            out.push(TokenEval { logp: pass.logp_a, base_logp, kl: pass.kl, entropy: entropy.max(0.0), base_entropy: bs.entropy });
        }
        Ok(())
    }

    /// The mean `KL(p_old || p_new)` over `tokens` (not empty).
    pub(crate) fn step_kl(&mut self, old: &LoraHead, new: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats]) -> Result<f64> {
        let r = old.rank();
        let (mut u_old, mut u_new) = (vec![0.0; r], vec![0.0; r]);
        let mut total = 0.0;
        for (rec, bs) in tokens.iter().zip(base) {
            project(old, &rec.hidden, &mut u_old);
            project(new, &rec.hidden, &mut u_new);
            let tau_inv = 1.0 / f64::from(bs.tau);
            // Rows active in either adapter, inside the kept set: (log q, y_old, y_new).
            self.pairs.clear();
            let (oa, na) = (old.active_rows(), new.active_rows());
            let (mut i, mut j) = (0, 0);
            while i < oa.len() || j < na.len() {
                let v = match (oa.get(i), na.get(j)) {
                    (Some(&x), Some(&y)) if x == y => {
                        i += 1;
                        j += 1;
                        x
                    }
                    (Some(&x), Some(&y)) if x < y => {
                        i += 1;
                        x
                    }
                    (Some(&x), None) => {
                        i += 1;
                        x
                    }
                    (_, Some(&y)) => {
                        j += 1;
                        y
                    }
                    (None, None) => break,
                };
                if !in_kept(rec, v) {
                    continue;
                }
                let lq = bs.log_q(rec.base_logprobs[v as usize]);
                let d_old = if old.is_row_active(v as usize) { row_delta(old, v as usize, &u_old) } else { 0.0 };
                let d_new = if new.is_row_active(v as usize) { row_delta(new, v as usize, &u_new) } else { 0.0 };
                self.pairs.push((lq, lq + d_old * tau_inv, lq + d_new * tau_inv));
            }
            let lz_old = log_partition(self.pairs.iter().map(|&(lq, yo, _)| (lq, yo)));
            let lz_new = log_partition(self.pairs.iter().map(|&(lq, _, yn)| (lq, yn)));
            let mut kl = lz_new - lz_old;
            for &(_, yo, yn) in &self.pairs {
                let p_old = (yo - lz_old).exp();
                if p_old > 0.0 {
                    kl += p_old * (yo - yn);
                }
            }
            if !kl.is_finite() {
                return Err(Error::Learning("non-finite KL between adapters".into()));
            }
            total += kl.max(0.0);
        }
        Ok(total / tokens.len() as f64)
    }
}
