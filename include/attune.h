/*
 * attune.h: the C API of Attune, an on-device LLM runtime that learns from the person using it.
 * Link libattune: shared (-lattune) or static (libattune.a -lgcc_s -lutil -lrt -lpthread -lm -ldl).
 *
 * Objects (opaque, typed handles; each freed by its own _free, and _free(NULL) does nothing):
 *   attune_runtime       one model, its adapter store and learning settings  attune_runtime_new
 *   attune_session       one user's adapter and learner                      attune_session_new
 *   attune_reply         a generated reply (text, episode id)                attune_session_generate
 *   attune_update_report what one update did (JSON)                          attune_session_update
 *   attune_bytes         an exported adapter                                 attune_session_export
 *
 * Errors: every fallible function returns attune_status (0 = ATTUNE_STATUS_OK). On failure,
 * attune_last_error_message() gives a message for the calling thread. Out-parameters are written
 * only on success (except *needed with ATTUNE_STATUS_BUFFER_TOO_SMALL). Status numbers are stable
 * and never reused. Pointer arguments must be non-NULL unless the function says "may be NULL";
 * NULL gives ATTUNE_STATUS_NULL_ARGUMENT. Strings in are NUL-terminated UTF-8 (else
 * ATTUNE_STATUS_INVALID_UTF8). Enumerations are uint32_t and checked (ATTUNE_STATUS_INVALID_ENUM).
 * A panic inside the library returns ATTUNE_STATUS_PANIC; nothing unwinds into the caller.
 *
 * Returned pointers are static (version and status names), borrowed (valid until the named _free)
 * or owned (free with the named _free); each function says which.
 *
 * Threads:
 *   - attune_runtime is shared by all threads: its functions may be called concurrently, and
 *     sessions of one runtime may be used on different threads at the same time.
 *   - attune_session is used by one thread at a time. This is enforced: a call while another call
 *     on the same session runs (another thread, or the session's own text callback) returns
 *     ATTUNE_STATUS_BUSY at once and does nothing. It never blocks and never races.
 *   - The one exception is attune_session_cancel: it may be called from any thread at any time,
 *     concurrently with any call on the same session (it is how another thread, e.g. a voice
 *     activity detector, stops a running generation), and never returns ATTUNE_STATUS_BUSY.
 *   - A user has at most one open session per runtime: attune_session_new for a user whose
 *     session is open returns ATTUNE_STATUS_BUSY until that session is freed.
 *   - attune_reply, attune_update_report and attune_bytes are immutable: read them from any thread.
 *   - The text callback runs on the thread that called attune_session_generate, before it returns;
 *     the reward callback on the thread of the feedback call that uses it, before it returns
 *     (with "update_mode": "background", for feedback given while an update runs: on the thread
 *     of the session call during which that update lands); the learning thread calls neither.
 *     The log callback may run on any thread, concurrently. Callbacks must not unwind (C++
 *     exceptions, longjmp) through the library.
 *   - The last error message is per thread.
 *
 * Lifetimes: attune_runtime_free closes the runtime. Its sessions stay valid objects, but every
 * later call on them returns ATTUNE_STATUS_RUNTIME_CLOSED, except attune_session_free (and
 * attune_session_user_id), which work as before. Memory is released when the runtime and all its
 * sessions are freed. Replies, reports and bytes stay valid after their session or runtime is freed.
 * Runtime and session handles are ids, never reused in the life of the process: a freed (stale) or
 * made-up handle returns ATTUNE_STATUS_INVALID_ARGUMENT and never reaches another user's session.
 * Every number passed in has a documented range (docs/c-api.md, "Ranges"), checked on entry.
 *
 * Configuration (attune_runtime_new) is a JSON object (else ATTUNE_STATUS_INVALID_JSON); every
 * field is optional except engine.model_dir, and unknown fields are errors (ATTUNE_STATUS_CONFIG):
 *   {
 *     "engine": {"model_dir": "models/tiny", "ort_library": "/path/libonnxruntime.so",
 *                "execution_providers": [{"name": "qnn", "backend_path": "libQnnHtp.so",
 *                                         "performance_mode": "burst"}, "nnapi", "cpu"],
 *                "strict_providers": false,
 *                "webgpu_library": null, "threads": 0, "max_context": 0},
 *     "store": {"dir": "/data/attune", "keep_versions": 5, "cache_bytes": 67108864,
 *               "encryption_key": null},
 *     "learner": {"algorithm": "reinforce", "lr": 0.002, "auto_update_after": 1,
 *                 "max_updates_per_minute": 30, "kl_budget": 0.1, "adapter": {"rank": 8}, ...},
 *     "generation": {"max_new_tokens": 128, "stop_strings": [], "stop_tokens": [], "reuse_kv": true,
 *                    "prefill_chunk": 64,
 *                    "sampling": {"temperature": 0.7, "top_k": 0, "top_p": 1.0, "min_p": 0.0,
 *                                 "repetition_penalty": 1.0, "seed": 0}},
 *     "probe_prompts": [], "probe_tokens": 64, "update_mode": "sync",
 *     "rewards": {"coherence": {"weight": 1, "nll": 1, "repetition": 4, "cutoff": 1, "ngram": 3},
 *                 "sentiment": {"weight": 1}, "callback": {"weight": 1}, "vader_dir": null,
 *                 "task": {"weight": 1, "checks": [{"use_word": "refund"}, {"valid_json": true}]}}
 *   }
 * model_dir, ort_library, store.dir: relative paths are relative to the working directory.
 * execution_providers: in order of preference; each a name or {"name": ..., options} (unknown
 *   option or bad value: ATTUNE_STATUS_CONFIG naming the provider and the key). ONNX Runtime's CPU
 *   provider always runs what the others leave, so "cpu" may only come last (its option: "arena").
 *   webgpu: "library", "power_preference" (high_performance | low_power), "backend" (vulkan |
 *     d3d12), "preferred_layout" (nchw | nhwc), "validation_mode" (disabled | wgpu_only | basic |
 *     full); the device options take effect when the process's first WebGPU session is created.
 *   qnn: "backend_path", "performance_mode" (default | burst | balanced | high_performance |
 *     high_power_saver | low_power_saver | low_balanced | power_saver | extreme_power_saver |
 *     sustained_high_performance), "htp_fp16_precision", "device_id".
 *   nnapi: "fp16", "nchw", "cpu_disabled", "cpu_only". coreml: "compute_units" (all |
 *     cpu_and_neural_engine | cpu_and_gpu | cpu_only), "model_format" (ml_program |
 *     neural_network), "model_cache_dir", "static_input_shapes". cuda: "device_id", "memory_limit".
 *   tensorrt: "device_id", "fp16". directml: "device_id", "performance_preference" (default |
 *     high_performance | minimum_power). xnnpack: "threads". Which ones registered, and on what
 *   device: attune_runtime_stats_json.
 * ort_library: without it, ORT_DYLIB_PATH is tried, then .ort/ of the Attune checkout the library
 *   was built in (`make setup` installs ONNX Runtime there), then lib/ next to the executable.
 * store.dir: without it adapters live in memory only (save/export/import return ATTUNE_STATUS_STORE).
 * store.encryption_key: 32 bytes as 64 hex digits or base64; every store file and export is then
 *   encrypted (XChaCha20-Poly1305). Another key than the store's: ATTUNE_STATUS_ENCRYPTION_KEY.
 * learner.auto_update_after: an update runs after this many rewards (0: only attune_session_update).
 * update_mode: "sync" (the default: the update runs inside the feedback call that makes it due, on
 *   the caller's thread) or "background" (it runs on the runtime's learning thread, one update per
 *   session at a time from a queue of 16: feedback returns at once with ATTUNE_FEEDBACK_QUEUED, the
 *   session generates with its previous adapter until the update lands between two calls, and
 *   attune_session_flush waits for it and returns its errors). Save, rollback, reset, import,
 *   export, forget and attune_session_free wait for a running update first.
 * generation: the defaults of every generate call; a call's options_json overrides fields of it.
 *   reuse_kv: a session keeps its conversation's KV cache between chat turns and prefills only the
 *   tokens after the prefix a new chat prompt shares with the previous turn (a full prefill after
 *   an edit of the history); the cache holds the base model's keys and values, which the adapter
 *   does not change. It takes one KV buffer per session (see "kv_cache" in the session stats).
 *   prefill_chunk: the prompt runs through the model in runs of at most this many tokens, so that
 *   attune_session_cancel during the prefill lands within one run (0: the whole prompt at once).
 * rewards: sources the library computes for every reply and adds to its first feedback, each
 *   z-scored under its name (see attune_session_feedback_json; none by default).
 */


