//! Engines run the trials of a plan. The reference engine is docs/MODEL.md
//! as plain loops (the oracle); the CPU and GPU engines are the fast ones,
//! checked against it. Every engine returns the same `Batch` of streamed
//! statistics.

pub mod cpu;
pub mod gpu;
pub mod reference;
pub mod stats;
pub mod wgsl;

use crate::engine::stats::Batch;
use crate::error::Result;
use crate::experiment::plan::Plan;
use crate::model::rng::BlockLayout;
use std::ops::Range;

/// Something that simulates trials of a plan.
pub trait Engine {
    /// Short name for result files: "reference", "cpu" or "gpu".
    fn name(&self) -> &'static str;
    /// What it runs on, for result files and reports.
    fn device(&self) -> String;
    /// Simulates `trials` of `plan`; with `raw`, also returns every error.
    fn run(&mut self, plan: &Plan, trials: Range<u32>, raw: bool) -> Result<Batch>;

    /// The simulated outputs `y` `[b][n]` of one trial (the exact products
    /// plus the simulated error), for callers that feed them on, such as a
    /// network's next layer. No statistics are gathered, and the plan's
    /// `exact` may be empty (see [`Plan::with_inputs`]).
    fn outputs(&mut self, plan: &Plan, trial: u32) -> Result<Vec<f64>>;

    /// The GPU engine behind this one, for work that runs whole on the
    /// device (a network's forward pass, [`gpu::net`]).
    fn as_gpu(&mut self) -> Option<&mut gpu::GpuEngine> {
        None
    }
}

/// Where a plan's rows of random blocks start, for both engines.
pub fn block_layout(plan: &Plan) -> BlockLayout {
    BlockLayout {
        k: plan.k,
        j: plan.j,
        xbits: plan.xbits,
        chunks: plan.chunks,
        nb: plan.nb(),
    }
}
