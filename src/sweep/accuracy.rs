//! Whole-network accuracy: a quantised network's test accuracy when every
//! conv and linear layer runs through simulated CIM arrays.
//!
//! A trial is one manufactured chip: each matrix layer gets its own plan
//! (its own seed, derived from the experiment's seed and the layer's name)
//! and the chip's static noise and faults are drawn once per trial and
//! layer, then every image of the trial goes through the same arrays. Conv
//! layers are lowered by im2col onto the same plan, one input vector per
//! output position.

use crate::engine::cpu::CpuEngine;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::experiment::plan::Plan;
use crate::experiment::workload::Layer;
use crate::experiment::{
    stable_hash, stable_hash_bytes, Experiment, NetworkParams, Params, Point, FNV_OFFSET,
};
use crate::io::csv::{columns, record, CsvRows, OutputLock};
use crate::io::dataset::Dataset;
use crate::model::quantize::{permute_inputs, Quantizer};
use crate::model::{InputCoding, MappingSpec};
use crate::network::Network;
use crate::sweep::output::{
    self, fixed6, ArrayColumns, NetworkCost, NetworkCostColumns, NoiseColumns, QuantizeColumn,
};
use crate::sweep::resume::{ResultFile, RowStore};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The columns of `OUT/NAME.csv` for accuracy experiments: one row per
/// (point, mapping).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AccuracyRow {
    pub experiment: String,
    pub point: usize,
    pub mapping: String,
    pub model: String,
    pub quantize: QuantizeColumn,
    pub images: usize,
    pub array: ArrayColumns,
    pub encoding: String,
    pub noise: NoiseColumns,
    pub trials: u32,
    pub seed: u64,
    #[serde(serialize_with = "fixed6")]
    pub clean_accuracy: f64,
    #[serde(serialize_with = "fixed6")]
    pub mean_accuracy: f64,
    #[serde(serialize_with = "fixed6")]
    pub std_accuracy: f64,
    #[serde(serialize_with = "fixed6")]
    pub min_accuracy: f64,
    #[serde(serialize_with = "fixed6")]
    pub max_accuracy: f64,
    #[serde(serialize_with = "fixed6")]
    pub accuracy_drop: f64,
    pub cost: NetworkCostColumns,
    pub engine: String,
    #[serde(serialize_with = "fixed1")]
    pub images_per_s: f64,
    #[serde(serialize_with = "fixed2")]
    pub seconds: f64,
    pub point_key: String,
}

/// The columns of `OUT/NAME_trials.csv`: one accuracy per simulated chip.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TrialRow {
    pub experiment: String,
    pub point: usize,
    pub mapping: String,
    pub trial: u32,
    #[serde(serialize_with = "fixed6")]
    pub accuracy: f64,
}

impl TrialRow {
    /// The per-chip file's rows of one (point, mapping), chips in order.
    pub fn rows<'a>(
        experiment: &'a str,
        point: usize,
        mapping: &'a str,
        accs: &'a [f64],
    ) -> impl Iterator<Item = Vec<String>> + 'a {
        accs.iter().zip(0..).map(move |(&accuracy, trial)| {
            record(&TrialRow {
                experiment: experiment.into(),
                point,
                mapping: mapping.into(),
                trial,
                accuracy,
            })
        })
    }
}

fn fixed1<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:.1}"))
}

fn fixed2<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:.2}"))
}

/// A network, its test images and its clean int8 accuracy.
pub struct Workload {
    pub net: Network,
    pub data: Dataset,
    /// Images used (the first `count` of the dataset).
    pub count: usize,
    pub clean_accuracy: f64,
}

