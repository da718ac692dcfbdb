//! Result rows: one `Serialize` struct per output file, so a file's header
//! (its field names, [`crate::io::csv::columns`]) and its values cannot
//! disagree, and a resume key from a stable serialisation of the parameters.

use crate::engine::stats::Summary;
use crate::experiment::plan::PlanFacts;
use crate::experiment::{InputSource, NoiseParams, Params, Point, WeightSource};
use crate::io::csv::record;
use crate::model::quantize::Quantizer;
use crate::model::MappingSpec;
use serde::{Serialize, Serializer};

/// Where a run's engine ran.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub engine: String,
    pub device: String,
    pub elapsed_s: f64,
}

/// Formats of the numbers in result files, chosen per column.
mod fmt {
    use serde::Serializer;

    /// Seven significant digits, `inf` and `-inf` spelled out.
    pub fn sci<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_infinite() {
            s.serialize_str(if *v > 0.0 { "inf" } else { "-inf" })
        } else {
            s.collect_str(&format_args!("{v:.6e}"))
        }
    }

    /// [`sci`], or an empty field.
    pub fn sci_opt<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => sci(v, s),
            None => s.serialize_str(""),
        }
    }

    /// The shortest text that reads back as the same value (Rust's `Display`).
    pub fn display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    /// [`display`], or an empty field.
    pub fn display_opt<T: std::fmt::Display, S: Serializer>(
        v: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_str(""),
        }
    }

    pub fn fixed3<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{v:.3}"))
    }

    pub fn fixed6<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{v:.6}"))
    }

    /// Four decimals, or an empty field.
    pub fn fixed4_opt<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(&format_args!("{v:.4}")),
            None => s.serialize_str(""),
        }
    }
}

pub(crate) use fmt::{display, fixed3, fixed6};

/// ADC bits as result files write them: a number, or `ideal`.
fn adc_bits<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.collect_str(b),
        None => s.serialize_str("ideal"),
    }
}

/// The array columns both result files share.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArrayColumns {
    pub parallelism: usize,
    #[serde(serialize_with = "adc_bits")]
    pub adc_bits: Option<u32>,
    pub adc_range: String,
}

impl ArrayColumns {
    pub fn new(params: &Params, mapping: &MappingSpec) -> Self {
        ArrayColumns {
            parallelism: params.parallelism,
            adc_bits: params.adc_bits,
            adc_range: mapping.adc_range.label().into(),
        }
    }
}

/// The noise columns both result files share.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NoiseColumns {
    #[serde(serialize_with = "display")]
    pub cell_sigma: f32,
    pub noise_mode: String,
    #[serde(serialize_with = "display")]
    pub read_sigma: f32,
    #[serde(serialize_with = "display")]
    pub leak: f32,
    #[serde(serialize_with = "display")]
    pub p_sa0: f32,
    #[serde(serialize_with = "display")]
    pub p_sa1: f32,
    #[serde(serialize_with = "display")]
    pub fs_sigma: f32,
    #[serde(serialize_with = "display")]
    pub adc_sigma_lsb: f32,
}

impl NoiseColumns {
    pub fn new(noise: &NoiseParams) -> Self {
        NoiseColumns {
            cell_sigma: noise.cell_sigma,
            noise_mode: noise.mode.label().into(),
            read_sigma: noise.read_sigma,
            leak: noise.leak,
            p_sa0: noise.p_sa0,
            p_sa1: noise.p_sa1,
            fs_sigma: noise.fs_sigma,
            adc_sigma_lsb: noise.adc_sigma_lsb,
        }
    }
}

/// The `[quantize]` setting as a column ([`Quantizer::label`]): `none` by default.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct QuantizeColumn(pub String);

impl Default for QuantizeColumn {
    fn default() -> Self {
        QuantizeColumn(Quantizer::default().label())
    }
}

impl QuantizeColumn {
    pub fn new(q: &Quantizer) -> Self {
        QuantizeColumn(q.label())
    }
}

