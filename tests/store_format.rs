//! The adapter file decoder: damage, hostile lengths, format versions, and fuzz-style properties.

mod store_support;

use attune::store::{
    decode, encode, reseal, seal_raw, AdapterRecord, StoreError, FORMAT_VERSION, MAGIC,
    MAX_TENSOR_ELEMENTS,
};
use proptest::prelude::*;
use store_support::wire::{self, f32_bytes, Header};
use store_support::{assert_same, fp, other_fp, sample};

fn header(name: &str, shape: Vec<u32>) -> Header {
    Header { name: name.into(), shape }
}

#[test]
fn round_trip_and_mirror_matches_the_real_layout() {
    let rec = sample(3);
    let bytes = encode(&rec, &fp()).unwrap();
    assert_eq!(&bytes[..8], &MAGIC);
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), FORMAT_VERSION);
    assert_same(&decode(&bytes, &fp()).unwrap(), &rec);

    // The test mirror of the wire types must produce byte-identical files, or the hostile-file
    // tests below would test nothing.
    let mut m = wire::meta(vec![header("a", vec![2]), header("b", vec![])]);
    m.config.extra = vec![("k".into(), 0.5)];
    let data = [1.0f32, 2.0, 3.0];
    let crafted = wire::file(&fp(), &m, &f32_bytes(&data));
    let rec = decode(&crafted, &fp()).unwrap();
    assert_eq!(rec.tensors["a"].data, vec![1.0, 2.0]);
    assert_eq!(rec.tensors["b"].data, vec![3.0]);
    assert_eq!(encode(&rec, &fp()).unwrap(), crafted);
}

#[test]
fn every_truncation_is_refused() {
    let bytes = encode(&sample(1), &fp()).unwrap();
    for len in 0..bytes.len() {
        match decode(&bytes[..len], &fp()) {
            Err(StoreError::Truncated { needed: 14, .. }) => assert!(len < 14),
            Err(StoreError::BadMagic) => panic!("truncation to {len} reported as bad magic"),
            Err(StoreError::ChecksumMismatch { .. }) => assert!(len >= 14),
            other => panic!("truncation to {len} gave {other:?}"),
        }
    }
}

#[test]
fn resealed_truncations_are_refused_by_the_parser() {
    // With the checksum fixed up, the structural checks alone must catch every cut.
    let bytes = encode(&sample(2), &fp()).unwrap();
    for len in 14..bytes.len() - 4 {
        let mut cut = bytes[..len].to_vec();
        cut.extend_from_slice(&[0; 4]);
        reseal(&mut cut, None);
        let err = decode(&cut, &fp()).expect_err("a cut file must not decode");
        assert!(
            matches!(err, StoreError::Truncated { .. } | StoreError::Malformed(_)),
            "cut at {len}: {err:?}"
        );
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    let bytes = encode(&sample(4), &fp()).unwrap();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            match decode(&b, &fp()) {
                Err(StoreError::BadMagic) => assert!(i < 8),
                Err(StoreError::ChecksumMismatch { .. }) => assert!(i >= 8),
                other => panic!("flip at byte {i} bit {bit} gave {other:?}"),
            }
        }
    }
}

#[test]
fn wrong_magic_and_wrong_model() {
    let mut bytes = encode(&sample(5), &fp()).unwrap();
    assert_eq!(
        decode(&bytes, &other_fp()),
        Err(StoreError::ModelMismatch { expected: other_fp(), found: fp() })
    );
    let msg = decode(&bytes, &other_fp()).unwrap_err().to_string();
    assert!(msg.contains("another base model") && msg.contains(&fp().to_string()), "{msg}");
    bytes[..8].copy_from_slice(b"PK\x03\x04zip!");
    assert_eq!(decode(&bytes, &fp()), Err(StoreError::BadMagic));
    assert_eq!(decode(b"{\"json\": true}", &fp()), Err(StoreError::BadMagic));
}

