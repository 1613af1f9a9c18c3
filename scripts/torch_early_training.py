"""PyTorch side of a sanity check: how fast do ResNet-20 and ResNet-56 (option A)
train in their first iterations on Fashion-MNIST, with our recipe?

Compares the shape of the early training curves (deep ResNets lag the shallow
ones at first?) with our engine's metrics.jsonl. Not a test: CI never runs
PyTorch. Usage (the venv from scripts/torch-venv.sh):

    /work/torch/venv/bin/python scripts/torch_early_training.py --iters 500 --depths 20,56 > torch-early.jsonl

The recipe is ours (README, `resnet train --help`): 28x28 images centred in 32x32
with zeros, per-pixel mean subtracted (pixels in [0, 1]), pad-2 random crops and
flips, batch 128, SGD momentum 0.9, weight decay 1e-4, lr 0.1; He (fan-in)
normal conv weights, BN gamma 1 / beta 0, fc U(+-1/sqrt(64)) and zero bias.
Prints one JSON line per `--log-every` window: arch, iter, train_err (%).
"""

import argparse
import gzip
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from golden_fixtures import CifarResNet  # noqa: E402  (the option-A CIFAR ResNet of the golden tests)


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/fashion-mnist")
    ap.add_argument("--depths", default="20,56")
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    x = idx(os.path.join(a.data, "train-images-idx3-ubyte.gz")).astype(np.float32) / 255.0
    y = torch.from_numpy(idx(os.path.join(a.data, "train-labels-idx1-ubyte.gz")).astype(np.int64))
    x = torch.from_numpy(x - x.mean(0, keepdims=True)).unsqueeze(1)
    x = F.pad(x, (2, 2, 2, 2))  # centred in 32x32
    for depth in [int(d) for d in a.depths.split(",")]:
        torch.manual_seed(a.seed)
        g = torch.Generator().manual_seed(a.seed)
        model = CifarResNet((depth - 2) // 6, classes=10, in_ch=1)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.uniform_(m.weight, -1 / math.sqrt(m.in_features), 1 / math.sqrt(m.in_features))
                nn.init.zeros_(m.bias)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        model.train()
        perm, pos, wrong, seen = torch.randperm(len(y), generator=g), 0, 0, 0
        for it in range(1, a.iters + 1):
            if pos + 128 > len(y):
                perm, pos = torch.randperm(len(y), generator=g), 0
            b = perm[pos : pos + 128]
            pos += 128
            xb = F.pad(x[b], (2, 2, 2, 2))
            offs = torch.randint(0, 5, (len(b), 2), generator=g).tolist()
            xb = torch.stack([xb[i, :, oy : oy + 32, ox : ox + 32] for i, (oy, ox) in enumerate(offs)])
            flip = torch.rand(len(b), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            out = model(xb)
            loss = F.cross_entropy(out, y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            wrong += (out.argmax(1) != y[b]).sum().item()
            seen += len(b)
            if it % a.log_every == 0:
                print(json.dumps({"arch": f"resnet{depth}", "iter": it, "train_err": 100.0 * wrong / seen}), flush=True)
                wrong, seen = 0, 0


if __name__ == "__main__":
    main()
