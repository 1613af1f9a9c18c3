//! The COCO evaluator against pycocotools 2.0.11 on 200 seeded random sets (crowd regions, empty
//! images, images with more than 100 detections, categories without ground truth, tied scores):
//! all 12 numbers within 1e-6. The sets are recreated here by the generator of
//! scripts/coco_eval_fixtures.py (same draws, same float64 operations); the fixture holds
//! pycocotools' numbers only (tests/golden/coco_eval.json).

use resnet::data::detection::{DetAnnotation, DetCategory, DetDataset, DetImage, Detection};
use resnet::detect::coco_eval::evaluate;
use resnet::rng::{fnv1a64, splitmix64};

struct Draw {
    base: u64,
    i: u64,
}

impl Draw {
    fn new(name: &str) -> Draw {
        Draw { base: fnv1a64(name), i: 0 }
    }
    fn u(&mut self) -> f64 {
        let z = splitmix64(self.base.wrapping_add(self.i));
        self.i += 1;
        (z >> 40) as f64 / (1u64 << 24) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.u() * n as f64).floor() as usize
    }
    fn quarter(&mut self, x: f64) -> f64 {
        (self.u() * x * 4.0).floor() / 4.0
    }
}

/// scripts/coco_eval_fixtures.py's `make_set`, draw for draw.
fn make_set(s: usize) -> (DetDataset, Vec<Detection>) {
    let mut r = Draw::new(&format!("cocoeval/{s}"));
    let n_images = 1 + r.below(6);
    let n_cats = 1 + r.below(4);
    let cats: Vec<DetCategory> =
        (0..n_cats).map(|k| DetCategory { id: 3 * k as i64 + 1, name: format!("c{k}") }).collect();
    let gt_cats = if s.is_multiple_of(3) && n_cats >= 2 { n_cats - 1 } else { n_cats };
    let (mut images, mut anns, mut dets) = (vec![], vec![], vec![]);
    for i in 0..n_images {
        let img_id = 10 * i as i64 + 7;
        let (w, h) = (64 + r.below(512), 64 + r.below(512));
        images.push(DetImage { id: img_id, file_name: format!("{img_id}.jpg"), width: w as u32, height: h as u32 });
        let n_gt = if r.u() < 0.15 { 0 } else { r.below(8) };
        let mut mine: Vec<DetAnnotation> = vec![];
        for _ in 0..n_gt {
            let bw = 2.0 + r.quarter(w as f64 * 0.6);
            let bh = 2.0 + r.quarter(h as f64 * 0.6);
            let x = r.quarter(w as f64 - bw);
            let y = r.quarter(h as f64 - bh);
            let cat = cats[r.below(gt_cats)].id;
            let area = bw * bh * (0.5 + r.u());
            let crowd = r.u() < 0.1;
            let a = DetAnnotation {
                id: anns.len() as i64 + 1,
                image_id: img_id,
                category_id: cat,
                bbox: [x, y, bw, bh],
                area,
                iscrowd: crowd,
                difficult: false,
            };
            anns.push(a.clone());
            mine.push(a);
        }
        let n_det = if s.is_multiple_of(5) && i == 0 { 130 } else { r.below(12) };
        for _ in 0..n_det {
            let (x, y, bw, bh, cat);
            if !mine.is_empty() && r.u() < 0.6 {
                let g = &mine[r.below(mine.len())];
                let [gx, gy, gw, gh] = g.bbox;
                x = ((gx + (r.u() - 0.5) * gw * 0.4) * 4.0).floor() / 4.0;
                y = ((gy + (r.u() - 0.5) * gh * 0.4) * 4.0).floor() / 4.0;
                bw = (gw * (0.7 + 0.6 * r.u()) * 4.0).floor() / 4.0 + 0.25;
                bh = (gh * (0.7 + 0.6 * r.u()) * 4.0).floor() / 4.0 + 0.25;
                cat = if r.u() < 0.8 { g.category_id } else { cats[r.below(n_cats)].id };
            } else {
                bw = 1.0 + r.quarter(w as f64 * 0.5);
                bh = 1.0 + r.quarter(h as f64 * 0.5);
                x = r.quarter(w as f64 - bw);
                y = r.quarter(h as f64 - bh);
                cat = cats[r.below(n_cats)].id;
            }
            let score = (r.u() * 20.0).floor() / 20.0;
            dets.push(Detection { image_id: img_id, category_id: cat, bbox: [x, y, bw, bh], score });
        }
    }
    if dets.is_empty() {
        dets.push(Detection {
            image_id: images[0].id,
            category_id: cats[0].id,
            bbox: [1.0, 1.0, 5.0, 5.0],
            score: 0.5,
        });
    }
    (DetDataset { images, categories: cats, annotations: anns, ..Default::default() }, dets)
}

#[test]
fn all_twelve_numbers_match_pycocotools_on_200_random_sets() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/coco_eval.json");
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let sets = fixture["stats"].as_array().unwrap();
    assert_eq!(sets.len(), 200);
    let (mut worst, mut over_100, mut crowd, mut no_gt_cat) = (0.0f64, 0, 0, 0);
    for (s, want) in sets.iter().enumerate() {
        let (gt, dets) = make_set(s);
        over_100 += (gt.images.iter().any(|i| dets.iter().filter(|d| d.image_id == i.id).count() > 100)) as usize;
        crowd += gt.annotations.iter().any(|a| a.iscrowd) as usize;
        no_gt_cat += gt.categories.iter().any(|c| gt.annotations.iter().all(|a| a.category_id != c.id)) as usize;
        let ours = evaluate(&gt, &dets).stats;
        for (k, w) in want.as_array().unwrap().iter().enumerate() {
            let err = (ours[k] - w.as_f64().unwrap()).abs();
            worst = worst.max(err);
            assert!(err <= 1e-6, "set {s}, number {k}: ours {:?}\n pycocotools {want}", ours);
        }
    }
    eprintln!("max |ours - pycocotools| = {worst:.1e}");
    // the generator covers what it says
    assert!(over_100 >= 30 && crowd >= 30 && no_gt_cat >= 30, "{over_100} {crowd} {no_gt_cat}");
}
