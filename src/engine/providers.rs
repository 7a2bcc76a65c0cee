//! Execution providers: parsed from the configuration's ordered list, registered one by one on the
//! session builder. A provider that fails is logged with its reason and the next is tried, unless the
//! configuration is strict. ONNX Runtime's CPU provider is always the last resort: it runs every node
//! the providers before it do not take, so `"cpu"` may only be the list's last entry (where it stands
//! for that fallback and takes its own options), never before an accelerator.
//!
//! Each entry is a name (`"webgpu"`) or an object with the name and that provider's options
//! (`{"name": "qnn", "backend_path": "libQnnHtp.so", "performance_mode": "burst"}`). Options are
//! parsed for every provider whatever the build's features (so a configuration is checked the same
//! everywhere), and an unknown key or a bad value is an [`Error::Config`] naming the provider and
//! the key.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use ort::session::builder::SessionBuilder;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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

    /// The name ONNX Runtime gives this provider (in its device list and its logs).
    pub fn ort_name(self) -> &'static str {
        match self {
            Provider::Cpu => "CPUExecutionProvider",
            Provider::WebGpu => WEBGPU_EP_NAME,
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::TensorRt => "TensorrtExecutionProvider",
            Provider::CoreMl => "CoreMLExecutionProvider",
            Provider::Nnapi => "NnapiExecutionProvider",
            Provider::Qnn => "QNNExecutionProvider",
            Provider::DirectMl => "DmlExecutionProvider",
            Provider::Xnnpack => "XnnpackExecutionProvider",
        }
    }
}

impl Serialize for Provider {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

// ---- Options of each provider -------------------------------------------------------------------
//
// Every field is optional: what is left out keeps ONNX Runtime's default. Enumerations are written
// in snake case in the configuration.

/// `{"name": "cpu", ...}`: ONNX Runtime's CPU provider, the fallback of every list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuOptions {
    /// Whether the CPU provider's memory arena is used (`ep::CPU::with_arena_allocator`); ONNX
    /// Runtime's default is on. Off trades some speed for a smaller resident footprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arena: Option<bool>,
}

/// Which adapter Dawn asks for (`powerPreference`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebGpuPowerPreference {
    /// The discrete or faster GPU (`high-performance`).
    HighPerformance,
    /// The integrated or more frugal GPU (`low-power`).
    LowPower,
}

/// Dawn's native backend (`dawnBackendType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebGpuBackend {
    /// Vulkan (Linux, Android, Windows).
    Vulkan,
    /// Direct3D 12 (Windows).
    D3d12,
}

/// Tensor layout the WebGPU kernels prefer (`preferredLayout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebGpuLayout {
    /// Channels first.
    Nchw,
    /// Channels last (the provider's default).
    Nhwc,
}

/// How much the provider validates its WebGPU calls (`validationMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebGpuValidation {
    /// No validation (fastest).
    Disabled,
    /// Dawn's own validation only.
    WgpuOnly,
    /// Basic checks (the provider's default).
    Basic,
    /// Every check.
    Full,
}

/// `{"name": "webgpu", ...}`: the WebGPU plugin provider. The options go to ONNX Runtime with the
/// plugin's devices (`SessionBuilder::with_devices`), under the plugin's own keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebGpuOptions {
    /// Path of the plugin library; overrides `engine.webgpu_library`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub library: Option<PathBuf>,
    /// Which GPU Dawn picks when there are several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_preference: Option<WebGpuPowerPreference>,
    /// Dawn's backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<WebGpuBackend>,
    /// The layout the kernels prefer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_layout: Option<WebGpuLayout>,
    /// Validation of WebGPU calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_mode: Option<WebGpuValidation>,
}

impl WebGpuOptions {
    /// The options as the plugin's key/value pairs (ONNX Runtime files them under
    /// `ep.webgpuexecutionprovider.`).
    pub fn ort_options(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut put = |k: &str, v: &str| out.push((k.to_string(), v.to_string()));
        if let Some(p) = self.power_preference {
            put("powerPreference", match p {
                WebGpuPowerPreference::HighPerformance => "high-performance",
                WebGpuPowerPreference::LowPower => "low-power",
            });
        }
        if let Some(b) = self.backend {
            put("dawnBackendType", match b {
                WebGpuBackend::Vulkan => "Vulkan",
                WebGpuBackend::D3d12 => "D3D12",
            });
        }
        if let Some(l) = self.preferred_layout {
            put("preferredLayout", match l {
                WebGpuLayout::Nchw => "NCHW",
                WebGpuLayout::Nhwc => "NHWC",
            });
        }
        if let Some(v) = self.validation_mode {
            put("validationMode", match v {
                WebGpuValidation::Disabled => "disabled",
                WebGpuValidation::WgpuOnly => "wgpuOnly",
                WebGpuValidation::Basic => "basic",
                WebGpuValidation::Full => "full",
            });
        }
        out
    }
}

