//! `zebra bench`: cell-MACs per second on the two standard workloads, as
//! medians over repeats, per engine, with ratios from the same run.

use crate::engine::Engine;
use crate::experiment::plan::Plan;
use crate::experiment::workload::Layer;
use crate::experiment::{Experiment, Overrides};
use crate::model::MappingSpec;
use anyhow::Result;
use std::path::Path;
use std::time::Instant;

/// The standard workloads (K = N = 256, 8x8 bits, 6-bit full-scale ADC, P = 128, 5% cell mismatch, dense).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Static mismatch, 64 input vectors per trial.
    #[value(name = "S", alias = "s")]
    S,
    /// Dynamic mismatch, 1 input vector per trial (per-cell and aggregated).
    #[value(name = "D", alias = "d")]
    D,
}

/// The experiment text of a workload variant.
pub fn workload_toml(w: Workload, sampling: &str, trials: u32) -> String {
    let (inputs, mode) = match w {
        Workload::S => (64, "static"),
        Workload::D => (1, "dynamic"),
    };
    format!(
        "version = 1\ntrials = {trials}\nseed = 1\nmappings = [\"dense\"]\n\
         [layer]\nk = 256\nn = 256\ninputs = {inputs}\n\
         [array]\nparallelism = 128\n[adc]\nbits = 6\n\
         [noise]\ncell_sigma = 0.05\nmode = \"{mode}\"\nsampling = \"{sampling}\"\n"
    )
}

/// A workload's plan.
pub fn workload_plan(w: Workload, sampling: &str, trials: u32) -> Plan {
    let text = workload_toml(w, sampling, trials);
    let exp = Experiment::parse(&text, Path::new("bench.toml"), Overrides::default())
        .expect("bench workload is valid");
    let p = &exp.points[0].params;
    let layer = Layer::build(&p.layer, p.seed).expect("synthetic layer");
    Plan::new(p, &layer, &MappingSpec::preset("dense").unwrap())
}

/// Median cell-MACs/s of `repeats` runs of `trials` trials.
pub fn measure(engine: &mut dyn Engine, plan: &Plan, trials: u32, repeats: u32) -> Result<f64> {
    let mut rates = Vec::new();
    for _ in 0..repeats {
        let start = Instant::now();
        engine.run(plan, 0..trials, false)?;
        let s = start.elapsed().as_secs_f64();
        rates.push(plan.counters.cell_macs as f64 * trials as f64 / s);
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// Prints one line per (engine, variant), ending in `<median> cell-MACs/s`.
pub fn run(
    w: Workload,
    mut engines: Vec<Box<dyn Engine>>,
    trials: u32,
    repeats: u32,
) -> Result<()> {
    let variants: Vec<&str> = match w {
        Workload::S => vec!["auto"],
        Workload::D => vec!["per-cell", "aggregated"],
    };
    let name = match w {
        Workload::S => "S",
        Workload::D => "D",
    };
    println!("workload {name}: K=N=256, 8x8 bits, 6-bit full-scale ADC, P=128, 5% cell mismatch, dense; {trials} trials x {repeats} repeats, median");
    let mut first: Vec<f64> = Vec::new();
    for (ei, engine) in engines.iter_mut().enumerate() {
        for (vi, v) in variants.iter().enumerate() {
            let plan = workload_plan(w, v, trials);
            // One untimed warm-up call (thread pools, GPU pipelines).
            engine.run(&plan, 0..trials.min(8), false)?;
            let rate = measure(engine.as_mut(), &plan, trials, repeats)?;
            let ratio = if ei == 0 {
                first.push(rate);
                String::new()
            } else {
                format!("  ({:.2}x first engine)", rate / first[vi])
            };
            let sampling = if w == Workload::S {
                "static per-cell"
            } else {
                v
            };
            println!(
                "{:<4} {:<28} {name} {:<16}{ratio}  median {rate:.2e} cell-MACs/s",
                engine.name(),
                engine.device(),
                sampling
            );
        }
    }
    Ok(())
}

/// `zebra bench`: the chosen engines on one standard workload.
pub fn run_bench(
    workload: Workload,
    choice: super::EngineChoice,
    adapter: Option<&str>,
    trials: u32,
    repeats: u32,
) -> Result<std::process::ExitCode> {
    use super::EngineChoice;
    use crate::engine::cpu::CpuEngine;
    use crate::engine::gpu::GpuEngine;
    use std::process::ExitCode;
    if trials == 0 || repeats == 0 {
        eprintln!("error: --trials and --repeats must be at least 1");
        return Ok(ExitCode::from(super::EXIT_USAGE));
    }
    let mut engines: Vec<Box<dyn Engine>> = Vec::new();
    if choice != EngineChoice::Gpu {
        engines.push(Box::new(CpuEngine::new()));
    }
    if choice != EngineChoice::Cpu {
        match GpuEngine::new(adapter, true) {
            Ok(g) => {
                if g.adapter().software {
                    eprintln!("warning: {} is a software adapter: its timings are not representative of a GPU", g.adapter().name);
                }
                engines.push(Box::new(g));
            }
            Err(e) if choice == EngineChoice::Auto => {
                eprintln!("warning: {e}; measuring the CPU only")
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    run(workload, engines, trials, repeats)?;
    Ok(ExitCode::SUCCESS)
}
