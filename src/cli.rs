//! The command line: parses arguments into validated experiments, picks an
//! engine, and reports. `main.rs` only calls [`run`].

use crate::bench;
use crate::engine::cpu::CpuEngine;
use crate::engine::Engine;
use crate::error::Error;
use crate::experiment::{Experiment, Overrides};
use crate::inspect;
use crate::runner::{self, RunOptions};
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
    /// Run an experiment file and write results/NAME.csv and results/NAME_hist.csv.
    ///
    /// Results are rewritten after every sweep point. Re-running the same
    /// experiment resumes: (point, mapping) rows already in the CSV whose
    /// parameters are unchanged are kept, not recomputed. Pass --fresh to
    /// recompute everything.
    Run {
        /// Experiment file (TOML).
        file: PathBuf,
        /// Trials per point (overrides the file).
        #[arg(long)]
        trials: Option<u32>,
        /// Random seed (overrides the file).
        #[arg(long)]
        seed: Option<u64>,
        /// Folder for result files.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Engine.
        #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
        engine: EngineChoice,
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
    /// Measure cell-MACs/s on the standard workloads (S: static, 64 inputs; D: dynamic, 1 input).
    Bench {
        /// Workload.
        #[arg(long, value_enum, default_value_t = bench::Workload::S)]
        workload: bench::Workload,
        /// Engine(s) to measure.
        #[arg(long, value_enum, default_value_t = EngineChoice::Cpu)]
        engine: EngineChoice,
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
            seed,
            out,
            engine,
            threads,
            fresh,
            quiet,
        } => {
            let exp = match Experiment::load(&file, Overrides { trials, seed }) {
                Ok(e) => e,
                Err(e) => return bad_input(e),
            };
            let mut engine = make_engine(engine, threads)?;
            let opts = RunOptions {
                out_dir: out,
                fresh,
                progress: !quiet,
            };
            let report = match runner::run_experiment(&exp, engine.as_mut(), &opts) {
                Ok(r) => r,
                Err(e @ (Error::Config { .. } | Error::Npy { .. } | Error::Results { .. })) => {
                    return bad_input(e)
                }
                Err(e @ Error::Io { .. }) if is_missing(&e) => return bad_input(e),
                Err(e) => return Err(e).context("simulation failed"),
            };
            print!("{}", runner::format_table(&exp, &report.rows));
            println!(
                "{} (point, mapping) rows: {} computed, {} resumed; engine {}",
                report.rows.len(),
                report.computed,
                report.resumed,
                engine.device()
            );
            println!(
                "wrote {} and {}",
                report.csv.display(),
                report.hist_csv.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { file, trials, seed } => {
            let exp = match Experiment::load(&file, Overrides { trials, seed }) {
                Ok(e) => e,
                Err(e) => return bad_input(e),
            };
            match crate::check::describe(&exp) {
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
        Command::Bench {
            workload,
            engine,
            trials,
            repeats,
        } => {
            if trials == 0 || repeats == 0 {
                eprintln!("error: --trials and --repeats must be at least 1");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
            let engines: Vec<Box<dyn Engine>> = match engine {
                EngineChoice::Cpu | EngineChoice::Auto => vec![Box::new(CpuEngine::new())],
                EngineChoice::Gpu => vec![make_engine(EngineChoice::Gpu, None)?],
            };
            bench::run(workload, engines, trials, repeats)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn is_missing(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

fn bad_input(e: Error) -> Result<ExitCode> {
    eprintln!("error: {e}");
    Ok(ExitCode::from(EXIT_USAGE))
}

/// Builds the engine the user chose.
pub fn make_engine(choice: EngineChoice, threads: Option<usize>) -> Result<Box<dyn Engine>> {
    let cpu = || -> Box<dyn Engine> {
        match threads {
            Some(t) => Box::new(CpuEngine::with_threads(t.max(1))),
            None => Box::new(CpuEngine::new()),
        }
    };
    match choice {
        EngineChoice::Cpu | EngineChoice::Auto => Ok(cpu()),
        EngineChoice::Gpu => {
            anyhow::bail!("the GPU engine is not available in this build; use --engine cpu")
        }
    }
}
