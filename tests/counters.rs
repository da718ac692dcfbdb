//! Numbers that carry verdicts, against hand counts on a tiny layer: the
//! cost counters of a plan and the energy proxy of a result row
//! (docs/MODEL.md, "Energy proxy").

use zebra_cim::engine::reference::ReferenceEngine;
use zebra_cim::engine::stats::Accumulator;
use zebra_cim::engine::Engine;
use zebra_cim::experiment::plan::{Counters, Plan};
use zebra_cim::experiment::workload::Layer;
use zebra_cim::experiment::*;
use zebra_cim::io::csv::{columns, record};
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
        },
        parallelism: 2,
        adc_bits,
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
