// A network's forward pass on the device, around the simulation kernels of
// simulate.wgsl (network::Network::forward operation for operation):
//   lower:    activations -> the arrays' input patterns [t][b][k] (im2col in
//             the arrays' row order, then the input coding)
//   converted: which (vector, chunk, input plane) conversions happen [t][b][c][i]
//   requant:  sums [t][b][n] -> scale, bias, ReLU, round ties-even, clamp
//             (network::finish); the logits layer writes real values
//   pool:     max or average over windows (MaxPool, AvgPool, GlobalAvgPool)
//   add:      residual sum of two activations, requantised
//   argmax:   each image's prediction (the first largest logit)
// `t` is a chip in flight, `img` an image of the batch, `b` a row of the
// batch (image, output position). Activations are i32 `[t][img][c][h][w]`;
// the images are bytes, four to a word, shared by every chip. Compiled
// after the prelude and the bindings (engine::wgsl::NET_BINDINGS).

struct NetParams {
    trials: u32, images: u32, image0: u32, from_image: u32,
    // Source activation per image: channels, height, width.
    c: u32, h: u32, w: u32, size: u32,
    // Window (lower: kernel; pool: window height and width), stride, padding.
    kh: u32, kw: u32, stride: u32, pad: u32,
    // Output height and width, matrix rows (inputs) and columns (outputs).
    oh: u32, ow: u32, k: u32, n: u32,
    // Input coding (0 unsigned, 1 two's complement, 2 sign-magnitude) and bits.
    coding: u32, bits: u32, chunks: u32, p: u32,
    xbits: u32, skip: u32, relu: u32, signed: u32,
    logits: u32, max_pool: u32, pad1: u32, pad2: u32,
    scale_a: f32, scale_b: f32, out_scale: f32, pad3: f32,
}

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
}

// Value `idx` of image `img`'s source activation on chip `t`.
fn load(t: u32, img: u32, idx: u32) -> i32 {
    if (NP.from_image != 0u) {
        let byte = (NP.image0 + img) * NP.size + idx;
        return i32((images[byte / 4u] >> (8u * (byte % 4u))) & 255u);
    }
    return src_a[(t * NP.images + img) * NP.size + idx];
}

fn load_b(t: u32, img: u32, idx: u32) -> i32 {
    return src_b[(t * NP.images + img) * NP.size + idx];
}

// InputCoding::pattern.
fn pattern(v: i32) -> u32 {
    if (NP.coding == 1u) {
        return u32(v) & ((1u << NP.bits) - 1u);
    }
    if (NP.coding == 2u && v < 0) {
        return u32(-v) << (NP.bits - 1u);
    }
    return u32(v);
}

// network::requantise_value: round half to even, clamped to uint8 or int8.
fn requantise(real: f32) -> i32 {
    let q = round(real / NP.out_scale);
    if (NP.signed != 0u) {
        return i32(clamp(q, -127.0, 127.0));
    }
    return i32(clamp(q, 0.0, 255.0));
}

fn relu(v: f32) -> f32 {
    if (NP.relu != 0u) {
        return max(v, 0.0);
    }
    return v;
}

// One thread per (chip, row, array row): the input at array row `r` of
// output position `p` of image `img` (array row r holds input perm[r]).
@compute @workgroup_size(WORKGROUP_SIZE)
fn lower(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_id(gid, nwg);
    let positions = NP.oh * NP.ow;
    let rows = NP.images * positions;
    if (id >= NP.trials * rows * NP.k) {
        return;
    }
    let r = id % NP.k;
    let bl = (id / NP.k) % rows;
    let t = id / (NP.k * rows);
    let img = bl / positions;
    let pos = bl % positions;
    let kin = perm[r];
    let area = NP.kh * NP.kw;
    let cc = kin / area;
    let ki = (kin / NP.kw) % NP.kh;
    let kj = kin % NP.kw;
    let iy = i32((pos / NP.ow) * NP.stride + ki) - i32(NP.pad);
    let ix = i32((pos % NP.ow) * NP.stride + kj) - i32(NP.pad);
    var v = 0;
    if (iy >= 0 && iy < i32(NP.h) && ix >= 0 && ix < i32(NP.w)) {
        v = load(t, img, (cc * NP.h + u32(iy)) * NP.w + u32(ix));
    }
    xout[id] = pattern(v);
}

