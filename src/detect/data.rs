//! A detection data set as the detector trains and is judged on it: a split of a COCO or VOC
//! directory ([`DetSplit::open`]), its classes mapped to the detector's 1..=K, and each image
//! loaded as the detector's input with its ground truth in the input's pixels
//! ([`DetSplit::load`]).
//!
//! **Layouts** (`resnet data fashion-det` writes both at once):
//! - COCO: `DIR/annotations/instances_<split>.json`, images under `DIR/<split>2017/` (COCO's own
//!   layout), else `DIR/JPEGImages/` (fashion-det's), else `DIR/images/`.
//! - PASCAL VOC: `DIR/Annotations/*.xml`, `DIR/ImageSets/Main/<split>.txt`, `DIR/JPEGImages/`.
//!
//! When both are present, COCO's file is read. Classes are the data's categories in id order:
//! class `k` (1..=K) is the `k`-th category, class 0 the background.
//!
//! **What trains**: every box that is not a crowd region (COCO's `iscrowd`; torchvision's and
//! detectron2's rule); VOC's difficult objects train too (the COCO protocol counts them). An
//! image with no such box is skipped by training and counted ([`DetSplit::skipped`]), or with
//! `keep_empty` trains as background only (every sampled anchor and RoI negative). Evaluation
//! runs on every image of the split.

use super::Box4;
use super::checkpoint::DetTransform;
use super::input::{self, DetInput};
use super::model::Target;
use crate::data::detection::{DetDataset, Detection};
use crate::data::{coco, voc};
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One split of a detection data set.
#[derive(Clone, Debug)]
pub struct DetSplit {
    /// the data set's directory and the split's name
    pub root: PathBuf,
    pub split: String,
    /// the annotation file (COCO) or the split list (VOC), for messages
    pub source: PathBuf,
    pub gt: DetDataset,
    /// the folder the images' file names are relative to
    pub images: PathBuf,
    /// the images that train (indices into `gt.images`)
    pub usable: Vec<usize>,
    /// the data's category ids in increasing order: class `k` (1..=K) is `category_ids[k - 1]`
    pub category_ids: Vec<i64>,
    /// the images without a box that were left out of `usable`
    pub skipped: usize,
    /// each image's trainable boxes, `[x, y, w, h]` original pixels, and classes 1..=K
    boxes: Vec<Vec<([f64; 4], usize)>>,
}

/// Where a split's annotations are (see the module doc).
fn locate(root: &Path, split: &str) -> Result<(bool, PathBuf)> {
    if !root.is_dir() {
        bail!("{}: not a directory (a COCO or PASCAL VOC data set directory)", root.display());
    }
    let coco = root.join("annotations").join(format!("instances_{split}.json"));
    if coco.is_file() {
        return Ok((true, coco));
    }
    let list = root.join("ImageSets").join("Main").join(format!("{split}.txt"));
    if root.join("Annotations").is_dir() && list.is_file() {
        return Ok((false, list));
    }
    bail!(
        "{}: no split {split:?} here: neither {} (COCO) nor Annotations/ with {} (PASCAL VOC)",
        root.display(),
        coco.display(),
        list.display()
    )
}

impl DetSplit {
    /// Whether `root` holds the split `split` (either layout).
    pub fn exists(root: &Path, split: &str) -> bool {
        locate(root, split).is_ok()
    }

