//! The adapter file format: a version-independent envelope around a version-specific body.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"\x89ATTUNE\n"
//! 8       2     format version, u16 little-endian
//! 10      ..    body, laid out as that version says (see `wire_v1`)
//! len-4   4     CRC-32 (IEEE) of every byte before it, u32 little-endian
//! ```
//!
//! Architecture invariant: the magic, the version field and the CRC-32 trailer never change
//! between format versions. That lets a reader verify any file before it looks at the version, so
//! a flipped bit in the version field reads as damage, while a genuine file from a newer build is
//! refused by name and never parsed by an older reader.

use super::error::StoreError;
use super::fingerprint::ModelFingerprint;
use super::record::AdapterRecord;
use super::wire_v1;

/// The first eight bytes of every adapter file. The high first byte and the newline catch files
/// mangled by text-mode transfers, as in PNG.
pub const MAGIC: [u8; 8] = *b"\x89ATTUNE\n";
/// The format version this build writes.
pub const FORMAT_VERSION: u16 = 1;
/// The oldest format version this build can still read (directly or through a migration).
pub const OLDEST_READABLE_VERSION: u16 = 1;
/// The size of the magic plus the version field.
pub(crate) const PREAMBLE_LEN: usize = 10;
/// The size of the checksum trailer.
pub(crate) const TRAILER_LEN: usize = 4;

/// Encodes `record` in the current format, stamped with the base-model `fingerprint`.
///
/// The record is validated first, so an invalid record never reaches the disk.
pub fn encode(
    record: &AdapterRecord,
    fingerprint: &ModelFingerprint,
) -> Result<Vec<u8>, StoreError> {
    record.validate()?;
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    wire_v1::encode_body(record, fingerprint, &mut out)?;
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes an adapter file, accepting it only if it was made for `expected` base model.
///
/// Decoding is bounded: every length field is checked against the bytes that remain and against
/// the limits in [`record`](super::record) before anything is allocated, so hostile input costs at
/// most a small multiple of its own size in memory.
pub fn decode(bytes: &[u8], expected: &ModelFingerprint) -> Result<AdapterRecord, StoreError> {
    let min = PREAMBLE_LEN + TRAILER_LEN;
    if bytes.len() < min {
        return Err(StoreError::Truncated { needed: min as u64, available: bytes.len() as u64 });
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(StoreError::BadMagic);
    }
    let (covered, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let computed = crc32fast::hash(covered);
    if stored != computed {
        return Err(StoreError::ChecksumMismatch { stored, computed });
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    let body = &covered[PREAMBLE_LEN..];
    // Each readable version gets an explicit arm; a migration from an older version decodes with
    // that version's frozen wire types and converts to the current `AdapterRecord`.
    match version {
        1 => wire_v1::decode_body(body, expected, bytes.len() as u64),
        v if v > FORMAT_VERSION => {
            Err(StoreError::VersionTooNew { found: v, current: FORMAT_VERSION })
        }
        v => Err(StoreError::VersionTooOld {
            found: v,
            oldest_readable: OLDEST_READABLE_VERSION,
            current: FORMAT_VERSION,
        }),
    }
}

/// Rewrites the checksum trailer (and, given a fingerprint, the version-1 fingerprint field) so
/// that hand-built or mutated bytes get past those checks. Fuzzers and tests use this to reach the
/// payload parser; it is not part of the store's API.
#[doc(hidden)]
pub fn reseal(bytes: &mut [u8], fingerprint: Option<&ModelFingerprint>) {
    if bytes.len() < PREAMBLE_LEN + TRAILER_LEN {
        return;
    }
    let fp_end = PREAMBLE_LEN + 32;
    if let Some(fp) = fingerprint {
        if bytes.len() >= fp_end + TRAILER_LEN {
            bytes[PREAMBLE_LEN..fp_end].copy_from_slice(fp.as_bytes());
        }
    }
    let split = bytes.len() - TRAILER_LEN;
    let crc = crc32fast::hash(&bytes[..split]);
    bytes[split..].copy_from_slice(&crc.to_le_bytes());
}

/// Builds a file with a valid envelope around an arbitrary `body` and `version`; tests use it to
/// hand-build files of other format versions.
#[doc(hidden)]
pub fn seal_raw(version: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREAMBLE_LEN + body.len() + TRAILER_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    out
}
