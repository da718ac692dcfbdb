//! Memory estimates: what the largest sweep point of an experiment needs,
//! from its parameters and the headers of its files (nothing large is
//! allocated), so `check` and `run` can refuse it before allocating.

use crate::engine::stats::KEPT_TRIALS;
use crate::error::Result;
use crate::experiment::{Experiment, InputSource, NetworkParams, WeightSource};
use crate::io::dataset::image_count;
use crate::network::{matmul, Network};
use crate::sweep::run::MAX_BATCH;
use std::path::PathBuf;

/// A rough upper estimate of an experiment's peak memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// The sweep point that needs the most.
    pub point: usize,
    pub bytes: u64,
    /// What the bytes hold, for people.
    pub what: String,
    /// What to lower to need less.
    pub lower: &'static str,
}

/// Memory one (point, mapping) row of a sweep holds while it runs: where
/// its result and companion rows lie in the row stores' files, its resume
/// key and its line of the terminal table (the rows themselves are on
/// disk; about 1 KiB measured per row, with the sweep point itself).
pub const ROW_BYTES: u64 = 2 << 10;

/// The estimate for `exp` when it runs on `threads` CPU threads.
pub fn estimate(exp: &Experiment, threads: usize) -> Result<Estimate> {
    match &exp.network {
        Some(net) => network_estimate(exp, net, threads),
        None => layer_estimate(exp, threads),
    }
}

/// A layer experiment: the largest point (see [`point_bytes`]), every
/// distinct layer of the sweep (built up front and kept: weights, inputs,
/// exact products) and [`ROW_BYTES`] per (point, mapping).
fn layer_estimate(exp: &Experiment, threads: usize) -> Result<Estimate> {
    let mut shapes: Vec<(PathBuf, Vec<usize>)> = Vec::new();
    let mut shape_of = |path: &PathBuf| -> Result<Vec<usize>> {
        if let Some((_, s)) = shapes.iter().find(|(p, _)| p == path) {
            return Ok(s.clone());
        }
        let s = crate::io::npy::read_npy_shape(path)?;
        shapes.push((path.clone(), s.clone()));
        Ok(s)
    };
    let mut worst = (0, 0u64);
    let mut layers = std::collections::HashSet::new();
    let mut kept = 0u64;
    for p in &exp.points {
        let l = &p.params.layer;
        let (k, n) = match &l.weights {
            WeightSource::File(path) => match shape_of(path)?[..] {
                [k, n] => (k, n),
                _ => (l.k, l.n),
            },
            _ => (l.k, l.n),
        };
        let b = match &l.input_source {
            InputSource::File(path) => match shape_of(path)?[..] {
                [b, _] => b,
                _ => 1,
            },
            _ => l.inputs,
        };
        let planes = exp
            .mappings
            .iter()
            .map(|m| m.cells(l.weight_bits))
            .max()
            .unwrap_or(8);
        if layers.insert(format!("{:?}/{}", l, p.params.seed)) {
            let (k, n, b) = (k as u64, n as u64, b as u64);
            kept = kept.saturating_add(
                (k.saturating_mul(n).saturating_mul(4))
                    .saturating_add(b.saturating_mul(k + 2 * n).saturating_mul(4)),
            );
        }
        let bytes = point_bytes(
            k,
            n,
            b,
            planes,
            p.params.parallelism,
            p.params.trials,
            threads,
        );
        if bytes > worst.1 {
            worst = (p.index, bytes);
        }
    }
    let rows = (exp.points.len() * exp.mappings.len()) as u64;
    Ok(Estimate {
        point: worst.0,
        bytes: worst
            .1
            .saturating_add(kept)
            .saturating_add(rows.saturating_mul(ROW_BYTES)),
        what: "largest point, with the layers and result rows the sweep keeps".into(),
        lower: "`layer.k`, `layer.n`, `layer.inputs` or the sweep",
    })
}

