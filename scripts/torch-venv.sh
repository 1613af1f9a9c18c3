#!/usr/bin/env bash
# Create (once) a Python venv with PyTorch + torchvision (+ onnxruntime, onnx)
# for the golden fixtures and the speed peers. Never used by the tests or CI.
# Usage: scripts/torch-venv.sh   -> prints the venv's python path
set -euo pipefail
VENV="${TORCH_VENV:-$HOME/.cache/resnet/torch-venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch, torchvision, onnxruntime, onnx' 2>/dev/null; then
    echo "creating $VENV (PyTorch from PyPI, about 5 GB)..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch torchvision onnxruntime onnx >&2
fi
echo "$VENV/bin/python"
