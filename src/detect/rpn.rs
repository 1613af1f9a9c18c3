//! The region proposal network's logic after its convolutions (Faster R-CNN [32]; torchvision's
//! `models/detection/rpn.py`, `RegionProposalNetwork`): anchor targets for training, the two losses
//! with their gradients, and the proposals.
//!
//! **Layout** of the head's outputs for one image, as our NHWC engine writes them: the objectness
//! convolution has `A` output channels, the box convolution `4A`, so for feature pixel `(y, x)` and
//! anchor `a` of a level of `H x W` cells, anchor index `i = (y * W + x) * A + a`, its logit is
//! `logits[i]` and its deltas `deltas[4 * i..4 * i + 4]` (channel `4a + k`, torchvision's
//! `view(N, A, 4, H, W)`). That is torchvision's `concat_box_prediction_layers` order for one level
//! and [`super::anchors::grid_anchors`]'s order. Several levels are concatenated level after level
//! (`level_sizes`); a batch is images one after another (torchvision's `flatten()` of `(N, ...)`).
//!
//! The objectness is one logit per anchor (the sigmoid form; [32] implements a two-class softmax,
//! which is the same model: `softmax(a, b)[1] = sigmoid(b - a)`, and says either can be used).

use super::boxes::{BoxCoder, clip, remove_small};
use super::matcher::{Match, Matcher, sample_stream};
use super::nms::{batched_nms, nms_limit};
use super::{Box4, Convention};

/// The RPN's training and proposal settings. [`RpnConfig::torchvision`] and [`RpnConfig::paper`]
/// give the two presets; every value's source is on its field there.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpnConfig {
    /// IoU at or above which an anchor is positive.
    pub fg_iou: f32,
    /// IoU below which an anchor is negative (between the two: ignored).
    pub bg_iou: f32,
    /// Anchors sampled per image for the loss.
    pub batch_per_image: usize,
    /// At most this fraction of them positive.
    pub positive_fraction: f32,
    /// `None`: every anchor takes part in training (torchvision). `Some(b)`: anchors that cross the
    /// image border by more than `b` pixels are ignored, neither matched nor sampled
    /// (py-faster-rcnn's `anchor_target_layer.py`, `allowed_border = 0`).
    pub allowed_border: Option<f32>,
    /// Top-scoring anchors kept per level before NMS, in training and at test.
    pub pre_nms_top_n_train: usize,
    pub pre_nms_top_n_test: usize,
    /// Proposals kept per image after NMS, in training and at test.
    pub post_nms_top_n_train: usize,
    pub post_nms_top_n_test: usize,
    /// IoU above which NMS suppresses a proposal.
    pub nms_thresh: f32,
    /// Proposals with sigmoid(objectness) below this are dropped (`>=` keeps, as torchvision).
    pub score_thresh: f32,
    /// Proposals narrower or lower than this (after clipping) are dropped.
    pub min_size: f32,
    /// `min_size` is in pixels of the original image and is multiplied by the image's resize
    /// scale (py-faster-rcnn: `RPN_MIN_SIZE * im_info[2]`); false: in network-input pixels.
    pub min_size_at_original_scale: bool,
    /// false: top-N by objectness first, then decode, clip, remove small (torchvision); true:
    /// decode, clip and remove small boxes over every anchor, then take the top N (py-faster-rcnn's
    /// `proposal_layer.py`).
    pub filter_before_top_n: bool,
    /// Smooth L1's beta in the box loss (`F.smooth_l1_loss(beta=...)`; Caffe's sigma = 1/sqrt(beta)).
    pub beta: f32,
    /// Box widths `x2 - x1` or `x2 - x1 + 1`.
    pub conv: Convention,
}

impl RpnConfig {
    /// torchvision's `FasterRCNN` defaults (`models/detection/faster_rcnn.py`: `rpn_fg_iou_thresh
    /// 0.7`, `rpn_bg_iou_thresh 0.3`, `rpn_batch_size_per_image 256`, `rpn_positive_fraction 0.5`,
    /// `rpn_pre_nms_top_n_train/test 2000/1000`, `rpn_post_nms_top_n_train/test 2000/1000`,
    /// `rpn_nms_thresh 0.7`, `rpn_score_thresh 0.0`); `rpn.py`: `min_size = 1e-3`, border anchors
    /// kept, `beta = 1/9`, no +1.
    pub fn torchvision() -> RpnConfig {
        RpnConfig {
            fg_iou: 0.7,
            bg_iou: 0.3,
            batch_per_image: 256,
            positive_fraction: 0.5,
            allowed_border: None,
            pre_nms_top_n_train: 2000,
            pre_nms_top_n_test: 1000,
            post_nms_top_n_train: 2000,
            post_nms_top_n_test: 1000,
            nms_thresh: 0.7,
            score_thresh: 0.0,
            min_size: 1e-3,
            min_size_at_original_scale: false,
            filter_before_top_n: false,
            beta: 1.0 / 9.0,
            conv: Convention::Pixel,
        }
    }

