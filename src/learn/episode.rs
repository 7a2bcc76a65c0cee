//! Episodes (one reply and what learning needs of it) and the bounded buffer that holds them, with
//! the user's episode-id counter.
//!
//! An episode is either *resident* (its full per-token records: hidden states and base
//! log-probabilities, about 100 KB a token for a 49 k vocabulary) or *compact* (only the token ids,
//! the behaviour log-probabilities, the kept sets and the sampling settings, a few bytes a token).
//! A compact episode is made resident again by one teacher-forced pass through the base model
//! ([`RecordSource`]) when it is learned from. Only the newest waiting episodes stay resident, so
//! the buffer can hold a whole call's replies for hours at a small cost.

use std::collections::VecDeque;

use crate::adapter::{BaseScratch, BaseStats, LoraHead};
use crate::error::{Error, Result};
use crate::generate::{RecordedSampling, TokenRecord};

/// Unix seconds now (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What an episode is learned as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpisodeKind {
    /// A sampled reply that waits for rewards.
    Sampled,
    /// A demonstration (a correction), teacher-forced: learned with `c_t = weight` and no KL term.
    Demonstration,
    /// The user's own text as language-model targets (the supervised algorithm's self-supervised
    /// part), learned like a demonstration with its own weight.
    UserText,
    /// A correction: the reply the user wanted instead of a sampled one (held in
    /// [`Episode::rejected`]), learned as a pair (a DPO-style loss with the base model as the
    /// reference, plus NLL on the tokens the user changed) and kept for replay.
    Correction,
}

/// Rebuilds the full records of a compact episode by a teacher-forced pass (the runtime's model).
pub trait RecordSource: Send + Sync {
    /// One record per token of `reply` after `prompt`, with the base log-probabilities after the
    /// repetition penalty `sampling` used; `behaviour_logprob` and `kept` may be left empty (the
    /// episode keeps its own).
    fn rebuild(&self, prompt: &[u32], reply: &[u32], sampling: &RecordedSampling) -> Result<Vec<TokenRecord>>;
}

/// What a reward was first measured against: the running baseline's mean and `sigma`, and the
/// running mean of the clipped advantages, from before the reward went into them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BaselineUsed {
    pub mean: f64,
    pub sigma: f64,
    pub center: f64,
}

/// One reply with what learning needs.
#[derive(Debug, Clone)]
pub struct Episode {
    /// The id feedback refers to.
    pub id: u64,
    /// The prompt's token ids (episodes with the same prompt form RLOO groups).
    pub prompt: Vec<u32>,
    /// The reply's token ids (kept in compact form too).
    pub reply: Vec<u32>,
    /// The behaviour log-probability of each reply token (the distribution actually sampled).
    pub behaviour: Vec<f32>,
    /// The kept set of each token when truncation was active.
    pub kept: Vec<Option<Vec<u32>>>,
    /// The full per-token records; empty while the episode is compact.
    pub tokens: Vec<TokenRecord>,
    /// How the reply was sampled.
    pub sampling: RecordedSampling,
    /// The adapter version the reply was sampled with.
    pub created_step: u64,
    /// When the episode was recorded (Unix seconds).
    pub created_unix: u64,
    /// Sampled, demonstration or the user's text.
    pub kind: EpisodeKind,
    /// The weight of a demonstration's or user text's tokens (1 for sampled replies).
    pub weight: f32,
    pub(crate) tau: f32,
    pub(crate) base: Vec<BaseStats>,
    /// The reward waiting to be learned (several signals before an update add up).
    pub(crate) reward: Option<f64>,
    /// How many updates learned from this episode so far.
    pub(crate) learned: u32,
    /// How many rolled-back updates its pending reward has been in (in memory only: a restart
    /// gives the reward a fresh set of tries).
    pub(crate) rollbacks: u32,
    /// When its pending reward is already in the running baseline: the baseline's mean, `sigma`
    /// and advantage centre from before it went in. A reward returned by a rolled-back update, or kept after an
    /// error, is retried against these, and not counted again.
    pub(crate) baseline_used: Option<BaselineUsed>,
    /// A correction's disliked reply: a copy of the sampled episode it replaces (its id, prompt and
    /// reply; records at the correction's temperature while resident).
    pub(crate) rejected: Option<Box<Episode>>,
}

