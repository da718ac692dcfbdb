// The GPU engine's kernels:
//   cells:    per-trial cell weights W[t][j][k][n] (faults, leak, static mismatch)
//   simulate, simulate_dynamic: accumulation, noise, ADC, shift-and-add
//   simulate_tiled, simulate_dynamic_stream: the same sums, for hardware
//             GPUs: input bits staged in workgroup memory (no int-to-float
//             conversions in the inner loop), and no per-thread arrays
//             (the CPU sums each conversion over rows in the same order)
//   reduce:   one workgroup per trial: error moments and histogram bins
// Compiled after the prelude (engine::wgsl::prelude: stream ids, noise-path
// codes, histogram layout, limits), rng.wgsl (Philox, the block-index
// formulas) and the bindings (engine::wgsl::BINDINGS: P, digits, ..., y,
// hist). Layouts and random-number addresses are those of docs/MODEL.md.

struct Params {
    k: u32, n: u32, b: u32, xbits: u32,
    j: u32, p: u32, chunks: u32, nb: u32,
    seed_lo: u32, seed_hi: u32, trial0: u32, trials: u32,
    path: u32, adc_bits: u32, has_faults: u32, static_noise: u32,
    sigma: f32, read_sigma: f32, leak: f32, p_sa0: f32,
    p_sa01: f32, top: f32, fs_sigma: f32, adc_sigma_lsb: f32,
    // Row of the first input vector in the random-number addresses (a
    // network's batch of images starts past the rows of the images before
    // it); words of `xin` and `row_active` per trial (0: shared by all).
    // simulate_tiled: columns per workgroup (a power of two dividing
    // WORKGROUP_SIZE; the rest of the workgroup takes more input vectors).
    b_offset: u32, x_stride: u32, active_stride: u32, tile_cols: u32,
    // The digital weight of each input plane (plan.input_weights), four per vec4.
    xweight: array<vec4<f32>, MAX_INPUT_PLANES / 4u>,
}

fn input_weight(i: u32) -> f32 {
    return P.xweight[i / 4u][i % 4u];
}

fn seed() -> vec2<u32> {
    return vec2<u32>(P.seed_lo, P.seed_hi);
}

// The plan's rows of random blocks (model::rng::BlockLayout).
fn blocks() -> BlockLayout {
    return BlockLayout(P.k, P.j, P.xbits, P.chunks, P.nb);
}

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn cells(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // One thread per (trial, plane, row, block of four columns).
    let id = linear_id(gid, nwg);
    let per_trial = P.j * P.k * P.nb;
    if (id >= per_trial * P.trials) {
        return;
    }
    let tl = id / per_trial;
    let rem = id % per_trial;
    let blk = rem % P.nb;
    let row = rem / P.nb; // j * K + k
    let jj = row / P.k;
    let kk = row % P.k;
    let t = P.trial0 + tl;
    let index = static_block(blocks(), jj, kk, blk);
    var fw = vec4<u32>(0u);
    if (P.has_faults != 0u) {
        fw = rng_block(seed(), t, STREAM_FAULT, index.x, index.y);
    }
    var z = vec4<f32>(0.0);
    if (P.static_noise != 0u) {
        let w = rng_block(seed(), t, STREAM_CELL_STATIC, index.x, index.y);
        let z01 = box_muller(w.x, w.y);
        let z23 = box_muller(w.z, w.w);
        z = vec4<f32>(z01.x, z01.y, z23.x, z23.y);
    }
    for (var lane = 0u; lane < 4u; lane = lane + 1u) {
        let nn = blk * 4u + lane;
        if (nn >= P.n) {
            break;
        }
        var d = digits[(jj * P.k + kk) * P.n + nn];
        if (P.has_faults != 0u) {
            let u = f32(fw[lane] >> 8u) * (1.0 / 16777216.0);
            if (u < P.p_sa0) {
                d = 0;
            } else if (u < P.p_sa01) {
                d = sa1_digit[(jj * P.k + kk) * P.n + nn];
            }
        }
        var bw = P.leak;
        if (d != 0) {
            bw = f32(d);
        }
        var g = bw;
        if (P.static_noise != 0u) {
            g = bw + bw * P.sigma * z[lane];
        }
        weights[((tl * P.j + jj) * P.k + kk) * P.n + nn] = g;
    }
}