    /// The paper's RPN (He et al. follow Faster R-CNN [32]; numbers from py-faster-rcnn
    /// `lib/fast_rcnn/config.py` and `experiments/cfgs/faster_rcnn_end2end.yml`):
    /// `RPN_POSITIVE_OVERLAP 0.7`, `RPN_NEGATIVE_OVERLAP 0.3`, `RPN_BATCHSIZE 256`,
    /// `RPN_FG_FRACTION 0.5`, border anchors ignored (`allowed_border 0`, [32] Sec. 3.3),
    /// `RPN_PRE_NMS_TOP_N 12000 / 6000` (train / test), `RPN_POST_NMS_TOP_N 2000 / 300` (300 at
    /// test: the paper's "300 proposals per image"), `RPN_NMS_THRESH 0.7`, `RPN_MIN_SIZE 16` at
    /// the original image scale, filtering before the top N (`proposal_layer.py`), smooth L1 with
    /// sigma 3 (`rpn_loss_bbox` in the end-to-end prototxt: beta 1/9), the +1 pixel convention.
    /// No score threshold there (0 here keeps everything).
    pub fn paper() -> RpnConfig {
        RpnConfig {
            fg_iou: 0.7,
            bg_iou: 0.3,
            batch_per_image: 256,
            positive_fraction: 0.5,
            allowed_border: Some(0.0),
            pre_nms_top_n_train: 12000,
            pre_nms_top_n_test: 6000,
            post_nms_top_n_train: 2000,
            post_nms_top_n_test: 300,
            nms_thresh: 0.7,
            score_thresh: 0.0,
            min_size: 16.0,
            min_size_at_original_scale: true,
            filter_before_top_n: true,
            beta: 1.0 / 9.0,
            conv: Convention::LegacyPlusOne,
        }
    }

    /// The RPN's box coder: weights (1, 1, 1, 1), dw/dh clamp log(1000/16), this config's convention.
    /// The clamp is torchvision's and Detectron's; py-faster-rcnn's `bbox_transform_inv` has none
    /// (a width beyond 62.5x the anchor's overflows to inf there), kept in the paper preset too.
    pub fn coder(&self) -> BoxCoder {
        BoxCoder::rpn(self.conv)
    }

    /// The proposal settings in training or at test, for an image resized by `image_scale`
    /// (network-input pixels per original pixel; used only where `min_size_at_original_scale`).
    pub fn proposal_params(&self, training: bool, image_scale: f32) -> ProposalParams {
        let (pre, post) = if training {
            (self.pre_nms_top_n_train, self.post_nms_top_n_train)
        } else {
            (self.pre_nms_top_n_test, self.post_nms_top_n_test)
        };
        let min_size = if self.min_size_at_original_scale { self.min_size * image_scale } else { self.min_size };
        ProposalParams {
            pre_nms_top_n: pre,
            post_nms_top_n: post,
            nms_thresh: self.nms_thresh,
            score_thresh: self.score_thresh,
            min_size,
            filter_before_top_n: self.filter_before_top_n,
            conv: self.conv,
        }
    }
}

/// Anchor labels for one image (or a batch, [`AnchorTargets::concat`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnchorTargets {
    /// Per anchor, before sampling: 1 positive, 0 negative, -1 ignored (torchvision's labels).
    pub labels: Vec<i8>,
    /// Per anchor: the RPN coder's deltas from the anchor to its matched ground-truth box for
    /// positive anchors; zeros elsewhere (torchvision encodes every anchor against
    /// `gt[max(match, 0)]`, but only positives reach the loss).
    pub regression: Vec<[f32; 4]>,
    /// The sampled positives and negatives, increasing anchor indices.
    pub positives: Vec<usize>,
    pub negatives: Vec<usize>,
    /// Ground-truth boxes left out because they are degenerate (a non-finite coordinate, or width
    /// or height <= 0 in the config's convention). torchvision refuses such a target with an error
    /// (`GeneralizedRCNN.forward`); here the image trains as if they were absent.
    pub ignored_gt: usize,
}

impl AnchorTargets {
    /// One batch's targets: images' anchors one after another, sampled indices offset accordingly
    /// (the flat order of torchvision's `compute_loss`).
    pub fn concat(images: &[AnchorTargets]) -> AnchorTargets {
        let mut out = AnchorTargets::default();
        for t in images {
            let off = out.labels.len();
            out.labels.extend_from_slice(&t.labels);
            out.regression.extend_from_slice(&t.regression);
            out.positives.extend(t.positives.iter().map(|i| i + off));
            out.negatives.extend(t.negatives.iter().map(|i| i + off));
            out.ignored_gt += t.ignored_gt;
        }
        out
    }
}

/// The ground-truth boxes that can be matched: finite, with positive width and height.
pub(crate) fn usable_gt(gt: &[Box4], conv: Convention) -> Vec<usize> {
    (0..gt.len())
        .filter(|&g| gt[g].iter().all(|v| v.is_finite()) && conv.width(&gt[g]) > 0.0 && conv.height(&gt[g]) > 0.0)
        .collect()
}

/// Whether an anchor lies within `border` pixels outside the image (py-faster-rcnn's
/// `inds_inside`: `x1 >= -b`, `y1 >= -b`, `x2 < W + b`, `y2 < H + b`).
fn inside(a: &Box4, image_h: f32, image_w: f32, border: f32) -> bool {
    a[0] >= -border && a[1] >= -border && a[2] < image_w + border && a[3] < image_h + border
}