impl Episode {
    /// An episode from full records (not checked yet; see [`Episode::prepare`]).
    pub(crate) fn new(id: u64, prompt: Vec<u32>, tokens: Vec<TokenRecord>, sampling: RecordedSampling, created_step: u64, kind: EpisodeKind) -> Episode {
        let reply = tokens.iter().map(|r| r.token).collect();
        let behaviour = tokens.iter().map(|r| r.behaviour_logprob).collect();
        let kept = tokens.iter().map(|r| r.kept.clone()).collect();
        Episode { tokens, created_step, created_unix: now_unix(), ..Self::bare(id, prompt, reply, behaviour, kept, sampling, kind) }
    }

    /// A compact episode (restored from storage); [`Episode::make_resident`] rebuilds its records.
    #[allow(clippy::too_many_arguments)]
    pub fn compact_from(
        id: u64,
        prompt: Vec<u32>,
        reply: Vec<u32>,
        behaviour: Vec<f32>,
        kept: Vec<Option<Vec<u32>>>,
        sampling: RecordedSampling,
        kind: EpisodeKind,
    ) -> Result<Episode> {
        if reply.is_empty() || behaviour.len() != reply.len() || kept.len() != reply.len() {
            return Err(Error::InvalidArgument(format!(
                "episode {id}: {} tokens, {} behaviour log-probabilities, {} kept sets",
                reply.len(),
                behaviour.len(),
                kept.len()
            )));
        }
        if behaviour.iter().any(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument(format!("episode {id}: non-finite behaviour log-probability")));
        }
        Ok(Self::bare(id, prompt, reply, behaviour, kept, sampling, kind))
    }

    /// A compact episode with nothing learned, no reward and no records.
    fn bare(id: u64, prompt: Vec<u32>, reply: Vec<u32>, behaviour: Vec<f32>, kept: Vec<Option<Vec<u32>>>, sampling: RecordedSampling, kind: EpisodeKind) -> Episode {
        Episode {
            id,
            prompt,
            reply,
            behaviour,
            kept,
            tokens: Vec::new(),
            sampling,
            created_step: 0,
            created_unix: 0,
            kind,
            weight: 1.0,
            tau: 0.0,
            base: Vec::new(),
            reward: None,
            learned: 0,
            rollbacks: 0,
            baseline_used: None,
            rejected: None,
        }
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
        if let Some(r) = self.rejected.as_deref_mut() {
            r.prepare(head, tau, scratch)?;
        }
        Ok(())
    }

    /// Whether the full records are held (a correction's and its disliked reply's).
    pub fn is_resident(&self) -> bool {
        !self.tokens.is_empty() && self.rejected.as_ref().is_none_or(|r| r.is_resident())
    }

    /// Drops the full records, keeping what rebuilds them.
    pub(crate) fn compact(&mut self) {
        self.tokens = Vec::new();
        self.base = Vec::new();
        if let Some(r) = self.rejected.as_deref_mut() {
            r.compact();
        }
    }

    /// Rebuilds the full records through `source` (a no-op when resident) and prepares them.
    pub(crate) fn make_resident(&mut self, source: &dyn RecordSource, head: &LoraHead, tau: f32, scratch: &mut BaseScratch) -> Result<()> {
        if self.is_resident() {
            return Ok(());
        }
        // A correction's two replies are compacted together; both are rebuilt.
        self.compact();
        if let Some(r) = self.rejected.as_deref_mut() {
            let records = source.rebuild(&r.prompt, &r.reply, &r.sampling)?;
            if records.len() != r.reply.len() || records.iter().zip(&r.reply).any(|(x, &t)| x.token != t) {
                return Err(Error::Learning(format!("episode {}: the rebuilt records of its disliked reply do not match", self.id)));
            }
            r.tokens = records;
        }
        let mut records = source.rebuild(&self.prompt, &self.reply, &self.sampling)?;
        if records.len() != self.reply.len() || records.iter().zip(&self.reply).any(|(r, &t)| r.token != t) {
            return Err(Error::Learning(format!("episode {}: the rebuilt records do not match its tokens", self.id)));
        }
        for (i, r) in records.iter_mut().enumerate() {
            r.behaviour_logprob = self.behaviour[i];
            r.kept = self.kept[i].clone();
        }
        self.tokens = records;
        if let Some(r) = self.rejected.as_deref_mut() {
            for (i, x) in r.tokens.iter_mut().enumerate() {
                x.behaviour_logprob = r.behaviour[i];
                x.kept = r.kept[i].clone();
            }
        }
        if let Err(e) = self.prepare(head, tau, scratch) {
            self.compact();
            return Err(e);
        }
        Ok(())
    }

    /// The temperature the episode is trained at: its sampling temperature, or the configured one
    /// for greedy replies.
    pub fn tau(&self) -> f32 {
        self.tau
    }

    /// The reward waiting to be learned, if any.
    pub fn reward(&self) -> Option<f64> {
        self.reward
    }

    /// Sets the pending reward and learned count of a restored episode.
    pub fn set_pending(&mut self, reward: Option<f64>, learned: u32) {
        self.reward = reward;
        self.learned = learned;
    }

    /// How many updates have learned from this episode.
    pub fn times_learned(&self) -> u32 {
        self.learned
    }

    /// Whether the episode can be learned from now: a demonstration not learned yet, or a reply
    /// with a reward waiting.
    pub fn is_ready(&self) -> bool {
        match self.kind {
            EpisodeKind::Demonstration | EpisodeKind::UserText | EpisodeKind::Correction => self.learned == 0,
            EpisodeKind::Sampled => self.reward.is_some(),
        }
    }

    /// A correction's disliked reply.
    pub fn rejected(&self) -> Option<&Episode> {
        self.rejected.as_deref()
    }

    /// Whether the episode holds a signal not yet learned: a reward, or (a demonstration, a
    /// correction, the user's text) the episode itself before its first accepted update.
    pub fn awaits_learning(&self) -> bool {
        self.reward.is_some() || (self.kind != EpisodeKind::Sampled && self.learned == 0)
    }

    /// A correction's disliked reply in compact form (restored from storage): the sampled reply
    /// `id`'s tokens, learned teacher-forced at temperature 1 with the whole vocabulary.
    pub fn disliked(id: u64, prompt: Vec<u32>, reply: Vec<u32>) -> Result<Episode> {
        let n = reply.len();
        Episode::compact_from(id, prompt, reply, vec![0.0; n], vec![None; n], RecordedSampling::at(1.0), EpisodeKind::Sampled)
    }

    /// Sets a restored correction's disliked reply.
    pub fn set_rejected(&mut self, rejected: Episode) {
        self.rejected = Some(Box::new(rejected));
    }

    /// Heap and inline bytes held (records, their base statistics, the compact form, the prompt).
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
        let compact = self.reply.capacity() * 4
            + self.behaviour.capacity() * 4
            + self.kept.iter().map(|k| std::mem::size_of::<Option<Vec<u32>>>() + k.as_ref().map_or(0, |k| k.capacity() * 4)).sum::<usize>();
        std::mem::size_of::<Episode>() + rec + base + compact + self.prompt.capacity() * 4 + self.rejected.as_ref().map_or(0, |r| r.memory_bytes())
    }
}

