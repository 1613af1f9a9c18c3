//! The region proposal network's layers (Faster R-CNN \[32\]; torchvision's `RPNHead`) on the C4
//! prefix's feature map: a 3x3 convolution of C channels with bias and ReLU, then two sibling 1x1
//! convolutions with bias: A objectness logits and 4A box deltas per feature pixel. NHWC, so the
//! outputs are already in `detect::rpn`'s layout (anchor `i = (y * W + x) * A + a`).
//!
//! Parameters under torchvision's names (below `rpn.head.`): `conv.0.0.weight` / `.bias`,
//! `cls_logits.weight` / `.bias`, `bbox_pred.weight` / `.bias`; initialised as torchvision and
//! py-faster-rcnn do: weights N(0, 0.01), biases zero (counter streams `{seed}/{name}`).

use super::part::{Capacity, PartError};
use super::plan::{ParamKind, TensorInfo};
use crate::kernels::{Epilogue, KernelPath};
use crate::ops::conv::Conv;
use crate::par;
use crate::rng::counter_normal;
use crate::shape::Dims;

/// The RPN's convolutions with their buffers, built for feature maps up to a capacity.
pub struct RpnHead {
    pub conv: Conv,
    pub cls: Conv,
    pub bbox: Conv,
    /// the six tensors, flat in this order: conv weight, bias; cls weight, bias; bbox weight, bias
    pub tensors: Vec<TensorInfo>,
    params: Vec<f32>,
    grads: Vec<f32>,
    capacity: Capacity,
    /// relu(conv(x) + b) of the last forward, (n, H, W, C)
    hidden: Vec<f32>,
    /// its gradient (backward)
    dhidden: Vec<f32>,
    wt: Vec<f32>,
    partials: Vec<Vec<f32>>,
    ones: Vec<f32>,
    /// the last forward's input shape (n = 0: none)
    xd: Dims,
    path: KernelPath,
}

impl RpnHead {
    /// For `channels` input channels (1024 after ResNet-50's layer3), `anchors` anchors per
    /// position (the paper's 9), feature maps of up to `capacity` (n maps of H x W values each).
    pub fn new(channels: usize, anchors: usize, capacity: Capacity, train: bool, seed: u64) -> RpnHead {
        let (c, a) = (channels, anchors);
        let (conv, cls, bbox) = (Conv::new(c, c, 3, 1, 1), Conv::new(c, a, 1, 1, 0), Conv::new(c, 4 * a, 1, 1, 0));
        let mut tensors = vec![];
        let mut at = 0;
        for (name, conv) in [("conv.0.0", conv), ("cls_logits", cls), ("bbox_pred", bbox)] {
            let (k, cin, cout) = (conv.k, conv.cin, conv.cout);
            for (suffix, shape, kind) in [
                ("weight", vec![cout, cin, k, k], ParamKind::ConvWeight { k, cin, cout }),
                ("bias", vec![cout], ParamKind::FcBias),
            ] {
                let len = shape.iter().product();
                tensors.push(TensorInfo { name: format!("{name}.{suffix}"), shape, offset: at, len, kind });
                at += len;
            }
        }
        let mut params = vec![0.0; at];
        for t in tensors.iter().filter(|t| matches!(t.kind, ParamKind::ConvWeight { .. })) {
            // N(0, 0.01) is the same distribution in either layout: draw in ours
            let stream = format!("{seed}/{}", t.name);
            for (i, p) in params[t.offset..t.offset + t.len].iter_mut().enumerate() {
                *p = 0.01 * counter_normal(&stream, i as u64);
            }
        }
        let map = capacity.n * capacity.h * capacity.w * c;
        let threads = par::threads();
        RpnHead {
            conv,
            cls,
            bbox,
            tensors,
            grads: vec![0.0; if train { at } else { 0 }],
            params,
            capacity,
            hidden: vec![0.0; map],
            dhidden: vec![0.0; if train { map } else { 0 }],
            wt: vec![0.0; if train { conv.weight_len() } else { 0 }],
            partials: (0..if train { threads } else { 0 }).map(|_| vec![0.0; conv.weight_len()]).collect(),
            ones: vec![1.0; c.max(4 * a)],
            xd: Dims::default(),
            path: KernelPath::cached(),
        }
    }

    fn range(&self, i: usize) -> std::ops::Range<usize> {
        self.tensors[i].offset..self.tensors[i].offset + self.tensors[i].len
    }