/// Matches the anchors of one image to its ground truth: per anchor a [`Match`] (torchvision's
/// `assign_targets_to_anchors` with `Matcher(fg_iou, bg_iou, allow_low_quality_matches=True)`),
/// ignored (`Between`) where the anchor crosses the border beyond `allowed_border`, `Below` for
/// every usable anchor of an image without usable ground truth. Returns the matches (indices into
/// `gt`) and the number of unusable ground-truth boxes.
///
/// The low-quality rule is torchvision's, ties included: every anchor whose IoU with a ground-truth
/// box equals that box's best IoU is positive. A box that overlaps no anchor at all has best IoU 0,
/// so then every anchor with IoU 0 with it becomes positive (matched to its own best box) — the
/// same in torchvision, Detectron2 and py-faster-rcnn; boxes of a well-formed image always overlap
/// some anchor, since anchors cover the whole image.
pub fn match_anchors(
    anchors: &[Box4],
    gt: &[Box4],
    image_h: f32,
    image_w: f32,
    cfg: &RpnConfig,
) -> (Vec<Match>, usize) {
    let usable = usable_gt(gt, cfg.conv);
    let ignored_gt = gt.len() - usable.len();
    let cand: Vec<usize> = match cfg.allowed_border {
        Some(b) => (0..anchors.len()).filter(|&i| inside(&anchors[i], image_h, image_w, b)).collect(),
        None => (0..anchors.len()).collect(),
    };
    let mut out = vec![Match::Between; anchors.len()];
    let gts: Vec<Box4> = usable.iter().map(|&g| gt[g]).collect();
    let preds: Vec<Box4> = cand.iter().map(|&i| anchors[i]).collect();
    let iou = super::boxes::box_iou(&gts, &preds, cfg.conv);
    let matcher = Matcher { high: cfg.fg_iou, low: cfg.bg_iou, allow_low_quality: true };
    for (&i, m) in cand.iter().zip(matcher.assign(&iou, gts.len(), preds.len())) {
        out[i] = match m {
            Match::Gt(g) => Match::Gt(usable[g]),
            other => other,
        };
    }
    (out, ignored_gt)
}

/// Training targets for one image: labels, regression targets of the positive anchors, and a
/// balanced sample of at most `batch_per_image` anchors, at most `positive_fraction` of them
/// positive, drawn from the counter stream `"detect/rpn/<seed>/<iteration>/<image>"` (a pure
/// function of its arguments; torchvision draws with `torch.randperm`).
///
/// Bad input: no anchors gives empty targets; no usable ground truth gives every (inside) anchor
/// label 0 and a sample of negatives only (torchvision's background image); degenerate boxes are
/// counted in `ignored_gt`; an image smaller than every anchor still gets its low-quality
/// positives, except with `allowed_border` where every anchor may be outside (then nothing is
/// sampled and the losses are 0).
#[allow(clippy::too_many_arguments)]
pub fn anchor_targets(
    anchors: &[Box4],
    gt: &[Box4],
    image_h: f32,
    image_w: f32,
    cfg: &RpnConfig,
    seed: u64,
    iteration: u64,
    image: usize,
) -> AnchorTargets {
    let (matches, ignored_gt) = match_anchors(anchors, gt, image_h, image_w, cfg);
    let stream = format!("detect/rpn/{seed}/{iteration}/{image}");
    let (positives, negatives) = sample_stream(&matches, cfg.batch_per_image, cfg.positive_fraction, &stream);
    let coder = cfg.coder();
    let labels = matches
        .iter()
        .map(|m| match m {
            Match::Gt(_) => 1,
            Match::Below => 0,
            Match::Between => -1,
        })
        .collect();
    let regression = matches
        .iter()
        .zip(anchors)
        .map(|(m, a)| match m {
            Match::Gt(g) => coder.encode(&gt[*g], a),
            _ => [0.0; 4],
        })
        .collect();
    AnchorTargets { labels, regression, positives, negatives, ignored_gt }
}

/// The two RPN losses and their gradients with respect to the head's outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct RpnLoss {
    /// Binary cross-entropy with logits, mean over the sampled anchors.
    pub objectness: f32,
    /// Smooth L1 over the positive anchors' four deltas, summed, divided by the number sampled.
    pub box_reg: f32,
    /// d(objectness)/d(logits), one per anchor, zero where not sampled.
    pub d_logits: Vec<f32>,
    /// d(box_reg)/d(deltas), four per anchor, zero except at sampled positives.
    pub d_deltas: Vec<f32>,
}

