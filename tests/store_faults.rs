//! Storage faults under real conditions: a full disk (a small tmpfs filled to its last block) and a
//! read-only store (the tmpfs remounted read-only; `chmod 0555` does not stop root, a read-only
//! mount does). In both, a save fails with an I/O error that names the file and the cause, the
//! previous version and the previous `pending.attune` stay loadable, no temporary file is left,
//! and a session keeps generating, taking feedback and updating in memory; once the fault is gone
//! the next save works.
//!
//! The tests mount their own tmpfs and unmount it when done (also when they fail). Mounting needs
//! root or CAP_SYS_ADMIN, as in CI; without it they fail with a message that says so, never skip.
#![cfg(target_os = "linux")]

mod common;
mod store_support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use attune::generate::{GenerateOptions, Prompt, SamplingConfig};
use attune::learn::{FeedbackOutcome, LearnerConfig, Reward};
use attune::runtime::{Runtime, RuntimeConfig, StoreConfig, UserSession};
use attune::store::{AdapterStore, PendingRecord};
use attune::tokenizer::Message;
use attune::Error;
use store_support::{assert_same, open_with, sample};

/// ENOSPC and EROFS on Linux.
const ENOSPC: i32 = 28;
const EROFS: i32 = 30;

/// A tmpfs mounted on a fresh temporary directory, unmounted on drop.
struct Tmpfs {
    point: tempfile::TempDir,
}

/// Runs `mount` with `args`, failing the test with mount's own message if it cannot.
fn mount(args: &[&str]) {
    let out = Command::new("mount").args(args).output().unwrap_or_else(|e| panic!("cannot run mount: {e}"));
    assert!(
        out.status.success(),
        "`mount {}` failed: {}. These tests need to mount a tmpfs, which takes root or CAP_SYS_ADMIN \
         (CI runs as root); run them as root",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it).
    fn new(size: &str) -> Tmpfs {
        let point = tempfile::tempdir().expect("mount point");
        let path = point.path().to_str().expect("a UTF-8 temporary path").to_owned();
        mount(&["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs", &path]);
        Tmpfs { point }
    }

    fn path(&self) -> &Path {
        self.point.path()
    }

    /// Remounts read-only (`true`) or read-write.
    fn set_read_only(&self, ro: bool) {
        let path = self.path().to_str().expect("UTF-8").to_owned();
        mount(&["-o", if ro { "remount,ro" } else { "remount,rw" }, &path]);
    }

    /// Writes a filler file until the file system is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = fs::File::create(&path).expect("filler");
        let block = vec![0xa5u8; 4096];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // The last partial page may still hold a few bytes; write them one by one.
        while f.write(&[0]).is_ok_and(|n| n == 1) {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.path().to_owned();
        let ok = Command::new("umount").arg(&path).status().is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file open there; detach it so that it never outlives the test.
            let _ = Command::new("umount").arg("-l").arg(&path).status();
        }
    }
}

/// Every file under `dir`, as paths relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

/// No temporary file anywhere under `dir`.
fn assert_no_temp_files(dir: &Path) {
    let temps: Vec<String> = walk(dir).into_iter().filter(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with(".tmp-") || n.contains(".tmp"))).collect();
    assert!(temps.is_empty(), "temporary files left behind: {temps:?}");
}

/// An I/O error with OS error `errno`, whose message names a file under `under`.
fn assert_io(err: Error, errno: i32, under: &Path) -> String {
    let msg = err.to_string();
    match &err {
        Error::Io { path, source } => {
            assert_eq!(source.raw_os_error(), Some(errno), "{msg}");
            assert!(path.starts_with(under), "{msg}");
        }
        other => panic!("expected Error::Io (errno {errno}), got {other:?}"),
    }
    assert_eq!(err.code(), 34, "ATTUNE_STATUS_IO");
    msg
}

fn pending(n: u64) -> PendingRecord {
    PendingRecord { reserved_ids: n, adapter_version: 1, ..Default::default() }
}

