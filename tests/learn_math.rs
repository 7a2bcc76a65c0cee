//! The adapter math against a dense f64 reference and finite differences.

mod learn_support;

use attune::adapter::reference::{self, DenseParams};
use attune::adapter::{AdamParams, AdamState, AdapterMath, BaseScratch, BaseStats, CpuMath, GradEpisode, HeadGrad, LoraConfig, LoraHead, Strategy};
use attune::generate::TokenRecord;
use learn_support::{assert_close, normal, rng, TinyLm};
use ndarray::Array2;
use rand::Rng;

/// An adapter with random `A` and random values in some rows of `B`.
fn random_head(lm: &TinyLm, rank: usize, top_k: usize, active: &[usize], seed: u64) -> LoraHead {
    let cfg = LoraConfig { rank, alpha: 2.0 * rank as f32, top_k, seed };
    let mut head = LoraHead::new(&cfg, lm.d, lm.vocab).unwrap();
    let mut r = rng(seed + 1);
    head.set_a(Array2::from_shape_fn((rank, lm.d), |_| normal(&mut r) * 0.3)).unwrap();
    for &v in active {
        let row: Vec<f32> = (0..rank).map(|_| normal(&mut r) * 0.2).collect();
        head.set_b_row(v, &row).unwrap();
    }
    let w: Vec<f32> = (0..lm.d).map(|_| normal(&mut r) * 0.1).collect();
    head.set_value_head(&w, 0.3).unwrap();
    head
}

/// Records sampled from the adapted policy; every other token is truncated to the top 7.
fn records(lm: &TinyLm, head: &LoraHead, n: usize, tau: f32, seed: u64) -> Vec<TokenRecord> {
    let mut r = rng(seed);
    (0..n)
        .map(|i| {
            let h = lm.hidden(&mut r);
            lm.sample(head, h, tau, if i % 2 == 1 { Some(7) } else { None }, &mut r)
        })
        .collect()
}

fn stats(head: &LoraHead, recs: &[TokenRecord], tau: f32) -> Vec<BaseStats> {
    let mut s = BaseScratch::default();
    recs.iter().map(|r| BaseStats::compute(r, head.vocab_size(), tau, head.config().top_k, &mut s).unwrap()).collect()
}

/// Checks `grad` (of the loss `-J + value loss`) against central differences of the reference.
/// Tolerances `(rtol, atol)` of each path: the sparse one is f64, the dense one f32.
fn tol(strategy: Strategy) -> (f64, f64) {
    match strategy {
        Strategy::Dense => (2e-4, 2e-6),
        _ => (1e-5, 1e-8),
    }
}

const BOTH: [Strategy; 2] = [Strategy::Sparse, Strategy::Dense];

fn check_fd(head: &LoraHead, grad: &HeadGrad, loss: &dyn Fn(&DenseParams) -> f64, what: &str, (rtol, atol): (f64, f64)) {
    let p0 = DenseParams::from_head(head);
    let eps = 1e-5;
    let fd = |f: &dyn Fn(&mut DenseParams, f64)| {
        let (mut plus, mut minus) = (p0.clone(), p0.clone());
        f(&mut plus, eps);
        f(&mut minus, -eps);
        (loss(&plus) - loss(&minus)) / (2.0 * eps)
    };
    let mut checked = 0;
    for ((j, k), &g) in grad.a.indexed_iter() {
        let n = fd(&|p, e| p.a[[j, k]] += e);
        assert_close(&format!("{what}: dA[{j},{k}]"), g, n, rtol, atol);
        checked += 1;
    }
    for (i, &v) in grad.rows.iter().enumerate() {
        for j in 0..head.rank() {
            let n = fd(&|p, e| p.b[[v as usize, j]] += e);
            assert_close(&format!("{what}: dB[{v},{j}]"), grad.b[[i, j]], n, rtol, atol);
            checked += 1;
        }
    }
    for k in 0..head.hidden_size() {
        let n = fd(&|p, e| p.w[k] += e);
        assert_close(&format!("{what}: dw[{k}]"), grad.value_w[k], n, rtol, atol);
    }
    assert_close(&format!("{what}: db"), grad.value_b, fd(&|p, e| p.bias += e), rtol, atol);
    assert!(checked > 0);
}

