//! The GPU engine: WGSL compute shaders through wgpu (Vulkan, Metal, DX12).
//! It consumes the same plan as the CPU engine, draws the same random words,
//! and reduces errors to moments and histogram bins on the device, so only
//! summaries cross the bus unless raw errors are asked for.

pub mod net;

use super::wgsl::{
    self, binding, Access, Binding, BINDINGS, MAX_INPUT_PLANES, MAX_PLANES, NET_BINDINGS,
    WORKGROUP_SIZE,
};
use super::{block_layout, Engine};
use crate::engine::stats::{Batch, TrialMoments, BINS};
use crate::error::{Error, Result};
use crate::experiment::plan::{NoisePath, Plan};
use crate::model::rng::{Address, BlockLayout};
use bytemuck::{Pod, Zeroable};
use rayon::prelude::*;
use std::ops::Range;

/// Kernel parameters; mirrors `struct Params` in `shaders/simulate.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Params {
    pub k: u32,
    pub n: u32,
    pub b: u32,
    pub xbits: u32,
    pub j: u32,
    pub p: u32,
    pub chunks: u32,
    pub nb: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub trial0: u32,
    pub trials: u32,
    pub path: u32,
    pub adc_bits: u32,
    pub has_faults: u32,
    pub static_noise: u32,
    pub sigma: f32,
    pub read_sigma: f32,
    pub leak: f32,
    pub p_sa0: f32,
    pub p_sa01: f32,
    pub top: f32,
    pub fs_sigma: f32,
    pub adc_sigma_lsb: f32,
    /// Row of the first input vector in the random-number addresses.
    pub b_offset: u32,
    /// Words of `xin` per trial (0: every trial reads the same inputs).
    pub x_stride: u32,
    /// Words of `row_active` per trial (0: shared).
    pub active_stride: u32,
    /// Columns per workgroup of `simulate_tiled` ([`tile_cols`]).
    pub tile_cols: u32,
    /// The digital weight of each input plane (`plan.input_weights`), zero
    /// past the plan's planes.
    pub xweight: [[f32; 4]; MAX_INPUT_PLANES / 4],
}

/// One probe answer: four words, four Gaussians, and `(hi, lo)` of a product.
pub type ProbeResult = ([u32; 4], [f32; 4], (u32, u32));

/// Arguments of the block-index formulas for [`GpuEngine::probe_blocks`]:
/// input vector `b`, chunk `c`, input bit `i`, array row `k`, plane `j`,
/// block `blk` of the row.
#[derive(Clone, Copy, Debug)]
pub struct BlockProbe {
    pub layout: BlockLayout,
    pub b: usize,
    pub c: usize,
    pub i: usize,
    pub k: usize,
    pub j: usize,
    pub blk: usize,
}

/// What `zebra devices` shows of an adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_binding: u64,
    pub max_workgroups_per_dim: u32,
    pub max_invocations: u32,
    /// A CPU (software) adapter such as lavapipe.
    pub software: bool,
}

/// The backend names `WGPU_BACKEND` accepts (wgpu's, case-insensitive), as
/// a comma list.
pub const BACKEND_NAMES: [&str; 10] = [
    "vulkan", "vk", "metal", "mtl", "dx12", "d3d12", "gl", "gles", "opengl", "webgpu",
];

