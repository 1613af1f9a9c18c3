#!/usr/bin/env bash
# README command 1: build, then show what the engine is and how fast it runs
# here. (Training on real data arrives with the training issue.)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
./target/release/resnet summary --arch resnet20
./target/release/resnet summary --arch resnet50
./target/release/resnet bench --arch resnet20 --batch 128 --steps 10
