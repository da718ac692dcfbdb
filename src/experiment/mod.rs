//! Experiment files: TOML with a base configuration, sweep axes and the
//! mappings to compare, checked and expanded into validated sweep points
//! before anything is simulated.

pub mod plan;
pub mod workload;

use crate::error::{Error, Result};
use crate::model::energy::{AdcModel, AdcScaling, ISAAC_BITS};
use crate::model::quantize::{Quantizer, RowOrder};
use crate::model::{InputCoding, MappingSpec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The experiment file format version this build reads.
pub const FORMAT_VERSION: u32 = 1;

/// Top-level keys a sweep may not vary.
const UNSWEEPABLE: [&str; 7] = [
    "version",
    "network",
    "name",
    "description",
    "mappings",
    "custom_mapping",
    "sweep",
];

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: u32,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default = "default_trials")]
    trials: i64,
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_mappings")]
    mappings: Vec<String>,
    #[serde(default)]
    custom_mapping: Vec<MappingSpec>,
    #[serde(default)]
    layer: RawLayer,
    #[serde(default)]
    array: RawArray,
    #[serde(default)]
    adc: RawAdc,
    #[serde(default)]
    noise: RawNoise,
    #[serde(default)]
    energy: RawEnergy,
    #[serde(default)]
    quantize: RawQuantize,
    #[serde(default)]
    network: Option<RawNetwork>,
    #[serde(default)]
    sweep: toml::Table,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    model: PathBuf,
    images: PathBuf,
    labels: PathBuf,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default = "default_calibration_images")]
    calibration_images: i64,
}

fn default_calibration_images() -> i64 {
    16
}

/// A whole-network accuracy experiment: which model on which images.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkParams {
    /// The model's TOML file (docs/NETWORK.md).
    pub model: PathBuf,
    /// Images and labels: IDX files (gzipped or not) or a `.npy` pair.
    pub images: PathBuf,
    pub labels: PathBuf,
    /// Use only the first `limit` images.
    pub limit: Option<usize>,
    /// Images whose clean activations calibrate `calibrated` ADC ranges.
    pub calibration_images: usize,
}

fn default_trials() -> i64 {
    1000
}
fn default_mappings() -> Vec<String> {
    vec!["dense".into(), "zebra".into()]
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    k: Option<i64>,
    n: Option<i64>,
    inputs: Option<i64>,
    #[serde(default = "default_bits")]
    weight_bits: i64,
    #[serde(default = "default_bits")]
    input_bits: i64,
    #[serde(default = "default_weights")]
    weights: String,
    weights_file: Option<PathBuf>,
    inputs_file: Option<PathBuf>,
    input_zero_fraction: Option<f64>,
    #[serde(default = "default_input_sign")]
    input_sign: String,
}

impl Default for RawLayer {
    fn default() -> Self {
        // The field defaults, as if `[layer]` were empty.
        toml::Value::Table(toml::Table::new())
            .try_into()
            .expect("empty [layer] is valid")
    }
}

