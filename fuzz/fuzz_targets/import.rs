//! Fuzzes the bytes `attune_session_import` takes, against the tiny model's store.
//! What it checks is in `attune_fuzz::import`; `docs/fuzzing.md` says how to run it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| attune_fuzz::import(data));
