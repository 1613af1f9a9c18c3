#!/usr/bin/env bash
# Speed comparison: our engine (`resnet bench`) against its strongest CPU peers
# (bench/pytorch_bench.py: PyTorch eager, PyTorch channels_last (oneDNN), and for
# inference onnxruntime) on the same workloads, fp32, 2 threads. Developer tool,
# not part of CI.
#
# Usage: bench/compare.sh [--rounds R] [--quick] [--no-build] [WORKLOAD...]
#   WORKLOAD    resnet20-train resnet56-train resnet110-train resnet50-infer-b16
#               resnet50-infer-b1 resnet50-train-b16 resnet50-train-b32
#               resnet18-infer-b16 resnet18-infer-b1
#               (default: all of them)
#   --rounds R  ours and each peer run alternately (A B C A B C ...), R rounds
#               each (default 3), every run in a fresh process
#   --peers P   comma-separated peers (default: eager,channels_last, and
#               onnxruntime for inference workloads)
#   --quick     smoke test: 2 timed steps + 1 warm-up instead of the defaults
#               (training 20 + 3, resnet50 batch 16 5 + 2, batch 1 20 + 3)
#   --no-build  use target/release/resnet as it is (no cargo build)
#
# It builds ours once (cargo build --release), takes the peers from the venv of
# scripts/torch-venv.sh (honours TORCH_VENV; created there if missing), measures
# the CPU's fp32 FMA peak once (`resnet bench --fma-peak`), then prints per
# workload the medians over the rounds for every side, the ratio of ours to the
# best peer (img/s; > 1 = ours faster), our GFLOP/s as % of the FMA peak and the
# peak RSS of each side, with the CPU model. The same results are appended as
# JSON lines to bench/results/<date>.jsonl (bench/summarize.py).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL="resnet20-train resnet56-train resnet110-train resnet50-infer-b16 resnet50-infer-b1 resnet50-train-b16 resnet50-train-b32 resnet18-infer-b16 resnet18-infer-b1"
THREADS=2
peers=""
source bench/args.sh
parse_bench_args "$@"

# Our `resnet bench` arguments for a workload.
ours_args() {
    case "$1" in
        resnet*-train) echo "--arch ${1%-train} --mode train --batch 128" ;;
        resnet50-infer-b16) echo "--arch resnet50 --stride-in 3x3 --mode infer --batch 16" ;;
        resnet50-infer-b1) echo "--arch resnet50 --stride-in 3x3 --mode infer --batch 1" ;;
        resnet18-infer-b*) echo "--arch resnet18 --mode infer --batch ${1#resnet18-infer-b}" ;;
        resnet50-train-b*) echo "--arch resnet50 --stride-in 3x3 --mode train --batch ${1#resnet50-train-b}" ;;
    esac
}

# The peers of a workload (--peers, or the strongest ones that run it).
peers_of() {
    if [ -n "$peers" ]; then
        local p
        for p in ${peers//,/ }; do
            [[ "$p" == onnxruntime && "$1" == *-train* ]] || echo "$p"
        done
        return
    fi
    case "$1" in
        *-infer-*) echo "eager channels_last onnxruntime" ;;
        *) echo "eager channels_last" ;;
    esac
}

# "--steps N --warmup W" for a workload (both sides).
steps_args() {
    if [ "$quick" = 1 ]; then echo "--steps 2 --warmup 1"; return; fi
    case "$1" in
        resnet50-infer-b16) echo "--steps 5 --warmup 2" ;;
        resnet50-train-b*) echo "--steps 4 --warmup 1" ;;
        *) echo "--steps 20 --warmup 3" ;;
    esac
}

BIN=target/release/resnet
if [ "$build" = 1 ]; then cargo build --release >&2; fi
[ -x "$BIN" ] || { echo "$BIN missing: build it (drop --no-build)" >&2; exit 1; }
PY="$(scripts/torch-venv.sh)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# run NAME CMD...: run CMD (one JSON object on stdout) into $TMP/NAME.json and log it.
run() {
    local name="$1"; shift
    local t0=$SECONDS
    "$@" > "$TMP/$name.json"
    python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); ips = r.get("img_per_s")
g = r.get("gflops", r.get("gflops_all_threads"))
print("  %s: %.1f GFLOP/s%s (%s s)" % (sys.argv[2], g, ", %.1f img/s" % ips if ips else "", sys.argv[3]))' \
        "$TMP/$name.json" "$name" "$((SECONDS - t0))" >&2
}

load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo nan)"
if python3 -c 'import sys; sys.exit(not float(sys.argv[1]) >= 0.5)' "$load"; then
    echo "WARNING: load average $load before starting: something else is using the CPUs, expect noise" >&2
fi
echo "fp32 FMA peak ($THREADS threads)" >&2
run peak "$BIN" bench --fma-peak --threads $THREADS --json
for w in "${workloads[@]}"; do
    for r in $(seq 1 "$rounds"); do
        echo "$w round $r/$rounds" >&2
        run "$w.ours.$r" "$BIN" bench $(ours_args "$w") $(steps_args "$w") --threads $THREADS --json
        for p in $(peers_of "$w"); do
            run "$w.$p.$r" "$PY" bench/pytorch_bench.py --workload "$w" --peer "$p" $(steps_args "$w") \
                --threads $THREADS --json
        done
    done
done

mkdir -p bench/results
python3 bench/summarize.py --dir "$TMP" --rounds "$rounds" --quick "$quick" --load "$load" \
    --out "bench/results/$(date +%F).jsonl" "${workloads[@]}"
