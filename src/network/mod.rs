//! Quantised networks: the model format of `docs/NETWORK.md` (a graph of
//! layers, read by `format`), its exact int8 reference inference, and the
//! im2col lowering that puts a convolution onto the same matrix-vector
//! products the simulated arrays compute.

mod format;

use crate::error::Result;
use crate::model::quantize::Quantizer;
use rayon::prelude::*;
use std::path::Path;

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
    /// Requantisation scale of the output; `None` for the logits.
    pub out_scale: Option<f32>,
    /// Output requantised to int8 (`[-127, 127]`) rather than uint8.
    pub out_signed: bool,
    /// Whether its inputs are int8 (signed) activations.
    pub signed_input: bool,
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
    GlobalAvgPool,
    Flatten,
    /// The sum of two activations (each with its own scale), requantised.
    Add {
        relu: bool,
        out_scale: f32,
        out_signed: bool,
    },
}

/// Where a layer's input comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Source {
    Image,
    /// The output of the node at this index.
    Node(usize),
}

/// A layer of the graph: its operation and its inputs.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: Option<String>,
    pub op: Op,
    pub inputs: Vec<Source>,
}

impl Node {
    /// Whether this is the logits layer (a matrix layer without `out_scale`).
    fn is_logits(&self) -> bool {
        matches!(&self.op, Op::Conv { m, .. } | Op::Linear(m) if m.out_scale.is_none())
    }
}

/// A quantised network: nodes in file order, each reading earlier ones.
#[derive(Clone, Debug)]
pub struct Network {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub input_scale: f32,
    pub nodes: Vec<Node>,
}

/// One image's input rows for a matrix layer, with its output height and width.
type Lowered = (Vec<i16>, usize, usize);

/// What [`finish`] gives: the next activation's values and scale, or the logits.
type Finished = std::result::Result<(Vec<i16>, f32), Vec<f32>>;

/// An activation tensor `[c][h][w]` (uint8 or int8 values) with its real-value scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Activation {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<i16>,
    pub scale: f32,
}

impl Network {
    /// Loads `model.toml` and the safetensors file it names (relative to it).
    pub fn load(path: &Path) -> Result<Network> {
        format::load(path)
    }

