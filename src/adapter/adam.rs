//! Adam with sparse rows for `B`: only rows with a gradient move, each with its own step count for
//! the bias correction (a row first updated late takes a first step of size `lr`, as Adam intends).

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::head::LoraHead;
use super::math::HeadGrad;
use crate::error::{Error, Result};

/// Hyper-parameters of one Adam step. No weight decay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamParams {
    /// Learning rate of the policy parameters (`A`, `B`).
    pub lr: f64,
    /// The learning rate of `A` (LoRA+: lower than `B`'s, since every row's change flows through `A`).
    pub a_lr: f64,
    /// Learning rate of the value head.
    pub value_lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// The denominator's floor.
    pub eps: f64,
}

impl Default for AdamParams {
    fn default() -> Self {
        AdamParams { lr: 5e-4, a_lr: 5e-4, value_lr: 5e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8 }
    }
}

/// Adam's moments and step counts for one [`LoraHead`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdamState {
    pub(crate) a_m: Array2<f32>,
    pub(crate) a_v: Array2<f32>,
    pub(crate) a_step: u64,
    pub(crate) b_m: Array2<f32>,
    pub(crate) b_v: Array2<f32>,
    pub(crate) b_steps: Vec<u32>,
    pub(crate) w_m: Vec<f32>,
    pub(crate) w_v: Vec<f32>,
    pub(crate) bias_m: f32,
    pub(crate) bias_v: f32,
    pub(crate) value_step: u64,
}

/// The moments of one row set, as plain data for a store.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AdamParts {
    /// First and second moments of `A`, `r x d` row-major.
    pub a_m: Vec<f32>,
    /// Second moment of `A`.
    pub a_v: Vec<f32>,
    /// Steps taken on `A`.
    pub a_step: u64,
    /// The rows of `B` with optimiser state, ascending.
    pub b_rows: Vec<u32>,
    /// First moments of those rows, `r` values each.
    pub b_m: Vec<f32>,
    /// Second moments of those rows.
    pub b_v: Vec<f32>,
    /// Steps taken on each of those rows.
    pub b_steps: Vec<u32>,
    /// First moment of the value head's weights.
    pub w_m: Vec<f32>,
    /// Second moment of the value head's weights.
    pub w_v: Vec<f32>,
    /// First moment of the value head's bias.
    pub bias_m: f32,
    /// Second moment of the value head's bias.
    pub bias_v: f32,
    /// Steps taken on the value head.
    pub value_step: u64,
}

impl AdamState {
    /// Zero state for `head`.
    pub fn new(head: &LoraHead) -> AdamState {
        let (r, d, v) = (head.rank(), head.hidden_size(), head.vocab_size());
        AdamState {
            a_m: Array2::zeros((r, d)),
            a_v: Array2::zeros((r, d)),
            a_step: 0,
            b_m: Array2::zeros((v, r)),
            b_v: Array2::zeros((v, r)),
            b_steps: vec![0; v],
            w_m: vec![0.0; d],
            w_v: vec![0.0; d],
            bias_m: 0.0,
            bias_v: 0.0,
            value_step: 0,
        }
    }

    /// Steps taken on `A` (one per policy update).
    pub fn steps(&self) -> u64 {
        self.a_step
    }

    /// The state as plain data; rows of `B` that were never stepped are left out.
    pub fn to_parts(&self) -> AdamParts {
        let rows: Vec<u32> = (0..self.b_steps.len() as u32).filter(|&v| self.b_steps[v as usize] > 0).collect();
        let take = |m: &Array2<f32>| rows.iter().flat_map(|&v| m.row(v as usize).to_vec()).collect::<Vec<f32>>();
        AdamParts {
            a_m: self.a_m.iter().copied().collect(),
            a_v: self.a_v.iter().copied().collect(),
            a_step: self.a_step,
            b_m: take(&self.b_m),
            b_v: take(&self.b_v),
            b_steps: rows.iter().map(|&v| self.b_steps[v as usize]).collect(),
            b_rows: rows,
            w_m: self.w_m.clone(),
            w_v: self.w_v.clone(),
            bias_m: self.bias_m,
            bias_v: self.bias_v,
            value_step: self.value_step,
        }
    }

