#!/usr/bin/env python3
"""Golden fixture from torchvision's detection code for the RPN and RoI-head logic
(src/detect/rpn.rs, roi_head.rs; read by tests/rpn_golden.rs).

Run on a developer machine with PyTorch + torchvision (never in CI):
    scripts/torch-venv.sh  # once: creates $TORCH_VENV (default ~/.cache/resnet/torch-venv)
    $TORCH_VENV/bin/python scripts/rpn_fixtures.py      # -> tests/golden/rpn_head.json

What torchvision computes here is its own code: `AnchorGenerator`,
`RegionProposalNetwork.assign_targets_to_anchors / filter_proposals / compute_loss`,
`RoIHeads.add_gt_proposals / assign_targets_to_proposals / select_training_samples /
postprocess_detections` and `fastrcnn_loss`, in float64 from float32-exact inputs. Two seams:
- sampling: torchvision draws with `torch.randperm`, we from a counter stream; its samplers are
  wrapped to record the masks they drew, and the fixture hands those sampled indices to our losses.
- `batched_nms` is replaced by torchvision's own per-class loop `_batched_nms_vanilla` (the
  coordinate-offset trick it takes below 4000 boxes rounds differently; same result up to that).

Every random case is redrawn until no compared decision lies within a margin of its threshold
(IoU against the matcher's and NMS's thresholds, probabilities against the score threshold, the
best IoU of each ground-truth box against the runner-up), so float32 and float64 take the same
branches and the comparisons can be exact (labels, sampled sets) or 1e-4-relative (values).

Layout: objectness per image `(y * W + x) * A + a` (NHWC), deltas four per anchor, levels one after
another; head scores R x (K + 1), deltas R x 4(K + 1). Float32 inputs are stored as little-endian
hex strings (exact and compact); references as decimal numbers; gradients sparsely (index, value).
"""
import json
import os
import struct

import torch
import torchvision.ops.boxes as box_ops_module
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import box_iou
from torchvision.ops.boxes import _batched_nms_vanilla

D = torch.float64
SIZES = (32.0, 64.0, 128.0, 256.0, 512.0)
RATIOS = (0.5, 1.0, 2.0)
LEVEL1_SIZES = (128.0, 256.0, 512.0)
PADDED = (192, 256)  # the batch's padded input: a 12 x 16 map at stride 16
IMAGES = [(190, 250), (170, 230)]
NUM_CLASSES = 6  # K + 1
MARGIN = 1e-5


def f32(t):
    return t.float().double()


def hexf(t):
    v = t.reshape(-1).tolist()
    return struct.pack(f"<{len(v)}f", *v).hex()


def flat(t):
    return [float(f"{v:.12g}") for v in t.reshape(-1).tolist()]


def sparse(t):
    t = t.reshape(-1)
    idx = torch.nonzero(t).reshape(-1)
    return {"n": t.numel(), "index": idx.tolist(), "value": flat(t[idx])}


def patch_batched_nms():
    box_ops_module.batched_nms = _batched_nms_vanilla


def far(x, thresholds, margin=MARGIN):
    x = x.reshape(-1)
    return all(not bool(((x - t).abs() <= margin).any()) for t in thresholds)  # NaN (0/0) passes


def best_unique(iou):
    """Each row's (ground truth's) best value clear of its runner-up (no low-quality ties)."""
    if iou.shape[1] < 2:
        return True
    top2 = iou.topk(2, dim=1).values
    return bool(((top2[:, 0] - top2[:, 1]) > MARGIN).all())


def make_rpn(pre, post, training):
    gen = AnchorGenerator(sizes=(SIZES,), aspect_ratios=(RATIOS,))
    rpn = RegionProposalNetwork(gen, None, 0.7, 0.3, 256, 0.5, dict(training=pre, testing=pre),
                                dict(training=post, testing=post), 0.7)
    rpn.train(training)
    return rpn


