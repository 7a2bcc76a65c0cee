//! The adapter store's operations: versions, fallback, rollback, reset, forget, export/import,
//! hostile user ids, and save/load round trips.

mod store_support;

use std::fs;
use std::path::Path;

use attune::store::{
    encode, seal_raw, AdapterStore, RollbackTarget, StoreError, VersionKind, MAX_USER_ID_BYTES,
    STORE_KEY_FILE,
};
use attune::Error;
use proptest::prelude::*;
use store_support::{assert_same, flip_bit, fp, open, open_with, other_fp, sample, version_path};

/// Returns the sequence numbers and kinds of `user`'s versions.
fn versions(store: &AdapterStore, user: &str) -> Vec<(u64, VersionKind)> {
    store.list_versions(user).unwrap().iter().map(|v| (v.seq, v.kind)).collect()
}

#[test]
fn save_load_and_keep_last_n() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    assert!(store.load("alice").unwrap().is_none());
    for seed in 1..=8 {
        assert_eq!(store.save("alice", sample(seed)).unwrap(), seed);
    }
    let listed = store.list_versions("alice").unwrap();
    assert_eq!(listed.iter().map(|v| v.seq).collect::<Vec<_>>(), vec![4, 5, 6, 7, 8]);
    assert!(listed.iter().all(|v| v.problem.is_none() && v.kind == VersionKind::Adapter));
    assert_eq!(listed[4].updated_unix, Some(sample(8).updated_unix));
    assert_same(&store.load("alice").unwrap().unwrap(), &sample(8));
    drop(store);
    // A fresh store (empty cache) reads the same from disk.
    let store = open(tmp.path());
    assert_same(&store.load("alice").unwrap().unwrap(), &sample(8));
    let report = store.load_report("alice").unwrap();
    assert_eq!((report.version, report.skipped.len()), (Some(8), 0));
}

#[test]
fn damaged_newest_version_falls_back_with_a_report() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_with(tmp.path(), |o| o.cache_bytes = 0);
    for seed in 1..=4 {
        store.save("bob", sample(seed)).unwrap();
    }
    let dir = store.user_dir("bob").unwrap();
    flip_bit(&version_path(&dir, 4), 100, 3);
    let bytes = fs::read(version_path(&dir, 3)).unwrap();
    fs::write(version_path(&dir, 3), &bytes[..bytes.len() / 2]).unwrap();

    let report = store.load_report("bob").unwrap();
    assert_eq!(report.version, Some(2));
    assert_same(report.record.as_ref().unwrap(), &sample(2));
    let skipped: Vec<_> = report.skipped.iter().map(|s| (s.seq, s.reason.clone())).collect();
    assert!(matches!(skipped[0], (4, StoreError::ChecksumMismatch { .. })), "{skipped:?}");
    assert!(matches!(skipped[1], (3, StoreError::ChecksumMismatch { .. })), "{skipped:?}");
    assert_same(&store.load("bob").unwrap().unwrap(), &sample(2));

    let listed = store.list_versions("bob").unwrap();
    let problems: Vec<bool> = listed.iter().map(|v| v.problem.is_some()).collect();
    assert_eq!(problems, vec![false, false, true, true]);

    // Rolling back one step from the damaged state goes to the version before the one in use.
    let back = store.rollback("bob", RollbackTarget::StepsBack(1)).unwrap().unwrap();
    assert_same(&back, &sample(1));
    assert_eq!(versions(&store, "bob").last(), Some(&(5, VersionKind::Adapter)));
}

#[test]
fn empty_stray_and_oversized_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_with(tmp.path(), |o| {
        o.cache_bytes = 0;
        o.max_file_bytes = 4096;
    });
    store.save("carol", sample(1)).unwrap();
    let dir = store.user_dir("carol").unwrap();
    fs::write(version_path(&dir, 2), b"").unwrap();
    fs::write(version_path(&dir, 3), vec![0u8; 5000]).unwrap();
    fs::write(dir.join(".tmp-999-1"), b"half a file").unwrap();
    fs::write(dir.join("notes.txt"), b"ignored").unwrap();
    fs::write(dir.join("v1.attune"), b"ignored: not ten digits").unwrap();
    let report = store.load_report("carol").unwrap();
    assert_eq!(report.version, Some(1));
    let reasons: Vec<_> = report.skipped.iter().map(|s| s.reason.clone()).collect();
    assert!(matches!(
        reasons[0],
        StoreError::TooLarge { what: "file size", claimed: 5000, limit: 4096 }
    ));
    assert!(matches!(reasons[1], StoreError::Truncated { needed: 14, available: 0 }));
    // The next save numbers past the damaged files and removes the stale temporary file.
    assert_eq!(store.save("carol", sample(2)).unwrap(), 4);
    assert!(!dir.join(".tmp-999-1").exists());
    assert!(dir.join("notes.txt").exists());
}

