//! The `attune` command line: generate, chat (with feedback), bench.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use attune::engine::EngineConfig;
use attune::generate::{GenerateOptions, Model, Prompt, SamplingConfig};
use attune::tokenizer::Message;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "attune", version, about = "On-device LLM runtime that learns from its user")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate one reply and stream it to standard output (with --user, through that user's
    /// adapter, recorded as an episode whose id is printed for later feedback).
    Generate {
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        gen: GenArgs,
        /// Generate with this user's adapter from the store.
        #[arg(long)]
        user: Option<String>,
        /// The prompt (a user message, or raw text with --raw).
        prompt: String,
        /// Use the prompt as raw text instead of a chat message.
        #[arg(long)]
        raw: bool,
    },
    /// Interactive chat with streaming replies; /good, /bad and /fix teach the user's adapter,
    /// which is saved after every change and on exit.
    Chat {
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        gen: GenArgs,
        /// The user whose adapter learns.
        #[arg(long, default_value = "local-user")]
        user: String,
        /// Keep the adapter in memory only (nothing is saved).
        #[arg(long)]
        no_save: bool,
        /// Reward sources the runtime computes, given for each reply when the next message comes:
        /// `coherence` (of the reply) and `sentiment` (VADER, of your next message), comma
        /// separated. The configuration's `rewards` apply as well.
        #[arg(long, value_delimiter = ',')]
        rewards: Vec<ChatReward>,
    },
    /// A user's saved adapter: stats, history, rollback, export, import, forget.
    User {
        #[command(flatten)]
        engine: EngineArgs,
        #[command(subcommand)]
        action: UserAction,
    },
    /// Measure prefill and decode speed, time to first token and peak memory.
    Bench(bench::BenchArgs),
    /// The adaptation demo: a simulated caller teaches the adapter on the real model.
    Demo(demo::DemoArgs),
    /// The simulated-user suite: hidden preferences learned from noisy thumbs (and corrections).
    Eval(eval::EvalArgs),
}

/// A reward source `attune chat --rewards` gives each reply.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ChatReward {
    /// The reply's coherence (base-model NLL, repetition, cut off mid-sentence).
    Coherence,
    /// The sentiment of the user's next message.
    Sentiment,
}

#[derive(Subcommand, Clone)]
enum UserAction {
    /// Counters, rewards, pending episodes and saved versions, as JSON.
    Stats { name: String },
    /// The saved versions, oldest first.
    History { name: String },
    /// Go back this many saved versions (the ones in between stay in the history).
    Rollback {
        name: String,
        #[arg(long, default_value_t = 1)]
        steps: usize,
    },
    /// Give a reply (an episode id from `generate --user`) a reward: the JSON of
    /// `attune_session_feedback_json`, e.g. '{"thumbs": true}' or '[{"coherence": {}}, {"task":
    /// [{"use_word": "Sam"}]}]'. The adapter is saved afterwards.
    Feedback { name: String, episode: u64, reward: String },
    /// Write the newest saved adapter to a file.
    Export { name: String, file: PathBuf },
    /// Replace the user's adapter with an exported file (validated first).
    Import { name: String, file: PathBuf },
    /// Delete everything stored for the user.
    Forget { name: String },
}

#[derive(Args, Clone)]
struct EngineArgs {
    /// Runtime configuration file: the same JSON as `attune_runtime_new` takes. The flags below
    /// override what it says.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model folder (default: the configuration's, else models/smollm2-135m-instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Execution providers in order of preference, comma separated (webgpu, cuda, ..., with cpu only
    /// last); per-provider options go in the --config file.
    #[arg(long, value_delimiter = ',')]
    ep: Option<Vec<String>>,
    /// Fail when a listed provider cannot be registered.
    #[arg(long)]
    strict_ep: bool,
    /// Intra-op threads (0: ONNX Runtime's default).
    #[arg(long)]
    threads: Option<usize>,
    /// Path of libonnxruntime (default: ORT_DYLIB_PATH, then make setup's .ort/).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
    /// Adapter store directory (default: the configuration's, else $XDG_DATA_HOME/attune/adapters
    /// or ~/.local/share/attune/adapters).
    #[arg(long)]
    store: Option<PathBuf>,
}

