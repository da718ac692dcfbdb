//! Physics checks from DESIGN.md: exactness without noise, the closed-form
//! error variances, and determinism across thread counts.

mod common;

use proptest::prelude::*;
use zebra_cim::engine::cpu::CpuEngine;
use zebra_cim::engine::Engine;
use zebra_cim::experiment::plan::{NoisePath, Plan};
use zebra_cim::experiment::workload::Layer;
use zebra_cim::experiment::*;
use zebra_cim::model::MappingSpec;

fn noiseless_params(
    k: usize,
    n: usize,
    b: usize,
    p: usize,
    wbits: u32,
    xbits: u32,
    adc: Option<u32>,
) -> Params {
    Params {
        trials: 1,
        seed: 5,
        layer: LayerParams {
            k,
            n,
            inputs: b,
            weight_bits: wbits,
            input_bits: xbits,
            weights: WeightSource::Gaussian,
            input_source: InputSource::RectifiedGaussian { zero_fraction: 0.3 },
        },
        parallelism: p,
        adc_bits: adc,
        calibrate_percentile: 100.0,
        noise: NoiseParams {
            cell_sigma: 0.0,
            mode: NoiseMode::Static,
            read_sigma: 0.0,
            leak: 0.0,
            p_sa0: 0.0,
            p_sa1: 0.0,
            sampling: Sampling::Auto,
        },
        energy: ENERGY_DEFAULTS,
    }
}

/// Lossless ADC bits for a mapping's range at parallelism `p`.
fn lossless_bits(m: &MappingSpec, p: usize) -> u32 {
    let levels = if m.signed_digits() { 2 * p + 1 } else { p + 1 };
    (usize::BITS - (levels - 1).leading_zeros()).clamp(1, 16)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// No noise and a lossless ADC give the exact product, for every mapping,
    /// shape, parallelism and bit width, on every engine path.
    #[test]
    fn zero_noise_is_exact(
        k in 1usize..90, n in 1usize..10, b in 1usize..3, p in 1usize..100,
        wbits in 2u32..=8, xbits in 1u32..=8, ideal in any::<bool>(), seed in 0u64..1000,
        extremes in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let params = noiseless_params(k, n, b, p, wbits, xbits, None);
        let mut layer = Layer::build(&params.layer, seed).unwrap();
        let q = (1i32 << (wbits - 1)) - 1;
        // Force the extreme values into the layer.
        if extremes[0] { layer.w[0] = -q; }
        if extremes[1] { *layer.w.last_mut().unwrap() = q; }
        if extremes[2] { layer.x[0] = (1 << xbits) - 1; }
        if extremes[3] && layer.w.len() > 1 { layer.w[1] = -1; }
        for m in MappingSpec::presets() {
            let mut params = params.clone();
            params.adc_bits = if ideal { None } else { Some(lossless_bits(&m, p)) };
            // A calibrated range at the 100th percentile covers every clean sum.
            let plan = Plan::new(&params, &layer, &m);
            for path in [NoisePath::Analytic, NoisePath::PerCellStatic, NoisePath::PerCellDynamic] {
                let plan = plan.with_path(path);
                let out = CpuEngine::new().run(&plan, 0..1, true).unwrap();
                let raw = out.raw.unwrap();
                let bad: Vec<(usize, f32)> = raw.iter().cloned().enumerate().filter(|(_, e)| *e != 0.0).take(5).collect();
                prop_assert!(bad.is_empty(), "mapping {} path {:?} k={} n={} p={}: first errors (index, e) {:?}", m.name, path, k, n, p, bad);
            }
        }
    }
}

/// Per-column sample variance of raw errors `[trial][n]` (one input vector).
fn column_variances(raw: &[f32], n: usize) -> Vec<f64> {
    let t = raw.len() / n;
    (0..n)
        .map(|c| {
            let v: Vec<f64> = (0..t).map(|i| raw[i * n + c] as f64).collect();
            let mean = v.iter().sum::<f64>() / t as f64;
            v.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (t - 1) as f64
        })
        .collect()
}

/// Compares simulated to closed-form variances. For Gaussian errors the
/// sample variance has standard error var * sqrt(2 / (T - 1)); we allow 5
/// standard errors on the sum over columns and 6 on each column.
fn assert_variances(what: &str, sim: &[f64], theory: &[f64], trials: usize) {
    let rel = (2.0 / (trials - 1) as f64).sqrt();
    for (c, (s, t)) in sim.iter().zip(theory).enumerate() {
        assert!(
            (s - t).abs() <= 6.0 * rel * t + 1e-9,
            "{what}: column {c}: simulated {s:.4} vs closed form {t:.4} (6 SE = {:.4})",
            6.0 * rel * t
        );
    }
    let (ss, ts): (f64, f64) = (sim.iter().sum(), theory.iter().sum());
    let se = rel * theory.iter().map(|t| t * t).sum::<f64>().sqrt();
    assert!(
        (ss - ts).abs() <= 5.0 * se,
        "{what}: sum over columns {ss:.4} vs {ts:.4} (5 SE = {:.4})",
        5.0 * se
    );
}

