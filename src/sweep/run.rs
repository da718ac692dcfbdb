//! Runs an experiment: every sweep point under every mapping, in trial
//! batches, resuming finished points and rewriting results after each point.

use crate::engine::stats::{coarse_rows, Accumulator};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::experiment::plan::Plan;
use crate::experiment::workload::Layers;
use crate::experiment::{Experiment, Point};
use crate::model::MappingSpec;
use crate::sweep::output::{self, RunInfo, COLUMNS, HIST_COLUMNS};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Folder for `NAME.csv` and `NAME_hist.csv`.
    pub out_dir: PathBuf,
    /// Recompute every point, overwriting existing results.
    pub fresh: bool,
    /// Show a progress bar (only when stderr is a terminal).
    pub progress: bool,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub csv: PathBuf,
    pub hist_csv: PathBuf,
    /// Result rows, in `COLUMNS` order.
    pub rows: Vec<Vec<String>>,
    pub computed: usize,
    pub resumed: usize,
}

/// Output paths of an experiment.
pub fn result_paths(exp: &Experiment, out_dir: &std::path::Path) -> (PathBuf, PathBuf) {
    (
        out_dir.join(format!("{}.csv", exp.name)),
        out_dir.join(format!("{}_hist.csv", exp.name)),
    )
}

/// Everything checked and loaded before an engine is opened: the layers
/// build, and existing results can be resumed without losing any.
#[derive(Debug)]
pub struct Prepared {
    csv_path: PathBuf,
    hist_path: PathBuf,
    /// (point index, key) of every (point, mapping), in order.
    wanted: Vec<(usize, String)>,
    done: HashMap<String, Vec<String>>,
    done_hist: HashMap<String, Vec<Vec<String>>>,
    layers: Layers,
}

/// Checks an experiment's inputs and existing results; touches nothing.
pub fn prepare(exp: &Experiment, opts: &RunOptions) -> Result<Prepared> {
    // Every layer must build (files exist, shapes and values fit) before any result is touched.
    let layers = Layers::build(&exp.points)?;
    let (csv_path, hist_path) = result_paths(exp, &opts.out_dir);
    let wanted: Vec<(usize, String)> = exp
        .points
        .iter()
        .flat_map(|p| {
            exp.mappings
                .iter()
                .map(move |m| (p.index, output::point_key(&p.params, m)))
        })
        .collect();

    // Resume: keep finished rows whose key is still wanted; refuse to drop others.
    let mut done: HashMap<String, Vec<String>> = HashMap::new();
    let mut done_hist: HashMap<String, Vec<Vec<String>>> = HashMap::new();
    if !opts.fresh {
        if let Some((header, rows)) = crate::io::csv::read_csv(&csv_path)? {
            if header != COLUMNS {
                return Err(Error::Results {
                    path: csv_path,
                    msg: "has other columns than this version writes; pass --fresh to overwrite it or --out DIR to write elsewhere".into(),
                });
            }
            let key_col = COLUMNS.iter().position(|c| *c == "point_key").unwrap();
            let stale = rows
                .iter()
                .filter(|r| !wanted.iter().any(|(_, k)| *k == r[key_col]))
                .count();
            if stale > 0 {
                return Err(Error::Results {
                    path: csv_path,
                    msg: format!(
                        "holds {stale} row(s) from other parameters than this experiment now has; pass --fresh to overwrite them or --out DIR to write elsewhere"
                    ),
                });
            }
            for r in rows {
                done.insert(r[key_col].clone(), r);
            }
            if let Some((hheader, hrows)) = crate::io::csv::read_csv(&hist_path)? {
                if hheader == HIST_COLUMNS {
                    for r in hrows {
                        done_hist.entry(r[6].clone()).or_default().push(r);
                    }
                }
            }
        }
    }
    // A finished row without its histogram is recomputed.
    done.retain(|k, _| done_hist.contains_key(k));
    Ok(Prepared {
        csv_path,
        hist_path,
        wanted,
        done,
        done_hist,
        layers,
    })
}

