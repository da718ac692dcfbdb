//! The real binary, as a user sees it: run, resume, check, inspect, bad input.

use assert_cmd::Command;
use predicates::prelude::*;
use std::fs;
use std::path::{Path, PathBuf};
use zebra_cim::io::csv::columns;
use zebra_cim::sweep::output::ResultRow;

/// Runs `args` twice: the first run computes `rows` rows, the second
/// resumes them all.
fn computes_then_resumes(args: &[&str], rows: usize) {
    for want in [
        format!("{rows} computed, 0 resumed"),
        format!("0 computed, {rows} resumed"),
    ] {
        zebra()
            .args(args)
            .assert()
            .success()
            .stdout(predicate::str::contains(want));
    }
}

fn zebra() -> Command {
    Command::cargo_bin("zebra").unwrap()
}

/// Runs the tiny experiment on the CPU into `dir/res`; returns that folder.
fn run_tiny(dir: &Path) -> PathBuf {
    let exp = tiny_in(dir);
    let out = dir.join("res");
    zebra()
        .args([
            "run",
            exp.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--engine",
            "cpu",
        ])
        .assert()
        .success();
    out
}

fn tiny_in(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.toml");
    fs::copy("tests/configs/good/tiny.toml", &p).unwrap();
    p
}

#[test]
fn run_writes_tidy_results_and_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let exp = tiny_in(dir.path());
    let out = dir.path().join("res");
    zebra()
        .args([
            "run",
            exp.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--engine",
            "cpu",
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("RMSE").and(predicate::str::contains("4 computed, 0 resumed")),
        );
    let csv = fs::read_to_string(out.join("tiny.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header, columns::<ResultRow>());
    assert_eq!(lines.count(), 4, "2 points x 2 mappings");
    let hist = fs::read_to_string(out.join("tiny_hist.csv")).unwrap();
    assert!(hist.starts_with("experiment,point,mapping,bin_lo,bin_hi,count,point_key"));
    assert!(hist.lines().count() > 4);
}

#[test]
fn rerun_resumes_finished_points_and_recomputes_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let exp = tiny_in(dir.path());
    let out = dir.path().join("res");
    let args = [
        "run",
        exp.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--engine",
        "cpu",
    ];
    zebra().args(args).assert().success();
    let first = fs::read_to_string(out.join("tiny.csv")).unwrap();
    zebra()
        .args(args)
        .assert()
        .success()
        .stdout(predicate::str::contains("0 computed, 4 resumed"));
    assert_eq!(fs::read_to_string(out.join("tiny.csv")).unwrap(), first);

    // An interrupted run: the last point's rows are missing.
    let kept: Vec<&str> = first.lines().take(3).collect();
    fs::write(out.join("tiny.csv"), kept.join("\n") + "\n").unwrap();
    zebra()
        .args(args)
        .assert()
        .success()
        .stdout(predicate::str::contains("2 computed, 2 resumed"));
    let redone = fs::read_to_string(out.join("tiny.csv")).unwrap();
    // Recomputed rows equal the originals except for timing columns.
    let strip = |s: &str| -> Vec<String> {
        let cols = columns::<ResultRow>();
        let drop: Vec<usize> = ["elapsed_s", "cell_macs_per_s"]
            .iter()
            .map(|c| cols.iter().position(|x| x == c).unwrap())
            .collect();
        s.lines()
            .map(|l| {
                l.split(',')
                    .enumerate()
                    .filter(|(i, _)| !drop.contains(i))
                    .map(|(_, v)| v)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    };
    assert_eq!(strip(&redone), strip(&first));
}

/// Signed inputs from an experiment file: a sweep over how the array
/// applies them, and a `.npy` file of two's complement values with the
/// extreme -128; without noise and with an ideal ADC every row is exact,
/// and a second run resumes every row.
#[test]
fn signed_input_experiments_run_exactly_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = fs::canonicalize("tests/data").unwrap();
    let exp = dir.path().join("signed.toml");
    fs::write(
        &exp,
        "version = 1\ntrials = 2\nmappings = [\"dense\", \"zebra\", \"csd\"]\n\
         [layer]\nk = 40\nn = 6\ninputs = 3\ninput_sign = \"signed\"\n\
         [array]\nparallelism = 16\n[adc]\nbits = \"ideal\"\n\
         [sweep]\n\"array.signed_inputs\" = [\"twos-complement\", \"sign-magnitude\"]\n",
    )
    .unwrap();
    let from_file = dir.path().join("signed_file.toml");
    fs::write(
        &from_file,
        format!(
            "version = 1\ntrials = 2\n[layer]\nweights_file = \"{}\"\ninputs_file = \"{}\"\n\
             input_sign = \"signed\"\n[adc]\nbits = \"ideal\"\n",
            data.join("w_8x4.npy").display(),
            data.join("x_2x8_signed.npy").display()
        ),
    )
    .unwrap();
    let out = dir.path().join("res");
    for (path, name, rows) in [(&exp, "signed", 6), (&from_file, "signed_file", 2)] {
        let args = [
            "run",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--engine",
            "cpu",
        ];
        computes_then_resumes(&args, rows);
        let (header, body) = zebra_cim::io::csv::read_csv(&out.join(format!("{name}.csv")))
            .unwrap()
            .unwrap();
        let col = |c: &str| header.iter().position(|h| h == c).unwrap();
        assert_eq!(body.len(), rows);
        for row in &body {
            assert_eq!(
                row[col("rmse")].parse::<f64>().unwrap(),
                0.0,
                "{name}: {row:?}"
            );
            assert!(row[col("exact_std")].parse::<f64>().unwrap() > 0.0);
        }
        if name == "signed" {
            assert!(body.iter().all(|r| r[col("inputs_source")] == "uniform"));
            // Sign-magnitude 8-bit inputs take 14 input planes: more cell-MACs.
            let macs: Vec<u64> = body
                .iter()
                .map(|r| r[col("cell_macs")].parse().unwrap())
                .collect();
            assert_eq!(macs[3] * 8, macs[0] * 14, "{macs:?}");
        }
    }
}

/// Multi-level cells and term slots from an experiment file: exact with an
/// ideal ADC, one row each, resumed on a second run; the planes column
/// counts planes of cells (8-bit sign-magnitude, 2 digits per cell: 4;
/// four term slots: 4).
#[test]
fn multi_level_mappings_run_exactly_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("levels.toml");
    fs::write(
        &exp,
        "version = 1\ntrials = 2\nmappings = [\"sm2\", \"slots4\", \"zebra\"]\n\
         [layer]\nk = 40\nn = 6\ninputs = 3\n[array]\nparallelism = 16\n[adc]\nbits = \"ideal\"\n\
         [[custom_mapping]]\nname = \"sm2\"\nencoding = \"sign-magnitude\"\nbits_per_cell = 2\n\
         skip_zero_planes = true\nskip_zero_inputs = true\nadc_range = \"adaptive\"\n\
         [[custom_mapping]]\nname = \"slots4\"\nencoding = \"term-slots\"\nslots = 4\n\
         skip_zero_planes = true\nskip_zero_inputs = true\nadc_range = \"full\"\n",
    )
    .unwrap();
    let out = dir.path().join("res");
    let args = [
        "run",
        exp.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--engine",
        "cpu",
    ];
    computes_then_resumes(&args, 3);
    let (header, body) = zebra_cim::io::csv::read_csv(&out.join("levels.csv"))
        .unwrap()
        .unwrap();
    let col = |c: &str| header.iter().position(|h| h == c).unwrap();
    let rows: Vec<(&str, &str, &str, &str)> = body
        .iter()
        .map(|r| {
            (
                r[col("mapping")].as_str(),
                r[col("encoding")].as_str(),
                r[col("planes")].as_str(),
                r[col("rmse")].as_str(),
            )
        })
        .collect();
    assert_eq!(
        (rows[0].0, rows[0].1, rows[0].2),
        ("sm2", "sign-magnitude", "4")
    );
    assert_eq!(
        (rows[1].0, rows[1].1, rows[1].2),
        ("slots4", "term-slots", "4")
    );
    assert_eq!(rows[2].2, "7");
    for r in &rows {
        assert_eq!(r.3.parse::<f64>().unwrap(), 0.0, "{r:?}");
    }
    zebra()
        .args(["inspect", exp.to_str().unwrap()])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("sign-magnitude, bits_per_cell = 2")
                .and(predicate::str::contains("term-slots, slots = 4"))
                .and(predicate::str::contains("plane 3")),
        );
}