#[test]
fn older_and_newer_format_versions_are_refused_by_name() {
    // A hand-built "version 0" file: a plausible pre-release layout with a valid envelope.
    let mut v0_body = fp().as_bytes().to_vec();
    v0_body.extend_from_slice(&f32_bytes(&[1.0, 2.0]));
    let v0 = seal_raw(0, &v0_body);
    let err = decode(&v0, &fp()).unwrap_err();
    assert_eq!(err, StoreError::VersionTooOld { found: 0, oldest_readable: 1, current: 1 });
    let msg = err.to_string();
    assert!(msg.contains("version 0") && msg.contains("version 1"), "{msg}");
    assert!(!err.is_corruption());

    // A file from a future build is refused, even though its body happens to parse as version 1.
    let mut v2 = encode(&sample(1), &fp()).unwrap();
    v2[8..10].copy_from_slice(&2u16.to_le_bytes());
    reseal(&mut v2, None);
    let err = decode(&v2, &fp()).unwrap_err();
    assert_eq!(err, StoreError::VersionTooNew { found: 2, current: 1 });
    assert!(err.to_string().contains("version 2") && err.to_string().contains("version 1"));

    // Without a valid checksum the same change reads as damage, not as a newer file.
    let mut flipped = encode(&sample(1), &fp()).unwrap();
    flipped[8] = 2;
    assert!(matches!(decode(&flipped, &fp()), Err(StoreError::ChecksumMismatch { .. })));
}

#[test]
fn absurd_lengths_are_refused_before_allocating() {
    // 2^40 elements: refused by the element limit.
    let f = wire::file(&fp(), &wire::meta(vec![header("big", vec![1 << 20, 1 << 20])]), &[]);
    assert_eq!(
        decode(&f, &fp()),
        Err(StoreError::TooLarge {
            what: "tensor element count",
            claimed: 1 << 40,
            limit: MAX_TENSOR_ELEMENTS
        })
    );
    // Dimensions whose product overflows u64.
    let f = wire::file(&fp(), &wire::meta(vec![header("o", vec![u32::MAX; 3])]), &[]);
    assert!(matches!(decode(&f, &fp()), Err(StoreError::TooLarge { claimed: u64::MAX, .. })));
    // Within the element limit but far beyond the bytes present.
    let f = wire::file(&fp(), &wire::meta(vec![header("t", vec![1 << 27])]), &[0; 16]);
    assert!(matches!(decode(&f, &fp()), Err(StoreError::Truncated { .. })));
    // Many small tensors whose sum exceeds the bytes present.
    let many: Vec<Header> = (0..1000).map(|i| header(&format!("t{i:04}"), vec![1 << 20])).collect();
    assert!(matches!(
        decode(&wire::file(&fp(), &wire::meta(many), &[]), &fp()),
        Err(StoreError::Truncated { .. })
    ));
    // Too many dimensions.
    let f = wire::file(&fp(), &wire::meta(vec![header("d", vec![1; 9])]), &f32_bytes(&[0.0]));
    assert!(matches!(
        decode(&f, &fp()),
        Err(StoreError::TooLarge { what: "tensor dimension count", .. })
    ));
    // A metadata length beyond the file.
    let f = wire::file_raw(&fp(), u32::MAX, &[0; 8], &[]);
    assert!(matches!(decode(&f, &fp()), Err(StoreError::Truncated { .. })));
    // A postcard sequence length of 2^40 inside the metadata (the reward history).
    let m = wire::meta(vec![]);
    let hostile = wire::Meta {
        config: m.config,
        tensors: m.tensors,
        counters: m.counters,
        scalars: m.scalars,
        rewards: wire::Rewards {
            count: 0,
            mean: 0.0,
            recent: 1u64 << 40,
            thumbs_up: 0,
            thumbs_down: 0,
        },
        created_unix: 0,
        updated_unix: 0,
    };
    assert!(matches!(
        decode(&wire::file(&fp(), &hostile, &[]), &fp()),
        Err(StoreError::Malformed(_))
    ));
}