impl Workload {
    /// Loads and checks the model and the images, and runs the exact int8 reference.
    pub fn load(p: &NetworkParams) -> Result<Workload> {
        let net = Network::load(&p.model)?;
        let npy = p.images.extension().is_some_and(|e| e == "npy");
        let mut data = if npy {
            Dataset::from_npy(&p.images, &p.labels)?
        } else {
            Dataset::from_idx(&p.images, &p.labels)?
        };
        // Channels-last images (n, rows, cols, channels), as NumPy CIFAR-10
        // copies often are, read as (n, c, h, w) = (n, rows, cols, channels).
        let channels_last = net.channels > 1
            && (data.channels, data.rows, data.cols) == (net.height, net.width, net.channels);
        if channels_last {
            data = data.channels_last_to_first();
        }
        if (data.channels, data.rows, data.cols) != (net.channels, net.height, net.width) {
            return Err(Error::Npy {
                path: p.images.clone(),
                msg: format!(
                    "images are {}x{}x{} (channels x rows x cols) but {} takes {}x{}x{}",
                    data.channels,
                    data.rows,
                    data.cols,
                    p.model.display(),
                    net.channels,
                    net.height,
                    net.width
                ),
            });
        }
        let count = match p.limit {
            Some(limit) if limit > data.n => {
                return Err(Error::Npy {
                    path: p.images.clone(),
                    msg: format!(
                        "holds {} images, fewer than the {limit} that `network.limit` (or --images) asks for; give at most {}",
                        data.n, data.n
                    ),
                })
            }
            Some(limit) => limit,
            None => data.n,
        };
        // Labels are class indices: one per logit of the last layer.
        let classes = net.matrices().last().map_or(0, |m| m.outputs);
        if let Some(i) = data.labels[..count]
            .iter()
            .position(|&l| l as usize >= classes)
        {
            return Err(Error::Npy {
                path: p.labels.clone(),
                msg: format!(
                    "label {i} is {}; {} has {classes} classes, so labels must be in [0, {}]",
                    data.labels[i],
                    p.model.display(),
                    classes.saturating_sub(1)
                ),
            });
        }
        Ok(Workload {
            clean_accuracy: clean_accuracy(&net, &data, count),
            net,
            data,
            count,
        })
    }

    /// The workload with quantiser `q`'s term budgets applied to the
    /// network, its clean accuracy that of the quantised network; `None`
    /// when `q` changes no weight value.
    pub fn quantized(&self, q: &Quantizer) -> Option<Workload> {
        if !q.changes_values() {
            return None;
        }
        let net = self.net.quantized(q);
        Some(Workload {
            clean_accuracy: clean_accuracy(&net, &self.data, self.count),
            net,
            data: self.data.clone(),
            count: self.count,
        })
    }

    pub(crate) fn images(&self) -> &[u8] {
        &self.data.pixels[..self.count * self.net.image_size()]
    }
}

/// The workloads of a run's quantisers: the base workload, and each
/// quantiser that changes weight values applied to it once (its network,
/// its clean inference and its copy of the images), not once per row.
pub(crate) struct Workloads<'a> {
    base: &'a Workload,
    quantized: HashMap<Quantizer, Workload>,
}

impl<'a> Workloads<'a> {
    pub(crate) fn new(base: &'a Workload) -> Self {
        Workloads {
            base,
            quantized: HashMap::new(),
        }
    }

    /// The workload under `q`.
    pub(crate) fn get(&mut self, q: &Quantizer) -> &Workload {
        if !q.changes_values() {
            return self.base;
        }
        let base = self.base;
        self.quantized
            .entry(*q)
            .or_insert_with(|| base.quantized(q).expect("q changes weight values"))
    }
}

/// The exact int8 accuracy of `net` on the first `count` images of `data`.
fn clean_accuracy(net: &Network, data: &Dataset, count: usize) -> f64 {
    let size = net.image_size();
    let correct: usize = (0..count)
        .into_par_iter()
        .filter(|&i| {
            argmax(&net.infer(&data.pixels[i * size..(i + 1) * size])) == data.labels[i] as usize
        })
        .count();
    correct as f64 / count.max(1) as f64
}

/// Index of the largest logit (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// The simulated arrays of a network at one sweep point under one mapping:
/// one plan per matrix layer.
pub struct SimNetwork {
    pub plans: Vec<Plan>,
    /// Each matrix layer's row order on its arrays (`[quantize] row_order`):
    /// array row `r` holds input `perm[r]`; `None` in the natural order.
    pub(crate) perms: Vec<Option<Vec<usize>>>,
}

