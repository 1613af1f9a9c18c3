//! RoI pooling, NHWC: RoIAlign (torchvision `roi_align`, Mask R-CNN; `aligned` false is Detectron's
//! original, true its "ROIAlignV2") and RoIPool (Fast R-CNN, torchvision `roi_pool`), forward and
//! backward. The forward passes split the RoIs across threads (`par::for_rows`, one output row
//! per RoI); the backward passes give each task a private gradient of the whole input and sum them
//! in task order (bit-identical for a given thread count).
//!
//! The arithmetic follows torchvision's CPU kernels (`csrc/ops/cpu/roi_align_kernel.cpp`,
//! `roi_pool_kernel.cpp`) step by step; the channel loop is innermost (NHWC), so each sample is a
//! few axpys over contiguous channels.

use super::Box4;
use crate::par;
use crate::shape::Dims;

/// A region: the image it is on (index into the batch) and its box in image coordinates (the
/// feature map is `spatial_scale` times smaller).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoI {
    pub image: usize,
    pub bbox: Box4,
}

/// RoIAlign's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoIAlign {
    pub out_h: usize,
    pub out_w: usize,
    pub spatial_scale: f32,
    /// Samples per bin side; <= 0: ceil(roi side / output side) (adaptive).
    pub sampling_ratio: i32,
    /// Pixel centres at +0.5 (shift the RoI by -0.5 pixel); false: Detectron's original, where a
    /// RoI is at least 1x1.
    pub aligned: bool,
}

/// One bilinear tap: the input pixel (index of its first channel) and its weight (already divided
/// by the bin's sample count).
#[derive(Clone, Copy)]
struct Tap {
    at: usize,
    w: f32,
}

impl RoIAlign {
    fn check(&self, xd: Dims, rois: &[RoI], out_len: usize, what: &str) {
        assert_eq!(out_len, rois.len() * self.out_h * self.out_w * xd.c, "roi_align {what}: output length");
        assert!(rois.iter().all(|r| r.image < xd.n), "roi_align: a RoI names an image outside the batch");
    }