#[test]
fn changed_parameters_are_not_silently_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let exp = tiny_in(dir.path());
    let out = dir.path().join("res");
    zebra()
        .args(["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .success();
    let before = fs::read_to_string(out.join("tiny.csv")).unwrap();
    zebra()
        .args([
            "run",
            exp.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--trials",
            "41",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("pass --fresh"));
    assert_eq!(fs::read_to_string(out.join("tiny.csv")).unwrap(), before);
    zebra()
        .args([
            "run",
            exp.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--trials",
            "41",
            "--fresh",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("4 computed"));
}

#[test]
fn check_reports_the_sweep_and_work() {
    zebra()
        .args(["check", "tests/configs/good/tiny.toml"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("2 point(s) x 2 mapping(s)")
                .and(predicate::str::contains(
                    "sweep noise.cell_sigma: 0.02, 0.1",
                ))
                .and(predicate::str::contains("cell-MACs")),
        );
}

#[test]
fn inspect_shows_plane_densities() {
    zebra()
        .args(["inspect", "tests/configs/good/tiny.toml"])
        .assert()
        .success()
        .stdout(predicate::str::contains("plane 7").and(predicate::str::contains("skippable")));
    zebra()
        .args([
            "inspect",
            "--weights",
            "tests/data/w_8x4.npy",
            "--parallelism",
            "4",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("K=8 N=4"));
}

/// Accuracy points that differ only in `[energy]` share their chips (the
/// same accuracies) and are charged by each model.
#[test]
fn accuracy_points_differing_in_energy_share_their_chips() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::env::current_dir().unwrap();
    let exp = dir.path().join("en.toml");
    fs::write(
        &exp,
        format!(
            "version = 1\ntrials = 2\nmappings = [\"dense\", \"zebra\"]\n\
             [network]\nmodel = \"{0}/models/fmnist_cnn/model.toml\"\n\
             images = \"{0}/data/fashion-mnist/t10k-images-idx3-ubyte.gz\"\n\
             labels = \"{0}/data/fashion-mnist/t10k-labels-idx1-ubyte.gz\"\nlimit = 30\n\
             [noise]\ncell_sigma = 0.1\n[sweep]\n\"energy.model\" = [\"walden\", \"neurosim-sar\"]\n",
            root.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("res");
    zebra()
        .args(["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .success();
    let (header, rows) = zebra_cim::io::csv::read_csv(&out.join("en.csv"))
        .unwrap()
        .unwrap();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows.len(), 4);
    for m in 0..2 {
        let (a, b) = (&rows[m], &rows[2 + m]);
        assert_eq!(a[col("mapping")], b[col("mapping")]);
        for same in [
            "mean_accuracy",
            "min_accuracy",
            "conversions_per_mac",
            "reads_per_mac",
        ] {
            assert_eq!(a[col(same)], b[col(same)], "{same}");
        }
        assert_eq!(
            (
                a[col("energy_model")].as_str(),
                b[col("energy_model")].as_str()
            ),
            ("walden", "neurosim-sar")
        );
        assert_ne!(a[col("energy_fj_per_mac")], b[col("energy_fj_per_mac")]);
    }
    let trials = fs::read_to_string(out.join("en_trials.csv")).unwrap();
    assert_eq!(trials.lines().count(), 1 + 4 * 2);
    // Energy against accuracy, one line per mapping.
    let csv = out.join("en.csv");
    zebra()
        .args(["plot", csv.to_str().unwrap(), "--x", "energy_fj_per_mac"])
        .args([
            "--metric",
            "mean_accuracy",
            "--where",
            "energy.model=walden",
        ])
        .assert()
        .success();
    assert!(out.join("en_walden_mean_accuracy.png").exists());
}

/// `[quantize]` on a layer: a swept term budget and the magnitude row order
/// are exact without noise on an ideal ADC, each row says its quantiser,
/// and `zebra inspect` reports the quantiser's SQNR and term counts.
#[test]
fn quantised_layers_are_exact_without_noise_and_inspected() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("q.toml");
    fs::write(
        &exp,
        "version = 1\ntrials = 2\nmappings = [\"dense\", \"zebra\", \"csd\"]\n\
         [layer]\nk = 70\nn = 6\ninputs = 3\n[array]\nparallelism = 16\n[adc]\nbits = \"ideal\"\n\
         [quantize]\nrow_order = \"magnitude\"\ngroup = 8\ngroup_terms = 10\n\
         [sweep]\n\"quantize.terms\" = [0, 2]\n",
    )
    .unwrap();
    let out = dir.path().join("res");
    zebra()
        .args(["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .success();
    let (header, rows) = zebra_cim::io::csv::read_csv(&out.join("q.csv"))
        .unwrap()
        .unwrap();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows.len(), 6);
    for r in &rows {
        assert_eq!(r[col("rmse")].parse::<f64>().unwrap(), 0.0, "{r:?}");
    }
    let labels: Vec<&str> = rows.iter().map(|r| r[col("quantize")].as_str()).collect();
    assert_eq!(labels[0], "group=8:10;rows=magnitude");
    assert_eq!(labels[5], "terms=2;group=8:10;rows=magnitude");
    zebra()
        .args(["inspect", exp.to_str().unwrap()])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("quantize group=8:10;rows=magnitude: SQNR")
                .and(predicate::str::contains("CSD terms per weight"))
                .and(predicate::str::contains("skippable")),
        );
}

/// Every file in tests/configs/bad starts with `# error: TEXT`; `zebra check`
/// and `zebra run` must exit 2 with one line containing TEXT, and `run` must
/// leave existing results alone.
#[test]
fn every_bad_fixture_gives_its_error() {
    let mut seen = 0;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    fs::create_dir_all(&out).unwrap();
    for entry in fs::read_dir("tests/configs/bad").unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        let want = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# error: ")
            .expect("fixture names its error")
            .to_string();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let sentinel = out.join(format!("{stem}.csv"));
        fs::write(&sentinel, "keep me\n").unwrap();
        for args in [
            vec!["check", path.to_str().unwrap()],
            vec![
                "run",
                path.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        ] {
            let cmd = args[0];
            let assert = zebra().args(&args).assert().code(2);
            let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
            assert!(
                err.contains(&want),
                "{}: `zebra {cmd}` said {err:?}, expected {want:?}",
                path.display()
            );
            assert_eq!(
                err.trim_end().lines().count(),
                1,
                "{}: error is not one line: {err:?}",
                path.display()
            );
        }
        assert_eq!(fs::read_to_string(&sentinel).unwrap(), "keep me\n");
        seen += 1;
    }
    assert!(seen >= 25, "found only {seen} bad fixtures");
}

#[test]
fn unknown_adapter_lists_the_adapters_instead_of_panicking() {
    let assert = zebra()
        .args([
            "run",
            "tests/configs/good/tiny.toml",
            "--engine",
            "gpu",
            "--adapter",
            "no-such-gpu-xyz",
            "--out",
        ])
        .arg(tempfile::tempdir().unwrap().path())
        .assert()
        .failure();
    let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        err.contains("no adapter matches `no-such-gpu-xyz`; adapters found:"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    zebra().arg("devices").assert().success();
}

#[test]
fn auto_engine_names_what_ran_and_warns_once_on_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let assert = zebra()
        .args([
            "run",
            "tests/configs/good/tiny.toml",
            "--engine",
            "auto",
            "--out",
        ])
        .arg(dir.path())
        .assert()
        .success();
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    if out.contains("engine cpu") {
        // No hardware GPU here: exactly one warning line says so.
        assert_eq!(
            err.lines().filter(|l| l.starts_with("warning:")).count(),
            1,
            "{err}"
        );
    }
    // The result file names the engine and device the run reported.
    let (header, rows) = zebra_cim::io::csv::read_csv(&dir.path().join("tiny.csv"))
        .unwrap()
        .unwrap();
    let column = |name: &str| {
        let at = header.iter().position(|c| c == name).unwrap();
        rows[0][at].clone()
    };
    // The summary line ends "; engine DEVICE".
    let device = out
        .lines()
        .find_map(|l| l.split_once("; engine ").map(|(_, d)| d.to_string()))
        .unwrap_or_else(|| panic!("no engine named in {out}"));
    let ran = if device.starts_with("cpu") {
        "cpu"
    } else {
        "gpu"
    };
    assert_eq!(column("engine"), ran, "{out}");
    assert_eq!(column("device"), device, "{out}");
}

#[test]
fn plot_draws_svg_and_png_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_tiny(dir.path());
    zebra()
        .args(["plot", out.join("tiny.csv").to_str().unwrap()])
        .assert()
        .success();
    for fig in ["tiny_rmse", "tiny_snr_db", "tiny_hist"] {
        let svg = fs::read_to_string(out.join(format!("{fig}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("dense") && svg.contains("zebra"),
            "{fig}.svg lacks its legend"
        );
        let png = fs::read(out.join(format!("{fig}.png"))).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{fig}.png is not a drawn PNG"
        );
    }
    zebra()
        .args(["plot", "tests/configs/good/tiny.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("zebra run"));
}

/// An accuracy experiment end to end: `zebra accuracy` writes both CSVs, a
/// rerun resumes every row, and `zebra plot` draws the accuracy figures.
#[test]
fn accuracy_experiment_runs_resumes_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::env::current_dir().unwrap();
    let exp = dir.path().join("acc.toml");
    fs::write(
        &exp,
        format!(
            "version = 1\ntrials = 3\nseed = 5\nmappings = [\"dense\", \"zebra\"]\n\
             [network]\nmodel = \"{0}/models/fmnist_cnn/model.toml\"\n\
             images = \"{0}/data/fashion-mnist/t10k-images-idx3-ubyte.gz\"\n\
             labels = \"{0}/data/fashion-mnist/t10k-labels-idx1-ubyte.gz\"\nlimit = 40\n\
             [sweep]\n\"noise.cell_sigma\" = [0.0, 0.1]\n",
            root.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("res");
    let args = [
        "accuracy",
        exp.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--engine",
        "cpu",
    ];
    zebra().args(args).assert().success().stdout(
        predicate::str::contains("clean int8 accuracy")
            .and(predicate::str::contains("4 computed, 0 resumed")),
    );
    let csv = fs::read_to_string(out.join("acc.csv")).unwrap();
    assert_eq!(
        csv.lines().next().unwrap(),
        columns::<zebra_cim::sweep::accuracy::AccuracyRow>().join(",")
    );
    assert_eq!(csv.lines().count(), 5);
    let trials = fs::read_to_string(out.join("acc_trials.csv")).unwrap();
    assert_eq!(trials.lines().count(), 1 + 4 * 3);
    zebra()
        .args(args)
        .assert()
        .success()
        .stdout(predicate::str::contains("0 computed, 4 resumed"));
    assert_eq!(fs::read_to_string(out.join("acc.csv")).unwrap(), csv);
    // A file written before the cost columns (and the quantize column)
    // existed resumes: its rows get their costs computed, the same as a
    // fresh run's.
    let cost = columns::<zebra_cim::sweep::output::NetworkCostColumns>();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| !cost.iter().any(|c| c == header[i]) && header[i] != "quantize")
        .collect();
    assert_eq!(keep.len(), header.len() - cost.len() - 1);
    let old: String = csv
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            keep.iter().map(|&i| f[i]).collect::<Vec<_>>().join(",") + "\n"
        })
        .collect();
    fs::write(out.join("acc.csv"), old).unwrap();
    zebra()
        .args(args)
        .assert()
        .success()
        .stdout(predicate::str::contains("0 computed, 4 resumed"));
    assert_eq!(fs::read_to_string(out.join("acc.csv")).unwrap(), csv);
    zebra()
        .args(["plot", out.join("acc.csv").to_str().unwrap()])
        .assert()
        .success();
    for f in [
        "acc_mean_accuracy.svg",
        "acc_mean_accuracy.png",
        "acc_min_accuracy.png",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    // A model that is not there is a one-line bad-input error.
    let broken = fs::read_to_string(&exp)
        .unwrap()
        .replace("model.toml", "missing.toml");
    fs::write(&exp, broken).unwrap();
    zebra()
        .args(args)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("missing.toml"));
}

#[test]
fn a_second_run_into_the_same_output_stops_at_once_and_keeps_the_first_ones_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_tiny(dir.path());
    let before = fs::read_to_string(out.join("tiny.csv")).unwrap();
    // Another run (this test process) is writing tiny.* in `out`.
    let held = zebra_cim::io::csv::OutputLock::acquire(&out, "tiny").unwrap();
    let exp = dir.path().join("tiny.toml");
    zebra()
        .args(["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--engine", "cpu", "--fresh"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("another zebra run")
                .and(predicate::str::contains(std::process::id().to_string()))
                .and(predicate::str::contains("--out DIR")),
        );
    assert_eq!(fs::read_to_string(out.join("tiny.csv")).unwrap(), before);
    drop(held);
    // Once it is done, the run goes ahead and leaves no lock or temporary file.
    zebra()
        .args(["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--engine", "cpu"])
        .assert()
        .success()
        .stdout(predicate::str::contains("0 computed, 4 resumed"));
    let mut left: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["tiny.csv", "tiny_hist.csv"]);
}

#[test]
fn rows_with_resume_keys_this_version_does_not_produce_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_tiny(dir.path());
    let csv = out.join("tiny.csv");
    let text = fs::read_to_string(&csv).unwrap();
    let key_col = columns::<ResultRow>()
        .iter()
        .position(|c| c == "point_key")
        .unwrap();
    let first_key = text
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(key_col)
        .unwrap()
        .to_string();
    fs::write(&csv, text.replace(&first_key, "0123456789abcdef")).unwrap();
    let exp = dir.path().join("tiny.toml");
    zebra()
        .args(["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--engine", "cpu"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("holds 1 row(s) whose resume keys"));
}

/// Runs shard `index` of `count` of the tiny experiment the way a Slurm array
/// task does (`--shard slurm`, its index and count from the environment).
fn run_shard(dir: &Path, index: u32, count: u32) -> PathBuf {
    let out = dir.join(format!("shard-{index}"));
    zebra()
        .args(["run", dir.join("tiny.toml").to_str().unwrap()])
        .args([
            "--engine",
            "cpu",
            "--shard",
            "slurm",
            "--out",
            out.to_str().unwrap(),
        ])
        .env("SLURM_ARRAY_TASK_ID", (index + 10).to_string())
        .env("SLURM_ARRAY_TASK_MIN", "10")
        .env("SLURM_ARRAY_TASK_COUNT", count.to_string())
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("shard {index}/{count}")));
    out
}

/// Result rows without the timing columns, and the histogram file.
fn comparable(dir: &Path, name: &str) -> (Vec<Vec<String>>, String) {
    let (header, rows) = zebra_cim::io::csv::read_csv(&dir.join(format!("{name}.csv")))
        .unwrap()
        .unwrap();
    let timing: Vec<usize> = ["elapsed_s", "cell_macs_per_s"]
        .iter()
        .map(|c| header.iter().position(|h| h == c).unwrap())
        .collect();
    let rows = rows
        .into_iter()
        .map(|r| {
            r.into_iter()
                .enumerate()
                .filter(|(i, _)| !timing.contains(i))
                .map(|(_, v)| v)
                .collect()
        })
        .collect();
    let hist = fs::read_to_string(dir.join(format!("{name}_hist.csv"))).unwrap();
    (rows, hist)
}

#[test]
fn sharded_runs_merge_into_the_results_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let single = run_tiny(dir.path());
    let shards: Vec<PathBuf> = (0..3).map(|i| run_shard(dir.path(), i, 3)).collect();
    let merged = dir.path().join("merged");
    let merge = |dirs: &[PathBuf]| {
        let mut cmd = zebra();
        cmd.args(["merge", merged.to_str().unwrap()]);
        cmd.args(dirs.iter().map(|d| d.to_str().unwrap()));
        cmd.assert()
    };
    // A missing shard is named, and nothing is written.
    merge(&shards[..2])
        .code(2)
        .stderr(predicate::str::contains("lack shard(s) 2 of 3"));
    assert!(!merged.join("tiny.csv").exists());
    merge(&shards).success().stdout(predicate::str::contains(
        "4 (point, mapping) rows merged from 3 shards",
    ));
    assert_eq!(comparable(&merged, "tiny"), comparable(&single, "tiny"));
    // Shards of another seed do not mix with these.
    let other = dir.path().join("other");
    zebra()
        .args(["run", dir.path().join("tiny.toml").to_str().unwrap()])
        .args([
            "--engine",
            "cpu",
            "--seed",
            "5",
            "--shard",
            "1/3",
            "--out",
            other.to_str().unwrap(),
        ])
        .assert()
        .success();
    merge(&[shards[0].clone(), other, shards[2].clone()])
        .code(2)
        .stderr(predicate::str::contains("another run"));
}

#[test]
fn an_interrupted_shard_is_refused_by_merge_and_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let single = run_tiny(dir.path());
    let s0 = run_shard(dir.path(), 0, 2);
    let s1 = run_shard(dir.path(), 1, 2);
    // Make shard 1 look killed after its first unit.
    let file = s1.join("tiny.shard-1-of-2.toml");
    let mut partial: toml::Table = fs::read_to_string(&file).unwrap().parse().unwrap();
    let units = partial["units"].as_array().unwrap().len();
    assert!(units >= 2, "shard 1 has {units} units");
    partial.insert("complete".into(), false.into());
    partial["units"].as_array_mut().unwrap().truncate(1);
    fs::write(&file, toml::to_string(&partial).unwrap()).unwrap();
    let merged = dir.path().join("merged");
    let merge = || {
        zebra()
            .args([
                "merge",
                merged.to_str().unwrap(),
                s0.to_str().unwrap(),
                s1.to_str().unwrap(),
            ])
            .assert()
    };
    merge()
        .code(2)
        .stderr(predicate::str::contains("shard 1 of 2 is incomplete"));
    // Rerun: the finished unit is kept, the rest computed.
    zebra()
        .args(["run", dir.path().join("tiny.toml").to_str().unwrap()])
        .args([
            "--engine",
            "cpu",
            "--shard",
            "1/2",
            "--out",
            s1.to_str().unwrap(),
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "{} computed, 1 resumed",
            units - 1
        )));
    merge().success();
    assert_eq!(comparable(&merged, "tiny"), comparable(&single, "tiny"));
}

