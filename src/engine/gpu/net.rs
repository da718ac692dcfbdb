//! Whole networks on the GPU. A chip's forward pass for a batch of images
//! stays on the device: the host uploads the images once, each matrix
//! layer's plan once, and reads back one prediction per (chip, image), and
//! logits only where asked. Between the simulated arrays (the kernels of
//! `shaders/simulate.wgsl`) run the kernels of `shaders/network.wgsl`:
//! im2col lowering with the input coding, the converted-plane flags,
//! requantisation, pooling, residual adds and the argmax, operation for
//! operation those of `network::Network::forward`. Several chips and many
//! images go through each dispatch, as memory allows.
//!
//! The engine layer knows no model format: a [`Program`] lists the steps
//! in its own terms, and the network layer above translates a model into
//! it (`sweep::device`).

use super::{check_limits, simulate_threads, GpuEngine, Params};
use crate::engine::wgsl::{binding, net_binding, Binding, BINDINGS, NET_BINDINGS};
use crate::error::{Error, Result};
use crate::experiment::plan::Plan;
use crate::model::InputCoding;
use bytemuck::{Pod, Zeroable};
use std::ops::Range;

/// Step parameters; mirrors `struct NetParams` in `shaders/network.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct NetParams {
    pub trials: u32,
    pub images: u32,
    pub image0: u32,
    pub from_image: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub size: u32,
    pub kh: u32,
    pub kw: u32,
    pub stride: u32,
    pub pad: u32,
    pub oh: u32,
    pub ow: u32,
    pub k: u32,
    pub n: u32,
    pub coding: u32,
    pub bits: u32,
    pub chunks: u32,
    pub p: u32,
    pub xbits: u32,
    pub skip: u32,
    pub relu: u32,
    pub signed: u32,
    pub logits: u32,
    pub max_pool: u32,
    pub pad1: u32,
    pub pad2: u32,
    pub scale_a: f32,
    pub scale_b: f32,
    pub out_scale: f32,
    pub pad3: f32,
}

/// An activation's shape per image: channels, height, width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    /// Values per image.
    pub fn size(&self) -> usize {
        self.c * self.h * self.w
    }
}

/// Where a step reads an activation: the images, or a value an earlier
/// step wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    Image,
    Value(usize),
}

/// A matrix layer on simulated arrays: the lowering of `src` (of shape
/// `input`) by a `kernel` x `kernel` window (a linear layer is a 1 x 1
/// window over `[c h w][1][1]`), plan `plan`'s arrays, then `out =
/// chan[o].0 * sum + chan[o].1`, ReLU, and requantisation by `out_scale`
/// into value `dst`; without `out_scale` the outputs are the logits, and
/// the program ends.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub plan: usize,
    pub src: Src,
    pub input: Shape,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    /// Output height and width (positions).
    pub out: (usize, usize),
    /// Array row `r` holds input `perm[r]`; `None` in the natural order.
    pub perm: Option<Vec<usize>>,
    /// Per output: the input scale times the output's weight scale (as the
    /// CPU multiplies them, in f32), and the bias.
    pub chan: Vec<[f32; 2]>,
    pub relu: bool,
    pub out_scale: Option<f32>,
    pub signed: bool,
    pub dst: usize,
}

/// One step of a [`Program`].
#[derive(Clone, Debug)]
pub enum Step {
    Matrix(Matrix),
    /// Max or average (rounded half to even) over non-overlapping windows
    /// of `window` (height, width).
    Pool {
        src: Src,
        input: Shape,
        window: (usize, usize),
        max: bool,
        dst: usize,
    },
    /// `scales.0 a + scales.1 b`, ReLU, requantised.
    Add {
        a: Src,
        b: Src,
        shape: Shape,
        scales: (f32, f32),
        relu: bool,
        out_scale: f32,
        signed: bool,
        dst: usize,
    },
}

