#!/usr/bin/env bash
# Fetches the ONNX operator reference tests used by tests/onnx_ops.rs from
# Debian's libonnx-testdata package (1.12.0-2 in bookworm) and copies the
# node test directories listed below into $ROOT/.cache/onnx-node/.
# Idempotent: does nothing when every listed case is already there (a cache made
# from a shorter list is fetched again).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.cache/onnx-node"

# Keep in step with the case lists in tests/onnx_ops.rs.
CASES=(
  test_conv_with_strides_padding
  test_conv_with_strides_no_padding
  test_conv_with_autopad_same
  test_batchnorm_example
  test_batchnorm_epsilon
  test_batchnorm_example_training_mode
  test_batchnorm_epsilon_training_mode
  test_relu
  test_maxpool_2d_default
  test_maxpool_2d_pads
  test_maxpool_2d_strides
  test_maxpool_2d_precomputed_pads
  test_maxpool_2d_precomputed_strides
  test_maxpool_2d_precomputed_same_upper
  test_maxpool_with_argmax_2d_precomputed_pads
  test_maxpool_with_argmax_2d_precomputed_strides
  test_globalaveragepool
  test_globalaveragepool_precomputed
  test_gemm_default_vector_bias
  test_gemm_default_zero_bias
  test_gemm_default_no_bias
  test_gemm_default_scalar_bias
  test_gemm_default_single_elem_vector_bias
  test_gemm_transposeA
  test_gemm_transposeB
  test_softmax_example
  test_softmax_axis_0
  test_softmax_axis_1
  test_softmax_axis_2
  test_softmax_default_axis
  test_softmax_negative_axis
  test_softmax_large_number
  test_roialign_aligned_false
  test_roialign_aligned_true
  test_nonmaxsuppression_center_point_box_format
  test_nonmaxsuppression_flipped_coordinates
  test_nonmaxsuppression_identical_boxes
  test_nonmaxsuppression_limit_output_size
  test_nonmaxsuppression_single_box
  test_nonmaxsuppression_suppress_by_IOU
  test_nonmaxsuppression_suppress_by_IOU_and_scores
  test_nonmaxsuppression_two_batches
  test_nonmaxsuppression_two_classes
)

# done when every case is there (a cache from a shorter list is fetched again)
have_all=1
for c in "${CASES[@]}"; do
  [[ -f "$DEST/$c/model.onnx" ]] || have_all=0
done
if [[ $have_all == 1 ]]; then
  exit 0
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# (as root, apt warns that the download is unsandboxed: harmless)
cd "$TMP"
if ! apt-get download -q libonnx-testdata; then
  apt-get update -qq
  apt-get download -q libonnx-testdata
fi
DEB=(libonnx-testdata_*.deb)
echo "fetched ${DEB[0]} (version $(dpkg-deb -f "${DEB[0]}" Version))"
dpkg-deb -x "${DEB[0]}" "$TMP/x"
SRC="$TMP/x/usr/share/libonnx-testdata/data/node"

# copy into a staging dir first so an interrupted run leaves no partial cache
STAGE="$DEST.partial"
rm -rf "$STAGE"
mkdir -p "$STAGE"
for c in "${CASES[@]}"; do
  if [[ ! -f "$SRC/$c/model.onnx" ]]; then
    echo "error: $c not found in ${DEB[0]}" >&2
    exit 1
  fi
  cp -r "$SRC/$c" "$STAGE/"
done
rm -rf "$DEST"
mv "$STAGE" "$DEST"
echo "copied ${#CASES[@]} ONNX node tests into $DEST"
