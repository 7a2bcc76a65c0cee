//! Release-mode timing of one update at full size (V = 49152, d = 576, r = 8, 64 tokens, 32 probe
//! tokens). Run with `cargo test --release --test learn_timing -- --ignored --nocapture`
//! (`ATTUNE_THREADS=n` sets the dense passes' threads, default 1); nothing is asserted about time.
//! Random base logits give every token a different top-256, so the active rows of `B` grow to
//! nearly the whole vocabulary within a few updates: the dense path's worst case.

mod learn_support;

use std::time::Instant;

use attune::adapter::{CpuMath, LoraConfig};
use attune::generate::{RecordedSampling, TokenRecord};
use attune::learn::{FeedbackOutcome, Learner, LearnerConfig, Reward};
use half::f16;
use learn_support::{log_softmax, normal, rng};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const V: usize = 49152;
const D: usize = 576;

/// A token record with random base logits (std 3) and a token drawn from the 20 most likely.
fn record(r: &mut ChaCha8Rng) -> TokenRecord {
    let z: Vec<f32> = (0..V).map(|_| 3.0 * normal(r)).collect();
    let lp = log_softmax(&z);
    let mut order: Vec<u32> = (0..V as u32).collect();
    order.select_nth_unstable_by(20, |&a, &b| lp[b as usize].total_cmp(&lp[a as usize]));
    let token = order[r.random_range(0..20)];
    TokenRecord {
        token,
        hidden: (0..D).map(|_| normal(r)).collect(),
        base_logprobs: lp.iter().map(|&x| f16::from_f32(x)).collect(),
        behaviour_logprob: lp[token as usize] / 0.7,
        kept: None,
    }
}

/// This thread's CPU time in ms from `/proc/thread-self/schedstat` (Linux), to see through a busy
/// machine when the dense passes run on one thread.
fn thread_cpu_ms() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(s.split_whitespace().next()?.parse::<f64>().ok()? / 1e6)
}

#[test]
#[ignore]
fn update_time_at_full_size() {
    let cfg = LearnerConfig {
        adapter: LoraConfig { rank: 8, alpha: 32.0, top_k: 256, seed: 1 },
        max_updates_per_minute: 0,
        max_same_sign_run: 0,
        ..LearnerConfig::default()
    };
    let threads: usize = std::env::var("ATTUNE_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut l = Learner::new(cfg, D, V).unwrap().with_math(Box::new(CpuMath::new().with_threads(threads)));
    println!("threads: {threads}");
    let mut r = rng(1);
    let probes: Vec<TokenRecord> = (0..32).map(|_| record(&mut r)).collect();
    let t = Instant::now();
    l.set_probes(probes, 0.7).unwrap();
    println!("set_probes (32 tokens): {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let mut update_ms = Vec::new();
    let mut cpu_ms = Vec::new();
    for round in 0..20 {
        let recs: Vec<TokenRecord> = (0..64).map(|_| record(&mut r)).collect();
        let t = Instant::now();
        let id = l.record_episode(vec![1, 2, 3], recs, RecordedSampling::at(0.7)).unwrap();
        let record_ms = t.elapsed().as_secs_f64() * 1e3;
        let reward = Reward::thumbs(round % 3 != 0);
        let t = Instant::now();
        let c0 = thread_cpu_ms();
        let rep = match l.give_feedback(id, &reward).unwrap() {
            FeedbackOutcome::Updated(rep) => rep,
            other => panic!("{other:?}"),
        };
        let total_ms = t.elapsed().as_secs_f64() * 1e3;
        if let (Some(a), Some(b)) = (c0, thread_cpu_ms()) {
            cpu_ms.push(b - a);
        }
        update_ms.push(rep.elapsed_s * 1e3);
        println!(
            "round {round:2}: record {record_ms:6.1} ms, update {:6.1} ms (feedback call {total_ms:6.1} ms), active rows {:5}, outcome {:?}, KL {:.2e}",
            rep.elapsed_s * 1e3,
            l.adapter().active_rows().len(),
            rep.outcome,
            rep.mean_kl
        );
    }
    update_ms.sort_by(f64::total_cmp);
    cpu_ms.sort_by(f64::total_cmp);
    if !cpu_ms.is_empty() {
        println!("feedback call CPU time of this thread (threads = 1 only): min {:.1} ms, median {:.1} ms", cpu_ms[0], cpu_ms[cpu_ms.len() / 2]);
    }
    println!("update min {:.1} ms, median {:.1} ms, max {:.1} ms", update_ms[0], update_ms[update_ms.len() / 2], update_ms[update_ms.len() - 1]);
    // The logits hook with the adapter as it is now.
    let h: Vec<f32> = (0..D).map(|_| normal(&mut r)).collect();
    let mut z = vec![0.0f32; V];
    let t = Instant::now();
    for _ in 0..1000 {
        l.adapter().add_delta(&h, &mut z).unwrap();
    }
    println!("add_delta with {} active rows: {:.1} us per token", l.adapter().active_rows().len(), t.elapsed().as_secs_f64() * 1e3);
}
