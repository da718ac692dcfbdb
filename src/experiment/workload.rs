//! Workloads: the integer weights and inputs of one layer, synthetic or from `.npy` files.

use crate::error::Result;
use crate::experiment::{InputSource, LayerParams, Point, WeightSource};
use crate::io::npy::{check_values, npy_err, read_npy_ints, read_weights};
use crate::model::quantize::{permute_inputs, permute_rows, Quantizer};
use crate::model::rng::{self, Address};
use crate::model::{InputCoding, MappingSpec, TooManyTerms};

/// An integer layer: `w` is `[k][n]`, `x` is `[inputs][k]`, values within
/// `coding.range(input_bits)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub k: usize,
    pub n: usize,
    pub inputs: usize,
    pub weight_bits: u32,
    pub input_bits: u32,
    pub w: Vec<i32>,
    pub x: Vec<i32>,
    /// How the array applies the inputs.
    pub coding: InputCoding,
}

impl Layer {
    /// Exact products `Y = X W`, `[inputs][n]`.
    pub fn exact(&self) -> Vec<i64> {
        exact_product(&self.x, &self.w, self.k, self.n)
    }

    /// Refuses a mapping that cannot hold this layer's weights: a weight with
    /// more non-zero CSD digits than a term-slots mapping's slots.
    pub fn check_mapping(&self, mapping: &MappingSpec) -> std::result::Result<(), TooManyTerms> {
        mapping.check_weights(self.weight_bits, &self.w, self.n)
    }

    /// Builds the layer a sweep point describes. Synthetic layers depend only
    /// on `seed` and the layer parameters.
    pub fn build(p: &LayerParams, seed: u64) -> Result<Layer> {
        let qmax = (1i32 << (p.weight_bits - 1)) - 1;
        let (xmin, xmax) = p.coding.range(p.input_bits);
        let mut k = p.k;
        let mut n = p.n;
        let w = match &p.weights {
            WeightSource::File(path) => {
                let (kk, nn, w) = read_weights(path, p.weight_bits)?;
                (k, n) = (kk, nn);
                w
            }
            WeightSource::Gaussian | WeightSource::Laplace => synthetic_weights(p, seed, qmax),
        };
        let (inputs, x) = match &p.input_source {
            InputSource::File(path) => {
                let (shape, data) = read_npy_ints(path)?;
                let (b, kk) = match shape.as_slice() {
                    [kk] => (1, *kk),
                    [b, kk] => (*b, *kk),
                    _ => {
                        return Err(npy_err(
                            path,
                            format!("inputs must be 1-D (K,) or 2-D (B, K), got shape {shape:?}"),
                        ))
                    }
                };
                if kk != k {
                    return Err(npy_err(
                        path,
                        format!("inputs have K = {kk} but the weights have K = {k} rows"),
                    ));
                }
                let what = format!("{}-bit {} inputs", p.input_bits, p.coding.label());
                if let Some((i, v)) = data.iter().enumerate().find(|(_, &v)| v < 0) {
                    if !p.coding.signed() {
                        return Err(npy_err(
                            path,
                            format!("element {i} is {v}; {what} must be in [0, {xmax}]; negative inputs need `layer.input_sign = \"signed\"`"),
                        ));
                    }
                }
                check_values(path, &data, xmin as i64, xmax as i64, &what)?;
                (b, data.into_iter().map(|v| v as i32).collect())
            }
            InputSource::RectifiedGaussian { zero_fraction } => (
                p.inputs,
                synthetic_inputs(p.inputs, k, *zero_fraction, xmax as u32, seed),
            ),
            InputSource::Uniform => (p.inputs, uniform_inputs(p.inputs, k, xmin, xmax, seed)),
        };
        Ok(Layer {
            k,
            n,
            inputs,
            weight_bits: p.weight_bits,
            input_bits: p.input_bits,
            w,
            x,
            coding: p.coding,
        }
        .quantized(&p.quantize))
    }

