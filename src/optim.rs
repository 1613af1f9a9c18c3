//! SGD with momentum and weight decay, as Caffe and PyTorch do it:
//! v = m * v + (g + wd * w);  w = w - lr * v.

use crate::par;

pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
    /// momentum buffer, one value per parameter
    pub velocity: Vec<f32>,
    /// the parameters that move (None: all); the rest keep their values and momentum
    pub trainable: Option<Vec<std::ops::Range<usize>>>,
}

impl Sgd {
    /// The paper's settings: momentum 0.9, weight decay 1e-4.
    pub fn new(n_params: usize) -> Sgd {
        Sgd { momentum: 0.9, weight_decay: 1e-4, velocity: vec![0.0; n_params], trainable: None }
    }

    /// One step at learning rate `lr` of the trainable parameters (each value on its own: any
    /// split of the parameters across tasks gives the same bits).
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        if let Some(ranges) = self.trainable.clone() {
            for r in ranges {
                self.step_range(params, grads, lr, r);
            }
            return;
        }
        let (m, wd) = (self.momentum, self.weight_decay);
        par::for_rows_pair(
            params,
            1,
            &mut self.velocity,
            1,
            1 << 14,
            #[inline(always)]
            |first, w, v| {
                for ((w, g), v) in w.iter_mut().zip(&grads[first..]).zip(v.iter_mut()) {
                    *v = m * *v + g + wd * *w;
                    *w -= lr * *v;
                }
            },
        );
    }

    /// [`Sgd::step`] on `range` of the parameters only (the rest keep their values and momentum).
    pub fn step_range(&mut self, params: &mut [f32], grads: &[f32], lr: f32, range: std::ops::Range<usize>) {
        let (m, wd) = (self.momentum, self.weight_decay);
        for ((w, g), v) in params[range.clone()].iter_mut().zip(&grads[range.clone()]).zip(&mut self.velocity[range]) {
            *v = m * *v + g + wd * *w;
            *w -= lr * *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_update_rule() {
        let mut w = vec![1.0f32, -2.0];
        let g = vec![0.5f32, 0.25];
        let mut s = Sgd::new(2);
        s.step(&mut w, &g, 0.1);
        // v = g + wd w
        let v0 = [0.5 + 1e-4, 0.25 - 2e-4];
        assert!((w[0] - (1.0 - 0.1 * v0[0])).abs() < 1e-7);
        assert!((w[1] - (-2.0 - 0.1 * v0[1])).abs() < 1e-7);
        let w1 = w.clone();
        s.step(&mut w, &g, 0.1);
        let v1 = 0.9 * v0[0] + 0.5 + 1e-4 * w1[0];
        assert!((w[0] - (w1[0] - 0.1 * v1)).abs() < 1e-7);
    }

    #[test]
    fn a_mask_freezes_the_other_parameters() {
        let mut w = vec![1.0f32, -2.0, 3.0, 4.0];
        let g = vec![0.5f32, 0.25, 1.0, 1.0];
        let mut s = Sgd { trainable: Some(vec![1..2, 3..4]), ..Sgd::new(4) };
        s.step(&mut w, &g, 0.1);
        assert_eq!((w[0], w[2]), (1.0, 3.0), "outside the mask: unchanged");
        assert_eq!((s.velocity[0], s.velocity[2]), (0.0, 0.0));
        assert!((w[1] - (-2.0 - 0.1 * (0.25 - 2e-4))).abs() < 1e-7);
        assert!((w[3] - (4.0 - 0.1 * (1.0 + 4e-4))).abs() < 1e-6);
    }
}