#ifndef ATTUNE_H
#define ATTUNE_H

/* Generated by cbindgen 0.29.4 from ffi/src (make header). Do not edit by hand. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** The version as text, e.g. "0.1.0" (built from the numeric macros below). */
#define ATTUNE_VERSION_STRING \
    ATTUNE_STRINGIFY_(ATTUNE_VERSION_MAJOR) "." ATTUNE_STRINGIFY_(ATTUNE_VERSION_MINOR) "." \
    ATTUNE_STRINGIFY_(ATTUNE_VERSION_PATCH)
#define ATTUNE_STRINGIFY_(x) ATTUNE_STRINGIFY2_(x)
#define ATTUNE_STRINGIFY2_(x) #x


/**
 * The major version of this header (`ATTUNE_VERSION_MAJOR.MINOR.PATCH`); the same as the
 * library's Cargo version (checked when the library is built, and by the C tests).
 */
#define ATTUNE_VERSION_MAJOR 0

/**
 * The minor version of this header.
 */
#define ATTUNE_VERSION_MINOR 1

/**
 * The patch version of this header.
 */
#define ATTUNE_VERSION_PATCH 0

/**
 * `MAJOR * 10000 + MINOR * 100 + PATCH`; compare with `attune_version_number()` to detect a
 * header and library mismatch.
 */
#define ATTUNE_VERSION_NUMBER (((ATTUNE_VERSION_MAJOR * 10000) + (ATTUNE_VERSION_MINOR * 100)) + ATTUNE_VERSION_PATCH)

/**
 * The prompt is raw text, tokenised as is (no chat template).
 */
#define ATTUNE_PROMPT_TEXT 0

/**
 * The prompt is one user message, rendered with the model's chat template.
 */
#define ATTUNE_PROMPT_USER 1

/**
 * The prompt is a JSON array of chat messages, `[{"role": "system"|"user"|"assistant",
 * "content": "..."}, ...]`, rendered with the model's chat template.
 */
#define ATTUNE_PROMPT_CHAT 2

/**
 * Generation ended at an end-of-sequence or stop token.
 */
#define ATTUNE_FINISH_STOP_TOKEN 0

/**
 * Generation ended at a stop string (not part of the reply).
 */
#define ATTUNE_FINISH_STOP_STRING 1

/**
 * Generation ended after `max_new_tokens` tokens.
 */
#define ATTUNE_FINISH_LENGTH 2

/**
 * Generation ended because the context window is full.
 */
#define ATTUNE_FINISH_CONTEXT_FULL 3

/**
 * The text callback returned false (barge-in), or `attune_session_cancel` stopped the generation.
 */
#define ATTUNE_FINISH_CANCELLED 4

/**
 * The feedback was stored; it will be learned from at the next update.
 */
#define ATTUNE_FEEDBACK_QUEUED 0

/**
 * The feedback was accepted but will not be learned from: beyond `learner.max_same_sign_run` (off
 * by default), or a rating under the `supervised` algorithm without `learner.imitate_rated`. The
 * episode stays and takes later signals.
 */
#define ATTUNE_FEEDBACK_IGNORED 1

/**
 * The feedback completed a batch (`learner.auto_update_after`) and an update applied a step that
 * passed every safeguard; read its report with `attune_session_last_report`.
 */
#define ATTUNE_FEEDBACK_UPDATED 2

/**
 * The feedback completed a batch and an update ran but applied no step (no signal, importance
 * ratios too large, no step inside the trust region); the report says why. A rate-limited update
 * is `ATTUNE_FEEDBACK_QUEUED` instead: the rewards wait for the next update.
 */
#define ATTUNE_FEEDBACK_SKIPPED 3

/**
 * The feedback completed a batch and an update applied a step, but a safeguard (KL budget,
 * coherence, entropy, a non-finite value) undid it and halved the learning rate. Nothing was
 * lost: the rewards and corrections of that update went back to the queue and are retried by the
 * next update at the smaller step (the report's `returned_episodes`); a signal is dropped only
 * after 3 such tries (`dropped_signals`, counted in the user's stats).
 */
#define ATTUNE_FEEDBACK_ROLLED_BACK 4

/**
 * The update's step was applied and passed every safeguard.
 */
#define ATTUNE_UPDATE_ACCEPTED 0

/**
 * The step was applied, failed a safeguard (KL budget, drift) and was undone.
 */
#define ATTUNE_UPDATE_ROLLED_BACK 1

/**
 * No step was applied (rate limit, no signal, ...).
 */
#define ATTUNE_UPDATE_SKIPPED 2

/**
 * Logging off.
 */
#define ATTUNE_LOG_OFF 0

/**
 * Errors only.
 */
#define ATTUNE_LOG_ERROR 1

/**
 * Warnings and errors.
 */
#define ATTUNE_LOG_WARN 2

/**
 * Informational messages (model loaded, updates) and above.
 */
