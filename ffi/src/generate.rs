//! Generation: prompts, generation settings as JSON, the streaming text callback with barge-in,
//! and `attune_reply`.

use std::ffi::{c_char, c_void};

use attune::generate::{FinishReason, Prompt};
use attune_host::json::PromptKind;

use crate::boundary::{self, enum_value, handle, utf8, utf8_opt, Fail, Out, Outcome};
use crate::session::{attune_session, find};
use crate::status::*;

/// The prompt is raw text, tokenised as is (no chat template).
pub const ATTUNE_PROMPT_TEXT: u32 = 0;
/// The prompt is one user message, rendered with the model's chat template.
pub const ATTUNE_PROMPT_USER: u32 = 1;
/// The prompt is a JSON array of chat messages, `[{"role": "system"|"user"|"assistant",
/// "content": "..."}, ...]`, rendered with the model's chat template.
pub const ATTUNE_PROMPT_CHAT: u32 = 2;

/// Generation ended at an end-of-sequence or stop token.
pub const ATTUNE_FINISH_STOP_TOKEN: u32 = 0;
/// Generation ended at a stop string (not part of the reply).
pub const ATTUNE_FINISH_STOP_STRING: u32 = 1;
/// Generation ended after `max_new_tokens` tokens.
pub const ATTUNE_FINISH_LENGTH: u32 = 2;
/// Generation ended because the context window is full.
pub const ATTUNE_FINISH_CONTEXT_FULL: u32 = 3;
/// The text callback returned false (barge-in), or `attune_session_cancel` stopped the generation.
pub const ATTUNE_FINISH_CANCELLED: u32 = 4;

/// Receives each new piece of the reply as it is generated. `text` is `len` bytes of UTF-8
/// followed by a NUL, borrowed until the callback returns. Return true to go on, false to stop
/// generation now (barge-in: the caller started talking); the reply then ends with
/// `ATTUNE_FINISH_CANCELLED` and holds the text streamed so far.
///
/// Called on the thread that called `attune_session_generate`, before that call returns. It must
/// not unwind (no C++ exception, no longjmp) through the library. Calls on the same session from
/// inside it return `ATTUNE_STATUS_BUSY`; other sessions and the runtime may be used.
pub type attune_text_callback = Option<unsafe extern "C" fn(user_data: *mut c_void, text: *const c_char, len: usize) -> bool>;

/// A finished reply: its text, episode id, finish reason and timings. Owned by the caller, freed
/// with `attune_reply_free`; immutable, so it may be read from any thread.
pub struct attune_reply {
    /// The text, NUL-terminated.
    text: Vec<u8>,
    episode_id: Option<u64>,
    finish: u32,
    tokens: usize,
    /// The JSON summary, NUL-terminated.
    json: Vec<u8>,
}

/// Parses a prompt argument of the given kind.
pub(crate) fn parse_prompt(kind: u32, prompt: &str) -> Outcome<Prompt> {
    let kind = match enum_value(kind, 3, "prompt_kind")? {
        ATTUNE_PROMPT_TEXT => PromptKind::Text,
        ATTUNE_PROMPT_USER => PromptKind::User,
        _ => PromptKind::Chat,
    };
    attune_host::json::prompt(kind, prompt)
}

fn finish_code(f: FinishReason) -> u32 {
    match f {
        FinishReason::StopToken => ATTUNE_FINISH_STOP_TOKEN,
        FinishReason::StopString => ATTUNE_FINISH_STOP_STRING,
        FinishReason::Length => ATTUNE_FINISH_LENGTH,
        FinishReason::ContextFull => ATTUNE_FINISH_CONTEXT_FULL,
        FinishReason::Cancelled => ATTUNE_FINISH_CANCELLED,
    }
}

fn nul_terminated(s: String) -> Vec<u8> {
    let mut v = s.into_bytes();
    v.push(0);
    v
}