fn convert(a: f32, lo: f32, hi: f32) -> f32 {
    if (P.adc_bits == 0u) {
        return a;
    }
    let range = hi - lo;
    let step = max(range / P.top, 1.0);
    return lo + adc_code(a, lo, range) * step;
}

// The read noise of a conversion over [lo, hi] (plan::read_sds): read_sigma,
// with fs_sigma (hi - lo) and adc_sigma_lsb step in quadrature.
fn read_sd(lo: f32, hi: f32) -> f32 {
    if (P.fs_sigma == 0.0 && P.adc_sigma_lsb == 0.0) {
        return P.read_sigma;
    }
    let fs = P.fs_sigma * (hi - lo);
    var lsb = 0.0;
    if (P.adc_bits != 0u) {
        lsb = P.adc_sigma_lsb * max((hi - lo) / P.top, 1.0);
    }
    return sqrt(P.read_sigma * P.read_sigma + fs * fs + lsb * lsb);
}

// `Adc::code` in src/model.rs, operation for operation: the code of the exact
// quotient (a - lo) top / range, ties to even, decided by the remainder so
// that a division off by an ulp cannot move an exact tie.
fn adc_code(a: f32, lo: f32, range: f32) -> f32 {
    let d = a - lo;
    if (range <= P.top) {
        return clamp(round(d), 0.0, P.top);
    }
    let num = d * P.top;
    let q = floor(num / range);
    let below = select(0.0, 1.0, num - q * range < 0.0);
    let above = select(0.0, 1.0, num - (q + 1.0) * range >= 0.0);
    let c = q - below + above;
    let twice = 2.0 * (num - c * range);
    let odd = c - 2.0 * floor(0.5 * c);
    let up = select(0.0, 1.0, twice > range || (twice == range && odd == 1.0));
    return clamp(c + up, 0.0, P.top);
}

// Input planes 0-3 and 4-7 of a pattern `x` (shifted to its group) as 0/1 floats.
fn bits_lo(x: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(x) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u));
}

fn bits_hi(x: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(x) >> vec4<u32>(4u, 5u, 6u, 7u)) & vec4<u32>(1u));
}

// The conversions of one (input vector, chunk, plane) for the group of
// input planes from `g0`: analog sums `lo` (planes g0..g0+3) and `hi`
// (g0+4..g0+7), summed squared weights `slo`/`shi` for the aggregated path;
// returns the shift-and-add contribution.
fn convert_vector(lo: vec4<f32>, hi: vec4<f32>, slo: vec4<f32>, shi: vec4<f32>, zlo: vec4<f32>, zhi: vec4<f32>, bb: u32, c: u32, jj: u32, nn: u32, tl: u32, grp: vec4<f32>, g0: u32) -> f32 {
    let t = P.trial0 + tl;
    var out = 0.0;
    let lane = nn % 4u;
    let blk = nn / 4u;
    for (var li = 0u; li < INPUT_GROUP && g0 + li < P.xbits; li = li + 1u) {
        let i = g0 + li;
        if (row_active[tl * P.active_stride + (bb * P.chunks + c) * P.xbits + i] == 0u) {
            continue;
        }
        var a = hi[li % 4u];
        var s2 = shi[li % 4u];
        var z = zhi[li % 4u];
        if (li < 4u) {
            a = lo[li];
            s2 = slo[li];
            z = zlo[li];
        }
        // Without static noise the sums are of levels and the leak is added
        // once, `D + leak Z`, as the CPU engine adds it (Z counts the zero
        // levels read): summed cell by cell, leak rounds differently and
        // can move a sum that is an exact ADC tie.
        if (P.static_noise == 0u) {
            a = a + P.leak * z;
            s2 = s2 + P.leak * P.leak * z;
        }
        let index = read_block(blocks(), P.b_offset + bb, c, i, jj, blk);
        let rs = read_sd(grp.x, grp.y);
        if (P.path == PATH_AGGREGATED) {
            let sd = sqrt(P.sigma * P.sigma * s2 + rs * rs);
            a = a + sd * gaussian(seed(), t, STREAM_AGGREGATED, index.x, index.y, lane);
        } else if (rs > 0.0) {
            a = a + rs * gaussian(seed(), t, STREAM_READ, index.x, index.y, lane);
        }
        out = out + input_weight(i) * scales[jj] * convert(a, grp.x, grp.y);
    }
    return out;
}

