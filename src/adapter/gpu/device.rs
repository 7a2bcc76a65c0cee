//! Choosing where the adapter math runs: the [`ComputeDevice`] setting, finding a wgpu adapter, and
//! building the matching [`AdapterMath`].

#[cfg(feature = "gpu")]
use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[cfg(feature = "gpu")]
use super::exec::Core;
#[cfg(feature = "gpu")]
use super::fallback::FallbackMath;
#[cfg(feature = "gpu")]
use super::math::GpuMath;
use crate::adapter::{AdapterMath, CpuMath};
#[cfg(feature = "gpu")]
use crate::error::{Error, Result};

/// Where the adapter math runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDevice {
    /// A hardware GPU when one exists, the CPU otherwise (a software GPU only with
    /// [`ComputeConfig::allow_software`]).
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// A GPU, software ones included; the CPU only when no adapter works.
    Gpu,
}

/// The compute settings of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComputeConfig {
    /// Where the math runs.
    pub device: ComputeDevice,
    /// Whether [`ComputeDevice::Auto`] may pick a software adapter (such as Mesa's lavapipe), which is
    /// correct but usually slower than the CPU path.
    pub allow_software: bool,
}

/// What kind of device an adapter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// A discrete GPU.
    Discrete,
    /// A GPU sharing memory with the CPU.
    Integrated,
    /// A virtualised GPU.
    Virtual,
    /// A software rasteriser running on the CPU (lavapipe, llvmpipe, WARP, SwiftShader).
    Software,
    /// The driver did not say.
    Other,
}

/// A description of a wgpu adapter in plain types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterSummary {
    /// The adapter's name as the driver reports it.
    pub name: String,
    /// The graphics API (Vulkan, Metal, Dx12, Gl).
    pub backend: String,
    /// The driver's name and version, where known.
    pub driver: String,
    /// What kind of device it is.
    pub kind: AdapterKind,
}

impl AdapterSummary {
    #[cfg(feature = "gpu")]
    fn of(info: &wgpu::AdapterInfo) -> AdapterSummary {
        let kind = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => AdapterKind::Discrete,
            wgpu::DeviceType::IntegratedGpu => AdapterKind::Integrated,
            wgpu::DeviceType::VirtualGpu => AdapterKind::Virtual,
            wgpu::DeviceType::Cpu => AdapterKind::Software,
            wgpu::DeviceType::Other => AdapterKind::Other,
        };
        let driver = format!("{} {}", info.driver, info.driver_info).trim().to_string();
        AdapterSummary { name: info.name.clone(), backend: format!("{:?}", info.backend), driver, kind }
    }

    /// Whether the adapter is a software rasteriser.
    pub fn is_software(&self) -> bool {
        self.kind == AdapterKind::Software
    }

    #[cfg(feature = "gpu")]
    fn rank(&self) -> u8 {
        match self.kind {
            AdapterKind::Discrete => 0,
            AdapterKind::Integrated => 1,
            AdapterKind::Virtual => 2,
            AdapterKind::Other => 3,
            AdapterKind::Software => 4,
        }
    }
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {:?}", self.name, self.backend, self.kind)?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        write!(f, ")")
    }
}

/// An opened GPU: the handle [`GpuMath::new`] takes. Cloning shares the device.
///
/// Opening it is separate from building the math so that tests and hosts can open one device and
/// hand it to several [`GpuMath`]s.
#[cfg(feature = "gpu")]
#[derive(Debug, Clone)]
pub struct GpuDevice {
    pub(super) core: Arc<Core>,
}

/// The limits the kernels need beyond wgpu's downlevel defaults, raised to what the adapter offers
/// for buffer sizes; `None` when the adapter falls short.
#[cfg(feature = "gpu")]
fn limits_for(adapter: &wgpu::Adapter) -> Option<wgpu::Limits> {
    let have = adapter.limits();
    let mut want = wgpu::Limits::downlevel_defaults();
    want.max_storage_buffers_per_shader_stage = 8;
    want.max_compute_workgroup_size_x = 256;
    want.max_compute_invocations_per_workgroup = 256;
    want.max_compute_workgroup_storage_size = 4096;
    want.max_storage_buffer_binding_size = have.max_storage_buffer_binding_size;
    want.max_buffer_size = have.max_buffer_size;
    want.check_limits(&have).then_some(want)
}

