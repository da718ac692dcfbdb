//! Sweeps: every (point, mapping) of an experiment run on an engine, resumed
//! from and written to result files.

pub mod accuracy;
pub mod device;
pub mod memory;
pub mod output;
pub mod resume;
pub mod run;
pub mod shard;