    /// The network with quantiser `q`'s term budgets applied to every matrix
    /// layer's weights (groups run along each output's inputs, in im2col
    /// order). The row order is the arrays' business, not the network's.
    pub fn quantized(&self, q: &Quantizer) -> Network {
        let mut net = self.clone();
        for node in &mut net.nodes {
            if let Op::Conv { m, .. } | Op::Linear(m) = &mut node.op {
                let mut w = m.kn();
                q.apply(&mut w, m.inputs, m.outputs, 8);
                for o in 0..m.outputs {
                    for k in 0..m.inputs {
                        m.weights[o * m.inputs + k] = w[k * m.outputs + o];
                    }
                }
            }
        }
        net
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
        mut product: impl FnMut(usize, &MatrixLayer, &[i16]) -> Result<Vec<f64>>,
    ) -> Result<Vec<Vec<f32>>> {
        let size = self.image_size();
        let image: Vec<Activation> = (0..count)
            .map(|i| Activation {
                c: self.channels,
                h: self.height,
                w: self.width,
                data: images[i * size..(i + 1) * size]
                    .iter()
                    .map(|&v| v as i16)
                    .collect(),
                scale: self.input_scale,
            })
            .collect();
        // Each output is dropped after the last layer that reads it.
        let mut last_use = vec![0usize; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            for s in &node.inputs {
                if let Source::Node(j) = s {
                    last_use[*j] = i;
                }
            }
        }
        let mut outs: Vec<Option<Vec<Activation>>> = vec![None; self.nodes.len()];
        let mut index = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            let get = |s: &Source| -> &[Activation] {
                match s {
                    Source::Image => &image,
                    Source::Node(j) => outs[*j].as_deref().expect("inputs precede their readers"),
                }
            };
            let acts = get(&node.inputs[0]);
            let (m, lowered): (&MatrixLayer, Vec<Lowered>) = match &node.op {
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
                op => {
                    let out = match op {
                        Op::MaxPool(s) => acts.par_iter().map(|a| pool(a, *s, true)).collect(),
                        Op::AvgPool(s) => acts.par_iter().map(|a| pool(a, *s, false)).collect(),
                        Op::GlobalAvgPool => acts.par_iter().map(global_avgpool).collect(),
                        Op::Flatten => acts
                            .iter()
                            .map(|a| Activation {
                                c: a.c * a.h * a.w,
                                h: 1,
                                w: 1,
                                ..a.clone()
                            })
                            .collect(),
                        Op::Add {
                            relu,
                            out_scale,
                            out_signed,
                        } => {
                            let other = get(&node.inputs[1]);
                            acts.par_iter()
                                .zip(other)
                                .map(|(a, b)| add(a, b, *relu, *out_scale, *out_signed))
                                .collect()
                        }
                        Op::Conv { .. } | Op::Linear(_) => unreachable!(),
                    };
                    outs[i] = Some(out);
                    release(&mut outs, &node.inputs, &last_use, i);
                    continue;
                }
            };
            let rows: Vec<i16> = lowered
                .iter()
                .flat_map(|(r, _, _)| r.iter().copied())
                .collect();
            let sums = product(index, m, &rows)?;
            index += 1;
            match requantise(m, acts, &lowered, &sums) {
                Ok(next) => outs[i] = Some(next),
                Err(logits) => return Ok(logits),
            }
            release(&mut outs, &node.inputs, &last_use, i);
        }
        unreachable!("a loaded network ends with its logits layer")
    }

    /// The matrix layers, in order.
    pub fn matrices(&self) -> Vec<&MatrixLayer> {
        self.nodes
            .iter()
            .filter_map(|node| match &node.op {
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

/// Drops the outputs whose last reader is node `i`.
fn release(outs: &mut [Option<Vec<Activation>>], inputs: &[Source], last_use: &[usize], i: usize) {
    for s in inputs {
        if let Source::Node(j) = s {
            if last_use[*j] == i {
                outs[*j] = None;
            }
        }
    }
}

/// Turns a matrix layer's sums into each image's next activation, or, for
/// the last layer, every image's logits (`Err`). `lowered` is each image's
/// (rows, out height, out width).
fn requantise(
    m: &MatrixLayer,
    acts: &[Activation],
    lowered: &[Lowered],
    sums: &[f64],
) -> std::result::Result<Vec<Activation>, Vec<Vec<f32>>> {
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
    if m.out_scale.is_none() {
        return Err(done.into_iter().map(|d| d.unwrap_err()).collect());
    }
    Ok(done
        .into_iter()
        .zip(lowered)
        .map(|(d, (_, oh, ow))| {
            let (data, scale) = d.expect("a layer with out_scale gives an activation");
            Activation {
                c: m.outputs,
                h: *oh,
                w: *ow,
                data,
                scale,
            }
        })
        .collect())
}

/// Lowers a convolution's input to rows of patches: `[oh*ow][c*k*k]`, zero padding.
pub fn im2col(a: &Activation, k: usize, stride: usize, pad: usize) -> (Vec<i16>, usize, usize) {
    let oh = (a.h + 2 * pad - k) / stride + 1;
    let ow = (a.w + 2 * pad - k) / stride + 1;
    let cols = a.c * k * k;
    let mut out = vec![0i16; oh * ow * cols];
    for y in 0..oh {
        for x in 0..ow {
            let row = &mut out[(y * ow + x) * cols..(y * ow + x + 1) * cols];
            for c in 0..a.c {
                for i in 0..k {
                    let iy = (y * stride + i) as isize - pad as isize;
                    if iy < 0 || iy as usize >= a.h {
                        continue;
                    }
                    let line = &a.data[(c * a.h + iy as usize) * a.w..][..a.w];
                    for j in 0..k {
                        let ix = (x * stride + j) as isize - pad as isize;
                        if ix >= 0 && (ix as usize) < a.w {
                            row[(c * k + i) * k + j] = line[ix as usize];
                        }
                    }
                }
            }
        }
    }
    (out, oh, ow)
}

/// Integer products of rows of inputs `[rows][in]` with the layer: `[rows][out]`.
pub fn matmul(rows: &[i16], m: &MatrixLayer) -> Vec<f64> {
    let n = rows.len() / m.inputs;
    let mut out = vec![0f64; n * m.outputs];
    out.par_chunks_mut(m.outputs)
        .enumerate()
        .for_each(|(r, y)| {
            let x = &rows[r * m.inputs..(r + 1) * m.inputs];
            for (o, y) in y.iter_mut().enumerate() {
                let w = &m.weights[o * m.inputs..(o + 1) * m.inputs];
                *y = x
                    .iter()
                    .zip(w)
                    .map(|(&a, &b)| a as i64 * b as i64)
                    .sum::<i64>() as f64;
            }
        });
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

/// Requantises a real value to the next activation's integer: round half
/// to even, clamped to uint8 `[0, 255]` or int8 `[-127, 127]`.
fn requantise_value(real: f32, scale: f32, signed: bool) -> i16 {
    let (lo, hi) = if signed {
        (-127.0, 127.0)
    } else {
        (0.0, 255.0)
    };
    (real / scale).round_ties_even().clamp(lo, hi) as i16
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
            let mut out = vec![0i16; m.outputs * positions];
            for o in 0..m.outputs {
                for p in 0..positions {
                    out[o * positions + p] = requantise_value(real(p, o), s, m.out_signed);
                }
            }
            Ok((out, s))
        }
    }
}

/// `real = s_a q_a + s_b q_b`, ReLU, requantised with `out_scale`.
fn add(a: &Activation, b: &Activation, relu: bool, out_scale: f32, signed: bool) -> Activation {
    let data = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| {
            let v = a.scale * x as f32 + b.scale * y as f32;
            requantise_value(if relu { v.max(0.0) } else { v }, out_scale, signed)
        })
        .collect();
    Activation {
        data,
        scale: out_scale,
        ..*a
    }
}

/// The mean of each channel, rounded half to even: `[c][1][1]`.
fn global_avgpool(a: &Activation) -> Activation {
    let area = a.h * a.w;
    let data = a
        .data
        .chunks(area)
        .map(|ch| {
            let sum: i32 = ch.iter().map(|&v| v as i32).sum();
            (sum as f32 / area as f32).round_ties_even() as i16
        })
        .collect();
    Activation {
        c: a.c,
        h: 1,
        w: 1,
        data,
        scale: a.scale,
    }
}

fn pool(a: &Activation, s: usize, max: bool) -> Activation {
    let (h, w) = (a.h / s, a.w / s);
    let mut data = vec![0i16; a.c * h * w];
    for c in 0..a.c {
        for y in 0..h {
            for x in 0..w {
                let vals = (0..s)
                    .flat_map(|i| (0..s).map(move |j| (i, j)))
                    .map(|(i, j)| a.data[(c * a.h + y * s + i) * a.w + x * s + j] as i32);
                data[(c * h + y) * w + x] = if max {
                    vals.max().unwrap_or(0) as i16
                } else {
                    let sum: i32 = vals.sum();
                    ((sum as f32) / (s * s) as f32).round_ties_even() as i16
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