/// Why an id no longer names a held episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Older than the time to live (`episode_ttl_s`).
    Expired,
    /// Pushed out by newer episodes beyond `episode_capacity`.
    Evicted,
    /// A demonstration or the user's text, learned once and done.
    Learned,
    /// The user's data was forgotten.
    Forgotten,
    /// A demonstration or correction whose updates were rolled back [`MAX_ROLLBACKS`] times.
    RolledBack,
}

impl DropReason {
    fn explain(self) -> &'static str {
        match self {
            DropReason::Expired => "expired: it is older than the episode time to live (learner.episode_ttl_s)",
            DropReason::Evicted => "evicted: more episodes than learner.episode_capacity were recorded after it",
            DropReason::Learned => "a demonstration that was already learned from (or a correction beyond learner.pair_capacity); it takes no feedback",
            DropReason::Forgotten => "issued before the user's data was forgotten",
            DropReason::RolledBack => "a demonstration or correction dropped after every update that tried to learn it was rolled back",
        }
    }
}

/// How many rolled-back updates a pending signal goes through before it is dropped: each retry runs
/// at the halved learning rate the rollback left.
pub const MAX_ROLLBACKS: u32 = 3;

/// How many dropped ids keep their reason for error messages.
const DROPPED_MEMORY: usize = 1024;

