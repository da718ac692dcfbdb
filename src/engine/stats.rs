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

/// Accumulates batches of one (point, mapping) in trial order, from trial
/// `first` on. Everything it holds is exact (per-trial moments, bin
/// counts), so accumulators of consecutive trial ranges joined in order
/// equal one accumulator of the whole range: the basis of sharded runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Accumulator {
    /// The first trial.
    pub first: u32,
    pub trials: Vec<TrialMoments>,
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
        Accumulator {
            first,
            trials: Vec::new(),
            hist: vec![0; BINS],
        }
    }

    /// The trial after the last one added.
    pub fn end(&self) -> u32 {
        self.first + self.trials.len() as u32
    }

    /// Appends `next`, which must start where this one ends.
    pub fn append(&mut self, next: &Accumulator) -> Result<(), String> {
        if next.first != self.end() {
            return Err(format!(
                "trials {}.. do not follow trials {}..{}",
                next.first,
                self.first,
                self.end()
            ));
        }
        self.trials.extend_from_slice(&next.trials);
        for (a, b) in self.hist.iter_mut().zip(&next.hist) {
            *a += b;
        }
        Ok(())
    }

    /// Adds a batch; batches must arrive in trial order.
    pub fn add(&mut self, batch: &Batch) {
        assert_eq!(batch.first_trial, self.end(), "batches out of order");
        self.trials.extend_from_slice(&batch.trials);
        for (a, b) in self.hist.iter_mut().zip(&batch.hist) {
            *a += b;
        }
    }

    /// Final metrics.
    pub fn summary(&self, plan: &PlanFacts) -> Summary {
        let per_trial = (plan.b * plan.n) as f64;
        let samples = per_trial * self.trials.len() as f64;
        let (mut sum, mut sumsq, mut max_abs) = (0.0, 0.0, 0.0f64);
        for t in &self.trials {
            sum += t.sum;
            sumsq += t.sumsq;
            max_abs = max_abs.max(t.max_abs);
        }
        let bias = sum / samples;
        let mse = sumsq / samples;
        let rmse = mse.sqrt();
        let std = (mse - bias * bias).max(0.0).sqrt();
        let snr_db = if rmse > 0.0 {
            20.0 * (plan.exact_std / rmse).log10()
        } else {
            f64::INFINITY
        };
        let mut rms: Vec<f64> = self
            .trials
            .iter()
            .map(|t| (t.sumsq / per_trial).sqrt())
            .collect();
        let rm_mean = rms.iter().sum::<f64>() / rms.len() as f64;
        let rm_std =
            (rms.iter().map(|r| (r - rm_mean).powi(2)).sum::<f64>() / rms.len() as f64).sqrt();
        rms.sort_by(f64::total_cmp);
        let pick = |q: f64| rms[((q * (rms.len() - 1) as f64).round() as usize).min(rms.len() - 1)];
        let abs_hist = abs_histogram(&self.hist);
        let total: u64 = abs_hist.iter().sum();
        let quant = |q: f64| abs_quantile(&abs_hist, total, q).min(max_abs);
        Summary {
            trials: self.trials.len() as u32,
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
            trial_rmse_p5: pick(0.05),
            trial_rmse_p50: pick(0.5),
            trial_rmse_p95: pick(0.95),
            counters: plan.counters,
        }
    }
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
}