#define ATTUNE_LOG_INFO 3

/**
 * Debugging detail and above.
 */
#define ATTUNE_LOG_DEBUG 4

/**
 * Everything.
 */
#define ATTUNE_LOG_TRACE 5

/**
 * Bytes owned by the caller (an exported adapter). Read with `attune_bytes_data`, freed with
 * `attune_bytes_free`. Immutable: may be read from any thread.
 */
typedef struct attune_bytes attune_bytes;

/**
 * A finished reply: its text, episode id, finish reason and timings. Owned by the caller, freed
 * with `attune_reply_free`; immutable, so it may be read from any thread.
 */
typedef struct attune_reply attune_reply;

/**
 * A loaded model, its adapter store and learning settings. Shared by all threads: every
 * `attune_runtime_*` function may be called concurrently on the same runtime. Created by
 * `attune_runtime_new`, freed by `attune_runtime_free`. The handle's value is an id that is never
 * handed out again: a freed runtime's handle is refused with `ATTUNE_STATUS_INVALID_ARGUMENT`.
 */
typedef struct attune_runtime attune_runtime;

/**
 * One user's session: the user's adapter, pending episodes and learner. Used by one thread at a
 * time; a call made while another call on the same session is running (on another thread, or
 * from this session's own text callback) returns `ATTUNE_STATUS_BUSY` and does nothing.
 * Different sessions may be used on different threads at the same time. The one call that may
 * run concurrently with another call on the same session is `attune_session_cancel`. Created by
 * `attune_session_new`, freed by `attune_session_free`. The handle's value is an id that is never
 * handed out again: a freed session's handle is refused with `ATTUNE_STATUS_INVALID_ARGUMENT`.
 */
typedef struct attune_session attune_session;

/**
 * What one update did. Owned by the caller, freed with `attune_update_report_free`; immutable, so
 * it may be read from any thread.
 */
typedef struct attune_update_report attune_update_report;

/**
 * The result of every fallible call: `ATTUNE_STATUS_OK` (0) or one of the `ATTUNE_STATUS_*` codes.
 * Later versions may add codes; treat an unknown nonzero value as an error.
 */
typedef uint32_t attune_status;

/**
 * Receives each new piece of the reply as it is generated. `text` is `len` bytes of UTF-8
 * followed by a NUL, borrowed until the callback returns. Return true to go on, false to stop
 * generation now (barge-in: the caller started talking); the reply then ends with
 * `ATTUNE_FINISH_CANCELLED` and holds the text streamed so far.
 *
 * Called on the thread that called `attune_session_generate`, before that call returns. It must
 * not unwind (no C++ exception, no longjmp) through the library. Calls on the same session from
 * inside it return `ATTUNE_STATUS_BUSY`; other sessions and the runtime may be used.
 */
typedef bool (*attune_text_callback)(void *user_data, const char *text, size_t len);

/**
 * The host's reward for a reply: `user_data` as given to `attune_session_set_reward_callback`,
 * and the reply's text (`len` bytes of UTF-8 followed by a NUL, borrowed until the callback
 * returns). Returns the reward on any scale within [-1e6, 1e6] (it is z-scored as the score
 * "callback"); NaN, an infinity or a value outside that range makes the feedback call fail with
 * `ATTUNE_STATUS_INVALID_REWARD`, and nothing is learned from it.
 */
typedef double (*attune_reward_callback)(void *user_data, const char *text, size_t len);

/**
 * Receives one log record: `level` is `ATTUNE_LOG_ERROR` ..= `ATTUNE_LOG_TRACE`, `target` the
 * module that logged (e.g. "attune::engine"), `message` the text; both NUL-terminated and
 * borrowed until the callback returns.
 *
 * May be called on any thread that calls into the library and on ONNX Runtime's own threads,
 * possibly at the same time on several threads: it must be thread-safe. It must not unwind
 * through the library and must not call `attune_set_log_callback`; records logged by library
 * calls made from inside it are dropped.
 */
typedef void (*attune_log_callback)(void *user_data,
                                    uint32_t level,
                                    const char *target,
                                    const char *message);

/**
 * Success.
 */
#define ATTUNE_STATUS_OK 0

/**
 * A pointer argument that must not be NULL was NULL (the message names it).
 */
#define ATTUNE_STATUS_NULL_ARGUMENT 1

/**
 * A string argument is not valid UTF-8 (the message names it and the byte offset).
 */
#define ATTUNE_STATUS_INVALID_UTF8 2

/**
 * An enumeration argument (`uint32_t`) has a value outside its documented set.
 */
#define ATTUNE_STATUS_INVALID_ENUM 3

/**
 * The caller's buffer is too small; `*needed` holds the size needed (NUL included).
 */
#define ATTUNE_STATUS_BUFFER_TOO_SMALL 4

/**
 * A JSON argument is not valid JSON or does not have the documented shape (unknown field, wrong
 * type).
 */
#define ATTUNE_STATUS_INVALID_JSON 5

/**
 * The session is in use by another call (another thread, or this session's own callback), or
 * (from `attune_session_new`) the user already has an open session on this runtime. Nothing was
 * done; try again later.
 */
#define ATTUNE_STATUS_BUSY 6

/**
 * The session's runtime was freed with `attune_runtime_free`; only `attune_session_free` is
 * still useful.
 */
#define ATTUNE_STATUS_RUNTIME_CLOSED 7

/**
 * The thing asked for does not exist (for instance no update has run in this session yet).
 */
#define ATTUNE_STATUS_NOT_FOUND 8

/**
 * The operation is not possible in this process or build (for instance another `log` logger is
 * already installed, so the log callback cannot be).
 */
#define ATTUNE_STATUS_UNSUPPORTED 9

/**
 * A bug: the library panicked. The call had no effect that can be relied on; a session that
 * panicked answers `ATTUNE_STATUS_PANIC` from then on and should be freed.
 */
#define ATTUNE_STATUS_PANIC 10

/**
 * ONNX Runtime's shared library could not be found or loaded (the message names every path tried).
 */
#define ATTUNE_STATUS_ORT_LIBRARY 20

/**
 * ONNX Runtime returned an error (session creation, a run).
 */
#define ATTUNE_STATUS_ORT 21

/**
 * The model folder is unusable (a missing file, an unexpected graph).
 */
#define ATTUNE_STATUS_MODEL 22

/**
 * The tokenizer could not be loaded or failed to encode or decode.
 */
#define ATTUNE_STATUS_TOKENIZER 23

/**
 * The chat template failed to parse or render.
 */
#define ATTUNE_STATUS_TEMPLATE 24

/**
 * A configuration value is invalid (an unknown field or provider, an out-of-range value).
 */
#define ATTUNE_STATUS_CONFIG 25

