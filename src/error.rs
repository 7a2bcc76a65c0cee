//! The library's one error type. Every variant says when it happens; the C API maps each onto a
//! stable status code (see `Error::code`).

use std::path::PathBuf;

/// Convenience alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Attune.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// ONNX Runtime's shared library could not be found or loaded. The message names every path
    /// that was tried and the command that installs the library.
    #[error("ONNX Runtime library not available: {0}")]
    OrtLibrary(String),
    /// ONNX Runtime itself returned an error (session creation, a run).
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    /// The model folder is unusable: a missing file, a graph without an expected input or output.
    #[error("model folder {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    /// The tokenizer could not be loaded or failed to encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// A configuration value is invalid (unknown execution provider, bad JSON, out-of-range value).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An argument is invalid (empty prompt, negative temperature, top_p > 1, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The prompt plus at least one new token does not fit the model's context window.
    #[error("prompt of {prompt} tokens does not fit the context window of {context} tokens")]
    ContextOverflow { prompt: usize, context: usize },
    /// A required execution provider failed to register (strict mode).
    #[error("execution provider {name}: {reason}")]
    ExecutionProvider { name: String, reason: String },
    /// Feedback named an episode this user does not hold; `reason` says why (never issued,
    /// expired, evicted, a demonstration already learned, or issued before the user was forgotten).
    #[error("unknown episode id {id}: {reason}")]
    UnknownEpisode { id: u64, reason: String },
    /// A reward was non-finite or otherwise unusable; it is never learned from.
    #[error("invalid reward: {0}")]
    InvalidReward(String),
    /// The learning step could not run (no episodes, shapes disagree, rate limited, ...).
    #[error("learning: {0}")]
    Learning(String),
    /// The adapter store failed (see the message); nothing on disk was changed unless stated.
    #[error("adapter store: {0}")]
    Store(String),
    /// An adapter file is corrupt, truncated, from another model, or from an unknown format version.
    #[error("adapter file {path}: {reason}")]
    CorruptAdapter { path: PathBuf, reason: String },
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The GPU (wgpu) path failed; callers fall back to the CPU path.
    #[error("GPU compute: {0}")]
    Gpu(String),
    /// The object is in use by another thread, or the user already has an open session on this
    /// runtime.
    #[error("busy: {0}")]
    Busy(String),
    /// A store file or imported bytes were encrypted with another key than `store.encryption_key`
    /// (the reason says "wrong encryption key"), or are encrypted and no key is configured.
    #[error("{path}: {reason}")]
    EncryptionKey { path: PathBuf, reason: String },
    /// The session's user was forgotten (forget-me) while the session was open: the session goes
    /// on in memory but can never write to the store again. A session opened afterwards works.
    #[error("user forgotten: {0}")]
    UserForgotten(String),
}

impl Error {
    /// Shorthand for an [`Error::Io`] with the path that failed.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Shorthand for an [`Error::Model`].
    pub fn model(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Model { path: path.into(), reason: reason.into() }
    }

    /// The stable number of this kind of error: the C API's `ATTUNE_STATUS_*` code. Numbers are
    /// never reused; 1 ..= 19 belong to the C boundary itself (null pointers, UTF-8, panics, ...),
    /// which is why [`Error::Busy`] shares `ATTUNE_STATUS_BUSY` (6). A new variant needs a new
    /// number here (this match is exhaustive on purpose) and in `ffi/src/status.rs`.
    pub fn code(&self) -> u32 {
        match self {
            Error::Busy(_) => 6,
            Error::OrtLibrary(_) => 20,
            Error::Ort(_) => 21,
            Error::Model { .. } => 22,
            Error::Tokenizer(_) => 23,
            Error::Template(_) => 24,
            Error::Config(_) => 25,
            Error::InvalidArgument(_) => 26,
            Error::ContextOverflow { .. } => 27,
            Error::ExecutionProvider { .. } => 28,
            Error::UnknownEpisode { .. } => 29,
            Error::InvalidReward(_) => 30,
            Error::Learning(_) => 31,
            Error::Store(_) => 32,
            Error::CorruptAdapter { .. } => 33,
            Error::Io { .. } => 34,
            Error::Gpu(_) => 35,
            Error::EncryptionKey { .. } => 36,
            Error::UserForgotten(_) => 37,
        }
    }
}

impl<R> From<ort::Error<R>> for Error {
    fn from(e: ort::Error<R>) -> Self {
        Error::Ort(e.to_string())
    }
}
