//! The per-region head's logic around its layers (Fast R-CNN; torchvision's
//! `models/detection/roi_heads.py`, `RoIHeads`): RoI sampling for training, `fastrcnn_loss` with
//! its gradients, and `postprocess_detections`.
//!
//! **Layout.** `K + 1` classes, class 0 the background. For `R` RoIs the class scores are
//! row-major `R x (K + 1)` logits and the class-specific box deltas `R x 4(K + 1)`: RoI `r`, class
//! `c` at `deltas[r * 4(K+1) + 4c..][..4]` (torchvision's `box_regression.reshape(N, -1, 4)`).

use super::boxes::{BoxCoder, box_iou, clip, remove_small};
use super::matcher::{Match, Matcher, sample_stream};
use super::nms::batched_nms;
use super::rpn::{smooth_l1, usable_gt};
use super::{Box4, Convention};

/// The head's training and inference settings; [`HeadConfig::torchvision`] and
/// [`HeadConfig::paper`] are the two presets, with every value's source.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    /// IoU at or above which a RoI is foreground (labelled with its ground truth's class).
    pub fg_iou: f32,
    /// RoIs with best IoU in `[bg_iou_low, bg_iou_high)` are background; below `bg_iou_low` ignored.
    pub bg_iou_high: f32,
    pub bg_iou_low: f32,
    /// RoIs sampled per image, at most `positive_fraction` of them foreground.
    pub batch_per_image: usize,
    pub positive_fraction: f32,
    /// The head's box coder weights (1 / the regression targets' stds).
    pub box_weights: [f32; 4],
    /// Smooth L1's beta in the box loss.
    pub beta: f32,
    /// Detections need a class probability above this (strictly).
    pub score_thresh: f32,
    /// Per-class NMS: IoU above which a detection is suppressed.
    pub nms_thresh: f32,
    /// Detections kept per image.
    pub detections_per_image: usize,
    /// Detections narrower or lower than this are dropped (0: none dropped).
    pub min_size: f32,
    pub conv: Convention,
}

impl HeadConfig {
    /// torchvision's `FasterRCNN` defaults (`faster_rcnn.py`: `box_fg_iou_thresh 0.5`,
    /// `box_bg_iou_thresh 0.5`, `box_batch_size_per_image 512`, `box_positive_fraction 0.25`,
    /// `bbox_reg_weights None` = (10, 10, 5, 5), `box_score_thresh 0.05`, `box_nms_thresh 0.5`,
    /// `box_detections_per_img 100`); `roi_heads.py`: background `[0, 0.5)` (the matcher's low
    /// threshold equals its high one), `beta = 1/9`, `remove_small_boxes(min_size=1e-2)`.
    pub fn torchvision() -> HeadConfig {
        HeadConfig {
            fg_iou: 0.5,
            bg_iou_high: 0.5,
            bg_iou_low: 0.0,
            batch_per_image: 512,
            positive_fraction: 0.25,
            box_weights: [10.0, 10.0, 5.0, 5.0],
            beta: 1.0 / 9.0,
            score_thresh: 0.05,
            nms_thresh: 0.5,
            detections_per_image: 100,
            min_size: 1e-2,
            conv: Convention::Pixel,
        }
    }

    /// The paper's head (Faster R-CNN [32] end-to-end in py-faster-rcnn: `lib/fast_rcnn/config.py`
    /// with `experiments/cfgs/faster_rcnn_end2end.yml`, which keeps `BATCH_SIZE 128` RoIs and sets
    /// `IMS_PER_BATCH 1`): `FG_THRESH 0.5`, background `[BG_THRESH_LO 0.1, BG_THRESH_HI 0.5)`,
    /// `FG_FRACTION 0.25`, targets normalised by `BBOX_NORMALIZE_STDS (0.1, 0.1, 0.2, 0.2)`
    /// (weights 10, 10, 5, 5), `loss_bbox` smooth L1 with sigma 1 (beta 1), `tools/test_net.py`'s
    /// `thresh 0.05` and `max_per_image 100`, `TEST.NMS 0.3`, no size filter, the +1 convention.
    pub fn paper() -> HeadConfig {
        HeadConfig {
            fg_iou: 0.5,
            bg_iou_high: 0.5,
            bg_iou_low: 0.1,
            batch_per_image: 128,
            positive_fraction: 0.25,
            box_weights: [10.0, 10.0, 5.0, 5.0],
            beta: 1.0,
            score_thresh: 0.05,
            nms_thresh: 0.3,
            detections_per_image: 100,
            min_size: 0.0,
            conv: Convention::LegacyPlusOne,
        }
    }

