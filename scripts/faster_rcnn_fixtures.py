#!/usr/bin/env python3
"""Golden fixture of a whole torchvision Faster R-CNN on a ResNet-50 C4 backbone, in float64
(issue 18's first must-show; for a Rust test that recreates every input from this header).

Run on a developer machine with PyTorch + torchvision (never in CI):
    scripts/torch-venv.sh                  # once: $TORCH_VENV (default ~/.cache/resnet/torch-venv)
    bash scripts/fetch-pypi-files.sh photos  # once: .cache/photos/astronaut.png (scikit-image's)
    nice -n 19 $TORCH_VENV/bin/python scripts/faster_rcnn_fixtures.py
        # -> tests/golden/faster_rcnn_c4.json (about 1.2 MB, 2-3 minutes on 2 cores)
    FRCNN_PHOTO=/path/to/astronaut.png overrides the photo's path; the fixture stores the pixels
    the network saw, so the photo is needed only to regenerate.

Model (torchvision's own classes; state-dict names are those of the FasterRCNN below):
  backbone      resnet50(norm_layer=FrozenBatchNorm2d) conv1 .. layer3 (IntermediateLayerGetter,
                "backbone.body.*"), out_channels 1024, stride 16; torchvision's v1.5 bottleneck
                (stride in the 3x3 conv2 and in the 1x1 downsample), FrozenBN eps 1e-5.
  anchors       AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1, 2),)):
                15 per cell, ratio = h / w, torchvision's order a = ratio_index * 5 + size_index
                (ratios outer, sizes inner; rounded base anchors in "config.cell_anchors"),
                centred on the cell corners (x * 16, y * 16)
  rpn head      RPNHead(1024, 15): 3x3 conv 1024 -> 1024 + ReLU, 1x1 objectness (15), 1x1 deltas (60)
  box_roi_pool  MultiScaleRoIAlign(["0"], 14, sampling_ratio=0): roi_align aligned=False, scale 1/16
                (inferred from 16/256), adaptive sampling ceil(roi_size_in_cells / 14) per bin axis
  box_head      resnet50's layer4 (FrozenBN; first block stride 2 in conv2 and downsample) on the
                14 x 14 RoI features -> 7 x 7 x 2048, AdaptiveAvgPool2d(1), flatten -> 2048
  box_predictor FastRCNNPredictor(2048, 5): cls_score Linear(2048, 5) (class 0 = background),
                bbox_pred Linear(2048, 20) (class-specific, 4 per class, class-major)
  transform     GeneralizedRCNNTransform(min_size=256, max_size=320, image_mean=0, image_std=1):
                the 256 x 320 input is already normalised; the transform's bilinear "resize" at
                scale 1.0 and its padding to a multiple of 32 are identities (checked here, exactly),
                and detections are scaled back by 1.0 (exact).
  Every other setting is in the fixture's "config" (RPN / head thresholds, top-n, batch sizes).
  Seams, as scripts/rpn_fixtures.py: torchvision.ops.boxes.batched_nms is replaced by its own
  per-class loop _batched_nms_vanilla (the coordinate-offset trick rounds differently); the two
  fg/bg samplers (torch.randperm under torch.manual_seed(18)) are wrapped to record what they drew.

Input image: scikit-image's astronaut (512 x 512 RGB), crop columns 6..506, rows 0..400 (500 x 400),
PIL bilinear resize to 320 x 256 (W x H), stored as uint8 "image.pixels_hex" (H x W x 3 row-major,
two hex digits per byte). Network input x[c, y, x] = (p / 255 - mean[c]) / std[c] computed in
float64 with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), then rounded to
the nearest float32; batch of one.

Weights (every parameter and FrozenBN buffer; name = FasterRCNN state-dict name, e.g.
"backbone.body.layer2.0.conv1.weight", "rpn.head.conv.0.0.weight", "roi_heads.box_head.layer4.0.bn3.bias"):
  u(s, i) = (splitmix64(fnv1a64(s) + i) >> 40) / 2**24 (scripts/counter_rng.py, src/rng.rs),
  stream s = "frcnn/" + name, i = flat row-major index in torchvision's layout (OIHW, out x in);
  the RPN head's tensors (rpn.head.*) under variant v > 0 (the fixture's "weights.rpn_variant")
  use s = "frcnn/rpn-v<v>/" + name: of 16 variants the script takes the one whose NMS and top-300
  decisions lie farthest from their thresholds (choose_rpn_variant; table in the fixture).
  conv weight (4-D)            (2u - 1) * sqrt(3) * g * sqrt(2 / fan_in), fan_in = I * kh * kw,
                               g = 1 except rpn.head.cls_logits (g = G_OBJ) and rpn.head.bbox_pred
                               (g = G_RPN_DELTA)
  conv bias (rpn head)         0.1 * (2u - 1)
  FrozenBN weight              (1 + 0.1 (2u - 1)) * (G_BN3 if the block's last BN, "bn3", else 1)
  FrozenBN bias                0.1 * (2u - 1)
  FrozenBN running_mean        0.1 * (2u - 1)
  FrozenBN running_var         0.5 + u
  cls_score weight             (2u - 1) * sqrt(3) * G_CLS / sqrt(2048);  bias 0.1 * (2u - 1)
  bbox_pred weight             (2u - 1) * sqrt(3) * G_BOX / sqrt(2048);  bias 0.1 * (2u - 1)
  G_BN3 = 0.3, G_OBJ = 0.35, G_RPN_DELTA = 0.04, G_CLS = 1, G_BOX = 0.3 (also "weights.gains").
  Each value is computed in float64 and rounded to the nearest float32 (what a float32 engine
  holds); the reference then runs in float64 on those exact values, as scripts/rpn_fixtures.py.
  The RMS after the stem and each block stays 1.8 .. 4.5 ("stage_rms"); objectness logits spread
  about -6 .. 7; with these, 100 detections pass the 0.05 threshold.

Training step (model.train(); FrozenBN does not change in train mode): ground truth "train.gt_boxes"
/ "gt_labels"; trainable: everything except backbone.body.conv1 and backbone.body.layer1 (torchvision's
trainable_backbone_layers=3, detectron2's FREEZE_AT=2; FrozenBN tensors are buffers, never trained).
Loss = loss_objectness + loss_rpn_box_reg + loss_classifier + loss_box_reg; one backward.
(torchvision's loss_objectness comes back in float32: its BCE targets are float32 and torch gives
the value their dtype; the gradient is float64. "loss_objectness_float64" recomputes it.) For each
parameter with a gradient: its L2 norm and 16 entries at index ((z >> 40) * numel) >> 24 with
z = splitmix64(fnv1a64("frcnn/sample/" + name) + k), k = 0..15 (= floor(u * numel)).
Probes of intermediate tensors use the same index rule with "frcnn/probe/<probe name>", 64 entries.

Layouts: RPN objectness per anchor at (y * W + x) * 15 + a (torchvision's permute_and_flatten:
NHWC), deltas 4 per anchor (dx, dy, dw, dh) in the same order; boxes (x1, y1, x2, y2) in input
pixels; head class logits R x 5, box deltas R x 20 (class c at 4c .. 4c + 3), R rows in the order
of the proposals given to the head. References are written with 12 significant digits; values
that a Rust test feeds back in (proposals, sampled RoIs, regression targets, gt) with repr (exact
float64). Tolerance for the Rust test: max |ours - ref| <= 1e-4 * max |ref| per array (issue 18).
"""
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision.ops.boxes as box_ops_module
from PIL import Image
from torchvision.models import resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign, box_iou
from torchvision.ops.boxes import _batched_nms_vanilla
from torchvision.ops.misc import FrozenBatchNorm2d

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from counter_rng import M64, fnv1a64, splitmix64  # noqa: E402  (src/rng.rs in Python)

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "tests", "golden", "faster_rcnn_c4.json")
D = torch.float64
H, W = 256, 320
CROP = (6, 0, 506, 400)  # PIL box: left, top, right, bottom
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NUM_CLASSES = 5
SIZES = (32, 64, 128, 256, 512)
RATIOS = (0.5, 1.0, 2.0)
SEED = 18
GAINS = {"G_BN3": 0.3, "G_OBJ": 0.35, "G_RPN_DELTA": 0.04, "G_CLS": 1.0, "G_BOX": 0.3}
CONFIG = {
    "transform": {"min_size": H, "max_size": W, "image_mean": [0.0, 0.0, 0.0], "image_std": [1.0, 1.0, 1.0],
                  "size_divisible": 32},
    "anchor_sizes": list(SIZES), "aspect_ratios": list(RATIOS), "anchors_per_cell": 15, "stride": 16,
    "rpn": {"fg_iou_thresh": 0.7, "bg_iou_thresh": 0.3, "batch_size_per_image": 256, "positive_fraction": 0.5,
            "pre_nms_top_n_train": 12000, "pre_nms_top_n_test": 6000,
            "post_nms_top_n_train": 2000, "post_nms_top_n_test": 300,
            "nms_thresh": 0.7, "score_thresh": 0.0, "min_size": 1e-3, "box_weights": [1.0, 1.0, 1.0, 1.0],
            "bbox_xform_clip": math.log(1000.0 / 16), "smooth_l1_beta": 1.0 / 9,
            "allow_low_quality_matches": True},
    "roi": {"output_size": 14, "sampling_ratio": 0, "aligned": False, "spatial_scale": 1.0 / 16},
    "head": {"fg_iou_thresh": 0.5, "bg_iou_thresh": 0.5, "batch_size_per_image": 128, "positive_fraction": 0.25,
             "box_weights": [10.0, 10.0, 5.0, 5.0], "bbox_xform_clip": math.log(1000.0 / 16),
             "smooth_l1_beta": 1.0 / 9, "score_thresh": 0.05, "nms_thresh": 0.5, "detections_per_img": 100,
             "min_size": 1e-2, "num_classes": NUM_CLASSES, "gt_boxes_appended_to_proposals": True},
    "frozen": ["backbone.body.conv1", "backbone.body.layer1"],
    "sampler_seed": SEED,
}
LAYOUTS = {
    "eval.rpn_objectness": "4800 = 16 x 20 x 15: index (y * 20 + x) * 15 + a, a = ratio_index * 5 + size_index",
    "eval.rpn_deltas": "4800 x 4 (dx, dy, dw, dh), anchors as rpn_objectness",
    "eval.proposals": "300 x 4 (x1, y1, x2, y2), NMS order (descending objectness), exact float64",
    "eval.proposal_scores": "300 sigmoid(objectness)",
    "eval.head_class_logits": "300 x 5, rows as eval.proposals, column 0 background",
    "eval.head_box_deltas": "300 x 20, class c at columns 4c .. 4c + 3, (dx, dy, dw, dh) / weights (10, 10, 5, 5)",
    "eval.detections": "boxes D x 4, scores D, labels D (1 .. 4), torchvision's order (descending score)",
    "probes": "numel, norm, max_abs, rms, 64 (index, value) pairs; index into the NCHW (or R x C) flat tensor",
    "train.proposals": "P x 4 exact float64: every NMS survivor (the first 300 are eval.proposals)",
    "train.rpn_labels": "4800: 1 positive, 0 negative, -1 ignored (before sampling)",
    "train.rpn_matched_gt": "4800: matcher output, gt index, -1 below 0.3, -2 between",
    "train.rpn_sampled_positive/negative": "anchor indices, increasing",
    "train.rpn_regression_at_sampled_positive": "len(positive) x 4, RPN coder (1, 1, 1, 1)",
    "train.roi_sampled_index": "indices into train.proposals followed by train.gt_boxes, increasing",
    "train.roi_sampled_boxes": "R x 4 exact float64, rows as roi_sampled_index",
    "train.roi_labels": "R: class, 0 background",
    "train.roi_matched_gt": "R: gt index (clamped to 0 for background, as torchvision)",
    "train.roi_regression_targets": "R x 4, head coder (10, 10, 5, 5), against the matched gt (meaningful for fg)",
    "train.gradients": "name -> shape, norm, max_abs, index (16, flat row-major), value (16)",
}
# Ground truth over the resized photo (input pixels; float32-exact): head, shuttle model, flag,
# helmet in the corner, the whole person.
GT_BOXES = [[95.0, 8.0, 190.0, 125.0], [222.0, 0.0, 298.0, 185.0], [0.0, 0.0, 58.0, 175.0],
            [185.0, 218.0, 305.0, 256.0], [0.0, 8.0, 235.0, 256.0]]