fn default_bits() -> i64 {
    8
}
fn default_weights() -> String {
    "gaussian".into()
}
fn default_input_sign() -> String {
    "unsigned".into()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawArray {
    #[serde(default = "default_parallelism")]
    parallelism: i64,
    #[serde(default = "default_signed_inputs")]
    signed_inputs: String,
}

impl Default for RawArray {
    fn default() -> Self {
        RawArray {
            parallelism: default_parallelism(),
            signed_inputs: default_signed_inputs(),
        }
    }
}
fn default_signed_inputs() -> String {
    "twos-complement".into()
}
fn default_parallelism() -> i64 {
    128
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
enum RawBits {
    Bits(i64),
    Name(String),
    /// Anything else (a float, a table): refused with what is accepted.
    Other(toml::Value),
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawAdc {
    #[serde(default = "default_adc_bits")]
    bits: RawBits,
    #[serde(default = "default_percentile")]
    calibrate_percentile: f64,
}

impl Default for RawAdc {
    fn default() -> Self {
        RawAdc {
            bits: default_adc_bits(),
            calibrate_percentile: default_percentile(),
        }
    }
}
fn default_adc_bits() -> RawBits {
    RawBits::Bits(6)
}
fn default_percentile() -> f64 {
    99.9
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawNoise {
    #[serde(default)]
    cell_sigma: f64,
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default)]
    read_sigma: f64,
    #[serde(default)]
    fs_sigma: f64,
    #[serde(default)]
    adc_sigma_lsb: f64,
    #[serde(default)]
    leak: f64,
    #[serde(default)]
    p_sa0: f64,
    #[serde(default)]
    p_sa1: f64,
    #[serde(default = "default_sampling")]
    sampling: String,
}

impl Default for RawNoise {
    fn default() -> Self {
        RawNoise {
            cell_sigma: 0.0,
            mode: default_mode(),
            read_sigma: 0.0,
            fs_sigma: 0.0,
            adc_sigma_lsb: 0.0,
            leak: 0.0,
            p_sa0: 0.0,
            p_sa1: 0.0,
            sampling: default_sampling(),
        }
    }
}
fn default_mode() -> String {
    "static".into()
}
fn default_sampling() -> String {
    "auto".into()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawEnergy {
    model: String,
    adc_scaling: String,
    adc_fj_per_step: f64,
    cell_fj: f64,
    add_fj: f64,
    check_fj: f64,
    comparator_fj: f64,
    envelope_fj_per_step: f64,
    schreier_db: f64,
    cell_um2: f64,
    add_um2: f64,
    check_um2: f64,
    comparator_um2: f64,
}

impl Default for RawEnergy {
    fn default() -> Self {
        let d = ENERGY_DEFAULTS;
        RawEnergy {
            model: d.model.label().into(),
            adc_scaling: d.adc_scaling.label().into(),
            adc_fj_per_step: d.adc_fj_per_step,
            cell_fj: d.cell_fj,
            add_fj: d.add_fj,
            check_fj: d.check_fj,
            comparator_fj: d.comparator_fj,
            envelope_fj_per_step: d.envelope_fj_per_step,
            schreier_db: d.schreier_db,
            cell_um2: d.cell_um2,
            add_um2: d.add_um2,
            check_um2: d.check_um2,
            comparator_um2: d.comparator_um2,
        }
    }
}

/// `[quantize]`: 0 turns a budget off.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawQuantize {
    terms: i64,
    group: i64,
    group_terms: i64,
    row_order: Option<String>,
}

/// The coefficients of the energy and area models (`[energy]`, see
/// `model::energy` and docs/MODEL.md).
pub use crate::model::energy::EnergyParams;

/// Defaults, see docs/MODEL.md (energy and area models): the `proxy` model,
/// charged at the ADC's bits, with a Walden FOM of 50 fJ per conversion
/// step, inside the range of SAR ADCs in B. Murmann's ADC Performance
/// Survey, and 1 fJ per active cell read, the order of magnitude of
/// SRAM/ReRAM CIM bit-cell operations.
pub const ENERGY_DEFAULTS: EnergyParams = crate::model::energy::DEFAULTS;

/// Cell mismatch drawn once per chip, or at every read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseMode {
    Static,
    Dynamic,
}

impl NoiseMode {
    /// The name experiment and result files use.
    pub fn label(&self) -> &'static str {
        match self {
            NoiseMode::Static => "static",
            NoiseMode::Dynamic => "dynamic",
        }
    }
}

/// How dynamic cell noise is sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Aggregated wherever it is exact in distribution, else per cell.
    Auto,
    /// One Gaussian per cell and read.
    PerCell,
    /// One Gaussian per conversion with the summed variance (dynamic noise only).
    Aggregated,
}

impl Sampling {
    /// The name experiment files use.
    pub fn label(&self) -> &'static str {
        match self {
            Sampling::Auto => "auto",
            Sampling::PerCell => "per-cell",
            Sampling::Aggregated => "aggregated",
        }
    }
}

/// Where the weights come from.
#[derive(Clone, Debug, PartialEq)]
pub enum WeightSource {
    Gaussian,
    Laplace,
    File(PathBuf),
}

/// Where the inputs come from.
#[derive(Clone, Debug, PartialEq)]
pub enum InputSource {
    /// Rectified Gaussian with this fraction of exact zeros, scaled so the
    /// largest maps to 2^Bx-1 (unsigned inputs).
    RectifiedGaussian {
        zero_fraction: f64,
    },
    /// Uniform over the input coding's range (signed inputs).
    Uniform,
    File(PathBuf),
}

/// The layer to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerParams {
    /// Rows (inputs per vector); `None` means taken from the weights file.
    pub k: usize,
    pub n: usize,
    /// Input vectors per trial.
    pub inputs: usize,
    pub weight_bits: u32,
    pub input_bits: u32,
    pub weights: WeightSource,
    pub input_source: InputSource,
    /// How the array applies the inputs: `Unsigned` for unsigned inputs,
    /// `[array] signed_inputs` for signed ones.
    pub coding: InputCoding,
    /// `[quantize]`: applied to the weights (synthetic, `.npy` or a
    /// network's) before a mapping encodes them.
    pub quantize: Quantizer,
}

/// Noise of one sweep point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseParams {
    pub cell_sigma: f32,
    pub mode: NoiseMode,
    pub read_sigma: f32,
    /// Conversion noise as a fraction of the conversion's full-scale range.
    pub fs_sigma: f32,
    /// ADC input-referred noise in LSBs (steps) of the conversion.
    pub adc_sigma_lsb: f32,
    pub leak: f32,
    pub p_sa0: f32,
    pub p_sa1: f32,
    pub sampling: Sampling,
}

