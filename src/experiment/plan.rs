//! The plan: one sweep point under one mapping, flattened into the buffers
//! both engines consume. Everything that does not change between trials is
//! computed here once: planes of cell levels and their bit masks, input bit masks,
//! which conversions happen, each conversion's ADC range, exact results and
//! the cost counters.

use crate::experiment::workload::Layer;
use crate::experiment::{NoiseMode, NoiseParams, Params, Sampling};
use crate::model::energy::{add_histogram, Activity, BitsHistogram, Layout};
use crate::model::{cell_planes, Adc, AdcRange, InputCoding, Level, MappingSpec};
use std::sync::atomic::{AtomicU64, Ordering};

/// How the engines draw cell noise for a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoisePath {
    /// No cell noise: integer sums by popcount (plus leak, faults and read noise).
    Analytic,
    /// Dynamic cell noise as one Gaussian per conversion with the summed
    /// variance: exact in distribution.
    Aggregated,
    /// Static cell noise: one draw per (trial, plane, cell), reused for every read.
    PerCellStatic,
    /// Dynamic cell noise, one draw per (input, bit, plane, cell).
    PerCellDynamic,
}

impl NoisePath {
    /// The label in result files.
    pub fn label(&self) -> &'static str {
        match self {
            NoisePath::Analytic => "none",
            NoisePath::Aggregated => "aggregated",
            NoisePath::PerCellStatic | NoisePath::PerCellDynamic => "per-cell",
        }
    }
}

/// Cost of one trial (one pass of all inputs through the layer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// ADC conversions performed.
    pub conversions: u64,
    /// Cell reads with a non-zero level and input bit 1, in converted groups.
    pub active_reads: u64,
    /// (chunk, column, plane) groups skipped as all-zero.
    pub skipped_groups: u64,
    /// (input, chunk, input bit) planes skipped as all-zero.
    pub skipped_input_planes: u64,
    /// inputs x K x N x input bits x planes, before skipping.
    pub cell_macs: u64,
    /// Multiply-accumulates of the layer: inputs x K x N.
    pub macs: u64,
    /// Conversions by the bits their group's range needs, capped at the
    /// ADC's (`model::Adc::effective_bits`; an ideal ADC's are not capped).
    #[serde(default)]
    pub conversions_by_bits: BitsHistogram,
    /// Converted (chunk, column, plane) groups by the bits their range
    /// needs: the ADCs of the layer, sized (static, as `skipped_groups`).
    #[serde(default)]
    pub groups_by_bits: BitsHistogram,
    /// Zero checks skipping performs: with `skip_zero_inputs` every (input,
    /// chunk, input bit) plane is tested; with `skip_zero_planes` every
    /// group's flag is read for each converted input plane of its chunk.
    #[serde(default)]
    pub zero_checks: u64,
}

impl Counters {
    /// The counters of two passes together.
    pub fn add(&mut self, o: &Counters) {
        self.conversions += o.conversions;
        self.active_reads += o.active_reads;
        self.skipped_groups += o.skipped_groups;
        self.skipped_input_planes += o.skipped_input_planes;
        self.cell_macs += o.cell_macs;
        self.macs += o.macs;
        add_histogram(&mut self.conversions_by_bits, &o.conversions_by_bits);
        add_histogram(&mut self.groups_by_bits, &o.groups_by_bits);
        self.zero_checks += o.zero_checks;
    }

    /// What the energy models read of the counters.
    pub fn activity(&self) -> Activity {
        Activity {
            conversions: self.conversions,
            conversions_by_bits: self.conversions_by_bits,
            active_reads: self.active_reads,
            zero_checks: self.zero_checks,
            macs: self.macs,
        }
    }
}

/// One (sweep point, mapping) ready for the engines, immutable once built.
///
/// Its [`id`](Plan::id) is unique to its construction and its data can only
/// be read (through `Deref` to [`PlanData`]), so an engine that keys a cache
/// on the id can never reuse buffers built from other data: a plan with
/// other data is a new construction with a new id.
#[derive(Clone, Debug)]
pub struct Plan {
    id: u64,
    data: PlanData,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Plan {
    /// Seals `data` as a plan with a fresh id.
    fn seal(data: PlanData) -> Plan {
        Plan {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            data,
        }
    }

    /// Unique per constructed plan (clones share it, and their data).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A new plan (with a new id) that samples cell noise by `path`, for
    /// tests that run one layer through every path.
    pub fn with_path(&self, path: NoisePath) -> Plan {
        let mut data = self.data.clone();
        data.path = path;
        Plan::seal(data)
    }
}

impl std::ops::Deref for Plan {
    type Target = PlanData;
    fn deref(&self) -> &PlanData {
        &self.data
    }
}

/// What a result row needs to know of a plan beyond its statistics: small,
/// and serialisable, so partial results of a sharded run carry it and
/// `zebra merge` needs no plan (nor the layer's files).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanFacts {
    pub k: usize,
    pub n: usize,
    /// Input vectors per trial.
    pub b: usize,
    /// Planes.
    pub j: usize,
    pub chunks: usize,
    /// The noise path's label (the `sampling` column).
    pub sampling: String,
    pub exact_std: f64,
    pub counters: Counters,
    /// Non-zero level density of each plane.
    pub plane_density: Vec<f64>,
}

