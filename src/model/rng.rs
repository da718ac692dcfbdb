//! Counter-based random numbers: Philox4x32-10 addressed by
//! `(seed, trial, stream, index)`, and the Gaussian transform built on it.
//!
//! Every random number in a simulation is a pure function of its address, so a
//! result never depends on thread count, dispatch shape or backend. The WGSL
//! port in `shaders/rng.wgsl` performs the same integer operations and the same
//! f32 operations in the same order; `ln`, `sin` and `cos` are our own
//! polynomials (not the platform's) so that both engines agree to the last bit
//! wherever the hardware rounds IEEE-correctly.

/// Philox multipliers and Weyl key increments (Salmon et al., SC'11).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Streams keep the draws of different model ingredients independent.
pub mod stream {
    /// Synthetic weights and inputs.
    pub const WORKLOAD: u32 = 1;
    /// Static (per-trial) cell mismatch, one draw per (cell, plane).
    pub const CELL_STATIC: u32 = 2;
    /// Dynamic (per-read) cell noise, one draw per (input, bit, cell, plane).
    pub const CELL_DYNAMIC: u32 = 3;
    /// Additive read noise, one draw per conversion.
    pub const READ: u32 = 4;
    /// Aggregated dynamic + read noise, one draw per conversion.
    pub const AGGREGATED: u32 = 5;
    /// Stuck-at faults, one uniform per (cell, plane).
    pub const FAULT: u32 = 6;
}

/// Where each row of random blocks starts (docs/MODEL.md, "Random
/// numbers"): a row is `nb = ceil(N / 4)` consecutive blocks, one Gaussian
/// per column, and these are the only formulas for a block's index. Both
/// engines call them (the GPU through the WGSL twins in `shaders/rng.wgsl`,
/// which `tests/gpu.rs` compares with these), so they cannot drift apart.
///
/// The WGSL twins compute the row number (everything before the final
/// `* nb + blk`) in 32 bits and the block index in 64;
/// [`rows`](Self::rows) is what the GPU engine checks fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockLayout {
    /// Rows of the array (`K`).
    pub k: usize,
    /// Digit planes (`J`).
    pub j: usize,
    /// Input bits (`Bx`).
    pub xbits: usize,
    /// Chunks of `P` rows (`C`).
    pub chunks: usize,
    /// Blocks per row of columns, `ceil(N / 4)`.
    pub nb: usize,
}

impl BlockLayout {
    /// Block `blk` of the row of plane `j`, array row `k`: static cell
    /// mismatch ([`stream::CELL_STATIC`]) and stuck-at faults
    /// ([`stream::FAULT`]), `(j K + k) nb + blk`.
    #[inline(always)]
    pub fn static_block(&self, j: usize, k: usize, blk: usize) -> u64 {
        self.at(j as u64 * self.k as u64 + k as u64, blk)
    }

    /// Block `blk` of the row of input vector `b`, input bit `i`, array row
    /// `k`, plane `j`: dynamic per-cell noise ([`stream::CELL_DYNAMIC`]),
    /// `(((b Bx + i) K + k) J + j) nb + blk`.
    #[inline(always)]
    pub fn dynamic_block(&self, b: usize, i: usize, k: usize, j: usize, blk: usize) -> u64 {
        let row = ((b as u64 * self.xbits as u64 + i as u64) * self.k as u64 + k as u64)
            * self.j as u64
            + j as u64;
        self.at(row, blk)
    }

    /// Block `blk` of the row of conversions of input vector `b`, chunk `c`,
    /// input bit `i`, plane `j`: read noise ([`stream::READ`]) and
    /// aggregated noise ([`stream::AGGREGATED`]), `(((b C + c) Bx + i) J +
    /// j) nb + blk`.
    #[inline(always)]
    pub fn read_block(&self, b: usize, c: usize, i: usize, j: usize, blk: usize) -> u64 {
        let row = ((b as u64 * self.chunks as u64 + c as u64) * self.xbits as u64 + i as u64)
            * self.j as u64
            + j as u64;
        self.at(row, blk)
    }

