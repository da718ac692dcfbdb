//! Fuzzing on stable Rust: every reader of user files gets random bytes and
//! structured mutations of valid files (bytes flipped, cut, spliced, numbers
//! and header fields changed) and must answer with an error or a value,
//! never a panic. Cases per reader: `ZEBRA_FUZZ_CASES` (default 300; CI
//! runs the default, about 2,000 in all). The long run:
//!
//!     ZEBRA_FUZZ_CASES=100000 cargo test --release --test fuzz
//!
//! Aborts (allocation failures) end the process, so sizes declared in a
//! file are checked against the file before anything is allocated.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::{Path, PathBuf};
use zebra_cim::experiment::{Experiment, Overrides};

/// Cases per reader.
fn cases() -> u32 {
    std::env::var("ZEBRA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn runner(scale: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: (cases() / scale).max(1),
        failure_persistence: None,
        ..Config::default()
    })
}

/// A mutation of `seed`'s bytes: a few edits, each an overwrite, an
/// insertion, a deletion or a truncation at a random place.
#[derive(Clone, Debug)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    /// Replace a run of ASCII digits (a number in a header or a TOML value)
    /// by another number, often huge or zero.
    Number(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let numbers = prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("4294967296".to_string()),
        Just("18446744073709551615".to_string()),
        Just("99999999999999999999".to_string()),
        Just("1e308".to_string()),
        Just("nan".to_string()),
        (0u64..100_000).prop_map(|v| v.to_string()),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Edit::Set(a, b)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(a, b)| Edit::Insert(a, b)),
        (any::<usize>(), 1usize..16).prop_map(|(a, n)| Edit::Delete(a, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), numbers).prop_map(|(a, s)| Edit::Number(a, s)),
    ]
}

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let at = |i: &usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Set(i, v) if !b.is_empty() => {
                let i = i % b.len();
                b[i] = *v;
            }
            Edit::Set(..) => {}
            Edit::Insert(i, v) => {
                let i = at(i, b.len());
                b.splice(i..i, v.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = at(i, b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Edit::Truncate(i) => {
                let i = at(i, b.len());
                b.truncate(i);
            }
            Edit::Number(i, s) => {
                // The digit run at or after position i, if any.
                let start = (at(i, b.len())..b.len()).find(|&k| b[k].is_ascii_digit());
                if let Some(start) = start {
                    let end = (start..b.len())
                        .find(|&k| !b[k].is_ascii_digit())
                        .unwrap_or(b.len());
                    b.splice(start..end, s.bytes());
                }
            }
        }
    }
    b
}

/// Random bytes or a mutation of one of `seeds`.
fn input(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..512),
        4 => (0..n, proptest::collection::vec(edit(), 1..6))
            .prop_map(move |(s, e)| apply(&seeds[s], &e)),
    ]
}