/// Every parameter of one sweep point, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub trials: u32,
    pub seed: u64,
    pub layer: LayerParams,
    pub parallelism: usize,
    /// `None` is an ideal ADC.
    pub adc_bits: Option<u32>,
    pub calibrate_percentile: f64,
    pub noise: NoiseParams,
    pub energy: EnergyParams,
    /// `[array] signed_inputs`: how the arrays apply signed inputs (a
    /// synthetic layer's are in `layer.coding`; a network's int8 activations).
    pub signed_inputs: InputCoding,
}

/// One point of the sweep.
#[derive(Clone, Debug)]
pub struct Point {
    pub index: usize,
    /// The swept keys and their values at this point, in axis order.
    pub assignments: Vec<(String, String)>,
    pub params: Params,
}

/// A validated, expanded experiment.
#[derive(Clone, Debug)]
pub struct Experiment {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub mappings: Vec<MappingSpec>,
    /// Swept keys, outermost first.
    pub axes: Vec<String>,
    pub points: Vec<Point>,
    /// Set for whole-network accuracy experiments (a `[network]` section).
    pub network: Option<NetworkParams>,
}

/// Values the command line may impose on every point.
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    pub trials: Option<u32>,
    pub seed: Option<u64>,
    /// Network experiments: use only the first N images.
    pub images: Option<usize>,
}

impl Experiment {
    /// Reads, validates and expands an experiment file.
    pub fn load(path: &Path, overrides: Overrides) -> Result<Experiment> {
        let text = crate::io::read_regular_text(path)?;
        Self::parse(&text, path, overrides)
    }

    /// Validates and expands experiment text; `path` names it in errors and
    /// anchors relative `.npy` paths.
    pub fn parse(text: &str, path: &Path, overrides: Overrides) -> Result<Experiment> {
        let file = path.display().to_string();
        let err = |msg: String| Error::config(file.clone(), msg);
        // Typed parse first, for line numbers on wrong types and unknown keys.
        let raw: RawFile = toml::from_str(text).map_err(|e| err(toml_message(text, &e)))?;
        if raw.version != FORMAT_VERSION {
            return Err(err(format!(
                "`version` must be {FORMAT_VERSION}, got {}",
                raw.version
            )));
        }
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| err(toml_message(text, &e)))?;
        table.remove("sweep");

        let mappings = resolve_mappings(&raw).map_err(err)?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let network = match &raw.network {
            None => None,
            Some(_) if table.contains_key("layer") => {
                return Err(err("give `[layer]` (a matrix-vector experiment) or `[network]` (an accuracy experiment), not both".into()));
            }
            Some(n) => Some(resolve_network(n, &base_dir, overrides).map_err(err)?),
        };
        let axes = sweep_axes(&raw.sweep).map_err(err)?;
        let points = expand_points(&table, &axes, &base_dir, overrides).map_err(err)?;
        let name = match &raw.name {
            Some(n) => check_name(n).map_err(|m| err(format!("`name` {m}")))?,
            None => {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "experiment".into());
                check_name(&stem).map_err(|m| {
                    err(format!(
                        "the file name gives the experiment name, which {m}; set `name`"
                    ))
                })?
            }
        };
        Ok(Experiment {
            name,
            file: path.to_path_buf(),
            description: raw.description,
            mappings,
            axes: axes.into_iter().map(|(k, _)| k).collect(),
            points,
            network,
        })
    }
}

/// Longest accepted experiment name (it names the result files).
pub const MAX_NAME_LEN: usize = 100;

/// Most sweep points an experiment may expand to; larger sweeps are split
/// into several files (each point's result row is kept and rewritten).
pub const MAX_POINTS: u64 = 100_000;

/// An experiment name is a file name inside `--out`: letters, digits, `-`,
/// `_` and `.`, not starting with `.`, at most [`MAX_NAME_LEN`] characters.
fn check_name(name: &str) -> std::result::Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(name.to_string())
    } else {
        let shown: String = name.escape_debug().take(40).collect();
        let more = if name.chars().count() > 40 { "..." } else { "" };
        Err(format!(
            "is \"{shown}{more}\" ({} characters); accepted: 1 to {MAX_NAME_LEN} letters, digits, `-`, `_` or `.`, not starting with `.`",
            name.chars().count()
        ))
    }
}

/// The `[network]` section, its paths relative to the experiment file.
fn resolve_network(
    n: &RawNetwork,
    base_dir: &Path,
    overrides: Overrides,
) -> std::result::Result<NetworkParams, String> {
    let limit = match overrides.images.map(|v| v as i64).or(n.limit) {
        None => None,
        Some(v) => Some(in_range("network.limit", v, 1, 100_000_000)? as usize),
    };
    Ok(NetworkParams {
        model: base_dir.join(&n.model),
        images: base_dir.join(&n.images),
        labels: base_dir.join(&n.labels),
        limit,
        calibration_images: in_range(
            "network.calibration_images",
            n.calibration_images,
            1,
            100_000,
        )? as usize,
    })
}

