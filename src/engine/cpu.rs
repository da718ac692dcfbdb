//! The CPU engine: the reference implementation of DESIGN's model, parallel
//! over trials with rayon. Every random draw comes from its Philox address,
//! so results do not depend on the thread count.

use super::{block_layout, Engine};
use crate::engine::stats::{accumulate_trial, Batch, TrialMoments, BINS};
use crate::error::Result;
use crate::experiment::plan::{chunk_words, LevelMasks, NoisePath, Plan};
use crate::model::rng::{stream, Address};
use crate::model::{Adc, Level};
use rayon::prelude::*;
use std::ops::Range;

/// The multi-threaded CPU engine.
#[derive(Debug, Default)]
pub struct CpuEngine {
    /// Worker threads asked for; `None` is rayon's global pool.
    threads: Option<usize>,
    /// Their pool, built on the first run: an engine with nothing to
    /// compute (every point resumed) starts no threads.
    pool: std::sync::OnceLock<rayon::ThreadPool>,
    /// The trial-invariant buffers of the plan run last, by plan id (unique
    /// to immutable plan data), so a point simulated in several calls builds
    /// them once.
    shared: Option<(u64, Shared)>,
}

impl CpuEngine {
    /// An engine on rayon's global pool (all cores).
    pub fn new() -> Self {
        CpuEngine::default()
    }

    /// An engine with exactly `threads` worker threads (at least one),
    /// started when it first runs.
    pub fn with_threads(threads: usize) -> Self {
        CpuEngine {
            threads: Some(threads.max(1)),
            pool: std::sync::OnceLock::new(),
            shared: None,
        }
    }

    fn threads(&self) -> usize {
        self.threads.unwrap_or_else(rayon::current_num_threads)
    }

    /// The engine's own pool, started on first use; `None` for the global one.
    fn pool(&self) -> Option<&rayon::ThreadPool> {
        let threads = self.threads?;
        Some(self.pool.get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("thread pool")
        }))
    }
}

impl Engine for CpuEngine {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn device(&self) -> String {
        format!("cpu ({} threads)", self.threads())
    }

    fn run(&mut self, plan: &Plan, trials: Range<u32>, raw: bool) -> Result<Batch> {
        if !matches!(&self.shared, Some((id, _)) if *id == plan.id()) {
            self.shared = Some((plan.id(), Shared::new(plan, true)));
        }
        let shared = &self.shared.as_ref().expect("just built").1;
        let work = || run_trials(plan, shared, trials.clone(), raw);
        Ok(match self.pool() {
            Some(pool) => pool.install(work),
            None => work(),
        })
    }

    fn outputs(&mut self, plan: &Plan, trial: u32) -> Result<Vec<f64>> {
        // One trial per plan: caching per-conversion moments would not pay.
        let shared = Shared::new(plan, false);
        let mut s = Scratch::default();
        simulate_trial(plan, &shared, trial, &mut s);
        Ok(s.y)
    }
}

/// Trial-invariant buffers derived from the plan.
#[derive(Debug)]
struct Shared {
    cws: Vec<Vec<(usize, u64)>>,
    /// The bit masks of the nominal levels.
    masks: LevelMasks,
    /// Noiseless conversions are summed from `base` row by row (one-trial plans).
    row_sums: bool,
    /// Nominal cell weights `[k][j][n]` for the per-cell paths: the level, or `leak` for a zero level.
    base: Vec<f32>,
    /// Compact dynamic draws: per (row, plane) the conducting columns.
    compact: Option<CompactRows>,
    /// Whether any group of (chunk, plane) is converted `[c][j]`.
    plane_live: Vec<bool>,
    /// Without faults, the analytic paths' per-conversion mean and standard
    /// deviation `[b][c][i][j][n]` are the same in every trial.
    moments: Option<(Vec<f32>, Vec<f32>)>,
    /// ADC step of each group `[c][j][n]` (the same value `Adc::convert` computes).
    step: Vec<f32>,
    /// The factors of `Adc::code_scaled` of each group `[c][j][n]`.
    scale: Vec<f32>,
    den: Vec<f32>,
    /// 1 for converted groups, 0 for skipped ones `[c][j][n]`.
    live: Vec<f32>,
}

/// Largest conversion count whose moments are cached (2 x 4 bytes each).
const MOMENT_CACHE_LIMIT: usize = 1 << 26;

impl Shared {
    /// `cache`: precompute the analytic paths' per-conversion moments (pays
    /// off when several trials share the plan).
    fn new(plan: &Plan, cache: bool) -> Shared {
        let masks = LevelMasks::new(&plan.digits, plan.j, plan.k, plan.n);
        // Without cell noise, leak or faults, summing the digits row by row is
        // the same integer sum as the analytic popcounts, and faster when a
        // plan serves one trial only.
        let row_sums = !cache
            && plan.path == NoisePath::Analytic
            && plan.noise.leak == 0.0
            && !plan.has_faults();
        let base = match plan.path {
            NoisePath::PerCellStatic | NoisePath::PerCellDynamic => {
                base_weights(plan, &plan.digits)
            }
            NoisePath::Analytic if row_sums => base_weights(plan, &plan.digits),
            _ => Vec::new(),
        };
        let mut plane_live = vec![false; plan.chunks * plan.j];
        for c in 0..plan.chunks {
            for j in 0..plan.j {
                plane_live[c * plan.j + j] =
                    (0..plan.n).any(|n| plan.converted[plan.group(c, j, n)]);
            }
        }
        let cws = chunk_words(plan.k, plan.p);
        let conversions = plan.b * plan.chunks * plan.xbits * plan.j * plan.n;
        let analytic = matches!(plan.path, NoisePath::Analytic | NoisePath::Aggregated);
        let moments =
            (cache && analytic && !plan.has_faults() && conversions <= MOMENT_CACHE_LIMIT)
                .then(|| conversion_moments(plan, &cws, &masks));
        let top = plan.adc.bits.map_or(1.0, Adc::top);
        let step = plan
            .lo
            .iter()
            .zip(&plan.hi)
            .map(|(&l, &h)| Adc::step(l, h, top))
            .collect();
        let (scale, den) = plan
            .lo
            .iter()
            .zip(&plan.hi)
            .map(|(&l, &h)| Adc::scale(h - l, top))
            .unzip();
        let live = plan.converted.iter().map(|&c| c as u32 as f32).collect();
        let compact = plan.compact_draws().then(|| CompactRows::new(plan));
        Shared {
            row_sums,
            cws,
            masks,
            compact,
            base,
            plane_live,
            moments,
            step,
            scale,
            den,
            live,
        }
    }
}

