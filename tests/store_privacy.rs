//! Privacy on disk and the rules around a user's sessions: no file name reveals a user id (keyed
//! names, legacy hex names renamed), encryption at rest with a wrong key refused by name, forget-me
//! that no open session can undo, and one open session per user and runtime.

mod common;
mod store_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use attune::generate::{GenerateOptions, Prompt, SamplingConfig};
use attune::learn::{LearnerConfig, Reward};
use attune::runtime::{Runtime, RuntimeConfig, StoreConfig, UserSession};
use attune::store::{encode, EncryptionKey, StoreError, MAGIC, PENDING_FILE, SEAL_MAGIC, STORE_KEY_FILE};
use attune::tokenizer::Message;
use attune::Error;
use base64::Engine;
use store_support::{assert_same, flip_bit, fp, open_with, sample, version_path};

const PHONE: &str = "+1 555 0100";

fn runtime_with(store: &Path, key: Option<EncryptionKey>) -> Result<Arc<Runtime>, Error> {
    let cfg = RuntimeConfig {
        engine: common::cpu_config(common::tiny_dir()),
        store: StoreConfig { dir: Some(store.to_path_buf()), encryption_key: key, ..StoreConfig::default() },
        learner: LearnerConfig { max_updates_per_minute: 0, auto_update_after: 0, ..LearnerConfig::default() },
        probe_tokens: 8,
        ..RuntimeConfig::default()
    };
    Runtime::new(cfg)
}

fn runtime(store: &Path) -> Arc<Runtime> {
    runtime_with(store, None).expect("runtime")
}

/// A reply, a thumbs up and an update; returns the reply's id.
fn turn(s: &mut UserSession, seed: u64) -> u64 {
    let opts = GenerateOptions { sampling: SamplingConfig { temperature: 1.0, seed, ..SamplingConfig::default() }, max_new_tokens: 6, ..GenerateOptions::default() };
    let prompt = Prompt::Chat(vec![Message::user(format!("Where is parcel {seed}?"))]);
    let id = s.generate(&prompt, &opts, &mut |_| true).expect("generate").episode_id;
    s.feedback(id, &Reward::thumbs(true)).expect("feedback");
    s.update().expect("update");
    id
}

/// Every path under `dir`, relative to it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path().strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

/// Every way the id could be spelled in a name, lower-cased: itself, its hex, its base64 (both
/// alphabets, with and without padding), and the run of its digits.
fn spellings(id: &str) -> Vec<String> {
    let b = id.as_bytes();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let std64 = base64::engine::general_purpose::STANDARD.encode(b);
    let url64 = base64::engine::general_purpose::URL_SAFE.encode(b);
    let digits: String = id.chars().filter(char::is_ascii_digit).collect();
    let mut v = vec![id.to_string(), hex, std64.clone(), url64.clone(), std64.trim_end_matches('=').into(), url64.trim_end_matches('=').into(), digits];
    v.iter_mut().for_each(|s| *s = s.to_lowercase());
    v
}

#[test]
fn no_file_or_folder_name_reveals_the_user_id() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let mut s = rt.open_session(PHONE).unwrap();
    turn(&mut s, 1);
    turn(&mut s, 2);
    assert_eq!(s.save().unwrap(), 1);
    turn(&mut s, 3); // pending.attune after the save, too
    drop(s);
    drop(rt);

    let names = walk(tmp.path());
    let forbidden = spellings(PHONE);
    assert!(forbidden.contains(&"15550100".to_string()));
    let mut dirs = 0;
    for path in &names {
        for part in path.iter() {
            let part = part.to_string_lossy().to_lowercase();
            for f in &forbidden {
                assert!(!part.contains(f.as_str()), "{} contains {f:?}", path.display());
            }
        }
        dirs += usize::from(tmp.path().join(path).is_dir());
    }
    assert_eq!(dirs, 1, "one user directory: {names:?}");
    eprintln!("store listing for user {PHONE:?}:\n  {}", names.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("\n  "));
    // The files' contents do not carry the id either.
    for path in names.iter().map(|p| tmp.path().join(p)).filter(|p| p.is_file()) {
        let bytes = fs::read(&path).unwrap();
        for f in [PHONE.as_bytes(), forbidden[1].as_bytes()] {
            assert!(!bytes.windows(f.len()).any(|w| w == f), "{} holds the id", path.display());
        }
    }
    // The names are stable: a new runtime on the same store finds the user.
    let rt = runtime(tmp.path());
    assert_eq!(rt.open_session(PHONE).unwrap().learner().counters().updates, 2);
}

