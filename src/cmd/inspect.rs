//! `zebra inspect`: zero-level statistics of a weight set under every
//! encoding and cell format of the mappings, and what the experiment's
//! `[quantize]` does to it.

use crate::error::{Error, Result};
use crate::experiment::workload::Layer;
use crate::experiment::{Experiment, Overrides};
use crate::io::npy::read_weights;
use crate::model::quantize::{permute_rows, QuantStats, Quantizer};
use crate::model::{cell_planes, MappingSpec};
use std::fmt::Write;
use std::path::Path;

/// Inspects the layer of an experiment's first point.
pub fn inspect_experiment(file: &Path, parallelism: Option<usize>) -> Result<String> {
    let exp = Experiment::load(file, Overrides::default())?;
    let p = &exp.points[0].params;
    let q = &p.layer.quantize;
    if let Some(net) = &exp.network {
        // An accuracy experiment: every matrix layer of its network.
        let model = crate::network::Network::load(&net.model)?;
        let mut out = String::new();
        for m in model.matrices() {
            let _ = writeln!(
                out,
                "layer `{}` (K = {} inputs, N = {} outputs)",
                m.name, m.inputs, m.outputs
            );
            let (w, line) = quantize(m.kn(), m.inputs, m.outputs, 8, q);
            out.push_str(&line);
            out.push_str(&report(
                &w,
                m.inputs,
                m.outputs,
                8,
                parallelism.unwrap_or(p.parallelism),
                &exp.mappings,
            ));
            out.push('\n');
        }
        return Ok(out);
    }
    super::check_memory(&exp, None, None)?;
    let raw = crate::experiment::LayerParams {
        quantize: Quantizer::default(),
        ..p.layer.clone()
    };
    let layer = Layer::build(&raw, p.seed)?;
    let (w, line) = quantize(layer.w, layer.k, layer.n, layer.weight_bits, q);
    Ok(line
        + &report(
            &w,
            layer.k,
            layer.n,
            layer.weight_bits,
            parallelism.unwrap_or(p.parallelism),
            &exp.mappings,
        ))
}

/// `w` `[k][n]` under quantiser `q` (its rows in `q`'s order), and a line
/// on what it did: empty for no quantiser.
fn quantize(w: Vec<i32>, k: usize, n: usize, bits: u32, q: &Quantizer) -> (Vec<i32>, String) {
    if q.is_identity() {
        return (w, String::new());
    }
    let mut out = w.clone();
    q.apply(&mut out, k, n, bits);
    let s = QuantStats::of(&w, &out);
    let sqnr = if s.sqnr_db.is_finite() {
        format!("{:.2} dB", s.sqnr_db)
    } else {
        "inf (no weight changed)".into()
    };
    let line = format!(
        "quantize {}: SQNR {sqnr} against the unquantised weights, {:.2}% of weights changed, CSD terms per weight {:.3} -> {:.3}\n",
        q.label(),
        100.0 * s.changed as f64 / w.len().max(1) as f64,
        s.terms_before,
        s.terms_after
    );
    let out = match q.row_permutation(&out, k, n) {
        Some(perm) => permute_rows(&out, n, &perm),
        None => out,
    };
    (out, line)
}

/// Inspects a `.npy` weight matrix.
pub fn inspect_npy(path: &Path, weight_bits: u32, parallelism: usize) -> Result<String> {
    if !(2..=8).contains(&weight_bits) {
        return Err(Error::config(
            "--weight-bits",
            format!("must be 2..=8, got {weight_bits}"),
        ));
    }
    if parallelism == 0 {
        return Err(Error::config("--parallelism", "must be at least 1, got 0"));
    }
    let (k, n, w) = read_weights(path, weight_bits)?;
    Ok(report(
        &w,
        k,
        n,
        weight_bits,
        parallelism,
        &MappingSpec::presets(),
    ))
}

fn report(
    w: &[i32],
    k: usize,
    n: usize,
    weight_bits: u32,
    p: usize,
    mappings: &[MappingSpec],
) -> String {
    let mut out = String::new();
    let zero_w = w.iter().filter(|&&v| v == 0).count() as f64 / w.len() as f64;
    let mean_abs = w.iter().map(|v| v.abs() as f64).sum::<f64>() / w.len() as f64;
    let _ = writeln!(out, "weights: K={k} N={n}, {weight_bits} bits, mean |w| {mean_abs:.2}, zero weights {:.1}%, P={p}", 100.0 * zero_w);
    let mut seen = Vec::new();
    for m in mappings {
        let format = (m.encoding, m.bits_per_cell, m.slots);
        if seen.contains(&format) {
            continue;
        }
        seen.push(format);
        let _ = writeln!(
            out,
            "\nencoding {}{} (as in `{}`): plane, scale, non-zero level density, all-zero (chunk, column) groups",
            m.encoding.label(),
            cell_format(m),
            m.name
        );
        let planes = match cell_planes(m, weight_bits, w, k, n) {
            Ok(planes) => planes,
            Err(e) => {
                let _ = writeln!(out, "  refused: {e}");
                continue;
            }
        };
        let chunks = k.div_ceil(p);
        let (mut nz_total, mut skip_total) = (0usize, 0usize);
        for j in 0..planes.count() {
            let nz = (0..k * n)
                .filter(|&i| planes.digits[j * k * n + i] != 0)
                .count();
            let mut skip = 0;
            for c in 0..chunks {
                for col in 0..n {
                    if (c * p..((c + 1) * p).min(k)).all(|r| planes.digit(j, r, col) == 0) {
                        skip += 1;
                    }
                }
            }
            nz_total += nz;
            skip_total += skip;
            let _ = writeln!(
                out,
                "  plane {j}  scale {:>5}  density {:>6.2}%  skippable {:>6.2}%",
                planes.scales[j],
                100.0 * nz as f64 / (k * n) as f64,
                100.0 * skip as f64 / (chunks * n) as f64
            );
        }
        let _ = writeln!(
            out,
            "  all planes: non-zero levels {:.2}% ({:.2} per weight), skippable groups {:.2}%",
            100.0 * nz_total as f64 / (planes.count() * k * n) as f64,
            nz_total as f64 / (k * n) as f64,
            100.0 * skip_total as f64 / (planes.count() * chunks * n) as f64
        );
    }
    out
}

/// How a mapping's cells differ from one digit each, as its keys:
/// `, bits_per_cell = 2` or `, slots = 3`; empty for one digit per cell.
fn cell_format(m: &MappingSpec) -> String {
    match (m.slots, m.bits_per_cell) {
        (Some(k), _) => format!(", slots = {k}"),
        (None, 1) => String::new(),
        (None, c) => format!(", bits_per_cell = {c}"),
    }
}

/// `zebra inspect`: an experiment file or a weights `.npy`, not both.
pub fn run_inspect(
    file: Option<std::path::PathBuf>,
    weights: Option<std::path::PathBuf>,
    weight_bits: u32,
    parallelism: Option<usize>,
) -> anyhow::Result<std::process::ExitCode> {
    let res = match (file, weights) {
        (Some(f), None) => inspect_experiment(&f, parallelism),
        (None, Some(w)) => inspect_npy(&w, weight_bits, parallelism.unwrap_or(128)),
        _ => {
            eprintln!("error: give an experiment file or --weights W.npy");
            return Ok(std::process::ExitCode::from(super::EXIT_USAGE));
        }
    };
    match res {
        Ok(text) => {
            print!("{text}");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(e) => super::bad_input(e),
    }
}
