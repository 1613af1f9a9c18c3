//! COCO's box evaluation, the 12 numbers of pycocotools' `COCOeval.summarize()`, step for step
//! (`pycocotools/cocoeval.py`, `maskApi.c`'s `bbIou`), so that they agree to rounding:
//!
//! - every image and category of the ground truth, sorted by id; detections of a category outside
//!   it or on an image outside it are the reader's business (refused there);
//! - per (image, category) the detections in a stable descending order of score, the first 100;
//!   IoU of boxes `[x, y, w, h]` with a crowd ground truth = intersection / the detection's area;
//! - IoU thresholds `linspace(.5, .95, 10)`, recall points `linspace(0, 1, 101)` computed as numpy
//!   does (so 0.75 is found among them by equality as `summarize` finds it);
//! - greedy matching per threshold: a detection takes the best remaining ground truth with IoU >=
//!   t (capped at 1 - 1e-10), non-ignored before ignored; crowd ground truth can match many;
//! - area ranges `[0, 1e10], [0, 32^2], [32^2, 96^2], [96^2, 1e10]` inclusive, from the ground
//!   truth's `area` field and the detection's w * h; unmatched detections outside the range ignored;
//! - precision made monotone from the right, sampled at the recall points by a left binary search;
//!   a category without (non-ignored) ground truth gives -1 and is left out of the means; a number
//!   with nothing to average is -1.
//!
//! One quirk kept for exactness: pycocotools records a match by the ground truth's `id` and reads
//! id 0 as "unmatched"; a ground-truth annotation with id 0 therefore never yields a true positive
//! there, nor here.

use crate::data::detection::{DetAnnotation, DetDataset, Detection};
use std::collections::HashMap;

/// The names of the 12 numbers, in pycocotools' order.
pub const NAMES: [&str; 12] = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"];

/// pycocotools' printed lines for the 12 numbers (without the value).
pub const LINES: [&str; 12] = [
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
];

const MAX_DETS: [usize; 3] = [1, 10, 100];
const AREAS: [[f64; 2]; 4] = [[0.0, 1e10], [0.0, 1024.0], [1024.0, 9216.0], [9216.0, 1e10]];

/// numpy's `linspace(start, stop, num)`: `i * step + start`, the last element `stop` exactly.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    (0..num).map(|i| if i == num - 1 { stop } else { i as f64 * step + start }).collect()
}

fn iou_thresholds() -> Vec<f64> {
    linspace(0.5, 0.95, 10)
}

fn recall_thresholds() -> Vec<f64> {
    linspace(0.0, 1.0, 101)
}

/// The result: the 12 numbers, and the arrays they are means of.
#[derive(Clone, Debug)]
pub struct CocoEval {
    pub stats: [f64; 12],
    /// `[T][R][K][A][M]` flattened (pycocotools' `eval['precision']`), -1 where undefined.
    pub precision: Vec<f64>,
    /// `[T][K][A][M]` flattened.
    pub recall: Vec<f64>,
    /// The category ids, in the order of K.
    pub category_ids: Vec<i64>,
}

/// `maskApi.c`'s `bbIou` for one pair (`[x, y, w, h]`).
fn bb_iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let (i, da, ga) = (w * h, d[2] * d[3], g[2] * g[3]);
    i / if crowd { da } else { da + ga - i }
}

/// `evaluateImg`'s result for one (image, category, area range).
struct ImageEval {
    scores: Vec<f64>,
    /// `[T][D]`: the matched ground truth's id (0: none, as pycocotools' `dtMatches`).
    matched: Vec<Vec<i64>>,
    /// `[T][D]`
    ignored: Vec<Vec<bool>>,
    /// how many ground-truth boxes count (not ignored)
    counted_gt: usize,
}

/// Stable order of `scores`, descending (numpy's `argsort(-s, kind='mergesort')`).
fn by_score(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| (-scores[a]).partial_cmp(&-scores[b]).unwrap_or(std::cmp::Ordering::Equal));
    idx
}

