//! Sharded sweeps: `zebra run FILE --shard I/N` computes a deterministic
//! share of an experiment's trials and writes them as partial results;
//! `zebra merge OUT DIR...` joins the partial results of all N shards into
//! the same CSVs a single run writes (identical except timing columns).
//!
//! The work is every (point, mapping) row's trials, rows in file order, laid
//! end to end; shard I of N takes the trials from `I S / N` to `(I + 1) S /
//! N` of that line (S trials in all), so a large point is split by trial
//! ranges. A partial result holds, per (point, mapping, trial range), what
//! the statistics are made of and nothing rounded: each trial's moments
//! (as f64 bits) and the histogram's bin counts, with the plan's facts.
//! Every trial's numbers depend only on (plan, trial), so joined in trial
//! order they are those of one run.

use crate::engine::stats::{Accumulator, TrialMoments, BINS};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::experiment::plan::{Plan, PlanFacts};
use crate::experiment::workload::Layers;
use crate::experiment::NetworkParams;
use crate::experiment::{stable_hash, Experiment, Overrides};
use crate::io::csv::{record, write_atomic, AtomicFile, OutputLock};
use crate::sweep::accuracy::{self, AccuracyRow, SimNetwork, TrialRow, Workload};
use crate::sweep::output::{point_key, HistRow, NetworkCost, ResultRow, RunInfo};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The format of partial-result files this build writes and reads.
const FORMAT: u32 = 1;

/// One share of a sweep: shard `index` of `count`, from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// The most shards a sweep may be split into.
pub const MAX_SHARDS: u32 = 100_000;

impl Shard {
    /// `I/N` (0 <= I < N), or `slurm` for the task of a Slurm job array
    /// (`SLURM_ARRAY_TASK_ID` minus `SLURM_ARRAY_TASK_MIN`, of
    /// `SLURM_ARRAY_TASK_COUNT`).
    pub fn parse(text: &str) -> std::result::Result<Shard, String> {
        if text == "slurm" {
            return Shard::from_slurm(|k| std::env::var(k).ok());
        }
        let bad = || {
            format!(
                "`--shard {text}`: give I/N with 0 <= I < N <= {MAX_SHARDS} (e.g. 0/4), or `slurm`"
            )
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || count > MAX_SHARDS || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// The shard of a Slurm array task, from its environment (`var`).
    pub fn from_slurm(var: impl Fn(&str) -> Option<String>) -> std::result::Result<Shard, String> {
        let get = |k: &str| -> std::result::Result<u32, String> {
            let v = var(k).ok_or_else(|| {
                format!("`--shard slurm` needs {k}: run it as a task of a Slurm job array (sbatch --array)")
            })?;
            v.trim()
                .parse()
                .map_err(|_| format!("{k} is {v:?}; expected a whole number"))
        };
        let (id, count) = (get("SLURM_ARRAY_TASK_ID")?, get("SLURM_ARRAY_TASK_COUNT")?);
        let min = var("SLURM_ARRAY_TASK_MIN").map_or(Ok(0), |_| get("SLURM_ARRAY_TASK_MIN"))?;
        let index = id.checked_sub(min).filter(|&i| i < count).ok_or_else(|| {
            format!("SLURM_ARRAY_TASK_ID {id} is not one of {count} tasks from {min}: use a contiguous array such as --array=0-{}", count.max(1) - 1)
        })?;
        Shard::parse(&format!("{index}/{count}"))
    }

    /// The name partial results of this shard get: `NAME.shard-I-of-N.toml`.
    pub fn file_name(&self, experiment: &str) -> String {
        format!("{experiment}.shard-{}-of-{}.toml", self.index, self.count)
    }
}

/// Trials `first..end` of the row of `point` under mapping `mapping` (an
/// index into the experiment's mappings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    pub point: usize,
    pub mapping: usize,
    pub first: u32,
    pub end: u32,
}

/// The units of `shard`, in row order.
pub fn units(exp: &Experiment, shard: Shard) -> Vec<Unit> {
    let rows: Vec<(usize, usize, u32)> = exp
        .points
        .iter()
        .flat_map(|p| (0..exp.mappings.len()).map(move |m| (p.index, m, p.params.trials)))
        .collect();
    let total: u128 = rows.iter().map(|r| r.2 as u128).sum();
    let lo = total * shard.index as u128 / shard.count as u128;
    let hi = total * (shard.index as u128 + 1) / shard.count as u128;
    let mut out = Vec::new();
    let mut at = 0u128;
    for (point, mapping, trials) in rows {
        let (start, end) = (lo.max(at), hi.min(at + trials as u128));
        if start < end {
            out.push(Unit {
                point,
                mapping,
                first: (start - at) as u32,
                end: (end - at) as u32,
            });
        }
        at += trials as u128;
    }
    out
}

/// The partial results of one shard, as written to its TOML file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Partial {
    pub format: u32,
    pub zebra: String,
    pub experiment: String,
    /// The experiment file as given to `run`, and its text: `merge` rebuilds
    /// the experiment from these, so it needs neither the file nor its data.
    pub experiment_file: String,
    pub experiment_text: String,
    pub trials_override: Option<u32>,
    pub seed_override: Option<u64>,
    /// A stable hash of all the above: partial results merge only with the
    /// same fingerprint.
    pub fingerprint: String,
    pub shard: u32,
    pub shards: u32,
    /// Every unit of the shard is in `units`.
    pub complete: bool,
    /// For an accuracy experiment: what its rows report of the network.
    pub network: Option<NetworkFacts>,
    pub units: Vec<PartialUnit>,
}