/// Mean and standard deviation of every conversion's analog sum, `[b][c][i][j][n]`:
/// the integer sum plus leak, and the summed variance of dynamic cell noise
/// (aggregated) and read noise.
fn conversion_moments(
    plan: &Plan,
    cws: &[Vec<(usize, u64)>],
    masks: &LevelMasks,
) -> (Vec<f32>, Vec<f32>) {
    let (n, j, xbits) = (plan.n, plan.j, plan.xbits);
    let total = plan.b * plan.chunks * xbits * j * n;
    let (mut mean, mut sd) = (vec![0f32; total], vec![0f32; total]);
    for b in 0..plan.b {
        for c in 0..plan.chunks {
            for i in 0..xbits {
                for jj in 0..j {
                    let row = (((b * plan.chunks + c) * xbits + i) * j + jj) * n;
                    moments_row(
                        plan,
                        (c, &cws[c]),
                        b,
                        i,
                        jj,
                        masks,
                        &mut mean[row..row + n],
                        &mut sd[row..row + n],
                    );
                }
            }
        }
    }
    (mean, sd)
}

/// The moments of one (input, chunk `cw`, bit, plane) row of conversions: the
/// integer sum of levels plus leak, and the standard deviation of dynamic
/// cell noise (aggregated, `sigma^2 sum L^2`) and read noise together.
#[allow(clippy::too_many_arguments)]
fn moments_row(
    plan: &Plan,
    (c, cw): (usize, &[(usize, u64)]),
    b: usize,
    i: usize,
    jj: usize,
    masks: &LevelMasks,
    mean: &mut [f32],
    sd: &mut [f32],
) {
    let (n, words, xbits) = (plan.n, plan.words, plan.xbits);
    let sig2 = if plan.path == NoisePath::Aggregated {
        plan.noise.cell_sigma * plan.noise.cell_sigma
    } else {
        0.0
    };
    let read = &plan.read_sd[plan.group(c, jj, 0)..][..n];
    let leak = plan.noise.leak;
    let xm = &plan.xmask[(b * xbits + i) * words..(b * xbits + i + 1) * words];
    let ones: u32 = cw.iter().map(|&(w, m)| (xm[w] & m).count_ones()).sum();
    if masks.bits > 1 {
        for nn in 0..n {
            let (p, q) = masks.signed_sums(xm, jj, nn, cw);
            let squares = masks.square_sum(xm, jj, nn, cw) as f32;
            let zeros = (ones - masks.nonzero(xm, jj, nn, cw)) as f32;
            mean[nn] = (p - q) as f32 + leak * zeros;
            sd[nn] = (sig2 * (squares + leak * leak * zeros) + read[nn] * read[nn]).sqrt();
        }
        return;
    }
    // Levels in {-1, 0, 1}: one mask each for +1 and -1.
    let (pos, neg) = (&masks.pos, &masks.neg);
    for nn in 0..n {
        let m = masks.at(jj, nn);
        let (mut np, mut nm) = (0u32, 0u32);
        for &(w, mask) in cw {
            let x = xm[w] & mask;
            np += (x & pos[m + w]).count_ones();
            nm += (x & neg[m + w]).count_ones();
        }
        let zeros = (ones - np - nm) as f32;
        mean[nn] = np as f32 - nm as f32 + leak * zeros;
        sd[nn] = (sig2 * ((np + nm) as f32 + leak * leak * zeros) + read[nn] * read[nn]).sqrt();
    }
}

/// The conducting (non-zero level) cells of every (row, plane), `[k][j]`, in
/// blocks of 16 columns: a bit mask per block and the rank of its first
/// conducting cell, so draws stored contiguously can be expanded in place.
#[derive(Debug)]
struct CompactRows {
    /// Planes and columns.
    j: usize,
    n: usize,
    blocks: usize,
    /// Per block and lane, `16 digit + rank`, zero-padded `[k][j][blocks *
    /// 16]`: the digit (-1, 0 or 1) is the cell's weight without leak (the
    /// condition for compact draws), and a conducting lane's rank counts the
    /// conducting lanes before it in its block. With multi-level cells
    /// the digit part is 0 and the weights are in `levels`.
    lanes: Vec<i8>,
    /// Levels beyond {-1, 0, 1}: every lane's level as f32, laid out as
    /// `lanes`.
    levels: Option<Vec<f32>>,
    masks: Vec<u16>,
    offsets: Vec<u32>,
    counts: Vec<u32>,
}

impl CompactRows {
    fn new(plan: &Plan) -> CompactRows {
        assert!(
            plan.compact_draws(),
            "compact draws need no leak and no faults"
        );
        CompactRows::from_digits(plan.k, plan.j, plan.n, &plan.digits)
    }

