//! `zebra run` (and `zebra accuracy`): every sweep point of an experiment
//! file under every mapping, on the chosen engine.

use super::{bad_input, check_memory, check_out_dir, is_bad_input, make_engine, RunArgs};
use crate::engine::gpu::GpuEngine;
use crate::engine::Engine;
use crate::error::Error;
use crate::experiment::{Experiment, Overrides};
use crate::sweep::accuracy;
use crate::sweep::run::{self as runner, RunOptions};
use crate::sweep::shard::{self, Shard};
use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;

/// Loads and checks `file`, then runs it as a layer or an accuracy experiment.
pub fn run_experiment_file(file: &Path, overrides: Overrides, how: RunArgs) -> Result<ExitCode> {
    if let Err(e) = super::check_run_args(how.threads).and_then(|()| check_out_dir(&how.out)) {
        return bad_input(e);
    }
    let exp = match Experiment::load(file, overrides) {
        Ok(e) => e,
        Err(e) => return bad_input(e),
    };
    // Before any layer is built: a point too large for memory stops here.
    if let Err(e) = check_memory(&exp, how.max_memory, how.threads) {
        return bad_input(e);
    }
    if exp.network.is_some() {
        run_accuracy(&exp, &how)
    } else {
        run_layers(&exp, &how)
    }
}

/// An experiment on a single layer: error statistics per (point, mapping).
fn run_layers(exp: &Experiment, how: &RunArgs) -> Result<ExitCode> {
    let opts = RunOptions {
        out_dir: how.out.clone(),
        fresh: how.fresh,
        progress: !how.quiet,
    };
    // Inputs and existing results are checked before a GPU is opened.
    let prep = match runner::prepare(exp, &opts) {
        Ok(p) => p,
        Err(e) if is_bad_input(&e) => return bad_input(e),
        Err(e) => return failed(e),
    };
    let Some(mut engine) = open_engine(how) else {
        return Ok(ExitCode::FAILURE);
    };
    // Inputs were checked by `prepare`: what fails now is the run itself.
    let report = match runner::run_experiment(exp, prep, engine.as_mut(), &opts) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    match runner::format_table(exp, &report.csv) {
        Ok(table) => print!("{table}"),
        Err(e) => return failed(e),
    }
    let counts = (report.rows, report.computed, report.resumed);
    summary(counts, &engine.device(), &report.csv, &report.hist_csv);
    Ok(ExitCode::SUCCESS)
}