fn evaluate_img(gt: &[&DetAnnotation], dt: &[(usize, &Detection)], area: [f64; 2], thrs: &[f64]) -> Option<ImageEval> {
    if gt.is_empty() && dt.is_empty() {
        return None;
    }
    let outside = |a: f64| a < area[0] || a > area[1];
    let gt_ignore_raw: Vec<bool> = gt.iter().map(|g| g.iscrowd || outside(g.area)).collect();
    // stable: non-ignored first
    let mut gtind: Vec<usize> = (0..gt.len()).collect();
    gtind.sort_by_key(|&i| gt_ignore_raw[i]);
    let gt: Vec<&DetAnnotation> = gtind.iter().map(|&i| gt[i]).collect();
    let gt_ig: Vec<bool> = gtind.iter().map(|&i| gt_ignore_raw[i]).collect();
    let ious: Vec<Vec<f64>> =
        dt.iter().map(|(_, d)| gt.iter().map(|g| bb_iou(&d.bbox, &g.bbox, g.iscrowd)).collect()).collect();
    let (t_n, g_n, d_n) = (thrs.len(), gt.len(), dt.len());
    let mut gtm = vec![vec![0i64; g_n]; t_n];
    let mut dtm = vec![vec![0i64; d_n]; t_n];
    let mut dt_ig = vec![vec![false; d_n]; t_n];
    if d_n > 0 && g_n > 0 {
        for (ti, &t) in thrs.iter().enumerate() {
            for (di, (did, _)) in dt.iter().enumerate() {
                let mut iou = t.min(1.0 - 1e-10);
                let mut m: Option<usize> = None;
                for gi in 0..g_n {
                    if gtm[ti][gi] > 0 && !gt[gi].iscrowd {
                        continue;
                    }
                    if let Some(mm) = m
                        && !gt_ig[mm]
                        && gt_ig[gi]
                    {
                        break;
                    }
                    if ious[di][gi] < iou {
                        continue;
                    }
                    iou = ious[di][gi];
                    m = Some(gi);
                }
                if let Some(m) = m {
                    dt_ig[ti][di] = gt_ig[m];
                    dtm[ti][di] = gt[m].id;
                    gtm[ti][m] = *did as i64 + 1;
                }
            }
        }
    }
    for ti in 0..t_n {
        for (di, (_, d)) in dt.iter().enumerate() {
            if dtm[ti][di] == 0 && outside(d.bbox[2] * d.bbox[3]) {
                dt_ig[ti][di] = true;
            }
        }
    }
    Some(ImageEval {
        scores: dt.iter().map(|(_, d)| d.score).collect(),
        matched: dtm,
        ignored: dt_ig,
        counted_gt: gt_ig.iter().filter(|&&i| !i).count(),
    })
}