    /// The number of rows of each formula above for `inputs` input vectors,
    /// the largest first row number plus one.
    pub fn rows(&self, inputs: usize) -> u64 {
        let (b, k, j) = (inputs as u64, self.k as u64, self.j as u64);
        let (xbits, chunks) = (self.xbits as u64, self.chunks as u64);
        (j * k).max(b * xbits * k * j).max(b * chunks * xbits * j)
    }

    #[inline(always)]
    fn at(&self, row: u64, blk: usize) -> u64 {
        row * self.nb as u64 + blk as u64
    }
}

/// The 32x32 -> 64-bit product split into (hi, lo) words.
#[inline(always)]
pub fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

/// The 32x32 -> 64-bit product built from 16-bit halves, exactly as the WGSL
/// port does it (WGSL has no 64-bit integers on every backend).
pub fn mulhilo_halves(a: u32, b: u32) -> (u32, u32) {
    let (a_lo, a_hi) = (a & 0xFFFF, a >> 16);
    let (b_lo, b_hi) = (b & 0xFFFF, b >> 16);
    let ll = a_lo * b_lo;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    let hh = a_hi * b_hi;
    let mid = (ll >> 16) + (lh & 0xFFFF) + (hl & 0xFFFF);
    let lo = (ll & 0xFFFF) | (mid << 16);
    let hi = hh + (lh >> 16) + (hl >> 16) + (mid >> 16);
    (hi, lo)
}

/// Philox4x32-10 block function: counter (4 words), key (2 words) -> 4 words.
#[inline(always)]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = ctr;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c0);
        let (hi1, lo1) = mulhilo(M1, c2);
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
    }
    [c0, c1, c2, c3]
}

/// Where a block of four random words lives: `index` counts blocks within
/// one `(seed, trial, stream)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    pub seed: u64,
    pub trial: u32,
    pub stream: u32,
}

impl Address {
    /// The Philox key for this address (the seed).
    #[inline(always)]
    pub fn key(&self) -> [u32; 2] {
        [self.seed as u32, (self.seed >> 32) as u32]
    }

    /// Four random words of block `index`.
    #[inline(always)]
    pub fn block(&self, index: u64) -> [u32; 4] {
        philox4x32_10(
            [index as u32, (index >> 32) as u32, self.trial, self.stream],
            self.key(),
        )
    }

    /// Four standard normal draws of block `index`.
    #[inline(always)]
    pub fn gaussian4(&self, index: u64) -> [f32; 4] {
        let w = self.block(index);
        let (a, b) = box_muller(w[0], w[1]);
        let (c, d) = box_muller(w[2], w[3]);
        [a, b, c, d]
    }

    /// Fills `out` with standard normal draws of consecutive blocks starting
    /// at block `first` (four draws per block; `out.len()` is a multiple of
    /// four). Written lane-wise so the compiler vectorises it.
    pub fn fill_gaussian(&self, first: u64, out: &mut [f32]) {
        assert!(
            out.len().is_multiple_of(4),
            "fill_gaussian needs whole blocks"
        );
        let key = self.key();
        let iota = |at: u64| std::array::from_fn(|l| at.wrapping_add(l as u64));
        let mut next = first;
        let mut whole = out.chunks_exact_mut(64);
        for dst in &mut whole {
            self.batch(key, &iota(next), dst.try_into().expect("64 draws"));
            next = next.wrapping_add(16);
        }
        let rest = whole.into_remainder();
        if !rest.is_empty() {
            self.partial_batch(key, &iota(next), rest);
        }
    }