/// torchvision's `RegionProposalNetwork.compute_loss` over a batch (all images' anchors one after
/// another, `targets` from [`AnchorTargets::concat`]): `F.binary_cross_entropy_with_logits` mean
/// over positives + negatives, and `F.smooth_l1_loss(beta, reduction="sum")` over the positives
/// divided by the number sampled. With nothing sampled both losses are 0 with zero gradients
/// (torchvision: NaN from a mean over nothing). A NaN logit or delta propagates into the loss.
pub fn rpn_loss(logits: &[f32], deltas: &[f32], targets: &AnchorTargets, beta: f32) -> RpnLoss {
    assert_eq!(deltas.len(), 4 * logits.len(), "rpn_loss: four deltas per logit");
    assert_eq!(targets.regression.len(), logits.len(), "rpn_loss: one target per anchor");
    let n = targets.positives.len() + targets.negatives.len();
    let mut d_logits = vec![0.0; logits.len()];
    let mut d_deltas = vec![0.0; deltas.len()];
    if n == 0 {
        return RpnLoss { objectness: 0.0, box_reg: 0.0, d_logits, d_deltas };
    }
    let inv = 1.0 / n as f64;
    let mut bce = 0.0f64;
    for (set, y) in [(&targets.positives, 1.0), (&targets.negatives, 0.0)] {
        for &i in set {
            let (l, g) = bce_with_logits(logits[i] as f64, y);
            bce += l;
            d_logits[i] = (g * inv) as f32;
        }
    }
    let mut reg = 0.0f64;
    for &i in &targets.positives {
        for k in 0..4 {
            let (l, g) = smooth_l1(deltas[4 * i + k] as f64 - targets.regression[i][k] as f64, beta as f64);
            reg += l;
            d_deltas[4 * i + k] = (g * inv) as f32;
        }
    }
    RpnLoss { objectness: (bce * inv) as f32, box_reg: (reg * inv) as f32, d_logits, d_deltas }
}

/// Binary cross-entropy of logit `x` against label `y` and its derivative, in the stable form
/// `max(x, 0) - x y + log(1 + exp(-|x|))`; derivative `sigmoid(x) - y`.
pub(crate) fn bce_with_logits(x: f64, y: f64) -> (f64, f64) {
    (x.max(0.0) - x * y + (-x.abs()).exp().ln_1p(), sigmoid(x) - y)
}

/// `1 / (1 + exp(-x))`, without overflow for large |x|.
pub(crate) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Smooth L1 of a difference `d` and its derivative (PyTorch's `smooth_l1_loss`: `0.5 d^2 / beta`
/// where `|d| < beta`, else `|d| - 0.5 beta`; beta 0 is plain L1 with derivative sign(d), 0 at 0).
pub(crate) fn smooth_l1(d: f64, beta: f64) -> (f64, f64) {
    if d.abs() < beta {
        (0.5 * d * d / beta, d / beta)
    } else {
        let sign = if d > 0.0 {
            1.0
        } else if d < 0.0 {
            -1.0
        } else {
            0.0
        };
        (d.abs() - 0.5 * beta, if d.is_nan() { d } else { sign })
    }
}

/// Proposal selection settings (from [`RpnConfig::proposal_params`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProposalParams {
    pub pre_nms_top_n: usize,
    pub post_nms_top_n: usize,
    pub nms_thresh: f32,
    pub score_thresh: f32,
    pub min_size: f32,
    pub filter_before_top_n: bool,
    pub conv: Convention,
}

/// One image's proposals, by descending objectness.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Proposals {
    pub boxes: Vec<Box4>,
    /// sigmoid(objectness logit).
    pub scores: Vec<f32>,
}

