//! Generation: prompt rendering, the decode loop with the KV cache, sampling, stop conditions,
//! streaming with barge-in, the logits hook where an adapter plugs in, and per-token records.

pub mod cancel;
pub mod record;
pub mod sampler;

use std::time::Instant;

use half::f16;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, Sequence};
use crate::error::{Error, Result};
use crate::tokenizer::{Message, StreamDecoder, Tokenizer};
pub use cancel::{CancelHandle, Progress};
pub use record::{RecordedSampling, TokenRecord};
pub use sampler::{Sampler, SamplingConfig, MAX_TEMPERATURE, MIN_TEMPERATURE};

/// Something that changes the base logits of a position before sampling, given its hidden state.
/// The adapter of a user implements it; with no hook the base model samples unchanged.
pub trait LogitsHook {
    /// Adds the hook's change to `logits` (the repetition-penalised base logits of one position).
    fn apply(&mut self, hidden: &[f32], logits: &mut [f32]) -> Result<()>;
}

/// What to generate from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// Raw text, tokenised as is (no chat template).
    Text(String),
    /// Chat messages, rendered with the model's chat template plus the assistant header.
    Chat(Vec<Message>),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

/// Options of one generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateOptions {
    /// How tokens are drawn.
    pub sampling: SamplingConfig,
    /// At most this many new tokens (the stop token included).
    pub max_new_tokens: usize,
    /// Text that ends the reply when it appears; it is not part of the reply.
    pub stop_strings: Vec<String>,
    /// Token ids that end the reply, in addition to the model's end-of-sequence tokens.
    pub stop_tokens: Vec<u32>,
    /// Whether to keep a [`TokenRecord`] per generated token (needed for learning).
    pub record: bool,
    /// In a session, whether a chat prompt reuses the conversation's KV cache from the previous
    /// turn, prefilling only the tokens after the prefix they share (on by default).
    pub reuse_kv: bool,
    /// The prompt is run through the model in runs of at most this many tokens, so that a cancel
    /// from another thread lands within one run; 0 runs it whole.
    pub prefill_chunk: usize,
}

/// Prompt tokens per prefill run by default: on the CPU a 64-token run of SmolLM2-135M takes tens
/// of milliseconds, which bounds how late a cancel during the prefill lands.
pub const DEFAULT_PREFILL_CHUNK: usize = 64;

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            sampling: SamplingConfig::default(),
            max_new_tokens: 128,
            stop_strings: Vec::new(),
            stop_tokens: Vec::new(),
            record: false,
            reuse_kv: true,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence or stop token was generated.
    StopToken,
    /// A stop string appeared.
    StopString,
    /// `max_new_tokens` were generated.
    Length,
    /// The KV cache (context window) is full.
    ContextFull,
    /// The streaming callback asked to stop (barge-in), or the generation was cancelled from
    /// another thread ([`CancelHandle::cancel`]).
    Cancelled,
}

/// Wall-clock timings of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Time to run the prompt through the model.
    pub prefill_s: f64,
    /// Time from the call to the first sampled token.
    pub first_token_s: f64,
    /// Time spent in decode steps after the first token.
    pub decode_s: f64,
    /// Number of decode steps timed in `decode_s`.
    pub decode_steps: usize,
    /// Prompt tokens whose keys and values were already in the conversation's KV cache, so the
    /// prefill ran only the rest.
    #[serde(default)]
    pub reused_tokens: usize,
    /// Prompt tokens the prefill ran (fewer than the prompt's new tokens when it was cancelled).
    #[serde(default)]
    pub prefilled_tokens: usize,
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The reply text (stop strings and stop tokens removed).
    pub text: String,
    /// The prompt's token ids.
    pub prompt_tokens: Vec<u32>,
    /// Generated token ids, including a final stop token if one was sampled.
    pub tokens: Vec<u32>,
    /// Per-token records (empty unless `record` was set).
    pub records: Vec<TokenRecord>,
    /// The temperature the tokens were drawn at.
    pub sampling: RecordedSampling,
    /// Why generation ended.
    pub finish: FinishReason,
    /// Timings.
    pub timings: Timings,
}

