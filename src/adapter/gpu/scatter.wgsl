// dst[ids[e / r] r + e % r] = src[src_off + e]: writes whole rows of B (uploads of changed rows, and
// the rows an Adam step moved).

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let e = gid.y * nw.x * 64u + gid.x;
    if (e >= P.n_rows * P.r) {
        return;
    }
    dst[ids[e / P.r] * P.r + e % P.r] = src[P.src_off + e];
}
