#!/usr/bin/env python3
"""Detection ops, ours against torchvision.ops, in one alternating run (ours, torch, ours, torch, ...),
2 threads, medians: nms (6000 boxes -> 300 at IoU 0.7) and roi_align (300 RoIs on a 1024 x 38 x 63 map
-> 14 x 14, aligned, sampling ratio 2, forward + backward). Needs the PyTorch venv (scripts/torch-venv.sh):

    cargo build --release --example detect_bench
    $TORCH_VENV/bin/python bench/detect_ops.py [rounds]

Prints one line per op: ours ms, torchvision ms, ratio (torchvision / ours: above 1 is faster).
"""
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torchvision.ops import nms, roi_align

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BIN = os.path.join(ROOT, "target", "release", "examples", "detect_bench")
REPS = {"nms": 20, "roi_align": 5}


def boxes(n, g):
    w, h = 8 + torch.rand(n, generator=g) * 392, 8 + torch.rand(n, generator=g) * 392
    x, y = torch.rand(n, generator=g) * (1008 - w), torch.rand(n, generator=g) * (608 - h)
    return torch.stack([x, y, x + w, y + h], 1)


def torch_ms(op, reps):
    g = torch.Generator().manual_seed(0)
    times = []
    if op == "nms":
        b, s = boxes(6000, g), torch.rand(6000, generator=g)
        for _ in range(reps):
            t = time.perf_counter()
            nms(b, s, 0.7)[:300]
            times.append((time.perf_counter() - t) * 1e3)
    else:
        x = (torch.rand(1, 1024, 38, 63, generator=g) - 0.5).requires_grad_(True)
        rois = torch.cat([torch.zeros(300, 1), boxes(300, g)], 1)
        dy = torch.rand(300, 1024, 14, 14, generator=g) - 0.5
        for _ in range(reps):
            x.grad = None
            t = time.perf_counter()
            y = roi_align(x, rois, (14, 14), 1 / 16, 2, True)
            y.backward(dy)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def ours_ms(op, reps):
    out = subprocess.run([BIN, op, str(reps), "2"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["ms"]


def main():
    torch.set_num_threads(2)
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for op in ["nms", "roi_align"]:
        ours, theirs = [], []
        for _ in range(rounds):
            ours.append(ours_ms(op, REPS[op]))
            theirs.append(torch_ms(op, REPS[op]))
        o, t = statistics.median(ours), statistics.median(theirs)
        print(json.dumps({"op": op, "ours_ms": round(o, 3), "torchvision_ms": round(t, 3), "ratio": round(t / o, 2),
                          "torch": torch.__version__}))


if __name__ == "__main__":
    main()
