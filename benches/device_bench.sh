#!/usr/bin/env bash
# One prepared benchmark run for a machine with a real GPU: lists adapters,
# measures both engines (and both GPU kernel sets) on the matrix-vector
# workloads S and D and on the shipped CNN and ResNet in one run, so every
# ratio is like for like, then runs the CNN's accuracy sweep on each engine
# and counts the chips whose accuracies differ. About 8 minutes on a 16-core
# host; every step has its own time limit.
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
# Usage: bash benches/device_bench.sh [trials]   (writes to $OUT if set;
# NET_CHIPS chips per network repeat, ACC_LIMIT seconds per sweep)
set -uo pipefail
cd "$(dirname "$0")/.."
trials="${1:-1000}"
out="${OUT:-/tmp}"
mkdir -p "$out"
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
    # Matrix-vector workloads: the CPU, then the GPU with each kernel set
    # (plain and tiled) in one call, so every ratio is like for like.
    timeout 150 "$bin" bench --workload S --engine auto --trials "$trials" --repeats 5
    timeout 120 "$bin" bench --workload D --engine auto --trials "$trials" --repeats 5
    # Networks, chip-images/s: the CPU's parallel chips, the GPU resident
    # (each kernel set) and layer by layer through the host.
    timeout 100 "$bin" bench --workload cnn --engine auto --trials "${NET_CHIPS:-32}" --repeats 3
    timeout 100 "$bin" bench --workload resnet --engine auto --trials "${NET_CHIPS:-32}" --repeats 3
    # The CNN's whole accuracy sweep on each engine (rows finished within
    # the limit are kept; each row carries its own images/s), then how many
    # chips' accuracies differ between the two.
    for engine in gpu cpu; do
        echo "== accuracy_sigma on the $engine (limit ${ACC_LIMIT:-90} s)"
        start=$(date +%s%N)
        timeout "${ACC_LIMIT:-90}" "$bin" run experiments/accuracy_sigma.toml --engine $engine --out "$out/$engine" --quiet --fresh
        echo "exit $?, $(( ($(date +%s%N) - start) / 1000000 )) ms"
    done
    if [ -f "$out/gpu/accuracy_sigma_trials.csv" ] && [ -f "$out/cpu/accuracy_sigma_trials.csv" ]; then
        join -t, <(tail -n +2 "$out/gpu/accuracy_sigma_trials.csv" | awk -F, '{print $2"/"$3"/"$4","$5}' | sort) \
                 <(tail -n +2 "$out/cpu/accuracy_sigma_trials.csv" | awk -F, '{print $2"/"$3"/"$4","$5}' | sort) |
            awk -F, '{n++; if ($2 != $3) d++} END {printf "chips in both: %d, accuracies that differ: %d\n", n, d}'
    fi
} 2>&1 | tee "$out/device_bench.txt"
