#!/usr/bin/env python3
"""Markdown table per convolution shape: ours (examples/conv_bench output, the
default kernel path of each shape) beside oneDNN and MLAS (bench/conv_peers.py
output), GFLOP/s and % of the FMA peak. Standard library only.

Usage: shape_table.py OURS.txt PEERS.txt PEAK_GFLOPS
OURS.txt: `cargo run --release --example conv_bench -- 16 imagenet` output
PEERS.txt: `$PY bench/conv_peers.py --batch 16` output
"""
import re
import sys


def cells(line):
    """GFLOP/s values of a line's 'G (ms)' cells."""
    return [float(g) for g, _ in re.findall(r"(\d+) \(([\d.]+)\)", line)]


def main():
    ours_txt, peers_txt, peak = sys.argv[1], sys.argv[2], float(sys.argv[3])
    ours = {}
    for line in open(ours_txt):
        m = re.match(r"(\d+x\d+ \d+->\d+ k\d+/\d+) (Avx512|Winograd)\s", line)
        if m:
            ours.setdefault(m.group(1), {})[m.group(2)] = cells(line)
    peers = {}
    for line in open(peers_txt):
        m = re.match(r"(\d+x\d+ \d+->\d+ k\d+/\d+)\s", line)
        if m:
            peers[m.group(1)] = cells(line)
    pct = lambda g: f"{g:.0f} ({100 * g / peak:.0f}%)"  # noqa: E731
    print("| shape (input, cin->cout, k/stride) | ours fwd | ours bwd-data | ours bwd-weight "
          "| oneDNN fwd | oneDNN bwd-data | oneDNN bwd-weight | MLAS fwd |")
    print("|---|---|---|---|---|---|---|---|")
    for shape, paths in ours.items():
        # the path the net runs: Winograd where it applies (3x3/1, it reports more than the direct path)
        wino = "Winograd" in paths and "k3/1" in shape and paths["Winograd"][0] > 1.3 * paths["Avx512"][0]
        o = paths["Winograd" if wino else "Avx512"]
        p = peers.get(shape, [float("nan")] * 4)
        mark = " (Winograd)" if wino else ""
        # the stem's backward-data is never run: the input image needs no gradient
        bwd_data = "not run" if shape.startswith("224x224 3->") else pct(o[1])
        print(f"| {shape}{mark} | {pct(o[0])} | {bwd_data} | {pct(o[2])} | "
              f"{pct(p[0])} | {pct(p[1])} | {pct(p[2])} | {pct(p[3])} |")


if __name__ == "__main__":
    main()
