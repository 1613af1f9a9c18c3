#!/usr/bin/env python3
"""Reads tests/golden/faster_rcnn_c4.json the way the Rust test will: rebuilds the input and every
weight from the fixture's documented rules alone (no import of scripts/faster_rcnn_fixtures.py, no
torchvision detection code), runs the C4 network with plain ops, and compares against the stored
references. Then the same in float32, as a stand-in for a float32 engine.

    nice -n 19 $TORCH_VENV/bin/python scripts/faster_rcnn_fixture_check.py   # about 1 minute

Checks (eval): backbone probe, RPN objectness and deltas, head class logits and box deltas for
the fixture's proposals. Prints max |ours - ref| / max |ref| per array; float64 should be ~1e-12,
float32 ~1e-6, against the Rust test's 1e-4.

Then (train) torchvision's own model (built by scripts/faster_rcnn_fixtures.py) in float32 with the
fixture's sampled anchors and RoIs replayed into its samplers: the four losses and every gradient
against the float64 references, as the Rust test will compare them: how much of the 1e-4 budget
float32 arithmetic alone uses.
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models import resnet50
from torchvision.ops import roi_align
from torchvision.ops.misc import FrozenBatchNorm2d

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from counter_rng import fnv1a64  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden", "faster_rcnn_c4.json")
D = torch.float64


def uniform(stream, n):
    """u(stream, i), i < n: splitmix64(fnv1a64(stream) + i) >> 40, over 2^24."""
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a64(stream)) + np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(40)).astype(np.float64) / 2**24)


def value(fx, name, shape):
    """The fixture's weight rule for a FasterRCNN state-dict name."""
    g, v = fx["weights"]["gains"], fx["weights"]["rpn_variant"]
    stream = f"frcnn/rpn-v{v}/{name}" if v and name.startswith("rpn.head.") else "frcnn/" + name
    u = uniform(stream, math.prod(shape)).reshape(shape)
    s = 2 * u - 1
    leaf, module = name.split(".")[-1], name.split(".")[-2]
    if len(shape) == 4:
        gain = 1.0
        if name.startswith("rpn.head."):
            gain = {"cls_logits": g["G_OBJ"], "bbox_pred": g["G_RPN_DELTA"]}.get(module, 1.0)
        return s * math.sqrt(3) * gain * math.sqrt(2 / math.prod(shape[1:]))
    if name.startswith("rpn.head."):
        return 0.1 * s
    if name.startswith("roi_heads.box_predictor."):
        if leaf == "bias":
            return 0.1 * s
        return s * math.sqrt(3) * (g["G_CLS"] if module == "cls_score" else g["G_BOX"]) / math.sqrt(shape[1])
    if leaf == "weight":
        return (1 + 0.1 * s) * (g["G_BN3"] if module == "bn3" else 1.0)
    if leaf in ("bias", "running_mean"):
        return 0.1 * s
    return 0.5 + u  # running_var


def build(fx):
    """A torchvision resnet50 (FrozenBN) holding backbone + layer4, and the RPN / predictor tensors."""
    r = resnet50(norm_layer=FrozenBatchNorm2d).double()
    with torch.no_grad():
        for n, t in r.state_dict().items():
            if not n.startswith("fc."):
                prefix = "roi_heads.box_head." if n.startswith("layer4") else "backbone.body."
                t.copy_(value(fx, prefix + n, list(t.shape)).float())
    rpn = {n: value(fx, "rpn.head." + n, s).float().double() for n, s in [
        ("conv.0.0.weight", [1024, 1024, 3, 3]), ("conv.0.0.bias", [1024]),
        ("cls_logits.weight", [15, 1024, 1, 1]), ("cls_logits.bias", [15]),
        ("bbox_pred.weight", [60, 1024, 1, 1]), ("bbox_pred.bias", [60])]}
    pred = {n: value(fx, "roi_heads.box_predictor." + n, s).float().double() for n, s in [
        ("cls_score.weight", [5, 2048]), ("cls_score.bias", [5]),
        ("bbox_pred.weight", [20, 2048]), ("bbox_pred.bias", [20])]}
    return r, rpn, pred


def image(fx):
    """The normalised 1 x 3 x H x W input from the stored uint8 pixels."""
    im = fx["image"]
    p = np.frombuffer(bytes.fromhex(im["pixels_hex"]), dtype=np.uint8).reshape(im["height"], im["width"], 3)
    x = torch.from_numpy(p.astype(np.float64) / 255).permute(2, 0, 1)
    mean, std = torch.tensor(im["mean"], dtype=D), torch.tensor(im["std"], dtype=D)
    return ((x - mean[:, None, None]) / std[:, None, None]).float().double()[None]


