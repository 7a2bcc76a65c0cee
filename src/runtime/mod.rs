//! The runtime a host holds: one model, one adapter store, and per-user sessions that generate with
//! that user's adapter, take feedback, learn and persist.
//!
//! A [`Runtime`] is shared by all threads (`Arc<Runtime>`); a [`UserSession`] belongs to one user and
//! is used by one thread at a time (`&mut self`). Two users' adapters never mix: each session owns
//! its learner and adapter. A user has at most one open session per runtime (a second one is
//! [`Error::Busy`] until the first is dropped), and once a user is forgotten no session that was
//! open can write their data back ([`Error::UserForgotten`]).

mod claims;
mod fingerprint;
mod persist;
mod rewards;
mod session;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde::{Deserialize, Serialize};

use crate::engine::EngineConfig;
use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, Model, Prompt, SamplingConfig, TokenRecord};
use crate::learn::sentiment::Vader;
use crate::learn::{LearnerConfig, RewardsConfig};
use crate::store::{AdapterStore, EncryptionKey, StoreOptions};
use claims::OpenSessions;
use crate::tokenizer::Message;
pub use fingerprint::WeightsCheck;
pub use persist::{episodes_from_pending, from_record, now_unix, pending_from_learner, to_record};
pub use rewards::RewardFn;
pub use session::{Reply, UserSession, ID_BLOCK, NO_EPISODE};
pub use worker::{UpdateMode, UPDATE_QUEUE};

/// Where and how adapters are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The store's directory; `None` keeps adapters in memory only (nothing is saved).
    pub dir: Option<PathBuf>,
    /// How many versions of each user's adapter are kept on disk.
    pub keep_versions: usize,
    /// Size limit of the in-memory cache of loaded adapters, in bytes.
    pub cache_bytes: usize,
    /// Whether pending episodes are saved with the user's state (`pending.attune`), so that
    /// feedback given after a restart still trains. The episode-id reservation is saved either way.
    pub persist_pending: bool,
    /// Whether every open re-hashes the model's weight files in full; otherwise a hash is reused
    /// while the file's size and modification time are unchanged.
    pub verify_weights: bool,
    /// The host's key for encryption at rest (JSON: 64 hex digits or base64 of 32 bytes). With it,
    /// every adapter version, `pending.attune`, the store's name secret and every export are
    /// sealed with XChaCha20-Poly1305; a store sealed under another key fails to open with
    /// [`Error::EncryptionKey`] ("wrong encryption key"). `None` (the default) writes plain files.
    pub encryption_key: Option<EncryptionKey>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { dir: None, keep_versions: 5, cache_bytes: 64 << 20, persist_pending: true, verify_weights: false, encryption_key: None }
    }
}

/// Everything a runtime is created from; the C API takes it as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Model folder, ONNX Runtime library, execution providers, threads.
    pub engine: EngineConfig,
    /// The adapter store.
    pub store: StoreConfig,
    /// Learning settings (algorithm, adapter shape, optimiser, guards).
    pub learner: LearnerConfig,
    /// Where the adapter's math runs: `auto` (a hardware GPU through wgpu when there is one, else the
    /// CPU), `cpu` or `gpu`. The default is `cpu`: `auto` enumerates GPU adapters whenever a session
    /// opens, which a host opts into.
    pub compute: crate::adapter::gpu::ComputeConfig,
    /// Default generation options of sessions.
    pub generation: GenerateOptions,
    /// Prompts whose base-model replies are the probe set for the KL budget and drift checks; empty
    /// uses a built-in set of everyday requests.
    pub probe_prompts: Vec<String>,
    /// Tokens generated (base model, seeded sampling at the learner's `greedy_tau`) per probe prompt;
    /// 0 means [`DEFAULT_PROBE_TOKENS`].
    pub probe_tokens: usize,
    /// Reward sources computed for every reply (coherence, sentiment, task checks, the host's
    /// callback) and added to its first feedback; none by default.
    pub rewards: RewardsConfig,
    /// Where the updates that feedback makes due run: `sync` (inside that feedback call, the
    /// default) or `background` (on the runtime's learning thread; feedback returns at once and
    /// `UserSession::flush` waits).
    pub update_mode: UpdateMode,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            engine: EngineConfig::default(),
            store: StoreConfig::default(),
            learner: LearnerConfig::default(),
            compute: crate::adapter::gpu::ComputeConfig { device: crate::adapter::gpu::ComputeDevice::Cpu, allow_software: false },
            generation: GenerateOptions::default(),
            probe_prompts: Vec::new(),
            probe_tokens: 0,
            rewards: RewardsConfig::default(),
            update_mode: UpdateMode::default(),
        }
    }
}

