//! Episodes (one reply and its per-token records) and the bounded buffer where they wait for
//! feedback.

use std::collections::VecDeque;

use crate::adapter::{BaseScratch, BaseStats, LoraHead};
use crate::error::{Error, Result};
use crate::generate::{RecordedSampling, TokenRecord};

/// What an episode is learned as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpisodeKind {
    /// A sampled reply that waits for a reward.
    Sampled,
    /// A demonstration, teacher-forced: learned with `c_t = 1` and no KL term, without feedback.
    Demonstration,
}

/// One reply with what learning needs.
#[derive(Debug, Clone)]
pub struct Episode {
    /// The id feedback refers to.
    pub id: u64,
    /// The prompt's token ids (episodes with the same prompt form RLOO groups).
    pub prompt: Vec<u32>,
    /// One record per generated token.
    pub tokens: Vec<TokenRecord>,
    /// How the reply was sampled.
    pub sampling: RecordedSampling,
    /// The adapter version (accepted updates so far) the reply was sampled with.
    pub created_step: u64,
    /// Sampled or demonstration.
    pub kind: EpisodeKind,
    pub(crate) tau: f32,
    pub(crate) base: Vec<BaseStats>,
    pub(crate) reward: Option<f64>,
}

impl Episode {
    /// An episode whose records are not checked yet; see [`Episode::prepare`].
    pub(crate) fn new(id: u64, prompt: Vec<u32>, tokens: Vec<TokenRecord>, sampling: RecordedSampling, created_step: u64, kind: EpisodeKind) -> Episode {
        Episode { id, prompt, tokens, sampling, created_step, kind, tau: 0.0, base: Vec::new(), reward: None }
    }

    /// Checks every record against the adapter's vocabulary and hidden size and computes the base
    /// statistics at the training temperature `tau` (O(V) per token, once).
    pub(crate) fn prepare(&mut self, head: &LoraHead, tau: f32, scratch: &mut BaseScratch) -> Result<()> {
        let (hidden_size, vocab, top_k) = (head.hidden_size(), head.vocab_size(), head.config().top_k);
        if self.tokens.is_empty() {
            return Err(Error::InvalidArgument("an episode needs at least one token record".into()));
        }
        if !(self.sampling.temperature.is_finite() && self.sampling.temperature >= 0.0) {
            return Err(Error::InvalidArgument(format!("sampling temperature {} is invalid", self.sampling.temperature)));
        }
        let mut base = Vec::with_capacity(self.tokens.len());
        for (t, rec) in self.tokens.iter().enumerate() {
            if rec.hidden.len() != hidden_size {
                return Err(Error::InvalidArgument(format!("token {t}: hidden state has {} values, expected {hidden_size}", rec.hidden.len())));
            }
            if rec.hidden.iter().any(|x| !x.is_finite()) || !rec.behaviour_logprob.is_finite() {
                return Err(Error::InvalidArgument(format!("token {t}: non-finite hidden state or behaviour log-probability")));
            }
            let st = BaseStats::compute(rec, vocab, tau, top_k, scratch).map_err(|e| match e {
                Error::InvalidArgument(m) => Error::InvalidArgument(format!("token {t}: {m}")),
                other => other,
            })?;
            base.push(st);
        }
        self.tau = tau;
        self.base = base;
        Ok(())
    }

    /// The temperature the episode is trained at: its sampling temperature, or the configured one
    /// for greedy replies.
    pub fn tau(&self) -> f32 {
        self.tau
    }

    /// The combined reward once feedback arrived.
    pub fn reward(&self) -> Option<f64> {
        self.reward
    }

    /// Whether the episode can be learned from now.
    pub fn is_ready(&self) -> bool {
        self.kind == EpisodeKind::Demonstration || self.reward.is_some()
    }

    /// Heap and inline bytes held (records, their base statistics, the prompt).
    pub fn memory_bytes(&self) -> usize {
        let rec: usize = self
            .tokens
            .iter()
            .map(|r| {
                std::mem::size_of::<TokenRecord>()
                    + r.hidden.capacity() * 4
                    + r.base_logprobs.capacity() * 2
                    + r.kept.as_ref().map_or(0, |k| k.capacity() * 4)
            })
            .sum();
        let base: usize = self.base.iter().map(|b| std::mem::size_of::<BaseStats>() + b.memory_bytes()).sum();
        std::mem::size_of::<Episode>() + rec + base + self.prompt.capacity() * 4
    }
}

/// Episodes waiting for feedback or for the next update, oldest first; the oldest is evicted when
/// the buffer is full, after which feedback for it is an [`Error::UnknownEpisode`].
#[derive(Debug, Clone)]
pub struct EpisodeBuffer {
    capacity: usize,
    items: VecDeque<Episode>,
}

impl EpisodeBuffer {
    /// An empty buffer of at least one slot.
    pub fn new(capacity: usize) -> EpisodeBuffer {
        EpisodeBuffer { capacity: capacity.max(1), items: VecDeque::new() }
    }

    /// Adds an episode, returning the one evicted to make room, if any.
    pub fn push(&mut self, ep: Episode) -> Option<Episode> {
        let evicted = if self.items.len() >= self.capacity { self.items.pop_front() } else { None };
        self.items.push_back(ep);
        evicted
    }

    /// The episode with `id`.
    pub fn get(&self, id: u64) -> Result<&Episode> {
        self.items.iter().find(|e| e.id == id).ok_or(Error::UnknownEpisode(id))
    }

    /// The episode with `id`, mutably.
    pub fn get_mut(&mut self, id: u64) -> Result<&mut Episode> {
        self.items.iter_mut().find(|e| e.id == id).ok_or(Error::UnknownEpisode(id))
    }

    /// Removes the episode with `id`, if held.
    pub fn remove(&mut self, id: u64) -> Option<Episode> {
        let i = self.items.iter().position(|e| e.id == id)?;
        self.items.remove(i)
    }

    /// All episodes, oldest first.
    pub fn into_episodes(self) -> impl Iterator<Item = Episode> {
        self.items.into_iter()
    }

    /// Removes and returns every episode that can be learned from, oldest first.
    pub fn take_ready(&mut self) -> Vec<Episode> {
        let (ready, waiting): (Vec<Episode>, Vec<Episode>) = self.items.drain(..).partition(Episode::is_ready);
        self.items = waiting.into();
        ready
    }

    /// How many episodes can be learned from now.
    pub fn ready_count(&self) -> usize {
        self.items.iter().filter(|e| e.is_ready()).count()
    }

    /// How many episodes are held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes held by all episodes.
    pub fn memory_bytes(&self) -> usize {
        self.items.iter().map(Episode::memory_bytes).sum()
    }

    /// Drops every episode.
    pub fn clear(&mut self) {
        self.items.clear();
    }
}
