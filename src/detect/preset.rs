//! The two detector presets people compare against, as data: `paper` (He et al. Sec. 4.3 and
//! Appendix A, which take Faster R-CNN [32] and its py-faster-rcnn implementation as they are) and
//! `torchvision` (its `FasterRCNN` defaults for the same C4 model). The RPN's and the head's numbers
//! live in [`RpnConfig`] and [`HeadConfig`], each documented with its source; this adds the anchors,
//! the image scale and the RoI operator.
//!
//! **The backbone decides the stride.** Anchors sit at the stride of the C4 prefix ([`c4_stride`]):
//! 16 for the ImageNet family (the 7x7/2 stem, the 3x3/2 pool and two stride-2 stages), where both
//! presets apply as their sources give them, and 2 for the CIFAR family (a stride-1 stem and the
//! first two stages, the second strided), whose images are small. [`Preset::for_backbone`] resolves
//! a preset once for a backbone: unchanged at stride 16; otherwise adapted to small images
//! ([`Preset::small_images`]: the backbone's stride, anchors 8-64 px, 128-px images), every other
//! number (RPN, head, RoI operator and size) the named preset's. A checkpoint records the result as
//! overrides of the named preset, so it reloads as it was built. A stride that contradicts the
//! backbone is refused by name ([`Preset::check_backbone`], which `FasterRcnn::new` and the
//! checkpoint reader call).

use super::anchors::base_anchors;
use super::roi_head::HeadConfig;
use super::rpn::RpnConfig;
use super::{Box4, Convention};
use crate::arch::ArchSpec;

/// Which preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresetName {
    Paper,
    Torchvision,
}

/// The RoI feature operator in front of the per-region layers.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoiOp {
    /// Fast R-CNN's max pooling (`roi_pool`).
    Pool,
    /// RoIAlign (`roi_align`) with its `aligned` flag and `sampling_ratio` (<= 0: adaptive).
    Align { aligned: bool, sampling_ratio: i32 },
}

/// Everything a detector's region logic needs to be set up one way or the other.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preset {
    pub name: PresetName,
    pub rpn: RpnConfig,
    pub head: HeadConfig,
    /// Anchor sizes (square roots of areas, pixels) and aspect ratios (h / w) at the C4 stride.
    pub anchor_sizes: &'static [f32],
    pub aspect_ratios: &'static [f32],
    /// true: py-faster-rcnn's `generate_anchors` (+1 convention, base 16, rounded ratios;
    /// [`super::anchors::faster_rcnn_anchors`]); false: torchvision's `AnchorGenerator` ([`base_anchors`]).
    pub legacy_anchors: bool,
    /// Feature stride of the shared layers (conv4_x: 16).
    pub stride: usize,
    /// Shorter image side after resizing, and the cap on the longer side.
    pub image_min_size: usize,
    pub image_max_size: usize,
    pub roi_op: RoiOp,
    /// RoI output size (square). Not fixed by the paper; 14 as Detectron2's C4
    /// (`ROI_BOX_HEAD.POOLER_RESOLUTION 14`, res5 at stride 2 then gives 7 x 7).
    pub roi_size: usize,
}

impl Preset {
    /// The paper: anchors 128^2, 256^2, 512^2 x ratios 1:2, 1:1, 2:1 ([32] Sec. 3.1.1;
    /// `generate_anchors.py` scales 8, 16, 32 of base 16), images scaled to 600 (max 1000;
    /// `TRAIN.SCALES`, `MAX_SIZE`; the paper's Appendix A "single-scale ... s = 600"), RoIPool (the
    /// paper: "RoI pooling"), the RPN and head of [`RpnConfig::paper`] / [`HeadConfig::paper`].
    pub fn paper() -> Preset {
        Preset {
            name: PresetName::Paper,
            rpn: RpnConfig::paper(),
            head: HeadConfig::paper(),
            anchor_sizes: &[128.0, 256.0, 512.0],
            aspect_ratios: &[0.5, 1.0, 2.0],
            legacy_anchors: true,
            stride: 16,
            image_min_size: 600,
            image_max_size: 1000,
            roi_op: RoiOp::Pool,
            roi_size: 14,
        }
    }