    /// Fills `out` with the draws of the blocks `idx`, one block after
    /// another (four draws per block): the same draws as
    /// [`fill_gaussian`](Self::fill_gaussian) block by block, but scattered
    /// blocks share 16-block batches. Callers with runs of consecutive blocks
    /// list them all (a vectorised loop) rather than have every lane work out
    /// which run it is in.
    pub fn fill_gaussian_at(&self, idx: &[u64], out: &mut [f32]) {
        assert!(
            out.len() >= 4 * idx.len(),
            "fill_gaussian_at: out too short"
        );
        let key = self.key();
        let out = &mut out[..4 * idx.len()];
        let mut lanes = idx.chunks_exact(16);
        let mut whole = out.chunks_exact_mut(64);
        for (i, dst) in (&mut lanes).zip(&mut whole) {
            let i: &[u64; 16] = i.try_into().expect("16 blocks");
            self.batch(key, i, dst.try_into().expect("64 draws"));
        }
        let (i, rest) = (lanes.remainder(), whole.into_remainder());
        if !i.is_empty() {
            let mut padded = [0u64; 16];
            padded[..i.len()].copy_from_slice(i);
            self.partial_batch(key, &padded, rest);
        }
    }

    /// The first `dst.len()` draws of the 16 blocks `idx`: a last, partial
    /// batch is computed whole (vectorised) and cut, since a scalar tail
    /// would cost more than the unused lanes.
    fn partial_batch(&self, key: [u32; 2], idx: &[u64; 16], dst: &mut [f32]) {
        let mut batch = [0f32; 64];
        self.batch(key, idx, &mut batch);
        dst.copy_from_slice(&batch[..dst.len()]);
    }

    /// The 64 draws of the 16 blocks `idx`, block after block.
    #[inline(always)]
    fn batch(&self, key: [u32; 2], idx: &[u64; 16], dst: &mut [f32; 64]) {
        const L: usize = 16;
        let words = philox16(idx, self.trial, self.stream, key);
        let (mut z0, mut z1, mut z2, mut z3) = ([0f32; L], [0f32; L], [0f32; L], [0f32; L]);
        box_muller_lanes(&words[0], &words[1], &mut z0, &mut z1);
        box_muller_lanes(&words[2], &words[3], &mut z2, &mut z3);
        for l in 0..L {
            dst[4 * l] = z0[l];
            dst[4 * l + 1] = z1[l];
            dst[4 * l + 2] = z2[l];
            dst[4 * l + 3] = z3[l];
        }
    }

    /// A uniform draw in [0, 1) from one word, 24 bits of resolution.
    #[inline(always)]
    pub fn uniform(word: u32) -> f32 {
        (word >> 8) as f32 * (1.0 / 16_777_216.0)
    }
}

/// Philox on 16 block indices: AVX-512 where the CPU has it.
#[inline(always)]
fn philox16(idx: &[u64; 16], trial: u32, stream: u32, key: [u32; 2]) -> [[u32; 16]; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { avx512::philox16(idx, trial, stream, key) };
        }
    }
    philox_lanes::<16>(idx, trial, stream, key)
}