/// A KV cache kept between the turns of one conversation, with the tokens it holds. The next turn's
/// prompt runs only its tokens after the longest prefix it shares with them (all of them after an
/// edit of the history). The cache holds the base model's keys and values only: the adapter acts on
/// the LM head, after the last layer, so a changed adapter does not invalidate it.
#[derive(Default)]
pub struct KvCache {
    seq: Option<Sequence>,
    tokens: Vec<u32>,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache").field("tokens", &self.tokens.len()).field("allocated", &self.seq.is_some()).finish()
    }
}

impl KvCache {
    /// Tokens whose keys and values the cache holds.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether a sequence (its KV buffers) is allocated.
    pub fn is_allocated(&self) -> bool {
        self.seq.is_some()
    }

    /// Releases the buffers too.
    pub fn release(&mut self) {
        self.tokens.clear();
        self.seq = None;
    }
}

/// The length of the longest common prefix of `a` and `b`.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A model ready to generate: the engine plus its tokenizer.
pub struct Model {
    engine: Engine,
    tokenizer: Tokenizer,
    pool: std::sync::Mutex<Vec<Sequence>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("engine", &self.engine).finish()
    }
}

impl Model {
    /// Loads the engine and the tokenizer of `cfg.model_dir`.
    pub fn load(cfg: &crate::engine::EngineConfig) -> Result<Model> {
        let engine = Engine::load(cfg)?;
        let tokenizer = Tokenizer::from_dir(&cfg.model_dir)?;
        if tokenizer.vocab_size() > engine.info().vocab_size {
            return Err(Error::model(
                &cfg.model_dir,
                format!("tokenizer has {} tokens but the graph's vocabulary is {}", tokenizer.vocab_size(), engine.info().vocab_size),
            ));
        }
        Ok(Model { engine, tokenizer, pool: std::sync::Mutex::new(Vec::new()) })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids of a prompt.
    pub fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let ids = match prompt {
            Prompt::Text(t) => {
                if t.is_empty() {
                    return Err(Error::InvalidArgument("empty prompt".into()));
                }
                self.tokenizer.encode(t)?
            }
            Prompt::Chat(msgs) => {
                if msgs.iter().all(|m| m.content.trim().is_empty()) {
                    return Err(Error::InvalidArgument("empty prompt: every chat message is empty".into()));
                }
                let text = self.tokenizer.apply_chat_template(msgs, true)?;
                self.tokenizer.encode(&text)?
            }
            Prompt::Tokens(t) => t.clone(),
        };
        if ids.is_empty() {
            return Err(Error::InvalidArgument("empty prompt".into()));
        }
        Ok(ids)
    }

    /// The user's last chat message as language-model targets: the token ids of its context (the
    /// conversation before it as the chat template renders it, up to where the message's text
    /// starts) and of its text. `None` when the last message is not a non-empty user message.
    pub fn user_text_targets(&self, msgs: &[Message]) -> Result<Option<(Vec<u32>, Vec<u32>)>> {
        let Some(last) = msgs.last() else { return Ok(None) };
        if last.role != "user" || last.content.trim().is_empty() {
            return Ok(None);
        }
        let text = self.tokenizer.apply_chat_template(msgs, false)?;
        let Some(pos) = text.rfind(last.content.as_str()) else { return Ok(None) };
        let context = self.tokenizer.encode(&text[..pos])?;
        let target = self.tokenizer.encode(&last.content)?;
        if context.is_empty() || target.is_empty() {
            return Ok(None);
        }
        Ok(Some((context, target)))
    }