/// A network's forward pass in the engine's terms: the images' shape, the
/// steps in order, and the shape of every value a step writes.
#[derive(Clone, Debug)]
pub struct Program {
    pub image: Shape,
    pub steps: Vec<Step>,
    pub values: Vec<Shape>,
}

impl Program {
    /// The logits step (the last).
    fn logits(&self) -> Result<&Matrix> {
        match self.steps.last() {
            Some(Step::Matrix(m)) if m.out_scale.is_none() => Ok(m),
            _ => Err(Error::Gpu(
                "a device program ends with its logits layer".into(),
            )),
        }
    }

    /// Logits per image.
    pub fn logits_per_image(&self) -> Result<usize> {
        let m = self.logits()?;
        Ok(m.chan.len() * m.out.0 * m.out.1)
    }
}

/// The network kernels and their bind group layout.
pub(super) struct Kernels {
    layout: wgpu::BindGroupLayout,
    lower: wgpu::ComputePipeline,
    active: wgpu::ComputePipeline,
    requant: wgpu::ComputePipeline,
    pool: wgpu::ComputePipeline,
    add: wgpu::ComputePipeline,
    argmax: wgpu::ComputePipeline,
}

impl Kernels {
    pub(super) fn new(device: &wgpu::Device, layout: wgpu::BindGroupLayout) -> Kernels {
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("network"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("network.wgsl"),
            source: wgpu::ShaderSource::Wgsl(crate::engine::wgsl::network_source().into()),
        });
        let pipeline = |entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pl),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        Kernels {
            lower: pipeline("lower"),
            active: pipeline("converted"),
            requant: pipeline("requant"),
            pool: pipeline("pool"),
            add: pipeline("add"),
            argmax: pipeline("argmax"),
            layout,
        }
    }
}

/// Device memory a network run may use when `ZEBRA_GPU_MEMORY_MIB` is not
/// set: 4 GiB on a hardware adapter, 512 MiB on a software one.
const MEMORY_MIB: (u64, u64) = (4096, 512);

/// Chips in flight at most, on hardware and software adapters.
const MAX_CHIPS: (u32, u32) = (256, 16);

/// The memory budget: `ZEBRA_GPU_MEMORY_MIB` if set, else [`MEMORY_MIB`].
pub fn memory_budget(software: bool) -> Result<u64> {
    let mib = match std::env::var("ZEBRA_GPU_MEMORY_MIB") {
        Err(_) if software => MEMORY_MIB.1,
        Err(_) => MEMORY_MIB.0,
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(m) if (16..=1 << 20).contains(&m) => m,
            _ => {
                return Err(Error::Config {
                    file: "ZEBRA_GPU_MEMORY_MIB".into(),
                    msg: format!(
                        "{v:?} is not a size; accepted: whole MiB from 16 to 1048576 (device memory a network run may use)"
                    ),
                })
            }
        },
    };
    Ok(mib << 20)
}

/// What one chip and one image need on the device, in bytes: per binding
/// the largest of any step, and in all.
#[derive(Clone, Copy, Debug, Default)]
struct Footprint {
    /// The largest single buffer per (chip, image).
    largest: u64,
    /// All buffers per (chip, image).
    total: u64,
    /// Cell weights per chip, all layers; the largest layer's.
    weights: u64,
    weights_largest: u64,
}

/// The shared buffers' words per (chip, image).
#[derive(Clone, Copy, Debug, Default)]
struct Words {
    x: u64,
    active: u64,
    y: u64,
    slot: u64,
    logits: u64,
}

/// A matrix step's simulation buffers and bind groups.
struct Layer {
    params: wgpu::Buffer,
    sim: wgpu::BindGroup,
    _own: Vec<wgpu::Buffer>,
}

