//! What the store tells its caller about versions: listings, load reports, rollback targets.

use std::path::PathBuf;

use super::error::StoreError;
use super::record::AdapterRecord;

/// What a version file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VersionKind {
    /// A saved adapter (`v{seq:010}.attune`).
    Adapter,
    /// A reset marker (`v{seq:010}.reset`): loading stops here and finds no adapter.
    Reset,
}

/// One entry of [`AdapterStore::list_versions`](super::AdapterStore::list_versions).
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    /// The version's sequence number; larger is newer.
    pub seq: u64,
    /// Whether it holds an adapter or marks a reset.
    pub kind: VersionKind,
    /// The file's path.
    pub path: PathBuf,
    /// The file's size in bytes.
    pub file_bytes: u64,
    /// The adapter's own `updated_unix`, for a readable adapter version.
    pub updated_unix: Option<u64>,
    /// Why the version cannot be loaded, or `None` if it can.
    pub problem: Option<StoreError>,
}

/// A version that loading passed over, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedVersion {
    /// The skipped version's sequence number.
    pub seq: u64,
    /// The skipped file's path.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: StoreError,
}

/// The outcome of reading a user's newest valid version from disk.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadReport {
    /// The adapter, or `None` if the user has none (never saved, reset, or every version damaged).
    pub record: Option<AdapterRecord>,
    /// The version the adapter came from.
    pub version: Option<u64>,
    /// The reset marker that ended the search, if one did.
    pub reset_at: Option<u64>,
    /// Newer versions that were damaged and passed over, newest first.
    pub skipped: Vec<SkippedVersion>,
}

/// Which version [`AdapterStore::rollback`](super::AdapterStore::rollback) returns to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackTarget {
    /// The version with exactly this sequence number.
    Version(u64),
    /// This many usable versions before the current one (1 is the previous one). Damaged versions
    /// are not counted; reset markers are.
    StepsBack(usize),
}