/// The shared body of both generate exports.
///
/// # Safety
/// As for [`attune_session_generate`].
#[allow(clippy::too_many_arguments)]
unsafe fn generate(
    session: *mut attune_session,
    prompt_kind: u32,
    prompt: *const c_char,
    options_json: *const c_char,
    on_text: attune_text_callback,
    user_data: *mut c_void,
    out_reply: *mut *mut attune_reply,
    record: bool,
) -> Outcome<()> {
    // SAFETY: the caller's promises (see `attune_session_generate`).
    let (prompt, json, out) = unsafe { (utf8(prompt, "prompt")?, utf8_opt(options_json, "options_json")?, Out::new(out_reply, "out_reply")?) };
    let prompt = parse_prompt(prompt_kind, prompt)?;
    let s = find(session)?;
    let mut st = s.lock()?;
    let opts = attune_host::json::options(&s.shared.runtime.config().generation, json)?;
    let shared = &s.shared;
    let mut piece = Vec::new();
    let mut stream = |text: &str| -> bool {
        if shared.is_closed() {
            return false;
        }
        let Some(cb) = on_text else { return true };
        piece.clear();
        piece.extend_from_slice(text.as_bytes());
        piece.push(0);
        // SAFETY: `cb` is the caller's callback; `piece` is `text.len()` bytes plus a NUL and
        // lives until the callback returns.
        unsafe { cb(user_data, piece.as_ptr().cast(), text.len()) }
    };
    let reply = if record {
        let r = st.session.generate(&prompt, &opts, &mut stream)?;
        let json = serde_json::to_string(&r).unwrap_or_default();
        attune_reply {
            episode_id: (r.episode_id != attune::runtime::NO_EPISODE).then_some(r.episode_id),
            finish: finish_code(r.finish),
            tokens: r.tokens,
            text: nul_terminated(r.text),
            json: nul_terminated(json),
        }
    } else {
        let g = st.session.generate_unrecorded(&prompt, &opts, &mut stream)?;
        let json = serde_json::json!({
            "text": g.text, "episode_id": null, "finish": g.finish, "tokens": g.tokens.len(), "timings": g.timings,
        });
        attune_reply {
            episode_id: None,
            finish: finish_code(g.finish),
            tokens: g.tokens.len(),
            text: nul_terminated(g.text),
            json: nul_terminated(json.to_string()),
        }
    };
    s.shared.check_open()?;
    out.write(Box::into_raw(Box::new(reply)));
    Ok(())
}

/// Generates a reply with the session's adapter and records it as an episode that feedback can
/// refer to (`attune_reply_episode_id`).
///
/// `prompt_kind` is one of `ATTUNE_PROMPT_TEXT`, `ATTUNE_PROMPT_USER` or `ATTUNE_PROMPT_CHAT` and
/// says how `prompt` is read. `options_json` (may be NULL) overrides fields of the runtime's
/// `generation` settings, e.g. `{"max_new_tokens": 64, "sampling": {"temperature": 0.7, "seed": 1},
/// "stop_strings": ["\nUser:"]}`. `on_text` (may be NULL) receives the text as it is generated and
/// can stop it; `user_data` is passed to it unchanged.
///
/// On success `*out_reply` is an owned reply: free it with `attune_reply_free`. Statuses:
/// `INVALID_ENUM`, `INVALID_UTF8`, `INVALID_JSON`, `INVALID_ARGUMENT` (empty prompt, bad setting),
/// `CONTEXT_OVERFLOW`, `BUSY`, `RUNTIME_CLOSED` (also when the runtime is freed during the call),
/// `IO` (a recorded reply's episode id could not be durably reserved in the store, once every 64
/// replies: nothing was generated and no id issued; try again once the store is writable).
///
/// # Safety
/// `session` is NULL or a live session; `prompt` and `options_json` are NULL or NUL-terminated;
/// `on_text` is NULL or a function that is safe to call with `user_data`; `out_reply` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn attune_session_generate(
    session: *mut attune_session,
    prompt_kind: u32,
    prompt: *const c_char,
    options_json: *const c_char,
    on_text: attune_text_callback,
    user_data: *mut c_void,
    out_reply: *mut *mut attune_reply,
) -> attune_status {
    // SAFETY: forwarded from the caller.
    boundary::status(|| unsafe { generate(session, prompt_kind, prompt, options_json, on_text, user_data, out_reply, true) })
}

/// Like `attune_session_generate`, but records no episode (for evaluation or previews): the
/// adapter still applies, and the reply has no episode id (`attune_reply_episode_id` returns
/// `ATTUNE_STATUS_NOT_FOUND`).
///
/// # Safety
/// As for `attune_session_generate`.
#[no_mangle]
pub unsafe extern "C" fn attune_session_generate_unrecorded(
    session: *mut attune_session,
    prompt_kind: u32,
    prompt: *const c_char,
    options_json: *const c_char,
    on_text: attune_text_callback,
    user_data: *mut c_void,
    out_reply: *mut *mut attune_reply,
) -> attune_status {
    // SAFETY: forwarded from the caller.
    boundary::status(|| unsafe { generate(session, prompt_kind, prompt, options_json, on_text, user_data, out_reply, false) })
}