GT_LABELS = [1, 2, 3, 4, 1]


# ------------------------------------------------------------------------------ generator
def uniform(name, n):
    """u(name, i) for i = 0 .. n-1 as float64 (numpy uint64 arithmetic wraps like Rust's)."""
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a64(name)) + np.arange(n, dtype=np.uint64)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def check_uniform():
    """The vectorised generator against scripts/counter_rng.py's scalar one."""
    for name in ["frcnn/x", "frcnn/backbone.body.conv1.weight"]:
        fast = uniform(name, 1000)
        slow = [(splitmix64((fnv1a64(name) + i) & M64) >> 40) / float(1 << 24) for i in range(1000)]
        assert fast.tolist() == slow, name


def sample_indices(stream, numel, k):
    """k indices floor(u * numel) = ((z >> 40) * numel) >> 24, exact in integers."""
    base = fnv1a64(stream)
    return [((splitmix64((base + i) & M64) >> 40) * numel) >> 24 for i in range(k)]


def stream(name, rpn_variant=0):
    """The counter stream of a state-dict entry: "frcnn/<name>", except the RPN head's tensors
    under a variant v > 0: "frcnn/rpn-v<v>/<name>" (see choose_rpn_variant)."""
    if rpn_variant and name.startswith("rpn.head."):
        return f"frcnn/rpn-v{rpn_variant}/{name}"
    return "frcnn/" + name