impl EngineArgs {
    /// The runtime configuration: the file's, with the flags applied over it.
    fn runtime_config(&self) -> Result<attune::runtime::RuntimeConfig> {
        let mut cfg = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                attune::runtime::RuntimeConfig::from_json(&text).with_context(|| format!("configuration {}", p.display()))?
            }
            None => attune::runtime::RuntimeConfig {
                engine: EngineConfig { model_dir: PathBuf::from("models/smollm2-135m-instruct"), execution_providers: vec!["cpu".into()], ..EngineConfig::default() },
                ..attune::runtime::RuntimeConfig::default()
            },
        };
        let e = &mut cfg.engine;
        if let Some(m) = &self.model {
            e.model_dir = m.clone();
        }
        if let Some(ep) = &self.ep {
            e.execution_providers = ep.iter().map(|n| n.as_str().into()).collect();
        }
        if self.strict_ep {
            e.strict_providers = true;
        }
        if let Some(t) = self.threads {
            e.threads = t;
        }
        if let Some(l) = &self.ort_lib {
            e.ort_library = Some(l.clone());
        }
        if let Some(s) = &self.store {
            cfg.store.dir = Some(s.clone());
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn config(&self) -> Result<EngineConfig> {
        Ok(self.runtime_config()?.engine)
    }

    /// The runtime configuration with a store: the configured one, or the per-user default.
    fn with_store(&self) -> Result<attune::runtime::RuntimeConfig> {
        let mut cfg = self.runtime_config()?;
        if cfg.store.dir.is_none() {
            let base = std::env::var_os("XDG_DATA_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
                .context("no store directory: pass --store DIR (neither XDG_DATA_HOME nor HOME is set)")?;
            cfg.store.dir = Some(base.join("attune/adapters"));
        }
        Ok(cfg)
    }
}

#[derive(Args, Clone)]
struct GenArgs {
    /// Sampling temperature (0: greedy). Default: 0 for `generate`; for `chat`, 0.7.
    #[arg(long)]
    temperature: Option<f32>,
    /// Greedy replies (the same as --temperature 0).
    #[arg(long, conflicts_with = "temperature")]
    greedy: bool,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Min-p truncation. Default: 0 for `generate`; for `chat`, 0.05.
    #[arg(long)]
    min_p: Option<f32>,
    /// Repetition penalty (1: none). Default: 1 for `generate`; for `chat`, 1.1.
    #[arg(long)]
    repetition_penalty: Option<f32>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Maximum new tokens.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Stop strings (repeatable).
    #[arg(long)]
    stop: Vec<String>,
}

/// `attune chat`'s sampling when no flag says otherwise: its replies are samples of the policy that
/// learns from them (greedy replies of a 135M model loop, and are not what the learner's ratios
/// assume), at a temperature that keeps them on topic, with min-p truncation and a mild
/// repetition penalty.
const CHAT_TEMPERATURE: f32 = 0.7;
const CHAT_MIN_P: f32 = 0.05;
const CHAT_REPETITION_PENALTY: f32 = 1.1;

impl GenArgs {
    /// `generate`'s options: greedy unless asked otherwise.
    fn options(&self) -> GenerateOptions {
        self.options_with(0.0, 0.0, 1.0)
    }

    /// `chat`'s options: sampled unless asked otherwise.
    fn chat_options(&self) -> GenerateOptions {
        self.options_with(CHAT_TEMPERATURE, CHAT_MIN_P, CHAT_REPETITION_PENALTY)
    }

    fn options_with(&self, temperature: f32, min_p: f32, repetition_penalty: f32) -> GenerateOptions {
        GenerateOptions {
            sampling: SamplingConfig {
                temperature: if self.greedy { 0.0 } else { self.temperature.unwrap_or(temperature) },
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p.unwrap_or(min_p),
                repetition_penalty: self.repetition_penalty.unwrap_or(repetition_penalty),
                seed: self.seed,
            },
            max_new_tokens: self.max_new_tokens,
            stop_strings: self.stop.clone(),
            ..GenerateOptions::default()
        }
    }
}

mod bench;
mod demo;
mod eval;

fn main() -> Result<()> {
    // ONNX Runtime warns at every load that the converter's optional `logits_to_keep` input (an
    // initializer that is also an input, on purpose) is not constant-folded; RUST_LOG=warn shows it.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,ort::logging=error")).init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Generate { engine, gen, prompt, raw, user } => {
            let p = if raw { Prompt::Text(prompt) } else { Prompt::Chat(vec![Message::user(prompt)]) };
            let out = std::io::stdout();
            let mut stream = |piece: &str| {
                let mut o = out.lock();
                let _ = o.write_all(piece.as_bytes());
                let _ = o.flush();
                true
            };
            match user {
                None => {
                    let model = Model::load(&engine.config()?)?;
                    let g = model.generate(&p, &gen.options(), None, &mut stream)?;
                    println!();
                    log::info!("finish {:?}, {} tokens, {:?}", g.finish, g.tokens.len(), g.timings);
                }
                Some(name) => {
                    let rt = attune::runtime::Runtime::new(engine.with_store()?)?;
                    let mut s = rt.open_session(&name)?;
                    let reply = s.generate(&p, &gen.options(), &mut stream)?;
                    println!();
                    eprintln!("(episode {} for user {name}; its feedback can be given later)", reply.episode_id);
                }
            }
        }
        Cmd::Chat { engine, gen, user, no_save, rewards } => chat(&engine, &gen, &user, !no_save, &rewards)?,
        Cmd::User { engine, action } => user_cmd(&engine, action)?,
        Cmd::Bench(args) => bench::run(args)?,
        Cmd::Demo(args) => demo::run(args)?,
        Cmd::Eval(args) => eval::run(args)?,
    }
    Ok(())
}