impl SimNetwork {
    /// Builds every matrix layer's plan. Calibrated ADC ranges are set from
    /// the clean activations of the first `calibration_images` images.
    pub fn new(
        w: &Workload,
        params: &Params,
        mapping: &MappingSpec,
        calibration_images: usize,
    ) -> Result<SimNetwork> {
        w.net
            .matrices()
            .iter()
            .try_for_each(|m| check_matrix(m, mapping))?;
        let calib = calibration_images.min(w.count).max(1);
        let mut inputs: Vec<Vec<i32>> = Vec::new();
        w.net.forward(
            &w.images()[..calib * w.net.image_size()],
            calib,
            |_, m, rows| {
                inputs.push(rows.iter().map(|&v| v as i32).collect());
                Ok(crate::network::matmul(rows, m))
            },
        )?;
        // The term budgets are already in `w.net`; the arrays take its rows
        // in the quantiser's order.
        let rows_only = Quantizer {
            row_order: params.layer.quantize.row_order,
            ..Quantizer::default()
        };
        let (plans, perms) = w
            .net
            .matrices()
            .iter()
            .zip(inputs)
            .map(|(m, x)| {
                let w = m.kn();
                let perm = rows_only.row_permutation(&w, m.inputs, m.outputs);
                let mut layer = Layer {
                    k: m.inputs,
                    n: m.outputs,
                    inputs: x.len() / m.inputs,
                    weight_bits: 8,
                    input_bits: 8,
                    w,
                    x,
                    coding: if m.signed_input {
                        params.signed_inputs
                    } else {
                        InputCoding::Unsigned
                    },
                };
                if let Some(perm) = &perm {
                    layer = layer.permuted(perm);
                }
                let p = Params {
                    seed: layer_seed(params.seed, &m.name),
                    ..params.clone()
                };
                (Plan::new(&p, &layer, mapping), perm)
            })
            .unzip();
        Ok(SimNetwork { plans, perms })
    }

    /// Matrix layer `i`'s input rows as its arrays take them (in the
    /// quantiser's row order).
    fn inputs_of(&self, i: usize, rows: &[i16]) -> Vec<i32> {
        match &self.perms[i] {
            Some(perm) => permute_inputs(rows, perm)
                .into_iter()
                .map(i32::from)
                .collect(),
            None => rows.par_iter().map(|&v| v as i32).collect(),
        }
    }

    /// What the arrays do for the workload's images, counted on their clean
    /// (exact int8) activations, so every chip of a (point, mapping) has
    /// the same cost: the activity of noisy chips differs from it only where
    /// noise moves an activation across zero or a bit plane's boundary.
    pub fn clean_cost(&self, w: &Workload) -> Result<NetworkCost> {
        let mut cost = NetworkCost {
            images: w.count as u64,
            ..NetworkCost::default()
        };
        for p in &self.plans {
            cost.layout.add(&p.layout());
        }
        let size = w.net.image_size();
        for start in (0..w.count).step_by(COST_BATCH) {
            let count = COST_BATCH.min(w.count - start);
            let images = &w.images()[start * size..(start + count) * size];
            w.net.forward(images, count, |i, m, rows| {
                let plan = self.plans[i].with_inputs(self.inputs_of(i, rows));
                let mut counters = plan.counters;
                counters.active_reads = plan.active_reads();
                cost.counters.add(&counters);
                Ok(crate::network::matmul(rows, m))
            })?;
        }
        Ok(cost)
    }

    /// Logits of `count` images on chip `trial`.
    pub fn logits(
        &self,
        net: &Network,
        engine: &mut dyn Engine,
        trial: u32,
        images: &[u8],
        count: usize,
    ) -> Result<Vec<Vec<f32>>> {
        net.forward(images, count, |i, _, rows| {
            engine.outputs(&self.plans[i].with_inputs(self.inputs_of(i, rows)), trial)
        })
    }

    /// Accuracy of the workload's images on chip `trial`.
    pub fn accuracy(&self, w: &Workload, engine: &mut dyn Engine, trial: u32) -> Result<f64> {
        let logits = self.logits(&w.net, engine, trial, w.images(), w.count)?;
        let correct = logits
            .iter()
            .zip(&w.data.labels)
            .filter(|(l, &y)| argmax(l) == y as usize)
            .count();
        Ok(correct as f64 / w.count.max(1) as f64)
    }
}

/// Images per clean pass of [`SimNetwork::clean_cost`] (bounds its memory).
const COST_BATCH: usize = 64;

/// Refuses a mapping that cannot hold a network layer's (8-bit) weights.
fn check_matrix(m: &crate::network::MatrixLayer, mapping: &MappingSpec) -> Result<()> {
    mapping.check_weights(8, &m.kn(), m.outputs).map_err(|e| {
        Error::config(
            format!("network layer `{}`", m.name),
            format!("mapping `{}`: {e}", mapping.name),
        )
    })
}

