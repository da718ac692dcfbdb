//! The fast engines against the reference engine (`engine::reference`), on
//! small layers of awkward shapes, every mapping, input coding and noise path.
//!
//! All engines read the same random numbers at the same addresses, so they
//! differ only in arithmetic: the reference sums each analog value in f64
//! and rounds it to f32 once at the ADC; the CPU engine sums it in f32. So:
//!
//! - integer sums (no cell or read noise, no leak) give identical outputs;
//! - with an ideal ADC, outputs differ by at most the f32 summation bound of
//!   `common::f32_sum_bounds` (derived there);
//! - with a quantising ADC, a conversion's value is bit-identical unless its
//!   two analog values straddle a code boundary, so an output is identical
//!   or off by one ADC step (the largest of its conversions'); such flips
//!   need an analog value within the summation bound of a boundary, and we
//!   allow at most `E + 4 sqrt(E) + 2` of them, `E` the expected count were
//!   values placed uniformly within their steps (`common::f32_sum_bounds`).
//!
//! The GPU engine is held to the tolerance of `tests/gpu.rs` (f32 rounding,
//! or one step at one conversion in at most 0.1% of outputs).

mod common;

use zebra_cim::engine::cpu::CpuEngine;
use zebra_cim::engine::reference::ReferenceEngine;
use zebra_cim::engine::Engine;
use zebra_cim::experiment::plan::{NoisePath, Plan};
use zebra_cim::model::{AdcRange, Encoding, InputCoding, MappingSpec};

/// (k, n, inputs, parallelism): P = 37 with K not a multiple of P, N not a
/// multiple of 4 or 16, a single row, a chunk of one row, N above 16.
const SHAPES: [(usize, usize, usize, usize); 5] = [
    (80, 7, 2, 37),
    (37, 5, 1, 37),
    (50, 18, 2, 16),
    (9, 3, 3, 1),
    (1, 1, 1, 1),
];

/// (label, noise section, ADC bits, noise path).
fn noise_cases() -> Vec<(&'static str, &'static str, &'static str, NoisePath)> {
    vec![
        ("none", "cell_sigma = 0.0", "6", NoisePath::Analytic),
        ("none, ideal ADC", "cell_sigma = 0.0", "\"ideal\"", NoisePath::Analytic),
        ("read", "read_sigma = 0.7", "5", NoisePath::Analytic),
        ("leak + faults + read", "leak = 0.03\np_sa0 = 0.05\np_sa1 = 0.04\nread_sigma = 0.2", "\"ideal\"", NoisePath::Analytic),
        ("faults", "p_sa0 = 0.05\np_sa1 = 0.05", "4", NoisePath::Analytic),
        ("leak + faults, 4-bit ADC", "leak = 0.01\np_sa0 = 0.02\np_sa1 = 0.02", "4", NoisePath::Analytic),
        ("static", "cell_sigma = 0.08", "6", NoisePath::PerCellStatic),
        ("static ideal + read", "cell_sigma = 0.08\nread_sigma = 0.2", "\"ideal\"", NoisePath::PerCellStatic),
        ("static + leak + faults", "cell_sigma = 0.05\nleak = 0.03\np_sa0 = 0.03\np_sa1 = 0.03", "5", NoisePath::PerCellStatic),
        ("dynamic per-cell (compact draws)", "cell_sigma = 0.08\nmode = \"dynamic\"\nsampling = \"per-cell\"", "6", NoisePath::PerCellDynamic),
        ("dynamic per-cell ideal", "cell_sigma = 0.08\nmode = \"dynamic\"\nsampling = \"per-cell\"\nread_sigma = 0.1", "\"ideal\"", NoisePath::PerCellDynamic),
        ("dynamic per-cell + leak", "cell_sigma = 0.08\nmode = \"dynamic\"\nsampling = \"per-cell\"\nleak = 0.02", "6", NoisePath::PerCellDynamic),
        ("dynamic per-cell + faults", "cell_sigma = 0.08\nmode = \"dynamic\"\nsampling = \"per-cell\"\np_sa0 = 0.03\np_sa1 = 0.03", "\"ideal\"", NoisePath::PerCellDynamic),
        ("aggregated + read", "cell_sigma = 0.08\nmode = \"dynamic\"\nread_sigma = 0.3", "4", NoisePath::Aggregated),
        ("aggregated + leak + faults", "cell_sigma = 0.08\nmode = \"dynamic\"\nleak = 0.02\np_sa0 = 0.02\np_sa1 = 0.02", "\"ideal\"", NoisePath::Aggregated),
    ]
}

/// (input coding, input bits): unsigned inputs, and signed ones in both
/// codings, at 8 bits (sign-magnitude: 14 planes) and at a few.
const CODINGS: [(InputCoding, u32); 5] = [
    (InputCoding::Unsigned, 8),
    (InputCoding::TwosComplement, 8),
    (InputCoding::SignMagnitude, 8),
    (InputCoding::TwosComplement, 2),
    (InputCoding::SignMagnitude, 3),
];

