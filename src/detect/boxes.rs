//! Boxes: IoU, clipping, removing small boxes, and the box coder of Faster R-CNN.
//!
//! Two conventions, one code path ([`Convention`]): torchvision's pixel convention, where a box
//! `[x1, y1, x2, y2]` has width `x2 - x1` (coordinates are continuous), and the legacy convention
//! of py-faster-rcnn / Detectron, where coordinates index pixels inclusively and the width is
//! `x2 - x1 + 1`. Every width, area, clip bound and decoded corner below adds `Convention::one()`.

use super::Box4;

/// How a box's width follows from its corners.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Convention {
    /// torchvision: `w = x2 - x1`.
    #[default]
    Pixel,
    /// py-faster-rcnn (`--legacy-plus-one`): `w = x2 - x1 + 1`, inclusive pixel indices.
    LegacyPlusOne,
}

impl Convention {
    /// The 0 or 1 added to every width.
    #[inline(always)]
    pub fn one(self) -> f32 {
        match self {
            Convention::Pixel => 0.0,
            Convention::LegacyPlusOne => 1.0,
        }
    }

    #[inline(always)]
    pub fn width(self, b: &Box4) -> f32 {
        b[2] - b[0] + self.one()
    }

    #[inline(always)]
    pub fn height(self, b: &Box4) -> f32 {
        b[3] - b[1] + self.one()
    }

    #[inline(always)]
    pub fn area(self, b: &Box4) -> f32 {
        self.width(b) * self.height(b)
    }

    /// Intersection over union (torchvision's `box_iou`: an empty union gives NaN there; 0 here).
    #[inline(always)]
    pub fn iou(self, a: &Box4, b: &Box4) -> f32 {
        let inter = self.intersection(a, b);
        let union = self.area(a) + self.area(b) - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    #[inline(always)]
    pub fn intersection(self, a: &Box4, b: &Box4) -> f32 {
        let w = (a[2].min(b[2]) - a[0].max(b[0]) + self.one()).max(0.0);
        let h = (a[3].min(b[3]) - a[1].max(b[1]) + self.one()).max(0.0);
        w * h
    }
}

/// Pairwise IoU, row-major `a.len() x b.len()`.
pub fn box_iou(a: &[Box4], b: &[Box4], conv: Convention) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        out.extend(b.iter().map(|y| conv.iou(x, y)));
    }
    out
}

/// Clip to an image of `height x width`: x into [0, width] (torchvision) or [0, width - 1] (legacy:
/// the last pixel's index).
pub fn clip(boxes: &mut [Box4], height: f32, width: f32, conv: Convention) {
    let (xmax, ymax) = (width - conv.one(), height - conv.one());
    for b in boxes {
        b[0] = b[0].clamp(0.0, xmax);
        b[1] = b[1].clamp(0.0, ymax);
        b[2] = b[2].clamp(0.0, xmax);
        b[3] = b[3].clamp(0.0, ymax);
    }
}

/// Indices of the boxes whose width and height are both at least `min_size` (torchvision's
/// `remove_small_boxes`; py-faster-rcnn's `_filter_boxes` with the +1 widths).
pub fn remove_small(boxes: &[Box4], min_size: f32, conv: Convention) -> Vec<usize> {
    (0..boxes.len()).filter(|&i| conv.width(&boxes[i]) >= min_size && conv.height(&boxes[i]) >= min_size).collect()
}

/// torchvision's `_utils.BoxCoder` (and py-faster-rcnn's `bbox_transform` / `bbox_transform_inv`
/// with `Convention::LegacyPlusOne`): deltas (dx, dy, dw, dh) scaled by `weights`, and dw, dh
/// clamped at `clamp` before `exp` when decoding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoxCoder {
    pub weights: [f32; 4],
    pub clamp: f32,
    pub conv: Convention,
}

/// log(1000 / 16): torchvision's and Detectron's `bbox_xform_clip`.
pub fn default_clamp() -> f32 {
    (1000.0f32 / 16.0).ln()
}

impl BoxCoder {
    /// The detection head's coder: weights (10, 10, 5, 5) (= 1 / the target stds 0.1, 0.1, 0.2, 0.2).
    pub fn head(conv: Convention) -> BoxCoder {
        BoxCoder { weights: [10.0, 10.0, 5.0, 5.0], clamp: default_clamp(), conv }
    }

    /// The RPN's coder: weights (1, 1, 1, 1).
    pub fn rpn(conv: Convention) -> BoxCoder {
        BoxCoder { weights: [1.0; 4], clamp: default_clamp(), conv }
    }

    /// The deltas that take `proposal` to `gt`.
    pub fn encode(&self, gt: &Box4, proposal: &Box4) -> [f32; 4] {
        let c = self.conv;
        let (pw, ph) = (c.width(proposal), c.height(proposal));
        let (px, py) = (proposal[0] + 0.5 * pw, proposal[1] + 0.5 * ph);
        let (gw, gh) = (c.width(gt), c.height(gt));
        let (gx, gy) = (gt[0] + 0.5 * gw, gt[1] + 0.5 * gh);
        let [wx, wy, ww, wh] = self.weights;
        [wx * (gx - px) / pw, wy * (gy - py) / ph, ww * (gw / pw).ln(), wh * (gh / ph).ln()]
    }

