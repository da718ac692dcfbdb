//! Numbers that carry verdicts, against hand counts on a tiny layer: the
//! cost counters of a plan (conversions by effective resolution included),
//! the energy proxy of a result row, and the energy and area models
//! (docs/MODEL.md, "Energy proxy" and "Energy and area models").

use zebra_cim::engine::reference::ReferenceEngine;
use zebra_cim::engine::stats::Accumulator;
use zebra_cim::engine::Engine;
use zebra_cim::experiment::plan::{Counters, Plan};
use zebra_cim::experiment::workload::Layer;
use zebra_cim::experiment::*;
use zebra_cim::io::csv::{columns, record};
use zebra_cim::model::energy::{
    area, energy, AdcModel, AdcScaling, BitsHistogram, EnergyParams, BITS, TRANSISTOR_UM2,
};
use zebra_cim::model::{InputCoding, MappingSpec};
use zebra_cim::sweep::output::{ResultRow, RunInfo};

/// K = 4, N = 2, two input vectors of 2-bit inputs, 3-bit weights, P = 2
/// (chunk 0 = rows 0-1, chunk 1 = rows 2-3), a 3-bit ADC.
///
/// ```text
///        n=0  n=1          x0 = [1, 2, 0, 0]
///   k0    1    0           x1 = [3, 0, 0, 1]
///   k1   -2    0
///   k2    0    0
///   k3    3   -1
/// ```
fn tiny(adc_bits: Option<u32>) -> (Params, Layer) {
    let params = Params {
        trials: 1,
        seed: 1,
        layer: LayerParams {
            k: 4,
            n: 2,
            inputs: 2,
            weight_bits: 3,
            input_bits: 2,
            weights: WeightSource::Gaussian,
            input_source: InputSource::RectifiedGaussian { zero_fraction: 0.0 },
            coding: InputCoding::Unsigned,
            quantize: Default::default(),
        },
        parallelism: 2,
        adc_bits,
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
    };
    let layer = Layer {
        k: 4,
        n: 2,
        inputs: 2,
        weight_bits: 3,
        input_bits: 2,
        w: vec![1, 0, -2, 0, 0, 0, 3, -1],
        x: vec![1, 2, 0, 0, 3, 0, 0, 1],
        coding: InputCoding::Unsigned,
    };
    (params, layer)
}

/// A histogram by bits with counts `(bits, count)`.
fn hist(counts: &[(usize, u64)]) -> BitsHistogram {
    let mut h = [0; BITS];
    for &(b, n) in counts {
        h[b] = n;
    }
    h
}

fn plan(mapping: &str, adc_bits: Option<u32>) -> Plan {
    let (params, layer) = tiny(adc_bits);
    Plan::new(&params, &layer, &MappingSpec::preset(mapping).unwrap())
}

