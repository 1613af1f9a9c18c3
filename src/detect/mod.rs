//! Detection, part 1 (issue 16): what Faster R-CNN (the paper's Sec. 4.3) stands on and what judges it.
//!
//! - `boxes.rs`: IoU, clip, remove-small, the box coder; torchvision's pixel convention (w = x2 - x1)
//!   and py-faster-rcnn's legacy +1 convention as one code path ([`Convention`]).
//! - `anchors.rs`: torchvision's anchor generator and the nine legacy base anchors of Faster R-CNN.
//! - `nms.rs`: NMS, per-class (batched) NMS with torchvision's semantics, box voting.
//! - `roi.rs`: RoIPool and RoIAlign, forward and backward, NHWC, RoIs in parallel.
//! - `rpn.rs`, `roi_head.rs`, `preset.rs` (part 2, issue 18): the RPN's anchor targets, losses and
//!   proposals; the head's RoI sampling, losses and detections; the `paper` / `torchvision` presets.
//! - `matcher.rs`: IoU matcher (thresholds, low-quality matches) and the balanced sampler, drawn from
//!   the counter-based generator (`rng.rs`) so a run is a function of (seed, iteration).
//!
//! - `model.rs` (the detector's wiring), `checkpoint.rs` (its file), `input.rs` (images in),
//!   `run.rs` (`resnet detect`), `data.rs` (a COCO / VOC split as inputs and targets), `train.rs`
//!   (`resnet train-det`: request, configuration, the run).
//!
//! Boxes are `[x1, y1, x2, y2]` in f32 (the engine's type); the evaluators (`eval/`) work in f64 as
//! pycocotools does.

pub mod anchors;
pub mod bench;
pub mod boxes;
pub mod checkpoint;
pub mod coco_eval;
pub mod data;
pub mod evaluate;
pub mod input;
pub mod matcher;
pub mod model;
pub mod nms;
pub mod preset;
pub mod roi;
pub mod roi_head;
pub mod rpn;
pub mod run;
pub mod train;
pub mod voc_eval;

/// A box `[x1, y1, x2, y2]`.
pub type Box4 = [f32; 4];

pub use boxes::Convention;
