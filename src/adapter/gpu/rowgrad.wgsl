// dB on the chosen rows: db[i, :] += -s sum_t g_t[rows_i] u_t over the chunk's positions, with
// g_t[v] = (c/tau)(1[v = a_t] - p_v) - (beta/tau) p_v (log p_v - log q_v - KL_t) from the statistics
// of `stats`, plus the logit weight k_t at the sampled token. One invocation per row.

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> rows: array<u32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> base: array<u32>;
@group(0) @binding(5) var<storage, read> toks: array<Tok>;
@group(0) @binding(6) var<storage, read> st: array<f32>;
@group(0) @binding(7) var<storage, read_write> db: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= P.n_rows) {
        return;
    }
    let v = rows[i];
    let r = P.r;
    var acc: array<f32, 64>;
    var brow: array<f32, 64>;
    for (var j = 0u; j < r; j++) {
        acc[j] = 0.0;
        brow[j] = b[v * r + j];
    }
    for (var t = 0u; t < P.n_tok; t++) {
        let gt = P.t0 + t;
        let tk = toks[gt];
        let lq = log_q(t, v, tk);
        let ub = gt * P.ustride;
        var gv = 0.0;
        if (lq > NO_MASS) {
            var y = 0.0;
            for (var j = 0u; j < r; j++) {
                y += brow[j] * u[ub + j];
            }
            let lz = st[gt * 8u];
            let kl = st[gt * 8u + 1u];
            let w = P.scale * y / tk.tau - lz;
            let p = exp(lq + w);
            gv = -(tk.c / tk.tau) * p - (tk.beta / tk.tau) * p * (w - kl);
        }
        if (v == tk.token) {
            gv += tk.c / tk.tau + tk.k;
        }
        if (gv != 0.0) {
            for (var j = 0u; j < r; j++) {
                acc[j] += gv * u[ub + j];
            }
        }
    }
    for (var j = 0u; j < r; j++) {
        db[i * r + j] += -P.scale * acc[j];
    }
}