    /// Calls `f(bin, tap)` for every bilinear tap of every sample of every bin of `roi`.
    #[inline(always)]
    fn taps(&self, xd: Dims, roi: &RoI, mut f: impl FnMut(usize, Tap)) {
        if xd.h == 0 || xd.w == 0 {
            return;
        }
        let off = if self.aligned { 0.5 } else { 0.0 };
        let s = self.spatial_scale;
        let (x0, y0) = (roi.bbox[0] * s - off, roi.bbox[1] * s - off);
        let (mut rw, mut rh) = (roi.bbox[2] * s - off - x0, roi.bbox[3] * s - off - y0);
        if !self.aligned {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let (bin_h, bin_w) = (rh / self.out_h as f32, rw / self.out_w as f32);
        let (gh, gw) = if self.sampling_ratio > 0 {
            (self.sampling_ratio as usize, self.sampling_ratio as usize)
        } else {
            ((rh / self.out_h as f32).ceil().max(0.0) as usize, (rw / self.out_w as f32).ceil().max(0.0) as usize)
        };
        let count = (gh * gw).max(1) as f32;
        let (h, w) = (xd.h as f32, xd.w as f32);
        let image_base = roi.image * xd.h * xd.w;
        for ph in 0..self.out_h {
            for pw in 0..self.out_w {
                let bin = ph * self.out_w + pw;
                for iy in 0..gh {
                    let y = y0 + ph as f32 * bin_h + (iy as f32 + 0.5) * bin_h / gh as f32;
                    for ix in 0..gw {
                        let x = x0 + pw as f32 * bin_w + (ix as f32 + 0.5) * bin_w / gw as f32;
                        if y < -1.0 || y > h || x < -1.0 || x > w {
                            continue;
                        }
                        let (y_lo, y_hi, y) = bilinear_axis(y, xd.h);
                        let (x_lo, x_hi, x) = bilinear_axis(x, xd.w);
                        let (ly, lx) = (y - y_lo as f32, x - x_lo as f32);
                        let (hy, hx) = (1.0 - ly, 1.0 - lx);
                        let px = |r: usize, c: usize| (image_base + r * xd.w + c) * xd.c;
                        f(bin, Tap { at: px(y_lo, x_lo), w: hy * hx / count });
                        f(bin, Tap { at: px(y_lo, x_hi), w: hy * lx / count });
                        f(bin, Tap { at: px(y_hi, x_lo), w: ly * hx / count });
                        f(bin, Tap { at: px(y_hi, x_hi), w: ly * lx / count });
                    }
                }
            }
        }
    }

    /// `y` (K x out_h x out_w x C, NHWC per RoI) = the average of bilinear samples of `x` in each bin.
    pub fn forward(&self, x: &[f32], xd: Dims, rois: &[RoI], y: &mut [f32]) {
        self.check(xd, rois, y.len(), "forward");
        assert_eq!(x.len(), xd.len(), "roi_align forward: input length");
        let c = xd.c;
        let row = self.out_h * self.out_w * c;
        par::for_rows(
            y,
            row,
            1,
            #[inline(always)]
            |first, chunk| {
                for (k, out) in chunk.chunks_exact_mut(row).enumerate() {
                    out.fill(0.0);
                    self.taps(xd, &rois[first + k], |bin, t| {
                        let (o, i) = (&mut out[bin * c..(bin + 1) * c], &x[t.at..t.at + c]);
                        o.iter_mut().zip(i).for_each(|(o, i)| *o += t.w * i);
                    });
                }
            },
        );
    }

    /// `dx` (same shape as the input) = the gradient of the input given `dy`, the output's gradient.
    /// Overwrites `dx`.
    pub fn backward(&self, dy: &[f32], xd: Dims, rois: &[RoI], dx: &mut [f32]) {
        self.check(xd, rois, dy.len(), "backward");
        assert_eq!(dx.len(), xd.len(), "roi_align backward: gradient length");
        let c = xd.c;
        let row = self.out_h * self.out_w * c;
        scatter(dx, rois.len(), |k, g| {
            let d = &dy[k * row..(k + 1) * row];
            self.taps(xd, &rois[k], |bin, t| {
                let (o, i) = (&mut g[t.at..t.at + c], &d[bin * c..(bin + 1) * c]);
                o.iter_mut().zip(i).for_each(|(o, i)| *o += t.w * i);
            });
        });
    }
}

/// `dx` = the sum over items (RoIs) of what `add(item, gradient)` adds: each task adds its share of
/// the items into a private zeroed buffer, then the buffers are summed in task order.
/// torchvision's clamp of one sample coordinate `v` (already inside [-1, size])
/// on an axis of `size` cells: the two cells it interpolates between and the
/// coordinate they are weighted by (0 below the first cell, the last cell's
/// index past it).
fn bilinear_axis(v: f32, size: usize) -> (usize, usize, f32) {
    let v = if v <= 0.0 { 0.0 } else { v };
    let lo = v as usize;
    if lo >= size - 1 { (size - 1, size - 1, (size - 1) as f32) } else { (lo, lo + 1, v) }
}

fn scatter(dx: &mut [f32], items: usize, add: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let tasks = par::threads().min(items).max(1);
    let mut partials = vec![Vec::new(); tasks];
    let len = dx.len();
    par::for_partials(
        &mut partials,
        items,
        items.div_ceil(tasks),
        #[inline(always)]
        |range, g| {
            g.resize(len, 0.0);
            for k in range {
                add(k, g);
            }
        },
    );
    dx.fill(0.0);
    for p in partials.iter().filter(|p| !p.is_empty()) {
        dx.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
}

/// RoIPool's settings (Fast R-CNN): max over each of out_h x out_w bins of the RoI rounded to the
/// feature map's cells.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoIPool {
    pub out_h: usize,
    pub out_w: usize,
    pub spatial_scale: f32,
}

/// `argmax` entry of an empty bin (its output is 0 and it passes no gradient).
pub const EMPTY_BIN: u32 = u32::MAX;

impl RoIPool {
    /// `y` (K x out_h x out_w x C) = the maximum of each bin (0 for an empty bin); `argmax` the
    /// flat index into `x` of each maximum (the first one wins), for backward.
    pub fn forward(&self, x: &[f32], xd: Dims, rois: &[RoI], y: &mut [f32], argmax: &mut [u32]) {
        let c = xd.c;
        let row = self.out_h * self.out_w * c;
        assert_eq!(y.len(), rois.len() * row, "roi_pool forward: output length");
        assert_eq!(argmax.len(), y.len(), "roi_pool forward: argmax length");
        assert_eq!(x.len(), xd.len(), "roi_pool forward: input length");
        assert!(xd.len() < u32::MAX as usize, "roi_pool: an input of 2^32 values or more");
        assert!(rois.iter().all(|r| r.image < xd.n), "roi_pool: a RoI names an image outside the batch");
        par::for_rows_pair(
            y,
            row,
            argmax,
            row,
            1,
            #[inline(always)]
            |first, ys, args| {
                for (k, (out, arg)) in ys.chunks_exact_mut(row).zip(args.chunks_exact_mut(row)).enumerate() {
                    self.pool_one(x, xd, &rois[first + k], out, arg);
                }
            },
        );
    }

