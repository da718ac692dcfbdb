#!/usr/bin/env bash
# Regenerates every shipped result: runs each experiment (resuming finished
# points; pass --fresh to recompute) and draws its figures into results/.
#   bash experiments/reproduce.sh [--fresh] [--engine cpu|gpu|auto]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
zebra=./target/release/zebra
for exp in quickstart sigma_sweep parallelism_sweep adc_bits_sweep ablation weight_stats cost efficiency_layer efficiency_layer_terms; do
    echo "== $exp"
    "$zebra" run "experiments/$exp.toml" --out results --quiet "$@" | tail -2
done
for exp in quickstart sigma_sweep parallelism_sweep adc_bits_sweep ablation; do
    "$zebra" plot "results/$exp.csv" > /dev/null
done
"$zebra" plot results/weight_stats.csv --x layer.weight_bits \
    --metric skipped_plane_fraction --metric digit_density --metric reads_per_mac > /dev/null
"$zebra" plot results/cost.csv --x array.parallelism \
    --metric conversions_per_mac --metric reads_per_mac --metric energy_fj_per_mac --metric rmse > /dev/null
# One figure per ADC model and scaling shown in results/README.md, and
# energy against SNR (one line per mapping through P = 64, 128, 256).
for exp in efficiency_layer efficiency_layer_terms; do
    for model in walden neurosim-sar; do
        for scaling in fixed effective; do
            "$zebra" plot results/$exp.csv --x array.parallelism --metric energy_fj_per_mac \
                --where energy.model=$model --where energy.adc_scaling=$scaling > /dev/null
            "$zebra" plot results/$exp.csv --x energy_fj_per_mac --metric snr_db \
                --where energy.model=$model --where energy.adc_scaling=$scaling > /dev/null
        done
    done
done
"$zebra" plot results/efficiency_layer.csv --x array.parallelism --metric snr_db \
    --where energy.model=walden --where energy.adc_scaling=fixed > /dev/null
bash experiments/accuracy.sh "$@" | grep -v "^figures"
bash experiments/resnet.sh "$@" | grep -v "^figures"
bash experiments/efficiency.sh "$@"
echo "figures and CSVs are in results/"
