//! Streamed error statistics: per-trial moments and a fixed log-binned
//! histogram of signed errors, merged in trial order so results never depend
//! on thread count.

use crate::experiment::plan::{Counters, PlanFacts};

/// Errors below this magnitude fall in the zero bin.
pub const HIST_MIN: f64 = 1e-3;
/// Fine bins per decade of |e| (quantiles are read from these: +-1.2%).
pub const BINS_PER_DECADE: usize = 100;
/// Decades covered above `HIST_MIN` (up to 1e8); larger errors land in the last bin.
pub const DECADES: usize = 11;
/// Bins on each side of zero.
pub const SIDE: usize = BINS_PER_DECADE * DECADES;
/// Total bins: negative side, zero bin, positive side.
pub const BINS: usize = 2 * SIDE + 1;

/// Sums over one trial's errors.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrialMoments {
    pub sum: f64,
    pub sumsq: f64,
    pub max_abs: f64,
}

/// Fine-bin index of an error.
#[inline]
pub fn bin_of(e: f64) -> usize {
    let a = e.abs();
    if a < HIST_MIN {
        return SIDE;
    }
    let off = (((a / HIST_MIN).log10() * BINS_PER_DECADE as f64) as usize).min(SIDE - 1);
    if e > 0.0 {
        SIDE + 1 + off
    } else {
        SIDE - 1 - off
    }
}

/// Signed edges `[lo, hi)` of fine bin `i` (the zero bin spans +-HIST_MIN).
pub fn bin_edges(i: usize) -> (f64, f64) {
    let edge = |off: usize| HIST_MIN * 10f64.powf(off as f64 / BINS_PER_DECADE as f64);
    match i.cmp(&SIDE) {
        std::cmp::Ordering::Equal => (-HIST_MIN, HIST_MIN),
        std::cmp::Ordering::Greater => (edge(i - SIDE - 1), edge(i - SIDE)),
        std::cmp::Ordering::Less => (-edge(SIDE - i), -edge(SIDE - 1 - i)),
    }
}

/// What an engine returns for a range of trials.
#[derive(Clone, Debug)]
pub struct Batch {
    pub first_trial: u32,
    /// One entry per trial, in trial order.
    pub trials: Vec<TrialMoments>,
    /// Fine-bin counts, `BINS` long.
    pub hist: Vec<u64>,
    /// Raw errors `[trial][b][n]` when asked for.
    pub raw: Option<Vec<f32>>,
}

impl Batch {
    /// An empty batch starting at `first_trial`.
    pub fn empty(first_trial: u32) -> Batch {
        Batch {
            first_trial,
            trials: Vec::new(),
            hist: vec![0; BINS],
            raw: None,
        }
    }
}

/// Folds one trial's errors `y - exact` into the histogram; returns its moments.
pub fn accumulate_trial(
    y: &[f64],
    exact: &[i64],
    hist: &mut [u64],
    raw: Option<&mut Vec<f32>>,
) -> TrialMoments {
    let mut m = TrialMoments::default();
    let mut raw = raw;
    for (&yv, &ex) in y.iter().zip(exact) {
        let e = yv - ex as f64;
        m.sum += e;
        m.sumsq += e * e;
        m.max_abs = m.max_abs.max(e.abs());
        hist[bin_of(e)] += 1;
        if let Some(r) = raw.as_deref_mut() {
            r.push(e as f32);
        }
    }
    m
}

/// The metrics of one (sweep point, mapping).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub trials: u32,
    pub samples: u64,
    pub bias: f64,
    pub std: f64,
    pub rmse: f64,
    pub max_abs: f64,
    pub p50_abs: f64,
    pub p90_abs: f64,
    pub p99_abs: f64,
    pub p999_abs: f64,
    pub snr_db: f64,
    pub trial_rmse_mean: f64,
    pub trial_rmse_std: f64,
    pub trial_rmse_p5: f64,
    pub trial_rmse_p50: f64,
    pub trial_rmse_p95: f64,
    pub counters: Counters,
}

/// Trials whose sums of squares an [`Accumulator`] keeps in memory (256
/// KiB); beyond, they go to a temporary file, so memory stays bounded
/// however many trials a point has.
pub const KEPT_TRIALS: usize = 1 << 15;

/// Accumulates batches of one (point, mapping) in trial order, from trial
/// `first` on. Everything it holds is exact (sums folded trial by trial,
/// each trial's sum of squares, bin counts), so feeding it consecutive
/// trial ranges in order equals feeding it the whole range: the basis of
/// sharded runs.
#[derive(Debug)]
pub struct Accumulator {
    /// The first trial.
    pub first: u32,
    count: u32,
    sum: f64,
    sumsq: f64,
    max_abs: f64,
    /// Each trial's sum of squares, for the trial-RMSE mean, spread and
    /// exact percentiles.
    per_trial: TrialValues,
    pub hist: Vec<u64>,
}

