//! The adaptation demo on the real model (slow tier, run by CI): `attune demo` as `make demo` runs
//! it, with fewer episodes. The simulated caller's preference must improve on held-out prompts from
//! the no-adaptation baseline, for REINFORCE and for A2C, with the probe KL inside the budget.

// The workspace's shared test helpers (where the models are, and the tier rule).
#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

#[test]
fn real_model_demo_improves_the_callers_preference_within_the_kl_budget() {
    let Some(model) = common::real_dir() else { return };
    let out = std::env::temp_dir().join(format!("attune-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new(env!("CARGO_BIN_EXE_attune"))
        .args(["demo", "--episodes", "100", "--every", "20", "--algorithms", "reinforce,a2c", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("running attune demo");
    assert!(status.success(), "attune demo failed: {status}");
    assert!(out.join("reward_curve.png").is_file(), "no reward curve written");
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("demo_log.json")).unwrap()).unwrap();
    let runs = log.as_array().expect("a list of runs");
    assert_eq!(runs.len(), 2);
    for run in runs {
        let name = run["algorithm"].as_str().unwrap();
        let (before, after) = (run["before_score"].as_f64().unwrap(), run["after_score"].as_f64().unwrap());
        let kl = run["final_probe_kl"].as_f64().unwrap();
        let episodes = run["episodes"].as_array().unwrap();
        let window = |e: &[serde_json::Value]| e.iter().map(|x| x["utility"].as_f64().unwrap()).sum::<f64>() / e.len() as f64;
        let (first, last) = (window(&episodes[..20]), window(&episodes[episodes.len() - 40..]));
        eprintln!("{name}: held-out preference {before:.3} -> {after:.3}; training replies, first 20 {first:.3}, last 40 {last:.3}; probe KL {kl:.4}; events to +0.2: {}", run["events_to_reach_baseline_plus_0_2"]);
        // Measured here with these settings (seed 1, 100 replies): held-out 0.305 -> 0.672
        // (REINFORCE) and -> 0.681 (A2C, closed-form critic); over 5 seeds of an earlier version the
        // gain was +0.149 to +0.408. The training replies are a
        // noisy measure (20 replies vary by about +-0.07), hence the wider window and lower bar.
        assert!(after >= before + 0.15, "{name}: held-out preference {before} -> {after}");
        assert!(last >= first + 0.1, "{name}: training preference {first} -> {last}");
        assert!(kl.is_finite() && kl <= 0.1 + 1e-9, "{name}: probe KL {kl} over the 0.1 budget");
        let mut last_lr = None;
        for e in episodes {
            if let Some(r) = e["update"].as_object() {
                assert!(r["grad_norm"].as_f64().unwrap().is_finite(), "{name}: non-finite gradient norm in {r:?}");
                last_lr = r["lr"].as_f64();
            }
        }
        // Near the KL budget steps shrink and beta rises; the learning rate must not collapse
        // (the demo runs at the library default lr, 2e-3).
        let last_lr = last_lr.expect("updates ran");
        eprintln!("{name}: learning rate after the last update {last_lr:.3e}");
        assert!(last_lr >= 0.5e-3, "{name}: the learning rate fell to {last_lr}");
    }
    let _ = std::fs::remove_dir_all(&out);
}
