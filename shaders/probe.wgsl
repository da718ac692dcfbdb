// Follows the prelude and rng.wgsl: evaluates the generator at given
// addresses, and the block-index formulas at given arguments, so the tests
// can compare GPU and CPU words, Gaussians, 32x32-bit products and indices.

// probe: seed lo, seed hi, trial, stream | index lo, index hi, a, b
// probe_blocks: k, j, xbits, chunks | nb, b, c, i | k, j, blk, 0
@group(0) @binding(0) var<storage, read> probe_in: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> probe_out: array<vec4<u32>>;

@compute @workgroup_size(WORKGROUP_SIZE)
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

// Per request: static, dynamic and read block indices as (lo, hi) pairs.
@compute @workgroup_size(WORKGROUP_SIZE)
fn probe_blocks(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (3u * i + 2u >= arrayLength(&probe_in)) {
        return;
    }
    let a = probe_in[3u * i];
    let b = probe_in[3u * i + 1u];
    let c = probe_in[3u * i + 2u];
    let l = BlockLayout(a.x, a.y, a.z, a.w, b.x);
    let s = static_block(l, c.y, c.x, c.z);
    let d = dynamic_block(l, b.y, b.w, c.x, c.y, c.z);
    let r = read_block(l, b.y, b.z, b.w, c.y, c.z);
    probe_out[2u * i] = vec4<u32>(s, d);
    probe_out[2u * i + 1u] = vec4<u32>(r, 0u, 0u);
}
