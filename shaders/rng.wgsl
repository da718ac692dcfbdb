// Philox4x32-10 and the Gaussian transform, a bit-exact port of
// src/model/rng.rs, and the twins of its block-index formulas. WGSL has no
// 64-bit integers on every backend, so the 32x32 -> 64-bit product is built
// from 16-bit halves. Follows the prelude (engine::wgsl::prelude), which
// declares the stream ids, histogram layout and limits.

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

// (hi, lo) words of a * b.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let ll = a_lo * b_lo;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    let hh = a_hi * b_hi;
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    let lo = (ll & 0xFFFFu) | (mid << 16u);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, lo);
}

fn philox4x32_10(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = ctr;
    var k = key;
    for (var round = 0u; round < 10u; round = round + 1u) {
        if (round > 0u) {
            k = vec2<u32>(k.x + PHILOX_W0, k.y + PHILOX_W1);
        }
        let p0 = mulhilo(PHILOX_M0, c.x);
        let p1 = mulhilo(PHILOX_M1, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

// Four random words of block `index` (lo, hi) at (seed, trial, stream).
fn rng_block(seed: vec2<u32>, trial: u32, stream: u32, index_lo: u32, index_hi: u32) -> vec4<u32> {
    return philox4x32_10(vec4<u32>(index_lo, index_hi, trial, stream), seed);
}

const LN2_F: f32 = 0.6931471805599453;
const SQRT2_F: f32 = 1.4142135623730951;
const FRAC_PI_2_F: f32 = 1.5707963267948966;

fn ln_poly(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    var e = i32((bits >> 23u) & 0xFFu) - 127;
    var m = bitcast<f32>((bits & 0x007FFFFFu) | 0x3F800000u);
    if (m > SQRT2_F) {
        m = m * 0.5;
        e = e + 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let p = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0))));
    return f32(e) * LN2_F + 2.0 * s * p;
}

// (cos a, sin a) for |a| <= pi/4.
fn sincos_poly(a: f32) -> vec2<f32> {
    let a2 = a * a;
    let s = a * (1.0 + a2 * (-1.0 / 6.0 + a2 * (1.0 / 120.0 + a2 * (-1.0 / 5040.0 + a2 * (1.0 / 362880.0)))));
    let c = 1.0 + a2 * (-0.5 + a2 * (1.0 / 24.0 + a2 * (-1.0 / 720.0 + a2 * (1.0 / 40320.0))));
    return vec2<f32>(c, s);
}

// Two standard normals from two words (Box-Muller, quadrant from the top bits of w1).
fn box_muller(w0: u32, w1: u32) -> vec2<f32> {
    let u1 = (f32(w0 >> 8u) + 0.5) * (1.0 / 16777216.0);
    let r = sqrt(-2.0 * ln_poly(u1));
    let f = f32((w1 & 0x3FFFFFFFu) >> 6u) * (1.0 / 16777216.0);
    let a = (f - 0.5) * FRAC_PI_2_F;
    let cs = sincos_poly(a);
    let q = w1 >> 30u;
    var x = cs.x;
    var y = cs.y;
    if ((q & 1u) != 0u) {
        x = cs.y;
        y = cs.x;
    }
    let neg_x = (q ^ (q >> 1u)) & 1u;
    let neg_y = q >> 1u;
    x = bitcast<f32>(bitcast<u32>(x) ^ (neg_x << 31u));
    y = bitcast<f32>(bitcast<u32>(y) ^ (neg_y << 31u));
    return vec2<f32>(r * x, r * y);
}

// Gaussian `lane` (0..3) of block `index`.
fn gaussian(seed: vec2<u32>, trial: u32, stream: u32, index_lo: u32, index_hi: u32, lane: u32) -> f32 {
    let w = rng_block(seed, trial, stream, index_lo, index_hi);
    if (lane < 2u) {
        let z = box_muller(w.x, w.y);
        return select(z.y, z.x, lane == 0u);
    }
    let z = box_muller(w.z, w.w);
    return select(z.y, z.x, lane == 2u);
}

// Block index `a * b + c` as (lo, hi) words, for indices past 2^32.
fn index_mad(a: u32, b: u32, c: u32) -> vec2<u32> {
    let p = mulhilo(a, b);
    let lo = p.y + c;
    let carry = select(0u, 1u, lo < c);
    return vec2<u32>(lo, p.x + carry);
}

// `a * b + c` for a 64-bit `a` as (lo, hi) words, modulo 2^64.
fn mad64(a: vec2<u32>, b: u32, c: u32) -> vec2<u32> {
    let p = mulhilo(a.x, b);
    let lo = p.y + c;
    let carry = select(0u, 1u, lo < c);
    return vec2<u32>(lo, a.y * b + p.x + carry);
}

// Where each row of random blocks starts: the twins of model::rng::BlockLayout
// (docs/MODEL.md, "Random numbers"; tests/gpu.rs compares them with the Rust
// functions). Row numbers and block indices are 64-bit, as (lo, hi) words;
// the first factor of each row (`jj * K + kk`, `bb * Bx + i`, `bb * C + c`)
// is 32-bit (the engine refuses larger plans).
struct BlockLayout {
    k: u32,      // array rows K
    j: u32,      // digit planes J
    xbits: u32,  // input bits Bx
    chunks: u32, // chunks C
    nb: u32,     // blocks per row of columns, ceil(N / 4)
}

// Block `blk` of the row of plane `jj`, array row `kk`: static cell mismatch
// and stuck-at faults (STREAM_CELL_STATIC, STREAM_FAULT).
fn static_block(l: BlockLayout, jj: u32, kk: u32, blk: u32) -> vec2<u32> {
    return index_mad(jj * l.k + kk, l.nb, blk);
}

// Block `blk` of the row of input vector `bb`, input bit `i`, array row `kk`,
// plane `jj`: dynamic per-cell noise (STREAM_CELL_DYNAMIC).
fn dynamic_block(l: BlockLayout, bb: u32, i: u32, kk: u32, jj: u32, blk: u32) -> vec2<u32> {
    let row = mad64(mad64(vec2<u32>(bb * l.xbits + i, 0u), l.k, kk), l.j, jj);
    return mad64(row, l.nb, blk);
}

// Block `blk` of the row of conversions of input vector `bb`, chunk `c`,
// input bit `i`, plane `jj`: read and aggregated noise (STREAM_READ,
// STREAM_AGGREGATED).
fn read_block(l: BlockLayout, bb: u32, c: u32, i: u32, jj: u32, blk: u32) -> vec2<u32> {
    let row = mad64(mad64(vec2<u32>(bb * l.chunks + c, 0u), l.xbits, i), l.j, jj);
    return mad64(row, l.nb, blk);
}