    /// From the levels `[j][k][n]` of a `k x n` array with `j` planes.
    fn from_digits(k: usize, j: usize, n: usize, digits: &[Level]) -> CompactRows {
        let blocks = n.div_ceil(16);
        let multi_level = digits.iter().any(|d| d.unsigned_abs() > 1);
        let mut c = CompactRows {
            j,
            n,
            blocks,
            lanes: vec![0; k * j * blocks * 16],
            levels: multi_level.then(|| vec![0.0; k * j * blocks * 16]),
            masks: vec![0; k * j * blocks],
            offsets: vec![0; k * j * blocks],
            counts: vec![0; k * j],
        };
        for kk in 0..k {
            for jj in 0..j {
                let r = kk * j + jj;
                let mut t = 0u32;
                for blk in 0..blocks {
                    c.offsets[r * blocks + blk] = t;
                    let mut m = 0u16;
                    for l in 0..16.min(n - blk * 16) {
                        let d = digits[(jj * k + kk) * n + blk * 16 + l];
                        let lane = (r * blocks + blk) * 16 + l;
                        let rank = m.count_ones() as i8;
                        match &mut c.levels {
                            Some(levels) => {
                                levels[lane] = d as f32;
                                c.lanes[lane] = rank;
                            }
                            None => c.lanes[lane] = 16 * d as i8 + rank,
                        }
                        if d != 0 {
                            m |= 1 << l;
                            t += 1;
                        }
                    }
                    c.masks[r * blocks + blk] = m;
                }
                c.counts[r] = t;
            }
        }
        c
    }

    /// Adds row `kk` of the planes in the bit set `planes` to the partial
    /// sums: `acc[jj n + col] += w + w sigma z` for its conducting cells,
    /// whose weight `w` is their digit. `z` holds the draws plane after plane,
    /// each plane's in column order and rounded up to whole Philox blocks
    /// (four draws). The f32 operations are those of the dense loop, where
    /// non-conducting cells add zero. Returns the number of draws used. One
    /// call per row keeps the per-call work off the per-plane path.
    #[inline(never)]
    fn accumulate(&self, kk: usize, planes: u32, acc: &mut [f32], z: &[f32], sigma: f32) -> usize {
        let (j, n) = (self.j, self.n);
        assert!(acc.len() == j * n && planes >> j == 0);
        let needed: usize = self
            .planes(kk, planes)
            .map(|(r, ..)| 4 * self.blocks_of(r))
            .sum();
        assert!(z.len() >= needed, "accumulate: too few draws");
        #[cfg(target_arch = "x86_64")]
        {
            let multi = self.levels.is_some();
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F is present, the arguments are checked,
                // and `levels` is there exactly when `MULTI` is set.
                unsafe {
                    if multi {
                        self.accumulate_avx512::<true>(kk, planes, acc, z, sigma)
                    } else {
                        self.accumulate_avx512::<false>(kk, planes, acc, z, sigma)
                    }
                };
                return needed;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is present, the arguments are checked, and
                // `levels` is there exactly when `MULTI` is set.
                unsafe {
                    if multi {
                        self.accumulate_avx2::<true>(kk, planes, acc, z, sigma)
                    } else {
                        self.accumulate_avx2::<false>(kk, planes, acc, z, sigma)
                    }
                };
                return needed;
            }
        }
        self.accumulate_scalar(kk, planes, acc, z, sigma);
        needed
    }

    /// The portable [`accumulate`](Self::accumulate).
    fn accumulate_scalar(&self, kk: usize, planes: u32, acc: &mut [f32], z: &[f32], sigma: f32) {
        self.each_block(kk, planes, |b| {
            let (mut m, mut t) = (b.mask, b.draw);
            while m != 0 {
                let l = m.trailing_zeros() as usize;
                m &= m - 1;
                let bw = match &self.levels {
                    Some(levels) => levels[b.lane + l],
                    None => (self.lanes[b.lane + l] >> 4) as f32,
                };
                acc[b.col + l] += bw + bw * sigma * z[t];
                t += 1;
            }
        });
    }

    /// Philox blocks (four draws each) of (row, plane) `r`'s conducting cells.
    fn blocks_of(&self, r: usize) -> usize {
        (self.counts[r] as usize).div_ceil(4)
    }

    /// Row `kk`'s planes in the bit set `planes`, in order: the (row, plane)
    /// index `r`, the plane `jj`, and where its draws start when each
    /// plane's follow the previous plane's (see
    /// [`accumulate`](Self::accumulate)).
    fn planes(&self, kk: usize, planes: u32) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        (0..self.j)
            .filter(move |jj| planes >> jj & 1 == 1)
            .scan(0, move |next, jj| {
                let r = kk * self.j + jj;
                let first = *next;
                *next += 4 * self.blocks_of(r);
                Some((r, jj, first))
            })
    }

    /// Calls `f` for each block of 16 columns with conducting cells in row
    /// `kk`'s planes `planes`, in order: the loop all accumulation paths
    /// share.
    #[inline(always)]
    fn each_block(&self, kk: usize, planes: u32, mut f: impl FnMut(Block)) {
        for (r, jj, first) in self.planes(kk, planes) {
            let range = r * self.blocks..(r + 1) * self.blocks;
            let masks = &self.masks[range.clone()];
            for (blk, (&mask, &off)) in masks.iter().zip(&self.offsets[range]).enumerate() {
                if mask != 0 {
                    f(Block {
                        mask,
                        col: jj * self.n + blk * 16,
                        width: (self.n - blk * 16).min(16),
                        draw: first + off as usize,
                        lane: (r * self.blocks + blk) * 16,
                    });
                }
            }
        }
    }

    /// [`accumulate_avx512`](Self::accumulate_avx512) for CPUs with AVX2
    /// only: each block is two halves of 8 lanes, and a half's draws, from
    /// a masked load, are spread by a permute on its lanes' ranks less the
    /// conducting cells of the first half. Non-conducting lanes get some
    /// draw, but their weight is 0, so they add +0 as in the dense loop.
    ///
    /// With `MULTI` (multi-level cells) the weights are loaded from
    /// `levels` instead.
    ///
    /// # Safety
    /// AVX2 must be present, the arguments must be those
    /// [`accumulate`](Self::accumulate) checks, and `levels` must be there
    /// if `MULTI` is set.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn accumulate_avx2<const MULTI: bool>(
        &self,
        kk: usize,
        planes: u32,
        acc: &mut [f32],
        z: &[f32],
        sigma: f32,
    ) {
        use std::arch::x86_64::*;
        let vs = _mm256_set1_ps(sigma);
        let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let low4 = _mm256_set1_epi32(15);
        let levels = self.levels.as_deref().unwrap_or(&[]);
        self.each_block(kk, planes, |b| {
            let below = (b.mask & 0xFF).count_ones() as usize;
            for half in 0..2 {
                let hm = (b.mask >> (8 * half)) & 0xFF;
                if hm == 0 {
                    continue;
                }
                let skip = half * below;
                let lanes = (b.width - 8 * half).min(8) as i32;
                // SAFETY: the half's draws are `z[b.draw + skip..]
                // [..popcount(hm)]`, within `z` (checked by `accumulate`),
                // and the masked load reads only those; the lane bytes of
                // every block are stored whole, and so are its levels
                // (read with `MULTI` only, when they are there); the loads
                // and stores of `acc` stay within the block's `width`
                // columns of `acc`.
                unsafe {
                    let packed = self.lanes.as_ptr().add(b.lane + 8 * half);
                    let v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(packed.cast()));
                    let count = _mm256_set1_epi32(hm.count_ones() as i32);
                    let drawn = _mm256_maskload_ps(
                        z.as_ptr().add(b.draw + skip),
                        _mm256_cmpgt_epi32(count, iota),
                    );
                    let rank =
                        _mm256_sub_epi32(_mm256_and_si256(v, low4), _mm256_set1_epi32(skip as i32));
                    let zv = _mm256_permutevar8x32_ps(drawn, rank);
                    let bw = if MULTI {
                        _mm256_loadu_ps(levels.as_ptr().add(b.lane + 8 * half))
                    } else {
                        _mm256_cvtepi32_ps(_mm256_srai_epi32::<4>(v))
                    };
                    let p = acc.as_mut_ptr().add(b.col + 8 * half);
                    let inside = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), iota);
                    let a = if lanes == 8 {
                        _mm256_loadu_ps(p)
                    } else {
                        _mm256_maskload_ps(p, inside)
                    };
                    let sum = _mm256_add_ps(
                        a,
                        _mm256_add_ps(bw, _mm256_mul_ps(_mm256_mul_ps(bw, vs), zv)),
                    );
                    if lanes == 8 {
                        _mm256_storeu_ps(p, sum);
                    } else {
                        _mm256_maskstore_ps(p, inside, sum);
                    }
                }
            }
        });
    }

    /// The AVX-512 loop over the blocks of 16 columns of row `kk`'s planes.
    /// One sign-extending load gives a block's lane bytes: their low four
    /// bits are the permute indices that spread the block's draws to its
    /// conducting lanes (`vexpandps` is about twice as slow on AMD Zen 4),
    /// and an arithmetic shift by four gives the digits.
    ///
    /// With `MULTI` (multi-level cells) the weights are loaded from
    /// `levels` instead.
    ///
    /// # Safety
    /// AVX-512F must be present, the arguments must be those
    /// [`accumulate`](Self::accumulate) checks, and `levels` must be there
    /// if `MULTI` is set.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn accumulate_avx512<const MULTI: bool>(
        &self,
        kk: usize,
        planes: u32,
        acc: &mut [f32],
        z: &[f32],
        sigma: f32,
    ) {
        use std::arch::x86_64::*;
        let vs = _mm512_set1_ps(sigma);
        let levels = self.levels.as_deref().unwrap_or(&[]);
        self.each_block(kk, planes, |b| {
            // Full blocks load and store whole vectors; a last, short block
            // is masked to stay within its plane.
            let lanes = ((1u32 << b.width) - 1) as u16;
            let drawn = ((1u32 << b.mask.count_ones()) - 1) as u16;
            // SAFETY: the block's draws are `z[b.draw..][..popcount(mask)]`,
            // within `z` (checked by `accumulate`); the lane bytes of every
            // block are stored whole, and so are its levels (read with
            // `MULTI` only, when they are there); the loads and stores of
            // `acc` stay within the block's `width` columns of `acc`.
            unsafe {
                let packed = self.lanes.as_ptr().add(b.lane);
                let v = _mm512_cvtepi8_epi32(_mm_loadu_si128(packed.cast()));
                let drawn = _mm512_maskz_loadu_ps(drawn, z.as_ptr().add(b.draw));
                let zv = _mm512_maskz_permutexvar_ps(b.mask, v, drawn);
                let bw = if MULTI {
                    _mm512_loadu_ps(levels.as_ptr().add(b.lane))
                } else {
                    _mm512_cvtepi32_ps(_mm512_srai_epi32::<4>(v))
                };
                let p = acc.as_mut_ptr().add(b.col);
                let a = if lanes == 0xFFFF {
                    _mm512_loadu_ps(p)
                } else {
                    _mm512_maskz_loadu_ps(lanes, p)
                };
                let sum = _mm512_add_ps(
                    a,
                    _mm512_add_ps(bw, _mm512_mul_ps(_mm512_mul_ps(bw, vs), zv)),
                );
                if lanes == 0xFFFF {
                    _mm512_storeu_ps(p, sum);
                } else {
                    _mm512_mask_storeu_ps(p, lanes, sum);
                }
            }
        });
    }
}