/// The backends `WGPU_BACKEND` asks for (all primary ones when unset). wgpu
/// itself skips unknown names, so `WGPU_BACKEND=bogus` would silently find no
/// adapter; an unknown name is refused here instead.
pub fn backends_from_env() -> Result<wgpu::Backends> {
    let Some(value) = std::env::var_os("WGPU_BACKEND") else {
        return Ok(wgpu::Backends::PRIMARY);
    };
    let text = value.to_string_lossy();
    let bad: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|b| !BACKEND_NAMES.contains(&b.to_lowercase().as_str()))
        .collect();
    if !bad.is_empty() {
        return Err(Error::Config {
            file: "WGPU_BACKEND".into(),
            msg: format!(
                "{text:?} names no backend this build knows ({}); accepted: vulkan, metal, dx12, gl (or vk, mtl, d3d12, gles, opengl, webgpu), or a comma list such as \"vulkan,gl\"",
                bad.iter().map(|b| format!("{b:?}")).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    Ok(wgpu::Backends::from_comma_list(&text))
}

/// Checks every environment variable the GPU engine reads
/// (`WGPU_BACKEND`, `ZEBRA_GPU_KERNELS`, `ZEBRA_GPU_MEMORY_MIB`), so a bad
/// value is refused before any work starts.
pub fn check_env() -> Result<()> {
    backends_from_env()?;
    KernelSet::from_env(false)?;
    net::memory_budget(false)?;
    Ok(())
}

fn instance() -> wgpu::Instance {
    // Checked by `backends_from_env` before any engine is built.
    let backends = backends_from_env().unwrap_or(wgpu::Backends::PRIMARY);
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

fn summary(a: &wgpu::Adapter) -> AdapterSummary {
    let info = a.get_info();
    let limits = a.limits();
    AdapterSummary {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: match info.device_type {
            wgpu::DeviceType::DiscreteGpu => "discrete",
            wgpu::DeviceType::IntegratedGpu => "integrated",
            wgpu::DeviceType::VirtualGpu => "virtual",
            wgpu::DeviceType::Cpu => "cpu",
            wgpu::DeviceType::Other => "other",
        }
        .to_string(),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        max_storage_binding: limits.max_storage_buffer_binding_size,
        max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
        max_invocations: limits.max_compute_invocations_per_workgroup,
        software: info.device_type == wgpu::DeviceType::Cpu,
    }
}

/// Every adapter wgpu finds (honouring `WGPU_BACKEND`).
pub fn list_adapters() -> Vec<AdapterSummary> {
    let inst = instance();
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(summary)
        .collect()
}

fn rank(s: &AdapterSummary) -> u32 {
    match s.device_type.as_str() {
        "discrete" => 0,
        "integrated" => 1,
        "virtual" => 2,
        "other" => 3,
        _ => 4,
    }
}

/// The adapter named (by case-insensitive substring) `wanted`, else the
/// best ranked one, software adapters only when `allow_software`; an error
/// lists the adapters found.
fn choose_adapter<'a>(
    adapters: &'a [wgpu::Adapter],
    wanted: Option<&str>,
    allow_software: bool,
) -> Result<&'a wgpu::Adapter> {
    let listing = || {
        let names: Vec<String> = adapters
            .iter()
            .map(summary)
            .map(|s| format!("{} ({}, {})", s.name, s.backend, s.device_type))
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join("; ")
        }
    };
    if let Some(w) = wanted {
        let lw = w.to_lowercase();
        return adapters
            .iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&lw))
            .ok_or_else(|| {
                Error::Gpu(format!(
                    "no adapter matches `{w}`; adapters found: {}",
                    listing()
                ))
            });
    }
    let mut best: Option<&wgpu::Adapter> = None;
    for a in adapters {
        let s = summary(a);
        if s.software && !allow_software {
            continue;
        }
        if best.is_none_or(|b| rank(&s) < rank(&summary(b))) {
            best = Some(a);
        }
    }
    best.ok_or_else(|| {
        Error::Gpu(format!(
            "no {}GPU adapter found (adapters: {}); install a Vulkan driver (e.g. Debian's mesa-vulkan-drivers) or use --engine cpu",
            if allow_software { "" } else { "hardware " },
            listing()
        ))
    })
}

/// A bind group layout with one entry per slot of `table` ([`BINDINGS`]
/// or [`NET_BINDINGS`]).
fn bind_group_layout(device: &wgpu::Device, table: &[Binding]) -> wgpu::BindGroupLayout {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = table
        .iter()
        .map(|b| wgpu::BindGroupLayoutEntry {
            binding: b.slot,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match b.access {
                    Access::Uniform => wgpu::BufferBindingType::Uniform,
                    Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("zebra"),
        entries: &entries,
    })
}

/// Which simulation kernels the engine runs. Both give the same sums in
/// the same order (the parity tests run both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSet {
    /// One thread per (block of four vectors, column) unpacking input bits
    /// itself (`simulate`), and per-thread conversion arrays
    /// (`simulate_dynamic`): the faster on software adapters.
    Plain,
    /// Input bits staged in workgroup memory (`simulate_tiled`) and
    /// conversions summed one at a time (`simulate_dynamic_stream`): for
    /// hardware GPUs, where int-to-float conversions and per-thread arrays
    /// are slow.
    Tiled,
}

