//! Physics checks from docs/MODEL.md, one list run on every engine
//! (`physics_tests!`): the closed-form error variances, exactness without
//! noise, determinism, stuck-at faults, leak, calibration, and aggregated
//! against per-cell sampling. Then plan-level checks and the CPU engine's
//! own (thread counts, a cache across plans, a property search of shapes).

mod common;

use proptest::prelude::*;
use zebra_cim::engine::cpu::CpuEngine;
use zebra_cim::engine::reference::ReferenceEngine;
use zebra_cim::engine::Engine;
use zebra_cim::experiment::plan::{NoisePath, Plan};
use zebra_cim::experiment::workload::Layer;
use zebra_cim::experiment::*;
use zebra_cim::model::{InputCoding, MappingSpec};

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
            coding: InputCoding::Unsigned,
            quantize: Default::default(),
        },
        parallelism: p,
        adc_bits: adc,
        calibrate_percentile: 100.0,
        noise: NoiseParams {
            cell_sigma: 0.0,
            mode: NoiseMode::Static,
            read_sigma: 0.0,
            fs_sigma: 0.0,
            adc_sigma_lsb: 0.0,
            leak: 0.0,
            p_sa0: 0.0,
            p_sa1: 0.0,
            sampling: Sampling::Auto,
        },
        energy: ENERGY_DEFAULTS,
        signed_inputs: InputCoding::TwosComplement,
    }
}

/// [`noiseless_params`] with signed inputs, uniform over `coding`'s range.
#[allow(clippy::too_many_arguments)]
fn signed_params(
    k: usize,
    n: usize,
    b: usize,
    p: usize,
    wbits: u32,
    xbits: u32,
    adc: Option<u32>,
    coding: InputCoding,
) -> Params {
    let mut params = noiseless_params(k, n, b, p, wbits, xbits, adc);
    params.layer.coding = coding;
    params.layer.input_source = InputSource::Uniform;
    params
}

/// The signed input codings.
const SIGNED: [InputCoding; 2] = [InputCoding::TwosComplement, InputCoding::SignMagnitude];

