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
use super::roi_head::{self, Detections, RoiSamples};
use super::rpn::{self, AnchorTargets};
use crate::arch::ArchSpec;
use crate::net::part::{Capacity, Part, PartError, Stages};
use crate::net::predictor::BoxPredictor;
use crate::net::rpn_head::RpnHead;
use crate::net::{BuildError, Freeze};
use crate::optim::Sgd;
use crate::par::SumOrder;

/// What a detector is: the backbone, the classes (K + 1, background included: class 0), the
/// preset's region logic, what is frozen, and the largest input it is built for.
#[derive(Clone, Debug)]
pub struct DetectorSpec {
    pub arch: ArchSpec,
    /// K + 1: the data's K classes and the background (class 0).
    pub classes: usize,
    pub preset: Preset,
    pub freeze: Freeze,
    /// The largest image (height x width, after resizing) a call may pass, in either orientation:
    /// a layer's output of an `h` x `w` input and of a `w` x `h` one have as many values, so the
    /// buffers of one fit the other (a 600 x 1000 capacity takes 1000 x 600 images, not 1000 x
    /// 1000 ones: torchvision's transform never makes those).
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

/// RoIs an inference detector's suffix holds: more go through it in turns ([`FasterRcnn::head_forward`]).
/// Its buffers cost about 3 MB per RoI (ResNet-50's layer4 on 14 x 14); a turn of 100 RoIs still
/// gives the convolutions 4900 rows at 7 x 7.
pub const INFER_ROIS: usize = 100;

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
        p.check_backbone(&spec.arch).map_err(DetectorError::Invalid)?;
        let prefix =
            Part::new(&spec.arch, Stages::c4_prefix(&spec.arch), Capacity { n: 1, h, w }, spec.freeze, train, seed)?;
        // the suffix holds the RoIs one step samples (training: backward needs them at once) or
        // at most INFER_ROIS of one image's test-time proposals (inference, in turns)
        let rois = if train { p.head.batch_per_image } else { p.rpn.post_nms_top_n_test.min(INFER_ROIS) }.max(1);
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
        self.on_pool(|d| d.detect_here(image, h, w))
    }

    /// `pass(self)` on a pool worker, unless a part sums BN statistics with other shards (as
    /// `Net`'s passes: see [`crate::par::on_pool`]).
    fn on_pool<R: Send>(&mut self, pass: impl FnOnce(&mut FasterRcnn) -> R + Send) -> R {
        if self.prefix.syncs_bn() || self.suffix.syncs_bn() { pass(self) } else { crate::par::on_pool(|| pass(self)) }
    }

    /// [`FasterRcnn::detect`] on the calling thread.
    fn detect_here(&mut self, image: &[f32], h: usize, w: usize) -> Result<Detections, DetectorError> {
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
    /// suffix and the predictor: scores and deltas per RoI ([`FasterRcnn::head_outputs`]).
    pub fn head_forward(&mut self, rois: &[Box4], train: bool) -> Result<(), DetectorError> {
        let k = self.spec.classes;
        self.scores.resize(rois.len() * k, 0.0);
        self.boxes.resize(rois.len() * 4 * k, 0.0);
        // at test, more RoIs than the suffix holds go through it in turns (training's RoIs fit:
        // the suffix is built for the sampled RoIs, and backward needs them all at once)
        let chunk = if train { rois.len().max(1) } else { self.suffix.capacity().n.max(1) };
        for (c, part) in rois.chunks(chunk).enumerate() {
            self.head_chunk(part, train, c * chunk)?;
        }
        Ok(())
    }

    /// [`FasterRcnn::head_forward`] of `rois`, the RoIs from `at` on of the whole list.
    fn head_chunk(&mut self, rois: &[Box4], train: bool, at: usize) -> Result<(), DetectorError> {
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
        let (scores, boxes) =
            (&mut self.scores[at * k..][..list.len() * k], &mut self.boxes[at * 4 * k..][..list.len() * 4 * k]);
        self.predictor.forward(self.suffix.output().0, scores, boxes);
        Ok(())
    }

    /// One training step on one image (approximate joint training, as the paper's detector):
    /// [`FasterRcnn::forward_backward`] with samples drawn for `target` from (`seed`,
    /// `iteration`), then an SGD step of every part at `lr` ([`DetOptim`]; the suffix and the
    /// predictor only where RoIs were sampled). Returns the four losses.
    pub fn train_step(
        &mut self,
        image: &[f32],
        (h, w): (usize, usize),
        target: &Target,
        (seed, iteration): (u64, u64),
        optim: &mut DetOptim,
        lr: f32,
    ) -> Result<DetLosses, DetectorError> {
        let sampling = Sampling::Drawn { target, seed, iteration };
        let (losses, head) = self.losses_and_gradients(image, (h, w), sampling)?;
        // the update: every part's own optimizer state
        let (params, grads) = self.prefix.step_operands();
        optim.prefix.step(params, grads, lr);
        let (params, grads) = self.rpn.step_operands();
        optim.rpn.step(params, grads, lr);
        if head {
            let (params, grads) = self.suffix.step_operands();
            optim.suffix.step(params, grads, lr);
            let (params, grads) = self.predictor.step_operands();
            optim.predictor.step(params, grads, lr);
        }
        Ok(losses)
    }

    /// The four losses of one image and every parameter's gradient, left in the parts (read them
    /// by checkpoint name with `checkpoint::gradient`): forward with the RPN's training settings;
    /// the RPN's losses over the sampled anchors; the head's losses over the sampled RoIs;
    /// backward through predictor, suffix, RoI pooling and RPN head into the shared prefix
    /// (proposals and RoIs are constants, as in the paper). No RoIs: the head's losses are 0 and
    /// the suffix's and predictor's gradients zero. Frozen parameters get zero gradients.
    pub fn forward_backward(
        &mut self,
        image: &[f32],
        (h, w): (usize, usize),
        sampling: Sampling,
    ) -> Result<DetLosses, DetectorError> {
        Ok(self.losses_and_gradients(image, (h, w), sampling)?.0)
    }

    /// [`FasterRcnn::forward_backward`], and whether the head ran (any RoIs sampled).
    fn losses_and_gradients(
        &mut self,
        image: &[f32],
        (h, w): (usize, usize),
        sampling: Sampling,
    ) -> Result<(DetLosses, bool), DetectorError> {
        self.on_pool(|d| d.losses_and_gradients_here(image, (h, w), sampling))
    }

    /// [`FasterRcnn::losses_and_gradients`] on the calling thread.
    fn losses_and_gradients_here(
        &mut self,
        image: &[f32],
        (h, w): (usize, usize),
        sampling: Sampling,
    ) -> Result<(DetLosses, bool), DetectorError> {
        if let Sampling::Drawn { target, .. } = sampling
            && target.boxes.len() != target.labels.len()
        {
            return Err(DetectorError::Invalid(format!(
                "a target of {} boxes has {} labels",
                target.boxes.len(),
                target.labels.len()
            )));
        }
        let p = self.spec.preset;
        let k = self.spec.classes;
        let proposals = self.propose(image, h, w, true)?;
        let (drawn_anchors, drawn_rois);
        let (targets, samples) = match sampling {
            Sampling::Drawn { target, seed, iteration } => {
                // anchor targets sampled for the RPN; RoIs sampled from the proposals and the
                // ground truth for the head
                let fd = self.prefix.output().1;
                let anchors = p.anchors(fd.h, fd.w);
                drawn_anchors =
                    rpn::anchor_targets(&anchors, &target.boxes, h as f32, w as f32, &p.rpn, seed, iteration, 0);
                let assignment = roi_head::assign_rois(&proposals, &target.boxes, &target.labels, k, &p.head);
                drawn_rois = assignment.sample(&p.head, seed, iteration, 0);
                (&drawn_anchors, &drawn_rois)
            }
            Sampling::Given { anchors, rois } => {
                self.check_given(anchors, rois)?;
                (anchors, rois)
            }
        };
        let rpn_loss = rpn::rpn_loss(&self.logits, &self.deltas, targets, p.rpn.beta);
        let head = if samples.rois.is_empty() {
            None
        } else {
            self.head_forward(&samples.rois, true)?;
            Some(roi_head::fastrcnn_loss(&self.scores, &self.boxes, samples, k, p.head.beta))
        };
        // backward: predictor -> suffix -> RoI pooling -> the prefix's output gradient, which the
        // RPN head adds to
        let order = SumOrder::Threads;
        let (_, fd) = self.prefix.output();
        match &head {
            Some(hl) => {
                let (feat, dfeat) = self.suffix.output_and_grad_mut();
                self.predictor.backward(feat, &hl.d_scores, &hl.d_deltas, Some(dfeat), order);
                self.suffix.backward()?;
            }
            None => {
                self.suffix.grads_mut().fill(0.0);
                self.predictor.grads_mut().fill(0.0);
            }
        }
        let list: Vec<RoI> = samples.rois.iter().map(|b| RoI { image: 0, bbox: *b }).collect();
        let droi = self.suffix.input_grad().filter(|_| head.is_some()).map(|(g, _)| g);
        let (fmap, dfmap) = self.prefix.output_and_grad_mut();
        match droi {
            Some(droi) => {
                let (s, scale) = (p.roi_size, 1.0 / p.stride as f32);
                match p.roi_op {
                    RoiOp::Pool => RoIPool { out_h: s, out_w: s, spatial_scale: scale }.backward(
                        droi,
                        &self.argmax[..droi.len()],
                        list.len(),
                        dfmap,
                    ),
                    RoiOp::Align { aligned, sampling_ratio } => {
                        RoIAlign { out_h: s, out_w: s, spatial_scale: scale, sampling_ratio, aligned }
                            .backward(droi, fd, &list, dfmap)
                    }
                }
            }
            None => dfmap.fill(0.0),
        }
        self.rpn.backward(fmap, &rpn_loss.d_logits, &rpn_loss.d_deltas, dfmap, order)?;
        self.prefix.backward()?;
        let (classifier, box_reg) = head.as_ref().map_or((0.0, 0.0), |h| (h.classification, h.box_reg));
        let losses = DetLosses { rpn_objectness: rpn_loss.objectness, rpn_box: rpn_loss.box_reg, classifier, box_reg };
        Ok((losses, head.is_some()))
    }

    /// Given samples must fit the last forward: one label and target per anchor, sampled anchors
    /// among them, one class (in `0..K+1`) and target per RoI.
    fn check_given(&self, anchors: &AnchorTargets, rois: &RoiSamples) -> Result<(), DetectorError> {
        let n = self.logits.len();
        let bad = |what: String| Err(DetectorError::Invalid(format!("given samples: {what}")));
        if anchors.labels.len() != n || anchors.regression.len() != n {
            return bad(format!(
                "{} anchor labels and {} regression targets for {n} anchors",
                anchors.labels.len(),
                anchors.regression.len()
            ));
        }
        if let Some(i) = anchors.positives.iter().chain(&anchors.negatives).find(|&&i| i >= n) {
            return bad(format!("sampled anchor {i} of {n}"));
        }
        let r = rois.rois.len();
        if rois.labels.len() != r || rois.regression.len() != r {
            return bad(format!("{r} RoIs with {} labels and {} targets", rois.labels.len(), rois.regression.len()));
        }
        if let Some(l) = rois.labels.iter().find(|&&l| l >= self.spec.classes) {
            return bad(format!("RoI class {l} of a {}-class detector", self.spec.classes));
        }
        Ok(())
    }

    /// Give the frozen BN layers statistics of `images` (NHWC, height, width), standing in for
    /// pre-training's when the backbone has none (a detector trained from scratch with BN frozen
    /// at its initial statistics does not learn): a twin with BN in training mode runs `passes`
    /// times over the images and their training proposals, and its running statistics (momentum
    /// 0.1) replace this detector's. The weights are unchanged.
    pub fn calibrate_bn(&mut self, images: &[(Vec<f32>, usize, usize)], passes: usize) -> Result<(), DetectorError> {
        let mut free = self.spec.clone();
        free.freeze = Freeze { bn: false, at: 0 };
        let mut twin = FasterRcnn::new(free, true, 0)?;
        let copy = |from: &Part, to: &mut Part| -> Result<(), DetectorError> {
            for (name, shape) in from.tensors() {
                let v = from.get_torch(&name).ok_or_else(|| DetectorError::Invalid(format!("no tensor {name}")))?;
                to.set_torch(&name, &shape, &v).map_err(DetectorError::Invalid)?;
            }
            Ok(())
        };
        copy(&self.prefix, &mut twin.prefix)?;
        copy(&self.suffix, &mut twin.suffix)?;
        for (name, shape) in self.rpn.tensors.iter().map(|t| (t.name.clone(), t.shape.clone())) {
            let v = self.rpn.get_torch(&name).ok_or_else(|| DetectorError::Invalid(format!("no tensor {name}")))?;
            twin.rpn.set_torch(&name, &shape, &v).map_err(DetectorError::Invalid)?;
        }
        for _ in 0..passes {
            for (img, h, w) in images {
                let props = twin.propose(img, *h, *w, true)?;
                if !props.is_empty() {
                    let n = props.len().min(twin.suffix.capacity().n);
                    twin.head_forward(&props[..n], true)?;
                }
            }
        }
        copy(&twin.prefix, &mut self.prefix)?;
        copy(&twin.suffix, &mut self.suffix)
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

/// Where the samples of [`FasterRcnn::forward_backward`] come from.
#[derive(Clone, Copy, Debug)]
pub enum Sampling<'a> {
    /// Drawn for `target`: anchor targets ([`rpn::anchor_targets`]) and RoIs matched among the
    /// proposals and the ground truth ([`roi_head::assign_rois`]), both sampled from the counter
    /// streams of (`seed`, `iteration`), image 0.
    Drawn { target: &'a Target, seed: u64, iteration: u64 },
    /// Given: anchor labels and regression targets with the sampled positives and negatives, and
    /// the sampled RoIs with their classes and regression targets, as another implementation drew
    /// them (a golden test replays torchvision's sample).
    Given { anchors: &'a AnchorTargets, rois: &'a RoiSamples },
}

/// One image's ground truth: boxes in its (resized) pixels and their classes in `1..K+1`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Target {
    pub boxes: Vec<Box4>,
    pub labels: Vec<usize>,
}

/// The four losses of a training step (torchvision's names: loss_objectness, loss_rpn_box_reg,
/// loss_classifier, loss_box_reg).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DetLosses {
    pub rpn_objectness: f32,
    pub rpn_box: f32,
    pub classifier: f32,
    pub box_reg: f32,
}