const TRIALS: u32 = 3000;

fn noisy(mode: &str, sampling: &str, cell: f64, read: f64) -> String {
    format!(
        "version = 1\nseed = 11\n[layer]\nk = 70\nn = 12\ninputs = 1\ninput_zero_fraction = 0.2\n[array]\nparallelism = 32\n\
         [adc]\nbits = \"ideal\"\n[noise]\ncell_sigma = {cell}\nmode = \"{mode}\"\nsampling = \"{sampling}\"\nread_sigma = {read}\n"
    )
}

fn simulate(plan: &Plan) -> Vec<f32> {
    CpuEngine::new()
        .run(plan, 0..TRIALS, true)
        .unwrap()
        .raw
        .unwrap()
}

/// sum_j s_j^2 |d_kjn| for one weight.
fn plane_energy(plan: &Plan, k: usize, n: usize) -> f64 {
    (0..plan.j)
        .map(|j| {
            (plan.scales[j] as f64).powi(2)
                * (plan.digits[(j * plan.k + k) * plan.n + n] as f64).abs()
        })
        .sum()
}

#[test]
fn static_cell_noise_matches_closed_form() {
    let sigma = 0.05f64;
    let (params, layer) = common::point(&noisy("static", "auto", sigma, 0.0));
    for mapping in ["dense", "zebra"] {
        let plan = common::plan(&params, &layer, mapping);
        assert_eq!(plan.path, NoisePath::PerCellStatic);
        let theory: Vec<f64> = (0..plan.n)
            .map(|n| {
                sigma
                    * sigma
                    * (0..plan.k)
                        .map(|k| (plan.x[k] as f64).powi(2) * plane_energy(&plan, k, n))
                        .sum::<f64>()
            })
            .collect();
        assert_variances(
            &format!("static {mapping}"),
            &column_variances(&simulate(&plan), plan.n),
            &theory,
            TRIALS as usize,
        );
    }
}

#[test]
fn dynamic_cell_noise_matches_closed_form_per_cell_and_aggregated() {
    let sigma = 0.05f64;
    for sampling in ["per-cell", "aggregated"] {
        let (params, layer) = common::point(&noisy("dynamic", sampling, sigma, 0.0));
        for mapping in ["dense", "zebra"] {
            let plan = common::plan(&params, &layer, mapping);
            let theory: Vec<f64> = (0..plan.n)
                .map(|n| {
                    sigma
                        * sigma
                        * (0..plan.k)
                            .map(|k| {
                                let x = plan.x[k];
                                let bits: f64 = (0..plan.xbits)
                                    .filter(|i| (x >> i) & 1 == 1)
                                    .map(|i| 4f64.powi(i as i32))
                                    .sum();
                                bits * plane_energy(&plan, k, n)
                            })
                            .sum::<f64>()
                })
                .collect();
            let what = format!("dynamic {sampling} {mapping}");
            assert_variances(
                &what,
                &column_variances(&simulate(&plan), plan.n),
                &theory,
                TRIALS as usize,
            );
        }
    }
}

#[test]
fn read_noise_matches_closed_form() {
    let read = 0.3f64;
    let (params, layer) = common::point(&noisy("static", "auto", 0.0, read));
    for mapping in ["dense", "zebra"] {
        let plan = common::plan(&params, &layer, mapping);
        let theory: Vec<f64> = (0..plan.n)
            .map(|n| {
                let mut v = 0.0;
                for c in 0..plan.chunks {
                    for i in 0..plan.xbits {
                        if !plan.row_active[c * plan.xbits + i] {
                            continue;
                        }
                        for j in 0..plan.j {
                            if plan.converted[plan.group(c, j, n)] {
                                v += 4f64.powi(i as i32) * (plan.scales[j] as f64).powi(2);
                            }
                        }
                    }
                }
                read * read * v
            })
            .collect();
        assert_variances(
            &format!("read {mapping}"),
            &column_variances(&simulate(&plan), plan.n),
            &theory,
            TRIALS as usize,
        );
    }
}

