#!/usr/bin/env bash
# Data-parallel throughput on one machine: 2 ranks x 1 thread (mpiexec), with the gradient all-reduce
# after backward (the default) and overlapped with it (--overlap), against 1 process x 2 threads,
# same global batch, alternating (A B C A B C ...), each run a fresh process; medians of the rounds.
# Needs the binary built with --features mpi. Usage: bash scripts/mpi-bench.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=./target/release/resnet
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs" >&2
run() { # name args...
    local name=$1; shift
    for r in $(seq "$rounds"); do
        echo "$name one $($bin bench "$@" --threads 2 --json)"
        echo "$name after $(mpiexec -n 2 $bin bench "$@" --threads 1 --json)"
        echo "$name overlap $(mpiexec -n 2 $bin bench "$@" --threads 1 --overlap --json)"
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
print("| workload | 1 process x 2 threads img/s | 2 ranks x 1 thread (all-reduce after backward) | ratio | all-reduce ms/step | 2 ranks, overlapped (--overlap) | ratio | all-reduce ms/step | hidden |")
print("|---|---|---|---|---|---|---|---|---|")
for name, k in rows.items():
    med = lambda kind, key: st.median(r[key] for r in k[kind])
    one, ov, af = med("one", "img_per_s"), med("overlap", "img_per_s"), med("after", "img_per_s")
    ar, hid, ar2 = med("overlap", "allreduce_ms_per_step"), med("overlap", "allreduce_hidden_ms_per_step"), med("after", "allreduce_ms_per_step")
    b = k["one"][0]["batch"]
    print(f"| {name} train, batch {b} | {one:.1f} | {af:.1f} | **{af / one:.2f}** | {ar2:.1f} | {ov:.1f} | {ov / one:.2f} | {ar:.1f} | {hid:.1f} ms ({100 * hid / max(ar, 1e-9):.0f}%) |")
'
