//! `attune demo`: the adaptation demo on the real model.
//!
//! A simulated caller named Sam has a hidden preference: short answers that greet him by name. He
//! rates each reply thumbs up or down with probability `sigmoid(k (U - m))` of the reply's utility U.
//! The adapter learns from those thumbs alone; the demo shows the preference score, thumbs-up rate,
//! exact KL to the base model on probe prompts and held-out perplexity drift as it goes, then the
//! same held-out prompts answered before and after, a reward curve (PNG) and a JSON log.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use attune::engine::EngineConfig;
use attune::generate::{GenerateOptions, Prompt, SamplingConfig};
use attune::learn::{Algorithm, FeedbackOutcome, LearnerConfig, Reward, UpdateReport};
use attune::runtime::{Runtime, RuntimeConfig, UserSession};
use attune::tokenizer::Message;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Options of `attune demo`.
#[derive(clap::Args, Clone)]
pub struct DemoArgs {
    /// Model folder.
    #[arg(long, default_value = "models/smollm2-135m-instruct")]
    pub model: PathBuf,
    /// Output folder for the log, the reward curve and the replies.
    #[arg(long, default_value = "target/demo")]
    pub out: PathBuf,
    /// Learning algorithm(s), comma separated: reinforce, a2c, ppo, trpo, soft_q.
    #[arg(long, default_value = "reinforce,a2c", value_delimiter = ',')]
    pub algorithms: Vec<String>,
    /// Rated episodes per algorithm.
    #[arg(long, default_value_t = 120)]
    pub episodes: usize,
    /// Print a table row every this many episodes.
    #[arg(long, default_value_t = 20)]
    pub every: usize,
    /// Seed of the simulated caller and of sampling.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Intra-op threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// How the caller rates: `thumbs` (up with probability sigmoid(8 (U - 0.5))), `stars` (1 to 5:
    /// round(1 + 4 U + noise), noise N(0, 0.5)), or `exact` (the utility itself, for comparisons).
    #[arg(long, default_value = "thumbs")]
    pub rating: String,
    /// Overrides a learner setting, as `name=value` with a JSON value (`lr`, `a_lr_mult`,
    /// `adapter.rank`, ...); repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
}

/// Applies `name=value` overrides (dotted names reach into nested settings) to a learner
/// configuration through its JSON form, so that unknown names and wrong types are refused.
pub fn apply_overrides(cfg: &LearnerConfig, sets: &[String]) -> Result<LearnerConfig> {
    let mut v = serde_json::to_value(cfg)?;
    for s in sets {
        let (name, value) = s.split_once('=').with_context(|| format!("--set {s}: expected NAME=VALUE"))?;
        let value: serde_json::Value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        let mut slot = &mut v;
        for part in name.split('.') {
            slot = slot.get_mut(part).with_context(|| format!("--set {s}: no setting named {name}"))?;
        }
        *slot = value;
    }
    let out: LearnerConfig = serde_json::from_value(v).context("--set")?;
    out.validate()?;
    Ok(out)
}

const CALLER: &str = "Sam";
const SYSTEM: &str = "You are a friendly phone assistant. The caller's name is Sam.";

/// Everyday requests the caller makes while the adapter learns.
const TRAIN_PROMPTS: [&str; 12] = [
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
];

/// Held-out requests: answered before and after, never trained on.
const EVAL_PROMPTS: [&str; 4] = [
    "What's a healthy snack for the afternoon?",
    "How can I be more productive at work?",
    "What should I bring to a picnic?",
    "How do I stay warm in winter?",
];

/// The caller's hidden utility of a reply, in [0, 1]: half for greeting him by name early, half for
/// being short.
pub fn utility(reply: &str) -> f64 {
    let words: Vec<&str> = reply.split_whitespace().collect();
    let greets = words.iter().take(6).any(|w| w.trim_matches(|c: char| !c.is_alphanumeric()) == CALLER);
    let n = words.len() as f64;
    let short = ((60.0 - n) / (60.0 - 20.0)).clamp(0.0, 1.0);
    0.5 * f64::from(u8::from(greets)) + 0.5 * short
}