/// A block of 16 columns of one (row, plane) with conducting cells.
struct Block {
    /// Its conducting lanes.
    mask: u16,
    /// Its first column in the row's sums `[j][n]`.
    col: usize,
    /// Its columns within the plane: 16, or fewer in a last, short block.
    width: usize,
    /// Where its draws start in `z`.
    draw: usize,
    /// Its first lane byte in `CompactRows::lanes`.
    lane: usize,
}

/// Cell weights `[k][j][n]` from levels `[j][k][n]`.
fn base_weights(plan: &Plan, digits: &[Level]) -> Vec<f32> {
    let (k, j, n) = (plan.k, plan.j, plan.n);
    let leak = plan.noise.leak;
    let mut base = vec![0f32; k * j * n];
    for jj in 0..j {
        for kk in 0..k {
            let src = &digits[(jj * k + kk) * n..(jj * k + kk + 1) * n];
            let dst = &mut base[(kk * j + jj) * n..(kk * j + jj + 1) * n];
            for (b, &d) in dst.iter_mut().zip(src) {
                *b = if d == 0 { leak } else { d as f32 };
            }
        }
    }
    base
}

/// Rows of a conversion whose dynamic draws are made in one pass (about
/// 4 KiB of draws a row at K = N = 256).
const ROWS_PER_FILL: usize = 4;

