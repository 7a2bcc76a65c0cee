//! The engine: one ONNX Runtime session per model, execution providers, and the KV cache.
//!
//! `ort` types stay inside this module. The KV cache lives in preallocated tensors of shape
//! `[1, kv_heads, capacity, head_size]`, bound both as the graph's `past_key_values.*` input and as its
//! `present.*` output, so GroupQueryAttention appends each step's keys and values in place and no
//! step copies the cache (onnxruntime-genai's "past_present_share_buffer").

pub mod model;
pub mod ortlib;
pub mod providers;

use std::path::PathBuf;
use std::sync::Mutex;

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{IoBinding, Session};
use ort::value::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use model::ModelInfo;
pub use providers::{ActiveProvider, Provider, ProviderEntry, ProviderReport, ProviderSpec};

/// The most intra-op threads a configuration may ask for (`engine.threads`): far more than any
/// device has cores, and far fewer than would exhaust the process's threads.
pub const MAX_THREADS: usize = 256;

/// How the engine is set up: model folder, ONNX Runtime library, providers, threads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// The model folder (genai layout).
    pub model_dir: PathBuf,
    /// Explicit path of `libonnxruntime`; see [`ortlib::candidate_paths`] for the fallbacks.
    pub ort_library: Option<PathBuf>,
    /// Execution providers in order of preference: names (`webgpu`, `cuda`, ...) or objects with a
    /// `name` and the provider's options (see [`providers`]). ONNX Runtime's CPU provider always runs
    /// what the others leave; `cpu` may only be the last entry.
    pub execution_providers: Vec<ProviderEntry>,
    /// When true, a provider that fails to register is an error instead of a warning.
    pub strict_providers: bool,
    /// Path of the WebGPU plugin library (default: `make setup`'s `.ort/`).
    pub webgpu_library: Option<PathBuf>,
    /// Intra-op threads; 0 lets ONNX Runtime choose. At most [`MAX_THREADS`].
    pub threads: usize,
    /// KV-cache capacity in tokens for one sequence; 0 uses min(model context, 2048).
    pub max_context: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            model_dir: PathBuf::new(),
            ort_library: None,
            execution_providers: vec!["cpu".into()],
            strict_providers: false,
            webgpu_library: None,
            threads: 0,
            max_context: 0,
        }
    }
}

/// A loaded model: the ONNX session and what is known about the graph.
pub struct Engine {
    info: ModelInfo,
    session: Mutex<Session>,
    active: Vec<Provider>,
    report: ProviderReport,
    capacity: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("model", &self.info.dir).field("providers", &self.active).finish()
    }
}