def weight_value(name, shape, rpn_variant=0):
    """The weight rule of the docstring for one state-dict entry."""
    n = math.prod(shape)
    u = torch.from_numpy(uniform(stream(name, rpn_variant), n)).reshape(shape)
    leaf = name.rsplit(".", 1)[-1]
    module = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
    s = lambda: 2 * u - 1  # noqa: E731
    if len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
        g = {"cls_logits": GAINS["G_OBJ"], "bbox_pred": GAINS["G_RPN_DELTA"]}.get(module, 1.0) \
            if name.startswith("rpn.head.") else 1.0
        return s() * math.sqrt(3.0) * g * math.sqrt(2.0 / fan_in)
    if name.startswith("rpn.head.") and leaf == "bias":
        return 0.1 * s()
    if name.startswith("roi_heads.box_predictor."):
        if leaf == "bias":
            return 0.1 * s()
        g = GAINS["G_CLS"] if module == "cls_score" else GAINS["G_BOX"]
        return s() * math.sqrt(3.0) * g / math.sqrt(shape[1])
    # FrozenBatchNorm2d buffers
    if leaf == "weight":
        return (1 + 0.1 * s()) * (GAINS["G_BN3"] if module == "bn3" else 1.0)
    if leaf in ("bias", "running_mean"):
        return 0.1 * s()
    if leaf == "running_var":
        return 0.5 + u
    raise ValueError(name)


