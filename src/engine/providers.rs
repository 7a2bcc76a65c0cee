//! Execution providers: parsed from the configuration's ordered list, registered one by one on the
//! session builder. A provider that fails is logged with its reason and the next is tried, unless the
//! configuration is strict. The CPU provider is always the last resort.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use ort::session::builder::SessionBuilder;

use crate::error::{Error, Result};

/// An execution provider Attune knows how to register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// ONNX Runtime's CPU provider (always available).
    Cpu,
    /// The WebGPU plugin provider (`onnxruntime-ep-webgpu`), loaded at run time.
    WebGpu,
    /// NVIDIA CUDA (cargo feature `cuda`).
    Cuda,
    /// NVIDIA TensorRT (cargo feature `tensorrt`).
    TensorRt,
    /// Apple Core ML (cargo feature `coreml`).
    CoreMl,
    /// Android NNAPI (cargo feature `nnapi`).
    Nnapi,
    /// Qualcomm QNN (cargo feature `qnn`).
    Qnn,
    /// DirectML on Windows (cargo feature `directml`).
    DirectMl,
    /// XNNPACK (cargo feature `xnnpack`).
    Xnnpack,
}

/// Every name accepted in the configuration, lower case.
pub const PROVIDER_NAMES: [&str; 9] = ["cpu", "webgpu", "cuda", "tensorrt", "coreml", "nnapi", "qnn", "directml", "xnnpack"];

impl FromStr for Provider {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "cpu" => Provider::Cpu,
            "webgpu" => Provider::WebGpu,
            "cuda" => Provider::Cuda,
            "tensorrt" => Provider::TensorRt,
            "coreml" => Provider::CoreMl,
            "nnapi" => Provider::Nnapi,
            "qnn" => Provider::Qnn,
            "directml" => Provider::DirectMl,
            "xnnpack" => Provider::Xnnpack,
            _ => {
                return Err(Error::Config(format!(
                    "unknown execution provider `{s}` (known: {})",
                    PROVIDER_NAMES.join(", ")
                )))
            }
        })
    }
}

impl Provider {
    /// The configuration name of this provider.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::WebGpu => "webgpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
            Provider::CoreMl => "coreml",
            Provider::Nnapi => "nnapi",
            Provider::Qnn => "qnn",
            Provider::DirectMl => "directml",
            Provider::Xnnpack => "xnnpack",
        }
    }
}

/// Parses the configured list; an unknown name is an error whatever the strictness.
pub fn parse_list(names: &[String]) -> Result<Vec<Provider>> {
    names.iter().map(|n| n.parse()).collect()
}

/// The name ONNX Runtime gives the WebGPU plugin's devices.
const WEBGPU_EP_NAME: &str = "WebGpuExecutionProvider";

/// WebGPU plugin library file name.
#[cfg(target_os = "windows")]
const WEBGPU_LIB: &str = "onnxruntime_providers_webgpu.dll";
#[cfg(target_os = "macos")]
const WEBGPU_LIB: &str = "libonnxruntime_providers_webgpu.dylib";
#[cfg(not(any(target_os = "windows", target_os = "macos")))]
const WEBGPU_LIB: &str = "libonnxruntime_providers_webgpu.so";

/// Libraries already registered with the process environment (registration is once per path).
static REGISTERED_PLUGINS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Where the WebGPU plugin library is looked for: the configuration, `ATTUNE_WEBGPU_EP_PATH`, then
/// `make setup`'s install folder.
pub fn webgpu_library_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("ATTUNE_WEBGPU_EP_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    super::ortlib::default_install_dir().join(WEBGPU_LIB)
}

fn register_webgpu(
    env: &ort::environment::Environment,
    builder: SessionBuilder,
    library: &Path,
) -> std::result::Result<SessionBuilder, (SessionBuilder, String)> {
    if !library.is_file() {
        return Err((builder, format!("plugin library {} not found (run `make setup`)", library.display())));
    }
    {
        let mut done = REGISTERED_PLUGINS.lock().unwrap_or_else(|p| p.into_inner());
        if !done.iter().any(|p| p == library) {
            if let Err(e) = env.register_ep_library("webgpu", library) {
                return Err((builder, format!("registering {}: {e}", library.display())));
            }
            done.push(library.to_path_buf());
        }
    }
    let devices: Vec<_> = env.devices().filter(|d| d.ep().map(|n| n == WEBGPU_EP_NAME).unwrap_or(false)).collect();
    if devices.is_empty() {
        return Err((
            builder,
            "the WebGPU plugin lists no device (no GPU/Vulkan driver found; on a machine without GPU hardware set ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER=1 and install Mesa's lavapipe)".into(),
        ));
    }
    builder.with_devices(devices, None).map_err(|e| {
        let msg = e.to_string();
        (e.recover(), msg)
    })
}

#[allow(unused_macros)]
macro_rules! classic_ep {
    ($builder:expr, $ep:expr) => {{
        let ep = $ep.build().error_on_failure();
        $builder.with_execution_providers([ep]).map_err(|e| {
            let msg = e.to_string();
            (e.recover(), msg)
        })
    }};
}

fn register_one(
    env: &ort::environment::Environment,
    builder: SessionBuilder,
    provider: Provider,
    webgpu_library: &Path,
) -> std::result::Result<SessionBuilder, (SessionBuilder, String)> {
    let not_built = |feature: &str| format!("not compiled in (build with `--features {feature}`)");
    match provider {
        Provider::Cpu => Ok(builder),
        Provider::WebGpu => register_webgpu(env, builder, webgpu_library),
        #[cfg(feature = "cuda")]
        Provider::Cuda => classic_ep!(builder, ort::ep::CUDA::default()),
        #[cfg(feature = "tensorrt")]
        Provider::TensorRt => classic_ep!(builder, ort::ep::TensorRT::default()),
        #[cfg(feature = "coreml")]
        Provider::CoreMl => classic_ep!(builder, ort::ep::CoreML::default()),
        #[cfg(feature = "nnapi")]
        Provider::Nnapi => classic_ep!(builder, ort::ep::NNAPI::default()),
        #[cfg(feature = "qnn")]
        Provider::Qnn => classic_ep!(builder, ort::ep::QNN::default()),
        #[cfg(feature = "directml")]
        Provider::DirectMl => classic_ep!(builder, ort::ep::DirectML::default()),
        #[cfg(feature = "xnnpack")]
        Provider::Xnnpack => classic_ep!(builder, ort::ep::XNNPACK::default()),
        #[allow(unreachable_patterns)]
        other => Err((builder, not_built(other.name()))),
    }
}

/// Registers the providers in order; returns the builder and the names of the active providers
/// (CPU last). In strict mode the first failure is an error.
pub fn register_all(
    env: &ort::environment::Environment,
    mut builder: SessionBuilder,
    providers: &[Provider],
    strict: bool,
    webgpu_library: &Path,
) -> Result<(SessionBuilder, Vec<Provider>)> {
    let mut active = Vec::new();
    for &p in providers {
        if p == Provider::Cpu || active.contains(&p) {
            continue;
        }
        match register_one(env, builder, p, webgpu_library) {
            Ok(b) => {
                log::info!("execution provider {} registered", p.name());
                active.push(p);
                builder = b;
            }
            Err((b, reason)) => {
                if strict {
                    return Err(Error::ExecutionProvider { name: p.name().into(), reason });
                }
                log::warn!("execution provider {} unavailable, trying the next: {reason}", p.name());
                builder = b;
            }
        }
    }
    active.push(Provider::Cpu);
    Ok((builder, active))
}
