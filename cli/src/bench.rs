//! `attune bench`: prefill and decode speed, time to first token, peak memory.

use std::time::Instant;

use anyhow::Result;
use attune::engine::EngineConfig;
use attune::adapter::{LoraConfig, LoraHead};
use attune::generate::{FinishReason, GenerateOptions, Model, Prompt, SamplingConfig};
use rand::{Rng, SeedableRng};

/// Options of `attune bench`.
#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// Model folder.
    #[arg(long, default_value = "models/smollm2-135m-instruct")]
    pub model: std::path::PathBuf,
    /// Execution providers, comma separated.
    #[arg(long, default_value = "cpu", value_delimiter = ',')]
    pub ep: Vec<String>,
    /// Intra-op threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Prompt length in tokens for the prefill measurement.
    #[arg(long, default_value_t = 256)]
    pub prompt_tokens: usize,
    /// New tokens per decode run (greedy, no early stop).
    #[arg(long, default_value_t = 128)]
    pub new_tokens: usize,
    /// KV-cache capacity in tokens (0: min(model context, 2048)).
    #[arg(long, default_value_t = 0)]
    pub max_context: usize,
    /// Measured runs (after one warm-up); medians are reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Write the prompt token ids used (`prompt`, `short`) as JSON, for the peer run.
    #[arg(long)]
    pub dump_prompt: Option<std::path::PathBuf>,
    /// Also measure decode through the generation loop without an adapter, with an adapter of this
    /// rank on every vocabulary row (the dense worst case), and with that adapter plus the per-token
    /// records learning keeps (0: skip).
    #[arg(long, default_value_t = 0)]
    pub adapter_rank: usize,
    /// Instead, play a scripted 10-turn call through the chat template, with the conversation's KV
    /// cache kept between turns and without (alternating rounds), and report each turn's time to
    /// first token.
    #[arg(long)]
    pub call: bool,
    /// Instead, measure how long a thumbs-up takes to return with `update_mode` `background` (the
    /// feedback that starts an update, and one given while it runs) and `sync` (the update runs
    /// inside the call), in alternating rounds, and check that each report appears after flush.
    #[arg(long)]
    pub feedback_latency: bool,
}

/// The caller's side of the scripted call.
const CALL: [&str; 10] = [
    "Hi, I'm calling about my internet connection. It keeps dropping in the evening.",
    "It started last week, maybe Tuesday.",
    "Yes, I already restarted the router twice.",
    "The lights on the router are green, except one that blinks orange.",
    "I'm on the fibre plan, the one with 300 megabits.",
    "It's mostly when I'm on video calls for work.",
    "No, the other devices drop too, my phone and the TV.",
    "Could you send a technician, or is there something else I can try first?",
    "Thursday afternoon would work for me.",
    "Great, thank you. Is there anything I need to prepare?",
];