    /// The head's box coder (these weights, clamp log(1000/16) as in [`RpnConfig::coder`], this
    /// convention).
    ///
    /// [`RpnConfig::coder`]: super::rpn::RpnConfig::coder
    pub fn coder(&self) -> BoxCoder {
        BoxCoder { weights: self.box_weights, ..BoxCoder::head(self.conv) }
    }
}

/// The candidate RoIs of one image and what they were matched to, before sampling.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoiAssignment {
    /// The proposals followed by the usable ground-truth boxes (torchvision's `add_gt_proposals`).
    pub candidates: Vec<Box4>,
    /// Per candidate: its class (>= 1) if foreground, 0 background, -1 ignored.
    pub labels: Vec<i64>,
    /// Per candidate: the matched ground-truth box for foreground, an index into `gt`.
    pub matched: Vec<Option<usize>>,
    /// The ground-truth boxes given to [`assign_rois`].
    pub gt: Vec<Box4>,
    /// Ground-truth boxes left out: degenerate (see [`super::rpn::AnchorTargets::ignored_gt`]) or
    /// with a label outside `1..num_classes`.
    pub ignored_gt: usize,
}

/// The sampled RoIs of one image (or a batch: [`RoiSamples::concat`]) with their training targets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoiSamples {
    /// Sampled RoIs in increasing candidate order (torchvision's `torch.where(pos | neg)`, which
    /// mixes foreground and background).
    pub rois: Vec<Box4>,
    /// Their classes, 0 for background.
    pub labels: Vec<usize>,
    /// The head coder's deltas from each foreground RoI to its ground truth; zeros for background.
    pub regression: Vec<[f32; 4]>,
}

impl RoiSamples {
    /// Images' samples one after another (torchvision's `torch.cat` in `fastrcnn_loss`).
    pub fn concat(images: &[RoiSamples]) -> RoiSamples {
        let mut out = RoiSamples::default();
        for s in images {
            out.rois.extend_from_slice(&s.rois);
            out.labels.extend_from_slice(&s.labels);
            out.regression.extend_from_slice(&s.regression);
        }
        out
    }
}

/// Matches one image's proposals, with its ground-truth boxes appended, to the ground truth
/// (torchvision's `select_training_samples` up to sampling: `Matcher(fg_iou, bg_iou_high,
/// allow_low_quality_matches=False)`); best IoU below `bg_iou_low` is ignored (py-faster-rcnn's
/// `BG_THRESH_LO`). `gt_labels[g]` is box g's class in `1..num_classes` (`num_classes` counts the
/// background). An image without usable ground truth has every candidate background (torchvision's
/// background image).
pub fn assign_rois(
    proposals: &[Box4],
    gt: &[Box4],
    gt_labels: &[usize],
    num_classes: usize,
    cfg: &HeadConfig,
) -> RoiAssignment {
    assert_eq!(gt.len(), gt_labels.len(), "assign_rois: one label per box");
    let usable: Vec<usize> =
        usable_gt(gt, cfg.conv).into_iter().filter(|&g| (1..num_classes).contains(&gt_labels[g])).collect();
    let ignored_gt = gt.len() - usable.len();
    let gts: Vec<Box4> = usable.iter().map(|&g| gt[g]).collect();
    let mut candidates = proposals.to_vec();
    candidates.extend_from_slice(&gts);
    let n = candidates.len();
    if gts.is_empty() {
        return RoiAssignment { candidates, labels: vec![0; n], matched: vec![None; n], gt: gt.to_vec(), ignored_gt };
    }
    let iou = box_iou(&gts, &candidates, cfg.conv);
    let matcher = Matcher { high: cfg.fg_iou, low: cfg.bg_iou_high, allow_low_quality: false };
    let matches = matcher.assign(&iou, gts.len(), n);
    let mut labels = vec![0i64; n];
    let mut matched = vec![None; n];
    for (p, m) in matches.iter().enumerate() {
        let best = (0..gts.len()).map(|g| iou[g * n + p]).fold(f32::NEG_INFINITY, f32::max);
        match m {
            Match::Gt(g) => {
                labels[p] = gt_labels[usable[*g]] as i64;
                matched[p] = Some(usable[*g]);
            }
            Match::Below if best >= cfg.bg_iou_low => labels[p] = 0,
            _ => labels[p] = -1,
        }
    }
    RoiAssignment { candidates, labels, matched, gt: gt.to_vec(), ignored_gt }
}

