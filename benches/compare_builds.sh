#!/usr/bin/env bash
# Compares two zebra binaries on the standard CPU workloads in alternating
# runs (A B A B ...), so drift in a shared machine's speed hits both alike;
# prints each pair's medians and the median of the B/A ratios.
#   bash benches/compare_builds.sh OLD_BINARY NEW_BINARY [PAIRS] [WORKLOADS]
# Workloads: S, D (per-cell) and D-aggregated. E.g. build the old commit in a worktree, then
#   bash benches/compare_builds.sh ../old/target/release/zebra target/release/zebra 4 "S D"
set -euo pipefail
a=$1
b=$2
pairs=${3:-4}
workloads=${4:-S D D-aggregated}
rate() { # binary workload -> its median cell-MACs/s (D: per-cell; D-aggregated: aggregated)
    local line=1 w=$2
    if [ "$w" = D-aggregated ]; then line=2; w=D; fi
    "$1" bench --workload "$w" --engine cpu 2>/dev/null | grep -o 'median [0-9.e+]*' | sed -n "${line}p" | cut -d' ' -f2
}
for w in $workloads; do
    ratios=()
    for i in $(seq "$pairs"); do
        ra=$(rate "$a" "$w")
        rb=$(rate "$b" "$w")
        r=$(python3 -c "print(f'{$rb / $ra:.3f}')")
        ratios+=("$r")
        echo "$w pair $i: A $ra  B $rb  B/A $r"
    done
    echo "$w: median B/A over $pairs pairs: $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}')"
done