def fill(model, rpn_variant=0, prefix=""):
    """Set every parameter and buffer of the state dict (only the names starting with prefix) by
    its name; returns how many values."""
    count = 0
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not name.startswith(prefix):
                continue
            t.copy_(weight_value(name, list(t.shape), rpn_variant).float())  # float32-exact
            count += t.numel()
    return count


# ------------------------------------------------------------------------------ model
class C4Backbone(nn.Module):
    """resnet50 conv1 .. layer3 returning {"0": stride-16 features}; out_channels 1024."""

    def __init__(self, r):
        super().__init__()
        self.body = IntermediateLayerGetter(r, return_layers={"layer3": "0"})
        self.out_channels = 1024

    def forward(self, x):
        return self.body(x)


class Res5Head(nn.Module):
    """The per-RoI head: resnet50 layer4, global average pooling, flatten."""

    def __init__(self, layer4):
        super().__init__()
        self.layer4 = layer4
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return torch.flatten(self.avgpool(self.layer4(x)), 1)


def build_model(rpn_variant=0):
    """The FasterRCNN of the docstring, weights filled, float64, conv1 and layer1 frozen."""
    r = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    rpn_cfg, head_cfg = CONFIG["rpn"], CONFIG["head"]
    model = FasterRCNN(
        C4Backbone(r), num_classes=None,
        min_size=H, max_size=W, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
        rpn_anchor_generator=AnchorGenerator(sizes=(SIZES,), aspect_ratios=(RATIOS,)),
        rpn_head=RPNHead(1024, 15),
        rpn_pre_nms_top_n_train=rpn_cfg["pre_nms_top_n_train"], rpn_pre_nms_top_n_test=rpn_cfg["pre_nms_top_n_test"],
        rpn_post_nms_top_n_train=rpn_cfg["post_nms_top_n_train"],
        rpn_post_nms_top_n_test=rpn_cfg["post_nms_top_n_test"],
        rpn_nms_thresh=rpn_cfg["nms_thresh"], rpn_fg_iou_thresh=rpn_cfg["fg_iou_thresh"],
        rpn_bg_iou_thresh=rpn_cfg["bg_iou_thresh"], rpn_batch_size_per_image=rpn_cfg["batch_size_per_image"],
        rpn_positive_fraction=rpn_cfg["positive_fraction"], rpn_score_thresh=rpn_cfg["score_thresh"],
        box_roi_pool=MultiScaleRoIAlign(["0"], 14, sampling_ratio=0),
        box_head=Res5Head(r.layer4),
        box_predictor=FastRCNNPredictor(2048, NUM_CLASSES),
        box_score_thresh=head_cfg["score_thresh"], box_nms_thresh=head_cfg["nms_thresh"],
        box_detections_per_img=head_cfg["detections_per_img"], box_fg_iou_thresh=head_cfg["fg_iou_thresh"],
        box_bg_iou_thresh=head_cfg["bg_iou_thresh"], box_batch_size_per_image=head_cfg["batch_size_per_image"],
        box_positive_fraction=head_cfg["positive_fraction"], bbox_reg_weights=tuple(head_cfg["box_weights"]),
    )
    model.double()
    n = fill(model, rpn_variant)
    for name, p in model.named_parameters():
        p.requires_grad_(not any(name.startswith(f + ".") for f in CONFIG["frozen"]))
    return model, n