impl KernelSet {
    /// The name `ZEBRA_GPU_KERNELS` takes.
    pub fn label(&self) -> &'static str {
        match self {
            KernelSet::Plain => "plain",
            KernelSet::Tiled => "tiled",
        }
    }

    /// `ZEBRA_GPU_KERNELS` if set (`plain` or `tiled`), else tiled on a
    /// hardware adapter and plain on a software one.
    pub fn from_env(software: bool) -> Result<KernelSet> {
        match std::env::var("ZEBRA_GPU_KERNELS") {
            Err(_) if software => Ok(KernelSet::Plain),
            Err(_) => Ok(KernelSet::Tiled),
            Ok(v) if v.trim() == "plain" => Ok(KernelSet::Plain),
            Ok(v) if v.trim() == "tiled" => Ok(KernelSet::Tiled),
            Ok(v) => Err(Error::Config {
                file: "ZEBRA_GPU_KERNELS".into(),
                msg: format!("{v:?} names no kernel set; accepted: plain or tiled (default: tiled on a hardware GPU, plain on a software one)"),
            }),
        }
    }
}

/// The GPU engine: device, pipelines and work buffers built once, reused across plans.
pub struct GpuEngine {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: AdapterSummary,
    layout: wgpu::BindGroupLayout,
    cells: wgpu::ComputePipeline,
    simulate: wgpu::ComputePipeline,
    simulate_dynamic: wgpu::ComputePipeline,
    simulate_tiled: wgpu::ComputePipeline,
    simulate_dynamic_stream: wgpu::ComputePipeline,
    kernels: KernelSet,
    reduce: wgpu::ComputePipeline,
    params: wgpu::Buffer,
    work: Option<Work>,
    loaded: Option<Loaded>,
    /// The network kernels (`shaders/network.wgsl`) and their layout.
    net: net::Kernels,
    /// The images of the network workload uploaded last, by content hash.
    images: Option<(u64, wgpu::Buffer)>,
    /// The adapter's largest buffer.
    max_buffer: u64,
    /// Device memory a network run may use, if set here rather than by
    /// `ZEBRA_GPU_MEMORY_MIB`.
    memory_budget: Option<u64>,
}

/// Buffers sized for a trial batch; grown when a plan needs more.
struct Work {
    weights: wgpu::Buffer,
    y: wgpu::Buffer,
    moments: wgpu::Buffer,
    hist: wgpu::Buffer,
    read_moments: wgpu::Buffer,
    read_hist: wgpu::Buffer,
    read_y: wgpu::Buffer,
    weights_bytes: u64,
    y_bytes: u64,
    trials: u32,
}

/// A plan's buffers and bind group.
struct Loaded {
    plan_id: u64,
    bind: wgpu::BindGroup,
    _buffers: Vec<wgpu::Buffer>,
    batch: u32,
}

