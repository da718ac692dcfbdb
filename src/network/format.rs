//! Reading the model format of docs/NETWORK.md (versions 1 and 2) into a
//! checked [`Network`]: every layer's shape, input and tensors validated.

use super::{MatrixLayer, Network, Node, Op, Source};
use crate::error::{Error, Result};
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
        input: Option<String>,
        out_channels: usize,
        kernel: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default)]
        relu: bool,
        out_scale: Option<f32>,
        #[serde(default)]
        out_signed: bool,
    },
    Linear {
        name: String,
        input: Option<String>,
        out_features: usize,
        #[serde(default)]
        relu: bool,
        out_scale: Option<f32>,
        #[serde(default)]
        out_signed: bool,
    },
    Maxpool {
        name: Option<String>,
        input: Option<String>,
        size: usize,
    },
    Avgpool {
        name: Option<String>,
        input: Option<String>,
        size: usize,
    },
    #[serde(rename = "global_avgpool")]
    GlobalAvgpool {
        name: Option<String>,
        input: Option<String>,
    },
    Flatten {
        name: Option<String>,
        input: Option<String>,
    },
    Add {
        name: Option<String>,
        inputs: Vec<String>,
        #[serde(default)]
        relu: bool,
        out_scale: f32,
        #[serde(default)]
        out_signed: bool,
    },
}

fn one() -> usize {
    1
}

impl RawLayer {
    fn kind(&self) -> &'static str {
        match self {
            RawLayer::Conv2d { .. } => "conv2d",
            RawLayer::Linear { .. } => "linear",
            RawLayer::Maxpool { .. } => "maxpool",
            RawLayer::Avgpool { .. } => "avgpool",
            RawLayer::GlobalAvgpool { .. } => "global_avgpool",
            RawLayer::Flatten { .. } => "flatten",
            RawLayer::Add { .. } => "add",
        }
    }

    fn name(&self) -> Option<&str> {
        match self {
            RawLayer::Conv2d { name, .. } | RawLayer::Linear { name, .. } => Some(name),
            RawLayer::Maxpool { name, .. }
            | RawLayer::Avgpool { name, .. }
            | RawLayer::GlobalAvgpool { name, .. }
            | RawLayer::Flatten { name, .. }
            | RawLayer::Add { name, .. } => name.as_deref(),
        }
    }

    /// The layers it reads: `None` for "the previous layer".
    fn inputs(&self) -> Vec<Option<&str>> {
        match self {
            RawLayer::Conv2d { input, .. }
            | RawLayer::Linear { input, .. }
            | RawLayer::Maxpool { input, .. }
            | RawLayer::Avgpool { input, .. }
            | RawLayer::GlobalAvgpool { input, .. }
            | RawLayer::Flatten { input, .. } => vec![input.as_deref()],
            RawLayer::Add { inputs, .. } => inputs.iter().map(|s| Some(s.as_str())).collect(),
        }
    }

    /// What only version 2 has, if this layer uses it.
    fn needs_v2(&self) -> Option<&'static str> {
        match self {
            RawLayer::Add { .. } => Some("`add` layers"),
            RawLayer::GlobalAvgpool { .. } => Some("`global_avgpool` layers"),
            RawLayer::Conv2d {
                out_signed: true, ..
            }
            | RawLayer::Linear {
                out_signed: true, ..
            } => Some("`out_signed`"),
            l if l.inputs().iter().any(|i| i.is_some()) => Some("`input`"),
            RawLayer::Maxpool { name: Some(_), .. }
            | RawLayer::Avgpool { name: Some(_), .. }
            | RawLayer::Flatten { name: Some(_), .. } => {
                Some("names on pooling and flatten layers")
            }
            _ => None,
        }
    }
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::config(path.display().to_string(), msg)
}

/// A tensor's shape and type as the graph is checked.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shape {
    c: usize,
    h: usize,
    w: usize,
    /// Flattened (after `flatten`).
    flat: bool,
    signed: bool,
}

fn check_scale(path: &Path, at: &str, s: f32) -> Result<()> {
    if s.is_finite() && s > 0.0 {
        Ok(())
    } else {
        Err(bad(
            path,
            format!("{at}`out_scale` must be a positive finite number, got {s}"),
        ))
    }
}

