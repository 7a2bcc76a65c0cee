//! A2C's critic fitted in closed form: ridge regression of the value targets on the value head's
//! features `x = [h; 1]` over the recent tokens (least-squares Monte Carlo policy evaluation, the
//! `lambda = 1` case of LSTD; Boyan 2002), instead of Adam steps on one reply's targets at a time.
//!
//! The statistics `S = sum rho^age x x^T` and `r = sum rho^age x G` forget with `rho = exp(-1 /
//! window)` per token, so they describe about the last `window` tokens. The fit is
//! `theta = (S + lambda I)^-1 r` with `lambda = ridge * trace(S) / (d + 1)`: the penalty pulls toward
//! 0, which for A2C's residual critic is the moving-average baseline, so with little evidence the
//! critic predicts what the baseline does. The statistics hold `(d + 1)^2` values (2.7 MB for
//! SmolLM2-135M's d = 576) and are not persisted: after a restart the head keeps its last fit until
//! new replies are learned, and the fit then starts from those.

use ndarray::{Array1, Array2, ArrayView2};

/// The critic's sufficient statistics.
#[derive(Debug, Clone)]
pub(crate) struct CriticFit {
    gram: Array2<f64>,
    rhs: Array1<f64>,
}

impl CriticFit {
    /// Empty statistics for hidden states of `d` values.
    pub fn new(d: usize) -> CriticFit {
        CriticFit { gram: Array2::zeros((d + 1, d + 1)), rhs: Array1::zeros(d + 1) }
    }

    /// The hidden size the statistics are for.
    pub fn hidden_size(&self) -> usize {
        self.rhs.len() - 1
    }

    /// Adds one reply's tokens: `hidden` is `n x d`, `targets` their `n` value targets. The older
    /// statistics first decay by `rho^n`.
    pub fn add(&mut self, hidden: ArrayView2<'_, f32>, targets: &[f64], window: usize) {
        let (n, d) = hidden.dim();
        if n == 0 || d != self.hidden_size() || targets.len() != n {
            return;
        }
        let decay = (-(n as f64) / window.max(1) as f64).exp();
        self.gram *= decay;
        self.rhs *= decay;
        let mut x = Array2::<f64>::ones((n, d + 1));
        x.slice_mut(ndarray::s![.., ..d]).zip_mut_with(&hidden, |a, &b| *a = f64::from(b));
        ndarray::linalg::general_mat_mul(1.0, &x.t(), &x, 1.0, &mut self.gram);
        let y = Array1::from(targets.to_vec());
        self.rhs.scaled_add(1.0, &x.t().dot(&y));
    }

    /// The ridge solution `(w, b)` by conjugate gradients from `start` (the head's current
    /// weights and bias), or `None` when nothing was added.
    pub fn solve(&self, ridge: f64, start: (&[f32], f32)) -> Option<(Vec<f32>, f32)> {
        let m = self.rhs.len();
        let trace: f64 = self.gram.diag().sum();
        if trace <= 0.0 || !trace.is_finite() {
            return None;
        }
        let lambda = ridge * trace / m as f64 + 1e-12;
        let apply = |v: &Array1<f64>| -> Array1<f64> {
            let mut out = self.gram.dot(v);
            out.scaled_add(lambda, v);
            out
        };
        let mut theta: Array1<f64> = start.0.iter().map(|&w| f64::from(w)).chain(std::iter::once(f64::from(start.1))).collect();
        if theta.len() != m || theta.iter().any(|x| !x.is_finite()) {
            theta = Array1::zeros(m);
        }
        let mut res = &self.rhs - &apply(&theta);
        let mut dir = res.clone();
        let mut rr = res.dot(&res);
        let tol = 1e-20 * self.rhs.dot(&self.rhs).max(1e-30);
        for _ in 0..(4 * m).min(400) {
            if rr <= tol {
                break;
            }
            let ad = apply(&dir);
            let alpha = rr / dir.dot(&ad);
            if !alpha.is_finite() {
                break;
            }
            theta.scaled_add(alpha, &dir);
            res.scaled_add(-alpha, &ad);
            let next = res.dot(&res);
            dir = &res + &(&dir * (next / rr));
            rr = next;
        }
        if theta.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let b = theta[m - 1] as f32;
        let w = theta.slice(ndarray::s![..m - 1]).iter().map(|&x| x as f32).collect();
        Some((w, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fit against the normal equations solved by Gaussian elimination.
    #[test]
    fn solves_the_ridge_normal_equations() {
        let (n, d) = (40, 5);
        let h = Array2::from_shape_fn((n, d), |(i, j)| ((i * 7 + j * 13) % 11) as f32 / 5.0 - 1.0 + if j == 0 { (i % 2) as f32 } else { 0.0 });
        let y: Vec<f64> = (0..n).map(|i| if i % 2 == 0 { -1.0 } else { 1.0 } + 0.1 * (i % 3) as f64).collect();
        let mut fit = CriticFit::new(d);
        fit.add(h.view(), &y, 1_000_000_000);
        let (w, b) = fit.solve(0.1, (&[0.0; 5], 0.0)).unwrap();
        // Reference: X = [h 1], (X^T X + lambda I) theta = X^T y, lambda = 0.1 trace / (d + 1).
        let m = d + 1;
        let x = |i: usize, j: usize| if j < d { f64::from(h[[i, j]]) } else { 1.0 };
        let mut a = vec![vec![0.0; m + 1]; m];
        for (j, row) in a.iter_mut().enumerate() {
            for k in 0..m {
                row[k] = (0..n).map(|i| x(i, j) * x(i, k)).sum();
            }
            row[m] = (0..n).map(|i| x(i, j) * y[i]).sum();
        }
        let trace: f64 = (0..m).map(|j| a[j][j]).sum();
        (0..m).for_each(|j| a[j][j] += 0.1 * trace / m as f64);
        for c in 0..m {
            let p = (c..m).max_by(|&i, &k| a[i][c].abs().total_cmp(&a[k][c].abs())).unwrap();
            a.swap(c, p);
            for i in 0..m {
                if i != c {
                    let f = a[i][c] / a[c][c];
                    for k in c..=m {
                        a[i][k] -= f * a[c][k];
                    }
                }
            }
        }
        let theta: Vec<f64> = (0..m).map(|j| a[j][m] / a[j][j]).collect();
        for j in 0..d {
            assert!((f64::from(w[j]) - theta[j]).abs() < 1e-5, "w[{j}] {} against {}", w[j], theta[j]);
        }
        assert!((f64::from(b) - theta[d]).abs() < 1e-5);
    }

    #[test]
    fn forgets_old_tokens_and_ignores_mismatched_input() {
        let d = 2;
        let mut fit = CriticFit::new(d);
        assert!(fit.solve(0.1, (&[0.0; 2], 0.0)).is_none());
        let h = Array2::from_elem((4, d), 1.0f32);
        fit.add(h.view(), &[1.0; 4], 4);
        let before = fit.gram[[0, 0]];
        // A window of 4 tokens: 4 more tokens weigh the first four by e^-1.
        fit.add(h.view(), &[1.0; 4], 4);
        assert!((fit.gram[[0, 0]] - (before * (-1.0f64).exp() + 4.0)).abs() < 1e-9);
        fit.add(h.view(), &[1.0; 3], 4);
        assert!((fit.gram[[0, 0]] - (before * (-1.0f64).exp() + 4.0)).abs() < 1e-9);
    }
}