/// Per-thread buffers.
#[derive(Default)]
struct Scratch {
    y: Vec<f64>,
    z: Vec<f32>,
    /// The Philox blocks drawn in one pass.
    idx: Vec<u64>,
    /// The rows whose input bit is 1, in order.
    rows: Vec<usize>,
    acc: Vec<f32>,
    g: Vec<f32>,
    digits: Vec<Level>,
    mean: Vec<f32>,
    sd: Vec<f32>,
}

struct Partial {
    trials: Vec<(u32, TrialMoments)>,
    hist: Vec<u64>,
    raw: Vec<(u32, Vec<f32>)>,
}

impl Partial {
    fn new() -> Self {
        Partial {
            trials: Vec::new(),
            hist: vec![0; BINS],
            raw: Vec::new(),
        }
    }
    fn merge(mut self, other: Partial) -> Partial {
        self.trials.extend(other.trials);
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            *a += b;
        }
        self.raw.extend(other.raw);
        self
    }
}

fn run_trials(plan: &Plan, shared: &Shared, trials: Range<u32>, raw: bool) -> Batch {
    let first = trials.start;
    let part = trials
        .into_par_iter()
        .fold(
            || (Partial::new(), Scratch::default()),
            |(mut part, mut s), t| {
                simulate_trial(plan, shared, t, &mut s);
                let mut r = raw.then(Vec::new);
                let m = accumulate_trial(&s.y, &plan.exact, &mut part.hist, r.as_mut());
                part.trials.push((t, m));
                if let Some(r) = r {
                    part.raw.push((t, r));
                }
                (part, s)
            },
        )
        .map(|(p, _)| p)
        .reduce(Partial::new, Partial::merge);
    let mut trials = part.trials;
    trials.sort_by_key(|(t, _)| *t);
    let raw = raw.then(|| {
        let mut r = part.raw;
        r.sort_by_key(|(t, _)| *t);
        r.into_iter().flat_map(|(_, v)| v).collect()
    });
    Batch {
        first_trial: first,
        trials: trials.into_iter().map(|(_, m)| m).collect(),
        hist: part.hist,
        raw,
    }
}

/// Draws this trial's stuck-at faults into `out` (`[j][k][n]`).
fn faulted_digits(plan: &Plan, trial: u32, out: &mut Vec<Level>) {
    let (k, n, nb) = (plan.k, plan.n, plan.nb());
    let layout = block_layout(plan);
    let addr = Address {
        seed: plan.seed,
        trial,
        stream: stream::FAULT,
    };
    let (p0, p01) = (plan.noise.p_sa0, plan.noise.p_sa0 + plan.noise.p_sa1);
    out.clear();
    out.extend_from_slice(&plan.digits);
    for jj in 0..plan.j {
        for kk in 0..k {
            let row = (jj * k + kk) * n;
            for blk in 0..nb {
                let w = addr.block(layout.static_block(jj, kk, blk));
                for (lane, &word) in w.iter().enumerate() {
                    let nn = blk * 4 + lane;
                    if nn >= n {
                        break;
                    }
                    let u = Address::uniform(word);
                    if u < p0 {
                        out[row + nn] = 0;
                    } else if u < p01 {
                        out[row + nn] = plan.sa1_digit[row + nn];
                    }
                }
            }
        }
    }
}

/// Fills `z` with `n` Gaussians of the row of blocks starting at `first`.
#[inline]
fn gaussian_row(addr: &Address, first: u64, nb: usize, z: &mut Vec<f32>) {
    z.resize(nb * 4, 0.0);
    addr.fill_gaussian(first, &mut z[..nb * 4]);
}

/// Simulates one trial; leaves `y = sum x_i s_j value` in `s.y`, `[b][n]` (`x_i`
/// the input plane weight).
fn simulate_trial(plan: &Plan, shared: &Shared, trial: u32, s: &mut Scratch) {
    s.y.clear();
    s.y.resize(plan.b * plan.n, 0.0);
    let faults = plan.has_faults();
    if faults {
        faulted_digits(plan, trial, &mut s.digits);
    }
    match plan.path {
        NoisePath::Analytic if shared.row_sums => {
            per_cell_trial(plan, shared, &shared.base, trial, s)
        }
        NoisePath::Analytic | NoisePath::Aggregated => {
            if let Some((mean, sd)) = &shared.moments {
                analytic_trial(plan, shared, Moments::Cached(mean, sd), trial, s);
            } else if faults {
                let masks = LevelMasks::new(&s.digits, plan.j, plan.k, plan.n);
                analytic_trial(plan, shared, Moments::Masks(&masks), trial, s);
            } else {
                analytic_trial(plan, shared, Moments::Masks(&shared.masks), trial, s);
            }
        }
        NoisePath::PerCellStatic | NoisePath::PerCellDynamic => {
            let base = if faults {
                base_weights(plan, &s.digits)
            } else {
                Vec::new()
            };
            let base = if faults { &base } else { &shared.base };
            per_cell_trial(plan, shared, base, trial, s);
        }
    }
}

/// Where the analytic paths take each conversion's moments from.
enum Moments<'a> {
    /// Trial-invariant, computed once (`[b][c][i][j][n]` mean and sd).
    Cached(&'a [f32], &'a [f32]),
    /// Computed row by row from this trial's level masks.
    Masks(&'a LevelMasks),
}