/// What an accuracy experiment's rows need of its network and images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkFacts {
    /// The hash of the model, weights, images and labels (in resume keys).
    pub inputs_hash: String,
    /// Test images per chip.
    pub images: usize,
    pub clean_accuracy: f64,
}

/// One (point, mapping, trial range) of a shard.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartialUnit {
    pub point: usize,
    pub mapping: String,
    pub point_key: String,
    pub first: u32,
    /// Per trial, the f64 bits of sum, sum of squares and max |e| in hex
    /// (an accuracy experiment: of the chip's accuracy).
    pub trials: Vec<String>,
    /// Non-empty fine histogram bins as (bin, count) (none for accuracy).
    pub hist: Vec<(u32, u64)>,
    /// The plan's facts (none for accuracy).
    pub facts: Option<PlanFacts>,
    /// Accuracy units whose point quantises the network's weights: the
    /// quantised network's clean accuracy.
    #[serde(default)]
    pub clean_accuracy: Option<f64>,
    /// Accuracy units holding a row's first chip: the network's cost on the
    /// clean activations (the same for every chip).
    #[serde(default)]
    pub cost: Option<NetworkCost>,
    pub engine: String,
    pub device: String,
    pub elapsed_s: f64,
}

impl PartialUnit {
    fn end(&self) -> u32 {
        self.first + self.trials.len() as u32
    }

    /// A unit's trials and histogram as written: each trial's moments and
    /// the non-empty bins.
    fn of(moments: &[TrialMoments], hist: &[u64]) -> (Vec<String>, Vec<(u32, u64)>) {
        let trials = moments
            .iter()
            .map(|t| {
                format!(
                    "{:016x} {:016x} {:016x}",
                    t.sum.to_bits(),
                    t.sumsq.to_bits(),
                    t.max_abs.to_bits()
                )
            })
            .collect();
        let hist = hist
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (i as u32, c))
            .collect();
        (trials, hist)
    }

    /// The chip accuracies of an accuracy experiment's unit.
    fn accuracies(&self) -> std::result::Result<Vec<f64>, String> {
        self.trials
            .iter()
            .map(|t| {
                u64::from_str_radix(t, 16)
                    .map(f64::from_bits)
                    .map_err(|_| format!("chip accuracy {t:?} is not a hex word"))
            })
            .collect()
    }

    /// Adds this unit's trials and bins to `acc`, which must end where
    /// the unit starts.
    fn add_to(&self, acc: &mut Accumulator) -> std::result::Result<(), String> {
        if self.first != acc.end() {
            return Err(format!(
                "trials {}.. do not follow trials {}..{}",
                self.first,
                acc.first,
                acc.end()
            ));
        }
        for t in &self.trials {
            let f: Vec<f64> = t
                .split(' ')
                .map(|w| u64::from_str_radix(w, 16).map(f64::from_bits))
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| format!("trial moments {t:?} are not three hex words"))?;
            let [sum, sumsq, max_abs] = f[..] else {
                return Err(format!("trial moments {t:?} are not three hex words"));
            };
            acc.push(TrialMoments {
                sum,
                sumsq,
                max_abs,
            })
            .map_err(spill_error)?;
        }
        for &(bin, count) in &self.hist {
            *acc.hist
                .get_mut(bin as usize)
                .ok_or_else(|| format!("histogram bin {bin} is not below {BINS}"))? += count;
        }
        Ok(())
    }
}

