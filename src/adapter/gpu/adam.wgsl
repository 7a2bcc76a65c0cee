// One Adam step on a packed parameter list: A (`off_b` values), then the chosen rows of B (r values a
// row, each row its own step count), then the value head. tab[group] = (lr, 1 - beta1^t, 1 - beta2^t)
// with group 0 for A, 1 + row for B's rows and n_groups - 1 for the value head.

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;
@group(0) @binding(5) var<storage, read> tab: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let e = gid.y * nw.x * 64u + gid.x;
    if (e >= P.n_elems) {
        return;
    }
    var grp = 0u;
    if (e >= P.off_v) {
        grp = P.n_groups - 1u;
    } else if (e >= P.off_b) {
        grp = 1u + (e - P.off_b) / P.r;
    }
    let k = tab[grp];
    let gg = g[e];
    let mm = P.beta1 * m[e] + (1.0 - P.beta1) * gg;
    let vv = P.beta2 * v[e] + (1.0 - P.beta2) * gg * gg;
    m[e] = mm;
    v[e] = vv;
    x[e] = x[e] - k.x * (mm / k.y) / (sqrt(vv / k.z) + P.eps);
}
