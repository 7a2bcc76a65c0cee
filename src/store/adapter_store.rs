//! [`AdapterStore`]: per-user, versioned, cached adapter persistence.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::cache::{Cache, CacheStats};
use super::crypt;
use super::error::StoreError;
use super::files::{self, Entry};
use super::fingerprint::ModelFingerprint;
use super::format::{decode, encode};
use super::pending::PendingRecord;
use super::record::AdapterRecord;
use super::report::{LoadReport, RollbackTarget, SkippedVersion, VersionInfo, VersionKind};
use super::store_key::NameKey;
use super::user_id;
use super::StoreOptions;
use crate::error::{Error, Result};

/// A directory of per-user adapters with version history and an in-memory cache.
///
/// Every user gets a directory named by a keyed hash of their id (see `user_id`), holding the
/// last [`StoreOptions::keep_versions`] versions as `v{seq:010}.attune` files. With
/// [`StoreOptions::encryption_key`] every file is sealed (see `crypt`). The store is `Send` and
/// `Sync`; share it behind an `Arc`.
///
/// Architecture invariant: all disk access happens under one I/O lock, taken before the cache
/// lock whenever both are needed, and cache hits take only the cache lock. One store per directory:
/// two processes writing the same directory are not coordinated.
pub struct AdapterStore {
    root: PathBuf,
    options: StoreOptions,
    names: NameKey,
    io: Mutex<()>,
    cache: Mutex<Cache>,
}

/// Takes a lock even if another thread panicked while holding it: the state behind these locks is
/// updated in single steps that cannot be left half done.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The file in a user's directory that holds pending episodes and the id reservation.
pub const PENDING_FILE: &str = "pending.attune";

/// Maps a record that fails validation on its way in to an invalid argument.
fn invalid(e: StoreError) -> Error {
    Error::InvalidArgument(format!("adapter record: {e}"))
}

impl AdapterStore {
    /// Opens (creating if needed) the store rooted at `root`, and its name secret (`.store-key`,
    /// created at the first open). With an encryption key, a store whose secret was sealed under
    /// another key fails here with [`Error::EncryptionKey`] ("wrong encryption key"), and so does
    /// an encrypted store opened without a key.
    pub fn open(root: &Path, options: StoreOptions) -> Result<Self> {
        if options.keep_versions == 0 {
            return Err(Error::Config("store keep_versions must be at least 1".into()));
        }
        fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        if !root.is_dir() {
            return Err(Error::Store(format!("{} is not a directory", root.display())));
        }
        let names = NameKey::load_or_create(root, options.encryption_key.as_ref())?;
        let cache = Mutex::new(Cache::new(options.cache_bytes));
        Ok(AdapterStore { root: root.to_path_buf(), options, names, io: Mutex::new(()), cache })
    }

    /// Returns the store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns the options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Returns the base-model fingerprint every adapter in this store must carry.
    pub fn fingerprint(&self) -> &ModelFingerprint {
        &self.options.fingerprint
    }

    /// Returns the directory that holds `user`'s versions (it may not exist yet). A directory an
    /// older store made under the legacy hex name is renamed to the keyed name first.
    pub fn user_dir(&self, user: &str) -> Result<PathBuf> {
        user_id::check(user)?;
        let _io = lock(&self.io);
        self.dir_locked(user)
    }

    /// `user`'s directory, moving a legacy hex-named one to its keyed name; the caller holds the
    /// I/O lock. When the rename fails (a read-only store) the legacy directory is used as it is,
    /// so that the user's adapters can still be read.
    fn dir_locked(&self, user: &str) -> Result<PathBuf> {
        let dir = self.root.join(user_id::dir_name(&self.names, user)?);
        if dir.exists() {
            return Ok(dir);
        }
        let legacy = self.root.join(user_id::legacy_dir_name(user)?);
        if !legacy.is_dir() {
            return Ok(dir);
        }
        // The messages below leave the paths out: the legacy name is the id in hex.
        if let Err(e) = fs::rename(&legacy, &dir) {
            log::warn!("adapter store: could not rename a legacy user directory to its keyed name ({e}); it is used under its old name");
            return Ok(legacy);
        }
        if let Err(e) = files::sync_dir(&self.root) {
            log::warn!("adapter store: the rename of a legacy user directory may not be durable yet: {e}");
        }
        log::info!("adapter store: moved a user directory from its legacy hex name to its keyed name");
        Ok(dir)
    }

