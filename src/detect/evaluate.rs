//! `resnet eval-det`'s decisions: where the ground truth comes from (a COCO instances file, or a
//! VOC tree and its split), which protocol judges the detections, and the report (numbers, JSON).

use super::coco_eval::{self, CocoEval};
use super::voc_eval::{self, VocEval, VocMetric};
use crate::data::detection::{DetDataset, Detection};
use crate::data::{coco, voc};
use crate::file_error::FileError;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// pycocotools' 12 numbers
    Coco,
    /// VOC2007's 11-point AP at IoU > 0.5
    Voc07,
    /// VOC2010+'s area-under-envelope AP at IoU > 0.5
    Voc,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Coco => "coco",
            Protocol::Voc07 => "voc07",
            Protocol::Voc => "voc",
        }
    }
}

/// The ground truth at `path`: a directory is a VOC tree (split `split`, default `test` where
/// `ImageSets/Main/test.txt` exists, else `val`), a file COCO instances JSON.
pub fn open_ground_truth(path: &Path, split: Option<&str>) -> Result<DetDataset, FileError> {
    if path.is_dir() {
        let split = split.unwrap_or_else(|| if path.join("ImageSets/Main/test.txt").exists() { "test" } else { "val" });
        voc::read_voc(path, split)
    } else {
        coco::read_instances(path)
    }
}

/// Check every image file of the ground truth `ds` read from `path` (see [`open_ground_truth`]):
/// present, a regular file, of the size the annotation says (see
/// [`crate::data::detection::check_images`]). The images are under `images`, by default a VOC
/// tree's `JPEGImages/`, and for a COCO file the `JPEGImages/` beside its folder (the layout of
/// `resnet data fashion-det`: `annotations/instances_val.json` and `JPEGImages/`). Returns the
/// folder and the number of images checked.
pub fn check_ground_truth_images(
    path: &Path,
    ds: &DetDataset,
    images: Option<&Path>,
) -> Result<(std::path::PathBuf, usize), FileError> {
    use crate::data::detection::check_images;
    if path.is_dir() {
        let dir = images.map_or_else(|| path.join("JPEGImages"), Path::to_path_buf);
        let ann = path.join("Annotations");
        let n = check_images(ds, &dir, |i| {
            let stem = ds.images[i].file_name.strip_suffix(".jpg").unwrap_or(&ds.images[i].file_name);
            format!("{}: <size>", ann.join(format!("{stem}.xml")).display())
        })?;
        Ok((dir, n))
    } else {
        let dir = match images {
            Some(d) => d.to_path_buf(),
            None => {
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                match parent.parent() {
                    Some(up) if parent != Path::new(".") => up.join("JPEGImages"),
                    _ => parent.join("..").join("JPEGImages"),
                }
            }
        };
        if !dir.is_dir() {
            return Err(FileError::new(
                &dir,
                None,
                format!("not a directory: where are the images of {}? (give their folder)", path.display()),
            ));
        }
        let n = check_images(ds, &dir, |i| format!("{}: images[{i}]", path.display()))?;
        Ok((dir, n))
    }
}

/// What a protocol found.
#[derive(Clone, Debug)]
pub enum Evaluation {
    Coco(CocoEval),
    Voc(Protocol, VocEval),
}

/// Judge `dets` against `gt`.
pub fn evaluate(gt: &DetDataset, dets: &[Detection], protocol: Protocol) -> Evaluation {
    match protocol {
        Protocol::Coco => Evaluation::Coco(coco_eval::evaluate(gt, dets)),
        Protocol::Voc07 => Evaluation::Voc(protocol, voc_eval::evaluate(gt, dets, VocMetric::ElevenPoint)),
        Protocol::Voc => Evaluation::Voc(protocol, voc_eval::evaluate(gt, dets, VocMetric::Area)),
    }
}

impl Evaluation {
    /// coco: `{"protocol", "stats": [12 numbers in pycocotools' order, fractions], "names": [...]}`;
    /// voc07 / voc: `{"protocol", "map", "ap": {class: AP or null}}`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Evaluation::Coco(e) => json!({"protocol": "coco", "stats": e.stats, "names": coco_eval::NAMES}),
            Evaluation::Voc(p, e) => {
                let ap: serde_json::Map<String, serde_json::Value> =
                    e.ap.iter().map(|(c, a)| (c.clone(), json!(a))).collect();
                json!({"protocol": p.name(), "map": e.map, "ap": ap})
            }
        }
    }

    /// The numbers as lines: pycocotools' summary, or per-class APs and the mean.
    pub fn render(&self) -> String {
        match self {
            Evaluation::Coco(e) => {
                coco_eval::LINES.iter().zip(e.stats).map(|(l, v)| format!(" {l} = {v:.3}\n")).collect()
            }
            Evaluation::Voc(p, e) => {
                let mut s = String::new();
                for (c, a) in &e.ap {
                    match a {
                        Some(a) => s += &format!("{c:>16}  AP {:.4}\n", a),
                        None => s += &format!("{c:>16}  AP -  (no ground truth)\n"),
                    }
                }
                s + &format!("{:>16}  mAP {:.4}  ({}, IoU > 0.5)\n", "", e.map, p.name())
            }
        }
    }
}