/// A failure to keep per-trial values in the temporary folder.
fn spill_error(e: std::io::Error) -> String {
    format!(
        "cannot keep per-trial values in the temporary folder {}: {e}",
        std::env::temp_dir().display()
    )
}

/// The fingerprint of an experiment as a shard sees it.
fn fingerprint(file: &str, text: &str, o: Overrides) -> String {
    let t = format!("{FORMAT}|{file}|{text}|{:?}|{:?}", o.trials, o.seed);
    format!("{:016x}", stable_hash(&t))
}

/// What a shard run did.
#[derive(Debug)]
pub struct ShardReport {
    pub path: PathBuf,
    pub computed: usize,
    pub resumed: usize,
}

/// Runs shard `shard` of `exp`, parsed from `file` (whose text is `text`)
/// with `overrides`,
/// writing `out_dir/NAME.shard-I-of-N.toml` after every unit; a rerun
/// resumes the units already there. An accuracy experiment's chips run as
/// in `run`: on the CPU engine one per thread, else on `engine`.
#[allow(clippy::too_many_arguments)]
pub fn run_shard(
    exp: &Experiment,
    file: &Path,
    text: &str,
    overrides: Overrides,
    shard: Shard,
    engine: Box<dyn Engine + Send>,
    out_dir: &Path,
    fresh: bool,
) -> Result<ShardReport> {
    let _lock = OutputLock::acquire(
        out_dir,
        &format!("{}.shard-{}-of-{}", exp.name, shard.index, shard.count),
    )?;
    let path = out_dir.join(shard.file_name(&exp.name));
    let file_name = file.display().to_string();
    let mut partial = Partial {
        format: FORMAT,
        zebra: env!("CARGO_PKG_VERSION").into(),
        experiment: exp.name.clone(),
        experiment_file: file_name.clone(),
        experiment_text: text.into(),
        trials_override: overrides.trials,
        seed_override: overrides.seed,
        fingerprint: fingerprint(&file_name, text, overrides),
        shard: shard.index,
        shards: shard.count,
        complete: false,
        network: None,
        units: Vec::new(),
    };
    let done = if fresh {
        Vec::new()
    } else {
        resumable(&path, &partial)?
    };
    let mut work = ShardWork {
        exp,
        shard,
        done: &done,
        path: &path,
        partial: &mut partial,
        computed: 0,
        resumed: 0,
    };
    match &exp.network {
        None => work.layers(engine)?,
        Some(net) => work.network(net, engine)?,
    }
    let (computed, resumed) = (work.computed, work.resumed);
    partial.complete = true;
    write_partial(&path, &partial)?;
    Ok(ShardReport {
        path,
        computed,
        resumed,
    })
}

/// One shard's units being computed, resumed and written.
struct ShardWork<'a> {
    exp: &'a Experiment,
    shard: Shard,
    /// Units of an earlier, interrupted run of this shard.
    done: &'a [PartialUnit],
    path: &'a Path,
    partial: &'a mut Partial,
    computed: usize,
    resumed: usize,
}