/**
 * An argument is invalid (an empty prompt or user id, a bad generation setting, rollback of 0
 * steps, ...).
 */
#define ATTUNE_STATUS_INVALID_ARGUMENT 26

/**
 * The prompt plus one new token does not fit the context window.
 */
#define ATTUNE_STATUS_CONTEXT_OVERFLOW 27

/**
 * A required execution provider failed to register (`strict_providers`).
 */
#define ATTUNE_STATUS_EXECUTION_PROVIDER 28

/**
 * Feedback named an episode id that does not exist or has expired.
 */
#define ATTUNE_STATUS_UNKNOWN_EPISODE 29

/**
 * A reward was not finite or out of range (NaN, inf, 0 stars, an outcome outside [-1, 1]); it was
 * not recorded.
 */
#define ATTUNE_STATUS_INVALID_REWARD 30

/**
 * A learning step could not run.
 */
#define ATTUNE_STATUS_LEARNING 31

/**
 * The adapter store failed, or none is configured (`store.dir`).
 */
#define ATTUNE_STATUS_STORE 32

/**
 * An adapter file or imported bytes are corrupt, truncated, or for another model.
 */
#define ATTUNE_STATUS_CORRUPT_ADAPTER 33

/**
 * A file-system operation failed.
 */
#define ATTUNE_STATUS_IO 34

/**
 * The GPU compute path failed.
 */
#define ATTUNE_STATUS_GPU 35

/**
 * The store or imported bytes were encrypted with another key than `store.encryption_key` (the
 * message says "wrong encryption key"), or are encrypted and no key is configured.
 */
#define ATTUNE_STATUS_ENCRYPTION_KEY 36

/**
 * The session's user was forgotten (`attune_runtime_forget_user` or `attune_session_forget`)
 * while the session was open: it goes on in memory but never writes to the store again. Free it;
 * a session opened afterwards works normally.
 */
#define ATTUNE_STATUS_USER_FORGOTTEN 37

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The library's version number at run time (`MAJOR * 10000 + MINOR * 100 + PATCH`, the same
 * formula as `ATTUNE_VERSION_NUMBER`).
 */
uint32_t attune_version_number(void);

/**
 * The library's version as text, e.g. "0.1.0" (static: never freed).
 */
const char *attune_version_string(void);

/**
 * Copies the message of this thread's most recent failed call (NUL-terminated; "" when no call
 * on this thread has failed) into `buf` (`len` bytes). Calls that succeed leave the message
 * unchanged; messages are per thread, so another thread's failure never overwrites it.
 *
 * When `len` is too small, returns `ATTUNE_STATUS_BUFFER_TOO_SMALL`, leaves `buf` untouched and
 * writes the size needed (NUL included) to `*needed`; on success `*needed` is the size written.
 * `needed` may be NULL; `buf` may be NULL when `len` is 0 (a size query). This function never
 * changes the message itself.
 *
 * # Safety
 * `buf` is NULL or writable for `len` bytes; `needed` is NULL or writable.
 */
attune_status attune_last_error_message(char *buf, size_t len, size_t *needed);

/**
 * Generates a reply with the session's adapter and records it as an episode that feedback can
 * refer to (`attune_reply_episode_id`).
 *
 * `prompt_kind` is one of `ATTUNE_PROMPT_TEXT`, `ATTUNE_PROMPT_USER` or `ATTUNE_PROMPT_CHAT` and
 * says how `prompt` is read. `options_json` (may be NULL) overrides fields of the runtime's
 * `generation` settings, e.g. `{"max_new_tokens": 64, "sampling": {"temperature": 0.7, "seed": 1},
 * "stop_strings": ["\nUser:"]}`. `on_text` (may be NULL) receives the text as it is generated and
 * can stop it; `user_data` is passed to it unchanged.
 *
 * On success `*out_reply` is an owned reply: free it with `attune_reply_free`. Statuses:
 * `INVALID_ENUM`, `INVALID_UTF8`, `INVALID_JSON`, `INVALID_ARGUMENT` (empty prompt, bad setting),
 * `CONTEXT_OVERFLOW`, `BUSY`, `RUNTIME_CLOSED` (also when the runtime is freed during the call),
 * `IO` (a recorded reply's episode id could not be durably reserved in the store, once every 64
 * replies: nothing was generated and no id issued; try again once the store is writable).
 *
 * # Safety
 * `session` is NULL or a live session; `prompt` and `options_json` are NULL or NUL-terminated;
 * `on_text` is NULL or a function that is safe to call with `user_data`; `out_reply` is NULL or
 * writable.
 */
attune_status attune_session_generate(attune_session *session,
                                      uint32_t prompt_kind,
                                      const char *prompt,
                                      const char *options_json,
                                      attune_text_callback on_text,
                                      void *user_data,
                                      attune_reply **out_reply);

/**
 * Like `attune_session_generate`, but records no episode (for evaluation or previews): the
 * adapter still applies, and the reply has no episode id (`attune_reply_episode_id` returns
 * `ATTUNE_STATUS_NOT_FOUND`).
 *
 * # Safety
 * As for `attune_session_generate`.
 */
attune_status attune_session_generate_unrecorded(attune_session *session,
                                                 uint32_t prompt_kind,
                                                 const char *prompt,
                                                 const char *options_json,
                                                 attune_text_callback on_text,
                                                 void *user_data,
                                                 attune_reply **out_reply);

/**
 * Writes the reply's text to `*out_text` (UTF-8, NUL-terminated; borrowed: valid until
 * `attune_reply_free`) and its length in bytes to `*out_len` (may be NULL).
 *
 * # Safety
 * `reply` is NULL or live; `out_text` is NULL or writable; `out_len` is NULL or writable.
 */
attune_status attune_reply_text(const attune_reply *reply, const char **out_text, size_t *out_len);

/**
 * Writes the reply's episode id (the id to give feedback for) to `*out_episode_id`.
 * `ATTUNE_STATUS_NOT_FOUND` for a reply from `attune_session_generate_unrecorded`, and for one
 * cancelled before its first token (nothing was said, so no episode was recorded).
 *
 * # Safety
 * `reply` is NULL or live; `out_episode_id` is NULL or writable.
 */
attune_status attune_reply_episode_id(const attune_reply *reply, uint64_t *out_episode_id);

/**
 * Writes why generation ended (`ATTUNE_FINISH_*`) to `*out_finish`.
 *
 * # Safety
 * `reply` is NULL or live; `out_finish` is NULL or writable.
 */
attune_status attune_reply_finish_reason(const attune_reply *reply, uint32_t *out_finish);

/**
 * Writes the number of generated tokens (a final stop token included) to `*out_tokens`.
 *
 * # Safety
 * `reply` is NULL or live; `out_tokens` is NULL or writable.
 */
attune_status attune_reply_token_count(const attune_reply *reply, size_t *out_tokens);