    /// Seals a plain file image when the store has an encryption key.
    fn seal(&self, plain: Vec<u8>) -> Result<Vec<u8>> {
        match &self.options.encryption_key {
            Some(key) => crypt::seal(key, &plain),
            None => Ok(plain),
        }
    }

    /// Decodes a file image, unsealing it first when it is sealed.
    fn decode_file(&self, bytes: &[u8]) -> std::result::Result<AdapterRecord, StoreError> {
        let plain = crypt::open(self.options.encryption_key.as_ref(), bytes)?;
        decode(&plain, &self.options.fingerprint)
    }

    /// Returns `user`'s adapter from the cache, or loads the newest valid version from disk.
    ///
    /// `Ok(None)` means the user has no adapter (never saved, or reset): create a fresh one. Damaged
    /// newer versions are skipped with a warning; if every version is damaged this fails with
    /// [`Error::CorruptAdapter`] (call [`reset`](Self::reset) to start over). An adapter from
    /// another base model or an unreadable format version also fails rather than being skipped.
    pub fn load(&self, user: &str) -> Result<Option<Arc<AdapterRecord>>> {
        user_id::check(user)?;
        if let Some(hit) = lock(&self.cache).get(user) {
            return Ok(Some(hit));
        }
        let _io = lock(&self.io);
        // Another thread may have loaded or put this user while we waited for the I/O lock.
        {
            let mut cache = lock(&self.cache);
            if let Some(hit) = cache.get(user) {
                return Ok(Some(hit));
            }
            cache.count_miss();
        }
        let dir = self.dir_locked(user)?;
        let report = self.read_newest(&dir)?;
        let Some(record) = report.record else {
            if let Some(newest) = report.skipped.first() {
                let reasons: Vec<String> =
                    report.skipped.iter().map(|s| format!("v{}: {}", s.seq, s.reason)).collect();
                return Err(Error::CorruptAdapter {
                    path: newest.path.clone(),
                    reason: format!("no valid version left ({})", reasons.join("; ")),
                });
            }
            return Ok(None);
        };
        let record = Arc::new(record);
        let evicted = lock(&self.cache).insert(user, record.clone(), false);
        if let Err(e) = self.write_back(evicted) {
            log::error!("adapter store: writing back an evicted adapter failed: {e}");
        }
        Ok(Some(record))
    }

    /// Reads `user`'s newest valid version from disk, bypassing and not filling the cache, and
    /// reports which version was used and which were skipped and why.
    pub fn load_report(&self, user: &str) -> Result<LoadReport> {
        user_id::check(user)?;
        let _io = lock(&self.io);
        let dir = self.dir_locked(user)?;
        self.read_newest(&dir)
    }

    /// Writes `record` as `user`'s new newest version now, and caches it. Returns the version's
    /// sequence number. Unsaved changes to the same user in the cache are superseded.
    pub fn save(&self, user: &str, record: impl Into<Arc<AdapterRecord>>) -> Result<u64> {
        let record = record.into();
        user_id::check(user)?;
        let bytes = self.seal(encode(&record, &self.options.fingerprint).map_err(invalid)?)?;
        let _io = lock(&self.io);
        let dir = self.dir_locked(user)?;
        let seq = self.write_version(&dir, VersionKind::Adapter, &bytes)?;
        let evicted = lock(&self.cache).insert(user, record, false);
        if let Err(e) = self.write_back(evicted) {
            log::error!("adapter store: writing back an evicted adapter failed: {e}");
        }
        Ok(seq)
    }