// Static, analytic and aggregated paths: one thread per (trial, block of four
// input vectors, column). A cell weight is loaded once per group of eight
// input planes (one group for up to eight planes, two for sign-magnitude
// inputs of more) and used for four input vectors and the group's planes
// (bit masks as 0/1 floats, branch-free); the four vectors are unrolled by
// hand so they stay in registers.
@compute @workgroup_size(WORKGROUP_SIZE)
fn simulate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_id(gid, nwg);
    let bblocks = (P.b + 3u) / 4u;
    if (id >= P.trials * bblocks * P.n) {
        return;
    }
    let nn = id % P.n;
    let b0 = ((id / P.n) % bblocks) * 4u;
    let tl = id / (P.n * bblocks);
    let xo = tl * P.x_stride;
    // Vectors past the end repeat the last one and are not stored.
    let b1 = min(b0 + 1u, P.b - 1u);
    let b2 = min(b0 + 2u, P.b - 1u);
    let b3 = min(b0 + 3u, P.b - 1u);
    let agg = P.path == PATH_AGGREGATED;
    let digit_sums = P.static_noise == 0u && P.leak != 0.0;
    var y0 = 0.0;
    var y1 = 0.0;
    var y2 = 0.0;
    var y3 = 0.0;
    for (var c = 0u; c < P.chunks; c = c + 1u) {
        let k0 = c * P.p;
        let k1 = min(k0 + P.p, P.k);
        for (var jj = 0u; jj < P.j; jj = jj + 1u) {
            let grp = groups[(c * P.j + jj) * P.n + nn];
            if (grp.z == 0.0) {
                continue;
            }
            let wbase = (tl * P.j + jj) * P.k;
            for (var g0 = 0u; g0 < P.xbits; g0 = g0 + INPUT_GROUP) {
                var l0 = vec4<f32>(0.0); var h0 = vec4<f32>(0.0);
                var l1 = vec4<f32>(0.0); var h1 = vec4<f32>(0.0);
                var l2 = vec4<f32>(0.0); var h2 = vec4<f32>(0.0);
                var l3 = vec4<f32>(0.0); var h3 = vec4<f32>(0.0);
                var sl0 = vec4<f32>(0.0); var sh0 = vec4<f32>(0.0);
                var sl1 = vec4<f32>(0.0); var sh1 = vec4<f32>(0.0);
                var sl2 = vec4<f32>(0.0); var sh2 = vec4<f32>(0.0);
                var sl3 = vec4<f32>(0.0); var sh3 = vec4<f32>(0.0);
                var zl0 = vec4<f32>(0.0); var zh0 = vec4<f32>(0.0);
                var zl1 = vec4<f32>(0.0); var zh1 = vec4<f32>(0.0);
                var zl2 = vec4<f32>(0.0); var zh2 = vec4<f32>(0.0);
                var zl3 = vec4<f32>(0.0); var zh3 = vec4<f32>(0.0);
                for (var kk = k0; kk < k1; kk = kk + 1u) {
                    let w = weights[(wbase + kk) * P.n + nn];
                    let x0 = xin[xo + b0 * P.k + kk] >> g0; let x1 = xin[xo + b1 * P.k + kk] >> g0;
                    let x2 = xin[xo + b2 * P.k + kk] >> g0; let x3 = xin[xo + b3 * P.k + kk] >> g0;
                    if (digit_sums && w == P.leak) {
                        // A zero level: counted, its leak added per conversion
                        // (a level equal to the leak, 1, adds the same).
                        zl0 = zl0 + bits_lo(x0); zh0 = zh0 + bits_hi(x0);
                        zl1 = zl1 + bits_lo(x1); zh1 = zh1 + bits_hi(x1);
                        zl2 = zl2 + bits_lo(x2); zh2 = zh2 + bits_hi(x2);
                        zl3 = zl3 + bits_lo(x3); zh3 = zh3 + bits_hi(x3);
                        continue;
                    }
                    let f0l = bits_lo(x0); let f0h = bits_hi(x0);
                    let f1l = bits_lo(x1); let f1h = bits_hi(x1);
                    let f2l = bits_lo(x2); let f2h = bits_hi(x2);
                    let f3l = bits_lo(x3); let f3h = bits_hi(x3);
                    l0 = l0 + w * f0l; h0 = h0 + w * f0h;
                    l1 = l1 + w * f1l; h1 = h1 + w * f1h;
                    l2 = l2 + w * f2l; h2 = h2 + w * f2h;
                    l3 = l3 + w * f3l; h3 = h3 + w * f3h;
                    if (agg) {
                        let w2 = w * w;
                        sl0 = sl0 + w2 * f0l; sh0 = sh0 + w2 * f0h;
                        sl1 = sl1 + w2 * f1l; sh1 = sh1 + w2 * f1h;
                        sl2 = sl2 + w2 * f2l; sh2 = sh2 + w2 * f2h;
                        sl3 = sl3 + w2 * f3l; sh3 = sh3 + w2 * f3h;
                    }
                }
                y0 = y0 + convert_vector(l0, h0, sl0, sh0, zl0, zh0, b0, c, jj, nn, tl, grp, g0);
                if (b0 + 1u < P.b) { y1 = y1 + convert_vector(l1, h1, sl1, sh1, zl1, zh1, b1, c, jj, nn, tl, grp, g0); }
                if (b0 + 2u < P.b) { y2 = y2 + convert_vector(l2, h2, sl2, sh2, zl2, zh2, b2, c, jj, nn, tl, grp, g0); }
                if (b0 + 3u < P.b) { y3 = y3 + convert_vector(l3, h3, sl3, sh3, zl3, zh3, b3, c, jj, nn, tl, grp, g0); }
            }
        }
    }
    let out = (tl * P.b + b0) * P.n + nn;
    y[out] = y0;
    if (b0 + 1u < P.b) { y[out + P.n] = y1; }
    if (b0 + 2u < P.b) { y[out + 2u * P.n] = y2; }
    if (b0 + 3u < P.b) { y[out + 3u * P.n] = y3; }
}

