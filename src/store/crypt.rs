//! Encryption at rest: an authenticated envelope around a whole file image.
//!
//! With an [`EncryptionKey`] (`store.encryption_key`), everything the store writes (adapter
//! versions, `pending.attune`, the name secret `.store-key`) and every exported adapter is sealed
//! with XChaCha20-Poly1305 under that key:
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"\x89ATSEAL\n"
//! 8       2     envelope version, u16 little-endian (1)
//! 10      8     key check: the first 8 bytes of HMAC-SHA256(key, "attune-encryption-key-check-v1")
//! 18      24    nonce, random for every file written
//! 42      ..    ciphertext of the plain file image
//! len-16  16    Poly1305 tag
//! ```
//!
//! The plain image inside is byte for byte what an unencrypted store writes, with its own magic,
//! format version and CRC-32 (see `format` and `pending`), so format versions, migrations and
//! checksums work the same with and without a key. The 42 header bytes are the associated data:
//! changing any of them fails authentication like changing the ciphertext does.
//!
//! The key check tells a wrong key apart from damage before anything is decrypted: a file whose
//! check differs was sealed under another key ([`StoreError::WrongKey`], never skipped as damage),
//! while one whose check matches but whose tag does not was damaged or altered
//! ([`StoreError::AuthFailed`], skipped like any other damaged version). Eight bytes of a MAC of a
//! constant reveal nothing usable about a 256-bit key.
//!
//! Reading rules: a sealed file without a configured key is [`StoreError::KeyRequired`]; a plain
//! file is read as it is even when a key is configured, so that a store which ran without a key
//! keeps its users when one is added (its plain versions age out as sealed ones are saved).

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

use super::error::StoreError;
use crate::error::{Error, Result};

/// The first eight bytes of every sealed file.
pub const SEAL_MAGIC: [u8; 8] = *b"\x89ATSEAL\n";
/// The envelope version this build writes and reads.
pub const SEAL_VERSION: u16 = 1;
/// Magic, version, key check and nonce: the associated data.
const HEADER_LEN: usize = 8 + 2 + 8 + 24;
/// The Poly1305 tag at the end.
const TAG_LEN: usize = 16;

/// A 32-byte key for encryption at rest, given by the host.
///
/// In JSON (and [`EncryptionKey::parse`]) it is 64 hex digits or standard base64 (padding
/// optional). Its `Debug` output never shows the key; serialising it writes the 64 hex digits, so
/// that a configuration round-trips.
#[derive(Clone)]
pub struct EncryptionKey([u8; 32]);

impl EncryptionKey {
    /// Wraps 32 key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        EncryptionKey(bytes)
    }

    /// Reads a key written as 64 hex digits or as base64. The error never repeats the text, which
    /// may be a nearly right key.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex_decode(text)
        } else {
            let engine = GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            engine.decode(text).ok()
        };
        match bytes.map(<[u8; 32]>::try_from) {
            Some(Ok(key)) => Ok(EncryptionKey(key)),
            _ => Err(Error::Config(format!(
                "store.encryption_key must be 32 bytes written as 64 hex digits or as base64 (the \
                 {} characters given are neither)",
                text.len()
            ))),
        }
    }

    /// The check value stored in every sealed file's header.
    fn check(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out.copy_from_slice(&hmac_sha256(&self.0, &[b"attune-encryption-key-check-v1"])[..8]);
        out
    }
}

impl fmt::Debug for EncryptionKey {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(..)")
    }
}

impl Serialize for EncryptionKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for EncryptionKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        EncryptionKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Whether `bytes` start like a sealed file.
pub(crate) fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(&SEAL_MAGIC)
}

/// Seals a plain file image under `key` with a fresh random nonce.
pub(crate) fn seal(key: &EncryptionKey, plain: &[u8]) -> Result<Vec<u8>> {
    let nonce: [u8; 24] = random_bytes()?;
    let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN);
    out.extend_from_slice(&SEAL_MAGIC);
    out.extend_from_slice(&SEAL_VERSION.to_le_bytes());
    out.extend_from_slice(&key.check());
    out.extend_from_slice(&nonce);
    let cipher = XChaCha20Poly1305::new(&key.0.into());
    let sealed = cipher
        .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad: &out })
        .map_err(|_| Error::Store("encryption failed".into()))?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Returns the plain image of a file: unsealed with `key` when it is sealed, as it is otherwise.