/// A network uploaded to a GPU engine, ready to run chips.
pub struct DeviceNet<'a> {
    gpu: &'a GpuEngine,
    program: &'a Program,
    plans: &'a [Plan],
    count: usize,
    /// Chips and images per dispatch.
    chips: u32,
    batch: u32,
    nlogits: usize,
    /// Per step: its parameters and network bind group; matrix steps also
    /// their layer.
    steps: Vec<(wgpu::Buffer, wgpu::BindGroup, Option<Layer>)>,
    argmax: (wgpu::Buffer, wgpu::BindGroup),
    preds: wgpu::Buffer,
    logits: wgpu::Buffer,
    read_preds: wgpu::Buffer,
    read_logits: wgpu::Buffer,
    _shared: Vec<wgpu::Buffer>,
}

/// One chip's predictions for every image, and its logits `[image][logit]`
/// where asked.
#[derive(Clone, Debug, Default)]
pub struct ChipOutput {
    pub preds: Vec<u32>,
    pub logits: Vec<f32>,
}

fn coding_code(c: InputCoding) -> u32 {
    match c {
        InputCoding::Unsigned => 0,
        InputCoding::TwosComplement => 1,
        InputCoding::SignMagnitude => 2,
    }
}

/// Assigns each value an activation buffer (slot): a value takes a free
/// slot when written and frees it after its last reader. Returns each
/// value's slot and the number of slots.
fn assign_slots(program: &Program) -> (Vec<usize>, usize) {
    let nv = program.values.len();
    let reads = |s: &Step| -> Vec<Src> {
        match s {
            Step::Matrix(m) => vec![m.src],
            Step::Pool { src, .. } => vec![*src],
            Step::Add { a, b, .. } => vec![*a, *b],
        }
    };
    let writes = |s: &Step| -> Option<usize> {
        match s {
            Step::Matrix(m) if m.out_scale.is_none() => None,
            Step::Matrix(m) => Some(m.dst),
            Step::Pool { dst, .. } | Step::Add { dst, .. } => Some(*dst),
        }
    };
    let mut last = vec![0usize; nv];
    for (i, s) in program.steps.iter().enumerate() {
        if let Some(d) = writes(s) {
            last[d] = last[d].max(i);
        }
        for r in reads(s) {
            if let Src::Value(v) = r {
                last[v] = i;
            }
        }
    }
    let mut slot_of = vec![usize::MAX; nv];
    let mut holder: Vec<Option<usize>> = Vec::new();
    for (i, s) in program.steps.iter().enumerate() {
        if let Some(d) = writes(s) {
            let free = holder.iter().position(Option::is_none);
            let slot = free.unwrap_or_else(|| {
                holder.push(None);
                holder.len() - 1
            });
            holder[slot] = Some(d);
            slot_of[d] = slot;
        }
        for h in holder.iter_mut() {
            if h.is_some_and(|v| last[v] <= i) {
                *h = None;
            }
        }
    }
    (slot_of, holder.len().max(1))
}

/// A bind group of `table`'s slots: the buffers of `pairs` (slot, buffer),
/// and `dummies[slot]` for the slots they leave out.
fn bind_group(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    table: &[Binding],
    pairs: &[(u32, &wgpu::Buffer)],
    dummies: &[wgpu::Buffer],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = table
        .iter()
        .map(|b| {
            let buf = pairs
                .iter()
                .find(|(s, _)| *s == b.slot)
                .map_or(&dummies[b.slot as usize], |(_, buf)| *buf);
            wgpu::BindGroupEntry {
                binding: b.slot,
                resource: buf.as_entire_binding(),
            }
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("network"),
        layout,
        entries: &entries,
    })
}