impl ShardWork<'_> {
    /// Keeps the earlier run's copy of a unit; false if there is none.
    fn resume(&mut self, key: &str, u: &Unit) -> bool {
        let found = self
            .done
            .iter()
            .find(|d| d.point_key == key && d.first == u.first && d.end() == u.end);
        if let Some(d) = found {
            self.partial.units.push(d.clone());
            self.resumed += 1;
        }
        found.is_some()
    }

    /// Records a computed unit and rewrites the partial result.
    fn finish(&mut self, unit: PartialUnit) -> Result<()> {
        self.partial.units.push(unit);
        self.computed += 1;
        write_partial(self.path, self.partial)
    }

    /// The units of a layer experiment.
    fn layers(&mut self, mut engine: Box<dyn Engine + Send>) -> Result<()> {
        let layers = Layers::build(&self.exp.points)?;
        layers.check_mappings(&self.exp.mappings, &self.exp.file)?;
        for u in units(self.exp, self.shard) {
            let point = &self.exp.points[u.point];
            let mapping = &self.exp.mappings[u.mapping];
            let key = point_key(&point.params, mapping);
            if self.resume(&key, &u) {
                continue;
            }
            let plan = Plan::new(&point.params, layers.for_point(point.index), mapping);
            let start = Instant::now();
            // A partial result holds every trial's moments: they are its content.
            let (mut moments, mut hist) = (Vec::new(), vec![0u64; BINS]);
            let step = crate::sweep::run::batch_size(&plan, u.end - u.first);
            let mut t = u.first;
            while t < u.end {
                let batch = engine.run(&plan, t..(t + step).min(u.end), false)?;
                moments.extend_from_slice(&batch.trials);
                for (a, b) in hist.iter_mut().zip(&batch.hist) {
                    *a += b;
                }
                t = (t + step).min(u.end);
            }
            let (trials, hist) = PartialUnit::of(&moments, &hist);
            self.finish(PartialUnit {
                point: point.index,
                mapping: mapping.name.clone(),
                point_key: key,
                first: u.first,
                trials,
                hist,
                facts: Some(plan.facts()),
                clean_accuracy: None,
                cost: None,
                engine: engine.name().into(),
                device: engine.device(),
                elapsed_s: start.elapsed().as_secs_f64(),
            })?;
        }
        Ok(())
    }

    /// The units of an accuracy experiment: each chip's accuracy.
    fn network(&mut self, net: &NetworkParams, engine: Box<dyn Engine + Send>) -> Result<()> {
        let work = Workload::load(net)?;
        let inputs = accuracy::inputs_hash(net)?;
        self.partial.network = Some(NetworkFacts {
            inputs_hash: format!("{inputs:016x}"),
            images: work.count,
            clean_accuracy: work.clean_accuracy,
        });
        let (name, device) = (engine.name(), engine.device());
        // The CPU engine runs chips in parallel, one engine per chip.
        let mut engines = if name == "cpu" {
            Vec::new()
        } else {
            vec![engine]
        };
        let mut workloads = accuracy::Workloads::new(&work);
        for u in units(self.exp, self.shard) {
            let point = &self.exp.points[u.point];
            let mapping = &self.exp.mappings[u.mapping];
            let key = accuracy::key(inputs, net, work.count, point, mapping);
            if self.resume(&key, &u) {
                continue;
            }
            let q = &point.params.layer.quantize;
            let w = workloads.get(q);
            let sim = SimNetwork::new(w, &point.params, mapping, net.calibration_images)?;
            let start = Instant::now();
            let accs = accuracy::chip_accuracies(&sim, w, u.first..u.end, &mut engines, &|| {})?;
            let elapsed_s = start.elapsed().as_secs_f64();
            let cost = if u.first == 0 {
                Some(sim.clean_cost(w)?)
            } else {
                None
            };
            self.finish(PartialUnit {
                point: point.index,
                mapping: mapping.name.clone(),
                point_key: key,
                first: u.first,
                trials: accs
                    .iter()
                    .map(|a| format!("{:016x}", a.to_bits()))
                    .collect(),
                hist: Vec::new(),
                facts: None,
                clean_accuracy: q.changes_values().then_some(w.clean_accuracy),
                cost,
                engine: name.into(),
                device: device.clone(),
                elapsed_s,
            })?;
        }
        Ok(())
    }
}

fn write_partial(path: &Path, partial: &Partial) -> Result<()> {
    let text = toml::to_string(partial).map_err(|e| Error::Results {
        path: path.into(),
        msg: format!("cannot write partial results: {e}"),
    })?;
    write_atomic(path, text.as_bytes())
}