#[test]
fn zebra_counters_match_the_hand_count() {
    // Sign-magnitude, planes s = (1, 2): digits (plane 0, plane 1) are
    // 1 -> (+1, 0), -2 -> (0, -1), 3 -> (+1, +1), -1 -> (-1, 0), 0 -> (0, 0).
    // Groups (chunk, plane, column) with a non-zero digit:
    //   c0 j0 n0 (k0 +1), c0 j1 n0 (k1 -1), c1 j0 n0 (k3 +1), c1 j1 n0 (k3 +1),
    //   c1 j0 n1 (k3 -1); skipped: c0 j0 n1, c0 j1 n1, c1 j1 n1 -> 3.
    // Input planes (b, c, i): b0 c0 = [1, 2]: bit 0 (k0) and bit 1 (k1) set;
    //   b0 c1 = [0, 0]: both skipped; b1 c0 = [3, 0]: both set (k0);
    //   b1 c1 = [0, 1]: bit 0 set (k3), bit 1 skipped -> 3 skipped.
    // Conversions: 4 active planes in chunk 0 x 2 groups + 1 in chunk 1 x 3 = 11.
    // Active reads (non-zero digit, input bit 1, converted group):
    //   b0 c0 i0 (k0): c0 j0 n0 -> 1;  b0 c0 i1 (k1): c0 j1 n0 -> 1;
    //   b1 c0 i0 (k0): 1;  b1 c0 i1 (k0): 1;  b1 c1 i0 (k3): 3 groups -> 3;  = 7.
    // Cell-MACs: B K N Bx J = 2 * 4 * 2 * 2 * 2 = 64; MACs 16.
    // Every converted group has one +1 or one -1 digit: a range of 1, 1 bit.
    // Zero checks: every input plane, B C Bx = 8, and every group's flag for
    // each of the 5 converted input planes, 5 * J N = 20; = 28.
    let plan = plan("zebra", Some(3));
    assert_eq!(
        plan.counters,
        Counters {
            conversions: 11,
            active_reads: 7,
            skipped_groups: 3,
            skipped_input_planes: 3,
            cell_macs: 64,
            macs: 16,
            conversions_by_bits: hist(&[(1, 11)]),
            groups_by_bits: hist(&[(1, 5)]),
            zero_checks: 28,
        }
    );
    // Adaptive ranges [-n_neg, n_pos] of the converted groups.
    for (c, j, n, lo, hi) in [
        (0, 0, 0, 0.0, 1.0),
        (0, 1, 0, -1.0, 0.0),
        (1, 0, 0, 0.0, 1.0),
        (1, 1, 0, 0.0, 1.0),
        (1, 0, 1, -1.0, 0.0),
    ] {
        let g = plan.group(c, j, n);
        assert!(plan.converted[g], "c{c} j{j} n{n}");
        assert_eq!((plan.lo[g], plan.hi[g]), (lo, hi), "c{c} j{j} n{n}");
    }
}

#[test]
fn dense_counters_match_the_hand_count() {
    // Two's complement, 3 planes, no skipping: conversions B C Bx J N =
    // 2 * 2 * 2 * 3 * 2 = 48. Non-zero digits per row over (plane, column):
    // k0: 1 (001) + 0 = 1; k1: -2 = 110 -> 2; k2: 0; k3: 3 = 011 -> 2 and
    // -1 = 111 -> 3, so 5. Active reads = sum_b sum_k popcount(x_bk) * that:
    // x0: 1 * 1 + 1 * 2 = 3; x1: 2 * 1 + 1 * 5 = 7; = 10.
    // Full range [0, P] = [0, 2]: 3 levels, 2 bits, for all C J N = 12 groups;
    // no skipping, no zero checks.
    let plan = plan("dense", Some(3));
    assert_eq!(
        plan.counters,
        Counters {
            conversions: 48,
            active_reads: 10,
            skipped_groups: 0,
            skipped_input_planes: 0,
            cell_macs: 96,
            macs: 16,
            conversions_by_bits: hist(&[(2, 48)]),
            groups_by_bits: hist(&[(2, 12)]),
            zero_checks: 0,
        }
    );
}

/// The result row of the tiny layer under `mapping`, by column name.
fn row(mapping: &str, adc_bits: Option<u32>) -> impl Fn(&str) -> String {
    let (params, _) = tiny(adc_bits);
    let plan = plan(mapping, adc_bits);
    let mut acc = Accumulator::default();
    acc.add(&ReferenceEngine::new().run(&plan, 0..1, false).unwrap())
        .unwrap();
    let facts = plan.facts();
    let summary = acc.summary(&facts).unwrap();
    let point = Point {
        index: 0,
        assignments: Vec::new(),
        params,
    };
    let run = RunInfo {
        engine: "reference".into(),
        device: "test".into(),
        elapsed_s: 0.0,
    };
    let values = record(&ResultRow::new(
        "tiny",
        &point,
        &plan.mapping,
        &facts,
        &summary,
        &run,
    ));
    let columns = columns::<ResultRow>();
    assert_eq!(values.len(), columns.len());
    move |name| {
        let at = columns.iter().position(|c| c == name).expect("a column");
        values[at].clone()
    }
}

