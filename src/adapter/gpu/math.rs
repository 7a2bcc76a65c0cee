//! [`GpuMath`]: the [`AdapterMath`] interface on a wgpu device.

use std::sync::{Arc, Mutex, MutexGuard};

use ndarray::{ArrayView2, ArrayViewMut2};

use super::device::{AdapterSummary, GpuDevice};
use super::exec::{Core, Pool, Read};
use super::kernels::{Kernel, Kernels, Params, TokGpu, STAT_WORDS};
use super::resident::HeadSlot;
use super::tokens::{self, Plan};
use crate::adapter::{AdamParams, AdamState, AdapterMath, BaseStats, GradEpisode, GradStats, HeadGrad, LoraHead, TokenEval};
use crate::error::{Error, Result};
use crate::generate::TokenRecord;

/// Bytes moved between the host and the device since the math was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Adapter parameters uploaded (changed rows of `B`, `A`, the value head, the active list).
    pub head_bytes: u64,
    /// Per-call inputs uploaded (hidden states, base log-probabilities, kept sets, token tables).
    pub input_bytes: u64,
    /// Results read back.
    pub readback_bytes: u64,
}

/// What the math keeps between calls.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Slot 0 holds the head of the last call; slot 1 the `old` head of [`AdapterMath::step_kl`].
    pub(super) slots: [Option<HeadSlot>; 2],
    pub(super) pool: Pool,
    pub(super) mark: Vec<bool>,
    pub(super) transfers: TransferStats,
}

/// The adapter math on a wgpu device, in f32: delta logits, evaluation, the exact step KL, the
/// gradient and the sparse-row Adam step. Results match [`crate::adapter::CpuMath`] to about 1e-5
/// relative.
///
/// `A`, `B` (dense `V x r`, zero outside the active rows) and the value head stay on the device
/// between calls; each call uploads only what changed (see `resident.rs`). Errors of the device come
/// back as [`Error::Gpu`]; wrap the math in [`super::FallbackMath`] to continue on the CPU then.
/// Every method changes its outputs (logits, gradient, head, optimiser state) only after all device
/// work succeeded, so a failed call leaves them as they were.
#[derive(Debug)]
pub struct GpuMath {
    pub(super) core: Arc<Core>,
    pub(super) kernels: Kernels,
    pub(super) state: Mutex<State>,
}

/// Results of the statistics pass over a set of tokens.
pub(super) struct TokenPass {
    /// [`STAT_WORDS`] values per token (see `stats.wgsl`).
    pub(super) stats: Vec<f32>,
    /// `(r + 1) x d`: `dA` then the value head's `dw` (gradient mode).
    pub(super) outer: Vec<f32>,
    /// Per chunk, `count x n_act` raw deltas of the active rows (gradient mode).
    pub(super) deltas: Vec<Vec<f32>>,
    pub(super) plan: Plan,
    pub(super) chunk_bufs: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    pub(super) u: wgpu::Buffer,
    pub(super) toks: wgpu::Buffer,
    pub(super) st: wgpu::Buffer,
}

impl GpuMath {
    /// Builds the kernels on `device`.
    pub fn new(device: &GpuDevice) -> Result<GpuMath> {
        let core = Arc::clone(&device.core);
        let kernels = core.guarded(|| Kernels::new(&core.device))?;
        Ok(GpuMath { core, kernels, state: Mutex::new(State::default()) })
    }

