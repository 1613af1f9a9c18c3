#!/usr/bin/env bash
# Checks `resnet export` end to end: exports CIFAR (A, plain, B, C, grey) and
# ImageNet (ResNet-18, ResNet-50 v1.5) networks, with BN kept and folded, runs
# each file in onnxruntime (PyPI) and compares its logits with ours.
# onnxruntime and numpy go into a venv at $ORT_VENV (default .cache/ort-venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${ORT_VENV:-$ROOT/.cache/ort-venv}"
source scripts/venv.sh
ensure_venv "$VENV" "import onnxruntime, numpy" onnxruntime numpy
cargo build --release --quiet --bin resnet --example onnx_cases
dir="$ROOT/.cache/onnx-export"
rm -rf "$dir"
./target/release/examples/onnx_cases "$dir" 2>/dev/null
"$VENV/bin/python" scripts/check_onnx_export.py ./target/release/resnet "$dir"