impl Plan {
    /// The facts of this plan a result row reports.
    pub fn facts(&self) -> PlanFacts {
        let per_plane = self.k * self.n;
        let plane_density = (0..self.j)
            .map(|j| {
                let digits = &self.digits[j * per_plane..(j + 1) * per_plane];
                digits.iter().filter(|&&d| d != 0).count() as f64 / per_plane as f64
            })
            .collect();
        PlanFacts {
            k: self.k,
            n: self.n,
            b: self.b,
            j: self.j,
            chunks: self.chunks,
            sampling: self.path.label().into(),
            exact_std: self.exact_std,
            counters: self.counters,
            plane_density,
        }
    }
}

impl PlanFacts {
    /// What the area proxy counts of this plan's layer under `mapping`.
    pub fn layout(&self, mapping: &MappingSpec) -> Layout {
        layout(self.k, self.n, self.j, self.chunks, &self.counters, mapping)
    }
}

/// Cells `K N J`, the converted groups by bits, and the zero-check units:
/// a flag per group with `skip_zero_planes`, a detector per chunk with
/// `skip_zero_inputs`.
fn layout(
    k: usize,
    n: usize,
    j: usize,
    chunks: usize,
    counters: &Counters,
    mapping: &MappingSpec,
) -> Layout {
    let flags = if mapping.skip_zero_planes {
        chunks * j * n
    } else {
        0
    };
    let detectors = if mapping.skip_zero_inputs { chunks } else { 0 };
    Layout {
        cells: (k * n * j) as u64,
        groups_by_bits: counters.groups_by_bits,
        check_units: (flags + detectors) as u64,
    }
}

/// The flat buffers of a [`Plan`], read-only through it.
#[derive(Clone, Debug)]
pub struct PlanData {
    pub k: usize,
    pub n: usize,
    /// Input vectors per trial.
    pub b: usize,
    /// Input planes: `coding.planes(input_bits)`.
    pub xbits: usize,
    /// Bits of the input values.
    pub input_bits: u32,
    /// How the array applies the inputs.
    pub coding: InputCoding,
    /// Digital weight of each input plane `[xbits]`: `coding.plane_weight`.
    pub input_weights: Vec<i64>,
    /// Planes.
    pub j: usize,
    /// Rows per chunk (design parallelism).
    pub p: usize,
    pub chunks: usize,
    /// 64-bit words per K-bit mask.
    pub words: usize,
    pub seed: u64,
    pub mapping: MappingSpec,
    pub scales: Vec<i32>,
    /// Cell levels `[j][k][n]` (digits in {-1,0,1} with one digit per cell).
    pub digits: Vec<Level>,
    /// The level a stuck-at-1 cell takes, `[j][k][n]` (see [`sa1_levels`]).
    pub sa1_digit: Vec<Level>,
    /// Input plane patterns `[b][k]`: bit `i` drives the row in input plane
    /// `i` (`coding.pattern` of the input values).
    pub x: Vec<u32>,
    /// Input bit masks `[b][i][words]`.
    pub xmask: Vec<u64>,
    /// ADC range low end per group `[c][j][n]`.
    pub lo: Vec<f32>,
    /// ADC range high end per group `[c][j][n]`.
    pub hi: Vec<f32>,
    /// Standard deviation of the read noise added to each conversion of a
    /// group `[c][j][n]`: `read_sigma`, with `fs_sigma` and `adc_sigma_lsb`
    /// (see [`read_sds`]).
    pub read_sd: Vec<f32>,
    /// Whether a group is converted `[c][j][n]`.
    pub converted: Vec<bool>,
    /// Whether an input bit plane is converted `[b][c][i]`.
    pub row_active: Vec<bool>,
    /// Exact results `[b][n]`.
    pub exact: Vec<i64>,
    /// Standard deviation of the exact results (for SNR).
    pub exact_std: f64,
    pub adc: Adc,
    pub noise: NoiseParams,
    pub path: NoisePath,
    pub counters: Counters,
}

impl NoisePath {
    /// The path a point's noise takes (see docs/MODEL.md, How the engines sample).
    pub fn of(noise: &NoiseParams) -> NoisePath {
        if noise.cell_sigma == 0.0 {
            return NoisePath::Analytic;
        }
        match (noise.mode, noise.sampling) {
            (NoiseMode::Static, _) => NoisePath::PerCellStatic,
            (NoiseMode::Dynamic, Sampling::PerCell) => NoisePath::PerCellDynamic,
            (NoiseMode::Dynamic, _) => NoisePath::Aggregated,
        }
    }
}