    /// The adapter the math runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.core.info
    }

    /// Bytes moved between the host and the device so far.
    pub fn transfers(&self) -> TransferStats {
        self.state.lock().map(|s| s.transfers).unwrap_or_default()
    }

    /// Drops the cached device buffers (they are rebuilt on the next call).
    pub fn release_buffers(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.slots = [None, None];
            s.pool = Pool::default();
        }
    }

    pub(super) fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| Error::Gpu("GPU state poisoned by an earlier panic".into()))
    }

    /// Syncs slot `i` with `head`.
    pub(super) fn sync(&self, st: &mut State, i: usize, head: &LoraHead) -> Result<()> {
        let sent = HeadSlot::sync(&mut st.slots[i], &self.core, &self.kernels, &mut st.pool, head)?;
        st.transfers.head_bytes += sent;
        Ok(())
    }

    /// Slot `i`, borrowed apart from the rest of the state.
    pub(super) fn slot(slots: &[Option<HeadSlot>; 2], i: usize) -> Result<&HeadSlot> {
        slots[i].as_ref().ok_or_else(|| Error::Gpu("head slot missing".into()))
    }

    /// `s B (A h)` on the active rows for `n` positions (`hidden` is `n x d`): `n x n_act` values.
    fn deltas(&self, head: &LoraHead, hidden: &[f32], n: usize) -> Result<Vec<f32>> {
        let mut guard = self.lock()?;
        let st = &mut *guard;
        self.sync(st, 0, head)?;
        let (r, d) = (head.rank(), head.hidden_size());
        let n_act = head.active_rows().len();
        let plan = Plan::new(&self.core, n, 0, d, n_act.max(r + 1), false)?;
        let mut out = Vec::with_capacity(n * n_act);
        for &(start, count) in &plan.chunks {
            let hb = st.pool.get(&self.core, "hidden", 0, (4 * count * d) as u64)?;
            let ub = st.pool.get(&self.core, "u", 0, (4 * count * (r + 1)) as u64)?;
            let eb = st.pool.get(&self.core, "deltas", 0, (4 * count * n_act) as u64)?;
            self.core.upload(&hb, 0, bytemuck::cast_slice(&hidden[start * d..(start + count) * d]));
            st.transfers.input_bytes += (4 * count * d) as u64;
            let slot = Self::slot(&st.slots, 0)?;
            let p = Params {
                r: r as u32,
                d: d as u32,
                n_act: n_act as u32,
                n_tok: count as u32,
                ustride: (r + 1) as u32,
                scale: slot.scale,
                ..Params::default()
            };
            let mut work = self.core.work(&self.kernels);
            work.dispatch(Kernel::Project, &p, &[&slot.a, &slot.val, &hb, &ub], (r as u32 + 1, count as u32));
            work.dispatch(Kernel::Delta, &p, &[&slot.act, &slot.b, &ub, &eb], (n_act.div_ceil(64) as u32, 1));
            let mut got = work.read(&mut st.pool, &[Read { buffer: &eb, offset: 0, words: count * n_act }])?;
            st.transfers.readback_bytes += (4 * count * n_act) as u64;
            out.append(&mut got[0]);
        }
        Ok(out)
    }

    /// Projects, computes the active rows' deltas and the per-token statistics of `recs` under the
    /// head in slot 0; in gradient mode also `B^T g` and the outer products for `dA` and `dw`.
    pub(super) fn token_pass(&self, st: &mut State, head: &LoraHead, recs: &[&TokenRecord], toks: &[TokGpu], grad: bool) -> Result<TokenPass> {
        let (r, d, vocab) = (head.rank(), head.hidden_size(), head.vocab_size());
        let n = recs.len();
        let n_act = head.active_rows().len();
        let any_kept = recs.iter().any(|rec| rec.kept.is_some());
        let plan = Plan::new(&self.core, n, vocab, d, n_act, any_kept)?;
        let pool = &mut st.pool;
        let tb = pool.get(&self.core, "tokens", 0, (32 * n) as u64)?;
        let ub = pool.get(&self.core, "u", 0, (4 * n * (r + 1)) as u64)?;
        let sb = pool.get(&self.core, "stats", 0, (4 * n * STAT_WORDS) as u64)?;
        let cb = pool.get(&self.core, "coef", 0, (4 * n * (r + 1)) as u64)?;
        let ob = pool.get(&self.core, "outer", 0, (4 * (r + 1) * d) as u64)?;
        self.core.upload(&tb, 0, bytemuck::cast_slice(toks));
        let mut sent = 32 * n as u64;
        let mut chunk_bufs = Vec::with_capacity(plan.chunks.len());
        let mut deltas = Vec::with_capacity(plan.chunks.len());
        for (ci, &(_, count)) in plan.chunks.iter().enumerate() {
            let (hb, bb, bytes) = plan.upload(&self.core, pool, ci, recs)?;
            sent += bytes;
            chunk_bufs.push((hb, bb));
            deltas.push(pool.get(&self.core, "deltas", ci, (4 * count * n_act) as u64)?);
        }
        st.transfers.input_bytes += sent;
        let slot = Self::slot(&st.slots, 0)?;
        let mut work = self.core.work(&self.kernels);
        work.clear(&ob, (4 * (r + 1) * d) as u64);
        for (ci, &(start, count)) in plan.chunks.iter().enumerate() {
            let (hb, bb) = &chunk_bufs[ci];
            let p = Params {
                r: r as u32,
                d: d as u32,
                vocab: vocab as u32,
                n_act: n_act as u32,
                n_tok: count as u32,
                t0: start as u32,
                lp_words: plan.lp_words as u32,
                kept_off: (count * plan.lp_words) as u32,
                kept_words: plan.kept_words as u32,
                ustride: (r + 1) as u32,
                scale: slot.scale,
                mode: u32::from(grad),
                ..Params::default()
            };
            let eb = &deltas[ci];
            work.dispatch(Kernel::Project, &p, &[&slot.a, &slot.val, hb, &ub], (r as u32 + 1, count as u32));
            work.dispatch(Kernel::Delta, &p, &[&slot.act, &slot.b, &ub, eb], (n_act.div_ceil(64) as u32, 1));
            work.dispatch(Kernel::Stats, &p, &[&slot.act, eb, bb, &tb, &ub, &sb, &slot.b, &cb], (count as u32, 1));
            if grad {
                work.dispatch(Kernel::Outer, &p, &[&cb, hb, &ob], (d.div_ceil(64) as u32, r as u32 + 1));
            }
        }
        let mut reads = vec![Read { buffer: &sb, offset: 0, words: n * STAT_WORDS }];
        if grad {
            reads.push(Read { buffer: &ob, offset: 0, words: (r + 1) * d });
            for (ci, &(_, count)) in plan.chunks.iter().enumerate() {
                reads.push(Read { buffer: &deltas[ci], offset: 0, words: count * n_act });
            }
        }
        let words: usize = reads.iter().map(|r| r.words).sum();
        let mut got = work.read(pool, &reads)?.into_iter();
        st.transfers.readback_bytes += 4 * words as u64;
        let stats = got.next().unwrap_or_default();
        let outer = got.next().unwrap_or_default();
        let deltas = got.collect();
        Ok(TokenPass { stats, outer, deltas, plan, chunk_bufs, u: ub, toks: tb, st: sb })
    }

    fn evaluate_gpu(&self, head: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats]) -> Result<Vec<TokenEval>> {
        tokens::check_lengths(tokens, base)?;
        for (rec, bs) in tokens.iter().zip(base) {
            tokens::check_token(head, rec, bs)?;
        }
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let mut guard = self.lock()?;
        let st = &mut *guard;
        self.sync(st, 0, head)?;
        let recs: Vec<&TokenRecord> = tokens.iter().collect();
        let toks: Vec<TokGpu> = tokens.iter().zip(base).map(|(rec, bs)| tokens::tok(rec, bs)).collect();
        let pass = self.token_pass(st, head, &recs, &toks, false)?;
        let mut out = Vec::with_capacity(tokens.len());
        for (k, (rec, bs)) in tokens.iter().zip(base).enumerate() {
            let s = &pass.stats[k * STAT_WORDS..(k + 1) * STAT_WORDS];
            let (lz, kl, y_a) = (f64::from(s[0]), f64::from(s[1]), f64::from(s[2]));
            let (q_act, plogp, qlogq) = (f64::from(s[3]), f64::from(s[4]), f64::from(s[5]));
            let base_logp = bs.log_q(rec.base_logprobs[rec.token as usize]);
            let logp = base_logp + y_a - lz;
            if !(lz.is_finite() && kl.is_finite() && logp.is_finite()) {
                return Err(Error::Learning("non-finite adapted distribution (adapter weights blew up?)".into()));
            }
            // The rows without a change hold base mass 1 - q_act, scaled by 1/Z (see base.rs).
            let inv_z = (-lz).exp();
            let rest = (1.0 - q_act).max(0.0);
            let entropy = -plogp + inv_z * (bs.entropy + qlogq).max(0.0) + rest * inv_z * lz;
            out.push(TokenEval { logp, base_logp, kl, entropy: entropy.max(0.0), base_entropy: bs.entropy });
        }
        Ok(out)
    }

    fn step_kl_gpu(&self, old: &LoraHead, new: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats]) -> Result<f64> {
        tokens::check_lengths(tokens, base)?;
        if old.rank() != new.rank() || old.hidden_size() != new.hidden_size() || old.vocab_size() != new.vocab_size() {
            return Err(Error::Learning("adapters of different shapes".into()));
        }
        for (rec, bs) in tokens.iter().zip(base) {
            tokens::check_token(new, rec, bs)?;
        }
        if tokens.is_empty() {
            return Ok(0.0);
        }
        let (r, d, vocab) = (new.rank(), new.hidden_size(), new.vocab_size());
        let n = tokens.len();
        let mut guard = self.lock()?;
        let st = &mut *guard;
        self.sync(st, 0, new)?;
        self.sync(st, 1, old)?;
        let mut rows: Vec<u32> = old.active_rows().iter().chain(new.active_rows()).copied().collect();
        rows.sort_unstable();
        rows.dedup();
        let recs: Vec<&TokenRecord> = tokens.iter().collect();
        let toks: Vec<TokGpu> = tokens.iter().zip(base).map(|(rec, bs)| tokens::tok(rec, bs)).collect();
        let any_kept = tokens.iter().any(|rec| rec.kept.is_some());
        let plan = Plan::new(&self.core, n, vocab, d, 0, any_kept)?;
        let pool = &mut st.pool;
        let rb = pool.get(&self.core, "rows", 0, 4 * rows.len() as u64)?;
        let tb = pool.get(&self.core, "tokens", 0, (32 * n) as u64)?;
        let ub = pool.get(&self.core, "u", 0, (8 * n * (r + 1)) as u64)?;
        let kb = pool.get(&self.core, "step kl", 0, (4 * n) as u64)?;
        self.core.upload(&rb, 0, bytemuck::cast_slice(&rows));
        self.core.upload(&tb, 0, bytemuck::cast_slice(&toks));
        let mut sent = 4 * rows.len() as u64 + 32 * n as u64;
        let mut chunk_bufs = Vec::with_capacity(plan.chunks.len());
        for ci in 0..plan.chunks.len() {
            let (hb, bb, bytes) = plan.upload(&self.core, pool, ci, &recs)?;
            sent += bytes;
            chunk_bufs.push((hb, bb));
        }
        st.transfers.input_bytes += sent;
        let (s_new, s_old) = (Self::slot(&st.slots, 0)?, Self::slot(&st.slots, 1)?);
        let mut work = self.core.work(&self.kernels);
        for (ci, &(start, count)) in plan.chunks.iter().enumerate() {
            let (hb, bb) = &chunk_bufs[ci];
            let mut p = Params {
                r: r as u32,
                d: d as u32,
                vocab: vocab as u32,
                n_tok: count as u32,
                t0: start as u32,
                n_rows: rows.len() as u32,
                lp_words: plan.lp_words as u32,
                kept_off: (count * plan.lp_words) as u32,
                kept_words: plan.kept_words as u32,
                ustride: 2 * (r + 1) as u32,
                scale: s_old.scale,
                scale2: s_new.scale,
                ..Params::default()
            };
            work.dispatch(Kernel::Project, &p, &[&s_old.a, &s_old.val, hb, &ub], (r as u32 + 1, count as u32));
            p.uoff = (r + 1) as u32;
            work.dispatch(Kernel::Project, &p, &[&s_new.a, &s_new.val, hb, &ub], (r as u32 + 1, count as u32));
            p.uoff = 0;
            work.dispatch(Kernel::StepKl, &p, &[&rb, &ub, &s_old.b, &s_new.b, bb, &tb, &kb], (count as u32, 1));
        }
        let got = work.read(pool, &[Read { buffer: &kb, offset: 0, words: n }])?;
        st.transfers.readback_bytes += 4 * n as u64;
        let mut total = 0.0;
        for &kl in got.first().map(Vec::as_slice).unwrap_or(&[]) {
            if !kl.is_finite() {
                return Err(Error::Learning("non-finite KL between adapters".into()));
            }
            total += f64::from(kl);
        }
        Ok(total / n as f64)
    }
}

