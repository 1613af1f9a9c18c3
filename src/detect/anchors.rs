//! Anchors: torchvision's generator (`models/detection/anchor_utils.py`) and the original Faster
//! R-CNN ones (py-faster-rcnn `lib/rpn/generate_anchors.py`, the paper's [32]).

use super::Box4;

/// torchvision's base anchors for one feature level: for each aspect ratio r = h / w (outer loop)
/// and each size s (inner loop), `[-w/2, -h/2, w/2, h/2]` with h = s * sqrt(r), w = s / sqrt(r),
/// rounded half to even (`torch.round`), centred on 0.
pub fn base_anchors(sizes: &[f32], aspect_ratios: &[f32]) -> Vec<Box4> {
    let mut out = Vec::with_capacity(sizes.len() * aspect_ratios.len());
    for &r in aspect_ratios {
        let h_ratio = r.sqrt();
        let w_ratio = 1.0 / h_ratio;
        for &s in sizes {
            let (w, h) = (w_ratio * s, h_ratio * s);
            out.push([-w, -h, w, h].map(|v| (v / 2.0).round_ties_even()));
        }
    }
    out
}

/// Every anchor of a `grid_h x grid_w` feature map of stride `(stride_h, stride_w)`: the base
/// anchors shifted to each cell's top-left corner (x = col * stride_w, y = row * stride_h),
/// cell-major (row, col), then base anchor: torchvision's `grid_anchors` order.
pub fn grid_anchors(base: &[Box4], grid_h: usize, grid_w: usize, stride_h: f32, stride_w: f32) -> Vec<Box4> {
    let mut out = Vec::with_capacity(grid_h * grid_w * base.len());
    for row in 0..grid_h {
        let y = row as f32 * stride_h;
        for col in 0..grid_w {
            let x = col as f32 * stride_w;
            out.extend(base.iter().map(|a| [a[0] + x, a[1] + y, a[2] + x, a[3] + y]));
        }
    }
    out
}

/// py-faster-rcnn's `generate_anchors(base_size, ratios, scales)`: the reference window
/// `[0, 0, base_size - 1, base_size - 1]` (inclusive pixels, the +1 convention) is reshaped to each
/// ratio r = h / w at constant area (w = round(sqrt(area / r)), h = round(w * r), numpy's round
/// half to even), then each is scaled by every scale, all about the window's centre.
pub fn legacy_anchors(base_size: f32, ratios: &[f32], scales: &[f32]) -> Vec<Box4> {
    let whctr = |a: &[f64; 4]| {
        let (w, h) = (a[2] - a[0] + 1.0, a[3] - a[1] + 1.0);
        (w, h, a[0] + 0.5 * (w - 1.0), a[1] + 0.5 * (h - 1.0))
    };
    let mk = |w: f64, h: f64, cx: f64, cy: f64| {
        [cx - 0.5 * (w - 1.0), cy - 0.5 * (h - 1.0), cx + 0.5 * (w - 1.0), cy + 0.5 * (h - 1.0)]
    };
    let base = [0.0, 0.0, base_size as f64 - 1.0, base_size as f64 - 1.0];
    let (w, h, cx, cy) = whctr(&base);
    let mut out = Vec::with_capacity(ratios.len() * scales.len());
    for &r in ratios {
        let ws = (w * h / r as f64).sqrt().round_ties_even();
        let hs = (ws * r as f64).round_ties_even();
        let ratio_anchor = mk(ws, hs, cx, cy);
        let (w2, h2, cx2, cy2) = whctr(&ratio_anchor);
        for &s in scales {
            out.push(mk(w2 * s as f64, h2 * s as f64, cx2, cy2).map(|v| v as f32));
        }
    }
    out
}

/// The nine anchors of Faster R-CNN: `generate_anchors()` with its defaults (base 16, ratios
/// 0.5 / 1 / 2, scales 8 / 16 / 32: areas 128^2, 256^2, 512^2), ratio-major.
pub fn faster_rcnn_anchors() -> Vec<Box4> {
    legacy_anchors(16.0, &[0.5, 1.0, 2.0], &[8.0, 16.0, 32.0])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `generate_anchors()` returns (base window [0, 0, 15, 15]). The table in that file's
    /// comment ([-83, -39, 100, 56], ...) is these plus one: the MATLAB release's 1-based window
    /// [1, 1, 16, 16].
    #[test]
    fn the_nine_legacy_anchors_exactly() {
        let want: [Box4; 9] = [
            [-84.0, -40.0, 99.0, 55.0],
            [-176.0, -88.0, 191.0, 103.0],
            [-360.0, -184.0, 375.0, 199.0],
            [-56.0, -56.0, 71.0, 71.0],
            [-120.0, -120.0, 135.0, 135.0],
            [-248.0, -248.0, 263.0, 263.0],
            [-36.0, -80.0, 51.0, 95.0],
            [-80.0, -168.0, 95.0, 183.0],
            [-168.0, -344.0, 183.0, 359.0],
        ];
        assert_eq!(faster_rcnn_anchors(), want);
        let one_based: Vec<Box4> = faster_rcnn_anchors().iter().map(|a| a.map(|v| v + 1.0)).collect();
        assert_eq!(one_based[0], [-83.0, -39.0, 100.0, 56.0]);
        assert_eq!(one_based[8], [-167.0, -343.0, 184.0, 360.0]);
    }

    #[test]
    fn torchvision_base_anchors_round_half_to_even() {
        // size 32 at ratio 1: [-16, -16, 16, 16]; at r = 0.5: w = 45.25 -> 22.6 -> 23, h = 22.6 -> 11.3 -> 11
        let b = base_anchors(&[32.0], &[0.5, 1.0, 2.0]);
        assert_eq!(b, vec![[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]]);
        // 5 / 2 = 2.5 rounds to 2 (half to even), as torch.round does
        assert_eq!(base_anchors(&[5.0], &[1.0]), vec![[-2.0, -2.0, 2.0, 2.0]]);
        let g = grid_anchors(&b, 2, 3, 16.0, 16.0);
        assert_eq!(g.len(), 18);
        assert_eq!(g[3 * 4 + 1], [16.0 - 16.0, 16.0 - 16.0, 16.0 + 16.0, 16.0 + 16.0]);
    }
}