/// The level a stuck-at-1 cell takes, `[j][k][n]`: the largest level of
/// the weight's sign that its plane holds (`bounds` from
/// [`MappingSpec::level_bounds`]): the lowest for a negative weight where
/// the plane holds negative levels, else the highest. One digit per cell:
/// `+1`, or `sign(w)` for signed digits (`+1` for `w = 0`).
pub fn sa1_levels(w: &[i32], bounds: &[(Level, Level)]) -> Vec<Level> {
    bounds
        .iter()
        .flat_map(|&(lo, hi)| {
            w.iter()
                .map(move |&w| if w < 0 && lo < 0 { lo } else { hi })
        })
        .collect()
}

/// The ADC range of `full`: `P` times the lowest and the highest level of
/// any plane (`[0, P]` for {0,1} digits, `[-P, P]` for signed ones).
fn full_range(bounds: &[(Level, Level)], p: usize) -> (f32, f32) {
    let lo = bounds.iter().map(|b| b.0).min().unwrap_or(0);
    let hi = bounds.iter().map(|b| b.1).max().unwrap_or(0);
    (p as f32 * lo as f32, p as f32 * hi as f32)
}

/// Bit masks over K of a layer's cell levels, a pair per bit of the level
/// magnitudes: a cell of level `L` is in `pos` (`L > 0`) or `neg` (`L < 0`)
/// of every bit `b` set in `|L|`, so a masked sum of levels is `sum_b 2^b
/// (popcount(x & pos_b) - popcount(x & neg_b))`. Levels in {-1, 0, 1} have
/// one bit: the masks of the +1 and the -1 digits.
#[derive(Clone, Debug)]
pub struct LevelMasks {
    /// Bits of the largest magnitude (at least 1).
    pub bits: usize,
    /// Positive levels, `[bit][j][n][words]`.
    pub pos: Vec<u64>,
    /// Negative levels, `[bit][j][n][words]`.
    pub neg: Vec<u64>,
    /// Non-zero levels, `[j][n][words]`.
    pub nz: Vec<u64>,
    pub words: usize,
    n: usize,
    /// Words of one bit's masks, `j n words`.
    per_bit: usize,
}

impl LevelMasks {
    /// The masks of levels `[j][k][n]`.
    pub fn new(levels: &[Level], j: usize, k: usize, n: usize) -> LevelMasks {
        let words = k.div_ceil(64);
        let largest = levels.iter().map(|l| l.unsigned_abs()).max().unwrap_or(0);
        let bits = ((u16::BITS - largest.leading_zeros()) as usize).max(1);
        let per_bit = j * n * words;
        let mut m = LevelMasks {
            bits,
            pos: vec![0; bits * per_bit],
            neg: vec![0; bits * per_bit],
            nz: vec![0; per_bit],
            words,
            n,
            per_bit,
        };
        for jj in 0..j {
            for kk in 0..k {
                let row = &levels[(jj * k + kk) * n..(jj * k + kk + 1) * n];
                for (nn, &l) in row.iter().enumerate().filter(|(_, l)| **l != 0) {
                    let at = (jj * n + nn) * words + kk / 64;
                    let bit = 1u64 << (kk % 64);
                    m.nz[at] |= bit;
                    let side = if l > 0 { &mut m.pos } else { &mut m.neg };
                    let mag = l.unsigned_abs();
                    for b in (0..bits).filter(|b| mag >> b & 1 == 1) {
                        side[b * per_bit + at] |= bit;
                    }
                }
            }
        }
        m
    }

    /// Where the words of plane `jj`, column `nn` start in a bit's masks.
    #[inline(always)]
    pub fn at(&self, jj: usize, nn: usize) -> usize {
        (jj * self.n + nn) * self.words
    }

    /// The sums of the positive levels and of the negative levels' magnitudes
    /// of plane `jj`, column `nn` over the rows set in `x` within `cw`.
    pub fn signed_sums(&self, x: &[u64], jj: usize, nn: usize, cw: &[(usize, u64)]) -> (i64, i64) {
        let at = self.at(jj, nn);
        (0..self.bits).fold((0, 0), |(p, q), b| {
            let o = b * self.per_bit + at;
            let pb = popcount_and(x, &self.pos[o..o + self.words], cw) as i64;
            let nb = popcount_and(x, &self.neg[o..o + self.words], cw) as i64;
            (p + (pb << b), q + (nb << b))
        })
    }

    /// The sum of the levels of plane `jj`, column `nn` over the rows set
    /// in `x` within `cw`.
    pub fn sum(&self, x: &[u64], jj: usize, nn: usize, cw: &[(usize, u64)]) -> i64 {
        let (p, q) = self.signed_sums(x, jj, nn, cw);
        p - q
    }

    /// The non-zero levels among them.
    pub fn nonzero(&self, x: &[u64], jj: usize, nn: usize, cw: &[(usize, u64)]) -> u32 {
        let at = self.at(jj, nn);
        popcount_and(x, &self.nz[at..at + self.words], cw)
    }