    /// Read the split `split` of the data set in `root` (COCO or VOC, see the module doc); with
    /// `keep_empty`, images without boxes train as background.
    pub fn open(root: &Path, split: &str, keep_empty: bool) -> Result<DetSplit> {
        let (is_coco, source) = locate(root, split)?;
        let (gt, images) = if is_coco {
            let gt = coco::read_instances(&source)?;
            let images = [format!("{split}2017"), "JPEGImages".into(), "images".into()]
                .iter()
                .map(|d| root.join(d))
                .find(|d| d.is_dir())
                .with_context(|| {
                    format!(
                        "{}: where are its images? none of {split}2017/, JPEGImages/, images/ is in {}",
                        source.display(),
                        root.display()
                    )
                })?;
            (gt, images)
        } else {
            (voc::read_voc(root, split)?, root.join("JPEGImages"))
        };
        if gt.categories.is_empty() {
            bail!("{}: no categories: a detector needs at least one class", source.display());
        }
        let mut cats: Vec<i64> = gt.categories.iter().map(|c| c.id).collect();
        cats.sort_unstable();
        let class_of: HashMap<i64, usize> = cats.iter().enumerate().map(|(k, id)| (*id, k + 1)).collect();
        let index: HashMap<i64, usize> = gt.images.iter().enumerate().map(|(i, im)| (im.id, i)).collect();
        let mut boxes = vec![vec![]; gt.images.len()];
        for a in gt.annotations.iter().filter(|a| !a.iscrowd) {
            // the readers refuse annotations of unknown images and categories
            if let (Some(&i), Some(&k)) = (index.get(&a.image_id), class_of.get(&a.category_id)) {
                boxes[i].push((a.bbox, k));
            }
        }
        let usable: Vec<usize> = (0..gt.images.len()).filter(|&i| keep_empty || !boxes[i].is_empty()).collect();
        let skipped = gt.images.len() - usable.len();
        Ok(DetSplit {
            root: root.to_path_buf(),
            split: split.into(),
            source,
            gt,
            images,
            usable,
            category_ids: cats,
            skipped,
            boxes,
        })
    }

    /// The K class names, in class order (category id order).
    pub fn class_names(&self) -> Vec<String> {
        let mut cats = self.gt.categories.clone();
        cats.sort_by_key(|c| c.id);
        cats.into_iter().map(|c| c.name).collect()
    }

    /// The data's category id of class `k` (1..=K).
    pub fn category_id(&self, k: usize) -> Option<i64> {
        self.category_ids.get(k.checked_sub(1)?).copied()
    }

    /// The image file of image `i` (of `gt.images`).
    pub fn image_path(&self, i: usize) -> PathBuf {
        self.images.join(&self.gt.images[i].file_name)
    }

    /// Image `i` as the detector's input (`transform`, `channels`), its ground truth in the
    /// input's pixels (`[x1, y1, x2, y2]`, scaled by torchvision's `resize_boxes` ratios), mirrored
    /// left-right if `flip`.
    pub fn load(&self, i: usize, transform: &DetTransform, channels: usize, flip: bool) -> Result<(DetInput, Target)> {
        let path = self.image_path(i);
        let (_, mut inp) = input::open(&path, transform, channels)?;
        let im = &self.gt.images[i];
        if (inp.orig_w, inp.orig_h) != (im.width as usize, im.height as usize) {
            bail!(
                "{}: the image is {} x {}, its annotation ({}) says {} x {}",
                path.display(),
                inp.orig_w,
                inp.orig_h,
                self.source.display(),
                im.width,
                im.height
            );
        }
        let (sx, sy) = (inp.w as f64 / inp.orig_w as f64, inp.h as f64 / inp.orig_h as f64);
        let mut target = Target::default();
        for &(b, k) in &self.boxes[i] {
            let bx = [b[0] * sx, b[1] * sy, (b[0] + b[2]) * sx, (b[1] + b[3]) * sy].map(|v| v as f32);
            target.boxes.push(bx);
            target.labels.push(k);
        }
        if flip {
            flip_input(&mut inp, channels);
            let w = inp.w as f32;
            for b in &mut target.boxes {
                *b = [w - b[2], b[1], w - b[0], b[3]];
            }
        }
        Ok((inp, target))
    }

    /// Detections (`[x1, y1, x2, y2]` in image `i`'s original pixels, classes 1..=K) in COCO's
    /// results format.
    pub fn to_results(&self, i: usize, found: impl IntoIterator<Item = (Box4, usize, f32)>) -> Vec<Detection> {
        let image_id = self.gt.images[i].id;
        found
            .into_iter()
            .filter_map(|(b, k, s)| {
                let [x1, y1, x2, y2] = b.map(f64::from);
                Some(Detection {
                    image_id,
                    category_id: self.category_id(k)?,
                    bbox: [x1, y1, x2 - x1, y2 - y1],
                    score: f64::from(s),
                })
            })
            .collect()
    }
}