    /// Takes a sequence from the pool (or makes one) and resets it.
    pub fn take_sequence(&self) -> Result<Sequence> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(mut s) => {
                s.reset();
                Ok(s)
            }
            None => self.engine.new_sequence(),
        }
    }

    /// Returns a sequence to the pool for reuse (at most two are kept).
    pub fn give_back(&self, seq: Sequence) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 2 {
            pool.push(seq);
        }
    }

    /// Teacher-forces `reply` (plus the end-of-sequence token) after `prompt_tokens` and returns one
    /// record per reply token, as if the base model had produced it: the hidden state and base
    /// log-probabilities of the position that predicts it. Used for demonstrations.
    pub fn teacher_force(&self, prompt_tokens: &[u32], reply: &str) -> Result<Vec<TokenRecord>> {
        if reply.trim().is_empty() {
            return Err(Error::InvalidArgument("empty demonstration".into()));
        }
        if prompt_tokens.is_empty() {
            return Err(Error::InvalidArgument("empty prompt".into()));
        }
        let mut reply_ids = self.tokenizer.encode(reply)?;
        if let Some(&eos) = self.engine.info().eos_token_ids.first() {
            reply_ids.push(eos);
        }
        self.teacher_force_ids(prompt_tokens, &reply_ids, 1.0)
    }

    /// Teacher-forces the token ids `reply` after `prompt_tokens` in one pass and returns one record
    /// per reply token: the hidden state of the position that predicts it and the base
    /// log-probabilities after the repetition penalty `penalty` (applied, as in generation, for
    /// every id of the prompt and of the reply so far). `behaviour_logprob` is 0 and `kept` `None`;
    /// a caller rebuilding a sampled reply fills them from what it recorded.
    pub fn teacher_force_ids(&self, prompt_tokens: &[u32], reply: &[u32], penalty: f32) -> Result<Vec<TokenRecord>> {
        if prompt_tokens.is_empty() || reply.is_empty() {
            return Err(Error::InvalidArgument("teacher forcing needs a prompt and at least one reply token".into()));
        }
        if !(penalty.is_finite() && penalty > 0.0) {
            return Err(Error::InvalidArgument(format!("repetition penalty {penalty} is invalid")));
        }
        let (v, d) = (self.engine.info().vocab_size, self.engine.info().hidden_size);
        if let Some(&bad) = reply.iter().find(|&&t| t as usize >= v) {
            return Err(Error::InvalidArgument(format!("token id {bad} is outside the vocabulary of {v}")));
        }
        // The last reply token is predicted, never fed.
        let all: Vec<u32> = prompt_tokens.iter().chain(reply[..reply.len() - 1].iter()).copied().collect();
        if all.len() + 1 > self.engine.capacity() {
            return Err(Error::ContextOverflow { prompt: all.len(), context: self.engine.capacity() });
        }
        let mut seq = self.take_sequence()?;
        // Only the rows that predict the reply's tokens (the last `reply.len()` positions) are kept:
        // a long prompt's positions would each cost a V-wide row of logits that is never read.
        let res = self.engine.forward_last(&mut seq, &all, reply.len());
        let out = res.map(|()| {
            let (mut buf, mut row_logits, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
            let p0 = prompt_tokens.len();
            (0..reply.len())
                .map(|j| {
                    // Row j is position p0 - 1 + j, the one that predicts reply[j].
                    let row = j;
                    row_logits.clear();
                    row_logits.extend_from_slice(&seq.logits()[row * v..(row + 1) * v]);
                    let seen = &all[..p0 + j];
                    sampler::apply_repetition_penalty(&mut row_logits, seen, penalty, &mut scratch);
                    sampler::log_softmax(&row_logits, &mut buf);
                    TokenRecord {
                        token: reply[j],
                        hidden: seq.hidden()[row * d..(row + 1) * d].to_vec(),
                        base_logprobs: buf.iter().map(|&x| f16::from_f32(x)).collect(),
                        behaviour_logprob: 0.0,
                        kept: None,
                    }
                })
                .collect()
        });
        self.give_back(seq);
        out
    }

    /// Generates a reply, streaming each new piece of text to `on_text`; returning `false` from it stops
    /// generation at once (barge-in). `hook` (an adapter) changes the logits before sampling.
    pub fn generate(
        &self,
        prompt: &Prompt,
        opts: &GenerateOptions,
        hook: Option<&mut dyn LogitsHook>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.generate_with(prompt, opts, hook, None, on_text)
    }

    /// [`Model::generate`] that `cancel` can stop from another thread (within one prefill chunk
    /// or one decode step); the generation then ends [`FinishReason::Cancelled`] with the tokens
    /// drawn before it.
    pub fn generate_with(
        &self,
        prompt: &Prompt,
        opts: &GenerateOptions,
        hook: Option<&mut dyn LogitsHook>,
        cancel: Option<&CancelHandle>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let prompt_tokens = self.checked_prompt(prompt, opts)?;
        let mut seq = self.take_sequence()?;
        let result = self.run_loop(&mut seq, prompt_tokens, 0, opts, hook, cancel, on_text);
        self.give_back(seq);
        result
    }

    /// [`Model::generate`] in a conversation whose KV cache `cache` keeps between turns: the
    /// prompt's tokens after the longest prefix it shares with what the cache holds are the only
    /// ones prefilled (`timings.reused_tokens` says how many were not). Afterwards the cache holds
    /// the prompt and the reply; after an error it is cleared.
    pub fn generate_cached(
        &self,
        cache: &mut KvCache,
        prompt: &Prompt,
        opts: &GenerateOptions,
        hook: Option<&mut dyn LogitsHook>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.generate_cached_with(cache, prompt, opts, hook, None, on_text)
    }

    /// [`Model::generate_cached`] that `cancel` can stop from another thread (see
    /// [`Model::generate_with`]). After a cancel during the prefill the cache holds the prompt
    /// tokens that ran.
    pub fn generate_cached_with(
        &self,
        cache: &mut KvCache,
        prompt: &Prompt,
        opts: &GenerateOptions,
        hook: Option<&mut dyn LogitsHook>,
        cancel: Option<&CancelHandle>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let prompt_tokens = self.checked_prompt(prompt, opts)?;
        let mut seq = match cache.seq.take() {
            Some(s) => s,
            None => self.engine.new_sequence()?,
        };
        // At least the prompt's last token runs, for the logits of the first reply token.
        let shared = common_prefix(&cache.tokens, &prompt_tokens).min(prompt_tokens.len() - 1);
        let kept = seq.truncate(shared);
        cache.tokens.clear();
        let result = self.run_loop(&mut seq, prompt_tokens, kept, opts, hook, cancel, on_text);
        if let Ok(g) = &result {
            // What the cache holds: the prompt and every reply token fed back (the last one drawn
            // was not), or the part of the prompt that ran before a cancel.
            cache.tokens.extend(g.prompt_tokens.iter().chain(&g.tokens).take(seq.len()));
        } else {
            seq.reset();
        }
        cache.seq = Some(seq);
        result
    }

    /// The prompt's token ids after checking the options and that the prompt fits the context.
    fn checked_prompt(&self, prompt: &Prompt, opts: &GenerateOptions) -> Result<Vec<u32>> {
        opts.sampling.validate()?;
        if opts.max_new_tokens == 0 {
            return Err(Error::InvalidArgument("max_new_tokens must be at least 1".into()));
        }
        if opts.stop_strings.iter().any(String::is_empty) {
            return Err(Error::InvalidArgument("stop strings must not be empty".into()));
        }
        let prompt_tokens = self.prompt_tokens(prompt)?;
        let capacity = self.engine.capacity();
        if prompt_tokens.len() + 1 > capacity {
            return Err(Error::ContextOverflow { prompt: prompt_tokens.len(), context: capacity });
        }
        Ok(prompt_tokens)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_loop(
        &self,
        seq: &mut Sequence,
        prompt_tokens: Vec<u32>,
        cached: usize,
        opts: &GenerateOptions,
        mut hook: Option<&mut dyn LogitsHook>,
        cancel: Option<&CancelHandle>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let start = Instant::now();
        let idle = CancelHandle::new();
        let run = cancel.unwrap_or(&idle).begin();
        let mut sampler = Sampler::new(opts.sampling)?;
        let mut stops: Vec<u32> = self.engine.info().eos_token_ids.clone();
        stops.extend_from_slice(&opts.stop_tokens);
        let mut seen: Vec<u32> = prompt_tokens.clone();
        let mut scratch = Vec::new();
        let mut logprob_buf = Vec::new();
        let mut stream = StreamDecoder::default();
        let mut text = String::new();
        let mut emitted = 0usize;
        let mut tokens = Vec::new();
        let mut records = Vec::new();
        let mut timings = Timings::default();

        // `seq` already holds the first `cached` prompt tokens.
        debug_assert_eq!(seq.len(), cached);
        let rest = &prompt_tokens[cached..];
        let chunk = if opts.prefill_chunk == 0 { rest.len() } else { opts.prefill_chunk };
        for piece in rest.chunks(chunk) {
            if run.is_cancelled() {
                break;
            }
            self.engine.forward(seq, piece, false)?;
            run.prefilled(piece.len());
            timings.prefilled_tokens += piece.len();
        }
        timings.prefill_s = start.elapsed().as_secs_f64();
        timings.reused_tokens = cached;
        let mut decode_start = None;
        let finish = loop {
            // A cancel lands here: after the prefill, or after the decode step in flight.
            if run.is_cancelled() {
                break FinishReason::Cancelled;
            }
            // The logits of the last position: penalty, record, hook, sample.
            let logits = seq.logits_mut();
            sampler::apply_repetition_penalty(logits, &seen, opts.sampling.repetition_penalty, &mut scratch);
            let base_logprobs = if opts.record {
                sampler::log_softmax(logits, &mut logprob_buf);
                Some(logprob_buf.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>())
            } else {
                None
            };
            if let Some(h) = hook.as_deref_mut() {
                let (hidden, logits) = seq.hidden_and_logits_mut();
                h.apply(hidden, logits)?;
            }
            let draw = sampler.sample(seq.logits())?;
            if let Some(base_logprobs) = base_logprobs {
                records.push(TokenRecord {
                    token: draw.token,
                    hidden: seq.hidden().to_vec(),
                    base_logprobs,
                    behaviour_logprob: draw.logprob,
                    kept: draw.kept.clone(),
                });
            }
            if tokens.is_empty() {
                timings.first_token_s = start.elapsed().as_secs_f64();
            }
            tokens.push(draw.token);
            run.generated();
            seen.push(draw.token);
            if stops.contains(&draw.token) {
                break FinishReason::StopToken;
            }
            if let Some(piece) = stream.push(&self.tokenizer, draw.token)? {
                text.push_str(&piece);
            }
            // Stop strings: cut the reply at the first one; otherwise emit all text that cannot be the
            // start of a stop string.
            if let Some((pos, _)) = opts.stop_strings.iter().filter_map(|s| text.find(s.as_str()).map(|p| (p, s))).min_by_key(|(p, _)| *p) {
                text.truncate(pos);
                if emitted < text.len() {
                    on_text(&text[emitted..]);
                }
                emitted = text.len();
                break FinishReason::StopString;
            }
            let safe = text.len() - held_back(&text, &opts.stop_strings);
            if safe > emitted {
                let keep_going = on_text(&text[emitted..safe]);
                emitted = safe;
                if !keep_going {
                    break FinishReason::Cancelled;
                }
            }
            if tokens.len() >= opts.max_new_tokens {
                break FinishReason::Length;
            }
            if seq.len() + 1 > seq.capacity() {
                break FinishReason::ContextFull;
            }
            if run.is_cancelled() {
                break FinishReason::Cancelled;
            }
            let t0 = Instant::now();
            decode_start.get_or_insert(t0);
            self.engine.forward(seq, &[draw.token], false)?;
            timings.decode_s += t0.elapsed().as_secs_f64();
            timings.decode_steps += 1;
        };
        if finish != FinishReason::Cancelled && finish != FinishReason::StopString && emitted < text.len() {
            on_text(&text[emitted..]);
        }
        Ok(Generation {
            text,
            prompt_tokens,
            tokens,
            records,
            sampling: RecordedSampling { temperature: opts.sampling.temperature, repetition_penalty: opts.sampling.repetition_penalty },
            finish,
            timings,
        })
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of a stop string (held back from
/// streaming until it is clear whether the stop string follows).
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut best = 0;
    for s in stops {
        for (i, _) in s.char_indices().skip(1) {
            if i > best && text.ends_with(&s[..i]) {
                best = i;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::held_back;

    #[test]
    fn holds_back_partial_stop_strings() {
        let stops = vec!["\nUser:".to_string()];
        assert_eq!(held_back("hello\nUs", &stops), 3);
        assert_eq!(held_back("hello", &stops), 0);
        assert_eq!(held_back("hello\n", &stops), 1);
    }
}