impl Engine {
    /// Loads ONNX Runtime (once per process), checks the model folder and creates the session.
    pub fn load(cfg: &EngineConfig) -> Result<Engine> {
        let providers = providers::parse_list(&cfg.execution_providers)?;
        let mut info = ModelInfo::from_dir(&cfg.model_dir)?;
        let env = ortlib::environment(cfg.ort_library.as_deref())?;
        let mut builder = Session::builder(env)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| Error::Ort(e.to_string()))?;
        if cfg.threads > 0 {
            builder = builder.with_intra_threads(cfg.threads).map_err(|e| Error::Ort(e.to_string()))?;
        }
        let webgpu = providers::webgpu_library_path(cfg.webgpu_library.as_deref());
        let (mut builder, report) = providers::register_all(env, builder, &providers, cfg.strict_providers, &webgpu)?;
        let active: Vec<Provider> = report.active.iter().map(|a| a.name).collect();
        let session = builder
            .commit_from_file(&info.onnx_path)
            .map_err(|e| Error::model(&info.dir, format!("ONNX Runtime cannot load {}: {e}", info.onnx_path.display())))?;
        let inputs: Vec<String> = session.inputs().iter().map(|o| o.name().to_string()).collect();
        let outputs: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
        info.check_signature(&inputs, &outputs)?;
        // An input with a default (an initializer of the same name) is listed apart from the others.
        info.names.logits_to_keep = session
            .overridable_initializers()
            .iter()
            .map(|o| o.name().to_string())
            .chain(inputs.iter().cloned())
            .find(|i| i == model::LOGITS_TO_KEEP);
        let capacity = if cfg.max_context == 0 { info.context_length.min(2048) } else { cfg.max_context.min(info.context_length) };
        log::info!(
            "model {} loaded: profile {}, {} layers, vocab {}, hidden {}, KV capacity {capacity}, providers {:?}",
            info.dir.display(),
            info.profile_name(),
            info.num_layers,
            info.vocab_size,
            info.hidden_size,
            active.iter().map(|p| p.name()).collect::<Vec<_>>()
        );
        Ok(Engine { info, session: Mutex::new(session), active, report, capacity })
    }

    /// What the model folder declared.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Providers that registered, in priority order (CPU last).
    pub fn active_providers(&self) -> &[Provider] {
        &self.active
    }

    /// The active providers with their compute devices and options, and those that failed.
    pub fn provider_report(&self) -> &ProviderReport {
        &self.report
    }

    /// The kind of device the highest-priority provider computes on (`cpu`, `gpu`, `npu`, ...).
    pub fn compute_device(&self) -> &'static str {
        self.report.active.first().map(|a| a.compute_device).unwrap_or("cpu")
    }

    /// Whether the KV cache is updated in place (CPU provider first) rather than rebound each step.
    pub fn kv_in_place(&self) -> bool {
        self.active.first() == Some(&Provider::Cpu)
    }

    /// Tokens one sequence can hold (prompt plus reply).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of one sequence's KV cache at full capacity (keys and values of every layer, f32).
    pub fn kv_bytes_per_sequence(&self) -> usize {
        let i = &self.info;
        2 * i.num_layers * i.num_kv_heads * i.head_size * self.capacity * std::mem::size_of::<f32>()
    }

    /// A fresh sequence (empty KV cache) holding up to `capacity()` tokens.
    pub fn new_sequence(&self) -> Result<Sequence> {
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let info = &self.info;
        let shape = [1usize, info.num_kv_heads, self.capacity, info.head_size];
        let mut binding = session.create_binding()?;
        let mut keys = Vec::with_capacity(info.num_layers);
        let mut values = Vec::with_capacity(info.num_layers);
        for _ in 0..info.num_layers {
            keys.push(Tensor::<f32>::new(session.allocator(), shape)?);
            values.push(Tensor::<f32>::new(session.allocator(), shape)?);
        }
        let cpu = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::Default)?;
        // The shared past/present buffer relies on GroupQueryAttention seeing the same memory as input
        // and output, which holds on the CPU provider only; other providers get each step's presents
        // bound back as the next step's pasts (no copy in Rust, the provider copies).
        let in_place = self.kv_in_place();
        if in_place {
            for l in 0..info.num_layers {
                binding.bind_input(&info.names.past_key[l], &keys[l])?;
                binding.bind_input(&info.names.past_value[l], &values[l])?;
                binding.bind_output(&info.names.present_key[l], &mut keys[l])?;
                binding.bind_output(&info.names.present_value[l], &mut values[l])?;
            }
        } else {
            keys.clear();
            values.clear();
        }
        Ok(Sequence {
            binding,
            in_place,
            cpu,
            _keys: keys,
            _values: values,
            len: 0,
            capacity: self.capacity,
            logits: Vec::new(),
            hidden: Vec::new(),
            rows: 0,
        })
    }

    /// Runs `tokens` through the model after what `seq` already holds, appending them to its KV cache.
    ///
    /// With `all_rows` the logits and hidden states of every new position are kept; otherwise only
    /// the last position's.
    pub fn forward(&self, seq: &mut Sequence, tokens: &[u32], all_rows: bool) -> Result<()> {
        self.forward_last(seq, tokens, if all_rows { tokens.len() } else { 1 })
    }

    /// [`Engine::forward`] keeping the logits and hidden states of the last `rows` new positions
    /// only (at least 1, at most `tokens.len()`): teacher forcing a reply after a long prompt keeps
    /// the reply's rows, not a V-wide row for every prompt position. Where the graph has the
    /// `logits_to_keep` input, the other positions never reach the LM head.
    pub fn forward_last(&self, seq: &mut Sequence, tokens: &[u32], rows: usize) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("forward needs at least one token".into()));
        }
        let want = rows.clamp(1, tokens.len());
        let total = seq.len + tokens.len();
        if total > seq.capacity {
            return Err(Error::ContextOverflow { prompt: total, context: seq.capacity });
        }
        let vocab = self.info.vocab_size;
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::InvalidArgument(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        let n = tokens.len();
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let names = &self.info.names;
        seq.binding.bind_input(&names.input_ids, &Tensor::from_array(([1usize, n], ids))?)?;
        seq.binding.bind_input(&names.attention_mask, &Tensor::from_array(([1usize, total], vec![1i64; total]))?)?;
        if !seq.in_place {
            if seq.len == 0 {
                let info = &self.info;
                for l in 0..info.num_layers {
                    let empty = || Tensor::from_array(([1usize, info.num_kv_heads, 0, info.head_size], Vec::<f32>::new()));
                    seq.binding.bind_input(&names.past_key[l], &empty()?)?;
                    seq.binding.bind_input(&names.past_value[l], &empty()?)?;
                }
            }
            for l in 0..self.info.num_layers {
                seq.binding.bind_output_to_device(&names.present_key[l], &seq.cpu)?;
                seq.binding.bind_output_to_device(&names.present_value[l], &seq.cpu)?;
            }
        }
        if let Some(pos) = &names.position_ids {
            let p: Vec<i64> = (seq.len..total).map(|x| x as i64).collect();
            seq.binding.bind_input(pos, &Tensor::from_array(([1usize, n], p))?)?;
        }
        // Only the last `want` positions reach the LM head, where the graph allows it (0: all).
        let kept = match &names.logits_to_keep {
            Some(name) => {
                let keep = if want == n { 0 } else { want };
                seq.binding.bind_input(name, &Tensor::from_array(([1usize], vec![keep as i64]))?)?;
                want
            }
            None => n,
        };
        // Logits and hidden states change shape between prefill and decode: bind them unallocated each
        // run (a bound output keeps its previous shape otherwise).
        seq.binding.bind_output_to_device(&names.logits, &seq.cpu)?;
        seq.binding.bind_output_to_device(&names.hidden_states, &seq.cpu)?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let mut outputs = session.run_binding(&seq.binding)?;
        let mut presents = Vec::new();
        if !seq.in_place {
            for l in 0..self.info.num_layers {
                for name in [&names.present_key[l], &names.present_value[l]] {
                    presents.push(outputs.remove(name).ok_or_else(|| Error::Ort(format!("output {name} missing")))?);
                }
            }
        }
        let (lshape, logits) = outputs
            .get(&names.logits)
            .ok_or_else(|| Error::Ort("logits output missing".into()))?
            .try_extract_tensor::<f32>()?;
        let (hshape, hidden) = outputs
            .get(&names.hidden_states)
            .ok_or_else(|| Error::Ort("hidden_states output missing".into()))?
            .try_extract_tensor::<f32>()?;
        let d = self.info.hidden_size;
        if lshape.num_elements() != kept * vocab || hshape.num_elements() != kept * d {
            return Err(Error::Ort(format!("unexpected output shapes: logits {lshape:?}, hidden_states {hshape:?}")));
        }
        let (start, rows) = (kept - want, want);
        seq.logits.clear();
        seq.logits.extend_from_slice(&logits[start * vocab..kept * vocab]);
        seq.hidden.clear();
        seq.hidden.extend_from_slice(&hidden[start * d..kept * d]);
        seq.rows = rows;
        seq.len = total;
        drop(outputs);
        drop(session);
        for (l, pair) in presents.chunks(2).enumerate() {
            seq.binding.bind_input(&names.past_key[l], &pair[0])?;
            seq.binding.bind_input(&names.past_value[l], &pair[1])?;
        }
        Ok(())
    }
}

