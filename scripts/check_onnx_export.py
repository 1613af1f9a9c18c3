#!/usr/bin/env python3
"""Runs every case of examples/onnx_cases.rs through `resnet export` (BN kept
and BN folded) and onnxruntime, and compares onnxruntime's logits with our
engine's: max|ort - ours| <= 1e-4 * max|ours| per case. Called by
scripts/check-onnx-export.sh, which sets up onnxruntime and numpy.
Usage: check_onnx_export.py RESNET_BINARY CASE_DIR
"""
import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort


def main():
    binary, d = sys.argv[1], sys.argv[2]
    cases = json.load(open(os.path.join(d, "cases.json")))
    worst, failed = 0.0, []
    for c in cases:
        x = np.fromfile(c["input"], dtype="<f4").reshape(c["shape"])
        ours = np.array(c["logits"], dtype=np.float64)
        for fold in [False, True]:
            path = os.path.join(d, c["name"] + ("_folded" if fold else "") + ".onnx")
            cmd = [binary, "export", "--weights", c["weights"], "--onnx", path] + (["--fold-bn"] if fold else [])
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            (got,) = sess.run(["logits"], {"input": x})
            err = float(np.abs(got - ours).max() / np.abs(ours).max())
            worst = max(worst, err)
            tag = f"{c['name']}{' (BN folded)' if fold else ''}"
            print(f"{tag:28s} {c['arch']:10s} max|ort - ours| / max|ours| = {err:.2e}")
            if not err <= 1e-4:
                failed.append(tag)
    print(f"worst {worst:.2e} over {2 * len(cases)} exports; tolerance 1e-4")
    if failed:
        print("FAILED:", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