struct Case {
    lm: TinyLm,
    head: LoraHead,
    recs: Vec<TokenRecord>,
    base: Vec<BaseStats>,
    tau: f32,
}

fn case(seed: u64, top_k: usize, tau: f32) -> Case {
    let lm = TinyLm::new(40, 6, 4.0, seed);
    let head = random_head(&lm, 3, top_k, &[1, 5, 9, 17, 30, 39], seed);
    let recs = records(&lm, &head, 6, tau, seed + 7);
    let base = stats(&head, &recs, tau);
    Case { lm, head, recs, base, tau }
}

/// Runs the fast gradient on one episode and checks it against finite differences of `-J` (and the
/// value loss when targets are given).
fn fd_case(c: &Case, weights: &[f64], beta: f64, targets: Option<&[f64]>, what: &str) {
    let mut rows = Vec::new();
    for strategy in BOTH {
        let what = format!("{what} ({strategy:?})");
        let mut math = CpuMath::with_strategy(strategy);
        let mut grad = HeadGrad::new(c.head.rank(), c.head.hidden_size());
        let ep = GradEpisode { tokens: &c.recs, base: &c.base, weights, beta, logit_weights: None, value_targets: targets };
        let st = math.gradient(&c.head, &[ep], &mut grad).unwrap();
        let p0 = DenseParams::from_head(&c.head);
        let tau = f64::from(c.tau);
        let (rtol, atol) = tol(strategy);
        assert_close(&format!("{what}: J"), st.policy_objective - beta * st.kl_sum, reference::objective(&p0, &c.recs, tau, weights, beta), rtol, atol);
        let loss = |p: &DenseParams| -reference::objective(p, &c.recs, tau, weights, beta) + targets.map_or(0.0, |g| reference::value_loss(p, &c.recs, g));
        check_fd(&c.head, &grad, &loss, &what, tol(strategy));
        assert_eq!(grad.has_value, targets.is_some());
        rows.push(grad.rows.clone());
    }
    // The sparse path ranks only its candidates (base top-k, active rows, the sampled token), so
    // its top-k of p may differ from the dense path's exact one in the last places.
    let common = rows[0].iter().filter(|v| rows[1].binary_search(v).is_ok()).count();
    assert!(common * 10 >= rows[0].len() * 9, "{what}: the paths chose very different rows");
    let _ = &c.lm;
}

#[test]
fn policy_term_matches_finite_differences() {
    let c = case(1, 5, 0.7);
    let mut r = rng(2);
    let w: Vec<f64> = (0..c.recs.len()).map(|_| r.random_range(-1.0..1.0)).collect();
    fd_case(&c, &w, 0.0, None, "policy");
}

#[test]
fn exact_kl_term_matches_finite_differences() {
    let c = case(3, 5, 0.7);
    fd_case(&c, &vec![0.0; c.recs.len()], 1.0, None, "kl");
}

#[test]
fn supervised_term_matches_finite_differences() {
    let c = case(4, 8, 1.0);
    fd_case(&c, &vec![1.0; c.recs.len()], 0.0, None, "supervised");
}

#[test]
fn value_loss_matches_finite_differences() {
    let c = case(5, 5, 0.7);
    let targets: Vec<f64> = (0..c.recs.len()).map(|t| 0.5 - 0.2 * t as f64).collect();
    fd_case(&c, &vec![0.0; c.recs.len()], 0.0, Some(&targets), "value");
}

#[test]
fn all_terms_together_with_every_row() {
    // top_k >= V: every row of every kept set gets its gradient, and all must match.
    let c = case(6, 64, 1.3);
    let mut r = rng(7);
    let w: Vec<f64> = (0..c.recs.len()).map(|_| r.random_range(-2.0..2.0)).collect();
    let targets: Vec<f64> = (0..c.recs.len()).map(|_| r.random_range(-1.0..1.0)).collect();
    fd_case(&c, &w, 0.3, Some(&targets), "combined");
    let mut math = CpuMath::new();
    let mut grad = HeadGrad::new(3, 6);
    let ep = GradEpisode { tokens: &c.recs, base: &c.base, weights: &w, beta: 0.3, logit_weights: None, value_targets: None };
    math.gradient(&c.head, &[ep], &mut grad).unwrap();
    assert_eq!(grad.rows.len(), 40, "with top_k >= V the whole (untruncated) vocabulary carries mass");
}