    /// The layer under quantiser `q`: its weights with the term budgets
    /// applied, and weights and inputs in `q`'s row order (which leaves
    /// the exact product as it is).
    pub fn quantized(mut self, q: &Quantizer) -> Layer {
        q.apply(&mut self.w, self.k, self.n, self.weight_bits);
        match q.row_permutation(&self.w, self.k, self.n) {
            Some(perm) => self.permuted(&perm),
            None => self,
        }
    }

    /// The layer with array row `r` holding row `perm[r]` of the weights,
    /// and the inputs permuted to meet them.
    pub fn permuted(mut self, perm: &[usize]) -> Layer {
        self.w = permute_rows(&self.w, self.n, perm);
        self.x = permute_inputs(&self.x, perm);
        self
    }
}

/// The layers of a sweep, each distinct (layer parameters, seed) built once.
#[derive(Clone, Debug)]
pub struct Layers {
    layers: Vec<Layer>,
    of_point: Vec<usize>,
}

impl Layers {
    /// Builds every point's layer; fails on the first that cannot be built.
    pub fn build(points: &[Point]) -> Result<Layers> {
        let mut keys: Vec<(&LayerParams, u64)> = Vec::new();
        let mut layers = Vec::new();
        let mut of_point = Vec::with_capacity(points.len());
        for p in points {
            let key = (&p.params.layer, p.params.seed);
            let at = match keys.iter().position(|k| *k == key) {
                Some(at) => at,
                None => {
                    layers.push(Layer::build(key.0, key.1)?);
                    keys.push(key);
                    keys.len() - 1
                }
            };
            of_point.push(at);
        }
        Ok(Layers { layers, of_point })
    }

