//! Cancelling a generation from another thread, and the chunked prefill that lets a cancel land
//! during a long prompt: a cancel stops the prefill within one chunk and the decode within one
//! token (counted from the handle's progress after the cancel returned), the episode holds what was
//! said, a cancel while nothing runs stops nothing, and a prompt prefilled in chunks gives the
//! same tokens, hidden states and distributions as one prefill. Fast tier on the tiny model; a
//! long prompt on the real model in the slow tier.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use attune::engine::EngineConfig;
use attune::generate::{CancelHandle, FinishReason, GenerateOptions, Generation, KvCache, Model, Progress, Prompt, SamplingConfig};
use attune::runtime::{Runtime, RuntimeConfig, NO_EPISODE};
use attune::tokenizer::Message;
use attune::Error;

fn config(dir: PathBuf) -> EngineConfig {
    EngineConfig { max_context: 2048, ..common::cpu_config(dir) }
}

fn greedy(max_new_tokens: usize, prefill_chunk: usize) -> GenerateOptions {
    let sampling = SamplingConfig { temperature: 0.0, ..SamplingConfig::default() };
    GenerateOptions { sampling, max_new_tokens, record: true, prefill_chunk, ..GenerateOptions::default() }
}

/// A chat prompt of about `words` words.
fn long_chat(words: usize) -> Prompt {
    let text: Vec<String> = (0..words).map(|i| ["call", "refund", "order", "number", "the", "blue", "tomorrow", "please"][i % 8].to_string()).collect();
    Prompt::Chat(vec![Message::system("You are a helpful assistant."), Message::user(text.join(" "))])
}

/// Runs `generate` while another thread cancels it as soon as `when` holds for the handle's
/// progress; returns the generation's result and the progress read right after the cancel
/// returned (`None` when the generation ended first).
fn cancel_when<T: Send>(handle: &CancelHandle, when: impl Fn(Progress) -> bool + Send, generate: impl FnOnce() -> T + Send) -> (T, Option<Progress>) {
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let canceller = {
            let (handle, done) = (handle.clone(), Arc::clone(&done));
            scope.spawn(move || {
                while !done.load(Ordering::Acquire) {
                    if handle.is_running() && when(handle.progress()) {
                        return handle.cancel().then(|| handle.progress());
                    }
                    std::thread::yield_now();
                }
                None
            })
        };
        let out = generate();
        done.store(true, Ordering::Release);
        (out, canceller.join().expect("canceller thread"))
    })
}

/// The same tokens, and per token the same hidden state and next-token distribution up to float
/// rounding (a prefill split in chunks sums in another order): KL at most 1e-4 nats.
fn assert_same(a: &Generation, b: &Generation, what: &str) {
    assert_eq!(a.tokens, b.tokens, "{what}: different tokens");
    assert_eq!(a.records.len(), b.records.len());
    for (t, (x, y)) in a.records.iter().zip(&b.records).enumerate() {
        let dh = x.hidden.iter().zip(&y.hidden).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        let scale = x.hidden.iter().map(|p| p.abs()).fold(0.0f32, f32::max).max(1.0);
        assert!(dh <= 1e-3 * scale, "{what}: token {t}: hidden states differ by {dh} (scale {scale})");
        let kl: f64 = x
            .base_logprobs
            .iter()
            .zip(&y.base_logprobs)
            .map(|(p, q)| {
                let (p, q) = (f64::from(p.to_f32()), f64::from(q.to_f32()));
                p.exp() * (p - q)
            })
            .sum();
        assert!(kl.abs() <= 1e-4, "{what}: token {t}: KL between the two next-token distributions {kl:e}");
    }
}

fn chunked_prefill_matches_one_prefill(model: &Model, words: usize, new_tokens: usize) {
    let prompt = long_chat(words);
    let whole = model.generate(&prompt, &greedy(new_tokens, 0), None, &mut |_| true).expect("one prefill");
    assert!(whole.prompt_tokens.len() > 200, "the prompt has {} tokens", whole.prompt_tokens.len());
    assert_eq!(whole.timings.prefilled_tokens, whole.prompt_tokens.len());
    for chunk in [7, 64] {
        let g = model.generate(&prompt, &greedy(new_tokens, chunk), None, &mut |_| true).expect("chunked prefill");
        assert_eq!(g.timings.prefilled_tokens, g.prompt_tokens.len());
        assert_same(&g, &whole, &format!("prefill in chunks of {chunk}"));
    }
}

#[test]
fn tiny_model_chunked_prefill_matches_one_prefill() {
    chunked_prefill_matches_one_prefill(&Model::load(&config(common::tiny_dir())).expect("model"), 600, 8);
}

#[test]
fn real_model_chunked_prefill_matches_one_prefill() {
    let Some(dir) = common::real_dir() else { return };
    chunked_prefill_matches_one_prefill(&Model::load(&config(dir)).expect("model"), 400, 8);
}

