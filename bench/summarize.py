#!/usr/bin/env python3
"""Table and JSON lines for bench/compare.sh (standard library only; any python3).

Usage: summarize.py --dir DIR --rounds R --quick 0|1 --load L --out FILE.jsonl WORKLOAD...
DIR holds peak.json (`resnet bench --fma-peak --json`) and
<workload>.<side>.<round>.json for side = ours and each peer that ran
(eager, channels_last, compile, onnxruntime), one JSON object each as
`resnet bench --json` and bench/pytorch_bench.py print.

Per workload and side: medians over the rounds of img/s, ms per image (step
median / batch) and GFLOP/s; peak RSS is the largest over the rounds. The best
peer is the one with the highest median img/s; ratio = ours / best peer (> 1:
ours faster); "% peak" = our median GFLOP/s against the FMA peak of the same
run. It checks that every side ran the same workload (batch, input, threads,
multiply-adds per image) and prints a warning where not. Appends one JSON line
per workload (and one for the peak) to FILE.jsonl; every line names the CPU.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import statistics
import subprocess
import sys

PEER_ORDER = ("eager", "channels_last", "compile", "onnxruntime")


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


def mismatches(ours, peer, name):
    """Differences between our workload and a peer's, as readable strings."""
    out = []
    for key in ("mode", "batch", "input", "threads", "steps", "warmup"):
        if ours[key] != peer[key]:
            out.append(f"{key}: ours {ours[key]} vs {name} {peer[key]}")
    if abs(macs_per_image(ours) / peer["macs_per_image"] - 1) > 1e-3:
        out.append(f"multiply-adds per image: ours {macs_per_image(ours):,.0f} vs {name} {peer['macs_per_image']:,}")
    return out


def meta():
    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
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

    peak = load(os.path.join(a.dir, "peak.json"))
    common = {**meta(), "cpu": peak["cpu"], "quick": bool(a.quick), "loadavg_start": a.load, "rounds": a.rounds,
              "threads": peak["threads"], "fma_peak_gflops": peak["gflops_all_threads"]}
    rows, warnings = [], []
    for w in a.workloads:
        names = {os.path.basename(f).split(".")[1] for f in glob.glob(os.path.join(a.dir, f"{w}.*.1.json"))}
        peers = [n for n in PEER_ORDER if n in names]
        runs = {s: [load(os.path.join(a.dir, f"{w}.{s}.{i}.json")) for i in range(1, a.rounds + 1)]
                for s in ["ours", *peers]}
        sides = {s: side_summary(r) for s, r in runs.items()}
        best = max(peers, key=lambda s: sides[s]["img_per_s"])
        versions = {s: {k: runs[s][0][k] for k in ("torch", "onnxruntime") if k in runs[s][0]} for s in peers}
        bad = [m for s in peers for m in mismatches(runs["ours"][0], runs[s][0], s)]
        warnings += [f"{w}: {m}" for m in bad]
        first = runs[best][0]
        rows.append({
            "workload": w, "batch": first["batch"], "mode": first["mode"],
            "steps": first["steps"], "warmup": first["warmup"], "macs_per_image": first["macs_per_image"],
            "sides": sides, "versions": versions, "best_peer": best,
            "ratio_to_best": sides["ours"]["img_per_s"] / sides[best]["img_per_s"],
            "ratios": {s: sides["ours"]["img_per_s"] / sides[s]["img_per_s"] for s in peers},
            "ours_pct_of_peak": 100.0 * sides["ours"]["gflops"] / peak["gflops_all_threads"],
            "mismatches": bad,
        })

    print(f"{peak['cpu']}: fp32 FMA peak {peak['gflops_all_threads']:.1f} GFLOP/s on {peak['threads']} threads "
          f"({peak['gflops_one_thread']:.1f} on one); medians over {a.rounds} round(s)"
          + (" [--quick: smoke test, not a measurement]" if a.quick else ""))
    for r in rows:
        s = r["sides"]
        print(f"{r['workload']}: ours {s['ours']['img_per_s']:.1f} img/s ({s['ours']['gflops']:.1f} GFLOP/s, "
              f"{r['ours_pct_of_peak']:.0f}% of peak, RSS {s['ours']['peak_rss_mib']:.0f} MiB); "
              + "; ".join(f"{p} {s[p]['img_per_s']:.1f} (RSS {s[p]['peak_rss_mib']:.0f})" for p in r["ratios"])
              + f"; ours / best ({r['best_peer']}) = {r['ratio_to_best']:.2f}x")
        for side, v in s.items():
            print(f"    {side:<14} rounds img/s: " + " / ".join(f"{x:.1f}" for x in v["rounds_img_per_s"]))
    for m in warnings:
        print(f"WARNING: not the same workload: {m}", file=sys.stderr)

    with open(a.out, "a") as f:
        f.write(json.dumps({**common, "workload": "fma-peak", "peak": peak}) + "\n")
        for r in rows:
            f.write(json.dumps({**common, **r}) + "\n")
    print(f"appended {len(rows) + 1} lines to {a.out}")


if __name__ == "__main__":
    main()
