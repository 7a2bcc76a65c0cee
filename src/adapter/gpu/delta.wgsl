// e[t, i] = s B[act_i] . u_{t0 + t}: the change of the logit of active row i at chunk position t.
// One invocation per active row, holding its row of B while it walks the positions.

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> act: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> u: array<f32>;
@group(0) @binding(4) var<storage, read_write> e: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= P.n_act) {
        return;
    }
    var row: array<f32, 64>;
    for (var j = 0u; j < P.r; j++) {
        row[j] = b[act[i] * P.r + j];
    }
    for (var t = 0u; t < P.n_tok; t++) {
        let ub = (P.t0 + t) * P.ustride + P.uoff;
        var s = 0.0;
        for (var j = 0u; j < P.r; j++) {
            s += row[j] * u[ub + j];
        }
        e[t * P.n_act + i] = P.scale * s;
    }
}