    /// torchvision: a C4 `FasterRCNN` needs its own one-level anchor generator; the one in its
    /// documentation (`faster_rcnn.py`, the `FasterRCNN` docstring) is sizes (32, 64, 128, 256,
    /// 512) x ratios (0.5, 1.0, 2.0), 15 anchors; `GeneralizedRCNNTransform(min_size=800,
    /// max_size=1333)`; `box_roi_pool` a `MultiScaleRoIAlign` (`aligned=False`, `sampling_ratio=2`).
    pub fn torchvision() -> Preset {
        Preset {
            name: PresetName::Torchvision,
            rpn: RpnConfig::torchvision(),
            head: HeadConfig::torchvision(),
            anchor_sizes: &[32.0, 64.0, 128.0, 256.0, 512.0],
            aspect_ratios: &[0.5, 1.0, 2.0],
            legacy_anchors: false,
            stride: 16,
            image_min_size: 800,
            image_max_size: 1333,
            roi_op: RoiOp::Align { aligned: false, sampling_ratio: 2 },
            roi_size: 14,
        }
    }

    pub fn by_name(name: PresetName) -> Preset {
        match name {
            PresetName::Paper => Preset::paper(),
            PresetName::Torchvision => Preset::torchvision(),
        }
    }

    /// The named preset resolved once for `arch`'s C4 prefix: unchanged where that has the
    /// preset's stride (16: the ImageNet family), else [`Preset::small_images`] at the backbone's
    /// stride (the CIFAR family: 2).
    pub fn for_backbone(name: PresetName, arch: &ArchSpec) -> Preset {
        let p = Preset::by_name(name);
        let stride = c4_stride(arch);
        if stride == p.stride { p } else { p.small_images(stride) }
    }

    /// This preset adapted to small images (the CIFAR family's detector: 128 x 128 canvases with
    /// objects of 16-64 px) on a backbone of C4 stride `stride`: anchors at that stride, of sizes
    /// 8, 16, 32, 64 (the smallest a quarter of a 32-px CIFAR image, the largest half the canvas)
    /// at the preset's aspect ratios, images scaled to a shorter side of 128 and a longer side of
    /// at most 213 (torchvision's 800 : 1333). The RoI size stays (14: the last stage's stride-2
    /// first block then gives 7 x 7, as on ImageNet), and so do the RPN's and the head's numbers
    /// but one: the RPN's smallest proposal is at most the stride (py-faster-rcnn's `RPN_MIN_SIZE
    /// 16` is its feature stride; at 16 px it would drop every proposal of the 8-px anchors;
    /// torchvision's 1e-3 stays).
    pub fn small_images(self, stride: usize) -> Preset {
        let mut rpn = self.rpn;
        rpn.min_size = rpn.min_size.min(stride as f32);
        Preset { rpn, anchor_sizes: &[8.0, 16.0, 32.0, 64.0], stride, image_min_size: 128, image_max_size: 213, ..self }
    }

    /// Whether anchors at this preset's stride fit `arch`'s C4 prefix; the error says both
    /// strides and where the right preset comes from.
    pub fn check_backbone(&self, arch: &ArchSpec) -> Result<(), String> {
        let have = c4_stride(arch);
        if self.stride == have {
            return Ok(());
        }
        let name = super::checkpoint::preset_name(self.name);
        Err(format!(
            "the {name} preset places anchors at stride {}, but the C4 prefix of {} ({}) has stride {have}: \
             anchors must sit at the backbone's stride (Preset::for_backbone resolves the {name} preset for {})",
            self.stride,
            arch.name,
            c4_layers(arch),
            arch.name
        ))
    }

    /// The anchors of one feature cell at the origin, in the order of the A objectness channels.
    /// Legacy anchors keep py-faster-rcnn's 16-px reference window (its rounding of the ratios)
    /// and are centred as it centres them on `base_size = feat_stride`, at `(stride - 1) / 2`:
    /// at stride 16 exactly `generate_anchors`.
    pub fn cell_anchors(&self) -> Vec<Box4> {
        if self.legacy_anchors {
            let scales: Vec<f32> = self.anchor_sizes.iter().map(|s| s / 16.0).collect();
            let shift = (self.stride as f32 - 16.0) / 2.0;
            let mut a = super::anchors::legacy_anchors(16.0, self.aspect_ratios, &scales);
            for b in &mut a {
                *b = b.map(|v| v + shift);
            }
            a
        } else {
            base_anchors(self.anchor_sizes, self.aspect_ratios)
        }
    }