// The input bits a `simulate_tiled` workgroup stages: per (block of four
// vectors, row), the 0/1 floats of input planes g0..g0+3 and g0+4..g0+7 of
// each of the four vectors ([vector block][row][vector][lo, hi]); a
// workgroup of `tile_cols` columns stages `tile_cols` rows of each of its
// WORKGROUP_SIZE / tile_cols blocks.
var<workgroup> tile_bits: array<vec4<f32>, WORKGROUP_SIZE * 8u>;

// The tiled variant of `simulate` (same sums in the same order): one
// workgroup per (trial, WORKGROUP_SIZE / tile_cols blocks of four input
// vectors, tile_cols columns), one thread per (block, column), so narrow
// layers fill their workgroups too. The workgroup stages the input bits of
// `tile_cols` rows at a time in workgroup memory as 0/1 floats (each
// thread unpacks one row of its block), so a thread's inner loop is one
// cell weight load and multiply-adds: the weight serves four input vectors
// and a group of eight input planes (one group for up to eight planes, two
// for sign-magnitude inputs of more). The four vectors are unrolled by
// hand so they stay in registers. Each sum runs over its rows in order, as
// on the CPU.
@compute @workgroup_size(WORKGROUP_SIZE)
fn simulate_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = wg.x + wg.y * nwg.x;
    let cols = P.tile_cols;
    let vblocks = WORKGROUP_SIZE / cols;
    let col = lid % cols;
    let vb = lid / cols;
    let bblocks = (P.b + 3u) / 4u;
    let ctiles = (P.n + cols - 1u) / cols;
    let vgroups = (bblocks + vblocks - 1u) / vblocks;
    if (group >= P.trials * vgroups * ctiles) {
        return;
    }
    let nn = (group % ctiles) * cols + col;
    let blk4 = ((group / ctiles) % vgroups) * vblocks + vb;
    let live = nn < P.n && blk4 < bblocks;
    let tl = group / (ctiles * vgroups);
    let xo = tl * P.x_stride;
    // Vectors past the end repeat the last one and are not stored.
    let b0 = min(blk4 * 4u, P.b - 1u);
    let b1 = min(b0 + 1u, P.b - 1u);
    let b2 = min(b0 + 2u, P.b - 1u);
    let b3 = min(b0 + 3u, P.b - 1u);
    let tile = vb * cols;
    let agg = P.path == PATH_AGGREGATED;
    let digit_sums = P.static_noise == 0u && P.leak != 0.0;
    var y0 = 0.0;
    var y1 = 0.0;
    var y2 = 0.0;
    var y3 = 0.0;
    for (var c = 0u; c < P.chunks; c = c + 1u) {
        let k0 = c * P.p;
        let k1 = min(k0 + P.p, P.k);
        for (var jj = 0u; jj < P.j; jj = jj + 1u) {
            var grp = vec4<f32>(0.0);
            if (live) {
                grp = groups[(c * P.j + jj) * P.n + nn];
            }
            // Every thread stages and meets the barriers; only the columns
            // of converted groups add.
            let on = grp.z != 0.0;
            let wbase = (tl * P.j + jj) * P.k;
            for (var g0 = 0u; g0 < P.xbits; g0 = g0 + INPUT_GROUP) {
                var l0 = vec4<f32>(0.0); var h0 = vec4<f32>(0.0);
                var l1 = vec4<f32>(0.0); var h1 = vec4<f32>(0.0);
                var l2 = vec4<f32>(0.0); var h2 = vec4<f32>(0.0);
                var l3 = vec4<f32>(0.0); var h3 = vec4<f32>(0.0);
                var sl0 = vec4<f32>(0.0); var sh0 = vec4<f32>(0.0);
                var sl1 = vec4<f32>(0.0); var sh1 = vec4<f32>(0.0);
                var sl2 = vec4<f32>(0.0); var sh2 = vec4<f32>(0.0);
                var sl3 = vec4<f32>(0.0); var sh3 = vec4<f32>(0.0);
                var zl0 = vec4<f32>(0.0); var zh0 = vec4<f32>(0.0);
                var zl1 = vec4<f32>(0.0); var zh1 = vec4<f32>(0.0);
                var zl2 = vec4<f32>(0.0); var zh2 = vec4<f32>(0.0);
                var zl3 = vec4<f32>(0.0); var zh3 = vec4<f32>(0.0);
                for (var kt = k0; kt < k1; kt = kt + cols) {
                    let rows = min(cols, k1 - kt);
                    workgroupBarrier();
                    if (col < rows) {
                        let kk = kt + col;
                        let x0 = xin[xo + b0 * P.k + kk] >> g0; let x1 = xin[xo + b1 * P.k + kk] >> g0;
                        let x2 = xin[xo + b2 * P.k + kk] >> g0; let x3 = xin[xo + b3 * P.k + kk] >> g0;
                        let at = (tile + col) * 8u;
                        tile_bits[at] = bits_lo(x0); tile_bits[at + 1u] = bits_hi(x0);
                        tile_bits[at + 2u] = bits_lo(x1); tile_bits[at + 3u] = bits_hi(x1);
                        tile_bits[at + 4u] = bits_lo(x2); tile_bits[at + 5u] = bits_hi(x2);
                        tile_bits[at + 6u] = bits_lo(x3); tile_bits[at + 7u] = bits_hi(x3);
                    }
                    workgroupBarrier();
                    for (var r = 0u; on && r < rows; r = r + 1u) {
                        let w = weights[(wbase + kt + r) * P.n + nn];
                        let at = (tile + r) * 8u;
                        let f0l = tile_bits[at]; let f0h = tile_bits[at + 1u];
                        let f1l = tile_bits[at + 2u]; let f1h = tile_bits[at + 3u];
                        let f2l = tile_bits[at + 4u]; let f2h = tile_bits[at + 5u];
                        let f3l = tile_bits[at + 6u]; let f3h = tile_bits[at + 7u];
                        if (digit_sums && w == P.leak) {
                            // A zero level: counted, its leak added per conversion
                            // (a level equal to the leak, 1, adds the same).
                            zl0 = zl0 + f0l; zh0 = zh0 + f0h;
                            zl1 = zl1 + f1l; zh1 = zh1 + f1h;
                            zl2 = zl2 + f2l; zh2 = zh2 + f2h;
                            zl3 = zl3 + f3l; zh3 = zh3 + f3h;
                            continue;
                        }
                        l0 = l0 + w * f0l; h0 = h0 + w * f0h;
                        l1 = l1 + w * f1l; h1 = h1 + w * f1h;
                        l2 = l2 + w * f2l; h2 = h2 + w * f2h;
                        l3 = l3 + w * f3l; h3 = h3 + w * f3h;
                        if (agg) {
                            let w2 = w * w;
                            sl0 = sl0 + w2 * f0l; sh0 = sh0 + w2 * f0h;
                            sl1 = sl1 + w2 * f1l; sh1 = sh1 + w2 * f1h;
                            sl2 = sl2 + w2 * f2l; sh2 = sh2 + w2 * f2h;
                            sl3 = sl3 + w2 * f3l; sh3 = sh3 + w2 * f3h;
                        }
                    }
                }
                if (on) {
                    y0 = y0 + convert_vector(l0, h0, sl0, sh0, zl0, zh0, b0, c, jj, nn, tl, grp, g0);
                    if (b0 + 1u < P.b) { y1 = y1 + convert_vector(l1, h1, sl1, sh1, zl1, zh1, b1, c, jj, nn, tl, grp, g0); }
                    if (b0 + 2u < P.b) { y2 = y2 + convert_vector(l2, h2, sl2, sh2, zl2, zh2, b2, c, jj, nn, tl, grp, g0); }
                    if (b0 + 3u < P.b) { y3 = y3 + convert_vector(l3, h3, sl3, sh3, zl3, zh3, b3, c, jj, nn, tl, grp, g0); }
                }
            }
        }
    }
    if (!live) {
        return;
    }
    let out = (tl * P.b + b0) * P.n + nn;
    y[out] = y0;
    if (b0 + 1u < P.b) { y[out + P.n] = y1; }
    if (b0 + 2u < P.b) { y[out + 2u * P.n] = y2; }
    if (b0 + 3u < P.b) { y[out + 3u * P.n] = y3; }
}

