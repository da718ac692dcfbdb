//! Peak memory does not grow with the number of trials or the length of a
//! sweep beyond what the results themselves hold. One test in its own binary
//! (its own process), so no other test's allocations move the high-water
//! mark it reads (`VmHWM` in /proc/self/status, Linux only).

use std::path::Path;
use zebra_cim::engine::cpu::CpuEngine;
use zebra_cim::experiment::{Experiment, Overrides};
use zebra_cim::sweep::run::{prepare, run_experiment, RunOptions};

/// The process's peak resident set so far, in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Runs an experiment (a 256 x 64 layer, 4 inputs, static and dynamic
/// noise) through the library on a 2-thread CPU engine, fresh, into `dir`.
fn run(dir: &Path, name: &str, trials: u32, points: usize) {
    let sigmas: Vec<String> = (0..points)
        .map(|i| format!("{}", 0.01 + 0.001 * i as f64))
        .collect();
    let text = format!(
        "version = 1\nname = \"{name}\"\ntrials = {trials}\nseed = 3\n\
         [layer]\nk = 256\nn = 64\ninputs = 4\n[noise]\nmode = \"dynamic\"\nread_sigma = 0.5\n\
         [sweep]\n\"noise.cell_sigma\" = [{}]\n",
        sigmas.join(", ")
    );
    let exp = Experiment::parse(&text, &dir.join("m.toml"), Overrides::default()).unwrap();
    let opts = RunOptions {
        out_dir: dir.to_path_buf(),
        fresh: true,
        progress: false,
    };
    let prep = prepare(&exp, &opts).unwrap();
    let mut engine = CpuEngine::with_threads(2);
    run_experiment(&exp, prep, &mut engine, &opts).unwrap();
}

/// The bounds: 8 MiB of slack for the allocator keeping freed pages and
/// for thread stacks touched deeper, plus what the results must hold: 64
/// bytes per trial (each trial's moments, 24 bytes, and its RMSE, 8 bytes,
/// are kept for the exact trial-RMSE percentiles, and a batch's moments are
/// copied once) and 128 KiB per (point, mapping) row (its result row and its
/// histogram rows, a few hundred short strings kept to rewrite the CSVs
/// after every point: about 60 KiB measured here, which the memory estimate
/// of `check` and `run` counts as `experiment::ROW_BYTES`).
/// Without streaming (every error kept, 8 bytes per output per trial: 2 KiB
/// per trial here) the many-trials run alone would exceed its bound 30-fold.
#[test]
fn peak_memory_grows_only_with_what_the_results_hold() {
    let Some(start) = peak_rss() else {
        println!("no /proc/self/status here: peak memory not measured");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    const SLACK: u64 = 8 << 20;
    // Warm up: thread pool, allocator arenas, first-use tables.
    run(dir.path(), "warm", 20, 1);
    let base = peak_rss().unwrap();

    let many_trials = 40_000u32;
    run(dir.path(), "trials", many_trials, 1);
    let after_trials = peak_rss().unwrap();
    let bound = SLACK + 64 * many_trials as u64;
    println!(
        "start {start}, after warm-up {base}, after {many_trials} trials {after_trials} (+{}; bound {bound})",
        after_trials - base
    );
    assert!(
        after_trials - base <= bound,
        "{many_trials} trials grew the peak by {} bytes, more than {bound}",
        after_trials - base
    );

    let points = 60usize;
    run(dir.path(), "sweep", 20, points);
    let after_sweep = peak_rss().unwrap();
    let rows = 2 * points as u64;
    let bound = SLACK + 64 * many_trials as u64 + rows * (128 << 10);
    println!(
        "after a {points}-point sweep {after_sweep} (+{} over warm-up; bound {bound})",
        after_sweep - base
    );
    assert!(
        after_sweep - base <= bound,
        "a {points}-point sweep grew the peak by {} bytes, more than {bound}",
        after_sweep - base
    );
}