/// The caller's rating of a reply of utility `u`, and whether it counts as a thumbs up.
fn rate(kind: &str, u: f64, rng: &mut impl Rng) -> Result<(bool, Reward)> {
    Ok(match kind {
        "thumbs" => {
            let up = rng.random::<f64>() < 1.0 / (1.0 + (-8.0 * (u - 0.5)).exp());
            (up, Reward::thumbs(up))
        }
        "stars" => {
            // Box-Muller normal noise.
            let (a, b): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
            let noise = 0.5 * (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos();
            let stars = (1.0 + 4.0 * u + noise).round().clamp(1.0, 5.0) as u8;
            (stars >= 4, Reward::stars(stars))
        }
        "exact" => (u >= 0.5, Reward::scalar(u as f32)),
        other => anyhow::bail!("unknown rating {other} (thumbs, stars, exact)"),
    })
}

fn prompt(q: &str) -> Prompt {
    Prompt::Chat(vec![Message::system(SYSTEM), Message::user(q)])
}

#[derive(Serialize, Clone)]
struct EpisodeLog {
    episode: usize,
    prompt: String,
    reply_words: usize,
    utility: f64,
    thumbs_up: bool,
    update: Option<UpdateReport>,
}

#[derive(Serialize, Clone)]
struct EvalLog {
    prompt: String,
    reply: String,
    utility: f64,
}

#[derive(Serialize, Clone)]
struct RunLog {
    algorithm: String,
    episodes: Vec<EpisodeLog>,
    before: Vec<EvalLog>,
    after: Vec<EvalLog>,
    before_score: f64,
    after_score: f64,
    events_to_reach_baseline_plus_0_2: Option<usize>,
    final_probe_kl: f64,
    final_nll_drift: f64,
    rollbacks: u64,
    mean_update_ms: f64,
    mean_generate_ms: f64,
    seconds: f64,
}

fn gen_opts(seed: u64) -> GenerateOptions {
    GenerateOptions {
        sampling: SamplingConfig { temperature: 0.7, seed, ..SamplingConfig::default() },
        max_new_tokens: 64,
        ..GenerateOptions::default()
    }
}

/// Seeded samples per held-out prompt in the before/after evaluation.
const EVAL_SAMPLES: u64 = 4;

/// Scores the held-out prompts, `EVAL_SAMPLES` seeded samples each, without recording episodes.
fn evaluate(s: &mut UserSession, seed: u64) -> Result<(f64, Vec<EvalLog>)> {
    let mut logs = Vec::new();
    for (i, q) in EVAL_PROMPTS.iter().enumerate() {
        for k in 0..EVAL_SAMPLES {
            let g = s.generate_unrecorded(&prompt(q), &gen_opts(seed * 1000 + i as u64 * 10 + k), &mut |_| true)?;
            logs.push(EvalLog { prompt: q.to_string(), utility: utility(&g.text), reply: g.text });
        }
    }
    let mean = logs.iter().map(|l| l.utility).sum::<f64>() / logs.len() as f64;
    Ok((mean, logs))
}

fn algorithm(name: &str) -> Result<Algorithm> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).with_context(|| format!("unknown algorithm {name}"))
}

