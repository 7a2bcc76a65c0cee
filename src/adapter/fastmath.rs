//! Small numeric kernels written so that the compiler vectorises them on baseline x86-64 and
//! aarch64 (no intrinsics, no unsafe).

/// `exp(x)` in f32: Cephes' range reduction and polynomial, relative error about 2e-7 on
/// [-87, 88]; 0 below -87 (including `-inf`), saturating at `exp(88)` above.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let xc = x.clamp(-87.0, 88.0);
    // Round x log2(e) to the nearest integer with the 1.5 * 2^23 trick: the sum's low mantissa bits
    // then hold n itself, which gives 2^n by integer arithmetic on the bits (no float-to-int cast,
    // so the loop vectorises on plain SSE2).
    let k = xc * std::f32::consts::LOG2_E + 12_582_912.0;
    let n = k - 12_582_912.0;
    let r = xc - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let poly = p * r * r + r + 1.0;
    let scale = f32::from_bits(k.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23);
    if x < -87.0 {
        0.0
    } else {
        poly * scale
    }
}

/// `exp(x)` in f64: Cody-Waite range reduction and a degree-10 Taylor polynomial, relative error
/// below 3e-13 on [-708, 709]; 0 below -708 (including `-inf`). Vectorises like [`exp_f32`].
#[inline(always)]
pub fn exp_f64(x: f64) -> f64 {
    const SHIFT: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
    let xc = x.clamp(-708.0, 709.0);
    let k = xc * std::f64::consts::LOG2_E + SHIFT;
    let n = k - SHIFT;
    let r = xc - n * 6.931_471_803_691_238e-1 - n * 1.908_214_929_270_587_7e-10;
    // Taylor to degree 10 (|r| <= ln(2)/2, truncation below 2e-13), evaluated by Estrin's scheme
    // to keep the dependency chain short.
    let (r2, r4) = (r * r, r * r * r * r);
    let p01 = 1.0 + r;
    let p23 = 0.5 + r * (1.0 / 6.0);
    let p45 = 1.0 / 24.0 + r * (1.0 / 120.0);
    let p67 = 1.0 / 720.0 + r * (1.0 / 5_040.0);
    let p89 = 1.0 / 40_320.0 + r * (1.0 / 362_880.0);
    let p10 = 1.0 / 3_628_800.0;
    let q0 = p01 + r2 * p23;
    let q1 = p45 + r2 * p67;
    let q2 = p89 + r2 * p10;
    let p = q0 + r4 * (q1 + r4 * q2);
    let scale = f64::from_bits(k.to_bits().wrapping_sub(0x4338_0000_0000_0000).wrapping_add(1023) << 52);
    if x < -708.0 {
        0.0
    } else {
        p * scale
    }
}

/// The maximum of `xs` (`-inf` when empty).
pub fn max_f32(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            acc[k] = acc[k].max(c[k]);
        }
    }
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    acc.iter().fold(tail, |a, &b| a.max(b))
}

/// `sum a_i b_i` in eight f32 lanes flushed into f64 every 512 terms, so that long sums keep
/// about f32 precision relative to the total.
pub fn dot_wide(a: &[f32], b: &[f32]) -> f64 {
    let mut total = 0.0f64;
    for (ab, bb) in a.chunks(512).zip(b.chunks(512)) {
        let mut acc = [0.0f32; 8];
        let (ac, bc) = (ab.chunks_exact(8), bb.chunks_exact(8));
        let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
        for (x, y) in ac.zip(bc) {
            for k in 0..8 {
                acc[k] += x[k] * y[k];
            }
        }
        total += acc.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(tail);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_its_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = f64::from(x).exp();
            let got = f64::from(exp_f32(x));
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
        let mut worst = 0.0f64;
        let mut x = -708.0f64;
        while x < 709.0 {
            let want = x.exp();
            worst = worst.max(((exp_f64(x) - want) / want).abs());
            x += 0.0731;
        }
        assert!(worst < 3e-13, "relative error {worst}");
        assert_eq!(exp_f64(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp_f64(0.0), 1.0);
    }

    #[test]
    fn sums_and_maxima() {
        let xs: Vec<f32> = (0..10_001).map(|i| (i % 7) as f32 * 0.1).collect();
        let want: f64 = xs.iter().map(|&x| f64::from(x)).sum();
        let ones = vec![1.0f32; xs.len()];
        assert!((dot_wide(&xs, &ones) - want).abs() < 1e-6 * want);
        let sq: f64 = xs.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        assert!((dot_wide(&xs, &xs) - sq).abs() < 1e-6 * sq);
        assert_eq!(max_f32(&xs), 0.6);
        assert_eq!(max_f32(&[]), f32::NEG_INFINITY);
    }
}
