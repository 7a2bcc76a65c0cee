//! A user's pending episodes and episode-id counter, persisted beside the adapter versions in one
//! file (`pending.attune`) that rollback, reset and import leave alone and forget deletes.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"\x89ATPEND\n"
//! 8       2     format version, u16 little-endian (1)
//! 10      ..    body: `PendingV1` in postcard
//! len-4   4     CRC-32 (IEEE) of every byte before it, u32 little-endian
//! ```
//!
//! These types are separate from the learner's runtime types and frozen once released; a new
//! layout gets a new version. An episode keeps only what rebuilds its records exactly: the prompt
//! and reply ids, the behaviour log-probabilities, the kept sets, the sampling settings and the
//! adapter version that sampled it. Hidden states and base log-probabilities are recomputed by one
//! teacher-forced pass when it is learned from.

use serde::{Deserialize, Serialize};

use super::error::StoreError;

/// The first eight bytes of a pending-episodes file.
pub const PENDING_MAGIC: [u8; 8] = *b"\x89ATPEND\n";
/// The version this build writes and reads.
pub const PENDING_VERSION: u16 = 1;

/// One persisted episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingEpisode {
    /// Its id.
    pub id: u64,
    /// 0 sampled reply, 1 demonstration, 2 the user's own text.
    pub kind: u8,
    /// When it was recorded (Unix seconds).
    pub created_unix: u64,
    /// The adapter version that sampled it.
    pub created_step: u64,
    /// A demonstration's token weight.
    pub weight: f32,
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// The reply's token ids.
    pub reply: Vec<u32>,
    /// The behaviour log-probability of each reply token.
    pub behaviour: Vec<f32>,
    /// The kept set of each token (empty: the whole vocabulary was kept).
    pub kept: Vec<Vec<u32>>,
    /// The sampling temperature (0: greedy).
    pub temperature: f32,
    /// The repetition penalty (1: none).
    pub repetition_penalty: f32,
    /// A reward given but not learned yet.
    pub reward: Option<f64>,
    /// How many updates learned from it.
    pub learned: u32,
}

/// Everything in the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingRecord {
    /// Ids below this may have been issued to the user (durably reserved): a new session starts
    /// its counter here, so no id is ever issued twice, even after a crash.
    pub reserved_ids: u64,
    /// The highest adapter version the user's episodes were sampled with or the adapter reached: a
    /// new session starts its version above it, so restored episodes count as sampled by another
    /// adapter and are learned through the importance ratio.
    pub adapter_version: u64,
    /// The held episodes, oldest first.
    pub episodes: Vec<PendingEpisode>,
}

impl PendingRecord {
    /// Checks what decoding cannot: lengths that agree and finite numbers.
    pub fn validate(&self) -> Result<(), StoreError> {
        for e in &self.episodes {
            let n = e.reply.len();
            if n == 0 || e.behaviour.len() != n || e.kept.len() != n || e.kind > 2 {
                return Err(StoreError::InvalidRecord(format!("pending episode {}: inconsistent lengths or kind", e.id)));
            }
            if e.id >= self.reserved_ids {
                return Err(StoreError::InvalidRecord(format!("pending episode {} is not below the reserved ids {}", e.id, self.reserved_ids)));
            }
            let finite = e.behaviour.iter().all(|x| x.is_finite())
                && e.weight.is_finite()
                && e.temperature.is_finite()
                && e.repetition_penalty.is_finite()
                && e.reward.is_none_or(f64::is_finite);
            if !finite {
                return Err(StoreError::InvalidRecord(format!("pending episode {} holds a non-finite number", e.id)));
            }
        }
        Ok(())
    }

    /// The file image.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        self.validate()?;
        let mut out = Vec::with_capacity(64 + self.episodes.len() * 256);
        out.extend_from_slice(&PENDING_MAGIC);
        out.extend_from_slice(&PENDING_VERSION.to_le_bytes());
        let body = postcard::to_allocvec(self).map_err(|e| StoreError::Malformed(e.to_string()))?;
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes a file image, checking magic, checksum and version before the body.
    pub fn decode(bytes: &[u8]) -> Result<PendingRecord, StoreError> {
        if bytes.len() < 14 {
            return Err(StoreError::Truncated { needed: 14, available: bytes.len() as u64 });
        }
        if bytes[..8] != PENDING_MAGIC {
            return Err(StoreError::BadMagic);
        }
        let (covered, trailer) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let computed = crc32fast::hash(covered);
        if stored != computed {
            return Err(StoreError::ChecksumMismatch { stored, computed });
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != PENDING_VERSION {
            return Err(StoreError::VersionTooNew { found: version, current: PENDING_VERSION });
        }
        let (rec, rest): (PendingRecord, &[u8]) = postcard::take_from_bytes(&covered[10..]).map_err(|e| StoreError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(StoreError::Malformed(format!("{} trailing bytes", rest.len())));
        }
        rec.validate()?;
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PendingRecord {
        PendingRecord {
            reserved_ids: 70,
            adapter_version: 4,
            episodes: vec![PendingEpisode {
                id: 5,
                kind: 0,
                created_unix: 1_700_000_000,
                created_step: 3,
                weight: 1.0,
                prompt: vec![1, 2, 3],
                reply: vec![7, 8],
                behaviour: vec![-0.5, -1.25],
                kept: vec![vec![], vec![7, 9]],
                temperature: 0.7,
                repetition_penalty: 1.1,
                reward: Some(-1.0),
                learned: 1,
            }],
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let r = sample();
        let bytes = r.encode().unwrap();
        assert_eq!(PendingRecord::decode(&bytes).unwrap(), r);
        for i in [0, 9, 12, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(PendingRecord::decode(&b).is_err(), "flip at {i}");
        }
        assert!(PendingRecord::decode(&bytes[..bytes.len() - 3]).is_err());
        let mut bad = sample();
        bad.episodes[0].id = 70;
        assert!(bad.encode().is_err(), "an episode id at or above the reserved counter is refused");
        bad = sample();
        bad.episodes[0].behaviour.pop();
        assert!(bad.encode().is_err());
    }
}
