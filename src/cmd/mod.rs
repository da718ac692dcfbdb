//! The command line: parses arguments into validated experiments, picks an
//! engine, and reports. `main.rs` only calls [`run`].

pub mod bench;
pub mod check;
pub mod inspect;

use crate::engine::cpu::CpuEngine;
use crate::engine::gpu::{self, GpuEngine};
use crate::engine::Engine;
use crate::error::Error;
use crate::experiment::{Experiment, Overrides};
use crate::sweep::accuracy;
use crate::sweep::run::{self as runner, RunOptions};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Monte Carlo noise simulation of bit-sliced compute-in-memory
/// matrix-vector products: dense vs ZEBRA mappings.
#[derive(Parser, Debug)]
#[command(name = "zebra", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Which engine simulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineChoice {
    /// A hardware GPU if there is one, else the CPU.
    Auto,
    /// The multi-threaded CPU engine.
    Cpu,
    /// The wgpu engine; fails if no adapter is found.
    Gpu,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run an experiment file and write OUT/NAME.csv and OUT/NAME_hist.csv
    /// (an accuracy experiment, with a `[network]` section: OUT/NAME.csv and
    /// OUT/NAME_trials.csv).
    ///
    /// Results are rewritten after every sweep point. Re-running the same
    /// experiment resumes: (point, mapping) rows already in the CSV whose
    /// parameters are unchanged are kept, not recomputed. Pass --fresh to
    /// recompute everything.
    ///
    /// Accuracy experiments on a hardware GPU run chips on several GPU queues
    /// at once, each fed by its own host thread: 8 (at most one per core)
    /// unless ZEBRA_GPU_STREAMS (1 to 16) says otherwise.
    #[command(visible_alias = "accuracy")]
    Run {
        /// Experiment file (TOML).
        file: PathBuf,
        /// Trials per point (overrides the file).
        #[arg(long)]
        trials: Option<u32>,
        /// Accuracy experiments: use only the first N test images (overrides `network.limit`).
        #[arg(long)]
        images: Option<usize>,
        /// Random seed (overrides the file).
        #[arg(long)]
        seed: Option<u64>,
        /// Folder for result files (the shipped results in `results/` are
        /// written by `experiments/reproduce.sh` with `--out results`).
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Engine.
        #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
        engine: EngineChoice,
        /// GPU adapter, by name substring (default: the best hardware GPU; also `WGPU_ADAPTER_NAME`).
        #[arg(long)]
        adapter: Option<String>,
        /// CPU worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Recompute every point, overwriting existing results.
        #[arg(long)]
        fresh: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Validate an experiment file; show the sweep and the work it implies.
    Check {
        /// Experiment file (TOML).
        file: PathBuf,
        /// Trials per point (overrides the file).
        #[arg(long)]
        trials: Option<u32>,
        /// Random seed (overrides the file).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Zero-bit statistics of a weight set: per-plane digit density and skippable groups per mapping.
    Inspect {
        /// Experiment file whose (first point's) layer to inspect.
        file: Option<PathBuf>,
        /// A .npy weight matrix (K, N) instead of an experiment's layer.
        #[arg(long, conflicts_with = "file")]
        weights: Option<PathBuf>,
        /// Weight bits for --weights.
        #[arg(long, default_value_t = 8)]
        weight_bits: u32,
        /// Rows per chunk (default: the experiment's, or 128).
        #[arg(long)]
        parallelism: Option<usize>,
    },
    /// Draw figures from result files: RMSE and SNR against the swept parameter
    /// (one line per mapping) and |error| histograms at the middle sweep point,
    /// as SVG and PNG beside each CSV (or in --out).
    Plot {
        /// Result files written by `zebra run` (OUT/NAME.csv).
        #[arg(required = true)]
        csv: Vec<PathBuf>,
        /// Folder for the figures (default: beside each CSV).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Metric to draw against the sweep, one figure each (repeatable): rmse, snr_db,
        /// p99_abs, trial_rmse_std, conversions_per_mac, reads_per_mac, energy_fj_per_mac,
        /// skipped_plane_fraction, digit_density; for accuracy experiments mean_accuracy,
        /// min_accuracy, accuracy_drop (default there: mean_accuracy and min_accuracy).
        #[arg(long, default_values_t = ["rmse".to_string(), "snr_db".to_string()])]
        metric: Vec<String>,
        /// Swept parameter on the x axis (default: the first swept one), e.g. layer.weight_bits.
        #[arg(long)]
        x: Option<String>,
    },
    /// List GPU adapters (honours WGPU_BACKEND) with the limits that matter.
    Devices,
    /// Measure cell-MACs/s on the standard workloads (S: static, 64 inputs; D: dynamic, 1 input).
    Bench {
        /// Workload.
        #[arg(long, value_enum, default_value_t = bench::Workload::S)]
        workload: bench::Workload,
        /// Engines to measure: cpu, gpu, or auto (the CPU and, if there is one, a GPU).
        #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
        engine: EngineChoice,
        /// GPU adapter, by name substring.
        #[arg(long)]
        adapter: Option<String>,
        /// Trials per repeat.
        #[arg(long, default_value_t = 1000)]
        trials: u32,
        /// Repeats (the median is reported).
        #[arg(long, default_value_t = 5)]
        repeats: u32,
    },
}

/// Exit code for bad input.
const EXIT_USAGE: u8 = 2;

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run {
            file,
            trials,
            images,
            seed,
            out,
            engine,
            adapter,
            threads,
            fresh,
            quiet,
        } => {
            let exp = match Experiment::load(
                &file,
                Overrides {
                    trials,
                    seed,
                    images,
                },
            ) {
                Ok(e) => e,
                Err(e) => return bad_input(e),
            };
            if exp.network.is_some() {
                return run_accuracy(&exp, out, fresh, quiet, engine, adapter.as_deref(), threads);
            }
            let opts = RunOptions {
                out_dir: out,
                fresh,
                progress: !quiet,
            };
            // Inputs and existing results are checked before a GPU is opened.
            let prep = match runner::prepare(&exp, &opts) {
                Ok(p) => p,
                Err(e) if is_bad_input(&e) => return bad_input(e),
                Err(e) => return Err(e).context("cannot read the inputs or results"),
            };
            let mut engine = match make_engine(engine, adapter.as_deref(), threads) {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            // Inputs were checked by `prepare`: what fails now is the run itself.
            let report = runner::run_experiment(&exp, prep, engine.as_mut(), &opts)
                .context("simulation failed")?;
            print!("{}", runner::format_table(&exp, &report.rows));
            let counts = (report.rows.len(), report.computed, report.resumed);
            summary(counts, &engine.device(), &report.csv, &report.hist_csv);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { file, trials, seed } => {
            let exp = match Experiment::load(
                &file,
                Overrides {
                    trials,
                    seed,
                    images: None,
                },
            ) {
                Ok(e) => e,
                Err(e) => return bad_input(e),
            };
            match crate::cmd::check::describe(&exp) {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => bad_input(e),
            }
        }
        Command::Inspect {
            file,
            weights,
            weight_bits,
            parallelism,
        } => {
            let res = match (file, weights) {
                (Some(f), None) => inspect::inspect_experiment(&f, parallelism),
                (None, Some(w)) => {
                    inspect::inspect_npy(&w, weight_bits, parallelism.unwrap_or(128))
                }
                _ => {
                    eprintln!("error: give an experiment file or --weights W.npy");
                    return Ok(ExitCode::from(EXIT_USAGE));
                }
            };
            match res {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => bad_input(e),
            }
        }
        Command::Plot {
            csv,
            out,
            metric,
            x,
        } => {
            let opts = crate::io::plot::PlotOptions { metrics: metric, x };
            for file in &csv {
                match crate::io::plot::plot_results(file, out.as_deref(), &opts) {
                    Ok(files) => {
                        for f in files {
                            println!("wrote {}", f.display());
                        }
                    }
                    Err(e) => return bad_input(e),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Devices => {
            let adapters = gpu::list_adapters();
            if adapters.is_empty() {
                println!(
                    "no GPU adapters found (WGPU_BACKEND={}); `--engine auto` uses the CPU",
                    std::env::var("WGPU_BACKEND").unwrap_or_else(|_| "unset".into())
                );
            }
            for a in adapters {
                println!(
                    "{}  backend {}  type {}  driver {}  max storage binding {} MiB  max workgroups/dim {}  max invocations/workgroup {}",
                    a.name, a.backend, a.device_type, a.driver, a.max_storage_binding >> 20, a.max_workgroups_per_dim, a.max_invocations
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            workload,
            engine,
            adapter,
            trials,
            repeats,
        } => {
            if trials == 0 || repeats == 0 {
                eprintln!("error: --trials and --repeats must be at least 1");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
            let mut engines: Vec<Box<dyn Engine>> = Vec::new();
            if engine != EngineChoice::Gpu {
                engines.push(Box::new(CpuEngine::new()));
            }
            if engine != EngineChoice::Cpu {
                match GpuEngine::new(adapter.as_deref(), true) {
                    Ok(g) => {
                        if g.adapter().software {
                            eprintln!("warning: {} is a software adapter: its timings are not representative of a GPU", g.adapter().name);
                        }
                        engines.push(Box::new(g));
                    }
                    Err(e) if engine == EngineChoice::Auto => {
                        eprintln!("warning: {e}; measuring the CPU only")
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            bench::run(workload, engines, trials, repeats)?;
            Ok(ExitCode::SUCCESS)
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

/// `zebra run` on an accuracy experiment.
fn run_accuracy(
    exp: &Experiment,
    out: PathBuf,
    fresh: bool,
    quiet: bool,
    choice: EngineChoice,
    adapter: Option<&str>,
    threads: Option<usize>,
) -> Result<ExitCode> {
    let opts = accuracy::Options {
        out_dir: out,
        fresh,
        progress: !quiet,
    };
    let prep = match accuracy::prepare(exp, &opts) {
        Ok(p) => p,
        Err(e) if is_bad_input(&e) => return bad_input(e),
        Err(e) => return Err(e).context("cannot read the model, images or results"),
    };
    let engine = match make_engine(choice, adapter, threads) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // The CPU runs chips in parallel, each on one thread. A hardware GPU gets
    // several engines (queues), each fed chips by its own host thread, so
    // lowering and requantising on the host overlap with the device.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .context("cannot start CPU threads")?;
    let device = engine.device();
    let mut engines: Vec<Box<dyn Engine + Send>> = Vec::new();
    if engine.name() == "gpu" {
        engines.push(engine);
        let streams = gpu_streams()?;
        for _ in 1..streams {
            match GpuEngine::new(adapter, true) {
                Ok(g) if !g.adapter().software => engines.push(Box::new(g)),
                _ => break,
            }
        }
    }
    let report = pool
        .install(|| accuracy::run(exp, prep, &mut engines, &opts))
        .context("simulation failed")?;
    println!(
        "clean int8 accuracy {:.2}% on {} images",
        100.0 * report.clean_accuracy,
        report.images
    );
    print!("{}", accuracy::format_table(exp, &report.rows));
    let counts = (report.rows.len(), report.computed, report.resumed);
    summary(counts, &device, &report.csv, &report.trials_csv);
    Ok(ExitCode::SUCCESS)
}

/// The closing lines of `run`: rows computed and resumed, and the files written.
fn summary(
    (rows, computed, resumed): (usize, usize, usize),
    device: &str,
    csv: &std::path::Path,
    companion: &std::path::Path,
) {
    println!(
        "{rows} (point, mapping) rows: {computed} computed, {resumed} resumed; engine {device}"
    );
    println!("wrote {} and {}", csv.display(), companion.display());
}

/// Errors in what the user gave (exit code 2), as opposed to failures of the run.
fn is_bad_input(e: &Error) -> bool {
    match e {
        Error::Config { .. } | Error::Npy { .. } | Error::Results { .. } => true,
        Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

fn bad_input(e: Error) -> Result<ExitCode> {
    eprintln!("error: {e}");
    Ok(ExitCode::from(EXIT_USAGE))
}

/// Builds the engine the user chose. `auto` takes a hardware GPU if there is
/// one and otherwise falls back to the CPU with one warning line.
pub fn make_engine(
    choice: EngineChoice,
    adapter: Option<&str>,
    threads: Option<usize>,
) -> Result<Box<dyn Engine + Send>> {
    let cpu = || -> Box<dyn Engine + Send> {
        match threads {
            Some(t) => Box::new(CpuEngine::with_threads(t.max(1))),
            None => Box::new(CpuEngine::new()),
        }
    };
    match choice {
        EngineChoice::Cpu => Ok(cpu()),
        EngineChoice::Gpu => {
            let g = GpuEngine::new(adapter, true)?;
            if g.adapter().software {
                eprintln!(
                    "note: {} is a software adapter (results are exact, speed is CPU-bound)",
                    g.adapter().name
                );
            }
            Ok(Box::new(g))
        }
        EngineChoice::Auto => match GpuEngine::new(adapter, false) {
            Ok(g) => Ok(Box::new(g)),
            Err(e) if adapter.is_some() => Err(e.into()),
            Err(_) => {
                eprintln!("warning: no hardware GPU adapter found; using the CPU engine (`zebra devices` lists adapters)");
                Ok(cpu())
            }
        },
    }
}
