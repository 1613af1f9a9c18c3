//! Fully connected layer, PyTorch layout: y = x W^T + b, W: (out, in).

use crate::par;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fc {
    pub fin: usize,
    pub fout: usize,
}

impl Fc {
    // ------------------------------------------------------------ forward
    /// x: (N, in), y: (N, out)
    pub fn forward(&self, w: &[f32], b: &[f32], x: &[f32], y: &mut [f32]) {
        par::for_rows(
            y,
            self.fout,
            1,
            #[inline(always)]
            |first, ys| {
                // W's rows outer, the task's images inner: each row is read once per task, not once
                // per image (W is 8 MB for ImageNet's 2048 x 1000); the same sums
                let xs = &x[first * self.fin..][..ys.len() / self.fout * self.fin];
                for (o, wr) in w.chunks_exact(self.fin).enumerate() {
                    for (i, xr) in xs.chunks_exact(self.fin).enumerate() {
                        ys[i * self.fout + o] = b[o] + dot(xr, wr);
                    }
                }
            },
        );
    }

    // ----------------------------------------------------------- backward
    /// dW = dy^T x, db = sum_n dy, dx = dy W (dx optional). The sums over n run image by image,
    /// or, with [`par::SumOrder::Leaves`], leaf by leaf and the leaves' sums in its tree.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        w: &[f32],
        x: &[f32],
        dy: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
        dx: Option<&mut [f32]>,
        order: par::SumOrder,
    ) {
        let n = dy.len() / self.fout;
        let leaves = match order {
            par::SumOrder::Threads => std::iter::once(0..n).collect::<Vec<_>>(),
            par::SumOrder::Leaves { .. } => order.parts(n, 1),
        };
        // one task row = one output: its row of dW and its db
        par::for_rows_pair(
            dw,
            self.fin,
            db,
            1,
            1,
            #[inline(always)]
            |first, dws, dbs| {
                // per leaf: the row of dW and db (the last value)
                let mut parts = vec![vec![0.0f32; self.fin + 1]; leaves.len()];
                for (j, (dwr, dbo)) in dws.chunks_exact_mut(self.fin).zip(dbs.iter_mut()).enumerate() {
                    let o = first + j;
                    for (part, images) in parts.iter_mut().zip(&leaves) {
                        let (pw, pb) = part.split_at_mut(self.fin);
                        pw.fill(0.0);
                        let mut s = 0.0;
                        for i in images.clone() {
                            let g = dy[i * self.fout + o];
                            s += g;
                            pw.iter_mut().zip(&x[i * self.fin..(i + 1) * self.fin]).for_each(|(d, v)| *d += g * v);
                        }
                        pb[0] = s;
                    }
                    par::tree_sum(&mut parts, self.fin + 1);
                    dwr.copy_from_slice(&parts[0][..self.fin]);
                    *dbo = parts[0][self.fin];
                }
            },
        );
        if let Some(dx) = dx {
            par::for_rows(
                dx,
                self.fin,
                1,
                #[inline(always)]
                |first, dxs| {
                    for (dxr, g) in dxs.chunks_exact_mut(self.fin).zip(dy[first * self.fout..].chunks(self.fout)) {
                        dxr.fill(0.0);
                        for (gv, wr) in g.iter().zip(w.chunks_exact(self.fin)) {
                            dxr.iter_mut().zip(wr).for_each(|(d, v)| *d += gv * v);
                        }
                    }
                },
            );
        }
    }
}

/// Dot product in eight independent lanes (so it vectorises without
/// reassociation by the compiler).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, rand_vec};

    #[test]
    fn backward_matches_finite_differences() {
        let fc = Fc { fin: 13, fout: 5 };
        let n = 3;
        let x = rand_vec(n * 13, 80);
        let w = rand_vec(65, 81);
        let b = rand_vec(5, 82);
        let proj = rand_vec(n * 5, 83);
        let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
            let mut y = vec![0.0; n * 5];
            fc.forward(w, b, x, &mut y);
            y.iter().zip(&proj).map(|(a, p)| (*a as f64) * (*p as f64)).sum()
        };
        let (mut dw, mut db, mut dx) = (vec![0.0; 65], vec![0.0; 5], vec![0.0; n * 13]);
        fc.backward(&w, &x, &proj, &mut dw, &mut db, Some(&mut dx), par::SumOrder::Threads);
        check_grad("fc dx", &x, &dx, 1e-2, 1e-3, |xp| loss(xp, &w, &b));
        check_grad("fc dw", &w, &dw, 1e-2, 1e-3, |wp| loss(&x, wp, &b));
        check_grad("fc db", &b, &db, 1e-2, 1e-3, |bp| loss(&x, &w, bp));
    }
}