pub(super) fn load(path: &Path) -> Result<Network> {
    let text = crate::io::read_regular_text(path)?;
    let raw: RawModel =
        toml::from_str(&text).map_err(|e| bad(path, e.message().trim().replace('\n', " ")))?;
    if raw.version != 1 && raw.version != 2 {
        return Err(bad(
            path,
            format!("`version` must be 1 or 2, got {}", raw.version),
        ));
    }
    let wpath = path.parent().unwrap_or(Path::new(".")).join(&raw.weights);
    let bytes = crate::io::read_regular(&wpath)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(&wpath, format!("not a readable safetensors file: {e}")))?;
    let inp = &raw.input;
    if !(inp.scale.is_finite() && inp.scale > 0.0) {
        return Err(bad(
            path,
            format!(
                "`input.scale` must be a positive finite number, got {}",
                inp.scale
            ),
        ));
    }
    if inp.channels == 0 || inp.height == 0 || inp.width == 0 {
        return Err(bad(
            path,
            format!(
                "`input` must have at least one channel, row and column, got {}x{}x{}",
                inp.channels, inp.height, inp.width
            ),
        ));
    }
    if raw.layer.is_empty() {
        return Err(bad(path, "the model has no `[[layer]]`"));
    }
    let image = Shape {
        c: inp.channels,
        h: inp.height,
        w: inp.width,
        flat: false,
        signed: false,
    };
    let mut shapes: Vec<Shape> = Vec::new();
    let mut names: Vec<(String, usize)> = Vec::new();
    let mut nodes = Vec::new();
    for (i, l) in raw.layer.iter().enumerate() {
        let at = match l.name() {
            Some(n) => format!("layer {} (`{n}`): ", i + 1),
            None => format!("layer {} ({}): ", i + 1, l.kind()),
        };
        if raw.version == 1 {
            if let Some(what) = l.needs_v2() {
                return Err(bad(path, format!("{at}{what} need `version = 2`")));
            }
        }
        if let Some(name) = l.name() {
            if name == "input" {
                return Err(bad(
                    path,
                    format!("{at}`input` names the image; choose another layer name"),
                ));
            }
            if let Some((_, first)) = names.iter().find(|(n, _)| n == name) {
                return Err(bad(path, format!("{at}the name `{name}` is also layer {first}'s; each layer needs its own name")));
            }
            names.push((name.to_string(), i + 1));
        }
        if i > 0 && nodes.last().is_some_and(|n: &Node| n.is_logits()) {
            return Err(bad(path, format!("{at}follows a layer without `out_scale`, which ends the network (its outputs are the logits)")));
        }
        let mut sources = Vec::new();
        for input in l.inputs() {
            sources.push(match input {
                None if i == 0 => Source::Image,
                None => Source::Node(i - 1),
                Some("input") => Source::Image,
                Some(n) => match names.iter().find(|(m, _)| m == n) {
                    Some((_, j)) if *j < i + 1 => Source::Node(j - 1),
                    _ => {
                        return Err(bad(path, format!("{at}input `{n}` is not an earlier layer's name (or `input`, the image)")));
                    }
                },
            });
        }
        let shape_of = |s: &Source| match s {
            Source::Image => image,
            Source::Node(j) => shapes[*j],
        };
        let x = shape_of(&sources[0]);
        let (op, out) = match l {
            RawLayer::Conv2d {
                name,
                out_channels,
                kernel,
                stride,
                padding,
                relu,
                out_scale,
                out_signed,
                ..
            } => {
                if x.flat {
                    return Err(bad(path, format!("{at}conv2d after flatten")));
                }
                if *out_channels == 0
                    || *kernel == 0
                    || *stride == 0
                    || x.h + 2 * padding < *kernel
                    || x.w + 2 * padding < *kernel
                {
                    return Err(bad(path, format!("{at}{out_channels} channels, kernel {kernel}, stride {stride}, padding {padding} do not fit a {}x{} input", x.h, x.w)));
                }
                if let Some(s) = out_scale {
                    check_scale(path, &at, *s)?;
                }
                let m = matrix(
                    &st,
                    &wpath,
                    name,
                    (*out_channels, x.c * kernel * kernel),
                    &[*out_channels, x.c, *kernel, *kernel],
                    (*relu, *out_scale, *out_signed, x.signed),
                )?;
                let (oh, ow) = (
                    (x.h + 2 * padding - kernel) / stride + 1,
                    (x.w + 2 * padding - kernel) / stride + 1,
                );
                (
                    Op::Conv {
                        m,
                        in_channels: x.c,
                        kernel: *kernel,
                        stride: *stride,
                        padding: *padding,
                    },
                    Shape {
                        c: *out_channels,
                        h: oh,
                        w: ow,
                        flat: false,
                        signed: *out_signed,
                    },
                )
            }
            RawLayer::Linear {
                name,
                out_features,
                relu,
                out_scale,
                out_signed,
                ..
            } => {
                if !x.flat && (x.h != 1 || x.w != 1) {
                    return Err(bad(path, format!("{at}linear needs a flatten before it")));
                }
                if *out_features == 0 {
                    return Err(bad(path, format!("{at}`out_features` must be at least 1")));
                }
                if let Some(s) = out_scale {
                    check_scale(path, &at, *s)?;
                }
                let k = x.c * x.h * x.w;
                let m = matrix(
                    &st,
                    &wpath,
                    name,
                    (*out_features, k),
                    &[*out_features, k],
                    (*relu, *out_scale, *out_signed, x.signed),
                )?;
                (
                    Op::Linear(m),
                    Shape {
                        c: *out_features,
                        h: 1,
                        w: 1,
                        flat: true,
                        signed: *out_signed,
                    },
                )
            }
            RawLayer::Maxpool { size, .. } | RawLayer::Avgpool { size, .. } => {
                if x.flat || *size == 0 || x.h < *size || x.w < *size {
                    return Err(bad(
                        path,
                        format!("{at}pool size {size} does not fit a {}x{} input", x.h, x.w),
                    ));
                }
                let op = if matches!(l, RawLayer::Maxpool { .. }) {
                    Op::MaxPool(*size)
                } else {
                    Op::AvgPool(*size)
                };
                (
                    op,
                    Shape {
                        h: x.h / size,
                        w: x.w / size,
                        ..x
                    },
                )
            }
            RawLayer::GlobalAvgpool { .. } => {
                if x.flat {
                    return Err(bad(path, format!("{at}global_avgpool after flatten")));
                }
                (Op::GlobalAvgPool, Shape { h: 1, w: 1, ..x })
            }
            RawLayer::Flatten { .. } => (
                Op::Flatten,
                Shape {
                    c: x.c * x.h * x.w,
                    h: 1,
                    w: 1,
                    flat: true,
                    signed: x.signed,
                },
            ),
            RawLayer::Add {
                relu,
                out_scale,
                out_signed,
                ..
            } => {
                if sources.len() != 2 {
                    return Err(bad(
                        path,
                        format!("{at}`inputs` must name two layers, got {}", sources.len()),
                    ));
                }
                let y = shape_of(&sources[1]);
                if (x.c, x.h, x.w) != (y.c, y.h, y.w) {
                    return Err(bad(
                        path,
                        format!(
                            "{at}adds a {}x{}x{} tensor to a {}x{}x{} one; the shapes must match",
                            x.c, x.h, x.w, y.c, y.h, y.w
                        ),
                    ));
                }
                check_scale(path, &at, *out_scale)?;
                (
                    Op::Add {
                        relu: *relu,
                        out_scale: *out_scale,
                        out_signed: *out_signed,
                    },
                    Shape {
                        flat: x.flat && y.flat,
                        signed: *out_signed,
                        ..x
                    },
                )
            }
        };
        shapes.push(out);
        nodes.push(Node {
            name: l.name().map(str::to_string),
            op,
            inputs: sources,
        });
    }
    if !nodes.last().is_some_and(Node::is_logits) {
        return Err(bad(path, "the last layer must be a conv2d or linear layer without `out_scale`: its outputs are the logits"));
    }
    Ok(Network {
        channels: inp.channels,
        height: inp.height,
        width: inp.width,
        input_scale: inp.scale,
        nodes,
    })
}

/// Reads and checks one matrix layer's tensors. `dims` is (outputs,
/// inputs); `flags` is (relu, out_scale, out_signed, signed_input).
fn matrix(
    st: &safetensors::SafeTensors,
    path: &Path,
    name: &str,
    dims: (usize, usize),
    shape: &[usize],
    flags: (bool, Option<f32>, bool, bool),
) -> Result<MatrixLayer> {
    let (outputs, inputs) = dims;
    let (relu, out_scale, out_signed, signed_input) = flags;
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
        out_signed,
        signed_input,
    })
}