impl GpuEngine {
    /// Opens an adapter: by name substring if given (or `WGPU_ADAPTER_NAME`),
    /// else the best hardware GPU, else (when `allow_software`) a software one.
    pub fn new(name: Option<&str>, allow_software: bool) -> Result<GpuEngine> {
        backends_from_env()?;
        let inst = instance();
        let adapters = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()));
        let wanted = name
            .map(str::to_string)
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok());
        let chosen = choose_adapter(&adapters, wanted.as_deref(), allow_software)?;
        let info = summary(chosen);
        let (device, queue) = pollster::block_on(chosen.request_device(&wgpu::DeviceDescriptor {
            label: Some("zebra"),
            required_features: wgpu::Features::empty(),
            required_limits: chosen.limits(),
            ..Default::default()
        }))
        .map_err(|e| Error::Gpu(format!("cannot open {}: {e}", info.name)))?;
        let layout = bind_group_layout(&device, &BINDINGS);
        let net = net::Kernels::new(&device, bind_group_layout(&device, &NET_BINDINGS));
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("zebra"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("simulate.wgsl"),
            source: wgpu::ShaderSource::Wgsl(wgsl::simulate_source().into()),
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
        let (cells, simulate, reduce) =
            (pipeline("cells"), pipeline("simulate"), pipeline("reduce"));
        let simulate_dynamic = pipeline("simulate_dynamic");
        let simulate_tiled = pipeline("simulate_tiled");
        let simulate_dynamic_stream = pipeline("simulate_dynamic_stream");
        let kernels = KernelSet::from_env(info.software)?;
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: std::mem::size_of::<Params>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuEngine {
            device,
            queue,
            info,
            layout,
            cells,
            simulate,
            simulate_dynamic,
            simulate_tiled,
            simulate_dynamic_stream,
            kernels,
            reduce,
            params,
            work: None,
            loaded: None,
            net,
            images: None,
            max_buffer: chosen.limits().max_buffer_size,
            memory_budget: None,
        })
    }

    /// The adapter in use.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.info
    }

    /// The simulation kernels in use.
    pub fn kernels(&self) -> KernelSet {
        self.kernels
    }

    /// Lets network runs use `bytes` of device memory from now on (instead
    /// of `ZEBRA_GPU_MEMORY_MIB` or its default); the results do not change.
    pub fn set_memory_budget(&mut self, bytes: u64) {
        self.memory_budget = Some(bytes);
    }

    /// Runs `kernels` from now on (the results do not change).
    pub fn set_kernels(&mut self, kernels: KernelSet) {
        self.kernels = kernels;
    }

    /// Evaluates the WGSL generator at `(address, block index)` pairs and the
    /// 16-bit-halves multiply at `(a, b)`: returns the four words, the four
    /// Gaussians and `(hi, lo)` of `a * b`, for the parity tests.
    pub fn probe(&self, requests: &[(Address, u64, u32, u32)]) -> Result<Vec<ProbeResult>> {
        let mut input: Vec<u32> = Vec::with_capacity(requests.len() * 8);
        for (addr, index, a, b) in requests {
            input.extend_from_slice(&[
                addr.seed as u32,
                (addr.seed >> 32) as u32,
                addr.trial,
                addr.stream,
            ]);
            input.extend_from_slice(&[*index as u32, (*index >> 32) as u32, *a, *b]);
        }
        let words = self.run_probe("probe", &input, requests.len(), 12)?;
        Ok(words
            .chunks(12)
            .map(|w| {
                let z = [
                    f32::from_bits(w[4]),
                    f32::from_bits(w[5]),
                    f32::from_bits(w[6]),
                    f32::from_bits(w[7]),
                ];
                ([w[0], w[1], w[2], w[3]], z, (w[8], w[9]))
            })
            .collect())
    }

    /// Evaluates the WGSL twins of the block-index formulas
    /// (`static_block`, `dynamic_block`, `read_block` in `shaders/rng.wgsl`)
    /// for the parity tests: per request, the three indices at `(b, c, i,
    /// k, j, blk)` of its layout. Every value must fit in 32 bits.
    pub fn probe_blocks(&self, requests: &[BlockProbe]) -> Result<Vec<[u64; 3]>> {
        let word = |v: usize| u32::try_from(v).expect("probe arguments fit in 32 bits");
        let mut input: Vec<u32> = Vec::with_capacity(requests.len() * 12);
        for r in requests {
            let l = &r.layout;
            input.extend(
                [
                    l.k, l.j, l.xbits, l.chunks, l.nb, r.b, r.c, r.i, r.k, r.j, r.blk, 0,
                ]
                .map(word),
            );
        }
        let words = self.run_probe("probe_blocks", &input, requests.len(), 8)?;
        let index = |w: &[u32]| w[0] as u64 | (w[1] as u64) << 32;
        Ok(words
            .chunks(8)
            .map(|w| [index(&w[0..2]), index(&w[2..4]), index(&w[4..6])])
            .collect())
    }

    /// Runs probe kernel `entry` of `shaders/probe.wgsl` with one thread per
    /// request on `input` (binding 0) and returns `out_words` words per
    /// request (binding 1).
    fn run_probe(
        &self,
        entry: &str,
        input: &[u32],
        requests: usize,
        out_words: usize,
    ) -> Result<Vec<u32>> {
        use wgpu::util::DeviceExt;
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("probe.wgsl"),
                source: wgpu::ShaderSource::Wgsl(wgsl::probe_source().into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        let inbuf = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("probe in"),
                contents: bytemuck::cast_slice(input),
                usage: wgpu::BufferUsages::STORAGE,
            });
        let bytes = (requests * out_words * 4) as u64;
        let outbuf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("probe out"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readbuf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("probe read"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("probe"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: inbuf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: outbuf.as_entire_binding(),
                },
            ],
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("probe"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("probe"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups((requests as u32).div_ceil(WORKGROUP_SIZE), 1, 1);
        }
        enc.copy_buffer_to_buffer(&outbuf, 0, &readbuf, 0, bytes);
        self.queue.submit([enc.finish()]);
        Ok(bytemuck::cast_slice(&self.read(&readbuf, bytes)?).to_vec())
    }

    fn storage_buffer(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        // Zero-length bindings are invalid: pad to one word.
        let data: Vec<u8> = if bytes.is_empty() {
            vec![0; 4]
        } else {
            bytes.to_vec()
        };
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &data,
                usage: wgpu::BufferUsages::STORAGE,
            })
    }

    fn ensure_work(&mut self, weights_bytes: u64, y_bytes: u64, trials: u32) {
        if let Some(w) = &self.work {
            if w.weights_bytes >= weights_bytes && w.y_bytes >= y_bytes && w.trials >= trials {
                return;
            }
        }
        let buf = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(4),
                usage,
                mapped_at_creation: false,
            })
        };
        let st = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let rd = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let mom = trials as u64 * 12;
        self.work = Some(Work {
            weights: buf("weights", weights_bytes, st),
            y: buf("y", y_bytes, st),
            moments: buf("moments", mom, st),
            hist: buf("hist", BINS as u64 * 4, st),
            read_moments: buf("read moments", mom, rd),
            read_hist: buf("read hist", BINS as u64 * 4, rd),
            read_y: buf("read y", y_bytes, rd),
            weights_bytes,
            y_bytes,
            trials,
        });
    }

    /// Trials per dispatch of the plan loaded last, if any (for diagnostics
    /// and tests).
    pub fn dispatch_trials(&self) -> Option<u32> {
        self.loaded.as_ref().map(|l| l.batch)
    }

    /// Trials per dispatch for `plan` when up to `max_trials` are wanted.
    fn batch(&self, plan: &Plan, max_trials: u32) -> Result<u32> {
        check_limits(plan, plan.b)?;
        let limit = (self.info.max_storage_binding).min(1 << 30);
        let (per_trial_w, per_trial_y) = per_trial_bytes(plan);
        // The digits buffer is as large as one trial's weights.
        if per_trial_w > limit || per_trial_y > limit {
            return Err(Error::Gpu(format!(
                "{}: one trial needs a {} MiB buffer, more than this adapter's storage binding limit of {} MiB; use --engine cpu",
                self.info.name,
                per_trial_w.max(per_trial_y) >> 20,
                limit >> 20
            )));
        }
        // Trials per dispatch: within the binding limit, 65535 reduce workgroups, and a
        // work cap that keeps each dispatch well under a second (lavapipe runs about
        // 3e9 cell-MACs/s on S; a large GPU needs many trials in flight to fill up).
        let work_cap = match (self.info.software, plan.path == NoisePath::PerCellDynamic) {
            (true, false) => 2e9,
            (true, true) => 2e8,
            (false, false) => 1e11,
            (false, true) => 1e10,
        };
        let by_work = (work_cap / plan.counters.cell_macs.max(1) as f64).max(1.0) as u64;
        let batch = (limit / per_trial_w)
            .min(limit / per_trial_y)
            .min(65_535)
            .min(by_work)
            .min(max_trials as u64)
            .clamp(1, 4096) as u32;
        Ok(batch)
    }

    /// Uploads a plan's buffers (once per plan) and sizes the work buffers
    /// for up to `max_trials` trials per dispatch.
    fn load(&mut self, plan: &Plan, max_trials: u32) -> Result<()> {
        let batch = self.batch(plan, max_trials)?;
        // A loaded plan is reused unless this call wants larger dispatches
        // than it was sized for (a short warm-up call must not fix the batch).
        if self
            .loaded
            .as_ref()
            .is_some_and(|l| l.plan_id == plan.id() && l.batch >= batch)
        {
            return Ok(());
        }
        self.loaded = None;
        let (per_trial_w, per_trial_y) = per_trial_bytes(plan);
        self.ensure_work(
            per_trial_w * batch as u64,
            per_trial_y * batch as u64,
            batch,
        );

        let buffers = self.plan_buffers(plan, Some(&plan.exact));
        let work = self.work.as_ref().expect("work buffers");
        let shared = [
            (binding::PARAMS, &self.params),
            (binding::WEIGHTS, &work.weights),
            (binding::Y, &work.y),
            (binding::MOMENTS, &work.moments),
            (binding::HIST, &work.hist),
        ];
        let entries: Vec<wgpu::BindGroupEntry> = shared
            .into_iter()
            .chain(buffers.iter().map(|(slot, b)| (*slot, b)))
            .map(|(binding, b)| wgpu::BindGroupEntry {
                binding,
                resource: b.as_entire_binding(),
            })
            .collect();
        debug_assert_eq!(entries.len(), BINDINGS.len(), "every binding is bound");
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("plan"),
            layout: &self.layout,
            entries: &entries,
        });
        self.loaded = Some(Loaded {
            plan_id: plan.id(),
            bind,
            _buffers: buffers.into_iter().map(|(_, b)| b).collect(),
            batch,
        });
        Ok(())
    }

    /// A plan's own buffers, by binding slot: its digits, fault levels,
    /// conversion groups, scales and draw ranks, and with `exact` its
    /// inputs, active planes and exact products (as f32).
    fn plan_buffers(&self, plan: &Plan, exact: Option<&[i64]>) -> Vec<(u32, wgpu::Buffer)> {
        let digits: Vec<i32> = plan.digits.iter().map(|&d| d as i32).collect();
        let sa1: Vec<i32> = plan.sa1_digit.iter().map(|&d| d as i32).collect();
        let groups: Vec<[f32; 4]> = (0..plan.lo.len())
            .map(|g| {
                [
                    plan.lo[g],
                    plan.hi[g],
                    if plan.converted[g] { 1.0 } else { 0.0 },
                    0.0,
                ]
            })
            .collect();
        let scales: Vec<f32> = plan.scales.iter().map(|&s| s as f32).collect();
        let rank = plan.draw_rank();
        let mut out = vec![
            (
                binding::DIGITS,
                self.storage_buffer("digits", bytemuck::cast_slice(&digits)),
            ),
            (
                binding::SA1_DIGIT,
                self.storage_buffer("sa1", bytemuck::cast_slice(&sa1)),
            ),
            (
                binding::GROUPS,
                self.storage_buffer("groups", bytemuck::cast_slice(&groups)),
            ),
            (
                binding::SCALES,
                self.storage_buffer("scales", bytemuck::cast_slice(&scales)),
            ),
            (
                binding::DRAW_RANK,
                self.storage_buffer("draw_rank", bytemuck::cast_slice(&rank)),
            ),
        ];
        if let Some(exact) = exact {
            let active: Vec<u32> = plan.row_active.par_iter().map(|&a| a as u32).collect();
            let exact: Vec<f32> = exact.par_iter().map(|&e| e as f32).collect();
            out.extend([
                (
                    binding::X,
                    self.storage_buffer("x", bytemuck::cast_slice(&plan.x)),
                ),
                (
                    binding::ROW_ACTIVE,
                    self.storage_buffer("row_active", bytemuck::cast_slice(&active)),
                ),
                (
                    binding::EXACT,
                    self.storage_buffer("exact", bytemuck::cast_slice(&exact)),
                ),
            ]);
        }
        out
    }

    fn params(plan: &Plan, trial0: u32, trials: u32) -> Params {
        Params {
            k: plan.k as u32,
            n: plan.n as u32,
            b: plan.b as u32,
            xbits: plan.xbits as u32,
            j: plan.j as u32,
            p: plan.p as u32,
            chunks: plan.chunks as u32,
            nb: plan.nb() as u32,
            seed_lo: plan.seed as u32,
            seed_hi: (plan.seed >> 32) as u32,
            trial0,
            trials,
            path: wgsl::path_code(plan.path),
            adc_bits: plan.adc.bits.unwrap_or(0),
            has_faults: plan.has_faults() as u32,
            static_noise: (plan.path == NoisePath::PerCellStatic) as u32,
            sigma: plan.noise.cell_sigma,
            read_sigma: plan.noise.read_sigma,
            leak: plan.noise.leak,
            p_sa0: plan.noise.p_sa0,
            p_sa01: plan.noise.p_sa0 + plan.noise.p_sa1,
            top: plan.adc.bits.map_or(0.0, crate::model::Adc::top),
            fs_sigma: plan.noise.fs_sigma,
            adc_sigma_lsb: plan.noise.adc_sigma_lsb,
            xweight: input_weights(plan),
            tile_cols: tile_cols(plan.n),
            ..Params::default()
        }
    }

    /// Splits `threads` into a (x, y) grid of workgroups within the per-dimension limit.
    fn grid(&self, threads: u64) -> (u32, u32) {
        let groups = threads.div_ceil(WORKGROUP_SIZE as u64).max(1);
        let max = self.info.max_workgroups_per_dim.clamp(1, 65_535) as u64;
        let x = groups.min(max);
        (x as u32, groups.div_ceil(x) as u32)
    }

    fn read(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let slice = buffer.slice(0..bytes);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("{}: {e}", self.info.name)))?;
        let out = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("{}: {e:?}", self.info.name)))?
            .to_vec();
        buffer.unmap();
        Ok(out)
    }
}

