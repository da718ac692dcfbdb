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
use crate::io::dataset::Dataset;
use crate::model::MappingSpec;
use crate::network::Network;
use crate::sweep::output;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Columns of `OUT/NAME.csv` for accuracy experiments, in order.
pub const COLUMNS: [&str; 27] = [
    "experiment",
    "point",
    "mapping",
    "model",
    "images",
    "parallelism",
    "adc_bits",
    "adc_range",
    "encoding",
    "cell_sigma",
    "noise_mode",
    "read_sigma",
    "leak",
    "p_sa0",
    "p_sa1",
    "trials",
    "seed",
    "clean_accuracy",
    "mean_accuracy",
    "std_accuracy",
    "min_accuracy",
    "max_accuracy",
    "accuracy_drop",
    "engine",
    "images_per_s",
    "seconds",
    "point_key",
];

/// Columns of `OUT/NAME_trials.csv`: one accuracy per simulated chip.
pub const TRIAL_COLUMNS: [&str; 5] = ["experiment", "point", "mapping", "trial", "accuracy"];

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
        let count = p.limit.unwrap_or(data.n).min(data.n);
        let size = net.image_size();
        let correct: usize = (0..count)
            .into_par_iter()
            .filter(|&i| {
                argmax(&net.infer(&data.pixels[i * size..(i + 1) * size]))
                    == data.labels[i] as usize
            })
            .count();
        Ok(Workload {
            clean_accuracy: correct as f64 / count.max(1) as f64,
            net,
            data,
            count,
        })
    }

    fn images(&self) -> &[u8] {
        &self.data.pixels[..self.count * self.net.image_size()]
    }
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
        let calib = calibration_images.min(w.count).max(1);
        let mut inputs: Vec<Vec<u32>> = Vec::new();
        w.net.forward(
            &w.images()[..calib * w.net.image_size()],
            calib,
            |_, m, rows| {
                inputs.push(rows.iter().map(|&v| v as u32).collect());
                Ok(crate::network::matmul(rows, m))
            },
        )?;
        let plans = w
            .net
            .matrices()
            .iter()
            .zip(inputs)
            .map(|(m, x)| {
                let layer = Layer {
                    k: m.inputs,
                    n: m.outputs,
                    inputs: x.len() / m.inputs,
                    weight_bits: 8,
                    input_bits: 8,
                    w: m.kn(),
                    x,
                };
                let p = Params {
                    seed: layer_seed(params.seed, &m.name),
                    ..params.clone()
                };
                Plan::new(&p, &layer, mapping)
            })
            .collect();
        Ok(SimNetwork { plans })
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
            let plan = self.plans[i].with_inputs(rows.par_iter().map(|&v| v as u32).collect());
            engine.outputs(&plan, trial)
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
    pub rows: Vec<Vec<String>>,
    pub computed: usize,
    pub resumed: usize,
    pub clean_accuracy: f64,
    pub images: usize,
}

/// Everything checked before an engine is opened.
pub struct Prepared {
    work: Workload,
    /// The resume key of every (point, mapping), points outermost.
    keys: Vec<String>,
    csv: PathBuf,
    trials_csv: PathBuf,
    done: HashMap<String, (Vec<String>, Vec<Vec<String>>)>,
}

/// A hash of the bytes of the files an accuracy experiment reads: the
/// model's TOML and weights, the images and the labels. Retraining the model
/// or changing the data invalidates old rows; moving the files does not.
fn inputs_hash(net: &NetworkParams) -> Result<u64> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p, e));
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
fn key(
    inputs: u64,
    net: &NetworkParams,
    count: usize,
    point: &Point,
    mapping: &MappingSpec,
) -> String {
    let text = format!(
        "{}|{inputs:016x}|{count}|{}",
        output::point_key(&point.params, mapping),
        net.calibration_images
    );
    format!("{:016x}", stable_hash(&text))
}