/// Each layer's seed: the experiment's seed and the layer's name, hashed.
pub fn layer_seed(seed: u64, name: &str) -> u64 {
    stable_hash(&format!("{seed}/{name}"))
}

/// How to run an accuracy experiment.
#[derive(Clone, Debug)]
pub struct Options {
    pub out_dir: PathBuf,
    pub fresh: bool,
    pub progress: bool,
}

/// What a run did.
pub struct Report {
    pub csv: PathBuf,
    pub trials_csv: PathBuf,
    /// (point, mapping) rows in the results.
    pub rows: usize,
    pub computed: usize,
    pub resumed: usize,
    pub clean_accuracy: f64,
    pub images: usize,
}

/// Everything checked before an engine is opened. Holds the output lock
/// until the run ends.
pub struct Prepared {
    work: Workload,
    /// The resume key of every (point, mapping), points outermost.
    keys: Vec<String>,
    csv: ResultFile,
    trials_csv: ResultFile,
    /// The finished result row and per-chip rows of each (point, mapping).
    rows: RowStore,
    trial_rows: RowStore,
    /// Finished rows without cost columns (written before they existed),
    /// by slot: they get them computed and are rewritten.
    costless: Vec<Option<Vec<String>>>,
    /// The hash of the files the experiment reads ([`inputs_hash`]).
    inputs: u64,
    _lock: OutputLock,
}

/// The result files of an accuracy experiment named `name` in `dir`:
/// `NAME.csv` and `NAME_trials.csv`.
pub fn result_files(dir: &Path, name: &str) -> (ResultFile, ResultFile) {
    (
        ResultFile::of::<AccuracyRow>(dir, &format!("{name}.csv"))
            .with_derived(columns::<NetworkCostColumns>()),
        ResultFile::of::<TrialRow>(dir, &format!("{name}_trials.csv")),
    )
}

/// A hash of the bytes of the files an accuracy experiment reads: the
/// model's TOML and weights, the images and the labels. Retraining the model
/// or changing the data invalidates old rows; moving the files does not.
pub(crate) fn inputs_hash(net: &NetworkParams) -> Result<u64> {
    let read = |p: &Path| crate::io::read_regular(p);
    let model = read(&net.model)?;
    let weights = toml::from_str::<toml::Table>(&String::from_utf8_lossy(&model))
        .ok()
        .and_then(|t| t.get("weights").and_then(|w| w.as_str()).map(PathBuf::from))
        .map(|w| net.model.parent().unwrap_or(Path::new(".")).join(w));
    let mut h = stable_hash_bytes(FNV_OFFSET, &model);
    if let Some(w) = weights {
        h = stable_hash_bytes(h, &read(&w)?);
    }
    h = stable_hash_bytes(h, &read(&net.images)?);
    Ok(stable_hash_bytes(h, &read(&net.labels)?))
}

/// The resume key of one (point, mapping) of an accuracy experiment.
pub(crate) fn key(
    inputs: u64,
    net: &NetworkParams,
    count: usize,
    point: &Point,
    mapping: &MappingSpec,
) -> String {
    let mut text = format!(
        "{}|{inputs:016x}|{count}|{}",
        output::point_key(&point.params, mapping),
        net.calibration_images
    );
    // How int8 activations meet the arrays; the default keeps the keys of
    // results computed before it could be chosen.
    if point.params.signed_inputs != InputCoding::TwosComplement {
        text.push_str("|signed_inputs=");
        text.push_str(point.params.signed_inputs.label());
    }
    format!("{:016x}", stable_hash(&text))
}