/// Mirror an NHWC image left-right in place.
fn flip_input(inp: &mut DetInput, c: usize) {
    let w = inp.w;
    for row in inp.data.chunks_exact_mut(w * c) {
        for x in 0..w / 2 {
            for ch in 0..c {
                row.swap(x * c + ch, (w - 1 - x) * c + ch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::detection::{DetAnnotation, DetCategory, DetImage};

    /// A COCO data set of two images (one without boxes) written under a temporary directory.
    fn coco_dir(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("resnet-detdata-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("annotations")).unwrap();
        std::fs::create_dir_all(root.join("JPEGImages")).unwrap();
        let mut img = image::RgbImage::new(40, 20);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        img.save(root.join("JPEGImages/a.png")).unwrap();
        img.save(root.join("JPEGImages/b.png")).unwrap();
        let ds = DetDataset {
            images: vec![
                DetImage { id: 7, file_name: "a.png".into(), width: 40, height: 20 },
                DetImage { id: 9, file_name: "b.png".into(), width: 40, height: 20 },
            ],
            categories: vec![DetCategory { id: 5, name: "five".into() }, DetCategory { id: 2, name: "two".into() }],
            annotations: vec![
                DetAnnotation {
                    id: 1,
                    image_id: 7,
                    category_id: 5,
                    bbox: [4.0, 2.0, 10.0, 6.0],
                    area: 60.0,
                    iscrowd: false,
                    difficult: false,
                },
                DetAnnotation {
                    id: 2,
                    image_id: 7,
                    category_id: 2,
                    bbox: [0.0, 0.0, 40.0, 20.0],
                    area: 800.0,
                    iscrowd: true,
                    difficult: false,
                },
            ],
            ..Default::default()
        };
        std::fs::write(root.join("annotations/instances_train.json"), coco::to_json(&ds)).unwrap();
        root
    }

    fn transform(min: usize, max: usize) -> DetTransform {
        DetTransform { min_size: min, max_size: max, mean: vec![0.0; 3], std: vec![1.0; 3] }
    }

    /// Classes in category-id order, crowd boxes left out, the image without boxes skipped (or kept),
    /// boxes scaled to the resized input and mirrored with it.
    #[test]
    fn a_coco_split_loads_as_detector_inputs() {
        let root = coco_dir("load");
        let s = DetSplit::open(&root, "train", false).unwrap();
        assert_eq!(s.class_names(), ["two", "five"]);
        assert_eq!((s.category_id(1), s.category_id(2), s.category_id(3)), (Some(2), Some(5), None));
        assert_eq!((s.usable.clone(), s.skipped), (vec![0], 1));
        let (inp, t) = s.load(0, &transform(40, 80), 3, false).unwrap();
        assert_eq!((inp.h, inp.w), (40, 80));
        assert_eq!(t, Target { boxes: vec![[8.0, 4.0, 28.0, 16.0]], labels: vec![2] });
        // the red pixel at (0, 0) is resampled near the left edge; flipped, near the right edge
        let (fl, ft) = s.load(0, &transform(40, 80), 3, true).unwrap();
        assert_eq!(ft.boxes, vec![[52.0, 4.0, 72.0, 16.0]]);
        assert_eq!(fl.data[0], inp.data[(80 - 1) * 3]);
        assert!(inp.data[0] > inp.data[(80 - 1) * 3]);
        let kept = DetSplit::open(&root, "train", true).unwrap();
        assert_eq!((kept.usable.clone(), kept.skipped), (vec![0, 1], 0));
        let (_, empty) = kept.load(1, &transform(20, 40), 3, false).unwrap();
        assert!(empty.boxes.is_empty());
        // results in COCO's format, the data's category ids
        let r = s.to_results(0, [([8.0, 4.0, 28.0, 16.0], 2, 0.9)]);
        assert_eq!((r[0].image_id, r[0].category_id, r[0].bbox), (7, 5, [8.0, 4.0, 20.0, 12.0]));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_split_or_image_is_named() {
        let root = coco_dir("missing");
        let e = DetSplit::open(&root, "val", false).unwrap_err().to_string();
        assert!(e.contains("instances_val.json") && e.contains("ImageSets"), "{e}");
        std::fs::remove_file(root.join("JPEGImages/a.png")).unwrap();
        let s = DetSplit::open(&root, "train", false).unwrap();
        let e = format!("{:#}", s.load(0, &transform(20, 40), 3, false).unwrap_err());
        assert!(e.contains("a.png"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