/// A 10-turn call through a session: per turn the prompt length, the tokens reused from the
/// conversation's KV cache and the time to first token, with reuse on and off in alternating rounds
/// (`runs` of each); medians per turn.
fn call(a: &BenchArgs) -> Result<()> {
    use attune::runtime::{Runtime, RuntimeConfig};
    use attune::tokenizer::Message;
    let engine = EngineConfig { model_dir: a.model.clone(), execution_providers: a.ep.iter().map(|n| n.as_str().into()).collect(), threads: a.threads, max_context: a.max_context, ..EngineConfig::default() };
    let rt = Runtime::new(RuntimeConfig { engine, ..RuntimeConfig::default() })?;
    let opts = GenerateOptions { sampling: SamplingConfig::greedy(), max_new_tokens: 40, ..GenerateOptions::default() };
    let n = CALL.len();
    let (mut on, mut off) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    let (mut prompt_len, mut reused) = (vec![0usize; n], vec![0usize; n]);
    for round in 0..=a.runs {
        for reuse in [true, false] {
            let mut s = rt.open_session("bench-call")?;
            let o = GenerateOptions { reuse_kv: reuse, ..opts.clone() };
            let mut msgs = vec![Message::system("You are the phone assistant of an internet provider. Keep answers short.")];
            for (t, line) in CALL.iter().enumerate() {
                msgs.push(Message::user(*line));
                let r = s.generate(&Prompt::Chat(msgs.clone()), &o, &mut |_| true)?;
                if round > 0 {
                    (if reuse { &mut on } else { &mut off })[t].push(r.timings.first_token_s * 1000.0);
                }
                if reuse {
                    reused[t] = r.timings.reused_tokens;
                    prompt_len[t] = rt.model().prompt_tokens(&Prompt::Chat(msgs.clone()))?.len();
                }
                msgs.push(Message::assistant(r.text));
            }
        }
    }
    let kv_bytes = rt.open_session("bench-call-kv")?.kv_cache_usage().1;
    println!("| turn | prompt tokens | reused from the cache | TTFT reuse (ms) | TTFT full prefill (ms) |");
    println!("|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for t in 0..n {
        let (x, y) = (median(on[t].clone()), median(off[t].clone()));
        println!("| {} | {} | {} | {:.1} | {:.1} |", t + 1, prompt_len[t], reused[t], x, y);
        rows.push(serde_json::json!({"turn": t + 1, "prompt_tokens": prompt_len[t], "reused_tokens": reused[t], "ttft_ms_reuse": x, "ttft_ms_full": y, "runs_reuse": on[t], "runs_full": off[t]}));
    }
    let (first, last) = (median(on[0].clone()), median(on[n - 1].clone()));
    println!("turn 10 / turn 1 time to first token: {:.2} with the cache kept, {:.2} without", last / first, median(off[n - 1].clone()) / median(off[0].clone()));
    let res = serde_json::json!({
        "model": a.model,
        "profile": rt.model().engine().info().profile,
        "threads": a.threads,
        "runs": a.runs,
        "kv_bytes_per_session": rt.model().engine().kv_bytes_per_sequence(),
        "kv_bytes_before_first_turn": kv_bytes,
        "turn10_over_turn1_reuse": last / first,
        "turn10_over_turn1_full": median(off[n - 1].clone()) / median(off[0].clone()),
        "turns": rows,
        "peak_rss_mib": peak_rss_mib(),
    });
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&res)?)?;
    }
    Ok(())
}

/// An adapter of rank `rank` whose every row of `B` is non-zero (seeded values of learned size).
fn dense_adapter(rank: usize, d: usize, vocab: usize) -> Result<LoraHead> {
    let cfg = LoraConfig { rank, ..LoraConfig::default() };
    let fresh = LoraHead::new(&cfg, d, vocab)?;
    let mut parts = fresh.to_parts();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    parts.b_rows = (0..vocab as u32).collect();
    parts.b = (0..vocab * rank).map(|_| rng.random_range(-1e-2f32..1e-2)).collect();
    Ok(LoraHead::from_parts(&cfg, &parts)?)
}