/// Philox with AVX-512 intrinsics: the compiler's auto-vectorised version
/// spends most of its time widening 32-bit lanes for the products.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{M0, M1, W0, W1};
    use std::arch::x86_64::*;

    /// Two groups of 8 blocks, each word in a 64-bit lane: `vpmuludq` gives
    /// a lane's whole product, its high word is one shift away and its low
    /// word is already in place. The high halves of the lanes carry garbage
    /// that nothing reads (`vpmuludq` reads the low words, the output keeps
    /// them), so a round is 2 multiplies, 2 shifts and 2 three-way XORs per
    /// group: a quarter fewer instructions than 16 lanes of 32 bits, which
    /// need even/odd products and blends.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn philox16(
        idx: &[u64; 16],
        trial: u32,
        stream: u32,
        key: [u32; 2],
    ) -> [[u32; 16]; 4] {
        // SAFETY: unaligned loads of 8 u64 each from a 16-element array.
        let (a, b) = unsafe {
            (
                _mm512_loadu_si512(idx.as_ptr().cast()),
                _mm512_loadu_si512(idx.as_ptr().add(8).cast()),
            )
        };
        let mut c = [
            [
                a,
                _mm512_srli_epi64::<32>(a),
                _mm512_set1_epi64(trial as i64),
                _mm512_set1_epi64(stream as i64),
            ],
            [
                b,
                _mm512_srli_epi64::<32>(b),
                _mm512_set1_epi64(trial as i64),
                _mm512_set1_epi64(stream as i64),
            ],
        ];
        let (m0, m1) = (_mm512_set1_epi64(M0 as i64), _mm512_set1_epi64(M1 as i64));
        let [mut k0, mut k1] = key;
        for round in 0..10 {
            if round > 0 {
                k0 = k0.wrapping_add(W0);
                k1 = k1.wrapping_add(W1);
            }
            let (vk0, vk1) = (_mm512_set1_epi64(k0 as i64), _mm512_set1_epi64(k1 as i64));
            for g in &mut c {
                let [c0, c1, c2, c3] = *g;
                let p0 = _mm512_mul_epu32(c0, m0);
                let p1 = _mm512_mul_epu32(c2, m1);
                // 0x96: a ^ b ^ c.
                let n0 = _mm512_ternarylogic_epi64::<0x96>(_mm512_srli_epi64::<32>(p1), c1, vk0);
                let n2 = _mm512_ternarylogic_epi64::<0x96>(_mm512_srli_epi64::<32>(p0), c3, vk1);
                *g = [n0, p1, n2, p0];
            }
        }
        let mut out = [[0u32; 16]; 4];
        for (w, dst) in out.iter_mut().enumerate() {
            let v = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm512_cvtepi64_epi32(c[0][w])),
                _mm512_cvtepi64_epi32(c[1][w]),
            );
            // SAFETY: a 64-byte array takes one unaligned 512-bit store.
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), v) };
        }
        out
    }
}

/// Philox on `L` block indices at once, lane-wise for SIMD.
#[inline(always)]
fn philox_lanes<const L: usize>(
    idx: &[u64; L],
    trial: u32,
    stream: u32,
    key: [u32; 2],
) -> [[u32; L]; 4] {
    let mut c0 = [0u32; L];
    let mut c1 = [0u32; L];
    let mut c2 = [trial; L];
    let mut c3 = [stream; L];
    for l in 0..L {
        c0[l] = idx[l] as u32;
        c1[l] = (idx[l] >> 32) as u32;
    }
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        for l in 0..L {
            let p0 = (M0 as u64) * (c0[l] as u64);
            let p1 = (M1 as u64) * (c2[l] as u64);
            let n0 = ((p1 >> 32) as u32) ^ c1[l] ^ k0;
            let n2 = ((p0 >> 32) as u32) ^ c3[l] ^ k1;
            c1[l] = p1 as u32;
            c3[l] = p0 as u32;
            c0[l] = n0;
            c2[l] = n2;
        }
    }
    [c0, c1, c2, c3]
}

const LN2: f32 = std::f32::consts::LN_2;
const FRAC_PI_2: f32 = std::f32::consts::FRAC_PI_2;

/// Natural log for x in (0, 1]: exponent split, then the atanh series.
#[inline(always)]
pub fn ln_poly(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xFF) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000);
    // Fold m into [sqrt(1/2), sqrt(2)) so the series converges fast.
    let big = m > std::f32::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += big as i32;
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let p = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0))));
    (e as f32) * LN2 + 2.0 * s * p
}

/// (cos a, sin a) for |a| <= pi/4, Taylor polynomials.
#[inline(always)]
fn sincos_poly(a: f32) -> (f32, f32) {
    let a2 = a * a;
    let s = a
        * (1.0
            + a2 * (-1.0 / 6.0
                + a2 * (1.0 / 120.0 + a2 * (-1.0 / 5040.0 + a2 * (1.0 / 362_880.0)))));
    let c = 1.0 + a2 * (-0.5 + a2 * (1.0 / 24.0 + a2 * (-1.0 / 720.0 + a2 * (1.0 / 40_320.0))));
    (c, s)
}