    // ------------------------------------------------------------ forward
    /// x: (n, H, W, C) -> logits (n, H, W, A), deltas (n, H, W, 4A). Refused beyond the capacity.
    pub fn forward(&mut self, x: &[f32], xd: Dims, logits: &mut [f32], deltas: &mut [f32]) -> Result<(), PartError> {
        let (a, c) = (self.cls.cout, self.conv.cin);
        let cap = self.capacity;
        if xd.len() > cap.n * cap.h * cap.w * c || xd.n > cap.n {
            let (need, have) = (xd.len(), self.hidden.len());
            let buffer = "the RPN head's hidden map".to_string();
            return Err(PartError::Capacity { n: xd.n, h: xd.h, w: xd.w, capacity: cap, buffer, need, have });
        }
        if xd.is_empty() {
            return Err(PartError::Empty { n: xd.n, h: xd.h, w: xd.w });
        }
        assert!(
            xd.c == c && x.len() == xd.len() && logits.len() == xd.pixels() * a && deltas.len() == 4 * a * xd.pixels(),
            "rpn head forward: operand lengths"
        );
        let r: Vec<_> = (0..6).map(|i| self.range(i)).collect();
        let RpnHead { conv, cls, bbox, params: p, hidden, ones, path, .. } = self;
        let hidden = &mut hidden[..xd.len()];
        conv.forward_fused(*path, &p[r[0].clone()], x, xd, hidden, &bias_relu(ones, &p[r[1].clone()], true));
        cls.forward_fused(*path, &p[r[2].clone()], hidden, xd, logits, &bias_relu(ones, &p[r[3].clone()], false));
        bbox.forward_fused(*path, &p[r[4].clone()], hidden, xd, deltas, &bias_relu(ones, &p[r[5].clone()], false));
        self.xd = xd;
        Ok(())
    }

