//! Softmax and softmax cross-entropy (mean over the batch).

/// Numerically stable softmax of each row of `logits` (N, K) into `p`.
pub fn softmax(logits: &[f32], k: usize, p: &mut [f32]) {
    for (lr, pr) in logits.chunks_exact(k).zip(p.chunks_exact_mut(k)) {
        let m = lr.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut s = 0.0f64;
        for (o, v) in pr.iter_mut().zip(lr) {
            *o = (v - m).exp();
            s += *o as f64;
        }
        let inv = (1.0 / s) as f32;
        pr.iter_mut().for_each(|o| *o *= inv);
    }
}

/// Loss, number of top-1 errors, and dlogits = (softmax - onehot) / N.
pub struct LossOut {
    pub loss: f32,
    pub errors: usize,
}

// ------------------------------------------------------- forward + backward
/// Mean cross-entropy of `logits` (N, K) against `labels`; writes the
/// gradient w.r.t. the logits into `dlogits`.
pub fn cross_entropy(logits: &[f32], labels: &[u32], k: usize, dlogits: &mut [f32]) -> LossOut {
    let n = labels.len();
    softmax(logits, k, dlogits);
    let mut loss = 0.0f64;
    let mut errors = 0;
    let inv = 1.0 / n as f32;
    for ((lr, dr), &y) in logits.chunks_exact(k).zip(dlogits.chunks_exact_mut(k)).zip(labels) {
        let y = y as usize;
        loss -= (dr[y].max(f32::MIN_POSITIVE) as f64).ln();
        if argmax(lr) != y {
            errors += 1;
        }
        dr[y] -= 1.0;
        dr.iter_mut().for_each(|d| *d *= inv);
    }
    LossOut { loss: (loss / n as f64) as f32, errors }
}

/// Index of the largest value (first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, rand_vec};

    #[test]
    fn gradient_matches_finite_differences() {
        let (n, k) = (4, 7);
        let logits: Vec<f32> = rand_vec(n * k, 90).iter().map(|v| 3.0 * v).collect();
        let labels = [0u32, 6, 3, 3];
        let mut d = vec![0.0; n * k];
        let out = cross_entropy(&logits, &labels, k, &mut d);
        // direct definition
        let mut expect = 0.0f64;
        for i in 0..n {
            let r = &logits[i * k..(i + 1) * k];
            let lse = r.iter().map(|v| (*v as f64).exp()).sum::<f64>().ln();
            expect += lse - r[labels[i] as usize] as f64;
        }
        assert!((out.loss as f64 - expect / n as f64).abs() < 1e-5);
        check_grad("xent", &logits, &d, 1e-2, 1e-3, |l| {
            let mut s = vec![0.0; n * k];
            cross_entropy(l, &labels, k, &mut s).loss as f64
        });
    }
}
