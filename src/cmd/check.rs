//! `zebra check`: what an experiment will do, without simulating it.

use crate::error::Result;
use crate::experiment::plan::Plan;
use crate::experiment::workload::Layers;
use crate::experiment::Experiment;
use std::fmt::Write;

/// A report of the expanded sweep and the work it implies.
pub fn describe(exp: &Experiment) -> Result<String> {
    let mut out = String::new();
    let names: Vec<&str> = exp.mappings.iter().map(|m| m.name.as_str()).collect();
    let _ = writeln!(out, "{}: ok", exp.file.display());
    let _ = writeln!(
        out,
        "experiment `{}`: {} point(s) x {} mapping(s) [{}]",
        exp.name,
        exp.points.len(),
        names.len(),
        names.join(", ")
    );
    for axis in &exp.axes {
        let mut values: Vec<String> = Vec::new();
        for p in &exp.points {
            if let Some((_, v)) = p.assignments.iter().find(|(k, _)| k == axis) {
                if !values.contains(v) {
                    values.push(v.clone());
                }
            }
        }
        let _ = writeln!(out, "  sweep {axis}: {}", values.join(", "));
    }
    if let Some(net) = &exp.network {
        network_work(exp, net, &mut out)?;
        return Ok(out);
    }
    let (mut cell_macs, mut conversions, mut trials) = (0f64, 0f64, 0u64);
    let layers = Layers::build(&exp.points)?;
    layers.check_mappings(&exp.mappings, &exp.file)?;
    for p in &exp.points {
        for m in &exp.mappings {
            let plan = Plan::new(&p.params, layers.for_point(p.index), m);
            let t = p.params.trials as f64;
            trials += p.params.trials as u64;
            cell_macs += plan.counters.cell_macs as f64 * t;
            conversions += plan.counters.conversions as f64 * t;
        }
    }
    let _ = writeln!(
        out,
        "total: {trials} trials, {cell_macs:.3e} cell-MACs, {conversions:.3e} ADC conversions"
    );
    Ok(out)
}

/// An accuracy experiment: its network, images and the work per chip.
fn network_work(
    exp: &Experiment,
    net: &crate::experiment::NetworkParams,
    out: &mut String,
) -> Result<()> {
    let work = crate::sweep::accuracy::Workload::load(net)?;
    let _ = writeln!(
        out,
        "network {}: clean int8 accuracy {:.2}% on {} images ({})",
        net.model.display(),
        100.0 * work.clean_accuracy,
        work.count,
        net.images.display()
    );
    // Input vectors per image of each matrix layer: run one image and count.
    let mut shapes = Vec::new();
    work.net.forward(
        &work.data.pixels[..work.net.image_size()],
        1,
        |_, m, rows| {
            shapes.push((m.name.clone(), m.inputs, m.outputs, rows.len() / m.inputs));
            Ok(crate::network::matmul(rows, m))
        },
    )?;
    let mut macs = 0f64;
    for (name, k, n, vectors) in &shapes {
        let _ = writeln!(
            out,
            "  layer {name}: K = {k}, N = {n}, {vectors} input vector(s) per image"
        );
        macs += (k * n * vectors) as f64;
    }
    let (mut cell_macs, mut chips) = (0f64, 0u64);
    for p in &exp.points {
        for m in &exp.mappings {
            let planes = m.cells(8) as f64;
            cell_macs += macs * 8.0 * planes * work.count as f64 * p.params.trials as f64;
            chips += p.params.trials as u64;
        }
    }
    let _ = writeln!(
        out,
        "total: {chips} chips x {} images, {cell_macs:.3e} cell-MACs",
        work.count
    );
    Ok(())
}

/// `zebra check FILE`: validates the file and prints what it would do.
pub fn run_check(
    file: &std::path::Path,
    trials: Option<u32>,
    seed: Option<u64>,
    max_memory: Option<u64>,
) -> anyhow::Result<std::process::ExitCode> {
    let overrides = crate::experiment::Overrides {
        trials,
        seed,
        images: None,
    };
    // The memory estimate comes before `describe`, which builds every layer.
    let text = Experiment::load(file, overrides).and_then(|exp| {
        let memory = super::check_memory(&exp, max_memory, None)?;
        let mut text = describe(&exp)?;
        text.push_str(&memory);
        text.push('\n');
        Ok(text)
    });
    match text {
        Ok(text) => {
            print!("{text}");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(e) => super::bad_input(e),
    }
}