def rand_gt(n, h, w, anchors):
    """n boxes: half jittered anchors (several anchors over 0.7), half free (low-quality matches)."""
    big = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1]) >= 100 ** 2
    inside = anchors[(anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] < w) & (anchors[:, 3] < h) & big]
    pick = inside[torch.randint(0, len(inside), (n - n // 2,))]
    jittered = pick + (torch.rand(len(pick), 4, dtype=D) - 0.5) * 8
    xy = torch.rand(n // 2, 2, dtype=D) * torch.tensor([w * 0.7, h * 0.7], dtype=D)
    wh = 12 + torch.rand(n // 2, 2, dtype=D) * torch.tensor([w * 0.3, h * 0.3], dtype=D)
    free = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w - 1.0, h - 1.0], dtype=D))], 1)
    return f32(torch.cat([jittered, free]))


def nms_margin_ok(boxes, thresh):
    return far(box_iou(boxes, boxes).triu(1), [thresh]) if len(boxes) > 1 else True


def rpn_case():
    """Two images (the second without boxes), one 12 x 16 level, 15 anchors per cell."""
    fh, fw = PADDED[0] // 16, PADDED[1] // 16
    feats = [torch.zeros(2, 1, fh, fw, dtype=D)]
    images = ImageList(torch.zeros(2, 3, *PADDED, dtype=D), IMAGES)
    rpn = make_rpn(300, 100, True)
    anchors = rpn.anchor_generator(images, feats)
    for attempt in range(1000):
        gt = [rand_gt(5, *IMAGES[0], anchors[0]), torch.zeros(0, 4, dtype=D)]
        iou = box_iou(gt[0], anchors[0])
        if far(iou, [0.3, 0.7]) and best_unique(iou):
            break
    else:
        raise SystemExit("no ground truth clear of the thresholds")
    n = anchors[0].shape[0]
    for attempt in range(1000):
        logits = f32(torch.randn(2, n, dtype=D) * 2)
        deltas = f32(torch.randn(2, n, 4, dtype=D) * 0.3)
        props = rpn.box_coder.decode(deltas.reshape(-1, 4), anchors).view(2, -1, 4)
        ok = True
        for i in range(2):  # the pre-NMS candidates' pairwise IoUs clear of 0.7
            top = logits[i].topk(300).indices
            boxes = box_ops_module.clip_boxes_to_image(props[i][top], IMAGES[i])
            ok = ok and nms_margin_ok(boxes, 0.7)
        if ok:
            break
    else:
        raise SystemExit("no RPN outputs clear of the NMS threshold")
    targets = [{"boxes": g} for g in gt]
    labels, matched = rpn.assign_targets_to_anchors(anchors, targets)
    regression = rpn.box_coder.encode(matched, anchors)
    # the sampler's draw, recorded and replayed into compute_loss
    torch.manual_seed(1)
    pos_masks, neg_masks = rpn.fg_bg_sampler(labels)
    rpn.fg_bg_sampler = lambda _labels: (pos_masks, neg_masks)
    lg = logits.reshape(-1, 1).clone().requires_grad_(True)
    dl = deltas.reshape(-1, 4).clone().requires_grad_(True)
    loss_obj, loss_box = rpn.compute_loss(lg, dl, labels, regression)
    (loss_obj + loss_box).backward()
    rpn.eval()
    boxes, scores = rpn.filter_proposals(props.detach(), logits, IMAGES, [n])
    pos = torch.where(torch.cat(pos_masks))[0]
    neg = torch.where(torch.cat(neg_masks))[0]
    lab = torch.cat(labels)
    reg_pos = torch.cat(regression)[lab == 1]
    return {
        "anchors_per_image": n, "feature": [fh, fw], "stride": 16, "sizes": list(SIZES), "ratios": list(RATIOS),
        "images": [list(s) for s in IMAGES],
        "gt": [flat(g) for g in gt],
        "logits": hexf(logits), "deltas": hexf(deltas),
        "labels": lab.int().tolist(),
        "regression_at_positives": flat(reg_pos),
        "positives": pos.tolist(), "negatives": neg.tolist(),
        "loss_objectness": loss_obj.item(), "loss_box": loss_box.item(),
        "d_logits": sparse(lg.grad), "d_deltas": sparse(dl.grad),
        "proposals": {"pre_nms_top_n": 300, "post_nms_top_n": 100,
                      "boxes": [flat(b) for b in boxes], "scores": [flat(s) for s in scores]},
    }, anchors, props.detach(), logits, deltas