#[cfg(feature = "gpu")]
impl GpuDevice {
    /// Opens the best adapter wgpu finds (discrete, then integrated, virtual, other, and software
    /// only when `allow_software`). The backends follow `WGPU_BACKEND` when set.
    ///
    /// Returns [`Error::Gpu`] when no adapter fits; the message lists what was found and why each
    /// was passed over.
    pub fn request(allow_software: bool) -> Result<GpuDevice> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let mut skipped = Vec::new();
        let mut usable = Vec::new();
        for adapter in adapters {
            let summary = AdapterSummary::of(&adapter.get_info());
            let compute = adapter.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS);
            if !compute {
                skipped.push(format!("{summary}: no compute shaders"));
            } else if summary.is_software() && !allow_software {
                skipped.push(format!("{summary}: software adapter not allowed"));
            } else if let Some(limits) = limits_for(&adapter) {
                usable.push((summary, adapter, limits));
            } else {
                skipped.push(format!("{summary}: limits too low"));
            }
        }
        usable.sort_by_key(|(s, _, _)| s.rank());
        for (summary, adapter, limits) in usable {
            let desc = wgpu::DeviceDescriptor { label: Some("attune"), required_limits: limits, ..Default::default() };
            match pollster::block_on(adapter.request_device(&desc)) {
                Ok((device, queue)) => return Ok(GpuDevice { core: Arc::new(Core::new(device, queue, summary)) }),
                Err(e) => skipped.push(format!("{summary}: {e}")),
            }
        }
        let found = if skipped.is_empty() { "no adapter found".to_string() } else { skipped.join("; ") };
        Err(Error::Gpu(format!("no usable GPU adapter ({found})")))
    }

    /// The adapter this device runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.core.info
    }

    /// Destroys the device as a driver reset would, so that tests can check the fallback; every
    /// later GPU call on it fails with [`Error::Gpu`].
    #[doc(hidden)]
    pub fn destroy(&self) {
        self.core.device.destroy();
    }
}

/// Which math [`math_for`] built, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChoice {
    /// The adapter in use, or `None` for the CPU.
    pub adapter: Option<AdapterSummary>,
    /// Why this device was chosen, in words (also logged).
    pub reason: String,
}

/// Builds the adapter math `config` asks for: a [`FallbackMath`] on the chosen GPU, or a
/// [`CpuMath`]. Never fails: without a usable GPU the CPU is used. The choice and its reason are
/// logged at info level (a refused explicit `gpu` request at warn level).
pub fn math_for(config: &ComputeConfig) -> (Box<dyn AdapterMath + Send>, DeviceChoice) {
    let allow_software = match config.device {
        ComputeDevice::Cpu => {
            let reason = "the compute device is set to cpu".to_string();
            log::info!("adapter math on the CPU: {reason}");
            return (Box::new(CpuMath::new()), DeviceChoice { adapter: None, reason });
        }
        ComputeDevice::Gpu => true,
        ComputeDevice::Auto => config.allow_software,
    };
    gpu_or_cpu(config.device, allow_software)
}

/// The CPU math, with the reason it was chosen over a GPU `device` asked for.
fn cpu_because(device: ComputeDevice, reason: String) -> (Box<dyn AdapterMath + Send>, DeviceChoice) {
    if device == ComputeDevice::Gpu {
        log::warn!("adapter math on the CPU although the GPU was asked for: {reason}");
    } else {
        log::info!("adapter math on the CPU: {reason}");
    }
    (Box::new(CpuMath::new()), DeviceChoice { adapter: None, reason })
}

#[cfg(not(feature = "gpu"))]
fn gpu_or_cpu(device: ComputeDevice, _allow_software: bool) -> (Box<dyn AdapterMath + Send>, DeviceChoice) {
    cpu_because(device, "this build of the library has no GPU support (the `gpu` cargo feature is off)".to_string())
}

#[cfg(feature = "gpu")]
fn gpu_or_cpu(device: ComputeDevice, allow_software: bool) -> (Box<dyn AdapterMath + Send>, DeviceChoice) {
    match GpuDevice::request(allow_software).and_then(|dev| GpuMath::new(&dev)) {
        Ok(gpu) => {
            let adapter = gpu.adapter().clone();
            let reason = if adapter.is_software() {
                format!("{device:?} allows a software adapter; {adapter} is one (correct, but not faster than the CPU)")
            } else {
                format!("{device:?} found a hardware adapter: {adapter}")
            };
            log::info!("adapter math on the GPU: {reason}");
            (Box::new(FallbackMath::new(gpu)), DeviceChoice { adapter: Some(adapter), reason })
        }
        Err(e) => cpu_because(device, format!("{e}")),
    }
}