#[test]
fn zero_adapter_gradient_still_reaches_b_and_only_mass_rows() {
    let lm = TinyLm::new(50, 5, 4.0, 8);
    let head = LoraHead::new(&LoraConfig { rank: 2, alpha: 4.0, top_k: 3, seed: 1 }, 5, 50).unwrap();
    let recs = records(&lm, &head, 4, 0.7, 9);
    let base = stats(&head, &recs, 0.7);
    let w = vec![1.0, -1.0, 0.5, 2.0];
    for strategy in BOTH {
    let mut grad = HeadGrad::new(2, 5);
    let ep = GradEpisode { tokens: &recs, base: &base, weights: &w, beta: 0.1, logit_weights: None, value_targets: None };
    CpuMath::with_strategy(strategy).gradient(&head, &[ep], &mut grad).unwrap();
    // With B = 0, dA = 0 exactly, KL = 0, and only top-3 + sampled rows of each token move.
    assert!(grad.a.iter().all(|&x| x == 0.0));
    assert!(grad.rows.len() <= 4 * 4 && !grad.rows.is_empty());
    for rec in &recs {
        assert!(grad.rows.binary_search(&rec.token).is_ok());
    }
    let loss = |p: &DenseParams| -reference::objective(p, &recs, 0.7, &w, 0.1);
    check_fd(&head, &grad, &loss, "zero adapter", tol(strategy));
    }
}

#[test]
fn batches_of_episodes_add_up() {
    let c1 = case(10, 5, 0.7);
    let recs2 = records(&c1.lm, &c1.head, 3, 1.0, 11);
    let base2 = stats(&c1.head, &recs2, 1.0);
    let (w1, w2) = (vec![0.4; c1.recs.len()], vec![-0.7; recs2.len()]);
    let e1 = GradEpisode { tokens: &c1.recs, base: &c1.base, weights: &w1, beta: 0.2, logit_weights: None, value_targets: None };
    let e2 = GradEpisode { tokens: &recs2, base: &base2, weights: &w2, beta: 0.05, logit_weights: None, value_targets: None };
    for strategy in BOTH {
        let mut grad = HeadGrad::new(3, 6);
        CpuMath::with_strategy(strategy).gradient(&c1.head, &[e1, e2], &mut grad).unwrap();
        let loss = |p: &DenseParams| -reference::objective(p, &c1.recs, 0.7, &w1, 0.2) - reference::objective(p, &recs2, 1.0, &w2, 0.05);
        check_fd(&c1.head, &grad, &loss, "batch", tol(strategy));
    }
}

#[test]
fn evaluation_matches_the_dense_reference() {
    for seed in 20..24 {
        let c = case(seed, 5, 0.6 + 0.2 * (seed - 20) as f32);
        for strategy in BOTH {
        // The dense path is f32 throughout.
        let (rt, at) = if strategy == Strategy::Dense { (1e-5, 1e-6) } else { (1e-8, 1e-12) };
        let mut out = Vec::new();
        CpuMath::with_strategy(strategy).evaluate(&c.head, &c.recs, &c.base, &mut out).unwrap();
        let p0 = DenseParams::from_head(&c.head);
        for (rec, ev) in c.recs.iter().zip(&out) {
            let (p, q) = reference::policies(&p0, rec, f64::from(c.tau));
            let a = rec.token as usize;
            assert_close("log p[a]", ev.logp, p[a].ln(), rt, at);
            assert_close("log q[a]", ev.base_logp, q[a].ln(), rt, at);
            assert_close("KL", ev.kl, reference::kl(&p, &q), 10.0 * rt, at);
            assert_close("entropy", ev.entropy, reference::entropy(&p), rt, at);
            assert_close("base entropy", ev.base_entropy, reference::entropy(&q), rt, at);
            // The behaviour log-probability came from the f32 hook and the same policy.
            assert_close("behaviour", f64::from(rec.behaviour_logprob), ev.logp, 1e-3, 1e-3);
        }
        }
    }
}