/**
 * Writes the reply as JSON to `*out_json` (NUL-terminated; borrowed: valid until
 * `attune_reply_free`): `{"text", "episode_id" (null when unrecorded or cancelled before the
 * first token), "finish" ("stop_token", "stop_string", "length", "context_full", "cancelled"),
 * "tokens", "timings": {"prefill_s", "first_token_s", "decode_s", "decode_steps",
 * "reused_tokens", "prefilled_tokens"}}`.
 *
 * # Safety
 * `reply` is NULL or live; `out_json` is NULL or writable.
 */
attune_status attune_reply_json(const attune_reply *reply, const char **out_json);

/**
 * Frees a reply. `attune_reply_free(NULL)` does nothing. The episode stays in the session.
 *
 * # Safety
 * `reply` is NULL or from a generate call and not yet freed.
 */
void attune_reply_free(attune_reply *reply);

/**
 * Gives episode `episode_id` an outcome reward in [-1, 1] (call resolved = 1, caller hung up
 * angry = -1, ...). `*out_outcome` (may be NULL) receives `ATTUNE_FEEDBACK_*`. With
 * `"update_mode": "background"` it returns at once with `ATTUNE_FEEDBACK_QUEUED`: the update it
 * makes due runs on the runtime's learning thread, the session generates with the adapter it had
 * until the update lands (between two calls), and `attune_session_flush` waits for it and
 * returns its errors.
 * Several signals may be given for one reply (an immediate thumbs, a later call outcome and
 * survey): a signal that arrives before the reply's pending reward was learned is added to it;
 * one that arrives after the reply was learned from is learned on its own, through the importance
 * ratio to the adapter that sampled the reply. Episodes stay for later signals until
 * `learner.episode_ttl_s` (48 h by default) or until `learner.episode_capacity` newer ones exist,
 * also across `attune_session_rollback`, `_reset`, `_import` and a restart (they are saved in the
 * store with the user's state).
 * Statuses: `INVALID_REWARD` (NaN, inf or outside [-1, 1]; nothing recorded), `UNKNOWN_EPISODE`
 * (never issued, expired, evicted, or issued before the user was forgotten; the message says
 * which), `INVALID_ARGUMENT` (the episode is a demonstration), and the update's errors when this
 * feedback triggers one.
 *
 * # Safety
 * `session` is NULL or a live session; `out_outcome` is NULL or writable.
 */
attune_status attune_session_feedback(attune_session *session,
                                      uint64_t episode_id,
                                      double reward,
                                      uint32_t *out_outcome);

/**
 * Gives a thumbs up (`up` true, +1) or down (-1). Otherwise as `attune_session_feedback`.
 *
 * # Safety
 * As for `attune_session_feedback`.
 */
attune_status attune_session_feedback_thumbs(attune_session *session,
                                             uint64_t episode_id,
                                             bool up,
                                             uint32_t *out_outcome);

/**
 * Gives a star rating 1 ..= 5 (mapped onto [-1, 1]); others are `INVALID_REWARD`. Otherwise as
 * `attune_session_feedback`.
 *
 * # Safety
 * As for `attune_session_feedback`.
 */
attune_status attune_session_feedback_stars(attune_session *session,
                                            uint64_t episode_id,
                                            uint32_t stars,
                                            uint32_t *out_outcome);

/**
 * Gives a model or classifier score on any scale (a satisfaction score, a sentiment value);
 * each `source` keeps its own running statistics that z-score it. `value` must be in
 * [-1e6, 1e6], else `INVALID_REWARD`.
 * Otherwise as `attune_session_feedback`.
 *
 * # Safety
 * As for `attune_session_feedback`; `source` is NULL or NUL-terminated.
 */
attune_status attune_session_feedback_score(attune_session *session,
                                            uint64_t episode_id,
                                            const char *source,
                                            double value,
                                            uint32_t *out_outcome);

/**
 * Gives named signals as JSON: one object or an array of them, each with exactly one signal and
 * an optional `"weight"` (default 1, in [-100, 100]); the weighted signals are summed. Signals: `{"thumbs":
 * true}`, `{"stars": 4}`, `{"outcome": -0.5}` (in [-1, 1]), `{"rule": 0.2}` (in [-1, 1]),
 * `{"score": {"source": "csat", "value": 72}}`, and the sources the library computes from the
 * reply: `{"coherence": {}}` (optionally the formula's weights `"nll"`, `"repetition"`,
 * `"cutoff"`, `"ngram"`), `{"sentiment": "reply"}` or `{"sentiment": {"text": "the caller's next
 * message"}}` (VADER), `{"task": [{"use_word": "refund"}, {"numeric": {"value": 42}}, ...]}`
 * (host-defined checks, see docs/learning.md) and `{"callback": true}` (the session's reward
 * callback, `attune_session_set_reward_callback`). Computed sources are z-scored per name. The
 * runtime's `rewards` configuration adds its sources to a reply's first feedback; `[]` asks for
 * those alone. Example: `[{"outcome": 1, "weight": 0.7}, {"stars": 5, "weight": 0.3}]`. Statuses
 * as `attune_session_feedback`, plus `INVALID_JSON` (unknown keys are named), `INVALID_REWARD`
 * (a weight outside [-100, 100], a score outside [-1e6, 1e6], a computed value or the
 * callback's result that is not finite or out of range; nothing is learned),
 * `INVALID_ARGUMENT` (a callback reward without a callback) and `CONFIG` (VADER's lexicon is
 * missing: run `make setup`).
 *
 * # Safety
 * As for `attune_session_feedback`; `reward_json` is NULL or NUL-terminated.
 */
attune_status attune_session_feedback_json(attune_session *session,
                                           uint64_t episode_id,
                                           const char *reward_json,
                                           uint32_t *out_outcome);

/**
 * Sets the session's reward callback, used by `{"callback": true}` rewards and by the runtime's
 * `rewards.callback` configuration; NULL removes it. The callback runs on the thread that calls a
 * feedback function, before that call returns; inside it, calls on the same session return
 * `ATTUNE_STATUS_BUSY`. It must not unwind (no C++ exception, no `longjmp`). `user_data` is passed
 * through unchanged and must stay valid until the callback is replaced or the session is freed.
 *
 * # Safety
 * `session` is NULL or a live session; `callback` is NULL or a function of this signature that is
 * safe to call with `user_data`.
 */
attune_status attune_session_set_reward_callback(attune_session *session,
                                                 attune_reward_callback callback,
                                                 void *user_data);