    /// Refuses, before anything is simulated, a mapping that cannot hold the
    /// weights of a layer (see [`Layer::check_mapping`]); `file` is the
    /// experiment file the error names.
    pub fn check_mappings(&self, mappings: &[MappingSpec], file: &std::path::Path) -> Result<()> {
        for layer in &self.layers {
            for m in mappings {
                layer.check_mapping(m).map_err(|e| {
                    crate::error::Error::config(
                        file.display().to_string(),
                        format!("mapping `{}`: {e}", m.name),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// The layer of point `i` (in sweep order).
    pub fn for_point(&self, i: usize) -> &Layer {
        &self.layers[self.of_point[i]]
    }
}

/// Real-valued weights quantised per output channel so the largest magnitude maps to `qmax`.
fn synthetic_weights(p: &LayerParams, seed: u64, qmax: i32) -> Vec<i32> {
    let (k, n) = (p.k, p.n);
    let addr = Address {
        seed,
        trial: 0,
        stream: rng::stream::WORKLOAD,
    };
    let mut real = vec![0f64; k * n];
    for (i, v) in real.iter_mut().enumerate() {
        let words = addr.block(i as u64);
        *v = match p.weights {
            WeightSource::Laplace => {
                let u = (words[0] as f64 + 0.5) / 4_294_967_296.0 - 0.5;
                -u.signum() * (1.0 - 2.0 * u.abs()).ln()
            }
            _ => rng::box_muller(words[0], words[1]).0 as f64,
        };
    }
    let mut w = vec![0i32; k * n];
    for col in 0..n {
        let max = (0..k).map(|r| real[r * n + col].abs()).fold(0.0, f64::max);
        let scale = if max > 0.0 { qmax as f64 / max } else { 0.0 };
        for r in 0..k {
            w[r * n + col] = (real[r * n + col] * scale).round_ties_even() as i32;
        }
    }
    w
}

/// Rectified-Gaussian activations with a fraction of exact zeros, scaled so the largest maps to `xmax`.
fn synthetic_inputs(b: usize, k: usize, zero_fraction: f64, xmax: u32, seed: u64) -> Vec<i32> {
    let addr = Address {
        seed,
        trial: 1,
        stream: rng::stream::WORKLOAD,
    };
    let real: Vec<f64> = (0..b * k)
        .map(|i| {
            let words = addr.block(i as u64);
            let u = (words[2] as f64 + 0.5) / 4_294_967_296.0;
            if u < zero_fraction {
                0.0
            } else {
                (rng::box_muller(words[0], words[1]).0 as f64).abs()
            }
        })
        .collect();
    let max = real.iter().cloned().fold(0.0, f64::max);
    let scale = if max > 0.0 { xmax as f64 / max } else { 0.0 };
    real.iter()
        .map(|v| (v * scale).round_ties_even() as i32)
        .collect()
}

/// Signed inputs uniform over `[lo, hi]`: `lo + floor(u span)` of one
/// 32-bit word `u` per element (the span is below 2^9, so the bias is under
/// 2^-23).
fn uniform_inputs(b: usize, k: usize, lo: i32, hi: i32, seed: u64) -> Vec<i32> {
    let addr = Address {
        seed,
        trial: 1,
        stream: rng::stream::WORKLOAD,
    };
    let span = (hi - lo + 1) as u64;
    (0..b * k)
        .map(|i| lo + ((addr.block(i as u64)[3] as u64 * span) >> 32) as i32)
        .collect()
}

/// Exact integer products of inputs `x` `[b][k]` with weights `w` `[k][n]`: `[b][n]`.
pub fn exact_product(x: &[i32], w: &[i32], k: usize, n: usize) -> Vec<i64> {
    use rayon::prelude::*;
    let b = x.len() / k.max(1);
    let mut y = vec![0i64; b * n];
    y.par_chunks_mut(n)
        .zip(x.par_chunks(k))
        .for_each(|(ys, xs)| {
            for (kk, &xv) in xs.iter().enumerate() {
                if xv == 0 {
                    continue;
                }
                let row = &w[kk * n..(kk + 1) * n];
                for (yv, &wv) in ys.iter_mut().zip(row) {
                    *yv += xv as i64 * wv as i64;
                }
            }
        });
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> LayerParams {
        LayerParams {
            k: 64,
            n: 32,
            inputs: 4,
            weight_bits: 8,
            input_bits: 8,
            weights: WeightSource::Gaussian,
            input_source: InputSource::RectifiedGaussian { zero_fraction: 0.5 },
            coding: InputCoding::Unsigned,
            quantize: Quantizer::default(),
        }
    }

    #[test]
    fn synthetic_layer_is_quantised_per_channel() {
        let l = Layer::build(&params(), 3).unwrap();
        for col in 0..l.n {
            let max = (0..l.k).map(|r| l.w[r * l.n + col].abs()).max().unwrap();
            assert_eq!(max, 127, "column {col}");
        }
        assert_eq!(*l.x.iter().max().unwrap(), 255);
        let zeros = l.x.iter().filter(|&&v| v == 0).count() as f64 / l.x.len() as f64;
        // 256 inputs, zero fraction 0.5 plus rounding-to-zero: binomial SE 0.031.
        assert!((0.45..0.7).contains(&zeros), "zero fraction {zeros}");
        assert_eq!(l, Layer::build(&params(), 3).unwrap());
    }

    #[test]
    fn signed_synthetic_inputs_cover_the_coding_range_uniformly() {
        for coding in [InputCoding::TwosComplement, InputCoding::SignMagnitude] {
            let p = LayerParams {
                k: 200,
                inputs: 50,
                input_bits: 3,
                input_source: InputSource::Uniform,
                coding,
                ..params()
            };
            let l = Layer::build(&p, 9).unwrap();
            let (lo, hi) = coding.range(3);
            let values = (hi - lo + 1) as usize;
            let mut counts = vec![0usize; values];
            for &v in &l.x {
                assert!((lo..=hi).contains(&v), "{coding:?}: {v}");
                counts[(v - lo) as usize] += 1;
            }
            // 10000 draws over 7 or 8 values: each count is binomial with a
            // standard error under 40; 5 SE either side.
            let mean = l.x.len() as f64 / values as f64;
            for (i, &c) in counts.iter().enumerate() {
                assert!(
                    (c as f64 - mean).abs() < 5.0 * (mean * (1.0 - 1.0 / values as f64)).sqrt(),
                    "{coding:?}: value {} drawn {c} times of {}",
                    lo + i as i32,
                    l.x.len()
                );
            }
            assert_eq!(l.coding, coding);
        }
    }
}