    /// Every anchor of a `feature_h x feature_w` map at this preset's stride, in the RPN head's
    /// order (`(y * W + x) * A + a`; py-faster-rcnn's `shift_x = arange(W) * feat_stride`, and
    /// torchvision's `AnchorGenerator`, whose stride is `padded image size // feature size`: 16
    /// exactly when the batch is padded to a multiple of 16, as its `size_divisible = 32` does).
    pub fn anchors(&self, feature_h: usize, feature_w: usize) -> Vec<Box4> {
        let s = self.stride as f32;
        super::anchors::grid_anchors(&self.cell_anchors(), feature_h, feature_w, s, s)
    }

    /// The convention both halves use.
    pub fn convention(&self) -> Convention {
        self.rpn.conv
    }
}

/// The feature stride of `arch`'s C4 prefix (`Stages::c4_prefix`: the stem and every stage but
/// the last): the stem's stride (and its max pool's, 2) times each of those stages'.
pub fn c4_stride(arch: &ArchSpec) -> usize {
    let (_, stem, _, _) = arch.stem();
    let pool = if arch.has_maxpool() { 2 } else { 1 };
    let stages = arch.stages.len().saturating_sub(1);
    stem * pool * arch.stages[..stages].iter().map(|s| s.stride).product::<usize>()
}