/// `{"name": "cuda", ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CudaOptions {
    /// The GPU's index (`ep::CUDA::with_device_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<u16>,
    /// Cap of the provider's memory arena in bytes (`ep::CUDA::with_memory_limit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<usize>,
}

/// `{"name": "tensorrt", ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TensorRtOptions {
    /// The GPU's index (`ep::TensorRT::with_device_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<u16>,
    /// Half-precision engines (`ep::TensorRT::with_fp16`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fp16: Option<bool>,
}

/// Where Core ML may run (`MLComputeUnits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoreMlComputeUnits {
    /// CPU, GPU and Neural Engine.
    All,
    /// CPU and Neural Engine.
    CpuAndNeuralEngine,
    /// CPU and GPU.
    CpuAndGpu,
    /// CPU only.
    CpuOnly,
}

/// The model format Core ML compiles to (`ModelFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoreMlModelFormat {
    /// ML Program (Core ML 5+, iOS 15+/macOS 12+).
    MlProgram,
    /// Neural network (Core ML 3+).
    NeuralNetwork,
}

/// `{"name": "coreml", ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreMlOptions {
    /// `ep::CoreML::with_compute_units`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute_units: Option<CoreMlComputeUnits>,
    /// `ep::CoreML::with_model_format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_format: Option<CoreMlModelFormat>,
    /// Folder where compiled models are cached between launches (`ep::CoreML::with_model_cache_dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_cache_dir: Option<PathBuf>,
    /// Only take nodes with static input shapes (`ep::CoreML::with_static_input_shapes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_input_shapes: Option<bool>,
}

/// `{"name": "nnapi", ...}`: NNAPI's flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NnapiOptions {
    /// Allow float32 to run as float16 (`ep::NNAPI::with_fp16`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fp16: Option<bool>,
    /// Use the NCHW layout (`ep::NNAPI::with_nchw`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nchw: Option<bool>,
    /// Keep NNAPI off its CPU device (`ep::NNAPI::with_disable_cpu`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_disabled: Option<bool>,
    /// Only NNAPI's CPU device (`ep::NNAPI::with_cpu_only`); excludes `cpu_disabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_only: Option<bool>,
}

/// The HTP's performance mode (`htp_performance_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum QnnPerformanceMode {
    Default,
    Burst,
    Balanced,
    HighPerformance,
    HighPowerSaver,
    LowPowerSaver,
    LowBalanced,
    PowerSaver,
    ExtremePowerSaver,
    SustainedHighPerformance,
}

/// `{"name": "qnn", ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QnnOptions {
    /// The QNN backend library, e.g. `libQnnHtp.so` (`ep::QNN::with_backend_path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_path: Option<PathBuf>,
    /// `ep::QNN::with_performance_mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performance_mode: Option<QnnPerformanceMode>,
    /// Run float32 as float16 on the HTP (`ep::QNN::with_htp_fp16_precision`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub htp_fp16_precision: Option<bool>,
    /// The device's index (`ep::QNN::with_device_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<u16>,
}

/// DirectML's adapter preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum DirectMlPerformance {
    Default,
    HighPerformance,
    MinimumPower,
}

/// `{"name": "directml", ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectMlOptions {
    /// The adapter's index (`ep::DirectML::with_device_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<u16>,
    /// `ep::DirectML::with_performance_preference`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performance_preference: Option<DirectMlPerformance>,
}

/// `{"name": "xnnpack", ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct XnnpackOptions {
    /// XNNPACK's own thread pool (`ep::XNNPACK::with_intra_op_num_threads`), at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<NonZeroUsize>,
}

/// One provider with its options, as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ProviderSpec {
    Cpu(CpuOptions),
    WebGpu(WebGpuOptions),
    Cuda(CudaOptions),
    TensorRt(TensorRtOptions),
    CoreMl(CoreMlOptions),
    Nnapi(NnapiOptions),
    Qnn(QnnOptions),
    DirectMl(DirectMlOptions),
    Xnnpack(XnnpackOptions),
}

