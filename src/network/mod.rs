//! Quantised networks (groundwork for whole-network accuracy): the model
//! format of `docs/NETWORK.md`, its exact int8 reference inference, and the
//! im2col lowering that puts a convolution onto the same matrix-vector
//! products the simulated arrays compute.

use crate::error::{Error, Result};
use rayon::prelude::*;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    version: u32,
    weights: PathBuf,
    input: RawInput,
    layer: Vec<RawLayer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    channels: usize,
    height: usize,
    width: usize,
    scale: f32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
enum RawLayer {
    Conv2d {
        name: String,
        out_channels: usize,
        kernel: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default)]
        relu: bool,
        out_scale: Option<f32>,
    },
    Linear {
        name: String,
        out_features: usize,
        #[serde(default)]
        relu: bool,
        out_scale: Option<f32>,
    },
    Maxpool {
        size: usize,
    },
    Avgpool {
        size: usize,
    },
    Flatten,
}

fn one() -> usize {
    1
}

/// A matrix layer's integer weights `[out][in]` (conv: in = C x kh x kw), per-output scales and biases.
#[derive(Clone, Debug)]
pub struct MatrixLayer {
    pub name: String,
    pub outputs: usize,
    pub inputs: usize,
    pub weights: Vec<i32>,
    pub scales: Vec<f32>,
    pub bias: Vec<f32>,
    pub relu: bool,
    /// Requantisation scale of the uint8 output; `None` for the logits.
    pub out_scale: Option<f32>,
}

/// One operation of the network.
#[derive(Clone, Debug)]
pub enum Op {
    Conv {
        m: MatrixLayer,
        in_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    Linear(MatrixLayer),
    MaxPool(usize),
    AvgPool(usize),
    Flatten,
}

/// A quantised network.
#[derive(Clone, Debug)]
pub struct Network {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub input_scale: f32,
    pub ops: Vec<Op>,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::config(path.display().to_string(), msg)
}

/// One image's input rows for a matrix layer, with its output height and width.
type Lowered = (Vec<u8>, usize, usize);

/// What [`finish`] gives: the next activation and its scale, or the logits.
type Finished = std::result::Result<(Vec<u8>, f32), Vec<f32>>;

/// A uint8 activation tensor `[c][h][w]` with its real-value scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Activation {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<u8>,
    pub scale: f32,
}

