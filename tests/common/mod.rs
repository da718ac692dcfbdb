//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use zebra_cim::experiment::plan::Plan;
use zebra_cim::experiment::workload::Layer;
use zebra_cim::experiment::{Experiment, Overrides, Params};
use zebra_cim::model::MappingSpec;

/// Parses experiment text and returns its first point's params and layer.
pub fn point(text: &str) -> (Params, Layer) {
    let exp = Experiment::parse(text, Path::new("test.toml"), Overrides::default())
        .expect("valid test experiment");
    let p = exp.points[0].params.clone();
    let layer = Layer::build(&p.layer, p.seed).expect("layer");
    (p, layer)
}

/// The plan of one built-in mapping.
pub fn plan(params: &Params, layer: &Layer, mapping: &str) -> Plan {
    Plan::new(
        params,
        layer,
        &MappingSpec::preset(mapping).expect("preset"),
    )
}

/// A GPU engine, or None (with a note) where there is no adapter and none is
/// required; with `ZEBRA_REQUIRE_GPU=1` a missing adapter fails the test.
pub fn gpu_engine() -> Option<zebra_cim::engine::gpu::GpuEngine> {
    use zebra_cim::engine::Engine;
    match zebra_cim::engine::gpu::GpuEngine::new(None, true) {
        Ok(g) => {
            eprintln!("GPU tests on {}", g.device());
            Some(g)
        }
        Err(e) => {
            if std::env::var("ZEBRA_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("ZEBRA_REQUIRE_GPU=1 but no adapter: {e}");
            }
            eprintln!("skipped: no GPU adapter ({e})");
            None
        }
    }
}

/// Largest |z| Box-Muller can return: `u1 >= 2^-25`, so `r <= sqrt(50 ln 2) < 5.9`.
pub const Z_MAX: f64 = 5.9;

/// Unit roundoff of f32.
pub const F32_U: f64 = 1.0 / 16_777_216.0;

/// For each output `[b][n]` of `plan`: (a bound on how far an engine that
/// sums each conversion's analog value in f32, term by term, can be from
/// one that sums it exactly, through an ideal ADC; the largest single ADC
/// step of the output's conversions, scaled by `|x_i s_j|` (`x_i` the input
/// plane's weight); the expected
/// number of its conversions whose code can differ between the two, were
/// each analog value's position within its ADC step uniform: `sum 2 err /
/// step`).
///
/// A conversion of `m` active rows adds at most `m + 1` terms (cells and
/// read noise) of magnitude at most `w_max (1 + sigma Z_MAX)` (`w_max` the
/// largest cell weight, [`largest_weight`]) and
/// `read Z_MAX`; each term is formed with at most 3 roundings and the sum
/// with `m` more, so the error is at most `gamma_(m + 4) S`, `gamma_q = q u
/// / (1 - q u)`, with `S` the sum of the terms' magnitudes (Higham,
/// Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 4.4), plus
/// `u |A|` for rounding the exact sum to f32 at the ADC, included by the
/// `+ 4`. The aggregated path's `mean + sd z` is within the same bound.
pub fn f32_sum_bounds(plan: &Plan) -> Vec<(f64, f64, f64)> {
    let (n, xbits, chunks) = (plan.n, plan.xbits, plan.chunks);
    let sigma = plan.noise.cell_sigma as f64;
    let read = plan.noise.read_sigma as f64;
    let w_max = largest_weight(plan);
    let mut out = vec![(0f64, 0f64, 0f64); plan.b * n];
    for b in 0..plan.b {
        for c in 0..chunks {
            let rows = c * plan.p..((c + 1) * plan.p).min(plan.k);
            for i in 0..xbits {
                if !plan.row_active[(b * chunks + c) * xbits + i] {
                    continue;
                }
                let m = rows
                    .clone()
                    .filter(|&k| plan.x[b * plan.k + k] >> i & 1 == 1)
                    .count() as f64;
                let s =
                    m * w_max * (1.0 + sigma * Z_MAX) + (read + sigma * w_max * m.sqrt()) * Z_MAX;
                let q = (m + 4.0) * F32_U;
                let err_a = q / (1.0 - q) * s;
                for j in 0..plan.j {
                    for col in 0..n {
                        let g = plan.group(c, j, col);
                        if !plan.converted[g] {
                            continue;
                        }
                        let scale = plan.input_weights[i].unsigned_abs() as f64
                            * plan.scales[j].unsigned_abs() as f64;
                        let step = match plan.adc.bits {
                            Some(bits) => {
                                let top = ((1u64 << bits) - 1) as f64;
                                ((plan.hi[g] as f64 - plan.lo[g] as f64) / top).max(1.0)
                            }
                            None => 0.0,
                        };
                        let o = &mut out[b * n + col];
                        o.0 += scale * err_a;
                        o.1 = o.1.max(scale * step);
                        if step > 0.0 {
                            o.2 += (2.0 * err_a / step).min(1.0);
                        }
                    }
                }
            }
        }
    }
    out
}