/// Loads the network and images, takes the output lock and reads existing
/// results; writes nothing but the lock file.
pub fn prepare(exp: &Experiment, opts: &Options) -> Result<Prepared> {
    let net = exp.network.as_ref().expect("an accuracy experiment");
    let work = Workload::load(net)?;
    // Each mapping must hold the weights its points' quantisers leave.
    let mut quantizers: Vec<Quantizer> =
        exp.points.iter().map(|p| p.params.layer.quantize).collect();
    quantizers.sort_by_key(|q| q.label());
    quantizers.dedup();
    for q in &quantizers {
        let quantized = q.changes_values().then(|| work.net.quantized(q));
        for layer in quantized.as_ref().unwrap_or(&work.net).matrices() {
            exp.mappings
                .iter()
                .try_for_each(|m| check_matrix(layer, m))?;
        }
    }
    let inputs = inputs_hash(net)?;
    let lock = OutputLock::acquire(&opts.out_dir, &exp.name)?;
    let (csv, trials_csv) = result_files(&opts.out_dir, &exp.name);
    let keys: Vec<String> = exp
        .points
        .iter()
        .flat_map(|p| exp.mappings.iter().map(move |m| (p, m)))
        .map(|(p, m)| key(inputs, net, work.count, p, m))
        .collect();
    let mut rows = RowStore::new(&opts.out_dir, keys.len())?;
    let mut trial_rows = RowStore::new(&opts.out_dir, keys.len())?;
    // Per-chip rows belong to the finished row of their (point, mapping)
    // columns, which must hold as many as its `trials` column says.
    let (pc, mc, tc) = (csv.col("point"), csv.col("mapping"), csv.col("trials"));
    let macs = csv.col("macs_per_image");
    let mut of_slot: Vec<Option<(String, Option<usize>)>> = vec![None; keys.len()];
    let mut costless = vec![None; keys.len()];
    csv.finished("point_key", &keys, opts.fresh, |slots, r| {
        for &s in slots {
            of_slot[s] = Some((group(&r[pc], &r[mc]), r[tc].parse().ok()));
            if &r[macs] == "0" {
                costless[s] = Some(r.iter().map(String::from).collect());
            }
        }
        rows.put(slots, r)
    })?;
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (slot, g) in of_slot.iter().enumerate() {
        if let Some((g, _)) = g {
            groups.entry(g.as_str()).or_default().push(slot);
        }
    }
    let (tpc, tmc) = (trials_csv.col("point"), trials_csv.col("mapping"));
    trials_csv.companion_rows(opts.fresh, |t| {
        match groups.get(group(&t[tpc], &t[tmc]).as_str()) {
            Some(slots) => trial_rows.add(slots, t),
            None => Ok(()),
        }
    })?;
    // A row whose per-chip accuracies are not all there is recomputed.
    for (slot, g) in of_slot.iter().enumerate() {
        if g.as_ref()
            .is_some_and(|(_, t)| *t != Some(trial_rows.rows(slot)))
        {
            rows.clear(slot);
            trial_rows.clear(slot);
        }
    }
    Ok(Prepared {
        work,
        keys,
        csv,
        trials_csv,
        rows,
        trial_rows,
        costless,
        inputs,
        _lock: lock,
    })
}

/// The (point, mapping) of a row as one string.
fn group(point: &str, mapping: &str) -> String {
    format!("{point}\u{1}{mapping}")
}

impl Prepared {
    /// How many (point, mapping) rows existing results already hold.
    pub fn finished(&self) -> usize {
        self.rows.filled()
    }
}

