//! Every shipped experiment parses, runs at least 1000 trials per point (10
//! simulated chips of at least 500 test images for whole-network accuracy),
//! and has committed results with the columns the plots need.

use std::path::Path;
use zebra_cim::experiment::{Experiment, Overrides};
use zebra_cim::io::csv::{columns, read_csv};
use zebra_cim::sweep::accuracy::{AccuracyRow, TrialRow};
use zebra_cim::sweep::output::{HistRow, ResultRow};

#[test]
fn shipped_experiments_parse_and_have_committed_results() {
    let mut seen = 0;
    for entry in std::fs::read_dir("experiments").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let exp = Experiment::load(&path, Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
        let network = exp.network.is_some();
        let least = if network { 10 } else { 1000 };
        assert!(
            exp.points.iter().all(|p| p.params.trials >= least),
            "{}: fewer than {least} trials",
            path.display()
        );
        if let Some(net) = &exp.network {
            assert!(
                net.limit.is_none_or(|l| l >= 500),
                "{}: fewer than 500 images",
                path.display()
            );
        }
        let csv = Path::new("results").join(format!("{}.csv", exp.name));
        let (columns, companion, companion_columns) = if network {
            (columns::<AccuracyRow>(), "trials", columns::<TrialRow>())
        } else {
            (columns::<ResultRow>(), "hist", columns::<HistRow>())
        };
        let (header, rows) = read_csv(&csv)
            .unwrap()
            .unwrap_or_else(|| panic!("{} is not committed", csv.display()));
        assert_eq!(
            header,
            columns,
            "{}: columns differ from this version's",
            csv.display()
        );
        assert_eq!(
            rows.len(),
            exp.points.len() * exp.mappings.len(),
            "{}: one row per (point, mapping)",
            csv.display()
        );
        let hist = Path::new("results").join(format!("{}_{companion}.csv", exp.name));
        let (hheader, hrows) = read_csv(&hist)
            .unwrap()
            .unwrap_or_else(|| panic!("{} is not committed", hist.display()));
        assert_eq!(hheader, companion_columns);
        assert!(!hrows.is_empty());
        // Every committed row carries the resume key this version computes
        // for it, so `zebra run` resumes the shipped results instead of
        // refusing or recomputing them.
        let out_dir = Path::new("results").to_path_buf();
        let finished = if network {
            let opts = zebra_cim::sweep::accuracy::Options {
                out_dir,
                fresh: false,
                progress: false,
            };
            zebra_cim::sweep::accuracy::prepare(&exp, &opts).map(|p| p.finished())
        } else {
            let opts = zebra_cim::sweep::run::RunOptions {
                out_dir,
                fresh: false,
                progress: false,
            };
            zebra_cim::sweep::run::prepare(&exp, &opts).map(|p| p.finished())
        };
        let finished = finished.unwrap_or_else(|e| panic!("{}: {e}", exp.name));
        assert_eq!(
            finished,
            rows.len(),
            "{}: rows this version would recompute",
            exp.name
        );
        // Figures drawn by experiments/reproduce.sh: SVG and PNG of each.
        let figures: Vec<String> = std::fs::read_dir("results")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.starts_with(&format!("{}_", exp.name)) && f.ends_with(".svg"))
            .collect();
        assert!(figures.len() >= 2, "{}: no figures committed", exp.name);
        for svg in figures {
            let png = Path::new("results").join(svg.replace(".svg", ".png"));
            assert!(png.exists(), "{} has no PNG beside its SVG", svg);
        }
        seen += 1;
    }
    assert!(seen >= 9, "found {seen} experiment files");
}