/// Decode tok/s through [`Model::generate`] (sampling loop, hook, records) for `runs` runs of each
/// variant, interleaved so that machine noise hits all of them alike.
fn adapter_decode(model: &Model, short: &[u32], opts: &GenerateOptions, rank: usize, runs: usize) -> Result<serde_json::Value> {
    let info = model.engine().info();
    let head = dense_adapter(rank, info.hidden_size, info.vocab_size)?;
    let mut hook = &head;
    let prompt = Prompt::Tokens(short.to_vec());
    let recorded = GenerateOptions { record: true, ..opts.clone() };
    let (mut plain, mut adapted, mut learning) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=runs {
        let a = model.generate(&prompt, opts, None, &mut |_| true)?;
        let b = model.generate(&prompt, opts, Some(&mut hook), &mut |_| true)?;
        let c = model.generate(&prompt, &recorded, Some(&mut hook), &mut |_| true)?;
        if run > 0 {
            for (g, v) in [(&a, &mut plain), (&b, &mut adapted), (&c, &mut learning)] {
                v.push(g.timings.decode_steps as f64 / g.timings.decode_s);
            }
        }
    }
    let (p, a, l) = (median(plain.clone()), median(adapted.clone()), median(learning.clone()));
    Ok(serde_json::json!({
        "adapter_rank": rank,
        "adapter_rows": info.vocab_size,
        "decode_tok_s_no_adapter": p,
        "decode_tok_s_adapter": a,
        "decode_tok_s_adapter_and_records": l,
        "adapter_over_none": a / p,
        "adapter_and_records_over_none": l / p,
        "runs_no_adapter": plain,
        "runs_adapter": adapted,
        "runs_adapter_and_records": learning,
    }))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A deterministic prompt of exactly `n` tokens (ordinary English text, repeated).
pub fn prompt_of(model: &Model, n: usize) -> Result<Vec<u32>> {
    let text = "The quick brown fox jumps over the lazy dog while the farmer counts his sheep in the morning light. ";
    let ids = model.tokenizer().encode(text)?;
    Ok(ids.iter().cycle().take(n).copied().collect())
}

/// Feedback latency, background against sync learning: per round two replies (32 tokens) of a
/// session; with `background` the thumbs for the first starts an update on the learning thread
/// and the one for the second is given right after, while it runs, then `flush`; with `sync`
/// each thumbs runs its update inline.
/// `runs` rounds of each mode, alternating; medians and maxima in milliseconds.
fn feedback_latency(a: &BenchArgs) -> Result<()> {
    use attune::learn::{LearnerConfig, Reward};
    use attune::runtime::{Runtime, RuntimeConfig, UpdateMode};
    use attune::tokenizer::Message;
    let engine = EngineConfig { model_dir: a.model.clone(), execution_providers: a.ep.iter().map(|n| n.as_str().into()).collect(), threads: a.threads, max_context: a.max_context, ..EngineConfig::default() };
    let learner = LearnerConfig { max_updates_per_minute: 0, ..LearnerConfig::default() };
    let open = |mode| Runtime::new(RuntimeConfig { engine: engine.clone(), learner: learner.clone(), update_mode: mode, ..RuntimeConfig::default() });
    let (sync_rt, bg_rt) = (open(UpdateMode::Sync)?, open(UpdateMode::Background)?);
    let (mut sync_s, mut bg_s) = (sync_rt.open_session("bench-sync")?, bg_rt.open_session("bench-background")?);
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let (mut starts, mut during, mut flushes, mut inline, mut updates) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut copies = Vec::new();
    let (mut running_at_second, mut reports_after_flush) = (0usize, 0usize);
    for round in 0..a.runs.max(1) {
        let prompt = |i: usize| Prompt::Chat(vec![Message::user(CALL[(2 * round + i) % CALL.len()])]);
        let opts = GenerateOptions { sampling: SamplingConfig { temperature: 0.7, seed: round as u64, ..SamplingConfig::default() }, max_new_tokens: 32, ..GenerateOptions::default() };
        for i in 0..2 {
            let r = sync_s.generate(&prompt(i), &opts, &mut |_| true)?;
            let t = Instant::now();
            sync_s.feedback(r.episode_id, &Reward::thumbs(i == 0))?;
            inline.push(ms(t));
        }
        let r1 = bg_s.generate(&prompt(0), &opts, &mut |_| true)?;
        let r2 = bg_s.generate(&prompt(1), &opts, &mut |_| true)?;
        // For comparison: rebuilding a learner from its snapshot, which only a session's first
        // background update does for its stand-in (later ones clone the adapter into the last one).
        let t = Instant::now();
        drop(attune::learn::Learner::from_state(bg_s.learner().snapshot())?);
        copies.push(ms(t));
        let t = Instant::now();
        bg_s.feedback(r1.episode_id, &Reward::thumbs(true))?;
        starts.push(ms(t));
        running_at_second += usize::from(bg_s.update_running());
        let t = Instant::now();
        bg_s.feedback(r2.episode_id, &Reward::thumbs(false))?;
        during.push(ms(t));
        let t = Instant::now();
        bg_s.flush()?;
        flushes.push(ms(t));
        if let Some(rep) = bg_s.last_report() {
            reports_after_flush += usize::from(rep.episode_ids.contains(&r2.episode_id));
            updates.push(rep.elapsed_s * 1000.0);
        }
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0f64, f64::max);
    println!("| feedback call | median (ms) | max (ms) |");
    println!("|---|---:|---:|");
    println!("| background, starts an update | {:.3} | {:.3} |", median(starts.clone()), max(&starts));
    println!("| background, while an update runs | {:.3} | {:.3} |", median(during.clone()), max(&during));
    println!("| sync (the update inside the call) | {:.1} | {:.1} |", median(inline.clone()), max(&inline));
    println!("flush: median {:.1} ms; update on the learning thread: median {:.1} ms; a learner rebuilt from its snapshot: median {:.1} ms", median(flushes.clone()), median(updates.clone()), median(copies.clone()));
    println!("an update was running at {running_at_second} of {} second thumbs; the report of the feedback given during it appeared after flush in {reports_after_flush} of {}", starts.len(), starts.len());
    let res = serde_json::json!({
        "model": a.model, "threads": a.threads, "runs": a.runs,
        "background_start_ms": starts, "background_during_ms": during, "sync_ms": inline, "flush_ms": flushes, "update_ms": updates, "rebuild_from_snapshot_ms": copies,
        "running_at_second": running_at_second, "reports_after_flush": reports_after_flush,
    });
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&res)?)?;
    }
    Ok(())
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.call {
        return call(&a);
    }
    if a.feedback_latency {
        return feedback_latency(&a);
    }
    let t0 = Instant::now();
    let cfg = EngineConfig { model_dir: a.model.clone(), execution_providers: a.ep.iter().map(|n| n.as_str().into()).collect(), threads: a.threads, max_context: a.max_context, ..EngineConfig::default() };
    let model = Model::load(&cfg)?;
    let load_s = t0.elapsed().as_secs_f64();
    eprintln!("attune bench: {} (profile {})", a.model.display(), model.engine().info().profile_name());
    let prompt = prompt_of(&model, a.prompt_tokens)?;
    let short = prompt_of(&model, 16)?;
    if let Some(p) = &a.dump_prompt {
        std::fs::write(p, serde_json::json!({ "prompt": prompt, "short": short }).to_string())?;
    }
    let opts = GenerateOptions {
        sampling: SamplingConfig::greedy(),
        max_new_tokens: a.new_tokens,
        // No stop token: every run decodes exactly `new_tokens`.
        stop_tokens: Vec::new(),
        ..GenerateOptions::default()
    };
    let mut prefill = Vec::new();
    let mut whole = Vec::new();
    let mut ttft = Vec::new();
    let mut decode = Vec::new();
    for run in 0..=a.runs {
        // Prefill of the long prompt, one new token: in chunks of `generation.prefill_chunk` (the
        // default), and in one run for comparison.
        let one = GenerateOptions { max_new_tokens: 1, ..opts.clone() };
        let g = model.generate(&Prompt::Tokens(prompt.clone()), &one, None, &mut |_| true)?;
        let w = model.generate(&Prompt::Tokens(prompt.clone()), &GenerateOptions { prefill_chunk: 0, ..one.clone() }, None, &mut |_| true)?;
        // Decode from a short prompt.
        let d = generate_no_eos(&model, &short, &opts)?;
        if run == 0 {
            continue;
        }
        prefill.push(a.prompt_tokens as f64 / g.timings.prefill_s);
        whole.push(a.prompt_tokens as f64 / w.timings.prefill_s);
        ttft.push(g.timings.first_token_s * 1000.0);
        decode.push(d.0 as f64 / d.1);
    }
    let adapter = if a.adapter_rank > 0 { Some(adapter_decode(&model, &short, &opts, a.adapter_rank, a.runs)?) } else { None };
    let res = serde_json::json!({
        "model": a.model,
        "profile": model.engine().info().profile,
        "providers": model.engine().active_providers().iter().map(|p| p.name()).collect::<Vec<_>>(),
        "threads": a.threads,
        "kv_capacity": model.engine().capacity(),
        "runs": a.runs,
        "load_s": load_s,
        "prefill_tokens": a.prompt_tokens,
        "prefill_tok_s_median": median(prefill.clone()),
        "prefill_chunk": opts.prefill_chunk,
        "prefill_whole_tok_s_median": median(whole.clone()),
        "ttft_ms_median": median(ttft.clone()),
        "decode_new_tokens": a.new_tokens,
        "decode_tok_s_median": median(decode.clone()),
        "decode_tok_s_runs": decode,
        "peak_rss_mib": peak_rss_mib(),
        "adapter": adapter,
    });
    println!("{}", serde_json::to_string_pretty(&res)?);
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&res)?)?;
    }
    Ok(())
}

/// Greedy decode of `opts.max_new_tokens` tokens ignoring end-of-sequence; returns (tokens, seconds of
/// decode steps) so the rate excludes the prefill.
fn generate_no_eos(model: &Model, prompt: &[u32], opts: &GenerateOptions) -> Result<(usize, f64)> {
    let mut seq = model.take_sequence()?;
    let engine = model.engine();
    engine.forward(&mut seq, prompt, false)?;
    let t = Instant::now();
    let mut n = 0;
    let mut tok = attune::generate::sampler::argmax(seq.logits()) as u32;
    while n < opts.max_new_tokens {
        engine.forward(&mut seq, &[tok], false)?;
        tok = attune::generate::sampler::argmax(seq.logits()) as u32;
        n += 1;
    }
    let s = t.elapsed().as_secs_f64();
    model.give_back(seq);
    let _ = FinishReason::Length;
    Ok((n, s))
}