/// The columns of `OUT/NAME.csv`: one row per (sweep point, mapping).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ResultRow {
    pub experiment: String,
    pub point: usize,
    pub mapping: String,
    pub k: usize,
    pub n: usize,
    pub inputs: usize,
    pub weight_bits: u32,
    pub input_bits: u32,
    pub weights: String,
    pub quantize: QuantizeColumn,
    pub inputs_source: String,
    #[serde(serialize_with = "fmt::display_opt")]
    pub input_zero_fraction: Option<f64>,
    pub array: ArrayColumns,
    #[serde(serialize_with = "display")]
    pub calibrate_percentile: f64,
    pub encoding: String,
    pub skip_zero_planes: bool,
    pub skip_zero_inputs: bool,
    pub noise: NoiseColumns,
    pub sampling: String,
    pub trials: u32,
    pub seed: u64,
    pub errors: ErrorColumns,
    pub cost: CostColumns,
    pub engine: String,
    pub device: String,
    #[serde(serialize_with = "fixed3")]
    pub elapsed_s: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub cell_macs_per_s: f64,
    pub version: String,
    pub point_key: String,
    #[serde(serialize_with = "fmt::sci")]
    pub exact_std: f64,
    pub planes: usize,
}

impl ResultRow {
    /// The row of one finished (point, mapping).
    pub fn new(
        experiment: &str,
        point: &Point,
        mapping: &MappingSpec,
        plan: &PlanFacts,
        s: &Summary,
        run: &RunInfo,
    ) -> Self {
        let p = &point.params;
        let l = &p.layer;
        let (inputs_source, input_zero_fraction) = input_source(&l.input_source);
        let cell_macs_total = s.counters.cell_macs as f64 * s.trials as f64;
        ResultRow {
            experiment: experiment.into(),
            point: point.index,
            mapping: mapping.name.clone(),
            k: plan.k,
            n: plan.n,
            inputs: plan.b,
            weight_bits: l.weight_bits,
            input_bits: l.input_bits,
            weights: weight_source(&l.weights),
            quantize: QuantizeColumn::new(&l.quantize),
            inputs_source,
            input_zero_fraction,
            array: ArrayColumns::new(p, mapping),
            calibrate_percentile: p.calibrate_percentile,
            encoding: mapping.encoding.label().into(),
            skip_zero_planes: mapping.skip_zero_planes,
            skip_zero_inputs: mapping.skip_zero_inputs,
            noise: NoiseColumns::new(&p.noise),
            sampling: plan.sampling.clone(),
            trials: s.trials,
            seed: p.seed,
            errors: ErrorColumns::new(s),
            cost: CostColumns::new(p, mapping, plan, s),
            engine: run.engine.clone(),
            device: run.device.clone(),
            elapsed_s: run.elapsed_s,
            cell_macs_per_s: if run.elapsed_s > 0.0 {
                cell_macs_total / run.elapsed_s
            } else {
                0.0
            },
            version: env!("CARGO_PKG_VERSION").into(),
            point_key: point_key(p, mapping),
            exact_std: plan.exact_std,
            planes: plan.j,
        }
    }
}

fn weight_source(w: &WeightSource) -> String {
    match w {
        WeightSource::Gaussian => "gaussian".into(),
        WeightSource::Laplace => "laplace".into(),
        WeightSource::File(f) => f.display().to_string(),
    }
}

fn input_source(x: &InputSource) -> (String, Option<f64>) {
    match x {
        InputSource::RectifiedGaussian { zero_fraction } => {
            ("rectified-gaussian".into(), Some(*zero_fraction))
        }
        InputSource::Uniform => ("uniform".into(), None),
        InputSource::File(f) => (f.display().to_string(), None),
    }
}

/// Error statistics of a result row (see docs/MODEL.md, Outputs).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ErrorColumns {
    #[serde(serialize_with = "fmt::sci")]
    pub bias: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub std: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub rmse: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub max_abs: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub p50_abs: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub p90_abs: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub p99_abs: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub p999_abs: f64,
    #[serde(serialize_with = "fixed3")]
    pub snr_db: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub trial_rmse_mean: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub trial_rmse_std: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub trial_rmse_p5: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub trial_rmse_p50: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub trial_rmse_p95: f64,
}

impl ErrorColumns {
    fn new(s: &Summary) -> Self {
        ErrorColumns {
            bias: s.bias,
            std: s.std,
            rmse: s.rmse,
            max_abs: s.max_abs,
            p50_abs: s.p50_abs,
            p90_abs: s.p90_abs,
            p99_abs: s.p99_abs,
            p999_abs: s.p999_abs,
            snr_db: s.snr_db,
            trial_rmse_mean: s.trial_rmse_mean,
            trial_rmse_std: s.trial_rmse_std,
            trial_rmse_p5: s.trial_rmse_p5,
            trial_rmse_p50: s.trial_rmse_p50,
            trial_rmse_p95: s.trial_rmse_p95,
        }
    }
}

