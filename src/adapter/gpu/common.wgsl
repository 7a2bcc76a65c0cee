// Declarations shared by every kernel; each kernel's source is this file followed by its own.
// Sizes and offsets are in 4-byte words. Every kernel reads one `Params` block.

struct Params {
    r: u32,
    d: u32,
    vocab: u32,
    n_act: u32,
    n_tok: u32,
    t0: u32,
    n_rows: u32,
    lp_words: u32,
    kept_off: u32,
    kept_words: u32,
    ustride: u32,
    uoff: u32,
    scale: f32,
    scale2: f32,
    mode: u32,
    n_elems: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    off_b: u32,
    off_v: u32,
    n_groups: u32,
    src_off: u32,
    pad: u32,
}

// What a kernel knows about one recorded token.
struct Tok {
    token: u32,
    // 1 when the token has a kept set (a bitset row in the chunk's base buffer), 0 when all of V is kept.
    kept: u32,
    tau: f32,
    lse: f32,
    c: f32,
    beta: f32,
    goal: f32,
    has_target: u32,
    // The logit weight k_t: added to the sampled token's logit gradient.
    k: f32,
}

const WG: u32 = 256u;
// Log-probabilities at or below this are treated as "no mass" (f16 -inf, underflow).
const NO_MASS: f32 = -1.0e30;

// exp(x) - 1 without cancellation near 0.
fn expm1_(x: f32) -> f32 {
    if (abs(x) < 0.5) {
        return x * (1.0 + x / 2.0 * (1.0 + x / 3.0 * (1.0 + x / 4.0 * (1.0 + x / 5.0 * (1.0 + x / 6.0
            * (1.0 + x / 7.0 * (1.0 + x / 8.0 * (1.0 + x / 9.0))))))));
    }
    return exp(x) - 1.0;
}

// log(1 + x) without cancellation near 0 (x > -1), through 2 atanh(x / (2 + x)).
fn log1p_(x: f32) -> f32 {
    if (abs(x) < 0.25) {
        let z = x / (2.0 + x);
        let z2 = z * z;
        return 2.0 * z * (1.0 + z2 * (1.0 / 3.0 + z2 * (1.0 / 5.0 + z2 * (1.0 / 7.0 + z2 * (1.0 / 9.0
            + z2 * (1.0 / 11.0 + z2 / 13.0))))));
    }
    return log(1.0 + x);
}

// b * phi(a - b) with b = exp(lb), where phi(x) = x e^x - e^x + 1 >= 0: the share of one outcome in
// KL(P || Q) = sum_v Q_v phi(log P_v - log Q_v), written so that no term cancels a larger one.
fn kl_term(la: f32, lb: f32) -> f32 {
    let x = la - lb;
    if (abs(x) < 0.5) {
        let s = 0.5 + x * (1.0 / 3.0 + x * (1.0 / 8.0 + x * (1.0 / 30.0 + x * (1.0 / 144.0
            + x * (1.0 / 840.0 + x * (1.0 / 5760.0 + x / 45360.0))))));
        return exp(lb) * x * x * s;
    }
    return exp(la) * (x - 1.0) + exp(lb);
}

// log Z = log sum_v q_v exp(y_v) over the rows an adapter changes, in two forms: with `big` false
// (every y <= 20) the sums hold q_v expm1(y_v) and log Z = log1p(sum), exact for small changes; with
// `big` they hold q_v exp(y_v - ymax), and the unchanged base mass `rest` is added back.
fn z_term(lq: f32, y: f32, ymax: f32, big: bool) -> f32 {
    return select(exp(lq) * expm1_(y), exp(lq + y - ymax), big);
}

// log Z from the sum of `z_term` over the changed rows and the base mass `rest` of the others.
fn log_z(big: bool, ymax: f32, s: f32, rest: f32) -> f32 {
    if (big) {
        return ymax + log(rest * exp(-ymax) + s);
    }
    return log1p_(s);
}