/// Reads a partial-result file.
pub fn read_partial(path: &Path) -> Result<Partial> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| Error::Results {
        path: path.into(),
        msg,
    };
    let p: Partial = toml::from_str(&text).map_err(|e| {
        bad(format!(
            "is not a partial result of `zebra run --shard` ({})",
            e.message().trim()
        ))
    })?;
    if p.format != FORMAT {
        return Err(bad(format!(
            "has partial-result format {}; this zebra reads format {FORMAT}",
            p.format
        )));
    }
    Ok(p)
}

/// The units of an existing partial result that this shard may keep:
/// refused (naming `--fresh`) when it is another experiment's or shard's.
fn resumable(path: &Path, want: &Partial) -> Result<Vec<PartialUnit>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let old = read_partial(path)?;
    if old.fingerprint != want.fingerprint || (old.shard, old.shards) != (want.shard, want.shards) {
        return Err(Error::Results {
            path: path.into(),
            msg: "holds partial results of another experiment file, seed, trial count or shard; pass --fresh to overwrite it or --out DIR to write elsewhere".into(),
        });
    }
    Ok(old.units)
}

/// What a merge did.
#[derive(Debug)]
pub struct MergeReport {
    pub experiment: Experiment,
    pub csv: PathBuf,
    /// The histogram file (layers) or per-chip file (accuracy).
    pub companion: PathBuf,
    /// (point, mapping) rows merged.
    pub rows: usize,
    pub shards: u32,
}

/// Merges the partial results found in `dirs` (every shard of one run)
/// into `out_dir/NAME.csv` and `NAME_hist.csv` (or `NAME_trials.csv`).
pub fn merge(out_dir: &Path, dirs: &[PathBuf]) -> Result<MergeReport> {
    let partials = collect_partials(dirs)?;
    let first = &partials[0].1;
    let overrides = Overrides {
        trials: first.trials_override,
        seed: first.seed_override,
        images: None,
    };
    let exp = Experiment::parse(
        &first.experiment_text,
        Path::new(&first.experiment_file),
        overrides,
    )?;
    let _lock = OutputLock::acquire(out_dir, &exp.name)?;
    let (csv, companion, rows) = match (&exp.network, &first.network) {
        (None, _) => merge_layers(out_dir, &exp, &partials)?,
        (Some(net), Some(facts)) => merge_network(out_dir, &exp, net, facts, &partials)?,
        (Some(_), None) => {
            return Err(Error::Results {
                path: partials[0].0.clone(),
                msg: "is a partial result of an accuracy experiment without its network facts"
                    .into(),
            })
        }
    };
    Ok(MergeReport {
        csv,
        companion,
        rows,
        shards: first.shards,
        experiment: exp,
    })
}

/// The result file, its companion and the number of rows.
type Merged = (PathBuf, PathBuf, usize);

fn merge_layers(
    out_dir: &Path,
    exp: &Experiment,
    partials: &[(PathBuf, Partial)],
) -> Result<Merged> {
    let (csv, hist) = crate::sweep::run::result_files(out_dir, &exp.name);
    let keys: Vec<String> = exp
        .points
        .iter()
        .flat_map(|p| exp.mappings.iter().map(move |m| point_key(&p.params, m)))
        .collect();
    // Existing results of other parameters are refused, as `run` refuses them.
    csv.finished("point_key", &keys, false, |_, _| Ok(()))?;
    // Rows are written as they are merged; both files replace the old
    // ones only when every row is there.
    let (mut out, mut hist_out) = (
        AtomicFile::create(&csv.path)?,
        AtomicFile::create(&hist.path)?,
    );
    out.record(&csv.columns)?;
    hist_out.record(&hist.columns)?;
    let rows = exp
        .points
        .iter()
        .flat_map(|p| exp.mappings.iter().map(move |m| (p, m)));
    for ((point, mapping), key) in rows.zip(&keys) {
        let (row, h) = merged_row(exp, point, mapping, key, partials)?;
        out.record(record(&row))?;
        for r in h {
            hist_out.record(r)?;
        }
    }
    out.finish()?;
    hist_out.finish()?;
    Ok((csv.path, hist.path, keys.len()))
}

