#!/usr/bin/env bash
# Submits a sweep as a Slurm job array of N shards and a merge job that runs
# when every shard has succeeded; prints the two job ids.
#   bash experiments/slurm/submit.sh EXPERIMENT.toml OUT N [zebra run options]
# ZEBRA (default: zebra on PATH) names the binary every node runs;
# SBATCH_ARGS adds sbatch options to both jobs (e.g. "--partition=gpu").
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 EXPERIMENT.toml OUT N [zebra run options]" >&2
    exit 2
fi
exp=$1
out=$2
n=$3
shift 3
case $n in
    '' | *[!0-9]* | 0) echo "error: N must be a whole number of shards, at least 1; got '$n'" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
# shellcheck disable=SC2086
array=$(sbatch --parsable ${SBATCH_ARGS:-} --array=0-$((n - 1)) "$here/array.sbatch" "$exp" "$out" "$@")
array=${array%%;*}
# shellcheck disable=SC2086
merge=$(sbatch --parsable ${SBATCH_ARGS:-} --dependency=afterok:"$array" "$here/merge.sbatch" "$out")
echo "array job $array ($n shards), merge job ${merge%%;*}: results in $out"