impl Network {
    /// Loads `model.toml` and the safetensors file it names (relative to it).
    pub fn load(path: &Path) -> Result<Network> {
        let text = crate::io::read_regular_text(path)?;
        let raw: RawModel =
            toml::from_str(&text).map_err(|e| bad(path, e.message().trim().replace('\n', " ")))?;
        if raw.version != 1 {
            return Err(bad(
                path,
                format!("`version` must be 1, got {}", raw.version),
            ));
        }
        let wpath = path.parent().unwrap_or(Path::new(".")).join(&raw.weights);
        let bytes = crate::io::read_regular(&wpath)?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(&wpath, format!("not a readable safetensors file: {e}")))?;
        if !(raw.input.scale.is_finite() && raw.input.scale > 0.0) {
            return Err(bad(
                path,
                format!(
                    "`input.scale` must be a positive finite number, got {}",
                    raw.input.scale
                ),
            ));
        }
        let (mut c, mut h, mut w) = (raw.input.channels, raw.input.height, raw.input.width);
        let mut flat = false;
        let mut ops = Vec::new();
        let mut names: Vec<(&str, usize)> = Vec::new();
        for (i, l) in raw.layer.iter().enumerate() {
            let at = format!("layer {} ", i + 1);
            if let RawLayer::Conv2d {
                name, out_scale, ..
            }
            | RawLayer::Linear {
                name, out_scale, ..
            } = l
            {
                if let Some(&(_, first)) = names.iter().find(|(n, _)| n == name) {
                    return Err(bad(path, format!("{at}(`{name}`): the name `{name}` is also layer {first}'s; each matrix layer needs its own name (it names its tensors)")));
                }
                names.push((name, i + 1));
                if let Some(s) = out_scale {
                    if !(s.is_finite() && *s > 0.0) {
                        return Err(bad(path, format!("{at}(`{name}`): `out_scale` must be a positive finite number, got {s}")));
                    }
                }
            }
            ops.push(match l {
                RawLayer::Conv2d { name, out_channels, kernel, stride, padding, relu, out_scale } => {
                    if flat {
                        return Err(bad(path, format!("{at}(`{name}`): conv2d after flatten")));
                    }
                    if *kernel == 0 || *stride == 0 || h + 2 * padding < *kernel || w + 2 * padding < *kernel {
                        return Err(bad(path, format!("{at}(`{name}`): kernel {kernel}, stride {stride}, padding {padding} do not fit a {h}x{w} input")));
                    }
                    let m = matrix(&st, &wpath, name, *out_channels, c * kernel * kernel, &[*out_channels, c, *kernel, *kernel], *relu, *out_scale)?;
                    let (ic, oh, ow) = (c, (h + 2 * padding - kernel) / stride + 1, (w + 2 * padding - kernel) / stride + 1);
                    (c, h, w) = (*out_channels, oh, ow);
                    Op::Conv { m, in_channels: ic, kernel: *kernel, stride: *stride, padding: *padding }
                }
                RawLayer::Linear { name, out_features, relu, out_scale } => {
                    if !flat && (h != 1 || w != 1) {
                        return Err(bad(path, format!("{at}(`{name}`): linear needs a flatten before it")));
                    }
                    let m = matrix(&st, &wpath, name, *out_features, c * h * w, &[*out_features, c * h * w], *relu, *out_scale)?;
                    (c, h, w) = (*out_features, 1, 1);
                    Op::Linear(m)
                }
                RawLayer::Maxpool { size } | RawLayer::Avgpool { size } => {
                    if *size == 0 || h < *size || w < *size {
                        return Err(bad(path, format!("{at}: pool size {size} does not fit a {h}x{w} input")));
                    }
                    (h, w) = (h / size, w / size);
                    if matches!(l, RawLayer::Maxpool { .. }) { Op::MaxPool(*size) } else { Op::AvgPool(*size) }
                }
                RawLayer::Flatten => {
                    flat = true;
                    Op::Flatten
                }
            });
        }
        Ok(Network {
            channels: raw.input.channels,
            height: raw.input.height,
            width: raw.input.width,
            input_scale: raw.input.scale,
            ops,
        })
    }

    /// Exact int8 inference of one image (`[c][h][w]` u8): the logits.
    pub fn infer(&self, image: &[u8]) -> Vec<f32> {
        let out: Result<Vec<Vec<f32>>> = self.forward(image, 1, |_, m, rows| Ok(matmul(rows, m)));
        out.expect("exact products cannot fail").remove(0)
    }

    /// Runs `count` images (`[count][c][h][w]` u8) through the network,
    /// taking every matrix layer's products from `product(matrix index,
    /// layer, input rows [rows][in])`, which returns sums `[rows][out]`.
    /// Conv layers give it every output position of every image (im2col).
    /// Returns each image's logits.
    pub fn forward(
        &self,
        images: &[u8],
        count: usize,
        mut product: impl FnMut(usize, &MatrixLayer, &[u8]) -> Result<Vec<f64>>,
    ) -> Result<Vec<Vec<f32>>> {
        let size = self.channels * self.height * self.width;
        let mut acts: Vec<Activation> = (0..count)
            .map(|i| Activation {
                c: self.channels,
                h: self.height,
                w: self.width,
                data: images[i * size..(i + 1) * size].to_vec(),
                scale: self.input_scale,
            })
            .collect();
        let mut index = 0;
        for op in &self.ops {
            let (m, lowered): (&MatrixLayer, Vec<Lowered>) = match op {
                Op::Conv {
                    m,
                    kernel,
                    stride,
                    padding,
                    ..
                } => (
                    m,
                    acts.par_iter()
                        .map(|a| im2col(a, *kernel, *stride, *padding))
                        .collect(),
                ),
                Op::Linear(m) => (m, acts.iter().map(|a| (a.data.clone(), 1, 1)).collect()),
                Op::MaxPool(s) | Op::AvgPool(s) => {
                    let max = matches!(op, Op::MaxPool(_));
                    acts = acts.par_iter().map(|a| pool(a, *s, max)).collect();
                    continue;
                }
                Op::Flatten => {
                    for a in &mut acts {
                        (a.c, a.h, a.w) = (a.c * a.h * a.w, 1, 1);
                    }
                    continue;
                }
            };
            let rows: Vec<u8> = lowered
                .iter()
                .flat_map(|(r, _, _)| r.iter().copied())
                .collect();
            let sums = product(index, m, &rows)?;
            index += 1;
            let logits = requantise(m, &mut acts, &lowered, &sums);
            if !logits.is_empty() {
                return Ok(logits);
            }
        }
        Ok(acts
            .iter()
            .map(|a| a.data.iter().map(|&v| v as f32 * a.scale).collect())
            .collect())
    }

    /// The matrix layers, in order.
    pub fn matrices(&self) -> Vec<&MatrixLayer> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Conv { m, .. } | Op::Linear(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Values per input image.
    pub fn image_size(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Turns a matrix layer's sums into each image's next activation (in
/// place), or, for the last layer, returns every image's logits (empty
/// otherwise). `lowered` is each image's (rows, out height, out width).
fn requantise(
    m: &MatrixLayer,
    acts: &mut [Activation],
    lowered: &[Lowered],
    sums: &[f64],
) -> Vec<Vec<f32>> {
    // Each image's sums start after the positions of the images before it.
    let starts: Vec<usize> = lowered
        .iter()
        .scan(0, |at, (_, oh, ow)| {
            let start = *at;
            *at += oh * ow;
            Some(start)
        })
        .collect();
    let done: Vec<Finished> = acts
        .par_iter()
        .zip(lowered)
        .zip(&starts)
        .map(|((a, (_, oh, ow)), &at)| {
            let positions = oh * ow;
            finish(
                m,
                &sums[at * m.outputs..(at + positions) * m.outputs],
                a.scale,
                positions,
            )
        })
        .collect();
    let mut logits = Vec::new();
    for ((a, (_, oh, ow)), d) in acts.iter_mut().zip(lowered).zip(done) {
        match d {
            Ok((data, scale)) => {
                *a = Activation {
                    c: m.outputs,
                    h: *oh,
                    w: *ow,
                    data,
                    scale,
                }
            }
            Err(l) => logits.push(l),
        }
    }
    logits
}

#[allow(clippy::too_many_arguments)]
fn matrix(
    st: &safetensors::SafeTensors,
    path: &Path,
    name: &str,
    outputs: usize,
    inputs: usize,
    shape: &[usize],
    relu: bool,
    out_scale: Option<f32>,
) -> Result<MatrixLayer> {
    let get = |suffix: &str| {
        st.tensor(&format!("{name}.{suffix}"))
            .map_err(|_| bad(path, format!("tensor `{name}.{suffix}` is missing")))
    };
    let w = get("weight")?;
    if w.dtype() != safetensors::Dtype::I8 || w.shape() != shape {
        return Err(bad(
            path,
            format!(
                "`{name}.weight` must be int8 of shape {shape:?}, got {:?} {:?}",
                w.dtype(),
                w.shape()
            ),
        ));
    }
    let f32s = |suffix: &str| -> Result<Vec<f32>> {
        let t = get(suffix)?;
        if t.dtype() != safetensors::Dtype::F32 || t.shape() != [outputs] {
            return Err(bad(
                path,
                format!(
                    "`{name}.{suffix}` must be float32 of shape [{outputs}], got {:?} {:?}",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        Ok(t.data()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect())
    };
    let weights: Vec<i32> = w.data().iter().map(|&b| b as i8 as i32).collect();
    let (scales, bias) = (f32s("scale")?, f32s("bias")?);
    for (suffix, v) in [("scale", &scales), ("bias", &bias)] {
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(bad(
                path,
                format!(
                    "`{name}.{suffix}` element {i} is {}; values must be finite",
                    v[i]
                ),
            ));
        }
    }
    if let Some(i) = weights.iter().position(|&v| v == -128) {
        return Err(bad(path, format!("`{name}.weight` element {i} is -128; symmetric int8 weights must be in [-127, 127]")));
    }
    Ok(MatrixLayer {
        name: name.into(),
        outputs,
        inputs,
        weights,
        scales,
        bias,
        relu,
        out_scale,
    })
}

/// Lowers a convolution's input to rows of patches: `[oh*ow][c*k*k]`, zero padding.
pub fn im2col(a: &Activation, k: usize, stride: usize, pad: usize) -> (Vec<u8>, usize, usize) {
    let oh = (a.h + 2 * pad - k) / stride + 1;
    let ow = (a.w + 2 * pad - k) / stride + 1;
    let cols = a.c * k * k;
    let mut out = vec![0u8; oh * ow * cols];
    for y in 0..oh {
        for x in 0..ow {
            let row = &mut out[(y * ow + x) * cols..(y * ow + x + 1) * cols];
            for c in 0..a.c {
                for i in 0..k {
                    for j in 0..k {
                        let (iy, ix) = (
                            (y * stride + i) as isize - pad as isize,
                            (x * stride + j) as isize - pad as isize,
                        );
                        if iy >= 0 && ix >= 0 && (iy as usize) < a.h && (ix as usize) < a.w {
                            row[(c * k + i) * k + j] =
                                a.data[(c * a.h + iy as usize) * a.w + ix as usize];
                        }
                    }
                }
            }
        }
    }
    (out, oh, ow)
}

/// Integer products of rows of inputs `[rows][in]` with the layer: `[rows][out]`.
pub fn matmul(rows: &[u8], m: &MatrixLayer) -> Vec<f64> {
    let n = rows.len() / m.inputs;
    let mut out = vec![0f64; n * m.outputs];
    for r in 0..n {
        let x = &rows[r * m.inputs..(r + 1) * m.inputs];
        for o in 0..m.outputs {
            let w = &m.weights[o * m.inputs..(o + 1) * m.inputs];
            out[r * m.outputs + o] = x
                .iter()
                .zip(w)
                .map(|(&a, &b)| a as i64 * b as i64)
                .sum::<i64>() as f64;
        }
    }
    out
}

impl MatrixLayer {
    /// The weights as the simulated arrays hold them: `[in][out]` (K x N).
    pub fn kn(&self) -> Vec<i32> {
        let mut w = vec![0i32; self.inputs * self.outputs];
        for o in 0..self.outputs {
            for k in 0..self.inputs {
                w[k * self.outputs + o] = self.weights[o * self.inputs + k];
            }
        }
        w
    }
}

/// Scales, bias, ReLU and requantisation of sums `[positions][out]` (exact
/// integers, or what simulated arrays read): the next activation
/// `[out][positions]` with its scale, or the logits.
pub fn finish(m: &MatrixLayer, acc: &[f64], in_scale: f32, positions: usize) -> Finished {
    let real = |p: usize, o: usize| {
        let v = in_scale * m.scales[o] * acc[p * m.outputs + o] as f32 + m.bias[o];
        if m.relu {
            v.max(0.0)
        } else {
            v
        }
    };
    match m.out_scale {
        None => Err((0..m.outputs)
            .flat_map(|o| (0..positions).map(move |p| (o, p)))
            .map(|(o, p)| real(p, o))
            .collect()),
        Some(s) => {
            let mut out = vec![0u8; m.outputs * positions];
            for o in 0..m.outputs {
                for p in 0..positions {
                    out[o * positions + p] =
                        (real(p, o) / s).round_ties_even().clamp(0.0, 255.0) as u8;
                }
            }
            Ok((out, s))
        }
    }
}

fn pool(a: &Activation, s: usize, max: bool) -> Activation {
    let (h, w) = (a.h / s, a.w / s);
    let mut data = vec![0u8; a.c * h * w];
    for c in 0..a.c {
        for y in 0..h {
            for x in 0..w {
                let vals = (0..s)
                    .flat_map(|i| (0..s).map(move |j| (i, j)))
                    .map(|(i, j)| a.data[(c * a.h + y * s + i) * a.w + x * s + j] as u32);
                data[(c * h + y) * w + x] = if max {
                    vals.max().unwrap_or(0) as u8
                } else {
                    let sum: u32 = vals.sum();
                    ((sum as f32) / (s * s) as f32).round_ties_even() as u8
                };
            }
        }
    }
    Activation {
        c: a.c,
        h,
        w,
        data,
        scale: a.scale,
    }
}