    /// The sum of their squared levels: `|L|^2 = sum_(b, b') 2^(b + b')
    /// m_b m_b'` over the magnitude bits `m_b`, so a popcount per pair of bits.
    pub fn square_sum(&self, x: &[u64], jj: usize, nn: usize, cw: &[(usize, u64)]) -> i64 {
        let at = self.at(jj, nn);
        let mut total = 0i64;
        let mut mags = [0u64; u16::BITS as usize];
        for &(w, m) in cw {
            let xw = x[w] & m;
            for (b, mag) in mags[..self.bits].iter_mut().enumerate() {
                let o = b * self.per_bit + at + w;
                *mag = (self.pos[o] | self.neg[o]) & xw;
            }
            for b in 0..self.bits {
                total += (mags[b].count_ones() as i64) << (2 * b);
                for b2 in b + 1..self.bits {
                    total += ((mags[b] & mags[b2]).count_ones() as i64) << (b + b2 + 1);
                }
            }
        }
        total
    }
}

/// A layer's level masks and each chunk's words.
struct Masks {
    /// Per chunk, (word, mask) covering its rows.
    cws: Vec<Vec<(usize, u64)>>,
    levels: LevelMasks,
}

impl Masks {
    fn new(levels: &[Level], j: usize, k: usize, n: usize, p: usize) -> Masks {
        Masks {
            cws: chunk_words(k, p),
            levels: LevelMasks::new(levels, j, k, n),
        }
    }
}

/// The (chunk, plane, column) groups of a plan: which are converted, and
/// each one's ADC range `[lo, hi]`, all `[c][j][n]`.
struct Groups {
    converted: Vec<bool>,
    lo: Vec<f32>,
    hi: Vec<f32>,
    skipped: u64,
}

impl Groups {
    /// Skipping and ranges as the mapping designs them from the nominal
    /// levels (calibrated ranges are filled in by [`Groups::calibrate`]);
    /// `full` is the range of `full`.
    fn design(
        masks: &Masks,
        mapping: &MappingSpec,
        (chunks, j, n): (usize, usize, usize),
        full: (f32, f32),
    ) -> Groups {
        let count = chunks * j * n;
        let mut g = Groups {
            converted: vec![true; count],
            lo: vec![0.0; count],
            hi: vec![0.0; count],
            skipped: 0,
        };
        let all = vec![u64::MAX; masks.levels.words];
        for c in 0..chunks {
            for jj in 0..j {
                for nn in 0..n {
                    let at = (c * j + jj) * n + nn;
                    let (pos, neg) = masks.levels.signed_sums(&all, jj, nn, &masks.cws[c]);
                    if mapping.skip_zero_planes && pos + neg == 0 {
                        g.converted[at] = false;
                        g.skipped += 1;
                    }
                    (g.lo[at], g.hi[at]) = match mapping.adc_range {
                        AdcRange::Full => full,
                        AdcRange::Adaptive => (-(neg as f32), pos as f32),
                        AdcRange::Calibrated => (0.0, 0.0),
                    };
                }
            }
        }
        g
    }

    /// Sets every group of plane `j` to `[min(0, q_(1-p)), max(0, q_p)]` of
    /// that plane's clean sums (`percentile` p), at least one cell wide.
    fn calibrate(&mut self, clean: &[Vec<f32>], percentile: f64, chunks: usize, n: usize) {
        let j = clean.len();
        let q = percentile / 100.0;
        for (jj, sums) in clean.iter().enumerate() {
            let mut sums = sums.clone();
            sums.sort_by(f32::total_cmp);
            let at =
                |f: f64| sums[((f * (sums.len() - 1) as f64).round() as usize).min(sums.len() - 1)];
            let l = at(1.0 - q).min(0.0);
            let h = at(q).max(0.0).max(l + 1.0);
            for c in 0..chunks {
                for nn in 0..n {
                    self.lo[(c * j + jj) * n + nn] = l;
                    self.hi[(c * j + jj) * n + nn] = h;
                }
            }
        }
    }
}

/// Counts conversions and active reads into `counters`, and, with
/// `calibrate`, returns every plane's noise-free sums over the workload
/// (`[j][...]`; empty otherwise). `dims` is (b, chunks, xbits, j, n).
fn clean_sums(
    masks: &Masks,
    xmask: &[u64],
    row_active: &[bool],
    converted: &[bool],
    (b, chunks, xbits, j, n): (usize, usize, usize, usize, usize),
    calibrate: bool,
    counters: &mut Counters,
) -> Vec<Vec<f32>> {
    let words = masks.levels.words;
    let mut clean: Vec<Vec<f32>> = vec![Vec::new(); if calibrate { j } else { 0 }];
    for bb in 0..b {
        for c in 0..chunks {
            for i in 0..xbits {
                let xm = &xmask[(bb * xbits + i) * words..(bb * xbits + i + 1) * words];
                let active = row_active[(bb * chunks + c) * xbits + i];
                let cw = &masks.cws[c];
                for jj in 0..j {
                    for nn in 0..n {
                        if active && converted[(c * j + jj) * n + nn] {
                            counters.conversions += 1;
                            counters.active_reads += masks.levels.nonzero(xm, jj, nn, cw) as u64;
                        }
                        if calibrate {
                            clean[jj].push(masks.levels.sum(xm, jj, nn, cw) as f32);
                        }
                    }
                }
            }
        }
    }
    clean
}