// Per-cell dynamic noise: one thread per (trial, input vector, column), one
// Philox draw per read of a cell whose input bit is 1.
@compute @workgroup_size(WORKGROUP_SIZE)
fn simulate_dynamic(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_id(gid, nwg);
    if (id >= P.trials * P.b * P.n) {
        return;
    }
    let nn = id % P.n;
    let bb = (id / P.n) % P.b;
    let tl = id / (P.n * P.b);
    let t = P.trial0 + tl;
    let lane = nn % 4u;
    let blk = nn / 4u;
    var yv = 0.0;
    for (var c = 0u; c < P.chunks; c = c + 1u) {
        let k0 = c * P.p;
        let k1 = min(k0 + P.p, P.k);
        // Input planes in groups of INPUT_GROUP; the conversion values of a
        // group, [i][j], are added in the CPU's (i, j) order.
        for (var g0 = 0u; g0 < P.xbits; g0 = g0 + INPUT_GROUP) {
            let planes = min(INPUT_GROUP, P.xbits - g0);
            var vals: array<f32, INPUT_GROUP * MAX_PLANES>;
            for (var jj = 0u; jj < P.j; jj = jj + 1u) {
                let grp = groups[(c * P.j + jj) * P.n + nn];
                var acc: array<f32, INPUT_GROUP>;
                var var_: array<f32, INPUT_GROUP>;
                for (var li = 0u; li < INPUT_GROUP; li = li + 1u) {
                    acc[li] = 0.0;
                    var_[li] = 0.0;
                    vals[li * MAX_PLANES + jj] = 0.0;
                }
                if (grp.z == 0.0) {
                    continue;
                }
                for (var kk = k0; kk < k1; kk = kk + 1u) {
                    let xv = xin[tl * P.x_stride + bb * P.k + kk] >> g0;
                    if (xv == 0u) {
                        continue;
                    }
                    let w = weights[((tl * P.j + jj) * P.k + kk) * P.n + nn];
                    for (var li = 0u; li < planes; li = li + 1u) {
                        if (((xv >> li) & 1u) == 0u) {
                            continue;
                        }
                        if (P.path == PATH_DYNAMIC) {
                            // A cell that does not conduct adds nothing and draws nothing.
                            if (w == 0.0) {
                                continue;
                            }
                            let r = draw_rank[(jj * P.k + kk) * P.n + nn];
                            let index = dynamic_block(blocks(), P.b_offset + bb, g0 + li, kk, jj, r / 4u);
                            let z = gaussian(seed(), t, STREAM_CELL_DYNAMIC, index.x, index.y, r % 4u);
                            acc[li] = acc[li] + (w + w * P.sigma * z);
                        } else {
                            acc[li] = acc[li] + w;
                            var_[li] = var_[li] + w * w;
                        }
                    }
                }
                for (var li = 0u; li < planes; li = li + 1u) {
                    let i = g0 + li;
                    if (row_active[tl * P.active_stride + (bb * P.chunks + c) * P.xbits + i] == 0u) {
                        continue;
                    }
                    var a = acc[li];
                    let index = read_block(blocks(), P.b_offset + bb, c, i, jj, blk);
                    let rs = read_sd(grp.x, grp.y);
                    if (P.path == PATH_AGGREGATED) {
                        let sd = sqrt(P.sigma * P.sigma * var_[li] + rs * rs);
                        a = a + sd * gaussian(seed(), t, STREAM_AGGREGATED, index.x, index.y, lane);
                    } else if (rs > 0.0) {
                        a = a + rs * gaussian(seed(), t, STREAM_READ, index.x, index.y, lane);
                    }
                    vals[li * MAX_PLANES + jj] = convert(a, grp.x, grp.y);
                }
            }
            for (var li = 0u; li < planes; li = li + 1u) {
                for (var jj = 0u; jj < P.j; jj = jj + 1u) {
                    yv = yv + input_weight(g0 + li) * scales[jj] * vals[li * MAX_PLANES + jj];
                }
            }
        }
    }
    y[(tl * P.b + bb) * P.n + nn] = yv;
}

