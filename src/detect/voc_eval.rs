//! PASCAL VOC's detection metric, as the devkit's `voc_eval.py` computes it per class: detections in
//! descending order of score (stable here; numpy's quicksort leaves ties open), each taking the
//! ground truth of its image with the largest IoU (+1 pixel areas, on the VOC boxes the `[x, y, w,
//! h]` boxes stand for); a match needs IoU > 0.5 (0.5 exactly is not one); a match with a difficult
//! object counts neither way; a second match with one object is a false positive. AP either as
//! VOC2007's 11-point interpolation (the most precision at recall >= 0, 0.1, ..., 1.0, those
//! thresholds computed as numpy's `arange` does) or VOC2010's area under the precision envelope.
//!
//! A class without any (non-difficult) object has no AP (`None`) and is left out of the mean;
//! crowd regions (COCO ground truth) are treated as difficult.

use crate::data::detection::{DetDataset, Detection};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocMetric {
    /// VOC2007: 11-point interpolated AP.
    ElevenPoint,
    /// VOC2010 and later: area under the precision envelope.
    Area,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VocEval {
    /// Mean AP over the classes that have an AP.
    pub map: f64,
    /// (class name, AP) in category order.
    pub ap: Vec<(String, Option<f64>)>,
}

/// `[x, y, w, h]` -> VOC's inclusive `[xmin, ymin, xmax, ymax]`.
fn voc_box(b: &[f64; 4]) -> [f64; 4] {
    [b[0] + 1.0, b[1] + 1.0, b[0] + b[2], b[1] + b[3]]
}

fn overlap(bb: &[f64; 4], g: &[f64; 4]) -> f64 {
    let iw = (bb[2].min(g[2]) - bb[0].max(g[0]) + 1.0).max(0.0);
    let ih = (bb[3].min(g[3]) - bb[1].max(g[1]) + 1.0).max(0.0);
    let inters = iw * ih;
    let uni = (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0) + (g[2] - g[0] + 1.0) * (g[3] - g[1] + 1.0) - inters;
    inters / uni
}

/// AP from the recall and precision curves (`voc_ap`).
pub fn voc_ap(rec: &[f64], prec: &[f64], metric: VocMetric) -> f64 {
    match metric {
        VocMetric::ElevenPoint => {
            let mut ap = 0.0;
            for i in 0..11 {
                let t = i as f64 * 0.1;
                let p = rec
                    .iter()
                    .zip(prec)
                    .filter(|(r, _)| **r >= t)
                    .map(|(_, p)| *p)
                    .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))));
                ap += p.unwrap_or(0.0) / 11.0;
            }
            ap
        }
        VocMetric::Area => {
            let mrec: Vec<f64> = [0.0].iter().chain(rec).chain(&[1.0]).copied().collect();
            let mut mpre: Vec<f64> = [0.0].iter().chain(prec).chain(&[0.0]).copied().collect();
            for i in (1..mpre.len()).rev() {
                mpre[i - 1] = mpre[i - 1].max(mpre[i]);
            }
            (0..mrec.len() - 1).filter(|&i| mrec[i + 1] != mrec[i]).map(|i| (mrec[i + 1] - mrec[i]) * mpre[i + 1]).sum()
        }
    }
}

