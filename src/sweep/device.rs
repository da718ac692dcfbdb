//! A network's chips run whole on the GPU: the network and its simulated
//! arrays translated into the engine's device program
//! (`engine::gpu::net`), and the accuracies of many chips from it.

use crate::engine::gpu::net::{DeviceNet, Matrix, Program, Shape, Src, Step};
use crate::engine::gpu::GpuEngine;
use crate::error::{Error, Result};
use crate::network::{MatrixLayer, Network, Op, Source};
use crate::sweep::accuracy::{SimNetwork, Workload};
use std::ops::Range;

/// Whether accuracy runs on a GPU keep whole networks on the device:
/// `ZEBRA_GPU_RESIDENT` = 1 (the default) or 0 (each layer's products
/// cross to the host, as for any engine).
pub fn resident() -> Result<bool> {
    match std::env::var("ZEBRA_GPU_RESIDENT") {
        Err(_) => Ok(true),
        Ok(v) if v.trim() == "1" => Ok(true),
        Ok(v) if v.trim() == "0" => Ok(false),
        Ok(v) => Err(Error::Config {
            file: "ZEBRA_GPU_RESIDENT".into(),
            msg: format!("{v:?} is neither 0 nor 1; accepted: 1 (whole networks on the GPU, the default) or 0 (layer by layer through the host)"),
        }),
    }
}

/// A program being built: its steps and values.
struct Builder<'a> {
    sim: &'a SimNetwork,
    steps: Vec<Step>,
    values: Vec<Shape>,
    matrices: usize,
}

impl Builder<'_> {
    fn value(&mut self, shape: Shape) -> usize {
        self.values.push(shape);
        self.values.len() - 1
    }

    /// A matrix layer on input `src` (of `shape` at `scale`, lowered by a
    /// `kernel` window) with `out` positions; returns its output.
    #[allow(clippy::too_many_arguments)]
    fn matrix(
        &mut self,
        m: &MatrixLayer,
        (src, input, scale): (Src, Shape, f32),
        kernel: usize,
        stride: usize,
        pad: usize,
        out: (usize, usize),
    ) -> (Src, Shape, f32) {
        let plan = self.matrices;
        self.matrices += 1;
        let shape = Shape {
            c: m.outputs,
            h: out.0,
            w: out.1,
        };
        let dst = match m.out_scale {
            Some(_) => self.value(shape),
            None => usize::MAX,
        };
        self.steps.push(Step::Matrix(Matrix {
            plan,
            src,
            input,
            kernel,
            stride,
            pad,
            out,
            perm: self.sim.perms[plan].clone(),
            chan: m
                .scales
                .iter()
                .zip(&m.bias)
                .map(|(&s, &b)| [scale * s, b])
                .collect(),
            relu: m.relu,
            out_scale: m.out_scale,
            signed: m.out_signed,
            dst,
        }));
        (Src::Value(dst), shape, m.out_scale.unwrap_or(1.0))
    }

    /// A pooling step over `window`; returns its output.
    fn pool(
        &mut self,
        (src, input, scale): (Src, Shape, f32),
        window: (usize, usize),
        max: bool,
    ) -> (Src, Shape, f32) {
        let out = Shape {
            c: input.c,
            h: input.h / window.0,
            w: input.w / window.1,
        };
        let dst = self.value(out);
        self.steps.push(Step::Pool {
            src,
            input,
            window,
            max,
            dst,
        });
        (Src::Value(dst), out, scale)
    }
}