#[test]
fn energy_proxy_matches_the_hand_computation() {
    // E / MAC = (conversions 50 fJ 2^b + active reads 1 fJ) / (B K N), b = 3:
    // zebra: (11 * 400 + 7) / 16 = 4407 / 16 = 275.4375, ADC share 4400 / 4407 = 0.99841;
    // dense: (48 * 400 + 10) / 16 = 19210 / 16 = 1200.625, ADC share 19200 / 19210 = 0.99948.
    for (mapping, energy, share) in [("zebra", 275.4375, "0.9984"), ("dense", 1200.625, "0.9995")] {
        let col = row(mapping, Some(3));
        assert_eq!(
            col("adc_conversions"),
            if mapping == "zebra" { "11" } else { "48" }
        );
        let got: f64 = col("energy_fj_per_mac").parse().unwrap();
        assert_eq!(got, energy, "{mapping}");
        assert_eq!(col("energy_adc_share"), share, "{mapping}");
        // Zero noise and a lossless ADC: the row reports no error.
        assert_eq!(col("rmse").parse::<f64>().unwrap(), 0.0, "{mapping}");
    }
    // An ideal ADC has no energy figure.
    let col = row("zebra", None);
    assert_eq!(col("energy_fj_per_mac"), "");
    assert_eq!(col("energy_adc_share"), "");
}

#[test]
fn dense_cal_counts_its_bits_after_calibration() {
    // Two's complement digits (b0, b1, b2): 1 -> (1,0,0), -2 -> (0,1,1),
    // 3 -> (1,1,0), -1 -> (1,1,1). Over every (input, chunk, input bit,
    // column) of the workload no plane's clean sum exceeds 1 nor falls below
    // 0 (each chunk's driven rows hold at most one 1 per plane and column),
    // so at the 100th percentile every plane's range is [0, 1]: 1 bit, where
    // the full range [0, 2] of `dense` needs 2.
    let plan = plan("dense-cal", Some(3));
    assert_eq!(plan.counters.conversions_by_bits, hist(&[(1, 48)]));
    assert_eq!(plan.counters.groups_by_bits, hist(&[(1, 12)]));
}

/// One input vector x = [1, 3, 0, 2] (2-bit), P = 4 (one chunk), 3-bit
/// weights, ranges of several widths:
///
/// ```text
///        n=0  n=1     sign-magnitude planes (s = 1, 2):
///   k0    3    0      n0: plane 0 = (+1, +1, -1, +1): [-1, 3], range 4, 3 bits
///   k1    3    2          plane 1 = (+1, +1,  0,  0): [0, 2], range 2, 2 bits
///   k2   -1    0      n1: plane 0 all zero: skipped
///   k3    1    0          plane 1 = ( 0, +1,  0,  0): [0, 1], range 1, 1 bit
/// ```
fn ranges(adc_bits: Option<u32>, mapping: &str) -> Plan {
    let (mut params, _) = tiny(adc_bits);
    params.parallelism = 4;
    params.layer.inputs = 1;
    let layer = Layer {
        k: 4,
        n: 2,
        inputs: 1,
        weight_bits: 3,
        input_bits: 2,
        w: vec![3, 0, 3, 2, -1, 0, 1, 0],
        x: vec![1, 3, 0, 2],
        coding: InputCoding::Unsigned,
    };
    Plan::new(&params, &layer, &MappingSpec::preset(mapping).unwrap())
}

#[test]
fn adaptive_ranges_need_the_bits_of_their_width_capped_by_the_adc() {
    // Both input bits drive a row (bit 0: rows 0, 1; bit 1: rows 1, 3), and
    // each converts the three groups: 2 conversions at 3, 2 and 1 bits.
    for (bits, want) in [
        (Some(3), hist(&[(3, 2), (2, 2), (1, 2)])),
        (None, hist(&[(3, 2), (2, 2), (1, 2)])),
        (Some(2), hist(&[(2, 4), (1, 2)])),
        (Some(1), hist(&[(1, 6)])),
    ] {
        let plan = ranges(bits, "zebra");
        assert_eq!(plan.counters.conversions, 6, "{bits:?}");
        assert_eq!(plan.counters.conversions_by_bits, want, "{bits:?}");
        assert_eq!(plan.counters.groups_by_bits.iter().sum::<u64>(), 3);
        // Zero checks: 2 input planes, and 2 x J N = 8 group flags.
        assert_eq!(plan.counters.zero_checks, 10, "{bits:?}");
    }
    // The full range [-P, P] = [-4, 4] of signed digits: 9 levels, 4 bits,
    // capped at the ADC's 3; no skipping: 2 input planes x J N = 8 conversions.
    let plan = ranges(Some(3), "signmag");
    assert_eq!(plan.counters.conversions_by_bits, hist(&[(3, 8)]));
    assert_eq!(plan.counters.zero_checks, 0);
}