// The streaming variant of `simulate_dynamic` (same draws, same order of
// additions): each conversion's sum
// runs over its chunk's rows on its own, and is converted and added at
// once, in the CPU's (chunk, input plane, plane) order: no per-thread
// arrays (which GPUs keep in slow local memory when indexed by loop
// variables).
@compute @workgroup_size(WORKGROUP_SIZE)
fn simulate_dynamic_stream(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_id(gid, nwg);
    if (id >= P.trials * P.b * P.n) {
        return;
    }
    let nn = id % P.n;
    let bb = (id / P.n) % P.b;
    let tl = id / (P.n * P.b);
    let t = P.trial0 + tl;
    let lane = nn % 4u;
    let blk = nn / 4u;
    let xrow = tl * P.x_stride + bb * P.k;
    var yv = 0.0;
    for (var c = 0u; c < P.chunks; c = c + 1u) {
        let k0 = c * P.p;
        let k1 = min(k0 + P.p, P.k);
        for (var i = 0u; i < P.xbits; i = i + 1u) {
            if (row_active[tl * P.active_stride + (bb * P.chunks + c) * P.xbits + i] == 0u) {
                continue;
            }
            for (var jj = 0u; jj < P.j; jj = jj + 1u) {
                let grp = groups[(c * P.j + jj) * P.n + nn];
                if (grp.z == 0.0) {
                    continue;
                }
                let wrow = (tl * P.j + jj) * P.k;
                var a = 0.0;
                var var_ = 0.0;
                for (var kk = k0; kk < k1; kk = kk + 1u) {
                    if (((xin[xrow + kk] >> i) & 1u) == 0u) {
                        continue;
                    }
                    let w = weights[(wrow + kk) * P.n + nn];
                    if (P.path == PATH_DYNAMIC) {
                        // A cell that does not conduct adds nothing and draws nothing.
                        if (w == 0.0) {
                            continue;
                        }
                        let r = draw_rank[(jj * P.k + kk) * P.n + nn];
                        let index = dynamic_block(blocks(), P.b_offset + bb, i, kk, jj, r / 4u);
                        let z = gaussian(seed(), t, STREAM_CELL_DYNAMIC, index.x, index.y, r % 4u);
                        a = a + (w + w * P.sigma * z);
                    } else {
                        a = a + w;
                        var_ = var_ + w * w;
                    }
                }
                let index = read_block(blocks(), P.b_offset + bb, c, i, jj, blk);
                let rs = read_sd(grp.x, grp.y);
                if (P.path == PATH_AGGREGATED) {
                    let sd = sqrt(P.sigma * P.sigma * var_ + rs * rs);
                    a = a + sd * gaussian(seed(), t, STREAM_AGGREGATED, index.x, index.y, lane);
                } else if (rs > 0.0) {
                    a = a + rs * gaussian(seed(), t, STREAM_READ, index.x, index.y, lane);
                }
                yv = yv + input_weight(i) * scales[jj] * convert(a, grp.x, grp.y);
            }
        }
    }
    y[(tl * P.b + bb) * P.n + nn] = yv;
}

