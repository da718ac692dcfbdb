#!/usr/bin/env bash
# Runs a sharded sweep on a real single-node Slurm on this machine and checks
# that the merged result equals a single-process run (except timing columns).
# Needs Debian's slurm-wlm and munge (.ci/run installs them) and root (to
# start munged as its user). Starts munged, slurmctld and slurmd with a
# minimal configuration in a temporary folder and stops them on exit.
#   bash tests/slurm/run.sh [path/to/zebra]
set -euo pipefail
cd "$(dirname "$0")/../.."
zebra=$(realpath "${1:-target/release/zebra}")
for cmd in munged slurmctld slurmd sbatch squeue; do
    command -v "$cmd" >/dev/null || { echo "error: $cmd not found: apt-get install slurm-wlm munge" >&2; exit 2; }
done
work=$(mktemp -d /tmp/zebra-slurm.XXXXXX)
chmod 755 "$work"
host=$(hostname -s)
export SLURM_CONF=$work/slurm.conf
cat > "$SLURM_CONF" <<CONF
ClusterName=zebra-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$work/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p "$work/state" "$work/spool" "$work/munge"
chown munge:munge "$work/munge"
socket=$work/munge/munge.socket
export MUNGE_SOCKET=$socket
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in slurmd slurmctld; do
        [ -f "$work/$f.pid" ] && kill "$(cat "$work/$f.pid")" 2>/dev/null || true
    done
    [ -f "$work/munge/munged.pid" ] && kill "$(cat "$work/munge/munged.pid")" 2>/dev/null || true
    # The daemons write their state as they stop: give them a few seconds,
    # and never fail a finished check on a leftover temporary folder.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        pgrep -f "$work" >/dev/null || break
        sleep 0.5
    done
    if [ "${keep:-0}" = 1 ]; then echo "logs kept in $work" >&2; else rm -rf "$work" 2>/dev/null || true; fi
}
trap cleanup EXIT
runuser -u munge -- munged --socket="$socket" --pid-file="$work/munge/munged.pid" \
    --log-file="$work/munge/munged.log" --seed-file="$work/munge/munged.seed" --force
if ! munge -n -S "$socket" | unmunge -S "$socket" >/dev/null; then
    keep=1
    echo "error: munged did not start; log in $work/munge" >&2
    exit 1
fi
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
# The node registers within a few seconds.
for _ in $(seq 30); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then break; fi
    sleep 1
done
if ! sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)'; then
    keep=1
    echo "error: the Slurm node did not come up; logs in $work" >&2
    sinfo >&2 || true
    exit 1
fi

exp=experiments/quickstart.toml
opts=(--trials 60 --engine cpu --threads 1)
out=$work/out
ZEBRA=$zebra SBATCH_ARGS="--chdir=$PWD --output=$work/%x-%A_%a.out" \
    bash experiments/slurm/submit.sh "$exp" "$out" 3 "${opts[@]}"
# Wait for both jobs (array and merge) to leave the queue.
for _ in $(seq 600); do
    [ -z "$(squeue -h -o %i)" ] && break
    sleep 1
done
if [ -n "$(squeue -h -o %i)" ]; then
    keep=1
    echo "error: the Slurm jobs did not finish within 10 minutes" >&2
    squeue >&2
    exit 1
fi
name=quickstart
if [ ! -f "$out/$name.csv" ]; then
    keep=1
    echo "error: the merge job wrote no $out/$name.csv; job logs:" >&2
    cat "$work"/*.out >&2 || true
    exit 1
fi
"$zebra" run "$exp" "${opts[@]}" --out "$work/single" --quiet >/dev/null 2>&1
python3 - "$out" "$work/single" "$name" <<'PY'
import csv, sys
merged, single, name = sys.argv[1:4]
def rows(d, f):
    with open(f"{d}/{f}") as fh:
        return list(csv.reader(fh))
a, b = rows(merged, f"{name}.csv"), rows(single, f"{name}.csv")
assert a[0] == b[0], "headers differ"
timing = {a[0].index(c) for c in ("elapsed_s", "cell_macs_per_s")}
bad = [(a[0][i], x[i], y[i]) for x, y in zip(a[1:], b[1:]) for i in range(len(x)) if i not in timing and x[i] != y[i]]
assert len(a) == len(b) == 13, f"{len(a) - 1} merged rows, {len(b) - 1} single"
assert not bad, f"merged and single runs differ: {bad[:5]}"
assert rows(merged, f"{name}_hist.csv") == rows(single, f"{name}_hist.csv"), "histograms differ"
PY
shards=$(ls "$out" | grep -c '^shard-')
echo "slurm: 3 array tasks ($shards shard folders) merged equal a single run: 12 rows, histograms identical"