/// The device program of `net` on the arrays of `sim`.
pub fn program(net: &Network, sim: &SimNetwork) -> Program {
    let image = Shape {
        c: net.channels,
        h: net.height,
        w: net.width,
    };
    let mut b = Builder {
        sim,
        steps: Vec::new(),
        values: Vec::new(),
        matrices: 0,
    };
    // Each node's output: where it lives, its shape and its scale.
    let mut outs: Vec<(Src, Shape, f32)> = Vec::new();
    for node in &net.nodes {
        let get = |s: &Source| match s {
            Source::Image => (Src::Image, image, net.input_scale),
            Source::Node(j) => outs[*j],
        };
        let input = get(&node.inputs[0]);
        let (src, shape, scale) = input;
        let flat = Shape {
            c: shape.size(),
            h: 1,
            w: 1,
        };
        let out = match &node.op {
            Op::Conv {
                m,
                kernel,
                stride,
                padding,
                ..
            } => {
                let oh = (shape.h + 2 * padding - kernel) / stride + 1;
                let ow = (shape.w + 2 * padding - kernel) / stride + 1;
                b.matrix(m, input, *kernel, *stride, *padding, (oh, ow))
            }
            Op::Linear(m) => b.matrix(m, (src, flat, scale), 1, 1, 0, (1, 1)),
            Op::MaxPool(s) => b.pool(input, (*s, *s), true),
            Op::AvgPool(s) => b.pool(input, (*s, *s), false),
            Op::GlobalAvgPool => b.pool(input, (shape.h, shape.w), false),
            Op::Flatten => (src, flat, scale),
            Op::Add {
                relu,
                out_scale,
                out_signed,
            } => {
                let (other, _, other_scale) = get(&node.inputs[1]);
                let dst = b.value(shape);
                b.steps.push(Step::Add {
                    a: src,
                    b: other,
                    shape,
                    scales: (scale, other_scale),
                    relu: *relu,
                    out_scale: *out_scale,
                    signed: *out_signed,
                    dst,
                });
                (Src::Value(dst), shape, *out_scale)
            }
        };
        outs.push(out);
        if matches!(b.steps.last(), Some(Step::Matrix(m)) if m.out_scale.is_none()) {
            break;
        }
    }
    Program {
        image,
        steps: b.steps,
        values: b.values,
    }
}

/// Uploads the workload's network (on the arrays of `sim`) and images to
/// `gpu` for runs of up to `chips` chips, and hands the device to `f`.
fn with_device<T>(
    sim: &SimNetwork,
    work: &Workload,
    chips: u32,
    gpu: &mut GpuEngine,
    f: impl FnOnce(&DeviceNet, &Program) -> Result<T>,
) -> Result<T> {
    let program = program(&work.net, sim);
    let device = gpu.network(&program, &sim.plans, work.images(), work.count, chips)?;
    f(&device, &program)
}

/// The accuracy of every chip of `trials` with the whole network on `gpu`,
/// in trial order; `tick` once per chip.
pub fn chip_accuracies(
    sim: &SimNetwork,
    work: &Workload,
    trials: Range<u32>,
    gpu: &mut GpuEngine,
    tick: &(dyn Fn() + Sync),
) -> Result<Vec<f64>> {
    let chips = with_device(sim, work, trials.len() as u32, gpu, |device, _| {
        device.run(trials, false, &|k| (0..k).for_each(|_| tick()))
    })?;
    Ok(chips
        .iter()
        .map(|c| {
            let correct = c
                .preds
                .iter()
                .zip(&work.data.labels)
                .filter(|(&p, &y)| p == y as u32)
                .count();
            correct as f64 / work.count.max(1) as f64
        })
        .collect())
}

/// Chips and images per dispatch for `chips` chips of the workload on `gpu`.
pub fn dispatch_size(
    sim: &SimNetwork,
    work: &Workload,
    chips: u32,
    gpu: &mut GpuEngine,
) -> Result<(u32, u32)> {
    with_device(
        sim,
        work,
        chips,
        gpu,
        |device, _| Ok(device.dispatch_size()),
    )
}

/// Chip `trial`'s logits `[image][logit]` for the workload's images with
/// the whole network on `gpu` (for checks against the other engines).
pub fn chip_logits(
    sim: &SimNetwork,
    work: &Workload,
    trial: u32,
    gpu: &mut GpuEngine,
) -> Result<Vec<Vec<f32>>> {
    with_device(sim, work, 1, gpu, |device, program| {
        let n = program.logits_per_image()?;
        let chip = device.run(trial..trial + 1, true, &|_| {})?.remove(0);
        Ok(chip.logits.chunks(n).map(<[f32]>::to_vec).collect())
    })
}