fn text(
    shape: (usize, usize, usize, usize),
    (coding, bits): (InputCoding, u32),
    noise: &str,
    adc: &str,
) -> String {
    let (k, n, b, p) = shape;
    let (inputs, array) = if coding.signed() {
        (
            "input_sign = \"signed\"".to_string(),
            format!("signed_inputs = \"{}\"\n", coding.label()),
        )
    } else {
        ("input_zero_fraction = 0.3".to_string(), String::new())
    };
    format!(
        "version = 1\nseed = {}\n[layer]\nk = {k}\nn = {n}\ninputs = {b}\ninput_bits = {bits}\n{inputs}\n\
         [array]\nparallelism = {p}\n{array}[adc]\nbits = {adc}\ncalibrate_percentile = 95.0\n[noise]\n{noise}\n",
        7 + k + n
    )
}

const TRIALS: u32 = 3;

/// Every plan of the test: shape x input coding x noise case x mapping.
fn plans() -> Vec<(String, Plan)> {
    plans_of(&MappingSpec::presets(), &CODINGS)
}

/// Mappings with multi-level cells: sign-magnitude with two digits per
/// cell (adaptive ranges, skipping), two's complement with three
/// (calibrated, signed top slice) and four term slots (full range, levels
/// up to 128; they hold every 8-bit weight).
fn multi_level_mappings() -> Vec<MappingSpec> {
    let m = |name: &str, encoding, c, slots, adc_range, skip| MappingSpec {
        name: name.into(),
        encoding,
        bits_per_cell: c,
        slots,
        skip_zero_planes: skip,
        skip_zero_inputs: skip,
        adc_range,
    };
    vec![
        m(
            "signmag-2",
            Encoding::SignMagnitude,
            2,
            None,
            AdcRange::Adaptive,
            true,
        ),
        m(
            "dense-3",
            Encoding::TwosComplement,
            3,
            None,
            AdcRange::Calibrated,
            false,
        ),
        m(
            "slots-4",
            Encoding::TermSlots,
            1,
            Some(4),
            AdcRange::Full,
            false,
        ),
    ]
}

/// The plans of the multi-level mappings, over unsigned inputs and both
/// signed codings.
fn multi_level_plans() -> Vec<(String, Plan)> {
    plans_of(
        &multi_level_mappings(),
        &[CODINGS[0], CODINGS[1], CODINGS[4]],
    )
}

/// Shape x input coding x noise case x mapping, for `mappings`.
fn plans_of(mappings: &[MappingSpec], codings: &[(InputCoding, u32)]) -> Vec<(String, Plan)> {
    let mut out = Vec::new();
    for shape in SHAPES {
        for &coding in codings {
            for (what, noise, adc, path) in noise_cases() {
                let (params, layer) = common::point(&text(shape, coding, noise, adc));
                assert_eq!(layer.coding, coding.0);
                for m in mappings {
                    let plan = Plan::new(&params, &layer, m);
                    assert_eq!(plan.path, path, "{what}");
                    let label = format!(
                        "{what} / {} / {}-bit {} inputs / k={} n={} b={} p={}",
                        m.name,
                        coding.1,
                        coding.0.label(),
                        shape.0,
                        shape.1,
                        shape.2,
                        shape.3
                    );
                    out.push((label, plan));
                }
            }
        }
    }
    out
}

/// Whether the analog sums are integers in both engines (no cell or read
/// noise, no leak), so outputs must be identical.
fn integer_sums(plan: &Plan) -> bool {
    plan.noise.cell_sigma == 0.0 && plan.noise.read_sigma == 0.0 && plan.noise.leak == 0.0
}

/// The outputs `[trial][b][n]` of `engine`, through `run` (errors plus the
/// exact product, f32 errors) and through `outputs` (f64).
fn outputs(engine: &mut dyn Engine, plan: &Plan) -> (Vec<f64>, Vec<f64>) {
    let raw = engine.run(plan, 0..TRIALS, true).unwrap().raw.unwrap();
    let per = plan.b * plan.n;
    let from_run = raw
        .iter()
        .enumerate()
        .map(|(idx, &e)| plan.exact[idx % per] as f64 + e as f64)
        .collect();
    let direct = (0..TRIALS)
        .flat_map(|t| engine.outputs(plan, t).unwrap())
        .collect();
    (from_run, direct)
}