/// Evaluate `dets` against `gt` as pycocotools does (bbox).
pub fn evaluate(gt: &DetDataset, dets: &[Detection]) -> CocoEval {
    let mut img_ids: Vec<i64> = gt.images.iter().map(|i| i.id).collect();
    img_ids.sort_unstable();
    img_ids.dedup();
    let mut cat_ids: Vec<i64> = gt.categories.iter().map(|c| c.id).collect();
    cat_ids.sort_unstable();
    cat_ids.dedup();
    let mut gts: HashMap<(i64, i64), Vec<&DetAnnotation>> = HashMap::new();
    for a in &gt.annotations {
        gts.entry((a.image_id, a.category_id)).or_default().push(a);
    }
    // detections by (image, category) with their index in the results (pycocotools' id - 1)
    let mut dts: HashMap<(i64, i64), Vec<(usize, &Detection)>> = HashMap::new();
    for (i, d) in dets.iter().enumerate() {
        dts.entry((d.image_id, d.category_id)).or_default().push((i, d));
    }
    let max_det = *MAX_DETS.last().unwrap();
    for v in dts.values_mut() {
        let scores: Vec<f64> = v.iter().map(|(_, d)| d.score).collect();
        let order = by_score(&scores);
        *v = order.into_iter().take(max_det).map(|i| v[i]).collect();
    }
    let thrs = iou_thresholds();
    let rec = recall_thresholds();
    let (t_n, r_n, k_n, a_n, m_n) = (thrs.len(), rec.len(), cat_ids.len(), AREAS.len(), MAX_DETS.len());
    let mut precision = vec![-1.0; t_n * r_n * k_n * a_n * m_n];
    let mut recall = vec![-1.0; t_n * k_n * a_n * m_n];
    let empty_g: Vec<&DetAnnotation> = vec![];
    let empty_d: Vec<(usize, &Detection)> = vec![];
    for (k, &cat) in cat_ids.iter().enumerate() {
        for (a, &area) in AREAS.iter().enumerate() {
            let evals: Vec<ImageEval> = img_ids
                .iter()
                .filter_map(|&img| {
                    let g = gts.get(&(img, cat)).unwrap_or(&empty_g);
                    let d = dts.get(&(img, cat)).unwrap_or(&empty_d);
                    evaluate_img(g, d, area, &thrs)
                })
                .collect();
            if evals.is_empty() {
                continue;
            }
            let npig: usize = evals.iter().map(|e| e.counted_gt).sum();
            if npig == 0 {
                continue;
            }
            for (m, &max_det) in MAX_DETS.iter().enumerate() {
                // concatenated over images, each cut at max_det, then stably by score
                let mut scores = vec![];
                let mut refs = vec![];
                for (e_i, e) in evals.iter().enumerate() {
                    for d in 0..e.scores.len().min(max_det) {
                        scores.push(e.scores[d]);
                        refs.push((e_i, d));
                    }
                }
                let order = by_score(&scores);
                for t in 0..t_n {
                    let (mut tp, mut fp) = (0.0f64, 0.0f64);
                    let mut rc = Vec::with_capacity(order.len());
                    let mut pr = Vec::with_capacity(order.len());
                    for &o in &order {
                        let (e_i, d) = refs[o];
                        let e = &evals[e_i];
                        if e.ignored[t][d] {
                            // neither: the sums stay, but the point is still a point of the curve
                        } else if e.matched[t][d] != 0 {
                            tp += 1.0;
                        } else {
                            fp += 1.0;
                        }
                        rc.push(tp / npig as f64);
                        pr.push(tp / (fp + tp + f64::EPSILON));
                    }
                    let nd = rc.len();
                    recall[((t * k_n + k) * a_n + a) * m_n + m] = if nd > 0 { rc[nd - 1] } else { 0.0 };
                    for i in (1..nd).rev() {
                        if pr[i] > pr[i - 1] {
                            pr[i - 1] = pr[i];
                        }
                    }
                    for (ri, &r) in rec.iter().enumerate() {
                        let pi = rc.partition_point(|&x| x < r);
                        let q = if pi < nd { pr[pi] } else { 0.0 };
                        precision[(((t * r_n + ri) * k_n + k) * a_n + a) * m_n + m] = q;
                    }
                }
            }
        }
    }
    let mean = |v: &mut dyn Iterator<Item = f64>| {
        let (mut s, mut n) = (0.0, 0usize);
        for x in v.filter(|&x| x > -1.0) {
            s += x;
            n += 1;
        }
        if n == 0 { -1.0 } else { s / n as f64 }
    };
    let t_of = |thr: Option<f64>| -> Vec<usize> {
        match thr {
            None => (0..t_n).collect(),
            Some(x) => (0..t_n).filter(|&t| thrs[t] == x).collect(),
        }
    };
    let ap = |thr: Option<f64>, a: usize, m: usize| {
        let ts = t_of(thr);
        mean(&mut ts.iter().flat_map(|&t| {
            let precision = &precision;
            (0..r_n)
                .flat_map(move |r| (0..k_n).map(move |k| precision[(((t * r_n + r) * k_n + k) * a_n + a) * m_n + m]))
        }))
    };
    let ar = |a: usize, m: usize| {
        mean(&mut (0..t_n).flat_map(|t| {
            let recall = &recall;
            (0..k_n).map(move |k| recall[((t * k_n + k) * a_n + a) * m_n + m])
        }))
    };
    let stats = [
        ap(None, 0, 2),
        ap(Some(0.5), 0, 2),
        ap(Some(0.75), 0, 2),
        ap(None, 1, 2),
        ap(None, 2, 2),
        ap(None, 3, 2),
        ar(0, 0),
        ar(0, 1),
        ar(0, 2),
        ar(1, 2),
        ar(2, 2),
        ar(3, 2),
    ];
    CocoEval { stats, precision, recall, category_ids: cat_ids }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::detection::{DetCategory, DetImage};

    fn gt(boxes: &[(i64, [f64; 4], bool)]) -> DetDataset {
        DetDataset {
            images: vec![DetImage { id: 1, file_name: "a.jpg".into(), width: 200, height: 200 }],
            categories: vec![DetCategory { id: 1, name: "a".into() }],
            annotations: boxes
                .iter()
                .enumerate()
                .map(|(i, &(c, b, crowd))| DetAnnotation {
                    id: i as i64 + 1,
                    image_id: 1,
                    category_id: c,
                    bbox: b,
                    area: b[2] * b[3],
                    iscrowd: crowd,
                    difficult: false,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn det(b: [f64; 4], score: f64) -> Detection {
        Detection { image_id: 1, category_id: 1, bbox: b, score }
    }

    #[test]
    fn thresholds_as_numpy_computes_them() {
        let t = iou_thresholds();
        assert_eq!(t.len(), 10);
        assert!(t.contains(&0.5) && t.contains(&0.75) && t[9] == 0.95);
        let r = recall_thresholds();
        assert_eq!((r.len(), r[1], r[100]), (101, 0.01, 1.0));
    }

    #[test]
    fn perfect_detections_score_one_and_empty_results_zero() {
        let g = gt(&[(1, [10.0, 10.0, 50.0, 40.0], false), (1, [100.0, 100.0, 20.0, 20.0], false)]);
        let e = evaluate(&g, &[det([10.0, 10.0, 50.0, 40.0], 0.9), det([100.0, 100.0, 20.0, 20.0], 0.8)]);
        // precision is tp / (tp + fp + eps), as in pycocotools: 1 - 2e-16, not 1
        assert!((e.stats[0] - 1.0).abs() < 1e-15, "{:?}", e.stats);
        assert!((e.stats[3] - 1.0).abs() < 1e-15); // the 20x20 box is small
        assert_eq!(e.stats[5], -1.0); // no large ground truth
        assert_eq!(e.stats[6], 0.5); // AR@1: one of two
        let e = evaluate(&g, &[]);
        assert_eq!(e.stats[0], 0.0);
        assert_eq!(e.stats[8], 0.0);
    }

    #[test]
    fn crowd_regions_swallow_detections_without_penalty() {
        let g = gt(&[(1, [10.0, 10.0, 50.0, 40.0], false), (1, [100.0, 100.0, 80.0, 80.0], true)]);
        let dets = [
            det([10.0, 10.0, 50.0, 40.0], 0.5),
            det([110.0, 110.0, 10.0, 10.0], 0.9),
            det([120.0, 120.0, 10.0, 10.0], 0.8),
        ];
        assert!((evaluate(&g, &dets).stats[0] - 1.0).abs() < 1e-15);
    }
}
