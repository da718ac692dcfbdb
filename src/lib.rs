//! zebra-cim: Monte Carlo noise simulation of bit-sliced compute-in-memory
//! matrix-vector products, comparing the dense mapping with ZEBRA.
//!
//! The modules are layers, and each uses only its own layer and those below
//! it, never one above (`tests/architecture.rs` checks every `crate::` path):
//! `error` (every error type), `model` (encodings, the ADC, the energy and
//! area models, the random numbers: the physics, knowing no file or
//! engine), `io` (`.npy`, IDX, CSV and plots: files, knowing no
//! experiment), `experiment` (the experiment
//! file, its sweep points, their workloads and the immutable `Plan` each
//! point and mapping becomes), `engine` (the reference, CPU and GPU engines
//! that run a plan's trials into streamed statistics), `network` (quantised
//! network files and their integer inference), `sweep` (every point and
//! mapping of an experiment on an engine, resumed from and written to result
//! files) and `cmd` (the command line, one function per subcommand).
//! `docs/ARCHITECTURE.md` draws it and says where a new noise source,
//! encoding, output column or shader feature goes; `docs/MODEL.md` is the
//! model.

// The kernels index several flat buffers with the same loop variables, in the
// layouts docs/MODEL.md defines; iterator chains would hide those layouts.
#![allow(clippy::needless_range_loop)]

pub mod error;

pub mod model;

pub mod io;

pub mod experiment;

pub mod engine;

pub mod network;

pub mod sweep;

pub mod cmd;