/// Each chunk's converted groups by the bits their conversions need,
/// `[c][bits]`, from the groups' ranges `[c][j][n]`.
fn chunk_bits(
    converted: &[bool],
    lo: &[f32],
    hi: &[f32],
    adc: Adc,
    chunks: usize,
) -> Vec<BitsHistogram> {
    let per_chunk = converted.len() / chunks.max(1);
    (0..chunks)
        .map(|c| {
            let mut h: BitsHistogram = Default::default();
            for g in c * per_chunk..(c + 1) * per_chunk {
                if converted[g] {
                    h[adc.effective_bits(lo[g], hi[g]) as usize] += 1;
                }
            }
            h
        })
        .collect()
}

/// Counts into `counters` the conversions by bits of the input planes
/// `row_active` `[b][c][i]` (each converts its chunk's groups, `by_chunk`
/// from [`chunk_bits`]), the groups by bits, and the zero checks `mapping`
/// performs.
fn count_bits_and_checks(
    row_active: &[bool],
    by_chunk: &[BitsHistogram],
    xbits: usize,
    groups_per_chunk: usize,
    mapping: &MappingSpec,
    counters: &mut Counters,
) {
    let chunks = by_chunk.len();
    for (r, _) in row_active.iter().enumerate().filter(|(_, a)| **a) {
        let h = &by_chunk[(r / xbits) % chunks];
        for (total, n) in counters.conversions_by_bits.iter_mut().zip(h) {
            *total += n;
        }
        if mapping.skip_zero_planes {
            counters.zero_checks += groups_per_chunk as u64;
        }
    }
    if mapping.skip_zero_inputs {
        counters.zero_checks += row_active.len() as u64;
    }
    for h in by_chunk {
        for (total, n) in counters.groups_by_bits.iter_mut().zip(h) {
            *total += n;
        }
    }
}

/// Per-chunk list of (word index, mask) covering its rows.
pub fn chunk_words(k: usize, p: usize) -> Vec<Vec<(usize, u64)>> {
    let chunks = k.div_ceil(p);
    (0..chunks)
        .map(|c| {
            let (start, end) = (c * p, ((c + 1) * p).min(k));
            let mut out = Vec::new();
            let mut row = start;
            while row < end {
                let w = row / 64;
                let hi = end.min((w + 1) * 64);
                let bits = hi - row;
                let mask = if bits == 64 {
                    u64::MAX
                } else {
                    ((1u64 << bits) - 1) << (row % 64)
                };
                out.push((w, mask));
                row = hi;
            }
            out
        })
        .collect()
}

/// Masked popcount of `a & b` over a chunk's words.
#[inline(always)]
pub fn popcount_and(a: &[u64], b: &[u64], cw: &[(usize, u64)]) -> u32 {
    cw.iter()
        .map(|&(w, m)| (a[w] & b[w] & m).count_ones())
        .sum()
}

/// The plane patterns of input values `x` under `coding` (see
/// [`InputCoding::pattern`]).
pub fn input_patterns(coding: InputCoding, bits: u32, x: &[i32]) -> Vec<u32> {
    use rayon::prelude::*;
    x.par_iter().map(|&v| coding.pattern(bits, v)).collect()
}

/// Input bit masks `[b][i][words]` of input plane patterns `x` `[b][k]`.
pub fn input_masks(x: &[u32], k: usize, xbits: usize) -> Vec<u64> {
    use rayon::prelude::*;
    let words = k.div_ceil(64);
    let b = x.len() / k.max(1);
    let mut xmask = vec![0u64; b * xbits * words];
    xmask
        .par_chunks_mut(xbits * words)
        .zip(x.par_chunks(k))
        .for_each(|(m, xs)| {
            // Branch-free: each element's bits go to every plane's word
            // (input bits are random, so a loop over set bits mispredicts).
            for (w, chunk) in xs.chunks(64).enumerate() {
                for i in 0..xbits {
                    let mut word = 0u64;
                    for (l, &v) in chunk.iter().enumerate() {
                        word |= (((v >> i) & 1) as u64) << l;
                    }
                    m[i * words + w] = word;
                }
            }
        });
    xmask
}