/// Runs every (point, mapping) of an accuracy experiment not already in
/// the results. With no `engines` the CPU engine runs chips in parallel, one
/// per thread; otherwise each engine (say, one per GPU queue) runs every
/// k-th chip on its own host thread. Results do not depend on which.
pub fn run(
    exp: &Experiment,
    mut prep: Prepared,
    engines: &mut [Box<dyn Engine + Send>],
    opts: &Options,
) -> Result<Report> {
    let net = exp.network.as_ref().expect("an accuracy experiment");
    let device = match engines {
        [] => CpuEngine::new().device(),
        [e] => e.device(),
        [e, ..] => format!("{} x{}", e.device(), engines.len()),
    };
    let todo: u64 = exp
        .points
        .iter()
        .flat_map(|p| exp.mappings.iter().map(move |_| p.params.trials as u64))
        .enumerate()
        .filter(|(s, _)| prep.rows.rows(*s) == 0)
        .map(|(_, t)| t)
        .sum();
    let bar = crate::sweep::run::progress_bar(opts.progress, todo, "chips");
    let (mut computed, mut resumed) = (0, 0);
    // Chip accuracies, their time and the clean cost by the key of the
    // point with the default `[energy]`: they do not depend on it.
    let mut simulated: HashMap<String, (Vec<f64>, f64, NetworkCost)> = HashMap::new();
    let mut workloads = Workloads::new(&prep.work);
    let mut slot = 0;
    for point in &exp.points {
        for mapping in &exp.mappings {
            let s = slot;
            slot += 1;
            if prep.rows.rows(s) > 0 {
                resumed += 1;
                if let Some(row) = prep.costless[s].take() {
                    let work = workloads.get(&point.params.layer.quantize);
                    let row = with_cost(&prep.csv, work, row, point, mapping, net)?;
                    prep.rows.set(s, [row])?;
                }
                continue;
            }
            if let Some(b) = &bar {
                b.set_message(crate::sweep::run::progress_message(point, mapping));
            }
            let work = workloads.get(&point.params.layer.quantize);
            // Points that differ only in `[energy]` share their chips.
            let same = Point {
                params: Params {
                    energy: crate::experiment::ENERGY_DEFAULTS,
                    ..point.params.clone()
                },
                ..point.clone()
            };
            let same = key(prep.inputs, net, work.count, &same, mapping);
            let (accs, seconds, cost) = match simulated.get(&same) {
                Some(done) => {
                    if let Some(b) = &bar {
                        b.inc(point.params.trials as u64);
                    }
                    done.clone()
                }
                None => {
                    let sim =
                        SimNetwork::new(work, &point.params, mapping, net.calibration_images)?;
                    let start = Instant::now();
                    let tick = || {
                        if let Some(b) = &bar {
                            b.inc(1);
                        }
                    };
                    let accs = chip_accuracies(&sim, work, 0..point.params.trials, engines, &tick)?;
                    let seconds = start.elapsed().as_secs_f64();
                    let done = (accs, seconds, sim.clean_cost(work)?);
                    simulated.insert(same, done.clone());
                    done
                }
            };
            let row = AccuracyRow::new(
                exp,
                point,
                mapping,
                (work.count, work.clean_accuracy),
                &accs,
                seconds,
                &cost,
            );
            let row = record(&AccuracyRow {
                engine: device.clone(),
                point_key: prep.keys[s].clone(),
                ..row
            });
            prep.rows.set(s, [row])?;
            prep.trial_rows.set(
                s,
                TrialRow::rows(&exp.name, point.index, &mapping.name, &accs),
            )?;
            computed += 1;
            // Results so far, and the finished rows of later points, are on
            // disk after every (point, mapping).
            prep.rows.write(&prep.csv)?;
            prep.trial_rows.write(&prep.trials_csv)?;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    prep.rows.write(&prep.csv)?;
    prep.trial_rows.write(&prep.trials_csv)?;
    Ok(Report {
        csv: prep.csv.path.clone(),
        trials_csv: prep.trials_csv.path.clone(),
        rows: slot,
        computed,
        resumed,
        clean_accuracy: prep.work.clean_accuracy,
        images: prep.work.count,
    })
}

/// A finished row `row` (columns of [`AccuracyRow`]) with its cost columns
/// computed.
fn with_cost(
    csv: &ResultFile,
    work: &Workload,
    mut row: Vec<String>,
    point: &Point,
    mapping: &MappingSpec,
    net: &NetworkParams,
) -> Result<Vec<String>> {
    let sim = SimNetwork::new(work, &point.params, mapping, net.calibration_images)?;
    let cost = NetworkCostColumns::new(&point.params, &sim.clean_cost(work)?);
    for (name, v) in columns::<NetworkCostColumns>().iter().zip(record(&cost)) {
        row[csv.col(name)] = v;
    }
    Ok(row)
}

/// The accuracy of every chip (trial) of one (point, mapping), in trial
/// order: on the CPU engine one chip per thread, or every k-th chip on
/// each of k engines on its own host thread.
pub(crate) fn chip_accuracies(
    sim: &SimNetwork,
    work: &Workload,
    trials: std::ops::Range<u32>,
    engines: &mut [Box<dyn Engine + Send>],
    tick: &(dyn Fn() + Sync),
) -> Result<Vec<f64>> {
    // Without draws every chip is the same chip: run one, count it for all.
    if sim.plans.iter().all(|p| p.trial_invariant()) && trials.len() > 1 {
        let one = chip_accuracies(sim, work, trials.start..trials.start + 1, engines, &|| {})?;
        trials.clone().for_each(|_| tick());
        return Ok(vec![one[0]; trials.len()]);
    }
    // On a GPU the whole network stays on the device, many chips at once.
    if crate::sweep::device::resident()? {
        if let Some(gpu) = engines.first_mut().and_then(|e| e.as_gpu()) {
            return crate::sweep::device::chip_accuracies(sim, work, trials, gpu, tick);
        }
    }
    if engines.is_empty() {
        return trials
            .into_par_iter()
            .map(|t| {
                let a = sim.accuracy(work, &mut CpuEngine::new(), t);
                tick();
                a
            })
            .collect();
    }
    let k = engines.len();
    let parts: Vec<Result<Vec<(u32, f64)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = engines
            .iter_mut()
            .enumerate()
            .map(|(e, engine)| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    for t in (trials.start + e as u32..trials.end).step_by(k) {
                        out.push((t, sim.accuracy(work, engine.as_mut(), t)?));
                        tick();
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("engine thread"))
            .collect()
    });
    let mut all = Vec::new();
    for p in parts {
        all.extend(p?);
    }
    all.sort_by_key(|p| p.0);
    Ok(all.into_iter().map(|p| p.1).collect())
}

impl AccuracyRow {
    /// The row of one (point, mapping) from its chips' accuracies; `engine`
    /// and `point_key` are left for the caller.
    pub(crate) fn new(
        exp: &Experiment,
        point: &Point,
        mapping: &MappingSpec,
        (images, clean_accuracy): (usize, f64),
        accs: &[f64],
        seconds: f64,
        cost: &NetworkCost,
    ) -> Self {
        let net = exp.network.as_ref().expect("an accuracy experiment");
        let n = accs.len() as f64;
        let mean = accs.iter().sum::<f64>() / n;
        let std =
            (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
        AccuracyRow {
            experiment: exp.name.clone(),
            point: point.index,
            mapping: mapping.name.clone(),
            model: net.model.display().to_string(),
            quantize: QuantizeColumn::new(&point.params.layer.quantize),
            images,
            array: ArrayColumns::new(&point.params, mapping),
            encoding: mapping.encoding.label().into(),
            noise: NoiseColumns::new(&point.params.noise),
            trials: point.params.trials,
            seed: point.params.seed,
            clean_accuracy,
            mean_accuracy: mean,
            std_accuracy: std,
            min_accuracy: accs.iter().cloned().fold(f64::INFINITY, f64::min),
            max_accuracy: accs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            // + 0.0 turns a -0 drop into 0.
            accuracy_drop: clean_accuracy - mean + 0.0,
            cost: NetworkCostColumns::new(&point.params, cost),
            engine: String::new(),
            images_per_s: n * images as f64 / seconds,
            seconds,
            point_key: String::new(),
        }
    }
}

/// The console table: one line per (point, mapping), from the result file
/// `csv` (read one row at a time).
pub fn format_table(exp: &Experiment, csv: &Path) -> Result<String> {
    let columns = columns::<AccuracyRow>();
    let col = |name: &str| {
        columns
            .iter()
            .position(|c| c == name)
            .expect("an AccuracyRow column")
    };
    let mut header = vec!["point".to_string()];
    header.extend(exp.axes.iter().cloned());
    header.extend(["mapping", "mean acc", "std", "min", "drop", "images/s"].map(String::from));
    let mut table = vec![header];
    let mut rows = CsvRows::open(csv)?
        .ok_or_else(|| Error::io(csv, std::io::Error::from(std::io::ErrorKind::NotFound)))?;
    while let Some(r) = rows.next_row()? {
        let idx: usize = r[col("point")].parse().unwrap_or(0);
        let mut line = vec![r[col("point")].to_string()];
        if let Some(p) = exp.points.get(idx) {
            line.extend(p.assignments.iter().map(|(_, v)| v.clone()));
        }
        let pct = |name: &str| {
            r[col(name)]
                .parse::<f64>()
                .map_or("?".into(), |v| format!("{:.2}%", 100.0 * v))
        };
        line.extend([
            r[col("mapping")].to_string(),
            pct("mean_accuracy"),
            pct("std_accuracy"),
            pct("min_accuracy"),
            pct("accuracy_drop"),
            r[col("images_per_s")].to_string(),
        ]);
        table.push(line);
    }
    Ok(crate::sweep::run::align(&table))
}