impl ProviderSpec {
    /// The provider with ONNX Runtime's defaults.
    pub fn defaults(p: Provider) -> ProviderSpec {
        match p {
            Provider::Cpu => ProviderSpec::Cpu(CpuOptions::default()),
            Provider::WebGpu => ProviderSpec::WebGpu(WebGpuOptions::default()),
            Provider::Cuda => ProviderSpec::Cuda(CudaOptions::default()),
            Provider::TensorRt => ProviderSpec::TensorRt(TensorRtOptions::default()),
            Provider::CoreMl => ProviderSpec::CoreMl(CoreMlOptions::default()),
            Provider::Nnapi => ProviderSpec::Nnapi(NnapiOptions::default()),
            Provider::Qnn => ProviderSpec::Qnn(QnnOptions::default()),
            Provider::DirectMl => ProviderSpec::DirectMl(DirectMlOptions::default()),
            Provider::Xnnpack => ProviderSpec::Xnnpack(XnnpackOptions::default()),
        }
    }

    /// Which provider this is.
    pub fn provider(&self) -> Provider {
        match self {
            ProviderSpec::Cpu(_) => Provider::Cpu,
            ProviderSpec::WebGpu(_) => Provider::WebGpu,
            ProviderSpec::Cuda(_) => Provider::Cuda,
            ProviderSpec::TensorRt(_) => Provider::TensorRt,
            ProviderSpec::CoreMl(_) => Provider::CoreMl,
            ProviderSpec::Nnapi(_) => Provider::Nnapi,
            ProviderSpec::Qnn(_) => Provider::Qnn,
            ProviderSpec::DirectMl(_) => Provider::DirectMl,
            ProviderSpec::Xnnpack(_) => Provider::Xnnpack,
        }
    }

    /// The options as a JSON object (only those set).
    pub fn options_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let v = match self {
            ProviderSpec::Cpu(o) => serde_json::to_value(o),
            ProviderSpec::WebGpu(o) => serde_json::to_value(o),
            ProviderSpec::Cuda(o) => serde_json::to_value(o),
            ProviderSpec::TensorRt(o) => serde_json::to_value(o),
            ProviderSpec::CoreMl(o) => serde_json::to_value(o),
            ProviderSpec::Nnapi(o) => serde_json::to_value(o),
            ProviderSpec::Qnn(o) => serde_json::to_value(o),
            ProviderSpec::DirectMl(o) => serde_json::to_value(o),
            ProviderSpec::Xnnpack(o) => serde_json::to_value(o),
        };
        match v {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// Checks what one option alone cannot tell.
    fn check(&self) -> Result<()> {
        if let ProviderSpec::Nnapi(o) = self {
            if o.cpu_only == Some(true) && o.cpu_disabled == Some(true) {
                return Err(Error::Config("execution provider `nnapi`: `cpu_only` and `cpu_disabled` exclude each other".into()));
            }
        }
        Ok(())
    }
}

/// One entry of `engine.execution_providers` as written: a name (`"cuda"`) or an object with a
/// `name` and that provider's options. [`parse_list`] checks it; build one from a name with
/// `"cuda".into()` or from typed options with `ProviderSpec::Qnn(..).into()`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderEntry {
    /// The provider's name as written.
    pub name: String,
    /// The options besides `name` (empty for a bare name).
    pub options: serde_json::Map<String, serde_json::Value>,
}

impl From<&str> for ProviderEntry {
    fn from(name: &str) -> Self {
        ProviderEntry { name: name.to_string(), options: serde_json::Map::new() }
    }
}

impl From<String> for ProviderEntry {
    fn from(name: String) -> Self {
        ProviderEntry { name, options: serde_json::Map::new() }
    }
}

impl From<ProviderSpec> for ProviderEntry {
    fn from(spec: ProviderSpec) -> Self {
        ProviderEntry { name: spec.provider().name().to_string(), options: spec.options_json() }
    }
}

impl Serialize for ProviderEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.options.is_empty() {
            return s.serialize_str(&self.name);
        }
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1 + self.options.len()))?;
        m.serialize_entry("name", &self.name)?;
        for (k, v) in &self.options {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for ProviderEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(name) => Ok(name.into()),
            serde_json::Value::Object(mut options) => match options.remove("name") {
                Some(serde_json::Value::String(name)) => Ok(ProviderEntry { name, options }),
                Some(other) => Err(D::Error::custom(format!("an execution provider's `name` must be a string, not {other}"))),
                None => Err(D::Error::custom(format!(
                    "an execution provider object needs a `name` ({})",
                    serde_json::Value::Object(options)
                ))),
            },
            other => Err(D::Error::custom(format!(
                "an execution provider is a name or an object with a `name` and options, not {other}"
            ))),
        }
    }
}