/// Runs every (point, mapping) not already in the results.
pub fn run_experiment(
    exp: &Experiment,
    prep: Prepared,
    engine: &mut dyn Engine,
    opts: &RunOptions,
) -> Result<RunReport> {
    let Prepared {
        csv_path,
        hist_path,
        wanted,
        done,
        done_hist,
        layers,
    } = prep;
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))?;

    let total_trials: u64 = exp
        .points
        .iter()
        .flat_map(|p| exp.mappings.iter().map(move |m| (p, m)))
        .filter(|(p, m)| !done.contains_key(&output::point_key(&p.params, m)))
        .map(|(p, _)| p.params.trials as u64)
        .sum();
    let bar = progress_bar(opts.progress, total_trials, "trials");

    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut hist_rows: Vec<Vec<String>> = Vec::new();
    let (mut computed, mut resumed) = (0, 0);
    for point in &exp.points {
        let params = &point.params;
        let layer = layers.for_point(point.index);
        for mapping in &exp.mappings {
            let key = output::point_key(params, mapping);
            if let (Some(row), Some(h)) = (done.get(&key), done_hist.get(&key)) {
                rows.push(row.clone());
                hist_rows.extend(h.iter().cloned());
                resumed += 1;
                continue;
            }
            let plan = Plan::new(params, layer, mapping);
            if let Some(b) = &bar {
                b.set_message(progress_message(point, mapping));
            }
            let start = Instant::now();
            let mut acc = Accumulator::default();
            let batch = batch_size(&plan, params.trials);
            let mut t = 0;
            while t < params.trials {
                let end = (t + batch).min(params.trials);
                let b = engine.run(&plan, t..end, false)?;
                acc.add(&b);
                if let Some(bar) = &bar {
                    bar.inc((end - t) as u64);
                }
                t = end;
            }
            let summary = acc.summary(&plan);
            let run = RunInfo {
                engine: engine.name().into(),
                device: engine.device(),
                elapsed_s: start.elapsed().as_secs_f64(),
            };
            let row = output::result_row(&exp.name, point, &plan, &summary, &run);
            for (lo, hi, count) in coarse_rows(&acc.hist, 5) {
                hist_rows.push(vec![
                    exp.name.clone(),
                    point.index.to_string(),
                    mapping.name.clone(),
                    format!("{lo:.6e}"),
                    format!("{hi:.6e}"),
                    count.to_string(),
                    key.clone(),
                ]);
            }
            rows.push(row);
            computed += 1;
        }
        // Rewrite after every point, finished points first, so a crash loses at most this point.
        let mut all_rows = rows.clone();
        let mut all_hist = hist_rows.clone();
        for (idx, key) in &wanted {
            if *idx > point.index {
                if let (Some(r), Some(h)) = (done.get(key), done_hist.get(key)) {
                    all_rows.push(r.clone());
                    all_hist.extend(h.iter().cloned());
                }
            }
        }
        crate::io::csv::write_csv_atomic(&csv_path, &COLUMNS, &all_rows)?;
        crate::io::csv::write_csv_atomic(&hist_path, &HIST_COLUMNS, &all_hist)?;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(RunReport {
        csv: csv_path,
        hist_csv: hist_path,
        rows,
        computed,
        resumed,
    })
}

/// Trials per engine call: about 40 calls per point for progress, at least
/// a few trials per thread so every core stays busy.
fn batch_size(plan: &Plan, trials: u32) -> u32 {
    let by_progress = trials.div_ceil(40);
    let min = (4 * rayon::current_num_threads()) as u32;
    // Keep one call under about 1e11 cell-MACs so a point reports progress often.
    let by_work = (1e11 / plan.counters.cell_macs.max(1) as f64).max(1.0) as u32;
    by_progress
        .max(min)
        .min(by_work.max(min))
        .clamp(1, trials.max(1))
}

/// The comparison table for the terminal.
pub fn format_table(exp: &Experiment, rows: &[Vec<String>]) -> String {
    let col = |name: &str| COLUMNS.iter().position(|c| *c == name).unwrap();
    let (ci, cm, cr, cs, cp, cc, ca) = (
        col("point"),
        col("mapping"),
        col("rmse"),
        col("snr_db"),
        col("p99_abs"),
        col("conversions_per_mac"),
        col("reads_per_mac"),
    );
    let mut out = String::new();
    let mut header = vec!["point".to_string()];
    header.extend(exp.axes.iter().cloned());
    header.extend(
        [
            "mapping",
            "RMSE",
            "SNR dB",
            "p99 |e|",
            "conv/MAC",
            "reads/MAC",
        ]
        .map(String::from),
    );
    let mut table: Vec<Vec<String>> = vec![header];
    for r in rows {
        let idx: usize = r[ci].parse().unwrap_or(0);
        let mut line = vec![r[ci].clone()];
        if let Some(p) = exp.points.get(idx) {
            line.extend(p.assignments.iter().map(|(_, v)| v.clone()));
        }
        let short = |s: &str| {
            s.parse::<f64>()
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|_| s.to_string())
        };
        let sig = |s: &str| {
            s.parse::<f64>()
                .map(|v| format!("{v:.4e}"))
                .unwrap_or_else(|_| s.to_string())
        };
        line.push(r[cm].clone());
        line.push(sig(&r[cr]));
        line.push(r[cs].clone());
        line.push(sig(&r[cp]));
        line.push(short(&r[cc]));
        line.push(short(&r[ca]));
        table.push(line);
    }
    out.push_str(&align(&table));
    out
}

/// A progress bar over `total` units on stderr, when asked for and stderr is a terminal.
pub fn progress_bar(wanted: bool, total: u64, unit: &str) -> Option<ProgressBar> {
    (wanted && std::io::stderr().is_terminal() && total > 0).then(|| {
        let b = ProgressBar::new(total);
        let template =
            format!("{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit}  ETA {{eta}}  {{msg}}");
        b.set_style(
            ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    })
}

/// The progress bar's message for one (point, mapping).
pub fn progress_message(point: &Point, mapping: &MappingSpec) -> String {
    let label: Vec<String> = point
        .assignments
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("point {} {} {}", point.index, mapping.name, label.join(" "))
}

/// Right-aligned columns, two spaces apart, one line per row.
pub fn align(table: &[Vec<String>]) -> String {
    let mut out = String::new();
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| {
            table
                .iter()
                .map(|l| l.get(c).map_or(0, |s| s.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in table {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(c, s)| format!("{s:>w$}", w = widths[c]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
