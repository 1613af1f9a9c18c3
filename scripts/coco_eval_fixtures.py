#!/usr/bin/env python3
"""pycocotools' numbers on seeded random detection sets, for the COCO evaluator's tests.

    python scripts/coco_eval_fixtures.py                # -> tests/golden/coco_eval.json (the 12 numbers per set)
    python scripts/coco_eval_fixtures.py --check BIN    # runs `BIN eval-det --json` on every set, compares
    python scripts/coco_eval_fixtures.py --load DIR     # pycocotools loads a `resnet data fashion-det` set

Needs pycocotools (PyPI) and numpy only; scripts/test.sh runs the --check form in a venv of its own.

No set is stored: each is recreated from the counter-based generator that tests/coco_eval.rs
implements identically, u(name, i) = (splitmix64(fnv1a64(name) + i) >> 40) / 2**24, drawn in the
order the code below draws (see `make_set`). Every value is a float64 both languages compute with
the same IEEE operations in the same order (quarter-pixel boxes, scores in steps of 1/20 for ties),
so both evaluators see identical inputs. The sets cover crowd regions, empty images, images with
more than 100 detections, categories without ground truth, detections of categories an image lacks,
and tied scores.
"""
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from counter_rng import M64, fnv1a64, splitmix64  # noqa: E402  (src/rng.rs in Python)

SETS = 200




class Draw:
    """u() returns element 0, 1, 2, ... of the stream `name`."""

    def __init__(self, name):
        self.base = fnv1a64(name)
        self.i = 0

    def u(self):
        z = splitmix64((self.base + self.i) & M64)
        self.i += 1
        return (z >> 40) / float(1 << 24)

    def below(self, n):
        return math.floor(self.u() * n)

    def quarter(self, x):
        return math.floor(self.u() * x * 4.0) / 4.0


def make_set(s):
    r = Draw(f"cocoeval/{s}")
    n_images = 1 + r.below(6)
    n_cats = 1 + r.below(4)
    cats = [{"id": 3 * k + 1, "name": f"c{k}"} for k in range(n_cats)]
    # every third set: the last category has no ground truth
    gt_cats = n_cats - 1 if (s % 3 == 0 and n_cats >= 2) else n_cats
    images, anns, dets = [], [], []
    for i in range(n_images):
        img_id = 10 * i + 7
        w, h = 64 + r.below(512), 64 + r.below(512)
        images.append({"id": img_id, "file_name": f"{img_id}.jpg", "width": w, "height": h})
        n_gt = 0 if r.u() < 0.15 else r.below(8)
        mine = []
        for _ in range(n_gt):
            bw = 2.0 + r.quarter(w * 0.6)
            bh = 2.0 + r.quarter(h * 0.6)
            x = r.quarter(w - bw)
            y = r.quarter(h - bh)
            cat = cats[r.below(gt_cats)]["id"]
            area = bw * bh * (0.5 + r.u())
            crowd = 1 if r.u() < 0.1 else 0
            a = {"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": [x, y, bw, bh], "area": area,
                 "iscrowd": crowd}
            anns.append(a)
            mine.append(a)
        n_det = 130 if (s % 5 == 0 and i == 0) else r.below(12)
        for _ in range(n_det):
            if mine and r.u() < 0.6:
                g = mine[r.below(len(mine))]
                gx, gy, gw, gh = g["bbox"]
                x = math.floor((gx + (r.u() - 0.5) * gw * 0.4) * 4.0) / 4.0
                y = math.floor((gy + (r.u() - 0.5) * gh * 0.4) * 4.0) / 4.0
                bw = math.floor(gw * (0.7 + 0.6 * r.u()) * 4.0) / 4.0 + 0.25
                bh = math.floor(gh * (0.7 + 0.6 * r.u()) * 4.0) / 4.0 + 0.25
                cat = g["category_id"] if r.u() < 0.8 else cats[r.below(n_cats)]["id"]
            else:
                bw = 1.0 + r.quarter(w * 0.5)
                bh = 1.0 + r.quarter(h * 0.5)
                x = r.quarter(w - bw)
                y = r.quarter(h - bh)
                cat = cats[r.below(n_cats)]["id"]
            score = math.floor(r.u() * 20.0) / 20.0
            dets.append({"image_id": img_id, "category_id": cat, "bbox": [x, y, bw, bh], "score": score})
    if not dets:  # pycocotools' loadRes cannot take an empty list
        dets.append({"image_id": images[0]["id"], "category_id": cats[0]["id"], "bbox": [1.0, 1.0, 5.0, 5.0],
                     "score": 0.5})
    return {"images": images, "annotations": anns, "categories": cats}, dets


def pycocotools_stats(gt, dets):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        res = coco.loadRes(json.loads(json.dumps(dets)))
        e = COCOeval(coco, res, "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return [float(v) for v in e.stats]


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        return check(sys.argv[2])
    if len(sys.argv) == 3 and sys.argv[1] == "--load":
        return load(sys.argv[2])
    out = {"sets": SETS, "stats": [pycocotools_stats(*make_set(s)) for s in range(SETS)]}
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "coco_eval.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print("wrote", os.path.normpath(path))


def check(binary):
    worst = 0.0
    with tempfile.TemporaryDirectory() as d:
        for s in range(SETS):
            gt, dets = make_set(s)
            gp, rp = os.path.join(d, "gt.json"), os.path.join(d, "r.json")
            with open(gp, "w") as f:
                json.dump(gt, f)
            with open(rp, "w") as f:
                json.dump(dets, f)
            p = subprocess.run([binary, "eval-det", "--gt", gp, "--results", rp, "--json"], capture_output=True,
                               text=True)
            if p.returncode != 0:
                sys.exit(f"set {s}: eval-det failed: {p.stderr}")
            ours = json.loads(p.stdout)["stats"]
            ref = pycocotools_stats(gt, dets)
            err = max(abs(a - b) for a, b in zip(ours, ref))
            worst = max(worst, err)
            if err > 1e-6:
                sys.exit(f"set {s}: ours {ours}\n   pycocotools {ref}")
    print(f"eval-det agrees with pycocotools on {SETS} sets (max difference {worst:.1e})")


def load(root):
    from pycocotools.coco import COCO

    for split in ["train", "val"]:
        path = os.path.join(root, "annotations", f"instances_{split}.json")
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(path)
        anns = coco.loadAnns(coco.getAnnIds())
        for im in coco.loadImgs(coco.getImgIds()):
            if not os.path.isfile(os.path.join(root, "JPEGImages", im["file_name"])):
                sys.exit(f"{path}: image {im['file_name']} missing")
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                for a in anns]
        if dets:
            gt = json.load(open(path))
            stats = pycocotools_stats(gt, dets)
            if abs(stats[0] - 1.0) > 1e-9:
                sys.exit(f"{path}: its own boxes as detections score AP {stats[0]}, not 1")
        print(f"pycocotools loads {path}: {len(coco.getImgIds())} images, {len(anns)} objects, "
              f"{len(coco.getCatIds())} categories")


if __name__ == "__main__":
    main()
