//! Time per learning update (the gradient of one episode plus the sparse Adam step) on the CPU and
//! on wgpu, for vocabularies 1000 / 49152 / 151936, ranks 1 / 4 / 8 / 16 and 1 / 7 / 64 / 257
//! tokens. Prints a markdown table and the adapter it ran on.
//!
//! `cargo bench --bench gpu_update` runs every size; `-- V [R [T]]` (numbers) runs a subset, and
//! `ATTUNE_BENCH_UPDATES` sets how many updates each size runs (default 5; the median is shown).
//! On a software adapter (lavapipe, llvmpipe) the GPU column measures a software rasteriser on the
//! same CPU cores, for correctness work, not the speed of a GPU.

#[path = "../tests/gpu_support/mod.rs"]
mod gpu_support;

use std::time::Instant;

use attune::adapter::gpu::{GpuDevice, GpuMath};
use attune::adapter::{AdamParams, AdamState, AdapterMath, CpuMath, GradEpisode, HeadGrad, LoraHead};
use gpu_support::{hidden_for, random_head, records, rng, stats};

/// The median of `times` in milliseconds.
fn median_ms(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied().unwrap_or(f64::NAN) * 1e3
}

/// Runs `updates` consecutive updates (gradient + Adam) from `head` and returns each one's seconds;
/// the first call on a fresh math, which uploads the whole head, is run and left out.
fn run(math: &mut dyn AdapterMath, head: &LoraHead, ep: &GradEpisode<'_>, updates: usize) -> Result<Vec<f64>, String> {
    let mut head = head.clone();
    let mut adam = AdamState::new(&head);
    let mut grad = HeadGrad::new(head.rank(), head.hidden_size());
    let p = AdamParams::default();
    let mut times = Vec::with_capacity(updates);
    for i in 0..=updates {
        let t0 = Instant::now();
        math.gradient(&head, std::slice::from_ref(ep), &mut grad).map_err(|e| e.to_string())?;
        math.adam_step(&mut head, &mut adam, &grad, &p).map_err(|e| e.to_string())?;
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    Ok(times)
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let updates = std::env::var("ATTUNE_BENCH_UPDATES").ok().and_then(|v| v.parse().ok()).unwrap_or(5usize).max(1);
    let pick = |all: &[usize], i: usize| -> Vec<usize> { args.get(i).map_or(all.to_vec(), |&x| vec![x]) };
    let device = match GpuDevice::request(true) {
        Ok(d) => Some(d),
        Err(e) => {
            println!("no wgpu adapter ({e}); only the CPU column is measured");
            None
        }
    };
    let mut gpu = device.as_ref().and_then(|d| GpuMath::new(d).map_err(|e| println!("GPU kernels failed: {e}")).ok());
    if let Some(g) = &gpu {
        let a = g.adapter();
        println!("adapter: {a}");
        if a.is_software() {
            println!("note: a software adapter; the wgpu column measures a software rasteriser on the CPU cores, not a GPU.");
        }
    }
    println!("\nmedian of {updates} consecutive updates (gradient of one episode + sparse Adam step), d = 48 / 576 / 896 for V = 1000 / 49152 / 151936, about V/8 (at most 3000) active rows of B to start, top_k = 256\n");
    println!("| V | r | T | CPU ms | wgpu ms | wgpu / CPU |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for vocab in pick(&[1000, 49152, 151936], 0) {
        let d = hidden_for(vocab);
        for n in pick(&[1, 7, 64, 257], 2) {
            let recs = records(vocab, d, n, 42 + n as u64);
            for r in pick(&[1, 4, 8, 16], 1) {
                let head = random_head(vocab, d, r, (vocab / 8).min(3000), 7 + r as u64);
                let base = stats(&head, &recs, 0.7);
                let mut g = rng(3);
                let weights: Vec<f64> = (0..n).map(|_| f64::from(gpu_support::normal(&mut g))).collect();
                let ep = GradEpisode { tokens: &recs, base: &base, weights: &weights, beta: 0.05, logit_weights: None, value_targets: None };
                let cpu = run(&mut CpuMath::new(), &head, &ep, updates).map(|mut t| median_ms(&mut t));
                let wg = match gpu.as_mut() {
                    Some(m) => run(m, &head, &ep, updates).map(|mut t| median_ms(&mut t)),
                    None => Err("no adapter".into()),
                };
                let cell = |x: &Result<f64, String>| x.as_ref().map_or_else(|e| format!("error: {e}"), |ms| format!("{ms:.2}"));
                let ratio = match (&cpu, &wg) {
                    (Ok(c), Ok(w)) => format!("{:.2}", w / c),
                    _ => "-".into(),
                };
                println!("| {vocab} | {r} | {n} | {} | {} | {ratio} |", cell(&cpu), cell(&wg));
            }
        }
    }
}
