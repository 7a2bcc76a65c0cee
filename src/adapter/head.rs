//! The adapter's parameters: the LoRA factors on the LM head and the value head.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest supported rank; the logits hook keeps `u = A h` on the stack up to this size.
pub const MAX_RANK: usize = 64;

/// The largest `top_k` a configuration may ask for, whatever the model (2^20). A runtime also caps
/// it at its model's vocabulary size (`Runtime::new`, and imported adapters): there are no more
/// rows than that to update. (The math itself treats a larger `top_k` as the whole vocabulary.)
pub const MAX_TOP_K: usize = 1 << 20;

/// Shape and initialisation of a head adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// The rank `r` of the update `B A` (1 ..= [`MAX_RANK`]).
    pub rank: usize,
    /// LoRA's `alpha`; the update is scaled by `s = alpha / r`.
    pub alpha: f32,
    /// How many of the most probable tokens of each position get their row of `B` updated (besides
    /// the sampled token); the sparse Adam step touches no other row. 1 ..= [`MAX_TOP_K`]; a
    /// runtime also refuses more than its model's vocabulary size.
    pub top_k: usize,
    /// Seed of the random initialisation of `A`.
    pub seed: u64,
}

/// A shared adapter is the generation loop's logits hook: it adds its change to each position's
/// logits.
impl crate::generate::LogitsHook for &LoraHead {
    fn apply(&mut self, hidden: &[f32], logits: &mut [f32]) -> Result<()> {
        self.add_delta(hidden, logits)
    }
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { rank: 8, alpha: 32.0, top_k: 256, seed: 0 }
    }
}

impl LoraConfig {
    /// Checks that every value is usable.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 || self.rank > MAX_RANK {
            return Err(Error::Config(format!("adapter rank must be in 1..={MAX_RANK}, got {}", self.rank)));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(Error::Config(format!("adapter alpha must be finite and > 0, got {}", self.alpha)));
        }
        if self.top_k == 0 || self.top_k > MAX_TOP_K {
            return Err(Error::Config(format!("learner.adapter.top_k must be in 1..={MAX_TOP_K}, got {}", self.top_k)));
        }
        Ok(())
    }
}

/// An adapter's parameters as plain data, for stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadParts {
    /// Hidden size `d`.
    pub hidden_size: u32,
    /// Vocabulary size `V`.
    pub vocab_size: u32,
    /// `A`, `r x d` row-major.
    pub a: Vec<f32>,
    /// The active rows of `B`, ascending (all others are zero).
    pub b_rows: Vec<u32>,
    /// Those rows' values, `r` each.
    pub b: Vec<f32>,
    /// The value head's weights.
    pub value_w: Vec<f32>,
    /// The value head's bias.
    pub value_b: f32,
}

/// A LoRA adapter on the LM head plus a linear value head, both reading the final hidden state.
///
/// `z = z0 + s * B (A h)` with `A: r x d`, `B: V x r`, `s = alpha / r`, and `V(h) = w . h + b`.
/// Rows of `B` that were never updated are exactly zero and are not *active*; the logits hook only
/// touches active rows, so a fresh adapter leaves the base logits bit for bit unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraHead {
    config: LoraConfig,
    scale: f32,
    a: Array2<f32>,
    b: Array2<f32>,
    active: Vec<u32>,
    is_active: Vec<bool>,
    value_w: Array1<f32>,
    value_b: f32,
}