/// One token sequence's state: its KV cache (in place) and the last step's outputs.
pub struct Sequence {
    binding: IoBinding,
    in_place: bool,
    cpu: MemoryInfo<'static>,
    _keys: Vec<Tensor<f32>>,
    _values: Vec<Tensor<f32>>,
    len: usize,
    capacity: usize,
    logits: Vec<f32>,
    hidden: Vec<f32>,
    rows: usize,
}

impl Sequence {
    /// Tokens held in the KV cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been run yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens this sequence can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets the cached tokens so the sequence can be reused for a new prompt without reallocating.
    pub fn reset(&mut self) {
        self.len = 0;
        self.rows = 0;
    }

    /// Keeps the first `n` cached tokens and forgets the rest, so that a prompt that shares them
    /// runs only its new tokens; returns how many are kept. A cache bound in place (the CPU
    /// provider) is cut by its length alone, since positions beyond it are overwritten before they
    /// are read; other providers hand back presents of one length, which cannot be cut, so their
    /// cache is reset and 0 is returned.
    pub fn truncate(&mut self, n: usize) -> usize {
        if n >= self.len {
            return self.len;
        }
        if self.in_place {
            self.len = n;
        } else {
            self.len = 0;
        }
        self.rows = 0;
        self.len
    }

    /// Logits of the last forward call: `rows() x V`, row-major.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Mutable access to the last logits, for the adapter hook and the sampler.
    pub fn logits_mut(&mut self) -> &mut [f32] {
        &mut self.logits
    }

    /// The hidden states (read) and the logits (write) of the last call at once, for the logits hook.
    pub fn hidden_and_logits_mut(&mut self) -> (&[f32], &mut [f32]) {
        (&self.hidden, &mut self.logits)
    }

    /// Hidden states (LM-head inputs) of the last forward call: `rows() x d`.
    pub fn hidden(&self) -> &[f32] {
        &self.hidden
    }

    /// Number of rows the last forward call kept.
    pub fn rows(&self) -> usize {
        self.rows
    }
}