/// A user's stored adapter, without a chat.
fn user_cmd(engine: &EngineArgs, action: UserAction) -> Result<()> {
    use attune::runtime::Runtime;
    let rt = Runtime::new(engine.with_store()?)?;
    let store = rt.store().context("no adapter store")?;
    match action {
        UserAction::Stats { name } => {
            let s = rt.open_session(&name)?;
            let l = s.learner();
            let versions = store.list_versions(&name)?.len();
            let v = serde_json::json!({
                "user": name,
                "saved_versions": versions,
                "counters": l.counters(),
                "rewards": l.history(),
                "pending_episodes": l.pending_episodes(),
                "beta": l.beta(),
                "lr": l.lr(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        UserAction::History { name } => {
            for v in store.list_versions(&name)? {
                println!("v{:<6} {:?} {:>9} bytes  updated {}{}", v.seq, v.kind, v.file_bytes, v.updated_unix.map_or("-".into(), |t| t.to_string()), v.problem.map_or(String::new(), |p| format!("  DAMAGED: {p}")));
            }
        }
        UserAction::Rollback { name, steps } => {
            let mut s = rt.open_session(&name)?;
            s.rollback(steps)?;
            println!("rolled {name} back {steps} version(s)");
        }
        UserAction::Feedback { name, episode, reward } => {
            let reward = attune::learn::sources::reward_from_json(&reward)?;
            let mut s = rt.open_session(&name)?;
            let outcome = s.feedback(episode, &reward)?;
            print_outcome(&outcome);
            let v = s.save()?;
            println!("saved {name}'s adapter as version {v}");
        }
        UserAction::Export { name, file } => {
            let bytes = store.export(&name)?;
            std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
            println!("exported {} bytes to {}", bytes.len(), file.display());
        }
        UserAction::Import { name, file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let mut s = rt.open_session(&name)?;
            s.import(&bytes)?;
            println!("imported {} into {name}", file.display());
        }
        UserAction::Forget { name } => {
            let existed = rt.forget(&name)?;
            println!("{}", if existed { format!("forgot {name}") } else { format!("{name} had nothing stored") });
        }
    }
    Ok(())
}

/// What a feedback did, on standard error: the update (if one ran) and each reward source's share.
fn print_outcome(o: &attune::learn::FeedbackOutcome) {
    use attune::learn::FeedbackOutcome;
    match o {
        FeedbackOutcome::Updated(r) => {
            eprintln!("(update: {:?}, KL {:.4}, grad norm {:.3})", r.outcome, r.mean_kl, r.grad_norm);
            for p in &r.rewards {
                eprintln!("(  episode {} {}: {:.3} -> {:+.3} x {} = {:+.3})", p.episode_id, p.source, p.raw, p.value, p.weight, p.contribution);
            }
        }
        FeedbackOutcome::Queued => eprintln!("(feedback queued)"),
        FeedbackOutcome::Ignored(why) => eprintln!("(feedback ignored: {why:?})"),
    }
}

fn chat(engine: &EngineArgs, gen: &GenArgs, user: &str, save: bool, rewards: &[ChatReward]) -> Result<()> {
    use attune::learn::{Reward, RewardSource, SentimentOf};
    use attune::runtime::Runtime;
    let cfg = if save { engine.with_store()? } else { engine.runtime_config()? };
    let rt = Runtime::new(cfg)?;
    let mut session = rt.open_session(user)?;
    let mut history: Vec<Message> = Vec::new();
    let mut last: Option<(u64, Vec<Message>)> = None;
    let stdin = std::io::stdin();
    let mut opts = gen.chat_options();
    let s = &opts.sampling;
    if s.temperature == 0.0 {
        eprintln!("(greedy replies, as --greedy or --temperature 0 asks; they are learned at the learner's greedy_tau)");
    } else {
        eprintln!(
            "(sampled replies: temperature {}, min-p {}, top-p {}, repetition penalty {}; --greedy for greedy ones)",
            s.temperature, s.min_p, s.top_p, s.repetition_penalty
        );
    }
    // Saving after every change means an interrupted chat (Ctrl-C, a closed terminal) loses
    // nothing that was taught.
    let mut dirty = false;
    let save_now = |session: &mut attune::runtime::UserSession, dirty: &mut bool| {
        if rt.store().is_some() && *dirty {
            match session.save() {
                Ok(v) => {
                    *dirty = false;
                    eprintln!("(saved as version {v})");
                }
                Err(e) => eprintln!("(not saved: {e})"),
            }
        }
    };
    eprintln!("attune chat: type a message. /good or /bad rates the last reply, /rate JSON gives it any reward,");
    eprintln!("/fix TEXT teaches the reply you wanted instead of the last one, /reset clears the conversation, /save saves the adapter, /quit exits");
    eprintln!("(the adapter is saved after every change).");
    let report = print_outcome;
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).context("reading standard input")? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']).to_string();
        let cmd = line.trim();
        if cmd.is_empty() {
            continue;
        }
        if cmd == "/quit" || cmd == "/exit" {
            break;
        }
        if cmd == "/reset" {
            history.clear();
            last = None;
            eprintln!("(conversation cleared)");
            continue;
        }
        if cmd == "/save" {
            match session.save() {
                Ok(v) => eprintln!("(adapter saved as version {v})"),
                Err(e) => eprintln!("(not saved: {e})"),
            }
            continue;
        }
        if cmd == "/good" || cmd == "/bad" {
            match &last {
                Some((id, _)) => match session.feedback(*id, &Reward::thumbs(cmd == "/good")) {
                    Ok(o) => {
                        report(&o);
                        dirty = true;
                        save_now(&mut session, &mut dirty);
                    }
                    Err(e) => eprintln!("({e})"),
                },
                None => eprintln!("(no reply to rate yet)"),
            }
            continue;
        }
        if let Some(json) = cmd.strip_prefix("/rate ") {
            match (&last, attune::learn::sources::reward_from_json(json)) {
                (Some((id, _)), Ok(reward)) => match session.feedback(*id, &reward) {
                    Ok(o) => {
                        report(&o);
                        dirty = true;
                        save_now(&mut session, &mut dirty);
                    }
                    Err(e) => eprintln!("({e})"),
                },
                (None, _) => eprintln!("(no reply to rate yet)"),
                (_, Err(e)) => eprintln!("({e})"),
            }
            continue;
        }
        if let Some(fix) = cmd.strip_prefix("/fix ") {
            // "I wanted this instead of your last reply": learned as a pair with that reply.
            match &last {
                Some((id, _)) => match session.correct(*id, fix) {
                    Ok((_, o)) => {
                        report(&o);
                        if let attune::learn::FeedbackOutcome::Updated(r) = &o {
                            eprintln!("(correction learned as a pair: margin {:.3} nats before the step)", r.pair_margin.unwrap_or(0.0));
                        }
                        dirty = true;
                        save_now(&mut session, &mut dirty);
                    }
                    Err(e) => eprintln!("({e})"),
                },
                None => eprintln!("(no reply to correct yet)"),
            }
            continue;
        }
        // The computed rewards of the reply before this message: its coherence, and the sentiment
        // of what the user says next.
        if let (Some((id, _)), false) = (&last, rewards.is_empty()) {
            let parts = rewards
                .iter()
                .map(|r| match r {
                    ChatReward::Coherence => (1.0, RewardSource::Coherence(Default::default())),
                    ChatReward::Sentiment => (1.0, RewardSource::Sentiment(SentimentOf::Text(line.clone()))),
                })
                .collect();
            match session.feedback(*id, &Reward { parts }) {
                Ok(o) => {
                    report(&o);
                    dirty = true;
                }
                Err(e) => eprintln!("({e})"),
            }
        }
        history.push(Message::user(line));
        opts.sampling.seed = opts.sampling.seed.wrapping_add(1);
        let out = std::io::stdout();
        let reply = session.generate(&Prompt::Chat(history.clone()), &opts, &mut |piece| {
            let mut o = out.lock();
            let _ = o.write_all(piece.as_bytes());
            let _ = o.flush();
            true
        })?;
        println!();
        last = Some((reply.episode_id, history.clone()));
        history.push(Message::assistant(reply.text));
    }
    save_now(&mut session, &mut dirty);
    Ok(())
}
