#!/usr/bin/env bash
# The detection evaluator and data set against pycocotools (PyPI, in a venv at $COCO_VENV, default
# .cache/coco-venv): `resnet eval-det --json` on the 200 generated sets of scripts/coco_eval_fixtures.py
# (all 12 numbers within 1e-6), and a `resnet data fashion-det` set loaded by pycocotools' COCO().
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${COCO_VENV:-$ROOT/.cache/coco-venv}"
source scripts/venv.sh
ensure_venv "$VENV" "import pycocotools, numpy" pycocotools numpy
cargo build --release --quiet --bin resnet
"$VENV/bin/python" scripts/coco_eval_fixtures.py --check ./target/release/resnet
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
./target/release/resnet data fashion-det --data data/fashion-mnist --out "$dir/fdet" --train 20 --val 10 --size 96 >/dev/null
"$VENV/bin/python" scripts/coco_eval_fixtures.py --load "$dir/fdet"