impl RuntimeConfig {
    /// Parses a JSON configuration; unknown fields are errors.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: RuntimeConfig = serde_json::from_str(text).map_err(|e| Error::Config(format!("configuration JSON: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the parts that can be checked without loading anything.
    pub fn validate(&self) -> Result<()> {
        crate::engine::providers::parse_list(&self.engine.execution_providers)?;
        self.learner.validate()?;
        self.rewards.validate()?;
        // The runtime's own settings are configuration: a bad value is `Config`, named in full.
        self.generation.sampling.validate().map_err(|e| match e {
            Error::InvalidArgument(m) => Error::Config(format!("generation.sampling.{m}")),
            e => e,
        })?;
        if self.engine.threads > crate::engine::MAX_THREADS {
            return Err(Error::Config(format!("engine.threads must be in 0..={} (0: ONNX Runtime chooses), got {}", crate::engine::MAX_THREADS, self.engine.threads)));
        }
        if self.store.keep_versions == 0 {
            return Err(Error::Config("store.keep_versions must be at least 1".into()));
        }
        Ok(())
    }
}

/// What a runtime runs on ([`Runtime::stats`]; the C API's `attune_runtime_stats_json`).
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeStats {
    /// The highest-priority active execution provider (the one the model's nodes go to first).
    pub provider: crate::engine::Provider,
    /// The kind of device that provider computes on: `cpu`, `gpu`, `npu` or `accelerator`.
    pub compute_device: &'static str,
    /// Every active provider in priority order, the CPU provider last, with its devices and options.
    pub providers: Vec<crate::engine::ActiveProvider>,
    /// Configured providers that did not register (without `strict_providers`), with the reason.
    pub failed_providers: Vec<crate::engine::providers::FailedProvider>,
    /// Tokens one generation can hold.
    pub context_tokens: usize,
    /// Whether the KV cache is updated in place (CPU provider first).
    pub kv_cache_in_place: bool,
    /// Where sessions run the adapter's math, as configured (`compute`).
    pub adapter_compute: crate::adapter::gpu::ComputeConfig,
    /// The model folder's converter profile (`fast`, `exact`, `custom`; `null` when the folder
    /// records none), from its `attune_model.json`.
    pub model_profile: Option<String>,
}

/// Built-in probe prompts: everyday requests, distinct from any training prompt set.
pub const DEFAULT_PROBES: [&str; 3] = [
    "Explain in two sentences why the sky is blue.",
    "Write a short reminder to buy milk and bread.",
    "What should I pack for a weekend trip to the mountains?",
];

/// Probe tokens per probe prompt by default: replies about as long as real ones, so that the budgets'
/// per-token means are not dominated by the first tokens of a reply (where a preference about how a
/// reply opens changes the most).
pub const DEFAULT_PROBE_TOKENS: usize = 64;

/// A model, an adapter store and the learning settings, shared by every session.
pub struct Runtime {
    model: Model,
    config: RuntimeConfig,
    store: Option<AdapterStore>,
    probes: OnceLock<Vec<TokenRecord>>,
    weights: WeightsCheck,
    sessions: Arc<OpenSessions>,
    /// VADER's lexicons, read at the first sentiment reward.
    vader: Mutex<Option<Arc<Vader>>>,
    /// The learning thread, in `update_mode: "background"`.
    worker: Option<worker::Worker>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("model", &self.model).field("store", &self.config.store.dir).finish()
    }
}

impl Runtime {
    /// Loads the model and opens the store.
    pub fn new(config: RuntimeConfig) -> Result<Arc<Runtime>> {
        config.validate()?;
        let model = Model::load(&config.engine)?;
        let vocab = model.engine().info().vocab_size;
        if config.learner.adapter.top_k > vocab {
            return Err(Error::Config(format!(
                "learner.adapter.top_k must be in 1..={vocab} (the model's vocabulary size), got {}",
                config.learner.adapter.top_k
            )));
        }
        let mut weights = WeightsCheck::default();
        let store = match &config.store.dir {
            None => None,
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                let (fp, check) = fingerprint::of_model(&model, dir, config.store.verify_weights)?;
                weights = check;
                let mut opts = StoreOptions::new(fp);
                opts.keep_versions = config.store.keep_versions;
                opts.cache_bytes = config.store.cache_bytes;
                opts.encryption_key = config.store.encryption_key.clone();
                Some(AdapterStore::open(dir, opts)?)
            }
        };
        let sessions = Arc::new(OpenSessions::default());
        let worker = match config.update_mode {
            UpdateMode::Sync => None,
            UpdateMode::Background => Some(worker::Worker::start()?),
        };
        Ok(Arc::new(Runtime { model, config, store, probes: OnceLock::new(), weights, sessions, vader: Mutex::new(None), worker }))
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// What checking the weight files cost when the runtime opened.
    pub fn weights_check(&self) -> &WeightsCheck {
        &self.weights
    }