/// The parts of the energy per MAC: ADC, cell reads, shift-and-add, zero
/// checks; empty where the model has no figure.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EnergyParts {
    #[serde(serialize_with = "fmt::sci_opt")]
    pub adc_fj_per_mac: Option<f64>,
    #[serde(serialize_with = "fmt::sci_opt")]
    pub cell_fj_per_mac: Option<f64>,
    #[serde(serialize_with = "fmt::sci_opt")]
    pub add_fj_per_mac: Option<f64>,
    #[serde(serialize_with = "fmt::sci_opt")]
    pub check_fj_per_mac: Option<f64>,
}

impl EnergyParts {
    /// The parts of `energy` over `macs` multiply-accumulates.
    fn new(energy: Option<&crate::model::energy::Energy>, macs: u64) -> Self {
        let per_mac = |v: f64| v / macs.max(1) as f64;
        EnergyParts {
            adc_fj_per_mac: energy.map(|e| per_mac(e.adc_fj)),
            cell_fj_per_mac: energy.map(|e| per_mac(e.cells_fj)),
            add_fj_per_mac: energy.map(|e| per_mac(e.digital_fj)),
            check_fj_per_mac: energy.map(|e| per_mac(e.checks_fj)),
        }
    }
}

/// Cost counters per trial, digit statistics and the energy proxy.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CostColumns {
    pub adc_conversions: u64,
    pub active_cell_reads: u64,
    pub skipped_planes: u64,
    pub skipped_input_planes: u64,
    pub macs: u64,
    pub cell_macs: u64,
    #[serde(serialize_with = "fmt::sci")]
    pub conversions_per_mac: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub reads_per_mac: f64,
    #[serde(serialize_with = "fixed6")]
    pub skipped_plane_fraction: f64,
    #[serde(serialize_with = "fixed6")]
    pub digit_density: f64,
    /// Non-zero digit density of each plane, `;`-separated.
    pub plane_density: String,
    #[serde(serialize_with = "display")]
    pub adc_fj_per_step: f64,
    #[serde(serialize_with = "display")]
    pub cell_fj: f64,
    #[serde(serialize_with = "fmt::sci_opt")]
    pub energy_fj_per_mac: Option<f64>,
    #[serde(serialize_with = "fmt::fixed4_opt")]
    pub energy_adc_share: Option<f64>,
    /// `[energy] model` and `adc_scaling` (docs/MODEL.md, Energy and area models).
    pub energy_model: String,
    pub adc_scaling: String,
    /// The parts of `energy_fj_per_mac`.
    pub parts: EnergyParts,
    /// Mean bits a conversion's range needs (capped at the ADC's).
    #[serde(serialize_with = "fixed3")]
    pub mean_effective_bits: f64,
    /// Conversions per trial by the bits their range needs, `bits:count`, `;`-separated.
    pub conversions_by_bits: String,
    pub zero_checks: u64,
    /// The layer's area proxy (um^2) and the ADCs' share of it.
    #[serde(serialize_with = "fmt::sci_opt")]
    pub area_um2: Option<f64>,
    #[serde(serialize_with = "fmt::fixed4_opt")]
    pub area_adc_share: Option<f64>,
}

impl CostColumns {
    fn new(p: &Params, mapping: &MappingSpec, plan: &PlanFacts, s: &Summary) -> Self {
        let c = &s.counters;
        let groups = (plan.chunks * plan.j * plan.n) as f64;
        let density = &plan.plane_density;
        let energy = crate::model::energy::energy(&p.energy, p.adc_bits, &c.activity());
        let area = crate::model::energy::area(&p.energy, p.adc_bits, &plan.layout(mapping));
        let by_bits = &c.conversions_by_bits;
        CostColumns {
            adc_conversions: c.conversions,
            active_cell_reads: c.active_reads,
            skipped_planes: c.skipped_groups,
            skipped_input_planes: c.skipped_input_planes,
            macs: c.macs,
            cell_macs: c.cell_macs,
            conversions_per_mac: c.conversions as f64 / c.macs as f64,
            reads_per_mac: c.active_reads as f64 / c.macs as f64,
            skipped_plane_fraction: c.skipped_groups as f64 / groups,
            digit_density: density.iter().sum::<f64>() / density.len() as f64,
            plane_density: density
                .iter()
                .map(|d| format!("{d:.4}"))
                .collect::<Vec<_>>()
                .join(";"),
            adc_fj_per_step: p.energy.adc_fj_per_step,
            cell_fj: p.energy.cell_fj,
            energy_fj_per_mac: energy.map(|e| e.fj_per_mac(c.macs)),
            energy_adc_share: energy.map(|e| e.adc_share()),
            energy_model: p.energy.model.label().into(),
            adc_scaling: p.energy.adc_scaling.label().into(),
            parts: EnergyParts::new(energy.as_ref(), c.macs),
            mean_effective_bits: mean_bits(by_bits),
            conversions_by_bits: by_bits
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(b, n)| format!("{b}:{n}"))
                .collect::<Vec<_>>()
                .join(";"),
            zero_checks: c.zero_checks,
            area_um2: area.map(|a| a.total_um2()),
            area_adc_share: area.map(|a| adc_share(&a)),
        }
    }
}

