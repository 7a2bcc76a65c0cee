//! Sampling options against references computed another way (brute-force sorting, exact softmax in
//! f64, empirical frequencies).

use attune::generate::sampler::{apply_repetition_penalty, Sampler, SamplingConfig};

fn logits(n: usize, seed: u64) -> Vec<f32> {
    // A fixed pseudo-random logit vector with distinct values.
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) * 6.0 - 3.0
        })
        .collect()
}

fn softmax64(z: &[f32], t: f64) -> Vec<f64> {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = z.iter().map(|&v| ((v as f64 - m) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn sorted_desc(p: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].partial_cmp(&p[a]).unwrap().then(a.cmp(&b)));
    idx
}

fn cfg(t: f32) -> SamplingConfig {
    SamplingConfig { temperature: t, seed: 7, ..SamplingConfig::default() }
}

#[test]
fn greedy_is_argmax_with_lowest_id_on_ties() {
    let mut s = Sampler::new(SamplingConfig::greedy()).unwrap();
    let z = vec![0.5, 2.0, 2.0, -1.0];
    let d = s.sample(&z).unwrap();
    assert_eq!(d.token, 1);
    assert_eq!(d.kept, None);
}

#[test]
fn temperature_frequencies_match_softmax() {
    let z = logits(8, 1);
    for &t in &[0.5f32, 1.0, 2.0] {
        let p = softmax64(&z, t as f64);
        let mut s = Sampler::new(cfg(t)).unwrap();
        let n = 40_000;
        let mut counts = vec![0usize; z.len()];
        for _ in 0..n {
            let d = s.sample(&z).unwrap();
            counts[d.token as usize] += 1;
            // The reported log-probability is the exact one.
            assert!((d.logprob as f64 - p[d.token as usize].ln()).abs() < 1e-4);
        }
        for i in 0..z.len() {
            let f = counts[i] as f64 / n as f64;
            let sd = (p[i] * (1.0 - p[i]) / n as f64).sqrt();
            assert!((f - p[i]).abs() < 5.0 * sd + 1e-4, "t={t} token {i}: freq {f} vs p {}", p[i]);
        }
    }
}

#[test]
fn top_k_keeps_the_k_most_likely() {
    let z = logits(50, 2);
    let p = softmax64(&z, 0.8);
    let mut expect: Vec<u32> = sorted_desc(&p)[..5].iter().map(|&i| i as u32).collect();
    expect.sort();
    let mut s = Sampler::new(SamplingConfig { top_k: 5, ..cfg(0.8) }).unwrap();
    let mass: f64 = expect.iter().map(|&i| p[i as usize]).sum();
    for _ in 0..200 {
        let d = s.sample(&z).unwrap();
        assert_eq!(d.kept.as_deref(), Some(&expect[..]));
        assert!(expect.contains(&d.token));
        assert!((d.logprob as f64 - (p[d.token as usize] / mass).ln()).abs() < 1e-4);
    }
}

#[test]
fn top_p_keeps_the_smallest_prefix_reaching_p() {
    let z = logits(40, 3);
    let p = softmax64(&z, 1.0);
    let order = sorted_desc(&p);
    let mut acc = 0.0;
    let mut expect = Vec::new();
    for &i in &order {
        expect.push(i as u32);
        acc += p[i];
        if acc >= 0.6 {
            break;
        }
    }
    expect.sort();
    let mut s = Sampler::new(SamplingConfig { top_p: 0.6, ..cfg(1.0) }).unwrap();
    let d = s.sample(&z).unwrap();
    assert_eq!(d.kept.as_deref(), Some(&expect[..]));
}

#[test]
fn min_p_drops_tokens_below_the_fraction_of_the_top() {
    let z = logits(40, 4);
    let p = softmax64(&z, 1.0);
    let top = p.iter().cloned().fold(0.0, f64::max);
    let mut expect: Vec<u32> = (0..p.len()).filter(|&i| p[i] >= 0.2 * top).map(|i| i as u32).collect();
    expect.sort();
    let mut s = Sampler::new(SamplingConfig { min_p: 0.2, ..cfg(1.0) }).unwrap();
    let d = s.sample(&z).unwrap();
    assert_eq!(d.kept.as_deref(), Some(&expect[..]));
}

#[test]
fn repetition_penalty_follows_ctrl_rule() {
    let mut z = vec![2.0f32, -1.0, 0.5, 3.0];
    let mut scratch = Vec::new();
    apply_repetition_penalty(&mut z, &[0, 1, 1], 2.0, &mut scratch);
    assert_eq!(z, vec![1.0, -2.0, 0.5, 3.0]);
}

#[test]
fn same_seed_same_tokens_other_seed_other_tokens() {
    let z = logits(100, 5);
    let draw = |seed| {
        let mut s = Sampler::new(SamplingConfig { seed, ..cfg(1.0) }).unwrap();
        (0..64).map(|_| s.sample(&z).unwrap().token).collect::<Vec<_>>()
    };
    assert_eq!(draw(1), draw(1));
    assert_ne!(draw(1), draw(2));
}

#[test]
fn invalid_values_are_clear_errors() {
    let bad = [
        SamplingConfig { temperature: -0.1, ..SamplingConfig::default() },
        SamplingConfig { temperature: f32::NAN, ..SamplingConfig::default() },
        SamplingConfig { top_p: 1.5, ..SamplingConfig::default() },
        SamplingConfig { top_p: 0.0, ..SamplingConfig::default() },
        SamplingConfig { min_p: -0.5, ..SamplingConfig::default() },
        SamplingConfig { repetition_penalty: 0.0, ..SamplingConfig::default() },
    ];
    for c in bad {
        let e = Sampler::new(c).unwrap_err().to_string();
        assert!(e.contains("invalid argument"), "{e}");
    }
    let e = Sampler::new(SamplingConfig { top_p: 1.5, ..SamplingConfig::default() }).unwrap_err().to_string();
    assert!(e.contains("top_p"), "{e}");
}

/// A subnormal or tiny positive temperature made `1 / temperature` infinite and the softmax NaN;
/// it is refused, naming the range. 0 stays greedy, and the limits themselves are accepted.
#[test]
fn temperature_has_a_range() {
    for t in [1e-45, f32::MIN_POSITIVE, 1e-6, attune::generate::MIN_TEMPERATURE * 0.5, attune::generate::MAX_TEMPERATURE * 2.0, f32::INFINITY] {
        let e = Sampler::new(SamplingConfig { temperature: t, ..SamplingConfig::default() }).unwrap_err().to_string();
        assert!(e.contains("invalid argument") && e.contains("temperature must be 0 (greedy) or in [0.001, 1000]"), "{t}: {e}");
    }
    let z = [1.0f32, 3.0, 2.0, -1.0];
    for t in [0.0, attune::generate::MIN_TEMPERATURE, attune::generate::MAX_TEMPERATURE] {
        let mut s = Sampler::new(SamplingConfig { temperature: t, ..SamplingConfig::default() }).unwrap();
        let d = s.sample(&z).unwrap();
        if t <= attune::generate::MIN_TEMPERATURE {
            // Greedy, and the smallest temperature is as sharp as greedy on these logits.
            assert_eq!(d.token, 1, "temperature {t}");
        }
    }
}
