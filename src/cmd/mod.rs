//! The command line: parses arguments into validated experiments, picks an
//! engine, and reports. `main.rs` only calls [`run`].

pub mod bench;
pub mod check;
pub mod devices;
pub mod inspect;
pub mod plot;
pub mod run;

use crate::engine::cpu::CpuEngine;
use crate::engine::gpu::GpuEngine;
use crate::engine::Engine;
use crate::error::Error;
use crate::experiment::Overrides;
use anyhow::Result;
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
        /// CPU worker threads, 1 to 1024 (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Refuse sweep points estimated to need more memory than this: bytes,
        /// or with a unit (KB, MB, GB, TB; KiB, MiB, GiB, TiB; K, M, G, T are
        /// binary) (default: the available memory, MemAvailable in /proc/meminfo,
        /// or 8 GiB where that cannot be read).
        #[arg(long, value_parser = parse_bytes)]
        max_memory: Option<u64>,
        /// Recompute every point, overwriting existing results.
        #[arg(long)]
        fresh: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Compute only shard I of N (I from 0) of the sweep's trials, as
        /// partial results OUT/NAME.shard-I-of-N.toml for `zebra merge`;
        /// `slurm` takes I and N from the Slurm job array's environment.
        #[arg(long, value_name = "I/N|slurm")]
        shard: Option<String>,
    },
    /// Merge the partial results of every shard of a sharded run (`run
    /// --shard`) into OUT/NAME.csv and OUT/NAME_hist.csv, the files one
    /// unsharded run writes.
    Merge {
        /// Folder for the merged result files.
        out: PathBuf,
        /// Folders holding the shards' partial results (all of them).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
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
        /// Refuse sweep points estimated to need more memory than this (as for `run`).
        #[arg(long, value_parser = parse_bytes)]
        max_memory: Option<u64>,
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
        /// Swept parameter on the x axis (default: the first swept one), e.g. layer.weight_bits;
        /// or a metric, e.g. energy_fj_per_mac, for one line per mapping through its rows (a
        /// Pareto view; pin the other swept parameters with --where).
        #[arg(long)]
        x: Option<String>,
        /// Only rows whose column has this value (repeatable), e.g. energy.model=walden;
        /// the figures' names end with the values. Histograms are not drawn then.
        #[arg(long = "where", value_name = "COLUMN=VALUE")]
        filter: Vec<String>,
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
pub const EXIT_USAGE: u8 = 2;

/// Runs the parsed command line: one function per subcommand.
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
            max_memory,
            fresh,
            quiet,
            shard,
        } => {
            let overrides = Overrides {
                trials,
                seed,
                images,
            };
            let how = RunArgs {
                out,
                fresh,
                quiet,
                engine,
                adapter,
                threads,
                max_memory,
            };
            if how.engine != EngineChoice::Cpu {
                let env = crate::engine::gpu::check_env().and(crate::sweep::device::resident());
                if let Err(e) = env {
                    return bad_input(e);
                }
            }
            match shard {
                Some(s) => run::run_shard(&file, overrides, &s, how),
                None => run::run_experiment_file(&file, overrides, how),
            }
        }
        Command::Merge { out, dirs } => run::run_merge(&out, &dirs),
        Command::Check {
            file,
            trials,
            seed,
            max_memory,
        } => check::run_check(&file, trials, seed, max_memory),
        Command::Inspect {
            file,
            weights,
            weight_bits,
            parallelism,
        } => inspect::run_inspect(file, weights, weight_bits, parallelism),
        Command::Plot {
            csv,
            out,
            metric,
            x,
            filter,
        } => plot::run_plot(&csv, out.as_deref(), metric, x, filter),
        Command::Devices => match crate::engine::gpu::backends_from_env() {
            Ok(_) => devices::run_devices(),
            Err(e) => bad_input(e),
        },
        Command::Bench {
            workload,
            engine,
            adapter,
            trials,
            repeats,
        } => match crate::engine::gpu::check_env() {
            Ok(_) => bench::run_bench(workload, engine, adapter.as_deref(), trials, repeats),
            Err(e) => bad_input(e),
        },
    }
}

