//! `attune eval`: the simulated-user suite. A user with one hidden preference over replies to
//! everyday requests asks one request at a time (one reply each, as in a live call), rates replies
//! with thumbs (a share of them flipped, and only some replies rated), and optionally rewrites one
//! disliked reply in `--corrections` (the way a chat app's "edit reply" does), given through the
//! pair API (`UserSession::correct`, or as a bare demonstration with `--correction-as
//! demonstration`). Per preference and
//! seed it measures the held-out score before and after, events until the training replies reach
//! 90 % of the ceiling, the probe KL, the coherence of the replies (the base model's NLL per token
//! and repeated word trigrams), rollbacks, ignored feedback and update time.
//!
//! It runs on the library's learner defaults; every setting changed with `--set` is printed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use attune::engine::EngineConfig;
use attune::generate::{GenerateOptions, Prompt, SamplingConfig};
use attune::learn::{FeedbackOutcome, LearnerConfig, Reward};
use attune::runtime::{Runtime, RuntimeConfig, UserSession};
use attune::tokenizer::Message;
use clap::Args;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Args, Clone)]
pub struct EvalArgs {
    /// Model folder.
    #[arg(long, default_value = "models/smollm2-135m-instruct")]
    pub model: PathBuf,
    /// Where the table, the curves (PNG) and the JSON log go.
    #[arg(long, default_value = "target/eval")]
    pub out: PathBuf,
    /// Preferences to run, comma separated, or `all`.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    pub prefs: Vec<String>,
    /// Seeds, comma separated.
    #[arg(long, default_value = "1", value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Rated events (requests) per preference and seed.
    #[arg(long, default_value_t = 150)]
    pub events: usize,
    /// The share of thumbs that are flipped (noise).
    #[arg(long, default_value_t = 0.1)]
    pub flip: f64,
    /// The share of replies the user rates at all.
    #[arg(long, default_value_t = 1.0)]
    pub rated: f64,
    /// The share of disliked replies the user rewrites into a correction.
    #[arg(long, default_value_t = 0.0)]
    pub corrections: f64,
    /// How a correction is given: `pair` (`UserSession::correct`: the corrected reply against the
    /// disliked one) or `demonstration` (`UserSession::demonstrate`: the corrected reply alone).
    #[arg(long, default_value = "pair", value_parser = ["pair", "demonstration"])]
    pub correction_as: String,
    /// The quick tier: first word, use a word, ending and length, 80 events, replies up to 48
    /// tokens (prefs, events and max-new-tokens given explicitly still win).
    #[arg(long)]
    pub quick: bool,
    /// Appends one JSON line per run (settings, scores, KL, coherence, time) to this file.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// New tokens per reply.
    #[arg(long, default_value_t = 96)]
    pub max_new_tokens: usize,
    /// Intra-op threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Overrides a learner setting, as `name=value` with a JSON value; repeatable. Printed.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
}

/// One hidden preference: its score of a reply in [0, 1] and the correction the user would write.
struct Pref {
    name: &'static str,
    what: &'static str,
    score: fn(&str) -> f64,
    correct: fn(&str) -> String,
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase()).filter(|w| !w.is_empty()).collect()
}

fn has_word(s: &str, w: &str) -> bool {
    words(s).iter().any(|x| x == w)
}

/// The reply's first sentence (or its first `max` words).
fn first_sentence(s: &str, max: usize) -> String {
    let t = s.trim();
    let end = t.find(['.', '!', '?']).map_or(t.len(), |i| i + 1);
    let w: Vec<&str> = t[..end].split_whitespace().take(max).collect();
    w.join(" ")
}

