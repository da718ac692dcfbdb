#!/usr/bin/env bash
# Claim 3 at equal accuracy on the ResNet and its term-budget variants:
# runs the two efficiency_resnet experiments (resuming finished points;
# pass --fresh to recompute), draws energy per MAC against accuracy for two
# ADC models, and prints the equal-accuracy table of results/README.md.
#   bash experiments/efficiency.sh [--fresh] [--engine cpu|gpu|auto]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
zebra=./target/release/zebra
for exp in efficiency_resnet efficiency_resnet_t2; do
    echo "== $exp"
    "$zebra" run "experiments/$exp.toml" --out results --quiet "$@" | tail -1
    for model in walden neurosim-sar; do
        "$zebra" plot "results/$exp.csv" --x energy_fj_per_mac --metric mean_accuracy \
            --where energy.model=$model --where energy.adc_scaling=effective > /dev/null
    done
done
python3 experiments/efficiency_verdict.py