/// Columns per workgroup of `simulate_tiled` for `n` columns: `n` rounded up
/// to a power of two, from 8 to WORKGROUP_SIZE (the rest of a workgroup
/// takes more input vectors).
fn tile_cols(n: usize) -> u32 {
    (n.next_power_of_two() as u32).clamp(8, WORKGROUP_SIZE)
}

/// The simulation kernel of `plan` in the engine's kernel set and its
/// threads per trial for `b` input vectors: the dynamic kernels have one
/// per (vector, column), `simulate` one per (block of four vectors,
/// column), `simulate_tiled` a workgroup per (WORKGROUP_SIZE / tile_cols
/// blocks of four vectors, tile_cols columns).
fn simulate_threads<'a>(
    gpu: &'a GpuEngine,
    plan: &Plan,
    b: usize,
) -> (&'a wgpu::ComputePipeline, u64) {
    let dynamic = plan.path == NoisePath::PerCellDynamic;
    match (gpu.kernels, dynamic) {
        (KernelSet::Plain, true) => (&gpu.simulate_dynamic, (b * plan.n) as u64),
        (KernelSet::Tiled, true) => (&gpu.simulate_dynamic_stream, (b * plan.n) as u64),
        (KernelSet::Plain, false) => (&gpu.simulate, (b.div_ceil(4) * plan.n) as u64),
        (KernelSet::Tiled, false) => {
            let cols = tile_cols(plan.n) as usize;
            let vblocks = WORKGROUP_SIZE as usize / cols;
            let groups = b.div_ceil(4).div_ceil(vblocks) * plan.n.div_ceil(cols);
            (
                &gpu.simulate_tiled,
                (groups * WORKGROUP_SIZE as usize) as u64,
            )
        }
    }
}

