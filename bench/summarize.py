#!/usr/bin/env python3
"""Table and JSON lines for bench/compare.sh (standard library only; any python3).

Usage: summarize.py --dir DIR --rounds R --quick 0|1 --load L --out FILE.jsonl WORKLOAD...
DIR holds matmul.json (the ceiling) and <workload>.<ours|pytorch>.<round>.json,
one JSON object each as `resnet bench --json` and bench/pytorch_bench.py print.

Per workload: medians over the rounds of img/s, ms per image (step median / batch)
and GFLOP/s; peak RSS is the largest over the rounds; ratio = ours / PyTorch img/s
(> 1: ours faster); "% ceil" = our median GFLOP/s against the matmul ceiling of
the same run. It checks that both sides ran the same workload (batch, input,
threads, multiply-adds per image) and prints a warning where not.
Appends one JSON line per workload (and one for the ceiling) to FILE.jsonl.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

SIDES = ("ours", "pytorch")
COLUMNS = [  # header, width, format, value(row)
    ("workload", 18, "{}", lambda r: r["workload"]),
    ("ours img/s", 10, "{:.1f}", lambda r: r["ours"]["img_per_s"]),
    ("torch img/s", 11, "{:.1f}", lambda r: r["pytorch"]["img_per_s"]),
    ("ours/torch", 10, "{:.2f}x", lambda r: r["ratio"]),
    ("ours ms/img", 11, "{:.2f}", lambda r: r["ours"]["ms_per_image"]),
    ("torch ms/img", 12, "{:.2f}", lambda r: r["pytorch"]["ms_per_image"]),
    ("ours GFLOP/s", 12, "{:.1f}", lambda r: r["ours"]["gflops"]),
    ("% ceil", 6, "{:.0f}%", lambda r: r["ours_pct_of_ceiling"]),
    ("torch GFLOP/s", 13, "{:.1f}", lambda r: r["pytorch"]["gflops"]),
    ("ours RSS MiB", 12, "{:.0f}", lambda r: r["ours"]["peak_rss_mib"]),
    ("torch RSS MiB", 13, "{:.0f}", lambda r: r["pytorch"]["peak_rss_mib"]),
]


def table_line(cells):
    """One table row: the first column left-aligned, the others right-aligned."""
    return "  ".join(c.rjust(wd) if i else c.ljust(wd) for i, (c, (_, wd, _, _)) in enumerate(zip(cells, COLUMNS)))


def load(path):
    with open(path) as f:
        return json.load(f)


def macs_per_image(run):
    """Multiply-adds per image implied by a run's gflops (ours does not print them)."""
    passes = 3.0 if run["mode"] == "train" else 1.0
    return run["gflops"] * 1e9 / (2.0 * passes * run["img_per_s"])


def side_summary(runs):
    return {
        "img_per_s": statistics.median(r["img_per_s"] for r in runs),
        "ms_per_image": statistics.median(r["ms_per_step_median"] / r["batch"] for r in runs),
        "gflops": statistics.median(r["gflops"] for r in runs),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "rounds_img_per_s": [r["img_per_s"] for r in runs],
    }


def mismatches(ours, torch):
    """Differences between the two sides' workloads, as readable strings."""
    out = []
    for key in ("mode", "batch", "input", "threads", "steps", "warmup"):
        if ours[key] != torch[key]:
            out.append(f"{key}: ours {ours[key]} vs PyTorch {torch[key]}")
    if abs(macs_per_image(ours) / torch["macs_per_image"] - 1) > 1e-3:
        out.append(f"multiply-adds per image: ours {macs_per_image(ours):,.0f} vs PyTorch {torch['macs_per_image']:,}")
    return out


def meta():
    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None) \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu,
        "git": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True)
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--quick", type=int, choices=(0, 1), default=0)
    p.add_argument("--load", type=float, default=float("nan"), help="1-minute load average at the start")
    p.add_argument("--out", required=True)
    p.add_argument("workloads", nargs="+")
    a = p.parse_args()

    ceiling = load(os.path.join(a.dir, "matmul.json"))
    common = {**meta(), "quick": bool(a.quick), "loadavg_start": a.load, "rounds": a.rounds, "threads": ceiling["threads"],
              "torch": ceiling["torch"], "matmul_gflops": ceiling["gflops"]}
    rows, warnings = [], []
    for w in a.workloads:
        runs = {s: [load(os.path.join(a.dir, f"{w}.{s}.{i}.json")) for i in range(1, a.rounds + 1)] for s in SIDES}
        ours, torch = (side_summary(runs[s]) for s in SIDES)
        first = runs["pytorch"][0]
        bad = mismatches(runs["ours"][0], first)
        warnings += [f"{w}: {m}" for m in bad]
        rows.append({
            "workload": w, "batch": first["batch"], "mode": first["mode"],
            "steps": first["steps"], "warmup": first["warmup"],
            "macs_per_image": first["macs_per_image"],
            "ours": ours, "pytorch": torch,
            "ratio": ours["img_per_s"] / torch["img_per_s"],
            "ours_pct_of_ceiling": 100.0 * ours["gflops"] / ceiling["gflops"],
            "mismatches": bad,
        })

    print(f"matmul ceiling (PyTorch {ceiling['torch']}, fp32 {ceiling['n']}^3, {ceiling['threads']} threads): "
          f"{ceiling['gflops']:.1f} GFLOP/s; medians over {a.rounds} round(s)"
          + (" [--quick: smoke test, not a measurement]" if a.quick else ""))
    print(table_line(h for h, _, _, _ in COLUMNS))
    for r in rows:
        print(table_line(fmt.format(val(r)) for _, _, fmt, val in COLUMNS))
    for m in warnings:
        print(f"WARNING: not the same workload: {m}", file=sys.stderr)

    with open(a.out, "a") as f:
        f.write(json.dumps({**common, "workload": "matmul", "matmul": ceiling}) + "\n")
        for r in rows:
            f.write(json.dumps({**common, **r}) + "\n")
    print(f"appended {len(rows) + 1} lines to {a.out}")


if __name__ == "__main__":
    main()