/**
 * "The user wanted this instead of episode `episode_id`'s reply": `corrected_reply` (UTF-8,
 * NUL-terminated, not blank) and the reply it replaces are teacher-forced through the model after
 * that reply's prompt and learned as a pair: a DPO-style loss with the base model as the
 * reference, plus likelihood on the tokens the user changed (`learner.pair_*`). The correction is
 * learned at the next update, which it may trigger like feedback, and kept (at most
 * `learner.pair_capacity`, saved with the pending episodes) for later updates to replay
 * (`learner.pair_replay`, off by default).
 * Works for any sampled reply the session still holds: before or after its reward was learned,
 * and after a restart; the reply keeps taking its own feedback. `*out_outcome` (may be NULL)
 * receives `ATTUNE_FEEDBACK_*` as for `attune_session_feedback` (in background mode it waits for
 * a running update to land and returns `ATTUNE_FEEDBACK_QUEUED`).
 * Statuses: `UNKNOWN_EPISODE` (never issued, expired, evicted, forgotten; the message says
 * which), `INVALID_ARGUMENT` (NULL, invalid UTF-8 or blank `corrected_reply`, one equal to the
 * reply, or an episode that is a demonstration or correction), `CONTEXT_OVERFLOW` (the prompt and
 * the correction do not fit the context), `IO` (its episode id could not be durably reserved),
 * and the update's errors when it triggers one.
 *
 * # Safety
 * `session` is NULL or a live session; `corrected_reply` is NULL or NUL-terminated;
 * `out_outcome` is NULL or writable.
 */
attune_status attune_session_correct(attune_session *session,
                                     uint64_t episode_id,
                                     const char *corrected_reply,
                                     uint32_t *out_outcome);

/**
 * Teaches the reply the user wanted for a prompt when there is no reply of the model's to
 * replace (to correct a reply, use `attune_session_correct`): `reply` is teacher-forced
 * through the model and learned as a demonstration at the next update. `prompt_kind` and
 * `prompt` as for `attune_session_generate`. Writes the demonstration's episode id to
 * `*out_episode_id` (may be NULL); it takes no feedback. `IO` when its episode id could not be
 * durably reserved (as for `attune_session_generate`).
 *
 * # Safety
 * `session` is NULL or a live session; `prompt` and `reply` are NULL or NUL-terminated;
 * `out_episode_id` is NULL or writable.
 */
attune_status attune_session_demonstrate(attune_session *session,
                                         uint32_t prompt_kind,
                                         const char *prompt,
                                         const char *reply,
                                         uint64_t *out_episode_id);

/**
 * Runs an update now on the episodes that have feedback (and demonstrations). Writes the report
 * to `*out_report` (owned: free with `attune_update_report_free`). With no reward or
 * demonstration waiting it returns `ATTUNE_STATUS_LEARNING` and writes nothing; an update that
 * ran but applied no step (rate limited, no signal, ratios too large) is `ATTUNE_STATUS_OK` with
 * outcome `ATTUNE_UPDATE_SKIPPED`.
 *
 * # Safety
 * `session` is NULL or a live session; `out_report` is NULL or writable.
 */
attune_status attune_session_update(attune_session *session, attune_update_report **out_report);

/**
 * Writes a copy of the report of the most recent update in this session (run by
 * `attune_session_update`, by feedback, `ATTUNE_FEEDBACK_UPDATED`, or on the learning thread in
 * `"update_mode": "background"`, see `attune_session_flush`) to `*out_report` (owned:
 * free with `attune_update_report_free`). `ATTUNE_STATUS_NOT_FOUND` when none ran since the
 * session was opened, rolled back, reset, forgotten or imported into (the report
 * described an adapter that is no longer the live one).
 *
 * # Safety
 * `session` is NULL or a live session; `out_report` is NULL or writable.
 */
attune_status attune_session_last_report(attune_session *session,
                                         attune_update_report **out_report);

/**
 * Waits until no update of this session is queued or running on the runtime's learning thread
 * (`"update_mode": "background"`; also the updates that the feedback given meanwhile makes due),
 * so that `attune_session_last_report` has the newest report. Returns the first error since the
 * last flush of a background update (`LEARNING`, ...) or of feedback given while an update ran
 * (`UNKNOWN_EPISODE`, `INVALID_REWARD`, ...: that feedback was not learned); the other feedback
 * and updates are not affected. In `"sync"` mode it returns `ATTUNE_STATUS_OK` at once.
 *
 * # Safety
 * `session` is NULL or a live session.
 */
attune_status attune_session_flush(attune_session *session);

/**
 * Writes the update's outcome (`ATTUNE_UPDATE_*`) to `*out_outcome`.
 *
 * # Safety
 * `report` is NULL or live; `out_outcome` is NULL or writable.
 */
attune_status attune_update_report_outcome(const attune_update_report *report,
                                           uint32_t *out_outcome);

/**
 * Writes the report as JSON to `*out_json` (NUL-terminated; borrowed: valid until
 * `attune_update_report_free`): `{"algorithm", "outcome" ("accepted", {"rolled_back": reason},
 * {"skipped": reason}), "episodes", "tokens", "loss": {...}, "mean_kl", "probe": {...} or null,
 * "grad_norm", "beta", "lr", "elapsed_s", "rewards": [{"episode_id", "source", "raw", "value",
 * "weight", "contribution"}, ...], ...}`; `rewards` lists each reward source of the feedback the
 * update learned from (`value` is a score's z-score, `contribution = weight * value`).
 *
 * # Safety
 * `report` is NULL or live; `out_json` is NULL or writable.
 */
attune_status attune_update_report_json(const attune_update_report *report, const char **out_json);

/**
 * Frees a report. `attune_update_report_free(NULL)` does nothing.
 *
 * # Safety
 * `report` is NULL or from `attune_session_update` / `attune_session_last_report`, not yet freed.
 */
void attune_update_report_free(attune_update_report *report);

/**
 * Sets (or, with `callback` NULL, removes) the process-wide log callback and the most detailed
 * level passed to it (`max_level`, `ATTUNE_LOG_OFF` ..= `ATTUNE_LOG_TRACE`). `user_data` is
 * passed to every call unchanged. When this returns, the previous callback is no longer running
 * and will not be called again, so its `user_data` may be freed.
 *
 * The first call installs the library's logger for the `log` crate; if the process already has
 * another one (a Rust host that installed its own), it returns `ATTUNE_STATUS_UNSUPPORTED` and
 * the records go to that logger. Statuses: `INVALID_ENUM` (max_level > 5), `UNSUPPORTED`.
 *
 * # Safety
 * `callback` is NULL or a function that may be called as described at `attune_log_callback`
 * with `user_data`, until this function is called again.
 */
attune_status attune_set_log_callback(attune_log_callback callback,
                                      void *user_data,
                                      uint32_t max_level);