fn run_one(rt: &std::sync::Arc<Runtime>, alg_name: &str, a: &DemoArgs) -> Result<RunLog> {
    let t0 = Instant::now();
    let user = format!("demo-caller-{alg_name}");
    rt.forget(&user)?;
    let mut s = rt.open_session(&user)?;
    println!("\n== {alg_name}: measuring the no-adaptation baseline on {} held-out prompts ==", EVAL_PROMPTS.len());
    let (before_score, before) = evaluate(&mut s, a.seed)?;
    println!("baseline preference score {before_score:.3}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let bar = ProgressBar::new(a.episodes as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} episodes  {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let mut logs: Vec<EpisodeLog> = Vec::new();
    let mut reached = None;
    let (mut upd_ms, mut upd_n, mut gen_ms) = (0.0, 0usize, 0.0);
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>12} {:>10} {:>10} {:>13}",
        "episode",
        format!("pref({})", a.every),
        format!("thumbs({})", a.every),
        "probe KL",
        "NLL drift %",
        "rollbacks",
        "critic %",
        "critic skill"
    );
    for ep in 0..a.episodes {
        let q = TRAIN_PROMPTS[rng.random_range(0..TRAIN_PROMPTS.len())];
        let tg = Instant::now();
        let reply = s.generate(&prompt(q), &gen_opts(a.seed.wrapping_mul(7919).wrapping_add(ep as u64)), &mut |_| true)?;
        gen_ms += tg.elapsed().as_secs_f64() * 1000.0;
        let u = utility(&reply.text);
        let (up, reward) = rate(&a.rating, u, &mut rng)?;
        let outcome = s.feedback(reply.episode_id, &reward)?;
        let update = match outcome {
            FeedbackOutcome::Updated(r) => {
                upd_ms += r.elapsed_s * 1000.0;
                upd_n += 1;
                Some(r)
            }
            _ => None,
        };
        logs.push(EpisodeLog { episode: ep + 1, prompt: q.to_string(), reply_words: reply.text.split_whitespace().count(), utility: u, thumbs_up: up, update });
        let recent: Vec<&EpisodeLog> = logs.iter().rev().take(a.every).collect();
        let pref = recent.iter().map(|l| l.utility).sum::<f64>() / recent.len() as f64;
        if reached.is_none() && logs.len() >= a.every && pref >= before_score + 0.2 {
            reached = Some(ep + 1);
        }
        bar.inc(1);
        bar.set_message(format!("pref {pref:.2}"));
        if (ep + 1) % a.every == 0 {
            let up_rate = recent.iter().filter(|l| l.thumbs_up).count() as f64 / recent.len() as f64;
            // Updates in the window whose A2C advantages came from the critic (the moving-average
            // baseline stands in while the critic misses by more than it), and the critic's skill
            // over that baseline at the window's last update.
            let updates: Vec<&UpdateReport> = recent.iter().filter_map(|l| l.update.as_ref()).collect();
            let critic = 100.0 * updates.iter().filter(|u| u.critic_used).count() as f64 / updates.len().max(1) as f64;
            let skill = updates.first().and_then(|u| u.critic_skill).map_or_else(|| "-".to_string(), |x| format!("{x:.3}"));
            let probe = s.learner_mut().probe_stats()?.unwrap_or_default();
            let drift = if probe.base_nll > 0.0 { 100.0 * (probe.nll - probe.base_nll) / probe.base_nll } else { 0.0 };
            bar.suspend(|| {
                println!(
                    "{:>8} {:>10.3} {:>10.2} {:>10.4} {:>12.2} {:>10} {:>10.0} {:>13}",
                    ep + 1,
                    pref,
                    up_rate,
                    probe.kl,
                    drift,
                    s.learner().counters().rolled_back,
                    critic,
                    skill
                )
            });
        }
    }
    bar.finish_and_clear();
    let (after_score, after) = evaluate(&mut s, a.seed)?;
    let probe = s.learner_mut().probe_stats()?.unwrap_or_default();
    let drift = if probe.base_nll > 0.0 { (probe.nll - probe.base_nll) / probe.base_nll } else { 0.0 };
    if rt.store().is_some() {
        s.save()?;
    }
    let rolled = s.learner().counters().rolled_back;
    Ok(RunLog {
        algorithm: alg_name.to_string(),
        episodes: logs,
        before,
        after,
        before_score,
        after_score,
        events_to_reach_baseline_plus_0_2: reached,
        final_probe_kl: probe.kl,
        final_nll_drift: drift,
        rollbacks: rolled,
        mean_update_ms: if upd_n > 0 { upd_ms / upd_n as f64 } else { 0.0 },
        mean_generate_ms: gen_ms / a.episodes.max(1) as f64,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn plot(runs: &[RunLog], every: usize, path: &std::path::Path) -> Result<()> {
    use plotters::prelude::*;
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = runs.iter().map(|r| r.episodes.len()).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption("Simulated caller: preference score (moving mean)", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0usize..n, 0f64..1f64)?;
    chart.configure_mesh().x_desc("rated episodes").y_desc("utility").draw()?;
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for (i, r) in runs.iter().enumerate() {
        let c = colors[i % colors.len()];
        let pts: Vec<(usize, f64)> = (0..r.episodes.len())
            .map(|e| {
                let lo = (e + 1).saturating_sub(every);
                let w = &r.episodes[lo..=e];
                (e + 1, w.iter().map(|l| l.utility).sum::<f64>() / w.len() as f64)
            })
            .collect();
        chart.draw_series(LineSeries::new(pts, c.stroke_width(2)))?.label(r.algorithm.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        let base = r.before_score;
        chart.draw_series(LineSeries::new(vec![(0, base), (n, base)], c.mix(0.4)))?;
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}

pub fn run(a: DemoArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut cfg = RuntimeConfig {
        engine: EngineConfig { model_dir: a.model.clone(), threads: a.threads, max_context: 1024, ..EngineConfig::default() },
        // The library's learner defaults but one: the simulated caller rates a reply every second
        // or so, far faster than a person does; the rate limit (30 updates a minute) would batch
        // updates by machine speed and make runs differ from machine to machine, so the demo
        // switches it off (and says so).
        learner: LearnerConfig { max_updates_per_minute: 0, ..LearnerConfig::default() },
        ..RuntimeConfig::default()
    };
    cfg.learner = apply_overrides(&cfg.learner, &a.set)?;
    cfg.store.dir = Some(a.out.join("adapters"));
    let changed = crate::eval::changed_settings(&cfg.learner)?;
    println!("learner settings changed from the library defaults: {} (the simulated caller rates far faster than a person)", changed.join(", "));
    let mut runs = Vec::new();
    for name in &a.algorithms {
        let mut c = cfg.clone();
        c.learner.algorithm = algorithm(name)?;
        let rt = Runtime::new(c)?;
        runs.push(run_one(&rt, name, &a)?);
    }
    println!("\n== before / after on held-out prompts ==");
    for r in &runs {
        println!("\n[{}] preference score {:.3} -> {:.3}", r.algorithm, r.before_score, r.after_score);
        for (b, af) in r.before.iter().zip(&r.after).step_by(EVAL_SAMPLES as usize) {
            println!("Q: {}\n  before ({:.2}): {}\n  after  ({:.2}): {}", b.prompt, b.utility, b.reply.replace('\n', " "), af.utility, af.reply.replace('\n', " "));
        }
    }
    println!("\n{:<10} {:>8} {:>8} {:>14} {:>10} {:>12} {:>10} {:>10} {:>10}", "algorithm", "before", "after", "events(+0.2)", "probe KL", "NLL drift %", "rollbacks", "upd ms", "gen ms");
    for r in &runs {
        println!(
            "{:<10} {:>8.3} {:>8.3} {:>14} {:>10.4} {:>12.2} {:>10} {:>10.1} {:>10.0}",
            r.algorithm,
            r.before_score,
            r.after_score,
            r.events_to_reach_baseline_plus_0_2.map_or("-".to_string(), |e| e.to_string()),
            r.final_probe_kl,
            100.0 * r.final_nll_drift,
            r.rollbacks,
            r.mean_update_ms,
            r.mean_generate_ms
        );
    }
    let png = a.out.join("reward_curve.png");
    plot(&runs, a.every, &png)?;
    let json = a.out.join("demo_log.json");
    std::fs::write(&json, serde_json::to_string_pretty(&runs)?)?;
    println!("\nwrote {} and {}", png.display(), json.display());
    Ok(())
}
