// u_t = A h_t and the value estimate w . h_t + b. Workgroup (j, t): row j of A (j = r: the value
// head) against chunk position t; writes u[(t0 + t) * ustride + uoff + j].

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> val: array<f32>;
@group(0) @binding(3) var<storage, read> h: array<f32>;
@group(0) @binding(4) var<storage, read_write> u: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) li: vec3<u32>) {
    let j = wg.x;
    let t = wg.y;
    let lid = li.x;
    var s = 0.0;
    if (j < P.r) {
        for (var k = lid; k < P.d; k += WG) {
            s += a[j * P.d + k] * h[t * P.d + k];
        }
    } else {
        for (var k = lid; k < P.d; k += WG) {
            s += val[k] * h[t * P.d + k];
        }
    }
    let total = reduce_sum(lid, vec4<f32>(s, 0.0, 0.0, 0.0)).x;
    if (lid == 0u) {
        var out = total;
        if (j == P.r) {
            out += val[P.d];
        }
        u[(P.t0 + t) * P.ustride + P.uoff + j] = out;
    }
}
