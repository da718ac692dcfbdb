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
) -> Result<ExitCode> {
    let opts = PlotOptions { metrics, x };
    for file in csv {
        match plot_results(file, out, &opts) {
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