#[test]
fn all_versions_damaged_is_an_error_and_reset_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_with(tmp.path(), |o| o.cache_bytes = 0);
    store.save("dan", sample(1)).unwrap();
    store.save("dan", sample(2)).unwrap();
    let dir = store.user_dir("dan").unwrap();
    flip_bit(&version_path(&dir, 1), 20, 0);
    flip_bit(&version_path(&dir, 2), 30, 0);
    match store.load("dan") {
        Err(Error::CorruptAdapter { reason, .. }) => {
            assert!(
                reason.contains("no valid version")
                    && reason.contains("v2")
                    && reason.contains("v1")
            )
        }
        other => panic!("{other:?}"),
    }
    store.reset("dan").unwrap();
    assert!(store.load("dan").unwrap().is_none());
}

#[test]
fn other_model_and_newer_format_are_hard_errors_not_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_with(tmp.path(), |o| o.cache_bytes = 0);
    store.save("erin", sample(1)).unwrap();
    let dir = store.user_dir("erin").unwrap();
    fs::write(version_path(&dir, 2), encode(&sample(2), &other_fp()).unwrap()).unwrap();
    match store.load("erin") {
        Err(Error::CorruptAdapter { path, reason }) => {
            assert_eq!(path, version_path(&dir, 2));
            assert!(reason.contains("another base model"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    fs::write(version_path(&dir, 3), seal_raw(7, b"future")).unwrap();
    match store.load("erin") {
        Err(Error::CorruptAdapter { reason, .. }) => {
            assert!(reason.contains("version 7"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // Opening the same directory for the other model reads version 2 and refuses version 1.
    fs::remove_file(version_path(&dir, 3)).unwrap();
    let other =
        attune::store::AdapterStore::open(tmp.path(), attune::store::StoreOptions::new(other_fp()))
            .unwrap();
    assert_same(&other.load("erin").unwrap().unwrap(), &sample(2));
}

#[test]
fn rollback_by_version_and_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    for seed in 1..=3 {
        store.save("fay", sample(seed)).unwrap();
    }
    // Unsaved changes are discarded by a rollback.
    store.put("fay", sample(99)).unwrap();
    let r = store.rollback("fay", RollbackTarget::Version(1)).unwrap().unwrap();
    assert_same(&r, &sample(1));
    assert_same(&store.load("fay").unwrap().unwrap(), &sample(1));
    assert_eq!(versions(&store, "fay").iter().map(|v| v.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    // The rollback is itself undoable.
    assert_same(&store.rollback("fay", RollbackTarget::StepsBack(1)).unwrap().unwrap(), &sample(3));
    assert_same(&open(tmp.path()).load("fay").unwrap().unwrap(), &sample(3));

    assert!(matches!(store.rollback("fay", RollbackTarget::Version(42)), Err(Error::Store(_))));
    assert!(matches!(
        store.rollback("fay", RollbackTarget::StepsBack(0)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(store.rollback("fay", RollbackTarget::StepsBack(5)), Err(Error::Store(_))));
    assert!(matches!(store.rollback("nobody", RollbackTarget::StepsBack(1)), Err(Error::Store(_))));
    let dir = store.user_dir("fay").unwrap();
    flip_bit(&version_path(&dir, 2), 50, 1);
    assert!(matches!(
        store.rollback("fay", RollbackTarget::Version(2)),
        Err(Error::CorruptAdapter { .. })
    ));
}

#[test]
fn reset_is_a_marker_that_rollback_can_undo() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    store.reset("gus").unwrap(); // Nothing to reset: no marker is written.
    assert!(store.list_versions("gus").unwrap().is_empty());
    store.save("gus", sample(1)).unwrap();
    store.save("gus", sample(2)).unwrap();
    store.reset("gus").unwrap();
    store.reset("gus").unwrap(); // Idempotent.
    assert!(store.load("gus").unwrap().is_none());
    assert!(open(tmp.path()).load("gus").unwrap().is_none());
    let report = store.load_report("gus").unwrap();
    assert_eq!((report.reset_at, report.version), (Some(3), None));
    assert_eq!(versions(&store, "gus").last(), Some(&(3, VersionKind::Reset)));
    assert!(matches!(store.export("gus"), Err(Error::Store(_))));

    assert_same(&store.rollback("gus", RollbackTarget::StepsBack(1)).unwrap().unwrap(), &sample(2));
    // Rolling back to the marker resets again.
    assert!(store.rollback("gus", RollbackTarget::Version(3)).unwrap().is_none());
    assert!(store.load("gus").unwrap().is_none());
    store.save("gus", sample(7)).unwrap();
    assert_same(&store.load("gus").unwrap().unwrap(), &sample(7));
    // A damaged version after a reset never lets pre-reset data through.
    let dir = store.user_dir("gus").unwrap();
    flip_bit(&version_path(&dir, 6), 40, 2);
    assert!(matches!(open(tmp.path()).load("gus"), Err(Error::CorruptAdapter { .. })));
}

#[test]
fn forget_erases_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    store.save("hal", sample(1)).unwrap();
    store.put("hal", sample(2)).unwrap();
    store.save("ivy", sample(3)).unwrap();
    let dir = store.user_dir("hal").unwrap();
    fs::write(dir.join(".tmp-1-1"), b"x").unwrap();
    assert!(store.forget("hal").unwrap());
    assert!(!dir.exists());
    assert!(store.load("hal").unwrap().is_none());
    assert!(!store.forget("hal").unwrap());
    drop(store); // Dropping must not resurrect the forgotten dirty entry.
    let store = open(tmp.path());
    assert!(store.load("hal").unwrap().is_none());
    assert_same(&store.load("ivy").unwrap().unwrap(), &sample(3));
}

#[test]
fn export_import_between_stores() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (sa, sb) = (open(a.path()), open(b.path()));
    sa.save("jo", sample(1)).unwrap();
    sa.put("jo", sample(2)).unwrap(); // Export saves unsaved changes first.
    let bytes = sa.export("jo").unwrap();
    assert_eq!(versions(&sa, "jo").len(), 2);
    assert_eq!(sb.import("jo@elsewhere", &bytes).unwrap(), 1);
    assert_same(&open(b.path()).load("jo@elsewhere").unwrap().unwrap(), &sample(2));

    // Invalid imports write nothing.
    let mut bad = bytes.clone();
    bad[bytes.len() / 2] ^= 0x40;
    assert!(matches!(sb.import("kim", &bad), Err(Error::CorruptAdapter { .. })));
    assert!(matches!(sb.import("kim", b"hello"), Err(Error::CorruptAdapter { .. })));
    let foreign = encode(&sample(1), &other_fp()).unwrap();
    assert!(
        matches!(sb.import("kim", &foreign), Err(Error::CorruptAdapter { reason, .. }) if reason.contains("another base model"))
    );
    assert!(!sb.user_dir("kim").unwrap().exists());
    assert!(matches!(sb.export("kim"), Err(Error::Store(_))));
}

#[test]
fn invalid_records_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let mut bad = sample(1);
    bad.tensors.get_mut("lora.B").unwrap().data[0] = f32::NAN;
    assert!(matches!(store.save("lu", bad.clone()), Err(Error::InvalidArgument(_))));
    assert!(matches!(store.put("lu", bad), Err(Error::InvalidArgument(_))));
    assert!(!store.user_dir("lu").unwrap().exists());
}

/// Asserts that everything under `root` is the name secret or a directory of keyed-name shape
/// with only version or temporary files in it, and that nothing escaped next to `root`.
fn assert_contained(outer: &Path, root: &Path) {
    let beside: Vec<_> = fs::read_dir(outer).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside, vec![root.file_name().unwrap().to_owned()], "files escaped the store");
    for entry in fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name == STORE_KEY_FILE {
            assert!(entry.file_type().unwrap().is_file());
            continue;
        }
        assert!(entry.file_type().unwrap().is_dir());
        assert_eq!(name.len(), 65, "{name}");
        assert!(name.starts_with('k'), "{name}");
        assert!(name[1..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{name}");
        for f in fs::read_dir(entry.path()).unwrap() {
            let f = f.unwrap().file_name().into_string().unwrap();
            assert!(f.starts_with('v') && f.len() < 40, "{f}");
        }
    }
}

#[test]
fn hostile_user_ids_stay_inside_the_store() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("store");
    let store = open(&root);
    let long = "ü".repeat(5_000); // 10 kB.
    let mut long2 = long.clone();
    long2.push('!');
    let ids: Vec<String> = [
        "../x",
        "../../etc/passwd",
        "/etc/passwd",
        "/",
        "a/b/../../..",
        "..\\..\\win",
        "C:\\x",
        ".",
        "..",
        "\0",
        "a\0b",
        " ",
        "CON",
        "nul.txt",
        "~",
        "$HOME",
        "日本語のユーザー",
        "😀",
        &long,
        &long2,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (i, id) in ids.iter().enumerate() {
        store.save(id, sample(i as u64)).unwrap();
    }
    assert_contained(outer.path(), &root);
    let fresh = open(&root);
    for (i, id) in ids.iter().enumerate() {
        assert_same(&fresh.load(id).unwrap().unwrap(), &sample(i as u64));
    }
    assert_eq!(fs::read_dir(&root).unwrap().count(), ids.len() + 1, "every id has its own directory, beside the name secret");
    for id in &ids {
        assert!(fresh.forget(id).unwrap());
    }
    let left: Vec<_> = fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![STORE_KEY_FILE], "only the name secret is left");

    let huge = "x".repeat(MAX_USER_ID_BYTES + 1);
    for bad in ["", huge.as_str()] {
        assert!(matches!(store.load(bad), Err(Error::InvalidArgument(_))));
        assert!(matches!(store.save(bad, sample(1)), Err(Error::InvalidArgument(_))));
        assert!(matches!(store.put(bad, sample(1)), Err(Error::InvalidArgument(_))));
        assert!(matches!(store.reset(bad), Err(Error::InvalidArgument(_))));
        assert!(matches!(store.forget(bad), Err(Error::InvalidArgument(_))));
        assert!(matches!(store.export(bad), Err(Error::InvalidArgument(_))));
        assert!(matches!(store.import(bad, b""), Err(Error::InvalidArgument(_))));
        assert!(matches!(store.list_versions(bad), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            store.rollback(bad, RollbackTarget::StepsBack(1)),
            Err(Error::InvalidArgument(_))
        ));
    }
}

#[test]
fn realistic_size_round_trip() {
    // The shapes of a SmolLM-class adapter: V = 49152, r = 8, d = 576, with Adam moments.
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let mut rec = sample(1);
    let (v, r, d) = (49_152u32, 8u32, 576u32);
    let fill = |n: u32, k: f32| (0..n).map(|i| ((i % 1000) as f32 - 500.0) * k).collect::<Vec<_>>();
    for (name, shape, k) in [
        ("lora.A", vec![r, d], 1e-3),
        ("lora.B", vec![v, r], 1e-4),
        ("adam.m.lora.B", vec![v, r], 1e-5),
        ("adam.v.lora.B", vec![v, r], 1e-6),
    ] {
        let n = shape.iter().product();
        rec.tensors.insert(name.into(), attune::store::Tensor::new(shape, fill(n, k)).unwrap());
    }
    let start = std::time::Instant::now();
    store.save("big", rec.clone()).unwrap();
    let saved = start.elapsed();
    let start = std::time::Instant::now();
    let back = open(tmp.path()).load("big").unwrap().unwrap();
    let loaded = start.elapsed();
    assert_same(&back, &rec);
    let size = store.list_versions("big").unwrap()[0].file_bytes;
    assert!(size > 4 * 3 * 393_216 && size < 7_000_000, "{size}");
    println!("{size} bytes: save {saved:?}, load {loaded:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn store_round_trips_every_field(rec in store_support::record(), id in ".{1,40}") {
        let tmp = tempfile::tempdir().unwrap();
        let store = open_with(tmp.path(), |o| o.cache_bytes = 0);
        store.save(&id, rec.clone()).unwrap();
        let back = open(tmp.path()).load(&id).unwrap().unwrap();
        assert_same(&back, &rec);
        let exported = store.export(&id).unwrap();
        prop_assert_eq!(exported, encode(&rec, &fp()).unwrap());
    }
}
