// Lookups into a chunk's base buffer: packed f16 base log-probabilities (`lp_words` words per token),
// then, from `kept_off`, one kept-set bitset per token (`kept_words` words). Kernels that include
// this file declare `base`.

// The base log-probability at temperature 1 of token `v` at chunk position `t`.
fn base_lp(t: u32, v: u32) -> f32 {
    let pair = unpack2x16float(base[t * P.lp_words + (v >> 1u)]);
    return select(pair.x, pair.y, (v & 1u) == 1u);
}

// Whether `v` is in the kept set of chunk position `t` (always, when the token has none).
fn in_kept(t: u32, v: u32, has_kept: u32) -> bool {
    if (has_kept == 0u) {
        return true;
    }
    let w = base[P.kept_off + t * P.kept_words + (v >> 5u)];
    return ((w >> (v & 31u)) & 1u) == 1u;
}

// log q_v at chunk position `t`, or NO_MASS outside the kept set or without mass.
fn log_q(t: u32, v: u32, tk: Tok) -> f32 {
    if (!in_kept(t, v, tk.kept)) {
        return NO_MASS;
    }
    let lq = base_lp(t, v) / tk.tau - tk.lse;
    return select(NO_MASS, lq, lq > NO_MASS);
}
