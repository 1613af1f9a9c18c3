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
    /// y = max over each window (padding never wins); `arg` receives the
    /// flat input index of each maximum, for backward.
    pub fn forward(&self, x: &[f32], xd: Dims, y: &mut [f32], arg: &mut [u32]) {
        let yd = self.out_dims(xd);
        let c = xd.c;
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
                    let (n, oh) = (row / yd.h, row % yd.h);
                    for ow in 0..yd.w {
                        let (yo, ao) = (&mut yr[ow * c..(ow + 1) * c], &mut ar[ow * c..(ow + 1) * c]);
                        yo.fill(f32::NEG_INFINITY);
                        for kh in 0..self.k {
                            let ih = (oh * self.stride + kh) as isize - self.pad as isize;
                            if ih < 0 || ih >= xd.h as isize {
                                continue;
                            }
                            for kw in 0..self.k {
                                let iw = (ow * self.stride + kw) as isize - self.pad as isize;
                                if iw < 0 || iw >= xd.w as isize {
                                    continue;
                                }
                                let base = ((n * xd.h + ih as usize) * xd.w + iw as usize) * c;
                                for ch in 0..c {
                                    let v = x[base + ch];
                                    // NaN propagates, as in PyTorch
                                    if v > yo[ch] || v.is_nan() {
                                        yo[ch] = v;
                                        ao[ch] = (base + ch) as u32;
                                    }
                                }
                            }
                        }
                    }
                }
            },
        );
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
