//! The WebGPU execution provider (plugin library from `onnxruntime-ep-webgpu`) against the CPU provider.
//! A missing WebGPU device fails the test with the command that fixes it, unless the GPU tier is
//! deselected (`ATTUNE_NO_GPU=1`).

mod common;

use attune::engine::{Engine, EngineConfig, Provider};
use attune::generate::{GenerateOptions, Model, Prompt, SamplingConfig};
use attune::tokenizer::Message;

/// The plugin shares one WebGPU device among the process's sessions, and two sessions running on it
/// at once from different threads trip Dawn's validation ("CommandEncoder ... is already finished"),
/// so the tests of this binary take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

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
    let _turn = turn();
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
    let _turn = turn();
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

/// A runtime configured with a WebGPU options object, `cpu` last.
fn webgpu_runtime(webgpu: serde_json::Value) -> attune::Result<std::sync::Arc<attune::runtime::Runtime>> {
    let json = serde_json::json!({"engine": {
        "model_dir": common::tiny_dir(), "execution_providers": [webgpu, {"name": "cpu", "arena": true}],
        "strict_providers": true, "threads": 2, "max_context": 256,
    }});
    attune::runtime::Runtime::new(attune::runtime::RuntimeConfig::from_json(&json.to_string())?)
}

#[test]
fn webgpu_options_object_reaches_the_plugin_and_the_runtime_reports_it() {
    let _turn = turn();
    if common::gpu_deselected() {
        return;
    }
    let opts = serde_json::json!({"name": "webgpu", "power_preference": "low_power", "backend": "vulkan", "preferred_layout": "nchw", "validation_mode": "basic"});
    let rt = webgpu_runtime(opts).unwrap_or_else(|e| panic!("WebGPU EP unavailable ({e}): {}", common::GPU_FIX));
    let st = rt.stats();
    eprintln!("{}", serde_json::to_string_pretty(&st).unwrap());
    assert_eq!(st.provider, Provider::WebGpu);
    let names: Vec<_> = st.providers.iter().map(|p| p.name).collect();
    assert_eq!(names, [Provider::WebGpu, Provider::Cpu]);
    let web = &st.providers[0];
    assert!(!web.devices.is_empty(), "the plugin's devices are reported");
    assert_eq!(st.compute_device, web.devices[0].kind);
    assert_eq!(web.options["power_preference"], "low_power");
    assert_eq!(web.options["validation_mode"], "basic");
    assert_eq!(st.providers[1].options["arena"], true);
    assert!(st.failed_providers.is_empty());
    assert!(!st.kv_cache_in_place, "the KV cache is rebound on a GPU provider");
    // The configured session generates on it.
    let opts = GenerateOptions { sampling: SamplingConfig::greedy(), max_new_tokens: 4, ..GenerateOptions::default() };
    let g = rt.model().generate(&Prompt::Text("Hello".into()), &opts, None, &mut |_| true).unwrap();
    assert_eq!(g.tokens.len(), 4);
}

/// The plugin creates its WebGPU device once per process, with the options of the first session, so
/// the check that options reach Dawn runs in a process of its own: this test binary, re-run on the
/// test below alone.
#[test]
fn webgpu_device_options_reach_dawn() {
    if common::gpu_deselected() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "webgpu_backend_the_platform_lacks_finds_no_adapter", "--nocapture", "--test-threads=1"])
        .env("ATTUNE_WEBGPU_CHILD", "1")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && log.contains("1 passed"), "{log}");
}

/// Run by the test above only (a fresh process): Dawn has no Direct3D 12 backend on Linux, so asking
/// for it leaves the plugin without an adapter and the session does not load.
#[test]
fn webgpu_backend_the_platform_lacks_finds_no_adapter() {
    if std::env::var_os("ATTUNE_WEBGPU_CHILD").is_none() {
        return;
    }
    if !cfg!(target_os = "linux") {
        return;
    }
    let e = webgpu_runtime(serde_json::json!({"name": "webgpu", "backend": "d3d12"})).unwrap_err();
    eprintln!("backend d3d12: {e}");
    assert!(e.to_string().contains("adapter"), "{e}");
    // The same process with the backend it has: Vulkan.
    let rt = webgpu_runtime(serde_json::json!({"name": "webgpu", "backend": "vulkan"})).unwrap();
    assert_eq!(rt.stats().provider, Provider::WebGpu);
}
