//! What each fuzz target does with one input, shared by the libFuzzer targets (`fuzz_targets/`)
//! and by the bounded replay in the normal test suite (`tests/fuzz_inputs.rs`, which includes this
//! file as a module), so that both run the same code.
//!
//! Every target feeds its input to the functions the C API calls for that argument (the
//! `attune_host::json` parsers, then the runtime's own checks), and panics only when an invariant
//! breaks: a failure with a status the C API does not document for that call, an accepted input
//! that does not round-trip, or an adapter that stops being finite. A bytes input that is not UTF-8
//! stops where the C boundary stops it (`ATTUNE_STATUS_INVALID_UTF8`).
//!
//! The targets that need a model share one runtime on `models/tiny` (created once per process,
//! CPU, one thread) and one session of it, so that an input costs a parse, a check and at most a
//! two-token generation.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use attune::generate::{GenerateOptions, Prompt};
use attune::runtime::{Runtime, RuntimeConfig, UserSession};
use attune::store::{ModelFingerprint, FORMAT_VERSION, MAGIC};
use attune_host::json::{self, PromptKind};
use attune_host::status::{INVALID_JSON, INVALID_REWARD};
use attune_host::HostError;

/// The status codes of `attune::Error` a target may see (see `attune::Error::code`).
mod code {
    pub const TOKENIZER: u32 = 23;
    pub const TEMPLATE: u32 = 24;
    pub const CONFIG: u32 = 25;
    pub const INVALID_ARGUMENT: u32 = 26;
    pub const CONTEXT_OVERFLOW: u32 = 27;
    pub const INVALID_REWARD: u32 = 30;
    pub const LEARNING: u32 = 31;
    pub const STORE: u32 = 32;
    pub const CORRUPT_ADAPTER: u32 = 33;
    pub const ENCRYPTION_KEY: u32 = 36;
}

/// Panics unless `e`'s status is one of `allowed`.
fn expect_status(what: &str, e: &HostError, allowed: &[u32]) {
    assert!(allowed.contains(&e.status), "{what}: undocumented status {} ({e})", e.name());
    assert!(!e.message.is_empty(), "{what}: {} without a message", e.name());
}

/// The project root (this crate sits in `fuzz/`).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A tiny-model runtime with a store in a fresh scratch directory, and two open sessions: one
/// that takes feedback and imports, and one that generates (whose replies would otherwise push the
/// first one's episode out of its bounded buffer).
pub struct Tiny {
    pub runtime: Arc<Runtime>,
    session: Mutex<UserSession>,
    generator: Mutex<UserSession>,
    /// A recorded reply of `session` that feedback refers to.
    pub episode: u64,
}

impl Tiny {
    fn new() -> Tiny {
        // This file is compiled into the fuzz crate and into the root package's tests; either
        // way the project root is the parent of `fuzz/` or the manifest's own directory.
        let root = [root(), PathBuf::from(env!("CARGO_MANIFEST_DIR"))]
            .into_iter()
            .find(|r| r.join("models/tiny/model.onnx").is_file())
            .unwrap_or_else(|| panic!("tiny model missing under {}: run `make setup`", root().display()));
        // The test suite's scratch folder under `target/` when this is a test, else the system's.
        let scratch = option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let store = scratch.join(format!("attune-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&store);
        let mut cfg = RuntimeConfig::default();
        cfg.engine.model_dir = root.join("models/tiny");
        cfg.engine.threads = 1;
        cfg.engine.max_context = 256;
        cfg.store.dir = Some(store);
        cfg.store.keep_versions = 2;
        cfg.rewards.vader_dir = Some(root.join("models/vader"));
        // One short probe: every update measures the KL budget and the drift guards on the probes,
        // and the default set (3 prompts, 64 tokens each) would make an update the cost of a
        // hundred inputs.
        cfg.probe_prompts = vec!["Hi".into()];
        cfg.probe_tokens = 4;
        let runtime = Runtime::new(cfg).expect("the tiny runtime loads");
        let mut session = runtime.open_session("+1 555 0100").expect("a session opens");
        let opts = GenerateOptions { max_new_tokens: 4, ..GenerateOptions::default() };
        let reply = session.generate(&Prompt::Text("Hello".into()), &opts, &mut |_| true).expect("the tiny model generates");
        let generator = runtime.open_session("+1 555 0199").expect("a second user's session opens");
        Tiny { runtime, session: Mutex::new(session), generator: Mutex::new(generator), episode: reply.episode_id }
    }

    /// The process's one tiny runtime.
    pub fn get() -> &'static Tiny {
        static TINY: OnceLock<Tiny> = OnceLock::new();
        TINY.get_or_init(Tiny::new)
    }

    /// The session that takes feedback and imports (a panic in an earlier input, which aborts a
    /// fuzz run anyway, does not block it).
    pub fn session(&self) -> MutexGuard<'_, UserSession> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session that generates.
    pub fn generator(&self) -> MutexGuard<'_, UserSession> {
        self.generator.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store's model fingerprint, which imported bytes must carry.
    pub fn fingerprint(&self) -> &ModelFingerprint {
        self.runtime.store().expect("the tiny runtime has a store").fingerprint()
    }
}

/// `attune_runtime_new`'s configuration JSON, up to loading the model: the parser and every check
/// that needs nothing loaded. What it accepts must serialise and parse back to the same settings.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match json::config(text) {
        Err(e) => expect_status("config", &e, &[INVALID_JSON, code::CONFIG]),
        Ok(cfg) => {
            cfg.validate().expect("an accepted configuration validates");
            let first = serde_json::to_value(&cfg).expect("a configuration serialises");
            let again = json::config(&first.to_string()).unwrap_or_else(|e| panic!("{first} does not parse back: {e}"));
            assert_eq!(serde_json::to_value(&again).expect("a configuration serialises"), first);
        }
    }
}

