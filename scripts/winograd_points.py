#!/usr/bin/env python3
"""Rounding of Winograd F(4x4, 3x3) for a choice of interpolation points (BENCHMARKS.md,
"late night"): builds A^T, G and B^T by the modified Toom-Cook construction for the points
(plus infinity), runs one output tile over CIN channels in float32 as the engine does
(transforms, a float32 sum over the channels, the output transform), and prints the RMS over
trials of max |error| / max |y| against the float64 direct convolution. It also prints the
matrices of the points the engine uses (src/kernels/winograd.rs).

Usage (numpy; the venv of scripts/torch-venv.sh has it):
    python3 scripts/winograd_points.py [CIN] [TRIALS]
"""
import sys
from fractions import Fraction as F

import numpy as np


def matrices(points, m=4, r=3):
    """A^T (m x a), G (a x r), B^T (a x a) for the finite `points` and infinity (a = m + r - 1)."""
    a = m + r - 1
    assert len(points) == a - 1
    at, g, bt = np.zeros((m, a)), np.zeros((a, r)), np.zeros((a, a))

    def times(p, q):
        out = [F(0)] * (len(p) + len(q) - 1)
        for i, x in enumerate(p):
            for j, y in enumerate(q):
                out[i + j] += x * y
        return out

    for i, p in enumerate(points):
        at[:, i] = [float(p**j) for j in range(m)]
        f, poly = F(1), [F(1)]
        for q in points:
            if q != p:
                f *= p - q
                poly = times(poly, [-q, F(1)])
        g[i] = [float(p**k / f) for k in range(r)]
        bt[i, : len(poly)] = [float(c) for c in poly]
    at[m - 1, a - 1], g[a - 1, r - 1] = 1, 1
    poly = [F(1)]
    for q in points:
        poly = times(poly, [-q, F(1)])
    bt[a - 1] = [float(c) for c in poly]
    return at, g, bt


def error(points, cin, trials, seed=0):
    at, g, bt = (x.astype(np.float32) for x in matrices([F(p) for p in points]))
    rng = np.random.default_rng(seed)
    worst = []
    for _ in range(trials):
        d = rng.uniform(-1, 1, (cin, 6, 6)).astype(np.float32)
        w = rng.uniform(-1, 1, (cin, 3, 3)).astype(np.float32)
        ref = np.array([[np.sum(d[:, i : i + 3, j : j + 3].astype(np.float64) * w) for j in range(4)] for i in range(4)])
        v = np.einsum("ab,cbd,ed->cae", bt, d, bt).astype(np.float32)
        u = np.einsum("ab,cbd,ed->cae", g, w, g).astype(np.float32)
        m = np.zeros((6, 6), np.float32)
        for c in range(cin):
            m = (m + u[c] * v[c]).astype(np.float32)
        y = (at @ m @ at.T).astype(np.float32)
        worst.append(np.abs(y - ref).max() / np.abs(ref).max())
    return float(np.sqrt(np.mean(np.square(worst))))


def main():
    cin = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    trials = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    half = F(1, 2)
    for points in [(0, 1, -1, 2, -2), (0, 1, -1, half, -2), (0, 1, -1, half, -half), (0, 1, -1, F(3, 2), -F(3, 2))]:
        print(f"points {', '.join(str(p) for p in points)}: {error(points, cin, trials):.2e} of max |y| ({cin} channels)")
    np.set_printoptions(linewidth=120)
    at, g, bt = matrices([F(0), F(1), F(-1), half, F(-2)])
    print("the engine's points 0, 1, -1, 1/2, -2:\nA^T\n", at, "\nG\n", g, "\nB^T\n", bt)


if __name__ == "__main__":
    main()