/// Reads one provider's options: each key alone first, so that a bad value names its key, then all
/// together.
fn options<T: DeserializeOwned>(p: Provider, map: &serde_json::Map<String, serde_json::Value>) -> Result<T> {
    let fail = |key: Option<&str>, e: serde_json::Error| {
        let at = key.map(|k| format!(", option `{k}`")).unwrap_or_default();
        Error::Config(format!("execution provider `{}`{at}: {e}", p.name()))
    };
    for (k, v) in map {
        let one: serde_json::Map<_, _> = [(k.clone(), v.clone())].into_iter().collect();
        serde_json::from_value::<T>(serde_json::Value::Object(one)).map_err(|e| fail(Some(k), e))?;
    }
    serde_json::from_value(serde_json::Value::Object(map.clone())).map_err(|e| fail(None, e))
}

impl ProviderEntry {
    /// The provider and its typed options; an unknown name, key or value is an [`Error::Config`].
    pub fn parse(&self) -> Result<ProviderSpec> {
        let p: Provider = self.name.parse()?;
        let o = &self.options;
        let spec = match p {
            Provider::Cpu => ProviderSpec::Cpu(options(p, o)?),
            Provider::WebGpu => ProviderSpec::WebGpu(options(p, o)?),
            Provider::Cuda => ProviderSpec::Cuda(options(p, o)?),
            Provider::TensorRt => ProviderSpec::TensorRt(options(p, o)?),
            Provider::CoreMl => ProviderSpec::CoreMl(options(p, o)?),
            Provider::Nnapi => ProviderSpec::Nnapi(options(p, o)?),
            Provider::Qnn => ProviderSpec::Qnn(options(p, o)?),
            Provider::DirectMl => ProviderSpec::DirectMl(options(p, o)?),
            Provider::Xnnpack => ProviderSpec::Xnnpack(options(p, o)?),
        };
        spec.check()?;
        Ok(spec)
    }
}

/// Parses the configured list; an unknown name, option or value is an error whatever the
/// strictness, and so is an entry after `cpu` (the CPU provider takes every node left to it, so a
/// provider after it would never run).
pub fn parse_list(entries: &[ProviderEntry]) -> Result<Vec<ProviderSpec>> {
    let specs = entries.iter().map(ProviderEntry::parse).collect::<Result<Vec<_>>>()?;
    if let Some(i) = specs.iter().position(|s| s.provider() == Provider::Cpu) {
        if let Some(after) = specs.get(i + 1) {
            return Err(Error::Config(format!(
                "execution provider `{}` comes after `cpu`: `cpu` is ONNX Runtime's fallback, which runs every node the providers before it leave, so it must be the list's last entry",
                after.provider().name()
            )));
        }
    }
    Ok(specs)
}

// ---- Registration -------------------------------------------------------------------------------

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

/// A hardware device ONNX Runtime lists for a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// `cpu`, `gpu`, `npu` or `fpga`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The manufacturer, as ONNX Runtime reports it.
    pub vendor: String,
    /// ONNX Runtime's device id (for a GPU, usually its PCI device id; not an index).
    pub id: u32,
}

impl DeviceInfo {
    fn of(d: &ort::device::Device<'_>) -> DeviceInfo {
        use ort::memory::DeviceType;
        let hw = d.hardware_device();
        let kind = match hw.ty() {
            DeviceType::CPU => "cpu",
            DeviceType::GPU => "gpu",
            DeviceType::NPU => "npu",
            DeviceType::FPGA => "fpga",
        };
        DeviceInfo { kind, vendor: hw.vendor().unwrap_or_default().to_string(), id: hw.id() }
    }
}

/// A provider that registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveProvider {
    /// The provider.
    pub name: Provider,
    /// The kind of device it computes on: what ONNX Runtime lists for it when it lists it, else
    /// what the provider and its options target (`gpu`, `npu`, `cpu`, or `accelerator` where the
    /// system picks, as NNAPI and Core ML's `all` do).
    pub compute_device: &'static str,
    /// The devices ONNX Runtime lists for the provider (empty when it lists none for it, as for
    /// providers compiled into the ONNX Runtime library without device discovery).
    pub devices: Vec<DeviceInfo>,
    /// The options it was registered with (only those set).
    pub options: serde_json::Map<String, serde_json::Value>,
}

