#!/usr/bin/env bash
# Speed comparison: our engine (`resnet bench`) against PyTorch (bench/pytorch_bench.py)
# on the same workloads, fp32, 2 threads. Developer tool, not part of CI.
#
# Usage: bench/compare.sh [--rounds R] [--quick] [--no-build] [WORKLOAD...]
#   WORKLOAD    resnet20-train resnet56-train resnet110-train resnet50-infer-b16
#               resnet50-infer-b1 (default: all of them)
#   --rounds R  ours and PyTorch's run alternately (A B A B ...), R rounds each
#               (default 3), every run in a fresh process
#   --quick     smoke test: 2 timed steps + 1 warm-up instead of the defaults
#               (training 20 + 3, resnet50 batch 16 5 + 2, batch 1 20 + 3)
#   --no-build  use target/release/resnet as it is (no cargo build)
#
# It builds ours once (cargo build --release), takes PyTorch from the venv of
# scripts/torch-venv.sh (honours TORCH_VENV; created there if missing), measures
# the float32 4096^3 matmul ceiling once with PyTorch, then prints per workload
# the medians over the rounds, the ratio ours/PyTorch (img/s; > 1 = ours faster),
# our GFLOP/s as % of the ceiling and the peak RSS of each side. The same results
# are appended as JSON lines to bench/results/<date>.jsonl (bench/summarize.py).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL="resnet20-train resnet56-train resnet110-train resnet50-infer-b16 resnet50-infer-b1"
THREADS=2
rounds=3 quick=0 build=1 workloads=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="${2:?--rounds needs a value}"; shift 2 ;;
        --quick) quick=1; shift ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) [[ " $ALL " == *" $1 "* ]] || { echo "unknown workload $1; one of: $ALL" >&2; exit 2; }
           workloads+=("$1"); shift ;;
    esac
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive integer" >&2; exit 2; }
[ ${#workloads[@]} -gt 0 ] || read -ra workloads <<< "$ALL"

# Our `resnet bench` arguments for a workload.
ours_args() {
    case "$1" in
        resnet*-train) echo "--arch ${1%-train} --mode train --batch 128" ;;
        resnet50-infer-b16) echo "--arch resnet50 --stride-in 3x3 --mode infer --batch 16" ;;
        resnet50-infer-b1) echo "--arch resnet50 --stride-in 3x3 --mode infer --batch 1" ;;
    esac
}

# "--steps N --warmup W" for a workload (both sides).
steps_args() {
    if [ "$quick" = 1 ]; then echo "--steps 2 --warmup 1"; return; fi
    case "$1" in
        resnet50-infer-b16) echo "--steps 5 --warmup 2" ;;
        matmul) echo "--steps 3 --warmup 1" ;;
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
print("  %s: %.1f GFLOP/s%s (%s s)" % (sys.argv[2], r["gflops"], ", %.1f img/s" % ips if ips else "", sys.argv[3]))' \
        "$TMP/$name.json" "$name" "$((SECONDS - t0))" >&2
}

load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo nan)"
if python3 -c 'import sys; sys.exit(not float(sys.argv[1]) >= 0.5)' "$load"; then
    echo "WARNING: load average $load before starting: something else is using the CPUs, expect noise" >&2
fi
echo "matmul ceiling (PyTorch, fp32 4096^3, $THREADS threads)" >&2
run matmul "$PY" bench/pytorch_bench.py --workload matmul $(steps_args matmul) --threads $THREADS --json
for w in "${workloads[@]}"; do
    for r in $(seq 1 "$rounds"); do
        echo "$w round $r/$rounds" >&2
        run "$w.ours.$r" "$BIN" bench $(ours_args "$w") $(steps_args "$w") --threads $THREADS --json
        run "$w.pytorch.$r" "$PY" bench/pytorch_bench.py --workload "$w" $(steps_args "$w") --threads $THREADS --json
    done
done

mkdir -p bench/results
python3 bench/summarize.py --dir "$TMP" --rounds "$rounds" --quick "$quick" --load "$load" \
    --out "bench/results/$(date +%F).jsonl" "${workloads[@]}"
