#!/usr/bin/env bash
# One prepared benchmark run for a machine with a real GPU (e.g. the device
# tool's H100): lists adapters, measures both engines on the standard
# workloads in one run so the CPU/GPU ratio is like for like, then runs the
# accuracy sweeps on the GPU (and the sigma sweep on the CPU) for images/s.
# The device machine has no network: build a portable binary here first and
# carry it, e.g.
#   RUSTFLAGS="-C target-cpu=x86-64-v3" cargo build --release --target-dir target/portable
#   (device tool: carry [".bin", ".gl"],
#    command "ZEBRA_BIN=.bin/zebra bash benches/device_bench.sh")
# where .bin/zebra is that binary stripped (strip -o .bin/zebra ...; the tree
# that travels is limited to 64 MiB) and .gl holds .deb files the bare device
# lacks, fetched here with
#   o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   mkdir -p .gl /tmp/amd64/partial; apt-get $o update
#   (cd .gl && apt-get $o download libvulkan1 libfontconfig1 libfreetype6 \
#       libpng16-16 libbrotli1 libexpat1 fontconfig-config)
# Usage: bash benches/device_bench.sh [trials]   (writes to $OUT if set)
set -uo pipefail
cd "$(dirname "$0")/.."
trials="${1:-1000}"
out="${OUT:-/tmp}"
bin="${ZEBRA_BIN:-./target/release/zebra}"
[ -x "$bin" ] || cargo build --release --offline 2>&1 | tail -1
if [ -d .gl ]; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
# NVIDIA's Vulkan driver: headless containers need its EGL entry point (the
# stock ICD file names libGLX_nvidia, which fails without a display with
# "Could not get 'vkCreateInstance' via 'vk_icdGetInstanceProcAddr'").
if [ -e /usr/local/nvidia/lib64/libEGL_nvidia.so.0 ] || [ -e /usr/lib/libEGL_nvidia.so.0 ]; then
    printf '{"file_format_version":"1.0.1","ICD":{"library_path":"libEGL_nvidia.so.0","api_version":"1.3.0"}}\n' >/tmp/nvidia_egl_icd.json
    export VK_DRIVER_FILES=/tmp/nvidia_egl_icd.json
fi
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}" XDG_RUNTIME_DIR=/tmp
{
    echo "== $(date -u) $(uname -m) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
    "$bin" devices
    "$bin" bench --workload S --engine auto --trials "$trials" --repeats 5
    "$bin" bench --workload D --engine auto --trials "$trials" --repeats 5
    # Each sweep is cut off after its time limit; rows finished by then are
    # kept, and every row carries its own images/s.
    for exp in "accuracy_sigma ${ACC_LIMIT:-150} 8" "accuracy_sigma ${ACC_LIMIT_16:-60} 16" "accuracy_parallelism ${ACC_LIMIT_P:-90} 8"; do
        set -- $exp
        echo "== $1 on the GPU, $3 streams (limit $2 s)"
        start=$(date +%s%N)
        ZEBRA_GPU_STREAMS=$3 timeout "$2" "$bin" run "experiments/$1.toml" --engine gpu --out "$out/gpu$3" --quiet --fresh
        echo "exit $?, $(( ($(date +%s%N) - start) / 1000000 )) ms"
    done
    echo "== accuracy_sigma on the CPU ($(nproc) threads, limit ${ACC_LIMIT_CPU:-100} s)"
    start=$(date +%s%N)
    timeout "${ACC_LIMIT_CPU:-100}" "$bin" run experiments/accuracy_sigma.toml --engine cpu --out "$out/cpu" --quiet --fresh
    echo "exit $?, $(( ($(date +%s%N) - start) / 1000000 )) ms"
} 2>&1 | tee "$out/device_bench.txt"