/// Runs `zebra ARGS`, expects exit 2 and one stderr line containing `want`.
fn refuses(args: &[&str], want: &str) -> String {
    let assert = zebra().args(args).assert().code(2);
    let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        err.contains(want),
        "`zebra {}` said {err:?}",
        args.join(" ")
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn inspect_refuses_empty_and_oversized_weights() {
    for (file, want) in [
        ("w_0x0.npy", "shape [0, 0] has no elements"),
        ("w_0x4.npy", "shape [0, 4] has no elements"),
        ("w_4x0.npy", "shape [4, 0] has no elements"),
        (
            "w_huge_header.npy",
            "the header declares shape [4294967296, 4294967296]",
        ),
        ("w_fake_header.npy", "not a readable .npy file ("),
    ] {
        let path = format!("tests/data/{file}");
        refuses(&["inspect", "--weights", &path], want);
    }
    refuses(
        &["inspect", "--weights", "/dev/zero"],
        "is not a regular file (a device, pipe or socket); give a file",
    );
    // The experiment file itself, too: a read of /dev/zero never ends.
    refuses(
        &["check", "/dev/zero"],
        "/dev/zero: is not a regular file (a device, pipe or socket); give a file",
    );
}

/// A 10^5 x 10^5 layer and a 10^9-point sweep are refused from their
/// parameters alone, before anything is allocated or expanded: the answer
/// comes at once (the bound here is loose, for loaded CI machines; the point
/// is that it does not allocate terabytes first).
#[test]
fn huge_layers_and_sweeps_are_refused_before_allocating() {
    for file in ["layer_too_large.toml", "sweep_too_many_points.toml"] {
        let path = format!("tests/configs/bad/{file}");
        let start = std::time::Instant::now();
        refuses(&["check", &path], "");
        assert!(
            start.elapsed().as_secs_f64() < 10.0,
            "{file} took {:?}",
            start.elapsed()
        );
    }
    let err = refuses(
        &[
            "check",
            "tests/configs/good/tiny.toml",
            "--max-memory",
            "1KiB",
        ],
        "more than --max-memory 1.0 KiB",
    );
    assert!(
        err.contains("needs about") && err.contains("at sweep point 0"),
        "{err}"
    );
    zebra()
        .args([
            "check",
            "tests/configs/good/tiny.toml",
            "--max-memory",
            "lots",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not a size"));
    zebra()
        .args([
            "check",
            "tests/configs/good/tiny.toml",
            "--max-memory",
            "1GiB",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("memory: about"));
}

#[test]
fn threads_beyond_the_limit_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let start = std::time::Instant::now();
    refuses(
        &[
            "run",
            "tests/configs/good/tiny.toml",
            "--out",
            out,
            "--threads",
            "10000",
        ],
        "--threads: must be 1..=1024, got 10000",
    );
    assert!(start.elapsed().as_secs_f64() < 10.0);
    // With every row resumed the engine starts no threads at all.
    let res = run_tiny(dir.path());
    zebra()
        .args(["run", dir.path().join("tiny.toml").to_str().unwrap()])
        .args(["--engine", "cpu", "--threads", "1024", "--out"])
        .arg(&res)
        .assert()
        .success()
        .stdout(predicate::str::contains("0 computed, 4 resumed"));
}

#[test]
fn unknown_wgpu_backend_is_refused_naming_the_accepted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    for args in [
        vec![
            "run",
            "tests/configs/good/tiny.toml",
            "--engine",
            "gpu",
            "--out",
            out,
        ],
        vec![
            "run",
            "tests/configs/good/tiny.toml",
            "--engine",
            "auto",
            "--out",
            out,
        ],
        vec!["devices"],
    ] {
        let assert = zebra()
            .env("WGPU_BACKEND", "bogus")
            .args(&args)
            .assert()
            .code(2);
        let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
        assert!(
            err.contains("WGPU_BACKEND: \"bogus\"")
                && err.contains("accepted: vulkan, metal, dx12, gl"),
            "{err}"
        );
        assert!(!err.contains("install"), "{err}");
    }
    // The GPU engine's other variables: a bad value is one line naming the
    // variable and what it accepts, before anything runs, exit 2.
    for (var, value, accepted) in [
        ("ZEBRA_GPU_KERNELS", "fast", "accepted: plain or tiled"),
        (
            "ZEBRA_GPU_MEMORY_MIB",
            "lots",
            "accepted: whole MiB from 16",
        ),
        ("ZEBRA_GPU_RESIDENT", "yes", "accepted: 1 (whole networks"),
    ] {
        let assert = zebra()
            .env(var, value)
            .args([
                "run",
                "tests/configs/good/tiny.toml",
                "--engine",
                "gpu",
                "--out",
                out,
            ])
            .assert()
            .code(2);
        let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
        assert!(
            err.contains(&format!("{var}: \"{value}\"")) && err.contains(accepted),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // Comma lists as wgpu reads them stay accepted.
    zebra()
        .env("WGPU_BACKEND", "vulkan,gl")
        .args([
            "run",
            "tests/configs/good/tiny.toml",
            "--engine",
            "cpu",
            "--out",
            out,
        ])
        .assert()
        .success();
}

#[test]
fn out_that_is_a_file_or_unwritable_results_say_so_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    fs::write(&file, "x").unwrap();
    refuses(
        &[
            "run",
            "tests/configs/good/tiny.toml",
            "--out",
            file.to_str().unwrap(),
        ],
        "is a file; give a folder",
    );
    // A result file that cannot be written: one line, the path and the
    // system's reason once, not "simulation failed".
    let out = dir.path().join("res");
    fs::create_dir_all(out.join("tiny_hist.csv")).unwrap();
    let assert = zebra()
        .args([
            "run",
            "tests/configs/good/tiny.toml",
            "--engine",
            "cpu",
            "--quiet",
            "--out",
        ])
        .arg(&out)
        .assert()
        .failure();
    let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(err.contains("tiny_hist.csv"), "{err}");
    assert!(!err.contains("simulation failed"), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn a_weights_folder_is_bad_input_in_check_and_run() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["check", "tests/configs/bad/weights_folder.toml"],
        vec![
            "run",
            "tests/configs/bad/weights_folder.toml",
            "--out",
            dir.path().to_str().unwrap(),
        ],
    ] {
        refuses(&args, "is a folder; give a file");
    }
}

/// Rewrites column `col` of every data row of a result CSV with `value(row)`.
fn set_column(csv: &Path, col: &str, value: impl Fn(usize) -> String) {
    let text = fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|c| *c == col).unwrap();
    let mut out = header.join(",") + "\n";
    for (i, line) in lines.enumerate() {
        let mut cells: Vec<String> = line.split(',').map(String::from).collect();
        cells[at] = value(i);
        out += &(cells.join(",") + "\n");
    }
    fs::write(csv, out).unwrap();
}

/// Values that are not finite numbers are left out of a figure with a
/// warning naming them (an infinite SNR, which `zebra run` writes for an
/// exactly zero error, included); a figure with no values left is skipped
/// with a warning; and when no figure at all can be drawn, plot exits 2.
#[test]
fn plot_warns_about_values_and_figures_it_leaves_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_tiny(dir.path());
    let csv = out.join("tiny.csv");
    set_column(&csv, "snr_db", |i| {
        if i == 0 {
            "inf".into()
        } else {
            "12.5".into()
        }
    });
    set_column(&csv, "rmse", |_| "NaN".into());
    let assert = zebra().arg("plot").arg(&csv).assert().success();
    let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        err.contains("warning:")
            && err.contains("figure `rmse` skipped: all 4 value(s) that are not finite numbers"),
        "{err}"
    );
    assert!(
        err.contains("figure `snr_db` leaves out 1 value(s)")
            && err.contains("snr_db = inf")
            && err.contains("exactly zero"),
        "{err}"
    );
    assert!(out.join("tiny_snr_db.svg").exists());
    assert!(!out.join("tiny_rmse.svg").exists());
    // Nothing drawable at all: exit 2 with the reasons.
    fs::remove_file(out.join("tiny_hist.csv")).unwrap();
    set_column(&csv, "snr_db", |_| "not-a-number".into());
    let assert = zebra().arg("plot").arg(&csv).assert().code(2);
    let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        err.contains("figure `snr_db` skipped") && err.contains("no figure could be drawn"),
        "{err}"
    );
}

