//! Fuzzes the chat-messages JSON (`attune_session_generate` with `ATTUNE_PROMPT_CHAT`) through the chat template and tokenizer.
//! What it checks is in `attune_fuzz::chat`; `docs/fuzzing.md` says how to run it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| attune_fuzz::chat(data));