#[test]
fn structural_damage_behind_a_valid_checksum() {
    // Bytes left over after the tensor data.
    let f = wire::file(&fp(), &wire::meta(vec![header("a", vec![1])]), &[0; 8]);
    assert!(matches!(decode(&f, &fp()), Err(StoreError::Malformed(m)) if m.contains("unused")));
    // Duplicate or unordered names.
    let f = wire::file(&fp(), &wire::meta(vec![header("b", vec![]), header("a", vec![])]), &[0; 8]);
    assert!(matches!(decode(&f, &fp()), Err(StoreError::Malformed(m)) if m.contains("ascending")));
    let mut m = wire::meta(vec![]);
    m.counters = vec![("x".into(), 1), ("x".into(), 2)];
    assert!(matches!(decode(&wire::file(&fp(), &m, &[]), &fp()), Err(StoreError::Malformed(_))));
    // A NaN in the tensor data.
    let f =
        wire::file(&fp(), &wire::meta(vec![header("n", vec![2])]), &f32_bytes(&[1.0, f32::NAN]));
    assert!(
        matches!(decode(&f, &fp()), Err(StoreError::InvalidRecord(m)) if m.contains("non-finite"))
    );
    // Metadata followed by junk inside its own length.
    let mut meta = postcard::to_allocvec(&wire::meta(vec![])).unwrap();
    meta.push(0);
    let f = wire::file_raw(&fp(), meta.len() as u32, &meta, &[]);
    assert!(matches!(decode(&f, &fp()), Err(StoreError::Malformed(_))));
}

#[test]
fn encode_refuses_invalid_records() {
    let mut rec = sample(1);
    rec.tensors.get_mut("lora.A").unwrap().data.pop();
    assert!(matches!(encode(&rec, &fp()), Err(StoreError::InvalidRecord(_))));
    let mut rec = sample(1);
    rec.rewards.mean = f64::INFINITY;
    assert!(matches!(encode(&rec, &fp()), Err(StoreError::InvalidRecord(_))));
}

/// Decodes `bytes` both as a whole file and as a resealed version-1 body, like the cargo-fuzz
/// target does; accepted records must survive a second round trip.
fn decode_both_ways(bytes: &[u8]) {
    let _ = decode(bytes, &fp());
    let mut file = MAGIC.to_vec();
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(bytes);
    file.extend_from_slice(&[0; 4]);
    reseal(&mut file, Some(&fp()));
    if let Ok(rec) = decode(&file, &fp()) {
        let again = encode(&rec, &fp()).expect("a decoded record re-encodes");
        assert_same(&decode(&again, &fp()).unwrap(), &rec);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_decode_round_trips(rec in store_support::record()) {
        let bytes = encode(&rec, &fp()).unwrap();
        let back: AdapterRecord = decode(&bytes, &fp()).unwrap();
        assert_same(&back, &rec);
        prop_assert_eq!(encode(&back, &fp()).unwrap(), bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        decode_both_ways(&bytes);
    }

    #[test]
    fn mutated_files_never_panic_or_misread(
        seed in 0u64..50,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
        resealed in any::<bool>(),
    ) {
        let original = sample(seed);
        let good = encode(&original, &fp()).unwrap();
        let mut bytes = good.clone();
        for (at, value) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        if resealed {
            reseal(&mut bytes, None);
        }
        match decode(&bytes, &fp()) {
            // A change the checksum let through must be a no-op or yield a valid record.
            Ok(rec) if bytes == good => assert_same(&rec, &original),
            Ok(rec) => prop_assert!(resealed && rec.validate().is_ok()),
            Err(_) => {}
        }
        decode_both_ways(&bytes[bytes.len().min(14)..]);
    }
}