#[test]
fn legacy_hex_directories_are_found_and_renamed_on_first_access() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let long_id = "y".repeat(100);
    // The layout an older store wrote: the id's hex, or for a long id a hex prefix and a SHA-256.
    let legacy_short = root.join("u616c696365"); // "alice"
    let legacy_long = root.join(
        "h7979797979797979797979797979797979797979797979797979797979797979-\
         56846f2db153afa893bd18d0c0bf6e026d9cd3fa0bfa941976b17ff14d3e217a",
    );
    let legacy_gone = root.join("u686f6c6c79"); // "holly", forgotten before any access
    for (dir, seed) in [(&legacy_short, 1), (&legacy_long, 2), (&legacy_gone, 3)] {
        fs::create_dir(dir).unwrap();
        fs::write(version_path(dir, 1), encode(&sample(seed), &fp()).unwrap()).unwrap();
        fs::write(version_path(dir, 2), encode(&sample(seed + 10), &fp()).unwrap()).unwrap();
    }
    let store = open_with(root, |o| o.cache_bytes = 0);
    assert_same(&store.load("alice").unwrap().unwrap(), &sample(11));
    assert!(!legacy_short.exists(), "renamed at the first access");
    let keyed = store.user_dir("alice").unwrap();
    assert!(keyed.is_dir() && keyed.file_name().unwrap().to_string_lossy().starts_with('k'));
    assert_eq!(store.list_versions("alice").unwrap().len(), 2, "the history came along");
    assert_eq!(store.save("alice", sample(4)).unwrap(), 3);

    assert_eq!(store.list_versions(&long_id).unwrap().len(), 2);
    assert!(!legacy_long.exists());
    assert!(store.forget("holly").unwrap(), "forget erases a legacy directory too");
    assert!(!legacy_gone.exists());
    let left: Vec<String> = fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(left.iter().all(|n| n == STORE_KEY_FILE || n.starts_with('k')), "{left:?}");
}