impl RoiAssignment {
    /// A balanced sample: at most `batch_per_image` RoIs, at most `positive_fraction` foreground,
    /// drawn from the counter stream `"detect/roi/<seed>/<iteration>/<image>"` (a pure function of
    /// its arguments; torchvision uses `torch.randperm`).
    pub fn sample(&self, cfg: &HeadConfig, seed: u64, iteration: u64, image: usize) -> RoiSamples {
        let matches: Vec<Match> = self
            .labels
            .iter()
            .map(|&l| match l {
                l if l > 0 => Match::Gt(0),
                0 => Match::Below,
                _ => Match::Between,
            })
            .collect();
        let stream = format!("detect/roi/{seed}/{iteration}/{image}");
        let (pos, neg) = sample_stream(&matches, cfg.batch_per_image, cfg.positive_fraction, &stream);
        let mut chosen = [pos, neg].concat();
        chosen.sort_unstable();
        self.take(&chosen, &cfg.coder())
    }

    /// The RoIs at `indices` (into `candidates`, kept in the given order) with their labels and
    /// regression targets; an ignored candidate (label -1) is taken as background.
    pub fn take(&self, indices: &[usize], coder: &BoxCoder) -> RoiSamples {
        let mut out = RoiSamples::default();
        for &i in indices {
            let roi = self.candidates[i];
            out.rois.push(roi);
            out.labels.push(self.labels[i].max(0) as usize);
            out.regression.push(match self.matched[i] {
                Some(g) if self.labels[i] > 0 => coder.encode(&self.gt[g], &roi),
                _ => [0.0; 4],
            });
        }
        out
    }
}

/// The head's two losses and their gradients.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadLoss {
    /// Cross-entropy over the `K + 1` classes, mean over the sampled RoIs.
    pub classification: f32,
    /// Smooth L1 on the foreground RoIs' four deltas of their class, summed, divided by the number
    /// of sampled RoIs.
    pub box_reg: f32,
    /// d(classification)/d(scores), `R x (K + 1)`.
    pub d_scores: Vec<f32>,
    /// d(box_reg)/d(deltas), `R x 4(K + 1)`, zero except at each foreground RoI's class.
    pub d_deltas: Vec<f32>,
}

