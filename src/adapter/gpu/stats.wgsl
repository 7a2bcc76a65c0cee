// Per-token statistics of the adapted policy p = q exp(y) / Z, y = delta / tau, over the active rows
// (every other row has y = 0, so its share follows from the base mass left over). One workgroup per
// chunk position t. Writes st[8 gt ..]: log Z, KL(p || q), y of the sampled token, the base mass of
// the active rows, sum p log p and sum q log q over them, and (mode 1, the gradient) dJ/dz on the
// active rows into g plus the value head's error into coef[gt (r + 1) + r].

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> act: array<u32>;
@group(0) @binding(2) var<storage, read> e: array<f32>;
@group(0) @binding(3) var<storage, read> base: array<u32>;
@group(0) @binding(4) var<storage, read> toks: array<Tok>;
@group(0) @binding(5) var<storage, read> u: array<f32>;
@group(0) @binding(6) var<storage, read_write> st: array<f32>;
@group(0) @binding(7) var<storage, read> b: array<f32>;
@group(0) @binding(8) var<storage, read_write> coef: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) li: vec3<u32>) {
    let t = wg.x;
    let gt = P.t0 + t;
    let lid = li.x;
    let tk = toks[gt];
    let n = P.n_act;
    let row = t * n;
    // The largest y decides between the expm1 form of log Z (exact for small changes) and a shifted one.
    var ymax = -3.0e38;
    for (var i = lid; i < n; i += WG) {
        if (log_q(t, act[i], tk) > NO_MASS) {
            ymax = max(ymax, e[row + i] / tk.tau);
        }
    }
    ymax = reduce_max(lid, vec4<f32>(ymax, 0.0, 0.0, 0.0)).x;
    let big = ymax > 20.0;
    var acc = vec4<f32>(0.0);
    for (var i = lid; i < n; i += WG) {
        let v = act[i];
        let lq = log_q(t, v, tk);
        if (lq > NO_MASS) {
            let y = e[row + i] / tk.tau;
            let q = exp(lq);
            acc.x += z_term(lq, y, ymax, big);
            acc.y += q;
            if (q > 0.0) {
                acc.z += q * lq;
            }
            if (v == tk.token) {
                acc.w += y;
            }
        }
    }
    let s1 = reduce_sum(lid, acc);
    let rest = max(1.0 - s1.y, 0.0);
    let lz = log_z(big, ymax, s1.x, rest);
    var acc2 = vec4<f32>(0.0);
    for (var i = lid; i < n; i += WG) {
        let lq = log_q(t, act[i], tk);
        if (lq > NO_MASS) {
            let lp = lq + e[row + i] / tk.tau - lz;
            acc2.x += kl_term(lp, lq);
            let p = exp(lp);
            if (p > 0.0) {
                acc2.y += p * lp;
            }
        }
    }
    let s2 = reduce_sum(lid, acc2);
    var kl = s2.x;
    if (rest > 0.0) {
        // Rows without a change: log p - log q = -lz, base mass `rest`.
        let lr = log(rest);
        kl += kl_term(lr - lz, lr);
    }
    kl = max(kl, 0.0);
    if (lid == 0u) {
        st[gt * 8u] = lz;
        st[gt * 8u + 1u] = kl;
        st[gt * 8u + 2u] = s1.w;
        st[gt * 8u + 3u] = s1.y;
        st[gt * 8u + 4u] = s2.y;
        st[gt * 8u + 5u] = s1.z;
        st[gt * 8u + 6u] = u[gt * P.ustride + P.uoff + P.r];
    }
    if (P.mode == 1u) {
        let c = tk.c / tk.tau;
        let bt = tk.beta / tk.tau;
        var w: array<f32, 64>;
        for (var j = 0u; j < 64u; j++) {
            w[j] = 0.0;
        }
        for (var i = lid; i < n; i += WG) {
            let v = act[i];
            let lq = log_q(t, v, tk);
            var gv = 0.0;
            if (lq > NO_MASS) {
                let x = e[row + i] / tk.tau - lz;
                let p = exp(lq + x);
                gv = -c * p - bt * p * (x - kl);
            }
            if (v == tk.token) {
                gv += c + tk.k;
            }
            if (gv != 0.0) {
                for (var j = 0u; j < P.r; j++) {
                    w[j] += gv * b[v * P.r + j];
                }
            }
        }
        for (var j = 0u; j < P.r; j += 4u) {
            let sum = reduce_sum(lid, vec4<f32>(w[j], w[j + 1u], w[j + 2u], w[j + 3u]));
            if (lid == 0u) {
                for (var k = 0u; k < 4u && j + k < P.r; k++) {
                    coef[gt * (P.r + 1u) + j + k] = -P.scale * sum[k];
                }
            }
        }
        if (lid == 0u) {
            let diff = u[gt * P.ustride + P.uoff + P.r] - tk.goal;
            coef[gt * (P.r + 1u) + P.r] = select(0.0, diff, tk.has_target == 1u);
        }
    }
}