def run(r, rpn, pred, x, proposals):
    """Backbone, RPN head (outputs in (y, x, a) order), RoIAlign + layer4 + pool + predictor."""
    with torch.no_grad():
        feats = r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x)))))))
        h = F.relu(F.conv2d(feats, rpn["conv.0.0.weight"], rpn["conv.0.0.bias"], padding=1))
        fh, fw = feats.shape[-2:]
        obj = F.conv2d(h, rpn["cls_logits.weight"], rpn["cls_logits.bias"])[0].permute(1, 2, 0).reshape(-1)
        dl = F.conv2d(h, rpn["bbox_pred.weight"], rpn["bbox_pred.bias"])[0]
        dl = dl.view(15, 4, fh, fw).permute(2, 3, 0, 1).reshape(-1)
        pooled = roi_align(feats, [proposals], 14, spatial_scale=1 / 16, sampling_ratio=0, aligned=False)
        bf = torch.flatten(F.adaptive_avg_pool2d(r.layer4(pooled), 1), 1)
        cls = F.linear(bf, pred["cls_score.weight"], pred["cls_score.bias"])
        box = F.linear(bf, pred["bbox_pred.weight"], pred["bbox_pred.bias"])
    return feats, obj, dl, cls, box


def rel(ours, ref):
    ref = torch.tensor(ref, dtype=D)
    return ((ours.double().reshape(-1) - ref).abs().max() / ref.abs().max()).item()


def train_float32_replay(fx):
    """Losses and gradients of torchvision's model in float32, samples replayed from the fixture.
    Returns the worst relative errors (loss, gradient norm, gradient entry / max |g|)."""
    import faster_rcnn_fixtures as gen  # the generator's model construction (torchvision classes)
    tr = fx["train"]
    gen.patch_batched_nms()
    model, _ = gen.build_model(fx["weights"]["rpn_variant"])
    model.float().train()
    n = 16 * 20 * 15
    pos, neg = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    pos[tr["rpn_sampled_positive"]] = True
    neg[tr["rpn_sampled_negative"]] = True
    model.rpn.fg_bg_sampler = lambda labels: ([pos], [neg])
    count = len(tr["proposals"]) // 4 + len(tr["gt_labels"])  # proposals, then the appended gt
    rpos, rneg = torch.zeros(count, dtype=torch.bool), torch.zeros(count, dtype=torch.bool)
    for i, label in zip(tr["roi_sampled_index"], tr["roi_labels"]):
        (rpos if label > 0 else rneg)[i] = True

    def roi_sampler(labels):
        assert len(labels[0]) == count, "float32 proposals differ in number from the fixture's"
        return [rpos], [rneg]

    model.roi_heads.fg_bg_sampler = roi_sampler
    targets = [{"boxes": torch.tensor(tr["gt_boxes"], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(tr["gt_labels"])}]
    losses = model([image(fx)[0].float()], targets)
    sum(losses.values()).backward()
    worst = [0.0, 0.0, 0.0]
    for k, v in losses.items():
        ref = tr["loss_objectness_float64"] if k == "loss_objectness" else tr["losses"][k]
        worst[0] = max(worst[0], abs(v.item() - ref) / abs(ref))
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        g, flat = tr["gradients"][name], p.grad.reshape(-1).double()
        e_norm = abs(flat.norm().item() - g["norm"]) / g["norm"]
        e_entry = max(abs(flat[i].item() - v) for i, v in zip(g["index"], g["value"])) / g["max_abs"]
        worst[1], worst[2] = max(worst[1], e_norm), max(worst[2], e_entry)
        if max(e_norm, e_entry) > 3e-5:
            print(f"  {name}: norm {e_norm:.2e}, entries {e_entry:.2e} of max |g|")
    print(f"train float32 replay: losses {worst[0]:.2e}, gradient norms {worst[1]:.2e}, "
          f"gradient entries {worst[2]:.2e} of max |g|")
    return max(worst)


def main():
    torch.set_num_threads(2)
    with open(FIXTURE) as f:
        fx = json.load(f)
    r, rpn, pred = build(fx)
    x = image(fx)
    ev = fx["eval"]
    props = torch.tensor(ev["proposals"], dtype=D).reshape(-1, 4)
    worst = 0.0
    for name, dtype in [("float64", D), ("float32", torch.float32)]:
        r = r.to(dtype)
        rpn_t = {k: v.to(dtype) for k, v in rpn.items()}
        pred_t = {k: v.to(dtype) for k, v in pred.items()}
        feats, obj, dl, cls, box = run(r, rpn_t, pred_t, x.to(dtype), props.to(dtype))
        pr = ev["probes"]["backbone_features"]
        flat = feats.reshape(-1).double()
        probe = max(abs(flat[i].item() - v) for i, v in zip(pr["index"], pr["value"])) / pr["max_abs"]
        errs = {"backbone probe": probe, "rpn_objectness": rel(obj, ev["rpn_objectness"]),
                "rpn_deltas": rel(dl, ev["rpn_deltas"]), "head_class_logits": rel(cls, ev["head_class_logits"]),
                "head_box_deltas": rel(box, ev["head_box_deltas"])}
        print(name, {k: f"{v:.2e}" for k, v in errs.items()})
        worst = max(worst, max(errs.values()))
    worst = max(worst, train_float32_replay(fx))
    if worst > 1e-4:
        raise SystemExit(f"FAIL: {worst:.2e} > 1e-4")
    print("ok")


if __name__ == "__main__":
    main()