/// Checks `got` against the reference's `want` (both `[trial][b][n]`)
/// under the rules in the module comment; returns the number of step flips.
fn check_against_reference(
    label: &str,
    plan: &Plan,
    want: &[f64],
    got: &[f64],
    f32_errors: bool,
) -> Stats {
    assert_eq!(want.len(), got.len(), "{label}: lengths");
    let bounds = common::f32_sum_bounds(plan);
    let per = plan.b * plan.n;
    let exact = integer_sums(plan);
    let (mut flips, mut bad, mut expected) = (Vec::new(), Vec::new(), 0.0);
    let (mut identical, mut worst) = (0usize, 0f64);
    for (idx, (&r, &c)) in want.iter().zip(got).enumerate() {
        let (float_bound, step, p_flip) = bounds[idx % per];
        expected += p_flip;
        let d = (c - r).abs();
        identical += (d == 0.0) as usize;
        if plan.adc.bits.is_none() && float_bound > 0.0 {
            worst = worst.max(d / float_bound);
        }
        // `run` reports errors as f32: half an ulp of |e| on each side.
        let ex = plan.exact[idx % per] as f64;
        let e_round = if f32_errors {
            common::F32_U * ((r - ex).abs() + (c - ex).abs())
        } else {
            0.0
        };
        let ok = if exact {
            d <= e_round
        } else if plan.adc.bits.is_none() {
            d <= float_bound + e_round + 1e-9 * r.abs()
        } else if d <= e_round {
            true
        } else if d <= step + e_round + 1e-9 * r.abs() {
            flips.push((idx, r, c, d));
            true
        } else {
            false
        };
        if !ok {
            bad.push((
                idx,
                r,
                c,
                d,
                if plan.adc.bits.is_none() {
                    float_bound
                } else {
                    step
                },
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{label}: {} of {} outputs out of tolerance; first (index [trial][b][n], reference, engine, difference, bound): {:?}",
        bad.len(),
        want.len(),
        &bad[..bad.len().min(5)]
    );
    let allowed = expected + 4.0 * expected.sqrt() + 2.0;
    assert!(
        (flips.len() as f64) <= allowed,
        "{label}: {} outputs one ADC step off (allowed {allowed:.1}); first (index, reference, engine, difference): {:?}",
        flips.len(),
        &flips[..flips.len().min(5)]
    );
    Stats {
        flips: flips.len(),
        identical,
        outputs: want.len(),
        worst,
    }
}

/// What one comparison saw.
#[derive(Default)]
struct Stats {
    flips: usize,
    identical: usize,
    outputs: usize,
    /// Largest |difference| / bound with an ideal ADC.
    worst: f64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.flips += o.flips;
        self.identical += o.identical;
        self.outputs += o.outputs;
        self.worst = self.worst.max(o.worst);
    }
}

#[test]
fn cpu_engine_agrees_with_the_reference() {
    cpu_agrees_with_the_reference(plans());
}

#[test]
fn cpu_engine_agrees_with_the_reference_on_multi_level_cells() {
    cpu_agrees_with_the_reference(multi_level_plans());
}

fn cpu_agrees_with_the_reference(plans: Vec<(String, Plan)>) {
    let (mut reference, mut cpu) = (ReferenceEngine::new(), CpuEngine::new());
    let mut stats = Stats::default();
    for (label, plan) in plans {
        let (want_run, want) = outputs(&mut reference, &plan);
        let (got_run, got) = outputs(&mut cpu, &plan);
        stats += check_against_reference(&format!("{label} (outputs)"), &plan, &want, &got, false);
        stats +=
            check_against_reference(&format!("{label} (run)"), &plan, &want_run, &got_run, true);
    }
    eprintln!(
        "cpu vs reference: {} outputs, {} identical, {} one ADC step off; ideal ADC: largest difference {:.3} of its bound",
        stats.outputs, stats.identical, stats.flips, stats.worst
    );
}

#[test]
fn reference_run_and_outputs_agree() {
    // The statistics path and the outputs path are the same simulation.
    let mut reference = ReferenceEngine::new();
    for (label, plan) in plans().into_iter().step_by(7) {
        let (from_run, direct) = outputs(&mut reference, &plan);
        for (idx, (&a, &b)) in from_run.iter().zip(&direct).enumerate() {
            let e = b - plan.exact[idx % (plan.b * plan.n)] as f64;
            assert!(
                (a - b).abs() <= common::F32_U * e.abs(),
                "{label}: output {idx}: run {a}, outputs {b}"
            );
        }
    }
}

// The plans include analytic leak with a quantising ADC, where the analog
// value `ones + leak zeros` often sits exactly on an ADC code boundary (5 +
// 10 x 0.01 over [0, 17] at 4 bits: 5.1 x 15 / 17 = 4.5); every engine must
// add the leak once, not cell by cell, to round it the reference's way.

#[test]
fn gpu_engine_agrees_with_the_reference() {
    gpu_agrees_with_the_reference(plans());
}

#[test]
fn gpu_engine_agrees_with_the_reference_on_multi_level_cells() {
    gpu_agrees_with_the_reference(multi_level_plans());
}

fn gpu_agrees_with_the_reference(plans: Vec<(String, Plan)>) {
    let Some(mut gpu) = common::gpu_engine() else {
        return;
    };
    let mut reference = ReferenceEngine::new();
    for (label, plan) in plans {
        let want = reference.run(&plan, 0..TRIALS, true).unwrap().raw.unwrap();
        let got = gpu.run(&plan, 0..TRIALS, true).unwrap().raw.unwrap();
        common::compare_within_steps(&plan, &want, &got, &label);
    }
}