    // ----------------------------------------------------------- backward
    /// Gradients at the logits and deltas of the last forward (on `x`) -> the parameter gradients
    /// (overwritten) and the gradient at `x`, added into `dx` (where RoIAlign backward wrote the
    /// head's share of the prefix's output gradient). Refused on a head built for inference or
    /// without a forward.
    pub fn backward(
        &mut self,
        x: &[f32],
        dlogits: &[f32],
        ddeltas: &[f32],
        dx: &mut [f32],
        order: par::SumOrder,
    ) -> Result<(), PartError> {
        if self.grads.is_empty() {
            return Err(PartError::NotTraining);
        }
        let xd = self.xd;
        if xd.is_empty() {
            return Err(PartError::NoForward);
        }
        let (ranges, path): (Vec<_>, _) = ((0..6).map(|i| self.range(i)).collect(), self.path);
        let RpnHead { conv, cls, bbox, params, grads, hidden, dhidden, wt, partials, .. } = self;
        let (hidden, dhidden) = (&hidden[..xd.len()], &mut dhidden[..xd.len()]);
        let (x, dx) = (&x[..xd.len()], &mut dx[..xd.len()]);
        // the two 1x1 convolutions: weights, biases, and the hidden map's gradient
        for (conv1, dy, w, b, first) in
            [(cls, dlogits, &ranges[2], &ranges[3], true), (bbox, ddeltas, &ranges[4], &ranges[5], false)]
        {
            conv1.backward_weight_with(path, hidden, xd, dy, &mut grads[w.clone()], partials, order);
            bias_grad(dy, &mut grads[b.clone()]);
            conv1.backward_data_with(path, &params[w.clone()], dy, xd, dhidden, !first, &mut wt[..conv1.weight_len()]);
        }
        // through the ReLU
        par::for_rows(
            dhidden,
            xd.c,
            64,
            #[inline(always)]
            |first, rows| {
                let h = &hidden[first * xd.c..][..rows.len()];
                rows.iter_mut().zip(h).for_each(|(g, h)| *g = if *h > 0.0 { *g } else { 0.0 });
            },
        );
        conv.backward_weight_with(path, x, xd, dhidden, &mut grads[ranges[0].clone()], partials, order);
        bias_grad(dhidden, &mut grads[ranges[1].clone()]);
        conv.backward_data_with(path, &params[ranges[0].clone()], dhidden, xd, dx, true, wt);
        Ok(())
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

    /// The parameters to change and the gradients to change them with (an optimizer step).
    pub fn step_operands(&mut self) -> (&mut [f32], &[f32]) {
        (&mut self.params, &self.grads)
    }

    pub fn set_kernel_path(&mut self, path: KernelPath) {
        self.path = path;
    }

    /// A tensor by torchvision name, in torchvision layout (convs OIHW).
    pub fn get_torch(&self, name: &str) -> Option<Vec<f32>> {
        Some(super::plan::find_tensor(&self.tensors, &[], name)?.0.read_torch(&self.params))
    }

    /// A parameter's gradient of the last backward in torchvision layout (None on a head built
    /// for inference).
    pub fn grad_torch(&self, name: &str) -> Option<Vec<f32>> {
        let t = super::plan::find_tensor(&self.tensors, &[], name)?.0;
        (!self.grads.is_empty()).then(|| t.read_torch(&self.grads))
    }

    /// Set a tensor from torchvision layout. Errors name the tensor and the shapes.
    pub fn set_torch(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<(), String> {
        let (t, _) =
            super::plan::find_tensor(&self.tensors, &[], name).ok_or_else(|| super::plan::unexpected_tensor(name))?;
        t.write_torch(shape, data, &mut self.params)
    }
}

/// The store of a convolution with bias `b` (as an affine map of scale one), then ReLU if `relu`.
fn bias_relu<'a>(ones: &'a [f32], b: &'a [f32], relu: bool) -> Epilogue<'a> {
    Epilogue { affine: Some((&ones[..b.len()], b)), residual: None, relu }
}

/// db = the sum of dy over its pixels, per channel (f64, pixel order: deterministic).
fn bias_grad(dy: &[f32], db: &mut [f32]) {
    let c = db.len();
    let mut s = vec![0.0f64; c];
    for row in dy.chunks_exact(c) {
        s.iter_mut().zip(row).for_each(|(a, v)| *a += *v as f64);
    }
    db.iter_mut().zip(&s).for_each(|(d, v)| *d = *v as f32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, rand_vec};

    #[test]
    fn backward_matches_finite_differences_on_every_path() {
        let (c, a) = (16, 3);
        let xd = Dims::new(2, 5, 7, c);
        let x = rand_vec(xd.len(), 1);
        let (pl, pd) = (rand_vec(xd.pixels() * a, 2), rand_vec(xd.pixels() * 4 * a, 3));
        for path in KernelPath::all_supported() {
            let mut head = RpnHead::new(c, a, Capacity { n: 2, h: 6, w: 7 }, true, 1);
            head.set_kernel_path(path);
            // weights large enough that every gradient is well above rounding; biases non-zero
            let w: Vec<f32> = rand_vec(head.params().len(), 4).iter().map(|v| 0.3 * v).collect();
            head.params_mut().copy_from_slice(&w);
            let loss = |head: &mut RpnHead, x: &[f32]| -> f64 {
                let (mut l, mut d) = (vec![0.0; pl.len()], vec![0.0; pd.len()]);
                head.forward(x, xd, &mut l, &mut d).unwrap();
                let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
                dot(&l, &pl) + dot(&d, &pd)
            };
            loss(&mut head, &x);
            // the gradient at x is added to what is there
            let mut dx = vec![1.0; xd.len()];
            head.backward(&x, &pl, &pd, &mut dx, par::SumOrder::Threads).unwrap();
            dx.iter_mut().for_each(|v| *v -= 1.0);
            let head = std::cell::RefCell::new(head);
            check_grad(&format!("rpn head dx {path:?}"), &x, &dx, 1e-3, 2e-3, |xp| loss(&mut head.borrow_mut(), xp));
            let g = head.borrow().grads().to_vec();
            for i in 0..6 {
                let r = head.borrow().range(i);
                let name = format!("rpn head {} {path:?}", head.borrow().tensors[i].name);
                check_grad(&name, &w[r.clone()], &g[r.clone()], 1e-3, 2e-3, |v| {
                    let mut h = head.borrow_mut();
                    h.params_mut()[r.clone()].copy_from_slice(v);
                    let l = loss(&mut h, &x);
                    h.params_mut()[r.clone()].copy_from_slice(&w[r.clone()]);
                    l
                });
            }
        }
        // capacity, misuse, names
        let mut head = RpnHead::new(c, a, Capacity { n: 1, h: 4, w: 4 }, false, 1);
        let big = Dims::new(1, 5, 4, c);
        let e = head.forward(&vec![0.0; big.len()], big, &mut vec![0.0; 20 * a], &mut vec![0.0; 80 * a]).unwrap_err();
        assert!(matches!(e, PartError::Capacity { .. }), "{e}");
        let mut dx = vec![0.0; 16 * c];
        assert_eq!(head.backward(&dx.clone(), &[], &[], &mut dx, par::SumOrder::Threads), Err(PartError::NotTraining));
        assert_eq!(head.get_torch("conv.0.0.weight").unwrap().len(), c * c * 9);
        assert!(head.get_torch("bbox_pred.bias").unwrap().iter().all(|v| *v == 0.0));
    }
}