#[test]
fn step_kl_matches_the_dense_reference() {
    let c = case(30, 5, 0.8);
    let mut new = c.head.clone();
    let mut r = rng(31);
    new.set_b_row(2, &[0.3, -0.2, 0.1]).unwrap();
    new.set_b_row(9, &[0.1, 0.1, -0.4]).unwrap();
    let a = new.a().mapv(|x| x + 0.05 * normal(&mut r));
    new.set_a(a).unwrap();
    let want = reference::step_kl(&DenseParams::from_head(&c.head), &DenseParams::from_head(&new), &c.recs, 0.8);
    assert!(want > 1e-4);
    let got = CpuMath::with_strategy(Strategy::Sparse).step_kl(&c.head, &new, &c.recs, &c.base).unwrap();
    assert_close("step KL (sparse)", got, want, 1e-6, 1e-12);
    let got = CpuMath::with_strategy(Strategy::Dense).step_kl(&c.head, &new, &c.recs, &c.base).unwrap();
    assert_close("step KL (dense)", got, want, 1e-3, 1e-7);
    assert_eq!(CpuMath::with_strategy(Strategy::Sparse).step_kl(&c.head, &c.head, &c.recs, &c.base).unwrap(), 0.0);
    assert!(CpuMath::with_strategy(Strategy::Dense).step_kl(&c.head, &c.head, &c.recs, &c.base).unwrap() < 1e-6);
}

#[test]
fn identity_adapter_leaves_logits_bit_for_bit() {
    let lm = TinyLm::new(64, 8, 3.0, 40);
    let mut head = LoraHead::new(&LoraConfig { rank: 4, ..LoraConfig::default() }, 8, 64).unwrap();
    let mut r = rng(41);
    let h = lm.hidden(&mut r);
    let mut logits = lm.logits(&h);
    logits[0] = -0.0;
    logits[1] = f32::MIN_POSITIVE / 4.0;
    logits[2] = -1e30;
    logits[3] = f32::NEG_INFINITY;
    let before: Vec<u32> = logits.iter().map(|x| x.to_bits()).collect();
    let mut z = logits.clone();
    head.add_delta(&h, &mut z).unwrap();
    assert_eq!(z.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), before);
    // An active row whose values are zero adds nothing either (-0.0 + 0.0 would flip the sign bit).
    head.set_b_row(0, &[0.0; 4]).unwrap();
    let mut z = logits.clone();
    head.add_delta(&h, &mut z).unwrap();
    assert_eq!(z.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), before);
    // The batch form agrees.
    let hs = Array2::from_shape_vec((2, 8), [h.clone(), h.clone()].concat()).unwrap();
    let mut zs = Array2::from_shape_vec((2, 64), [logits.clone(), logits.clone()].concat()).unwrap();
    CpuMath::new().add_delta_batch(&head, hs.view(), zs.view_mut()).unwrap();
    assert!(zs.iter().zip(before.iter().cycle()).all(|(x, b)| x.to_bits() == *b));
}

#[test]
fn delta_matches_the_dense_reference() {
    let lm = TinyLm::new(30, 7, 3.0, 50);
    let head = random_head(&lm, 5, 4, &[0, 3, 29], 51);
    let h = lm.hidden(&mut rng(52));
    let fast = head.delta_logits(&h).unwrap();
    let slow = DenseParams::from_head(&head).delta(&h);
    for (v, (f, s)) in fast.iter().zip(&slow).enumerate() {
        assert_close(&format!("delta[{v}]"), f64::from(*f), *s, 1e-5, 1e-6);
        if ![0, 3, 29].contains(&v) {
            assert_eq!(*f, 0.0);
        }
    }
    let mut z = vec![1.0f32; 30];
    head.add_delta(&h, &mut z).unwrap();
    assert_close("added", f64::from(z[3]), 1.0 + slow[3], 1e-5, 1e-6);
    let v = head.value(&h).unwrap();
    assert_close("value", f64::from(v), DenseParams::from_head(&head).value(&h), 1e-5, 1e-6);
    assert!(head.add_delta(&h[..3], &mut z).is_err());
    assert!(head.add_delta(&h, &mut z[..5]).is_err());
}

