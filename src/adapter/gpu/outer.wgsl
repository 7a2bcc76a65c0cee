// out[m, k] += sum_t coef[t0 + t, m] h[t, k] over the chunk's positions: dA (m < r) and the value
// head's dw (m = r). One invocation per (k, m).

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> coef: array<f32>;
@group(0) @binding(2) var<storage, read> h: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x;
    let m = gid.y;
    if (k >= P.d || m > P.r) {
        return;
    }
    var s = 0.0;
    for (var t = 0u; t < P.n_tok; t++) {
        s += coef[(P.t0 + t) * (P.r + 1u) + m] * h[t * P.d + k];
    }
    out[m * P.d + k] += s;
}
