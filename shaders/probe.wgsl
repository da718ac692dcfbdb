// Prefixed with rng.wgsl: evaluates the generator at given addresses so the
// tests can compare GPU and CPU words, Gaussians and 32x32-bit products.

@group(0) @binding(0) var<storage, read> probe_in: array<vec4<u32>>;   // seed lo, seed hi, trial, stream | index lo, index hi, a, b
@group(0) @binding(1) var<storage, read_write> probe_out: array<vec4<u32>>;

@compute @workgroup_size(64)
fn probe(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (2u * i + 1u >= arrayLength(&probe_in)) {
        return;
    }
    let a = probe_in[2u * i];
    let b = probe_in[2u * i + 1u];
    let w = rng_block(vec2<u32>(a.x, a.y), a.z, a.w, b.x, b.y);
    let z01 = box_muller(w.x, w.y);
    let z23 = box_muller(w.z, w.w);
    let m = mulhilo(b.z, b.w);
    probe_out[3u * i] = w;
    probe_out[3u * i + 1u] = vec4<u32>(bitcast<u32>(z01.x), bitcast<u32>(z01.y), bitcast<u32>(z23.x), bitcast<u32>(z23.y));
    probe_out[3u * i + 2u] = vec4<u32>(m.x, m.y, 0u, 0u);
}