#[test]
fn every_preset_counts_each_conversion_once_by_bits_and_network_passes_agree() {
    let (_, layer) = tiny(Some(3));
    for mapping in MappingSpec::presets() {
        for bits in [Some(1), Some(3), None] {
            let plan = plan(&mapping.name, bits);
            let c = plan.counters;
            let what = format!("{} {bits:?}", mapping.name);
            assert_eq!(
                c.conversions_by_bits.iter().sum::<u64>(),
                c.conversions,
                "{what}"
            );
            assert_eq!(
                c.groups_by_bits.iter().sum::<u64>() + c.skipped_groups,
                (plan.chunks * plan.j * plan.n) as u64,
                "{what}"
            );
            // The same inputs through `with_inputs`, as a network pass: the
            // same conversions, bits and checks (active reads are not counted).
            let pass = plan.with_inputs(layer.x.clone()).counters;
            assert_eq!(
                Counters {
                    active_reads: c.active_reads,
                    ..pass
                },
                c,
                "{what}"
            );
        }
    }
}

/// `model` charged by `scaling` with the default coefficients.
fn params(model: AdcModel, scaling: AdcScaling) -> EnergyParams {
    EnergyParams {
        model,
        adc_scaling: scaling,
        ..ENERGY_DEFAULTS
    }
}

#[test]
fn energy_models_match_the_hand_computation() {
    use AdcModel::*;
    use AdcScaling::*;
    // zebra on the tiny layer: 11 conversions (all needing 1 bit, the ADC
    // has 3), 7 active reads, 28 zero checks, 16 MACs. Every model but the
    // proxy adds 11 x 100 fJ of shift-and-add and 28 x 30 fJ of checks:
    // with the 7 fJ of cells, 1947 fJ besides the ADC.
    // Per conversion at 3 bits: walden 50 x 8 = 400; neurosim-sar
    // (2.9503 x 3 + 22.047) x 4 = 123.5916; isaac: the 4-bit 790; flash
    // 7 x 22 = 154; murmann max(1 x 8, 7.5e-4 x 64) = 8.
    // At 1 bit: walden 100; neurosim-sar (2.9503 + 22.047) x 2 = 49.9946;
    // isaac 790; flash 22; murmann max(2, 0.003) = 2.
    let cases = [
        (Proxy, Fixed, (11.0 * 400.0 + 7.0) / 16.0),
        (Proxy, Effective, (11.0 * 100.0 + 7.0) / 16.0),
        (Walden, Fixed, (4400.0 + 1947.0) / 16.0),
        (Walden, Effective, (1100.0 + 1947.0) / 16.0),
        (NeurosimSar, Fixed, (11.0 * 123.5916 + 1947.0) / 16.0),
        (NeurosimSar, Effective, (11.0 * 49.9946 + 1947.0) / 16.0),
        (Isaac, Fixed, (8690.0 + 1947.0) / 16.0),
        (Isaac, Effective, (8690.0 + 1947.0) / 16.0),
        (Flash, Fixed, (1694.0 + 1947.0) / 16.0),
        (Flash, Effective, (242.0 + 1947.0) / 16.0),
        (Murmann, Fixed, (88.0 + 1947.0) / 16.0),
        (Murmann, Effective, (22.0 + 1947.0) / 16.0),
    ];
    let c = plan("zebra", Some(3)).counters;
    for (model, scaling, want) in cases {
        let e = energy(&params(model, scaling), Some(3), &c.activity()).unwrap();
        let got = e.fj_per_mac(c.macs);
        assert!(
            (got - want).abs() <= 1e-12 * want,
            "{} {}: got {got}, want {want}",
            model.label(),
            scaling.label()
        );
    }
    // dense: 48 conversions needing 2 bits, 10 reads, no checks. walden:
    // fixed 48 x 400 + 10 + 48 x 100 = 24010; effective 48 x 200 + 10 + 4800 = 14410.
    let c = plan("dense", Some(3)).counters;
    for (scaling, want) in [(Fixed, 24010.0 / 16.0), (Effective, 14410.0 / 16.0)] {
        let e = energy(&params(Walden, scaling), Some(3), &c.activity()).unwrap();
        assert_eq!(e.fj_per_mac(c.macs), want, "{}", scaling.label());
    }
    // The adaptive-range case at 3 bits, walden, effective: 2 x (400 + 200 +
    // 100) = 1400 fJ of ADC against 6 x 400 = 2400 fixed.
    let c = ranges(Some(3), "zebra").counters;
    let adc = |s| {
        energy(&params(Walden, s), Some(3), &c.activity())
            .unwrap()
            .adc_fj
    };
    assert_eq!((adc(Effective), adc(Fixed)), (1400.0, 2400.0));
}

