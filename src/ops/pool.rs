//! 3x3/2 max pooling (any square window) and global average pooling, NHWC.

use crate::par;
use crate::shape::Dims;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl MaxPool {
    pub fn out_dims(&self, x: Dims) -> Dims {
        let o = |s: usize| (s + 2 * self.pad).saturating_sub(self.k) / self.stride + 1;
        Dims::new(x.n, o(x.h), o(x.w), x.c)
    }

    // ------------------------------------------------------------ forward
    /// y = max over each window (padding never wins; NaN propagates, as in PyTorch); `arg`
    /// receives the flat input index of each maximum, for backward.
    /// x: (N, H, W, C) -> y, arg: (N, OH, OW, C)
    pub fn forward(&self, x: &[f32], xd: Dims, y: &mut [f32], arg: &mut [u32]) {
        let (yd, c) = (self.out_dims(xd), xd.c);
        let row_len = yd.w * c;
        par::for_rows_pair(
            y,
            row_len,
            arg,
            row_len,
            1,
            #[inline(always)]
            |first, ys, args| {
                let rows = ys.chunks_exact_mut(row_len).zip(args.chunks_exact_mut(row_len));
                for (row, (yr, ar)) in (first..).zip(rows) {
                    let pixels = yr.chunks_exact_mut(c).zip(ar.chunks_exact_mut(c));
                    for (ow, (yo, ao)) in pixels.enumerate() {
                        yo.fill(f32::NEG_INFINITY);
                        self.each_tap(xd, yd, row, ow, |base| {
                            let taken = x[base..base + c].iter().zip(base as u32..);
                            for ((o, a), (&v, i)) in yo.iter_mut().zip(ao.iter_mut()).zip(taken) {
                                // branch-free, so that it vectorises
                                let take = v > *o || v.is_nan();
                                *o = if take { v } else { *o };
                                *a = if take { i } else { *a };
                            }
                        });
                    }
                }
            },
        );
    }

    /// [`MaxPool::forward`]'s y without the indices (inference: one output less to write).
    pub fn forward_values(&self, x: &[f32], xd: Dims, y: &mut [f32]) {
        let (yd, c) = (self.out_dims(xd), xd.c);
        let row_len = yd.w * c;
        par::for_rows(
            y,
            row_len,
            1,
            #[inline(always)]
            |first, ys| {
                for (row, yr) in (first..).zip(ys.chunks_exact_mut(row_len)) {
                    for (ow, yo) in yr.chunks_exact_mut(c).enumerate() {
                        yo.fill(f32::NEG_INFINITY);
                        self.each_tap(xd, yd, row, ow, |base| {
                            for (o, &v) in yo.iter_mut().zip(&x[base..base + c]) {
                                *o = if v > *o || v.is_nan() { v } else { *o };
                            }
                        });
                    }
                }
            },
        );
    }

    /// [`MaxPool::forward`] where `arg` is given (training: backward needs the indices), else
    /// [`MaxPool::forward_values`].
    pub fn forward_indexed_if(&self, x: &[f32], xd: Dims, y: &mut [f32], arg: Option<&mut [u32]>) {
        match arg {
            Some(arg) => self.forward(x, xd, y, arg),
            None => self.forward_values(x, xd, y),
        }
    }

    /// `f(base)` for each window tap inside the input of output pixel (row = n * OH + oh, ow),
    /// row by row: base = the tap's first value in x.
    #[inline(always)]
    fn each_tap(&self, xd: Dims, yd: Dims, row: usize, ow: usize, mut f: impl FnMut(usize)) {
        let (n, oh) = (row / yd.h, row % yd.h);
        for kh in 0..self.k {
            let ih = (oh * self.stride + kh) as isize - self.pad as isize;
            if ih < 0 || ih >= xd.h as isize {
                continue;
            }
            for kw in 0..self.k {
                let iw = (ow * self.stride + kw) as isize - self.pad as isize;
                if iw >= 0 && iw < xd.w as isize {
                    f(((n * xd.h + ih as usize) * xd.w + iw as usize) * xd.c);
                }
            }
        }
    }

    // ----------------------------------------------------------- backward
    /// dx = scatter of dy to the saved maxima (summed where windows overlap).
    pub fn backward(&self, dy: &[f32], arg: &[u32], xd: Dims, dx: &mut [f32]) {
        let img = xd.h * xd.w * xd.c;
        let yimg = dy.len() / xd.n.max(1);
        par::for_rows(
            dx,
            img,
            1,
            #[inline(always)]
            |first, dxs| {
                for (n, dxi) in (first..).zip(dxs.chunks_exact_mut(img)) {
                    dxi.fill(0.0);
                    let (g, a) = (&dy[n * yimg..(n + 1) * yimg], &arg[n * yimg..(n + 1) * yimg]);
                    for (gv, &ix) in g.iter().zip(a) {
                        dxi[ix as usize - n * img] += gv;
                    }
                }
            },
        );
    }
}