/// Conversions from integer sums: no cell draws, or one aggregated draw
/// (dynamic cell noise and read noise together) per conversion.
fn analytic_trial(plan: &Plan, shared: &Shared, moments: Moments, trial: u32, s: &mut Scratch) {
    let (n, j, nb, xbits) = (plan.n, plan.j, plan.nb(), plan.xbits);
    let layout = block_layout(plan);
    let draws = plan.path == NoisePath::Aggregated || plan.has_read_noise();
    let addr = Address {
        seed: plan.seed,
        trial,
        stream: if plan.path == NoisePath::Aggregated {
            stream::AGGREGATED
        } else {
            stream::READ
        },
    };
    let Scratch {
        y,
        z,
        acc,
        mean: mrow,
        sd: srow,
        ..
    } = s;
    acc.resize(n, 0.0);
    mrow.resize(n, 0.0);
    srow.resize(n, 0.0);
    if !draws {
        z.clear();
        z.resize(n, 0.0);
    }
    for b in 0..plan.b {
        for c in 0..plan.chunks {
            for i in 0..xbits {
                if !plan.row_active[(b * plan.chunks + c) * xbits + i] {
                    continue;
                }
                for jj in 0..j {
                    let conv = (((b * plan.chunks + c) * xbits + i) * j + jj) * n;
                    let (m, d): (&[f32], &[f32]) = match moments {
                        Moments::Cached(mean, sd) => (&mean[conv..conv + n], &sd[conv..conv + n]),
                        Moments::Masks(masks) => {
                            moments_row(plan, (c, &shared.cws[c]), b, i, jj, masks, mrow, srow);
                            (mrow, srow)
                        }
                    };
                    if draws {
                        gaussian_row(&addr, layout.read_block(b, c, i, jj, 0), nb, z);
                    }
                    for nn in 0..n {
                        acc[nn] = m[nn] + d[nn] * z[nn];
                    }
                    let scale = plan.input_weights[i] as f64 * plan.scales[jj] as f64;
                    convert_row(
                        plan,
                        shared,
                        plan.group(c, jj, 0),
                        acc,
                        &mut y[b * n..(b + 1) * n],
                        scale,
                    );
                }
            }
        }
    }
}

/// Digitises the analog sums `a` of one (chunk, plane) row of columns starting
/// at group `g0`, and adds `scale * value` of the converted groups to `y`.
fn convert_row(plan: &Plan, shared: &Shared, g0: usize, a: &mut [f32], y: &mut [f64], scale: f64) {
    quantize_groups(plan, shared, g0, a);
    add_scaled(y, a, &shared.live[g0..g0 + a.len()], scale);
}

/// The ADC: replaces the analog sums `a` of the groups from `g0` on by the values read.
fn quantize_groups(plan: &Plan, shared: &Shared, g0: usize, a: &mut [f32]) {
    if let Some(bits) = plan.adc.bits {
        let top = Adc::top(bits);
        let g = g0..g0 + a.len();
        let lo = &plan.lo[g.clone()];
        let (step, scale, den) = (
            &shared.step[g.clone()],
            &shared.scale[g.clone()],
            &shared.den[g],
        );
        for (((av, &l), &st), (&sc, &d)) in
            a.iter_mut().zip(lo).zip(step).zip(scale.iter().zip(den))
        {
            *av = l + Adc::code_scaled(*av, l, sc, d, top) * st;
        }
    }
}

/// `y += scale * a` for the converted groups (`live` is 1 or 0).
#[inline]
fn add_scaled(y: &mut [f64], a: &[f32], live: &[f32], scale: f64) {
    for ((yv, &av), &lv) in y.iter_mut().zip(a).zip(live) {
        *yv += scale * (av * lv) as f64;
    }
}

/// Digitises the analog sums `a` `[j][n]` of every plane of chunk `c` (all
/// planes at once, the same arithmetic as [`convert_row`]) and adds
/// `weight * s_j * value` of the converted groups to `y`, plane by plane.
fn convert_chunk(
    plan: &Plan,
    shared: &Shared,
    c: usize,
    a: &mut [f32],
    y: &mut [f64],
    weight: f64,
) {
    let (n, j) = (plan.n, plan.j);
    let g0 = plan.group(c, 0, 0);
    quantize_groups(plan, shared, g0, &mut a[..j * n]);
    for jj in 0..j {
        if shared.plane_live[c * j + jj] {
            let at = jj * n..(jj + 1) * n;
            let live = &shared.live[g0 + jj * n..g0 + (jj + 1) * n];
            add_scaled(y, &a[at], live, weight * plan.scales[jj] as f64);
        }
    }
}

/// `acc[c] += g[row][c]` for every row in `rows`, in order, where `g` is
/// `[k][acc.len()]`. Where `g` fits in a core's L2 cache, columns go in
/// blocks of 64 held in registers while the rows stream past (the same
/// additions in the same order: 1.3x faster on the shipped CNN's layers);
/// a larger `g` goes row by row, which the prefetcher streams better.
fn add_rows(acc: &mut [f32], g: &[f32], rows: &[usize]) {
    if g.len() > (256 << 10) / 4 {
        add_rows_blocked::<256>(acc, g, rows);
    } else {
        add_rows_blocked::<64>(acc, g, rows);
    }
}

fn add_rows_blocked<const B: usize>(acc: &mut [f32], g: &[f32], rows: &[usize]) {
    let jn = acc.len();
    let mut col = 0;
    while col + B <= jn {
        let mut blk: [f32; B] = acc[col..col + B].try_into().expect("a block");
        for &kk in rows {
            let r: &[f32; B] = g[kk * jn + col..kk * jn + col + B]
                .try_into()
                .expect("a block");
            for l in 0..B {
                blk[l] += r[l];
            }
        }
        acc[col..col + B].copy_from_slice(&blk);
        col += B;
    }
    for &kk in rows {
        for (a, &gv) in acc[col..].iter_mut().zip(&g[kk * jn + col..(kk + 1) * jn]) {
            *a += gv;
        }
    }
}

/// One (input vector `b`, chunk `c`, input bit `i`): the conversions of
/// every plane and column that share an input plane.
#[derive(Clone, Copy, Debug)]
struct InputPlane {
    b: usize,
    c: usize,
    i: usize,
}