/// Two independent standard normals from two random words (Box-Muller).
/// The angle is uniform on the circle: the top two bits of `w1` pick the
/// quadrant, the next 24 bits an offset in [-pi/4, pi/4).
#[inline(always)]
pub fn box_muller(w0: u32, w1: u32) -> (f32, f32) {
    let u1 = ((w0 >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0);
    let r = (-2.0 * ln_poly(u1)).sqrt();
    let f = ((w1 & 0x3FFF_FFFF) >> 6) as f32 * (1.0 / 16_777_216.0);
    let a = (f - 0.5) * FRAC_PI_2;
    let (c, s) = sincos_poly(a);
    let q = w1 >> 30;
    let odd = q & 1;
    let (x, y) = if odd == 0 { (c, s) } else { (s, c) };
    let neg_x = (q ^ (q >> 1)) & 1;
    let neg_y = q >> 1;
    let x = f32::from_bits(x.to_bits() ^ (neg_x << 31));
    let y = f32::from_bits(y.to_bits() ^ (neg_y << 31));
    (r * x, r * y)
}

#[inline(always)]
fn box_muller_lanes<const L: usize>(
    w0: &[u32; L],
    w1: &[u32; L],
    z0: &mut [f32; L],
    z1: &mut [f32; L],
) {
    for l in 0..L {
        let (a, b) = box_muller(w0[l], w1[l]);
        z0[l] = a;
        z1[l] = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answers() {
        // Random123 kat_vectors for philox4x32_10.
        let cases = [
            (
                [0u32; 4],
                [0u32; 2],
                [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
            ),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
            ),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (ctr, key, want) in cases {
            assert_eq!(
                philox4x32_10(ctr, key),
                want,
                "ctr {ctr:08x?} key {key:08x?}"
            );
        }
    }

    #[test]
    fn block_rows_follow_the_documented_order_without_gaps() {
        // docs/MODEL.md: rows in the nesting order of each formula's
        // indices, `nb` blocks each, consecutive from block 0.
        let l = BlockLayout {
            k: 5,
            j: 3,
            xbits: 2,
            chunks: 4,
            nb: 7,
        };
        let b = 3;
        let mut want = 0u64;
        for j in 0..l.j {
            for k in 0..l.k {
                for blk in 0..l.nb {
                    assert_eq!(l.static_block(j, k, blk), want);
                    want += 1;
                }
            }
        }
        let (mut dynamic, mut read) = (Vec::new(), Vec::new());
        for bb in 0..b {
            for i in 0..l.xbits {
                for k in 0..l.k {
                    for j in 0..l.j {
                        dynamic.extend((0..l.nb).map(|blk| l.dynamic_block(bb, i, k, j, blk)));
                    }
                }
            }
            for c in 0..l.chunks {
                for i in 0..l.xbits {
                    for j in 0..l.j {
                        read.extend((0..l.nb).map(|blk| l.read_block(bb, c, i, j, blk)));
                    }
                }
            }
        }
        assert!(dynamic.iter().copied().eq(0..dynamic.len() as u64));
        assert!(read.iter().copied().eq(0..read.len() as u64));
        let rows = (l.j * l.k).max(dynamic.len() / l.nb).max(read.len() / l.nb);
        assert_eq!(l.rows(b), rows as u64);
    }

    #[test]
    fn halves_multiply_matches_u64() {
        let a = Address {
            seed: 7,
            trial: 0,
            stream: 0,
        };
        let mut pairs = vec![
            (0u32, 0u32),
            (u32::MAX, u32::MAX),
            (M0, u32::MAX),
            (0xFFFF, 0x10000),
        ];
        for i in 0..20_000u64 {
            let w = a.block(i);
            pairs.push((w[0], w[1]));
            pairs.push((w[2], w[3] & 0xFFFF));
        }
        for (x, y) in pairs {
            assert_eq!(mulhilo_halves(x, y), mulhilo(x, y), "{x:#x} * {y:#x}");
        }
    }

    #[test]
    fn scattered_blocks_match_their_separate_fills() {
        let a = Address {
            seed: 77,
            trial: 5,
            stream: 2,
        };
        let runs = [
            (0u64, 0usize),
            (1000, 1),
            (2000, 15),
            (3000, 0),
            (4000, 16),
            (5000, 17),
            (u64::MAX - 40, 40),
            (7, 3),
        ];
        let idx: Vec<u64> = runs
            .iter()
            .flat_map(|&(first, blocks)| (0..blocks as u64).map(move |o| first.wrapping_add(o)))
            .collect();
        let mut joined = vec![0f32; 4 * idx.len()];
        a.fill_gaussian_at(&idx, &mut joined);
        let mut at = 0;
        for &(first, blocks) in &runs {
            let mut one = vec![0f32; 4 * blocks];
            a.fill_gaussian(first, &mut one);
            assert_eq!(&joined[at..at + 4 * blocks], &one[..], "run at {first}");
            at += 4 * blocks;
        }
    }

    #[test]
    fn lanes_match_scalar() {
        let a = Address {
            seed: 0x1234_5678_9abc,
            trial: 3,
            stream: 9,
        };
        let mut fast = vec![0f32; 4 * 37];
        a.fill_gaussian(1u64 << 32, &mut fast);
        for b in 0..37 {
            let g = a.gaussian4((1u64 << 32) + b as u64);
            assert_eq!(&fast[4 * b..4 * b + 4], &g, "block {b}");
        }
    }

    #[test]
    fn every_philox_lane_path_matches_scalar() {
        let key = [0xdead_beef, 0x1234_5678];
        for first in [0u64, (1 << 32) - 5, u64::MAX - 20] {
            let idx: [u64; 16] = std::array::from_fn(|l| first.wrapping_add(l as u64));
            let portable = philox_lanes::<16>(&idx, 7, 3, key);
            let dispatched = philox16(&idx, 7, 3, key);
            for l in 0..16 {
                let idx = first.wrapping_add(l as u64);
                let want = philox4x32_10([idx as u32, (idx >> 32) as u32, 7, 3], key);
                for w in 0..4 {
                    assert_eq!(portable[w][l], want[w], "portable lane {l} word {w}");
                    assert_eq!(dispatched[w][l], want[w], "dispatched lane {l} word {w}");
                }
            }
        }
    }

    #[test]
    fn ln_poly_is_accurate() {
        for i in 1..=100_000u32 {
            let x = i as f32 / 100_000.0;
            let err = (ln_poly(x) as f64 - (x as f64).ln()).abs();
            assert!(
                err < 2e-6 * (1.0 + (x as f64).ln().abs()),
                "x {x} err {err}"
            );
        }
        assert!((ln_poly(5.96e-8) as f64 - (5.96e-8f64).ln()).abs() < 1e-5);
    }

    #[test]
    fn gaussian_moments() {
        // 4e5 draws: standard errors 1.6e-3 (mean), 2.2e-3 (variance).
        let a = Address {
            seed: 42,
            trial: 1,
            stream: 2,
        };
        let mut z = vec![0f32; 400_000];
        a.fill_gaussian(0, &mut z);
        let n = z.len() as f64;
        let mean = z.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let m4 = z.iter().map(|&v| (v as f64 - mean).powi(4)).sum::<f64>() / n;
        assert!(mean.abs() < 5.0 * 1.6e-3, "mean {mean}");
        assert!((var - 1.0).abs() < 5.0 * 2.2e-3, "var {var}");
        // Kurtosis 3, standard error sqrt(96/n) = 0.0155.
        assert!(
            (m4 / (var * var) - 3.0).abs() < 5.0 * 0.0155,
            "kurtosis {}",
            m4 / (var * var)
        );
        let tail = z.iter().filter(|v| v.abs() > 3.0).count() as f64 / n;
        assert!(
            (tail - 0.0027).abs() < 5.0 * (0.0027f64 / n).sqrt(),
            "P(|z|>3) {tail}"
        );
    }
}
