//! The compute pipelines and the plain-data blocks the shaders read.

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};

const COMMON: &str = include_str!("common.wgsl");
const BASE: &str = include_str!("base.wgsl");
const REDUCE: &str = include_str!("reduce.wgsl");

/// One compute kernel; the discriminant indexes [`Kernels`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
    Project,
    Delta,
    Stats,
    Outer,
    RowGrad,
    Adam,
    Scatter,
    StepKl,
}

impl Kernel {
    const ALL: [Kernel; 8] =
        [Kernel::Project, Kernel::Delta, Kernel::Stats, Kernel::Outer, Kernel::RowGrad, Kernel::Adam, Kernel::Scatter, Kernel::StepKl];

    /// The kernel's name (its shader file's stem), for labels and messages.
    pub(super) fn name(self) -> &'static str {
        match self {
            Kernel::Project => "project",
            Kernel::Delta => "delta",
            Kernel::Stats => "stats",
            Kernel::Outer => "outer",
            Kernel::RowGrad => "rowgrad",
            Kernel::Adam => "adam",
            Kernel::Scatter => "scatter",
            Kernel::StepKl => "stepkl",
        }
    }

    /// The full WGSL source: the shared declarations, the helpers the kernel needs, then its own file.
    fn source(self) -> String {
        let (own, needs_base, needs_reduce) = match self {
            Kernel::Project => (include_str!("project.wgsl"), false, true),
            Kernel::Delta => (include_str!("delta.wgsl"), false, false),
            Kernel::Stats => (include_str!("stats.wgsl"), true, true),
            Kernel::Outer => (include_str!("outer.wgsl"), false, false),
            Kernel::RowGrad => (include_str!("rowgrad.wgsl"), true, false),
            Kernel::Adam => (include_str!("adam.wgsl"), false, false),
            Kernel::Scatter => (include_str!("scatter.wgsl"), false, false),
            Kernel::StepKl => (include_str!("stepkl.wgsl"), true, true),
        };
        let mut src = String::from(COMMON);
        if needs_base {
            src.push_str(BASE);
        }
        if needs_reduce {
            src.push_str(REDUCE);
        }
        src.push_str(own);
        src
    }
}

/// The parameter block every kernel reads (the WGSL `Params`); each field's meaning depends on the
/// kernel, see the shader files.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub(super) struct Params {
    pub r: u32,
    pub d: u32,
    pub vocab: u32,
    pub n_act: u32,
    pub n_tok: u32,
    pub t0: u32,
    pub n_rows: u32,
    pub lp_words: u32,
    pub kept_off: u32,
    pub kept_words: u32,
    pub ustride: u32,
    pub uoff: u32,
    pub scale: f32,
    pub scale2: f32,
    pub mode: u32,
    pub n_elems: u32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub off_b: u32,
    pub off_v: u32,
    pub n_groups: u32,
    pub src_off: u32,
    pub pad: u32,
}

/// One recorded token as the kernels see it (the WGSL `Tok`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub(super) struct TokGpu {
    pub token: u32,
    pub kept: u32,
    pub tau: f32,
    pub lse: f32,
    pub c: f32,
    pub beta: f32,
    pub goal: f32,
    pub has_target: u32,
    /// The logit weight `k_t` (added to the sampled token's logit gradient).
    pub k: f32,
}

/// Values per token in the statistics buffer written by `stats`.
pub(super) const STAT_WORDS: usize = 8;

/// The compiled pipelines, one per [`Kernel`].
#[derive(Debug)]
pub(super) struct Kernels {
    pipelines: Vec<(wgpu::ComputePipeline, wgpu::BindGroupLayout)>,
}

impl Kernels {
    /// Compiles every kernel; a shader the device rejects becomes an [`Error::Gpu`] (the caller runs
    /// this inside an error scope).
    pub(super) fn new(device: &wgpu::Device) -> Result<Kernels> {
        let mut pipelines = Vec::with_capacity(Kernel::ALL.len());
        for k in Kernel::ALL {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(k.name()),
                source: wgpu::ShaderSource::Wgsl(k.source().into()),
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.name()),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            });
            let layout = pipeline.get_bind_group_layout(0);
            pipelines.push((pipeline, layout));
        }
        if pipelines.len() != Kernel::ALL.len() {
            return Err(Error::Gpu("not every kernel was built".into()));
        }
        Ok(Kernels { pipelines })
    }

    /// The pipeline and bind group layout of `k`.
    pub(super) fn get(&self, k: Kernel) -> (&wgpu::ComputePipeline, &wgpu::BindGroupLayout) {
        let (p, l) = &self.pipelines[k as usize];
        (p, l)
    }
}