fn merge_network(
    out_dir: &Path,
    exp: &Experiment,
    net: &NetworkParams,
    facts: &NetworkFacts,
    partials: &[(PathBuf, Partial)],
) -> Result<Merged> {
    let (csv, trials) = accuracy::result_files(out_dir, &exp.name);
    let bad = |msg: String| Error::Results {
        path: partials[0].0.clone(),
        msg,
    };
    let inputs = u64::from_str_radix(&facts.inputs_hash, 16).map_err(|_| {
        bad(format!(
            "inputs_hash {:?} is not a hex word",
            facts.inputs_hash
        ))
    })?;
    let key = |p: &crate::experiment::Point, m: &crate::model::MappingSpec| {
        accuracy::key(inputs, net, facts.images, p, m)
    };
    let keys: Vec<String> = exp
        .points
        .iter()
        .flat_map(|p| exp.mappings.iter().map(move |m| key(p, m)))
        .collect();
    csv.finished("point_key", &keys, false, |_, _| Ok(()))?;
    let (mut out, mut trials_out) = (
        AtomicFile::create(&csv.path)?,
        AtomicFile::create(&trials.path)?,
    );
    out.record(&csv.columns)?;
    trials_out.record(&trials.columns)?;
    let rows = exp
        .points
        .iter()
        .flat_map(|p| exp.mappings.iter().map(move |m| (p, m)));
    for ((point, mapping), key) in rows.zip(&keys) {
        let (parts, run) = parts_of(partials, key);
        let mut accs = Vec::new();
        for (path, u) in &parts {
            if u.first as usize != accs.len() {
                return Err(bad(format!(
                    "point {} under {}: trials {}.. do not follow trials 0..{}",
                    point.index,
                    mapping.name,
                    u.first,
                    accs.len()
                )));
            }
            accs.extend(u.accuracies().map_err(|m| Error::Results {
                path: (*path).clone(),
                msg: m,
            })?);
        }
        if accs.len() != point.params.trials as usize {
            return Err(bad(format!(
                "point {} under {}: the shards hold {} of {} chips",
                point.index,
                mapping.name,
                accs.len(),
                point.params.trials
            )));
        }
        let row = AccuracyRow::new(
            exp,
            point,
            mapping,
            (
                facts.images,
                parts
                    .iter()
                    .find_map(|(_, u)| u.clean_accuracy)
                    .unwrap_or(facts.clean_accuracy),
            ),
            &accs,
            run.elapsed_s,
            // Shards written without costs leave the columns for a resume to fill.
            &parts
                .iter()
                .find_map(|(_, u)| u.cost.clone())
                .unwrap_or_default(),
        );
        out.record(record(&AccuracyRow {
            engine: run.device,
            point_key: key.clone(),
            ..row
        }))?;
        for r in TrialRow::rows(&exp.name, point.index, &mapping.name, &accs) {
            trials_out.record(r)?;
        }
    }
    out.finish()?;
    trials_out.finish()?;
    Ok((csv.path, trials.path, keys.len()))
}

/// The units of every shard holding part of row `key`, in trial order,
/// and the engines, devices and time they took together.
fn parts_of<'a>(
    partials: &'a [(PathBuf, Partial)],
    key: &str,
) -> (Vec<(&'a PathBuf, &'a PartialUnit)>, RunInfo) {
    let mut parts: Vec<(&PathBuf, &PartialUnit)> = partials
        .iter()
        .flat_map(|(path, p)| p.units.iter().map(move |u| (path, u)))
        .filter(|(_, u)| u.point_key == key)
        .collect();
    parts.sort_by_key(|(_, u)| u.first);
    let (mut engines, mut devices, mut elapsed) = (Vec::new(), Vec::new(), 0.0);
    for (_, u) in &parts {
        for (list, v) in [(&mut engines, &u.engine), (&mut devices, &u.device)] {
            if !list.contains(v) {
                list.push(v.clone());
            }
        }
        elapsed += u.elapsed_s;
    }
    let run = RunInfo {
        engine: engines.join("+"),
        device: devices.join(" + "),
        elapsed_s: elapsed,
    };
    (parts, run)
}