/// Whether each (input, chunk, input bit) plane is converted `[b][c][i]`:
/// with `skip`, planes whose input bits are all zero in the chunk are not.
pub fn active_rows(
    xmask: &[u64],
    b: usize,
    k: usize,
    p: usize,
    xbits: usize,
    skip: bool,
) -> Vec<bool> {
    use rayon::prelude::*;
    let (chunks, words) = (k.div_ceil(p), k.div_ceil(64));
    let mut row_active = vec![true; b * chunks * xbits];
    if skip {
        let cws = chunk_words(k, p);
        row_active
            .par_chunks_mut(chunks * xbits)
            .zip(xmask.par_chunks(xbits * words))
            .for_each(|(active, xm)| {
                for (c, cw) in cws.iter().enumerate() {
                    for i in 0..xbits {
                        let xi = &xm[i * words..(i + 1) * words];
                        active[c * xbits + i] = cw.iter().any(|&(w, m)| xi[w] & m != 0);
                    }
                }
            });
    }
    row_active
}

/// Each group's read-noise standard deviation: one Gaussian per conversion
/// with variance `read_sigma^2 + (fs_sigma (hi - lo))^2 + (adc_sigma_lsb
/// step)^2` (cell units; `step` is the group's ADC step). Without the last
/// two it is `read_sigma` itself, bit for bit.
pub fn read_sds(noise: &NoiseParams, adc_bits: Option<u32>, lo: &[f32], hi: &[f32]) -> Vec<f32> {
    if noise.fs_sigma == 0.0 && noise.adc_sigma_lsb == 0.0 {
        return vec![noise.read_sigma; lo.len()];
    }
    lo.iter()
        .zip(hi)
        .map(|(&l, &h)| {
            let fs = noise.fs_sigma * (h - l);
            let lsb = adc_bits.map_or(0.0, |b| noise.adc_sigma_lsb * Adc::step(l, h, Adc::top(b)));
            (noise.read_sigma * noise.read_sigma + fs * fs + lsb * lsb).sqrt()
        })
        .collect()
}