/// Loads the network and images and reads existing results; touches nothing.
pub fn prepare(exp: &Experiment, opts: &Options) -> Result<Prepared> {
    let net = exp.network.as_ref().expect("an accuracy experiment");
    let work = Workload::load(net)?;
    let csv = opts.out_dir.join(format!("{}.csv", exp.name));
    let trials_csv = opts.out_dir.join(format!("{}_trials.csv", exp.name));
    let inputs = inputs_hash(net)?;
    let keys: Vec<String> = exp
        .points
        .iter()
        .flat_map(|p| exp.mappings.iter().map(move |m| (p, m)))
        .map(|(p, m)| key(inputs, net, work.count, p, m))
        .collect();
    let mut done = HashMap::new();
    if !opts.fresh {
        if let Some((header, rows)) = crate::io::csv::read_csv(&csv)? {
            if header != COLUMNS {
                return Err(Error::Results {
                    path: csv,
                    msg: "has other columns than an accuracy experiment writes; pass --fresh to overwrite it or --out DIR to write elsewhere".into(),
                });
            }
            let kc = COLUMNS.len() - 1;
            let stale = rows.iter().filter(|r| !keys.contains(&r[kc])).count();
            if stale > 0 {
                return Err(Error::Results {
                    path: csv,
                    msg: format!("holds {stale} row(s) from other parameters than this experiment now has; pass --fresh to overwrite them or --out DIR to write elsewhere"),
                });
            }
            let trial_rows = crate::io::csv::read_csv(&trials_csv)?
                .filter(|(h, _)| h == &TRIAL_COLUMNS)
                .map(|(_, r)| r)
                .unwrap_or_default();
            for r in rows {
                let t: Vec<Vec<String>> = trial_rows
                    .iter()
                    .filter(|t| t[1] == r[1] && t[2] == r[2])
                    .cloned()
                    .collect();
                let trials: usize = r[15].parse().unwrap_or(0);
                if t.len() == trials {
                    done.insert(r[kc].clone(), (r, t));
                }
            }
        }
    }
    Ok(Prepared {
        work,
        keys,
        csv,
        trials_csv,
        done,
    })
}

