//! Peak memory does not grow with the number of trials or the length of a
//! sweep, and accuracy experiments too large for memory are refused before
//! anything is allocated. The peak tests run the real binary as a child and
//! read that child's own peak resident set (`wait4`, Linux only), so no
//! other test in this process moves it.

use std::path::Path;
use std::process::Command;

/// Linux: run `zebra ARGS` to completion; its exit code and peak resident
/// set (bytes).
#[cfg(target_os = "linux")]
// The child is reaped by wait4, which also gives its resource usage.
#[allow(clippy::zombie_processes)]
fn peak_of(args: &[&str]) -> (i32, u64) {
    use std::process::Stdio;
    let child = Command::new(env!("CARGO_BIN_EXE_zebra"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain data that wait4 fills in, and `pid` is our
    // own child, not yet waited for (it is reaped here, not by `Child`).
    let (waited, usage) = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let waited = libc::wait4(pid, &mut status, 0, &mut usage);
        (waited, usage)
    };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    // Linux reports ru_maxrss in KiB.
    (code, usage.ru_maxrss as u64 * 1024)
}

/// A layer experiment (64 x 16, two inputs, static and dynamic noise) with
/// `points` sweep points of `trials` trials, written to `dir/NAME.toml`.
fn layer_experiment(dir: &Path, name: &str, trials: u32, points: usize) -> String {
    let sigmas: Vec<String> = (0..points)
        .map(|i| format!("{}", 0.01 + 0.0001 * i as f64))
        .collect();
    let text = format!(
        "version = 1\nname = \"{name}\"\ntrials = {trials}\nseed = 3\n\
         [layer]\nk = 64\nn = 16\ninputs = 2\n[noise]\nmode = \"dynamic\"\nread_sigma = 0.5\n\
         [sweep]\n\"noise.cell_sigma\" = [{}]\n",
        sigmas.join(", ")
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The peak of `zebra run` on a fresh layer experiment, on two CPU threads.
#[cfg(target_os = "linux")]
fn run_peak(dir: &Path, name: &str, trials: u32, points: usize) -> u64 {
    let file = layer_experiment(dir, name, trials, points);
    let out = dir.join("out");
    let (code, peak) = peak_of(&[
        "run",
        &file,
        "--engine",
        "cpu",
        "--threads",
        "2",
        "--fresh",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "zebra run {name} failed");
    println!("{name}: {trials} trials x {points} points: peak {peak} bytes");
    peak
}

/// Slack between two runs of the same binary that differ only in size:
/// the allocator's free pages and arenas, page granularity and thread
/// stacks touched a little deeper (measured: under 200 KiB beyond what the
/// bounds below allow for).
const SLACK: u64 = 1 << 20;

/// 100 times the trials: the larger run may add only what trials may hold
/// however many there are: 32,768 per-trial values in memory (256 KiB;
/// later ones go to a temporary file), the 65,536-bin histogram that
/// selects their percentiles exactly (256 KiB) and one engine call's
/// moments (2,500 trials here, at most 64 bytes each while they are put in
/// order: 160 KiB). Before trials were bounded, the 99,000 more trials took
/// 4.2 MiB more (about 45 bytes each), and 10 times as many would take ten
/// times that.
#[cfg(target_os = "linux")]
#[test]
fn peak_memory_does_not_grow_with_trials() {
    let dir = tempfile::tempdir().unwrap();
    let few = run_peak(dir.path(), "few_trials", 1_000, 1);
    let many = run_peak(dir.path(), "many_trials", 100_000, 1);
    let bound = few + SLACK + (256 << 10) + (256 << 10) + (160 << 10);
    assert!(
        many <= bound,
        "100,000 trials peaked at {many} bytes, 1,000 at {few}: more than {} apart",
        bound - few
    );
}

/// Ten times the points: the larger run may add only a small index entry
/// per (point, mapping) row (where its rows lie on disk, its resume key,
/// its line of the table: `sweep::memory::ROW_BYTES`, 2 KiB, an upper
/// bound; under 1 KiB measured). Before result files were rewritten from
/// disk, the 180 more rows took 8.6 MiB more (49 KiB each, as text).
#[cfg(target_os = "linux")]
#[test]
fn peak_memory_does_not_grow_with_sweep_length() {
    let dir = tempfile::tempdir().unwrap();
    let few = run_peak(dir.path(), "few_points", 20, 10);
    let many = run_peak(dir.path(), "many_points", 20, 100);
    let rows = 2 * (100 - 10);
    let bound = few + SLACK + rows * zebra_cim::sweep::memory::ROW_BYTES;
    assert!(
        many <= bound,
        "100 points peaked at {many} bytes, 10 at {few}: more than {} apart",
        bound - few
    );
}

/// An accuracy experiment on the shipped Fashion-MNIST CNN, `limit` test
/// images a chip, written to `dir/NAME.toml`.
fn accuracy_experiment(dir: &Path, name: &str, limit: usize) -> String {
    let root = std::env::current_dir().unwrap();
    let text = format!(
        "version = 1\nname = \"{name}\"\ntrials = 4\nseed = 5\nmappings = [\"zebra\"]\n\
         [network]\nmodel = \"{0}/models/fmnist_cnn/model.toml\"\n\
         images = \"{0}/data/fashion-mnist/t10k-images-idx3-ubyte.gz\"\n\
         labels = \"{0}/data/fashion-mnist/t10k-labels-idx1-ubyte.gz\"\nlimit = {limit}\n\
         [noise]\nmode = \"static\"\ncell_sigma = 0.05\n",
        root.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Every chip in flight holds all its images' activations at once, so the
/// estimate grows with the images and the threads; `run` refuses one over
/// `--max-memory` with exit 2, naming the estimate, before it loads the
/// dataset or writes anything, and `check` prints it.
#[test]
fn accuracy_experiments_too_large_for_memory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = accuracy_experiment(dir.path(), "acc", 2_000);
    let out = dir.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_zebra"))
        .args(["run", &file, "--engine", "cpu", "--threads", "2"])
        .args(["--max-memory", "100MiB", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    for want in [
        "needs about",
        "2 chip(s) at once, each with 2000 images through layer `conv1`",
        "more than --max-memory 100.0 MiB",
        "`network.limit` (or --images)",
    ] {
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
    assert!(!out.join("acc.csv").exists());
    // Fewer images fit.
    let check = Command::new(env!("CARGO_BIN_EXE_zebra"))
        .args(["check", &file, "--max-memory", "64GiB"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(
        text.contains("memory: about") && text.contains("images through layer `conv1`"),
        "{text}"
    );
}

/// The accuracy estimate is an upper estimate, and not a loose one: a
/// run's measured peak lies between half of it and all of it.
#[cfg(target_os = "linux")]
#[test]
fn the_accuracy_estimate_bounds_the_measured_peak() {
    use zebra_cim::experiment::{Experiment, Overrides};
    let dir = tempfile::tempdir().unwrap();
    let file = accuracy_experiment(dir.path(), "acc", 200);
    let exp = Experiment::load(Path::new(&file), Overrides::default()).unwrap();
    let estimate = zebra_cim::sweep::memory::estimate(&exp, 2).unwrap().bytes;
    let out = dir.path().join("out");
    let (code, peak) = peak_of(&[
        "run",
        &file,
        "--engine",
        "cpu",
        "--threads",
        "2",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    println!("200 images on 2 threads: estimate {estimate}, peak {peak} bytes");
    assert!(
        peak <= estimate && 2 * peak >= estimate,
        "peak {peak} bytes against an estimate of {estimate}"
    );
}