/// Lossless ADC bits for a mapping's range at parallelism `p`.
fn lossless_bits(m: &MappingSpec, p: usize) -> u32 {
    let levels = if m.signed_digits() { 2 * p + 1 } else { p + 1 };
    (usize::BITS - (levels - 1).leading_zeros()).clamp(1, 16)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// No noise and a lossless ADC give the exact product, for every mapping,
    /// shape, parallelism and bit width, on every CPU engine path and on the
    /// reference engine.
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
                let engines: [Box<dyn Engine>; 2] = [Box::new(CpuEngine::new()), Box::new(ReferenceEngine::new())];
                for mut engine in engines {
                    let raw = engine.run(&plan, 0..1, true).unwrap().raw.unwrap();
                    let bad: Vec<(usize, f32)> = raw.iter().cloned().enumerate().filter(|(_, e)| *e != 0.0).take(5).collect();
                    prop_assert!(bad.is_empty(), "{} engine, mapping {} path {:?} k={} n={} p={}: first errors (index, e) {:?}", engine.name(), m.name, path, k, n, p, bad);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Multi-level cells: no noise and a lossless (or ideal) ADC give the
    /// exact product for every digit encoding with 1 to 4 digits per cell
    /// and for 1 to 4 term slots (on weights of at most that many terms),
    /// unsigned and signed inputs, every shape, on the CPU engine's paths
    /// and on the reference engine.
    #[test]
    fn zero_noise_is_exact_with_multi_level_cells(
        k in 1usize..90, n in 1usize..10, b in 1usize..3, p in 1usize..100,
        wbits in 2u32..=8, xbits in 2u32..=8, coding in 0usize..3, ideal in any::<bool>(),
        seed in 0u64..1000, extremes in proptest::collection::vec(any::<bool>(), 2),
    ) {
        let coding = [InputCoding::Unsigned, SIGNED[0], SIGNED[1]][coding];
        let mut params = signed_params(k, n, b, p, wbits, xbits, None, coding);
        if !coding.signed() {
            params.layer.input_source = InputSource::RectifiedGaussian { zero_fraction: 0.3 };
        }
        let mut layer = Layer::build(&params.layer, seed).unwrap();
        let q = (1i32 << (wbits - 1)) - 1;
        if extremes[0] { layer.w[0] = -q; }
        if extremes[1] { *layer.w.last_mut().unwrap() = q; }
        for m in multi_level_mappings() {
            let layer = within_slots(&layer, &m);
            let mut params = params.clone();
            params.adc_bits = if ideal { None } else { Some(lossless_level_bits(&m, p, wbits)) };
            let plan = Plan::new(&params, &layer, &m);
            for path in [NoisePath::Analytic, NoisePath::Aggregated, NoisePath::PerCellStatic, NoisePath::PerCellDynamic] {
                let plan = plan.with_path(path);
                let engines: [Box<dyn Engine>; 2] = [Box::new(CpuEngine::new()), Box::new(ReferenceEngine::new())];
                for mut engine in engines {
                    let y = engine.outputs(&plan, 0).unwrap();
                    let bad: Vec<(usize, f64, i64)> = y.iter().zip(&plan.exact).enumerate().filter(|(_, (y, e))| **y != **e as f64).map(|(i, (y, e))| (i, *y, *e)).take(5).collect();
                    prop_assert!(bad.is_empty(), "{} engine, {:?}, mapping {} path {:?} k={} n={} p={}: first outputs (index, y, exact) {:?}", engine.name(), coding, m.name, path, k, n, p, bad);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Signed inputs, both codings: no noise and a lossless (or ideal) ADC
    /// give the exact signed product for every mapping and shape, the
    /// extreme inputs (`-2^(B-1)` in two's complement) and weights included,
    /// on the CPU engine's paths and on the reference engine.
    #[test]
    fn zero_noise_is_exact_with_signed_inputs(
        k in 1usize..90, n in 1usize..10, b in 1usize..3, p in 1usize..100,
        wbits in 2u32..=8, xbits in 2u32..=8, twos in any::<bool>(), ideal in any::<bool>(),
        seed in 0u64..1000, extremes in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let coding = SIGNED[twos as usize];
        let params = signed_params(k, n, b, p, wbits, xbits, None, coding);
        let mut layer = Layer::build(&params.layer, seed).unwrap();
        let q = (1i32 << (wbits - 1)) - 1;
        let (lo, hi) = coding.range(xbits);
        if extremes[0] { layer.w[0] = -q; }
        if extremes[1] { *layer.w.last_mut().unwrap() = q; }
        if extremes[2] { layer.x[0] = lo; }
        if extremes[3] { *layer.x.last_mut().unwrap() = hi; }
        prop_assert!(layer.x.iter().all(|v| (lo..=hi).contains(v)));
        for m in MappingSpec::presets() {
            let mut params = params.clone();
            params.adc_bits = if ideal { None } else { Some(lossless_bits(&m, p)) };
            let plan = Plan::new(&params, &layer, &m);
            prop_assert_eq!(&plan.exact, &layer.exact());
            for path in [NoisePath::Analytic, NoisePath::Aggregated, NoisePath::PerCellStatic, NoisePath::PerCellDynamic] {
                let plan = plan.with_path(path);
                let engines: [Box<dyn Engine>; 2] = [Box::new(CpuEngine::new()), Box::new(ReferenceEngine::new())];
                for mut engine in engines {
                    let y = engine.outputs(&plan, 0).unwrap();
                    let bad: Vec<(usize, f64, i64)> = y.iter().zip(&plan.exact).enumerate().filter(|(_, (y, e))| **y != **e as f64).map(|(i, (y, e))| (i, *y, *e)).take(5).collect();
                    prop_assert!(bad.is_empty(), "{} engine, {:?}, mapping {} path {:?} k={} n={} p={}: first outputs (index, y, exact) {:?}", engine.name(), coding, m.name, path, k, n, p, bad);
                }
            }
        }
    }
}

/// The exact product is that of the signed values: check it by hand on a
/// small layer.
#[test]
fn signed_exact_product_is_that_of_the_values() {
    for coding in SIGNED {
        let params = signed_params(3, 2, 2, 2, 4, 4, None, coding);
        let mut layer = Layer::build(&params.layer, 1).unwrap();
        layer.w = vec![1, -2, 3, 4, -5, 6];
        layer.x = vec![-7, 2, 5, 7, -1, 0];
        assert_eq!(
            layer.exact(),
            vec![-7 + 6 - 25, 14 + 8 + 30, 7 - 3, -14 - 4]
        );
    }
}

/// Skipping all-zero input planes sees the plane patterns: a chunk of
/// non-negative inputs drives no negative sign-magnitude plane and no top
/// two's complement plane, so those planes are skipped, and a chunk of
/// non-positive ones drives no positive sign-magnitude plane.
#[test]
fn all_zero_signed_input_planes_are_skipped() {
    let (k, p, bits) = (8, 4, 4u32);
    for coding in SIGNED {
        let params = signed_params(k, 3, 1, p, 8, bits, Some(8), coding);
        let mut layer = Layer::build(&params.layer, 2).unwrap();
        // Chunk 0 non-negative, chunk 1 non-positive.
        layer.x = vec![0, 3, 7, 1, -1, -7, 0, -4];
        for mapping in ["zebra", "dense"] {
            let plan = common::plan(&params, &layer, mapping);
            let skip = plan.mapping.skip_zero_inputs;
            let xb = plan.xbits;
            for c in 0..2 {
                for i in 0..xb {
                    let driven = (c * p..(c + 1) * p).any(|kk| plan.x[kk] >> i & 1 == 1);
                    assert_eq!(
                        plan.row_active[c * xb + i],
                        driven || !skip,
                        "{coding:?} {mapping} chunk {c} plane {i}"
                    );
                }
            }
            let top = bits as usize - 1;
            let negative_planes = match coding {
                InputCoding::SignMagnitude => top..2 * top,
                _ => top..top + 1,
            };
            for i in negative_planes {
                assert!(!skip || !plan.row_active[i], "{coding:?} chunk 0 plane {i}");
            }
            if coding == InputCoding::SignMagnitude {
                for i in 0..top {
                    assert!(!skip || !plan.row_active[xb + i], "chunk 1 plane {i}");
                }
            }
            let y = CpuEngine::new().outputs(&plan, 0).unwrap();
            let exact: Vec<f64> = plan.exact.iter().map(|&e| e as f64).collect();
            assert_eq!(y, exact, "{coding:?} {mapping}");
        }
    }
}

// ---------------------------------------------------------------------------
// The shared physics list: every check below runs on every engine through
// `physics_tests!` (reference, cpu, gpu; the gpu instantiation skips with a
// note where there is no adapter, and fails then under ZEBRA_REQUIRE_GPU=1).
// ---------------------------------------------------------------------------

/// An engine for one test of the list, or None where it is unavailable.
type MakeEngine = fn() -> Option<Box<dyn Engine>>;

macro_rules! physics_tests {
    ($engine:ident, $make:ident) => {
        mod $engine {
            const MAKE: super::MakeEngine = super::$make;
            physics_tests!(@each
                static_cell_noise_matches_closed_form,
                dynamic_cell_noise_matches_closed_form_per_cell_and_aggregated,
                read_noise_matches_closed_form,
                zero_noise_is_exact_for_every_mapping_and_path,
                zero_noise_is_exact_with_signed_inputs_on_every_path,
                static_cell_noise_with_signed_inputs_matches_closed_form,
                dynamic_cell_noise_with_signed_inputs_matches_closed_form,
                read_noise_with_signed_inputs_matches_closed_form,
                full_scale_noise_matches_closed_form,
                adc_noise_in_lsb_is_read_noise_of_the_step,
                same_seed_same_result_and_trial_ranges_split_or_whole,
                stuck_at_faults_shift_the_mean_by_their_rates,
                leak_bias_matches_its_expectation,
                calibrated_range_is_the_stated_quantiles_of_clean_sums,
                aggregated_and_per_cell_agree_in_distribution,
                zero_noise_is_exact_with_multi_level_cells_on_every_path,
                multi_level_cell_noise_matches_closed_form,
                stuck_at_faults_on_multi_level_cells_shift_the_mean
            );
        }
    };
    (@each $($test:ident),*) => {
        $(
            #[test]
            fn $test() {
                match MAKE() {
                    Some(mut engine) => super::$test(&mut *engine),
                    None => eprintln!("skipped {}: engine unavailable", stringify!($test)),
                }
            }
        )*
    };
}

fn reference_engine() -> Option<Box<dyn Engine>> {
    Some(Box::new(ReferenceEngine::new()))
}

fn cpu_engine() -> Option<Box<dyn Engine>> {
    Some(Box::new(CpuEngine::new()))
}

fn gpu_engine() -> Option<Box<dyn Engine>> {
    common::gpu_engine().map(|g| Box::new(g) as Box<dyn Engine>)
}

physics_tests!(reference, reference_engine);
physics_tests!(cpu, cpu_engine);
physics_tests!(gpu, gpu_engine);

/// Per-column sample variance of raw errors `[trial][n]` (one input vector).
fn column_variances(raw: &[f32], n: usize) -> Vec<f64> {
    column_moments(raw, n).into_iter().map(|m| m.1).collect()
}

/// Per-column (mean, unbiased variance, fourth central moment) of raw
/// errors `[trial][n]` (one input vector).
fn column_moments(raw: &[f32], n: usize) -> Vec<(f64, f64, f64)> {
    let t = raw.len() / n;
    (0..n)
        .map(|c| {
            let v: Vec<f64> = (0..t).map(|i| raw[i * n + c] as f64).collect();
            let mean = v.iter().sum::<f64>() / t as f64;
            let var = v.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (t - 1) as f64;
            let m4 = v.iter().map(|e| (e - mean).powi(4)).sum::<f64>() / t as f64;
            (mean, var, m4)
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
    noisy_coded(InputCoding::Unsigned, mode, sampling, cell, read)
}

/// [`noisy`] with inputs applied by `coding` (signed ones uniform over its range).
fn noisy_coded(coding: InputCoding, mode: &str, sampling: &str, cell: f64, read: f64) -> String {
    let inputs = if coding.signed() {
        format!(
            "input_sign = \"signed\"\n[array]\nsigned_inputs = \"{}\"\n",
            coding.label()
        )
    } else {
        "input_zero_fraction = 0.2\n[array]\n".to_string()
    };
    format!(
        "version = 1\nseed = 11\n[layer]\nk = 70\nn = 12\ninputs = 1\n{inputs}parallelism = 32\n\
         [adc]\nbits = \"ideal\"\n[noise]\ncell_sigma = {cell}\nmode = \"{mode}\"\nsampling = \"{sampling}\"\nread_sigma = {read}\n"
    )
}

/// Input `k` of vector `b`: its plane pattern weighted by the input planes.
fn input_value(plan: &Plan, b: usize, k: usize) -> f64 {
    let x = plan.x[b * plan.k + k];
    (0..plan.xbits)
        .filter(|i| (x >> i) & 1 == 1)
        .map(|i| plan.input_weights[i] as f64)
        .sum()
}

/// `sum_i x_i^2 bit_i` of input `k` of vector `b` (`4^i` per set bit for
/// unsigned inputs): what dynamic noise weighs its row by.
fn input_energy(plan: &Plan, b: usize, k: usize) -> f64 {
    let x = plan.x[b * plan.k + k];
    (0..plan.xbits)
        .filter(|i| (x >> i) & 1 == 1)
        .map(|i| (plan.input_weights[i] as f64).powi(2))
        .sum()
}

fn simulate(engine: &mut dyn Engine, plan: &Plan, trials: u32) -> Vec<f32> {
    engine.run(plan, 0..trials, true).unwrap().raw.unwrap()
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

fn static_cell_noise_matches_closed_form(engine: &mut dyn Engine) {
    static_cell_noise(engine, InputCoding::Unsigned);
}

fn static_cell_noise_with_signed_inputs_matches_closed_form(engine: &mut dyn Engine) {
    for coding in SIGNED {
        static_cell_noise(engine, coding);
    }
}

/// `Var(e_n) = cell_sigma^2 sum_k x_k^2 sum_j s_j^2 |d_kjn|`, `x_k` the
/// (signed) input value.
fn static_cell_noise(engine: &mut dyn Engine, coding: InputCoding) {
    let sigma = 0.05f64;
    let (params, layer) = common::point(&noisy_coded(coding, "static", "auto", sigma, 0.0));
    for mapping in ["dense", "zebra"] {
        let plan = common::plan(&params, &layer, mapping);
        assert_eq!(plan.path, NoisePath::PerCellStatic);
        assert_eq!(plan.coding, coding);
        for k in 0..plan.k {
            assert_eq!(
                input_value(&plan, 0, k),
                layer.x[k] as f64,
                "{coding:?} input {k}"
            );
        }
        let theory: Vec<f64> = (0..plan.n)
            .map(|n| {
                sigma
                    * sigma
                    * (0..plan.k)
                        .map(|k| (layer.x[k] as f64).powi(2) * plane_energy(&plan, k, n))
                        .sum::<f64>()
            })
            .collect();
        assert_variances(
            &format!("static {mapping} {coding:?}"),
            &column_variances(&simulate(engine, &plan, TRIALS), plan.n),
            &theory,
            TRIALS as usize,
        );
    }
}

fn dynamic_cell_noise_matches_closed_form_per_cell_and_aggregated(engine: &mut dyn Engine) {
    dynamic_cell_noise(engine, InputCoding::Unsigned);
}

fn dynamic_cell_noise_with_signed_inputs_matches_closed_form(engine: &mut dyn Engine) {
    for coding in SIGNED {
        dynamic_cell_noise(engine, coding);
    }
}

/// `Var(e_n) = cell_sigma^2 sum_k sum_i x_i^2 x_k^(i) sum_j s_j^2 |d_kjn|`,
/// `x_i` input plane `i`'s weight (`2^i` for unsigned inputs), per cell and
/// aggregated.
fn dynamic_cell_noise(engine: &mut dyn Engine, coding: InputCoding) {
    let sigma = 0.05f64;
    for sampling in ["per-cell", "aggregated"] {
        let (params, layer) = common::point(&noisy_coded(coding, "dynamic", sampling, sigma, 0.0));
        for mapping in ["dense", "zebra"] {
            let plan = common::plan(&params, &layer, mapping);
            let theory: Vec<f64> = (0..plan.n)
                .map(|n| {
                    sigma
                        * sigma
                        * (0..plan.k)
                            .map(|k| input_energy(&plan, 0, k) * plane_energy(&plan, k, n))
                            .sum::<f64>()
                })
                .collect();
            let what = format!("dynamic {sampling} {mapping} {coding:?}");
            assert_variances(
                &what,
                &column_variances(&simulate(engine, &plan, TRIALS), plan.n),
                &theory,
                TRIALS as usize,
            );
        }
    }
}

fn read_noise_matches_closed_form(engine: &mut dyn Engine) {
    read_noise(engine, InputCoding::Unsigned);
}

fn read_noise_with_signed_inputs_matches_closed_form(engine: &mut dyn Engine) {
    for coding in SIGNED {
        read_noise(engine, coding);
    }
}

/// `Var(e_n) = read_sigma^2 sum_{converted (c,i,j)} x_i^2 s_j^2`.
fn read_noise(engine: &mut dyn Engine, coding: InputCoding) {
    let read = 0.3f64;
    let (params, layer) = common::point(&noisy_coded(coding, "static", "auto", 0.0, read));
    for mapping in ["dense", "zebra"] {
        let plan = common::plan(&params, &layer, mapping);
        let theory = per_conversion_variance(&plan, |_| read * read);
        assert_variances(
            &format!("read {mapping} {coding:?}"),
            &column_variances(&simulate(engine, &plan, TRIALS), plan.n),
            &theory,
            TRIALS as usize,
        );
    }
}

/// Each column's `sum_{converted (c,i,j)} x_i^2 s_j^2 var(g)`: the output
/// variance of independent noise of variance `var(g)` added to every
/// conversion of group `g` of one input vector, ideal ADC.
fn per_conversion_variance(plan: &Plan, var: impl Fn(usize) -> f64) -> Vec<f64> {
    (0..plan.n)
        .map(|n| {
            let mut v = 0.0;
            for c in 0..plan.chunks {
                for i in 0..plan.xbits {
                    if !plan.row_active[c * plan.xbits + i] {
                        continue;
                    }
                    for j in 0..plan.j {
                        let g = plan.group(c, j, n);
                        if plan.converted[g] {
                            let w = plan.input_weights[i] as f64 * plan.scales[j] as f64;
                            v += w * w * var(g);
                        }
                    }
                }
            }
            v
        })
        .collect()
}

/// `fs_sigma`: per conversion, a Gaussian of standard deviation `fs_sigma
/// (hi - lo)`, the group's full-scale range, in quadrature with read noise:
/// `Var(e_n) = sum_{converted (c,i,j)} x_i^2 s_j^2 (read^2 + (fs (hi - lo))^2)`.
fn full_scale_noise_matches_closed_form(engine: &mut dyn Engine) {
    let (read, fs) = (0.3f64, 0.01f64);
    let text = noisy("static", "auto", 0.0, read)
        .replace("read_sigma", &format!("fs_sigma = {fs}\nread_sigma"));
    let (params, layer) = common::point(&text);
    // dense: every group over the full range [0, 32]; zebra: adaptive ranges.
    for mapping in ["dense", "zebra"] {
        let plan = common::plan(&params, &layer, mapping);
        let theory = per_conversion_variance(&plan, |g| {
            let range = (plan.hi[g] - plan.lo[g]) as f64;
            read * read + (fs * range).powi(2)
        });
        assert!(
            theory.iter().all(|&v| v > 1.5 * read * read),
            "fs noise must matter here"
        );
        assert_variances(
            &format!("fs {mapping}"),
            &column_variances(&simulate(engine, &plan, TRIALS), plan.n),
            &theory,
            TRIALS as usize,
        );
    }
}

/// `adc_sigma_lsb`: noise in steps of the conversion's ADC. Where every
/// step is one cell (12 bits over ranges of at most 32 cells), `adc_sigma_lsb
/// = a` is read noise `read_sigma = a`: the same draws, bit for bit, so it
/// inherits the read-noise closed form above; and the step enters (with
/// `fs_sigma`) as `plan::read_sds` says, checked by hand in its unit test.
fn adc_noise_in_lsb_is_read_noise_of_the_step(engine: &mut dyn Engine) {
    let base = noisy("static", "auto", 0.0, 0.0).replace("bits = \"ideal\"", "bits = 12");
    let (params, layer) = common::point(&base.replace("read_sigma = 0", "read_sigma = 0.5"));
    let (lsb_params, _) = common::point(&base.replace("read_sigma = 0", "adc_sigma_lsb = 0.5"));
    for mapping in ["dense", "zebra"] {
        let read = simulate(engine, &common::plan(&params, &layer, mapping), 200);
        let lsb = simulate(engine, &common::plan(&lsb_params, &layer, mapping), 200);
        assert_eq!(read, lsb, "{mapping}");
        assert!(
            read.iter().any(|&e| e != 0.0),
            "{mapping}: the noise must show"
        );
    }
}

/// No noise and a lossless ADC (or an ideal one) give the exact product for
/// every mapping and every noise path's code, on fixed awkward shapes
/// (`zero_noise_is_exact` above searches shapes on the CPU and reference
/// engines). Sums are
/// integers below 2^24, exact in f32 too.
fn zero_noise_is_exact_for_every_mapping_and_path(engine: &mut dyn Engine) {
    for (k, n, b, p, wbits, xbits) in [
        (1, 1, 1, 1, 2, 1),
        (65, 7, 2, 13, 8, 8),
        (80, 9, 2, 37, 5, 3),
        (130, 5, 3, 64, 8, 6),
    ] {
        let params = noiseless_params(k, n, b, p, wbits, xbits, None);
        let mut layer = Layer::build(&params.layer, k as u64).unwrap();
        let q = (1i32 << (wbits - 1)) - 1;
        layer.w[0] = -q;
        *layer.w.last_mut().unwrap() = q;
        layer.x[0] = (1 << xbits) - 1;
        exact_on_every_path(engine, &params, &layer, &format!("k={k} n={n} p={p}"));
    }
}

/// Every mapping, with an ideal and a lossless ADC, on every noise path's
/// code: no error at all in two trials of the noise-free `params`.
fn exact_on_every_path(engine: &mut dyn Engine, params: &Params, layer: &Layer, what: &str) {
    for m in MappingSpec::presets() {
        for adc in [None, Some(lossless_bits(&m, params.parallelism))] {
            let mut params = params.clone();
            params.adc_bits = adc;
            let plan = Plan::new(&params, layer, &m);
            for path in [
                NoisePath::Analytic,
                NoisePath::Aggregated,
                NoisePath::PerCellStatic,
                NoisePath::PerCellDynamic,
            ] {
                let plan = plan.with_path(path);
                let raw = simulate(engine, &plan, 2);
                let bad: Vec<(usize, f32)> = raw
                    .iter()
                    .cloned()
                    .enumerate()
                    .filter(|(_, e)| *e != 0.0)
                    .take(5)
                    .collect();
                assert!(
                    bad.is_empty(),
                    "{what} {} {path:?} adc {adc:?}: first errors (index, e) {bad:?}",
                    m.name
                );
            }
        }
    }
}

/// [`zero_noise_is_exact_for_every_mapping_and_path`] with signed inputs in
/// both codings, the extreme values at both ends (8-bit sign-magnitude
/// inputs take 14 planes: two of the GPU kernels' groups of eight).
fn zero_noise_is_exact_with_signed_inputs_on_every_path(engine: &mut dyn Engine) {
    for (k, n, b, p, wbits, xbits) in [
        (1, 1, 1, 1, 2, 2),
        (65, 7, 2, 13, 8, 8),
        (80, 9, 2, 37, 5, 3),
        (130, 5, 3, 64, 8, 6),
    ] {
        for coding in SIGNED {
            let params = signed_params(k, n, b, p, wbits, xbits, None, coding);
            let mut layer = Layer::build(&params.layer, k as u64).unwrap();
            let q = (1i32 << (wbits - 1)) - 1;
            let (lo, hi) = coding.range(xbits);
            layer.w[0] = -q;
            *layer.w.last_mut().unwrap() = q;
            layer.x[0] = lo;
            *layer.x.last_mut().unwrap() = hi;
            let what = format!("{coding:?} k={k} n={n} p={p}");
            exact_on_every_path(engine, &params, &layer, &what);
        }
    }
}

/// The same plan gives the same per-trial results in a fresh engine, in the
/// same engine again, and in trial ranges split anywhere.
fn same_seed_same_result_and_trial_ranges_split_or_whole(engine: &mut dyn Engine) {
    let text = "version = 1\nseed = 3\n[layer]\nk = 100\nn = 9\ninputs = 3\n[array]\nparallelism = 24\n\
                [adc]\nbits = 6\n[noise]\ncell_sigma = 0.08\nread_sigma = 0.4\np_sa0 = 0.01\np_sa1 = 0.01\nleak = 0.02\n";
    let (params, layer) = common::point(text);
    for mapping in ["dense", "zebra", "dense-cal"] {
        for (mode, sampling) in [
            (NoiseMode::Static, Sampling::Auto),
            (NoiseMode::Dynamic, Sampling::PerCell),
            (NoiseMode::Dynamic, Sampling::Aggregated),
        ] {
            let mut params = params.clone();
            params.noise.mode = mode;
            params.noise.sampling = sampling;
            let plan = Plan::new(&params, &layer, &MappingSpec::preset(mapping).unwrap());
            let what = format!("{mapping} {mode:?} {sampling:?}");
            let whole = engine.run(&plan, 0..12, true).unwrap();
            let again = engine.run(&plan, 0..12, true).unwrap();
            assert_eq!(whole.trials, again.trials, "{what}: same engine again");
            assert_eq!(whole.raw, again.raw, "{what}: same engine again");
            assert_eq!(whole.hist, again.hist, "{what}: same engine again");
            // A new plan built from the same inputs (a new id, no cache).
            let rebuilt = Plan::new(&params, &layer, &MappingSpec::preset(mapping).unwrap());
            let fresh = engine.run(&rebuilt, 0..12, true).unwrap();
            assert_eq!(whole.raw, fresh.raw, "{what}: rebuilt plan");
            let mut split_trials = Vec::new();
            let mut split_raw = Vec::new();
            for range in [0..1, 1..5, 5..12] {
                let part = engine.run(&plan, range.clone(), true).unwrap();
                assert_eq!(part.first_trial, range.start);
                split_trials.extend(part.trials);
                split_raw.extend(part.raw.unwrap());
            }
            assert_eq!(whole.trials, split_trials, "{what}: split ranges");
            assert_eq!(
                whole.raw.as_ref().unwrap(),
                &split_raw,
                "{what}: split ranges"
            );
            // The outputs path is the same simulation as the statistics path.
            let per = plan.b * plan.n;
            for t in [0u32, 7] {
                let y = engine.outputs(&plan, t).unwrap();
                for (o, &yv) in y.iter().enumerate() {
                    let e = whole.raw.as_ref().unwrap()[t as usize * per + o] as f64;
                    let want = plan.exact[o] as f64 + e;
                    assert!(
                        (yv - want).abs() <= 1e-6 * (1.0 + want.abs()),
                        "{what}: trial {t} output {o}: outputs() {yv}, run() {want}"
                    );
                }
            }
        }
    }
}

/// A layer with only stuck-at faults and an ideal ADC: each cell's digit
/// `d` stays with probability `1 - p0 - p1`, becomes 0 with `p0`, and the
/// "on" digit (+1, or sign(w) for signed encodings) with `p1`. Summed over
/// a trial's outputs, `S = sum_(b,n) e` has, over converted groups only,
/// `E[S] = sum s_j X_k (p1 on - (p0 + p1) d)` and `Var[S] = sum (s_j X_k)^2
/// Var(d')`, `X_k = sum_b x_bk` (faults are independent across cells and
/// trials). The mean of `S` over T trials must be within 5 standard errors.
fn stuck_at_faults_shift_the_mean_by_their_rates(engine: &mut dyn Engine) {
    let trials = 400u32;
    for (p0, p1) in [(0.05f64, 0.0f64), (0.0, 0.05), (0.03, 0.02)] {
        let text = format!(
            "version = 1\nseed = 9\n[layer]\nk = 40\nn = 6\ninputs = 2\ninput_bits = 4\n[array]\nparallelism = 16\n\
             [adc]\nbits = \"ideal\"\n[noise]\np_sa0 = {p0}\np_sa1 = {p1}\n"
        );
        let (params, layer) = common::point(&text);
        for mapping in ["dense", "zebra"] {
            let plan = common::plan(&params, &layer, mapping);
            let signed = plan.mapping.signed_digits();
            let (mut mean, mut var) = (0.0, 0.0);
            for j in 0..plan.j {
                for k in 0..plan.k {
                    let xk: f64 = (0..plan.b).map(|b| plan.x[b * plan.k + k] as f64).sum();
                    for n in 0..plan.n {
                        if !plan.converted[plan.group(k / plan.p, j, n)] {
                            continue;
                        }
                        let d = plan.digits[(j * plan.k + k) * plan.n + n] as f64;
                        let on = if signed && layer.w[k * plan.n + n] < 0 {
                            -1.0
                        } else {
                            1.0
                        };
                        let e1 = (1.0 - p0 - p1) * d + p1 * on;
                        let e2 = (1.0 - p0 - p1) * d * d + p1 * on * on;
                        let coef = plan.scales[j] as f64 * xk;
                        mean += coef * (e1 - d);
                        var += coef * coef * (e2 - e1 * e1);
                    }
                }
            }
            let raw = simulate(engine, &plan, trials);
            let per = plan.b * plan.n;
            let sums: Vec<f64> = raw
                .chunks(per)
                .map(|t| t.iter().map(|&e| e as f64).sum())
                .collect();
            let got = sums.iter().sum::<f64>() / trials as f64;
            let se = (var / trials as f64).sqrt();
            assert!(
                (got - mean).abs() <= 5.0 * se,
                "{mapping} p_sa0 {p0} p_sa1 {p1}: mean of S {got:.2} vs expected {mean:.2} (5 SE = {:.2})",
                5.0 * se
            );
        }
    }
}

/// With leak and nothing else, every active zero-digit cell of a converted
/// group adds `leak`: `e_bn = leak sum_k x_bk sum_(j converted) s_j [d_kjn =
/// 0]`, deterministic. Checked through the analytic and the per-cell code,
/// within the f32 rounding bound of `common::f32_engine_bounds`.
fn leak_bias_matches_its_expectation(engine: &mut dyn Engine) {
    let leak = 0.05f32;
    let text = format!(
        "version = 1\nseed = 4\n[layer]\nk = 50\nn = 7\ninputs = 3\n[array]\nparallelism = 16\n\
         [adc]\nbits = \"ideal\"\n[noise]\nleak = {leak}\n"
    );
    let (params, layer) = common::point(&text);
    for mapping in ["dense", "zebra", "csd"] {
        let plan = common::plan(&params, &layer, mapping);
        let want: Vec<f64> = (0..plan.b * plan.n)
            .map(|o| {
                let (b, n) = (o / plan.n, o % plan.n);
                let mut e = 0.0;
                for k in 0..plan.k {
                    for j in 0..plan.j {
                        let zero = plan.digits[(j * plan.k + k) * plan.n + n] == 0;
                        if zero && plan.converted[plan.group(k / plan.p, j, n)] {
                            e += plan.x[b * plan.k + k] as f64 * plan.scales[j] as f64;
                        }
                    }
                }
                leak as f64 * e
            })
            .collect();
        assert!(
            want.iter().any(|&e| e.abs() > 1.0),
            "{mapping}: leak bias too small to test"
        );
        let bounds = common::f32_engine_bounds(&plan);
        for path in [
            NoisePath::Analytic,
            NoisePath::PerCellStatic,
            NoisePath::PerCellDynamic,
        ] {
            let plan = plan.with_path(path);
            let raw = simulate(engine, &plan, 1);
            for (o, (&got, &w)) in raw.iter().zip(&want).enumerate() {
                let tol = bounds[o] + common::F32_U * w.abs();
                assert!(
                    (got as f64 - w).abs() <= tol,
                    "{mapping} {path:?}: output {o}: error {got} vs leak bias {w} (tolerance {tol:e})"
                );
            }
        }
    }
}

/// A calibrated ADC at the 90th percentile: each plane's range is
/// `[min(0, q_0.1), max(0, q_0.9)]` of that plane's clean sums over every
/// input vector, chunk, input bit and column (nearest rank, `q_f` the
/// sorted sums' element `round(f (len - 1))`; and at least one cell wide),
/// computed here from the layer; and without noise each engine outputs
/// `sum 2^i s_j adc(clean sum)` over that range, clipping included.
fn calibrated_range_is_the_stated_quantiles_of_clean_sums(engine: &mut dyn Engine) {
    use zebra_cim::model::{encode_planes, Adc, AdcRange, Encoding};
    // A 2-bit ADC: 3 codes, so every range wider than 3 cells is read with
    // its ends as the extreme codes, and sums beyond them are clipped.
    let text = "version = 1\nseed = 8\n[layer]\nk = 60\nn = 10\ninputs = 6\ninput_bits = 4\n[array]\nparallelism = 16\n\
                [adc]\nbits = 2\ncalibrate_percentile = 90.0\n";
    let (params, layer) = common::point(text);
    let (k, n, b, p) = (layer.k, layer.n, layer.inputs, 16);
    let xbits = layer.input_bits as usize;
    let adc = Adc { bits: Some(2) };
    let chunks = k.div_ceil(p);
    // dense-cal ({0,1} digits: the low end is 0) and a signed calibrated
    // mapping (sign-magnitude digits: both ends are quantiles).
    let signed = MappingSpec {
        name: "signmag-cal".into(),
        encoding: Encoding::SignMagnitude,
        bits_per_cell: 1,
        slots: None,
        skip_zero_planes: false,
        skip_zero_inputs: false,
        adc_range: AdcRange::Calibrated,
    };
    for mapping in [MappingSpec::preset("dense-cal").unwrap(), signed] {
        let planes = encode_planes(mapping.encoding, layer.weight_bits, &layer.w, k, n);
        let clean = |bb: usize, c: usize, i: usize, j: usize, col: usize| -> i64 {
            (c * p..((c + 1) * p).min(k))
                .map(|kk| (layer.x[bb * k + kk] >> i & 1) as i64 * planes.digit(j, kk, col) as i64)
                .sum()
        };
        let (mut ranges, mut clipped_high, mut clipped_low) = (Vec::new(), 0, 0);
        for j in 0..planes.count() {
            let mut sums = Vec::new();
            for bb in 0..b {
                for c in 0..chunks {
                    for i in 0..xbits {
                        for col in 0..n {
                            sums.push(clean(bb, c, i, j, col));
                        }
                    }
                }
            }
            sums.sort();
            let q = |f: f64| sums[(f * (sums.len() - 1) as f64).round() as usize];
            let lo = q(0.1).min(0);
            let hi = q(0.9).max(0).max(lo + 1);
            if hi - lo >= 3 {
                clipped_high += sums.iter().filter(|&&s| s > hi).count();
                clipped_low += sums.iter().filter(|&&s| s < lo).count();
            }
            ranges.push((lo as f32, hi as f32));
        }
        let name = &mapping.name;
        assert!(
            clipped_high > 0,
            "{name}: no clipping at the high end to see"
        );
        if mapping.signed_digits() {
            assert!(clipped_low > 0, "{name}: no clipping at the low end to see");
        }
        let plan = Plan::new(&params, &layer, &mapping);
        for c in 0..chunks {
            for (j, &(lo, hi)) in ranges.iter().enumerate() {
                for col in 0..n {
                    let g = plan.group(c, j, col);
                    assert_eq!(
                        (plan.lo[g], plan.hi[g]),
                        (lo, hi),
                        "{name}: plane {j} chunk {c} column {col}"
                    );
                }
            }
        }
        let want: Vec<f64> = (0..b * n)
            .map(|o| {
                let (bb, col) = (o / n, o % n);
                let mut y = 0.0;
                for c in 0..chunks {
                    for i in 0..xbits {
                        for (j, &(lo, hi)) in ranges.iter().enumerate() {
                            let v = adc.convert(clean(bb, c, i, j, col) as f32, lo, hi) as f64;
                            y += (1u64 << i) as f64 * planes.scales[j] as f64 * v;
                        }
                    }
                }
                y
            })
            .collect();
        let bounds = common::f32_engine_bounds(&plan);
        let y = engine.outputs(&plan, 0).unwrap();
        for (o, (&got, &w)) in y.iter().zip(&want).enumerate() {
            assert!(
                (got - w).abs() <= bounds[o],
                "{name}: output {o}: engine {got}, from the calibrated range {w} (tolerance {:e})",
                bounds[o]
            );
        }
    }
}

/// Dynamic noise sampled per cell and aggregated (one Gaussian per
/// conversion) draw different numbers but must agree in distribution, also
/// through a quantising ADC: per column, the two means within 5 standard
/// errors of their difference (`sqrt(v1/T + v2/T)`), and the two variances
/// within 5 standard errors of theirs (a sample variance's standard error is
/// `sqrt((m4 - v^2) / T)`, any distribution).
fn aggregated_and_per_cell_agree_in_distribution(engine: &mut dyn Engine) {
    let trials = 2000u32;
    let text = "version = 1\nseed = 12\n[layer]\nk = 70\nn = 12\ninputs = 1\ninput_zero_fraction = 0.2\n[array]\nparallelism = 32\n\
                [adc]\nbits = 5\n[noise]\ncell_sigma = 0.1\nmode = \"dynamic\"\nsampling = \"per-cell\"\nread_sigma = 0.3\n";
    let (params, layer) = common::point(text);
    for mapping in ["dense", "zebra"] {
        let plan = common::plan(&params, &layer, mapping);
        assert_eq!(plan.path, NoisePath::PerCellDynamic);
        let per_cell = column_moments(&simulate(engine, &plan, trials), plan.n);
        let aggregated = column_moments(
            &simulate(engine, &plan.with_path(NoisePath::Aggregated), trials),
            plan.n,
        );
        let t = trials as f64;
        for (col, (a, g)) in per_cell.iter().zip(&aggregated).enumerate() {
            let se_mean = (a.1 / t + g.1 / t).sqrt();
            assert!(
                (a.0 - g.0).abs() <= 5.0 * se_mean,
                "{mapping} column {col}: mean per-cell {:.3} aggregated {:.3} (5 SE = {:.3})",
                a.0,
                g.0,
                5.0 * se_mean
            );
            let se_var = ((a.2 - a.1 * a.1) / t + (g.2 - g.1 * g.1) / t).sqrt();
            assert!(
                (a.1 - g.1).abs() <= 5.0 * se_var,
                "{mapping} column {col}: variance per-cell {:.3} aggregated {:.3} (5 SE = {:.3})",
                a.1,
                g.1,
                5.0 * se_var
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Plan-level and CPU-engine-specific checks.
// ---------------------------------------------------------------------------

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
    // ZEBRA's adaptive range is [-n_neg, n_pos] of each (chunk, plane,
    // column) group's nominal digits, counted here.
    let zplan = common::plan(&params, &layer, "zebra");
    for c in 0..zplan.chunks {
        for j in 0..zplan.j {
            for n in 0..zplan.n {
                let rows = c * zplan.p..((c + 1) * zplan.p).min(zplan.k);
                let digits = rows.map(|k| zplan.digits[(j * zplan.k + k) * zplan.n + n]);
                let (neg, pos) = digits.fold((0, 0), |(neg, pos), d| {
                    (neg + (d < 0) as i32, pos + (d > 0) as i32)
                });
                let g = zplan.group(c, j, n);
                assert_eq!(
                    (zplan.lo[g], zplan.hi[g]),
                    (-(neg as f32), pos as f32),
                    "chunk {c} plane {j} column {n}"
                );
                assert_eq!(
                    zplan.converted[g],
                    neg + pos > 0,
                    "chunk {c} plane {j} column {n}"
                );
            }
        }
    }
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

// ---------------------------------------------------------------------------
// Multi-level cells and term slots (docs/MODEL.md).
// ---------------------------------------------------------------------------

/// Mappings with multi-level cells: every digit encoding with 1 to 4 digits
/// per cell, and 1 to 4 term slots, over the three ADC ranges and with and
/// without skipping.
fn multi_level_mappings() -> Vec<MappingSpec> {
    use zebra_cim::model::{AdcRange, Encoding};
    let ranges = [AdcRange::Adaptive, AdcRange::Full, AdcRange::Calibrated];
    let mut out = Vec::new();
    for (e, encoding) in [
        Encoding::TwosComplement,
        Encoding::SignMagnitude,
        Encoding::Csd,
    ]
    .into_iter()
    .enumerate()
    {
        for c in 1..=4u32 {
            out.push(cell_mapping(
                encoding,
                c,
                None,
                ranges[(e + c as usize) % 3],
                c % 2 == 0,
            ));
        }
    }
    for k in 1..=4u32 {
        out.push(cell_mapping(
            Encoding::TermSlots,
            1,
            Some(k),
            ranges[k as usize % 3],
            k % 2 == 1,
        ));
    }
    out
}

/// A custom mapping of `encoding` with `c` digits per cell or `slots` term slots.
fn cell_mapping(
    encoding: zebra_cim::model::Encoding,
    c: u32,
    slots: Option<u32>,
    adc_range: zebra_cim::model::AdcRange,
    skip: bool,
) -> MappingSpec {
    MappingSpec {
        name: format!("{}-c{c}-k{}", encoding.label(), slots.unwrap_or(0)),
        encoding,
        bits_per_cell: c,
        slots,
        skip_zero_planes: skip,
        skip_zero_inputs: skip,
        adc_range,
    }
}

/// `layer` with every weight of more CSD terms than `m`'s slots replaced by
/// its largest power of two (term-slots mappings; others take it as it is).
fn within_slots(layer: &Layer, m: &MappingSpec) -> Layer {
    use zebra_cim::model::{encode, Encoding};
    let mut layer = layer.clone();
    let Some(k) = m.slots else { return layer };
    let mut d = vec![0i8; layer.weight_bits as usize];
    for w in layer.w.iter_mut() {
        encode(Encoding::Csd, layer.weight_bits, *w, &mut d);
        if d.iter().filter(|&&d| d != 0).count() > k as usize {
            *w = w.signum() * (1 << (31 - w.unsigned_abs().leading_zeros()));
        }
    }
    assert_eq!(layer.check_mapping(m), Ok(()));
    layer
}

/// Lossless ADC bits for a multi-level mapping at parallelism `p`: every
/// sum within its full range `P [lowest, highest level]` is a code.
fn lossless_level_bits(m: &MappingSpec, p: usize, weight_bits: u32) -> u32 {
    let bounds = m.level_bounds(weight_bits);
    let lo = bounds.iter().map(|b| b.0 as i64).min().unwrap();
    let hi = bounds.iter().map(|b| b.1 as i64).max().unwrap();
    let width = (p as i64 * (hi - lo)) as u64;
    (u64::BITS - width.leading_zeros()).clamp(1, 16)
}

/// `sum_j s_j^2 L_kjn^2` for one weight: its cells' share of cell noise.
fn level_energy(plan: &Plan, k: usize, n: usize) -> f64 {
    (0..plan.j)
        .map(|j| {
            (plan.scales[j] as f64).powi(2)
                * (plan.digits[(j * plan.k + k) * plan.n + n] as f64).powi(2)
        })
        .sum()
}

/// Two multi-level mappings for the noise checks: sign-magnitude with two
/// digits per cell (levels up to 3) and four term slots (levels up to 128,
/// which hold every 8-bit weight).
fn noisy_multi_level_mappings() -> [MappingSpec; 2] {
    use zebra_cim::model::{AdcRange, Encoding};
    [
        cell_mapping(Encoding::SignMagnitude, 2, None, AdcRange::Adaptive, true),
        cell_mapping(Encoding::TermSlots, 1, Some(4), AdcRange::Full, false),
    ]
}

/// [`zero_noise_is_exact_for_every_mapping_and_path`] for multi-level cells
/// on fixed awkward shapes, on every engine (the property test above
/// searches shapes on the CPU and reference engines).
fn zero_noise_is_exact_with_multi_level_cells_on_every_path(engine: &mut dyn Engine) {
    for (k, n, b, p, wbits, xbits, coding) in [
        (1, 1, 1, 1, 2, 2, InputCoding::Unsigned),
        (65, 7, 2, 13, 8, 8, InputCoding::SignMagnitude),
        (80, 9, 2, 37, 5, 3, InputCoding::TwosComplement),
        (130, 5, 3, 64, 8, 6, InputCoding::Unsigned),
    ] {
        let mut params = signed_params(k, n, b, p, wbits, xbits, None, coding);
        if !coding.signed() {
            params.layer.input_source = InputSource::RectifiedGaussian { zero_fraction: 0.3 };
        }
        let mut layer = Layer::build(&params.layer, k as u64).unwrap();
        let q = (1i32 << (wbits - 1)) - 1;
        layer.w[0] = -q;
        *layer.w.last_mut().unwrap() = q;
        for m in multi_level_mappings() {
            let layer = within_slots(&layer, &m);
            for adc in [None, Some(lossless_level_bits(&m, p, wbits))] {
                let mut params = params.clone();
                params.adc_bits = adc;
                let plan = Plan::new(&params, &layer, &m);
                for path in [
                    NoisePath::Analytic,
                    NoisePath::Aggregated,
                    NoisePath::PerCellStatic,
                    NoisePath::PerCellDynamic,
                ] {
                    let raw = simulate(engine, &plan.with_path(path), 2);
                    let bad: Vec<(usize, f32)> = raw
                        .iter()
                        .cloned()
                        .enumerate()
                        .filter(|(_, e)| *e != 0.0)
                        .take(5)
                        .collect();
                    assert!(
                        bad.is_empty(),
                        "{} {coding:?} k={k} n={n} p={p} {path:?} adc {adc:?}: first errors (index, e) {bad:?}",
                        m.name
                    );
                }
            }
        }
    }
}

/// A cell of level `L` adds `L (1 + sigma z)`, so static noise gives
/// `Var(e_n) = sigma^2 sum_k x_k^2 sum_j s_j^2 L_kjn^2` and dynamic noise,
/// per cell and aggregated, `sigma^2 sum_k sum_i x_i^2 x_k^(i) sum_j s_j^2
/// L_kjn^2`, with signed inputs (two's complement) and unsigned ones.
fn multi_level_cell_noise_matches_closed_form(engine: &mut dyn Engine) {
    let sigma = 0.05f64;
    for coding in [InputCoding::Unsigned, InputCoding::TwosComplement] {
        for (mode, sampling, path) in [
            ("static", "auto", NoisePath::PerCellStatic),
            ("dynamic", "per-cell", NoisePath::PerCellDynamic),
            ("dynamic", "aggregated", NoisePath::Aggregated),
        ] {
            let (params, layer) = common::point(&noisy_coded(coding, mode, sampling, sigma, 0.0));
            for m in noisy_multi_level_mappings() {
                let plan = Plan::new(&params, &layer, &m);
                assert_eq!(plan.path, path);
                assert!(plan.digits.iter().any(|d| d.abs() > 1), "{}", m.name);
                let theory: Vec<f64> = (0..plan.n)
                    .map(|n| {
                        sigma
                            * sigma
                            * (0..plan.k)
                                .map(|k| {
                                    let x = if mode == "static" {
                                        (layer.x[k] as f64).powi(2)
                                    } else {
                                        input_energy(&plan, 0, k)
                                    };
                                    x * level_energy(&plan, k, n)
                                })
                                .sum::<f64>()
                    })
                    .collect();
                assert_variances(
                    &format!("{mode} {sampling} {} {coding:?}", m.name),
                    &column_variances(&simulate(engine, &plan, TRIALS), plan.n),
                    &theory,
                    TRIALS as usize,
                );
            }
        }
    }
}

/// [`stuck_at_faults_shift_the_mean_by_their_rates`] for multi-level cells:
/// a cell stuck at 1 takes the largest level of its weight's sign that its
/// plane holds (from `level_bounds`), so `E[S] = sum s_j X_k (p1 on - (p0 +
/// p1) L)` over converted groups.
fn stuck_at_faults_on_multi_level_cells_shift_the_mean(engine: &mut dyn Engine) {
    let trials = 400u32;
    let (p0, p1) = (0.03f64, 0.02f64);
    let text = format!(
        "version = 1\nseed = 9\n[layer]\nk = 40\nn = 6\ninputs = 2\ninput_bits = 4\n[array]\nparallelism = 16\n\
         [adc]\nbits = \"ideal\"\n[noise]\np_sa0 = {p0}\np_sa1 = {p1}\n"
    );
    let (params, layer) = common::point(&text);
    use zebra_cim::model::{AdcRange, Encoding};
    let tc2 = cell_mapping(Encoding::TwosComplement, 2, None, AdcRange::Full, false);
    for m in noisy_multi_level_mappings().into_iter().chain([tc2]) {
        let plan = Plan::new(&params, &layer, &m);
        let bounds = m.level_bounds(layer.weight_bits);
        let (mut mean, mut var) = (0.0, 0.0);
        for (j, &(lo, hi)) in bounds.iter().enumerate() {
            for k in 0..plan.k {
                let xk: f64 = (0..plan.b).map(|b| plan.x[b * plan.k + k] as f64).sum();
                for n in 0..plan.n {
                    if !plan.converted[plan.group(k / plan.p, j, n)] {
                        continue;
                    }
                    let l = plan.digits[(j * plan.k + k) * plan.n + n] as f64;
                    let on = if layer.w[k * plan.n + n] < 0 && lo < 0 {
                        lo
                    } else {
                        hi
                    } as f64;
                    let e1 = (1.0 - p0 - p1) * l + p1 * on;
                    let e2 = (1.0 - p0 - p1) * l * l + p1 * on * on;
                    let coef = plan.scales[j] as f64 * xk;
                    mean += coef * (e1 - l);
                    var += coef * coef * (e2 - e1 * e1);
                }
            }
        }
        let raw = simulate(engine, &plan, trials);
        let sums: Vec<f64> = raw
            .chunks(plan.b * plan.n)
            .map(|t| t.iter().map(|&e| e as f64).sum())
            .collect();
        let got = sums.iter().sum::<f64>() / trials as f64;
        let se = (var / trials as f64).sqrt();
        assert!(
            (got - mean).abs() <= 5.0 * se,
            "{}: mean of S {got:.2} vs expected {mean:.2} (5 SE = {:.2})",
            m.name,
            5.0 * se
        );
    }
}

/// The plan's view of multi-level cells, by hand: adaptive ranges are the
/// sums of the group's positive levels and negative magnitudes, full
/// ranges `P` times the extreme levels, stuck-at-1 levels the largest of
/// the weight's sign, and active reads count non-zero levels once.
#[test]
fn multi_level_ranges_stuck_at_levels_and_reads_by_hand() {
    use zebra_cim::model::{AdcRange, Encoding};
    let text = "version = 1\nseed = 2\n[layer]\nk = 4\nn = 2\ninputs = 1\nweight_bits = 4\ninput_bits = 1\n[array]\nparallelism = 4\n";
    let (params, mut layer) = common::point(text);
    // Columns [-3, 7, 5, 0] and [1, -7, 0, 2].
    layer.w = vec![-3, 1, 7, -7, 5, 0, 0, 2];
    layer.x = vec![1, 1, 0, 1];
    // Two's complement, two digits per cell at 4 bits: slices of levels
    // [0, 3] and [-2, 1]. -3 = 1101: (1, -1); 7: (3, 1); 5: (1, 1);
    // 1: (1, 0); -7 = 1001: (1, -2); 2: (2, 0).
    let tc = cell_mapping(Encoding::TwosComplement, 2, None, AdcRange::Adaptive, true);
    let plan = Plan::new(&params, &layer, &tc);
    assert_eq!(plan.scales, vec![1, 4]);
    assert_eq!(
        plan.digits,
        vec![1, 1, 3, 1, 1, 0, 0, 2, -1, 0, 1, -2, 1, 0, 0, 0]
    );
    let range = |j: usize, n: usize| {
        let g = plan.group(0, j, n);
        (plan.lo[g], plan.hi[g])
    };
    assert_eq!(range(0, 0), (0.0, 5.0));
    assert_eq!(range(0, 1), (0.0, 4.0));
    assert_eq!(range(1, 0), (-1.0, 2.0));
    assert_eq!(range(1, 1), (-2.0, 0.0));
    // Stuck-at-1: 3 in the low slice; in the top slice -2 for negative weights, else 1.
    assert_eq!(&plan.sa1_digit[..8], &[3; 8]);
    assert_eq!(&plan.sa1_digit[8..], &[-2, 1, 1, -2, 1, 1, 1, 1]);
    // Reads of non-zero levels on driven rows 0, 1 and 3: 5 in the low
    // slice, 3 in the top one.
    assert_eq!(plan.counters.active_reads, 8);
    assert_eq!(plan.counters.conversions, 4);
    let full = Plan::new(
        &params,
        &layer,
        &MappingSpec {
            adc_range: AdcRange::Full,
            ..tc
        },
    );
    assert!((0..4).all(|g| (full.lo[g], full.hi[g]) == (-8.0, 12.0)));
    // Term slots: 7 = 8 - 1, the full range is P 2^(Bw-1) either way.
    let ts = cell_mapping(Encoding::TermSlots, 1, Some(2), AdcRange::Full, false);
    let plan = Plan::new(&params, &layer, &ts);
    assert_eq!(plan.digits[2], 8);
    assert_eq!(plan.digits[8 + 2], -1);
    assert!((0..4).all(|g| (plan.lo[g], plan.hi[g]) == (-32.0, 32.0)));
    assert_eq!(&plan.sa1_digit[..8], &[-8, 8, 8, -8, 8, 8, 8, 8]);
    assert_eq!(plan.layout().cells, 16);
}