/// Every partial result in `dirs`, checked to be all the shards of one run.
fn collect_partials(dirs: &[PathBuf]) -> Result<Vec<(PathBuf, Partial)>> {
    let mut found = Vec::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let before = found.len();
        for e in entries {
            let path = e.map_err(|e| Error::io(dir, e))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.contains(".shard-") && name.ends_with(".toml") {
                found.push((path.clone(), read_partial(&path)?));
            }
        }
        if found.len() == before {
            return Err(Error::Results {
                path: dir.clone(),
                msg: "holds no partial results (NAME.shard-I-of-N.toml files written by `zebra run --shard`)".into(),
            });
        }
    }
    found.sort_by_key(|(_, p)| p.shard);
    let (path0, p0) = &found[0];
    for (path, p) in &found {
        if p.fingerprint != p0.fingerprint || p.shards != p0.shards {
            return Err(Error::Results {
                path: path.clone(),
                msg: format!(
                    "is a partial result of another run than {} (experiment {} from {}, {} shards, seed override {:?}, trials override {:?}; against {} from {}, {} shards): merge the shards of one run",
                    path0.display(), p.experiment, p.experiment_file, p.shards, p.seed_override, p.trials_override,
                    p0.experiment, p0.experiment_file, p0.shards
                ),
            });
        }
        if !p.complete {
            return Err(Error::Results {
                path: path.clone(),
                msg: format!("shard {} of {} is incomplete (its run stopped early): rerun it with the same command to finish it", p.shard, p.shards),
            });
        }
    }
    for w in found.windows(2) {
        if w[0].1.shard == w[1].1.shard {
            return Err(Error::Results {
                path: w[1].0.clone(),
                msg: format!(
                    "shard {} of {} is also in {}: give each shard once",
                    w[1].1.shard,
                    p0.shards,
                    w[0].0.display()
                ),
            });
        }
    }
    let have: Vec<u32> = found.iter().map(|(_, p)| p.shard).collect();
    let missing: Vec<String> = (0..p0.shards)
        .filter(|i| !have.contains(i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Results {
            path: dirs[0].clone(),
            msg: format!(
                "the partial results of {} lack shard(s) {} of {} ({}): run them, or give the folders that hold them",
                p0.experiment,
                missing.join(", "),
                p0.shards,
                Shard { index: missing[0].parse().unwrap_or(0), count: p0.shards }.file_name(&p0.experiment)
            ),
        });
    }
    Ok(found)
}

