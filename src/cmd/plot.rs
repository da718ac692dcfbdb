//! `zebra plot`: SVG and PNG figures of result files.

use super::bad_input;
use crate::io::plot::{plot_results, PlotOptions};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Draws `metrics` against `x` for each result file.
pub fn run_plot(
    csv: &[PathBuf],
    out: Option<&Path>,
    metrics: Vec<String>,
    x: Option<String>,
    filter: Vec<String>,
) -> Result<ExitCode> {
    let mut pairs = Vec::new();
    for f in filter {
        match f.split_once('=') {
            Some((k, v)) if !k.is_empty() => pairs.push((k.to_string(), v.to_string())),
            _ => {
                return bad_input(crate::error::Error::config(
                    "--where",
                    format!("`{f}`: give COLUMN=VALUE, e.g. --where energy.model=walden"),
                ))
            }
        }
    }
    let opts = PlotOptions {
        metrics,
        x,
        filter: pairs,
    };
    let mut drawn = 0;
    for file in csv {
        match plot_results(file, out, &opts) {
            Ok(plotted) => {
                for w in &plotted.warnings {
                    eprintln!("warning: {w}");
                }
                for f in &plotted.written {
                    println!("wrote {}", f.display());
                }
                drawn += plotted.written.len();
            }
            Err(e) => return bad_input(e),
        }
    }
    if drawn == 0 {
        eprintln!("error: no figure could be drawn (see the warnings above); check the result files and --metric");
        return Ok(ExitCode::from(super::EXIT_USAGE));
    }
    Ok(ExitCode::SUCCESS)
}