#[test]
fn full_disk_save_fails_cleanly_and_the_previous_version_stays() {
    let fs_ = Tmpfs::new("256k");
    let root = fs_.path().join("store");
    let store = open_with(&root, |o| o.cache_bytes = 0);
    assert_eq!(store.save("alice", sample(1)).unwrap(), 1);
    store.save_pending("alice", &pending(64), true).unwrap();
    let filler = fs_.fill();

    let msg = assert_io(store.save("alice", sample(2)).unwrap_err(), ENOSPC, &root);
    eprintln!("full disk, save: {msg}");
    let msg = assert_io(store.save_pending("alice", &pending(128), true).unwrap_err(), ENOSPC, &root);
    eprintln!("full disk, pending: {msg}");
    // A first save of a new user leaves nothing, not even its directory.
    assert_io(store.save("bob", sample(3)).unwrap_err(), ENOSPC, &root);
    assert!(!store.user_dir("bob").unwrap().exists(), "a failed first save leaves no directory");
    assert_no_temp_files(&root);

    let fresh = open_with(&root, |o| o.cache_bytes = 0);
    let report = fresh.load_report("alice").unwrap();
    assert_eq!((report.version, report.skipped.len()), (Some(1), 0));
    assert_same(report.record.as_ref().unwrap(), &sample(1));
    assert!(fresh.list_versions("alice").unwrap().iter().all(|v| v.problem.is_none()));
    assert_eq!(fresh.load_pending("alice").unwrap().unwrap().unwrap(), pending(64));

    // Space again: the next save works and numbers on from the last good version.
    fs::remove_file(filler).unwrap();
    assert_eq!(store.save("alice", sample(2)).unwrap(), 2);
    store.save_pending("alice", &pending(128), true).unwrap();
    assert_same(&open_with(&root, |o| o.cache_bytes = 0).load("alice").unwrap().unwrap(), &sample(2));
    assert_no_temp_files(&root);
}

#[test]
fn read_only_store_save_fails_cleanly_and_the_previous_version_stays() {
    let fs_ = Tmpfs::new("1m");
    let root = fs_.path().join("store");
    let store = open_with(&root, |o| o.cache_bytes = 0);
    store.save("alice", sample(1)).unwrap();
    store.save_pending("alice", &pending(64), true).unwrap();
    fs_.set_read_only(true);
    // Root ignores permission bits, so the mount is what must refuse the write.
    assert!(fs::File::create(root.join("probe")).is_err(), "the store is really read-only");

    let msg = assert_io(store.save("alice", sample(2)).unwrap_err(), EROFS, &root);
    eprintln!("read-only store, save: {msg}");
    assert_io(store.save_pending("alice", &pending(128), true).unwrap_err(), EROFS, &root);
    assert!(matches!(store.reset("alice"), Err(Error::Io { .. })));
    // Reading still works, from a store opened on the read-only directory too.
    let fresh = open_with(&root, |o| o.cache_bytes = 0);
    assert_same(&fresh.load("alice").unwrap().unwrap(), &sample(1));
    assert_eq!(fresh.load_pending("alice").unwrap().unwrap().unwrap(), pending(64));
    assert_eq!(fresh.list_versions("alice").unwrap().len(), 1);
    assert_no_temp_files(&root);

    fs_.set_read_only(false);
    assert_eq!(store.save("alice", sample(2)).unwrap(), 2);
    assert_same(&open_with(&root, |o| o.cache_bytes = 0).load("alice").unwrap().unwrap(), &sample(2));
}

fn runtime(store: &Path) -> Arc<Runtime> {
    let cfg = RuntimeConfig {
        engine: common::cpu_config(common::tiny_dir()),
        store: StoreConfig { dir: Some(store.to_path_buf()), ..StoreConfig::default() },
        learner: LearnerConfig { max_updates_per_minute: 0, auto_update_after: 0, ..LearnerConfig::default() },
        probe_tokens: 8,
        ..RuntimeConfig::default()
    };
    Runtime::new(cfg).expect("runtime")
}

/// One turn: a reply, a thumbs up for it, and an update; returns the reply's id.
fn turn(s: &mut UserSession, seed: u64) -> u64 {
    let opts = GenerateOptions { sampling: SamplingConfig { temperature: 1.0, seed, ..SamplingConfig::default() }, max_new_tokens: 6, ..GenerateOptions::default() };
    let prompt = Prompt::Chat(vec![Message::user(format!("Tell me about day {seed}."))]);
    let id = s.generate(&prompt, &opts, &mut |_| true).expect("generate works").episode_id;
    assert_eq!(s.feedback(id, &Reward::thumbs(seed % 2 == 0)).expect("feedback works"), FeedbackOutcome::Queued);
    s.update().expect("update works");
    id
}

/// What a store on disk says about `user`: the newest version's update count and the pending
/// file's reservation.
fn on_disk(store: &AdapterStore, user: &str) -> (Option<u64>, u64, u64) {
    let report = store.load_report(user).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let updates = report.record.as_ref().map(|r| r.counters["updates"]).unwrap_or(0);
    let pending = store.load_pending(user).unwrap().expect("pending.attune exists").expect("pending.attune is intact");
    (report.version, updates, pending.reserved_ids)
}

