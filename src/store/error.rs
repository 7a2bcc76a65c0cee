//! The store's own error kinds. Public store methods return the crate's [`Error`]; these kinds are
//! what [`decode`](super::decode) returns and what a [`LoadReport`](super::LoadReport) lists for
//! every version it skipped, so callers and tests can match on the exact cause.

use std::path::Path;

use super::fingerprint::ModelFingerprint;
use crate::error::Error;

/// Why an adapter file or a store request could not be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The bytes end before the header, a length field or the checksum trailer says they should.
    #[error("truncated: needs at least {needed} bytes but has {available}")]
    Truncated { needed: u64, available: u64 },
    /// The file does not start with the Attune adapter magic bytes.
    #[error("not an Attune adapter file (wrong magic bytes)")]
    BadMagic,
    /// The CRC-32 trailer does not match the bytes before it (a torn write or a flipped bit).
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    /// The file was written by a newer format version than this build can read; it is never guessed at.
    #[error("format version {found} is newer than this build's version {current}; upgrade Attune")]
    VersionTooNew { found: u16, current: u16 },
    /// The file uses an older format version for which this build has no reader any more.
    #[error(
        "format version {found} is older than the oldest readable version {oldest_readable} \
         (this build writes version {current}); no migration exists"
    )]
    VersionTooOld { found: u16, oldest_readable: u16, current: u16 },
    /// The adapter was learned on another base model (its fingerprint differs from the store's).
    #[error(
        "adapter belongs to another base model: expected fingerprint {expected}, file has {found}"
    )]
    ModelMismatch { expected: ModelFingerprint, found: ModelFingerprint },
    /// A size, length or count exceeds what the remaining bytes or the configured limits allow.
    #[error("{what} claims {claimed}, more than the limit of {limit}")]
    TooLarge { what: &'static str, claimed: u64, limit: u64 },
    /// The payload is structurally broken (bad encoding, trailing bytes, duplicate tensor names).
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The record breaks an invariant (shape and data disagree, a non-finite value, an over-long name).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// The user has no adapter: never saved, reset since, or forgotten.
    #[error("no adapter stored for this user")]
    NoAdapter,
    /// The requested version is not on disk or is not a valid adapter file.
    #[error("version {seq} does not exist or is not usable")]
    NoSuchVersion { seq: u64 },
    /// The file was sealed under another encryption key than the one configured.
    #[error("wrong encryption key: the file was encrypted with another key than store.encryption_key")]
    WrongKey,
    /// The file is encrypted and no encryption key is configured.
    #[error("the file is encrypted and no encryption key is configured (store.encryption_key)")]
    KeyRequired,
    /// The file was sealed under the configured key but fails authentication: it was damaged or
    /// altered after it was written.
    #[error("encrypted contents fail authentication (damaged or altered)")]
    AuthFailed,
}

impl StoreError {
    /// True for damage that loading may skip by falling back to an older version. Version and
    /// model mismatches are not damage: skipping them would silently shadow a good adapter.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StoreError::Truncated { .. }
                | StoreError::BadMagic
                | StoreError::ChecksumMismatch { .. }
                | StoreError::TooLarge { .. }
                | StoreError::Malformed(_)
                | StoreError::InvalidRecord(_)
                | StoreError::AuthFailed
        )
    }

    /// True when the configured key does not fit the file (another key, or none). Like a model
    /// mismatch this is never skipped as damage: every file of the store would be skipped.
    pub fn is_key_problem(&self) -> bool {
        matches!(self, StoreError::WrongKey | StoreError::KeyRequired)
    }

    /// Maps this kind onto the crate's error for a file at `path`: file problems become
    /// [`Error::CorruptAdapter`], key problems [`Error::EncryptionKey`], missing adapters and
    /// versions [`Error::Store`].
    pub(crate) fn at(self, path: &Path) -> Error {
        match self {
            StoreError::NoAdapter | StoreError::NoSuchVersion { .. } => {
                Error::Store(format!("{}: {self}", path.display()))
            }
            StoreError::WrongKey | StoreError::KeyRequired => {
                Error::EncryptionKey { path: path.to_path_buf(), reason: self.to_string() }
            }
            other => Error::CorruptAdapter { path: path.to_path_buf(), reason: other.to_string() },
        }
    }
}