    #[inline(always)]
    fn pool_one(&self, x: &[f32], xd: Dims, roi: &RoI, out: &mut [f32], arg: &mut [u32]) {
        let c = xd.c;
        let s = self.spatial_scale;
        // C's round(): half away from zero, like Rust's f32::round
        let [sx, sy, ex, ey] = roi.bbox.map(|v| (v * s).round() as i64);
        let (rw, rh) = ((ex - sx + 1).max(1), (ey - sy + 1).max(1));
        let (bin_h, bin_w) = (rh as f32 / self.out_h as f32, rw as f32 / self.out_w as f32);
        let (h, w) = (xd.h as i64, xd.w as i64);
        for ph in 0..self.out_h {
            let hs = ((ph as f32 * bin_h).floor() as i64 + sy).clamp(0, h);
            let he = (((ph + 1) as f32 * bin_h).ceil() as i64 + sy).clamp(0, h);
            for pw in 0..self.out_w {
                let ws = ((pw as f32 * bin_w).floor() as i64 + sx).clamp(0, w);
                let we = (((pw + 1) as f32 * bin_w).ceil() as i64 + sx).clamp(0, w);
                let bin = (ph * self.out_w + pw) * c;
                let (o, a) = (&mut out[bin..bin + c], &mut arg[bin..bin + c]);
                if he <= hs || we <= ws {
                    o.fill(0.0);
                    a.fill(EMPTY_BIN);
                    continue;
                }
                o.fill(-f32::MAX);
                a.fill(EMPTY_BIN);
                for yy in hs..he {
                    for xx in ws..we {
                        let base = ((roi.image * xd.h + yy as usize) * xd.w + xx as usize) * c;
                        for ch in 0..c {
                            if x[base + ch] > o[ch] {
                                o[ch] = x[base + ch];
                                a[ch] = (base + ch) as u32;
                            }
                        }
                    }
                }
            }
        }
    }

    /// `dx` = each output gradient added at its maximum's input position. Overwrites `dx`.
    pub fn backward(&self, dy: &[f32], argmax: &[u32], rois: usize, dx: &mut [f32]) {
        assert_eq!(dy.len(), argmax.len(), "roi_pool backward: argmax length");
        let row = dy.len() / rois.max(1);
        scatter(dx, rois, |k, g| {
            for (d, &a) in dy[k * row..(k + 1) * row].iter().zip(&argmax[k * row..(k + 1) * row]) {
                if a != EMPTY_BIN {
                    g[a as usize] += d;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(d: Dims) -> Vec<f32> {
        (0..d.len()).map(|i| ((i * 37) % 101) as f32 / 10.0 - 5.0).collect()
    }

    /// Backward is the adjoint of forward: <forward(x), dy> == <x, backward(dy)> (both are linear in x
    /// for RoIAlign).
    #[test]
    fn roi_align_backward_is_the_adjoint() {
        let xd = Dims::new(2, 7, 9, 3);
        let x = ramp(xd);
        let rois = [
            RoI { image: 0, bbox: [1.0, 2.0, 20.0, 11.0] },
            RoI { image: 1, bbox: [-6.0, -3.0, 5.0, 4.0] },
            RoI { image: 1, bbox: [10.0, 10.0, 10.0, 10.0] },
            RoI { image: 0, bbox: [30.0, 20.0, 40.0, 30.0] },
        ];
        for aligned in [false, true] {
            for sampling_ratio in [0, 2] {
                let op = RoIAlign { out_h: 3, out_w: 2, spatial_scale: 0.5, sampling_ratio, aligned };
                let mut y = vec![0.0; rois.len() * 3 * 2 * 3];
                op.forward(&x, xd, &rois, &mut y);
                let dy: Vec<f32> = (0..y.len()).map(|i| ((i * 13) % 7) as f32 - 3.0).collect();
                let mut dx = vec![0.0; xd.len()];
                op.backward(&dy, xd, &rois, &mut dx);
                let lhs: f64 = y.iter().zip(&dy).map(|(a, b)| (a * b) as f64).sum();
                let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| (a * b) as f64).sum();
                assert!((lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0), "{aligned} {sampling_ratio}: {lhs} {rhs}");
            }
        }
    }

    #[test]
    fn roi_align_of_a_constant_map_is_the_constant_inside() {
        let xd = Dims::new(1, 8, 8, 2);
        let x = vec![3.0; xd.len()];
        let op = RoIAlign { out_h: 2, out_w: 2, spatial_scale: 1.0, sampling_ratio: 2, aligned: true };
        let mut y = vec![0.0; 8];
        op.forward(&x, xd, &[RoI { image: 0, bbox: [1.0, 1.0, 5.0, 6.0] }], &mut y);
        assert!(y.iter().all(|v| (v - 3.0).abs() < 1e-6), "{y:?}");
    }

    #[test]
    fn roi_pool_takes_the_max_and_routes_its_gradient() {
        let xd = Dims::new(1, 4, 4, 1);
        let x: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let op = RoIPool { out_h: 2, out_w: 2, spatial_scale: 1.0 };
        let mut y = vec![0.0; 4];
        let mut arg = vec![0; 4];
        let rois = [RoI { image: 0, bbox: [0.0, 0.0, 3.0, 3.0] }];
        op.forward(&x, xd, &rois, &mut y, &mut arg);
        assert_eq!(y, vec![5.0, 7.0, 13.0, 15.0]);
        let mut dx = vec![0.0; 16];
        op.backward(&[1.0, 2.0, 3.0, 4.0], &arg, 1, &mut dx);
        assert_eq!((dx[5], dx[7], dx[13], dx[15], dx.iter().sum::<f32>()), (1.0, 2.0, 3.0, 4.0, 10.0));
        // a RoI wholly outside: empty bins, zeros
        op.forward(&x, xd, &[RoI { image: 0, bbox: [10.0, 10.0, 12.0, 12.0] }], &mut y, &mut arg);
        assert_eq!(y, vec![0.0; 4]);
    }
}