/// What a network's arrays did for the evaluated images: every matrix
/// layer's counters summed over the images (on the clean activations, see
/// `sweep::accuracy::SimNetwork::clean_cost`) and the layers' layouts summed.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, Serialize)]
pub struct NetworkCost {
    pub images: u64,
    pub counters: crate::experiment::plan::Counters,
    pub layout: crate::model::energy::Layout,
}

/// The cost columns of an accuracy row: per MAC, over the whole network.
/// A row without them (`macs_per_image` 0) has them computed on resume.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NetworkCostColumns {
    pub energy_model: String,
    pub adc_scaling: String,
    /// Multiply-accumulates of the matrix layers per image.
    pub macs_per_image: u64,
    #[serde(serialize_with = "fmt::sci")]
    pub conversions_per_mac: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub reads_per_mac: f64,
    #[serde(serialize_with = "fixed3")]
    pub mean_effective_bits: f64,
    #[serde(serialize_with = "fmt::sci_opt")]
    pub energy_fj_per_mac: Option<f64>,
    pub parts: EnergyParts,
    /// All matrix layers' arrays (um^2) and the ADCs' share.
    #[serde(serialize_with = "fmt::sci_opt")]
    pub area_um2: Option<f64>,
    #[serde(serialize_with = "fmt::fixed4_opt")]
    pub area_adc_share: Option<f64>,
}

impl NetworkCostColumns {
    /// The columns of `cost`; empty ones (`macs_per_image` 0) for a cost
    /// of no images.
    pub fn new(p: &Params, cost: &NetworkCost) -> Self {
        if cost.images == 0 {
            return NetworkCostColumns::default();
        }
        let c = &cost.counters;
        let energy = crate::model::energy::energy(&p.energy, p.adc_bits, &c.activity());
        let area = crate::model::energy::area(&p.energy, p.adc_bits, &cost.layout);
        let per_mac = |v: f64| v / c.macs.max(1) as f64;
        NetworkCostColumns {
            energy_model: p.energy.model.label().into(),
            adc_scaling: p.energy.adc_scaling.label().into(),
            macs_per_image: c.macs / cost.images.max(1),
            conversions_per_mac: per_mac(c.conversions as f64),
            reads_per_mac: per_mac(c.active_reads as f64),
            mean_effective_bits: mean_bits(&c.conversions_by_bits),
            energy_fj_per_mac: energy.map(|e| e.fj_per_mac(c.macs)),
            parts: EnergyParts::new(energy.as_ref(), c.macs),
            area_um2: area.map(|a| a.total_um2()),
            area_adc_share: area.map(|a| adc_share(&a)),
        }
    }
}

/// Mean bits per conversion of a histogram by bits (0 for none).
fn mean_bits(h: &crate::model::energy::BitsHistogram) -> f64 {
    let n: u64 = h.iter().sum();
    let bits: u64 = h.iter().enumerate().map(|(b, &c)| b as u64 * c).sum();
    if n > 0 {
        bits as f64 / n as f64
    } else {
        0.0
    }
}

/// The ADCs' share of an area (0 for none).
fn adc_share(a: &crate::model::energy::Area) -> f64 {
    if a.total_um2() > 0.0 {
        a.adc_um2 / a.total_um2()
    } else {
        0.0
    }
}

