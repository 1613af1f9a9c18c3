#!/usr/bin/env python3
"""The torchvision peer of `resnet bench-det` (issue 18's speed comparison; bench/compare-det.sh
runs both in alternating fresh processes). Never used by the tests.

Usage (the venv of scripts/torch-venv.sh):
    $PY scripts/bench_det_torchvision.py --arch resnet50 --mode infer --steps 5 --warmup 1 --json
    $PY scripts/bench_det_torchvision.py --arch resnet20 --mode train --classes 11 --json
    add --channels-last for the model (and the batched image) in torch.channels_last

The model, built from torchvision's classes as a C4 Faster R-CNN (scripts/faster_rcnn_fixtures.py
builds the same one for the golden test):
  resnet50  backbone  torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d) conv1 .. layer3 as an
                      IntermediateLayerGetter (out_channels 1024, stride 16; v1.5 bottlenecks), conv1 and
                      layer1 frozen (requires_grad False: trainable_backbone_layers=3)
            box head  layer4 + AdaptiveAvgPool2d(1) + flatten (2048 features, FrozenBN)
  resnet20 (and other 6n+2 nets)  the paper's CIFAR ResNet with FrozenBatchNorm2d and option A
                      shortcuts (subsample + zero channels), He-initialised (N(0, 2 / fan_in), as
                      ours), written below: conv1 .. layer2 the
                      backbone (32 channels, stride 2; conv1 and layer1 frozen), layer3 + pooling the
                      box head (64 features)
  anchors   AnchorGenerator(((32, 64, 128, 256, 512),), ((0.5, 1, 2),)) for resnet50; ((8, 16, 32, 64),)
            for the CIFAR family (ours: Preset::for_backbone), 15 / 12 per cell
  rpn       RPNHead(C, A) (torchvision's init: N(0, 0.01), bias 0); pre/post NMS top-n 2000/2000
            train, 1000/--proposals test, NMS 0.7, fg/bg 0.7/0.3, 256 anchors per image
  roi pool  MultiScaleRoIAlign(["0"], 14, sampling_ratio=2) (aligned=False)
  predictor FastRCNNPredictor(features, --classes)
  head      512 RoIs per image, 25% foreground, score 0.05, NMS 0.5, 100 detections
  transform GeneralizedRCNNTransform(min_size=H, max_size=W (so an H x W image passes at scale 1),
            image_mean 0, image_std 1 (the synthetic image is already "normalised", as ours),
            size_divisible 16 (600 x 1000 is padded to 608 x 1008, the feature map 38 x 63 as ours;
            torchvision's default 32 would pad to 608 x 1024, 38 x 64 cells)
Weights: torchvision's own initialisation, then as ours (detect::bench::bench_weights): the last
FrozenBN of every residual block (bn3 / bn2) weight 0.3 (random residual nets otherwise blow up:
finite losses and a working RPN need it), the RPN's objectness bias 5 for the two smallest anchor
sizes, 0 elsewhere (so that NMS keeps enough proposals for 512 RoIs on both sides). The image: uniform [-1, 1) (torch.manual_seed(0)).
A step: inference = model([image]) under torch.inference_mode(), eval mode; training = model.train(),
model([image], [target]) with ours's three ground-truth boxes (detect::bench::bench_targets), the sum
of the four losses, backward, SGD(lr 1e-4, momentum 0.9, weight decay 1e-4) step, zero_grad.
--force-proposals: the RPN's proposals are replaced by --proposals fixed boxes (bench_rois below,
detect::bench::bench_rois's formula) after its filter_proposals has run, at inference.
Output: one JSON object with the keys of `resnet bench-det --json` (img_per_s, ms_per_step,
ms_per_step_median, peak_rss_mib (getrusage ru_maxrss), rois_per_step, ...), plus torch's version
and the memory format.
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d


class CifarBlock(nn.Module):
    """The paper's basic block with option A shortcuts (as scripts/golden_fixtures.py), FrozenBN."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = FrozenBatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = FrozenBatchNorm2d(cout)
        self.stride, self.cin, self.cout = stride, cin, cout

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        sc = x
        if self.stride != 1 or self.cin != self.cout:
            sc = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.cout - self.cin))
        return F.relu(y + sc)


