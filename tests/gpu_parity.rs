//! The wgpu adapter math against the CPU reference: delta logits, evaluation, the step KL, the
//! gradient and the Adam step agree within 1e-4 relative (see `gpu_support::assert_parity`) for
//! vocabularies 1000 / 49152 / 151936, ranks 1 / 4 / 8 / 16 and 1 / 7 / 64 / 257 tokens.
//!
//! The reference is the CPU's f64 sparse path (`Strategy::Sparse`): the GPU follows its semantics
//! exactly, down to which rows of `B` get a gradient (the top-k of `p` among the same candidates,
//! ties broken by the same selection call). The CPU's dense f32 path ranks the whole vocabulary and
//! may pick other rows among ties, so it is not the parity reference.
//!
//! Without a wgpu adapter each test fails with the command that installs one, unless the GPU tier
//! is deselected (`ATTUNE_NO_GPU=1`).

mod gpu_support;

use attune::adapter::gpu::{math_for, ComputeConfig, ComputeDevice, FallbackMath, GpuDevice, GpuMath};
use attune::adapter::{AdamParams, AdamState, AdapterMath, CpuMath, GradEpisode, HeadGrad, LoraHead, Strategy, TokenEval};
use gpu_support::{assert_parity, assert_parity_at, assert_scalar, device, hidden_for, random_head, records, reference_deltas, rng, stats};
use ndarray::Array2;

const REL: f64 = 1e-4;

/// The reference: the CPU's f64 sparse path.
fn cpu() -> CpuMath {
    CpuMath::with_strategy(Strategy::Sparse)
}
const VOCABS: [usize; 3] = [1000, 49152, 151936];
const RANKS: [usize; 4] = [1, 4, 8, 16];
const TOKENS: [usize; 4] = [1, 7, 64, 257];

fn active_for(vocab: usize) -> usize {
    (vocab / 8).min(3000)
}

/// Every combination: the GPU's batch deltas match an f64 reference (and the CPU's f32 ones), and
/// logits of inactive rows stay bit for bit.
#[test]
fn delta_logits_match_for_every_size() {
    let Some(dev) = device() else { return };
    let gpu = GpuMath::new(&dev).expect("kernels build");
    let mut g = rng(7);
    for (vi, &vocab) in VOCABS.iter().enumerate() {
        let d = hidden_for(vocab);
        for (ri, &r) in RANKS.iter().enumerate() {
            let head = random_head(vocab, d, r, active_for(vocab), 100 + 10 * vi as u64 + ri as u64);
            for &n in &TOKENS {
                let hidden = Array2::from_shape_fn((n, d), |_| gpu_support::normal(&mut g));
                // Active rows start at 0 so that the f32 sum is the delta itself; the others carry a
                // pattern that must come back bit for bit.
                let base = Array2::from_shape_fn((n, vocab), |(t, v)| if head.is_row_active(v) { 0.0 } else { ((t * 31 + v * 7) % 97) as f32 * 0.1 - 5.0 });
                let mut z_gpu = base.clone();
                gpu.add_delta_batch(&head, hidden.view(), z_gpu.view_mut()).expect("gpu deltas");
                let mut z_cpu = base.clone();
                cpu().add_delta_batch(&head, hidden.view(), z_cpu.view_mut()).expect("cpu deltas");
                let want = reference_deltas(&head, &hidden);
                for t in 0..n {
                    let pick = |z: &Array2<f32>| head.active_rows().iter().map(|&v| f64::from(z[[t, v as usize]]) - f64::from(base[[t, v as usize]])).collect::<Vec<f64>>();
                    let what = format!("V={vocab} r={r} T={n} position {t}");
                    // Judged at the scale of the terms: u = A h may cancel, in f32 on both paths.
                    let (want_t, scale) = &want[t];
                    assert_parity_at(&format!("{what}: gpu deltas"), &pick(&z_gpu), want_t, REL, *scale);
                    assert_parity_at(&format!("{what}: cpu deltas"), &pick(&z_cpu), want_t, REL, *scale);
                }
                let mut touched = ndarray::Array2::from_elem((n, vocab), false);
                for t in 0..n {
                    for &v in head.active_rows() {
                        touched[[t, v as usize]] = true;
                    }
                }
                let untouched_same = z_gpu.iter().zip(base.iter()).zip(touched.iter()).all(|((a, b), &act)| act || a.to_bits() == b.to_bits());
                assert!(untouched_same, "V={vocab} r={r} T={n}: an inactive logit changed");
            }
        }
    }
    // One position through the single-token hook.
    let head = random_head(1000, 48, 4, 100, 5);
    let h: Vec<f32> = (0..48).map(|_| gpu_support::normal(&mut g)).collect();
    let (mut a, mut b) = (vec![1.0f32; 1000], vec![1.0f32; 1000]);
    gpu.add_delta(&head, &h, &mut a).expect("gpu delta");
    cpu().add_delta(&head, &h, &mut b).expect("cpu delta");
    let wide = |x: &[f32]| x.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
    assert_parity("single add_delta", &wide(&a), &wide(&b), REL);
}

