#!/usr/bin/env python3
"""Golden fixtures from torchvision.ops for the detection ops (tests/detect_golden.rs).

Run on a developer machine with PyTorch + torchvision (never in CI):
    scripts/torch-venv.sh  # once: creates $TORCH_VENV (default ~/.cache/resnet/torch-venv)
    $TORCH_VENV/bin/python scripts/detect_fixtures.py      # -> tests/golden/detect_ops.json

Every input is drawn from torch.manual_seed(16), rounded to float32 (what our engine holds), and
written into the fixture; the reference is computed in float64. Layouts: feature maps and their
gradients are written NHWC (ours), RoI outputs as K x PH x PW x C. The tests apply
max|ours - ref| <= 1e-5 * max(1, max|ref|) per array, and exact equality for NMS's kept indices
(the random NMS cases are drawn until no IoU lies within 1e-4 of a threshold, so float32 and
float64 agree on every comparison).
"""
import json
import os

import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou, nms, roi_align, roi_pool
from torchvision.ops.boxes import _batched_nms_vanilla

D = torch.float64


def f32(t):
    return t.float().double()


def flat(t):
    # 12 significant digits: far below the tests' tolerance, half the bytes of repr()
    return [float(f"{v:.12g}") for v in t.reshape(-1).tolist()]


def rand_boxes(n, size, min_wh=1.0, max_wh=None):
    max_wh = max_wh or size / 2
    xy = torch.rand(n, 2, dtype=D) * size
    wh = min_wh + torch.rand(n, 2, dtype=D) * (max_wh - min_wh)
    return f32(torch.cat([xy, xy + wh], 1))


def iou_cases():
    a, b = rand_boxes(7, 50), rand_boxes(5, 50)
    b[0] = a[0]  # identical pair
    b[1] = f32(a[1] + 100)  # disjoint
    return {"a": flat(a), "b": flat(b), "iou": flat(box_iou(a, b))}


def coder_cases():
    out = []
    for weights in [(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0)]:
        coder = BoxCoder(weights)
        gt, prop = rand_boxes(8, 100, 2, 60), rand_boxes(8, 100, 2, 60)
        deltas = coder.encode_single(gt, prop)
        codes = f32(torch.randn(8, 4, dtype=D) * 2)
        codes[0, 2] = 30.0  # beyond the clamp log(1000/16) times any weight here
        codes[1, 3] = 40.0
        anchors = rand_boxes(8, 100, 2, 60)
        decoded = coder.decode_single(codes, anchors)
        out.append({"weights": list(weights), "gt": flat(gt), "proposals": flat(prop), "deltas": flat(deltas),
                    "codes": flat(codes), "anchors": flat(anchors), "decoded": flat(decoded)})
    return out


