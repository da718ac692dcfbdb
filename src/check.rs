//! `zebra check`: what an experiment will do, without simulating it.

use crate::error::Result;
use crate::experiment::Experiment;
use crate::plan::Plan;
use crate::workload::Layer;
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
    let mut layer_cache: Option<(crate::experiment::LayerParams, u64, Layer)> = None;
    for p in &exp.points {
        let layer = match &layer_cache {
            Some((lp, s, l)) if *lp == p.params.layer && *s == p.params.seed => l.clone(),
            _ => {
                let l = Layer::build(&p.params.layer, p.params.seed)?;
                layer_cache = Some((p.params.layer.clone(), p.params.seed, l.clone()));
                l
            }
        };
        for m in &exp.mappings {
            let plan = Plan::new(&p.params, &layer, m);
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