# ------------------------------------------------------------------------------ image
def load_image():
    """uint8 H x W x 3 pixels of the cropped, resized photo, and the normalised NCHW float64 input."""
    path = os.environ.get("FRCNN_PHOTO", os.path.join(ROOT, ".cache", "photos", "astronaut.png"))
    img = Image.open(path).convert("RGB")
    assert img.size == (512, 512), img.size
    pixels = np.asarray(img.crop(CROP).resize((W, H), Image.BILINEAR), dtype=np.uint8)
    x = torch.from_numpy(pixels.astype(np.float64) / 255.0).permute(2, 0, 1)
    x = (x - torch.tensor(MEAN, dtype=D)[:, None, None]) / torch.tensor(STD, dtype=D)[:, None, None]
    with open(path, "rb") as f:
        source_sha = hashlib.sha256(f.read()).hexdigest()
    return pixels, x.float().double().contiguous(), source_sha  # float32-exact


# ------------------------------------------------------------------------------ helpers
def ref(t):
    """A reference array: 12 significant digits (far below the tolerance, half repr's bytes)."""
    return [float(f"{v:.12g}") for v in t.detach().reshape(-1).tolist()]


def r12(v):
    """A reference scalar with 12 significant digits (so that the bytes do not depend on the
    thread count: summation order moves the last bits)."""
    return float(f"{v:.12g}")


def rounded(d):
    """A dict's float values through r12."""
    return {k: r12(v) if isinstance(v, float) else v for k, v in d.items()}


def exact(t):
    """An array a test feeds back in: full float64."""
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def probe(name, t):
    """Norm, max |.|, RMS and 64 counter-sampled entries of an intermediate tensor (NCHW flat)."""
    t = t.detach().reshape(-1)
    idx = sample_indices("frcnn/probe/" + name, t.numel(), 64)
    return {"numel": t.numel(), "norm": r12(t.norm().item()), "max_abs": r12(t.abs().max().item()),
            "rms": r12((t.norm() / math.sqrt(t.numel())).item()), "index": idx, "value": ref(t[idx])}