impl GpuMath {
    /// [`AdapterMath::evaluate`] through a shared reference (the state sits behind a lock).
    pub(super) fn evaluate_shared(&self, head: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats]) -> Result<Vec<TokenEval>> {
        self.core.guarded(|| self.evaluate_gpu(head, tokens, base))
    }

    /// [`AdapterMath::step_kl`] through a shared reference.
    pub(super) fn step_kl_shared(&self, old: &LoraHead, new: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats]) -> Result<f64> {
        self.core.guarded(|| self.step_kl_gpu(old, new, tokens, base))
    }

    /// [`AdapterMath::gradient`] through a shared reference, returning a fresh gradient.
    pub(super) fn gradient_shared(&self, head: &LoraHead, batch: &[GradEpisode<'_>]) -> Result<(HeadGrad, GradStats)> {
        self.core.guarded(|| self.gradient_gpu(head, batch))
    }

    /// [`AdapterMath::adam_step`] through a shared reference to the math.
    pub(super) fn adam_shared(&self, head: &mut LoraHead, adam: &mut AdamState, grad: &HeadGrad, params: &AdamParams) -> Result<()> {
        self.core.guarded(|| self.adam_gpu(head, adam, grad, params))
    }
}

impl AdapterMath for GpuMath {
    fn add_delta(&self, head: &LoraHead, hidden: &[f32], logits: &mut [f32]) -> Result<()> {
        if logits.len() != head.vocab_size() {
            return Err(Error::InvalidArgument(format!("logits have {} values, the adapter's vocabulary is {}", logits.len(), head.vocab_size())));
        }
        if hidden.len() != head.hidden_size() {
            return Err(Error::InvalidArgument(format!("hidden state has {} values, the adapter expects {}", hidden.len(), head.hidden_size())));
        }
        if hidden.iter().any(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument("hidden state holds a non-finite value".into()));
        }
        if head.is_identity() {
            return Ok(());
        }
        let e = self.core.guarded(|| self.deltas(head, hidden, 1))?;
        for (&v, &x) in head.active_rows().iter().zip(&e) {
            if x != 0.0 {
                logits[v as usize] += x;
            }
        }
        Ok(())
    }

    fn add_delta_batch(&self, head: &LoraHead, hidden: ArrayView2<f32>, mut logits: ArrayViewMut2<f32>) -> Result<()> {
        let (n, d, vocab) = (hidden.nrows(), head.hidden_size(), head.vocab_size());
        if n != logits.nrows() {
            return Err(Error::InvalidArgument(format!("{n} hidden states but {} logit rows", logits.nrows())));
        }
        if hidden.ncols() != d {
            return Err(Error::InvalidArgument(format!("hidden state has {} values, the adapter expects {d}", hidden.ncols())));
        }
        if logits.ncols() != vocab {
            return Err(Error::InvalidArgument(format!("logits have {} values, the adapter's vocabulary is {vocab}", logits.ncols())));
        }
        if hidden.iter().any(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument("hidden state holds a non-finite value".into()));
        }
        if head.is_identity() || n == 0 {
            return Ok(());
        }
        let flat: Vec<f32> = hidden.iter().copied().collect();
        let e = self.core.guarded(|| self.deltas(head, &flat, n))?;
        let n_act = head.active_rows().len();
        for (t, mut z) in logits.outer_iter_mut().enumerate() {
            for (&v, &x) in head.active_rows().iter().zip(&e[t * n_act..(t + 1) * n_act]) {
                if x != 0.0 {
                    z[v as usize] += x;
                }
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, head: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats], out: &mut Vec<TokenEval>) -> Result<()> {
        *out = self.evaluate_shared(head, tokens, base)?;
        Ok(())
    }

    fn step_kl(&mut self, old: &LoraHead, new: &LoraHead, tokens: &[TokenRecord], base: &[BaseStats]) -> Result<f64> {
        self.step_kl_shared(old, new, tokens, base)
    }

    fn gradient(&mut self, head: &LoraHead, batch: &[GradEpisode<'_>], grad: &mut HeadGrad) -> Result<GradStats> {
        let (g, stats) = self.gradient_shared(head, batch)?;
        *grad = g;
        Ok(stats)
    }

    fn adam_step(&mut self, head: &mut LoraHead, adam: &mut AdamState, grad: &HeadGrad, params: &AdamParams) -> Result<()> {
        self.adam_shared(head, adam, grad, params)
    }
}