/// The user's episodes, oldest first, and the counter their ids come from.
///
/// Ids are unique for the life of the user: the counter only moves forward, and a restored
/// counter never goes below the one in memory. Feedback for an id this buffer no longer holds is an
/// [`Error::UnknownEpisode`] that says why (expired, evicted, never issued).
#[derive(Debug, Clone)]
pub struct EpisodeBuffer {
    capacity: usize,
    pairs: usize,
    resident: usize,
    ttl_s: u64,
    items: VecDeque<Episode>,
    dropped: VecDeque<(u64, DropReason)>,
    next_id: u64,
    rebuildable: bool,
}

impl EpisodeBuffer {
    /// An empty buffer holding at most `capacity` episodes (at least one), of which the newest
    /// `resident` waiting ones keep their full records, each for at most `ttl_s` seconds (0: no
    /// limit), and at most `pairs` learned corrections kept for replay.
    pub fn new(capacity: usize, resident: usize, ttl_s: u64, pairs: usize) -> EpisodeBuffer {
        EpisodeBuffer { capacity: capacity.max(1), pairs, resident, ttl_s, items: VecDeque::new(), dropped: VecDeque::new(), next_id: 0, rebuildable: false }
    }

    /// Changes the limits (a runtime's configuration may differ from a stored one).
    pub fn set_limits(&mut self, capacity: usize, resident: usize, ttl_s: u64, pairs: usize) {
        self.capacity = capacity.max(1);
        self.resident = resident;
        self.ttl_s = ttl_s;
        self.pairs = pairs;
        self.trim_pairs();
    }

    /// Drops the oldest learned corrections beyond the pair capacity.
    fn trim_pairs(&mut self) {
        let learned: Vec<u64> = self.items.iter().filter(|e| e.kind == EpisodeKind::Correction && e.learned > 0).map(|e| e.id).collect();
        if learned.len() <= self.pairs {
            return;
        }
        let gone = &learned[..learned.len() - self.pairs];
        self.items.retain(|e| !gone.contains(&e.id));
        for &id in gone {
            self.note_dropped(id, DropReason::Learned);
        }
    }

    /// Removes and returns up to `n` learned corrections for replay: the least replayed first,
    /// then the newest.
    pub(crate) fn take_replay(&mut self, n: usize) -> Vec<Episode> {
        let mut cands: Vec<(u32, std::cmp::Reverse<u64>)> =
            self.items.iter().filter(|e| e.kind == EpisodeKind::Correction && e.learned > 0).map(|e| (e.learned, std::cmp::Reverse(e.id))).collect();
        cands.sort_unstable();
        let ids: Vec<u64> = cands.into_iter().take(n).map(|(_, std::cmp::Reverse(id))| id).collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// The id the next episode gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Moves the counter forward to at least `id` (never back).
    pub fn advance_ids(&mut self, id: u64) {
        self.next_id = self.next_id.max(id);
    }

    /// Takes the next id.
    pub(crate) fn issue_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn note_dropped(&mut self, id: u64, why: DropReason) {
        if self.dropped.len() >= DROPPED_MEMORY {
            self.dropped.pop_front();
        }
        self.dropped.push_back((id, why));
    }

    /// Adds an episode (ids ascending), returning the episodes evicted to make room.
    pub fn push(&mut self, ep: Episode) -> Vec<Episode> {
        self.next_id = self.next_id.max(ep.id + 1);
        let pos = self.items.iter().position(|e| e.id > ep.id).unwrap_or(self.items.len());
        self.items.insert(pos, ep);
        let mut evicted = Vec::new();
        while self.items.len() > self.capacity {
            if let Some(old) = self.items.pop_front() {
                self.note_dropped(old.id, DropReason::Evicted);
                evicted.push(old);
            }
        }
        self.compact_old();
        evicted
    }

    /// Drops episodes older than the time to live at `now_unix`; returns how many.
    pub fn expire(&mut self, now_unix: u64) -> usize {
        if self.ttl_s == 0 {
            return 0;
        }
        let ttl = self.ttl_s;
        let (keep, gone): (VecDeque<Episode>, VecDeque<Episode>) =
            self.items.drain(..).partition(|e| now_unix.saturating_sub(e.created_unix) <= ttl);
        self.items = keep;
        let n = gone.len();
        for e in gone {
            self.note_dropped(e.id, DropReason::Expired);
        }
        n
    }

    /// Keeps the full records of the newest `resident` live episodes (waiting for a first reward,
    /// or ready to learn) and compacts the rest, when a record source can rebuild them.
    fn compact_old(&mut self) {
        if !self.rebuildable {
            return;
        }
        let mut resident = 0;
        for e in self.items.iter_mut().rev() {
            if !e.is_resident() {
                continue;
            }
            let live = e.is_ready() || (e.kind == EpisodeKind::Sampled && e.learned == 0);
            if live && resident < self.resident {
                resident += 1;
            } else {
                e.compact();
            }
        }
    }

    /// Allows compaction: a record source can rebuild compact episodes.
    pub(crate) fn set_rebuildable(&mut self, yes: bool) {
        self.rebuildable = yes;
        self.compact_old();
    }

    /// Why `id` is not held.
    fn unknown(&self, id: u64) -> Error {
        let reason = if id >= self.next_id {
            "no episode with this id was issued to this user".to_string()
        } else if let Some((_, why)) = self.dropped.iter().rev().find(|(i, _)| *i == id) {
            why.explain().to_string()
        } else {
            "it is no longer held (expired after learner.episode_ttl_s or evicted beyond learner.episode_capacity)".to_string()
        };
        Error::UnknownEpisode { id, reason }
    }

    /// The episode with `id`.
    pub fn get(&self, id: u64) -> Result<&Episode> {
        self.items.iter().find(|e| e.id == id).ok_or_else(|| self.unknown(id))
    }

    /// The episode with `id`, mutably.
    pub fn get_mut(&mut self, id: u64) -> Result<&mut Episode> {
        match self.items.iter().position(|e| e.id == id) {
            Some(i) => Ok(&mut self.items[i]),
            None => Err(self.unknown(id)),
        }
    }

    /// Removes the episode with `id`, if held.
    pub fn remove(&mut self, id: u64) -> Option<Episode> {
        let i = self.items.iter().position(|e| e.id == id)?;
        self.items.remove(i)
    }

    /// All episodes, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Episode> {
        self.items.iter()
    }