/// Per-cell sampling: static cells drawn once per trial, or dynamic cells per read.
fn per_cell_trial(plan: &Plan, shared: &Shared, base: &[f32], trial: u32, s: &mut Scratch) {
    let (n, xbits) = (plan.n, plan.xbits);
    // Noiseless row sums (`Shared::row_sums`) take the static path with G = base.
    let static_noise = matches!(plan.path, NoisePath::PerCellStatic | NoisePath::Analytic);
    let cell_addr = Address {
        seed: plan.seed,
        trial,
        stream: if static_noise {
            stream::CELL_STATIC
        } else {
            stream::CELL_DYNAMIC
        },
    };
    let read_addr = Address {
        seed: plan.seed,
        trial,
        stream: stream::READ,
    };
    if static_noise {
        chip_weights(plan, base, &cell_addr, s);
    }
    s.acc.resize(plan.j * n, 0.0);
    let mut zr: Vec<f32> = Vec::new();
    for b in 0..plan.b {
        for c in 0..plan.chunks {
            for i in 0..xbits {
                if !plan.row_active[(b * plan.chunks + c) * xbits + i] {
                    continue;
                }
                let at = InputPlane { b, c, i };
                s.acc.fill(0.0);
                conducting_rows(plan, shared, at, &mut s.rows);
                if static_noise {
                    add_rows(&mut s.acc, &s.g, &s.rows);
                } else if let Some(cr) = &shared.compact {
                    add_compact_draws(plan, shared, cr, &cell_addr, at, s);
                } else {
                    add_dense_draws(plan, shared, base, &cell_addr, at, s);
                }
                if plan.has_read_noise() {
                    add_read_noise(plan, shared, &read_addr, at, &mut s.acc, &mut zr);
                }
                convert_chunk(
                    plan,
                    shared,
                    c,
                    &mut s.acc,
                    &mut s.y[b * n..(b + 1) * n],
                    plan.input_weights[i] as f64,
                );
            }
        }
    }
}

/// This trial's chip, `s.g = G[k][j][n] = base (1 + sigma z)`, `z`
/// addressed by (plane, row, column); `base` itself without mismatch.
fn chip_weights(plan: &Plan, base: &[f32], cell_addr: &Address, s: &mut Scratch) {
    let (k, n, j, nb) = (plan.k, plan.n, plan.j, plan.nb());
    let sigma = plan.noise.cell_sigma;
    if sigma == 0.0 {
        s.g.clear();
        s.g.extend_from_slice(base);
        return;
    }
    let layout = block_layout(plan);
    s.g.resize(k * j * n, 0.0);
    for kk in 0..k {
        for jj in 0..j {
            gaussian_row(cell_addr, layout.static_block(jj, kk, 0), nb, &mut s.z);
            let row = (kk * j + jj) * n;
            for ((g, &bw), &z) in s.g[row..row + n]
                .iter_mut()
                .zip(&base[row..row + n])
                .zip(&s.z)
            {
                *g = bw + bw * sigma * z;
            }
        }
    }
}