/// The estimate for one point of a K x N layer with B input vectors, J
/// digit planes, parallelism P and T trials: the layer (weights as read
/// and as i32, inputs, exact products), the plan (levels and stuck-at
/// levels as i16, masks, per-group ranges), the CPU engine's trial-invariant
/// buffers and each thread's per-chip cell values (a cell's noisy weight,
/// draw and level: 10 bytes per plane; a static-noise run of a 2048 x 2048 layer measured 70 bytes per
/// cell per thread with 8 planes, and about 48 bytes per cell besides) and
/// outputs, and what trials keep: each trial's sum of squares up to
/// [`KEPT_TRIALS`] (later ones go to a temporary file) and the moments of
/// one engine call's trials (at most [`MAX_BATCH`], 32 bytes each, held
/// twice while they are sorted into trial order).
pub fn point_bytes(
    k: usize,
    n: usize,
    b: usize,
    j: usize,
    p: usize,
    t: u32,
    threads: usize,
) -> u64 {
    let (k, n, b, j, th) = (
        k as f64,
        n as f64,
        b as f64,
        j as f64,
        threads.max(1) as f64,
    );
    let chunks = (k / p.max(1) as f64).ceil();
    let kn = k * n;
    let bytes = kn * (8.0 + 4.0 + 8.0)
        + j * kn * (4.0 + 0.25 + 8.0 + 10.0 * th)
        + b * k * (8.0 + 4.0 + 1.0)
        + b * n * (8.0 + 8.0 + 8.0 * th)
        + chunks * j * n * 9.0
        + 8.0 * t.min(KEPT_TRIALS as u32) as f64
        + 64.0 * t.min(MAX_BATCH) as f64;
    bytes.min(u64::MAX as f64) as u64
}

/// An accuracy experiment. A chip (trial) runs every test image through
/// the network at once, layer by layer, so each chip in flight (one per
/// thread, at most one per trial) holds for its largest matrix layer, per
/// input vector (V per image, K inputs, N outputs): the im2col rows as i16
/// (per image and joined: 4 bytes per input), the inputs as i32 and as u32
/// bit patterns (8), the eight input bit masks (8 words of 64 inputs) and
/// active-row flags (one per chunk and bit), and the outputs as f64 (the
/// engine's and the sums handed back: 16 bytes per output) with the next
/// activation as i16 (2); and the layer's per-chip cell values (14 bytes
/// per cell and plane). Held once besides: the dataset's pixels and labels,
/// the weights (8 bytes per weight: as stored and as i32) and every layer's
/// plan (levels and masks, 13 bytes per cell and plane, and the
/// calibration images' inputs and products).
fn network_estimate(exp: &Experiment, net: &NetworkParams, threads: usize) -> Result<Estimate> {
    let model = Network::load(&net.model)?;
    let available = image_count(&net.images)?;
    let images = net.limit.unwrap_or(available).min(available);
    let calib = net.calibration_images.min(images).max(1) as f64;
    // Input vectors per image of each matrix layer: one blank image shows them.
    let mut layers = Vec::new();
    model.forward(&vec![0; model.image_size()], 1, |_, m, rows| {
        layers.push((m.name.clone(), m.inputs, m.outputs, rows.len() / m.inputs));
        Ok(matmul(rows, m))
    })?;
    let dataset = (available * (model.image_size() + 1)) as f64;
    let mut worst = (0, 0f64, String::new(), 0);
    for p in &exp.points {
        let j = exp.mappings.iter().map(|m| m.cells(8)).max().unwrap_or(8) as f64;
        let chips = threads.clamp(1, (p.params.trials as usize).max(1));
        let mut held = dataset;
        let mut chip = (0f64, String::new());
        for (name, k, n, v) in &layers {
            let (kf, nf, vf) = (*k as f64, *n as f64, *v as f64);
            let chunks = (kf / p.params.parallelism.max(1) as f64).ceil();
            let per_vector = kf * 12.0 + 8.0 * 8.0 * (kf / 64.0).ceil() + 8.0 * chunks + nf * 18.0;
            let bytes = images as f64 * vf * per_vector + j * kf * nf * 14.0;
            if bytes > chip.0 {
                chip = (bytes, name.clone());
            }
            held += kf * nf * 8.0 + j * kf * nf * 13.0 + calib * vf * (kf * 9.0 + nf * 8.0);
        }
        let bytes = held + chips as f64 * chip.0;
        if bytes > worst.1 {
            worst = (p.index, bytes, chip.1, chips);
        }
    }
    let (point, bytes, layer, chips) = worst;
    Ok(Estimate {
        point,
        bytes: bytes.min(u64::MAX as f64) as u64,
        what: format!("{chips} chip(s) at once, each with {images} images through layer `{layer}`"),
        lower: "`network.limit` (or --images) or --threads",
    })
}