/// The largest nominal cell weight of a plan: 1 (a digit), the leak, or
/// the largest level magnitude of multi-level cells (stuck-at-1 levels
/// included).
pub fn largest_weight(plan: &Plan) -> f64 {
    let level = plan
        .digits
        .iter()
        .chain(&plan.sa1_digit)
        .map(|d| d.unsigned_abs())
        .max()
        .unwrap_or(0);
    1f64.max(plan.noise.leak as f64).max(level as f64)
}

/// Per-entry comparison of raw errors `[trial][b][n]` of two engines, the
/// tolerance of `tests/gpu.rs`: equal up to f32 accumulation rounding
/// (`2e-6` of the largest magnitude a column's f32 sums pass through, plus
/// `1e-3`), or off by at most one ADC step at one conversion, in at most
/// 0.1% of entries. On failure prints the first mismatches.
pub fn compare_within_steps(plan: &Plan, want: &[f32], got: &[f32], what: &str) {
    assert_eq!(want.len(), got.len(), "{what}: lengths");
    let n = plan.n;
    // The input planes' summed and largest weight magnitudes (2^Bx - 1 and
    // 2^(Bx-1) for unsigned inputs).
    let x_sum: f64 = plan.input_weights.iter().map(|w| w.abs() as f64).sum();
    let x_max = plan
        .input_weights
        .iter()
        .map(|w| w.abs())
        .max()
        .unwrap_or(0) as f64;
    let w_max = largest_weight(plan);
    let mut mag = vec![0f64; n];
    let mut step = vec![0f64; n];
    for c in 0..plan.chunks {
        for j in 0..plan.j {
            for col in 0..n {
                let g = plan.group(c, j, col);
                let (lo, hi) = (plan.lo[g] as f64, plan.hi[g] as f64);
                let s = match plan.adc.bits {
                    Some(b) => ((hi - lo) / ((1u64 << b) - 1) as f64).max(1.0),
                    None => 0.0,
                };
                let range = lo.abs().max(hi.abs()).max(plan.p as f64 * 2.0 * w_max);
                let w = plan.scales[j].unsigned_abs() as f64;
                mag[col] += w * range * x_sum;
                step[col] = step[col].max(w * x_max * s);
            }
        }
    }
    let mut off = Vec::new();
    for (idx, (&a, &b)) in want.iter().zip(got).enumerate() {
        let col = idx % n;
        let d = (a as f64 - b as f64).abs();
        let tol = 2e-6 * mag[col] + 1e-3;
        if d > tol {
            assert!(
                d <= step[col] + tol,
                "{what}: entry {idx} (trial {}, input {}, column {col}): {a} vs {b} differ by {d}, more than one step {}",
                idx / (plan.b * n),
                (idx / n) % plan.b,
                step[col]
            );
            off.push((idx, a, b));
        }
    }
    let frac = off.len() as f64 / want.len() as f64;
    assert!(
        frac <= 1e-3,
        "{what}: {} of {} entries differ by a step; first (index, want, got): {:?}",
        off.len(),
        want.len(),
        &off[..off.len().min(5)]
    );
}

/// For each output `[b][n]`: a bound on the rounding of an engine that sums
/// analog values in f32 (`f32_sum_bounds`) and, as the GPU engine does, the
/// digital side `y = sum x_i s_j value` in f32 too: `gamma_(q + 2)` times
/// the sum of the terms' magnitudes, `q` the output's conversions, each
/// value bounded by its chunk's largest analog magnitude or ADC range end.
pub fn f32_engine_bounds(plan: &Plan) -> Vec<f64> {
    let sums = f32_sum_bounds(plan);
    let n = plan.n;
    let sigma = plan.noise.cell_sigma as f64;
    let read = plan.noise.read_sigma as f64;
    let w_max = largest_weight(plan);
    let analog_max = plan.p as f64 * w_max * (1.0 + sigma * Z_MAX)
        + (read + sigma * w_max * (plan.p as f64).sqrt()) * Z_MAX;
    let mut out = Vec::with_capacity(plan.b * n);
    for b in 0..plan.b {
        for col in 0..n {
            let (mut terms, mut mag) = (0.0, 0.0);
            for c in 0..plan.chunks {
                for i in 0..plan.xbits {
                    if !plan.row_active[(b * plan.chunks + c) * plan.xbits + i] {
                        continue;
                    }
                    for j in 0..plan.j {
                        let g = plan.group(c, j, col);
                        if plan.converted[g] {
                            let v = analog_max
                                .max(plan.lo[g].abs() as f64)
                                .max(plan.hi[g].abs() as f64);
                            terms += 1.0;
                            mag += plan.input_weights[i].unsigned_abs() as f64
                                * plan.scales[j].unsigned_abs() as f64
                                * v;
                        }
                    }
                }
            }
            let q = (terms + 2.0) * F32_U;
            out.push(sums[b * n + col].0 + q / (1.0 - q) * mag);
        }
    }
    out
}