def nms_margin(boxes, scores, keep, thresh):
    """min |IoU - thresh| over the pairs NMS compared: a kept box against every lower-ranked box
    (rank by score, stable). Returns inf when fewer than two boxes."""
    if len(boxes) < 2 or len(keep) == 0:
        return float("inf")
    order = torch.sort(scores, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    iou = box_iou(boxes[keep], boxes)
    later = rank[None, :] > rank[keep][:, None]
    d = (iou - thresh).abs()[later]
    return d.min().item() if d.numel() else float("inf")


def roi_sampling_margin(rois):
    """RoIAlign with sampling_ratio 0 takes ceil(size_in_cells / 14) samples per bin axis: the
    distance of any RoI's size in cells (at least 1) from a multiple of 14, the nearest switch."""
    size = ((rois[:, 2:] - rois[:, :2]) / 16.0).clamp(min=1.0) / 14.0
    return (size - size.round()).abs().min().item()


def patch_batched_nms():
    box_ops_module.batched_nms = _batched_nms_vanilla


class Recorder:
    """Keeps what the RPN's and the RoI heads' steps computed: plain methods (and the samplers,
    plain objects) are wrapped on the instance, modules get forward hooks (names unchanged)."""

    def __init__(self, model):
        self.data = {}
        rpn, heads = model.rpn, model.roi_heads
        self._wrap(rpn, "filter_proposals", "filter_proposals")
        self._wrap(rpn, "assign_targets_to_anchors", "rpn_targets")
        self._wrap(rpn, "fg_bg_sampler", "rpn_sampled")
        self._wrap(heads, "fg_bg_sampler", "roi_sampled")
        self._wrap(heads, "select_training_samples", "roi_samples")
        self._wrap(heads, "postprocess_detections", "postprocess")
        self.hooks = [self._hook(heads.box_predictor, "predictor"), self._hook(heads.box_head, "box_features"),
                      self._hook(rpn.head, "rpn_head"), self._hook(model.backbone, "features")]

    def _wrap(self, obj, attr, key):
        inner = getattr(obj, attr)

        def wrapped(*args, **kwargs):
            result = inner(*args, **kwargs)
            self.data[key] = (args, result)
            return result

        object.__setattr__(obj, attr, wrapped)

    def _hook(self, module, key):
        return module.register_forward_hook(lambda m, args, out: self.data.__setitem__(key, (args, out)))


# ------------------------------------------------------------------------------ the two runs
def rpn_decisions(model, feats):
    """torchvision's proposal steps redone on one image (every anchor is a candidate: 4800 < 6000
    pre-NMS): objectness in (y, x, a) order, the clipped candidates, NMS's kept indices, and the
    decision margins: NMS IoU against 0.7, and the logit gap at the post-NMS cut of 300."""
    rpn = model.rpn
    objectness, deltas = (v[0] for v in rpn.head([feats]))
    fh, fw = feats.shape[-2:]
    obj = objectness[0].permute(1, 2, 0).reshape(-1)
    dl = deltas[0].view(15, 4, fh, fw).permute(2, 3, 0, 1).reshape(-1, 4)
    anchors = rpn.anchor_generator(ImageList(torch.zeros(1, 3, H, W, dtype=D), [(H, W)]), [feats])[0]
    decoded = rpn.box_coder.decode_single(dl, anchors)
    clipped = box_ops_module.clip_boxes_to_image(decoded, (H, W))
    keep_small = box_ops_module.remove_small_boxes(clipped, CONFIG["rpn"]["min_size"])
    cand, cand_obj = clipped[keep_small], obj[keep_small]
    keep = _batched_nms_vanilla(cand, cand_obj, torch.zeros(len(cand), dtype=torch.long), CONFIG["rpn"]["nms_thresh"])
    n = CONFIG["rpn"]["post_nms_top_n_test"]
    kept = cand_obj[keep]  # descending
    margins = {"rpn_nms_iou_vs_0.7": nms_margin(cand, cand_obj, keep, CONFIG["rpn"]["nms_thresh"]),
               "rpn_kept_after_nms": len(keep),
               "rpn_logit_gap_at_cut_300": (kept[n - 1] - kept[n]).item() if len(keep) > n else None}
    return obj, cand, cand_obj, keep, margins


def choose_rpn_variant(x, count=16):
    """The RPN head's weights are drawn from stream variant v in 0 .. count-1, the one whose
    proposal decisions lie farthest from their thresholds (min of the NMS IoU margin and the logit
    gap at the cut of 300): a float32 engine then takes the same NMS and top-300 decisions.
    Returns the variant and every variant's margins."""
    model, _ = build_model()
    model.eval()
    with torch.no_grad():
        feats = model.backbone(x[None])["0"]
        table = []
        for v in range(count):
            fill(model, v, prefix="rpn.head.")
            m = rpn_decisions(model, feats)[4]
            table.append(rounded({"variant": v, **m}))
    best = max(table, key=lambda m: min(m["rpn_nms_iou_vs_0.7"], m["rpn_logit_gap_at_cut_300"] or float("inf")))
    return best["variant"], table


def eval_run(model, x):
    """Inference: RPN outputs, proposals, head outputs, detections, decision margins."""
    model.eval()
    rec = Recorder(model)
    with torch.no_grad():
        images, _ = model.transform([x])
        assert images.tensors.shape == (1, 3, H, W) and torch.equal(images.tensors[0], x), "transform not identity"
        assert images.image_sizes == [(H, W)]
        out = model([x])[0]
    d = rec.data
    feats = d["features"][1]["0"]
    objectness, deltas = (v[0] for v in d["rpn_head"][1])
    fh, fw = feats.shape[-2:]
    obj = objectness[0].permute(1, 2, 0).reshape(-1)  # (y, x, a)
    dl = deltas[0].view(15, 4, fh, fw).permute(2, 3, 0, 1).reshape(-1)
    (fp_args, (boxes, scores)) = d["filter_proposals"]
    props, pscores = boxes[0], scores[0]
    with torch.no_grad():
        obj2, cand, cand_obj, keep, rpn_margins = rpn_decisions(model, feats)
    assert torch.equal(obj2, obj) and torch.equal(cand[keep[:300]], props), "proposal recomputation differs"
    cls_logits, box_deltas = d["predictor"][1]
    (pp_args, (det_boxes, det_scores, det_labels)) = d["postprocess"]
    probs = torch.softmax(cls_logits, -1)
    head_boxes = model.roi_heads.box_coder.decode(box_deltas, [props]).reshape(-1, NUM_CLASSES, 4)
    head_boxes = box_ops_module.clip_boxes_to_image(head_boxes, (H, W))
    nms_m = float("inf")
    survivors = []
    for c in range(1, NUM_CLASSES):
        sel = torch.where(probs[:, c] > 0.05)[0]
        b, s = head_boxes[sel, c], probs[sel, c]
        k = box_ops_module.remove_small_boxes(b, 1e-2)
        b, s = b[k], s[k]
        kept = box_ops_module.nms(b, s, 0.5)
        nms_m = min(nms_m, nms_margin(b, s, kept, 0.5))
        survivors.append(s[kept])
    survivors = torch.cat(survivors).sort(descending=True).values
    all_det = det_scores[0].sort(descending=True).values
    cut = CONFIG["head"]["detections_per_img"]
    margins = {
        **rpn_margins,
        "roi_sampling_switch_cells_over_14": roi_sampling_margin(props),
        "head_prob_vs_0.05": (probs[:, 1:] - 0.05).abs().min().item(),
        "head_nms_iou_vs_0.5": nms_m,
        "head_candidates_after_nms": len(survivors),
        "head_score_gap_at_cut_100": (survivors[cut - 1] - survivors[cut]).item() if len(survivors) > cut else None,
        "min_score_gap_between_detections": (all_det[:-1] - all_det[1:]).min().item() if len(all_det) > 1 else None,
    }
    assert torch.equal(out["boxes"], det_boxes[0])
    return {
        "feature_size": [fh, fw],
        "rpn_objectness": ref(obj), "rpn_deltas": ref(dl),
        "proposals": exact(props), "proposal_scores": ref(pscores),
        "head_class_logits": ref(cls_logits), "head_box_deltas": ref(box_deltas),
        "detections": {"boxes": ref(out["boxes"]), "scores": ref(out["scores"]), "labels": out["labels"].tolist()},
        "margins": rounded(margins),
        "probes": {"backbone_features": probe("backbone_features", feats),
                   "rpn_objectness_map": probe("rpn_objectness_map", objectness),
                   "box_head_features": probe("box_head_features", d["box_features"][1]),
                   "head_probs": probe("head_probs", probs)},
    }


def train_run(model, x):
    """One training forward with the fixture's ground truth, recorded samples, losses, gradients."""
    model.train()
    rec = Recorder(model)
    torch.manual_seed(SEED)
    targets = [{"boxes": torch.tensor(GT_BOXES, dtype=D), "labels": torch.tensor(GT_LABELS)}]
    losses = model([x], targets)
    total = sum(losses.values())
    model.zero_grad(set_to_none=True)
    total.backward()
    d = rec.data
    (fp_args, (boxes, scores)) = d["filter_proposals"]
    (ta_args, (labels, matched_gt)) = d["rpn_targets"]
    anchors = ta_args[0][0]
    pos, neg = d["rpn_sampled"][1]
    pos_idx = torch.where(pos[0])[0]
    neg_idx = torch.where(neg[0])[0]
    reg = model.rpn.box_coder.encode_single(matched_gt[0], anchors)
    rois, matched_idxs, roi_labels, roi_reg = d["roi_samples"][1]
    rpos, rneg = d["roi_sampled"][1]
    sampled_idx = torch.where(rpos[0] | rneg[0])[0]
    with_gt = torch.cat([boxes[0], targets[0]["boxes"]])
    assert torch.equal(with_gt[sampled_idx], rois[0])
    iou = box_iou(targets[0]["boxes"], with_gt)
    grads = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        idx = sample_indices("frcnn/sample/" + name, p.numel(), 16)
        g = p.grad.reshape(-1)
        grads[name] = {"shape": list(p.shape), "norm": r12(g.norm().item()), "max_abs": r12(g.abs().max().item()),
                       "index": idx, "value": ref(g[idx])}
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    anchor_iou = box_iou(targets[0]["boxes"], anchors)
    # torchvision's BCE has float32 targets, and torch returns its value in float32 (the gradient
    # is float64): the loss again in float64 on the same sampled anchors
    objectness = d["rpn_head"][1][0][0][0].detach().permute(1, 2, 0).reshape(-1)
    both = torch.cat([pos_idx, neg_idx])
    loss_obj64 = torch.nn.functional.binary_cross_entropy_with_logits(objectness[both], labels[0][both].double())
    return {
        "gt_boxes": exact(targets[0]["boxes"]), "gt_labels": GT_LABELS,
        "proposals": exact(boxes[0]), "proposal_scores": ref(scores[0]),
        "rpn_labels": labels[0].long().tolist(),
        "rpn_matched_gt": model.rpn.proposal_matcher(anchor_iou).tolist(),
        "rpn_sampled_positive": pos_idx.tolist(), "rpn_sampled_negative": neg_idx.tolist(),
        "rpn_regression_at_sampled_positive": exact(reg[pos_idx]),
        "roi_sampled_index": sampled_idx.tolist(),
        "roi_sampled_boxes": exact(rois[0]), "roi_labels": roi_labels[0].tolist(),
        "roi_matched_gt": matched_idxs[0].tolist(),
        "roi_regression_targets": exact(roi_reg[0]),
        "losses": {k: r12(v.item()) for k, v in losses.items()}, "loss_total": r12(total.item()),
        "loss_objectness_float64": r12(loss_obj64.item()),
        "loss_dtypes": {k: str(v.dtype) for k, v in losses.items()},
        "margins": rounded({"rpn_anchor_iou_vs_0.3_0.7": min((anchor_iou - 0.3).abs().min().item(),
                                                     (anchor_iou - 0.7).abs().min().item()),
                    "roi_iou_vs_0.5": (iou - 0.5).abs().min().item(),
                    "roi_sampling_switch_cells_over_14": roi_sampling_margin(rois[0])}),
        "gradients": grads, "parameters_without_gradient": no_grad,
    }


def stage_rms(model, x):
    """RMS after the stem and every block (eval, float64): the weight rule keeps these O(1)."""
    body = model.backbone.body
    out = {}
    with torch.no_grad():
        t = body.maxpool(body.relu(body.bn1(body.conv1(x[None]))))
        out["stem"] = r12(t.pow(2).mean().sqrt().item())
        for ln in ["layer1", "layer2", "layer3"]:
            for i, blk in enumerate(getattr(body, ln)):
                t = blk(t)
                out[f"{ln}.{i}"] = r12(t.pow(2).mean().sqrt().item())
    return out


def main():
    t0 = time.time()
    torch.set_num_threads(int(os.environ.get("FRCNN_THREADS", "2")))
    check_uniform()
    patch_batched_nms()
    pixels, x, source_sha = load_image()
    variant, variants = choose_rpn_variant(x)
    model, nvalues = build_model(variant)
    rms = stage_rms(model, x)
    t1 = time.time()
    ev = eval_run(model, x)
    t2 = time.time()
    tr = train_run(build_model(variant)[0], x)  # a fresh model, without the eval run's recorder
    t3 = time.time()
    # same candidates (every anchor) and NMS in training; no top-n cut there (2000 > survivors)
    assert tr["proposals"][: len(ev["proposals"])] == ev["proposals"], "train proposals do not extend eval's"
    fixture = {
        "format": "faster_rcnn_c4 golden v1; see scripts/faster_rcnn_fixtures.py's docstring",
        "torch": torch.__version__, "torchvision": __import__("torchvision").__version__,
        "doc": __doc__,
        "config": {**CONFIG, "cell_anchors": exact(model.rpn.anchor_generator.cell_anchors[0])},
        "weights": {"stream": "frcnn/<state-dict name>; the RPN head's (rpn.head.*) under variant v > 0: "
                              "frcnn/rpn-v<v>/<state-dict name>", "rpn_variant": variant,
                    "rpn_variant_search": variants, "gains": GAINS, "values": nvalues,
                    "sample_stream": "frcnn/sample/<parameter name>", "samples_per_gradient": 16,
                    "probe_stream": "frcnn/probe/<probe name>", "samples_per_probe": 64},
        "image": {"source": "scikit-image data/astronaut.png (512 x 512 RGB)", "source_sha256": source_sha,
                  "pixels_sha256": hashlib.sha256(pixels.tobytes()).hexdigest(), "crop_ltrb": list(CROP),
                  "resize": "PIL Image.resize((320, 256), Image.BILINEAR)", "height": H, "width": W,
                  "layout": "H x W x 3 uint8, row-major, hex", "mean": list(MEAN), "std": list(STD),
                  "pixels_hex": pixels.tobytes().hex()},
        "layouts": LAYOUTS,
        "stage_rms": rms,
        "eval": ev,
        "train": tr,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    size = os.path.getsize(OUT)
    print(f"wrote {os.path.relpath(OUT, ROOT)}: {size} bytes")
    print("rpn variant:", variant)
    print("stage RMS:", {k: round(v, 3) for k, v in rms.items()})
    print("proposals (eval):", len(ev["proposals"]) // 4, "detections:", len(ev["detections"]["labels"]),
          "labels:", np.bincount(ev["detections"]["labels"], minlength=NUM_CLASSES).tolist(),
          "top scores:", [round(s, 3) for s in ev["detections"]["scores"][:5]])
    print("objectness: min %.3f max %.3f std %.3f" % (min(ev["rpn_objectness"]), max(ev["rpn_objectness"]),
                                                      float(np.std(ev["rpn_objectness"]))))
    print("eval margins:", ev["margins"])
    print("train margins:", tr["margins"])
    print("train proposals:", len(tr["proposals"]) // 4, "rpn sampled pos/neg:", len(tr["rpn_sampled_positive"]),
          len(tr["rpn_sampled_negative"]), "rois:", len(tr["roi_labels"]),
          "fg rois:", sum(1 for v in tr["roi_labels"] if v > 0))
    print("losses:", tr["losses"])
    print("gradients:", len(tr["gradients"]), "tensors; without:", len(tr["parameters_without_gradient"]))
    print(f"runtime: setup {t1 - t0:.1f}s eval {t2 - t1:.1f}s train {t3 - t2:.1f}s total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