/// The sweep axes in file order: each key with its (non-empty) values.
fn sweep_axes(sweep: &toml::Table) -> std::result::Result<Vec<(String, Vec<toml::Value>)>, String> {
    let mut axes = Vec::new();
    for (key, values) in sweep {
        if UNSWEEPABLE.contains(&key.as_str()) {
            return Err(format!(
                "sweep key `{key}` cannot be swept; sweep a parameter such as `noise.cell_sigma`"
            ));
        }
        if key.starts_with("network.") {
            return Err(format!(
                "sweep key `{key}` cannot be swept: an accuracy experiment runs one model on one dataset; write one experiment file per model, dataset or limit (`--images` overrides the limit)"
            ));
        }
        let values = match values {
            toml::Value::Array(v) => v.clone(),
            other => {
                return Err(format!(
                    "sweep key `{key}` must be an array of values, got {}",
                    other.type_str()
                ))
            }
        };
        if values.is_empty() {
            return Err(format!(
                "sweep key `{key}` has no values; give at least one"
            ));
        }
        for (i, v) in values.iter().enumerate() {
            if values[..i].iter().any(|w| value_label(w) == value_label(v)) {
                return Err(format!(
                    "sweep key `{key}` lists {} twice; give each value once",
                    value_label(v)
                ));
            }
        }
        axes.push((key.clone(), values));
    }
    // Counted before anything is expanded: a product of long axes is checked
    // without building its points.
    let total = axes
        .iter()
        .try_fold(1u64, |acc, (_, v)| acc.checked_mul(v.len() as u64))
        .unwrap_or(u64::MAX);
    if total > MAX_POINTS {
        let sizes: Vec<String> = axes.iter().map(|(_, v)| v.len().to_string()).collect();
        return Err(format!(
            "the sweep has {total} points ({}), more than the limit of {MAX_POINTS}; split it into several experiment files",
            sizes.join(" x ")
        ));
    }
    Ok(axes)
}

/// Every point of the sweep (the last axis varying fastest), each the base
/// table with its values set, checked into [`Params`].
fn expand_points(
    table: &toml::Table,
    axes: &[(String, Vec<toml::Value>)],
    base_dir: &Path,
    overrides: Overrides,
) -> std::result::Result<Vec<Point>, String> {
    let total: usize = axes.iter().map(|(_, v)| v.len()).product();
    let mut points = Vec::with_capacity(total);
    for index in 0..total {
        let mut t = table.clone();
        let mut assignments = Vec::new();
        let mut rem = index;
        let mut picks = vec![0; axes.len()];
        for (a, (_, values)) in axes.iter().enumerate().rev() {
            picks[a] = rem % values.len();
            rem /= values.len();
        }
        for (a, (key, values)) in axes.iter().enumerate() {
            let v = values[picks[a]].clone();
            assignments.push((key.clone(), value_label(&v)));
            set_path(&mut t, key, v).map_err(|m| format!("sweep key `{key}`: {m}"))?;
        }
        let at = if assignments.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = assignments
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            format!("sweep point {} ({}): ", index, list.join(", "))
        };
        let raw_point: RawFile = toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| format!("{at}{}", e.message().trim()))?;
        let params =
            resolve_params(&raw_point, base_dir, overrides).map_err(|m| format!("{at}{m}"))?;
        points.push(Point {
            index,
            assignments,
            params,
        });
    }
    Ok(points)
}

/// One line: the toml message with its line number and, for a value of the
/// wrong type, the key it was given for.
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let at = span.start.min(text.len());
            let line = text[..at].matches('\n').count() + 1;
            let typed = ["invalid type", "invalid value", "invalid length"]
                .iter()
                .any(|p| msg.starts_with(p));
            match key_of_value_at(text, at).filter(|_| typed) {
                Some(key) => format!("line {line}, `{key}`: {msg}"),
                None => format!("line {line}: {msg}"),
            }
        }
        None => msg,
    }
}

/// The dotted key whose value starts at byte `at` (`section.key` for a
/// `key = value` line under `[section]`), or `None` when `at` is not in a value.
fn key_of_value_at(text: &str, at: usize) -> Option<String> {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[line_start..];
    let eq = line.find('=')?;
    if line_start + eq >= at {
        return None;
    }
    let key = line[..eq].trim().replace(['"', '\''], "");
    if key.is_empty() || key.starts_with('#') || key.starts_with('[') {
        return None;
    }
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match section {
        Some(s) if !s.is_empty() => format!("{s}.{key}"),
        _ => key,
    })
}

