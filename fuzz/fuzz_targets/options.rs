//! Fuzzes the generation options JSON (`attune_session_generate`'s `options_json`) through a two-token generation on the tiny model.
//! What it checks is in `attune_fuzz::options`; `docs/fuzzing.md` says how to run it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| attune_fuzz::options(data));