/// The columns of `OUT/NAME_hist.csv`: error histogram bins per (point, mapping).
#[derive(Clone, Debug, Default, Serialize)]
pub struct HistRow {
    pub experiment: String,
    pub point: usize,
    pub mapping: String,
    #[serde(serialize_with = "fmt::sci")]
    pub bin_lo: f64,
    #[serde(serialize_with = "fmt::sci")]
    pub bin_hi: f64,
    pub count: u64,
    pub point_key: String,
}

impl HistRow {
    /// The histogram file's rows of one (point, mapping): the fine bins of
    /// `hist` merged five at a time (20 per decade), empty bins left out.
    pub fn rows(
        experiment: &str,
        point: usize,
        mapping: &str,
        key: &str,
        hist: &[u64],
    ) -> Vec<Vec<String>> {
        crate::engine::stats::coarse_rows(hist, 5)
            .into_iter()
            .map(|(bin_lo, bin_hi, count)| {
                record(&HistRow {
                    experiment: experiment.into(),
                    point,
                    mapping: mapping.into(),
                    bin_lo,
                    bin_hi,
                    count,
                    point_key: key.into(),
                })
            })
            .collect()
    }
}

/// Revision of the resume key: part of every key, raised when the same
/// parameters would give other results (a change of the model), so that
/// rows from before are refused instead of resumed.
pub const KEY_REVISION: u32 = 2;

/// Every parameter that shapes a (point, mapping)'s result, in a fixed order
/// and format of our own (not `Debug`, which may change between Rust
/// versions): the text behind [`point_key`].
#[derive(Serialize)]
struct KeyFields {
    revision: u32,
    trials: u32,
    seed: u64,
    k: usize,
    n: usize,
    inputs: usize,
    weight_bits: u32,
    input_bits: u32,
    weights: String,
    inputs_source: String,
    #[serde(serialize_with = "fmt::display_opt")]
    zero_fraction: Option<f64>,
    array: ArrayColumns,
    #[serde(serialize_with = "display")]
    calibrate_percentile: f64,
    /// The noise parameters the key had before `fs_sigma` and
    /// `adc_sigma_lsb`, which are added below only when used.
    noise: [String; 6],
    sampling: String,
    #[serde(serialize_with = "display")]
    adc_fj_per_step: f64,
    #[serde(serialize_with = "display")]
    cell_fj: f64,
    mapping: String,
    encoding: String,
    skip_zero_planes: bool,
    skip_zero_inputs: bool,
}

