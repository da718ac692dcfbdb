#!/usr/bin/env bash
# Claims 1 and 2 on a large model: the shipped Fashion-MNIST ResNet
# (models/fmnist_resnet) under simulated CIM noise, swept over parallelism
# (P = 32..1024 at 5% mismatch) and over mismatch (0..20% at P = 256), for
# dense, calibrated dense, ZEBRA and CSD, with figures in results/. Resumes
# finished (point, mapping) rows, so it may run in parts; --fresh recomputes.
#   bash experiments/resnet.sh [--fresh] [--engine cpu|gpu|auto]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
zebra=./target/release/zebra
for exp in resnet_parallelism resnet_sigma; do
    echo "== $exp"
    "$zebra" run "experiments/$exp.toml" --out results "$@"
    "$zebra" plot "results/$exp.csv" --metric mean_accuracy --metric min_accuracy \
        --metric accuracy_drop > /dev/null
done
echo "figures and CSVs are in results/"
