#!/usr/bin/env bash
# One prepared benchmark run for a machine with a real GPU (e.g. the device
# tool's H100): builds, lists adapters, then measures both engines on the
# standard workloads in one run so the CPU/GPU ratio is like for like.
# The device machine has no network: build a portable binary here first and
# carry it, e.g.
#   RUSTFLAGS="-C target-cpu=x86-64-v3" cargo build --release --target-dir target/portable
#   (device tool: carry ["target/portable/release/zebra"],
#    command "ZEBRA_BIN=target/portable/release/zebra bash benches/device_bench.sh")
# Usage: bash benches/device_bench.sh [trials]   (writes to $OUT if set)
set -euo pipefail
cd "$(dirname "$0")/.."
trials="${1:-1000}"
out="${OUT:-/tmp}"
bin="${ZEBRA_BIN:-./target/release/zebra}"
[ -x "$bin" ] || cargo build --release --offline 2>&1 | tail -1
{
    echo "== $(date -u) $(uname -m) $(nproc) cores"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
    "$bin" devices
    "$bin" bench --workload S --engine auto --trials "$trials" --repeats 5
    "$bin" bench --workload D --engine auto --trials "$trials" --repeats 5
} 2>&1 | tee "$out/device_bench.txt"
