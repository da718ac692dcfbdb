#!/usr/bin/env bash
# Whole-network accuracy: the shipped Fashion-MNIST CNN under simulated CIM
# noise, swept over cell mismatch, over parallelism, and over conversion
# noise stated as a fraction of full scale and in ADC LSBs, with its figures
# in results/. About 22 minutes on 2 CPU cores with --fresh (the two
# conversion-noise sweeps, which draw per conversion, take 9 each);
# resumes finished points.
#   bash experiments/accuracy.sh [--fresh] [--engine cpu|gpu|auto]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
zebra=./target/release/zebra
for exp in accuracy_sigma accuracy_parallelism accuracy_fs accuracy_adc_noise; do
    echo "== $exp"
    "$zebra" run "experiments/$exp.toml" --out results --quiet "$@"
    "$zebra" plot "results/$exp.csv" --metric mean_accuracy --metric min_accuracy \
        --metric accuracy_drop > /dev/null
done
echo "figures and CSVs are in results/"
