//! Conversion between the learner's state and the store's persisted record.
//!
//! The record keeps the adapter's shape (rank, alpha, top-K rows, seed), its tensors, Adam's state,
//! the baseline and score statistics, the KL coefficient, the learning rate, the counters and the
//! reward history. The learner's other hyper-parameters come from the runtime configuration each time
//! a session opens, so a host can change them without rewriting adapters.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::generate::RecordedSampling;
use crate::learn::{Counters, Episode, EpisodeKind, Learner, LearnerConfig, LearnerState, RewardHistory, RunningStats, ScoreStats, STATE_VERSION};
use crate::learn::guard::SignRun;
use crate::adapter::{AdamParts, HeadParts, LoraConfig};
use crate::store::{AdapterConfig, AdapterRecord, PendingEpisode, PendingPair, PendingRecord, RewardSummary, Tensor};

fn tensor(shape: Vec<u32>, data: Vec<f32>) -> Result<Tensor> {
    Tensor::new(shape, data).map_err(|e| Error::Store(e.to_string()))
}

/// Row ids as f32 values: exact for vocabularies below 2^24 (16.7 M tokens).
fn ids_to_f32(ids: &[u32]) -> Vec<f32> {
    ids.iter().map(|&i| i as f32).collect()
}

fn f32_to_ids(v: &[f32], what: &str) -> Result<Vec<u32>> {
    v.iter()
        .map(|&x| {
            if x >= 0.0 && x.fract() == 0.0 && x < 16_777_216.0 {
                Ok(x as u32)
            } else {
                Err(Error::Store(format!("{what} holds a non-integer row id {x}")))
            }
        })
        .collect()
}

pub use crate::learn::episode::now_unix;

/// The learner's held episodes in their persisted, compact form, with the id reservation. With
/// `episodes` false only the reservation is written.
pub fn pending_from_learner(learner: &Learner, reserved_ids: u64, episodes: bool) -> PendingRecord {
    let eps = if episodes { learner.episodes().map(pending_episode).collect() } else { Vec::new() };
    let pairs = if episodes {
        learner.episodes().filter_map(|e| e.rejected().map(|r| PendingPair { correction: e.id, rejected_id: r.id, reply: r.reply.clone() })).collect()
    } else {
        Vec::new()
    };
    PendingRecord { reserved_ids: reserved_ids.max(learner.next_episode_id()), adapter_version: learner.counters().version, episodes: eps, pairs }
}

fn pending_episode(e: &Episode) -> PendingEpisode {
    PendingEpisode {
        id: e.id,
        kind: match e.kind {
            EpisodeKind::Sampled => 0,
            EpisodeKind::Demonstration => 1,
            EpisodeKind::UserText => 2,
            EpisodeKind::Correction => 3,
        },
        created_unix: e.created_unix,
        created_step: e.created_step,
        weight: e.weight,
        prompt: e.prompt.clone(),
        reply: e.reply.clone(),
        behaviour: e.behaviour.clone(),
        kept: e.kept.iter().map(|k| k.clone().unwrap_or_default()).collect(),
        temperature: e.sampling.temperature,
        repetition_penalty: e.sampling.repetition_penalty,
        reward: e.reward(),
        learned: e.times_learned(),
    }
}

/// Compact episodes from their persisted form.
pub fn episodes_from_pending(rec: &PendingRecord) -> Result<Vec<Episode>> {
    rec.episodes
        .iter()
        .map(|p| {
            let kind = match p.kind {
                0 => EpisodeKind::Sampled,
                1 => EpisodeKind::Demonstration,
                2 => EpisodeKind::UserText,
                _ => EpisodeKind::Correction,
            };
            let kept = p.kept.iter().map(|k| if k.is_empty() { None } else { Some(k.clone()) }).collect();
            let sampling = RecordedSampling { temperature: p.temperature, repetition_penalty: p.repetition_penalty };
            let mut e = Episode::compact_from(p.id, p.prompt.clone(), p.reply.clone(), p.behaviour.clone(), kept, sampling, kind)?;
            e.created_unix = p.created_unix;
            e.created_step = p.created_step;
            e.weight = p.weight;
            e.set_pending(p.reward, p.learned);
            if kind == EpisodeKind::Correction {
                let pair = rec.pairs.iter().find(|q| q.correction == p.id).ok_or_else(|| Error::Store(format!("pending correction {} has no disliked reply", p.id)))?;
                e.set_rejected(Episode::disliked(pair.rejected_id, p.prompt.clone(), pair.reply.clone())?);
            }
            Ok(e)
        })
        .collect()
}