/// A provider that was configured but did not register (not strict mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedProvider {
    /// The provider.
    pub name: Provider,
    /// Why, as registration reported it.
    pub reason: String,
}

/// What [`register_all`] did: the active providers in priority order (CPU last) and those skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderReport {
    /// Registered providers, highest priority first; the CPU provider is always the last.
    pub active: Vec<ActiveProvider>,
    /// Configured providers that failed to register, with the reason.
    pub failed: Vec<FailedProvider>,
}

/// What a provider and its options target when ONNX Runtime lists no device for it.
fn nominal_device(spec: &ProviderSpec) -> &'static str {
    match spec {
        ProviderSpec::Cpu(_) | ProviderSpec::Xnnpack(_) => "cpu",
        ProviderSpec::WebGpu(_) | ProviderSpec::Cuda(_) | ProviderSpec::TensorRt(_) | ProviderSpec::DirectMl(_) => "gpu",
        ProviderSpec::CoreMl(o) => match o.compute_units {
            Some(CoreMlComputeUnits::CpuOnly) => "cpu",
            Some(CoreMlComputeUnits::CpuAndGpu) => "gpu",
            Some(CoreMlComputeUnits::CpuAndNeuralEngine) => "npu",
            Some(CoreMlComputeUnits::All) | None => "accelerator",
        },
        ProviderSpec::Nnapi(o) => {
            if o.cpu_only == Some(true) {
                "cpu"
            } else {
                "accelerator"
            }
        }
        ProviderSpec::Qnn(o) => {
            let lib = o.backend_path.as_deref().and_then(|p| p.file_name()).map(|f| f.to_string_lossy().to_ascii_lowercase());
            match lib.as_deref() {
                Some(l) if l.contains("gpu") => "gpu",
                Some(l) if l.contains("cpu") => "cpu",
                _ => "npu",
            }
        }
    }
}

fn listed_devices<'e>(env: &'e ort::environment::Environment, p: Provider) -> Vec<ort::device::Device<'e>> {
    env.devices().filter(|d| d.ep().map(|n| n == p.ort_name()).unwrap_or(false)).collect()
}