fn key(b: u8) -> EncryptionKey {
    EncryptionKey::from_bytes([b; 32])
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_encrypted_store_seals_every_file_and_refuses_a_wrong_key() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = open_with(root, |o| o.encryption_key = Some(key(1)));
    store.save("alice", sample(1)).unwrap();
    store.save("alice", sample(2)).unwrap();
    store.save_pending("alice", &attune::store::PendingRecord { reserved_ids: 64, adapter_version: 1, ..Default::default() }, true).unwrap();
    let dir = store.user_dir("alice").unwrap();
    for path in [version_path(&dir, 1), version_path(&dir, 2), dir.join(PENDING_FILE), root.join(STORE_KEY_FILE)] {
        let bytes = fs::read(&path).unwrap();
        assert!(bytes.starts_with(&SEAL_MAGIC), "{} is sealed", path.display());
        assert!(!contains(&bytes, &MAGIC) && !contains(&bytes, b"reinforce"), "{} shows no plain text", path.display());
    }
    assert_same(&open_with(root, |o| o.encryption_key = Some(key(1))).load("alice").unwrap().unwrap(), &sample(2));
    let exported = store.export("alice").unwrap();
    assert!(exported.starts_with(&SEAL_MAGIC), "exports are sealed too");

    // The wrong key and no key are refused at open, by name, never read as garbage.
    for (what, k) in [("another key", Some(key(2))), ("no key", None)] {
        match attune::store::AdapterStore::open(root, { let mut o = attune::store::StoreOptions::new(fp()); o.encryption_key = k; o }) {
            Err(e @ Error::EncryptionKey { .. }) => {
                assert_eq!(e.code(), 36, "ATTUNE_STATUS_ENCRYPTION_KEY");
                if what == "another key" {
                    assert!(e.to_string().contains("wrong encryption key"), "{e}");
                }
                eprintln!("{what}: {e}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // Exported bytes need the key they were sealed with.
    let other = tempfile::tempdir().unwrap();
    let wrong = open_with(other.path(), |o| o.encryption_key = Some(key(3)));
    assert!(matches!(wrong.import("bob", &exported), Err(Error::EncryptionKey { reason, .. }) if reason.contains("wrong encryption key")));
    let plain_store = tempfile::tempdir().unwrap();
    let plain = open_with(plain_store.path(), |o| o.encryption_key = None);
    assert!(matches!(plain.import("bob", &exported), Err(Error::EncryptionKey { .. })));
    // Plain bytes are accepted and sealed when saved.
    wrong.import("bob", &encode(&sample(5), &fp()).unwrap()).unwrap();
    assert!(fs::read(version_path(&wrong.user_dir("bob").unwrap(), 1)).unwrap().starts_with(&SEAL_MAGIC));

    // A damaged sealed version is damage (skipped with a fallback), not a key problem.
    flip_bit(&version_path(&dir, 2), 100, 0);
    let report = open_with(root, |o| {
        o.encryption_key = Some(key(1));
        o.cache_bytes = 0
    })
    .load_report("alice")
    .unwrap();
    assert_eq!(report.version, Some(1));
    assert_eq!(report.skipped[0].reason, StoreError::AuthFailed);
}

#[test]
fn adding_a_key_to_a_plain_store_keeps_every_user() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    open_with(root, |_| {}).save("alice", sample(1)).unwrap();
    let store = open_with(root, |o| o.encryption_key = Some(key(9)));
    assert_same(&store.load("alice").unwrap().unwrap(), &sample(1));
    store.save("alice", sample(2)).unwrap();
    let dir = store.user_dir("alice").unwrap();
    assert!(fs::read(version_path(&dir, 1)).unwrap().starts_with(&MAGIC), "the old version stays plain until it ages out");
    assert!(fs::read(version_path(&dir, 2)).unwrap().starts_with(&SEAL_MAGIC));
    assert!(fs::read(root.join(STORE_KEY_FILE)).unwrap().starts_with(&SEAL_MAGIC), "the name secret was sealed");
}

#[test]
fn a_runtime_with_the_wrong_key_fails_to_open_with_the_documented_status() {
    let tmp = tempfile::tempdir().unwrap();
    let right = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let cfg = |k: &str| format!(r#"{{"engine": {{"model_dir": "{}"}}, "store": {{"dir": "{}", "encryption_key": "{k}"}}}}"#, common::tiny_dir().display(), tmp.path().display());
    let parsed = RuntimeConfig::from_json(&cfg(right)).unwrap();
    let rt = runtime_with(tmp.path(), parsed.store.encryption_key.clone()).unwrap();
    let mut s = rt.open_session(PHONE).unwrap();
    turn(&mut s, 1);
    s.save().unwrap();
    drop(s);
    drop(rt);
    let wrong_b64 = base64::engine::general_purpose::STANDARD.encode([0x5au8; 32]);
    let wrong = RuntimeConfig::from_json(&cfg(&wrong_b64)).unwrap();
    match runtime_with(tmp.path(), wrong.store.encryption_key) {
        Err(e) => {
            assert_eq!(e.code(), 36, "{e}");
            assert!(e.to_string().contains("wrong encryption key"), "{e}");
        }
        Ok(_) => panic!("a runtime opened an encrypted store with the wrong key"),
    }
    match RuntimeConfig::from_json(&cfg("0123")) {
        Err(Error::Config(m)) => assert!(m.contains("store.encryption_key") && !m.contains("\"0123\""), "{m}"),
        other => panic!("{other:?}"),
    }
    // The right key again: everything is there.
    let rt = runtime_with(tmp.path(), parsed.store.encryption_key).unwrap();
    assert_eq!(rt.open_session(PHONE).unwrap().learner().counters().updates, 1);
}

/// Asserts that `err` says the user was forgotten.
fn forgotten(what: &str, err: Result<impl std::fmt::Debug, Error>) {
    match err {
        Err(e @ Error::UserForgotten(_)) => {
            assert_eq!(e.code(), 37, "ATTUNE_STATUS_USER_FORGOTTEN");
            assert!(e.to_string().contains("forgotten"), "{e}");
        }
        other => panic!("{what}: expected UserForgotten, got {other:?}"),
    }
}

#[test]
fn a_forgotten_users_open_session_can_never_write_back() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let store = rt.store().unwrap();
    let mut s = rt.open_session(PHONE).unwrap();
    turn(&mut s, 1);
    assert_eq!(s.save().unwrap(), 1);
    let exported = s.export().unwrap();
    let dir = store.user_dir(PHONE).unwrap();

    assert!(rt.forget(PHONE).unwrap(), "the runtime forgets the user while the session is open");
    assert!(!dir.exists() && s.is_forgotten());
    forgotten("save", s.save());
    forgotten("export", s.export());
    forgotten("rollback", s.rollback(1));
    forgotten("reset", s.reset());
    forgotten("import", s.import(&exported));
    // The session goes on in memory, and writes nothing: not even pending episodes.
    turn(&mut s, 2);
    turn(&mut s, 3);
    assert!(!dir.exists(), "generate and feedback did not bring the user's directory back");
    drop(s);
    assert!(!dir.exists());

    // A session opened afterwards starts fresh and works normally.
    let mut s = rt.open_session(PHONE).unwrap();
    assert!(!s.is_forgotten());
    assert_eq!(s.learner().counters().updates, 0, "nothing of the forgotten user came back");
    turn(&mut s, 4);
    assert_eq!(s.save().unwrap(), 1);

    // Forget from inside the session is final for that session too.
    s.forget().unwrap();
    assert!(!dir.exists());
    forgotten("save after the session's own forget", s.save());
    turn(&mut s, 5);
    assert!(!dir.exists());
    drop(s);
    let mut s = rt.open_session(PHONE).unwrap();
    turn(&mut s, 6);
    assert_eq!(s.save().unwrap(), 1);
}

#[test]
fn a_forget_racing_a_saving_session_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let mut s = rt.open_session(PHONE).unwrap();
    turn(&mut s, 1);
    let saver = std::thread::spawn(move || {
        let mut saves = 0u32;
        loop {
            match s.save() {
                Ok(_) => saves += 1,
                Err(Error::UserForgotten(_)) => return saves,
                Err(e) => panic!("save: {e}"),
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    rt.forget(PHONE).unwrap();
    let saves = saver.join().unwrap();
    eprintln!("{saves} saves before the forget");
    assert!(saves > 0, "the race did not happen");
    assert!(!rt.store().unwrap().user_dir(PHONE).unwrap().exists(), "no save landed after the forget");
}

#[test]
fn one_open_session_per_user_and_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let first = rt.open_session("alice").unwrap();
    match rt.open_session("alice") {
        Err(e @ Error::Busy(_)) => {
            assert_eq!(e.code(), 6, "ATTUNE_STATUS_BUSY");
            assert!(e.to_string().contains("user \"alice\" already has an open session on this runtime"), "{e}");
        }
        other => panic!("a second session of one user opened: {other:?}"),
    }
    let bob = rt.open_session("bob").expect("other users are not affected");
    drop(first);
    let again = rt.open_session("alice").expect("dropping the first session releases the user");
    // A failed open releases the user too.
    assert!(matches!(rt.open_session(""), Err(Error::InvalidArgument(_))));
    drop((again, bob));
    rt.open_session("alice").unwrap();
}

/// Export writes the session's adapter as bytes without saving a version, so exports never push
/// the saved versions out of the rollback history; the bytes hold the unsaved changes too.
#[test]
fn export_saves_no_new_version() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let store = rt.store().unwrap();
    let mut s = rt.open_session(PHONE).unwrap();
    turn(&mut s, 1);
    assert_eq!(s.save().unwrap(), 1);
    let saved = s.learner().adapter().clone();
    turn(&mut s, 2);
    assert_ne!(s.learner().adapter(), &saved, "the second update changed the adapter after the save");
    let versions = store.list_versions(PHONE).unwrap();
    let bytes: Vec<Vec<u8>> = (0..5).map(|_| s.export().unwrap()).collect();
    assert_eq!(store.list_versions(PHONE).unwrap(), versions, "five exports saved no version");
    // Another user imports the unsaved adapter exactly.
    let mut other = rt.open_session("+1 555 0199").unwrap();
    other.import(&bytes[0]).unwrap();
    assert_eq!(other.learner().adapter(), s.learner().adapter());
    // Rollback still finds the first save one step back.
    s.save().unwrap();
    s.rollback(1).unwrap();
    assert_eq!(s.learner().adapter(), &saved);
}