def anchor_cases():
    out = []
    # (image h, w), (feature h, w): strides 4 and 16
    for (ih, iw), (fh, fw), sizes in [((32, 40), (8, 10), (32, 64)), ((128, 176), (8, 11), (128, 256, 512))]:
        ratios = (0.5, 1.0, 2.0)
        gen = AnchorGenerator(sizes=(sizes,), aspect_ratios=(ratios,))
        images = ImageList(torch.zeros(1, 3, ih, iw, dtype=D), [(ih, iw)])
        anchors = gen(images, [torch.zeros(1, 1, fh, fw, dtype=D)])[0]
        out.append({"sizes": list(sizes), "ratios": list(ratios), "grid": [fh, fw], "stride": [ih // fh, iw // fw],
                    "anchors": flat(anchors)})
    return out


def iou_margin(boxes, thresholds):
    iou = box_iou(boxes, boxes)
    return min(float((iou - t).abs().min()) for t in thresholds)


def nms_cases():
    cases = []
    thresholds = [0.3, 0.5, 0.7]
    while True:
        boxes = rand_boxes(60, 100, 4, 40)
        if iou_margin(boxes, thresholds) > 1e-4:
            break
    scores = f32(torch.rand(60, dtype=D))
    scores[10] = scores[20] = scores[30] = scores[5]  # ties
    classes = torch.randint(0, 4, (60,))
    for t in thresholds:
        cases.append({"boxes": flat(boxes), "scores": flat(scores), "classes": classes.tolist(), "threshold": t,
                      "keep": nms(boxes, scores, t).tolist(),
                      "batched_keep": _batched_nms_vanilla(boxes, scores, classes, t).tolist()})
    # equal scores everywhere; IoU exactly at the threshold (0.5: [0,0,2,1] vs [0,0,1,1])
    eq = torch.tensor([[0, 0, 2, 1], [0, 0, 1, 1], [0, 0, 2, 1], [5, 5, 9, 9], [5, 5, 9, 9]], dtype=D)
    for t in [0.5, 0.4999]:
        s = torch.ones(5, dtype=D)
        c = torch.tensor([0, 0, 1, 1, 1])
        cases.append({"boxes": flat(eq), "scores": flat(s), "classes": c.tolist(), "threshold": t,
                      "keep": nms(eq, s, t).tolist(), "batched_keep": _batched_nms_vanilla(eq, s, c, t).tolist()})
    e = torch.zeros(0, 4, dtype=D)
    cases.append({"boxes": [], "scores": [], "classes": [], "threshold": 0.5,
                  "keep": nms(e, torch.zeros(0, dtype=D), 0.5).tolist(), "batched_keep": []})
    return cases


def roi_cases():
    n, c, h, w = 2, 3, 9, 11
    x = f32(torch.randn(n, c, h, w, dtype=D))
    scale = 0.5
    rois = torch.tensor([
        [0, 2.0, 3.0, 15.0, 12.0],
        [1, -6.0, -4.0, 8.0, 6.0],     # partly outside
        [1, 14.0, 10.0, 30.0, 24.0],   # partly outside (right, bottom)
        [0, 5.0, 5.0, 5.0, 5.0],       # degenerate: a point
        [1, 9.0, 4.0, 8.5, 12.0],      # degenerate: x2 < x1
        [0, 0.0, 0.0, 21.0, 17.0],     # the whole map
        [1, 3.3, 7.7, 11.1, 9.9],
    ], dtype=D)
    rois = f32(rois)
    out = {"x_nhwc": flat(x.permute(0, 2, 3, 1)), "dims": [n, h, w, c], "rois": flat(rois), "scale": scale,
           "align": [], "pool": []}
    for aligned in [False, True]:
        for sampling in [0, 2]:
            for ph, pw in [(3, 2)]:
                xx = x.clone().requires_grad_(True)
                y = roi_align(xx, rois, (ph, pw), scale, sampling, aligned)
                dy = f32(torch.randn_like(y))
                (y * dy).sum().backward()
                out["align"].append({"aligned": aligned, "sampling_ratio": sampling, "out": [ph, pw],
                                     "y": flat(y.permute(0, 2, 3, 1)), "dy": flat(dy.permute(0, 2, 3, 1)),
                                     "dx": flat(xx.grad.permute(0, 2, 3, 1))})
    for ph, pw in [(3, 2), (2, 2)]:
        xx = x.clone().requires_grad_(True)
        y = roi_pool(xx, rois, (ph, pw), scale)
        dy = f32(torch.randn_like(y))
        (y * dy).sum().backward()
        out["pool"].append({"out": [ph, pw], "y": flat(y.permute(0, 2, 3, 1)), "dy": flat(dy.permute(0, 2, 3, 1)),
                            "dx": flat(xx.grad.permute(0, 2, 3, 1))})
    return out


def main():
    torch.manual_seed(16)
    fixture = {"torch": torch.__version__, "iou": iou_cases(), "coder": coder_cases(), "anchors": anchor_cases(),
               "nms": nms_cases(), "roi": roi_cases()}
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "detect_ops.json")
    with open(path, "w") as f:
        json.dump(fixture, f)
    print("wrote", os.path.normpath(path), os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
