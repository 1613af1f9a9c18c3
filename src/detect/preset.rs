//! The two detector presets people compare against, as data: `paper` (He et al. Sec. 4.3 and
//! Appendix A, which take Faster R-CNN [32] and its py-faster-rcnn implementation as they are) and
//! `torchvision` (its `FasterRCNN` defaults for the same C4 model). The RPN's and the head's numbers
//! live in [`RpnConfig`] and [`HeadConfig`], each documented with its source; this adds the anchors,
//! the image scale and the RoI operator.

use super::anchors::base_anchors;
use super::roi_head::HeadConfig;
use super::rpn::RpnConfig;
use super::{Box4, Convention};

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

    /// The anchors of one feature cell at the origin, in the order of the A objectness channels.
    pub fn cell_anchors(&self) -> Vec<Box4> {
        if self.legacy_anchors {
            let scales: Vec<f32> = self.anchor_sizes.iter().map(|s| s / 16.0).collect();
            super::anchors::legacy_anchors(16.0, self.aspect_ratios, &scales)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
