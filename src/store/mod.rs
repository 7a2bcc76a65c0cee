//! Persistence of per-user adapters: a versioned, checksummed file per save, with fallback to the
//! previous version on damage, rollback, export and import, and an in-memory LRU cache.
//!
//! # Code map
//!
//! - `record`: [`AdapterRecord`], the persisted state, decoupled from runtime types.
//! - `format` and `wire_v1`: the file format ([`encode`], [`decode`]); bounded decoding.
//! - `files`: version file names, atomic writes, fsyncs, private file modes.
//! - `user_id`: turning untrusted user ids into safe directory names that do not reveal them.
//! - `store_key`: the store's name secret (`.store-key`) that keys those names.
//! - `crypt`: optional encryption at rest ([`EncryptionKey`]), an authenticated envelope around
//!   each file image.
//! - `cache`: the byte-bounded LRU cache.
//! - `pending`: the user's pending episodes and id reservation ([`PendingRecord`]).
//! - `adapter_store`: [`AdapterStore`], which ties these together.
//!
//! # On disk
//!
//! ```text
//! <root>/.store-key                  the name secret (sealed under the encryption key, if any)
//! <root>/k3f9c…/v0000000007.attune   newest version of one user ("k" + 64 hex digits)
//! <root>/k3f9c…/v0000000006.attune   previous versions, up to `keep_versions` in all
//! <root>/k3f9c…/v0000000005.reset    a reset marker: loading stops here
//! <root>/k3f9c…/pending.attune       pending episodes and the episode-id reservation
//! ```
//!
//! A user's directory is `k` + HMAC-SHA256 of the id under the name secret, so no file name
//! reveals an id; a directory an older store named with the id's hex is renamed at the user's
//! first access. With an encryption key every file above is sealed (`crypt`); files are mode 0600
//! and directories 0700.
//!
//! Architecture invariants: a user id is never used as a path and cannot be recovered from one; a
//! file is only ever replaced by an atomic rename of a fully written, fsynced temporary file, and a
//! write that fails leaves the previous file and no temporary one; nothing is decoded without its
//! checksum, magic, format version and model fingerprint checked first (and, when sealed, its
//! authentication tag); no length read from a file is allocated before it is checked against the
//! bytes present.
//!
//! # Example
//!
//! ```
//! use attune::store::{AdapterConfig, AdapterRecord, AdapterStore, ModelFingerprint, StoreOptions};
//!
//! # fn main() -> attune::Result<()> {
//! let root = std::env::temp_dir().join(format!("attune-store-doc-{}", std::process::id()));
//! let fingerprint = ModelFingerprint::of_parts(["graph signature", "tokenizer.json bytes"]);
//! let store = AdapterStore::open(&root, StoreOptions::new(fingerprint))?;
//! assert!(store.load("alice")?.is_none());
//!
//! let config = AdapterConfig {
//!     rank: 8,
//!     alpha: 16.0,
//!     hidden: 576,
//!     vocab: 49152,
//!     top_k_rows: 64,
//!     algorithm: "reinforce".into(),
//!     extra: Default::default(),
//! };
//! let mut record = AdapterRecord::new(config, 1_700_000_000);
//! record.counters.insert("updates".into(), 1);
//! let version = store.save("alice", record.clone())?;
//! assert_eq!(store.load("alice")?.as_deref(), Some(&record));
//! assert_eq!(store.list_versions("alice")?.last().map(|v| v.seq), Some(version));
//! store.forget("alice")?;
//! # std::fs::remove_dir_all(&root).ok();
//! # Ok(())
//! # }
//! ```

mod adapter_store;
mod cache;
mod crypt;
mod error;
mod files;
mod fingerprint;
mod format;
mod pending;
mod record;
mod report;
mod store_key;
mod user_id;
mod wire_v1;

pub use adapter_store::{AdapterStore, PENDING_FILE};
pub use pending::{PendingEpisode, PendingPair, PendingRecord, PENDING_MAGIC, PENDING_VERSION};
pub use cache::CacheStats;
pub use crypt::{EncryptionKey, SEAL_MAGIC, SEAL_VERSION};
pub use error::StoreError;
pub use store_key::STORE_KEY_FILE;
pub use fingerprint::ModelFingerprint;
pub use format::{decode, encode, FORMAT_VERSION, MAGIC, OLDEST_READABLE_VERSION};
#[doc(hidden)]
pub use format::{reseal, seal_raw};
pub use record::{
    AdapterConfig, AdapterRecord, RewardSummary, Tensor, MAX_NAME_BYTES, MAX_TENSOR_DIMS,
    MAX_TENSOR_ELEMENTS,
};
pub use report::{LoadReport, RollbackTarget, SkippedVersion, VersionInfo, VersionKind};
pub use user_id::MAX_USER_ID_BYTES;

/// How an [`AdapterStore`] behaves.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The base model every stored adapter must belong to.
    pub fingerprint: ModelFingerprint,
    /// How many versions to keep per user, reset markers included (at least 1; default 5).
    pub keep_versions: usize,
    /// The cache's limit in estimated bytes (default 64 MiB); 0 disables caching.
    pub cache_bytes: usize,
    /// Files larger than this are treated as damaged without being read (default 256 MiB).
    pub max_file_bytes: u64,
    /// The key that seals every file the store writes and every export (default `None`: files
    /// are written plain). See the `crypt` module docs for the envelope.
    pub encryption_key: Option<EncryptionKey>,
}

impl StoreOptions {
    /// Returns the default options for adapters of the base model `fingerprint`.
    pub fn new(fingerprint: ModelFingerprint) -> Self {
        StoreOptions {
            fingerprint,
            keep_versions: 5,
            cache_bytes: 64 << 20,
            max_file_bytes: 256 << 20,
            encryption_key: None,
        }
    }
}