/**
 * Creates a runtime from a JSON configuration: loads ONNX Runtime (once per process), the model
 * and the adapter store. See "Configuration" at the top of this header for the fields.
 *
 * ONNX Runtime is loaded by the first runtime of the process; later runtimes share it (their
 * `ort_library` is not used). Runtimes may be created concurrently and any number may coexist.
 *
 * On success `*out_runtime` is an owned runtime: free it with `attune_runtime_free`.
 * Statuses: `INVALID_JSON` (not JSON), `CONFIG` (unknown field, bad value, a malformed
 * `store.encryption_key`), `ORT_LIBRARY`, `MODEL`, `TOKENIZER`, `EXECUTION_PROVIDER`, `STORE`,
 * `IO`, `ENCRYPTION_KEY` (the store was encrypted under another key, or a key is missing), ...
 *
 * # Safety
 * `config_json` is NULL or a NUL-terminated string; `out_runtime` is NULL or writable.
 */
attune_status attune_runtime_new(const char *config_json, attune_runtime **out_runtime);

/**
 * Frees a runtime handle and closes the runtime. Sessions opened from it stay valid objects but
 * every later call on them returns `ATTUNE_STATUS_RUNTIME_CLOSED` (free them with
 * `attune_session_free`); a generation running on another thread stops at its next piece of text
 * and returns `ATTUNE_STATUS_RUNTIME_CLOSED`. The model's memory is released when the runtime
 * and all its sessions are freed. `attune_runtime_free(NULL)` does nothing, and so does freeing
 * a handle that was freed already (or was never a runtime): handles are ids, never reused.
 *
 * # Safety
 * None beyond the C signature: the handle is looked up, never dereferenced. After this call the
 * handle is refused (`ATTUNE_STATUS_INVALID_ARGUMENT`) by every function.
 */
void attune_runtime_free(attune_runtime *runtime);

/**
 * Writes the number of tokens one generation can hold (prompt plus reply: the KV-cache capacity,
 * `engine.max_context` or the model's context) to `*out_tokens`.
 *
 * # Safety
 * `runtime` is NULL or a live runtime; `out_tokens` is NULL or writable.
 */
attune_status attune_runtime_context_tokens(const attune_runtime *runtime, size_t *out_tokens);

/**
 * Copies what the runtime runs on as a JSON object (NUL-terminated) into `buf` (`len` bytes):
 * `{"provider": the highest-priority active execution provider ("webgpu", "qnn", ..., "cpu"),
 * "compute_device": what it computes on ("cpu", "gpu", "npu", "accelerator"), "providers": [{"name",
 * "compute_device", "devices": [{"type", "vendor", "id"}] (as ONNX Runtime lists them; may be
 * empty), "options": {...} (those configured)}, ...] (every active provider in priority order, the
 * CPU provider last), "failed_providers": [{"name", "reason"}] (configured but not registered,
 * without `strict_providers`), "context_tokens", "kv_cache_in_place", "adapter_compute": {"device",
 * "allow_software"} (the `compute` configuration), "model_profile": the model folder's converter
 * profile ("fast", "exact", "custom"; null when its attune_model.json records none)}`. When `len` is too small, returns
 * `ATTUNE_STATUS_BUFFER_TOO_SMALL`, leaves `buf` untouched and writes the size needed (NUL
 * included) to `*needed`. `needed` may be NULL; `buf` may be NULL when `len` is 0.
 *
 * # Safety
 * `runtime` is NULL or a live runtime; `buf` is NULL or writable for `len` bytes; `needed` is NULL
 * or writable.
 */
attune_status attune_runtime_stats_json(const attune_runtime *runtime,
                                        char *buf,
                                        size_t len,
                                        size_t *needed);

/**
 * Deletes everything the store holds for `user_id` (forget-me: every saved version of the adapter
 * and the pending episodes), without opening a session. Final: a session of that user that is
 * open goes on in memory, but it never writes to the store again (its save, rollback, reset,
 * export and import return `ATTUNE_STATUS_USER_FORGOTTEN`), so it cannot bring the data back; a
 * session opened after it is freed works normally. `*out_existed` (may be NULL) tells whether
 * anything was saved. Without a store nothing is deleted and `*out_existed` is false.
 *
 * # Safety
 * `runtime` is NULL or a live runtime; `user_id` is NULL or a NUL-terminated string;
 * `out_existed` is NULL or writable.
 */
attune_status attune_runtime_forget_user(const attune_runtime *runtime,
                                         const char *user_id,
                                         bool *out_existed);

/**
 * Opens `user_id`'s session on `runtime`: loads the newest valid saved adapter of that user, or
 * creates a fresh one. The first session of a runtime also measures the base model's probe
 * replies (a few short generations).
 *
 * One open session per user and runtime: while a session of `user_id` is open on `runtime`,
 * this returns `ATTUNE_STATUS_BUSY` ("user ... already has an open session on this runtime")
 * and opens nothing; `attune_session_free` of that session releases the user. (Two sessions of
 * one user would each learn on their own copy of the adapter, and the last save would drop the
 * other's learning.)
 *
 * On success `*out_session` is an owned session: free it with `attune_session_free`.
 * Statuses: `BUSY` (the user has an open session), `INVALID_ARGUMENT` (empty user id), `STORE`,
 * `CORRUPT_ADAPTER`, `IO`, ...
 *
 * # Safety
 * `runtime` is NULL or a live runtime; `user_id` is NULL or a NUL-terminated string;
 * `out_session` is NULL or writable.
 */
attune_status attune_session_new(const attune_runtime *runtime,
                                 const char *user_id,
                                 attune_session **out_session);

/**
 * Frees a session. Unsaved adapter changes are lost (call `attune_session_save` first); pending
 * episodes are already in the store (with a store configured), so feedback for them can still be
 * given after the user's next `attune_session_new`, also in a new process. Returns
 * `ATTUNE_STATUS_BUSY` and frees nothing while another call on the session is running (including
 * from inside its own text callback); a pointer that is not a live session (freed already) is
 * `ATTUNE_STATUS_INVALID_ARGUMENT`; `attune_session_free(NULL)` returns `ATTUNE_STATUS_OK`.
 * Works after the runtime was freed. Freeing releases the user: `attune_session_new` for them
 * works again.
 *
 * # Safety
 * `session` is NULL or a session from `attune_session_new` not yet freed; after
 * `ATTUNE_STATUS_OK` it must not be used again.
 */
attune_status attune_session_free(attune_session *session);