impl Default for Accumulator {
    fn default() -> Self {
        Accumulator::starting_at(0)
    }
}

impl Accumulator {
    /// An empty accumulator whose first batch starts at trial `first`.
    pub fn starting_at(first: u32) -> Self {
        Accumulator::keeping(first, KEPT_TRIALS)
    }

    /// As [`Accumulator::starting_at`], keeping at most `kept` trials'
    /// values in memory (tests spill small runs with it).
    pub fn keeping(first: u32, kept: usize) -> Self {
        Accumulator {
            first,
            count: 0,
            sum: 0.0,
            sumsq: 0.0,
            max_abs: 0.0,
            per_trial: TrialValues::new(kept),
            hist: vec![0; BINS],
        }
    }

    /// The trial after the last one added.
    pub fn end(&self) -> u32 {
        self.first + self.count
    }

    /// Adds the next trial's moments.
    pub fn push(&mut self, t: TrialMoments) -> std::io::Result<()> {
        self.sum += t.sum;
        self.sumsq += t.sumsq;
        self.max_abs = self.max_abs.max(t.max_abs);
        self.count += 1;
        self.per_trial.push(t.sumsq)
    }

    /// Adds a batch; batches must arrive in trial order.
    pub fn add(&mut self, batch: &Batch) -> std::io::Result<()> {
        assert_eq!(batch.first_trial, self.end(), "batches out of order");
        for &t in &batch.trials {
            self.push(t)?;
        }
        for (a, b) in self.hist.iter_mut().zip(&batch.hist) {
            *a += b;
        }
        Ok(())
    }

    /// Final metrics. The trial-RMSE percentiles are order statistics of
    /// every trial's RMSE, selected exactly (sorted in memory, or by
    /// passes over the temporary file).
    pub fn summary(&self, plan: &PlanFacts) -> std::io::Result<Summary> {
        let per_trial = (plan.b * plan.n) as f64;
        let n = self.count as usize;
        let samples = per_trial * n as f64;
        let (sum, sumsq, max_abs) = (self.sum, self.sumsq, self.max_abs);
        let bias = sum / samples;
        let mse = sumsq / samples;
        let rmse = mse.sqrt();
        let std = (mse - bias * bias).max(0.0).sqrt();
        let snr_db = if rmse > 0.0 {
            20.0 * (plan.exact_std / rmse).log10()
        } else {
            f64::INFINITY
        };
        let rms = |s: f64| (s / per_trial).sqrt();
        // Two passes in trial order, as over a list of every trial's RMSE.
        let mut total = 0.0;
        self.per_trial.for_each(&mut |s| total += rms(s))?;
        let rm_mean = total / n as f64;
        let mut spread = 0.0;
        self.per_trial
            .for_each(&mut |s| spread += (rms(s) - rm_mean).powi(2))?;
        let rm_std = (spread / n as f64).sqrt();
        let rank = |q: f64| ((q * (n - 1) as f64).round() as usize).min(n - 1);
        let ranks = [rank(0.05), rank(0.5), rank(0.95)];
        let [p5, p50, p95] = self.per_trial.order_statistics(rms, ranks)?;
        let abs_hist = abs_histogram(&self.hist);
        let total: u64 = abs_hist.iter().sum();
        let quant = |q: f64| abs_quantile(&abs_hist, total, q).min(max_abs);
        Ok(Summary {
            trials: self.count,
            samples: samples as u64,
            bias,
            std,
            rmse,
            max_abs,
            p50_abs: quant(0.5),
            p90_abs: quant(0.9),
            p99_abs: quant(0.99),
            p999_abs: quant(0.999),
            snr_db,
            trial_rmse_mean: rm_mean,
            trial_rmse_std: rm_std,
            trial_rmse_p5: p5,
            trial_rmse_p50: p50,
            trial_rmse_p95: p95,
            counters: plan.counters,
        })
    }
}

/// One value per trial, in trial order: in memory up to `kept` values,
/// then appended to an anonymous temporary file (in the system's temporary
/// folder, `TMPDIR`) in blocks of `kept`.
#[derive(Debug)]
struct TrialValues {
    kept: usize,
    /// The values not yet in the file.
    mem: Vec<f64>,
    file: Option<std::fs::File>,
    /// Values in the file.
    spilled: usize,
}