/// torchvision's `fastrcnn_loss` over a batch of sampled RoIs ([`RoiSamples::concat`]):
/// `F.cross_entropy(scores, labels)` and `F.smooth_l1_loss(deltas[fg, label], targets[fg], beta,
/// reduction="sum") / R`. No RoIs: both losses 0 (torchvision: NaN). NaN inputs propagate.
/// Panics on inconsistent lengths or a label `>= num_classes` (a caller's bug; [`assign_rois`]
/// only makes labels in range).
pub fn fastrcnn_loss(scores: &[f32], deltas: &[f32], samples: &RoiSamples, num_classes: usize, beta: f32) -> HeadLoss {
    let r = samples.labels.len();
    assert_eq!(scores.len(), r * num_classes, "fastrcnn_loss: scores are R x (K+1)");
    assert_eq!(deltas.len(), r * 4 * num_classes, "fastrcnn_loss: deltas are R x 4(K+1)");
    assert_eq!(samples.regression.len(), r, "fastrcnn_loss: one target per RoI");
    assert!(samples.labels.iter().all(|&l| l < num_classes), "fastrcnn_loss: label out of range");
    let mut d_scores = vec![0.0; scores.len()];
    let mut d_deltas = vec![0.0; deltas.len()];
    if r == 0 {
        return HeadLoss { classification: 0.0, box_reg: 0.0, d_scores, d_deltas };
    }
    let inv = 1.0 / r as f64;
    let (mut ce, mut reg) = (0.0f64, 0.0f64);
    for (i, &label) in samples.labels.iter().enumerate() {
        let row = &scores[i * num_classes..(i + 1) * num_classes];
        let p = softmax(row);
        ce += log_sum_exp(row) - row[label] as f64;
        for (c, d) in d_scores[i * num_classes..(i + 1) * num_classes].iter_mut().enumerate() {
            let onehot = if c == label { 1.0 } else { 0.0 };
            *d = ((p[c] - onehot) * inv) as f32;
        }
        if label > 0 {
            let at = i * 4 * num_classes + 4 * label;
            for k in 0..4 {
                let (l, g) = smooth_l1(deltas[at + k] as f64 - samples.regression[i][k] as f64, beta as f64);
                reg += l;
                d_deltas[at + k] = (g * inv) as f32;
            }
        }
    }
    HeadLoss { classification: (ce * inv) as f32, box_reg: (reg * inv) as f32, d_scores, d_deltas }
}

/// `log(sum(exp(row)))`, max subtracted.
fn log_sum_exp(row: &[f32]) -> f64 {
    let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
}

/// Softmax of one row in f64 (max subtracted; a row with NaN, or +inf, gives NaN probabilities).
fn softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// One image's detections, by descending score.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detections {
    pub boxes: Vec<Box4>,
    pub scores: Vec<f32>,
    /// Classes in `1..num_classes`.
    pub labels: Vec<usize>,
}

