//! Turning untrusted user ids into directory names.
//!
//! Architecture invariant: a user id is never used as a path. Its UTF-8 bytes are hex-encoded
//! (lowercase, so case-insensitive file systems cannot merge two users), and ids too long for one
//! file name keep a readable prefix plus the SHA-256 of the whole id. Every name is therefore one
//! path component of `[0-9a-f-]` plus a one-letter prefix, under 200 bytes, and cannot name `.`,
//! `..`, a separator, a drive or a device.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The longest user id accepted, in bytes. Longer ids are refused rather than hashed, so that a
/// caller passing, say, a whole document by mistake gets an error.
pub const MAX_USER_ID_BYTES: usize = 64 * 1024;
/// Ids up to this many bytes are stored fully hex-encoded (`u` + 128 hex digits).
const DIRECT_MAX_BYTES: usize = 64;
/// How many leading bytes of a long id stay readable in its directory name.
const LONG_PREFIX_BYTES: usize = 32;

/// Returns the directory name for `user`, or [`Error::InvalidArgument`] for an empty or over-long
/// id. Every other UTF-8 string, including ones with `/`, `..`, NUL or control characters, maps to
/// a safe, unique name.
pub(crate) fn dir_name(user: &str) -> Result<String> {
    if user.is_empty() {
        return Err(Error::InvalidArgument("user id is empty".into()));
    }
    if user.len() > MAX_USER_ID_BYTES {
        return Err(Error::InvalidArgument(format!(
            "user id is {} bytes, more than the {MAX_USER_ID_BYTES} allowed",
            user.len()
        )));
    }
    let bytes = user.as_bytes();
    if bytes.len() <= DIRECT_MAX_BYTES {
        Ok(format!("u{}", hex(bytes)))
    } else {
        Ok(format!("h{}-{}", hex(&bytes[..LONG_PREFIX_BYTES]), hex(&Sha256::digest(bytes))))
    }
}

/// Lower-case hex of `bytes`, two digits per byte.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a `String` cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_safe_components() {
        let long = "x".repeat(10_000);
        for id in ["alice", "../x", "/etc/passwd", "a\0b", "C:\\x", ".", "..", "é😀", &long] {
            let name = dir_name(id).unwrap();
            assert!(name.len() < 200, "{id:?} -> {} bytes", name.len());
            assert!(name[1..].bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'), "{name}");
            assert!(name.starts_with('u') || name.starts_with('h'));
        }
    }

    #[test]
    fn distinct_ids_get_distinct_names() {
        let a = "y".repeat(100);
        let mut b = a.clone();
        b.push('z');
        assert_ne!(dir_name(&a).unwrap(), dir_name(&b).unwrap());
        assert_ne!(dir_name("A").unwrap(), dir_name("a").unwrap());
        // The 64-byte direct form and the hashed form cannot collide: different prefixes.
        assert_ne!(dir_name(&"q".repeat(64)).unwrap(), dir_name(&"q".repeat(65)).unwrap());
    }

    #[test]
    fn long_ids_keep_a_hex_prefix_and_the_sha256_of_the_whole_id() {
        // The expected name was computed independently (Python's hashlib); directory names must
        // never change, or stored adapters would no longer be found.
        assert_eq!(
            dir_name(&"y".repeat(100)).unwrap(),
            "h7979797979797979797979797979797979797979797979797979797979797979-\
             56846f2db153afa893bd18d0c0bf6e026d9cd3fa0bfa941976b17ff14d3e217a"
        );
        assert_eq!(dir_name("alice").unwrap(), "u616c696365");
    }

    #[test]
    fn rejects_empty_and_huge() {
        assert!(matches!(dir_name(""), Err(Error::InvalidArgument(_))));
        let huge = "x".repeat(MAX_USER_ID_BYTES + 1);
        assert!(matches!(dir_name(&huge), Err(Error::InvalidArgument(_))));
    }
}
