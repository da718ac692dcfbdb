//! Runs an experiment: every sweep point under every mapping, in trial
//! batches, resuming finished points and rewriting results after each point.

use crate::engine::stats::Accumulator;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::experiment::plan::Plan;
use crate::experiment::workload::Layers;
use crate::experiment::{Experiment, Point};
use crate::io::csv::{columns, record, CsvRows, OutputLock};
use crate::model::MappingSpec;
use crate::sweep::output::{self, HistRow, ResultRow, RunInfo};
use crate::sweep::resume::{slots_by_key, ResultFile, RowStore};
use indicatif::{ProgressBar, ProgressStyle};
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
    /// (point, mapping) rows in the results.
    pub rows: usize,
    pub computed: usize,
    pub resumed: usize,
}

/// The result files of a layer experiment named `name` in `dir`:
/// `NAME.csv` and `NAME_hist.csv`.
pub fn result_files(dir: &std::path::Path, name: &str) -> (ResultFile, ResultFile) {
    (
        ResultFile::of::<ResultRow>(dir, &format!("{name}.csv")),
        ResultFile::of::<HistRow>(dir, &format!("{name}_hist.csv")),
    )
}

/// Everything checked and loaded before an engine is opened: the layers
/// build, and existing results can be resumed without losing any. Holds the
/// output lock until the run ends.
#[derive(Debug)]
pub struct Prepared {
    csv: ResultFile,
    hist: ResultFile,
    /// The finished result row and histogram rows of each (point, mapping),
    /// points outermost, as the files list them.
    rows: RowStore,
    hist_rows: RowStore,
    layers: Layers,
    _lock: OutputLock,
}

/// Checks an experiment's inputs, takes the output lock and reads existing
/// results; writes nothing but the lock file.
pub fn prepare(exp: &Experiment, opts: &RunOptions) -> Result<Prepared> {
    // Every layer must build (files exist, shapes and values fit) before any result is touched.
    let layers = Layers::build(&exp.points)?;
    layers.check_mappings(&exp.mappings, &exp.file)?;
    let lock = OutputLock::acquire(&opts.out_dir, &exp.name)?;
    let (csv, hist) = result_files(&opts.out_dir, &exp.name);
    let keys: Vec<String> = exp
        .points
        .iter()
        .flat_map(|p| {
            exp.mappings
                .iter()
                .map(move |m| output::point_key(&p.params, m))
        })
        .collect();
    let mut rows = RowStore::new(&opts.out_dir, keys.len())?;
    let mut hist_rows = RowStore::new(&opts.out_dir, keys.len())?;
    csv.finished("point_key", &keys, opts.fresh, |slots, r| {
        rows.put(slots, r)
    })?;
    let finished = slots_by_key(&keys, |s| rows.rows(s) > 0);
    let hkey = hist.col("point_key");
    hist.companion_rows(opts.fresh, |r| match finished.get(&r[hkey]) {
        Some(slots) => hist_rows.add(slots, r),
        None => Ok(()),
    })?;
    // A finished row without its histogram is recomputed.
    for slot in 0..keys.len() {
        if hist_rows.rows(slot) == 0 {
            rows.clear(slot);
        }
    }
    Ok(Prepared {
        csv,
        hist,
        rows,
        hist_rows,
        layers,
        _lock: lock,
    })
}

impl Prepared {
    /// How many (point, mapping) rows existing results already hold.
    pub fn finished(&self) -> usize {
        self.rows.filled()
    }
}