/// How `zebra run` runs, beside the experiment file.
#[derive(Clone, Debug)]
pub struct RunArgs {
    pub out: PathBuf,
    pub fresh: bool,
    pub quiet: bool,
    pub engine: EngineChoice,
    pub adapter: Option<String>,
    pub threads: Option<usize>,
    pub max_memory: Option<u64>,
}

/// Most CPU threads `--threads` accepts: beyond this, threads only cost
/// memory and start-up time (10000 took minutes to start).
pub const MAX_THREADS: usize = 1024;

/// The memory limit when `/proc/meminfo` cannot be read.
pub const FALLBACK_MEMORY: u64 = 8 << 30;

/// `--max-memory`: bytes, or a number with a unit: KB, MB, GB, TB (powers of
/// 1000), KiB, MiB, GiB, TiB or K, M, G, T (powers of 1024).
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        _ => f64::NAN,
    };
    match num.parse::<f64>() {
        Ok(v) if scale.is_finite() && v * scale >= 1.0 && v * scale < 1.8e19 => {
            Ok((v * scale) as u64)
        }
        _ => Err(format!(
            "{s:?} is not a size; give bytes or a number with a unit, such as 8GiB, 512MiB or 16GB"
        )),
    }
}

/// A size in bytes for people: "7.6 GiB".
pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The memory limit and where it comes from: `--max-memory`, else the
/// available memory (MemAvailable in /proc/meminfo), else [`FALLBACK_MEMORY`].
pub fn memory_limit(flag: Option<u64>) -> (u64, String) {
    if let Some(b) = flag {
        return (b, format!("--max-memory {}", human_bytes(b)));
    }
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024);
    match available {
        Some(b) => (b, format!("the available memory, {}", human_bytes(b))),
        None => (
            FALLBACK_MEMORY,
            format!("the default limit, {}", human_bytes(FALLBACK_MEMORY)),
        ),
    }
}

/// Refuses an experiment whose largest sweep point is estimated to need more
/// memory than the limit; otherwise returns a line describing the estimate.
pub fn check_memory(
    exp: &crate::experiment::Experiment,
    flag: Option<u64>,
    threads: Option<usize>,
) -> std::result::Result<String, Error> {
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, MAX_THREADS);
    let est = crate::sweep::memory::estimate(exp, threads)?;
    let (limit, source) = memory_limit(flag);
    if est.bytes > limit {
        return Err(Error::config(
            exp.file.display().to_string(),
            format!(
                "needs about {} of memory at sweep point {} ({}), more than {source}; lower {}, or raise --max-memory",
                human_bytes(est.bytes),
                est.point,
                est.what,
                est.lower
            ),
        ));
    }
    Ok(format!(
        "memory: about {} at most ({}); limit {source} (--max-memory)",
        human_bytes(est.bytes),
        est.what
    ))
}

/// `--threads` and `WGPU_BACKEND`, checked before anything runs.
pub fn check_run_args(threads: Option<usize>) -> std::result::Result<(), Error> {
    if let Some(t) = threads {
        if t == 0 || t > MAX_THREADS {
            return Err(Error::config(
                "--threads",
                format!("must be 1..={MAX_THREADS}, got {t}"),
            ));
        }
    }
    crate::engine::gpu::backends_from_env()?;
    Ok(())
}

/// Refuses a `--out` that exists and is not a folder.
pub fn check_out_dir(out: &std::path::Path) -> std::result::Result<(), Error> {
    if out.exists() && !out.is_dir() {
        return Err(Error::config(
            "--out",
            format!("{} is a file; give a folder", out.display()),
        ));
    }
    Ok(())
}

/// Errors in what the user gave (exit code 2), as opposed to failures of the run.
pub fn is_bad_input(e: &Error) -> bool {
    match e {
        Error::Config { .. } | Error::Npy { .. } | Error::Results { .. } => true,
        Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

pub fn bad_input(e: Error) -> Result<ExitCode> {
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
            Some(t) => Box::new(CpuEngine::with_threads(t.clamp(1, MAX_THREADS))),
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