#[test]
fn the_default_energy_is_the_proxy_result_files_report() {
    let (p, _) = tiny(Some(3));
    assert_eq!(p.energy.model, AdcModel::Proxy);
    assert_eq!(p.energy.adc_scaling, AdcScaling::Fixed);
    for mapping in MappingSpec::presets() {
        for bits in [Some(1), Some(3), Some(6)] {
            let c = plan(&mapping.name, bits).counters;
            let e = energy(&p.energy, bits, &c.activity()).unwrap();
            assert_eq!(
                Some((e.fj_per_mac(c.macs), e.adc_share())),
                energy_per_mac(
                    &Params {
                        adc_bits: bits,
                        ..p.clone()
                    },
                    &c
                ),
                "{} {bits:?}",
                mapping.name
            );
        }
    }
    let c = plan("zebra", Some(3)).counters;
    let e = energy(&p.energy, Some(3), &c.activity()).unwrap();
    assert_eq!(e.fj_per_mac(c.macs), 275.4375);
    assert_eq!(energy(&p.energy, None, &c.activity()), None);
}

#[test]
fn the_area_proxy_matches_the_hand_count() {
    // zebra on the tiny layer: 16 cells (K N J), 5 converted groups needing
    // 1 bit, and 10 zero-check units (C J N = 8 group flags, C = 2 input
    // detectors). Flash, effective: 5 ADCs of 1 comparator (20 transistors);
    // NeuroSim SAR, fixed 3 bits: 5 x 842 transistors.
    let plan = plan("zebra", Some(3));
    let l = plan.layout();
    assert_eq!((l.cells, l.check_units), (16, 10));
    assert_eq!(l.groups_by_bits, hist(&[(1, 5)]));
    assert_eq!(plan.facts().layout(&plan.mapping), l);
    let t = TRANSISTOR_UM2;
    let a = area(&params(AdcModel::Flash, AdcScaling::Effective), Some(3), &l).unwrap();
    let want = [
        100.0 * t,
        16.0 * 280.0 * 0.065 * 0.065,
        5.0 * 832.0 * t,
        10.0 * 28.0 * t,
    ];
    let got = [a.adc_um2, a.cells_um2, a.digital_um2, a.checks_um2];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-12 * w, "got {got:?}, want {want:?}");
    }
    let a = area(
        &params(AdcModel::NeurosimSar, AdcScaling::Fixed),
        Some(3),
        &l,
    )
    .unwrap();
    assert!((a.adc_um2 - 5.0 * 842.0 * t).abs() <= 1e-9);
    // dense skips nothing: no check units.
    assert_eq!(self::plan("dense", Some(3)).layout().check_units, 0);
}

/// The energy proxy per MAC and the ADC's share of it, written out from
/// docs/MODEL.md (Energy proxy) as the `proxy` model must reproduce it:
/// conversions at the Walden figure of merit times `2^bits` steps, plus
/// active cell reads; no figure for an ideal ADC.
fn energy_per_mac(p: &Params, c: &zebra_cim::experiment::plan::Counters) -> Option<(f64, f64)> {
    p.adc_bits.map(|bits| {
        let adc = c.conversions as f64 * p.energy.adc_fj_per_step * (1u64 << bits) as f64;
        let cells = c.active_reads as f64 * p.energy.cell_fj;
        let total = adc + cells;
        (
            total / c.macs as f64,
            if total > 0.0 { adc / total } else { 0.0 },
        )
    })
}