/**
 * Stops the generation running on `session` (`attune_session_generate` or `_unrecorded` on
 * another thread): it returns `ATTUNE_STATUS_OK` with a reply that ends `ATTUNE_FINISH_CANCELLED`
 * after at most the prefill chunk in flight (`generation.prefill_chunk` prompt tokens) or the
 * decode step in flight (one token). The reply and its episode hold the tokens drawn before the
 * cancel; one cancelled during the prefill has no tokens and no episode
 * (`attune_reply_episode_id` returns `ATTUNE_STATUS_NOT_FOUND`).
 *
 * This is the one call allowed on a session while another call on it runs: it may be called
 * from any thread at any time, also from the session's own text callback, and never returns
 * `ATTUNE_STATUS_BUSY`. When no generation runs it does nothing: a cancel never stops a later
 * generation. `*out_cancelled` (may be NULL) receives whether a generation was running and is
 * now stopping. Works after the runtime was freed.
 *
 * # Safety
 * `session` is NULL or a session from `attune_session_new` (a freed one is
 * `ATTUNE_STATUS_INVALID_ARGUMENT`); `out_cancelled` is NULL or writable.
 */
attune_status attune_session_cancel(const attune_session *session, bool *out_cancelled);

/**
 * Writes the session's user id to `*out_user_id` (NUL-terminated; borrowed: valid until
 * `attune_session_free`). Does not take the session's lock, so it never returns `BUSY`.
 *
 * # Safety
 * `session` is NULL or a live session; `out_user_id` is NULL or writable.
 */
attune_status attune_session_user_id(const attune_session *session, const char **out_user_id);

/**
 * Saves the adapter as a new version in the store and writes its version number to
 * `*out_version` (may be NULL). Statuses: `STORE` (no store configured, or it failed), `IO` (a
 * full disk, a read-only store: the previous version stays as it was and the session keeps
 * working in memory, so the save may be tried again), `USER_FORGOTTEN` (the user was forgotten
 * while the session was open).
 *
 * # Safety
 * `session` is NULL or a live session; `out_version` is NULL or writable.
 */
attune_status attune_session_save(attune_session *session, uint64_t *out_version);

/**
 * Goes back `steps_back` (>= 1) saved versions and loads that adapter; the versions in between
 * stay in the history, so a rollback can itself be undone. Pending episodes and episode ids are
 * kept: feedback for a reply generated before the rollback is learned through the importance ratio
 * to the adapter that sampled it.
 * Statuses: `INVALID_ARGUMENT` (0 steps), `STORE` (not that many versions, or no store).
 *
 * # Safety
 * `session` is NULL or a live session.
 */
attune_status attune_session_rollback(attune_session *session, uint32_t steps_back);

/**
 * Starts the user over with a fresh adapter. Saved versions stay recoverable with
 * `attune_session_rollback(session, 1)`. Pending episodes and episode ids stay: feedback for a
 * reply generated before the reset trains the fresh adapter through the importance ratio.
 *
 * # Safety
 * `session` is NULL or a live session.
 */
attune_status attune_session_reset(attune_session *session);

/**
 * Deletes every saved version of this user's adapter and starts over with a fresh one
 * (forget-me), and drops the pending episodes: feedback for their ids is `UNKNOWN_EPISODE` from
 * now on, and this session never issues those ids again. Without a store only the in-memory
 * adapter is reset. Final: the session goes on in memory, but it never writes to the store
 * again (save, rollback, reset, export and import return `ATTUNE_STATUS_USER_FORGOTTEN`); free
 * it, and a session opened afterwards works normally.
 *
 * # Safety
 * `session` is NULL or a live session.
 */
attune_status attune_session_forget(attune_session *session);

/**
 * Writes the session's adapter as a self-contained file image (for backup or moving to a new
 * device) to `*out_bytes`: owned, free with `attune_bytes_free`. Saves no version and writes
 * nothing to the store (unsaved changes are in the bytes; call `attune_session_save` to keep them
 * in the store too). With `store.encryption_key` the image is encrypted under that key, so only a
 * store with the same key can import it. Statuses: `STORE` (no store configured: the image carries
 * the store's model fingerprint), `USER_FORGOTTEN`.
 *
 * # Safety
 * `session` is NULL or a live session; `out_bytes` is NULL or writable.
 */
attune_status attune_session_export(attune_session *session, attune_bytes **out_bytes);

/**
 * Replaces this user's adapter with exported bytes (`data`, `len`). The bytes are validated
 * before anything is written: corrupt, truncated or other-model bytes return
 * `ATTUNE_STATUS_CORRUPT_ADAPTER` (or `STORE`), bytes encrypted under another key than this
 * store's (or encrypted, with no key configured) `ATTUNE_STATUS_ENCRYPTION_KEY`, and change
 * nothing. Pending episodes stay, and the episode-id counter keeps the higher of the session's
 * and the imported one's.
 *
 * # Safety
 * `session` is NULL or a live session; `data` is NULL or readable for `len` bytes.
 */
attune_status attune_session_import(attune_session *session, const uint8_t *data, size_t len);

/**
 * Writes the bytes' address and length to `*out_data` and `*out_len` (borrowed: valid until
 * `attune_bytes_free`).
 *
 * # Safety
 * `bytes` is NULL or live; `out_data` and `out_len` are NULL or writable.
 */
attune_status attune_bytes_data(const attune_bytes *bytes,
                                const uint8_t **out_data,
                                size_t *out_len);

/**
 * Frees bytes from `attune_session_export`. `attune_bytes_free(NULL)` does nothing.
 *
 * # Safety
 * `bytes` is NULL or from `attune_session_export` and not yet freed.
 */
void attune_bytes_free(attune_bytes *bytes);

/**
 * Copies the session's statistics as a JSON object (NUL-terminated) into `buf` (`len` bytes):
 * `{"user", "pending_episodes", "counters": {"episodes", "feedback", "updates", "accepted",
 * "rolled_back", "skipped", "version", ...}, "rewards": {"count", "sum", "positive", "negative",
 * "recent"}, "beta", "lr", "last_update", "probe": {"kl", "nll", "base_nll", "entropy",
 * "base_entropy", "cross_entropy", "tokens"} (the current adapter on the probe replies, or null),
 * "adapter_finite", "pending_episodes_bytes", "kv_cache": {"tokens", "bytes"} (the conversation's
 * KV cache kept between chat turns), "next_episode_id", "restored_episodes"}`. When `len` is too
 * small, returns
 * `ATTUNE_STATUS_BUFFER_TOO_SMALL`, leaves `buf` untouched and writes the size needed (NUL
 * included) to `*needed`. `needed` may be NULL; `buf` may be NULL when `len` is 0.
 *
 * # Safety
 * `session` is NULL or a live session; `buf` is NULL or writable for `len` bytes; `needed` is
 * NULL or writable.
 */
attune_status attune_session_stats_json(attune_session *session,
                                        char *buf,
                                        size_t len,
                                        size_t *needed);

/**
 * The name of a status code (`"ATTUNE_STATUS_BUSY"`), or `"ATTUNE_STATUS_UNKNOWN"` for a number
 * this version does not know.
 *
 * Returns a static string: never freed, valid for the life of the process.
 */
const char *attune_status_name(attune_status status);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* ATTUNE_H */