/// torchvision's `postprocess_detections` for one image: softmax over the classes, every RoI
/// decoded with each class's deltas, clipped to `image_h x image_w`, the background dropped,
/// (RoI, class) pairs with probability `> score_thresh` kept, boxes under `min_size` removed, NMS
/// within each class, the first `detections_per_image` by score. Ties of equal scores keep the
/// lower (RoI, class) position first (torchvision's last sort is unstable). NaN scores never
/// become detections; no RoIs, or an image under one pixel: no detections.
pub fn postprocess_detections(
    scores: &[f32],
    deltas: &[f32],
    rois: &[Box4],
    num_classes: usize,
    image_h: f32,
    image_w: f32,
    cfg: &HeadConfig,
) -> Detections {
    assert_eq!(scores.len(), rois.len() * num_classes, "postprocess: scores are R x (K+1)");
    assert_eq!(deltas.len(), rois.len() * 4 * num_classes, "postprocess: deltas are R x 4(K+1)");
    if !(image_h >= 1.0 && image_w >= 1.0) {
        return Detections::default();
    }
    let coder = cfg.coder();
    let (mut boxes, mut probs, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for (r, roi) in rois.iter().enumerate() {
        let p = softmax(&scores[r * num_classes..(r + 1) * num_classes]);
        for (c, &pc) in p.iter().enumerate().skip(1) {
            let pc = pc as f32;
            if pc > cfg.score_thresh {
                let at = r * 4 * num_classes + 4 * c;
                boxes.push(coder.decode(&[deltas[at], deltas[at + 1], deltas[at + 2], deltas[at + 3]], roi));
                probs.push(pc);
                labels.push(c);
            }
        }
    }
    clip(&mut boxes, image_h, image_w, cfg.conv);
    let keep = remove_small(&boxes, cfg.min_size, cfg.conv);
    let boxes: Vec<Box4> = keep.iter().map(|&k| boxes[k]).collect();
    let probs: Vec<f32> = keep.iter().map(|&k| probs[k]).collect();
    let labels: Vec<usize> = keep.iter().map(|&k| labels[k]).collect();
    let classes: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let mut kept = batched_nms(&boxes, &probs, &classes, cfg.nms_thresh, cfg.conv);
    kept.truncate(cfg.detections_per_image);
    Detections {
        boxes: kept.iter().map(|&k| boxes[k]).collect(),
        scores: kept.iter().map(|&k| probs[k]).collect(),
        labels: kept.iter().map(|&k| labels[k]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::counter_uniform;

    fn tv() -> HeadConfig {
        HeadConfig::torchvision()
    }

    #[test]
    fn assignment_by_hand_both_background_ranges() {
        let gt = [[0.0, 0.0, 10.0, 10.0]];
        let props = [
            [0.0, 0.0, 10.0, 10.0],   // 1.0: class 3
            [0.0, 0.0, 10.0, 20.0],   // 0.5: foreground (>= 0.5)
            [0.0, 0.0, 10.0, 25.0],   // 0.4: background
            [50.0, 50.0, 60.0, 60.0], // 0: background in torchvision, ignored below 0.1 in the paper's
        ];
        let a = assign_rois(&props, &gt, &[3], 5, &tv());
        assert_eq!(a.candidates.len(), 5);
        assert_eq!(a.candidates[4], gt[0]);
        assert_eq!(a.labels, vec![3, 3, 0, 0, 3]);
        assert_eq!(a.matched, vec![Some(0), Some(0), None, None, Some(0)]);
        let p = assign_rois(&props, &gt, &[3], 5, &HeadConfig::paper());
        // +1 convention: [0,0,10,20] is 11x21 against 11x11: 121/231 ~ 0.52
        assert_eq!(p.labels, vec![3, 3, 0, -1, 3]);
        let s = a.take(&[1, 2], &tv().coder());
        assert_eq!(s.labels, vec![3, 0]);
        let r = s.regression[0];
        // centre y 10 -> 5 over height 20: 10 * (-5/20); h 20 -> 10: 5 * ln(0.5)
        assert!(r[0] == 0.0 && (r[1] + 2.5).abs() < 1e-6 && r[2] == 0.0 && (r[3] - 5.0 * 0.5f32.ln()).abs() < 1e-6);
        assert_eq!(s.regression[1], [0.0; 4]);
    }

    #[test]
    fn sampling_a_quarter_foreground_in_candidate_order() {
        let gt = [[0.0, 0.0, 10.0, 10.0]];
        let props: Vec<Box4> = (0..40).map(|i| if i % 4 == 0 { gt[0] } else { [50.0, 50.0, 60.0, 60.0] }).collect();
        let cfg = HeadConfig { batch_per_image: 8, ..tv() };
        let a = assign_rois(&props, &gt, &[1], 2, &cfg);
        let s = a.sample(&cfg, 3, 1, 0);
        assert_eq!(s.labels.len(), 8);
        assert_eq!(s.labels.iter().filter(|&&l| l == 1).count(), 2);
        assert_eq!(a.sample(&cfg, 3, 1, 0), s);
        // too few background: all of it, fewer RoIs in all
        let props = [gt[0]; 5];
        let s = assign_rois(&props, &gt, &[1], 2, &cfg).sample(&cfg, 3, 1, 0);
        assert_eq!(s.labels, vec![1, 1]);
    }

    #[test]
    fn no_gt_bad_gt_and_no_proposals() {
        let props = [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 9.0, 9.0]];
        let a = assign_rois(&props, &[], &[], 3, &tv());
        assert_eq!((a.labels.clone(), a.ignored_gt), (vec![0, 0], 0));
        let s = a.sample(&tv(), 0, 0, 0);
        assert_eq!(s.labels, vec![0, 0]);
        // NaN box, empty box, label 0, label beyond K: all ignored; the image is background
        let gt = [[f32::NAN, 0.0, 1.0, 1.0], [2.0, 2.0, 2.0, 5.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]];
        let a = assign_rois(&props, &gt, &[1, 1, 0, 3], 3, &tv());
        assert_eq!((a.labels.clone(), a.ignored_gt), (vec![0, 0], 4));
        // no proposals: the ground truth itself is the only foreground
        let a = assign_rois(&[], &gt[2..3], &[2], 3, &tv());
        assert_eq!(a.labels, vec![2]);
        let s = a.sample(&tv(), 0, 0, 0);
        assert_eq!(s.regression, vec![[0.0; 4]]);
        let l = fastrcnn_loss(&[0.0; 3], &[0.0; 12], &s, 3, tv().beta);
        assert!((l.classification - 3f32.ln()).abs() < 1e-6 && l.box_reg == 0.0);
        let empty = fastrcnn_loss(&[], &[], &RoiSamples::default(), 3, tv().beta);
        assert_eq!((empty.classification, empty.box_reg), (0.0, 0.0));
    }

    #[test]
    fn loss_by_hand() {
        let s = RoiSamples {
            rois: vec![[0.0; 4]; 2],
            labels: vec![1, 0],
            regression: vec![[1.0, 0.0, 0.0, 0.0], [0.0; 4]],
        };
        let scores = [0.0, 0.0, 0.0, 0.0];
        let mut deltas = [0.0; 16];
        deltas[0] = 5.0; // background class's deltas never count
        let l = fastrcnn_loss(&scores, &deltas, &s, 2, 1.0);
        assert!((l.classification - 2f32.ln()).abs() < 1e-6);
        assert!((l.box_reg - 0.5 / 2.0).abs() < 1e-6); // |0 - 1| >= beta 1: 1 - 0.5; over 2 RoIs
        assert_eq!(l.d_scores, vec![0.25, -0.25, -0.25, 0.25]);
        let mut want = [0.0; 16];
        want[4] = -0.5;
        assert_eq!(l.d_deltas, want);
    }

    #[test]
    fn loss_gradients_match_finite_differences() {
        let (r, k) = (12, 4);
        let u = |s: &str, i: usize| counter_uniform(s, i as u64) * 2.0 - 1.0;
        let scores: Vec<f32> = (0..r * k).map(|i| 2.0 * u("s", i)).collect();
        let deltas: Vec<f32> = (0..4 * r * k).map(|i| u("d", i)).collect();
        let s = RoiSamples {
            rois: vec![[0.0; 4]; r],
            labels: (0..r).map(|i| i % k).collect(),
            regression: (0..r).map(|i| [0, 1, 2, 3].map(|c| u("t", 4 * i + c))).collect(),
        };
        let beta = 1.0 / 9.0;
        let l = fastrcnn_loss(&scores, &deltas, &s, k, beta);
        let h = 1e-2f32;
        for i in 0..r * k {
            let f = |v: f32| {
                let mut x = scores.clone();
                x[i] = v;
                fastrcnn_loss(&x, &deltas, &s, k, beta).classification as f64
            };
            let fd = (f(scores[i] + h) - f(scores[i] - h)) / (2.0 * h as f64);
            assert!((fd - l.d_scores[i] as f64).abs() < 1e-4, "score {i}: {fd} vs {}", l.d_scores[i]);
        }
        for j in 0..4 * r * k {
            let (roi, c) = (j / (4 * k), (j % (4 * k)) / 4);
            if c == s.labels[roi] && c > 0 {
                let d = deltas[j] - s.regression[roi][j % 4];
                if (d.abs() - beta).abs() < 2.0 * h {
                    continue;
                }
            }
            let f = |v: f32| {
                let mut x = deltas.clone();
                x[j] = v;
                fastrcnn_loss(&scores, &x, &s, k, beta).box_reg as f64
            };
            let fd = (f(deltas[j] + h) - f(deltas[j] - h)) / (2.0 * h as f64);
            assert!((fd - l.d_deltas[j] as f64).abs() < 1e-4, "delta {j}: {fd} vs {}", l.d_deltas[j]);
        }
    }

    #[test]
    fn postprocess_by_hand() {
        let rois = [[10.0, 10.0, 50.0, 50.0], [12.0, 10.0, 52.0, 50.0], [80.0, 80.0, 120.0, 120.0]];
        // 3 classes (background, 1, 2); RoI 0 class 1, RoI 1 class 1 (lower) and 2, RoI 2 background
        let ln = |p: f32| p.ln();
        let scores = [
            ln(0.1),
            ln(0.8),
            ln(0.1), //
            ln(0.2),
            ln(0.5),
            ln(0.3), //
            ln(0.97),
            ln(0.02),
            ln(0.01),
        ];
        let d = postprocess_detections(&scores, &[0.0; 36], &rois, 3, 100.0, 100.0, &tv());
        // RoI 1's class 1 overlaps RoI 0's (IoU 38/42 > 0.5): suppressed; its class 2 stays
        assert_eq!(d.labels, vec![1, 2]);
        assert_eq!(d.boxes, vec![rois[0], rois[1]]);
        assert!((d.scores[0] - 0.8).abs() < 1e-6 && (d.scores[1] - 0.3).abs() < 1e-6);
        let one = postprocess_detections(
            &scores,
            &[0.0; 36],
            &rois,
            3,
            100.0,
            100.0,
            &HeadConfig { detections_per_image: 1, ..tv() },
        );
        assert_eq!(one.labels, vec![1]);
        // RoI 2 clipped to the image: [80, 80, 100, 100] had it scored
        let mut s2 = scores;
        s2[6..9].copy_from_slice(&[0.0, 0.0, 5.0]);
        let d = postprocess_detections(&s2, &[0.0; 36], &rois, 3, 100.0, 100.0, &tv());
        assert_eq!(d.boxes[0], [80.0, 80.0, 100.0, 100.0]);
        // the paper's: clipped to the last pixel (99), the same boxes otherwise
        let d = postprocess_detections(&s2, &[0.0; 36], &rois, 3, 100.0, 100.0, &HeadConfig::paper());
        assert_eq!(d.boxes[0], [80.0, 80.0, 99.0, 99.0]);
        assert_eq!(d.labels, vec![2, 1, 2]);
        // class 1's deltas move only class 1's box
        let mut deltas = [0.0; 36];
        deltas[4] = 10.0 * 0.25; // RoI 0, class 1: dx = +0.25 widths
        let d = postprocess_detections(&scores, &deltas, &rois, 3, 100.0, 100.0, &tv());
        assert_eq!(d.boxes[0], [20.0, 10.0, 60.0, 50.0]);
    }

    #[test]
    fn postprocess_survives_bad_values() {
        let rois = [[10.0, 10.0, 50.0, 50.0], [200.0, 200.0, 250.0, 250.0]];
        let mut scores = [0.0, 3.0, f32::NAN, 0.0, 3.0, 1.0];
        let d = postprocess_detections(&scores, &[0.0; 24], &rois, 3, 100.0, 100.0, &tv());
        // RoI 0 (NaN) gives nothing; RoI 1 lies outside the image: clipped to nothing, removed
        assert_eq!(d, Detections::default());
        scores[2] = 1.0;
        let mut deltas = [0.0; 24];
        deltas[6] = f32::NAN;
        deltas[7] = 1e30;
        let d = postprocess_detections(&scores, &deltas, &rois, 3, 100.0, 100.0, &tv());
        assert_eq!(d.labels, vec![2]); // class 1's box is NaN (removed), class 2's is fine
        let d = postprocess_detections(&scores, &deltas, &rois, 3, 0.5, 100.0, &tv());
        assert_eq!(d, Detections::default());
        let d = postprocess_detections(&[], &[], &[], 3, 100.0, 100.0, &tv());
        assert_eq!(d, Detections::default());
    }
}