fn value_label(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn set_path(t: &mut toml::Table, key: &str, v: toml::Value) -> std::result::Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = t;
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            cur.insert((*part).to_string(), v);
            return Ok(());
        }
        let entry = cur
            .entry((*part).to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(inner) => inner,
            _ => return Err(format!("`{part}` is not a section")),
        };
    }
    Err("empty key".into())
}

fn resolve_mappings(raw: &RawFile) -> std::result::Result<Vec<MappingSpec>, String> {
    if raw.mappings.is_empty() {
        return Err(
            "`mappings` is empty; list at least one of the built-in or custom mappings".into(),
        );
    }
    let presets: Vec<String> = MappingSpec::presets().into_iter().map(|m| m.name).collect();
    for (i, c) in raw.custom_mapping.iter().enumerate() {
        if c.name.trim().is_empty() {
            return Err(format!(
                "`[[custom_mapping]]` number {} has an empty `name`; give it a name to list in `mappings`",
                i + 1
            ));
        }
        if presets.contains(&c.name) {
            return Err(format!(
                "`[[custom_mapping]]` `{}` has the name of a built-in mapping; choose another name (built-in: {})",
                c.name,
                presets.join(", ")
            ));
        }
        check_cells(c)?;
        if raw.custom_mapping[..i].iter().any(|o| o.name == c.name) {
            return Err(format!(
                "two `[[custom_mapping]]` are named `{}`; give each a different name",
                c.name
            ));
        }
    }
    let mut out: Vec<MappingSpec> = Vec::new();
    for name in &raw.mappings {
        let spec = raw
            .custom_mapping
            .iter()
            .find(|m| &m.name == name)
            .cloned()
            .or_else(|| MappingSpec::preset(name))
            .ok_or_else(|| {
                let customs: Vec<&str> =
                    raw.custom_mapping.iter().map(|m| m.name.as_str()).collect();
                format!(
                    "unknown mapping `{name}` in `mappings`; built-in: {}{}",
                    presets.join(", "),
                    if customs.is_empty() {
                        String::new()
                    } else {
                        format!("; custom: {}", customs.join(", "))
                    }
                )
            })?;
        if out.iter().any(|m| m.name == spec.name) {
            return Err(format!("mapping `{name}` is listed twice in `mappings`"));
        }
        out.push(spec);
    }
    Ok(out)
}

/// A custom mapping's cells: `bits_per_cell` 1..=4 for the digit
/// encodings; `slots` 1..=8 with `term-slots`, and only there.
fn check_cells(m: &MappingSpec) -> std::result::Result<(), String> {
    let name = &m.name;
    let term_slots = m.encoding == crate::model::Encoding::TermSlots;
    match m.slots {
        None if term_slots => Err(format!(
            "`[[custom_mapping]]` `{name}` has `encoding = \"term-slots\"` without `slots`; give the term slots per weight, 1..=8"
        )),
        Some(_) if !term_slots => Err(format!(
            "`[[custom_mapping]]` `{name}`: `slots` applies to `encoding = \"term-slots\"` only, not to `{}`",
            m.encoding.label()
        )),
        Some(k) if !(1..=8).contains(&k) => Err(format!(
            "`[[custom_mapping]]` `{name}`: `slots` must be 1..=8, got {k}"
        )),
        _ if term_slots && m.bits_per_cell != 1 => Err(format!(
            "`[[custom_mapping]]` `{name}`: `bits_per_cell` applies to twos-complement, sign-magnitude and csd; a term slot holds one term, so leave it out with `term-slots`"
        )),
        _ if !(1..=4).contains(&m.bits_per_cell) => Err(format!(
            "`[[custom_mapping]]` `{name}`: `bits_per_cell` must be 1..=4, got {}",
            m.bits_per_cell
        )),
        _ => Ok(()),
    }
}

fn in_range(key: &str, v: i64, lo: i64, hi: i64) -> std::result::Result<i64, String> {
    if v < lo || v > hi {
        Err(format!("`{key}` must be {lo}..={hi}, got {v}"))
    } else {
        Ok(v)
    }
}

fn finite_range(key: &str, v: f64, lo: f64, hi: f64) -> std::result::Result<f64, String> {
    if !v.is_finite() || v < lo || v > hi {
        Err(format!("`{key}` must be a number in [{lo}, {hi}], got {v}"))
    } else {
        Ok(v)
    }
}

