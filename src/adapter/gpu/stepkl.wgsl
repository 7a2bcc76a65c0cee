// KL(p_old || p_new) per token over the rows active in either adapter (`rows`); every other row has
// no change in either. u holds both projections: old at offset 0, new at offset r + 1 (stride
// ustride); scale is s_old and scale2 s_new. One workgroup per chunk position t; writes out[t0 + t].

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> rows: array<u32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read> b_old: array<f32>;
@group(0) @binding(4) var<storage, read> b_new: array<f32>;
@group(0) @binding(5) var<storage, read> base: array<u32>;
@group(0) @binding(6) var<storage, read> toks: array<Tok>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

// (y_old, y_new) of row v at global position gt.
fn ys(v: u32, gt: u32, tau: f32) -> vec2<f32> {
    let ub = gt * P.ustride;
    var so = 0.0;
    var sn = 0.0;
    for (var j = 0u; j < P.r; j++) {
        so += b_old[v * P.r + j] * u[ub + j];
        sn += b_new[v * P.r + j] * u[ub + P.r + 1u + j];
    }
    return vec2<f32>(P.scale * so, P.scale2 * sn) / tau;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) li: vec3<u32>) {
    let t = wg.x;
    let gt = P.t0 + t;
    let lid = li.x;
    let tk = toks[gt];
    var ym = vec2<f32>(-3.0e38);
    for (var i = lid; i < P.n_rows; i += WG) {
        let v = rows[i];
        if (log_q(t, v, tk) > NO_MASS) {
            ym = max(ym, ys(v, gt, tk.tau));
        }
    }
    let mx = reduce_max(lid, vec4<f32>(ym, 0.0, 0.0));
    let big_o = mx.x > 20.0;
    let big_n = mx.y > 20.0;
    var acc = vec4<f32>(0.0);
    for (var i = lid; i < P.n_rows; i += WG) {
        let v = rows[i];
        let lq = log_q(t, v, tk);
        if (lq > NO_MASS) {
            let y = ys(v, gt, tk.tau);
            acc.x += z_term(lq, y.x, mx.x, big_o);
            acc.y += z_term(lq, y.y, mx.y, big_n);
            acc.z += exp(lq);
        }
    }
    let s = reduce_sum(lid, acc);
    let rest = max(1.0 - s.z, 0.0);
    let lz_o = log_z(big_o, mx.x, s.x, rest);
    let lz_n = log_z(big_n, mx.y, s.y, rest);
    var kl = 0.0;
    for (var i = lid; i < P.n_rows; i += WG) {
        let v = rows[i];
        let lq = log_q(t, v, tk);
        if (lq > NO_MASS) {
            let y = ys(v, gt, tk.tau);
            kl += kl_term(lq + y.x - lz_o, lq + y.y - lz_n);
        }
    }
    kl = reduce_sum(lid, vec4<f32>(kl, 0.0, 0.0, 0.0)).x;
    if (lid == 0u) {
        if (rest > 0.0) {
            let lr = log(rest);
            kl += kl_term(lr - lz_o, lr - lz_n);
        }
        out[gt] = max(kl, 0.0);
    }
}
