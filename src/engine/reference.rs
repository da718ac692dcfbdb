//! The reference engine: docs/MODEL.md's equations as plain loops, one per
//! index, with no caching beyond what the model itself says is fixed for a
//! trial (its faults and static mismatch). It is slow on purpose; the fast
//! engines are checked against it (`tests/agreement.rs`).
//!
//! Arithmetic. The model's analog sum `A` is a real number; here it is
//! summed in f64 (each cell's weight, draw and read noise widened from the
//! f32 parameters and Box-Muller draws), so it is the model's `A` up to f64
//! rounding. The model defines the ADC in f32 (`model::Adc::convert`), so
//! `A` is rounded to f32 once, at the ADC's input, and converted there. The
//! digital sum `y = sum x_i s_j value` is f64 (`x_i` the input plane's
//! weight, `plan.input_weights`), as in the model. The fast
//! CPU engine differs only in that it sums `A` in f32, term by term.
//!
//! Random numbers. Every draw is read at the address in docs/MODEL.md's
//! table, with the block index computed here from the table's formula: a
//! row's Gaussian `t` is word `t mod 4` of block `b0 + t / 4`.

use super::Engine;
use crate::engine::stats::{accumulate_trial, Batch};
use crate::error::Result;
use crate::experiment::plan::{NoisePath, Plan};
use crate::model::rng::{stream, Address};
use crate::model::Level;
use std::ops::Range;

/// The single-threaded engine written straight from the model.
#[derive(Debug, Default)]
pub struct ReferenceEngine;

impl ReferenceEngine {
    /// A reference engine (it holds no state).
    pub fn new() -> Self {
        ReferenceEngine
    }
}

impl Engine for ReferenceEngine {
    fn name(&self) -> &'static str {
        "reference"
    }

    fn device(&self) -> String {
        "cpu (reference, 1 thread)".to_string()
    }

    fn run(&mut self, plan: &Plan, trials: Range<u32>, raw: bool) -> Result<Batch> {
        let mut batch = Batch::empty(trials.start);
        let mut errors = raw.then(Vec::new);
        for trial in trials {
            let y = simulate_trial(plan, trial);
            let m = accumulate_trial(&y, &plan.exact, &mut batch.hist, errors.as_mut());
            batch.trials.push(m);
        }
        batch.raw = errors;
        Ok(batch)
    }

    fn outputs(&mut self, plan: &Plan, trial: u32) -> Result<Vec<f64>> {
        Ok(simulate_trial(plan, trial))
    }
}

/// Gaussian `t` of the row of draws that starts at block `b0`.
fn gaussian(addr: &Address, b0: u64, t: usize) -> f64 {
    addr.gaussian4(b0 + (t / 4) as u64)[t % 4] as f64
}

/// Blocks of four draws per row of N columns: `ceil(N / 4)`.
fn blocks_per_row(plan: &Plan) -> usize {
    plan.n.div_ceil(4)
}

/// The chip of one trial: each cell's level after stuck-at faults, `[j][k][n]`.
///
/// Stream 6, block `(j K + k) ceil(N/4)` of row (j, k); cell `n` takes
/// uniform `n` of the row. With probability `p_sa0` the level is 0, with
/// probability `p_sa1` the "on" level (`plan.sa1_digit`).
fn faulted_digits(plan: &Plan, trial: u32) -> Vec<Level> {
    let mut digits = plan.digits.clone();
    if !plan.has_faults() {
        return digits;
    }
    let addr = Address {
        seed: plan.seed,
        trial,
        stream: stream::FAULT,
    };
    let (k_rows, n_cols, nb) = (plan.k, plan.n, blocks_per_row(plan));
    let p_sa0 = plan.noise.p_sa0 as f64;
    let p_sa1 = plan.noise.p_sa1 as f64;
    for j in 0..plan.j {
        for k in 0..k_rows {
            let b0 = ((j * k_rows + k) * nb) as u64;
            for n in 0..n_cols {
                let word = addr.block(b0 + (n / 4) as u64)[n % 4];
                let u = Address::uniform(word) as f64;
                let cell = (j * k_rows + k) * n_cols + n;
                if u < p_sa0 {
                    digits[cell] = 0;
                } else if u < p_sa0 + p_sa1 {
                    digits[cell] = plan.sa1_digit[cell];
                }
            }
        }
    }
    digits
}

/// The nominal weight of a cell of level `d`: `d`, or `leak` for a zero level.
fn cell_weight(plan: &Plan, d: Level) -> f64 {
    if d == 0 {
        plan.noise.leak as f64
    } else {
        d as f64
    }
}

/// The static mismatch `z_kjn` of one trial, `[j][k][n]` (zeros for other paths).
///
/// Stream 2, block `(j K + k) ceil(N/4)` of row (j, k); cell `n` takes Gaussian `n`.
fn static_draws(plan: &Plan, trial: u32) -> Vec<f64> {
    let mut z = vec![0.0; plan.digits.len()];
    if plan.path != NoisePath::PerCellStatic {
        return z;
    }
    let addr = Address {
        seed: plan.seed,
        trial,
        stream: stream::CELL_STATIC,
    };
    let (k_rows, n_cols, nb) = (plan.k, plan.n, blocks_per_row(plan));
    for j in 0..plan.j {
        for k in 0..k_rows {
            let b0 = ((j * k_rows + k) * nb) as u64;
            for n in 0..n_cols {
                z[(j * k_rows + k) * n_cols + n] = gaussian(&addr, b0, n);
            }
        }
    }
    z
}