    /// The box that `deltas` make of `anchor` (dw, dh clamped at `self.clamp` after dividing by the
    /// weights). Legacy: `x2 = cx + w/2 - 1`, py-faster-rcnn's `bbox_transform_inv`.
    pub fn decode(&self, deltas: &[f32; 4], anchor: &Box4) -> Box4 {
        let c = self.conv;
        let (w, h) = (c.width(anchor), c.height(anchor));
        let (cx, cy) = (anchor[0] + 0.5 * w, anchor[1] + 0.5 * h);
        let [wx, wy, ww, wh] = self.weights;
        let (dx, dy) = (deltas[0] / wx, deltas[1] / wy);
        // `if` rather than `f32::min`, which would turn a NaN into the clamp (torch's clamp keeps NaN)
        let clamp = |d: f32| if d > self.clamp { self.clamp } else { d };
        let (dw, dh) = (clamp(deltas[2] / ww), clamp(deltas[3] / wh));
        let (pcx, pcy) = (dx * w + cx, dy * h + cy);
        let (pw, ph) = (dw.exp() * w, dh.exp() * h);
        let (hw, hh) = (0.5 * pw, 0.5 * ph);
        [pcx - hw, pcy - hh, pcx + hw - c.one(), pcy + hh - c.one()]
    }

    pub fn encode_all(&self, gt: &[Box4], proposals: &[Box4]) -> Vec<[f32; 4]> {
        gt.iter().zip(proposals).map(|(g, p)| self.encode(g, p)).collect()
    }

    pub fn decode_all(&self, deltas: &[[f32; 4]], anchors: &[Box4]) -> Vec<Box4> {
        deltas.iter().zip(anchors).map(|(d, a)| self.decode(d, a)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_both_conventions() {
        let (a, b) = ([0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]);
        assert_eq!(Convention::Pixel.iou(&a, &b), 1.0 / 7.0);
        // legacy: 3x3 boxes overlapping in 2x2
        assert_eq!(Convention::LegacyPlusOne.iou(&a, &b), 4.0 / 14.0);
        assert_eq!(Convention::Pixel.iou(&a, &[5.0, 5.0, 6.0, 6.0]), 0.0);
        // a degenerate pair: no NaN
        assert_eq!(Convention::Pixel.iou(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0, 1.0, 1.0]), 0.0);
        assert_eq!(box_iou(&[a, b], &[a], Convention::Pixel), vec![1.0, 1.0 / 7.0]);
    }

    #[test]
    fn clip_and_remove_small() {
        let mut b = [[-5.0, 2.0, 120.0, 70.0]];
        clip(&mut b, 60.0, 100.0, Convention::Pixel);
        assert_eq!(b[0], [0.0, 2.0, 100.0, 60.0]);
        let mut b = [[-5.0, 2.0, 120.0, 70.0]];
        clip(&mut b, 60.0, 100.0, Convention::LegacyPlusOne);
        assert_eq!(b[0], [0.0, 2.0, 99.0, 59.0]);
        let boxes = [[0.0, 0.0, 15.0, 15.0], [0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 16.0, 3.0]];
        assert_eq!(remove_small(&boxes, 16.0, Convention::Pixel), vec![1]);
        assert_eq!(remove_small(&boxes, 16.0, Convention::LegacyPlusOne), vec![0, 1]);
    }

    #[test]
    fn coder_round_trips_and_clamps() {
        for conv in [Convention::Pixel, Convention::LegacyPlusOne] {
            for coder in [BoxCoder::head(conv), BoxCoder::rpn(conv)] {
                let (gt, p) = ([10.0, 20.0, 50.0, 35.0], [12.0, 18.0, 40.0, 44.0]);
                let d = coder.encode(&gt, &p);
                let back = coder.decode(&d, &p);
                for k in 0..4 {
                    assert!((back[k] - gt[k]).abs() < 1e-4, "{conv:?} {back:?}");
                }
            }
            // a huge dw is clamped: width at most 1000/16 times the anchor's
            let b = BoxCoder::rpn(conv).decode(&[0.0, 0.0, 100.0, 0.0], &[0.0, 0.0, 9.0, 9.0]);
            let w = conv.width(&b);
            assert!((w - 62.5 * conv.width(&[0.0, 0.0, 9.0, 9.0])).abs() < 1e-2, "{w}");
            // a NaN stays NaN, as in torch (`f32::min` would have made it the clamp)
            let b = BoxCoder::rpn(conv).decode(&[0.0, 0.0, f32::NAN, 0.0], &[0.0, 0.0, 9.0, 9.0]);
            assert!(b[0].is_nan() && b[2].is_nan() && b[1] == 0.0);
        }
    }
}
