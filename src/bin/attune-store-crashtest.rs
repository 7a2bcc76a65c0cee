//! Crash-test helper for the adapter store: saves self-describing adapters in a loop until killed.
//!
//! Usage: `attune-store-crashtest <store-dir>`. Each iteration `i` continues from the newest
//! version on disk and saves a record whose counter `"iteration"` is `i` and whose tensor
//! `"pattern"` is [`pattern`]`(i)`, so a reader can tell a complete version from a damaged one
//! without knowing when the writer died. It prints `saved <i>` after each save.
//! `tests/store_crash.rs` kills it with SIGKILL at random moments and checks what is left.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use attune::store::{
    AdapterConfig, AdapterRecord, AdapterStore, ModelFingerprint, StoreOptions, Tensor,
};

/// The user id the helper writes; includes characters that need encoding.
const USER: &str = "crash/../test user ✓";

/// The tensor values of iteration `i`; the length varies so that versions differ in size.
fn pattern(i: u64) -> Vec<f32> {
    let len = 20_000 + (i % 7) as usize * 5_000;
    let base = i.wrapping_mul(2_654_435_761);
    (0..len as u64).map(|j| (base.wrapping_add(j * 7) % 65_536) as f32).collect()
}

/// Builds the self-describing record of iteration `i`.
fn record(i: u64) -> AdapterRecord {
    let config = AdapterConfig {
        rank: 8,
        alpha: 16.0,
        hidden: 64,
        vocab: 1000,
        top_k_rows: 4,
        algorithm: "crashtest".into(),
        extra: Default::default(),
    };
    let mut r = AdapterRecord::new(config, i);
    let data = pattern(i);
    let len = data.len() as u32;
    r.tensors.insert("pattern".into(), Tensor { shape: vec![len], data });
    r.counters.insert("iteration".into(), i);
    r.scalars.insert("half".into(), i as f64 / 2.0);
    r
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: attune-store-crashtest <store-dir>");
        return ExitCode::from(2);
    };
    let fingerprint = ModelFingerprint::of_parts(["attune crash test"]);
    let mut options = StoreOptions::new(fingerprint);
    options.keep_versions = 3;
    options.cache_bytes = 0;
    let store = match AdapterStore::open(&dir, options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("open: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut i = match store.load(USER) {
        Ok(r) => r.and_then(|r| r.counters.get("iteration").copied()).unwrap_or(0),
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    loop {
        i += 1;
        if let Err(e) = store.save(USER, record(i)) {
            eprintln!("save {i}: {e}");
            return ExitCode::FAILURE;
        }
        // A closed pipe only means the parent stopped listening; keep going until killed.
        let _ = writeln!(out, "saved {i}").and_then(|()| out.flush());
    }
}