/// Values read back from the file at a time.
const READ_BLOCK: usize = 8192;

impl TrialValues {
    fn new(kept: usize) -> Self {
        TrialValues {
            kept: kept.max(1),
            mem: Vec::new(),
            file: None,
            spilled: 0,
        }
    }

    fn push(&mut self, v: f64) -> std::io::Result<()> {
        self.mem.push(v);
        if self.mem.len() >= self.kept {
            use std::io::{Seek, Write};
            let file = match &mut self.file {
                Some(f) => f,
                None => self.file.insert(tempfile::tempfile()?),
            };
            // Reads move the cursor: append at the end.
            file.seek(std::io::SeekFrom::End(0))?;
            file.write_all(bytemuck::cast_slice(&self.mem))?;
            self.spilled += self.mem.len();
            self.mem.clear();
        }
        Ok(())
    }

    /// Calls `f` on every value, in order.
    fn for_each(&self, f: &mut dyn FnMut(f64)) -> std::io::Result<()> {
        if let Some(file) = &self.file {
            use std::io::{Read, Seek};
            let mut file = file;
            file.seek(std::io::SeekFrom::Start(0))?;
            let mut block = vec![0f64; READ_BLOCK];
            let mut left = self.spilled;
            while left > 0 {
                let part = &mut block[..left.min(READ_BLOCK)];
                file.read_exact(bytemuck::cast_slice_mut(part))?;
                part.iter().for_each(|&v| f(v));
                left -= part.len();
            }
        }
        self.mem.iter().for_each(|&v| f(v));
        Ok(())
    }

    /// The values of `g` (non-decreasing) at the values of ranks `ranks`
    /// (from 0) in `f64::total_cmp` order. In memory: a sort. From the
    /// file: a radix selection on the ordered bits of `g(v)`, 16 bits a
    /// pass, so four passes and a 65,536-bin histogram per rank.
    fn order_statistics<const R: usize>(
        &self,
        g: impl Fn(f64) -> f64,
        ranks: [usize; R],
    ) -> std::io::Result<[f64; R]> {
        if self.file.is_none() {
            let mut v: Vec<f64> = self.mem.iter().map(|&s| g(s)).collect();
            v.sort_by(f64::total_cmp);
            return Ok(ranks.map(|r| v[r]));
        }
        let mut out = [0.0; R];
        let mut counts = vec![0u32; 1 << 16];
        for (o, &rank) in out.iter_mut().zip(&ranks) {
            let (mut prefix, mut rank) = (0u64, rank as u64);
            for pass in 0..4 {
                let shift = 48 - 16 * pass;
                counts.fill(0);
                self.for_each(&mut |s| {
                    let key = order_key(g(s));
                    // The bits above this pass's must match those chosen so far.
                    if pass == 0 || key >> (shift + 16) == prefix {
                        counts[((key >> shift) & 0xffff) as usize] += 1;
                    }
                })?;
                let mut digit = 0;
                for (d, &c) in counts.iter().enumerate() {
                    if rank < c as u64 {
                        digit = d as u64;
                        break;
                    }
                    rank -= c as u64;
                }
                prefix = (prefix << 16) | digit;
            }
            *o = from_order_key(prefix);
        }
        Ok(out)
    }
}

/// The bits of `x` as an unsigned key in `f64::total_cmp` order.
fn order_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | 1 << 63
    }
}

/// The inverse of [`order_key`].
fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// |e| histogram: index 0 is the zero bin, then `SIDE` log bins.
fn abs_histogram(hist: &[u64]) -> Vec<u64> {
    let mut out = vec![0u64; SIDE + 1];
    out[0] = hist[SIDE];
    for off in 0..SIDE {
        out[off + 1] = hist[SIDE + 1 + off] + hist[SIDE - 1 - off];
    }
    out
}

/// The q-quantile of |e|, at the geometric centre of its bin.
fn abs_quantile(abs_hist: &[u64], total: u64, q: f64) -> f64 {
    let target = (q * total as f64).ceil().max(1.0) as u64;
    let mut cum = 0;
    for (i, &c) in abs_hist.iter().enumerate() {
        cum += c;
        if cum >= target {
            if i == 0 {
                return 0.0;
            }
            let off = (i - 1) as f64 + 0.5;
            return HIST_MIN * 10f64.powf(off / BINS_PER_DECADE as f64);
        }
    }
    0.0
}