fn register_webgpu(
    env: &ort::environment::Environment,
    builder: SessionBuilder,
    library: &Path,
    opts: &WebGpuOptions,
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
    let devices = listed_devices(env, Provider::WebGpu);
    if devices.is_empty() {
        return Err((
            builder,
            "the WebGPU plugin lists no device (no GPU/Vulkan driver found; on a machine without GPU hardware set ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER=1 and install Mesa's lavapipe)".into(),
        ));
    }
    // `with_devices` hands an option to the devices of the provider its key is prefixed with (and
    // drops the others), without the prefix.
    let options: Vec<(String, String)> = opts.ort_options().into_iter().map(|(k, v)| (format!("{WEBGPU_EP_NAME}.{k}"), v)).collect();
    builder.with_devices(devices, if options.is_empty() { None } else { Some(&options) }).map_err(|e| {
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

/// Applies `$set` to `$ep` when the option is set.
#[allow(unused_macros)]
macro_rules! opt {
    ($ep:ident, $value:expr, |$v:ident| $set:expr) => {
        if let Some($v) = $value.clone() {
            $ep = $set;
        }
    };
}

fn register_one(
    env: &ort::environment::Environment,
    builder: SessionBuilder,
    spec: &ProviderSpec,
    webgpu_library: &Path,
) -> std::result::Result<SessionBuilder, (SessionBuilder, String)> {
    let not_built = |feature: &str| format!("not compiled in (build with `--features {feature}`)");
    match spec {
        ProviderSpec::Cpu(o) => match o.arena {
            None => Ok(builder),
            Some(arena) => classic_ep!(builder, ort::ep::CPU::default().with_arena_allocator(arena)),
        },
        ProviderSpec::WebGpu(o) => {
            let library = o.library.clone().unwrap_or_else(|| webgpu_library.to_path_buf());
            register_webgpu(env, builder, &library, o)
        }
        #[cfg(feature = "cuda")]
        ProviderSpec::Cuda(o) => {
            let mut ep = ort::ep::CUDA::default();
            opt!(ep, o.device_id, |v| ep.with_device_id(i32::from(v)));
            opt!(ep, o.memory_limit, |v| ep.with_memory_limit(v));
            classic_ep!(builder, ep)
        }
        #[cfg(feature = "tensorrt")]
        ProviderSpec::TensorRt(o) => {
            let mut ep = ort::ep::TensorRT::default();
            opt!(ep, o.device_id, |v| ep.with_device_id(i32::from(v)));
            opt!(ep, o.fp16, |v| ep.with_fp16(v));
            classic_ep!(builder, ep)
        }
        #[cfg(feature = "coreml")]
        ProviderSpec::CoreMl(o) => {
            use ort::ep::coreml::{ComputeUnits, ModelFormat};
            let mut ep = ort::ep::CoreML::default();
            opt!(ep, o.compute_units, |v| ep.with_compute_units(match v {
                CoreMlComputeUnits::All => ComputeUnits::All,
                CoreMlComputeUnits::CpuAndNeuralEngine => ComputeUnits::CPUAndNeuralEngine,
                CoreMlComputeUnits::CpuAndGpu => ComputeUnits::CPUAndGPU,
                CoreMlComputeUnits::CpuOnly => ComputeUnits::CPUOnly,
            }));
            opt!(ep, o.model_format, |v| ep.with_model_format(match v {
                CoreMlModelFormat::MlProgram => ModelFormat::MLProgram,
                CoreMlModelFormat::NeuralNetwork => ModelFormat::NeuralNetwork,
            }));
            opt!(ep, o.model_cache_dir, |v| ep.with_model_cache_dir(v.display()));
            opt!(ep, o.static_input_shapes, |v| ep.with_static_input_shapes(v));
            classic_ep!(builder, ep)
        }
        #[cfg(feature = "nnapi")]
        ProviderSpec::Nnapi(o) => {
            let mut ep = ort::ep::NNAPI::default();
            opt!(ep, o.fp16, |v| ep.with_fp16(v));
            opt!(ep, o.nchw, |v| ep.with_nchw(v));
            opt!(ep, o.cpu_disabled, |v| ep.with_disable_cpu(v));
            opt!(ep, o.cpu_only, |v| ep.with_cpu_only(v));
            classic_ep!(builder, ep)
        }
        #[cfg(feature = "qnn")]
        ProviderSpec::Qnn(o) => {
            use ort::ep::qnn::PerformanceMode as M;
            let mut ep = ort::ep::QNN::default();
            opt!(ep, o.backend_path, |v| ep.with_backend_path(v.display()));
            opt!(ep, o.performance_mode, |v| ep.with_performance_mode(match v {
                QnnPerformanceMode::Default => M::Default,
                QnnPerformanceMode::Burst => M::Burst,
                QnnPerformanceMode::Balanced => M::Balanced,
                QnnPerformanceMode::HighPerformance => M::HighPerformance,
                QnnPerformanceMode::HighPowerSaver => M::HighPowerSaver,
                QnnPerformanceMode::LowPowerSaver => M::LowPowerSaver,
                QnnPerformanceMode::LowBalanced => M::LowBalanced,
                QnnPerformanceMode::PowerSaver => M::PowerSaver,
                QnnPerformanceMode::ExtremePowerSaver => M::ExtremePowerSaver,
                QnnPerformanceMode::SustainedHighPerformance => M::SustainedHighPerformance,
            }));
            opt!(ep, o.htp_fp16_precision, |v| ep.with_htp_fp16_precision(v));
            opt!(ep, o.device_id, |v| ep.with_device_id(i32::from(v)));
            classic_ep!(builder, ep)
        }
        #[cfg(feature = "directml")]
        ProviderSpec::DirectMl(o) => {
            use ort::ep::directml::PerformancePreference as P;
            let mut ep = ort::ep::DirectML::default();
            opt!(ep, o.device_id, |v| ep.with_device_id(i32::from(v)));
            opt!(ep, o.performance_preference, |v| ep.with_performance_preference(match v {
                DirectMlPerformance::Default => P::Default,
                DirectMlPerformance::HighPerformance => P::HighPerformance,
                DirectMlPerformance::MinimumPower => P::MinimumPower,
            }));
            classic_ep!(builder, ep)
        }
        #[cfg(feature = "xnnpack")]
        ProviderSpec::Xnnpack(o) => {
            let mut ep = ort::ep::XNNPACK::default();
            opt!(ep, o.threads, |v| ep.with_intra_op_num_threads(v));
            classic_ep!(builder, ep)
        }
        #[allow(unreachable_patterns)]
        other => Err((builder, not_built(other.provider().name()))),
    }
}

/// Registers the providers in order; returns the builder and what registered (CPU last) and what
/// did not. In strict mode the first failure is an error. A provider listed twice registers once
/// (its first entry). `cpu`, the last entry when present ([`parse_list`]), applies its options; ONNX
/// Runtime's CPU provider is active whether or not it is listed.
pub fn register_all(
    env: &ort::environment::Environment,
    mut builder: SessionBuilder,
    providers: &[ProviderSpec],
    strict: bool,
    webgpu_library: &Path,
) -> Result<(SessionBuilder, ProviderReport)> {
    let mut report = ProviderReport { active: Vec::new(), failed: Vec::new() };
    let mut seen = Vec::new();
    let mut cpu = ProviderSpec::defaults(Provider::Cpu);
    for spec in providers {
        let p = spec.provider();
        if seen.contains(&p) {
            continue;
        }
        seen.push(p);
        if p == Provider::Cpu {
            // Registered last, below.
            cpu = spec.clone();
            continue;
        }
        match register_one(env, builder, spec, webgpu_library) {
            Ok(b) => {
                log::info!("execution provider {} registered", p.name());
                report.active.push(active(env, spec));
                builder = b;
            }
            Err((b, reason)) => {
                if strict {
                    return Err(Error::ExecutionProvider { name: p.name().into(), reason });
                }
                log::warn!("execution provider {} unavailable, trying the next: {reason}", p.name());
                report.failed.push(FailedProvider { name: p, reason });
                builder = b;
            }
        }
    }
    builder = register_one(env, builder, &cpu, webgpu_library)
        .map_err(|(_, reason)| Error::ExecutionProvider { name: "cpu".into(), reason })?;
    report.active.push(active(env, &cpu));
    Ok((builder, report))
}

fn active(env: &ort::environment::Environment, spec: &ProviderSpec) -> ActiveProvider {
    let devices: Vec<DeviceInfo> = listed_devices(env, spec.provider()).iter().map(DeviceInfo::of).collect();
    let compute_device = devices.first().map(|d| d.kind).unwrap_or_else(|| nominal_device(spec));
    ActiveProvider { name: spec.provider(), compute_device, devices, options: spec.options_json() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(json: &str) -> Result<Vec<ProviderSpec>> {
        let entries: Vec<ProviderEntry> = serde_json::from_str(json).map_err(|e| Error::Config(e.to_string()))?;
        parse_list(&entries)
    }

    fn config_error(json: &str) -> String {
        match list(json) {
            Err(Error::Config(m)) => m,
            other => panic!("{json}: expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn names_and_objects_parse_into_typed_options() {
        let specs = list(
            r#"["WebGPU", {"name": "qnn", "backend_path": "libQnnHtp.so", "performance_mode": "burst", "htp_fp16_precision": true},
                {"name": "nnapi", "fp16": true, "nchw": false, "cpu_disabled": true},
                {"name": "coreml", "compute_units": "cpu_and_neural_engine", "model_format": "ml_program", "model_cache_dir": "/tmp/c"},
                {"name": "cuda", "device_id": 1, "memory_limit": 1073741824}, {"name": "tensorrt", "device_id": 2, "fp16": true},
                {"name": "directml", "device_id": 3, "performance_preference": "minimum_power"}, {"name": "xnnpack", "threads": 2},
                {"name": "cpu", "arena": false}]"#,
        )
        .unwrap();
        assert_eq!(specs[0], ProviderSpec::WebGpu(WebGpuOptions::default()));
        assert_eq!(
            specs[1],
            ProviderSpec::Qnn(QnnOptions {
                backend_path: Some("libQnnHtp.so".into()),
                performance_mode: Some(QnnPerformanceMode::Burst),
                htp_fp16_precision: Some(true),
                device_id: None
            })
        );
        assert_eq!(specs[2], ProviderSpec::Nnapi(NnapiOptions { fp16: Some(true), nchw: Some(false), cpu_disabled: Some(true), cpu_only: None }));
        let ProviderSpec::CoreMl(c) = &specs[3] else { panic!("{:?}", specs[3]) };
        assert_eq!((c.compute_units, c.model_format), (Some(CoreMlComputeUnits::CpuAndNeuralEngine), Some(CoreMlModelFormat::MlProgram)));
        assert_eq!(specs[4], ProviderSpec::Cuda(CudaOptions { device_id: Some(1), memory_limit: Some(1 << 30) }));
        assert_eq!(specs[5], ProviderSpec::TensorRt(TensorRtOptions { device_id: Some(2), fp16: Some(true) }));
        assert_eq!(specs[6], ProviderSpec::DirectMl(DirectMlOptions { device_id: Some(3), performance_preference: Some(DirectMlPerformance::MinimumPower) }));
        assert_eq!(specs[7], ProviderSpec::Xnnpack(XnnpackOptions { threads: NonZeroUsize::new(2) }));
        assert_eq!(specs[8], ProviderSpec::Cpu(CpuOptions { arena: Some(false) }));
        assert_eq!(nominal_device(&specs[1]), "npu");
        assert_eq!(nominal_device(&specs[3]), "npu");
    }

    #[test]
    fn webgpu_options_become_the_plugins_keys() {
        let specs = list(r#"[{"name": "webgpu", "power_preference": "low_power", "backend": "vulkan", "preferred_layout": "nchw", "validation_mode": "wgpu_only"}]"#).unwrap();
        let ProviderSpec::WebGpu(o) = &specs[0] else { panic!() };
        let keys = o.ort_options();
        let expect = [("powerPreference", "low-power"), ("dawnBackendType", "Vulkan"), ("preferredLayout", "NCHW"), ("validationMode", "wgpuOnly")];
        assert_eq!(keys, expect.map(|(k, v)| (k.to_string(), v.to_string())).to_vec());
        assert!(WebGpuOptions::default().ort_options().is_empty());
    }

    #[test]
    fn unknown_keys_name_the_provider_and_the_key() {
        let m = config_error(r#"[{"name": "qnn", "backend_path": "libQnnHtp.so", "htp_mode": "burst"}]"#);
        assert!(m.contains("`qnn`") && m.contains("`htp_mode`") && m.contains("performance_mode"), "{m}");
        // A key of another provider is unknown here.
        let m = config_error(r#"[{"name": "cuda", "threads": 2}]"#);
        assert!(m.contains("`cuda`") && m.contains("`threads`"), "{m}");
        let m = config_error(r#"[{"name": "cpu", "device_id": 0}]"#);
        assert!(m.contains("`cpu`") && m.contains("`device_id`"), "{m}");
    }

    #[test]
    fn bad_values_name_the_provider_and_the_key() {
        for (json, key) in [
            (r#"[{"name": "qnn", "performance_mode": "turbo"}]"#, "performance_mode"),
            (r#"[{"name": "xnnpack", "threads": 0}]"#, "threads"),
            (r#"[{"name": "cuda", "device_id": -1}]"#, "device_id"),
            (r#"[{"name": "nnapi", "fp16": "yes"}]"#, "fp16"),
            (r#"[{"name": "coreml", "compute_units": "gpu"}]"#, "compute_units"),
            (r#"[{"name": "webgpu", "power_preference": "fast"}]"#, "power_preference"),
        ] {
            let m = config_error(json);
            let provider = json.split('"').nth(3).unwrap();
            assert!(m.contains(&format!("`{provider}`")) && m.contains(&format!("`{key}`")), "{json}: {m}");
        }
        let m = config_error(r#"[{"name": "nnapi", "cpu_only": true, "cpu_disabled": true}]"#);
        assert!(m.contains("cpu_only") && m.contains("cpu_disabled"), "{m}");
    }

    #[test]
    fn malformed_entries_and_names_are_refused() {
        assert!(config_error(r#"["warpdrive"]"#).contains("warpdrive"));
        assert!(config_error(r#"[{"name": "warpdrive", "x": 1}]"#).contains("warpdrive"));
        assert!(config_error(r#"[{"backend_path": "x"}]"#).contains("`name`"));
        assert!(config_error(r#"[{"name": 3}]"#).contains("`name`"));
        assert!(config_error(r#"[7]"#).contains("name or an object"));
    }

    #[test]
    fn cpu_must_be_the_last_entry() {
        let m = config_error(r#"["cpu", "webgpu"]"#);
        assert!(m.contains("`webgpu` comes after `cpu`"), "{m}");
        assert_eq!(list(r#"["webgpu", "cpu"]"#).unwrap().len(), 2);
        assert!(list("[]").unwrap().is_empty());
    }

    #[test]
    fn entries_round_trip_through_json() {
        let json = r#"[{"name":"qnn","backend_path":"libQnnHtp.so","performance_mode":"high_performance"},"cpu"]"#;
        let entries: Vec<ProviderEntry> = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&entries).unwrap(), json);
        let typed: ProviderEntry = ProviderSpec::Xnnpack(XnnpackOptions { threads: NonZeroUsize::new(3) }).into();
        assert_eq!(serde_json::to_string(&typed).unwrap(), r#"{"name":"xnnpack","threads":3}"#);
        assert_eq!(typed.parse().unwrap(), ProviderSpec::Xnnpack(XnnpackOptions { threads: NonZeroUsize::new(3) }));
    }
}