/// The resume key of one (point, mapping): a stable hash of every parameter
/// that shapes the result ([`KEY_REVISION`] included). The input coding is
/// part of the text only for signed inputs, so the keys of unsigned layers
/// are those of before signed inputs existed.
pub fn point_key(params: &Params, mapping: &MappingSpec) -> String {
    let l = &params.layer;
    let (inputs_source, zero_fraction) = input_source(&l.input_source);
    let fields = KeyFields {
        revision: KEY_REVISION,
        trials: params.trials,
        seed: params.seed,
        k: l.k,
        n: l.n,
        inputs: l.inputs,
        weight_bits: l.weight_bits,
        input_bits: l.input_bits,
        weights: weight_source(&l.weights),
        inputs_source,
        zero_fraction,
        array: ArrayColumns::new(params, mapping),
        calibrate_percentile: params.calibrate_percentile,
        noise: {
            let n = record(&NoiseColumns::new(&params.noise));
            std::array::from_fn(|i| n[i].clone())
        },
        sampling: params.noise.sampling.label().into(),
        adc_fj_per_step: params.energy.adc_fj_per_step,
        cell_fj: params.energy.cell_fj,
        mapping: mapping.name.clone(),
        encoding: mapping.encoding.label().into(),
        skip_zero_planes: mapping.skip_zero_planes,
        skip_zero_inputs: mapping.skip_zero_inputs,
    };
    let mut text = record(&fields).join("\u{1f}");
    if l.coding.signed() {
        text.push_str("\u{1f}input_coding=");
        text.push_str(l.coding.label());
    }
    if let Some(e) = params.energy.key_text() {
        text.push_str("\u{1f}energy=");
        text.push_str(&e);
    }
    if !l.quantize.is_identity() {
        text.push_str("\u{1f}quantize=");
        text.push_str(&l.quantize.label());
    }
    // Noise conventions added after the key's fields: in the key only when
    // used, so the keys of results without them stay what they were.
    let noise = &params.noise;
    for (name, v) in [
        ("fs_sigma", noise.fs_sigma),
        ("adc_sigma_lsb", noise.adc_sigma_lsb),
    ] {
        if v != 0.0 {
            text.push_str(&format!("\u{1f}{name}={v}"));
        }
    }
    // Cell formats beyond one digit per cell, likewise only when used.
    if mapping.bits_per_cell != 1 {
        text.push_str(&format!("\u{1f}bits_per_cell={}", mapping.bits_per_cell));
    }
    if let Some(k) = mapping.slots {
        text.push_str(&format!("\u{1f}slots={k}"));
    }
    format!("{:016x}", crate::experiment::stable_hash(&text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{Experiment, Overrides};
    use std::path::Path;

    fn key_of(toml: &str, mapping: &str) -> String {
        let text = format!("version = 1\n{toml}");
        let exp = Experiment::parse(&text, Path::new("k.toml"), Overrides::default()).unwrap();
        point_key(
            &exp.points[0].params,
            &MappingSpec::preset(mapping).unwrap(),
        )
    }

    #[test]
    fn resume_keys_are_a_fixed_function_of_the_parameters() {
        // The key of a fixed point, written down: if this changes, every
        // committed result stops resuming. Change it only with KEY_REVISION.
        let base = "seed = 7\n[layer]\nk = 64\nn = 8\n[noise]\ncell_sigma = 0.05\n";
        assert_eq!(key_of(base, "zebra"), "64ebf9ecacbc78e8");
        let others = [
            key_of(base, "dense"),
            key_of(&base.replace("seed = 7", "seed = 8"), "zebra"),
            key_of(&base.replace("n = 8", "n = 9"), "zebra"),
            key_of(&base.replace("0.05", "0.050001"), "zebra"),
            key_of(&format!("{base}leak = 0.001\n"), "zebra"),
            key_of(&format!("{base}[adc]\nbits = 5\n"), "zebra"),
        ];
        for (i, k) in others.iter().enumerate() {
            assert_ne!(k, &key_of(base, "zebra"), "change {i} kept the key");
        }
        // How an array would apply signed inputs does not shape an unsigned
        // layer's result, and does not change its key.
        let sm = format!("{base}[array]\nsigned_inputs = \"sign-magnitude\"\n");
        assert_eq!(key_of(&sm, "zebra"), key_of(base, "zebra"));
        let signed = base.replace("n = 8\n", "n = 8\ninput_sign = \"signed\"\n");
        let twos = key_of(&signed, "zebra");
        let sm = key_of(
            &format!("{signed}[array]\nsigned_inputs = \"sign-magnitude\"\n"),
            "zebra",
        );
        assert_ne!(twos, key_of(base, "zebra"));
        assert_ne!(twos, sm);
        // A quantiser enters the key only when it does something.
        let q = |t: &str| key_of(&format!("{base}[quantize]\n{t}\n"), "zebra");
        assert_eq!(q("terms = 0"), key_of(base, "zebra"));
        let quantized = [
            q("terms = 2"),
            q("terms = 3"),
            q("row_order = \"magnitude\""),
            q("group = 8\ngroup_terms = 9"),
        ];
        for (i, k) in quantized.iter().enumerate() {
            assert_ne!(k, &key_of(base, "zebra"), "quantiser {i}");
            assert!(quantized[..i].iter().all(|o| o != k), "quantiser {i}");
        }
    }

    #[test]
    fn cell_formats_enter_the_key_only_beyond_one_digit_per_cell() {
        use crate::model::Encoding;
        let text = "version = 1\nseed = 7\n[layer]\nk = 64\nn = 8\n";
        let exp = Experiment::parse(text, Path::new("k.toml"), Overrides::default()).unwrap();
        let params = &exp.points[0].params;
        let zebra = MappingSpec::preset("zebra").unwrap();
        let key = |m: &MappingSpec| point_key(params, m);
        assert_eq!(
            key(&zebra),
            key_of("seed = 7\n[layer]\nk = 64\nn = 8\n", "zebra")
        );
        let two = MappingSpec {
            bits_per_cell: 2,
            ..zebra.clone()
        };
        let three = MappingSpec {
            bits_per_cell: 3,
            ..zebra.clone()
        };
        let slots = |k| MappingSpec {
            encoding: Encoding::TermSlots,
            slots: Some(k),
            ..zebra.clone()
        };
        let keys = [
            key(&zebra),
            key(&two),
            key(&three),
            key(&slots(2)),
            key(&slots(3)),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