#[test]
fn adam_moves_only_the_rows_with_a_gradient() {
    let lm = TinyLm::new(20, 4, 3.0, 60);
    let mut head = random_head(&lm, 2, 3, &[4], 61);
    let mut adam = AdamState::new(&head);
    let mut grad = HeadGrad::new(2, 4);
    grad.a.fill(0.5);
    grad.rows = vec![4, 7];
    grad.b = Array2::from_shape_vec((2, 2), vec![1.0, -1.0, 2.0, -0.001]).unwrap();
    let before = head.clone();
    let p = AdamParams { lr: 0.01, a_lr: 0.01, ..AdamParams::default() };
    CpuMath::new().adam_step(&mut head, &mut adam, &grad, &p).unwrap();
    // Adam's first step is lr * sign(g) (up to eps).
    for (x, y) in head.a().iter().zip(before.a().iter()) {
        assert_close("A step", f64::from(*x - *y), -0.01, 1e-4, 1e-7);
    }
    assert_close("B[7,0]", f64::from(head.b()[[7, 0]]), -0.01, 1e-4, 1e-7);
    assert_close("B[7,1]", f64::from(head.b()[[7, 1]]), 0.01, 1e-3, 1e-7);
    assert_eq!(head.active_rows(), &[4, 7]);
    for v in (0..20).filter(|v| *v != 4 && *v != 7) {
        assert!(head.b().row(v).iter().all(|&x| x == 0.0));
    }
    // The value head has no gradient, so it stays.
    assert_eq!(head.value_w(), before.value_w());
    // A row first stepped later still takes a full first step (per-row bias correction).
    grad.rows = vec![11];
    grad.b = Array2::from_shape_vec((1, 2), vec![3.0, 3.0]).unwrap();
    CpuMath::new().adam_step(&mut head, &mut adam, &grad, &p).unwrap();
    assert_close("late row", f64::from(head.b()[[11, 0]]), -0.01, 1e-4, 1e-7);
    // Round trip through plain data.
    let parts = adam.to_parts();
    assert_eq!(parts.b_rows, vec![4, 7, 11]);
    assert_eq!(AdamState::from_parts(&head, &parts).unwrap(), adam);
    grad.b[[0, 0]] = f64::NAN;
    assert!(CpuMath::new().adam_step(&mut head, &mut adam, &grad, &p).is_err());
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn fast_evaluation_equals_dense(seed in 0u64..10_000, vocab in 3usize..40, d in 1usize..6, rank in 1usize..4, tau in 0.3f32..2.0, n_active in 0usize..6) {
            let lm = TinyLm::new(vocab, d, 5.0, seed);
            let active: Vec<usize> = (0..n_active).map(|i| (i * 7 + seed as usize) % vocab).collect();
            let head = random_head(&lm, rank, 2, &active, seed);
            let recs = records(&lm, &head, 3, tau, seed + 1);
            let base = stats(&head, &recs, tau);
            let p0 = DenseParams::from_head(&head);
            for (strategy, tol, rel) in [(attune::adapter::Strategy::Sparse, 1e-9, 1e-7), (attune::adapter::Strategy::Dense, 2e-5, 1e-3)] {
                let mut out = Vec::new();
                CpuMath::with_strategy(strategy).evaluate(&head, &recs, &base, &mut out).unwrap();
                for (rec, ev) in recs.iter().zip(&out) {
                    let (p, q) = reference::policies(&p0, rec, f64::from(tau));
                    let kl = reference::kl(&p, &q);
                    prop_assert!((ev.kl - kl).abs() < tol + rel * kl, "{strategy:?} KL {} vs {kl}", ev.kl);
                    prop_assert!((ev.logp - p[rec.token as usize].ln()).abs() < tol * 10.0, "{strategy:?} logp");
                    prop_assert!((ev.entropy - reference::entropy(&p)).abs() < tol * 10.0, "{strategy:?} entropy");
                }
            }
        }
    }
}

