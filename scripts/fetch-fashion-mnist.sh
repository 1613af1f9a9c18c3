#!/usr/bin/env bash
# Fetches Fashion-MNIST (the four IDX .gz files) from Debian's dataset-fashion-mnist package into
# $ROOT/data/fashion-mnist/ (data/ is git-ignored) and prints that directory.
# Idempotent: does nothing but print the directory if the four files are already there.
# Load it with resnet::data::load(Path::new("data/fashion-mnist"), None).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/data/fashion-mnist"
FILES=(
  train-images-idx3-ubyte.gz
  train-labels-idx1-ubyte.gz
  t10k-images-idx3-ubyte.gz
  t10k-labels-idx1-ubyte.gz
)

have_all() {
  local f
  for f in "${FILES[@]}"; do
    [[ -s "$DEST/$f" ]] || return 1
  done
}

if have_all; then
  echo "$DEST"
  exit 0
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# (as root, apt warns that the download is unsandboxed: harmless)
cd "$TMP"
if ! apt-get download -q dataset-fashion-mnist >&2; then
  apt-get update -qq >&2
  apt-get download -q dataset-fashion-mnist >&2
fi
DEB=(dataset-fashion-mnist_*.deb)
echo "fetched ${DEB[0]} (version $(dpkg-deb -f "${DEB[0]}" Version))" >&2
dpkg-deb -x "${DEB[0]}" "$TMP/x"
SRC="$TMP/x/usr/share/datasets/fashion-mnist"

mkdir -p "$DEST"
for f in "${FILES[@]}"; do
  if [[ ! -s "$SRC/$f" ]]; then
    echo "error: usr/share/datasets/fashion-mnist/$f not found in ${DEB[0]}" >&2
    exit 1
  fi
  # copy then rename, so an interrupted run leaves no partial file under the final name
  cp "$SRC/$f" "$DEST/$f.partial"
  mv "$DEST/$f.partial" "$DEST/$f"
done
echo "$DEST"
