//! Criterion view of `zebra bench`: both engines on the standard workloads,
//! with throughput in cell-MACs (`cargo bench --bench engines`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zebra_cim::cmd::bench::{workload_plan, Workload};
use zebra_cim::engine::cpu::CpuEngine;
use zebra_cim::engine::gpu::GpuEngine;
use zebra_cim::engine::Engine;

fn engines() -> Vec<Box<dyn Engine>> {
    let mut v: Vec<Box<dyn Engine>> = vec![Box::new(CpuEngine::new())];
    match GpuEngine::new(None, true) {
        Ok(g) => v.push(Box::new(g)),
        Err(e) => eprintln!("GPU engine skipped: {e}"),
    }
    v
}

fn bench(c: &mut Criterion) {
    let trials = 16;
    for (w, sampling, name) in [
        (Workload::S, "auto", "S"),
        (Workload::D, "per-cell", "D per-cell"),
        (Workload::D, "aggregated", "D aggregated"),
    ] {
        let plan = workload_plan(w, sampling, trials);
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.throughput(Throughput::Elements(
            plan.counters.cell_macs * trials as u64,
        ));
        for mut e in engines() {
            let id = e.device();
            group.bench_function(id, |b| b.iter(|| e.run(&plan, 0..trials, false).unwrap()));
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
