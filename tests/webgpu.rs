//! The WebGPU execution provider (plugin library from `onnxruntime-ep-webgpu`) against the CPU provider.
//! A missing WebGPU device fails the test with the command that fixes it, unless the GPU tier is
//! deselected (`ATTUNE_NO_GPU=1`).

mod common;

use attune::engine::{Engine, EngineConfig, Provider};
use attune::generate::{GenerateOptions, Model, Prompt, SamplingConfig};
use attune::tokenizer::Message;

fn webgpu_config(dir: std::path::PathBuf) -> EngineConfig {
    EngineConfig { execution_providers: vec!["webgpu".into()], strict_providers: true, ..common::cpu_config(dir) }
}

fn webgpu_engine(dir: std::path::PathBuf) -> Option<Engine> {
    if common::gpu_deselected() {
        return None;
    }
    match Engine::load(&webgpu_config(dir)) {
        Ok(e) => Some(e),
        Err(e) => panic!("WebGPU EP unavailable ({e}): {}", common::GPU_FIX),
    }
}

#[test]
fn webgpu_matches_cpu_logits_on_the_tiny_model() {
    let dir = common::tiny_dir();
    let Some(gpu) = webgpu_engine(dir.clone()) else { return };
    assert_eq!(gpu.active_providers()[0], Provider::WebGpu);
    let cpu = Engine::load(&common::cpu_config(dir.clone())).unwrap();
    let tok = attune::tokenizer::Tokenizer::from_dir(&dir).unwrap();
    let ids = tok.encode("WebGPU and the CPU must agree on every logit.").unwrap();
    let (mut a, mut b) = (cpu.new_sequence().unwrap(), gpu.new_sequence().unwrap());
    cpu.forward(&mut a, &ids, true).unwrap();
    gpu.forward(&mut b, &ids, true).unwrap();
    let rel = |x: &[f32], y: &[f32]| {
        let num: f64 = x.iter().zip(y).map(|(p, q)| ((p - q) as f64).powi(2)).sum();
        let den: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum();
        (num / den).sqrt()
    };
    let prefill = rel(a.logits(), b.logits());
    // Decode steps through the in-place KV cache too.
    let mut worst = prefill;
    for &t in &ids[..4] {
        cpu.forward(&mut a, &[t], false).unwrap();
        gpu.forward(&mut b, &[t], false).unwrap();
        worst = worst.max(rel(a.logits(), b.logits()));
    }
    eprintln!("WebGPU vs CPU logits: relative error prefill {prefill:.2e}, worst {worst:.2e}");
    assert!(worst <= 1e-3, "relative error {worst}");
}

#[test]
fn webgpu_greedy_text_equals_cpu_on_the_real_model() {
    let Some(dir) = common::real_dir() else { return };
    if webgpu_engine(common::tiny_dir()).is_none() {
        return;
    }
    let opts = GenerateOptions { sampling: SamplingConfig::greedy(), max_new_tokens: 12, ..GenerateOptions::default() };
    let p = Prompt::Chat(vec![Message::user("What is the capital of France?")]);
    let cpu = common::load(dir.clone()).generate(&p, &opts, None, &mut |_| true).unwrap();
    let gpu = Model::load(&webgpu_config(dir)).unwrap().generate(&p, &opts, None, &mut |_| true).unwrap();
    eprintln!("CPU: {:?}\nWebGPU: {:?}", cpu.text, gpu.text);
    assert_eq!(cpu.tokens, gpu.tokens);
}
