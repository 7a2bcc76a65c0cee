//! Kills a process that is saving adapters with SIGKILL at random moments, hundreds of times, and
//! checks after every kill that the store still loads a complete, valid version: the last one that
//! finished or the one in flight, never a torn one, and never an older one than seen before.
#![cfg(unix)]

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use attune::store::{AdapterRecord, AdapterStore, ModelFingerprint, StoreOptions};

/// Must match the helper binary.
const USER: &str = "crash/../test user ✓";

/// Must match `pattern` in `src/bin/attune-store-crashtest.rs`.
fn pattern(i: u64) -> Vec<f32> {
    let len = 20_000 + (i % 7) as usize * 5_000;
    let base = i.wrapping_mul(2_654_435_761);
    (0..len as u64).map(|j| (base.wrapping_add(j * 7) % 65_536) as f32).collect()
}

/// Checks that a loaded record is exactly what iteration `counters["iteration"]` wrote.
fn check(rec: &AdapterRecord) -> u64 {
    let i = rec.counters["iteration"];
    let t = &rec.tensors["pattern"];
    assert_eq!(t.data, pattern(i), "iteration {i}: tensor contents");
    assert_eq!(t.shape, vec![t.data.len() as u32]);
    assert_eq!(rec.scalars["half"], i as f64 / 2.0);
    assert_eq!(rec.created_unix, i);
    i
}

/// A xorshift generator, enough to spread the kill moments.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-")).count()
        })
        .unwrap_or(0)
}

#[test]
fn sigkill_during_saves_never_leaves_a_damaged_adapter() {
    let kills: usize =
        std::env::var("ATTUNE_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let seed =
        std::env::var("ATTUNE_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("crash test seed {seed} (set ATTUNE_CRASH_SEED to repeat)");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let exe = env!("CARGO_BIN_EXE_attune-store-crashtest");
    let mut options = StoreOptions::new(ModelFingerprint::of_parts(["attune crash test"]));
    options.cache_bytes = 0;

    let started = Instant::now();
    let (mut last, mut mid_write, mut after_a_save, mut completed_saves) =
        (0u64, 0usize, 0usize, 0usize);
    for k in 0..kills {
        let mut child = Command::new(exe)
            .arg(&root)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the crash-test helper");
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(60_000)));
        child.kill().expect("SIGKILL");
        let status = child.wait().unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "kill {k}: the helper exited by itself: {status} {err}"
        );
        let saves = out.lines().count();
        completed_saves += saves;
        after_a_save += usize::from(saves > 0);

        let store = AdapterStore::open(&root, options.clone()).unwrap();
        let dir = store.user_dir(USER).unwrap();
        mid_write += usize::from(temp_files(&dir) > 0);
        let report = store.load_report(USER).unwrap();
        assert!(report.skipped.is_empty(), "kill {k}: damaged versions {:?}", report.skipped);
        for v in store.list_versions(USER).unwrap() {
            assert!(v.problem.is_none(), "kill {k}: version {} is damaged: {:?}", v.seq, v.problem);
        }
        match report.record {
            Some(rec) => {
                let i = check(&rec);
                assert!(i >= last, "kill {k}: went back from iteration {last} to {i}");
                assert!(i >= last + saves as u64, "kill {k}: a reported save is missing");
                last = i;
            }
            None => assert_eq!(last, 0, "kill {k}: the adapter disappeared"),
        }
    }
    let elapsed = started.elapsed();
    println!(
        "crash test: {kills} SIGKILLs in {elapsed:.1?}; {after_a_save} landed after at least one \
         save of that run, {mid_write} left a temporary file (killed mid-write); {completed_saves} \
         saves completed; final iteration {last}; every load was a complete version"
    );
    assert!(last > 0, "the helper never completed a save");
    assert!(mid_write > 0, "no kill landed during a write; the test did not test anything");
}