/// `attune_session_feedback_json`: the reward parser, then the session's feedback on a real
/// reply (computed sources, score statistics, and the learning update it triggers). Whatever is
/// accepted, the adapter stays finite.
pub fn feedback(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let reward = match json::reward(text) {
        Ok(r) => r,
        Err(e) => return expect_status("reward_json", &e, &[INVALID_JSON, INVALID_REWARD]),
    };
    let tiny = Tiny::get();
    let mut session = tiny.session();
    if let Err(e) = session.feedback(tiny.episode, &reward) {
        // INVALID_ARGUMENT: a malformed computed source (an empty rule set); LEARNING: an update
        // the guards refused. Neither records anything.
        expect_status("feedback", &HostError::from(e), &[code::INVALID_REWARD, code::INVALID_ARGUMENT, code::LEARNING]);
    }
    assert!(session.learner().adapter().all_finite(), "the adapter is not finite after {text:?}");
}

/// `attune_session_generate` with `ATTUNE_PROMPT_CHAT`: the messages parser, then the chat
/// template and tokenizer the generation runs before its first forward pass.
pub fn chat(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let prompt = match json::prompt(PromptKind::Chat, text) {
        Ok(p) => p,
        Err(e) => return expect_status("chat messages", &e, &[INVALID_JSON]),
    };
    let tiny = Tiny::get();
    let model = tiny.runtime.model();
    let vocab = model.engine().info().vocab_size;
    match model.prompt_tokens(&prompt) {
        Ok(ids) => {
            assert!(!ids.is_empty(), "an accepted prompt has tokens");
            assert!(ids.iter().all(|&t| (t as usize) < vocab), "a token id outside the vocabulary");
        }
        Err(e) => expect_status("chat prompt", &HostError::from(e), &[code::INVALID_ARGUMENT, code::TEMPLATE, code::TOKENIZER]),
    }
    // What the supervised algorithm learns from the same messages.
    let Prompt::Chat(msgs) = &prompt else { unreachable!("a chat prompt parses into messages") };
    if let Err(e) = model.user_text_targets(msgs) {
        expect_status("user text targets", &HostError::from(e), &[code::TEMPLATE, code::TOKENIZER]);
    }
}

/// The most new tokens an options input generates: enough to run sampling and the stop checks,
/// few enough that an input costs milliseconds.
pub const MAX_FUZZ_TOKENS: usize = 2;

/// `attune_session_generate`'s `options_json`: the overlay onto the runtime's defaults, then a
/// recorded generation of at most [`MAX_FUZZ_TOKENS`] tokens with those options.
pub fn options(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let tiny = Tiny::get();
    let mut opts = match json::options(&tiny.runtime.config().generation, Some(text)) {
        Ok(o) => o,
        Err(e) => return expect_status("options_json", &e, &[INVALID_JSON]),
    };
    // Zero stays zero: it must be refused.
    opts.max_new_tokens = opts.max_new_tokens.min(MAX_FUZZ_TOKENS);
    let mut session = tiny.generator();
    match session.generate(&Prompt::Text("Hi".into()), &opts, &mut |_| true) {
        Ok(reply) => assert!(reply.tokens <= opts.max_new_tokens, "{} tokens for at most {}", reply.tokens, opts.max_new_tokens),
        Err(e) => expect_status("generate", &HostError::from(e), &[code::INVALID_ARGUMENT, code::CONFIG, code::CONTEXT_OVERFLOW]),
    }
}

/// `data` as the body of an adapter file in a valid envelope: magic, format version, the runtime's
/// model fingerprint and a correct checksum, so that mutations reach the record parser and the
/// learner's checks instead of stopping at the checksum.
pub fn sealed(data: &[u8], fingerprint: &ModelFingerprint) -> Vec<u8> {
    let mut file = Vec::with_capacity(data.len() + 14);
    file.extend_from_slice(&MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(data);
    file.extend_from_slice(&[0; 4]);
    attune::store::reseal(&mut file, Some(fingerprint));
    file
}

/// `data` made to pass the envelope checks for this runtime: a whole file (it starts with the
/// magic) gets the runtime's fingerprint and a fresh checksum, anything else is [`sealed`] as a
/// body. The committed seeds stay valid this way when `make setup` rebuilds the tiny model.
pub fn stamped(data: &[u8], fingerprint: &ModelFingerprint) -> Vec<u8> {
    if data.starts_with(&MAGIC) {
        let mut file = data.to_vec();
        attune::store::reseal(&mut file, Some(fingerprint));
        file
    } else {
        sealed(data, fingerprint)
    }
}

/// `attune_session_import`: the bytes as they are, then [`stamped`] for this runtime. A refused import changes nothing; an accepted one installs a
/// finite adapter and keeps the episode ids moving forward.
pub fn import(data: &[u8]) {
    let tiny = Tiny::get();
    let mut session = tiny.session();
    let inputs = [data.to_vec(), stamped(data, tiny.fingerprint())];
    for bytes in inputs {
        let before = session.learner().next_episode_id();
        match session.import(&bytes) {
            Ok(()) => {
                assert!(session.learner().adapter().all_finite(), "an imported adapter is not finite");
                assert!(session.learner().next_episode_id() >= before, "import moved the episode ids back");
            }
            Err(e) => {
                expect_status("import", &HostError::from(e), &[code::CORRUPT_ADAPTER, code::STORE, code::ENCRYPTION_KEY]);
                assert_eq!(session.learner().next_episode_id(), before, "a refused import changed the session");
            }
        }
    }
}