/// The learner's state as a store record.
pub fn to_record(state: &LearnerState, created_unix: u64) -> Result<AdapterRecord> {
    let h = &state.head;
    let lora = &state.config.adapter;
    let (r, d, v) = (lora.rank as u32, h.hidden_size, h.vocab_size);
    let n_rows = h.b_rows.len() as u32;
    let a = &state.adam;
    let mut tensors = BTreeMap::new();
    tensors.insert("lora.A".to_string(), tensor(vec![r, d], h.a.clone())?);
    tensors.insert("lora.B.rows".to_string(), tensor(vec![n_rows], ids_to_f32(&h.b_rows))?);
    tensors.insert("lora.B".to_string(), tensor(vec![n_rows, r], h.b.clone())?);
    tensors.insert("value.w".to_string(), tensor(vec![d], h.value_w.clone())?);
    tensors.insert("adam.A.m".to_string(), tensor(vec![r, d], a.a_m.clone())?);
    tensors.insert("adam.A.v".to_string(), tensor(vec![r, d], a.a_v.clone())?);
    let an = a.b_rows.len() as u32;
    tensors.insert("adam.B.rows".to_string(), tensor(vec![an], ids_to_f32(&a.b_rows))?);
    tensors.insert("adam.B.m".to_string(), tensor(vec![an, r], a.b_m.clone())?);
    tensors.insert("adam.B.v".to_string(), tensor(vec![an, r], a.b_v.clone())?);
    tensors.insert("adam.B.steps".to_string(), tensor(vec![an], a.b_steps.iter().map(|&s| s as f32).collect())?);
    tensors.insert("adam.value.w.m".to_string(), tensor(vec![a.w_m.len() as u32], a.w_m.clone())?);
    tensors.insert("adam.value.w.v".to_string(), tensor(vec![a.w_v.len() as u32], a.w_v.clone())?);
    let critic: Vec<f32> = state.critic.iter().flat_map(|&(x, y)| [x, y]).collect();
    tensors.insert("critic.pairs".to_string(), tensor(vec![state.critic.len() as u32, 2], critic)?);

    let c = &state.counters;
    let counters: BTreeMap<String, u64> = [
        ("episodes", c.episodes),
        ("feedback", c.feedback),
        ("ignored_feedback", c.ignored_feedback),
        ("evicted", c.evicted),
        ("updates", c.updates),
        ("accepted", c.accepted),
        ("rolled_back", c.rolled_back),
        ("skipped", c.skipped),
        ("skipped_episodes", c.skipped_episodes),
        ("returned_signals", c.returned_signals),
        ("dropped_signals", c.dropped_signals),
        ("next_id", c.next_id),
        ("version", c.version),
        ("adam.A.step", a.a_step),
        ("adam.value.step", a.value_step),
        ("baseline.count", state.baseline.count),
        ("advantage.count", state.advantage_center.count),
        ("sign_run.len", u64::from(state.sign_run.len)),
        ("state_version", u64::from(state.version)),
        ("lora.seed", lora.seed),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut scalars: BTreeMap<String, f64> = [
        ("beta", state.beta),
        ("lr", state.lr),
        ("baseline.mean", state.baseline.mean),
        ("baseline.var", state.baseline.var),
        ("advantage.mean", state.advantage_center.mean),
        ("advantage.var", state.advantage_center.var),
        ("value.b", f64::from(h.value_b)),
        ("adam.value.b.m", f64::from(a.bias_m)),
        ("adam.value.b.v", f64::from(a.bias_v)),
        ("sign_run.sign", f64::from(state.sign_run.sign)),
        ("history.sum", state.history.sum),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (i, (name, st)) in state.scores.sources.iter().enumerate() {
        // Score sources keep their names in the key; the index keeps the order.
        scalars.insert(format!("score.{i}.{name}.mean"), st.mean);
        scalars.insert(format!("score.{i}.{name}.var"), st.var);
        scalars.insert(format!("score.{i}.{name}.count"), st.count as f64);
    }
    let hist = &state.history;
    let mut extra = BTreeMap::new();
    extra.insert("top_k".to_string(), lora.top_k as f32);
    let mut rec = AdapterRecord::new(
        AdapterConfig {
            rank: r,
            alpha: lora.alpha,
            hidden: d,
            vocab: v,
            top_k_rows: lora.top_k as u32,
            algorithm: serde_json::to_value(state.config.algorithm)
                .ok()
                .and_then(|x| x.as_str().map(str::to_string))
                .unwrap_or_default(),
            extra,
        },
        created_unix,
    );
    rec.tensors = tensors;
    rec.counters = counters;
    rec.scalars = scalars;
    rec.rewards = RewardSummary {
        count: hist.count,
        mean: if hist.count > 0 { hist.sum / hist.count as f64 } else { 0.0 },
        recent: hist.recent.clone(),
        thumbs_up: hist.positive,
        thumbs_down: hist.negative,
    };
    rec.updated_unix = now_unix();
    Ok(rec)
}

/// Refuses a record whose adapter does not fit the loaded model: its hidden size and vocabulary
/// size must equal the model's, and its `top_k` is at most the vocabulary. Runs before anything
/// of the record's stated size is allocated, so crafted bytes that state huge dimensions over
/// little data are refused instead of asking for terabytes.
pub fn check_shape(rec: &AdapterRecord, hidden_size: usize, vocab_size: usize) -> Result<()> {
    let c = &rec.config;
    if c.hidden as usize != hidden_size || c.vocab as usize != vocab_size {
        return Err(Error::InvalidArgument(format!(
            "the adapter is for hidden size {} and vocabulary {}; the loaded model has hidden size {hidden_size} and vocabulary {vocab_size}",
            c.hidden, c.vocab
        )));
    }
    if c.rank == 0 || c.rank as usize > crate::adapter::MAX_RANK {
        return Err(Error::InvalidArgument(format!("the adapter's rank {} is outside 1..={}", c.rank, crate::adapter::MAX_RANK)));
    }
    if c.top_k_rows == 0 || c.top_k_rows as usize > vocab_size.min(crate::adapter::MAX_TOP_K) {
        return Err(Error::InvalidArgument(format!(
            "the adapter's top_k {} is outside 1..={}",
            c.top_k_rows,
            vocab_size.min(crate::adapter::MAX_TOP_K)
        )));
    }
    Ok(())
}

/// A learner state from a record and the runtime's learner configuration (whose adapter shape is
/// replaced by the record's).
pub fn from_record(rec: &AdapterRecord, mut config: LearnerConfig) -> Result<LearnerState> {
    let t = |name: &str| -> Result<&Tensor> {
        rec.tensors.get(name).ok_or_else(|| Error::Store(format!("adapter record has no tensor `{name}`")))
    };
    // Every counter and scalar the learner wrote is required: a missing one is an error, never a
    // silent 0 (which would read as lr = 0 or beta = 0).
    let cnt = |name: &str| -> Result<u64> {
        rec.counters.get(name).copied().ok_or_else(|| Error::Store(format!("adapter record has no counter `{name}`")))
    };
    let sc = |name: &str| -> Result<f64> {
        rec.scalars.get(name).copied().ok_or_else(|| Error::Store(format!("adapter record has no scalar `{name}`")))
    };
    let state_version = cnt("state_version")?;
    if state_version != u64::from(STATE_VERSION) {
        return Err(Error::Store(format!("adapter record holds learner state version {state_version}; this build reads {STATE_VERSION}")));
    }
    let cfg = &rec.config;
    config.adapter = LoraConfig { rank: cfg.rank as usize, alpha: cfg.alpha, top_k: cfg.top_k_rows as usize, seed: cnt("lora.seed")? };
    let head = HeadParts {
        hidden_size: cfg.hidden,
        vocab_size: cfg.vocab,
        a: t("lora.A")?.data.clone(),
        b_rows: f32_to_ids(&t("lora.B.rows")?.data, "lora.B.rows")?,
        b: t("lora.B")?.data.clone(),
        value_w: t("value.w")?.data.clone(),
        value_b: sc("value.b")? as f32,
    };
    let adam = AdamParts {
        a_m: t("adam.A.m")?.data.clone(),
        a_v: t("adam.A.v")?.data.clone(),
        a_step: cnt("adam.A.step")?,
        b_rows: f32_to_ids(&t("adam.B.rows")?.data, "adam.B.rows")?,
        b_m: t("adam.B.m")?.data.clone(),
        b_v: t("adam.B.v")?.data.clone(),
        b_steps: t("adam.B.steps")?.data.iter().map(|&s| s as u32).collect(),
        w_m: t("adam.value.w.m")?.data.clone(),
        w_v: t("adam.value.w.v")?.data.clone(),
        bias_m: sc("adam.value.b.m")? as f32,
        bias_v: sc("adam.value.b.v")? as f32,
        value_step: cnt("adam.value.step")?,
    };
    let critic = t("critic.pairs")?.data.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    let mut sources: Vec<(usize, String, RunningStats)> = Vec::new();
    for (k, &v) in &rec.scalars {
        let Some(rest) = k.strip_prefix("score.") else { continue };
        let Some((idx, tail)) = rest.split_once('.') else { continue };
        let Ok(idx) = idx.parse::<usize>() else { continue };
        let Some((name, field)) = tail.rsplit_once('.') else { continue };
        let pos = match sources.iter().position(|(i, _, _)| *i == idx) {
            Some(p) => p,
            None => {
                sources.push((idx, name.to_string(), RunningStats::default()));
                sources.len() - 1
            }
        };
        let st = &mut sources[pos].2;
        match field {
            "mean" => st.mean = v,
            "var" => st.var = v,
            "count" => st.count = v as u64,
            _ => {}
        }
    }
    sources.sort_by_key(|(i, _, _)| *i);
    let r = &rec.rewards;
    Ok(LearnerState {
        version: STATE_VERSION,
        config,
        head,
        adam,
        baseline: RunningStats { count: cnt("baseline.count")?, mean: sc("baseline.mean")?, var: sc("baseline.var")? },
        // Written since the advantages are centred; an older adapter starts with none.
        advantage_center: RunningStats {
            count: rec.counters.get("advantage.count").copied().unwrap_or(0),
            mean: rec.scalars.get("advantage.mean").copied().unwrap_or(0.0),
            var: rec.scalars.get("advantage.var").copied().unwrap_or(0.0),
        },
        scores: ScoreStats { sources: sources.into_iter().map(|(_, n, s)| (n, s)).collect() },
        beta: sc("beta")?,
        lr: sc("lr")?,
        counters: Counters {
            episodes: cnt("episodes")?,
            feedback: cnt("feedback")?,
            ignored_feedback: cnt("ignored_feedback")?,
            evicted: cnt("evicted")?,
            updates: cnt("updates")?,
            accepted: cnt("accepted")?,
            rolled_back: cnt("rolled_back")?,
            skipped: cnt("skipped")?,
            skipped_episodes: cnt("skipped_episodes")?,
            // Absent from adapters saved before these counters existed.
            returned_signals: rec.counters.get("returned_signals").copied().unwrap_or(0),
            dropped_signals: rec.counters.get("dropped_signals").copied().unwrap_or(0),
            next_id: cnt("next_id")?,
            version: cnt("version")?,
        },
        history: RewardHistory { count: r.count, sum: sc("history.sum")?, positive: r.thumbs_up, negative: r.thumbs_down, recent: r.recent.clone() },
        critic,
        sign_run: SignRun { sign: sc("sign_run.sign")? as i8, len: cnt("sign_run.len")? as u32 },
    })
}
