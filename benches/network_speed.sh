#!/usr/bin/env bash
# Whole-network speed against the S workload, in one run on one machine:
# the S rate of `zebra bench`, then the ResNet parallelism sweep
# (experiments/resnet_parallelism.toml, P = 32..1024, four mappings) at
# CHIPS chips x IMAGES images per row, and each row's images/s and
# cell-MACs/s (cell-MACs before skipping: MACs x 8 input bits x planes, as
# the S figure counts them) with its ratio to S.
#   bash benches/network_speed.sh [CHIPS] [IMAGES] [--engine cpu|gpu]
set -euo pipefail
cd "$(dirname "$0")/.."
chips="${1:-2}"
images="${2:-200}"
shift $(( $# < 2 ? $# : 2 ))
cargo build --release --quiet
zebra=./target/release/zebra
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
s=$("$zebra" bench --workload S --engine cpu --repeats 3 | awk '/cell-MACs\/s/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+e[0-9]+$/) {print $i; exit}}')
echo "S workload (cpu): $s cell-MACs/s"
start=$(date +%s)
"$zebra" run experiments/resnet_parallelism.toml --out "$out" --fresh --quiet \
    --trials "$chips" --images "$images" "$@" > /dev/null
echo "wall time: $(( $(date +%s) - start )) s for $chips chips x $images images x 24 rows"
python3 - "$out/resnet_parallelism.csv" "$s" <<'PY'
import csv, sys
macs = 14_253_824            # per image: docs/NETWORK.md's layer table
planes = {"dense": 8, "dense-cal": 8, "zebra": 7, "csd": 8}
s = float(sys.argv[2])
print(f"{'P':>5} {'mapping':>10} {'images/s':>9} {'cell-MACs/s':>12} {'/ S':>6}")
for r in csv.DictReader(open(sys.argv[1])):
    rate = float(r["images_per_s"]) * macs * 8 * planes[r["mapping"]]
    print(f"{r['parallelism']:>5} {r['mapping']:>10} {float(r['images_per_s']):>9.1f} {rate:>12.3e} {rate / s:>6.2f}")
PY