// Threads of one reduce workgroup (a power of two); Rust dispatches one
// workgroup per trial and never needs the size.
const REDUCE_SIZE: u32 = 256u;
var<workgroup> red_sum: array<f32, REDUCE_SIZE>;
var<workgroup> red_sq: array<f32, REDUCE_SIZE>;
var<workgroup> red_max: array<f32, REDUCE_SIZE>;

// engine::stats::bin_of in f32: log10 from log2, so a bin can differ from
// the CPU's for an error within float rounding of a bin edge (tests/gpu.rs).
fn bin_of(e: f32) -> u32 {
    let a = abs(e);
    if (a < HIST_MIN) {
        return HIST_SIDE;
    }
    let off = min(u32(log2(a / HIST_MIN) * (LOG10_2 * f32(HIST_BINS_PER_DECADE))), HIST_SIDE - 1u);
    if (e > 0.0) {
        return HIST_SIDE + 1u + off;
    }
    return HIST_SIDE - 1u - off;
}

@compute @workgroup_size(REDUCE_SIZE)
fn reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let tl = wg.x;
    let count = P.b * P.n;
    var s = 0.0;
    var sq = 0.0;
    var mx = 0.0;
    for (var e_i = li; e_i < count; e_i = e_i + REDUCE_SIZE) {
        let e = y[tl * count + e_i] - exact[e_i];
        s = s + e;
        sq = sq + e * e;
        mx = max(mx, abs(e));
        atomicAdd(&hist[bin_of(e)], 1u);
    }
    red_sum[li] = s;
    red_sq[li] = sq;
    red_max[li] = mx;
    workgroupBarrier();
    for (var stride = REDUCE_SIZE / 2u; stride > 0u; stride = stride / 2u) {
        if (li < stride) {
            red_sum[li] = red_sum[li] + red_sum[li + stride];
            red_sq[li] = red_sq[li] + red_sq[li + stride];
            red_max[li] = max(red_max[li], red_max[li + stride]);
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        moments[tl * 3u] = red_sum[0];
        moments[tl * 3u + 1u] = red_sq[0];
        moments[tl * 3u + 2u] = red_max[0];
    }
}