/// Which Gaussian `t` of its row each cell's dynamic draw is, `[j][k][n]`.
///
/// With no leak and no faults only cells with a non-zero (nominal) digit
/// conduct, and only they draw: cell `n` takes Gaussian `t`, its rank
/// among the row's conducting cells in column order. Otherwise every cell
/// conducts and `t = n`.
fn dynamic_draw_numbers(plan: &Plan) -> Vec<usize> {
    let compact = plan.noise.leak == 0.0 && !plan.has_faults();
    let (k_rows, n_cols) = (plan.k, plan.n);
    let mut t_of = vec![0; plan.digits.len()];
    for j in 0..plan.j {
        for k in 0..k_rows {
            let row = (j * k_rows + k) * n_cols;
            let mut conducting_before = 0;
            for n in 0..n_cols {
                t_of[row + n] = if compact { conducting_before } else { n };
                if plan.digits[row + n] != 0 {
                    conducting_before += 1;
                }
            }
        }
    }
    t_of
}

/// One trial: the simulated outputs `y` `[b][n]`.
fn simulate_trial(plan: &Plan, trial: u32) -> Vec<f64> {
    let (k_rows, n_cols, chunks, xbits, planes) = (plan.k, plan.n, plan.chunks, plan.xbits, plan.j);
    let nb = blocks_per_row(plan) as u64;
    let address = |stream| Address {
        seed: plan.seed,
        trial,
        stream,
    };
    let (dynamic, read, aggregated) = (
        address(stream::CELL_DYNAMIC),
        address(stream::READ),
        address(stream::AGGREGATED),
    );
    let sigma = plan.noise.cell_sigma as f64;

    let digits = faulted_digits(plan, trial);
    let z_static = static_draws(plan, trial);
    let t_of = dynamic_draw_numbers(plan);

    let mut y = vec![0.0f64; plan.b * n_cols];
    for b in 0..plan.b {
        for c in 0..chunks {
            let rows = c * plan.p..((c + 1) * plan.p).min(k_rows);
            for i in 0..xbits {
                if !plan.row_active[(b * chunks + c) * xbits + i] {
                    continue; // skipped input plane: no conversion
                }
                for j in 0..planes {
                    for n in 0..n_cols {
                        let g = plan.group(c, j, n);
                        if !plan.converted[g] {
                            continue; // skipped group: its value is exactly 0
                        }
                        // The conversion's row of noise draws (streams 4 and 5).
                        let conversion_b0 =
                            ((((b * chunks + c) * xbits + i) * planes + j) as u64) * nb;
                        let mut a = 0.0f64;
                        let mut sum_w2 = 0.0f64; // sum of w^2 over the active cells
                        for k in rows.clone() {
                            if (plan.x[b * k_rows + k] >> i) & 1 == 0 {
                                continue;
                            }
                            let cell = (j * k_rows + k) * n_cols + n;
                            let w = cell_weight(plan, digits[cell]);
                            let z = match plan.path {
                                NoisePath::Analytic | NoisePath::Aggregated => 0.0,
                                NoisePath::PerCellStatic => z_static[cell],
                                NoisePath::PerCellDynamic => {
                                    // Stream 3, block (((b Bx + i) K + k) J + j) ceil(N/4).
                                    let b0 =
                                        ((((b * xbits + i) * k_rows + k) * planes + j) as u64) * nb;
                                    // Only conducting cells draw (a zero weight
                                    // adds nothing whatever it draws).
                                    if w == 0.0 {
                                        0.0
                                    } else {
                                        gaussian(&dynamic, b0, t_of[cell])
                                    }
                                }
                            };
                            a += w * (1.0 + sigma * z);
                            sum_w2 += w * w;
                        }
                        // Read noise: read_sigma, with fs_sigma (hi - lo) and
                        // adc_sigma_lsb step in quadrature (MODEL.md).
                        let read_sigma = plan.read_sd[g] as f64;
                        match plan.path {
                            NoisePath::Aggregated => {
                                // A ~ N(sum w, sigma^2 sum w^2 + read^2): one draw, stream 5.
                                let sd = (sigma * sigma * sum_w2 + read_sigma * read_sigma).sqrt();
                                a += sd * gaussian(&aggregated, conversion_b0, n);
                            }
                            _ if read_sigma > 0.0 => {
                                a += read_sigma * gaussian(&read, conversion_b0, n);
                            }
                            _ => {}
                        }
                        // The ADC is defined in f32: A is rounded once, here.
                        let value = plan.adc.convert(a as f32, plan.lo[g], plan.hi[g]) as f64;
                        y[b * n_cols + n] +=
                            plan.input_weights[i] as f64 * plan.scales[j] as f64 * value;
                    }
                }
            }
        }
    }
    y
}