fn lower_first(s: &str) -> String {
    let t = s.trim_start();
    let mut c = t.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn is_list_line(l: &str) -> bool {
    let t = l.trim_start();
    t.starts_with("- ") || t.starts_with("* ") || t.starts_with('•') || t.split_once(". ").is_some_and(|(n, _)| !n.is_empty() && n.len() <= 2 && n.chars().all(|c| c.is_ascii_digit()))
}

const PREFS: &[Pref] = &[
    Pref { name: "use_word", what: "uses the word \"honestly\"", score: |r| f64::from(u8::from(has_word(r, "honestly"))), correct: |r| format!("Honestly, {}", lower_first(r)) },
    Pref { name: "avoid_mark", what: "never uses \"!\"", score: |r| f64::from(u8::from(!r.contains('!'))), correct: |r| r.replace('!', ".") },
    Pref {
        name: "first_word",
        what: "starts with \"Sure\"",
        score: |r| f64::from(u8::from(words(r).first().is_some_and(|w| w == "sure"))),
        correct: |r| format!("Sure, {}", lower_first(r)),
    },
    Pref {
        name: "ending",
        what: "ends with a question back to the user",
        score: |r| f64::from(u8::from(r.trim_end().ends_with('?'))),
        correct: |r| format!("{} Does that help?", first_sentence(r, 30)),
    },
    Pref {
        name: "length",
        what: "is short: 25 words or fewer (0 at 60)",
        score: |r| ((60.0 - words(r).len() as f64) / 35.0).clamp(0.0, 1.0),
        correct: |r| first_sentence(r, 20),
    },
    Pref {
        name: "prose",
        what: "is prose, no list",
        score: |r| f64::from(u8::from(!r.lines().any(is_list_line))),
        correct: |r| {
            let items: Vec<String> = r
                .lines()
                .map(|l| {
                    let t = l.trim_start().trim_start_matches(['-', '*', '•']);
                    let t = t.split_once(". ").filter(|(n, _)| n.len() <= 2 && n.chars().all(|c| c.is_ascii_digit())).map_or(t, |(_, rest)| rest);
                    t.trim().to_string()
                })
                .filter(|l| !l.is_empty())
                .collect();
            items.join(" ")
        },
    },
    Pref {
        name: "greeting",
        what: "greets the user by name (\"Sam\") in its first six words",
        score: |r| f64::from(u8::from(words(r).iter().take(6).any(|w| w == "sam"))),
        correct: |r| format!("Hi Sam, {}", lower_first(r)),
    },
    Pref {
        name: "topic",
        what: "stays on cost: mentions money, cost, price, budget or cheap",
        score: |r| f64::from(u8::from(words(r).iter().any(|w| ["money", "cost", "costs", "price", "prices", "budget", "cheap", "cheaper", "affordable"].contains(&w.as_str())))),
        correct: |r| format!("{} It does not have to cost much money.", first_sentence(r, 30)),
    },
];

const SYSTEM: &str = "You are a helpful assistant. The user's name is Sam.";

/// Everyday requests the user makes while the adapter learns.
const TRAIN: [&str; 30] = [
    "What's a good way to start my morning?",
    "Can you suggest something quick for dinner?",
    "How do I keep my houseplants alive?",
    "Any tips for sleeping better?",
    "What should I do on a rainy Sunday?",
    "How can I save a bit of money each month?",
    "Give me an idea for a birthday present for my sister.",
    "How long should I boil an egg?",
    "What's a good stretch for a stiff back?",
    "How do I make my phone battery last longer?",
    "Can you recommend a hobby I could try?",
    "How do I get a stain out of a shirt?",
    "What should I pack for a day at the beach?",
    "How can I drink more water during the day?",
    "What's an easy way to learn a few words of Spanish?",
    "How do I clean a cast iron pan?",
    "What can I cook with rice and eggs?",
    "How do I stop procrastinating?",
    "What's a fun thing to do with kids at home?",
    "How do I prepare for a job interview?",
    "How often should I water a cactus?",
    "What's a good book to read on holiday?",
    "How do I keep my desk tidy?",
    "What should I say in a thank-you note?",
    "How do I start running as a beginner?",
    "How can I make my coffee taste better?",
    "What's a good way to relax after work?",
    "How do I remember people's names?",
    "What should I plant in a small balcony garden?",
    "How do I make a simple budget?",
];

/// Held-out requests: answered before and after, never trained on.
const HELD_OUT: [&str; 10] = [
    "What's a healthy snack for the afternoon?",
    "How can I be more productive at work?",
    "What should I bring to a picnic?",
    "How do I stay warm in winter?",
    "How do I pick a ripe avocado?",
    "What's a good way to spend a free evening?",
    "How can I make new friends in a new city?",
    "How do I fix a squeaky door?",
    "What should I cook for a friend who is vegetarian?",
    "How do I get better at waking up early?",
];

/// Seeded samples per held-out request.
const EVAL_SAMPLES: u64 = 2;

fn prompt(q: &str) -> Prompt {
    Prompt::Chat(vec![Message::system(SYSTEM), Message::user(q)])
}

fn gen_opts(seed: u64, max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions { sampling: SamplingConfig { temperature: 0.7, seed, ..SamplingConfig::default() }, max_new_tokens, ..GenerateOptions::default() }
}

/// The KL efficiency of a run: `d(after || before) / kl_per_reply`, with the scores kept half a
/// sample away from 0 and 1 (`n` held-out replies) so that the binary KL stays finite.
fn kl_efficiency(before: f64, after: f64, n: f64, kl_per_reply: f64) -> f64 {
    let lo = 0.5 / n;
    let (p, q) = (after.clamp(lo, 1.0 - lo), before.clamp(lo, 1.0 - lo));
    let d = p * (p / q).ln() + (1.0 - p) * ((1.0 - p) / (1.0 - q)).ln();
    if kl_per_reply > 0.0 { d / kl_per_reply } else { 0.0 }
}

/// The share of word trigrams that repeat an earlier trigram of the same reply.
fn repeated_trigrams(reply: &str) -> f64 {
    let w = words(reply);
    if w.len() < 4 {
        return 0.0;
    }
    let grams: Vec<(&str, &str, &str)> = w.windows(3).map(|g| (g[0].as_str(), g[1].as_str(), g[2].as_str())).collect();
    let mut seen = std::collections::HashSet::new();
    let repeats = grams.iter().filter(|g| !seen.insert(**g)).count();
    repeats as f64 / grams.len() as f64
}

#[derive(Serialize, Clone, Default)]
struct Held {
    score: f64,
    base_nll: f64,
    repeated: f64,
}

/// The held-out score and coherence: the base model's NLL per token of the replies (teacher-forced
/// with the adapter off) and repeated trigrams.
fn held_out(rt: &Runtime, s: &mut UserSession, pref: &Pref, seed: u64, max_new: usize) -> Result<(Held, Vec<String>)> {
    let (mut score, mut nll, mut nll_tokens, mut rep, mut texts) = (0.0, 0.0, 0usize, 0.0, Vec::new());
    let n = (HELD_OUT.len() as u64 * EVAL_SAMPLES) as f64;
    for (i, q) in HELD_OUT.iter().enumerate() {
        for k in 0..EVAL_SAMPLES {
            let g = s.generate_unrecorded(&prompt(q), &gen_opts(seed * 10_000 + i as u64 * 10 + k, max_new), &mut |_| true)?;
            score += (pref.score)(&g.text);
            rep += repeated_trigrams(&g.text);
            if !g.tokens.is_empty() {
                let recs = rt.model().teacher_force_ids(&g.prompt_tokens, &g.tokens, 1.0)?;
                nll -= recs.iter().map(|r| f64::from(r.base_logprobs[r.token as usize].to_f32())).sum::<f64>();
                nll_tokens += recs.len();
            }
            texts.push(g.text);
        }
    }
    Ok((Held { score: score / n, base_nll: nll / nll_tokens.max(1) as f64, repeated: rep / n }, texts))
}

#[derive(Serialize, Clone)]
struct RunLog {
    pref: String,
    what: String,
    seed: u64,
    before: Held,
    after: Held,
    /// Events until the mean score of the last 20 training replies first reached 0.9.
    events_to_90: Option<usize>,
    training_scores: Vec<f64>,
    probe_kl: f64,
    /// How much of the KL spent went into the preference: the binary KL `d(after || before)` of
    /// the held-out scores over the probe KL per reply (probe tokens per reply times the mean
    /// probe KL per token); 1 would be the floor of any method.
    kl_efficiency: f64,
    /// The probes' coherence drift at the end: the base model's NLL of what the adapted policy says
    /// there over the base policy's own, minus 1.
    probe_coherence_drift: f64,
    rollbacks: u64,
    ignored_feedback: u64,
    feedback_given: usize,
    corrections: usize,
    updates: usize,
    /// Updates whose A2C advantages came from the critic (0 for the other algorithms).
    critic_updates: usize,
    mean_update_ms: f64,
    seconds: f64,
    sample_before: String,
    sample_after: String,
}

fn run_one(rt: &Arc<Runtime>, pref: &Pref, seed: u64, a: &EvalArgs) -> Result<RunLog> {
    let t0 = Instant::now();
    let user = format!("eval-{}-{seed}", pref.name);
    rt.forget(&user)?;
    let mut s = rt.open_session(&user)?;
    let (before, texts_before) = held_out(rt, &mut s, pref, seed, a.max_new_tokens)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xe7a1);
    let (mut scores, mut given, mut corrections, mut updates, mut upd_ms, mut critic) = (Vec::new(), 0, 0, 0, 0.0, 0);
    let mut reached = None;
    for ev in 0..a.events {
        let q = TRAIN[rng.random_range(0..TRAIN.len())];
        let reply = s.generate(&prompt(q), &gen_opts(seed.wrapping_mul(7919).wrapping_add(ev as u64), a.max_new_tokens), &mut |_| true)?;
        let u = (pref.score)(&reply.text);
        scores.push(u);
        let tail = &scores[scores.len().saturating_sub(20)..];
        if reached.is_none() && scores.len() >= 20 && tail.iter().sum::<f64>() / tail.len() as f64 >= 0.9 {
            reached = Some(ev + 1);
        }
        let liked = u >= 0.5;
        if rng.random::<f64>() < a.rated {
            let up = if rng.random::<f64>() < a.flip { !liked } else { liked };
            given += 1;
            if let FeedbackOutcome::Updated(r) = s.feedback(reply.episode_id, &Reward::thumbs(up))? {
                updates += 1;
                upd_ms += r.elapsed_s * 1000.0;
                critic += usize::from(r.critic_used);
            }
        }
        if !liked && a.corrections > 0.0 && rng.random::<f64>() < a.corrections {
            let fixed = (pref.correct)(&reply.text);
            if !fixed.trim().is_empty() && fixed.trim() != reply.text.trim() {
                if a.correction_as == "pair" {
                    if let (_, FeedbackOutcome::Updated(r)) = s.correct(reply.episode_id, &fixed)? {
                        updates += 1;
                        upd_ms += r.elapsed_s * 1000.0;
                        critic += usize::from(r.critic_used);
                    }
                } else {
                    s.demonstrate(&prompt(q), &fixed)?;
                }
                corrections += 1;
            }
        }
    }
    // Rewards still waiting (a rate-limited update) are learned before the measurement.
    if let Ok(r) = s.update() {
        updates += usize::from(r.accepted());
    }
    let (after, texts_after) = held_out(rt, &mut s, pref, seed, a.max_new_tokens)?;
    let probe = s.learner_mut().probe_stats()?.unwrap_or_default();
    let c = s.learner().counters();
    let probe_tokens = if rt.config().probe_tokens == 0 { attune::runtime::DEFAULT_PROBE_TOKENS } else { rt.config().probe_tokens };
    let n_held = (HELD_OUT.len() as u64 * EVAL_SAMPLES) as f64;
    let kl_eff = kl_efficiency(before.score, after.score, n_held, probe.kl * probe_tokens as f64);
    Ok(RunLog {
        pref: pref.name.to_string(),
        what: pref.what.to_string(),
        seed,
        before,
        after,
        events_to_90: reached,
        training_scores: scores,
        probe_kl: probe.kl,
        kl_efficiency: kl_eff,
        probe_coherence_drift: probe.coherence_drift(),
        rollbacks: c.rolled_back,
        ignored_feedback: c.ignored_feedback,
        feedback_given: given,
        corrections,
        updates,
        critic_updates: critic,
        mean_update_ms: if updates > 0 { upd_ms / updates as f64 } else { 0.0 },
        seconds: t0.elapsed().as_secs_f64(),
        sample_before: texts_before.first().cloned().unwrap_or_default(),
        sample_after: texts_after.first().cloned().unwrap_or_default(),
    })
}

