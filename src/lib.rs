//! zebra-cim: Monte Carlo noise simulation of bit-sliced compute-in-memory
//! matrix-vector products, comparing the dense mapping with ZEBRA.
//!
//! Dependencies run one way: command line -> experiment -> plan -> engines ->
//! model. See `docs/MODEL.md` for the model.

// The kernels index several flat buffers with the same loop variables, in the
// layouts docs/MODEL.md defines; iterator chains would hide those layouts.
#![allow(clippy::needless_range_loop)]

pub mod accuracy;
pub mod bench;
pub mod check;
pub mod cli;
pub mod dataset;
pub mod engine;
pub mod error;
pub mod experiment;
pub mod inspect;
pub mod model;
pub mod network;
pub mod output;
pub mod plan;
pub mod plot;
pub mod rng;
pub mod runner;
pub mod stats;
pub mod workload;
