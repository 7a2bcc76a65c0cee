//! Turning untrusted user ids into directory names.
//!
//! Architecture invariant: a user id is never used as a path, and cannot be read back from one. A
//! user's directory is `k` followed by the 64 lower-case hex digits of HMAC-SHA256 of the id under
//! the store's name secret (`.store-key`, see `store_key`): one path component of `[0-9a-f]`
//! (lower case, so case-insensitive file systems cannot merge two users) that cannot name `.`,
//! `..`, a separator, a drive or a device, and from which the id cannot be decoded or tested
//! without the secret. Names are stable for one store and differ between stores.
//!
//! Stores written before keyed names used the id's hex (`u` + hex, or for long ids `h` + the hex
//! of a 32-byte prefix + `-` + SHA-256 of the whole id). [`legacy_dir_name`] still computes those
//! names so that the store can find such a directory and rename it to the keyed name at the
//! user's first access.

use sha2::{Digest, Sha256};

use super::crypt::hex;
use super::store_key::NameKey;
use crate::error::{Error, Result};

/// The longest user id accepted, in bytes. Longer ids are refused rather than hashed, so that a
/// caller passing, say, a whole document by mistake gets an error.
pub const MAX_USER_ID_BYTES: usize = 64 * 1024;
/// Ids up to this many bytes are stored fully hex-encoded (`u` + 128 hex digits).
const DIRECT_MAX_BYTES: usize = 64;
/// How many leading bytes of a long id stay readable in its directory name.
const LONG_PREFIX_BYTES: usize = 32;

/// Returns `user`'s directory name under the store's name secret, or
/// [`Error::InvalidArgument`] for an empty or over-long id. Every other UTF-8 string, including
/// ones with `/`, `..`, NUL or control characters, maps to a safe name, unique up to the
/// collisions of a 256-bit hash.
pub(crate) fn dir_name(key: &NameKey, user: &str) -> Result<String> {
    check(user)?;
    Ok(format!("k{}", hex(&key.hash(user))))
}

/// Refuses an empty or over-long id.
pub(crate) fn check(user: &str) -> Result<()> {
    if user.is_empty() {
        return Err(Error::InvalidArgument("user id is empty".into()));
    }
    if user.len() > MAX_USER_ID_BYTES {
        return Err(Error::InvalidArgument(format!(
            "user id is {} bytes, more than the {MAX_USER_ID_BYTES} allowed",
            user.len()
        )));
    }
    Ok(())
}

/// Returns the name an older store gave `user`'s directory (the id's hex), so that such a
/// directory can be found and renamed.
pub(crate) fn legacy_dir_name(user: &str) -> Result<String> {
    check(user)?;
    let bytes = user.as_bytes();
    if bytes.len() <= DIRECT_MAX_BYTES {
        Ok(format!("u{}", hex(bytes)))
    } else {
        Ok(format!("h{}-{}", hex(&bytes[..LONG_PREFIX_BYTES]), hex(&Sha256::digest(bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tmp: &std::path::Path) -> NameKey {
        NameKey::load_or_create(tmp, None).unwrap()
    }

    #[test]
    fn names_are_single_safe_components() {
        let tmp = tempfile::tempdir().unwrap();
        let k = key(tmp.path());
        let long = "x".repeat(10_000);
        for id in ["alice", "../x", "/etc/passwd", "a\0b", "C:\\x", ".", "..", "é😀", &long] {
            let name = dir_name(&k, id).unwrap();
            assert_eq!(name.len(), 65, "{id:?} -> {name}");
            assert!(name.starts_with('k') && name[1..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{name}");
            let legacy = legacy_dir_name(id).unwrap();
            assert!(legacy.len() < 200, "{id:?} -> {} bytes", legacy.len());
            assert!(legacy[1..].bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'), "{legacy}");
            assert!(legacy.starts_with('u') || legacy.starts_with('h'));
        }
    }

    #[test]
    fn distinct_ids_get_distinct_names_and_stores_differ() {
        let tmp = tempfile::tempdir().unwrap();
        let k = key(tmp.path());
        let a = "y".repeat(100);
        let mut b = a.clone();
        b.push('z');
        assert_ne!(dir_name(&k, &a).unwrap(), dir_name(&k, &b).unwrap());
        assert_ne!(dir_name(&k, "A").unwrap(), dir_name(&k, "a").unwrap());
        assert_eq!(dir_name(&k, "a").unwrap(), dir_name(&key(tmp.path()), "a").unwrap(), "stable in one store");
        let other = tempfile::tempdir().unwrap();
        assert_ne!(dir_name(&k, "a").unwrap(), dir_name(&key(other.path()), "a").unwrap(), "another store, another name");
        assert_ne!(legacy_dir_name(&a).unwrap(), legacy_dir_name(&b).unwrap());
        // The 64-byte direct form and the hashed form cannot collide: different prefixes.
        assert_ne!(legacy_dir_name(&"q".repeat(64)).unwrap(), legacy_dir_name(&"q".repeat(65)).unwrap());
    }

    #[test]
    fn keyed_names_are_hmac_sha256_of_the_id() {
        // The expected digest was computed independently (Python's hmac and hashlib): names must
        // never change for a given secret, or stored adapters would no longer be found.
        let k = NameKey::from_secret([0x42; 32]);
        assert_eq!(
            dir_name(&k, "alice").unwrap(),
            "k95dbc1a0ce2f2c0a5cea80cf2d19487b4cb8d9928258280b17fb1690e97f329f"
        );
    }

    #[test]
    fn legacy_names_keep_a_hex_prefix_and_the_sha256_of_the_whole_id() {
        // The expected name was computed independently (Python's hashlib); legacy names must
        // never change, or directories of older stores would no longer be found.
        assert_eq!(
            legacy_dir_name(&"y".repeat(100)).unwrap(),
            "h7979797979797979797979797979797979797979797979797979797979797979-\
             56846f2db153afa893bd18d0c0bf6e026d9cd3fa0bfa941976b17ff14d3e217a"
        );
        assert_eq!(legacy_dir_name("alice").unwrap(), "u616c696365");
    }

    #[test]
    fn rejects_empty_and_huge() {
        let tmp = tempfile::tempdir().unwrap();
        let k = key(tmp.path());
        let huge = "x".repeat(MAX_USER_ID_BYTES + 1);
        for bad in ["", huge.as_str()] {
            assert!(matches!(dir_name(&k, bad), Err(Error::InvalidArgument(_))));
            assert!(matches!(legacy_dir_name(bad), Err(Error::InvalidArgument(_))));
        }
    }
}
