//! A whole learning run on the tiny model with the adapter math on the GPU (wgpu) ends with the same
//! adapter as with the math on the CPU. Episodes come from the real engine and are fed to both
//! learners identically. A missing wgpu adapter fails the test with the command that installs one,
//! unless the GPU tier is deselected (`ATTUNE_NO_GPU=1`).

mod common;

use attune::adapter::gpu::{math_for, ComputeConfig, ComputeDevice, GpuDevice};
use attune::adapter::{CpuMath, Strategy};
use attune::generate::{GenerateOptions, Prompt, SamplingConfig};
use attune::learn::{Learner, LearnerConfig, Reward};

#[test]
fn gpu_learning_run_matches_cpu() {
    if common::gpu_deselected() {
        return;
    }
    if let Err(e) = GpuDevice::request(true) {
        panic!("no wgpu adapter ({e}): {}", common::GPU_FIX);
    }
    let model = common::load(common::tiny_dir());
    let info = model.engine().info().clone();
    let cfg = LearnerConfig { lr: 1e-2, max_same_sign_run: 0, max_updates_per_minute: 0, ..LearnerConfig::default() };
    let (gpu_math, choice) = math_for(&ComputeConfig { device: ComputeDevice::Gpu, allow_software: true });
    assert!(choice.adapter.is_some(), "the GPU path was chosen: {}", choice.reason);
    let mut gpu = Learner::new(cfg.clone(), info.hidden_size, info.vocab_size).unwrap().with_math(gpu_math);
    let mut cpu = Learner::new(cfg, info.hidden_size, info.vocab_size).unwrap().with_math(Box::new(CpuMath::with_strategy(Strategy::Sparse)));
    let prompts = ["Tell me", "Hello there", "Write a list"];
    let mut updates = 0;
    for i in 0..24u64 {
        let opts = GenerateOptions {
            sampling: SamplingConfig { temperature: 1.0, seed: i, ..SamplingConfig::default() },
            max_new_tokens: 6,
            record: true,
            ..GenerateOptions::default()
        };
        let g = model.generate(&Prompt::Text(prompts[i as usize % 3].into()), &opts, None, &mut |_| true).unwrap();
        let reward = Reward::scalar(if g.tokens.len() % 2 == 0 { 1.0 } else { -0.5 });
        let a = cpu.record_episode(g.prompt_tokens.clone(), g.records.clone(), g.sampling).unwrap();
        let b = gpu.record_episode(g.prompt_tokens, g.records, g.sampling).unwrap();
        let ra = cpu.give_feedback(a, &reward).unwrap();
        let rb = gpu.give_feedback(b, &reward).unwrap();
        if matches!(ra, attune::learn::FeedbackOutcome::Updated(_)) {
            updates += 1;
        }
        assert_eq!(std::mem::discriminant(&ra), std::mem::discriminant(&rb));
    }
    assert!(updates > 10);
    let (ha, hb) = (cpu.adapter(), gpu.adapter());
    assert_eq!(ha.active_rows(), hb.active_rows(), "the same rows of B were trained");
    let rel = |x: &ndarray::Array2<f32>, y: &ndarray::Array2<f32>| {
        let num: f64 = x.iter().zip(y.iter()).map(|(p, q)| ((p - q) as f64).powi(2)).sum();
        let den: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum();
        (num / den.max(1e-30)).sqrt()
    };
    let (ea, eb) = (rel(ha.a(), hb.a()), rel(ha.b(), hb.b()));
    eprintln!("after {updates} updates: relative difference A {ea:.2e}, B {eb:.2e}");
    assert!(ea < 1e-3 && eb < 1e-3, "A {ea}, B {eb}");
}