/// The session-level check for one fault: `break_it` makes the store unwritable, `mend` fixes it.
fn session_survives(fault: &Tmpfs, errno: i32, break_it: impl FnOnce() -> Option<PathBuf>, mend: impl FnOnce(Option<PathBuf>)) {
    let root = fault.path().join("store");
    let rt = runtime(&root);
    let mut s = rt.open_session("+1 555 0100").unwrap();
    turn(&mut s, 1);
    turn(&mut s, 2);
    assert_eq!(s.save().unwrap(), 1);
    let store = rt.store().unwrap();
    let before = on_disk(store, "+1 555 0100");
    assert_eq!((before.0, before.1), (Some(1), 2));
    let bytes = fs::metadata(store.list_versions("+1 555 0100").unwrap()[0].path.clone()).unwrap().len();
    eprintln!("adapter version on disk: {bytes} bytes");

    let token = break_it();
    // Generation, feedback and updates go on in memory; each generate's pending write fails and
    // is only logged.
    let ids: Vec<u64> = (3..6).map(|seed| turn(&mut s, seed)).collect();
    assert_eq!(s.learner().counters().updates, 5);
    let msg = assert_io(s.save().unwrap_err(), errno, &root);
    eprintln!("session save: {msg}");
    // Export writes nothing, so it works during the fault, and its bytes are what the session has.
    let exported = s.export().expect("export writes nothing");
    assert!(!exported.is_empty());
    turn(&mut s, 6);
    assert_eq!(s.learner().counters().updates, 6, "the session learned on after the failed save");
    assert_eq!(on_disk(store, "+1 555 0100"), before, "the disk still holds the last good version and pending file");
    assert_no_temp_files(fault.path());

    mend(token);
    assert_eq!(s.save().unwrap(), 2);
    let after = on_disk(store, "+1 555 0100");
    assert_eq!((after.0, after.1), (Some(2), 6));
    assert!(after.2 > *ids.last().unwrap(), "the id reservation covers the replies given during the fault");
    drop(s);
    let s = rt.open_session("+1 555 0100").unwrap();
    assert_eq!(s.learner().counters().updates, 6, "a new session loads what was learned during the fault");
    assert!(s.learner().next_episode_id() > *ids.last().unwrap(), "no id given during the fault is reissued");
    drop(s);
    drop(rt);
    assert_no_temp_files(fault.path());
}

#[test]
fn a_session_keeps_working_on_a_full_disk() {
    let fault = Tmpfs::new("1m");
    session_survives(&fault, ENOSPC, || Some(fault.fill()), |filler| fs::remove_file(filler.expect("the filler")).unwrap());
}

#[test]
fn a_session_keeps_working_on_a_read_only_store() {
    let fault = Tmpfs::new("1m");
    session_survives(&fault, EROFS, || {
        fault.set_read_only(true);
        None
    }, |_| fault.set_read_only(false));
}

/// A reply's episode id is durably reserved before it is issued (a block of `ID_BLOCK` at a time).
/// When that write fails, the generate call that needed the id fails with the I/O error and issues
/// no id (it used to log the failure and issue the id anyway, so after a crash the id could name
/// another reply); once the store is writable the next reply gets the first id, and the
/// reservation on disk covers it.
#[test]
fn a_failed_id_reservation_is_an_error_of_the_call_that_needed_it() {
    let fault = Tmpfs::new("1m");
    let root = fault.path().join("store");
    let rt = runtime(&root);
    let user = "+1 555 0101";
    let mut s = rt.open_session(user).unwrap();
    let opts = GenerateOptions { sampling: SamplingConfig { temperature: 1.0, seed: 3, ..SamplingConfig::default() }, max_new_tokens: 4, ..GenerateOptions::default() };
    let prompt = Prompt::Chat(vec![Message::user("Hello there.")]);
    fault.set_read_only(true);
    let msg = assert_io(s.generate(&prompt, &opts, &mut |_| true).unwrap_err(), EROFS, &root);
    eprintln!("generate without a reservation: {msg}");
    assert_eq!(s.learner().next_episode_id(), 0, "no id was issued");
    assert_eq!(s.learner().episodes().count(), 0, "no episode was recorded");
    // Unrecorded replies need no id and still work.
    s.generate_unrecorded(&prompt, &opts, &mut |_| true).unwrap();
    fault.set_read_only(false);
    let id = s.generate(&prompt, &opts, &mut |_| true).unwrap().episode_id;
    assert_eq!(id, 0);
    let pending = rt.store().unwrap().load_pending(user).unwrap().expect("pending.attune exists").expect("pending.attune is intact");
    assert_eq!(pending.reserved_ids, attune::runtime::ID_BLOCK, "the reservation on disk covers the id");
    drop(s);
    drop(rt);
    assert_no_temp_files(fault.path());
}