/// The input plane weights as the kernels' `Params::xweight` (exact in
/// f32: signed powers of two below 2^8).
fn input_weights(plan: &Plan) -> [[f32; 4]; MAX_INPUT_PLANES / 4] {
    let mut out = [[0f32; 4]; MAX_INPUT_PLANES / 4];
    for (i, &w) in plan.input_weights.iter().enumerate() {
        out[i / 4][i % 4] = w as f32;
    }
    out
}

/// Refuses a plan beyond what the kernels hold: more digit planes than
/// their register arrays, more input planes than `Params` has weights for,
/// or random rows of `b` input vectors whose first factor passes 32 bits (the WGSL block-index formulas
/// number rows in 32 bits).
fn check_limits(plan: &Plan, b: usize) -> Result<()> {
    if plan.j > MAX_PLANES || plan.xbits > MAX_INPUT_PLANES {
        return Err(Error::Gpu(format!(
            "the GPU kernels handle at most {MAX_PLANES} digit planes and {MAX_INPUT_PLANES} input planes, this plan has {} and {}; use --engine cpu",
            plan.j, plan.xbits
        )));
    }
    // The block-index formulas start from a 32-bit factor: `jj * K + kk`,
    // `bb * Bx + i` and `bb * C + c`; the rest is 64-bit.
    let l = block_layout(plan);
    let first = (l.j * l.k) as u64;
    let first = first.max(b as u64 * (l.xbits.max(l.chunks)) as u64);
    if first > 1 << 32 {
        return Err(Error::Gpu(format!(
            "this plan numbers {first} rows of random blocks at its first step, more than the GPU kernels' 2^32; use --engine cpu"
        )));
    }
    Ok(())
}