/// Runs every (point, mapping) of an accuracy experiment not already in
/// the results. With no `engines` the CPU engine runs chips in parallel, one
/// per thread; otherwise each engine (say, one per GPU queue) runs every
/// k-th chip on its own host thread. Results do not depend on which.
pub fn run(
    exp: &Experiment,
    prep: Prepared,
    engines: &mut [Box<dyn Engine + Send>],
    opts: &Options,
) -> Result<Report> {
    let Prepared {
        work,
        keys,
        csv,
        trials_csv,
        done,
    } = prep;
    let net = exp.network.as_ref().expect("an accuracy experiment");
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))?;
    let device = match engines {
        [] => CpuEngine::new().device(),
        [e] => e.device(),
        [e, ..] => format!("{} x{}", e.device(), engines.len()),
    };
    let todo: u64 = exp
        .points
        .iter()
        .flat_map(|p| exp.mappings.iter().map(move |_| p.params.trials as u64))
        .zip(&keys)
        .filter(|(_, k)| !done.contains_key(*k))
        .map(|(t, _)| t)
        .sum();
    let bar = crate::sweep::run::progress_bar(opts.progress, todo, "chips");

    let (mut rows, mut trial_rows) = (Vec::new(), Vec::new());
    let (mut computed, mut resumed) = (0, 0);
    let mut keys = keys.into_iter();
    for point in &exp.points {
        let params = &point.params;
        for mapping in &exp.mappings {
            let key = keys.next().expect("a key per row");
            if let Some((r, t)) = done.get(&key) {
                rows.push(r.clone());
                trial_rows.extend(t.iter().cloned());
                resumed += 1;
                continue;
            }
            if let Some(b) = &bar {
                b.set_message(crate::sweep::run::progress_message(point, mapping));
            }
            let sim = SimNetwork::new(&work, params, mapping, net.calibration_images)?;
            let start = Instant::now();
            let tick = || {
                if let Some(b) = &bar {
                    b.inc(1);
                }
            };
            let accs: Vec<f64> = if engines.is_empty() {
                (0..params.trials)
                    .into_par_iter()
                    .map(|t| {
                        let a = sim.accuracy(&work, &mut CpuEngine::new(), t);
                        tick();
                        a
                    })
                    .collect::<Result<_>>()?
            } else {
                let k = engines.len();
                let (sim, work, tick) = (&sim, &work, &tick);
                let parts: Vec<Result<Vec<(u32, f64)>>> = std::thread::scope(|s| {
                    let handles: Vec<_> = engines
                        .iter_mut()
                        .enumerate()
                        .map(|(e, engine)| {
                            s.spawn(move || {
                                let mut out = Vec::new();
                                for t in (e as u32..params.trials).step_by(k) {
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
                all.into_iter().map(|p| p.1).collect()
            };
            let seconds = start.elapsed().as_secs_f64();
            let n = accs.len() as f64;
            let mean = accs.iter().sum::<f64>() / n;
            let std =
                (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
            let min = accs.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = accs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let g = |v: f64| format!("{v:.6}");
            let nz = &params.noise;
            rows.push(vec![
                exp.name.clone(),
                point.index.to_string(),
                mapping.name.clone(),
                net.model.display().to_string(),
                work.count.to_string(),
                params.parallelism.to_string(),
                params.adc_bits.map_or("ideal".into(), |b| b.to_string()),
                mapping.adc_range.label().into(),
                mapping.encoding.label().into(),
                nz.cell_sigma.to_string(),
                format!("{:?}", nz.mode).to_lowercase(),
                nz.read_sigma.to_string(),
                nz.leak.to_string(),
                nz.p_sa0.to_string(),
                nz.p_sa1.to_string(),
                params.trials.to_string(),
                params.seed.to_string(),
                g(work.clean_accuracy),
                g(mean),
                g(std),
                g(min),
                g(max),
                // + 0.0 turns a -0 drop into 0.
                g(work.clean_accuracy - mean + 0.0),
                device.clone(),
                format!("{:.1}", n * work.count as f64 / seconds),
                format!("{seconds:.2}"),
                key,
            ]);
            for (t, a) in accs.iter().enumerate() {
                trial_rows.push(vec![
                    exp.name.clone(),
                    point.index.to_string(),
                    mapping.name.clone(),
                    t.to_string(),
                    g(*a),
                ]);
            }
            computed += 1;
            // Results so far are on disk after every (point, mapping).
            crate::io::csv::write_csv_atomic(&csv, &COLUMNS, &rows)?;
            crate::io::csv::write_csv_atomic(&trials_csv, &TRIAL_COLUMNS, &trial_rows)?;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    crate::io::csv::write_csv_atomic(&csv, &COLUMNS, &rows)?;
    crate::io::csv::write_csv_atomic(&trials_csv, &TRIAL_COLUMNS, &trial_rows)?;
    Ok(Report {
        csv,
        trials_csv,
        rows,
        computed,
        resumed,
        clean_accuracy: work.clean_accuracy,
        images: work.count,
    })
}

/// The console table: one line per (point, mapping).
pub fn format_table(exp: &Experiment, rows: &[Vec<String>]) -> String {
    let col = |name: &str| COLUMNS.iter().position(|c| *c == name).unwrap();
    let mut header = vec!["point".to_string()];
    header.extend(exp.axes.iter().cloned());
    header.extend(["mapping", "mean acc", "std", "min", "drop", "images/s"].map(String::from));
    let mut table = vec![header];
    for r in rows {
        let idx: usize = r[col("point")].parse().unwrap_or(0);
        let mut line = vec![r[col("point")].clone()];
        if let Some(p) = exp.points.get(idx) {
            line.extend(p.assignments.iter().map(|(_, v)| v.clone()));
        }
        let pct = |name: &str| {
            r[col(name)]
                .parse::<f64>()
                .map_or("?".into(), |v| format!("{:.2}%", 100.0 * v))
        };
        line.extend([
            r[col("mapping")].clone(),
            pct("mean_accuracy"),
            pct("std_accuracy"),
            pct("min_accuracy"),
            pct("accuracy_drop"),
            r[col("images_per_s")].clone(),
        ]);
        table.push(line);
    }
    crate::sweep::run::align(&table)
}
