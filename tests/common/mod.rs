//! Helpers shared by the integration tests: where the models are, and the tier rule. A test never
//! passes by skipping: a missing component fails it with the command that fixes it, unless its tier
//! is deselected explicitly (`ATTUNE_FAST_ONLY=1` for the real model, `ATTUNE_NO_GPU=1` for the
//! wgpu and WebGPU tests).
#![allow(dead_code)]

use std::path::PathBuf;

use attune::engine::EngineConfig;
use attune::generate::Model;

/// The project root, where `make setup` puts the models. The CLI package's tests (`cli/tests/`)
/// include this module too, and that package's manifest sits one directory below the root.
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if env!("CARGO_PKG_NAME") == "attune-cli" {
        manifest.join("..")
    } else {
        manifest
    }
}

/// The tiny random-weight model made by `models/make_tiny.py` (always required: `make setup` makes it).
pub fn tiny_dir() -> PathBuf {
    let d = root().join("models/tiny");
    assert!(d.join("model.onnx").is_file(), "tiny model missing at {}: run `make setup`", d.display());
    d
}

/// The real SmolLM2 folder, or `None` when the slow tier is deselected (`ATTUNE_FAST_ONLY=1`). A
/// missing real model fails the test.
pub fn real_dir() -> Option<PathBuf> {
    if std::env::var("ATTUNE_FAST_ONLY").is_ok_and(|v| v == "1") {
        eprintln!("slow tier deselected (ATTUNE_FAST_ONLY=1)");
        return None;
    }
    let d = root().join("models/smollm2-135m-instruct");
    assert!(d.join("model.onnx").is_file(), "real model missing at {}: run `make setup`", d.display());
    Some(d)
}

/// Whether the GPU tier (wgpu and the WebGPU execution provider) is deselected (`ATTUNE_NO_GPU=1`).
pub fn gpu_deselected() -> bool {
    let off = std::env::var("ATTUNE_NO_GPU").is_ok_and(|v| v == "1");
    if off {
        eprintln!("GPU tier deselected (ATTUNE_NO_GPU=1)");
    }
    off
}

/// What installs the software Vulkan the GPU tier runs on.
pub const GPU_FIX: &str = "install Mesa's software Vulkan from bookworm-backports (`make test` does: `apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1`), set ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER=1 and XDG_RUNTIME_DIR, or deselect the tier with ATTUNE_NO_GPU=1";

/// Engine configuration for a model folder, CPU, 2 threads.
pub fn cpu_config(dir: PathBuf) -> EngineConfig {
    EngineConfig { model_dir: dir, execution_providers: vec!["cpu".into()], threads: 2, max_context: 512, ..EngineConfig::default() }
}

/// Loads a model on the CPU.
pub fn load(dir: PathBuf) -> Model {
    Model::load(&cpu_config(dir)).expect("model loads")
}

/// `models/vader/`, where `make setup` copies VADER's lexicons (from vadersentiment==3.3.2).
pub fn vader_dir() -> PathBuf {
    let d = root().join("models/vader");
    assert!(d.join("vader_lexicon.txt").is_file(), "VADER lexicon missing at {}: run `make setup` (models/vader.py)", d.display());
    d
}