/// One image's proposals (torchvision's `filter_proposals`, one image): per level the
/// `pre_nms_top_n` anchors of highest logit, their boxes decoded by `coder` and clipped to
/// `image_h x image_w`, boxes smaller than `min_size` removed, scores sigmoid(logit) below
/// `score_thresh` removed, NMS at `nms_thresh` within each level, then the first `post_nms_top_n`
/// by score. With `filter_before_top_n` (py-faster-rcnn) decoding, clipping and the size filter
/// come before the top N.
///
/// `anchors`, `logits` (one per anchor) and `deltas` (four per anchor) are this image's, levels one
/// after another with `level_sizes[l]` anchors each (their sum must be `anchors.len()`).
///
/// Order: ties of equal logits keep the lower anchor index first (torch's `topk` leaves them in an
/// unspecified order). NaN logits never become proposals and take no top-N place (torchvision's
/// `topk` ranks NaN above everything, then drops it by the score threshold); NaN deltas give NaN
/// boxes, which the size filter removes. No anchors, or an image under one pixel (or of NaN size):
/// no proposals. Panics only on inconsistent lengths (a caller's bug, not bad data).
#[allow(clippy::too_many_arguments)]
pub fn proposals(
    anchors: &[Box4],
    logits: &[f32],
    deltas: &[f32],
    level_sizes: &[usize],
    image_h: f32,
    image_w: f32,
    coder: &BoxCoder,
    p: &ProposalParams,
) -> Proposals {
    assert_eq!(logits.len(), anchors.len(), "proposals: one logit per anchor");
    assert_eq!(deltas.len(), 4 * anchors.len(), "proposals: four deltas per anchor");
    assert_eq!(level_sizes.iter().sum::<usize>(), anchors.len(), "proposals: level sizes");
    if !(image_h >= 1.0 && image_w >= 1.0) {
        return Proposals::default();
    }
    // (anchor index, level, box) of the candidates, level after level, each level by descending logit
    let mut cand: Vec<(usize, i64, Box4)> = Vec::new();
    let mut start = 0;
    for (level, &n) in level_sizes.iter().enumerate() {
        let idx: Vec<usize> = (start..start + n).filter(|&i| !logits[i].is_nan()).collect();
        start += n;
        let decoded = |i: usize| {
            let d = [deltas[4 * i], deltas[4 * i + 1], deltas[4 * i + 2], deltas[4 * i + 3]];
            coder.decode(&d, &anchors[i])
        };
        let mut level_cand: Vec<(usize, i64, Box4)> = if p.filter_before_top_n {
            let all: Vec<(usize, i64, Box4)> = idx.iter().map(|&i| (i, level as i64, decoded(i))).collect();
            filter_boxes(all, image_h, image_w, p)
        } else {
            idx.iter().map(|&i| (i, level as i64, [0.0; 4])).collect()
        };
        level_cand.sort_by(|a, b| logits[b.0].partial_cmp(&logits[a.0]).unwrap().then(a.0.cmp(&b.0)));
        level_cand.truncate(p.pre_nms_top_n);
        if !p.filter_before_top_n {
            level_cand =
                filter_boxes(level_cand.into_iter().map(|(i, l, _)| (i, l, decoded(i))).collect(), image_h, image_w, p);
        }
        cand.extend(level_cand);
    }
    cand.retain(|c| sigmoid(logits[c.0] as f64) as f32 >= p.score_thresh);
    let boxes: Vec<Box4> = cand.iter().map(|c| c.2).collect();
    // logits order the boxes as their sigmoids do, without sigmoid's ties where it saturates
    let scores: Vec<f32> = cand.iter().map(|c| logits[c.0]).collect();
    let keep = if level_sizes.len() <= 1 {
        nms_limit(&boxes, &scores, p.nms_thresh, p.conv, p.post_nms_top_n)
    } else {
        let levels: Vec<i64> = cand.iter().map(|c| c.1).collect();
        let mut k = batched_nms(&boxes, &scores, &levels, p.nms_thresh, p.conv);
        k.truncate(p.post_nms_top_n);
        k
    };
    Proposals {
        boxes: keep.iter().map(|&k| boxes[k]).collect(),
        scores: keep.iter().map(|&k| sigmoid(scores[k] as f64) as f32).collect(),
    }
}