/// Runs every (point, mapping) not already in the results, rewriting both
/// files after every point that computed one: every row so far, then the
/// finished rows of later points, so a crash loses at most the point in
/// flight. The rows are copied from the row stores, not held in memory.
pub fn run_experiment(
    exp: &Experiment,
    mut prep: Prepared,
    engine: &mut dyn Engine,
    opts: &RunOptions,
) -> Result<RunReport> {
    let todo: u64 = exp
        .points
        .iter()
        .flat_map(|p| exp.mappings.iter().map(move |_| p.params.trials as u64))
        .enumerate()
        .filter(|(s, _)| prep.rows.rows(*s) == 0)
        .map(|(_, t)| t)
        .sum();
    let bar = progress_bar(opts.progress, todo, "trials");
    let (mut computed, mut resumed) = (0, 0);
    let mut slot = 0;
    for (i, point) in exp.points.iter().enumerate() {
        let layer = prep.layers.for_point(point.index);
        let mut new = false;
        for mapping in &exp.mappings {
            let s = slot;
            slot += 1;
            if prep.rows.rows(s) > 0 {
                resumed += 1;
                continue;
            }
            if let Some(b) = &bar {
                b.set_message(progress_message(point, mapping));
            }
            let plan = Plan::new(&point.params, layer, mapping);
            let (row, hist) = simulate_point(exp, point, &plan, engine, bar.as_ref())?;
            prep.rows.set(s, [row])?;
            prep.hist_rows.set(s, hist)?;
            computed += 1;
            new = true;
        }
        // The last point rewrites even when resumed, so the files end as
        // this version writes them.
        if new || i + 1 == exp.points.len() {
            prep.rows.write(&prep.csv)?;
            prep.hist_rows.write(&prep.hist)?;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(RunReport {
        csv: prep.csv.path.clone(),
        hist_csv: prep.hist.path.clone(),
        rows: slot,
        computed,
        resumed,
    })
}

/// Simulates every trial of one (point, mapping) in batches: its result row
/// and histogram rows.
fn simulate_point(
    exp: &Experiment,
    point: &Point,
    plan: &Plan,
    engine: &mut dyn Engine,
    bar: Option<&ProgressBar>,
) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let trials = point.params.trials;
    let start = Instant::now();
    let mut acc = Accumulator::default();
    let batch = batch_size(plan, trials);
    let spill = |e| Error::io(std::env::temp_dir(), e);
    let mut t = 0;
    while t < trials {
        let end = (t + batch).min(trials);
        acc.add(&engine.run(plan, t..end, false)?).map_err(spill)?;
        if let Some(bar) = bar {
            bar.inc((end - t) as u64);
        }
        t = end;
    }
    let run = RunInfo {
        engine: engine.name().into(),
        device: engine.device(),
        elapsed_s: start.elapsed().as_secs_f64(),
    };
    let facts = plan.facts();
    let summary = acc.summary(&facts).map_err(spill)?;
    let row = ResultRow::new(&exp.name, point, &plan.mapping, &facts, &summary, &run);
    let hist = HistRow::rows(
        &exp.name,
        point.index,
        &plan.mapping.name,
        &row.point_key,
        &acc.hist,
    );
    Ok((record(&row), hist))
}

/// Most trials per engine call.
pub const MAX_BATCH: u32 = 1 << 14;

/// Trials per engine call: about 40 calls per point for progress (at most
/// [`MAX_BATCH`]), at least a few trials per thread so every core stays busy.
pub(crate) fn batch_size(plan: &Plan, trials: u32) -> u32 {
    // At most MAX_BATCH, so a batch's per-trial moments stay small.
    let by_progress = trials.div_ceil(40).min(MAX_BATCH);
    let min = (4 * rayon::current_num_threads()) as u32;
    // Keep one call under about 1e11 cell-MACs so a point reports progress often.
    let by_work = (1e11 / plan.counters.cell_macs.max(1) as f64).max(1.0) as u32;
    by_progress
        .max(min)
        .min(by_work.max(min))
        .clamp(1, trials.max(1))
}

/// The comparison table for the terminal, from the result file `csv`
/// (read one row at a time).
pub fn format_table(exp: &Experiment, csv: &std::path::Path) -> Result<String> {
    let columns = columns::<ResultRow>();
    let col = |name: &str| {
        columns
            .iter()
            .position(|c| c == name)
            .expect("a ResultRow column")
    };
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
    let mut rows = CsvRows::open(csv)?
        .ok_or_else(|| Error::io(csv, std::io::Error::from(std::io::ErrorKind::NotFound)))?;
    while let Some(r) = rows.next_row()? {
        let idx: usize = r[ci].parse().unwrap_or(0);
        let mut line = vec![r[ci].to_string()];
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
        line.push(r[cm].to_string());
        line.push(sig(&r[cr]));
        line.push(r[cs].to_string());
        line.push(sig(&r[cp]));
        line.push(short(&r[cc]));
        line.push(short(&r[ca]));
        table.push(line);
    }
    out.push_str(&align(&table));
    Ok(out)
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