fn resolve_params(
    raw: &RawFile,
    base_dir: &Path,
    o: Overrides,
) -> std::result::Result<Params, String> {
    let trials = match o.trials {
        Some(t) => in_range("--trials", t as i64, 1, 100_000_000)? as u32,
        None => in_range("trials", raw.trials, 1, 100_000_000)? as u32,
    };
    let seed = o.seed.unwrap_or(raw.seed);
    let mut layer = resolve_layer(&raw.layer, &raw.array, base_dir)?;
    layer.quantize = resolve_quantize(&raw.quantize, layer.weight_bits)?;
    let parallelism = in_range("array.parallelism", raw.array.parallelism, 1, 1 << 20)? as usize;
    let adc_bits = match &raw.adc.bits {
        RawBits::Bits(b) if (1..=16).contains(b) => Some(*b as u32),
        RawBits::Name(s) if s == "ideal" => None,
        RawBits::Bits(b) => return Err(format!("`adc.bits` must be 1..=16 or \"ideal\", got {b}")),
        RawBits::Name(s) => {
            return Err(format!(
                "`adc.bits` must be 1..=16 or \"ideal\", got \"{s}\""
            ))
        }
        RawBits::Other(v) => {
            return Err(format!(
                "`adc.bits` must be a whole number 1..=16 or \"ideal\", got {} {v}",
                v.type_str()
            ))
        }
    };
    let calibrate_percentile = raw.adc.calibrate_percentile;
    if !(calibrate_percentile.is_finite()
        && calibrate_percentile > 50.0
        && calibrate_percentile <= 100.0)
    {
        return Err(format!(
            "`adc.calibrate_percentile` must be in (50, 100], got {calibrate_percentile}"
        ));
    }
    let noise = resolve_noise(&raw.noise)?;
    if noise.adc_sigma_lsb > 0.0 && adc_bits.is_none() {
        return Err("`noise.adc_sigma_lsb` is noise in steps of a real ADC; an ideal ADC (`adc.bits = \"ideal\"`) has none: give `adc.bits` 1..=16 or drop it".into());
    }
    let energy = resolve_energy(&raw.energy, adc_bits)?;
    Ok(Params {
        energy,
        trials,
        seed,
        signed_inputs: signed_coding(&raw.array)?,
        layer,
        parallelism,
        adc_bits,
        calibrate_percentile,
        noise,
    })
}

/// The `[energy]` section, for an ADC of `adc_bits` (`None`: ideal).
fn resolve_energy(
    e: &RawEnergy,
    adc_bits: Option<u32>,
) -> std::result::Result<EnergyParams, String> {
    let model = AdcModel::from_label(&e.model).ok_or_else(|| {
        let names: Vec<String> = AdcModel::ALL
            .iter()
            .map(|m| format!("\"{}\"", m.label()))
            .collect();
        format!(
            "`energy.model` must be one of {}, got \"{}\"",
            names.join(", "),
            e.model
        )
    })?;
    let adc_scaling = match e.adc_scaling.as_str() {
        "fixed" => AdcScaling::Fixed,
        "effective" => AdcScaling::Effective,
        other => {
            return Err(format!(
                "`energy.adc_scaling` must be \"fixed\" or \"effective\", got \"{other}\""
            ))
        }
    };
    if model == AdcModel::Isaac && adc_bits.is_none_or(|b| b > *ISAAC_BITS.end()) {
        let bits = adc_bits.map_or("\"ideal\"".into(), |b| b.to_string());
        return Err(format!(
            "`energy.model = \"isaac\"` has table entries up to {} bits; `adc.bits` is {bits}",
            ISAAC_BITS.end()
        ));
    }
    let coefficient = |key: &str, v: f64| finite_range(&format!("energy.{key}"), v, 0.0, 1e9);
    Ok(EnergyParams {
        model,
        adc_scaling,
        adc_fj_per_step: coefficient("adc_fj_per_step", e.adc_fj_per_step)?,
        cell_fj: coefficient("cell_fj", e.cell_fj)?,
        add_fj: coefficient("add_fj", e.add_fj)?,
        check_fj: coefficient("check_fj", e.check_fj)?,
        comparator_fj: coefficient("comparator_fj", e.comparator_fj)?,
        envelope_fj_per_step: coefficient("envelope_fj_per_step", e.envelope_fj_per_step)?,
        schreier_db: finite_range("energy.schreier_db", e.schreier_db, 100.0, 250.0)?,
        cell_um2: coefficient("cell_um2", e.cell_um2)?,
        add_um2: coefficient("add_um2", e.add_um2)?,
        check_um2: coefficient("check_um2", e.check_um2)?,
        comparator_um2: coefficient("comparator_um2", e.comparator_um2)?,
    })
}

/// The `[quantize]` section, for weights of `weight_bits` bits.
fn resolve_quantize(q: &RawQuantize, weight_bits: u32) -> std::result::Result<Quantizer, String> {
    let terms = in_range("quantize.terms", q.terms, 0, weight_bits as i64)
        .map_err(|e| format!("{e} (0: no budget; at most the weight bits)"))?;
    let group = in_range("quantize.group", q.group, 0, 1 << 20)?;
    let group_terms = in_range("quantize.group_terms", q.group_terms, 0, 1 << 24)?;
    let group = match (group, group_terms) {
        (0, 0) => None,
        (0, _) | (_, 0) => {
            return Err(format!("`quantize.group` and `quantize.group_terms` go together (a budget of `group_terms` terms per `group` weights of a column); got group = {group}, group_terms = {group_terms}"))
        }
        (g, t) => Some((g as usize, t as u32)),
    };
    let row_order = match q.row_order.as_deref() {
        None | Some("natural") => RowOrder::Natural,
        Some("magnitude") => RowOrder::Magnitude,
        Some(other) => {
            return Err(format!(
                "`quantize.row_order` must be \"natural\" or \"magnitude\", got \"{other}\""
            ))
        }
    };
    Ok(Quantizer {
        terms: (terms > 0).then_some(terms as u32),
        group,
        row_order,
    })
}

