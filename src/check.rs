//! `zebra check`: what an experiment will do, without simulating it.

use crate::error::Result;
use crate::experiment::Experiment;
use crate::plan::Plan;
use crate::workload::Layers;
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
    let (mut cell_macs, mut conversions, mut trials) = (0f64, 0f64, 0u64);
    let layers = Layers::build(&exp.points)?;
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