/// A batch of two episodes (different beta and weights, value targets on one, logit weights as
/// soft Q-learning sets them on the other) over `n` tokens.
struct Case {
    head: LoraHead,
    recs: Vec<attune::generate::TokenRecord>,
    base: Vec<attune::adapter::BaseStats>,
    weights: Vec<f64>,
    targets: Vec<f64>,
    logits: Vec<f64>,
}

impl Case {
    fn new(vocab: usize, r: usize, n: usize, seed: u64) -> Case {
        let d = hidden_for(vocab);
        let head = random_head(vocab, d, r, active_for(vocab), seed);
        let recs = records(vocab, d, n, seed + 2);
        let base = stats(&head, &recs, 0.7);
        let mut g = rng(seed + 3);
        let weights = (0..n).map(|_| f64::from(gpu_support::normal(&mut g))).collect();
        let targets = (0..n).map(|_| f64::from(gpu_support::normal(&mut g))).collect();
        let logits = (0..n).map(|_| f64::from(gpu_support::normal(&mut g))).collect();
        Case { head, recs, base, weights, targets, logits }
    }

    fn batch(&self) -> Vec<GradEpisode<'_>> {
        let k = self.recs.len().div_ceil(2);
        let n = self.recs.len();
        let mut out = vec![GradEpisode { tokens: &self.recs[..k], base: &self.base[..k], weights: &self.weights[..k], beta: 0.05, logit_weights: None, value_targets: Some(&self.targets[..k]) }];
        if k < n {
            out.push(GradEpisode { tokens: &self.recs[k..], base: &self.base[k..], weights: &self.weights[k..], beta: 0.3, logit_weights: Some(&self.logits[k..]), value_targets: None });
        }
        out
    }
}