/// The rows of chunk `at.c` whose input bit `at.i` of vector `at.b` is 1, in order.
fn conducting_rows(plan: &Plan, shared: &Shared, at: InputPlane, rows: &mut Vec<usize>) {
    let (words, xbits) = (plan.words, plan.xbits);
    let first = (at.b * xbits + at.i) * words;
    let xm = &plan.xmask[first..first + words];
    rows.clear();
    for &(w, mask) in &shared.cws[at.c] {
        let mut bits = xm[w] & mask;
        while bits != 0 {
            rows.push(w * 64 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }
}

/// Dynamic draws for the conducting cells only (no leak, no faults): adds
/// `w + w sigma z` of the rows `s.rows` to `s.acc` `[j][n]`. Draw `t` of a
/// plane's row belongs to its `t`-th conducting cell. The draws of a few
/// rows are made in one pass, so few 16-block batches are partly used.
fn add_compact_draws(
    plan: &Plan,
    shared: &Shared,
    cr: &CompactRows,
    cell_addr: &Address,
    at: InputPlane,
    s: &mut Scratch,
) {
    let (j, c) = (plan.j, at.c);
    let layout = block_layout(plan);
    let planes = |kk: usize| {
        (0..j)
            .filter(|&jj| shared.plane_live[c * j + jj] && cr.counts[kk * j + jj] > 0)
            .fold(0u32, |set, jj| set | 1 << jj)
    };
    for group in s.rows.chunks(ROWS_PER_FILL) {
        let mut sets = [(0, 0); ROWS_PER_FILL];
        for (set, &kk) in sets.iter_mut().zip(group) {
            *set = (kk, planes(kk));
        }
        let sets = &sets[..group.len()];
        // Each plane's run of blocks is written 16 indices at a time (whole
        // vectors, no scalar tail) into a buffer that only grows, and the
        // next run starts where it ends.
        let mut used = 0;
        for &(kk, set) in sets {
            for (r, jj, _) in cr.planes(kk, set) {
                let first = layout.dynamic_block(at.b, at.i, kk, jj, 0);
                let blocks = cr.blocks_of(r);
                let end = used + blocks.next_multiple_of(16);
                if s.idx.len() < end {
                    s.idx.resize(end, 0);
                }
                for (o, lanes) in s.idx[used..end].chunks_exact_mut(16).enumerate() {
                    let lanes: &mut [u64; 16] = lanes.try_into().expect("16");
                    *lanes = std::array::from_fn(|l| first + (16 * o + l) as u64);
                }
                used += blocks;
            }
        }
        if s.z.len() < used * 4 {
            s.z.resize(used * 4, 0.0);
        }
        cell_addr.fill_gaussian_at(&s.idx[..used], &mut s.z);
        let mut drawn = 0;
        for &(kk, set) in sets {
            drawn += cr.accumulate(kk, set, &mut s.acc, &s.z[drawn..], plan.noise.cell_sigma);
        }
    }
}

/// Dynamic draws for every cell of the rows `s.rows` (leak or faults make
/// every cell conduct): adds `w + w sigma z` to `s.acc` `[j][n]`, draw `t`
/// of a row to column `t`.
fn add_dense_draws(
    plan: &Plan,
    shared: &Shared,
    base: &[f32],
    cell_addr: &Address,
    at: InputPlane,
    s: &mut Scratch,
) {
    let (n, j, nb) = (plan.n, plan.j, plan.nb());
    let sigma = plan.noise.cell_sigma;
    let layout = block_layout(plan);
    for &kk in &s.rows {
        for jj in 0..j {
            if !shared.plane_live[at.c * j + jj] {
                continue;
            }
            let first = layout.dynamic_block(at.b, at.i, kk, jj, 0);
            let row = kk * j * n + jj * n;
            let acc = &mut s.acc[jj * n..jj * n + n];
            gaussian_row(cell_addr, first, nb, &mut s.z);
            for ((a, &bw), &z) in acc.iter_mut().zip(&base[row..row + n]).zip(&s.z) {
                *a += bw + bw * sigma * z;
            }
        }
    }
}

/// Adds read noise, one draw per conversion, to the analog sums `acc`
/// `[j][n]` of the converted planes.
fn add_read_noise(
    plan: &Plan,
    shared: &Shared,
    read_addr: &Address,
    at: InputPlane,
    acc: &mut [f32],
    zr: &mut Vec<f32>,
) {
    let (n, j, nb) = (plan.n, plan.j, plan.nb());
    let layout = block_layout(plan);
    for jj in 0..j {
        if !shared.plane_live[at.c * j + jj] {
            continue;
        }
        gaussian_row(
            read_addr,
            layout.read_block(at.b, at.c, at.i, jj, 0),
            nb,
            zr,
        );
        let read = &plan.read_sd[plan.group(at.c, jj, 0)..][..n];
        for ((av, &z), &sd) in acc[jj * n..(jj + 1) * n]
            .iter_mut()
            .zip(zr.iter())
            .zip(read)
        {
            *av += sd * z;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{add_rows, CompactRows};
    use crate::model::Level;

    #[test]
    fn compact_rows_add_what_the_dense_loop_adds_bit_for_bit() {
        // Column counts with and without a short last block; digit densities
        // from empty to full, so blocks with no, some and all cells
        // conducting; digits in {-1, 0, 1}, and multi-level cells (levels
        // up to 128 in magnitude).
        let (k, j, sigma) = (3, 4, 0.05f32);
        for (n, multi) in [
            (16, false),
            (37, false),
            (256, false),
            (37, true),
            (256, true),
        ] {
            let digits: Vec<Level> = (0..j * k * n)
                .map(|v: usize| {
                    let h = (v.wrapping_mul(2_654_435_761usize) >> 7) % 8;
                    let on = match v / (k * n) {
                        0 => false,
                        1 => true,
                        2 => h < 4,
                        _ => h == 0,
                    };
                    let magnitude = if multi { 1 << (v % 8) } else { 1 };
                    if !on {
                        0
                    } else if h.is_multiple_of(2) {
                        magnitude
                    } else {
                        -magnitude
                    }
                })
                .collect();
            let cr = CompactRows::from_digits(k, j, n, &digits);
            assert_eq!(cr.levels.is_some(), multi);
            let digit = |kk: usize, jj: usize, col: usize| digits[(jj * k + kk) * n + col];
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            // All planes, and a subset (skipped planes draw nothing).
            for planes in [0b1111u32, 0b1010] {
                for kk in 0..k {
                    // Each plane's draws start a whole block (4 draws) after
                    // the last of the previous plane's.
                    let mut z = Vec::new();
                    let mut want = vec![0.125f32; j * n];
                    for jj in (0..j).filter(|jj| planes >> jj & 1 == 1) {
                        for col in 0..n {
                            let at = jj * n + col;
                            let bw = digit(kk, jj, col) as f32;
                            let zc = if bw != 0.0 {
                                z.push(z.len() as f32 * 0.37 - 2.1);
                                z[z.len() - 1]
                            } else {
                                0.0
                            };
                            want[at] += bw + bw * sigma * zc;
                        }
                        z.resize(z.len().next_multiple_of(4), 99.0);
                    }
                    let mut got = vec![0.125f32; j * n];
                    let used = cr.accumulate(kk, planes, &mut got, &z, sigma);
                    assert_eq!(used, z.len(), "n={n} row {kk}");
                    assert_eq!(bits(&got), bits(&want), "n={n} row {kk} planes {planes:b}");
                    let mut got = vec![0.125f32; j * n];
                    cr.accumulate_scalar(kk, planes, &mut got, &z, sigma);
                    assert_eq!(bits(&got), bits(&want), "scalar n={n} row {kk}");
                    #[cfg(target_arch = "x86_64")]
                    if std::arch::is_x86_feature_detected!("avx2") {
                        let mut got = vec![0.125f32; j * n];
                        // SAFETY: AVX2 is present, `accumulate` accepted
                        // these arguments above, and `levels` is there
                        // exactly for multi-level cells.
                        unsafe {
                            if multi {
                                cr.accumulate_avx2::<true>(kk, planes, &mut got, &z, sigma)
                            } else {
                                cr.accumulate_avx2::<false>(kk, planes, &mut got, &z, sigma)
                            }
                        };
                        assert_eq!(bits(&got), bits(&want), "avx2 n={n} row {kk}");
                    }
                }
            }
        }
    }

    #[test]
    fn blocked_row_sums_equal_row_by_row_sums_bit_for_bit() {
        // Small and L2-sized `g` (blocks of 64), large `g` (blocks of 256),
        // with column tails shorter than a block.
        for (k, jn) in [(3, 1), (9, 64), (72, 130), (5, 63), (40, 2048), (300, 1000)] {
            let g: Vec<f32> = (0..k * jn)
                .map(|v| ((v * 2_654_435_761usize) % 1000) as f32 * 0.001 - 0.4)
                .collect();
            let rows: Vec<usize> = (0..k).filter(|r| r % 3 != 1).collect();
            let mut want = vec![0.25f32; jn];
            for &r in &rows {
                for (a, &v) in want.iter_mut().zip(&g[r * jn..(r + 1) * jn]) {
                    *a += v;
                }
            }
            let mut got = vec![0.25f32; jn];
            add_rows(&mut got, &g, &rows);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "k={k} jn={jn}");
        }
    }
}
