//! The detector: Faster R-CNN on a ResNet "C4" backbone, the paper's Sec. 4.3 design (its
//! appendix, following Faster R-CNN [32]). The layers up to stride 16 (the prefix, a
//! [`Part`]) run on the image and are shared by the RPN ([`RpnHead`]) and the per-region head;
//! each proposal's features are pooled from the prefix's map (RoIPool or RoIAlign, as the
//! [`Preset`] says), then the last stage and global average pooling (the suffix, a [`Part`] over
//! the batch of RoIs) and two sibling layers ([`BoxPredictor`]: K+1 scores, 4(K+1) deltas).
//!
//! This file is the wiring only: the region logic (anchor targets, proposals, RoI sampling,
//! losses, post-processing) is `detect::{rpn, roi_head}`, the layers are the engine's. It knows
//! no data set, file or command line: images come in as NHWC f32 already normalised and resized.

use super::Box4;
use super::preset::{Preset, RoiOp};
use super::roi::{RoI, RoIAlign, RoIPool};
use super::roi_head::{self, Detections};
use super::rpn;
use crate::arch::ArchSpec;
use crate::net::part::{Capacity, Part, PartError, Stages};
use crate::net::predictor::BoxPredictor;
use crate::net::rpn_head::RpnHead;
use crate::net::{BuildError, Freeze};

/// What a detector is: the backbone, the classes (K + 1, background included: class 0), the
/// preset's region logic, what is frozen, and the largest input it is built for.
#[derive(Clone, Debug)]
pub struct DetectorSpec {
    pub arch: ArchSpec,
    /// K + 1: the data's K classes and the background (class 0).
    pub classes: usize,
    pub preset: Preset,
    pub freeze: Freeze,
    /// The largest image (height x width, after resizing) a call may pass; both orientations of
    /// it fit (see [`Part`]).
    pub max_image: (usize, usize),
}

/// Why a detector cannot be built or run.
#[derive(Debug)]
pub enum DetectorError {
    Build(BuildError),
    Part(PartError),
    /// The specification contradicts itself (say which and why).
    Invalid(String),
}