impl GpuEngine {
    /// Uploads `program` (its matrix layers' `plans`) and `count` images
    /// (`[count][c][h][w]` bytes; kept on the device for later programs
    /// over the same images) for runs of up to `chips` chips.
    pub fn network<'a>(
        &'a mut self,
        program: &'a Program,
        plans: &'a [Plan],
        images: &[u8],
        count: usize,
        chips: u32,
    ) -> Result<DeviceNet<'a>> {
        self.upload_images(images);
        DeviceNet::new(self, program, plans, count, chips)
    }

    fn upload_images(&mut self, images: &[u8]) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        images.hash(&mut h);
        let key = h.finish();
        if self.images.as_ref().is_some_and(|(k, _)| *k == key) {
            return;
        }
        let mut bytes = images.to_vec();
        bytes.resize(images.len().div_ceil(4).max(1) * 4, 0);
        let buffer = self.storage_buffer("images", &bytes);
        self.images = Some((key, buffer));
    }

    /// The largest buffer a binding may be here (1 GiB at most, so every
    /// kernel index fits in 32 bits).
    fn binding_limit(&self) -> u64 {
        self.info
            .max_storage_binding
            .min(self.max_buffer)
            .min(1 << 30)
    }
}

impl<'a> DeviceNet<'a> {
    fn new(
        gpu: &'a GpuEngine,
        program: &'a Program,
        plans: &'a [Plan],
        count: usize,
        chips: u32,
    ) -> Result<DeviceNet<'a>> {
        let nlogits = program.logits_per_image()?;
        let (slot_of, nslots) = assign_slots(program);
        // Words per (chip, image) of each shared buffer.
        let mut words = Words {
            logits: nlogits as u64,
            ..Words::default()
        };
        let mut weights = (0u64, 0u64);
        for step in &program.steps {
            if let Step::Matrix(m) = step {
                let plan = plans.get(m.plan).ok_or_else(|| {
                    Error::Gpu(format!(
                        "device program names plan {} of {}",
                        m.plan,
                        plans.len()
                    ))
                })?;
                let pos = (m.out.0 * m.out.1) as u64;
                let k = m.input.c * m.kernel * m.kernel;
                if plan.k != k
                    || plan.n != m.chan.len()
                    || m.perm.as_ref().is_some_and(|p| p.len() != k)
                {
                    return Err(Error::Gpu(format!(
                        "device program: plan {} is {} x {}, its step {k} x {}",
                        m.plan,
                        plan.k,
                        plan.n,
                        m.chan.len()
                    )));
                }
                check_limits(plan, count * pos as usize)?;
                words.x = words.x.max(pos * plan.k as u64);
                words.active = words.active.max(pos * (plan.chunks * plan.xbits) as u64);
                words.y = words.y.max(pos * plan.n as u64);
                let w = (plan.j * plan.k * plan.n * 4) as u64;
                weights = (weights.0 + w, weights.1.max(w));
            }
        }
        words.slot = program
            .values
            .iter()
            .map(|s| s.size() as u64)
            .max()
            .unwrap_or(1);
        let foot = Footprint {
            largest: 4 * [words.x, words.active, words.y, words.slot, words.logits]
                .into_iter()
                .max()
                .unwrap_or(1),
            total: 4
                * (words.x
                    + words.active
                    + words.y
                    + nslots as u64 * words.slot
                    + words.logits
                    + 1),
            weights: weights.0,
            weights_largest: weights.1,
        };
        let (chips, batch) = sizes(gpu, &foot, chips, count)?;
        let device = &gpu.device;
        let buffer = |label: &str, words: u64, usage: wgpu::BufferUsages| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (words * 4).max(4),
                usage,
                mapped_at_creation: false,
            })
        };
        let st = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let rd = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let un = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        let per = chips as u64 * batch as u64;
        let x = buffer("net x", per * words.x, st);
        let active = buffer("net active", per * words.active, st);
        let y = buffer("net y", per * words.y, st);
        let slots: Vec<wgpu::Buffer> = (0..nslots)
            .map(|_| buffer("net activation", per * words.slot, st))
            .collect();
        let logits = buffer("net logits", per * words.logits, st);
        let preds = buffer("net preds", per, st);
        let read_preds = buffer("net read preds", per, rd);
        let read_logits = buffer("net read logits", per * words.logits, rd);
        // Unused bindings take a small buffer of their own.
        let dummy = |label: &str| buffer(label, 1, st);
        let net_dummies: Vec<wgpu::Buffer> = NET_BINDINGS.iter().map(|b| dummy(b.name)).collect();
        let sim_dummies: Vec<wgpu::Buffer> = BINDINGS.iter().map(|b| dummy(b.name)).collect();
        let images = &gpu.images.as_ref().expect("images uploaded").1;
        let src = |s: Src| match s {
            Src::Image => None,
            Src::Value(v) => Some(&slots[slot_of[v]]),
        };
        let net_group = |pairs: &[(u32, &wgpu::Buffer)]| {
            bind_group(device, &gpu.net.layout, &NET_BINDINGS, pairs, &net_dummies)
        };
        use net_binding as nb;
        let mut steps = Vec::new();
        for step in &program.steps {
            let params = buffer(
                "net params",
                std::mem::size_of::<NetParams>() as u64 / 4,
                un,
            );
            let (group, layer) = match step {
                Step::Matrix(m) => {
                    let plan = &plans[m.plan];
                    let perm: Vec<u32> = match &m.perm {
                        Some(p) => p.iter().map(|&r| r as u32).collect(),
                        None => (0..plan.k as u32).collect(),
                    };
                    let perm = gpu.storage_buffer("net perm", bytemuck::cast_slice(&perm));
                    let chan = gpu.storage_buffer("net chan", bytemuck::cast_slice(&m.chan));
                    let out = match m.out_scale {
                        Some(_) => (nb::DST, &slots[slot_of[m.dst]]),
                        None => (nb::LOGITS, &logits),
                    };
                    let mut pairs = vec![
                        (nb::PARAMS, &params),
                        (nb::IMAGES, images),
                        (nb::PERM, &perm),
                        (nb::X, &x),
                        (nb::ACTIVE, &active),
                        (nb::Y, &y),
                        (nb::CHAN, &chan),
                        out,
                    ];
                    if let Some(b) = src(m.src) {
                        pairs.push((nb::SRC_A, b));
                    }
                    let group = net_group(&pairs);
                    // The layer's simulation bind group.
                    let sim_params =
                        buffer("layer params", std::mem::size_of::<Params>() as u64 / 4, un);
                    let cell_weights = buffer(
                        "layer weights",
                        chips as u64 * (plan.j * plan.k * plan.n) as u64,
                        st,
                    );
                    let own = gpu.plan_buffers(plan, None);
                    let mut pairs: Vec<(u32, &wgpu::Buffer)> =
                        own.iter().map(|(s, b)| (*s, b)).collect();
                    pairs.extend([
                        (binding::PARAMS, &sim_params),
                        (binding::X, &x),
                        (binding::ROW_ACTIVE, &active),
                        (binding::WEIGHTS, &cell_weights),
                        (binding::Y, &y),
                    ]);
                    let sim = bind_group(device, &gpu.layout, &BINDINGS, &pairs, &sim_dummies);
                    let mut keep: Vec<wgpu::Buffer> = own.into_iter().map(|(_, b)| b).collect();
                    keep.extend([perm, chan, cell_weights]);
                    (
                        group,
                        Some(Layer {
                            params: sim_params,
                            sim,
                            _own: keep,
                        }),
                    )
                }
                Step::Pool { src: s, dst, .. } => {
                    let mut pairs = vec![
                        (nb::PARAMS, &params),
                        (nb::IMAGES, images),
                        (nb::DST, &slots[slot_of[*dst]]),
                    ];
                    if let Some(b) = src(*s) {
                        pairs.push((nb::SRC_A, b));
                    }
                    (net_group(&pairs), None)
                }
                Step::Add { a, b, dst, .. } => {
                    let mut pairs = vec![
                        (nb::PARAMS, &params),
                        (nb::IMAGES, images),
                        (nb::DST, &slots[slot_of[*dst]]),
                    ];
                    if let Some(buf) = src(*a) {
                        pairs.push((nb::SRC_A, buf));
                    }
                    match src(*b) {
                        Some(buf) => pairs.push((nb::SRC_B, buf)),
                        None => {
                            return Err(Error::Gpu(
                                "the GPU's residual add reads its second input from a layer, not the image".into(),
                            ))
                        }
                    }
                    (net_group(&pairs), None)
                }
            };
            steps.push((params, group, layer));
        }
        let argmax_params = buffer(
            "argmax params",
            std::mem::size_of::<NetParams>() as u64 / 4,
            un,
        );
        let argmax_group = net_group(&[
            (nb::PARAMS, &argmax_params),
            (nb::LOGITS, &logits),
            (nb::PREDS, &preds),
        ]);
        let mut shared = vec![x, active, y];
        shared.extend(slots);
        shared.extend(net_dummies);
        shared.extend(sim_dummies);
        Ok(DeviceNet {
            gpu,
            program,
            plans,
            count,
            chips,
            batch,
            nlogits,
            steps,
            argmax: (argmax_params, argmax_group),
            preds,
            logits,
            read_preds,
            read_logits,
            _shared: shared,
        })
    }

    /// Chips and images per dispatch.
    pub fn dispatch_size(&self) -> (u32, u32) {
        (self.chips, self.batch)
    }

    /// Runs chips `trials` on every image: each chip's predictions, and with
    /// `logits` its logits. `done(k)` is called as each group of `k` chips
    /// finishes.
    pub fn run(
        &self,
        trials: Range<u32>,
        logits: bool,
        done: &dyn Fn(u32),
    ) -> Result<Vec<ChipOutput>> {
        let mut out: Vec<ChipOutput> = trials
            .clone()
            .map(|_| ChipOutput {
                preds: vec![0; self.count],
                logits: if logits {
                    vec![0.0; self.count * self.nlogits]
                } else {
                    Vec::new()
                },
            })
            .collect();
        let mut t0 = trials.start;
        while t0 < trials.end {
            let tc = (trials.end - t0).min(self.chips);
            self.cells(t0, tc);
            let mut i0 = 0;
            while i0 < self.count {
                let bc = (self.count - i0).min(self.batch as usize);
                self.forward(t0, tc, i0, bc, logits);
                let gpu = self.gpu;
                let preds: Vec<u32> =
                    bytemuck::cast_slice(&gpu.read(&self.read_preds, tc as u64 * bc as u64 * 4)?)
                        .to_vec();
                let lg: Vec<f32> = if logits {
                    bytemuck::cast_slice(&gpu.read(
                        &self.read_logits,
                        (tc as usize * bc * self.nlogits * 4) as u64,
                    )?)
                    .to_vec()
                } else {
                    Vec::new()
                };
                for t in 0..tc as usize {
                    let chip = &mut out[(t0 - trials.start) as usize + t];
                    chip.preds[i0..i0 + bc].copy_from_slice(&preds[t * bc..(t + 1) * bc]);
                    if logits {
                        let n = self.nlogits;
                        chip.logits[i0 * n..(i0 + bc) * n]
                            .copy_from_slice(&lg[t * bc * n..(t + 1) * bc * n]);
                    }
                }
                i0 += bc;
            }
            done(tc);
            t0 += tc;
        }
        Ok(out)
    }

    /// The simulation parameters of plan `plan` for chips `t0..t0 + tc` and
    /// rows `b` of images from `i0` at `pos` positions each.
    fn layer_params(plan: &Plan, t0: u32, tc: u32, i0: usize, bc: usize, pos: usize) -> Params {
        let b = bc * pos;
        Params {
            b: b as u32,
            b_offset: (i0 * pos) as u32,
            x_stride: (b * plan.k) as u32,
            active_stride: (b * plan.chunks * plan.xbits) as u32,
            ..GpuEngine::params(plan, t0, tc)
        }
    }

    /// Draws the cell weights of chips `t0..t0 + tc` for every layer.
    fn cells(&self, t0: u32, tc: u32) {
        let gpu = self.gpu;
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("network cells"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("network cells"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&gpu.cells);
            for (step, (_, _, layer)) in self.program.steps.iter().zip(&self.steps) {
                let (Step::Matrix(m), Some(layer)) = (step, layer) else {
                    continue;
                };
                let plan = &self.plans[m.plan];
                let params = Self::layer_params(plan, t0, tc, 0, 0, 0);
                gpu.queue
                    .write_buffer(&layer.params, 0, bytemuck::bytes_of(&params));
                pass.set_bind_group(0, &layer.sim, &[]);
                let (x, y) = gpu.grid(tc as u64 * (plan.j * plan.k * plan.nb()) as u64);
                pass.dispatch_workgroups(x, y, 1);
            }
        }
        gpu.queue.submit([enc.finish()]);
    }

    /// Submits the forward pass of chips `t0..t0 + tc` on images
    /// `i0..i0 + bc` and the copies of its predictions (and logits).
    fn forward(&self, t0: u32, tc: u32, i0: usize, bc: usize, logits: bool) {
        let gpu = self.gpu;
        let k = &gpu.net;
        let base = NetParams {
            trials: tc,
            images: bc as u32,
            image0: i0 as u32,
            ..NetParams::default()
        };
        // (chip, image) pairs of this dispatch.
        let per = tc as u64 * bc as u64;
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("network forward"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("network forward"),
                timestamp_writes: None,
            });
            let dispatch = |pass: &mut wgpu::ComputePass, threads: u64| {
                let (x, y) = gpu.grid(threads);
                pass.dispatch_workgroups(x, y, 1);
            };
            for (step, (params, group, layer)) in self.program.steps.iter().zip(&self.steps) {
                match step {
                    Step::Matrix(m) => {
                        let plan = &self.plans[m.plan];
                        let layer = layer.as_ref().expect("a matrix step has its layer");
                        let pos = m.out.0 * m.out.1;
                        let np = NetParams {
                            from_image: (m.src == Src::Image) as u32,
                            c: m.input.c as u32,
                            h: m.input.h as u32,
                            w: m.input.w as u32,
                            size: m.input.size() as u32,
                            kh: m.kernel as u32,
                            kw: m.kernel as u32,
                            stride: m.stride as u32,
                            pad: m.pad as u32,
                            oh: m.out.0 as u32,
                            ow: m.out.1 as u32,
                            k: plan.k as u32,
                            n: plan.n as u32,
                            coding: coding_code(plan.coding),
                            bits: plan.input_bits,
                            chunks: plan.chunks as u32,
                            p: plan.p as u32,
                            xbits: plan.xbits as u32,
                            skip: plan.mapping.skip_zero_inputs as u32,
                            relu: m.relu as u32,
                            signed: m.signed as u32,
                            logits: m.out_scale.is_none() as u32,
                            out_scale: m.out_scale.unwrap_or(1.0),
                            ..base
                        };
                        gpu.queue.write_buffer(params, 0, bytemuck::bytes_of(&np));
                        let lp = Self::layer_params(plan, t0, tc, i0, bc, pos);
                        gpu.queue
                            .write_buffer(&layer.params, 0, bytemuck::bytes_of(&lp));
                        let rows = per * pos as u64;
                        pass.set_bind_group(0, group, &[]);
                        pass.set_pipeline(&k.lower);
                        dispatch(&mut pass, rows * plan.k as u64);
                        pass.set_pipeline(&k.active);
                        dispatch(&mut pass, rows * plan.chunks as u64);
                        pass.set_bind_group(0, &layer.sim, &[]);
                        let (pipeline, threads) = simulate_threads(gpu, plan, bc * pos);
                        pass.set_pipeline(pipeline);
                        dispatch(&mut pass, tc as u64 * threads);
                        pass.set_bind_group(0, group, &[]);
                        pass.set_pipeline(&k.requant);
                        dispatch(&mut pass, rows * plan.n as u64);
                    }
                    Step::Pool {
                        src,
                        input,
                        window,
                        max,
                        ..
                    } => {
                        let (oh, ow) = (input.h / window.0, input.w / window.1);
                        let np = NetParams {
                            from_image: (*src == Src::Image) as u32,
                            c: input.c as u32,
                            h: input.h as u32,
                            w: input.w as u32,
                            size: input.size() as u32,
                            kh: window.0 as u32,
                            kw: window.1 as u32,
                            oh: oh as u32,
                            ow: ow as u32,
                            max_pool: *max as u32,
                            ..base
                        };
                        gpu.queue.write_buffer(params, 0, bytemuck::bytes_of(&np));
                        pass.set_bind_group(0, group, &[]);
                        pass.set_pipeline(&k.pool);
                        dispatch(&mut pass, per * (input.c * oh * ow) as u64);
                    }
                    Step::Add {
                        a,
                        shape,
                        scales,
                        relu,
                        out_scale,
                        signed,
                        ..
                    } => {
                        let np = NetParams {
                            from_image: (*a == Src::Image) as u32,
                            c: shape.c as u32,
                            h: shape.h as u32,
                            w: shape.w as u32,
                            size: shape.size() as u32,
                            relu: *relu as u32,
                            signed: *signed as u32,
                            scale_a: scales.0,
                            scale_b: scales.1,
                            out_scale: *out_scale,
                            ..base
                        };
                        gpu.queue.write_buffer(params, 0, bytemuck::bytes_of(&np));
                        pass.set_bind_group(0, group, &[]);
                        pass.set_pipeline(&k.add);
                        dispatch(&mut pass, per * shape.size() as u64);
                    }
                }
            }
            let np = NetParams {
                n: self.nlogits as u32,
                ..base
            };
            gpu.queue
                .write_buffer(&self.argmax.0, 0, bytemuck::bytes_of(&np));
            pass.set_bind_group(0, &self.argmax.1, &[]);
            pass.set_pipeline(&k.argmax);
            dispatch(&mut pass, per);
        }
        enc.copy_buffer_to_buffer(&self.preds, 0, &self.read_preds, 0, per * 4);
        if logits {
            let bytes = per * self.nlogits as u64 * 4;
            enc.copy_buffer_to_buffer(&self.logits, 0, &self.read_logits, 0, bytes);
        }
        gpu.queue.submit([enc.finish()]);
    }
}

