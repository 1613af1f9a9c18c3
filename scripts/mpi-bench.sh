#!/usr/bin/env bash
# Data-parallel throughput on one machine: 2 ranks x 1 thread (mpiexec) against 1 process x 2 threads,
# same global batch, alternating (A B A B ...), each run a fresh process; medians of the rounds.
# Needs the binary built with --features mpi. Usage: bash scripts/mpi-bench.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=./target/release/resnet
run() { # name args...
    local name=$1; shift
    for r in $(seq "$rounds"); do
        echo "$name one $($bin bench "$@" --threads 2 --json)"
        echo "$name mpi $(mpiexec -n 2 $bin bench "$@" --threads 1 --json)"
    done
}
{
    run resnet20 --arch resnet20 --batch 128 --steps 10 --warmup 2
    run resnet50 --arch resnet50 --batch 32 --steps 3 --warmup 1
} | python3 -c '
import json, sys, statistics as st
rows = {}
for line in sys.stdin:
    name, kind, js = line.split(" ", 2)
    rows.setdefault(name, {}).setdefault(kind, []).append(json.loads(js))
print("| workload | 1 process x 2 threads img/s | 2 ranks x 1 thread img/s | ratio | all-reduce ms/step | of the step | hidden |")
print("|---|---|---|---|---|---|---|")
for name, k in rows.items():
    one = st.median(r["img_per_s"] for r in k["one"])
    mpi = st.median(r["img_per_s"] for r in k["mpi"])
    ar = st.median(r["allreduce_ms_per_step"] for r in k["mpi"])
    step = st.median(r["ms_per_step"] for r in k["mpi"])
    b = k["one"][0]["batch"]
    print(f"| {name} train, batch {b} | {one:.1f} | {mpi:.1f} | **{mpi / one:.2f}** | {ar:.2f} | {100 * ar / step:.1f}% | 0 |")
'
