#!/usr/bin/env bash
# Detection speed against torchvision (issue 18): our Faster R-CNN C4 (`resnet bench-det`) and
# torchvision's same model built from its own classes (scripts/bench_det_torchvision.py), fp32,
# 2 threads, every run a fresh process, alternating (ours, then each peer, per round). Developer
# tool, not part of CI.
#
# Usage: bench/compare-det.sh [--rounds R] [--quick] [--no-build] [--peers P] [WORKLOAD...]
#   WORKLOAD    c4-infer     ResNet-50 C4, one 600 x 1000 image, 81 classes, head on exactly 300
#                            boxes (--force-proposals on both sides: random weights leave the
#                            RPN with fewer after NMS; the RPN still runs), per-class NMS
#               c4-train     the same model, one training step (RPN 2000 proposals, 512 RoIs
#                            sampled, three ground-truth boxes, SGD)
#               cifar-train  the CIFAR-family detector: resnet20 C4 (stride 2), one 128 x 128
#                            image, 11 classes, one training step
#               (default: all three)
#   --rounds R  rounds (default 3); medians over them
#   --peers P   comma-separated torchvision memory formats (default: contiguous,channels_last);
#               the ratio is against the faster of them per workload
#   --quick     smoke test: 1 timed step + 1 warm-up
#   --no-build  use $CARGO_TARGET_DIR/release/resnet (default target/) as it is
#
# Targets (issue 18): c4-infer >= 1.2x, c4-train >= 1.0x, cifar-train >= 1.3x (img/s, ours over the
# best peer), and our peak RSS not above torchvision's. Every line names the CPU (lscpu). Raw
# JSON lines are appended to bench/results/<date>-det.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL="c4-infer c4-train cifar-train"
THREADS=2
peers="contiguous,channels_last"
source bench/args.sh
parse_bench_args "$@"
for p in ${peers//,/ }; do
    [[ "$p" == contiguous || "$p" == channels_last ]] || { echo "unknown peer $p (contiguous, channels_last)" >&2; exit 2; }
done

# The workload's arguments, shared by both sides.
args_of() {
    case "$1" in
        c4-infer) echo "--arch resnet50 --mode infer --classes 81 --proposals 300 --force-proposals" ;;
        c4-train) echo "--arch resnet50 --mode train --classes 81" ;;
        cifar-train) echo "--arch resnet20 --mode train --classes 11" ;;
    esac
}
steps_of() {
    if [ "$quick" = 1 ]; then echo "--steps 1 --warmup 1"; return; fi
    case "$1" in
        c4-infer) echo "--steps 3 --warmup 1" ;;
        c4-train) echo "--steps 2 --warmup 1" ;;
        cifar-train) echo "--steps 5 --warmup 2" ;;
    esac
}

TARGET="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET/release/resnet"
if [ "$build" = 1 ]; then cargo build --release >&2; fi
[ -x "$BIN" ] || { echo "$BIN missing: build it (drop --no-build)" >&2; exit 1; }
PY="$(scripts/torch-venv.sh)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
CPU="$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"

# run NAME CMD...: CMD prints one JSON object into $TMP/NAME.json; log a line.
run() {
    local name="$1"; shift
    local t0=$SECONDS
    "$@" > "$TMP/$name.json"
    python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))
print("  %s: %.3f img/s, %.0f ms/step, %.0f RoIs, RSS %.0f MiB (%s s)" % (sys.argv[2], r["img_per_s"],
      r["ms_per_step_median"], r["rois_per_step"], r["peak_rss_mib"], sys.argv[3]))' \
        "$TMP/$name.json" "$name" "$((SECONDS - t0))" >&2
}

load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo nan)"
if python3 -c 'import sys; sys.exit(not float(sys.argv[1]) >= 0.5)' "$load"; then
    echo "WARNING: load average $load before starting: something else is using the CPUs, expect noise" >&2
fi
for w in "${workloads[@]}"; do
    for r in $(seq 1 "$rounds"); do
        echo "$w round $r/$rounds ($CPU)" >&2
        run "$w.ours.$r" "$BIN" bench-det $(args_of "$w") $(steps_of "$w") --threads $THREADS --json
        for p in ${peers//,/ }; do
            flag=""; [ "$p" = channels_last ] && flag="--channels-last"
            run "$w.$p.$r" "$PY" scripts/bench_det_torchvision.py $(args_of "$w") $(steps_of "$w") $flag \
                --threads $THREADS --json
        done
    done
done

mkdir -p bench/results
python3 bench/summarize_det.py --dir "$TMP" --rounds "$rounds" --quick "$quick" --load "$load" --cpu "$CPU" \
    --peers "$peers" --out "bench/results/$(date +%F)-det.jsonl" "${workloads[@]}"