def two_level_case(level0_logits, level0_deltas):
    """The first image with a second level (6 x 8 cells at stride 32, 9 anchors): per-level top-N
    and NMS. Level 0's inputs are the RPN case's (not stored twice)."""
    gen = AnchorGenerator(sizes=(SIZES, LEVEL1_SIZES), aspect_ratios=(RATIOS, RATIOS))
    fh, fw = PADDED[0] // 16, PADDED[1] // 16
    feats = [torch.zeros(1, 1, fh, fw, dtype=D), torch.zeros(1, 1, fh // 2, fw // 2, dtype=D)]
    images = ImageList(torch.zeros(1, 3, *PADDED, dtype=D), IMAGES[:1])
    anchors = gen(images, feats)[0]
    sizes = [fh * fw * 15, (fh // 2) * (fw // 2) * 9]
    rpn = make_rpn(200, 150, False)
    rpn.anchor_generator = gen
    for attempt in range(1000):
        logits = torch.cat([level0_logits, f32(torch.randn(sizes[1], dtype=D) * 2)]).reshape(1, -1)
        deltas = torch.cat([level0_deltas, f32(torch.randn(sizes[1], 4, dtype=D) * 0.3)]).reshape(1, -1, 4)
        props = rpn.box_coder.decode(deltas.reshape(-1, 4), [anchors]).view(1, -1, 4)
        ok = True
        for lo, n in [(0, sizes[0]), (sizes[0], sizes[1])]:
            top = logits[0, lo:lo + n].topk(200).indices + lo
            ok = ok and nms_margin_ok(box_ops_module.clip_boxes_to_image(props[0][top], IMAGES[0]), 0.7)
        if ok:
            break
    else:
        raise SystemExit("no two-level outputs clear of the NMS threshold")
    boxes, scores = rpn.filter_proposals(props, logits, IMAGES[:1], sizes)
    return {"level_sizes": sizes, "level1_feature": [fh // 2, fw // 2], "level1_stride": 32,
            "level1_sizes": list(LEVEL1_SIZES), "level1_logits": hexf(logits[0, sizes[0]:]),
            "level1_deltas": hexf(deltas[0, sizes[0]:]),
            "pre_nms_top_n": 200, "post_nms_top_n": 150,
            "boxes": flat(boxes[0]), "scores": flat(scores[0])}


def make_heads(batch):
    return RoIHeads(None, None, None, 0.5, 0.5, batch, 0.25, None, 0.05, 0.5, 100)


def head_training_case(rpn_fixture):
    """RoI assignment, sampling and fastrcnn_loss on the RPN case's proposals (as f32 inputs)."""
    heads = make_heads(64)
    gt = [torch.tensor(g, dtype=D).reshape(-1, 4) for g in rpn_fixture["gt"]]
    gt_labels = [torch.tensor([1, 3, 5, 2, 3])[: len(g)] for g in gt]
    proposals = [f32(torch.tensor(b, dtype=D).reshape(-1, 4)) for b in rpn_fixture["proposals"]["boxes"]]
    with_gt = heads.add_gt_proposals(proposals, gt)
    assert far(box_iou(gt[0], with_gt[0]), [0.5], 1e-6)
    _, all_labels = heads.assign_targets_to_proposals(with_gt, gt, gt_labels)
    drawn = {}
    sampler = heads.fg_bg_sampler

    def recording(labels):
        drawn["masks"] = sampler(labels)
        return drawn["masks"]

    heads.fg_bg_sampler = recording
    torch.manual_seed(2)
    targets = [{"boxes": g, "labels": l} for g, l in zip(gt, gt_labels)]
    rois, _, labels, regression = heads.select_training_samples([p.clone() for p in proposals], targets)
    sampled = [torch.where(p | n)[0].tolist() for p, n in zip(*drawn["masks"])]
    r = sum(len(s) for s in sampled)
    scores = f32(torch.randn(r, NUM_CLASSES, dtype=D) * 2).requires_grad_(True)
    deltas = f32(torch.randn(r, 4 * NUM_CLASSES, dtype=D) * 0.5).requires_grad_(True)
    loss_cls, loss_box = fastrcnn_loss(scores, deltas, labels, regression)
    (loss_cls + loss_box).backward()
    loss_cls, loss_box = loss_cls.item(), loss_box.item()
    return {"num_classes": NUM_CLASSES, "batch_per_image": 64, "gt_labels": [l.tolist() for l in gt_labels],
            "proposals": [hexf(p) for p in proposals],
            "labels_before_sampling": [l.tolist() for l in all_labels],
            "sampled": sampled, "labels": torch.cat(labels).tolist(),
            # only the foreground's targets reach the loss (the background's are encoded against
            # gt[0], or against a zero box in an image without boxes: -inf)
            "regression_at_foreground": flat(torch.cat(regression)[torch.cat(labels) > 0]),
            "scores": hexf(scores.detach()), "deltas": hexf(deltas.detach()),
            "loss_classifier": float(loss_cls), "loss_box": float(loss_box),
            "d_scores": flat(scores.grad), "d_deltas": sparse(deltas.grad)}


def postprocess_case(rpn_fixture):
    """postprocess_detections of 150 RoIs (the first image's proposals) over 6 classes."""
    heads = make_heads(512)
    rois = f32(torch.tensor(rpn_fixture["proposals"]["boxes"][0], dtype=D).reshape(-1, 4)[:150])
    n = rois.shape[0]
    for attempt in range(1000):
        scores = f32(torch.randn(n, NUM_CLASSES, dtype=D) * 2)
        deltas = f32(torch.randn(n, 4 * NUM_CLASSES, dtype=D) * 0.5)
        probs = torch.softmax(scores, -1)
        ok = far(probs, [0.05], 1e-6)
        boxes = box_ops_module.clip_boxes_to_image(heads.box_coder.decode(deltas, [rois]), IMAGES[0])
        for c in range(1, NUM_CLASSES):
            sel = probs[:, c] > 0.05
            ok = ok and nms_margin_ok(boxes[sel, c], 0.5)
        if ok:
            break
    else:
        raise SystemExit("no head outputs clear of the thresholds")
    b, s, l = heads.postprocess_detections(scores, deltas, [rois], IMAGES[:1])
    return {"rois": hexf(rois), "scores": hexf(scores), "deltas": hexf(deltas), "image": list(IMAGES[0]),
            "num_classes": NUM_CLASSES, "boxes": flat(b[0]), "det_scores": flat(s[0]), "labels": l[0].tolist()}


def main():
    patch_batched_nms()
    torch.manual_seed(18)
    rpn, _, _, logits, deltas = rpn_case()
    fixture = {"torch": torch.__version__, "rpn": rpn, "two_levels": two_level_case(logits[0], deltas[0]),
               "head": head_training_case(rpn), "postprocess": postprocess_case(rpn)}
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "rpn_head.json")
    with open(path, "w") as f:
        json.dump(fixture, f)
    print("wrote", os.path.normpath(path), os.path.getsize(path), "bytes")
    print("positives", len(rpn["positives"]), "negatives", len(rpn["negatives"]),
          "proposals", [len(b) // 4 for b in rpn["proposals"]["boxes"]],
          "sampled rois", [len(s) for s in fixture["head"]["sampled"]],
          "detections", len(fixture["postprocess"]["labels"]))


if __name__ == "__main__":
    main()