    /// Replaces `user`'s cached adapter without writing it yet (write-back). The change reaches
    /// the disk on [`flush`](Self::flush), [`flush_all`](Self::flush_all), eviction, or drop.
    ///
    /// A record larger than the whole cache is written at once. If a write this call triggers
    /// fails, the error is returned and the record stays in the cache, still dirty.
    pub fn put(&self, user: &str, record: impl Into<Arc<AdapterRecord>>) -> Result<()> {
        let record = record.into();
        user_id::check(user)?;
        record.validate().map_err(invalid)?;
        let _io = lock(&self.io);
        let evicted = lock(&self.cache).insert(user, record, true);
        self.write_back(evicted)
    }

    /// Writes `user`'s cached adapter if it has unsaved changes; returns whether it did.
    pub fn flush(&self, user: &str) -> Result<bool> {
        user_id::check(user)?;
        let _io = lock(&self.io);
        let dir = self.dir_locked(user)?;
        self.flush_locked(user, &dir)
    }

    /// Writes every cached adapter that has unsaved changes and returns how many were written. It
    /// tries all of them and returns the first error, if any.
    pub fn flush_all(&self) -> Result<usize> {
        let _io = lock(&self.io);
        let users = lock(&self.cache).dirty_users();
        let (mut written, mut first_err) = (0, None);
        for user in users {
            match self.dir_locked(&user).and_then(|dir| self.flush_locked(&user, &dir)) {
                Ok(w) => written += usize::from(w),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(written), Err)
    }

    /// Lists `user`'s versions on disk, oldest first, checking each one. Unsaved cache changes
    /// do not appear.
    pub fn list_versions(&self, user: &str) -> Result<Vec<VersionInfo>> {
        user_id::check(user)?;
        let _io = lock(&self.io);
        let dir = self.dir_locked(user)?;
        let mut out = Vec::new();
        for entry in files::list_versions(&dir)? {
            let file_bytes =
                fs::metadata(&entry.path).map_err(|e| Error::io(&entry.path, e))?.len();
            let (updated_unix, problem) = match entry.kind {
                VersionKind::Reset => (None, None),
                VersionKind::Adapter => match self.read_entry(&entry)? {
                    Ok(r) => (Some(r.updated_unix), None),
                    Err(e) => (None, Some(e)),
                },
            };
            let Entry { seq, kind, path } = entry;
            out.push(VersionInfo { seq, kind, path, file_bytes, updated_unix, problem });
        }
        Ok(out)
    }

    /// Makes an older version current again by writing a copy of it as the new newest version;
    /// the versions in between stay in the history, so a rollback can itself be undone. Returns
    /// the now-current adapter (`None` when the target is a reset marker). Unsaved cache changes
    /// for `user` are discarded.
    pub fn rollback(
        &self,
        user: &str,
        target: RollbackTarget,
    ) -> Result<Option<Arc<AdapterRecord>>> {
        user_id::check(user)?;
        let _io = lock(&self.io);
        let dir = self.dir_locked(user)?;
        let entries = files::list_versions(&dir)?;
        let chosen = match target {
            RollbackTarget::Version(seq) => {
                let entry = entries
                    .iter()
                    .find(|e| e.seq == seq)
                    .ok_or_else(|| StoreError::NoSuchVersion { seq }.at(&dir))?;
                match entry.kind {
                    VersionKind::Reset => None,
                    VersionKind::Adapter => {
                        Some(self.read_entry(entry)?.map_err(|e| e.at(&entry.path))?)
                    }
                }
            }
            RollbackTarget::StepsBack(0) => {
                return Err(Error::InvalidArgument("rollback needs at least one step back".into()))
            }
            RollbackTarget::StepsBack(steps) => {
                let mut usable = 0usize;
                let mut found = None;
                for entry in entries.iter().rev() {
                    let record = match entry.kind {
                        VersionKind::Reset => None,
                        VersionKind::Adapter => match self.read_entry(entry)? {
                            Ok(r) => Some(r),
                            Err(e) if e.is_corruption() => continue,
                            Err(e) => return Err(e.at(&entry.path)),
                        },
                    };
                    if usable == steps {
                        found = Some(record);
                        break;
                    }
                    usable += 1;
                }
                found.ok_or_else(|| {
                    Error::Store(format!(
                        "{}: cannot go {steps} versions back, only {usable} usable versions exist",
                        dir.display()
                    ))
                })?
            }
        };
        lock(&self.cache).remove(user);
        match chosen {
            None => {
                self.write_version(&dir, VersionKind::Reset, &[])?;
                Ok(None)
            }
            Some(record) => {
                let bytes = self.seal(encode(&record, &self.options.fingerprint).map_err(|e| e.at(&dir))?)?;
                self.write_version(&dir, VersionKind::Adapter, &bytes)?;
                let record = Arc::new(record);
                let evicted = lock(&self.cache).insert(user, record.clone(), false);
                if let Err(e) = self.write_back(evicted) {
                    log::error!("adapter store: writing back an evicted adapter failed: {e}");
                }
                Ok(Some(record))
            }
        }
    }

    /// `record` as a self-contained file image, as [`AdapterStore::export`] writes it (current
    /// format, this store's fingerprint, sealed under the store's encryption key when it has one),
    /// without writing anything.
    pub fn encode_record(&self, record: &AdapterRecord) -> Result<Vec<u8>> {
        self.seal(encode(record, &self.options.fingerprint).map_err(invalid)?)
    }

    /// Returns `user`'s current adapter as a self-contained file image (current format, this
    /// store's fingerprint; sealed under the store's encryption key when it has one), saving
    /// unsaved cache changes first. Fails with [`Error::Store`] if the user has no adapter.
    pub fn export(&self, user: &str) -> Result<Vec<u8>> {
        user_id::check(user)?;
        let _io = lock(&self.io);
        let dir = self.dir_locked(user)?;
        self.flush_locked(user, &dir)?;
        let report = self.read_newest(&dir)?;
        let record = report.record.ok_or_else(|| StoreError::NoAdapter.at(&dir))?;
        self.seal(encode(&record, &self.options.fingerprint).map_err(|e| e.at(&dir))?)
    }

    /// Validates `bytes` as an adapter file for this store's base model and, only if it is valid,
    /// saves it as `user`'s new newest version. Returns the version's sequence number. Sealed
    /// bytes need this store's encryption key (else [`Error::EncryptionKey`]); plain bytes are
    /// accepted either way and sealed when saved.
    pub fn import(&self, user: &str, bytes: &[u8]) -> Result<u64> {
        self.import_checked(user, bytes, |_| Ok(()))
    }

    /// [`import`](Self::import) with a caller's check of the decoded record (the learner's own
    /// validation, say) run before anything is written; a record it refuses is
    /// [`Error::CorruptAdapter`] and leaves the store untouched.
    pub fn import_checked(&self, user: &str, bytes: &[u8], check: impl FnOnce(&AdapterRecord) -> Result<()>) -> Result<u64> {
        user_id::check(user)?;
        let path = Path::new("<imported bytes>");
        let record = self.decode_file(bytes).map_err(|e| e.at(path))?;
        check(&record).map_err(|e| Error::CorruptAdapter { path: path.to_path_buf(), reason: e.to_string() })?;
        self.save(user, record)
    }

    /// Starts `user` over: after this, [`load`](Self::load) returns `None` until a new save.
    ///
    /// Reset is undoable. It writes a reset marker as the newest version instead of deleting
    /// anything, so `rollback(user, StepsBack(1))` brings the previous adapter back, and older
    /// versions age out with later saves as usual. Unsaved cache changes are discarded. A user
    /// with no versions, or one already reset, is left untouched. Use [`forget`](Self::forget) to
    /// erase a user's data.
    pub fn reset(&self, user: &str) -> Result<()> {
        user_id::check(user)?;
        let _io = lock(&self.io);
        let dir = self.dir_locked(user)?;
        lock(&self.cache).remove(user);
        let entries = files::list_versions(&dir)?;
        match entries.last() {
            None => Ok(()),
            Some(e) if e.kind == VersionKind::Reset => Ok(()),
            Some(_) => self.write_version(&dir, VersionKind::Reset, &[]).map(|_| ()),
        }
    }

    /// Erases everything the store holds for `user`: every version, reset markers, temporary
    /// files, pending episodes, the user's directory (and one left under a legacy name) and the
    /// cache entry (unsaved changes included). Returns whether there was anything on disk.
    pub fn forget(&self, user: &str) -> Result<bool> {
        user_id::check(user)?;
        let _io = lock(&self.io);
        lock(&self.cache).remove(user);
        let keyed = self.root.join(user_id::dir_name(&self.names, user)?);
        let legacy = self.root.join(user_id::legacy_dir_name(user)?);
        let mut existed = false;
        for dir in [keyed, legacy] {
            match fs::remove_dir_all(&dir) {
                Ok(()) => existed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&dir, e)),
            }
        }
        if existed {
            files::sync_dir(&self.root)?;
        }
        Ok(existed)
    }

    /// Writes `user`'s pending episodes and id reservation (`pending.attune`, replaced
    /// atomically). With `durable` the write is fsynced; the runtime asks for that whenever the
    /// id reservation grows, so a crash can lose pending episodes but never reissue an id.
    pub fn save_pending(&self, user: &str, record: &PendingRecord, durable: bool) -> Result<()> {
        user_id::check(user)?;
        let bytes = self.seal(record.encode().map_err(invalid)?)?;
        let _io = lock(&self.io);
        let dir = self.dir_locked(user)?;
        files::in_dir(&dir, || files::write_replace(&dir, PENDING_FILE, &bytes, durable).map(|_| ()))
    }

    /// Reads `user`'s pending episodes: `Ok(None)` when there are none on disk, the inner error
    /// when the file is damaged (the caller decides what to do with the ids then). A file sealed
    /// under another key is [`Error::EncryptionKey`], never damage: dropping its episodes would
    /// lose them for a key mix-up.
    pub fn load_pending(&self, user: &str) -> Result<Option<std::result::Result<PendingRecord, StoreError>>> {
        user_id::check(user)?;
        let _io = lock(&self.io);
        let path = self.dir_locked(user)?.join(PENDING_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let key = self.options.encryption_key.as_ref();
        match files::read_bounded(&path, self.options.max_file_bytes)?.and_then(|b| crypt::open(key, &b)) {
            Err(e) if e.is_key_problem() => Err(e.at(&path)),
            plain => Ok(Some(plain.and_then(|b| PendingRecord::decode(&b)))),
        }
    }

    /// Returns the cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        lock(&self.cache).stats()
    }

    /// Reads and decodes one adapter version. I/O failures are errors; damage and mismatches are
    /// the inner result.
    fn read_entry(&self, entry: &Entry) -> Result<Result<AdapterRecord, StoreError>> {
        Ok(files::read_bounded(&entry.path, self.options.max_file_bytes)?
            .and_then(|bytes| self.decode_file(&bytes)))
    }

    /// Finds the newest usable version in `dir`; the caller holds the I/O lock.
    fn read_newest(&self, dir: &Path) -> Result<LoadReport> {
        let mut report = LoadReport::default();
        for entry in files::list_versions(dir)?.iter().rev() {
            if entry.kind == VersionKind::Reset {
                report.reset_at = Some(entry.seq);
                break;
            }
            match self.read_entry(entry)? {
                Ok(record) => {
                    report.record = Some(record);
                    report.version = Some(entry.seq);
                    break;
                }
                Err(reason) if reason.is_corruption() => {
                    log::warn!(
                        "adapter store: skipping damaged version {} ({}): {reason}",
                        entry.seq,
                        entry.path.display()
                    );
                    let (seq, path) = (entry.seq, entry.path.clone());
                    report.skipped.push(SkippedVersion { seq, path, reason });
                }
                Err(reason) => return Err(reason.at(&entry.path)),
            }
        }
        if let (Some(v), false) = (report.version, report.skipped.is_empty()) {
            let skipped: Vec<String> = report.skipped.iter().map(|s| s.seq.to_string()).collect();
            log::warn!(
                "adapter store: loaded version {v} from {} after skipping damaged versions {}",
                dir.display(),
                skipped.join(", ")
            );
        }
        Ok(report)
    }

    /// Writes a new newest version and prunes old ones; the caller holds the I/O lock.
    fn write_version(&self, dir: &Path, kind: VersionKind, bytes: &[u8]) -> Result<u64> {
        let (seq, entries) = files::in_dir(dir, || {
            files::remove_temp_files(dir);
            let mut entries = files::list_versions(dir)?;
            let seq = match entries.last() {
                None => 1,
                Some(e) => e.seq.checked_add(1).ok_or_else(|| {
                    Error::Store(format!("{}: version numbers exhausted", dir.display()))
                })?,
            };
            let path = files::write_atomic(dir, &files::version_name(seq, kind), bytes)?;
            entries.push(Entry { seq, kind, path });
            Ok((seq, entries))
        })?;
        let excess = entries.len().saturating_sub(self.options.keep_versions);
        if excess > 0 {
            // Pruning failures leave an extra old version behind, which is harmless.
            for old in &entries[..excess] {
                if let Err(e) = fs::remove_file(&old.path) {
                    log::warn!("adapter store: could not prune {}: {e}", old.path.display());
                }
            }
            if let Err(e) = files::sync_dir(dir) {
                log::warn!("adapter store: {e}");
            }
        }
        Ok(seq)
    }

    /// Writes `user`'s cached adapter if dirty; the caller holds the I/O lock.
    fn flush_locked(&self, user: &str, dir: &Path) -> Result<bool> {
        let Some(record) = lock(&self.cache).take_dirty(user) else { return Ok(false) };
        let result = encode(&record, &self.options.fingerprint)
            .map_err(|e| e.at(dir))
            .and_then(|plain| self.seal(plain))
            .and_then(|bytes| self.write_version(dir, VersionKind::Adapter, &bytes));
        match result {
            Ok(_) => Ok(true),
            Err(e) => {
                lock(&self.cache).mark_dirty(user, &record);
                Err(e)
            }
        }
    }

    /// Writes records that the cache pushed out; failed ones go back into the cache, still dirty.
    /// The caller holds the I/O lock and not the cache lock.
    fn write_back(&self, evicted: Vec<(String, Arc<AdapterRecord>)>) -> Result<()> {
        let mut first_err = None;
        for (user, record) in evicted {
            let result = self.dir_locked(&user).and_then(|dir| {
                let bytes = self.seal(encode(&record, &self.options.fingerprint).map_err(|e| e.at(&dir))?)?;
                self.write_version(&dir, VersionKind::Adapter, &bytes)
            });
            if let Err(e) = result {
                lock(&self.cache).restore_dirty(&user, record);
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for AdapterStore {
    /// Writes unsaved changes; failures can only be logged here.
    fn drop(&mut self) {
        if let Err(e) = self.flush_all() {
            log::error!("adapter store: unsaved adapter changes lost on close: {e}");
        }
    }
}

impl std::fmt::Debug for AdapterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterStore")
            .field("root", &self.root)
            .field("options", &self.options)
            .field("cache", &self.cache_stats())
            .finish()
    }
}