/// How `[array]` applies signed inputs.
fn signed_coding(a: &RawArray) -> std::result::Result<InputCoding, String> {
    match a.signed_inputs.as_str() {
        "twos-complement" => Ok(InputCoding::TwosComplement),
        "sign-magnitude" => Ok(InputCoding::SignMagnitude),
        other => Err(format!(
            "`array.signed_inputs` must be \"twos-complement\" or \"sign-magnitude\", got \"{other}\""
        )),
    }
}

/// The `[layer]` section, its files relative to the experiment file, and
/// how `[array]` applies its inputs.
fn resolve_layer(
    l: &RawLayer,
    a: &RawArray,
    base_dir: &Path,
) -> std::result::Result<LayerParams, String> {
    let weight_bits = in_range("layer.weight_bits", l.weight_bits, 2, 8)? as u32;
    let signed_coding = signed_coding(a)?;
    let coding = match l.input_sign.as_str() {
        "unsigned" => InputCoding::Unsigned,
        "signed" => signed_coding,
        other => {
            return Err(format!(
                "`layer.input_sign` must be \"unsigned\" or \"signed\", got \"{other}\""
            ))
        }
    };
    let input_bits = in_range("layer.input_bits", l.input_bits, 1, 8)? as u32;
    if coding.signed() && input_bits < 2 {
        return Err(format!(
            "`layer.input_bits` must be 2..=8 for signed inputs (`layer.input_sign = \"signed\"`), got {input_bits}"
        ));
    }
    let weights = match &l.weights_file {
        Some(p) => WeightSource::File(base_dir.join(p)),
        None => match l.weights.as_str() {
            "gaussian" => WeightSource::Gaussian,
            "laplace" => WeightSource::Laplace,
            other => return Err(format!("`layer.weights` must be \"gaussian\" or \"laplace\" (or set `layer.weights_file`), got \"{other}\"")),
        },
    };
    let input_source = match &l.inputs_file {
        Some(p) => InputSource::File(base_dir.join(p)),
        None if coding.signed() => InputSource::Uniform,
        None => InputSource::RectifiedGaussian {
            zero_fraction: finite_range(
                "layer.input_zero_fraction",
                l.input_zero_fraction.unwrap_or(0.5),
                0.0,
                1.0,
            )?,
        },
    };
    if let (Some(_), InputSource::Uniform) = (l.input_zero_fraction, &input_source) {
        return Err("`layer.input_zero_fraction` shapes unsigned synthetic inputs only; signed synthetic inputs are uniform over the coding's range (remove it, or give `layer.inputs_file`)".into());
    }
    let dim = |key: &str, v: Option<i64>, default: i64| -> std::result::Result<usize, String> {
        Ok(in_range(key, v.unwrap_or(default), 1, 1 << 20)? as usize)
    };
    Ok(LayerParams {
        k: dim("layer.k", l.k, 256)?,
        n: dim("layer.n", l.n, 256)?,
        inputs: dim("layer.inputs", l.inputs, 16)?,
        weight_bits,
        input_bits,
        weights,
        input_source,
        coding,
        quantize: Quantizer::default(),
    })
}

/// The `[noise]` section.
fn resolve_noise(n: &RawNoise) -> std::result::Result<NoiseParams, String> {
    let mode = match n.mode.as_str() {
        "static" => NoiseMode::Static,
        "dynamic" => NoiseMode::Dynamic,
        other => {
            return Err(format!(
                "`noise.mode` must be \"static\" or \"dynamic\", got \"{other}\""
            ))
        }
    };
    let sampling = match n.sampling.as_str() {
        "auto" => Sampling::Auto,
        "per-cell" => Sampling::PerCell,
        "aggregated" => Sampling::Aggregated,
        other => {
            return Err(format!(
            "`noise.sampling` must be \"auto\", \"per-cell\" or \"aggregated\", got \"{other}\""
        ))
        }
    };
    let cell_sigma = finite_range("noise.cell_sigma", n.cell_sigma, 0.0, 10.0)?;
    if sampling == Sampling::Aggregated && mode == NoiseMode::Static && cell_sigma > 0.0 {
        return Err("`noise.sampling = \"aggregated\"` is exact only for dynamic cell noise; use \"auto\" or \"per-cell\" with `noise.mode = \"static\"`".into());
    }
    let p_sa0 = finite_range("noise.p_sa0", n.p_sa0, 0.0, 1.0)?;
    let p_sa1 = finite_range("noise.p_sa1", n.p_sa1, 0.0, 1.0)?;
    if p_sa0 + p_sa1 > 1.0 {
        return Err(format!(
            "`noise.p_sa0 + noise.p_sa1` must be at most 1, got {}",
            p_sa0 + p_sa1
        ));
    }
    Ok(NoiseParams {
        cell_sigma: cell_sigma as f32,
        mode,
        read_sigma: finite_range("noise.read_sigma", n.read_sigma, 0.0, 1e6)? as f32,
        fs_sigma: finite_range("noise.fs_sigma", n.fs_sigma, 0.0, 10.0)? as f32,
        adc_sigma_lsb: finite_range("noise.adc_sigma_lsb", n.adc_sigma_lsb, 0.0, 1e3)? as f32,
        leak: finite_range("noise.leak", n.leak, 0.0, 1.0)? as f32,
        p_sa0: p_sa0 as f32,
        p_sa1: p_sa1 as f32,
        sampling,
    })
}

