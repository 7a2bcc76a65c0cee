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
    /// Generate one reply and stream it to standard output.
    Generate {
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        gen: GenArgs,
        /// The prompt (a user message, or raw text with --raw).
        prompt: String,
        /// Use the prompt as raw text instead of a chat message.
        #[arg(long)]
        raw: bool,
    },
    /// Interactive chat with streaming replies; /good, /bad and /fix teach the user's adapter.
    Chat {
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        gen: GenArgs,
        /// The user whose adapter learns.
        #[arg(long, default_value = "local-user")]
        user: String,
        /// Adapter store directory (adapters are kept in memory only without it).
        #[arg(long)]
        store: Option<PathBuf>,
    },
    /// Measure prefill and decode speed, time to first token and peak memory.
    Bench(bench::BenchArgs),
    /// The adaptation demo: a simulated caller teaches the adapter on the real model.
    Demo(demo::DemoArgs),
    /// The simulated-user suite: hidden preferences learned from noisy thumbs (and corrections).
    Eval(eval::EvalArgs),
}

#[derive(Args, Clone)]
struct EngineArgs {
    /// Model folder.
    #[arg(long, default_value = "models/smollm2-135m-instruct")]
    model: PathBuf,
    /// Execution providers in order of preference, comma separated (cpu, webgpu, cuda, ...).
    #[arg(long, default_value = "cpu", value_delimiter = ',')]
    ep: Vec<String>,
    /// Fail when a listed provider cannot be registered.
    #[arg(long)]
    strict_ep: bool,
    /// Intra-op threads (0: ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Path of libonnxruntime (default: ORT_DYLIB_PATH, then make setup's .ort/).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
}

impl EngineArgs {
    fn config(&self) -> EngineConfig {
        EngineConfig {
            model_dir: self.model.clone(),
            ort_library: self.ort_lib.clone(),
            execution_providers: self.ep.clone(),
            strict_providers: self.strict_ep,
            threads: self.threads,
            ..EngineConfig::default()
        }
    }
}

#[derive(Args, Clone)]
struct GenArgs {
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Maximum new tokens.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Stop strings (repeatable).
    #[arg(long)]
    stop: Vec<String>,
}

impl GenArgs {
    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            sampling: SamplingConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repetition_penalty,
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
        Cmd::Generate { engine, gen, prompt, raw } => {
            let model = Model::load(&engine.config())?;
            let p = if raw { Prompt::Text(prompt) } else { Prompt::Chat(vec![Message::user(prompt)]) };
            let out = std::io::stdout();
            let g = model.generate(&p, &gen.options(), None, &mut |piece| {
                let mut o = out.lock();
                let _ = o.write_all(piece.as_bytes());
                let _ = o.flush();
                true
            })?;
            println!();
            log::info!("finish {:?}, {} tokens, {:?}", g.finish, g.tokens.len(), g.timings);
        }
        Cmd::Chat { engine, gen, user, store } => chat(&engine, &gen, &user, store)?,
        Cmd::Bench(args) => bench::run(args)?,
        Cmd::Demo(args) => demo::run(args)?,
        Cmd::Eval(args) => eval::run(args)?,
    }
    Ok(())
}

fn chat(engine: &EngineArgs, gen: &GenArgs, user: &str, store: Option<PathBuf>) -> Result<()> {
    use attune::learn::{FeedbackOutcome, Reward};
    use attune::runtime::{Runtime, RuntimeConfig};
    let mut cfg = RuntimeConfig { engine: engine.config(), ..RuntimeConfig::default() };
    cfg.store.dir = store;
    let rt = Runtime::new(cfg)?;
    let mut session = rt.open_session(user)?;
    let mut history: Vec<Message> = Vec::new();
    let mut last: Option<(u64, Vec<Message>)> = None;
    let stdin = std::io::stdin();
    let mut opts = gen.options();
    if opts.sampling.temperature == 0.0 {
        // Learning needs sampled replies; greedy chat would train at the learner's temperature.
        opts.sampling.temperature = 0.7;
    }
    eprintln!("attune chat: type a message. /good or /bad rates the last reply, /fix TEXT teaches the reply you wanted,");
    eprintln!("/reset clears the conversation, /save saves the adapter (with --store), /quit exits.");
    let report = |o: &FeedbackOutcome| match o {
        FeedbackOutcome::Updated(r) => eprintln!("(update: {:?}, KL {:.4}, grad norm {:.3})", r.outcome, r.mean_kl, r.grad_norm),
        FeedbackOutcome::Queued => eprintln!("(feedback queued)"),
        FeedbackOutcome::Ignored(why) => eprintln!("(feedback ignored: {why:?})"),
    };
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
                    Ok(o) => report(&o),
                    Err(e) => eprintln!("({e})"),
                },
                None => eprintln!("(no reply to rate yet)"),
            }
            continue;
        }
        if let Some(fix) = cmd.strip_prefix("/fix ") {
            match &last {
                Some((_, ctx)) => {
                    let r = session.demonstrate(&Prompt::Chat(ctx.clone()), fix).and_then(|_| session.update());
                    match r {
                        Ok(rep) => eprintln!("(learned the correction: {:?}, KL {:.4})", rep.outcome, rep.mean_kl),
                        Err(e) => eprintln!("({e})"),
                    }
                }
                None => eprintln!("(no reply to correct yet)"),
            }
            continue;
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
    Ok(())
}