fn read(path: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn gunzip(path: &str) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Runs `check` on each generated input written to `dir/name`.
fn fuzz_file(scale: u32, seeds: Vec<Vec<u8>>, name: &str, check: impl Fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    runner(scale)
        .run(&input(seeds), |bytes| {
            std::fs::write(&path, &bytes).unwrap();
            check(&path);
            Ok(())
        })
        .unwrap();
}

#[test]
fn experiment_parser_never_panics() {
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir("experiments")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(read)
        .collect();
    seeds.push(read("tests/configs/good/tiny.toml"));
    assert!(seeds.len() >= 5);
    runner(1)
        .run(&input(seeds), |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            // The parse may fail; it must not panic, and what it accepts
            // has at least one point and one mapping.
            if let Ok(exp) = Experiment::parse(&text, Path::new("fuzz.toml"), Overrides::default())
            {
                prop_assert!(!exp.points.is_empty() && !exp.mappings.is_empty());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn npy_reader_never_panics() {
    let seeds = vec![
        read("models/fmnist_cnn/reference_logits.npy"),
        npy_i8(&[3, 4]),
        npy_i8(&[0, 5]),
    ];
    // Through the reader, a layer built from the file, and `inspect`.
    let dir = tempfile::tempdir().unwrap();
    let exp_path = dir.path().join("e.toml");
    std::fs::write(
        &exp_path,
        "version = 1\n[layer]\nweights_file = \"w.npy\"\ninputs = 2\n",
    )
    .unwrap();
    let exp_dir: PathBuf = dir.path().into();
    fuzz_file(1, seeds, "w.npy", |p| {
        let _ = zebra_cim::io::npy::read_npy_ints(p);
        let _ = zebra_cim::io::npy::read_weights(p, 8);
        let _ = zebra_cim::cmd::inspect::inspect_npy(p, 8, 16);
        std::fs::copy(p, exp_dir.join("w.npy")).unwrap();
        if let Ok(exp) = Experiment::load(&exp_path, Overrides::default()) {
            let _ = zebra_cim::experiment::workload::Layers::build(&exp.points);
        }
    });
}

/// A valid int8 `.npy` of `shape`, values 1, 2, 3, ...
fn npy_i8(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    let mut header = format!("{{'descr': '|i1', 'fortran_order': False, 'shape': ({shape}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((header.len() as u16).to_le_bytes());
    b.extend(header.bytes());
    let n: usize = dims.iter().map(|d| d.parse::<usize>().unwrap()).product();
    b.extend((0..n).map(|i| (i % 100) as u8));
    b
}

#[test]
fn idx_reader_never_panics() {
    let images = gunzip("data/fashion-mnist/t10k-images-idx3-ubyte.gz");
    let labels = gunzip("data/fashion-mnist/t10k-labels-idx1-ubyte.gz");
    // Small valid files: 3 images and their labels.
    let mut small = images[..16].to_vec();
    small[4..8].copy_from_slice(&3u32.to_be_bytes());
    small.extend(&images[16..16 + 3 * 784]);
    let mut small_labels = labels[..8].to_vec();
    small_labels[4..8].copy_from_slice(&3u32.to_be_bytes());
    small_labels.extend(&labels[8..11]);
    let dir = tempfile::tempdir().unwrap();
    let good_labels = dir.path().join("good-labels");
    std::fs::write(&good_labels, &small_labels).unwrap();
    let good_images = dir.path().join("good-images");
    std::fs::write(&good_images, &small).unwrap();
    fuzz_file(1, vec![small.clone(), small_labels.clone()], "idx", |p| {
        let _ = zebra_cim::io::dataset::read_idx_u8(p);
        let _ = zebra_cim::io::dataset::Dataset::from_idx(p, &good_labels);
        let _ = zebra_cim::io::dataset::Dataset::from_idx(&good_images, p);
    });
}

#[test]
fn model_and_safetensors_loaders_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.toml");
    let weights = dir.path().join("model.safetensors");
    let good_toml = read("models/fmnist_cnn/model.toml");
    let good_weights = read("models/fmnist_cnn/model.safetensors");
    // The model text, with the shipped weights beside it.
    std::fs::write(&weights, &good_weights).unwrap();
    runner(2)
        .run(&input(vec![good_toml.clone()]), |bytes| {
            std::fs::write(&model, &bytes).unwrap();
            let _ = zebra_cim::network::Network::load(&model);
            Ok(())
        })
        .unwrap();
    // The weights, under the shipped model text.
    std::fs::write(&model, &good_toml).unwrap();
    runner(2)
        .run(&input(vec![good_weights]), |bytes| {
            std::fs::write(&weights, &bytes).unwrap();
            let _ = zebra_cim::network::Network::load(&model);
            Ok(())
        })
        .unwrap();
}

#[test]
fn plot_csv_reader_never_panics() {
    let seeds = vec![
        read("results/quickstart.csv"),
        read("results/accuracy_sigma.csv"),
    ];
    let out = tempfile::tempdir().unwrap();
    let opts = zebra_cim::io::plot::PlotOptions::default();
    let outdir: PathBuf = out.path().into();
    // Figures are drawn for the inputs that parse, which is slow: fewer cases.
    fuzz_file(10, seeds, "r.csv", |p| {
        let _ = zebra_cim::io::plot::plot_results(p, Some(&outdir), &opts);
    });
}