/// The learner settings that differ from the library defaults, as `name=value`.
pub fn changed_settings(cfg: &LearnerConfig) -> Result<Vec<String>> {
    let (now, def) = (serde_json::to_value(cfg)?, serde_json::to_value(LearnerConfig::default())?);
    let mut out = Vec::new();
    if let (Some(n), Some(d)) = (now.as_object(), def.as_object()) {
        for (k, v) in n {
            if d.get(k) != Some(v) {
                out.push(format!("{k}={v}"));
            }
        }
    }
    Ok(out)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() {
        return f64::NAN;
    }
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        0.5 * (xs[m - 1] + xs[m])
    }
}

fn plot(runs: &[RunLog], path: &std::path::Path) -> Result<()> {
    use plotters::prelude::*;
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = runs.iter().map(|r| r.training_scores.len()).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption("Simulated users: preference score of training replies (mean of the last 20)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0usize..n, 0f64..1f64)?;
    chart.configure_mesh().x_desc("events").y_desc("score").draw()?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK, RGBColor(230, 140, 0), RGBColor(120, 60, 160)];
    for (i, r) in runs.iter().enumerate() {
        let c = colors[i % colors.len()];
        let pts: Vec<(usize, f64)> = (0..r.training_scores.len())
            .map(|e| {
                let w = &r.training_scores[(e + 1).saturating_sub(20)..=e];
                (e + 1, w.iter().sum::<f64>() / w.len() as f64)
            })
            .collect();
        chart.draw_series(LineSeries::new(pts, c.stroke_width(2)))?.label(format!("{} s{}", r.pref, r.seed)).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}

/// The quick tier's preferences.
const QUICK: [&str; 4] = ["first_word", "use_word", "ending", "length"];

pub fn run(mut a: EvalArgs) -> Result<()> {
    if a.quick {
        let explicit = |name: &str| std::env::args().any(|x| x == name || x.starts_with(&format!("{name}=")));
        if !explicit("--prefs") {
            a.prefs = QUICK.iter().map(|s| s.to_string()).collect();
        }
        if !explicit("--events") {
            a.events = 80;
        }
        if !explicit("--max-new-tokens") {
            a.max_new_tokens = 48;
        }
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let learner = crate::demo::apply_overrides(&LearnerConfig::default(), &a.set)?;
    let changed = changed_settings(&learner)?;
    let prefs: Vec<&Pref> = if a.prefs.iter().any(|p| p == "all") {
        PREFS.iter().collect()
    } else {
        a.prefs.iter().map(|n| PREFS.iter().find(|p| p.name == n).with_context(|| format!("unknown preference {n}"))).collect::<Result<_>>()?
    };
    println!(
        "attune eval: {} preferences x {} seeds, {} events, {:.0} % flipped, {:.0} % rated, corrections (as {}) for {:.0} % of disliked replies, replies up to {} tokens",
        prefs.len(),
        a.seeds.len(),
        a.events,
        100.0 * a.flip,
        100.0 * a.rated,
        a.correction_as,
        100.0 * a.corrections,
        a.max_new_tokens
    );
    println!("learner settings changed from the library defaults: {}", if changed.is_empty() { "none".to_string() } else { changed.join(", ") });
    let cfg = RuntimeConfig {
        engine: EngineConfig { model_dir: a.model.clone(), threads: a.threads, max_context: 1024, ..EngineConfig::default() },
        learner,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::new(cfg)?;
    let mut runs = Vec::new();
    for p in &prefs {
        for &seed in &a.seeds {
            let r = run_one(&rt, p, seed, &a)?;
            if let Some(path) = &a.log {
                append_log(path, &a, &changed, &rt.config().learner, &r)?;
            }
            println!(
                "{:<11} seed {seed}: held-out {:.3} -> {:.3}; events to 90 % {}; probe KL {:.4}; KL efficiency {:.3}; probe coherence drift {:+.3}; base NLL/token {:.3} -> {:.3}; repeated trigrams {:.3} -> {:.3}; rollbacks {}; ignored {}/{}; corrections {}; critic used in {}/{} updates; {:.0} s",
                r.pref,
                r.before.score,
                r.after.score,
                r.events_to_90.map_or("-".into(), |e| e.to_string()),
                r.probe_kl,
                r.kl_efficiency,
                r.probe_coherence_drift,
                r.before.base_nll,
                r.after.base_nll,
                r.before.repeated,
                r.after.repeated,
                r.rollbacks,
                r.ignored_feedback,
                r.feedback_given,
                r.corrections,
                r.critic_updates,
                r.updates,
                r.seconds
            );
            runs.push(r);
        }
    }
    println!("\n| preference | held-out before | after | events to 90 % | probe KL | KL efficiency | base NLL/token before | after | repeated trigrams before | after | rollbacks | ignored | update ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in &prefs {
        let rs: Vec<&RunLog> = runs.iter().filter(|r| r.pref == p.name).collect();
        let m = |f: &dyn Fn(&RunLog) -> f64| median(rs.iter().map(|r| f(r)).collect());
        let reached: Vec<f64> = rs.iter().filter_map(|r| r.events_to_90.map(|e| e as f64)).collect();
        println!(
            "| {} | {:.3} | {:.3} | {} ({}/{}) | {:.4} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {:.0} |",
            p.name,
            m(&|r| r.before.score),
            m(&|r| r.after.score),
            if reached.is_empty() { "-".to_string() } else { format!("{:.0}", median(reached.clone())) },
            reached.len(),
            rs.len(),
            m(&|r| r.probe_kl),
            m(&|r| r.kl_efficiency),
            m(&|r| r.before.base_nll),
            m(&|r| r.after.base_nll),
            m(&|r| r.before.repeated),
            m(&|r| r.after.repeated),
            m(&|r| r.rollbacks as f64),
            m(&|r| r.ignored_feedback as f64),
            m(&|r| r.mean_update_ms)
        );
    }
    let png = a.out.join("eval_curves.png");
    plot(&runs, &png)?;
    let json = a.out.join("eval_log.json");
    std::fs::write(&json, serde_json::to_string_pretty(&serde_json::json!({"changed_settings": changed, "flip": a.flip, "rated": a.rated, "corrections": a.corrections, "correction_as": a.correction_as, "events": a.events, "max_new_tokens": a.max_new_tokens, "runs": runs}))?)?;
    println!("\nwrote {} and {}", png.display(), json.display());
    Ok(())
}

/// Appends one run as a JSON line: when, which build, the settings and what it measured (the
/// training scores left out).
fn append_log(path: &std::path::Path, a: &EvalArgs, changed: &[String], learner: &LearnerConfig, r: &RunLog) -> Result<()> {
    use std::io::Write;
    let mut run = serde_json::to_value(r)?;
    if let Some(o) = run.as_object_mut() {
        o.remove("training_scores");
    }
    let line = serde_json::json!({
        "unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "version": env!("CARGO_PKG_VERSION"),
        "model": a.model.display().to_string(),
        "tier": if a.quick { "quick" } else { "full" },
        "events": a.events,
        "flip": a.flip,
        "rated": a.rated,
        "corrections": a.corrections,
        "correction_as": a.correction_as,
        "max_new_tokens": a.max_new_tokens,
        "changed_settings": changed,
        "learner": learner,
        "run": run,
    });
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pref(name: &str) -> &'static Pref {
        PREFS.iter().find(|p| p.name == name).expect("a preference")
    }

    #[test]
    fn every_correction_satisfies_its_preference() {
        let replies = [
            "Great question! Here are some ideas:\n1. Go for a walk.\n2. Read a book.\n- Call a friend!",
            "You could try a short walk, a warm drink and an early night. That usually helps a lot, and it costs nothing at all, which is nice.",
            "Sure! Boil it for seven minutes.",
        ];
        assert_eq!(PREFS.len(), 8);
        for p in PREFS {
            for r in replies {
                let fixed = (p.correct)(r);
                assert_eq!((p.score)(&fixed), 1.0, "{}: {r:?} -> {fixed:?}", p.name);
            }
        }
    }

    #[test]
    fn kl_efficiency_is_the_binary_kl_per_nat_spent() {
        // 0.5 -> 0.9 is d(0.9 || 0.5) = 0.9 ln 1.8 + 0.1 ln 0.2 = 0.3681 nats; spent 2 nats.
        let d = 0.9 * 1.8f64.ln() + 0.1 * 0.2f64.ln();
        assert!((kl_efficiency(0.5, 0.9, 20.0, 2.0) - d / 2.0).abs() < 1e-12);
        // From 0 the score is held half a sample above 0 (1/40 for 20 replies): finite.
        let e = kl_efficiency(0.0, 0.8, 20.0, 6.4);
        assert!(e.is_finite() && e > 0.0);
        assert_eq!(kl_efficiency(0.3, 0.3, 20.0, 1.0), 0.0);
        assert_eq!(kl_efficiency(0.0, 0.8, 20.0, 0.0), 0.0);
    }

    #[test]
    fn scores_read_what_they_say() {
        assert_eq!((pref("first_word").score)("Sure, here you go."), 1.0);
        assert_eq!((pref("first_word").score)("Surely not."), 0.0);
        assert_eq!((pref("avoid_mark").score)("Hi!"), 0.0);
        assert_eq!((pref("ending").score)("Want more?  "), 1.0);
        assert_eq!((pref("prose").score)("Try this:\n1. Walk"), 0.0);
        assert_eq!((pref("prose").score)("I was born in 1990. Then"), 1.0);
        assert_eq!((pref("greeting").score)("Hello there, Sam! How are you?"), 1.0);
        assert_eq!((pref("greeting").score)("One two three four five six Sam"), 0.0);
        assert_eq!((pref("use_word").score)("Honestly? Yes."), 1.0);
        assert_eq!((pref("topic").score)("It is cheap."), 1.0);
        let w = |n: usize| vec!["word"; n].join(" ");
        assert_eq!((pref("length").score)(&w(25)), 1.0);
        assert_eq!((pref("length").score)(&w(60)), 0.0);
        assert!(((pref("length").score)(&w(42)) - 0.5).abs() < 0.03);
        assert!((repeated_trigrams("a b c a b c") - 1.0 / 4.0).abs() < 1e-12);
        assert_eq!(repeated_trigrams("one two three four"), 0.0);
    }
}