/// The result row and histogram rows of one (point, mapping), from the
/// units of every shard that holds part of its trials.
fn merged_row(
    exp: &Experiment,
    point: &crate::experiment::Point,
    mapping: &crate::model::MappingSpec,
    key: &str,
    partials: &[(PathBuf, Partial)],
) -> Result<(ResultRow, Vec<Vec<String>>)> {
    let gap = |msg: String| Error::Results {
        path: partials[0].0.clone(),
        msg: format!("point {} under {}: {msg}", point.index, mapping.name),
    };
    let (parts, run) = parts_of(partials, key);
    let Some(facts) = parts.first().and_then(|(_, u)| u.facts.clone()) else {
        return Err(gap("no shard holds its trials".into()));
    };
    let mut acc = Accumulator::starting_at(0);
    for (path, u) in &parts {
        if u.first != acc.end() {
            return Err(gap(format!(
                "trials {}.. do not follow trials 0..{}",
                u.first,
                acc.end()
            )));
        }
        u.add_to(&mut acc).map_err(|m| Error::Results {
            path: (*path).clone(),
            msg: m,
        })?;
        if u.facts.as_ref() != Some(&facts) {
            return Err(gap("shards disagree on the plan's facts".into()));
        }
    }
    if acc.end() != point.params.trials {
        return Err(gap(format!(
            "the shards hold trials 0..{} of {}",
            acc.end(),
            point.params.trials
        )));
    }
    let summary = acc.summary(&facts).map_err(|e| gap(spill_error(e)))?;
    let row = ResultRow::new(&exp.name, point, mapping, &facts, &summary, &run);
    let hist = HistRow::rows(&exp.name, point.index, &mapping.name, key, &acc.hist);
    Ok((row, hist))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(trials: &str) -> Experiment {
        let text = format!("version = 1\ntrials = 10\nmappings = [\"dense\", \"zebra\"]\n[layer]\nk = 8\nn = 4\n[sweep]\n\"trials\" = {trials}\n");
        let text = text.replace("[sweep]\n\"trials\" = []\n", "");
        Experiment::parse(&text, Path::new("s.toml"), Overrides::default()).unwrap()
    }

    #[test]
    fn shards_tile_every_rows_trials_exactly_once() {
        let e = exp("[]");
        for count in [1, 2, 3, 7, 20, 40, 100] {
            let mut seen = vec![vec![0u32; 10]; 2];
            for index in 0..count {
                for u in units(&e, Shard { index, count }) {
                    for t in u.first..u.end {
                        seen[u.mapping][t as usize] += 1;
                    }
                }
            }
            assert!(
                seen.iter().flatten().all(|&c| c == 1),
                "{count} shards: {seen:?}"
            );
        }
        // More shards than trials: some are empty, none overlaps.
        assert!(units(
            &e,
            Shard {
                index: 0,
                count: 40
            }
        )
        .is_empty());
    }

    #[test]
    fn shard_specs_are_checked() {
        assert_eq!(Shard::parse("2/5"), Ok(Shard { index: 2, count: 5 }));
        for bad in ["5/5", "1/0", "x/2", "3", "-1/2", "1/100001"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let env = |id: &'static str, count: &'static str, min: Option<&'static str>| {
            move |k: &str| match k {
                "SLURM_ARRAY_TASK_ID" => Some(id.to_string()),
                "SLURM_ARRAY_TASK_COUNT" => Some(count.to_string()),
                "SLURM_ARRAY_TASK_MIN" => min.map(String::from),
                _ => None,
            }
        };
        assert_eq!(
            Shard::from_slurm(env("2", "3", None)),
            Ok(Shard { index: 2, count: 3 })
        );
        assert_eq!(
            Shard::from_slurm(env("5", "3", Some("4"))),
            Ok(Shard { index: 1, count: 3 })
        );
        assert!(Shard::from_slurm(env("3", "3", None)).is_err());
        assert!(Shard::from_slurm(|_| None)
            .unwrap_err()
            .contains("SLURM_ARRAY_TASK_ID"));
    }

    #[test]
    fn joined_units_equal_one_accumulator_over_the_whole_range() {
        let mut whole = Accumulator::starting_at(0);
        let mut parts: Vec<(u32, Vec<TrialMoments>, Vec<u64>)> = Vec::new();
        for t in 0..6u32 {
            let m = TrialMoments {
                sum: t as f64 * 0.1,
                sumsq: 1.0 / (t as f64 + 3.0),
                max_abs: t as f64,
            };
            let mut hist = vec![0; BINS];
            hist[t as usize * 7] = 2;
            let batch = crate::engine::stats::Batch {
                first_trial: t,
                trials: vec![m],
                hist,
                raw: None,
            };
            whole.add(&batch).unwrap();
            if t % 4 == 0 {
                parts.push((t, Vec::new(), vec![0; BINS]));
            }
            let (_, moments, hist) = parts.last_mut().unwrap();
            moments.push(m);
            hist[t as usize * 7] += 2;
        }
        let unit = |(first, moments, hist): &(u32, Vec<TrialMoments>, Vec<u64>)| {
            let (trials, hist) = PartialUnit::of(moments, hist);
            PartialUnit {
                point: 0,
                mapping: "m".into(),
                point_key: "k".into(),
                first: *first,
                trials,
                hist,
                facts: None,
                clean_accuracy: None,
                cost: None,
                engine: "cpu".into(),
                device: "cpu".into(),
                elapsed_s: 0.0,
            }
        };
        // Joined with per-trial values spilled to a file after every two.
        let mut joined = Accumulator::keeping(0, 2);
        for p in &parts {
            unit(p).add_to(&mut joined).unwrap();
        }
        let facts = PlanFacts {
            k: 4,
            n: 2,
            b: 1,
            j: 1,
            chunks: 1,
            sampling: "test".into(),
            exact_std: 3.0,
            counters: Default::default(),
            plane_density: vec![0.5],
        };
        assert_eq!(joined.hist, whole.hist);
        assert_eq!(
            joined.summary(&facts).unwrap(),
            whole.summary(&facts).unwrap()
        );
        assert!(unit(&parts[1])
            .add_to(&mut Accumulator::starting_at(0))
            .is_err());
    }
}