// ---------------------------------------------------------------- forward
/// Global average pooling: (N,H,W,C) -> (N,C).
pub fn gap_forward(x: &[f32], xd: Dims, y: &mut [f32]) {
    let (c, hw) = (xd.c, xd.h * xd.w);
    let inv = 1.0 / hw as f32;
    for (n, yr) in y.chunks_exact_mut(c).enumerate() {
        yr.fill(0.0);
        for p in x[n * hw * c..(n + 1) * hw * c].chunks_exact(c) {
            yr.iter_mut().zip(p).for_each(|(o, v)| *o += v);
        }
        yr.iter_mut().for_each(|o| *o *= inv);
    }
}

// --------------------------------------------------------------- backward
/// `dx[n,h,w,c] = dy[n,c] / (H*W)`.
pub fn gap_backward(dy: &[f32], xd: Dims, dx: &mut [f32]) {
    let (c, hw) = (xd.c, xd.h * xd.w);
    let inv = 1.0 / hw as f32;
    par::for_rows(
        dx,
        hw * c,
        1,
        #[inline(always)]
        |first, chunk| {
            for (r, dxi) in chunk.chunks_exact_mut(hw * c).enumerate() {
                let g = &dy[(first + r) * c..][..c];
                for p in dxi.chunks_exact_mut(c) {
                    p.iter_mut().zip(g).for_each(|(o, v)| *o = v * inv);
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, rand_vec};

    #[test]
    fn maxpool_forward_and_backward() {
        for (k, s, p, h, w) in [(3, 2, 1, 7, 6), (3, 2, 1, 8, 8), (2, 2, 0, 5, 5), (3, 1, 1, 4, 5)] {
            let mp = MaxPool { k, stride: s, pad: p };
            let xd = Dims::new(2, h, w, 3);
            let yd = mp.out_dims(xd);
            let x = rand_vec(xd.len(), 60 + h as u64);
            let proj = rand_vec(yd.len(), 61);
            let loss = |x: &[f32]| -> f64 {
                let mut y = vec![0.0; yd.len()];
                let mut a = vec![0u32; yd.len()];
                mp.forward(x, xd, &mut y, &mut a);
                y.iter().zip(&proj).map(|(a, b)| (*a as f64) * (*b as f64)).sum()
            };
            let mut y = vec![0.0; yd.len()];
            let mut a = vec![0u32; yd.len()];
            mp.forward(&x, xd, &mut y, &mut a);
            // every output is the max of its window
            assert!(y.iter().all(|v| v.is_finite()));
            let mut dx = vec![0.0; xd.len()];
            mp.backward(&proj, &a, xd, &mut dx);
            check_grad(&format!("maxpool k{k}s{s}p{p}"), &x, &dx, 1e-4, 1e-3, loss);
        }
    }

    /// The maxima with and without indices are the same bits; a NaN in a window wins it (as in
    /// PyTorch), with its index; padding never wins.
    #[test]
    fn maxpool_values_nan_and_padding() {
        let mp = MaxPool { k: 3, stride: 2, pad: 1 };
        let xd = Dims::new(2, 9, 7, 40);
        let yd = mp.out_dims(xd);
        let mut x: Vec<f32> = rand_vec(xd.len(), 62).iter().map(|v| v - 2.0).collect(); // all negative
        let nan_at = ((9 + 4) * 7 + 3) * 40 + 17; // image 1, (4, 3), channel 17
        x[nan_at] = f32::NAN;
        let (mut y, mut a, mut v) = (vec![0.0; yd.len()], vec![0u32; yd.len()], vec![0.0; yd.len()]);
        mp.forward(&x, xd, &mut y, &mut a);
        mp.forward_values(&x, xd, &mut v);
        assert!(y.iter().zip(&v).all(|(p, q)| p.to_bits() == q.to_bits()));
        for (i, (&yv, &ai)) in y.iter().zip(&a).enumerate() {
            assert_eq!(yv.to_bits(), x[ai as usize].to_bits(), "output {i}: its index holds its value");
            assert!(yv < 0.0 || yv.is_nan(), "output {i}: {yv} (padding, 0, won)");
            assert_eq!(ai as usize % 40, i % 40, "output {i}: the index of another channel");
        }
        // (4, 3) is in the windows of outputs (oh, ow) with 2 oh - 1 <= 4 <= 2 oh + 1: oh 2 (and
        // 3 at 2 * 3 - 1 = 5 > 4: no), ow 1 and 2
        for (oh, ow) in [(2, 1), (2, 2)] {
            let o = ((yd.h + oh) * yd.w + ow) * 40 + 17;
            assert!(y[o].is_nan() && a[o] as usize == nan_at, "({oh}, {ow})");
        }
        assert_eq!(y.iter().filter(|v| v.is_nan()).count(), 2);
    }

    #[test]
    fn gap_forward_and_backward() {
        let xd = Dims::new(3, 3, 5, 4);
        let x = rand_vec(xd.len(), 70);
        let proj = rand_vec(12, 71);
        let loss = |x: &[f32]| -> f64 {
            let mut y = vec![0.0; 12];
            gap_forward(x, xd, &mut y);
            y.iter().zip(&proj).map(|(a, b)| (*a as f64) * (*b as f64)).sum()
        };
        let mut dx = vec![0.0; xd.len()];
        gap_backward(&proj, xd, &mut dx);
        check_grad("gap", &x, &dx, 1e-3, 1e-4, loss);
    }
}
