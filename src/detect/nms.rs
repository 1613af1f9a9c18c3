//! Non-maximum suppression with torchvision's semantics (`csrc/ops/cpu/nms_kernel.cpp`): boxes in
//! a stable descending order of score (equal scores keep the lower index first), a box suppressed
//! iff its IoU with a kept box is greater than the threshold (IoU exactly at it survives); per-class
//! NMS as torchvision's per-class loop; and the box voting of the paper's Appendix B.

use super::{Box4, Convention};

/// Indices (into `boxes`) of the boxes NMS keeps, by descending score.
pub fn nms(boxes: &[Box4], scores: &[f32], iou_threshold: f32, conv: Convention) -> Vec<usize> {
    nms_limit(boxes, scores, iou_threshold, conv, usize::MAX)
}

/// [`nms`]'s first `limit` kept boxes, found without suppressing past them (the RPN's "top 300
/// after NMS" at a fraction of the work): the same indices as `nms(...)[..limit]`.
pub fn nms_limit(boxes: &[Box4], scores: &[f32], iou_threshold: f32, conv: Convention, limit: usize) -> Vec<usize> {
    assert_eq!(boxes.len(), scores.len(), "nms: one score per box");
    let order = descending(scores, (0..boxes.len()).collect());
    nms_ordered(boxes, &order, iou_threshold, conv, limit)
}

/// `idx` sorted by descending score, stable (equal scores in the order of `idx`); NaN scores last.
fn descending(scores: &[f32], mut idx: Vec<usize>) -> Vec<usize> {
    idx.sort_by(|&a, &b| {
        scores[b].partial_cmp(&scores[a]).unwrap_or_else(|| scores[a].is_nan().cmp(&scores[b].is_nan()))
    });
    idx
}

/// Greedy suppression over `order` (already by descending score), keeping at most `limit` boxes.
/// The boxes are laid out as columns in that order so that the inner loop (IoU of one kept box
/// with every later one) has no branch and vectorises; a box already suppressed is compared again
/// to no effect (the flag is or-ed).
fn nms_ordered(boxes: &[Box4], order: &[usize], iou_threshold: f32, conv: Convention, limit: usize) -> Vec<usize> {
    if limit == 0 {
        return vec![];
    }
    let col = |k: usize| -> Vec<f32> { order.iter().map(|&i| boxes[i][k]).collect() };
    let (x1, y1, x2, y2) = (col(0), col(1), col(2), col(3));
    let areas: Vec<f32> = order.iter().map(|&i| conv.area(&boxes[i])).collect();
    let one = conv.one();
    let mut suppressed = vec![false; order.len()];
    let mut keep = Vec::new();
    for a in 0..order.len() {
        if suppressed[a] {
            continue;
        }
        keep.push(order[a]);
        if keep.len() == limit {
            break;
        }
        let (ax1, ay1, ax2, ay2, aa) = (x1[a], y1[a], x2[a], y2[a], areas[a]);
        let rest = a + 1..order.len();
        let cols = x1[rest.clone()].iter().zip(&y1[rest.clone()]).zip(&x2[rest.clone()]).zip(&y2[rest.clone()]);
        for ((((bx1, by1), bx2), by2), (ab, s)) in cols.zip(areas[rest.clone()].iter().zip(&mut suppressed[rest])) {
            let w = (ax2.min(*bx2) - ax1.max(*bx1) + one).max(0.0);
            let h = (ay2.min(*by2) - ay1.max(*by1) + one).max(0.0);
            let inter = w * h;
            *s |= inter / (aa + ab - inter) > iou_threshold;
        }
    }
    keep
}

/// NMS within each class (`classes[i]` is box i's class): torchvision's `batched_nms` as its
/// per-class loop (`_batched_nms_vanilla`; the coordinate-offset trick it takes below 4000 boxes
/// can round differently). The kept indices, by descending score (stable across classes).
pub fn batched_nms(
    boxes: &[Box4],
    scores: &[f32],
    classes: &[i64],
    iou_threshold: f32,
    conv: Convention,
) -> Vec<usize> {
    assert!(boxes.len() == scores.len() && boxes.len() == classes.len(), "batched_nms: one score and class per box");
    let order = descending(scores, (0..boxes.len()).collect());
    let mut by_class: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
    for &i in &order {
        by_class.entry(classes[i]).or_default().push(i);
    }
    let mut keep_mask = vec![false; boxes.len()];
    for members in by_class.values() {
        for i in nms_ordered(boxes, members, iou_threshold, conv, usize::MAX) {
            keep_mask[i] = true;
        }
    }
    order.into_iter().filter(|&i| keep_mask[i]).collect()
}

/// Box voting (Detectron's `box_voting` with scoring "ID", the refinement of the paper's Appendix
/// B): each kept box becomes the score-weighted mean of every box of `all` whose IoU with it is
/// at least `threshold` (itself included when it is among `all`); scores are unchanged.
pub fn box_voting(kept: &[Box4], all: &[Box4], all_scores: &[f32], threshold: f32, conv: Convention) -> Vec<Box4> {
    kept.iter()
        .map(|k| {
            let (mut acc, mut wsum) = ([0.0f64; 4], 0.0f64);
            for (b, &s) in all.iter().zip(all_scores) {
                if conv.iou(k, b) >= threshold {
                    for c in 0..4 {
                        acc[c] += s as f64 * b[c] as f64;
                    }
                    wsum += s as f64;
                }
            }
            if wsum > 0.0 { acc.map(|v| (v / wsum) as f32) } else { *k }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    const P: Convention = Convention::Pixel;

    #[test]
    fn equal_scores_keep_the_lower_index_and_threshold_is_strict() {
        // boxes 0 and 1 identical, equal scores: 0 survives
        let b = [[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]];
        assert_eq!(nms(&b, &[0.5, 0.5, 0.4], 0.7, P), vec![0, 2]);
        // IoU(box 0, box 2) = 0.5 exactly: kept at threshold 0.5, suppressed below
        assert_eq!(nms(&b, &[0.5, 0.1, 0.4], 0.5, P), vec![0, 2]);
        assert_eq!(nms(&b, &[0.5, 0.1, 0.4], 0.49, P), vec![0]);
        assert!(nms(&[], &[], 0.5, P).is_empty());
    }

    #[test]
    fn a_limit_gives_the_first_kept_boxes() {
        let b: Vec<Box4> = (0..200)
            .map(|i| {
                let (x, y) = ((i * 37 % 101) as f32, (i * 53 % 97) as f32);
                [x, y, x + 10.0 + (i % 7) as f32, y + 12.0]
            })
            .collect();
        let s: Vec<f32> = (0..200).map(|i| ((i * 29) % 83) as f32).collect();
        let all = nms(&b, &s, 0.3, P);
        assert!(all.len() > 20);
        assert_eq!(nms_limit(&b, &s, 0.3, P, 20), all[..20]);
    }

    #[test]
    fn batched_nms_suppresses_within_a_class_only() {
        let b = [[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]];
        assert_eq!(batched_nms(&b, &[0.9, 0.8, 0.7], &[0, 0, 1], 0.5, P), vec![0, 2]);
        assert_eq!(batched_nms(&b, &[0.9, 0.8, 0.95], &[0, 1, 0], 0.5, P), vec![2, 1]);
    }

    #[test]
    fn voting_averages_by_score() {
        let all = [[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0], [50.0, 50.0, 60.0, 60.0]];
        let v = box_voting(&all[..1], &all, &[3.0, 1.0, 5.0], 0.5, P);
        assert_eq!(v[0], [0.5, 0.0, 10.5, 10.0]);
    }
}