def cifar_stage(n, cin, cout, stride):
    return nn.Sequential(*[CifarBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)])


class CifarStem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = FrozenBatchNorm2d(16)

    def forward(self, x):
        return F.relu(self.bn1(self.conv1(x)))


def cifar_parts(depth):
    """(backbone, box head, head features) of the CIFAR ResNet of `depth` = 6n + 2."""
    assert (depth - 2) % 6 == 0, "CIFAR family: depth 6n + 2"
    n = (depth - 2) // 6
    body = nn.Sequential()
    body.add_module("stem", CifarStem())
    body.add_module("layer1", cifar_stage(n, 16, 16, 1))
    body.add_module("layer2", cifar_stage(n, 16, 32, 2))
    body.out_channels = 32
    head = nn.Sequential(cifar_stage(n, 32, 64, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for p in [*body.stem.parameters(), *body.layer1.parameters()]:
        p.requires_grad_(False)
    # He initialisation as ours (N(0, 2 / fan_in)); nn.Conv2d's default is three times smaller in
    # variance, which leaves the random RPN's logits flat and its NMS with far fewer proposals
    for m in [*body.modules(), *head.modules()]:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return body, head, 64


def resnet50_parts():
    r = resnet50(norm_layer=FrozenBatchNorm2d)
    for name, p in r.named_parameters():
        if name.startswith(("conv1.", "layer1.")):
            p.requires_grad_(False)
    body = IntermediateLayerGetter(r, return_layers={"layer3": "0"})
    body.out_channels = 1024
    head = nn.Sequential(r.layer4, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return body, head, 2048


def build(arch, classes, proposals, image):
    if arch == "resnet50":
        body, head, feats = resnet50_parts()
        sizes = (32, 64, 128, 256, 512)
    elif arch.startswith("resnet") and arch[6:].isdigit() and (int(arch[6:]) - 2) % 6 == 0:
        body, head, feats = cifar_parts(int(arch[6:]))
        sizes = (8, 16, 32, 64)
    else:
        raise SystemExit(f"--arch {arch}: resnet50 or a CIFAR ResNet (resnet20, resnet32, ...)")
    anchors = AnchorGenerator((sizes,), ((0.5, 1.0, 2.0),))
    model = FasterRCNN(
        body,
        num_classes=None,
        min_size=min(image),
        max_size=max(image),
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        size_divisible=16,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(body.out_channels, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=2000,
        rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_test=proposals,
        box_roi_pool=MultiScaleRoIAlign(["0"], 14, sampling_ratio=2),
        box_head=head,
        box_predictor=FastRCNNPredictor(feats, classes),
        box_batch_size_per_image=512,
    )
    # as ours: the objectness bias of the two smallest anchor sizes 5 (a = ratio * sizes + size)
    with torch.no_grad():
        b = model.rpn.head.cls_logits.bias
        b.copy_(torch.tensor([5.0 if a % len(sizes) < 2 else 0.0 for a in range(len(b))]))
    # as ours: the last BN of every residual block at 0.3
    with torch.no_grad():
        for name, m in model.named_modules():
            last = getattr(m, "bn3", None) if hasattr(m, "bn3") else getattr(m, "bn2", None)
            if last is not None and (hasattr(m, "downsample") or isinstance(m, CifarBlock)):
                last.weight.fill_(0.3)
    return model


def bench_rois(n, h, w):
    """detect::bench::bench_rois: n boxes inside an h x w image, integers."""
    m = min(h, w)
    base, span = m // 16, max(7 * m // 16, 1)
    out = []
    for i in range(n):
        x1 = (97 * i) % max(w - m // 2, 1)
        y1 = (57 * i) % max(h - m // 2, 1)
        out.append([x1, y1, x1 + base + (31 * i) % span, y1 + base + (17 * i) % span])
    return torch.tensor(out, dtype=torch.float32)


def bench_targets(h, w, classes):
    """detect::bench::bench_targets: three boxes at fixed fractions, classes 1 + 37 i mod (K)."""
    fr = [[0.10, 0.13, 0.30, 0.43], [0.50, 0.33, 0.70, 0.83], [0.75, 0.08, 0.95, 0.58]]
    # f32 as ours computes them, then floor
    boxes = torch.tensor([[f[0] * w, f[1] * h, f[2] * w, f[3] * h] for f in fr], dtype=torch.float32).floor()
    labels = torch.tensor([1 + (37 * i) % (classes - 1) for i in range(3)], dtype=torch.int64)
    return {"boxes": boxes, "labels": labels}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--mode", choices=("infer", "train"), default="infer")
    p.add_argument("--image", help="HxW (default 600x1000 for resnet50, 128x128 for the CIFAR family)")
    p.add_argument("--classes", type=int, default=81)
    p.add_argument("--proposals", type=int, default=300)
    p.add_argument("--force-proposals", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.image:
        h, w = (int(v) for v in a.image.lower().split("x"))
    else:
        h, w = (600, 1000) if a.arch == "resnet50" else (128, 128)
    model = build(a.arch, a.classes, a.proposals, (h, w))
    image = torch.rand(3, h, w) * 2 - 1
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.backbone.register_forward_pre_hook(lambda m, args: (args[0].contiguous(memory_format=torch.channels_last),))
    train = a.mode == "train"
    counts = {"rois": [], "rpn": [], "dets": []}
    # count what reaches the head (and force the boxes if asked)
    orig_filter = model.rpn.filter_proposals

    def filter_proposals(*args, **kwargs):
        boxes, scores = orig_filter(*args, **kwargs)
        counts["rpn"].append(sum(len(b) for b in boxes))
        if a.force_proposals and not model.training:
            forced = bench_rois(a.proposals, h, w)
            boxes = [forced for _ in boxes]
            scores = [torch.zeros(len(forced)) for _ in scores]
        return boxes, scores

    model.rpn.filter_proposals = filter_proposals
    model.roi_heads.box_roi_pool.register_forward_hook(lambda m, inp, out: counts["rois"].append(out.shape[0]))
    losses = []
    if train:
        model.train()
        target = bench_targets(h, w, a.classes)
        opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=1e-4, momentum=0.9,
                              weight_decay=1e-4)

        def step():
            loss = sum(model([image], [target]).values())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                out = model([image])
            counts["dets"].append(len(out[0]["boxes"]))

    times = []
    for s in range(a.warmup + a.steps):
        t = time.perf_counter()
        step()
        if s >= a.warmup:
            times.append(time.perf_counter() - t)
    mean = sum(times) / len(times)
    timed = lambda k: sum(counts[k][a.warmup:]) / a.steps if counts[k] else 0.0
    r = {
        "arch": a.arch,
        "mode": a.mode,
        "image": [h, w, 3],
        "classes": a.classes,
        "threads": torch.get_num_threads(),
        "steps": a.steps,
        "warmup": a.warmup,
        "memory_format": "channels_last" if a.channels_last else "contiguous",
        "force_proposals": a.force_proposals and not train,
        "rois_per_step": timed("rois"),
        "rpn_proposals_per_step": timed("rpn"),
        "detections_per_step": timed("dets"),
        "img_per_s": 1.0 / mean,
        "ms_per_step": mean * 1e3,
        "ms_per_step_median": statistics.median(times) * 1e3,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "torch": torch.__version__,
        "torchvision": __import__("torchvision").__version__,
    }
    if losses:
        r["loss_first_last"] = [losses[a.warmup], losses[-1]]
    if a.json:
        print(json.dumps(r))
    else:
        print(f"torchvision {a.arch} C4 {a.mode} {h}x{w}, {a.classes} classes, {r['threads']} threads, "
              f"{r['memory_format']}: {r['img_per_s']:.3f} img/s, {r['ms_per_step']:.1f} ms/step "
              f"(median {r['ms_per_step_median']:.1f}), peak RSS {r['peak_rss_mib']:.0f} MiB; "
              f"{r['rois_per_step']:.0f} RoIs per step ({r['rpn_proposals_per_step']:.0f} RPN proposals)"
              + (f", loss {r['loss_first_last'][0]:.3f} -> {r['loss_first_last'][1]:.3f}" if losses else ""))


if __name__ == "__main__":
    main()