/// Chips and images per dispatch for a network of footprint `foot`: as many
/// of `wanted` chips as fit (up to [`MAX_CHIPS`]), then as many of `count`
/// images as fit beside them, within the binding limit and the memory
/// budget.
fn sizes(gpu: &GpuEngine, foot: &Footprint, wanted: u32, count: usize) -> Result<(u32, u32)> {
    let limit = gpu.binding_limit();
    let software = gpu.info.software;
    let budget = match gpu.memory_budget {
        Some(b) => b,
        None => memory_budget(software)?,
    };
    let cap = if software { MAX_CHIPS.1 } else { MAX_CHIPS.0 };
    let mut chips = (wanted.max(1))
        .min(cap)
        .min((limit / foot.weights_largest.max(1)).min(u32::MAX as u64) as u32)
        .min((budget / 2 / foot.weights.max(1)).min(u32::MAX as u64) as u32)
        .max(1);
    loop {
        let c = chips as u64;
        let room = budget.saturating_sub(c * foot.weights);
        let images = (limit / (c * foot.largest.max(1)))
            .min(room / (c * foot.total.max(1)))
            .min(count.max(1) as u64);
        if images >= 1 {
            return Ok((chips, images as u32));
        }
        if chips == 1 {
            return Err(Error::Gpu(format!(
                "{}: one image of this network needs {} MiB of device buffers ({} MiB for its largest) beside {} MiB of cell weights, more than the {} MiB budget or the {} MiB binding limit; set ZEBRA_GPU_MEMORY_MIB higher or use --engine cpu",
                gpu.info.name,
                foot.total >> 20,
                foot.largest >> 20,
                foot.weights >> 20,
                budget >> 20,
                limit >> 20
            )));
        }
        chips /= 2;
    }
}
