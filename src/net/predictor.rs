//! The detector's two sibling layers on the RoI head's pooled features (Faster R-CNN, the paper's
//! Sec. 4.3 / appendix; torchvision's `FastRCNNPredictor`): K+1 class scores and 4(K+1)
//! class-specific box deltas, two fc layers ([`Fc`]) reading the same features.
//!
//! Parameters are named as torchvision's predictor names them under `roi_heads.box_predictor.`:
//! `cls_score.weight` (K+1, C), `cls_score.bias`, `bbox_pred.weight` (4(K+1), C), `bbox_pred.bias`.
//! Initialised as py-faster-rcnn and detectron do: weights N(0, 0.01) for the scores and
//! N(0, 0.001) for the deltas, biases zero (counter streams `{seed}/{name}`, as `init.rs`).

use super::plan::{ParamKind, TensorInfo};
use crate::ops::fc::Fc;
use crate::par;
use crate::rng::counter_normal;

/// Class scores and box deltas from (N, C) features.
pub struct BoxPredictor {
    pub cls: Fc,
    pub bbox: Fc,
    /// the four tensors, flat in this order
    pub tensors: Vec<TensorInfo>,
    params: Vec<f32>,
    grads: Vec<f32>,
}

impl BoxPredictor {
    /// For `features` inputs (2048 after ResNet-50's layer4) and `classes` classes including the
    /// background (K+1).
    pub fn new(features: usize, classes: usize, seed: u64) -> BoxPredictor {
        let (cls, bbox) = (Fc { fin: features, fout: classes }, Fc { fin: features, fout: 4 * classes });
        let mut tensors = vec![];
        let mut at = 0;
        for (name, shape, kind) in [
            ("cls_score.weight", vec![classes, features], ParamKind::FcWeight),
            ("cls_score.bias", vec![classes], ParamKind::FcBias),
            ("bbox_pred.weight", vec![4 * classes, features], ParamKind::FcWeight),
            ("bbox_pred.bias", vec![4 * classes], ParamKind::FcBias),
        ] {
            let len = shape.iter().product();
            tensors.push(TensorInfo { name: name.into(), shape, offset: at, len, kind });
            at += len;
        }
        let mut params = vec![0.0; at];
        for t in &tensors {
            let std = match t.name.as_str() {
                "cls_score.weight" => 0.01,
                "bbox_pred.weight" => 0.001,
                _ => continue,
            };
            let stream = format!("{seed}/{}", t.name);
            for (i, p) in params[t.offset..t.offset + t.len].iter_mut().enumerate() {
                *p = std * counter_normal(&stream, i as u64);
            }
        }
        BoxPredictor { cls, bbox, tensors, grads: vec![0.0; at], params }
    }

