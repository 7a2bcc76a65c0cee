//! File-system primitives: version file names, directory listing, atomic writes and fsyncs.
//!
//! A save is durable and atomic: the bytes go to a fresh temporary file in the same directory,
//! which is fsynced and then renamed over the final name, after which the directory itself is
//! fsynced so that the rename survives a power cut. A crash at any point leaves either the old set
//! of versions or the old set plus the complete new one, and at worst a stray temporary file,
//! which the next save removes. A write that fails (a full disk, a read-only file system) removes
//! its temporary file and leaves the file it would have replaced as it was.
//!
//! On Unix every file is created with mode 0600 and every directory with 0700: adapters and
//! pending episodes are personal data, and nothing but the host process needs to read them.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::StoreError;
use super::report::VersionKind;
use crate::error::{Error, Result};

/// The prefix of temporary files; version files never start with it.
const TEMP_PREFIX: &str = ".tmp-";
/// Tells apart the temporary files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// One version file found in a user's directory.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The version's sequence number.
    pub seq: u64,
    /// Whether it holds an adapter or marks a reset.
    pub kind: VersionKind,
    /// The file's full path.
    pub path: PathBuf,
}

/// Returns the file name of version `seq`: `v0000000042.attune`, or `.reset` for a reset marker.
pub(crate) fn version_name(seq: u64, kind: VersionKind) -> String {
    match kind {
        VersionKind::Adapter => format!("v{seq:010}.attune"),
        VersionKind::Reset => format!("v{seq:010}.reset"),
    }
}

/// Parses a version file name; anything else (temporary files, strays) yields `None`.
pub(crate) fn parse_version_name(name: &str) -> Option<(u64, VersionKind)> {
    let rest = name.strip_prefix('v')?;
    let (digits, kind) = if let Some(d) = rest.strip_suffix(".attune") {
        (d, VersionKind::Adapter)
    } else {
        (rest.strip_suffix(".reset")?, VersionKind::Reset)
    };
    if digits.len() < 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(|seq| (seq, kind))
}

/// Lists the version files in `dir`, oldest first; a missing directory has none.
pub(crate) fn list_versions(dir: &Path) -> Result<Vec<Entry>> {
    let reader = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut entries = Vec::new();
    for item in reader {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let name = item.file_name();
        if let Some((seq, kind)) = name.to_str().and_then(parse_version_name) {
            entries.push(Entry { seq, kind, path: item.path() });
        }
    }
    entries.sort_by_key(|e| (e.seq, e.kind));
    Ok(entries)
}

/// Reads a whole file, refusing files over `max_bytes` before reading them.
///
/// The outer error is an I/O failure; the inner one says the file is too large, which callers
/// treat like any other damage.
pub(crate) fn read_bounded(
    path: &Path,
    max_bytes: u64,
) -> Result<std::result::Result<Vec<u8>, StoreError>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > max_bytes {
        return Ok(Err(StoreError::TooLarge { what: "file size", claimed: len, limit: max_bytes }));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take` guards against a file that grows between the size check and the read.
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        let claimed = bytes.len() as u64;
        return Ok(Err(StoreError::TooLarge { what: "file size", claimed, limit: max_bytes }));
    }
    Ok(Ok(bytes))
}

/// Creates `dir` (mode 0700 on Unix) if needed and returns whether it did; a new directory is
/// made durable by fsyncing its parent.
pub(crate) fn ensure_dir(dir: &Path) -> Result<bool> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Ok(()) => match dir.parent() {
            Some(parent) => sync_dir(parent).map(|()| true),
            None => Ok(true),
        },
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Runs `write` in `dir`, creating `dir` first if needed. When `write` fails in a directory this
/// call created, the directory is removed again (if still empty), so that a failed first save
/// leaves nothing behind: not even a directory that says the user exists.
pub(crate) fn in_dir<T>(dir: &Path, write: impl FnOnce() -> Result<T>) -> Result<T> {
    let created = ensure_dir(dir)?;
    let result = write();
    if result.is_err() && created {
        let _ = fs::remove_dir(dir);
    }
    result
}

/// Writes `bytes` to `dir/name` atomically and durably (see the module docs).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    write_replace(dir, name, bytes, true)
}

/// Opens a fresh temporary file in `dir` for writing, mode 0600 on Unix.
fn create_temp(dir: &Path) -> Result<(PathBuf, File)> {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&temp).map_err(|e| Error::io(&temp, e))?;
    Ok((temp, file))
}

/// Writes `bytes` to `dir/name` durably unless that file exists already: returns `false` then,
/// and leaves it alone. The complete, fsynced temporary file is hard-linked to the name, which
/// fails if the name is taken; a file system without hard links gets a plain rename instead.
pub(crate) fn create_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<bool> {
    let (temp, mut file) = create_temp(dir)?;
    let target = dir.join(name);
    let result = (|| {
        file.write_all(bytes).map_err(|e| Error::io(&temp, e))?;
        file.sync_all().map_err(|e| Error::io(&temp, e))?;
        match fs::hard_link(&temp, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(_) if !target.exists() => {
                fs::rename(&temp, &target).map_err(|e| Error::io(&target, e))?;
            }
            Err(_) => return Ok(false),
        }
        sync_dir(dir).map(|()| true)
    })();
    // The temporary name is removed in every case: after a link it is a second name of the file.
    let _ = fs::remove_file(&temp);
    result
}

/// Writes `bytes` to `dir/name` atomically (a complete temporary file renamed over it); with
/// `durable` also fsynced, file and directory. Without, the new content survives the process
/// being killed but a power cut may bring back the previous content.
pub(crate) fn write_replace(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> Result<PathBuf> {
    let (temp, mut file) = create_temp(dir)?;
    let target = dir.join(name);
    let result = (|| {
        file.write_all(bytes).map_err(|e| Error::io(&temp, e))?;
        if durable {
            file.sync_all().map_err(|e| Error::io(&temp, e))?;
        }
        drop(file);
        fs::rename(&temp, &target).map_err(|e| Error::io(&target, e))?;
        if durable {
            sync_dir(dir)
        } else {
            Ok(())
        }
    })();
    if result.is_err() {
        // Best effort: a leftover temporary file is harmless and removed by the next save.
        let _ = fs::remove_file(&temp);
    }
    result.map(|()| target)
}

/// Removes temporary files that a crashed writer left in `dir`. Failures are only logged: a stray
/// temporary file is never read as a version.
pub(crate) fn remove_temp_files(dir: &Path) {
    let Ok(reader) = fs::read_dir(dir) else { return };
    for item in reader.flatten() {
        if item.file_name().to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX)) {
            if let Err(e) = fs::remove_file(item.path()) {
                log::warn!("could not remove stale temporary file {}: {e}", item.path().display());
            }
        }
    }
}

/// Fsyncs a directory so that renames and removals in it are durable. Windows cannot open a
/// directory as a file, and its renames are journaled, so there this does nothing.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_round_trip() {
        for (seq, kind) in
            [(0, VersionKind::Adapter), (42, VersionKind::Reset), (u64::MAX, VersionKind::Adapter)]
        {
            assert_eq!(parse_version_name(&version_name(seq, kind)), Some((seq, kind)));
        }
        for bad in [
            "v42.attune",
            ".tmp-1-2",
            "v0000000001.attune.bak",
            "x0000000001.attune",
            "v00000000-1.reset",
        ] {
            assert_eq!(parse_version_name(bad), None, "{bad}");
        }
    }
}
