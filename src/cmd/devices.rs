//! `zebra devices`: the GPU adapters wgpu finds, with the limits that matter.

use crate::engine::gpu;
use anyhow::Result;
use std::process::ExitCode;

/// Lists the adapters (honouring `WGPU_BACKEND`).
pub fn run_devices() -> Result<ExitCode> {
    let adapters = gpu::list_adapters();
    if adapters.is_empty() {
        println!(
            "no GPU adapters found (WGPU_BACKEND={}); `--engine auto` uses the CPU",
            std::env::var("WGPU_BACKEND").unwrap_or_else(|_| "unset".into())
        );
    }
    for a in adapters {
        println!(
            "{}  backend {}  type {}  driver {}  max storage binding {} MiB  max workgroups/dim {}  max invocations/workgroup {}",
            a.name, a.backend, a.device_type, a.driver, a.max_storage_binding >> 20, a.max_workgroups_per_dim, a.max_invocations
        );
    }
    Ok(ExitCode::SUCCESS)
}