#[test]
fn small_negative_weights_cost_dense_far_more_than_zebra() {
    // The sign-extension ones of a small negative weight carry s^2 = 4^7 in dense.
    let (params, mut layer) = common::point(&noisy("static", "auto", 0.05, 0.0));
    layer
        .w
        .iter_mut()
        .enumerate()
        .for_each(|(i, w)| *w = if i % 2 == 0 { -1 } else { 1 });
    let e = |m: &str| {
        let plan = common::plan(&params, &layer, m);
        (0..plan.k).map(|k| plane_energy(&plan, k, 0)).sum::<f64>()
    };
    assert!(
        e("dense") > 1000.0 * e("zebra"),
        "dense {} zebra {}",
        e("dense"),
        e("zebra")
    );
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let text = "version = 1\nseed = 3\n[layer]\nk = 100\nn = 9\ninputs = 3\n[array]\nparallelism = 24\n\
                [noise]\ncell_sigma = 0.08\nread_sigma = 0.4\np_sa0 = 0.01\np_sa1 = 0.01\nleak = 0.02\n";
    let (params, layer) = common::point(text);
    for mapping in ["dense", "zebra", "dense-cal"] {
        for mode in [NoiseMode::Static, NoiseMode::Dynamic] {
            let mut params = params.clone();
            params.noise.mode = mode;
            let plan = Plan::new(&params, &layer, &MappingSpec::preset(mapping).unwrap());
            let one = CpuEngine::with_threads(1).run(&plan, 0..37, true).unwrap();
            let three = CpuEngine::with_threads(3).run(&plan, 0..37, true).unwrap();
            assert_eq!(one.trials, three.trials, "{mapping} {mode:?}");
            assert_eq!(one.hist, three.hist);
            assert_eq!(one.raw, three.raw);
            // A later batch equals the tail of a longer one.
            let tail = CpuEngine::with_threads(2).run(&plan, 20..37, true).unwrap();
            assert_eq!(&one.trials[20..], &tail.trials[..]);
        }
    }
}

#[test]
fn adc_quantisation_error_of_dense_full_scale_is_visible() {
    // Full-scale 6-bit over P = 128 has a step of 128/63 cells: errors appear even without noise.
    let text = "version = 1\n[layer]\nk = 128\nn = 16\ninputs = 4\n[array]\nparallelism = 128\n[adc]\nbits = 6\n";
    let (params, layer) = common::point(text);
    let plan = common::plan(&params, &layer, "dense");
    let raw = CpuEngine::new()
        .run(&plan, 0..1, true)
        .unwrap()
        .raw
        .unwrap();
    assert!(raw.iter().any(|&e| e != 0.0));
    // ZEBRA's adaptive range: at most 128 digits of one sign, 2^6 codes, so
    // steps stay at one cell whenever a group has at most 63 non-zero digits.
    let zplan = common::plan(&params, &layer, "zebra");
    assert!(zplan
        .lo
        .iter()
        .zip(&zplan.hi)
        .all(|(l, h)| l <= &0.0 && h >= &0.0));
}

#[test]
fn one_engine_reused_across_plans_matches_fresh_engines() {
    // The CPU engine keeps the last plan's trial-invariant buffers: switching
    // plans (or a plan's noise path) must rebuild them, never reuse stale ones.
    let text = |seed: u32, mode: &str| {
        format!(
            "version = 1\nseed = {seed}\n[layer]\nk = 70\nn = 12\ninputs = 2\n[array]\nparallelism = 32\n\
             [noise]\ncell_sigma = 0.05\nmode = \"{mode}\"\nsampling = \"per-cell\"\n"
        )
    };
    let plans: Vec<Plan> = [(1, "static"), (2, "dynamic"), (3, "dynamic")]
        .iter()
        .map(|&(seed, mode)| {
            let (params, layer) = common::point(&text(seed, mode));
            Plan::new(&params, &layer, &MappingSpec::preset("zebra").unwrap())
        })
        .collect();
    let mut reused = CpuEngine::new();
    for plan in plans.iter().chain(plans.iter().rev()) {
        let got = reused.run(plan, 0..3, true).unwrap().raw.unwrap();
        let want = CpuEngine::new().run(plan, 0..3, true).unwrap().raw.unwrap();
        assert_eq!(got, want, "plan {}", plan.id());
    }
    // The same plan with another noise path.
    let plan = plans[1].with_path(NoisePath::Aggregated);
    let got = reused.run(&plan, 0..3, true).unwrap().raw.unwrap();
    let want = CpuEngine::new()
        .run(&plan, 0..3, true)
        .unwrap()
        .raw
        .unwrap();
    assert_eq!(got, want);
}
