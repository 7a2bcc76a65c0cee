//! Fuzzes the feedback JSON (`attune_session_feedback_json`) on a real reply of the tiny model.
//! What it checks is in `attune_fuzz::feedback`; `docs/fuzzing.md` says how to run it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| attune_fuzz::feedback(data));
