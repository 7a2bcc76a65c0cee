//! The store's name secret (`.store-key` in the store root): 32 random bytes, made when a store is
//! first opened, that key the hash turning user ids into directory names.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"\x89ATSKEY\n"
//! 8       2     format version, u16 little-endian (1)
//! 10      32    the secret
//! 42      4     CRC-32 (IEEE) of every byte before it, u32 little-endian
//! ```
//!
//! With an encryption key the file is sealed like every other store file (see `crypt`), so the
//! names cannot be tested against guessed ids without the host's key either, and a store opened
//! with another key fails at once with "wrong encryption key". A plain file found when a key is
//! configured is rewritten sealed (same secret, so every name stays). The file is created with
//! mode 0600, fsynced, and linked into place only if no other file got there first, so two
//! opens racing never end up with different secrets.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use super::crypt::{self, EncryptionKey};
use super::error::StoreError;
use super::files;
use crate::error::{Error, Result};

/// The secret's file name in the store root.
pub const STORE_KEY_FILE: &str = ".store-key";
/// Its first eight bytes.
const MAGIC: [u8; 8] = *b"\x89ATSKEY\n";
/// The version this build writes and reads.
const VERSION: u16 = 1;
/// Magic, version, secret, checksum.
const LEN: usize = 8 + 2 + 32 + 4;

/// The secret that keys directory names.
pub(crate) struct NameKey([u8; 32]);

impl NameKey {
    /// Reads the store's secret, creating it first if the store has none.
    pub(crate) fn load_or_create(root: &Path, key: Option<&EncryptionKey>) -> Result<NameKey> {
        let path = root.join(STORE_KEY_FILE);
        // Two rounds at most: a file another open created between our read and our link is read
        // in the second.
        for _ in 0..2 {
            match fs::read(&path) {
                Ok(bytes) => {
                    let secret = decode(key, &bytes).map_err(|e| match e {
                        e if e.is_key_problem() => e.at(&path),
                        e => Error::Store(format!(
                            "{}: the store's name secret is damaged ({e}); without it no user's \
                             directory can be found",
                            path.display()
                        )),
                    })?;
                    if key.is_some() && !crypt::is_sealed(&bytes) {
                        // Best effort: on a read-only store the plain secret still names every
                        // folder correctly, and the next writable open seals it.
                        match encode(key, &secret).and_then(|b| files::write_atomic(root, STORE_KEY_FILE, &b)) {
                            Ok(_) => log::info!("adapter store: sealed the name secret under the encryption key"),
                            Err(e) => log::warn!("adapter store: could not seal the name secret under the encryption key yet: {e}"),
                        }
                    }
                    return Ok(NameKey(secret));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    let secret: [u8; 32] = crypt::random_bytes()?;
                    if files::create_atomic(root, STORE_KEY_FILE, &encode(key, &secret)?)? {
                        return Ok(NameKey(secret));
                    }
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::Store(format!("{}: appeared and vanished while the store opened", path.display())))
    }

    /// Wraps a known secret (tests pin names with it).
    #[cfg(test)]
    pub(crate) const fn from_secret(secret: [u8; 32]) -> NameKey {
        NameKey(secret)
    }

    /// The keyed hash of a user id: HMAC-SHA256 over a domain tag and the id's bytes.
    pub(crate) fn hash(&self, user: &str) -> [u8; 32] {
        crypt::hmac_sha256(&self.0, &[b"attune-user-dir-v1\0", user.as_bytes()])
    }
}

/// The file image of `secret`, sealed under `key` when there is one.
fn encode(key: Option<&EncryptionKey>, secret: &[u8; 32]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(secret);
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    match key {
        Some(k) => crypt::seal(k, &out),
        None => Ok(out),
    }
}

/// The secret in a file image, checked like every other store file.
fn decode(key: Option<&EncryptionKey>, bytes: &[u8]) -> std::result::Result<[u8; 32], StoreError> {
    let plain = crypt::open(key, bytes)?;
    if plain.len() != LEN {
        return Err(StoreError::Truncated { needed: LEN as u64, available: plain.len() as u64 });
    }
    if plain[..8] != MAGIC {
        return Err(StoreError::BadMagic);
    }
    let stored = u32::from_le_bytes([plain[42], plain[43], plain[44], plain[45]]);
    let computed = crc32fast::hash(&plain[..42]);
    if stored != computed {
        return Err(StoreError::ChecksumMismatch { stored, computed });
    }
    let version = u16::from_le_bytes([plain[8], plain[9]]);
    if version != VERSION {
        return Err(StoreError::VersionTooNew { found: version, current: VERSION });
    }
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&plain[10..42]);
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_stable_sealed_when_a_key_is_added() {
        let tmp = tempfile::tempdir().unwrap();
        let a = NameKey::load_or_create(tmp.path(), None).unwrap();
        let b = NameKey::load_or_create(tmp.path(), None).unwrap();
        assert_eq!(a.0, b.0, "the same store keeps its secret");
        let path = tmp.path().join(STORE_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let other = tempfile::tempdir().unwrap();
        assert_ne!(NameKey::load_or_create(other.path(), None).unwrap().0, a.0, "stores differ");

        let key = EncryptionKey::from_bytes([7; 32]);
        let sealed = NameKey::load_or_create(tmp.path(), Some(&key)).unwrap();
        assert_eq!(sealed.0, a.0, "adding a key keeps every name");
        assert!(crypt::is_sealed(&fs::read(&path).unwrap()));
        let wrong = EncryptionKey::from_bytes([8; 32]);
        match NameKey::load_or_create(tmp.path(), Some(&wrong)) {
            Err(Error::EncryptionKey { reason, .. }) => assert!(reason.contains("wrong encryption key"), "{reason}"),
            other => panic!("{:?}", other.map(|k| k.0)),
        }
        assert!(matches!(NameKey::load_or_create(tmp.path(), None), Err(Error::EncryptionKey { .. })));

        fs::write(&path, b"\x89ATSKEY\n").unwrap();
        assert!(matches!(NameKey::load_or_create(tmp.path(), None), Err(Error::Store(m)) if m.contains("damaged")));
    }
}