    /// Removes and returns every episode that can be learned from, oldest first.
    pub fn take_ready(&mut self) -> Vec<Episode> {
        let (ready, waiting): (Vec<Episode>, Vec<Episode>) = self.items.drain(..).partition(Episode::is_ready);
        self.items = waiting.into();
        ready
    }

    /// Puts episodes back after an update: replies stay (compact) for later signals;
    /// demonstrations are done once learned. An episode not `learned` keeps its reward for the
    /// next update; when the update was `rolled_back`, that counts as one of its
    /// [`MAX_ROLLBACKS`] tries, after which the reward (a demonstration: the episode) is dropped.
    /// Returns how many rewards were dropped that way.
    pub(crate) fn return_learned(&mut self, episodes: Vec<Episode>, learned: &[bool], rolled_back: bool) -> usize {
        let mut dropped = 0;
        for (mut e, &was_learned) in episodes.into_iter().zip(learned.iter().chain(std::iter::repeat(&false))) {
            if was_learned {
                e.learned += 1;
                e.reward = None;
                e.rollbacks = 0;
                e.baseline_used = None;
            } else if rolled_back && e.awaits_learning() {
                e.rollbacks += 1;
                if e.rollbacks >= MAX_ROLLBACKS {
                    dropped += 1;
                    log::warn!("episode {}: its signal was dropped after {} rolled-back updates", e.id, e.rollbacks);
                    if e.kind != EpisodeKind::Sampled {
                        self.note_dropped(e.id, DropReason::RolledBack);
                        continue;
                    }
                    e.reward = None;
                    e.rollbacks = 0;
                    e.baseline_used = None;
                }
            }
            if matches!(e.kind, EpisodeKind::Demonstration | EpisodeKind::UserText) && e.learned > 0 {
                self.note_dropped(e.id, DropReason::Learned);
                continue;
            }
            let pos = self.items.iter().position(|x| x.id > e.id).unwrap_or(self.items.len());
            self.items.insert(pos, e);
        }
        while self.items.len() > self.capacity {
            if let Some(old) = self.items.pop_front() {
                self.note_dropped(old.id, DropReason::Evicted);
            }
        }
        self.trim_pairs();
        self.compact_old();
        dropped
    }

    /// Drops every episode, remembering that their ids belong to a forgotten user.
    pub fn forget_all(&mut self) {
        let ids: Vec<u64> = self.items.drain(..).map(|e| e.id).collect();
        for id in ids {
            self.note_dropped(id, DropReason::Forgotten);
        }
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
}