/// Coarse histogram rows `(lo, hi, count)` for output: fine bins merged by
/// `merge` (must divide `BINS_PER_DECADE`), empty bins left out.
pub fn coarse_rows(hist: &[u64], merge: usize) -> Vec<(f64, f64, u64)> {
    assert!(BINS_PER_DECADE.is_multiple_of(merge));
    let mut rows = Vec::new();
    // Negative side, from most negative up.
    for g in (0..SIDE / merge).rev() {
        let (a, b) = (SIDE - 1 - (g * merge + merge - 1), SIDE - 1 - g * merge);
        let count: u64 = hist[a..=b].iter().sum();
        if count > 0 {
            rows.push((bin_edges(a).0, bin_edges(b).1, count));
        }
    }
    if hist[SIDE] > 0 {
        rows.push((-HIST_MIN, HIST_MIN, hist[SIDE]));
    }
    for g in 0..SIDE / merge {
        let (a, b) = (SIDE + 1 + g * merge, SIDE + g * merge + merge);
        let count: u64 = hist[a..=b].iter().sum();
        if count > 0 {
            rows.push((bin_edges(a).0, bin_edges(b).1, count));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_consistent_with_edges() {
        for &e in &[-3.7e5, -1.0, -0.0011, 0.0, 0.0005, 0.002, 1.0, 17.5, 9.9e7] {
            // Bins are [lo, hi) in |e|, mirrored for negative errors.
            let (lo, hi) = bin_edges(bin_of(e));
            let (small, large) = if e < 0.0 { (-hi, -lo) } else { (lo, hi) };
            let a = if bin_of(e) == SIDE { 0.0 } else { e.abs() };
            assert!(
                a >= small.max(0.0) * (1.0 - 1e-12) && a < large,
                "{e} not in bin [{lo}, {hi})"
            );
        }
    }

    #[test]
    fn quantile_of_known_errors() {
        let mut hist = vec![0u64; BINS];
        for i in 1..=1000 {
            hist[bin_of(if i % 2 == 0 { i as f64 } else { -(i as f64) })] += 1;
        }
        let abs = abs_histogram(&hist);
        let p50 = abs_quantile(&abs, 1000, 0.5);
        assert!((p50 / 500.0 - 1.0).abs() < 0.012, "p50 {p50}");
        let rows = coarse_rows(&hist, 5);
        assert_eq!(rows.iter().map(|r| r.2).sum::<u64>(), 1000);
        assert!(rows.windows(2).all(|w| w[0].1 <= w[1].0 + 1e-9));
    }

    #[test]
    fn order_keys_sort_as_total_cmp_and_invert() {
        let mut v = vec![
            -f64::INFINITY,
            -3.5,
            -1e-300,
            -0.0,
            0.0,
            5e-324,
            1.0,
            1.0 + f64::EPSILON,
            f64::INFINITY,
            f64::NAN,
        ];
        v.sort_by(f64::total_cmp);
        for w in v.windows(2) {
            assert!(order_key(w[0]) < order_key(w[1]), "{} !< {}", w[0], w[1]);
        }
        for x in v {
            assert_eq!(from_order_key(order_key(x)).to_bits(), x.to_bits());
        }
    }

    /// The trial-RMSE statistics are the same, bit for bit, whether the
    /// per-trial values stay in memory or are spilled and selected by
    /// passes over the file (ties, zeros and a wide range included).
    #[test]
    fn spilled_trials_give_the_summary_of_kept_ones() {
        let facts = PlanFacts {
            k: 8,
            n: 3,
            b: 2,
            j: 1,
            chunks: 1,
            sampling: "test".into(),
            exact_std: 10.0,
            counters: Counters::default(),
            plane_density: vec![0.5],
        };
        let mut x = 0x9e3779b97f4a7c15u64;
        let moments: Vec<TrialMoments> = (0..1001)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let sumsq = match i % 7 {
                    0 => 0.0,
                    1 => 4.0,
                    _ => (x >> 11) as f64 / (1u64 << 53) as f64 * 10f64.powi((i % 9) - 4),
                };
                TrialMoments {
                    sum: (x % 1000) as f64 - 500.0,
                    sumsq,
                    max_abs: (x % 77) as f64,
                }
            })
            .collect();
        let summary = |kept: usize| {
            let mut acc = Accumulator::keeping(0, kept);
            for chunk in moments.chunks(100) {
                let first = acc.end();
                acc.add(&Batch {
                    first_trial: first,
                    trials: chunk.to_vec(),
                    hist: vec![1; BINS],
                    raw: None,
                })
                .unwrap();
            }
            acc.summary(&facts).unwrap()
        };
        let kept = summary(KEPT_TRIALS);
        for spill_after in [1, 64, 1000] {
            assert_eq!(summary(spill_after), kept, "spilled every {spill_after}");
        }
        assert_eq!(kept.trials, 1001);
    }
}