/// Writes the reply's text to `*out_text` (UTF-8, NUL-terminated; borrowed: valid until
/// `attune_reply_free`) and its length in bytes to `*out_len` (may be NULL).
///
/// # Safety
/// `reply` is NULL or live; `out_text` is NULL or writable; `out_len` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_reply_text(reply: *const attune_reply, out_text: *mut *const c_char, out_len: *mut usize) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let (r, text, len) = unsafe { (handle(reply, "reply")?, Out::new(out_text, "out_text")?, Out::optional(out_len)) };
        text.write(r.text.as_ptr().cast());
        if let Some(len) = len {
            len.write(r.text.len() - 1);
        }
        Ok(())
    })
}

/// Writes the reply's episode id (the id to give feedback for) to `*out_episode_id`.
/// `ATTUNE_STATUS_NOT_FOUND` for a reply from `attune_session_generate_unrecorded`, and for one
/// cancelled before its first token (nothing was said, so no episode was recorded).
///
/// # Safety
/// `reply` is NULL or live; `out_episode_id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_reply_episode_id(reply: *const attune_reply, out_episode_id: *mut u64) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let (r, out) = unsafe { (handle(reply, "reply")?, Out::new(out_episode_id, "out_episode_id")?) };
        let id = r.episode_id.ok_or_else(|| Fail::new(ATTUNE_STATUS_NOT_FOUND, "the reply was generated unrecorded; it has no episode"))?;
        out.write(id);
        Ok(())
    })
}

/// Writes why generation ended (`ATTUNE_FINISH_*`) to `*out_finish`.
///
/// # Safety
/// `reply` is NULL or live; `out_finish` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_reply_finish_reason(reply: *const attune_reply, out_finish: *mut u32) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let (r, out) = unsafe { (handle(reply, "reply")?, Out::new(out_finish, "out_finish")?) };
        out.write(r.finish);
        Ok(())
    })
}

/// Writes the number of generated tokens (a final stop token included) to `*out_tokens`.
///
/// # Safety
/// `reply` is NULL or live; `out_tokens` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_reply_token_count(reply: *const attune_reply, out_tokens: *mut usize) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let (r, out) = unsafe { (handle(reply, "reply")?, Out::new(out_tokens, "out_tokens")?) };
        out.write(r.tokens);
        Ok(())
    })
}

/// Writes the reply as JSON to `*out_json` (NUL-terminated; borrowed: valid until
/// `attune_reply_free`): `{"text", "episode_id" (null when unrecorded or cancelled before the
/// first token), "finish" ("stop_token", "stop_string", "length", "context_full", "cancelled"),
/// "tokens", "timings": {"prefill_s", "first_token_s", "decode_s", "decode_steps",
/// "reused_tokens", "prefilled_tokens"}}`.
///
/// # Safety
/// `reply` is NULL or live; `out_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn attune_reply_json(reply: *const attune_reply, out_json: *mut *const c_char) -> attune_status {
    boundary::status(|| {
        // SAFETY: the caller's promises above.
        let (r, out) = unsafe { (handle(reply, "reply")?, Out::new(out_json, "out_json")?) };
        out.write(r.json.as_ptr().cast());
        Ok(())
    })
}

/// Frees a reply. `attune_reply_free(NULL)` does nothing. The episode stays in the session.
///
/// # Safety
/// `reply` is NULL or from a generate call and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn attune_reply_free(reply: *mut attune_reply) {
    boundary::infallible((), || {
        if !reply.is_null() {
            // SAFETY: from `Box::into_raw` in `generate`, freed once.
            drop(unsafe { Box::from_raw(reply) });
        }
    })
}

#[cfg(test)]
mod tests {
    use attune::tokenizer::Message;

    use super::*;

    #[test]
    fn prompts_parse_by_kind() {
        assert_eq!(parse_prompt(ATTUNE_PROMPT_TEXT, "hi").unwrap(), Prompt::Text("hi".into()));
        assert_eq!(parse_prompt(ATTUNE_PROMPT_USER, "hi").unwrap(), Prompt::Chat(vec![Message::user("hi")]));
        let chat = parse_prompt(ATTUNE_PROMPT_CHAT, r#"[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]"#).unwrap();
        assert_eq!(chat, Prompt::Chat(vec![Message::system("be brief"), Message::user("hi")]));
        assert_eq!(parse_prompt(ATTUNE_PROMPT_CHAT, "hi").unwrap_err().status, ATTUNE_STATUS_INVALID_JSON);
        assert_eq!(parse_prompt(3, "hi").unwrap_err().status, ATTUNE_STATUS_INVALID_ENUM);
    }
}