/// Population standard deviation.
fn std_dev(v: &[i64]) -> f64 {
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64;
    (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

impl Plan {
    /// Builds the plan of one mapping at one sweep point.
    ///
    /// # Panics
    /// If the mapping cannot hold the layer's weights (a term-slots weight
    /// with more terms than slots): callers refuse such input first, with
    /// [`Layer::check_mapping`].
    pub fn new(params: &Params, layer: &Layer, mapping: &MappingSpec) -> Plan {
        let (k, n, b) = (layer.k, layer.n, layer.inputs);
        let coding = layer.coding;
        let xbits = coding.planes(layer.input_bits);
        let x = input_patterns(coding, layer.input_bits, &layer.x);
        let planes = cell_planes(mapping, layer.weight_bits, &layer.w, k, n)
            .unwrap_or_else(|e| panic!("mapping `{}`: {e}", mapping.name));
        let bounds = mapping.level_bounds(layer.weight_bits);
        let j = planes.count();
        let p = params.parallelism;
        let chunks = k.div_ceil(p);
        let words = k.div_ceil(64);
        let masks = Masks::new(&planes.digits, j, k, n, p);
        let xmask = input_masks(&x, k, xbits);
        let full = full_range(&bounds, p);
        let mut groups = Groups::design(&masks, mapping, (chunks, j, n), full);
        let row_active = active_rows(&xmask, b, k, p, xbits, mapping.skip_zero_inputs);
        let mut counters = Counters {
            skipped_groups: groups.skipped,
            skipped_input_planes: row_active.iter().filter(|a| !**a).count() as u64,
            macs: (b * k * n) as u64,
            cell_macs: (b * k * n * xbits * j) as u64,
            ..Counters::default()
        };
        let calibrate = mapping.adc_range == AdcRange::Calibrated;
        let clean = clean_sums(
            &masks,
            &xmask,
            &row_active,
            &groups.converted,
            (b, chunks, xbits, j, n),
            calibrate,
            &mut counters,
        );
        if calibrate {
            groups.calibrate(&clean, params.calibrate_percentile, chunks, n);
        }
        let adc = Adc {
            bits: params.adc_bits,
        };
        let by_chunk = chunk_bits(&groups.converted, &groups.lo, &groups.hi, adc, chunks);
        count_bits_and_checks(&row_active, &by_chunk, xbits, j * n, mapping, &mut counters);
        debug_assert_eq!(
            counters.conversions_by_bits.iter().sum::<u64>(),
            counters.conversions
        );
        let exact = layer.exact();
        let exact_std = std_dev(&exact);
        Plan::seal(PlanData {
            k,
            n,
            b,
            xbits,
            input_bits: layer.input_bits,
            coding,
            input_weights: coding.plane_weights(layer.input_bits),
            j,
            p,
            chunks,
            words,
            seed: params.seed,
            mapping: mapping.clone(),
            scales: planes.scales,
            digits: planes.digits,
            sa1_digit: sa1_levels(&layer.w, &bounds),
            x,
            xmask,
            read_sd: read_sds(&params.noise, params.adc_bits, &groups.lo, &groups.hi),
            lo: groups.lo,
            hi: groups.hi,
            converted: groups.converted,
            row_active,
            exact,
            exact_std,
            adc,
            noise: params.noise,
            path: NoisePath::of(&params.noise),
            counters,
        })
    }

    /// The same arrays (weights, mapping, ADC ranges, noise, seed, input
    /// coding) driven by other input values `x` `[b][k]`: what a network
    /// layer sees on each pass.
    /// ADC ranges stay as built (calibrated ranges keep their calibration
    /// inputs); the cost counters count conversions (by bits) and zero
    /// checks but not active reads.
    /// The exact product is not computed (`exact` is empty): such a plan is
    /// for [`Engine::outputs`](crate::engine::Engine::outputs), which does
    /// not need it, not for error statistics.
    pub fn with_inputs(&self, x: Vec<i32>) -> Plan {
        let (k, n, j) = (self.k, self.n, self.j);
        let b = x.len() / k;
        assert_eq!(b * k, x.len(), "inputs must be whole vectors of K");
        let x = input_patterns(self.coding, self.input_bits, &x);
        let xmask = input_masks(&x, k, self.xbits);
        let row_active = active_rows(
            &xmask,
            b,
            k,
            self.p,
            self.xbits,
            self.mapping.skip_zero_inputs,
        );
        let per_chunk: Vec<u64> = (0..self.chunks)
            .map(|c| {
                self.converted[c * j * n..(c + 1) * j * n]
                    .iter()
                    .filter(|v| **v)
                    .count() as u64
            })
            .collect();
        let mut counters = Counters {
            skipped_groups: self.counters.skipped_groups,
            macs: (b * k * n) as u64,
            ..Counters::default()
        };
        counters.cell_macs = counters.macs * (self.xbits * j) as u64;
        for (r, &a) in row_active.iter().enumerate() {
            if a {
                counters.conversions += per_chunk[(r / self.xbits) % self.chunks];
            } else {
                counters.skipped_input_planes += 1;
            }
        }
        let by_chunk = chunk_bits(&self.converted, &self.lo, &self.hi, self.adc, self.chunks);
        count_bits_and_checks(
            &row_active,
            &by_chunk,
            self.xbits,
            j * n,
            &self.mapping,
            &mut counters,
        );
        // Field by field rather than `..self.clone()`: the template's own
        // inputs (calibration images) can be large and are not carried.
        Plan::seal(PlanData {
            k,
            n,
            b,
            xbits: self.xbits,
            input_bits: self.input_bits,
            coding: self.coding,
            input_weights: self.input_weights.clone(),
            j,
            p: self.p,
            chunks: self.chunks,
            words: self.words,
            seed: self.seed,
            mapping: self.mapping.clone(),
            scales: self.scales.clone(),
            digits: self.digits.clone(),
            sa1_digit: self.sa1_digit.clone(),
            x,
            xmask,
            lo: self.lo.clone(),
            hi: self.hi.clone(),
            read_sd: self.read_sd.clone(),
            converted: self.converted.clone(),
            row_active,
            exact: Vec::new(),
            exact_std: 0.0,
            adc: self.adc,
            noise: self.noise,
            path: self.path,
            counters,
        })
    }

    /// Cell reads with a non-zero digit and input bit 1 in converted groups,
    /// over this plan's inputs: the counter [`Plan::with_inputs`] leaves
    /// out, at the cost of one pass of popcounts.
    pub fn active_reads(&self) -> u64 {
        use rayon::prelude::*;
        let (k, n, j, p) = (self.k, self.n, self.j, self.p);
        // Each row's non-zero cells in the converted groups of its chunk:
        // a driven row reads them all.
        let mut cells = vec![0u64; k];
        for jj in 0..j {
            for (kk, c) in cells.iter_mut().enumerate() {
                let groups = &self.converted[((kk / p) * j + jj) * n..][..n];
                let levels = &self.digits[(jj * k + kk) * n..][..n];
                *c += groups
                    .iter()
                    .zip(levels)
                    .filter(|(&g, &l)| g && l != 0)
                    .count() as u64;
            }
        }
        let (words, xbits) = (self.words, self.xbits);
        (0..self.b)
            .into_par_iter()
            .map(|bb| {
                let mut reads = 0u64;
                for i in 0..xbits {
                    let xm = &self.xmask[(bb * xbits + i) * words..][..words];
                    for (w, &word) in xm.iter().enumerate() {
                        let mut bits = word;
                        while bits != 0 {
                            let kk = w * 64 + bits.trailing_zeros() as usize;
                            bits &= bits - 1;
                            if self.row_active[(bb * self.chunks + kk / p) * xbits + i] {
                                reads += cells[kk];
                            }
                        }
                    }
                }
                reads
            })
            .sum()
    }

    /// What the area proxy counts of this plan's layer.
    pub fn layout(&self) -> Layout {
        layout(
            self.k,
            self.n,
            self.j,
            self.chunks,
            &self.counters,
            &self.mapping,
        )
    }

    /// Blocks of four draws per row of N columns.
    pub fn nb(&self) -> usize {
        self.n.div_ceil(4)
    }

    /// Whether stuck-at faults are drawn.
    /// Whether conversions draw read noise (`read_sigma`, `fs_sigma` or
    /// `adc_sigma_lsb`).
    pub fn has_read_noise(&self) -> bool {
        let n = &self.noise;
        n.read_sigma > 0.0 || n.fs_sigma > 0.0 || n.adc_sigma_lsb > 0.0
    }

    pub fn has_faults(&self) -> bool {
        self.noise.p_sa0 > 0.0 || self.noise.p_sa1 > 0.0
    }

    /// Whether every trial computes the same outputs: no cell noise, read
    /// noise or faults, so nothing is drawn.
    pub fn trial_invariant(&self) -> bool {
        self.path == NoisePath::Analytic && !self.has_read_noise() && !self.has_faults()
    }

    /// Whether dynamic per-cell draws are compact: with no leak and no faults
    /// only cells with a non-zero digit conduct, so only they draw.
    pub fn compact_draws(&self) -> bool {
        self.path == NoisePath::PerCellDynamic && self.noise.leak == 0.0 && !self.has_faults()
    }

    /// Which Gaussian of its (input, bit, row, plane) row each cell's
    /// dynamic draw is, `[j][k][n]`: the cell's rank among the row's
    /// conducting cells when draws are compact, else its column.
    pub fn draw_rank(&self) -> Vec<u32> {
        let compact = self.compact_draws();
        let mut rank = vec![0u32; self.digits.len()];
        for (row, digits) in self.digits.chunks(self.n).enumerate() {
            let mut t = 0u32;
            for (col, &d) in digits.iter().enumerate() {
                rank[row * self.n + col] = if compact { t } else { col as u32 };
                t += (d != 0) as u32;
            }
        }
        rank
    }

    /// Group index `[c][j][n]`.
    #[inline(always)]
    pub fn group(&self, c: usize, j: usize, n: usize) -> usize {
        (c * self.j + j) * self.n + n
    }
}

#[cfg(test)]
mod tests {
    use super::{input_masks, read_sds};
    use crate::experiment::{NoiseMode, NoiseParams, Sampling};

    /// Read noise, full-scale noise and ADC noise add in quadrature; by hand.
    #[test]
    fn read_noise_per_group_by_hand() {
        let noise = NoiseParams {
            cell_sigma: 0.0,
            mode: NoiseMode::Static,
            read_sigma: 0.3,
            fs_sigma: 0.01,
            adc_sigma_lsb: 0.5,
            leak: 0.0,
            p_sa0: 0.0,
            p_sa1: 0.0,
            sampling: Sampling::Auto,
        };
        // A 4-bit ADC (15 steps): range 60 has step 4, range 9 has step 1.
        let sd = read_sds(&noise, Some(4), &[-10.0, 0.0], &[50.0, 9.0]);
        let want = [
            (0.09f64 + 0.36 + 4.0).sqrt(),    // 0.3, 0.01 x 60, 0.5 x 4
            (0.09f64 + 0.0081 + 0.25).sqrt(), // 0.3, 0.01 x 9, 0.5 x 1
        ];
        for (s, w) in sd.iter().zip(want) {
            assert!((*s as f64 - w).abs() < 1e-6, "{s} vs {w}");
        }
        // Without the two conventions it is read_sigma itself, bit for bit.
        let plain = NoiseParams {
            fs_sigma: 0.0,
            adc_sigma_lsb: 0.0,
            ..noise
        };
        assert_eq!(read_sds(&plain, Some(4), &[-10.0], &[50.0]), vec![0.3f32]);
    }

    #[test]
    fn input_masks_hold_each_bit_of_each_input() {
        for (k, xbits) in [(1usize, 1usize), (9, 8), (64, 8), (65, 3), (200, 7)] {
            let b = 3;
            // Values with bits above `xbits` too, which the masks ignore.
            let x: Vec<u32> = (0..b * k)
                .map(|v| ((v as u32).wrapping_mul(2_654_435_761) >> 7) & 0x3FF)
                .collect();
            let words = k.div_ceil(64);
            let m = input_masks(&x, k, xbits);
            assert_eq!(m.len(), b * xbits * words);
            for bb in 0..b {
                for i in 0..xbits {
                    for kk in 0..k {
                        let bit = m[(bb * xbits + i) * words + kk / 64] >> (kk % 64) & 1;
                        assert_eq!(
                            bit,
                            (x[bb * k + kk] >> i) as u64 & 1,
                            "k={k} b={bb} i={i} kk={kk}"
                        );
                    }
                    // No bits beyond K.
                    if k % 64 != 0 {
                        assert_eq!(m[(bb * xbits + i) * words + words - 1] >> (k % 64), 0);
                    }
                }
            }
        }
    }
}