/// Bytes of one trial's cell weights `[j][k][n]` and outputs `[b][n]` (f32).
fn per_trial_bytes(plan: &Plan) -> (u64, u64) {
    (
        (plan.j * plan.k * plan.n * 4) as u64,
        (plan.b * plan.n * 4) as u64,
    )
}

impl Engine for GpuEngine {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn device(&self) -> String {
        format!(
            "{} ({}, {})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    fn run(&mut self, plan: &Plan, trials: Range<u32>, raw: bool) -> Result<Batch> {
        self.load(plan, trials.len() as u32)?;
        let batch_cap = self.loaded.as_ref().expect("loaded").batch;
        let mut out = Batch::empty(trials.start);
        let mut raw_out: Vec<f32> = Vec::new();
        let mut t = trials.start;
        while t < trials.end {
            let count = (trials.end - t).min(batch_cap);
            self.dispatch(plan, t, count, true, raw);
            let work = self.work.as_ref().expect("work");
            let mom_bytes = count as u64 * 12;
            let mom: Vec<f32> =
                bytemuck::cast_slice(&self.read(&work.read_moments, mom_bytes)?).to_vec();
            let hist: Vec<u32> =
                bytemuck::cast_slice(&self.read(&work.read_hist, BINS as u64 * 4)?).to_vec();
            for m in mom.chunks(3) {
                out.trials.push(TrialMoments {
                    sum: m[0] as f64,
                    sumsq: m[1] as f64,
                    max_abs: m[2] as f64,
                });
            }
            for (a, &h) in out.hist.iter_mut().zip(&hist) {
                *a += h as u64;
            }
            if raw {
                let y_bytes = count as u64 * per_trial_bytes(plan).1;
                let ys: Vec<f32> =
                    bytemuck::cast_slice(&self.read(&work.read_y, y_bytes)?).to_vec();
                for (yv, ex) in ys
                    .chunks(plan.exact.len())
                    .flat_map(|t| t.iter().zip(&plan.exact))
                {
                    raw_out.push((*yv as f64 - *ex as f64) as f32);
                }
            }
            t += count;
        }
        if raw {
            out.raw = Some(raw_out);
        }
        Ok(out)
    }

