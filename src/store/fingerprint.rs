//! The base-model fingerprint stamped into every adapter file.

use std::fmt;

use sha2::{Digest, Sha256};

/// Identifies the base model (graph signature, tokenizer, ...) an adapter was trained against.
///
/// An adapter only makes sense on top of the exact model it was learned for, so every file carries
/// the fingerprint of that model and loading it under another fingerprint is refused. The caller
/// decides what goes into it; [`ModelFingerprint::of_parts`] hashes a list of byte strings with
/// SHA-256 so that, for example, the graph's input/output signature and the tokenizer file can be
/// combined without ambiguity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelFingerprint(pub [u8; 32]);

impl ModelFingerprint {
    /// Wraps 32 bytes that the caller computed itself.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        ModelFingerprint(bytes)
    }

    /// Hashes several parts with SHA-256; each part is length-prefixed, so `["ab", "c"]` and
    /// `["a", "bc"]` give different fingerprints.
    pub fn of_parts<I, P>(parts: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let mut h = Sha256::new();
        h.update(b"attune-model-fingerprint-v1");
        for part in parts {
            let part = part.as_ref();
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        ModelFingerprint(h.finalize().into())
    }

    /// Returns the raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ModelFingerprint {
    /// Prints the full fingerprint as 64 hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for ModelFingerprint {
    /// Prints the first 8 bytes in hex, which is enough to tell fingerprints apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ModelFingerprint(")?;
        write_hex(f, &self.0[..8])?;
        f.write_str("..)")
    }
}

/// Writes `bytes` as lower-case hex, two digits per byte.
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_length_prefixed() {
        let a = ModelFingerprint::of_parts(["ab", "c"]);
        let b = ModelFingerprint::of_parts(["a", "bc"]);
        assert_ne!(a, b);
        assert_eq!(a, ModelFingerprint::of_parts(["ab", "c"]));
        assert_eq!(a.to_string().len(), 64);
    }

    #[test]
    fn fingerprints_are_stable() {
        // Computed independently (Python's hashlib): every stored adapter carries this value, so it
        // must never change.
        assert_eq!(
            ModelFingerprint::of_parts(["ab", "c"]).to_string(),
            "df5910dc307dd66fa749648c40fe299946e0505ec4f97c1e9800e6abfff085e0"
        );
        assert_eq!(format!("{:?}", ModelFingerprint::of_parts(["ab", "c"])), "ModelFingerprint(df5910dc307dd66f..)");
    }
}