#[test]
fn a_sharded_accuracy_experiment_merges_into_the_results_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::env::current_dir().unwrap();
    let exp = dir.path().join("acc.toml");
    fs::write(
        &exp,
        format!(
            "version = 1\ntrials = 5\nseed = 3\nmappings = [\"dense\", \"zebra\"]\n\
             [network]\nmodel = \"{0}/models/fmnist_cnn/model.toml\"\n\
             images = \"{0}/data/fashion-mnist/t10k-images-idx3-ubyte.gz\"\n\
             labels = \"{0}/data/fashion-mnist/t10k-labels-idx1-ubyte.gz\"\nlimit = 30\n\
             [noise]\ncell_sigma = 0.1\n",
            root.display()
        ),
    )
    .unwrap();
    let run = |extra: &[&str], out: &Path| {
        zebra()
            .args(["run", exp.to_str().unwrap(), "--engine", "cpu", "--out"])
            .arg(out)
            .args(extra)
            .assert()
            .success();
    };
    let single = dir.path().join("single");
    run(&[], &single);
    // 10 chips over 3 shards: the second shard splits both rows' chips.
    let shards: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("s{i}"))).collect();
    for (i, s) in shards.iter().enumerate() {
        run(&["--shard", &format!("{i}/3")], s);
    }
    let merged = dir.path().join("merged");
    zebra()
        .args(["merge", merged.to_str().unwrap()])
        .args(shards.iter().map(|s| s.to_str().unwrap()))
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "2 (point, mapping) rows merged from 3 shards",
        ));
    let without_timing = |dir: &Path| {
        let (header, rows) = zebra_cim::io::csv::read_csv(&dir.join("acc.csv"))
            .unwrap()
            .unwrap();
        let keep: Vec<usize> = (0..header.len())
            .filter(|&i| !["images_per_s", "seconds"].contains(&header[i].as_str()))
            .collect();
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| keep.iter().map(|&i| r[i].clone()).collect())
            .collect();
        (
            rows,
            fs::read_to_string(dir.join("acc_trials.csv")).unwrap(),
        )
    };
    assert_eq!(without_timing(&merged), without_timing(&single));
}

