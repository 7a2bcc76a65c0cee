//! Fuzzes the runtime configuration JSON (`attune_runtime_new`).
//! What it checks is in `attune_fuzz::config`; `docs/fuzzing.md` says how to run it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| attune_fuzz::config(data));
