//! Non-maximum suppression with torchvision's semantics (`csrc/ops/cpu/nms_kernel.cpp`): boxes in
//! a stable descending order of score (equal scores keep the lower index first), a box suppressed
//! iff its IoU with a kept box is greater than the threshold (IoU exactly at it survives); per-class
//! NMS as torchvision's per-class loop; and the box voting of the paper's Appendix B.

use super::{Box4, Convention};

/// Indices (into `boxes`) of the boxes NMS keeps, by descending score.
pub fn nms(boxes: &[Box4], scores: &[f32], iou_threshold: f32, conv: Convention) -> Vec<usize> {
    assert_eq!(boxes.len(), scores.len(), "nms: one score per box");
    let order = descending(scores, (0..boxes.len()).collect());
    nms_ordered(boxes, &order, iou_threshold, conv)
}

/// `idx` sorted by descending score, stable (equal scores in the order of `idx`); NaN scores last.
fn descending(scores: &[f32], mut idx: Vec<usize>) -> Vec<usize> {
    idx.sort_by(|&a, &b| {
        scores[b].partial_cmp(&scores[a]).unwrap_or_else(|| scores[a].is_nan().cmp(&scores[b].is_nan()))
    });
    idx
}

/// Greedy suppression over `order` (already by descending score).
fn nms_ordered(boxes: &[Box4], order: &[usize], iou_threshold: f32, conv: Convention) -> Vec<usize> {
    let areas: Vec<f32> = order.iter().map(|&i| conv.area(&boxes[i])).collect();
    let mut suppressed = vec![false; order.len()];
    let mut keep = Vec::new();
    for a in 0..order.len() {
        if suppressed[a] {
            continue;
        }
        let i = order[a];
        keep.push(i);
        let bi = &boxes[i];
        for b in a + 1..order.len() {
            if suppressed[b] {
                continue;
            }
            let inter = conv.intersection(bi, &boxes[order[b]]);
            let iou = inter / (areas[a] + areas[b] - inter);
            if iou > iou_threshold {
                suppressed[b] = true;
            }
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
        for i in nms_ordered(boxes, members, iou_threshold, conv) {
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