/// Cancels during the prefill of a long prompt: no reply token, at most one chunk run after the
/// cancel, and a conversation cache that holds the part that ran (the next turn reuses it and
/// matches a full prefill).
fn cancel_during_prefill(model: &Model, words: usize, chunk: usize) {
    let prompt = long_chat(words);
    let opts = greedy(4, chunk);
    let handle = CancelHandle::new();
    let mut cache = KvCache::default();
    let (g, at) = cancel_when(&handle, |p| p.prefilled >= chunk, || model.generate_cached_with(&mut cache, &prompt, &opts, None, Some(&handle), &mut |_| true));
    let g = g.expect("a cancelled generation is not an error");
    let at = at.expect("the cancel landed while the generation ran");
    let n = g.prompt_tokens.len();
    assert_eq!(g.finish, FinishReason::Cancelled);
    assert!(g.tokens.is_empty() && g.text.is_empty(), "cancelled during the prefill, yet {} tokens were drawn", g.tokens.len());
    assert!(g.timings.prefilled_tokens < n, "the whole prompt ({n} tokens) ran");
    assert!(g.timings.prefilled_tokens - at.prefilled <= chunk, "{} prompt tokens ran after the cancel (chunk {chunk})", g.timings.prefilled_tokens - at.prefilled);
    assert_eq!(cache.len(), g.timings.prefilled_tokens, "the cache holds the prompt tokens that ran");

    let next = model.generate_cached(&mut cache, &prompt, &opts, None, &mut |_| true).expect("the turn again");
    assert_eq!(next.timings.reused_tokens, g.timings.prefilled_tokens);
    assert_same(&next, &model.generate(&prompt, &greedy(4, 0), None, &mut |_| true).unwrap(), "after a cancelled prefill");
}

#[test]
fn tiny_model_cancel_during_prefill_lands_within_one_chunk() {
    cancel_during_prefill(&Model::load(&config(common::tiny_dir())).expect("model"), 1500, 16);
}

#[test]
fn real_model_cancel_during_a_long_prefill_lands_within_one_chunk() {
    let Some(dir) = common::real_dir() else { return };
    cancel_during_prefill(&Model::load(&config(dir)).expect("model"), 1200, 64);
}

/// A session: a cancel during the decode stops within one token and the episode holds exactly the
/// tokens said; one during the prefill records no episode; one while nothing runs stops nothing.
fn session_cancels(dir: PathBuf, words: usize) {
    let rt = Runtime::new(RuntimeConfig { engine: config(dir), probe_tokens: 4, ..RuntimeConfig::default() }).expect("runtime");
    let mut s = rt.open_session("caller").expect("session");
    let handle = s.cancel_handle();
    let mut opts = greedy(400, 32);
    opts.sampling = SamplingConfig { temperature: 1.0, seed: 7, ..SamplingConfig::default() };
    // Stop strings and stop tokens that cannot occur; the decode runs until the cancel.
    let prompt = Prompt::Chat(vec![Message::user("Tell me a very long story about a lighthouse keeper and the sea.")]);

    let (r, at) = cancel_when(&handle, |p| p.generated >= 3, || s.generate(&prompt, &opts, &mut |_| true));
    let r = r.expect("generate");
    let at = at.expect("the cancel landed during the decode (the reply ended before it)");
    assert_eq!(r.finish, FinishReason::Cancelled);
    assert!(r.tokens >= at.generated && r.tokens - at.generated <= 1, "{} tokens after the cancel", r.tokens - at.generated);
    let ep = s.learner().episode(r.episode_id).expect("the cancelled reply is an episode");
    assert_eq!(ep.reply.len(), r.tokens, "the episode holds the tokens said before the cancel");
    s.feedback(r.episode_id, &attune::learn::Reward::thumbs(false)).expect("feedback on a cancelled reply");

    let long = long_chat(words);
    let (r, at) = cancel_when(&handle, |p| p.prefilled >= 32, || s.generate(&long, &opts, &mut |_| true));
    let r = r.expect("generate");
    assert!(at.is_some(), "the cancel landed during the prefill");
    assert_eq!((r.finish, r.tokens, r.episode_id), (FinishReason::Cancelled, 0, NO_EPISODE));
    assert!(matches!(s.feedback(NO_EPISODE, &attune::learn::Reward::thumbs(true)), Err(Error::UnknownEpisode { .. })));

    assert!(!s.cancel(), "nothing runs");
    let r = s.generate(&prompt, &GenerateOptions { max_new_tokens: 5, ..opts.clone() }, &mut |_| true).expect("generate");
    assert_ne!(r.finish, FinishReason::Cancelled, "a cancel made while nothing ran stopped the next generation");
}

#[test]
fn tiny_model_session_cancel_from_another_thread() {
    session_cancels(common::tiny_dir(), 1500);
}

#[test]
fn real_model_session_cancel_from_another_thread() {
    let Some(dir) = common::real_dir() else { return };
    session_cancels(dir, 1200);
}