impl DetLosses {
    pub fn total(&self) -> f32 {
        self.rpn_objectness + self.rpn_box + self.classifier + self.box_reg
    }
}

/// SGD state for each part of a detector, with the frozen ranges masked (weight decay leaves
/// them alone too).
pub struct DetOptim {
    pub prefix: Sgd,
    pub rpn: Sgd,
    pub suffix: Sgd,
    pub predictor: Sgd,
}

impl DetOptim {
    pub fn new(d: &FasterRcnn, momentum: f32, weight_decay: f32) -> DetOptim {
        let sgd = |n: usize, trainable: Option<Vec<std::ops::Range<usize>>>| {
            let mut s = Sgd::new(n);
            (s.momentum, s.weight_decay, s.trainable) = (momentum, weight_decay, trainable);
            s
        };
        DetOptim {
            prefix: sgd(d.prefix.params().len(), Some(d.prefix.plan.trainable())),
            rpn: sgd(d.rpn.params().len(), None),
            suffix: sgd(d.suffix.params().len(), Some(d.suffix.plan.trainable())),
            predictor: sgd(d.predictor.params().len(), None),
        }
    }

    /// Each part's momentum buffer, by part name (prefix, rpn, suffix, predictor).
    pub fn velocities(&self) -> [(&'static str, &[f32]); 4] {
        [
            ("prefix", &self.prefix.velocity),
            ("rpn", &self.rpn.velocity),
            ("suffix", &self.suffix.velocity),
            ("predictor", &self.predictor.velocity),
        ]
    }

    pub fn velocities_mut(&mut self) -> [(&'static str, &mut [f32]); 4] {
        [
            ("prefix", &mut self.prefix.velocity),
            ("rpn", &mut self.rpn.velocity),
            ("suffix", &mut self.suffix.velocity),
            ("predictor", &mut self.predictor.velocity),
        ]
    }
}

/// A small detector for tests: ResNet-18, 4 classes (background included), images up to 96 x
/// 128, 50 proposals, BN and the stem + layer1 frozen.
#[cfg(test)]
pub(crate) fn test_spec() -> DetectorSpec {
    let mut preset = Preset::torchvision();
    preset.rpn.post_nms_top_n_test = 50;
    preset.rpn.post_nms_top_n_train = 50;
    DetectorSpec {
        arch: ArchSpec::parse("resnet18", &crate::arch::ArchOptions::default()).unwrap(),
        classes: 4,
        preset,
        freeze: Freeze { bn: true, at: 2 },
        max_image: (96, 128),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchOptions;
    use crate::testutil::rand_vec;

    fn small() -> DetectorSpec {
        test_spec()
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

    /// An inference detector's suffix holds INFER_ROIS RoIs (its buffers cost about 3 MB per RoI
    /// on ResNet-50): more go through it in turns, with the outputs of one pass of them all (a
    /// training detector's suffix holds them at once).
    #[test]
    fn test_time_rois_beyond_the_suffix_go_in_turns() {
        let mut spec = small();
        spec.preset.rpn.post_nms_top_n_test = 3 * INFER_ROIS;
        let (mut infer, mut train) =
            (FasterRcnn::new(spec.clone(), false, 3).unwrap(), FasterRcnn::new(spec, true, 3).unwrap());
        assert_eq!((infer.suffix.capacity().n, train.suffix.capacity().n), (INFER_ROIS, 512));
        let (h, w) = (96, 128);
        let image = rand_vec(h * w * 3, 5);
        let rois: Vec<Box4> = (0..2 * INFER_ROIS + 37)
            .map(|i| {
                let (x, y) = ((i * 7 % 90) as f32, (i * 5 % 60) as f32);
                [x, y, x + 8.0 + (i % 29) as f32, y + 6.0 + (i % 31) as f32]
            })
            .collect();
        for d in [&mut infer, &mut train] {
            d.propose(&image, h, w, false).unwrap();
            d.head_forward(&rois, false).unwrap();
        }
        let ((s1, b1), (s2, b2)) = (infer.head_outputs(), train.head_outputs());
        assert_eq!((s1.len(), b1.len()), (rois.len() * 4, rois.len() * 16));
        for (a, b) in [(s1, s2), (b1, b2)] {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(worst <= 1e-5 * scale.max(1.0), "in turns vs at once: {worst} of {scale}");
        }
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

    /// Bad input the data can bring (issue 18): an image without boxes trains as background only
    /// (RPN and head losses from negatives, no box losses), and an image of one pixel's height
    /// (an extreme aspect ratio after the max-size cap), or smaller than every anchor, detects and
    /// trains without a panic.
    #[test]
    fn empty_targets_and_tiny_images_train_and_detect() {
        let mut d = FasterRcnn::new(narrow(), true, 2).unwrap();
        let mut opt = DetOptim::new(&d, 0.9, 1e-4);
        let img = rand_vec(64 * 96 * 3, 9);
        let l = d.train_step(&img, (64, 96), &Target::default(), (0, 0), &mut opt, 0.001).unwrap();
        assert!(l.rpn_objectness > 0.0 && l.classifier > 0.0, "{l:?}");
        assert_eq!((l.rpn_box, l.box_reg), (0.0, 0.0), "{l:?}");
        for (h, w) in [(1, 96), (96, 1), (3, 5)] {
            let img = rand_vec(h * w * 3, 10);
            let t = Target { boxes: vec![[0.0, 0.0, w as f32, h as f32]], labels: vec![1] };
            let l = d.train_step(&img, (h, w), &t, (0, 1), &mut opt, 0.001).unwrap();
            assert!(l.total().is_finite(), "{h} x {w}: {l:?}");
            let det = d.detect(&img, h, w).unwrap();
            assert!(det.boxes.iter().all(|b| b[2] <= w as f32 && b[3] <= h as f32), "{h} x {w}");
        }
    }

    /// A narrow ResNet-18 detector (widths 8..64) for training tests: few RoIs and anchors sampled.
    fn narrow() -> DetectorSpec {
        let mut s = small();
        for (st, w) in s.arch.stages.iter_mut().zip([8, 16, 32, 64]) {
            st.width = w;
        }
        s.freeze = Freeze { bn: true, at: 0 };
        s.preset.rpn.batch_per_image = 64;
        s.preset.head.batch_per_image = 32;
        s.preset.anchor_sizes = &[16.0, 32.0, 64.0];
        s.max_image = (64, 96);
        s
    }

    /// Images of noise with one bright rectangle of class 1 or a dark one of class 2.
    fn toy(i: usize) -> (Vec<f32>, Target) {
        let (h, w) = (64, 96);
        let mut img: Vec<f32> = rand_vec(h * w * 3, 100 + i as u64).iter().map(|v| 0.3 * v).collect();
        let (x0, y0) = (8 + 13 * (i % 4), 6 + 9 * (i % 3));
        let (bw, bh) = (24 + 4 * (i % 3), 20 + 3 * (i % 2));
        let class = 1 + i % 2;
        for y in y0..y0 + bh {
            for x in x0..x0 + bw {
                for c in 0..3 {
                    img[(y * w + x) * 3 + c] = if class == 1 { 1.5 } else { -1.5 };
                }
            }
        }
        let b = [x0 as f32, y0 as f32, (x0 + bw) as f32, (y0 + bh) as f32];
        (img, Target { boxes: vec![b], labels: vec![class] })
    }

    /// Training reduces the four losses on a handful of images and the detector then finds the
    /// objects it was trained on, with their classes.
    /// A detector whose frozen BN holds statistics of `data` (standing in for pre-training: a
    /// twin with BN in training mode runs forward over the images and the proposals, and its
    /// running statistics are copied over by name).
    fn calibrated(spec: DetectorSpec, data: &[(Vec<f32>, Target)]) -> FasterRcnn {
        let mut d = FasterRcnn::new(spec, true, 1).unwrap();
        let images: Vec<_> = data.iter().map(|(img, _)| (img.clone(), 64, 96)).collect();
        d.calibrate_bn(&images, 30).unwrap();
        d
    }

    /// The BN tensors of a part (gamma, beta, running statistics), by name.
    fn bn_tensors(p: &Part) -> Vec<(String, Vec<f32>)> {
        let bn = |n: &str| n.contains(".bn") || n.starts_with("bn") || n.contains("downsample.1");
        p.tensors().into_iter().filter(|(n, _)| bn(n)).map(|(n, _)| (n.clone(), p.get_torch(&n).unwrap())).collect()
    }

    /// Samples given are trained on as drawn ones: [`FasterRcnn::forward_backward`] with the
    /// samples [`Sampling::Drawn`] draws gives the same losses and gradients, bit for bit; no RoIs
    /// give zero head losses and gradients; samples that do not fit are refused by name.
    #[test]
    fn given_samples_train_as_drawn_ones() {
        let (img, t) = toy(0);
        let (mut a, mut b) = (FasterRcnn::new(narrow(), true, 1).unwrap(), FasterRcnn::new(narrow(), true, 1).unwrap());
        let drawn = a.forward_backward(&img, (64, 96), Sampling::Drawn { target: &t, seed: 3, iteration: 7 }).unwrap();
        let p = b.spec.preset;
        let props = b.propose(&img, 64, 96, true).unwrap();
        let fd = b.prefix.output().1;
        let anchors = rpn::anchor_targets(&p.anchors(fd.h, fd.w), &t.boxes, 64.0, 96.0, &p.rpn, 3, 7, 0);
        let assignment = roi_head::assign_rois(&props, &t.boxes, &t.labels, b.spec.classes, &p.head);
        let rois = assignment.sample(&p.head, 3, 7, 0);
        let given = Sampling::Given { anchors: &anchors, rois: &rois };
        assert_eq!(b.forward_backward(&img, (64, 96), given).unwrap(), drawn);
        assert!(a.prefix.grads() == b.prefix.grads() && a.rpn.grads() == b.rpn.grads());
        assert!(a.suffix.grads() == b.suffix.grads() && a.predictor.grads() == b.predictor.grads());
        assert!(b.suffix.grads().iter().any(|g| *g != 0.0) && drawn.classifier > 0.0);
        let none = RoiSamples::default();
        let l = b.forward_backward(&img, (64, 96), Sampling::Given { anchors: &anchors, rois: &none }).unwrap();
        assert_eq!(
            (l.rpn_objectness, l.rpn_box, l.classifier, l.box_reg),
            (drawn.rpn_objectness, drawn.rpn_box, 0.0, 0.0)
        );
        assert!(b.suffix.grads().iter().chain(b.predictor.grads()).all(|g| *g == 0.0));
        let mut short = anchors.clone();
        short.labels.pop();
        let e = b.forward_backward(&img, (64, 96), Sampling::Given { anchors: &short, rois: &rois }).unwrap_err();
        assert!(e.to_string().contains("anchor labels"), "{e}");
        let mut bad = rois.clone();
        bad.labels[0] = 9;
        let e = b.forward_backward(&img, (64, 96), Sampling::Given { anchors: &anchors, rois: &bad }).unwrap_err();
        assert!(e.to_string().contains("RoI class 9"), "{e}");
    }

    /// Training on six images (momentum SGD at 0.005, 600 steps, BN frozen with statistics of the
    /// data) cuts the four losses to under half, leaves every BN tensor bit-identical, and the
    /// detector then finds at least five of the six objects it was trained on, with their
    /// classes (score > 0.5, IoU > 0.5). Measured: losses 11.8 -> 1.7 (first and last six steps),
    /// all six found at scores 0.71-0.97.
    #[test]
    fn training_steps_fit_a_few_images() {
        let data: Vec<_> = (0..6).map(toy).collect();
        let mut d = calibrated(narrow(), &data);
        let bn_before = (bn_tensors(&d.prefix), bn_tensors(&d.suffix));
        assert!(bn_before.0.len() >= 4 * 5 && !bn_before.1.is_empty());
        let mut opt = DetOptim::new(&d, 0.9, 1e-4);
        let (mut first, mut last) = (0.0, 0.0);
        for it in 0..600u64 {
            let (img, t) = &data[it as usize % data.len()];
            let l = d.train_step(img, (64, 96), t, (0, it), &mut opt, 0.005).unwrap();
            assert!(l.total().is_finite(), "step {it}: {l:?}");
            if it < 6 {
                first += l.total();
            }
            if it >= 594 {
                last += l.total();
            }
        }
        eprintln!("losses: first 6 steps {first:.3}, last 6 {last:.3}");
        assert!(last < 0.5 * first, "the losses did not fall: {first} -> {last}");
        assert!((bn_tensors(&d.prefix), bn_tensors(&d.suffix)) == bn_before, "a frozen BN tensor moved");
        let mut found = 0;
        for (img, t) in &data {
            let det = d.detect(img, 64, 96).unwrap();
            let hit = det.boxes.iter().zip(&det.labels).zip(&det.scores).any(|((b, l), s)| {
                *l == t.labels[0] && *s > 0.5 && crate::detect::Convention::Pixel.iou(b, &t.boxes[0]) > 0.5
            });
            found += usize::from(hit);
        }
        assert!(found >= 5, "found {found} of 6 training objects");
    }
}