    /// Which execution providers are active, what they compute on, and those that failed.
    pub fn stats(&self) -> RuntimeStats {
        let engine = self.model.engine();
        let report = engine.provider_report();
        RuntimeStats {
            provider: engine.active_providers().first().copied().unwrap_or(crate::engine::Provider::Cpu),
            compute_device: engine.compute_device(),
            providers: report.active.clone(),
            failed_providers: report.failed.clone(),
            context_tokens: engine.capacity(),
            kv_cache_in_place: engine.kv_in_place(),
            adapter_compute: self.config.compute,
            model_profile: engine.info().profile.clone(),
        }
    }

    /// The adapter store, when one is configured.
    pub fn store(&self) -> Option<&AdapterStore> {
        self.store.as_ref()
    }

    /// Opens `user`'s session: loads the newest valid adapter or creates a fresh one. A user has at
    /// most one open session per runtime: while one is open this fails with [`Error::Busy`]
    /// ("user ... already has an open session on this runtime"); dropping it releases the user.
    pub fn open_session(self: &Arc<Self>, user: &str) -> Result<UserSession> {
        UserSession::open(Arc::clone(self), user)
    }

    /// Deletes everything the store holds for `user` (forget-me: every adapter version, pending
    /// episodes, the directory); returns whether anything existed. Final: a session of the user
    /// that is open goes on in memory, but every later write of it fails with
    /// [`Error::UserForgotten`], so it can never bring the data back. A session opened afterwards
    /// starts fresh and works normally.
    pub fn forget(&self, user: &str) -> Result<bool> {
        self.sessions.forget(user, || match &self.store {
            Some(s) => s.forget(user),
            None => Ok(false),
        })
    }

    /// The VADER analyser, its lexicons read from `rewards.vader_dir` (default: `vader` beside the
    /// model folder) at the first call; a missing lexicon is [`Error::Config`] with the command
    /// that makes it, and is looked for again at the next call.
    pub fn vader(&self) -> Result<Arc<Vader>> {
        let mut slot = self.vader.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = &*slot {
            return Ok(Arc::clone(v));
        }
        let dir = match &self.config.rewards.vader_dir {
            Some(d) => d.clone(),
            None => self.config.engine.model_dir.parent().unwrap_or(Path::new(".")).join("vader"),
        };
        let v = Arc::new(Vader::load(&dir)?);
        *slot = Some(Arc::clone(&v));
        Ok(v)
    }

    /// The probe records (base model, seeded samples), computed once per runtime.
    pub fn probes(&self) -> Result<&[TokenRecord]> {
        if let Some(p) = self.probes.get() {
            return Ok(p);
        }
        let prompts: Vec<String> = if self.config.probe_prompts.is_empty() {
            DEFAULT_PROBES.iter().map(|s| s.to_string()).collect()
        } else {
            self.config.probe_prompts.clone()
        };
        let n = if self.config.probe_tokens == 0 { DEFAULT_PROBE_TOKENS } else { self.config.probe_tokens };
        // Sampled (seeded) at the training temperature rather than greedy: greedy replies are the
        // base model's most likely tokens, whose tiny NLL makes a relative drift check twitchy.
        let tau = self.config.learner.greedy_tau;
        let mut records = Vec::new();
        for (i, p) in prompts.into_iter().enumerate() {
            let sampling = SamplingConfig { temperature: tau, seed: 0x5eed + i as u64, ..SamplingConfig::default() };
            let opts = GenerateOptions { sampling, max_new_tokens: n, record: true, ..GenerateOptions::default() };
            let g = self.model.generate(&Prompt::Chat(vec![Message::user(p)]), &opts, None, &mut |_| true)?;
            records.extend(g.records);
        }
        Ok(self.probes.get_or_init(|| records))
    }
}

impl crate::learn::RecordSource for Runtime {
    fn rebuild(&self, prompt: &[u32], reply: &[u32], sampling: &crate::generate::RecordedSampling) -> Result<Vec<TokenRecord>> {
        self.model.teacher_force_ids(prompt, reply, sampling.repetition_penalty)
    }
}