/// A run that stopped: bad input exits 2; a file that cannot be read or
/// written exits 1 with the file and the system's reason once; anything
/// else is the simulation's own failure.
fn failed(e: Error) -> Result<ExitCode> {
    match &e {
        _ if is_bad_input(&e) => bad_input(e),
        Error::Io { .. } | Error::Csv { .. } => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
        _ => {
            eprintln!("error: simulation failed: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The engine the user chose, or `None` after saying why it cannot open.
fn open_engine(how: &RunArgs) -> Option<Box<dyn Engine + Send>> {
    match make_engine(how.engine, how.adapter.as_deref(), how.threads) {
        Ok(e) => Some(e),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

/// GPU engines (queues) an accuracy run uses on a hardware adapter, unless
/// `ZEBRA_GPU_STREAMS` (1 to 16) says otherwise.
const GPU_STREAMS: usize = 8;

/// The number of GPU streams: `ZEBRA_GPU_STREAMS` if set, else [`GPU_STREAMS`].
fn gpu_streams() -> Result<usize> {
    match std::env::var("ZEBRA_GPU_STREAMS") {
        Err(_) => Ok(GPU_STREAMS.min(std::thread::available_parallelism().map_or(1, |n| n.get()))),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n @ 1..=16) => Ok(n),
            _ => anyhow::bail!("ZEBRA_GPU_STREAMS is {v:?}; accepted: a whole number from 1 to 16"),
        },
    }
}

/// An accuracy experiment: a network's test accuracy per simulated chip.
fn run_accuracy(exp: &Experiment, how: &RunArgs) -> Result<ExitCode> {
    let opts = accuracy::Options {
        out_dir: how.out.clone(),
        fresh: how.fresh,
        progress: !how.quiet,
    };
    let prep = match accuracy::prepare(exp, &opts) {
        Ok(p) => p,
        Err(e) if is_bad_input(&e) => return bad_input(e),
        Err(e) => return failed(e),
    };
    let Some(engine) = open_engine(how) else {
        return Ok(ExitCode::FAILURE);
    };
    // The CPU runs chips in parallel, each on one thread. A GPU runs whole
    // networks on the device, many chips at once, on one engine; layer by
    // layer (ZEBRA_GPU_RESIDENT=0) a hardware GPU gets several engines
    // (queues), each fed chips by its own host thread, so lowering and
    // requantising on the host overlap with the device.
    // No threads are started when every row is resumed (nothing to compute).
    let nothing_to_do = prep.finished() >= exp.points.len() * exp.mappings.len();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(if nothing_to_do {
            1
        } else {
            how.threads.unwrap_or(0)
        })
        .build()
        .context("cannot start CPU threads")?;
    let device = engine.device();
    let mut engines: Vec<Box<dyn Engine + Send>> = Vec::new();
    if engine.name() == "gpu" {
        engines.push(engine);
        let streams = if crate::sweep::device::resident()? {
            1
        } else {
            gpu_streams()?
        };
        for _ in 1..streams {
            match GpuEngine::new(how.adapter.as_deref(), true) {
                Ok(g) if !g.adapter().software => engines.push(Box::new(g)),
                _ => break,
            }
        }
    }
    let report = match pool.install(|| accuracy::run(exp, prep, &mut engines, &opts)) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    println!(
        "clean int8 accuracy {:.2}% on {} images",
        100.0 * report.clean_accuracy,
        report.images
    );
    match accuracy::format_table(exp, &report.csv) {
        Ok(table) => print!("{table}"),
        Err(e) => return failed(e),
    }
    let counts = (report.rows, report.computed, report.resumed);
    summary(counts, &device, &report.csv, &report.trials_csv);
    Ok(ExitCode::SUCCESS)
}

/// The closing lines of `run`: rows computed and resumed, and the files written.
fn summary(
    (rows, computed, resumed): (usize, usize, usize),
    device: &str,
    csv: &Path,
    companion: &Path,
) {
    println!(
        "{rows} (point, mapping) rows: {computed} computed, {resumed} resumed; engine {device}"
    );
    println!("wrote {} and {}", csv.display(), companion.display());
}

/// `zebra run FILE --shard I/N`: one shard's partial results.
pub fn run_shard(file: &Path, overrides: Overrides, spec: &str, how: RunArgs) -> Result<ExitCode> {
    let shard = match Shard::parse(spec) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(super::EXIT_USAGE));
        }
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return bad_input(crate::error::Error::io(file, e)),
    };
    // Checked before an engine opens, as for an unsharded run.
    let exp = match Experiment::parse(&text, file, overrides) {
        Ok(exp) => exp,
        Err(e) => return bad_input(e),
    };
    let Some(engine) = open_engine(&how) else {
        return Ok(ExitCode::FAILURE);
    };
    let device = engine.device();
    let report = match shard::run_shard(
        &exp, file, &text, overrides, shard, engine, &how.out, how.fresh,
    ) {
        Ok(r) => r,
        Err(e) if is_bad_input(&e) => return bad_input(e),
        Err(e) => return Err(e).context("simulation failed"),
    };
    println!(
        "shard {}/{}: {} (point, mapping, trial range) units: {} computed, {} resumed; engine {}",
        shard.index,
        shard.count,
        report.computed + report.resumed,
        report.computed,
        report.resumed,
        device
    );
    println!("wrote {}", report.path.display());
    Ok(ExitCode::SUCCESS)
}

/// `zebra merge OUT DIR...`: the merged result files of a sharded run.
pub fn run_merge(out: &Path, dirs: &[std::path::PathBuf]) -> Result<ExitCode> {
    let report = match shard::merge(out, dirs) {
        Ok(r) => r,
        Err(e) => return bad_input(e),
    };
    let table = if report.experiment.network.is_some() {
        accuracy::format_table(&report.experiment, &report.csv)
    } else {
        runner::format_table(&report.experiment, &report.csv)
    };
    match table {
        Ok(table) => print!("{table}"),
        Err(e) => return failed(e),
    }
    println!(
        "{} (point, mapping) rows merged from {} shards",
        report.rows, report.shards
    );
    println!(
        "wrote {} and {}",
        report.csv.display(),
        report.companion.display()
    );
    Ok(ExitCode::SUCCESS)
}