    /// Rebuilds the state of `head` from plain data, checking every size.
    pub fn from_parts(head: &LoraHead, parts: &AdamParts) -> Result<AdamState> {
        let mut st = AdamState::new(head);
        let (r, d, vocab) = (head.rank(), head.hidden_size(), head.vocab_size());
        let bad = |what: &str| Error::InvalidArgument(format!("optimiser state: {what}"));
        if parts.a_m.len() != r * d || parts.a_v.len() != r * d || parts.w_m.len() != d || parts.w_v.len() != d {
            return Err(bad("moments of A or of the value head have the wrong size"));
        }
        let n = parts.b_rows.len();
        if parts.b_m.len() != n * r || parts.b_v.len() != n * r || parts.b_steps.len() != n {
            return Err(bad("moments of B do not match its row list"));
        }
        if parts.b_rows.windows(2).any(|w| w[0] >= w[1]) || parts.b_rows.last().is_some_and(|&v| v as usize >= vocab) {
            return Err(bad("B's row list is not strictly ascending within the vocabulary"));
        }
        st.a_m = Array2::from_shape_vec((r, d), parts.a_m.clone()).map_err(|_| bad("A's first moment"))?;
        st.a_v = Array2::from_shape_vec((r, d), parts.a_v.clone()).map_err(|_| bad("A's second moment"))?;
        st.a_step = parts.a_step;
        for (i, &v) in parts.b_rows.iter().enumerate() {
            let v = v as usize;
            st.b_m.row_mut(v).assign(&ndarray::ArrayView1::from(&parts.b_m[i * r..(i + 1) * r]));
            st.b_v.row_mut(v).assign(&ndarray::ArrayView1::from(&parts.b_v[i * r..(i + 1) * r]));
            st.b_steps[v] = parts.b_steps[i];
        }
        st.w_m = parts.w_m.clone();
        st.w_v = parts.w_v.clone();
        st.bias_m = parts.bias_m;
        st.bias_v = parts.bias_v;
        st.value_step = parts.value_step;
        let all = st.a_m.iter().chain(st.a_v.iter()).chain(&parts.b_m).chain(&parts.b_v).chain(&st.w_m).chain(&st.w_v);
        if !all.copied().chain([st.bias_m, st.bias_v]).all(f32::is_finite) || st.a_v.iter().chain(&parts.b_v).any(|&x| x < 0.0) {
            return Err(bad("non-finite or negative moments"));
        }
        Ok(st)
    }
}

/// Adam's bias corrections `(1 - beta1^t, 1 - beta2^t)` after `t` steps.
fn corrections(t: u64, p: &AdamParams) -> (f64, f64) {
    let t = t.min(i32::MAX as u64) as i32;
    (1.0 - p.beta1.powi(t), 1.0 - p.beta2.powi(t))
}

/// One Adam update of a single value in place, with the step's bias corrections `c`.
#[inline]
fn adam_one(x: &mut f32, m: &mut f32, v: &mut f32, g: f64, c: (f64, f64), lr: f64, p: &AdamParams) {
    let mm = p.beta1 * f64::from(*m) + (1.0 - p.beta1) * g;
    let vv = p.beta2 * f64::from(*v) + (1.0 - p.beta2) * g * g;
    *m = mm as f32;
    *v = vv as f32;
    *x = (f64::from(*x) - lr * (mm / c.0) / ((vv / c.1).sqrt() + p.eps)) as f32;
}

/// The step itself, shared by every [`super::AdapterMath`] implementation on the CPU.
pub(crate) fn adam_step(head: &mut LoraHead, st: &mut AdamState, grad: &HeadGrad, p: &AdamParams) -> Result<()> {
    let (r, d) = (head.rank(), head.hidden_size());
    if grad.a.dim() != (r, d) || grad.b.dim() != (grad.rows.len(), r) || grad.value_w.len() != d || st.a_m.dim() != (r, d) || st.b_steps.len() != head.vocab_size() {
        return Err(Error::Learning("gradient, optimiser state and adapter shapes disagree".into()));
    }
    if grad.rows.windows(2).any(|w| w[0] >= w[1]) || grad.rows.last().is_some_and(|&v| v as usize >= head.vocab_size()) {
        return Err(Error::Learning("gradient rows are not strictly ascending within the vocabulary".into()));
    }
    if !grad.is_finite() {
        return Err(Error::Learning("non-finite gradient".into()));
    }
    st.a_step += 1;
    let c = corrections(st.a_step, p);
    for ((x, g), (m, v)) in head.a_mut().iter_mut().zip(grad.a.iter()).zip(st.a_m.iter_mut().zip(st.a_v.iter_mut())) {
        adam_one(x, m, v, *g, c, p.a_lr, p);
    }
    let (b, bm, bv) = (head.b_mut().as_slice_mut(), st.b_m.as_slice_mut(), st.b_v.as_slice_mut());
    let (Some(b), Some(bm), Some(bv), Some(gb)) = (b, bm, bv, grad.b.as_slice()) else {
        return Err(Error::Learning("adapter or optimiser arrays are not contiguous".into()));
    };
    for (i, &row) in grad.rows.iter().enumerate() {
        let row = row as usize;
        st.b_steps[row] = st.b_steps[row].saturating_add(1);
        let c = corrections(u64::from(st.b_steps[row]), p);
        let span = row * r..(row + 1) * r;
        for (((x, m), v), g) in b[span.clone()].iter_mut().zip(&mut bm[span.clone()]).zip(&mut bv[span]).zip(&gb[i * r..(i + 1) * r]) {
            adam_one(x, m, v, *g, c, p.lr, p);
        }
    }
    head.activate_rows(&grad.rows);
    if grad.has_value {
        st.value_step += 1;
        let c = corrections(st.value_step, p);
        let (w, bias) = head.value_mut();
        for (k, x) in w.iter_mut().enumerate() {
            adam_one(x, &mut st.w_m[k], &mut st.w_v[k], grad.value_w[k], c, p.value_lr, p);
        }
        adam_one(bias, &mut st.bias_m, &mut st.bias_v, grad.value_b, c, p.value_lr, p);
    }
    Ok(())
}
