// Workgroup reductions over WG = 256 invocations; call from uniform control flow.

var<workgroup> sh: array<vec4<f32>, 256>;

fn reduce_sum(lid: u32, x: vec4<f32>) -> vec4<f32> {
    sh[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            sh[lid] = sh[lid] + sh[lid + s];
        }
        workgroupBarrier();
    }
    let out = sh[0];
    workgroupBarrier();
    return out;
}

fn reduce_max(lid: u32, x: vec4<f32>) -> vec4<f32> {
    sh[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            sh[lid] = max(sh[lid], sh[lid + s]);
        }
        workgroupBarrier();
    }
    let out = sh[0];
    workgroupBarrier();
    return out;
}
