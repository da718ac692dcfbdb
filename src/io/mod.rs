//! Files at the edges: `.npy` arrays, IDX datasets, CSV tables and plots.
//! Knows no experiment, plan or engine.

pub mod csv;
pub mod dataset;
pub mod npy;
pub mod plot;
