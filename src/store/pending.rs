//! A user's pending episodes and episode-id counter, persisted beside the adapter versions in one
//! file (`pending.attune`) that rollback, reset and import leave alone and forget deletes.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"\x89ATPEND\n"
//! 8       2     format version, u16 little-endian (2; version 1, without corrections, is read)
//! 10      ..    body: `PendingRecord` in postcard (version 1: the same without `pairs`)
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
/// The version this build writes (it reads 1 and 2).
pub const PENDING_VERSION: u16 = 2;

/// One persisted episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingEpisode {
    /// Its id.
    pub id: u64,
    /// 0 sampled reply, 1 demonstration, 2 the user's own text, 3 a correction (its disliked
    /// reply in [`PendingRecord::pairs`]).
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

/// A correction's disliked reply (teacher-forced at temperature 1 when learned, so only its tokens
/// are kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingPair {
    /// The correction's episode id (an episode of kind 3 in the same file).
    pub correction: u64,
    /// The id of the sampled reply it corrects.
    pub rejected_id: u64,
    /// The disliked reply's token ids.
    pub reply: Vec<u32>,
}

/// The body of a version-1 file (no corrections).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PendingRecordV1 {
    reserved_ids: u64,
    adapter_version: u64,
    episodes: Vec<PendingEpisode>,
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
    /// The disliked replies of the corrections among them, one per correction.
    pub pairs: Vec<PendingPair>,
}

impl PendingRecord {
    /// Checks what decoding cannot: lengths that agree and finite numbers.
    pub fn validate(&self) -> Result<(), StoreError> {
        for e in &self.episodes {
            let n = e.reply.len();
            if n == 0 || e.behaviour.len() != n || e.kept.len() != n || e.kind > 3 {
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
        for (i, p) in self.pairs.iter().enumerate() {
            let owner = self.episodes.iter().filter(|e| e.id == p.correction && e.kind == 3).count();
            if owner != 1 || p.reply.is_empty() || self.pairs[..i].iter().any(|q| q.correction == p.correction) {
                return Err(StoreError::InvalidRecord(format!("pending correction {}: no single correction episode, or an empty disliked reply", p.correction)));
            }
        }
        let corrections = self.episodes.iter().filter(|e| e.kind == 3).count();
        if corrections != self.pairs.len() {
            return Err(StoreError::InvalidRecord(format!("{corrections} pending corrections but {} disliked replies", self.pairs.len())));
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
        let body = &covered[10..];
        let (rec, rest) = match version {
            1 => {
                let (v1, rest): (PendingRecordV1, &[u8]) = postcard::take_from_bytes(body).map_err(|e| StoreError::Malformed(e.to_string()))?;
                (PendingRecord { reserved_ids: v1.reserved_ids, adapter_version: v1.adapter_version, episodes: v1.episodes, pairs: Vec::new() }, rest)
            }
            PENDING_VERSION => postcard::take_from_bytes::<PendingRecord>(body).map_err(|e| StoreError::Malformed(e.to_string()))?,
            _ => return Err(StoreError::VersionTooNew { found: version, current: PENDING_VERSION }),
        };
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
            pairs: Vec::new(),
        }
    }

    fn with_pair() -> PendingRecord {
        let mut r = sample();
        let mut c = r.episodes[0].clone();
        c.id = 6;
        c.kind = 3;
        c.reward = None;
        r.episodes.push(c);
        r.pairs.push(PendingPair { correction: 6, rejected_id: 5, reply: vec![7, 8] });
        r
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

    #[test]
    fn corrections_round_trip_and_must_pair_up() {
        let r = with_pair();
        assert_eq!(PendingRecord::decode(&r.encode().unwrap()).unwrap(), r);
        let mut bad = with_pair();
        bad.pairs.clear();
        assert!(bad.encode().is_err(), "a correction without its disliked reply");
        bad = with_pair();
        bad.pairs[0].correction = 5;
        assert!(bad.encode().is_err(), "a disliked reply whose owner is not a correction");
        bad = with_pair();
        bad.pairs.push(bad.pairs[0].clone());
        assert!(bad.encode().is_err(), "two disliked replies for one correction");
        bad = with_pair();
        bad.pairs[0].reply.clear();
        assert!(bad.encode().is_err());
    }

    #[test]
    fn version_1_files_are_read() {
        // A version-1 image: the same envelope around the body without `pairs`.
        let r = sample();
        let v1 = PendingRecordV1 { reserved_ids: r.reserved_ids, adapter_version: r.adapter_version, episodes: r.episodes.clone() };
        let mut out = PENDING_MAGIC.to_vec();
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&postcard::to_allocvec(&v1).unwrap());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(PendingRecord::decode(&out).unwrap(), r);
        // A version from the future is refused.
        let mut future = r.encode().unwrap();
        future[8] = 9;
        let n = future.len() - 4;
        let crc = crc32fast::hash(&future[..n]);
        future[n..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(PendingRecord::decode(&future), Err(StoreError::VersionTooNew { found: 9, .. })));
    }
}
