//! Helpers shared by the integration tests: where the models are, and the skip rule.
#![allow(dead_code)]

use std::path::PathBuf;

use attune::engine::EngineConfig;
use attune::generate::Model;

/// The project root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tiny random-weight model made by `models/make_tiny.py` (always required: `make setup` makes it).
pub fn tiny_dir() -> PathBuf {
    let d = root().join("models/tiny");
    assert!(d.join("model.onnx").is_file(), "tiny model missing at {}: run `make setup`", d.display());
    d
}

/// The real SmolLM2 folder, or `None` when the slow tier is switched off (`ATTUNE_FAST_ONLY=1`).
/// In CI (`CI=true`) a missing real model is a failure, never a silent skip.
pub fn real_dir() -> Option<PathBuf> {
    if std::env::var("ATTUNE_FAST_ONLY").is_ok_and(|v| v == "1") {
        eprintln!("skipping: ATTUNE_FAST_ONLY=1 (slow tier off)");
        return None;
    }
    let d = root().join("models/smollm2-135m-instruct");
    if d.join("model.onnx").is_file() {
        return Some(d);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("real model missing at {} in CI: `make setup` must build it", d.display());
    }
    eprintln!("skipping: real model not found at {} (run `make setup`)", d.display());
    None
}

/// Engine configuration for a model folder, CPU, 2 threads.
pub fn cpu_config(dir: PathBuf) -> EngineConfig {
    EngineConfig { model_dir: dir, execution_providers: vec!["cpu".into()], threads: 2, max_context: 512, ..EngineConfig::default() }
}

/// Loads a model on the CPU.
pub fn load(dir: PathBuf) -> Model {
    Model::load(&cpu_config(dir)).expect("model loads")
}
