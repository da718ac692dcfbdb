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
        let mut next = first;
        self.fill_batches(out.len() / 4, out, |_, idx| {
            for (l, v) in idx.iter_mut().enumerate() {
                *v = next.wrapping_add(l as u64);
            }
            next = next.wrapping_add(16);
        });
    }

    /// Fills `out` with the draws of several runs of consecutive blocks,
    /// `(first block, blocks)`, one run after another (four draws per block):
    /// the same draws as [`fill_gaussian`](Self::fill_gaussian) on each run,
    /// but short runs share 16-block batches instead of each wasting the
    /// rest of its last one.
    pub fn fill_gaussian_runs(&self, runs: &[(u64, usize)], out: &mut [f32]) {
        let blocks: usize = runs.iter().map(|r| r.1).sum();
        let (mut run, mut offset) = (0, 0);
        self.fill_batches(blocks, out, |take, idx| {
            for v in idx.iter_mut().take(take) {
                while offset == runs[run].1 {
                    run += 1;
                    offset = 0;
                }
                *v = runs[run].0.wrapping_add(offset as u64);
                offset += 1;
            }
        });
    }

    /// Draws `blocks` blocks into `out` in batches of 16, whose block indices
    /// `next(take, idx)` sets (the first `take` lanes are kept).
    #[inline(always)]
    fn fill_batches(
        &self,
        blocks: usize,
        out: &mut [f32],
        mut next: impl FnMut(usize, &mut [u64; 16]),
    ) {
        const L: usize = 16;
        assert!(out.len() >= 4 * blocks, "fill_gaussian: out too short");
        let key = self.key();
        let mut done = 0;
        let mut batch = [0f32; 4 * L];
        while done < blocks {
            // Every batch is computed whole (vectorised) into a buffer and cut
            // to the blocks wanted: a scalar tail would cost more than the
            // unused lanes.
            let take = (blocks - done).min(L);
            let mut idx = [0u64; L];
            next(take, &mut idx);
            let words = philox16(&idx, self.trial, self.stream, key);
            let (mut z0, mut z1, mut z2, mut z3) = ([0f32; L], [0f32; L], [0f32; L], [0f32; L]);
            box_muller_lanes(&words[0], &words[1], &mut z0, &mut z1);
            box_muller_lanes(&words[2], &words[3], &mut z2, &mut z3);
            // A whole batch goes straight to `out`; a partial one through `batch`.
            let whole = take == L;
            let dst: &mut [f32; 4 * L] = if whole {
                (&mut out[done * 4..(done + L) * 4])
                    .try_into()
                    .expect("64 draws")
            } else {
                &mut batch
            };
            for l in 0..L {
                dst[4 * l] = z0[l];
                dst[4 * l + 1] = z1[l];
                dst[4 * l + 2] = z2[l];
                dst[4 * l + 3] = z3[l];
            }
            if !whole {
                out[done * 4..(done + take) * 4].copy_from_slice(&batch[..take * 4]);
            }
            done += take;
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

/// Philox with the 32x32 -> 64-bit products of 16 lanes in two `vpmuludq`
/// (even and odd lanes) and blends, instead of widening every lane: the
/// compiler's auto-vectorised version spends most of its time widening.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{M0, M1, W0, W1};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn mulhilo16(m: __m512i, a: __m512i) -> (__m512i, __m512i) {
        let even = _mm512_mul_epu32(a, m);
        let odd = _mm512_mul_epu32(_mm512_srli_epi64::<32>(a), m);
        let lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64::<32>(odd));
        let hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64::<32>(even), odd);
        (hi, lo)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn philox16(
        idx: &[u64; 16],
        trial: u32,
        stream: u32,
        key: [u32; 2],
    ) -> [[u32; 16]; 4] {
        let mut lo = [0u32; 16];
        let mut hi = [0u32; 16];
        for l in 0..16 {
            lo[l] = idx[l] as u32;
            hi[l] = (idx[l] >> 32) as u32;
        }
        // SAFETY: unaligned loads and stores of 64-byte arrays.
        let (mut c0, mut c1) = unsafe {
            (
                _mm512_loadu_si512(lo.as_ptr().cast()),
                _mm512_loadu_si512(hi.as_ptr().cast()),
            )
        };
        let mut c2 = _mm512_set1_epi32(trial as i32);
        let mut c3 = _mm512_set1_epi32(stream as i32);
        let (m0, m1) = (_mm512_set1_epi32(M0 as i32), _mm512_set1_epi32(M1 as i32));
        let [mut k0, mut k1] = key;
        for round in 0..10 {
            if round > 0 {
                k0 = k0.wrapping_add(W0);
                k1 = k1.wrapping_add(W1);
            }
            let (hi0, lo0) = mulhilo16(m0, c0);
            let (hi1, lo1) = mulhilo16(m1, c2);
            let n0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(k0 as i32));
            let n2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(k1 as i32));
            (c0, c1, c2, c3) = (n0, lo1, n2, lo0);
        }
        let mut out = [[0u32; 16]; 4];
        for (dst, v) in out.iter_mut().zip([c0, c1, c2, c3]) {
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
    fn runs_match_their_separate_fills() {
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
        let total: usize = runs.iter().map(|r| r.1).sum();
        let mut joined = vec![0f32; 4 * total];
        a.fill_gaussian_runs(&runs, &mut joined);
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