    fn as_gpu(&mut self) -> Option<&mut GpuEngine> {
        Some(self)
    }

    fn outputs(&mut self, plan: &Plan, trial: u32) -> Result<Vec<f64>> {
        self.load(plan, 1)?;
        self.dispatch(plan, trial, 1, false, true);
        let work = self.work.as_ref().expect("work");
        let ys = self.read(&work.read_y, per_trial_bytes(plan).1)?;
        Ok(bytemuck::cast_slice::<u8, f32>(&ys)
            .par_iter()
            .map(|&v| v as f64)
            .collect())
    }
}

impl GpuEngine {
    /// Submits `count` trials from `t0`: cells, simulation and, with
    /// `stats`, the reduction; copies what is to be read back.
    fn dispatch(&self, plan: &Plan, t0: u32, count: u32, stats: bool, y: bool) {
        let params = Self::params(plan, t0, count);
        self.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
        let work = self.work.as_ref().expect("work");
        let bind = &self.loaded.as_ref().expect("loaded").bind;
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("trials"),
            });
        if stats {
            enc.clear_buffer(&work.hist, 0, None);
        }
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("trials"),
                timestamp_writes: None,
            });
            pass.set_bind_group(0, bind, &[]);
            pass.set_pipeline(&self.cells);
            let (x, y) = self.grid(count as u64 * (plan.j * plan.k * plan.nb()) as u64);
            pass.dispatch_workgroups(x, y, 1);
            let (pipeline, threads) = simulate_threads(self, plan, plan.b);
            pass.set_pipeline(pipeline);
            let (x, y) = self.grid(count as u64 * threads);
            pass.dispatch_workgroups(x, y, 1);
            if stats {
                pass.set_pipeline(&self.reduce);
                pass.dispatch_workgroups(count, 1, 1);
            }
        }
        if stats {
            enc.copy_buffer_to_buffer(&work.moments, 0, &work.read_moments, 0, count as u64 * 12);
            enc.copy_buffer_to_buffer(&work.hist, 0, &work.read_hist, 0, BINS as u64 * 4);
        }
        if y {
            let y_bytes = count as u64 * per_trial_bytes(plan).1;
            enc.copy_buffer_to_buffer(&work.y, 0, &work.read_y, 0, y_bytes);
        }
        self.queue.submit([enc.finish()]);
    }
}