impl std::fmt::Display for DetectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DetectorError::Build(e) => write!(f, "{e}"),
            DetectorError::Part(e) => write!(f, "{e}"),
            DetectorError::Invalid(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for DetectorError {}

impl From<BuildError> for DetectorError {
    fn from(e: BuildError) -> Self {
        DetectorError::Build(e)
    }
}

impl From<PartError> for DetectorError {
    fn from(e: PartError) -> Self {
        DetectorError::Part(e)
    }
}

/// A Faster R-CNN C4 detector with its buffers (built once for [`DetectorSpec::max_image`]).
pub struct FasterRcnn {
    pub spec: DetectorSpec,
    pub prefix: Part,
    pub rpn: RpnHead,
    pub suffix: Part,
    pub predictor: BoxPredictor,
    /// anchors per feature cell
    anchors: usize,
    /// RPN outputs of the last forward: one logit and four deltas per anchor
    logits: Vec<f32>,
    deltas: Vec<f32>,
    /// head outputs of the last forward: K + 1 scores and 4(K + 1) deltas per RoI
    scores: Vec<f32>,
    boxes: Vec<f32>,
    /// RoIPool's argmax (its backward)
    argmax: Vec<u32>,
}

impl FasterRcnn {
    /// A detector of `spec`, He-initialised from `seed` (load weights afterwards by name:
    /// `weights::load_part`), with buffers for training if `train`.
    pub fn new(spec: DetectorSpec, train: bool, seed: u64) -> Result<FasterRcnn, DetectorError> {
        let (h, w) = spec.max_image;
        let p = &spec.preset;
        if spec.classes < 2 {
            return Err(DetectorError::Invalid(format!(
                "a detector needs at least one class besides the background, not {} in all",
                spec.classes
            )));
        }
        let side = h.max(w);
        let prefix = Part::new(
            &spec.arch,
            Stages::c4_prefix(&spec.arch),
            Capacity { n: 1, h: side, w: side },
            spec.freeze,
            train,
            seed,
        )?;
        let stride = side.div_ceil(prefix.plan.map.h.max(1));
        if stride != p.stride {
            return Err(DetectorError::Invalid(format!(
                "the {:?} preset places anchors at stride {}, but the C4 prefix of {} has stride {stride}",
                p.name, p.stride, spec.arch.name
            )));
        }
        let rois = p.rpn.post_nms_top_n_train.max(p.rpn.post_nms_top_n_test) + 64;
        let suffix = Part::new(
            &spec.arch,
            Stages::c4_suffix(&spec.arch),
            Capacity { n: rois, h: p.roi_size, w: p.roi_size },
            spec.freeze,
            train,
            seed,
        )?;
        let anchors = p.cell_anchors().len();
        let m = prefix.plan.map;
        let rpn = RpnHead::new(m.c, anchors, Capacity { n: 1, h: m.h, w: m.w }, train, seed);
        let predictor = BoxPredictor::new(suffix.plan.map.c, spec.classes, seed);
        Ok(FasterRcnn {
            spec,
            prefix,
            rpn,
            suffix,
            predictor,
            anchors,
            logits: vec![],
            deltas: vec![],
            scores: vec![],
            boxes: vec![],
            argmax: vec![],
        })
    }

    /// Detections on one image (NHWC, `h` x `w` x channels, normalised and resized as the
    /// backbone expects), boxes in its pixels: the RPN's test-time proposals, the head's scores
    /// and class-specific boxes, then per-class NMS ([`roi_head::postprocess_detections`]).
    pub fn detect(&mut self, image: &[f32], h: usize, w: usize) -> Result<Detections, DetectorError> {
        let proposals = self.propose(image, h, w, false)?;
        if proposals.is_empty() {
            return Ok(Detections::default());
        }
        self.head_forward(&proposals, false)?;
        let p = &self.spec.preset;
        Ok(roi_head::postprocess_detections(
            &self.scores,
            &self.boxes,
            &proposals,
            self.spec.classes,
            h as f32,
            w as f32,
            &p.head,
        ))
    }

    /// Prefix and RPN head forward on one image, then its proposals (training or test settings).
    pub fn propose(&mut self, image: &[f32], h: usize, w: usize, train: bool) -> Result<Vec<Box4>, DetectorError> {
        let c = self.spec.arch.in_channels;
        if image.len() != h * w * c {
            return Err(DetectorError::Invalid(format!(
                "an image of {h} x {w} x {c} has {} values, not {}",
                h * w * c,
                image.len()
            )));
        }
        self.prefix.input_mut(1, h, w)?.copy_from_slice(image);
        self.prefix.forward(train)?;
        let (fmap, fd) = self.prefix.output();
        let a = self.anchors;
        self.logits.resize(fd.pixels() * a, 0.0);
        self.deltas.resize(fd.pixels() * 4 * a, 0.0);
        self.rpn.forward(fmap, fd, &mut self.logits, &mut self.deltas)?;
        let p = &self.spec.preset;
        let anchors = p.anchors(fd.h, fd.w);
        let params = p.rpn.proposal_params(train, 1.0);
        let props = rpn::proposals(
            &anchors,
            &self.logits,
            &self.deltas,
            &[anchors.len()],
            h as f32,
            w as f32,
            &p.rpn.coder(),
            &params,
        );
        Ok(props.boxes)
    }

    /// RoI features of `rois` (boxes in the image of the last [`FasterRcnn::propose`]), the
    /// suffix and the predictor: scores and deltas per RoI.
    fn head_forward(&mut self, rois: &[Box4], train: bool) -> Result<(), DetectorError> {
        let p = self.spec.preset;
        let (fmap, fd) = self.prefix.output();
        let list: Vec<RoI> = rois.iter().map(|b| RoI { image: 0, bbox: *b }).collect();
        let s = p.roi_size;
        let input = self.suffix.input_mut(list.len(), s, s)?;
        let scale = 1.0 / p.stride as f32;
        match p.roi_op {
            RoiOp::Pool => {
                self.argmax.resize(input.len(), 0);
                RoIPool { out_h: s, out_w: s, spatial_scale: scale }.forward(fmap, fd, &list, input, &mut self.argmax)
            }
            RoiOp::Align { aligned, sampling_ratio } => {
                RoIAlign { out_h: s, out_w: s, spatial_scale: scale, sampling_ratio, aligned }
                    .forward(fmap, fd, &list, input)
            }
        }
        self.suffix.forward(train)?;
        let k = self.spec.classes;
        self.scores.resize(list.len() * k, 0.0);
        self.boxes.resize(list.len() * 4 * k, 0.0);
        self.predictor.forward(self.suffix.output().0, &mut self.scores, &mut self.boxes);
        Ok(())
    }

    /// The RPN's outputs of the last forward: one objectness logit and four deltas per anchor,
    /// anchors in the order `(y * W + x) * A + a`.
    pub fn rpn_outputs(&self) -> (&[f32], &[f32]) {
        (&self.logits, &self.deltas)
    }

    /// The head's outputs of the last forward: K + 1 scores and 4(K + 1) deltas per RoI.
    pub fn head_outputs(&self) -> (&[f32], &[f32]) {
        (&self.scores, &self.boxes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchOptions;
    use crate::testutil::rand_vec;

    fn small() -> DetectorSpec {
        let mut preset = Preset::torchvision();
        preset.rpn.post_nms_top_n_test = 50;
        preset.rpn.post_nms_top_n_train = 50;
        DetectorSpec {
            arch: ArchSpec::parse("resnet18", &ArchOptions::default()).unwrap(),
            classes: 4,
            preset,
            freeze: Freeze { bn: true, at: 2 },
            max_image: (96, 128),
        }
    }

    /// A random-weight detector on a random image: detections well formed (inside the image,
    /// scores above the threshold and in order, labels of real classes, at most the cap), the RPN
    /// outputs as many as its anchors, and the same output twice.
    #[test]
    fn detections_are_well_formed_and_repeatable() {
        let mut d = FasterRcnn::new(small(), false, 3).unwrap();
        let (h, w) = (96, 128);
        let image = rand_vec(h * w * 3, 5);
        let a = d.detect(&image, h, w).unwrap();
        let (logits, deltas) = d.rpn_outputs();
        assert_eq!(logits.len(), (h / 16) * (w / 16) * 15);
        assert_eq!(deltas.len(), 4 * logits.len());
        assert!(a.boxes.len() <= d.spec.preset.head.detections_per_image);
        for ((b, s), l) in a.boxes.iter().zip(&a.scores).zip(&a.labels) {
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w as f32 && b[3] <= h as f32 && b[0] <= b[2] && b[1] <= b[3]);
            assert!(*s > d.spec.preset.head.score_thresh && *s <= 1.0);
            assert!((1..4).contains(l));
        }
        assert!(a.scores.windows(2).all(|p| p[0] >= p[1]));
        assert_eq!(d.detect(&image, h, w).unwrap(), a);
        // the other orientation fits the same buffers
        d.detect(&rand_vec(w * h * 3, 6), w, h).unwrap();
    }

    #[test]
    fn bad_specs_and_inputs_are_refused_by_name() {
        let mut s = small();
        s.classes = 1;
        let e = FasterRcnn::new(s, false, 0).err().unwrap().to_string();
        assert!(e.contains("at least one class besides the background"), "{e}");
        let mut s = small();
        s.arch = ArchSpec::parse("resnet20", &ArchOptions::default()).unwrap();
        let e = FasterRcnn::new(s, false, 0).err().unwrap().to_string();
        assert!(e.contains("stride 16") && e.contains("stride 2"), "{e}");
        let mut d = FasterRcnn::new(small(), false, 0).unwrap();
        let e = d.detect(&[0.0; 10], 96, 128).unwrap_err().to_string();
        assert!(e.contains("96 x 128 x 3"), "{e}");
        let e = d.detect(&rand_vec(200 * 200 * 3, 1), 200, 200).unwrap_err().to_string();
        assert!(e.contains("capacity"), "{e}");
    }
}