// One thread per (chip, row, chunk): plan::active_rows, from the patterns.
@compute @workgroup_size(WORKGROUP_SIZE)
fn converted(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_id(gid, nwg);
    let rows = NP.images * NP.oh * NP.ow;
    if (id >= NP.trials * rows * NP.chunks) {
        return;
    }
    let c = id % NP.chunks;
    let row = id / NP.chunks; // t * rows + b
    var lit = 0xffffffffu;
    if (NP.skip != 0u) {
        lit = 0u;
        let k1 = min((c + 1u) * NP.p, NP.k);
        for (var kk = c * NP.p; kk < k1; kk = kk + 1u) {
            lit = lit | xout[row * NP.k + kk];
        }
    }
    for (var i = 0u; i < NP.xbits; i = i + 1u) {
        active_out[id * NP.xbits + i] = (lit >> i) & 1u;
    }
}

// One thread per (chip, row, output): network::finish.
@compute @workgroup_size(WORKGROUP_SIZE)
fn requant(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_id(gid, nwg);
    let positions = NP.oh * NP.ow;
    let rows = NP.images * positions;
    if (id >= NP.trials * rows * NP.n) {
        return;
    }
    let o = id % NP.n;
    let bl = (id / NP.n) % rows;
    let t = id / (NP.n * rows);
    let img = bl / positions;
    let pos = bl % positions;
    let sb = chan[o];
    let real = relu(sb.x * ysum[id] + sb.y);
    let at = ((t * NP.images + img) * NP.n + o) * positions + pos;
    if (NP.logits != 0u) {
        logits[at] = real;
    } else {
        dst[at] = requantise(real);
    }
}

// round(sum / d) with ties to even, exactly (the CPU divides in f32, which
// rounds the same for sums below 2^24).
fn div_round_even(sum: i32, d: i32) -> i32 {
    var q = sum / d;
    var r = sum - q * d;
    if (r < 0) {
        q = q - 1;
        r = r + d;
    }
    if (2 * r > d || (2 * r == d && (q & 1) != 0)) {
        q = q + 1;
    }
    return q;
}

// One thread per (chip, image, channel, output position): a window of
// kh x kw at stride (kh, kw).
@compute @workgroup_size(WORKGROUP_SIZE)
fn pool(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_id(gid, nwg);
    let per_image = NP.c * NP.oh * NP.ow;
    if (id >= NP.trials * NP.images * per_image) {
        return;
    }
    let x = id % NP.ow;
    let y = (id / NP.ow) % NP.oh;
    let cc = (id / (NP.ow * NP.oh)) % NP.c;
    let ti = id / per_image; // t * images + img
    let t = ti / NP.images;
    let img = ti % NP.images;
    var best = -2147483647;
    var sum = 0;
    for (var i = 0u; i < NP.kh; i = i + 1u) {
        for (var j = 0u; j < NP.kw; j = j + 1u) {
            let v = load(t, img, (cc * NP.h + y * NP.kh + i) * NP.w + x * NP.kw + j);
            best = max(best, v);
            sum = sum + v;
        }
    }
    if (NP.max_pool != 0u) {
        dst[id] = best;
    } else {
        dst[id] = div_round_even(sum, i32(NP.kh * NP.kw));
    }
}

// One thread per value: s_a a + s_b b, ReLU, requantised (network::add).
@compute @workgroup_size(WORKGROUP_SIZE)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_id(gid, nwg);
    if (id >= NP.trials * NP.images * NP.size) {
        return;
    }
    let ti = id / NP.size;
    let idx = id % NP.size;
    let a = load(ti / NP.images, ti % NP.images, idx);
    let b = load_b(ti / NP.images, ti % NP.images, idx);
    dst[id] = requantise(relu(NP.scale_a * f32(a) + NP.scale_b * f32(b)));
}

// One thread per (chip, image): the index of the first largest of its
// `n` logits (sweep::accuracy::argmax).
@compute @workgroup_size(WORKGROUP_SIZE)
fn argmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_id(gid, nwg);
    if (id >= NP.trials * NP.images) {
        return;
    }
    var best = 0u;
    var top = logits[id * NP.n];
    for (var o = 1u; o < NP.n; o = o + 1u) {
        let v = logits[id * NP.n + o];
        if (v > top) {
            best = o;
            top = v;
        }
    }
    preds[id] = best;
}