/// The layers of `arch`'s C4 prefix in words ("conv1 .. layer3").
fn c4_layers(arch: &ArchSpec) -> String {
    match arch.stages.len() {
        0 | 1 => "the stem".into(),
        n => format!("conv1 .. layer{}", n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchOptions;
    use crate::detect::model::{DetOptim, DetectorSpec, FasterRcnn, Target};
    use crate::net::Freeze;
    use crate::testutil::rand_vec;

    fn arch(name: &str) -> ArchSpec {
        ArchSpec::parse(name, &ArchOptions::default()).unwrap()
    }

    /// ImageNet backbones keep both presets as they are; CIFAR ones get stride 2 and small
    /// anchors, the rest of the preset untouched; a contradicting stride is refused by name.
    #[test]
    fn presets_resolve_for_the_backbone() {
        for name in ["resnet18", "resnet50", "plain34", "resnet152"] {
            assert_eq!(c4_stride(&arch(name)), 16, "{name}");
            for p in [PresetName::Paper, PresetName::Torchvision] {
                assert_eq!(Preset::for_backbone(p, &arch(name)), Preset::by_name(p));
            }
        }
        for name in ["resnet20", "plain20", "resnet56", "resnet110"] {
            assert_eq!(c4_stride(&arch(name)), 2, "{name}");
            for p in [PresetName::Paper, PresetName::Torchvision] {
                let r = Preset::for_backbone(p, &arch(name));
                let base = Preset::by_name(p);
                assert_eq!((r.stride, r.anchor_sizes, r.image_min_size), (2, &[8.0, 16.0, 32.0, 64.0][..], 128));
                assert_eq!(
                    (r.head, r.roi_op, r.roi_size, r.aspect_ratios),
                    (base.head, base.roi_op, 14, base.aspect_ratios)
                );
                assert_eq!(r.rpn.min_size, if p == PresetName::Paper { 2.0 } else { 1e-3 });
                assert_eq!(RpnConfig { min_size: base.rpn.min_size, ..r.rpn }, base.rpn);
                assert!(r.check_backbone(&arch(name)).is_ok());
            }
        }
        let e = Preset::torchvision().check_backbone(&arch("resnet20")).unwrap_err();
        assert!(e.contains("stride 16") && e.contains("resnet20 (conv1 .. layer2) has stride 2"), "{e}");
        let mut p = Preset::for_backbone(PresetName::Paper, &arch("resnet50"));
        p.stride = 8;
        let e = p.check_backbone(&arch("resnet50")).unwrap_err();
        assert!(e.contains("paper preset places anchors at stride 8") && e.contains("stride 16"), "{e}");
        // legacy anchors at stride 2: the 16-px window's shapes, centred on the cell's centre 0.5
        let small = Preset::paper().small_images(2).cell_anchors();
        let big = Preset { anchor_sizes: &[8.0, 16.0, 32.0, 64.0], ..Preset::paper() }.cell_anchors();
        for (s, b) in small.iter().zip(&big) {
            assert_eq!(*s, b.map(|v| v - 7.0));
            assert_eq!((s[0] + s[2]) / 2.0, 0.5);
        }
    }

    #[test]
    fn presets_are_consistent() {
        for p in [Preset::paper(), Preset::torchvision()] {
            assert_eq!(p.rpn.conv, p.head.conv);
            assert_eq!(p.cell_anchors().len(), p.anchor_sizes.len() * p.aspect_ratios.len());
            assert_eq!(Preset::by_name(p.name), p);
        }
        assert_eq!(Preset::paper().cell_anchors(), crate::detect::anchors::faster_rcnn_anchors());
        assert_eq!(Preset::torchvision().cell_anchors().len(), 15);
        let a = Preset::paper().anchors(2, 3);
        assert_eq!(a.len(), 2 * 3 * 9);
        // cell (1, 2), anchor 4 (ratio 1, scale 16): the legacy [-120, -120, 135, 135] shifted by (32, 16)
        assert_eq!(a[(3 + 2) * 9 + 4], [-88.0, -104.0, 167.0, 151.0]);
        assert_eq!(Preset::paper().rpn.proposal_params(false, 1.6).min_size, 25.6);
        assert_eq!(Preset::paper().rpn.proposal_params(false, 1.6).post_nms_top_n, 300);
        assert_eq!(Preset::torchvision().rpn.proposal_params(true, 1.6).min_size, 1e-3);
    }

    /// The CIFAR-family detector of issue 18: resnet20 (3 input channels) C4, its preset resolved
    /// for the backbone (stride 2), 128 x 128 images.
    pub(crate) fn cifar_spec(name: &str) -> DetectorSpec {
        let arch = arch(name);
        let mut preset = Preset::for_backbone(PresetName::Torchvision, &arch);
        preset.rpn.post_nms_top_n_train = 200;
        preset.rpn.post_nms_top_n_test = 100;
        preset.head.batch_per_image = 64;
        DetectorSpec { arch, classes: 3, preset, freeze: Freeze { bn: true, at: 0 }, max_image: (128, 128) }
    }

    /// Noise with one bright 32 x 40 rectangle of class 1.
    fn toy() -> (Vec<f32>, Target) {
        let (h, w) = (128, 128);
        let mut img: Vec<f32> = rand_vec(h * w * 3, 7).iter().map(|v| 0.3 * v).collect();
        let (x0, y0, bw, bh) = (40, 30, 40, 32);
        for y in y0..y0 + bh {
            for x in x0..x0 + bw {
                img[(y * w + x) * 3..][..3].fill(1.5);
            }
        }
        let b = [x0 as f32, y0 as f32, (x0 + bw) as f32, (y0 + bh) as f32];
        (img, Target { boxes: vec![b], labels: vec![1] })
    }

    /// A resnet20 and a plain20 detector build (a stride-2 feature map of 64 x 64 cells, 12
    /// anchors each), detect on a 128 x 128 image (boxes inside it, repeatable), and 40 training
    /// steps on one toy image (momentum SGD at 0.003) reduce the loss: measured 1.84 at the first
    /// step, 0.71 at the last, the last five summing to 0.43 of the first five.
    #[test]
    fn the_cifar_family_detector_builds_detects_and_trains() {
        let mut d = FasterRcnn::new(cifar_spec("plain20"), false, 1).unwrap();
        d.detect(&rand_vec(128 * 128 * 3, 1), 128, 128).unwrap();
        let (img, t) = toy();
        let mut d = FasterRcnn::new(cifar_spec("resnet20"), true, 1).unwrap();
        let a = d.detect(&img, 128, 128).unwrap();
        assert_eq!(d.rpn_outputs().0.len(), 64 * 64 * 12);
        assert_eq!(d.prefix.output().1.c, 32);
        for b in &a.boxes {
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 128.0 && b[3] <= 128.0, "{b:?}");
        }
        assert_eq!(d.detect(&img, 128, 128).unwrap(), a);
        let mut opt = DetOptim::new(&d, 0.9, 1e-4);
        let losses: Vec<f32> = (0..40u64)
            .map(|it| d.train_step(&img, (128, 128), &t, (0, it), &mut opt, 0.003).unwrap().total())
            .collect();
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        let (first, last) = (losses[..5].iter().sum::<f32>(), losses[35..].iter().sum::<f32>());
        eprintln!("resnet20 detector losses: {losses:?}");
        assert!(last < 0.7 * first, "the loss did not fall: {losses:?}");
        // a non-square image within the capacity
        d.detect(&rand_vec(96 * 128 * 3, 2), 96, 128).unwrap();
    }
}