/// Clips the candidates' boxes to the image and drops those smaller than `min_size`.
fn filter_boxes(
    mut cand: Vec<(usize, i64, Box4)>,
    image_h: f32,
    image_w: f32,
    p: &ProposalParams,
) -> Vec<(usize, i64, Box4)> {
    let mut b: Vec<Box4> = cand.iter().map(|c| c.2).collect();
    clip(&mut b, image_h, image_w, p.conv);
    for (c, bb) in cand.iter_mut().zip(&b) {
        c.2 = *bb;
    }
    remove_small(&b, p.min_size, p.conv).into_iter().map(|k| cand[k]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::counter_uniform;

    const P: Convention = Convention::Pixel;

    fn cfg() -> RpnConfig {
        RpnConfig::torchvision()
    }

    #[test]
    fn targets_label_match_and_encode_by_hand() {
        let gt = [[0.0, 0.0, 10.0, 10.0]];
        let anchors = [
            [0.0, 0.0, 10.0, 10.0],   // IoU 1: positive
            [0.0, 0.0, 10.0, 12.0],   // 100/120: positive
            [0.0, 0.0, 10.0, 20.0],   // 0.5: ignored
            [30.0, 30.0, 40.0, 40.0], // 0: negative
            [5.0, 0.0, 15.0, 10.0],   // 1/3: ignored
        ];
        let t = anchor_targets(&anchors, &gt, 50.0, 50.0, &cfg(), 1, 0, 0);
        assert_eq!(t.labels, vec![1, 1, -1, 0, -1]);
        assert_eq!((t.positives.clone(), t.negatives.clone()), (vec![0, 1], vec![3]));
        assert_eq!(t.regression[0], [0.0; 4]);
        let r = t.regression[1];
        assert!((r[1] - (5.0 - 6.0) / 12.0).abs() < 1e-6 && r[0] == 0.0 && r[2] == 0.0);
        assert!((r[3] - (10.0f32 / 12.0).ln()).abs() < 1e-6);
        assert_eq!(t.regression[2], [0.0; 4]);
        assert_eq!(t.ignored_gt, 0);
    }

    #[test]
    fn a_box_below_every_threshold_keeps_its_best_anchors() {
        let gt = [[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]];
        // anchors 0 and 1 tie for gt 1's best (0.5): both positive; anchor 2 (0.4) is ignored
        let anchors = [[0.0, 0.0, 10.0, 20.0], [100.0, 100.0, 110.0, 120.0], [100.0, 95.0, 110.0, 120.0]];
        let (m, _) = match_anchors(&anchors, &gt, 200.0, 200.0, &cfg());
        assert_eq!(m, vec![Match::Gt(0), Match::Gt(1), Match::Between]);
        // torchvision's rule: a box overlapping no anchor makes every IoU-0 anchor positive
        let far = [[500.0, 500.0, 510.0, 510.0]];
        let (m, _) = match_anchors(&anchors, &far, 600.0, 600.0, &cfg());
        assert_eq!(m, vec![Match::Gt(0); 3]);
    }

    #[test]
    fn empty_gt_zero_anchors_degenerate_boxes() {
        let anchors: Vec<Box4> = (0..300).map(|i| [i as f32, 0.0, i as f32 + 8.0, 8.0]).collect();
        let t = anchor_targets(&anchors, &[], 20.0, 400.0, &cfg(), 1, 2, 3);
        assert!(t.labels.iter().all(|&l| l == 0) && t.positives.is_empty());
        assert_eq!(t.negatives.len(), 256);
        let t = anchor_targets(&[], &[[0.0, 0.0, 5.0, 5.0]], 20.0, 20.0, &cfg(), 1, 2, 3);
        assert_eq!(t, AnchorTargets::default());
        let bad = [[f32::NAN, 0.0, 5.0, 5.0], [3.0, 3.0, 3.0, 9.0], [9.0, 0.0, 2.0, 5.0], [0.0, 0.0, 8.0, 8.0]];
        let t = anchor_targets(&anchors[..20], &bad, 20.0, 400.0, &cfg(), 1, 2, 3);
        assert_eq!(t.ignored_gt, 3);
        // [1, 0, 9, 8] overlaps [0, 0, 8, 8] by 56/72 > 0.7
        assert_eq!(t.positives, vec![0, 1]);
        assert_eq!(t.regression[0], [0.0; 4]);
        let loss = rpn_loss(&[0.0; 20], &[0.0; 80], &t, 1.0 / 9.0);
        assert!(loss.objectness.is_finite() && loss.box_reg.is_finite() && loss.box_reg > 0.0);
    }

    #[test]
    fn border_anchors_are_ignored_in_the_paper_preset() {
        let gt = [[10.0, 10.0, 40.0, 40.0]];
        let anchors =
            [[-1.0, 10.0, 40.0, 40.0], [10.0, 10.0, 41.0, 41.0], [0.0, 0.0, 49.0, 49.0], [0.0, 0.0, 50.0, 10.0]];
        let c = RpnConfig::paper();
        let t = anchor_targets(&anchors, &gt, 50.0, 50.0, &c, 0, 0, 0);
        // anchor 3 reaches x2 = 50 = W: outside (x2 < W + 0 fails)
        assert_eq!(t.labels, vec![-1, 1, -1, -1]);
        let t = anchor_targets(&anchors, &gt, 50.0, 50.0, &cfg(), 0, 0, 0);
        assert_eq!(t.labels[0], 1);
        // an image smaller than every anchor: with the border rule nothing is sampled, losses 0
        let t = anchor_targets(&anchors, &[[1.0, 1.0, 5.0, 5.0]], 8.0, 8.0, &c, 0, 0, 0);
        assert!(t.positives.is_empty() && t.negatives.is_empty());
        let l = rpn_loss(&[1.0; 4], &[1.0; 16], &t, c.beta);
        assert_eq!((l.objectness, l.box_reg), (0.0, 0.0));
        assert!(l.d_logits.iter().chain(&l.d_deltas).all(|&g| g == 0.0));
        // without it, the best anchors of the small box are still positive
        let t = anchor_targets(&anchors, &[[1.0, 1.0, 5.0, 5.0]], 8.0, 8.0, &cfg(), 0, 0, 0);
        assert!(!t.positives.is_empty());
    }

    #[test]
    fn sampling_is_balanced_reproducible_and_concat_offsets() {
        let anchors: Vec<Box4> = (0..2000)
            .map(|i| {
                let (x, y) = ((i % 50) as f32 * 4.0, (i / 50) as f32 * 4.0);
                [x, y, x + 16.0, y + 16.0]
            })
            .collect();
        let gt: Vec<Box4> = (0..30).map(|g| [g as f32 * 6.0, 20.0, g as f32 * 6.0 + 16.0, 36.0]).collect();
        let c = RpnConfig { batch_per_image: 64, ..cfg() };
        let t = anchor_targets(&anchors, &gt, 200.0, 200.0, &c, 5, 7, 0);
        let n_pos = t.labels.iter().filter(|&&l| l == 1).count();
        assert!(n_pos > 32, "{n_pos}");
        assert_eq!((t.positives.len(), t.negatives.len()), (32, 32));
        assert!(t.positives.iter().all(|&i| t.labels[i] == 1) && t.negatives.iter().all(|&i| t.labels[i] == 0));
        assert_eq!(anchor_targets(&anchors, &gt, 200.0, 200.0, &c, 5, 7, 0), t);
        assert_ne!(anchor_targets(&anchors, &gt, 200.0, 200.0, &c, 5, 8, 0).positives, t.positives);
        let b = AnchorTargets::concat(&[t.clone(), t.clone()]);
        assert_eq!(b.labels.len(), 4000);
        assert_eq!(b.positives[32], t.positives[0] + 2000);
    }

    #[test]
    fn losses_by_hand() {
        let t = AnchorTargets {
            labels: vec![1, 0, -1],
            regression: vec![[0.5, 0.0, 0.0, 0.0], [0.0; 4], [0.0; 4]],
            positives: vec![0],
            negatives: vec![1],
            ignored_gt: 0,
        };
        let l = rpn_loss(&[0.0, 0.0, 7.0], &[0.0, 0.05, 0.0, 0.0, 9.0, 9.0, 9.0, 9.0, 0.0, 0.0, 0.0, 0.0], &t, 0.1);
        assert!((l.objectness - 2f32.ln()).abs() < 1e-6);
        // |0 - 0.5| >= beta: 0.5 - 0.05; |0.05| < beta: 0.5 * 0.05^2 / 0.1; over 2 sampled
        assert!((l.box_reg - (0.45 + 0.0125) / 2.0).abs() < 1e-6);
        assert_eq!(l.d_logits, vec![-0.25, 0.25, 0.0]);
        assert_eq!(&l.d_deltas[..4], &[-0.5, 0.25, 0.0, 0.0]);
        assert!(l.d_deltas[4..].iter().all(|&g| g == 0.0));
        let empty = AnchorTargets { positives: vec![], negatives: vec![], ..t.clone() };
        assert_eq!(rpn_loss(&[0.0; 3], &[0.0; 12], &empty, 0.1).objectness, 0.0);
        let l = rpn_loss(&[f32::NAN, 0.0, 0.0], &[0.0; 12], &t, 0.1);
        assert!(l.objectness.is_nan());
    }

    /// Central differences of both losses against the returned gradients.
    #[test]
    fn loss_gradients_match_finite_differences() {
        let n = 40;
        let u = |s: &str, i: usize| counter_uniform(s, i as u64) * 2.0 - 1.0;
        let logits: Vec<f32> = (0..n).map(|i| 3.0 * u("l", i)).collect();
        let deltas: Vec<f32> = (0..4 * n).map(|i| u("d", i)).collect();
        let regression: Vec<[f32; 4]> = (0..n).map(|i| [0, 1, 2, 3].map(|k| u("t", 4 * i + k))).collect();
        let labels: Vec<i8> = (0..n).map(|i| [1, 0, -1, 0][i % 4]).collect();
        let positives: Vec<usize> = (0..n).filter(|i| i % 4 == 0).collect();
        let negatives: Vec<usize> = (0..n).filter(|i| i % 4 == 1 || (i % 4 == 3 && i % 8 != 3)).collect();
        let t = AnchorTargets { labels, regression, positives, negatives, ignored_gt: 0 };
        let beta = 1.0 / 9.0;
        let l = rpn_loss(&logits, &deltas, &t, beta);
        let h = 1e-2f32;
        for i in 0..n {
            let f = |v: f32| {
                let mut x = logits.clone();
                x[i] = v;
                rpn_loss(&x, &deltas, &t, beta).objectness as f64
            };
            let fd = (f(logits[i] + h) - f(logits[i] - h)) / (2.0 * h as f64);
            assert!((fd - l.d_logits[i] as f64).abs() < 1e-4, "logit {i}: {fd} vs {}", l.d_logits[i]);
        }
        for j in 0..4 * n {
            let d = deltas[j] - t.regression[j / 4][j % 4];
            if (d.abs() - beta).abs() < 2.0 * h {
                continue; // the kink of smooth L1
            }
            let f = |v: f32| {
                let mut x = deltas.clone();
                x[j] = v;
                rpn_loss(&logits, &x, &t, beta).box_reg as f64
            };
            let fd = (f(deltas[j] + h) - f(deltas[j] - h)) / (2.0 * h as f64);
            assert!((fd - l.d_deltas[j] as f64).abs() < 1e-4, "delta {j}: {fd} vs {}", l.d_deltas[j]);
        }
    }

    fn params(pre: usize, post: usize) -> ProposalParams {
        ProposalParams { pre_nms_top_n: pre, post_nms_top_n: post, ..cfg().proposal_params(false, 1.0) }
    }

    fn run(anchors: &[Box4], logits: &[f32], deltas: &[f32], levels: &[usize], p: &ProposalParams) -> Proposals {
        proposals(anchors, logits, deltas, levels, 100.0, 100.0, &BoxCoder::rpn(P), p)
    }

    #[test]
    fn proposals_by_hand() {
        let anchors = [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.5], [20.0, 20.0, 30.0, 30.0]];
        let z = [0.0; 12];
        let p = run(&anchors, &[2.0, 3.0, 1.0], &z, &[3], &params(10, 10));
        // anchor 1 first; anchor 0 overlaps it by 100/105 > 0.7: suppressed
        assert_eq!(p.boxes, vec![anchors[1], anchors[2]]);
        assert_eq!(p.scores, vec![sigmoid(3.0) as f32, sigmoid(1.0) as f32]);
        assert_eq!(run(&anchors, &[2.0, 3.0, 1.0], &z, &[3], &params(1, 10)).boxes, vec![anchors[1]]);
        assert_eq!(run(&anchors, &[2.0, 3.0, 1.0], &z, &[3], &params(10, 1)).boxes, vec![anchors[1]]);
        // two levels: NMS within a level only, top-N per level
        let p = run(&anchors, &[2.0, 3.0, 1.0], &z, &[1, 2], &params(10, 10));
        assert_eq!(p.boxes, vec![anchors[1], anchors[0], anchors[2]]);
        let p = run(&anchors, &[2.0, 3.0, 1.0], &z, &[1, 2], &params(1, 10));
        assert_eq!(p.boxes, vec![anchors[1], anchors[0]]);
        // a score threshold (>= keeps)
        let p = run(&anchors, &[2.0, 3.0, -0.01], &z, &[3], &ProposalParams { score_thresh: 0.5, ..params(10, 10) });
        assert_eq!(p.boxes, vec![anchors[1]]);
    }

    #[test]
    fn proposals_clip_remove_small_and_survive_bad_values() {
        let anchors =
            [[-20.0, 90.0, 10.0, 120.0], [200.0, 0.0, 210.0, 10.0], [0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 9.0, 9.0]];
        let mut deltas = vec![0.0; 16];
        let p = run(&anchors, &[4.0, 3.0, 2.0, 1.0], &deltas, &[4], &params(10, 10));
        // clipped to [0, 100]; anchor 1 lies right of the image: zero width, removed
        assert_eq!(p.boxes, vec![[0.0, 90.0, 10.0, 100.0], [0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 9.0, 9.0]]);
        // NaN logit: never a proposal, takes no top-N place; NaN delta: removed; huge dw: clamped
        deltas[8] = f32::NAN;
        deltas[14] = 1e30;
        let p = run(&anchors, &[f32::NAN, 3.0, 2.0, 1.0], &deltas, &[4], &params(2, 10));
        assert!(p.boxes.is_empty(), "{p:?}");
        let p = run(&anchors, &[f32::NAN, 3.0, 2.0, 1.0], &deltas, &[4], &params(3, 10));
        assert_eq!(p.boxes.len(), 1);
        assert!(p.boxes[0].iter().all(|v| v.is_finite()));
        // infinite logits are ordinary scores
        let p = run(&anchors, &[f32::INFINITY, f32::NEG_INFINITY, 2.0, 1.0], &[0.0; 16], &[4], &params(10, 10));
        assert_eq!(p.scores, vec![1.0, sigmoid(2.0) as f32, sigmoid(1.0) as f32]);
        // nothing to propose from
        assert_eq!(run(&[], &[], &[], &[0], &params(10, 10)), Proposals::default());
        assert_eq!(run(&[], &[], &[], &[], &params(10, 10)), Proposals::default());
        let c = BoxCoder::rpn(P);
        let p = proposals(&anchors, &[1.0; 4], &[0.0; 16], &[4], 0.0, 100.0, &c, &params(10, 10));
        assert_eq!(p, Proposals::default());
        let p = proposals(&anchors, &[1.0; 4], &[0.0; 16], &[4], f32::NAN, 100.0, &c, &params(10, 10));
        assert_eq!(p, Proposals::default());
    }

    #[test]
    fn an_image_smaller_than_its_anchors_gets_clipped_proposals() {
        // 16 x 12 image, anchors 32..128 around its cell at the origin and one 16 px further
        let base = super::super::anchors::base_anchors(&[32.0, 64.0, 128.0], &[1.0]);
        let anchors = super::super::anchors::grid_anchors(&base, 1, 2, 16.0, 16.0);
        let logits = [3.0, 2.0, 1.0, 0.5, 0.4, 0.3];
        let c = BoxCoder::rpn(P);
        let p = proposals(&anchors, &logits, &[0.0; 24], &[6], 12.0, 16.0, &c, &params(10, 10));
        // every anchor covers the image: all clip to [0, 0, 16, 12] and NMS keeps the first
        assert_eq!(p.boxes, vec![[0.0, 0.0, 16.0, 12.0]]);
        assert_eq!(p.scores, vec![sigmoid(3.0) as f32]);
    }

    #[test]
    fn filtering_before_the_top_n_is_py_faster_rcnn_order() {
        // the best-scoring anchor is tiny: torchvision spends its one top-N place on it
        let anchors = [[0.0, 0.0, 2.0, 2.0], [10.0, 10.0, 40.0, 40.0]];
        let p = ProposalParams { min_size: 16.0, ..params(1, 10) };
        assert!(run(&anchors, &[5.0, 1.0], &[0.0; 8], &[2], &p).boxes.is_empty());
        let p = ProposalParams { filter_before_top_n: true, ..p };
        assert_eq!(run(&anchors, &[5.0, 1.0], &[0.0; 8], &[2], &p).boxes, vec![anchors[1]]);
        // the paper preset's +1 convention: a 15-pixel box (x2 - x1 = 14) is removed at min size 16
        let q = RpnConfig::paper().proposal_params(false, 1.0);
        let legacy = [[0.0, 0.0, 14.0, 14.0], [0.0, 0.0, 15.0, 15.0]];
        let out = proposals(&legacy, &[2.0, 1.0], &[0.0; 8], &[2], 50.0, 50.0, &BoxCoder::rpn(q.conv), &q);
        assert_eq!(out.boxes, vec![legacy[1]]);
    }
}