/// Soft Q-learning's Bellman loss `1/2 sum_t (Q_t - y_t)^2 + beta sum_t KL_t` (targets `y_t` from
/// a different, stale adapter, held fixed as a target network's are) through the logit weights
/// `k_t = -(tau / T) (Q_t - y_t)`: the gradient matches finite differences of the dense reference
/// on random small shapes, on both CPU paths.
#[test]
fn soft_q_loss_matches_finite_differences() {
    let mut shapes = rng(20);
    for case_no in 0..4u64 {
        let (vocab, d, rank) = (shapes.random_range(12..60usize), shapes.random_range(3..9usize), shapes.random_range(1..5usize));
        let top_k = if case_no == 3 { vocab } else { shapes.random_range(2..8usize) };
        let (t, tau, beta, gamma) = ([0.7f32, 1.0, 1.3, 0.9][case_no as usize], [0.5, 1.0, 0.8, 2.0][case_no as usize], [0.0, 0.3, 0.1, 0.05][case_no as usize], 0.9);
        let lm = TinyLm::new(vocab, d, 4.0, 30 + case_no);
        let active: Vec<usize> = (0..vocab).filter(|_| shapes.random_bool(0.3)).collect();
        let head = random_head(&lm, rank, top_k, &active, 40 + case_no);
        let stale: Vec<usize> = (0..vocab).filter(|_| shapes.random_bool(0.2)).collect();
        let target = random_head(&lm, rank, top_k, &stale, 50 + case_no);
        let n = shapes.random_range(1..7usize);
        let recs = records(&lm, &head, n, t, 60 + case_no);
        let base = stats(&head, &recs, t);
        let (p0, pt, t64) = (DenseParams::from_head(&head), DenseParams::from_head(&target), f64::from(t));
        let values: Vec<f64> = recs.iter().map(|rec| reference::soft_value(&pt, rec, t64, tau)).collect();
        let y = attune::learn::advantage::soft_q_targets(&attune::learn::advantage::terminal_rewards(0.8, n), &values, gamma);
        let k: Vec<f64> = recs.iter().zip(&y).map(|(rec, &y)| -(tau / t64) * (reference::soft_q(&p0, rec, t64, tau) - y)).collect();
        let zeros = vec![0.0; n];
        for strategy in BOTH {
            let what = format!("soft-Q case {case_no} (V {vocab}, d {d}, r {rank}, {n} tokens, {strategy:?})");
            let mut grad = HeadGrad::new(rank, d);
            let ep = GradEpisode { tokens: &recs, base: &base, weights: &zeros, beta, logit_weights: Some(&k), value_targets: None };
            let st = CpuMath::with_strategy(strategy).gradient(&head, &[ep], &mut grad).unwrap();
            let kl: f64 = recs.iter().map(|rec| {
                let (p, q) = reference::policies(&p0, rec, t64);
                reference::kl(&p, &q)
            }).sum();
            let (rtol, atol) = tol(strategy);
            assert_close(&format!("{what}: KL"), st.kl_sum, kl, rtol.max(1e-4), atol);
            assert!(grad.rows.iter().all(|&v| (v as usize) < vocab));
            let loss = |p: &DenseParams| reference::soft_q_loss(p, &recs, t64, tau, &y, beta);
            check_fd(&head, &grad, &loss, &what, tol(strategy));
        }
    }
}

/// The soft value is the adapted policy's log-normaliser: `V_soft = tau (log q[a] + delta[a] / T -
/// log p[a])` at any token, the identity the learner uses to read `V` off an evaluation pass.
#[test]
fn soft_value_is_read_off_the_sampled_token() {
    let c = case(21, 5, 0.7);
    let p0 = DenseParams::from_head(&c.head);
    let mut evals = Vec::new();
    CpuMath::new().evaluate(&c.head, &c.recs, &c.base, &mut evals).unwrap();
    for (rec, e) in c.recs.iter().zip(&evals) {
        let delta = p0.delta(&rec.hidden)[rec.token as usize];
        let got = 0.5 * (e.base_logp + delta / 0.7 - e.logp);
        assert_close("V_soft", got, reference::soft_value(&p0, rec, 0.7, 0.5), 1e-4, 1e-7);
    }
}
