//! `zebra bench`: cell-MACs per second on the two standard matrix-vector
//! workloads, and chip-images per second on the shipped networks, as
//! medians over repeats, per engine (and per GPU kernel set), with ratios
//! from the same run.

use crate::engine::gpu::KernelSet;
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
    /// The shipped CNN's accuracy sweep: 1,000 test images per chip, one
    /// chip per trial (5% static mismatch, P = 128, 6-bit ADC, dense).
    #[value(name = "cnn")]
    Cnn,
    /// The shipped ResNet's, on 200 test images per chip.
    #[value(name = "resnet")]
    Resnet,
}

/// The experiment text of a workload variant.
pub fn workload_toml(w: Workload, sampling: &str, trials: u32) -> String {
    let (inputs, mode) = match w {
        Workload::D => (1, "dynamic"),
        _ => (64, "static"),
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

/// The kernel sets to measure on `engine`: both on a GPU, none otherwise.
fn kernel_sets(engine: &mut dyn Engine) -> Vec<Option<KernelSet>> {
    match engine.as_gpu() {
        Some(_) => vec![Some(KernelSet::Plain), Some(KernelSet::Tiled)],
        None => vec![None],
    }
}

/// Switches a GPU engine to kernel set `set` and returns the engine's
/// label: its name, and on a GPU the kernel set.
fn use_kernels(engine: &mut dyn Engine, set: Option<KernelSet>) -> String {
    if let (Some(g), Some(k)) = (engine.as_gpu(), set) {
        g.set_kernels(k);
        return format!("gpu-{}", k.label());
    }
    engine.name().to_string()
}

/// Prints one line per (engine, kernel set, variant), ending in `<median>
/// cell-MACs/s`.
pub fn run(
    w: Workload,
    mut engines: Vec<Box<dyn Engine>>,
    trials: u32,
    repeats: u32,
) -> Result<()> {
    if matches!(w, Workload::Cnn | Workload::Resnet) {
        return run_network(w, engines, trials, repeats);
    }
    let variants: Vec<&str> = match w {
        Workload::D => vec!["per-cell", "aggregated"],
        _ => vec!["auto"],
    };
    let name = match w {
        Workload::D => "D",
        _ => "S",
    };
    println!("workload {name}: K=N=256, 8x8 bits, 6-bit full-scale ADC, P=128, 5% cell mismatch, dense; {trials} trials x {repeats} repeats, median");
    let mut first: Vec<f64> = Vec::new();
    for (ei, engine) in engines.iter_mut().enumerate() {
        for set in kernel_sets(engine.as_mut()) {
            let who = use_kernels(engine.as_mut(), set);
            for (vi, v) in variants.iter().enumerate() {
                let plan = workload_plan(w, v, trials);
                // One untimed warm-up call (thread pools, GPU pipelines).
                engine.run(&plan, 0..trials.min(8), false)?;
                let rate = measure(engine.as_mut(), &plan, trials, repeats)?;
                let ratio = if ei == 0 && first.len() < variants.len() {
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
                    "{who:<9} {:<28} {name} {sampling:<16}{ratio}  median {rate:.2e} cell-MACs/s",
                    engine.device(),
                );
            }
        }
    }
    Ok(())
}

/// The experiment text of a network workload with `chips` chips.
pub fn network_toml(w: Workload, chips: u32) -> String {
    let (model, images) = match w {
        Workload::Resnet => ("fmnist_resnet", 200),
        _ => ("fmnist_cnn", 1000),
    };
    format!(
        "version = 1\ntrials = {chips}\nseed = 1\nmappings = [\"dense\"]\n\
         [network]\nmodel = \"models/{model}/model.toml\"\n\
         images = \"data/fashion-mnist/t10k-images-idx3-ubyte.gz\"\n\
         labels = \"data/fashion-mnist/t10k-labels-idx1-ubyte.gz\"\nlimit = {images}\n\
         [array]\nparallelism = 128\n[adc]\nbits = 6\n[noise]\ncell_sigma = 0.05\n"
    )
}

/// Chip-images per second of a network workload: every chip of `trials` on
/// every image, per engine: the CPU's chips in parallel; on a GPU the
/// network resident on the device (per kernel set, with its chips x images
/// per dispatch) and layer by layer through the host.
fn run_network(
    w: Workload,
    mut engines: Vec<Box<dyn Engine>>,
    chips: u32,
    repeats: u32,
) -> Result<()> {
    use crate::sweep::accuracy::{chip_accuracies, SimNetwork, Workload as Net};
    let exp = Experiment::parse(
        &network_toml(w, chips),
        Path::new("bench.toml"),
        Overrides::default(),
    )
    .expect("bench network workload is valid");
    let net = exp.network.as_ref().expect("a network workload");
    let work = Net::load(net).map_err(|e| {
        anyhow::anyhow!("{e} (zebra bench --workload cnn/resnet runs from the repository root)")
    })?;
    let point = &exp.points[0];
    let sim = SimNetwork::new(
        &work,
        &point.params,
        &exp.mappings[0],
        net.calibration_images,
    )?;
    let name = match w {
        Workload::Resnet => "resnet",
        _ => "cnn",
    };
    println!(
        "workload {name}: shipped model, {} test images per chip, 5% static mismatch, P=128, 6-bit ADC, dense; {chips} chips x {repeats} repeats, median",
        work.count
    );
    let per_run = (chips as usize * work.count) as f64;
    let median = |mut f: Box<dyn FnMut() -> crate::error::Result<()> + '_>| -> Result<f64> {
        let mut rates = Vec::new();
        for _ in 0..repeats {
            let start = Instant::now();
            f()?;
            rates.push(per_run / start.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        Ok(rates[rates.len() / 2])
    };
    let mut first: Option<f64> = None;
    let mut report = |who: &str, device: &str, how: &str, rate: f64| {
        let ratio = match first {
            None => {
                first = Some(rate);
                String::new()
            }
            Some(f) => format!("  ({:.2}x first engine)", rate / f),
        };
        println!("{who:<9} {device:<28} {name} {how:<16}{ratio}  median {rate:.3e} chip-images/s");
    };
    let none = || {};
    for engine in engines.iter_mut() {
        let device = engine.device();
        if engine.as_gpu().is_none() {
            let rate = median(Box::new(|| {
                chip_accuracies(&sim, &work, 0..chips, &mut [], &none).map(drop)
            }))?;
            report(engine.name(), &device, "parallel chips", rate);
            continue;
        }
        for set in kernel_sets(engine.as_mut()) {
            let who = use_kernels(engine.as_mut(), set);
            let gpu = engine.as_gpu().expect("a GPU engine");
            // Warm-up: pipelines, image upload.
            crate::sweep::device::chip_accuracies(&sim, &work, 0..1, gpu, &none)?;
            let rate = median(Box::new(|| {
                crate::sweep::device::chip_accuracies(&sim, &work, 0..chips, gpu, &none).map(drop)
            }))?;
            let (t, b) = crate::sweep::device::dispatch_size(&sim, &work, chips, gpu)?;
            report(&who, &device, &format!("resident {t}x{b}"), rate);
        }
        // Layer by layer with the adapter's default kernel set.
        let software = engine.as_gpu().expect("a GPU engine").adapter().software;
        let who = use_kernels(engine.as_mut(), Some(KernelSet::from_env(software)?));
        let gpu = engine.as_gpu().expect("a GPU engine");
        let rate = median(Box::new(|| {
            (0..chips).try_for_each(|t| sim.accuracy(&work, gpu, t).map(drop))
        }))?;
        report(&who, &device, "layer by layer", rate);
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