impl LoraHead {
    /// A fresh adapter: `A` uniform in `+-1/sqrt(d)` from the seed (as LoRA's Kaiming init), `B`
    /// zero, the value head zero.
    pub fn new(config: &LoraConfig, hidden_size: usize, vocab_size: usize) -> Result<LoraHead> {
        config.validate()?;
        if hidden_size == 0 || vocab_size == 0 || vocab_size > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!("adapter shape d = {hidden_size}, V = {vocab_size} is unusable")));
        }
        let r = config.rank;
        let bound = 1.0 / (hidden_size as f32).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let a = Array2::from_shape_fn((r, hidden_size), |_| rng.random_range(-bound..bound));
        Ok(LoraHead {
            config: config.clone(),
            scale: config.alpha / r as f32,
            a,
            b: Array2::zeros((vocab_size, r)),
            active: Vec::new(),
            is_active: vec![false; vocab_size],
            value_w: Array1::zeros(hidden_size),
            value_b: 0.0,
        })
    }

    /// Rebuilds an adapter from plain data under `config`'s rank, checking every size.
    pub fn from_parts(config: &LoraConfig, parts: &HeadParts) -> Result<LoraHead> {
        let (d, vocab) = (parts.hidden_size as usize, parts.vocab_size as usize);
        let r = config.rank;
        let bad = |what: &str| Error::InvalidArgument(format!("adapter parts: {what}"));
        // `A` and the value head are dense: their data must match `d` before anything of that
        // size is allocated (a stated `d` far beyond the data would otherwise be allocated first).
        if Some(parts.a.len()) != r.checked_mul(d) || parts.value_w.len() != d {
            return Err(bad("A or the value head does not match the hidden size"));
        }
        let mut head = LoraHead::new(config, d, vocab)?;
        head.a = Array2::from_shape_vec((r, d), parts.a.clone()).map_err(|_| bad("A has the wrong size"))?;
        if parts.value_w.len() != d {
            return Err(bad("the value head has the wrong size"));
        }
        head.value_w = Array1::from(parts.value_w.clone());
        head.value_b = parts.value_b;
        let rows = &parts.b_rows;
        if parts.b.len() != rows.len() * r {
            return Err(bad("B's values do not match its row list"));
        }
        if rows.windows(2).any(|w| w[0] >= w[1]) || rows.last().is_some_and(|&v| v as usize >= vocab) {
            return Err(bad("B's row list is not strictly ascending within the vocabulary"));
        }
        for (i, &v) in rows.iter().enumerate() {
            head.b.row_mut(v as usize).assign(&ndarray::ArrayView1::from(&parts.b[i * r..(i + 1) * r]));
        }
        head.activate_rows(rows);
        if !head.all_finite() {
            return Err(bad("non-finite values"));
        }
        Ok(head)
    }

    /// The parameters as plain data (only active rows of `B`).
    pub fn to_parts(&self) -> HeadParts {
        let rows = self.active.clone();
        HeadParts {
            hidden_size: self.hidden_size() as u32,
            vocab_size: self.vocab_size() as u32,
            a: self.a.iter().copied().collect(),
            b: rows.iter().flat_map(|&v| self.b.row(v as usize).to_vec()).collect(),
            b_rows: rows,
            value_w: self.value_w.to_vec(),
            value_b: self.value_b,
        }
    }

    /// The configuration the adapter was made with.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.config.rank
    }

    /// The scale `s = alpha / r`.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The hidden size `d`.
    pub fn hidden_size(&self) -> usize {
        self.a.ncols()
    }

    /// The vocabulary size `V`.
    pub fn vocab_size(&self) -> usize {
        self.b.nrows()
    }

    /// `A`, `r x d`.
    pub fn a(&self) -> &Array2<f32> {
        &self.a
    }

    /// `B`, `V x r` (inactive rows are zero).
    pub fn b(&self) -> &Array2<f32> {
        &self.b
    }

    /// The value head's weights `w`.
    pub fn value_w(&self) -> &Array1<f32> {
        &self.value_w
    }

    /// The value head's bias `b`.
    pub fn value_b(&self) -> f32 {
        self.value_b
    }

    /// The rows of `B` that have ever been updated, ascending; all others are zero.
    pub fn active_rows(&self) -> &[u32] {
        &self.active
    }

    /// Whether row `v` of `B` is active.
    pub fn is_row_active(&self, v: usize) -> bool {
        self.is_active.get(v).copied().unwrap_or(false)
    }

    /// Whether the adapter is the identity (no active row of `B`).
    pub fn is_identity(&self) -> bool {
        self.active.is_empty()
    }

    /// Whether every parameter is finite.
    pub fn all_finite(&self) -> bool {
        self.a.iter().all(|x| x.is_finite())
            && self.active.iter().all(|&v| self.b.row(v as usize).iter().all(|x| x.is_finite()))
            && self.value_w.iter().all(|x| x.is_finite())
            && self.value_b.is_finite()
    }

    /// Writes `u = A h` into `u` (`r` values).
    pub fn project(&self, hidden: &[f32], u: &mut [f32]) -> Result<()> {
        self.check_hidden(hidden)?;
        for (j, uj) in u.iter_mut().enumerate().take(self.rank()) {
            *uj = dot_f32(self.a.row(j).as_slice().unwrap_or(&[]), hidden);
        }
        Ok(())
    }

    /// Adds `s * B (A h)` to `logits` (`V` values) in place, without allocating. Only active rows are
    /// touched, and a zero change is never added, so logits of an identity adapter stay bit for bit.
    pub fn add_delta(&self, hidden: &[f32], logits: &mut [f32]) -> Result<()> {
        if logits.len() != self.vocab_size() {
            return Err(Error::InvalidArgument(format!("logits have {} values, the adapter's vocabulary is {}", logits.len(), self.vocab_size())));
        }
        self.check_hidden(hidden)?;
        if self.active.is_empty() {
            return Ok(());
        }
        if hidden.iter().any(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument("hidden state holds a non-finite value".into()));
        }
        let r = self.rank();
        let mut u = [0.0f32; MAX_RANK];
        self.project(hidden, &mut u[..r])?;
        let b = self.b.as_slice().unwrap_or(&[]);
        if self.active.len() * 8 < self.vocab_size() {
            for &v in &self.active {
                let row = &b[v as usize * r..(v as usize + 1) * r];
                let delta = self.scale * dot_f32(row, &u[..r]);
                if delta != 0.0 {
                    logits[v as usize] += delta;
                }
            }
            return Ok(());
        }
        // Most rows are active: one pass over all of B. Inactive rows are zero, so their change is
        // exactly (+-)0 and is skipped like any zero change.
        match r {
            1 => add_rows::<1>(b, &u, self.scale, logits),
            2 => add_rows::<2>(b, &u, self.scale, logits),
            4 => add_rows::<4>(b, &u, self.scale, logits),
            8 => add_rows::<8>(b, &u, self.scale, logits),
            16 => add_rows::<16>(b, &u, self.scale, logits),
            _ => {
                for (row, z) in b.chunks_exact(r).zip(logits.iter_mut()) {
                    let delta = self.scale * dot_f32(row, &u[..r]);
                    if delta != 0.0 {
                        *z += delta;
                    }
                }
            }
        }
        Ok(())
    }

    /// [`LoraHead::add_delta`] for `n` positions: `hidden` is `n x d`, `logits` is `n x V`.
    pub fn add_delta_batch(&self, hidden: ArrayView2<f32>, mut logits: ArrayViewMut2<f32>) -> Result<()> {
        if hidden.nrows() != logits.nrows() {
            return Err(Error::InvalidArgument(format!("{} hidden states but {} logit rows", hidden.nrows(), logits.nrows())));
        }
        let mut h_buf = Vec::new();
        for (h, mut z) in hidden.outer_iter().zip(logits.outer_iter_mut()) {
            let h = match h.as_slice() {
                Some(s) => s,
                None => {
                    h_buf.clear();
                    h_buf.extend(h.iter().copied());
                    &h_buf[..]
                }
            };
            match z.as_slice_mut() {
                Some(s) => self.add_delta(h, s)?,
                None => {
                    let mut tmp = z.to_vec();
                    self.add_delta(h, &mut tmp)?;
                    z.assign(&ndarray::ArrayView1::from(&tmp[..]));
                }
            }
        }
        Ok(())
    }

    /// The change `s * B (A h)` for every token (allocates `V` values; the hook uses
    /// [`LoraHead::add_delta`]).
    pub fn delta_logits(&self, hidden: &[f32]) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.vocab_size()];
        self.add_delta(hidden, &mut out)?;
        Ok(out)
    }

    /// The value head's estimate `w . h + b`.
    pub fn value(&self, hidden: &[f32]) -> Result<f32> {
        self.check_hidden(hidden)?;
        Ok(dot_f32(self.value_w.as_slice().unwrap_or(&[]), hidden) + self.value_b)
    }

    /// Replaces row `v` of `B` and marks it active (for tests, tools and stores).
    pub fn set_b_row(&mut self, v: usize, row: &[f32]) -> Result<()> {
        if v >= self.vocab_size() || row.len() != self.rank() {
            return Err(Error::InvalidArgument(format!("row {v} with {} values does not fit B", row.len())));
        }
        self.b.row_mut(v).assign(&ndarray::ArrayView1::from(row));
        self.activate_rows(&[v as u32]);
        Ok(())
    }

    /// Replaces `A` (`r x d`).
    pub fn set_a(&mut self, a: Array2<f32>) -> Result<()> {
        if a.dim() != self.a.dim() {
            return Err(Error::InvalidArgument(format!("A must be {:?}, got {:?}", self.a.dim(), a.dim())));
        }
        self.a = a.as_standard_layout().into_owned();
        Ok(())
    }

    /// Replaces the value head.
    pub fn set_value_head(&mut self, w: &[f32], b: f32) -> Result<()> {
        if w.len() != self.hidden_size() {
            return Err(Error::InvalidArgument(format!("value head needs {} weights, got {}", self.hidden_size(), w.len())));
        }
        self.value_w.assign(&ndarray::ArrayView1::from(w));
        self.value_b = b;
        Ok(())
    }

    /// `old + alpha (new - old)` for every parameter (a shrunk step); the active rows are `new`'s.
    pub fn interpolate(old: &LoraHead, new: &LoraHead, alpha: f32) -> Result<LoraHead> {
        if old.a.dim() != new.a.dim() || old.b.dim() != new.b.dim() {
            return Err(Error::InvalidArgument("cannot interpolate adapters of different shapes".into()));
        }
        let mut out = new.clone();
        out.a.zip_mut_with(&old.a, |n, &o| *n = o + alpha * (*n - o));
        for &v in &new.active {
            let v = v as usize;
            let mut row = out.b.row_mut(v);
            row.zip_mut_with(&old.b.row(v), |n, &o| *n = o + alpha * (*n - o));
        }
        out.value_w.zip_mut_with(&old.value_w, |n, &o| *n = o + alpha * (*n - o));
        out.value_b = old.value_b + alpha * (new.value_b - old.value_b);
        Ok(out)
    }

    /// The same adapter with its output factor `B` scaled by `s`: the change of the logits scales
    /// by `s`, so the KL to the base shrinks with it (about as `s^2` for small changes).
    pub fn with_b_scaled(&self, s: f32) -> LoraHead {
        let mut out = self.clone();
        out.b.mapv_inplace(|x| x * s);
        out
    }

    pub(crate) fn a_mut(&mut self) -> &mut Array2<f32> {
        &mut self.a
    }

    pub(crate) fn b_mut(&mut self) -> &mut Array2<f32> {
        &mut self.b
    }

    pub(crate) fn value_mut(&mut self) -> (&mut Array1<f32>, &mut f32) {
        (&mut self.value_w, &mut self.value_b)
    }

    /// Marks the rows in `rows` (ascending) active, keeping the active list sorted.
    pub(crate) fn activate_rows(&mut self, rows: &[u32]) {
        let fresh: Vec<u32> = rows.iter().copied().filter(|&v| !self.is_active[v as usize]).collect();
        if fresh.is_empty() {
            return;
        }
        for &v in &fresh {
            self.is_active[v as usize] = true;
        }
        if fresh.len() * 8 > self.is_active.len() {
            // Many new rows: rebuild the list from the flags in one sweep.
            self.active = (0..self.is_active.len() as u32).filter(|&v| self.is_active[v as usize]).collect();
        } else {
            self.active.extend_from_slice(&fresh);
            self.active.sort_unstable();
            self.active.dedup();
        }
    }

    fn check_hidden(&self, hidden: &[f32]) -> Result<()> {
        if hidden.len() != self.hidden_size() {
            return Err(Error::InvalidArgument(format!("hidden state has {} values, the adapter expects {}", hidden.len(), self.hidden_size())));
        }
        Ok(())
    }
}

/// `logits[v] += s * B_v . u` for every row of a rank-`R` `B`, skipping zero changes.
fn add_rows<const R: usize>(b: &[f32], u: &[f32; MAX_RANK], scale: f32, logits: &mut [f32]) {
    let mut uu = [0.0f32; R];
    uu.copy_from_slice(&u[..R]);
    for (row, z) in b.chunks_exact(R).zip(logits.iter_mut()) {
        let mut acc = 0.0f32;
        for j in 0..R {
            acc += row[j] * uu[j];
        }
        let delta = scale * acc;
        if delta != 0.0 {
            *z += delta;
        }
    }
}

/// A dot product written so that the compiler vectorises it (eight independent accumulators).
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for k in 0..8 {
            acc[k] += a[c * 8 + k] * b[c * 8 + k];
        }
    }
    let mut tail = 0.0f32;
    for i in chunks * 8..n {
        tail += a[i] * b[i];
    }
    acc.iter().sum::<f32>() + tail
}
