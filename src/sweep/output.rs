//! Result files: tidy CSV rows with a stable column order, written
//! atomically (temporary file, then rename) after every sweep point.

use crate::engine::stats::Summary;
use crate::experiment::plan::Plan;
use crate::experiment::{InputSource, NoiseMode, Params, Point, WeightSource};
use crate::model::MappingSpec;

/// Columns of `OUT/NAME.csv`, in order.
pub const COLUMNS: [&str; 64] = [
    "experiment",
    "point",
    "mapping",
    "k",
    "n",
    "inputs",
    "weight_bits",
    "input_bits",
    "weights",
    "inputs_source",
    "input_zero_fraction",
    "parallelism",
    "adc_bits",
    "adc_range",
    "calibrate_percentile",
    "encoding",
    "skip_zero_planes",
    "skip_zero_inputs",
    "cell_sigma",
    "noise_mode",
    "read_sigma",
    "leak",
    "p_sa0",
    "p_sa1",
    "sampling",
    "trials",
    "seed",
    "bias",
    "std",
    "rmse",
    "max_abs",
    "p50_abs",
    "p90_abs",
    "p99_abs",
    "p999_abs",
    "snr_db",
    "trial_rmse_mean",
    "trial_rmse_std",
    "trial_rmse_p5",
    "trial_rmse_p50",
    "trial_rmse_p95",
    "adc_conversions",
    "active_cell_reads",
    "skipped_planes",
    "skipped_input_planes",
    "macs",
    "cell_macs",
    "conversions_per_mac",
    "reads_per_mac",
    "skipped_plane_fraction",
    "digit_density",
    "plane_density",
    "adc_fj_per_step",
    "cell_fj",
    "energy_fj_per_mac",
    "energy_adc_share",
    "engine",
    "device",
    "elapsed_s",
    "cell_macs_per_s",
    "version",
    "point_key",
    "exact_std",
    "planes",
];

/// Columns of `OUT/NAME_hist.csv`, in order.
pub const HIST_COLUMNS: [&str; 7] = [
    "experiment",
    "point",
    "mapping",
    "bin_lo",
    "bin_hi",
    "count",
    "point_key",
];

/// Where a run's engine ran.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub engine: String,
    pub device: String,
    pub elapsed_s: f64,
}

fn g(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{v:.6e}")
    }
}

/// The resume key of one (point, mapping): every parameter that shapes the result.
pub fn point_key(params: &Params, mapping: &MappingSpec) -> String {
    let text = format!(
        "{}|{mapping:?}|v{}",
        params.fingerprint(),
        env!("CARGO_PKG_VERSION")
    );
    format!("{:016x}", crate::experiment::stable_hash(&text))
}

/// One result row, in `COLUMNS` order.
pub fn result_row(
    experiment: &str,
    point: &Point,
    plan: &Plan,
    s: &Summary,
    run: &RunInfo,
) -> Vec<String> {
    let p = &point.params;
    let l = &p.layer;
    let weights = match &l.weights {
        WeightSource::Gaussian => "gaussian".to_string(),
        WeightSource::Laplace => "laplace".to_string(),
        WeightSource::File(f) => f.display().to_string(),
    };
    let (inputs_source, zf) = match &l.input_source {
        InputSource::RectifiedGaussian { zero_fraction } => {
            ("rectified-gaussian".to_string(), zero_fraction.to_string())
        }
        InputSource::File(f) => (f.display().to_string(), String::new()),
    };
    let c = &s.counters;
    let groups = (plan.chunks * plan.j * plan.n) as f64;
    let cell_macs_total = c.cell_macs as f64 * s.trials as f64;
    // Non-zero digit density of each plane.
    let per_plane = plan.k * plan.n;
    let density: Vec<f64> = (0..plan.j)
        .map(|j| {
            plan.digits[j * per_plane..(j + 1) * per_plane]
                .iter()
                .filter(|&&d| d != 0)
                .count() as f64
                / per_plane as f64
        })
        .collect();
    // Energy proxy per MAC: conversions at FOM * 2^bits, plus active cell reads (no figure for an ideal ADC).
    let energy = p.adc_bits.map(|bits| {
        let adc = c.conversions as f64 * p.energy.adc_fj_per_step * (1u64 << bits) as f64;
        let cells = c.active_reads as f64 * p.energy.cell_fj;
        let total = adc + cells;
        (
            total / c.macs as f64,
            if total > 0.0 { adc / total } else { 0.0 },
        )
    });
    vec![
        experiment.to_string(),
        point.index.to_string(),
        plan.mapping.name.clone(),
        plan.k.to_string(),
        plan.n.to_string(),
        plan.b.to_string(),
        l.weight_bits.to_string(),
        l.input_bits.to_string(),
        weights,
        inputs_source,
        zf,
        p.parallelism.to_string(),
        p.adc_bits.map_or("ideal".to_string(), |b| b.to_string()),
        plan.mapping.adc_range.label().to_string(),
        p.calibrate_percentile.to_string(),
        plan.mapping.encoding.label().to_string(),
        plan.mapping.skip_zero_planes.to_string(),
        plan.mapping.skip_zero_inputs.to_string(),
        p.noise.cell_sigma.to_string(),
        match p.noise.mode {
            NoiseMode::Static => "static",
            NoiseMode::Dynamic => "dynamic",
        }
        .to_string(),
        p.noise.read_sigma.to_string(),
        p.noise.leak.to_string(),
        p.noise.p_sa0.to_string(),
        p.noise.p_sa1.to_string(),
        plan.path.label().to_string(),
        s.trials.to_string(),
        p.seed.to_string(),
        g(s.bias),
        g(s.std),
        g(s.rmse),
        g(s.max_abs),
        g(s.p50_abs),
        g(s.p90_abs),
        g(s.p99_abs),
        g(s.p999_abs),
        format!("{:.3}", s.snr_db),
        g(s.trial_rmse_mean),
        g(s.trial_rmse_std),
        g(s.trial_rmse_p5),
        g(s.trial_rmse_p50),
        g(s.trial_rmse_p95),
        c.conversions.to_string(),
        c.active_reads.to_string(),
        c.skipped_groups.to_string(),
        c.skipped_input_planes.to_string(),
        c.macs.to_string(),
        c.cell_macs.to_string(),
        g(c.conversions as f64 / c.macs as f64),
        g(c.active_reads as f64 / c.macs as f64),
        format!("{:.6}", c.skipped_groups as f64 / groups),
        format!("{:.6}", density.iter().sum::<f64>() / density.len() as f64),
        density
            .iter()
            .map(|d| format!("{d:.4}"))
            .collect::<Vec<_>>()
            .join(";"),
        p.energy.adc_fj_per_step.to_string(),
        p.energy.cell_fj.to_string(),
        energy.map_or(String::new(), |(e, _)| g(e)),
        energy.map_or(String::new(), |(_, share)| format!("{share:.4}")),
        run.engine.clone(),
        run.device.clone(),
        format!("{:.3}", run.elapsed_s),
        g(if run.elapsed_s > 0.0 {
            cell_macs_total / run.elapsed_s
        } else {
            0.0
        }),
        env!("CARGO_PKG_VERSION").to_string(),
        point_key(p, &plan.mapping),
        g(plan.exact_std),
        plan.j.to_string(),
    ]
}
