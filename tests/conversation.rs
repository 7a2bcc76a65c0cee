//! The conversation's KV cache kept between turns: a chat turn prefills only the tokens after the
//! prefix it shares with the previous turn, and what it computes matches a full prefill. Fast tier on
//! the tiny model; the real model in the slow tier.

mod common;

use attune::generate::{GenerateOptions, Generation, KvCache, Model, Prompt, SamplingConfig};
use attune::runtime::{Runtime, RuntimeConfig};
use attune::tokenizer::Message;

fn greedy(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions { sampling: SamplingConfig { temperature: 0.0, ..SamplingConfig::default() }, max_new_tokens, record: true, ..GenerateOptions::default() }
}

fn chat(turns: &[(&str, &str)], last: &str) -> Prompt {
    let mut m = vec![Message::system("You are a helpful assistant.")];
    for (u, a) in turns {
        m.push(Message::user(*u));
        m.push(Message::assistant(*a));
    }
    m.push(Message::user(last));
    Prompt::Chat(m)
}

/// The same tokens, and per token the same hidden state and next-token distribution up to float
/// rounding (a prefill split in two sums in another order): KL between the two distributions (from
/// the f16 base log-probabilities the records keep) at most 1e-4 nats.
fn assert_same(a: &Generation, b: &Generation, what: &str) {
    assert_eq!(a.tokens, b.tokens, "{what}: different tokens");
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

fn three_turns(model: &Model, max_new: usize) {
    let opts = greedy(max_new);
    let mut cache = KvCache::default();
    let p1 = chat(&[], "What is the capital of France?");
    let g1 = model.generate_cached(&mut cache, &p1, &opts, None, &mut |_| true).expect("turn 1");
    assert_eq!(g1.timings.reused_tokens, 0, "the first turn has nothing to reuse");
    assert_same(&g1, &model.generate(&p1, &opts, None, &mut |_| true).unwrap(), "turn 1");
    assert_eq!(cache.len(), g1.prompt_tokens.len() + g1.tokens.len() - 1, "the cache holds the prompt and every reply token fed back");

    let p2 = chat(&[("What is the capital of France?", &g1.text)], "And of Italy?");
    let g2 = model.generate_cached(&mut cache, &p2, &opts, None, &mut |_| true).expect("turn 2");
    assert!(
        g2.timings.reused_tokens >= g1.prompt_tokens.len(),
        "turn 2 reused {} tokens; turn 1's whole prompt ({}) is a prefix of it",
        g2.timings.reused_tokens,
        g1.prompt_tokens.len()
    );
    assert_eq!(&g2.prompt_tokens[..g2.timings.reused_tokens], &g1.prompt_tokens[..].iter().chain(&g1.tokens).copied().collect::<Vec<_>>()[..g2.timings.reused_tokens]);
    assert_same(&g2, &model.generate(&p2, &opts, None, &mut |_| true).unwrap(), "turn 2 (reused) against a full prefill");

    // An edited history: only the part before the edit is reused.
    let p3 = chat(&[("What is the capital of Spain?", &g1.text)], "And of Italy?");
    let g3 = model.generate_cached(&mut cache, &p3, &opts, None, &mut |_| true).expect("edited turn");
    let edit = g2.prompt_tokens.iter().zip(&g3.prompt_tokens).take_while(|(a, b)| a == b).count();
    assert_eq!(g3.timings.reused_tokens, edit, "after an edit the prefix before it is reused, nothing after");
    assert!(edit < g1.prompt_tokens.len());
    assert_same(&g3, &model.generate(&p3, &opts, None, &mut |_| true).unwrap(), "edited turn against a full prefill");

    // The same prompt again: all but its last token come from the cache.
    let g4 = model.generate_cached(&mut cache, &p3, &opts, None, &mut |_| true).expect("repeated turn");
    assert_eq!(g4.timings.reused_tokens, g3.prompt_tokens.len() - 1);
    assert_same(&g4, &g3, "the repeated prompt");

    // A failed turn (a prompt longer than the context) leaves a cache that the next turn can use.
    let long = "word ".repeat(model.engine().capacity() + 8);
    assert!(model.generate_cached(&mut cache, &chat(&[], &long), &opts, None, &mut |_| true).is_err());
    let g5 = model.generate_cached(&mut cache, &p2, &opts, None, &mut |_| true).expect("after a failed turn");
    assert_same(&g5, &g2, "after a failed turn");
}

#[test]
fn tiny_model_turns_reuse_the_cache_and_match_a_full_prefill() {
    three_turns(&common::load(common::tiny_dir()), 8);
}

#[test]
fn real_model_turns_reuse_the_cache_and_match_a_full_prefill() {
    let Some(dir) = common::real_dir() else { return };
    three_turns(&common::load(dir), 12);
}

#[test]
fn a_session_reuses_its_conversation_and_forgets_it_with_the_user() {
    let rt = Runtime::new(RuntimeConfig { engine: common::cpu_config(common::tiny_dir()), probe_tokens: 4, ..RuntimeConfig::default() }).expect("runtime");
    let mut s = rt.open_session("caller").expect("session");
    assert_eq!(s.kv_cache_usage(), (0, 0), "no buffer before the first chat turn");
    let opts = GenerateOptions { max_new_tokens: 6, ..greedy(6) };
    let r1 = s.generate(&chat(&[], "Hello?"), &opts, &mut |_| true).expect("turn 1");
    let (tokens, bytes) = s.kv_cache_usage();
    assert!(tokens > 0 && bytes == rt.model().engine().kv_bytes_per_sequence(), "{tokens} tokens, {bytes} bytes");
    let r2 = s.generate(&chat(&[("Hello?", &r1.text)], "How are you?"), &opts, &mut |_| true).expect("turn 2");
    assert!(r2.timings.reused_tokens > 0, "the session's second turn reused nothing");
    let off = GenerateOptions { reuse_kv: false, ..opts.clone() };
    let r3 = s.generate(&chat(&[("Hello?", &r1.text)], "How are you?"), &off, &mut |_| true).expect("turn without reuse");
    assert_eq!(r3.timings.reused_tokens, 0, "reuse_kv false prefills the whole prompt");
    assert_eq!(r3.text, r2.text);
    s.forget().expect("forget");
    assert_eq!(s.kv_cache_usage(), (0, 0), "forget drops the conversation");
}