/// `--where` slices a sweep of several axes: an energy-model sweep drawn per
/// model, lines per mapping; a filter that keeps nothing, or is malformed,
/// gets exit 2 and one line.
#[test]
fn plot_where_draws_one_slice_of_a_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("e.toml");
    fs::write(
        &exp,
        "version = 1\ntrials = 20\nmappings = [\"dense\", \"zebra\"]\n[layer]\nk = 64\nn = 8\ninputs = 2\n\
         [noise]\ncell_sigma = 0.05\n[sweep]\n\"array.parallelism\" = [16, 32]\n\"energy.model\" = [\"walden\", \"flash\"]\n",
    )
    .unwrap();
    let out = dir.path().join("res");
    zebra()
        .args([
            "run",
            exp.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--engine",
            "cpu",
            "--quiet",
        ])
        .assert()
        .success();
    let csv = out.join("e.csv");
    let plot = |filter: &str| {
        zebra()
            .args([
                "plot",
                csv.to_str().unwrap(),
                "--metric",
                "energy_fj_per_mac",
                "--x",
                "array.parallelism",
                "--where",
                filter,
            ])
            .assert()
    };
    plot("energy.model=flash").success();
    let svg = fs::read_to_string(out.join("e_flash_energy_fj_per_mac.svg")).unwrap();
    // One line per mapping: the other model's rows are not drawn.
    assert!(
        svg.contains("dense") && svg.contains("zebra") && !svg.contains("walden"),
        "{svg}"
    );
    plot("energy.model=isaac")
        .code(2)
        .stderr(predicate::str::contains("leaves no rows"));
    plot("energy.model")
        .code(2)
        .stderr(predicate::str::contains("give COLUMN=VALUE"));
}