/// FNV-1a: a hash that is stable across builds and platforms.
pub fn stable_hash(text: &str) -> u64 {
    stable_hash_bytes(FNV_OFFSET, text.as_bytes())
}

/// The FNV-1a offset basis: where a [`stable_hash_bytes`] chain starts.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, continuing from `h` ([`FNV_OFFSET`] starts afresh).
pub fn stable_hash_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Experiment> {
        Experiment::parse(text, Path::new("t.toml"), Overrides::default())
    }

    #[test]
    fn sweep_is_a_cartesian_product_outermost_first() {
        let e = parse(
            "version = 1\n[sweep]\n\"noise.cell_sigma\" = [0.01, 0.02, 0.05]\n\"array.parallelism\" = [64, 128]\n",
        )
        .unwrap();
        assert_eq!(e.points.len(), 6);
        assert_eq!(e.points[1].params.parallelism, 128);
        assert_eq!(e.points[2].params.noise.cell_sigma, 0.02);
        assert_eq!(
            e.points[5].assignments[0],
            ("noise.cell_sigma".to_string(), "0.05".to_string())
        );
        assert_eq!(e.mappings.len(), 2);
    }

    #[test]
    fn errors_name_the_key() {
        let msg = parse("version = 1\n[noise]\ncell_sgma = 0.1\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 3") && msg.contains("cell_sgma"), "{msg}");
        let msg = parse("version = 1\n[adc]\nbits = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`adc.bits` must be 1..=16 or \"ideal\", got 0"),
            "{msg}"
        );
        let msg = parse("version = 1\n[noise]\ncell_sigma = \"big\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 3, `noise.cell_sigma`: invalid type: string \"big\""),
            "{msg}"
        );
        let msg = parse("version = 1\n[sweep]\n\"adc.bits\" = [4, 40]\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("sweep point 1 (adc.bits = 40)"), "{msg}");
    }

    #[test]
    fn energy_keys_parse_and_default_to_the_proxy() {
        let e = parse("version = 1\n").unwrap();
        assert_eq!(e.points[0].params.energy, ENERGY_DEFAULTS);
        let e = parse(
            "version = 1\n[energy]\nmodel = \"neurosim-sar\"\nadc_scaling = \"effective\"\n\
             adc_fj_per_step = 2.0\ncell_fj = 3.0\nadd_fj = 4.0\ncheck_fj = 5.0\n\
             comparator_fj = 6.0\nenvelope_fj_per_step = 7.0\nschreier_db = 170.0\n\
             cell_um2 = 8.0\nadd_um2 = 9.0\ncheck_um2 = 10.0\ncomparator_um2 = 11.0\n\
             [sweep]\n\"energy.model\" = [\"flash\", \"murmann\"]\n",
        )
        .unwrap();
        let p = e.points[1].params.energy;
        assert_eq!(
            p,
            EnergyParams {
                model: AdcModel::Murmann,
                adc_scaling: AdcScaling::Effective,
                adc_fj_per_step: 2.0,
                cell_fj: 3.0,
                add_fj: 4.0,
                check_fj: 5.0,
                comparator_fj: 6.0,
                envelope_fj_per_step: 7.0,
                schreier_db: 170.0,
                cell_um2: 8.0,
                add_um2: 9.0,
                check_um2: 10.0,
                comparator_um2: 11.0,
            }
        );
        assert_eq!(e.points[0].params.energy.model, AdcModel::Flash);
        // ISAAC's table ends at 10 bits: an ideal ADC has no entry.
        let msg = parse("version = 1\n[adc]\nbits = \"ideal\"\n[energy]\nmodel = \"isaac\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("up to 10 bits; `adc.bits` is \"ideal\""),
            "{msg}"
        );
    }
}