/// Evaluate `dets` against `gt` with VOC's rules.
pub fn evaluate(gt: &DetDataset, dets: &[Detection], metric: VocMetric) -> VocEval {
    let mut ap = vec![];
    for cat in &gt.categories {
        // per image: (box, ignored, taken)
        let mut objects: HashMap<i64, Vec<([f64; 4], bool, bool)>> = HashMap::new();
        let mut npos = 0usize;
        for a in gt.annotations.iter().filter(|a| a.category_id == cat.id) {
            let ignored = a.difficult || a.iscrowd;
            npos += !ignored as usize;
            objects.entry(a.image_id).or_default().push((voc_box(&a.bbox), ignored, false));
        }
        if npos == 0 {
            ap.push((cat.name.clone(), None));
            continue;
        }
        let mut mine: Vec<&Detection> = dets.iter().filter(|d| d.category_id == cat.id).collect();
        mine.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(std::cmp::Ordering::Equal));
        let (mut tp, mut fp) = (0.0f64, 0.0f64);
        let (mut rec, mut prec) = (vec![], vec![]);
        for d in mine {
            let bb = voc_box(&d.bbox);
            let mut best: Option<(f64, usize)> = None;
            if let Some(objs) = objects.get(&d.image_id) {
                for (j, o) in objs.iter().enumerate() {
                    let ov = overlap(&bb, &o.0);
                    if best.is_none_or(|(m, _)| ov > m) {
                        best = Some((ov, j));
                    }
                }
            }
            match best {
                Some((ov, j)) if ov > 0.5 => {
                    let o = &mut objects.get_mut(&d.image_id).unwrap()[j];
                    if !o.1 {
                        if !o.2 {
                            tp += 1.0;
                            o.2 = true;
                        } else {
                            fp += 1.0;
                        }
                    }
                }
                _ => fp += 1.0,
            }
            rec.push(tp / npos as f64);
            prec.push(tp / (tp + fp).max(f64::EPSILON));
        }
        ap.push((cat.name.clone(), Some(voc_ap(&rec, &prec, metric))));
    }
    let have: Vec<f64> = ap.iter().filter_map(|(_, a)| *a).collect();
    let map = if have.is_empty() { 0.0 } else { have.iter().sum::<f64>() / have.len() as f64 };
    VocEval { map, ap }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::detection::{DetAnnotation, DetCategory, DetImage};

    /// VOC boxes (inclusive) as `[x, y, w, h]`.
    fn xywh(v: [f64; 4]) -> [f64; 4] {
        [v[0] - 1.0, v[1] - 1.0, v[2] - v[0] + 1.0, v[3] - v[1] + 1.0]
    }

    fn gt(objs: &[(i64, i64, [f64; 4], bool)]) -> DetDataset {
        DetDataset {
            images: (1..=2).map(|id| DetImage { id, file_name: String::new(), width: 500, height: 500 }).collect(),
            categories: vec![DetCategory { id: 1, name: "dog".into() }, DetCategory { id: 2, name: "cat".into() }],
            annotations: objs
                .iter()
                .enumerate()
                .map(|(i, &(img, cat, b, difficult))| DetAnnotation {
                    id: i as i64 + 1,
                    image_id: img,
                    category_id: cat,
                    bbox: xywh(b),
                    area: 0.0,
                    iscrowd: false,
                    difficult,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn det(img: i64, b: [f64; 4], score: f64) -> Detection {
        Detection { image_id: img, category_id: 1, bbox: xywh(b), score }
    }

    /// Worked by hand: TP, duplicate (FP), a difficult match (neither), TP on image 2.
    /// tp = 1 1 1 2, fp = 0 1 1 1 over 2 objects: recall .5 .5 .5 1, precision 1 .5 .5 2/3.
    /// VOC07: recall >= t for t <= .5 gives 1 (6 points), above it 2/3 (5 points): (6 + 10/3) / 11 = 28/33.
    /// Area: envelope 1 up to recall .5, 2/3 to 1: .5 + .5 * 2/3 = 5/6.
    #[test]
    fn hand_worked_difficult_and_duplicates() {
        let g = gt(&[
            (1, 1, [10.0, 10.0, 60.0, 60.0], false),
            (1, 1, [200.0, 200.0, 260.0, 240.0], true),
            (2, 1, [30.0, 30.0, 90.0, 70.0], false),
        ]);
        let d = [
            det(1, [10.0, 10.0, 60.0, 60.0], 0.9),
            det(1, [11.0, 10.0, 60.0, 61.0], 0.8),
            det(1, [200.0, 200.0, 260.0, 240.0], 0.7),
            det(2, [30.0, 30.0, 90.0, 70.0], 0.6),
        ];
        let e = evaluate(&g, &d, VocMetric::ElevenPoint);
        assert!((e.ap[0].1.unwrap() - 28.0 / 33.0).abs() < 1e-12, "{e:?}");
        assert_eq!(e.ap[1], ("cat".to_string(), None));
        assert_eq!(e.map, e.ap[0].1.unwrap());
        let e = evaluate(&g, &d, VocMetric::Area);
        assert!((e.ap[0].1.unwrap() - 5.0 / 6.0).abs() < 1e-12, "{e:?}");
    }

    #[test]
    fn no_detections_and_iou_exactly_one_half() {
        let g = gt(&[(1, 1, [1.0, 1.0, 10.0, 10.0], false)]);
        for m in [VocMetric::ElevenPoint, VocMetric::Area] {
            assert_eq!(evaluate(&g, &[], m).map, 0.0);
            // 10 x 5 inside 10 x 10: IoU 50 / 100 = 0.5, not > 0.5: a false positive
            assert_eq!(evaluate(&g, &[det(1, [1.0, 1.0, 10.0, 5.0], 0.9)], m).map, 0.0);
            // 10 x 6: 0.6
            assert!((evaluate(&g, &[det(1, [1.0, 1.0, 10.0, 6.0], 0.9)], m).map - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn eleven_point_thresholds_as_numpy_arange() {
        // recall 0.3 exactly is below arange's 0.30000000000000004: that point takes the next precision
        let ap = voc_ap(&[0.3, 1.0], &[1.0, 0.5], VocMetric::ElevenPoint);
        assert!((ap - (3.0 * 1.0 + 8.0 * 0.5) / 11.0).abs() < 1e-12, "{ap}");
    }
}