pub(crate) fn open(key: Option<&EncryptionKey>, bytes: &[u8]) -> std::result::Result<Vec<u8>, StoreError> {
    if !is_sealed(bytes) {
        return Ok(bytes.to_vec());
    }
    let min = HEADER_LEN + TAG_LEN;
    if bytes.len() < min {
        return Err(StoreError::Truncated { needed: min as u64, available: bytes.len() as u64 });
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != SEAL_VERSION {
        return Err(StoreError::VersionTooNew { found: version, current: SEAL_VERSION });
    }
    let Some(key) = key else { return Err(StoreError::KeyRequired) };
    if bytes[10..18] != key.check() {
        return Err(StoreError::WrongKey);
    }
    let (header, sealed) = bytes.split_at(HEADER_LEN);
    let mut nonce = [0u8; 24];
    nonce.copy_from_slice(&header[18..]);
    XChaCha20Poly1305::new(&key.0.into())
        .decrypt(&XNonce::from(nonce), Payload { msg: sealed, aad: header })
        .map_err(|_| StoreError::AuthFailed)
}

/// Fills an array from the operating system's random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out)
        .map_err(|e| Error::Store(format!("the operating system's random source failed: {e}")))?;
    Ok(out)
}

/// HMAC-SHA256 of the concatenated `parts` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this never fails; the fallback keeps `unwrap` out.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0u8; 32],
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Lower-case hex of `bytes`, two digits per byte.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a `String` cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Decodes an even-length string of hex digits.
fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    digits.chunks_exact(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> EncryptionKey {
        EncryptionKey::from_bytes([b; 32])
    }

    #[test]
    fn seals_and_opens_and_tells_a_wrong_key_from_damage() {
        let plain = b"\x89ATTUNE\n plain image".to_vec();
        let sealed = seal(&key(1), &plain).unwrap();
        assert!(is_sealed(&sealed));
        assert_eq!(sealed.len(), plain.len() + HEADER_LEN + TAG_LEN);
        assert!(!sealed.windows(6).any(|w| w == b"ATTUNE"), "the plain image does not show");
        assert_eq!(open(Some(&key(1)), &sealed).unwrap(), plain);
        assert_eq!(open(Some(&key(2)), &sealed), Err(StoreError::WrongKey));
        assert_eq!(open(None, &sealed), Err(StoreError::KeyRequired));
        for i in [9, 20, HEADER_LEN + 1, sealed.len() - 1] {
            let mut b = sealed.clone();
            b[i] ^= 0x04;
            let e = open(Some(&key(1)), &b).unwrap_err();
            assert!(e.is_corruption() || matches!(e, StoreError::VersionTooNew { .. }), "flip at {i}: {e:?}");
        }
        assert!(matches!(open(Some(&key(1)), &sealed[..30]), Err(StoreError::Truncated { .. })));
        // Two seals of the same image differ (fresh nonces).
        assert_ne!(seal(&key(1), &plain).unwrap(), sealed);
        // A plain image is read as it is.
        assert_eq!(open(Some(&key(1)), &plain).unwrap(), plain);
    }

    #[test]
    fn keys_parse_from_hex_and_base64_and_never_print() {
        let hex_text = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let k = EncryptionKey::parse(hex_text).unwrap();
        assert_eq!(k.0[1], 0x11);
        assert_eq!(k.0[31], 0xff);
        let b64 = base64::engine::general_purpose::STANDARD.encode(k.0);
        assert_eq!(EncryptionKey::parse(&b64).unwrap().0, k.0);
        assert_eq!(EncryptionKey::parse(b64.trim_end_matches('=')).unwrap().0, k.0);
        for bad in ["", "00", &hex_text[..62], "not a key at all", &"A".repeat(40)] {
            match EncryptionKey::parse(bad) {
                Err(Error::Config(m)) => assert!(bad.is_empty() || !m.contains(bad), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert_eq!(format!("{k:?}"), "EncryptionKey(..)");
        let json = serde_json::to_string(&k).unwrap();
        let back: EncryptionKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back.0, k.0);
    }
}