    fn slices<'a>(&self, v: &'a [f32]) -> [&'a [f32]; 4] {
        let t = &self.tensors;
        std::array::from_fn(|i| &v[t[i].offset..t[i].offset + t[i].len])
    }

    // ------------------------------------------------------------ forward
    /// features: (N, C) -> scores: (N, K+1), deltas: (N, 4(K+1)).
    pub fn forward(&self, features: &[f32], scores: &mut [f32], deltas: &mut [f32]) {
        let [cw, cb, bw, bb] = self.slices(&self.params);
        self.cls.forward(cw, cb, features, scores);
        self.bbox.forward(bw, bb, features, deltas);
    }

    // ----------------------------------------------------------- backward
    /// Gradients at the scores and deltas (N, K+1), (N, 4(K+1)) -> the parameter gradients
    /// (overwritten) and, if asked, the gradient at the features (N, C), overwritten. The sums
    /// over N in `order`.
    pub fn backward(
        &mut self,
        features: &[f32],
        dscores: &[f32],
        ddeltas: &[f32],
        dfeatures: Option<&mut [f32]>,
        order: par::SumOrder,
    ) {
        let t = &self.tensors;
        let (cls, bbox) = self.grads.split_at_mut(t[2].offset);
        let (dcw, dcb) = cls.split_at_mut(t[1].offset);
        let (dbw, dbb) = bbox.split_at_mut(t[3].offset - t[2].offset);
        let [cw, _, bw, _] = {
            let t = &self.tensors;
            let p = &self.params;
            std::array::from_fn(|i| &p[t[i].offset..t[i].offset + t[i].len])
        };
        self.cls.backward(cw, features, dscores, dcw, dcb, None, order);
        self.bbox.backward(bw, features, ddeltas, dbw, dbb, None, order);
        let Some(dx) = dfeatures else { return };
        let (fin, (kc, kb)) = (self.cls.fin, (self.cls.fout, self.bbox.fout));
        // dx = dscores W_cls + ddeltas W_bbox, row by row
        par::for_rows(
            dx,
            fin,
            1,
            #[inline(always)]
            |first, dxs| {
                for (r, dxr) in dxs.chunks_exact_mut(fin).enumerate() {
                    let i = first + r;
                    dxr.fill(0.0);
                    for (g, wr) in dscores[i * kc..(i + 1) * kc].iter().zip(cw.chunks_exact(fin)) {
                        dxr.iter_mut().zip(wr).for_each(|(d, w)| *d += g * w);
                    }
                    for (g, wr) in ddeltas[i * kb..(i + 1) * kb].iter().zip(bw.chunks_exact(fin)) {
                        dxr.iter_mut().zip(wr).for_each(|(d, w)| *d += g * w);
                    }
                }
            },
        );
    }

    pub fn params(&self) -> &[f32] {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    pub fn grads_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }

    /// The parameters to change and the gradients to change them with (an optimizer step).
    pub fn step_operands(&mut self) -> (&mut [f32], &[f32]) {
        (&mut self.params, &self.grads)
    }

    /// A tensor by name (torchvision's layout is ours for fc layers).
    pub fn get_torch(&self, name: &str) -> Option<Vec<f32>> {
        Some(super::plan::find_tensor(&self.tensors, &[], name)?.0.read_torch(&self.params))
    }

    /// A parameter's gradient of the last backward, by name.
    pub fn grad_torch(&self, name: &str) -> Option<Vec<f32>> {
        Some(super::plan::find_tensor(&self.tensors, &[], name)?.0.read_torch(&self.grads))
    }

    /// Set a tensor by name. Errors name the tensor and the shapes.
    pub fn set_torch(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<(), String> {
        let (t, _) =
            super::plan::find_tensor(&self.tensors, &[], name).ok_or_else(|| super::plan::unexpected_tensor(name))?;
        t.write_torch(shape, data, &mut self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, rand_vec};

    #[test]
    fn backward_matches_finite_differences() {
        let (n, c, k) = (3, 11, 4);
        let mut p = BoxPredictor::new(c, k, 1);
        // weights large enough that every gradient is well above rounding
        let w = rand_vec(p.params().len(), 2);
        p.params_mut().copy_from_slice(&w);
        let x = rand_vec(n * c, 3);
        let (ps, pd) = (rand_vec(n * k, 4), rand_vec(n * 4 * k, 5));
        let loss = |p: &BoxPredictor, x: &[f32]| -> f64 {
            let (mut s, mut d) = (vec![0.0; n * k], vec![0.0; n * 4 * k]);
            p.forward(x, &mut s, &mut d);
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
            dot(&s, &ps) + dot(&d, &pd)
        };
        let mut dx = vec![0.0; n * c];
        p.backward(&x, &ps, &pd, Some(&mut dx), par::SumOrder::Threads);
        check_grad("predictor dx", &x, &dx, 1e-2, 1e-3, |xp| loss(&p, xp));
        let g = p.grads().to_vec();
        let cell = std::cell::RefCell::new(BoxPredictor::new(c, k, 1));
        check_grad("predictor params", &w, &g, 1e-2, 1e-3, |wp| {
            let mut q = cell.borrow_mut();
            q.params_mut().copy_from_slice(wp);
            loss(&q, &x)
        });
        // names and shapes as torchvision's predictor
        assert_eq!(p.get_torch("bbox_pred.bias").unwrap().len(), 4 * k);
        assert!(p.set_torch("cls_score.weight", &[k, c + 1], &[0.0; 4]).unwrap_err().contains("expected shape"));
        // the initialisation: small normal weights, zero biases
        let fresh = BoxPredictor::new(2048, 81, 7);
        let cw = fresh.get_torch("cls_score.weight").unwrap();
        let std = (cw.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / cw.len() as f64).sqrt();
        assert!((std - 0.01).abs() < 5e-4, "{std}");
        assert!(fresh.get_torch("bbox_pred.bias").unwrap().iter().all(|v| *v == 0.0));
    }
}
