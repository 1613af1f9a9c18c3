#!/usr/bin/env bash
# A short run of every fuzz target (examples/fuzz.rs): the .pth reader, the
# safetensors/checkpoint reader, the image decoding wrapper, and the COCO / VOC readers.
# Usage: scripts/fuzz.sh [seconds per target, default 20]. Findings go to target/fuzz-findings/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
cargo build --profile fuzz --quiet --example fuzz
for t in pth safetensors image coco voc; do
    ./target/fuzz/examples/fuzz "$t" --secs "$secs"
done
