#!/usr/bin/env python3
"""Table and JSON lines for bench/compare-det.sh (standard library only; any python3).

Usage: summarize_det.py --dir DIR --rounds R --quick 0|1 --load L --cpu CPU --peers P --out FILE.jsonl WORKLOAD...
DIR holds <workload>.<side>.<round>.json for side = ours and each peer (contiguous, channels_last),
one JSON object each as `resnet bench-det --json` and scripts/bench_det_torchvision.py print.
Per workload and side: medians over the rounds of img/s and of the step's median time; peak RSS the
largest over the rounds. The best peer is the one with the highest median img/s; ratio = ours / best
(> 1: ours faster), against issue 18's target. It warns where the sides did not run the same work
(image, classes, threads, steps, RoIs through the head). One JSON line per workload is appended to
FILE.jsonl; every line names the CPU.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

TARGETS = {"c4-infer": 1.2, "c4-train": 1.0, "cifar-train": 1.3}


def git(*args):
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for k in ("--dir", "--cpu", "--peers", "--out"):
        p.add_argument(k, required=True)
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--quick", type=int, choices=(0, 1), default=0)
    p.add_argument("--load", type=float, default=float("nan"))
    p.add_argument("workloads", nargs="+")
    a = p.parse_args()
    peers = a.peers.split(",")
    common = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "git": git("rev-parse", "--short", "HEAD"),
              "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")), "cpu": a.cpu,
              "quick": bool(a.quick), "loadavg_start": a.load, "rounds": a.rounds}
    print(f"{a.cpu}: medians over {a.rounds} round(s), 2 threads"
          + (" [--quick: smoke test, not a measurement]" if a.quick else ""))
    rows = []
    for w in a.workloads:
        runs = {s: [json.load(open(os.path.join(a.dir, f"{w}.{s}.{i}.json"))) for i in range(1, a.rounds + 1)]
                for s in ["ours", *peers]}
        sides = {s: {"img_per_s": statistics.median(r["img_per_s"] for r in rs),
                     "ms_per_step": statistics.median(r["ms_per_step_median"] for r in rs),
                     "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
                     "rois_per_step": statistics.median(r["rois_per_step"] for r in rs),
                     "rounds_img_per_s": [r["img_per_s"] for r in rs]} for s, rs in runs.items()}
        best = max(peers, key=lambda s: sides[s]["img_per_s"])
        ratio = sides["ours"]["img_per_s"] / sides[best]["img_per_s"]
        o = runs["ours"][0]
        bad = []
        for s in peers:
            for k in ("image", "classes", "threads", "steps", "warmup", "force_proposals"):
                if o.get(k) != runs[s][0].get(k):
                    bad.append(f"{k}: ours {o.get(k)} vs {s} {runs[s][0].get(k)}")
            if abs(sides["ours"]["rois_per_step"] - sides[s]["rois_per_step"]) > 0.5:
                bad.append(f"RoIs per step: ours {sides['ours']['rois_per_step']} vs {s} {sides[s]['rois_per_step']}")
        rss_ok = sides["ours"]["peak_rss_mib"] <= sides[best]["peak_rss_mib"]
        target = TARGETS.get(w)
        row = {"workload": w, "mode": o["mode"], "arch": o["arch"], "image": o["image"], "classes": o["classes"],
               "steps": o["steps"], "warmup": o["warmup"], "preset": o["preset"], "sides": sides, "best_peer": best,
               "ratio_to_best": ratio, "target": target, "torch": runs[best][0].get("torch"),
               "torchvision": runs[best][0].get("torchvision"), "rss_not_above_best_peer": rss_ok, "mismatches": bad}
        rows.append(row)
        s = sides
        print(f"{w} ({a.cpu}): ours {s['ours']['img_per_s']:.3f} img/s ({s['ours']['ms_per_step']:.0f} ms, "
              f"RSS {s['ours']['peak_rss_mib']:.0f} MiB, {s['ours']['rois_per_step']:.0f} RoIs); "
              + "; ".join(f"torchvision {p} {s[p]['img_per_s']:.3f} ({s[p]['ms_per_step']:.0f} ms, RSS "
                          f"{s[p]['peak_rss_mib']:.0f} MiB, {s[p]['rois_per_step']:.0f} RoIs)" for p in peers)
              + f"; ours / best ({best}) = {ratio:.2f}x"
              + (f" (target {target}x: {'met' if ratio >= target else 'NOT met'})" if target else "")
              + f"; RSS {'not above' if rss_ok else 'ABOVE'} the best peer's")
        for side, v in s.items():
            print(f"    {side:<14} rounds img/s: " + " / ".join(f"{x:.3f}" for x in v["rounds_img_per_s"]))
        for m in bad:
            print(f"WARNING: {w}: not the same work: {m}", file=sys.stderr)
    with open(a.out, "a") as f:
        for r in rows:
            f.write(json.dumps({**common, **r}) + "\n")
    print(f"appended {len(rows)} lines to {a.out}")


if __name__ == "__main__":
    main()
