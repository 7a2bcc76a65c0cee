//! The fuzz targets' bounded run in the normal test suite: every committed seed (`fuzz/seeds/`)
//! and a fixed number of seeded mutations of them go through the same function the libFuzzer
//! target runs (`fuzz/src/lib.rs`, included here as a module), so that CI exercises each boundary's
//! parser and checks on a stable toolchain. The long runs are `make fuzz` (docs/fuzzing.md).

mod common;
#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bytes a mutation inserts or writes: JSON's structure, numbers that are edge cases for `f64`,
/// `u32` and `usize`, and a few values that are not JSON at all.
const TOKENS: &[&[u8]] = &[
    b"{", b"}", b"[", b"]", b":", b",", b"\"", b"\\u0000", b"\\ud800", b"null", b"true", b"false", b"0", b"-1",
    b"1e309", b"-1e309", b"1e-320", b"4294967296", b"18446744073709551616", b"-0", b"NaN", b"0.5",
    b"\"weight\"", b"\"stars\"", b"\"sampling\"", b"\"max_new_tokens\"", b"\"temperature\"", b"\"role\"",
    b"\"content\"", b"\"user\"", b"\"engine\"", b"\"learner\"", b"\xff", b"\xc3", b"\x00",
];

/// One random change of `data`, sometimes with a piece of `other` (another seed) spliced in.
fn mutate(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, other: &[u8]) {
    let at = |rng: &mut ChaCha8Rng, len: usize| rng.random_range(0..=len);
    match rng.random_range(0..7) {
        0 if !data.is_empty() => {
            let i = rng.random_range(0..data.len());
            data[i] ^= 1 << rng.random_range(0..8);
        }
        1 if !data.is_empty() => {
            let i = rng.random_range(0..data.len());
            data[i] = rng.random();
        }
        2 => {
            let i = at(rng, data.len());
            let t = TOKENS.choose(rng).expect("tokens are not empty");
            data.splice(i..i, t.iter().copied());
        }
        3 if !data.is_empty() => {
            let i = rng.random_range(0..data.len());
            let n = rng.random_range(1..=(data.len() - i).min(16));
            data.drain(i..i + n);
        }
        4 if !data.is_empty() => {
            let i = rng.random_range(0..data.len());
            let n = rng.random_range(1..=(data.len() - i).min(32));
            let piece = data[i..i + n].to_vec();
            let j = at(rng, data.len());
            data.splice(j..j, piece);
        }
        5 if !other.is_empty() => {
            let i = rng.random_range(0..other.len());
            let n = rng.random_range(1..=(other.len() - i).min(64));
            let j = at(rng, data.len());
            data.splice(j..j, other[i..i + n].iter().copied());
        }
        _ => {
            let i = at(rng, data.len());
            data.truncate(i);
        }
    }
}

/// The committed seeds of a target, which must exist.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = common::root().join("fuzz/seeds").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a seed directory entry").path())
        .collect();
    files.sort();
    let out: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).collect();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// Runs every seed, then `rounds` mutated inputs (1 to 4 mutations of a random seed each), through
/// `target`, with a fixed RNG seed so that a failure repeats.
fn replay(name: &str, rounds: usize, target: fn(&[u8])) {
    let corpus = seeds(name);
    for s in &corpus {
        target(s);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    for _ in 0..rounds {
        let mut input = corpus.choose(&mut rng).expect("seeds are not empty").clone();
        let other = corpus.choose(&mut rng).expect("seeds are not empty");
        for _ in 0..rng.random_range(1..=4) {
            mutate(&mut rng, &mut input, other);
        }
        target(&input);
    }
}

#[test]
fn configuration_json() {
    // Every seed is a valid configuration, so that mutations start from deep inside the parser.
    for s in seeds("config") {
        attune_host::json::config(std::str::from_utf8(&s).expect("seeds are UTF-8")).expect("a seed configuration parses");
    }
    replay("config", 4000, targets::config);
}

#[test]
fn feedback_json() {
    for s in seeds("feedback") {
        attune_host::json::reward(std::str::from_utf8(&s).expect("seeds are UTF-8")).expect("a seed reward parses");
    }
    replay("feedback", 600, targets::feedback);
}

#[test]
fn chat_messages_json() {
    let model = targets::Tiny::get().runtime.model();
    for s in seeds("chat") {
        let p = attune_host::json::prompt(attune_host::json::PromptKind::Chat, std::str::from_utf8(&s).expect("seeds are UTF-8"));
        model.prompt_tokens(&p.expect("a seed parses")).expect("a seed renders and tokenises");
    }
    replay("chat", 2000, targets::chat);
}

#[test]
fn generation_options_json() {
    let defaults = &targets::Tiny::get().runtime.config().generation;
    for s in seeds("options") {
        attune_host::json::options(defaults, Some(std::str::from_utf8(&s).expect("seeds are UTF-8"))).expect("seed options parse");
    }
    replay("options", 300, targets::options);
}

#[test]
fn adapter_import_bytes() {
    let tiny = targets::Tiny::get();
    for s in seeds("import") {
        // Whole files and bodies both import once stamped with this runtime's fingerprint.
        tiny.session().import(&targets::stamped(&s, tiny.fingerprint())).expect("a seed adapter imports");
    }
    replay("import", 300, targets::import);
}

/// Writes `fuzz/seeds/import/` from the tiny runtime: a fresh adapter's export and one after a
/// learning update, each as a whole file and as its body. Run by hand after a format change:
/// `cargo test --release --test fuzz_inputs -- --ignored write_import_seeds`.
#[test]
#[ignore = "writes the import seeds; run by hand after a format change"]
fn write_import_seeds() {
    let tiny = targets::Tiny::get();
    let mut session = tiny.session();
    session.reset().expect("the adapter resets");
    let fresh = session.export().expect("a fresh adapter exports");
    let opts = attune::generate::GenerateOptions { max_new_tokens: 4, ..Default::default() };
    let reply = session.generate(&attune::generate::Prompt::Text("Hello there".into()), &opts, &mut |_| true).expect("the tiny model generates");
    session.feedback(reply.episode_id, &attune::learn::Reward::thumbs(true)).expect("feedback is taken");
    session.update().ok();
    let learned = session.export().expect("a learned adapter exports");
    assert!(learned.len() > fresh.len(), "the update changed no row of B");
    let dir = common::root().join("fuzz/seeds/import");
    std::fs::create_dir_all(&dir).expect("the seed directory is created");
    for (name, file) in [("fresh", &fresh), ("learned", &learned)] {
        write(&dir.join(format!("{name}-file")), file);
        // Magic (8), version (2), body, checksum (4).
        write(&dir.join(format!("{name}-body")), &file[10..file.len() - 4]);
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