fn flat(a: &Array2<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

fn check_evals(what: &str, got: &[TokenEval], want: &[TokenEval]) {
    assert_eq!(got.len(), want.len());
    let field = |f: fn(&TokenEval) -> f64, v: &[TokenEval]| v.iter().map(f).collect::<Vec<f64>>();
    assert_parity(&format!("{what}: logp"), &field(|e| e.logp, got), &field(|e| e.logp, want), REL);
    assert_parity(&format!("{what}: base logp"), &field(|e| e.base_logp, got), &field(|e| e.base_logp, want), REL);
    assert_parity(&format!("{what}: kl"), &field(|e| e.kl, got), &field(|e| e.kl, want), REL);
    assert_parity(&format!("{what}: entropy"), &field(|e| e.entropy, got), &field(|e| e.entropy, want), REL);
}

/// Gradient, evaluation, step KL and Adam step on one case, GPU against CPU.
fn check_case(gpu: &mut GpuMath, vocab: usize, r: usize, n: usize, seed: u64) {
    let what = format!("V={vocab} r={r} T={n}");
    let c = Case::new(vocab, r, n, seed);
    let batch = c.batch();
    let (mut g_cpu, mut g_gpu) = (HeadGrad::new(r, c.head.hidden_size()), HeadGrad::new(r, c.head.hidden_size()));
    let s_cpu = cpu().gradient(&c.head, &batch, &mut g_cpu).expect("cpu gradient");
    let s_gpu = gpu.gradient(&c.head, &batch, &mut g_gpu).expect("gpu gradient");
    assert_eq!(s_gpu.tokens, s_cpu.tokens);
    assert_scalar(&format!("{what}: policy objective"), s_gpu.policy_objective, s_cpu.policy_objective, REL);
    assert_scalar(&format!("{what}: KL sum"), s_gpu.kl_sum, s_cpu.kl_sum, REL);
    assert_scalar(&format!("{what}: value loss"), s_gpu.value_loss, s_cpu.value_loss, REL);
    assert_eq!(g_gpu.rows, g_cpu.rows, "{what}: rows of dB");
    assert_eq!(g_gpu.has_value, g_cpu.has_value);
    let worst_a = assert_parity(&format!("{what}: dA"), &flat(&g_gpu.a), &flat(&g_cpu.a), REL);
    let worst_b = assert_parity(&format!("{what}: dB"), &flat(&g_gpu.b), &flat(&g_cpu.b), REL);
    assert_parity(&format!("{what}: value dw"), &g_gpu.value_w, &g_cpu.value_w, REL);
    assert_scalar(&format!("{what}: value db"), g_gpu.value_b, g_cpu.value_b, REL);
    eprintln!("{what}: {} rows of dB; worst error / allowed: dA {worst_a:.3}, dB {worst_b:.3}", g_cpu.rows.len());

    let (mut e_cpu, mut e_gpu) = (Vec::new(), Vec::new());
    cpu().evaluate(&c.head, &c.recs, &c.base, &mut e_cpu).expect("cpu evaluate");
    gpu.evaluate(&c.head, &c.recs, &c.base, &mut e_gpu).expect("gpu evaluate");
    check_evals(&what, &e_gpu, &e_cpu);

    // One Adam step from the same gradient on each side, then the KL between the two heads.
    let p = AdamParams { lr: 1e-2, a_lr: 1e-2, value_lr: 1e-1, ..AdamParams::default() };
    let (mut h_cpu, mut h_gpu) = (c.head.clone(), c.head.clone());
    let (mut a_cpu, mut a_gpu) = (AdamState::new(&c.head), AdamState::new(&c.head));
    for _ in 0..2 {
        cpu().adam_step(&mut h_cpu, &mut a_cpu, &g_cpu, &p).expect("cpu adam");
        gpu.adam_step(&mut h_gpu, &mut a_gpu, &g_cpu, &p).expect("gpu adam");
    }
    let wide = |x: &[f32]| x.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
    let (pc, pg) = (h_cpu.to_parts(), h_gpu.to_parts());
    assert_eq!(pg.b_rows, pc.b_rows, "{what}: active rows after Adam");
    assert_parity(&format!("{what}: A after Adam"), &wide(&pg.a), &wide(&pc.a), REL);
    assert_parity(&format!("{what}: B after Adam"), &wide(&pg.b), &wide(&pc.b), REL);
    assert_parity(&format!("{what}: w after Adam"), &wide(&pg.value_w), &wide(&pc.value_w), REL);
    let (mc, mg) = (a_cpu.to_parts(), a_gpu.to_parts());
    assert_eq!((mg.a_step, &mg.b_steps, mg.value_step), (mc.a_step, &mc.b_steps, mc.value_step), "{what}: Adam steps");
    assert_parity(&format!("{what}: Adam m of B"), &wide(&mg.b_m), &wide(&mc.b_m), REL);
    assert_parity(&format!("{what}: Adam v of A"), &wide(&mg.a_v), &wide(&mc.a_v), REL);

    let kl_cpu = cpu().step_kl(&c.head, &h_cpu, &c.recs, &c.base).expect("cpu step kl");
    let kl_gpu = gpu.step_kl(&c.head, &h_cpu, &c.recs, &c.base).expect("gpu step kl");
    assert_scalar(&format!("{what}: step KL"), kl_gpu, kl_cpu, REL);
    assert_eq!(gpu.step_kl(&h_cpu, &h_cpu, &c.recs, &c.base).expect("gpu step kl"), 0.0, "{what}: KL of a head to itself");
}

/// Every (vocabulary, rank) pair, with the lengths rotating so that each length meets each
/// vocabulary, plus the largest case (151936, 16, 257): about 25 s on lavapipe. The whole cross
/// product is `full_cross_product` (ignored by default; about 60 s).
#[test]
fn gradient_evaluate_adam_and_step_kl_match() {
    let Some(dev) = device() else { return };
    let mut gpu = GpuMath::new(&dev).expect("kernels build");
    for (vi, &vocab) in VOCABS.iter().enumerate() {
        for (ri, &r) in RANKS.iter().enumerate() {
            let n = TOKENS[(vi + ri) % TOKENS.len()];
            check_case(&mut gpu, vocab, r, n, 1000 + 17 * (4 * vi + ri) as u64);
        }
    }
    check_case(&mut gpu, 151936, 16, 257, 999);
}

/// All 48 combinations of vocabulary, rank and length; run with `--include-ignored`.
#[test]
#[ignore = "about a minute on lavapipe; the default suite covers a representative subset"]
fn full_cross_product() {
    let Some(dev) = device() else { return };
    let mut gpu = GpuMath::new(&dev).expect("kernels build");
    for &vocab in &VOCABS {
        for &r in &RANKS {
            for &n in &TOKENS {
                check_case(&mut gpu, vocab, r, n, 5000 + (vocab + r * 7 + n) as u64);
            }
        }
    }
}

/// Deltas beyond e^20 take the shifted log-partition branch; an identity adapter takes none.
#[test]
fn large_changes_and_the_identity_match() {
    let Some(dev) = device() else { return };
    let mut gpu = GpuMath::new(&dev).expect("kernels build");
    let mut c = Case::new(49152, 4, 64, 31);
    for (k, v) in [17usize, 4000, 30000].into_iter().enumerate() {
        c.head.set_b_row(v, &[3.0 * (k as f32 + 1.0), -2.0, 1.0, 0.5]).expect("row fits");
    }
    let batch = c.batch();
    let (mut g_cpu, mut g_gpu) = (HeadGrad::new(4, c.head.hidden_size()), HeadGrad::new(4, c.head.hidden_size()));
    let s_cpu = cpu().gradient(&c.head, &batch, &mut g_cpu).expect("cpu gradient");
    let s_gpu = gpu.gradient(&c.head, &batch, &mut g_gpu).expect("gpu gradient");
    assert!(s_cpu.kl_sum / s_cpu.tokens as f64 > 1.0, "the case should move the policy far");
    assert_scalar("large: KL sum", s_gpu.kl_sum, s_cpu.kl_sum, REL);
    assert_eq!(g_gpu.rows, g_cpu.rows);
    // Changes of ~60 nats leave f32 exponents ~4e-6 relative precision: judged norm-wise here.
    let normwise = |what: &str, got: &[f64], want: &[f64]| {
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert_parity_at(what, got, want, REL, 100.0 * scale)
    };
    normwise("large: dA", &flat(&g_gpu.a), &flat(&g_cpu.a));
    normwise("large: dB", &flat(&g_gpu.b), &flat(&g_cpu.b));
    let (mut e_cpu, mut e_gpu) = (Vec::new(), Vec::new());
    cpu().evaluate(&c.head, &c.recs, &c.base, &mut e_cpu).expect("cpu evaluate");
    gpu.evaluate(&c.head, &c.recs, &c.base, &mut e_gpu).expect("gpu evaluate");
    check_evals("large", &e_gpu, &e_cpu);
    let fresh = LoraHead::new(c.head.config(), c.head.hidden_size(), c.head.vocab_size()).expect("fresh head");
    let kl_cpu = cpu().step_kl(&c.head, &fresh, &c.recs, &c.base).expect("cpu step kl");
    assert_scalar("large: step KL to the identity", gpu.step_kl(&c.head, &fresh, &c.recs, &c.base).expect("gpu"), kl_cpu, REL);
    let ident = Case { head: fresh, ..c };
    cpu().evaluate(&ident.head, &ident.recs, &ident.base, &mut e_cpu).expect("cpu evaluate");
    gpu.evaluate(&ident.head, &ident.recs, &ident.base, &mut e_gpu).expect("gpu evaluate");
    check_evals("identity", &e_gpu, &e_cpu);
    assert!(e_gpu.iter().all(|e| e.kl == 0.0 && e.logp == e.base_logp));
    let batch = ident.batch();
    cpu().gradient(&ident.head, &batch, &mut g_cpu).expect("cpu gradient");
    gpu.gradient(&ident.head, &batch, &mut g_gpu).expect("gpu gradient");
    assert_eq!(g_gpu.rows, g_cpu.rows);
    assert_parity("identity: dA", &flat(&g_gpu.a), &flat(&g_cpu.a), REL);
    assert_parity("identity: dB", &flat(&g_gpu.b), &flat(&g_cpu.b), REL);
}

/// After the first call only changes cross the bus: a repeated call uploads nothing of the head,
/// a GPU Adam step at most the grown active list, an outside edit one row.
#[test]
fn head_stays_on_the_device_between_calls() {
    let Some(dev) = device() else { return };
    let mut gpu = GpuMath::new(&dev).expect("kernels build");
    let c = Case::new(49152, 8, 7, 91);
    let mut head = c.head.clone();
    let mut g = HeadGrad::new(8, head.hidden_size());
    gpu.gradient(&head, &c.batch(), &mut g).expect("gradient");
    let first = gpu.transfers().head_bytes;
    assert!(first > 0);
    gpu.gradient(&head, &c.batch(), &mut g).expect("gradient");
    assert_eq!(gpu.transfers().head_bytes, first, "a repeated call re-sent the head");
    let mut adam = AdamState::new(&head);
    gpu.adam_step(&mut head, &mut adam, &g, &AdamParams::default()).expect("adam");
    let stepped = gpu.transfers().head_bytes;
    assert!(stepped - first <= 4 * head.active_rows().len() as u64, "the Adam step re-sent more than the active list");
    let mut e_gpu = Vec::new();
    gpu.evaluate(&head, &c.recs, &c.base, &mut e_gpu).expect("evaluate");
    assert_eq!(gpu.transfers().head_bytes, stepped);
    let row = head.active_rows()[3] as usize;
    head.set_b_row(row, &[0.05; 8]).expect("row fits");
    gpu.evaluate(&head, &c.recs, &c.base, &mut e_gpu).expect("evaluate");
    assert_eq!(gpu.transfers().head_bytes - stepped, 4 * (1 + 8), "an edited row costs its id and values");
    let mut e_cpu = Vec::new();
    cpu().evaluate(&head, &c.recs, &c.base, &mut e_cpu).expect("cpu evaluate");
    check_evals("after an edit", &e_gpu, &e_cpu);
}

/// Settings deserialise from lower-case names; cpu never opens a device; auto never takes a
/// software adapter unless allowed; gpu takes one.
#[test]
fn device_choice_follows_the_setting() {
    assert_eq!(serde_json::to_string(&ComputeDevice::Auto).expect("json"), "\"auto\"");
    let cfg: ComputeConfig = serde_json::from_str(r#"{"device": "gpu", "allow_software": true}"#).expect("json");
    assert_eq!(cfg, ComputeConfig { device: ComputeDevice::Gpu, allow_software: true });
    assert!(serde_json::from_str::<ComputeConfig>(r#"{"device": "GPU"}"#).is_err());
    assert_eq!(serde_json::from_str::<ComputeConfig>("{}").expect("json"), ComputeConfig::default());
    let (_, cpu) = math_for(&ComputeConfig { device: ComputeDevice::Cpu, allow_software: true });
    assert!(cpu.adapter.is_none(), "{}", cpu.reason);
    let (_, auto) = math_for(&ComputeConfig::default());
    assert!(auto.adapter.as_ref().is_none_or(|a| !a.is_software()), "{}", auto.reason);
    if device().is_some() {
        let (_, gpu) = math_for(&ComputeConfig { device: ComputeDevice::Gpu, allow_software: false });
        assert!(gpu.adapter.is_some(), "{}", gpu.reason);
    }
}

/// A lost device never reaches the caller: the call and all later ones run on the CPU.
#[test]
fn fallback_survives_a_lost_device() {
    if device().is_none() {
        return;
    }
    let dev = GpuDevice::request(true).expect("a second device");
    let mut math = FallbackMath::new(GpuMath::new(&dev).expect("kernels build"));
    let c = Case::new(1000, 4, 7, 77);
    // The fallback is the production CPU math (its default strategy), so compare with that.
    let mut want = HeadGrad::new(4, c.head.hidden_size());
    let s_want = CpuMath::new().gradient(&c.head, &c.batch(), &mut want).expect("cpu gradient");
    let mut got = HeadGrad::new(4, c.head.hidden_size());
    math.gradient(&c.head, &c.batch(), &mut got).expect("gpu gradient");
    assert!(math.gpu_active());
    dev.destroy();
    let s_got = math.gradient(&c.head, &c.batch(), &mut got).expect("falls back");
    assert!(!math.gpu_active());
    assert_eq!((got, s_got), (want, s_want), "after the loss the CPU answers");
    let h: Vec<f32> = vec![0.5; c.head.hidden_size()];
    let (mut a, mut b) = (vec![0.0f32; 1000], vec![0.0f32; 1000]);
    math.add_delta(&c.head, &h, &mut a).expect("falls back");
    cpu().add_delta(&c.head, &h, &mut b).expect("cpu");
    assert_eq!(a, b);
    // Errors of the input still come back as errors.
    assert!(math.evaluate(&c.head, &c.recs, &c.base[..1], &mut Vec::new()).is_err());
}
