//! Forward pass: stem -> [max pool] -> blocks -> global average pool -> fc.

use super::{BlockBufs, Frozen, Net, ShortcutPlan, UnitBufs, UnitPlan, block_input};
use crate::kernels::{Epilogue, KernelPath};
use crate::ops::bn::{self, Act, BatchSum, BnParams};
use crate::ops::loss::{self, LossOut};
use crate::ops::pool;
use crate::ops::shortcut::ShortcutSrc;
use crate::profile::{self, Op};
use crate::shape::Dims;

/// Prepared convolution weights by their offset in the parameters (`Net::prepared`).
pub(crate) type Prepared = std::collections::HashMap<usize, crate::ops::conv::Prepared>;

#[allow(clippy::too_many_arguments)]
/// conv -> BN (batch or running statistics; running in training too where the unit is frozen)
/// -> act [with the shortcut added].
/// x: (N, H, W, Cin) -> b.pre, b.out: (N, OH, OW, Cout)
pub(crate) fn unit_forward(
    u: &UnitPlan,
    b: &mut UnitBufs,
    (params, stats, path, prepared, sync): (&[f32], &mut [f32], KernelPath, &Prepared, BatchSum),
    x: &[f32],
    n: usize,
    train: bool,
    shortcut: Option<ShortcutSrc>,
) {
    let (xd, yd) = (Dims { n, ..u.xd }, Dims { n, ..u.yd });
    let c = yd.c;
    let w = &params[u.w..u.w + u.conv.weight_len()];
    let p = BnParams { gamma: &params[u.gamma..u.gamma + c], beta: &params[u.beta..u.beta + c] };
    let (rmean, rvar) = stats[u.rmean..u.rvar + c].split_at_mut(c);
    if !train || u.frozen != Frozen::No {
        // eval, or frozen BN in training: BN folded into the convolution's store, with the residual
        // and ReLU (the running statistics stay as they are)
        let (scale, shift) = b.affine.split_at_mut(c);
        bn::eval_affine_into(&p, rmean, rvar, scale, shift);
        let (scale, shift) = (&*scale, &*shift);
        let epi = Epilogue { affine: Some((scale, shift)), residual: shortcut, relu: u.act != Act::None };
        let prep = prepared.get(&u.w);
        let path = if train {
            b.saved.scale.clear(); // what the backward multiplies by
            b.saved.scale.extend_from_slice(scale);
            u.conv.path_for(path, xd, sync.order)
        } else {
            path
        };
        profile::time_labelled(
            Op::ConvForward,
            || u.conv.label(xd),
            || u.conv.forward_prepared(path, w, prep, &x[..xd.len()], xd, &mut b.out[..yd.len()], &epi),
        );
        return;
    }
    let path = u.conv.path_for(path, xd, sync.order);
    profile::time_labelled(
        Op::ConvForward,
        || u.conv.label(xd),
        || u.conv.forward_with(path, w, &x[..xd.len()], xd, &mut b.pre[..yd.len()]),
    );
    let (pre, out) = (&b.pre[..yd.len()], &mut b.out[..yd.len()]);
    profile::time(Op::BnForward, || {
        bn::forward_train(&p, rmean, rvar, &mut b.saved, pre, yd, u.act, shortcut, out, sync)
    });
}

/// One residual (or plain) block. x: the block input (N, H, W, Cin).
pub(super) fn block_forward(
    bp: &super::plan::BlockPlan,
    bb: &mut BlockBufs,
    (params, stats, path, prepared, sync): (&[f32], &mut [f32], KernelPath, &Prepared, BatchSum),
    x: &[f32],
    n: usize,
    train: bool,
) {
    let last = bp.units.len() - 1;
    for j in 0..=last {
        let (before, rest) = bb.units.split_at_mut(j);
        let input: &[f32] = if j == 0 { x } else { &before[j - 1].out };
        let shortcut = if j < last {
            None
        } else {
            match &bp.shortcut {
                ShortcutPlan::None => None,
                ShortcutPlan::Identity => Some(ShortcutSrc::Identity(&x[..bp.xd.len() * n])),
                ShortcutPlan::PadA { stride } => {
                    Some(ShortcutSrc::PadA { x, xd: Dims { n, ..bp.xd }, yd: Dims { n, ..bp.yd }, stride: *stride })
                }
                ShortcutPlan::Proj(pu) => {
                    let pb = bb.proj.as_mut().expect("projection buffers");
                    unit_forward(pu, pb, (params, stats, path, prepared, sync), x, n, train, None);
                    Some(ShortcutSrc::Identity(&pb.out[..pu.yd.len() * n]))
                }
            }
        };
        debug_assert_eq!(shortcut.is_some(), bp.units[j].act == Act::AddRelu);
        unit_forward(&bp.units[j], &mut rest[0], (params, stats, path, prepared, sync), input, n, train, shortcut);
    }
}

impl Net {
    /// Run the first `n` images of `self.input` forward; the logits land in
    /// `self.logits[..n * classes]`. `train` uses batch statistics and updates
    /// the running ones (and requires a net built for training).
    pub fn forward(&mut self, n: usize, train: bool) {
        self.on_pool(|net| net.forward_here(n, train))
    }

    /// [`Net::forward`] on the calling thread.
    fn forward_here(&mut self, n: usize, train: bool) {
        assert!(n >= 1 && n <= self.batch, "batch {n} outside 1..={}", self.batch);
        assert!(!train || self.train, "training forward on a net built for inference");
        if !self.train && self.prepared_n != n {
            self.prepare(n);
        }
        let Net {
            plan,
            params,
            stats,
            input,
            stem,
            pool_out,
            pool_arg,
            blocks,
            feat,
            logits,
            path,
            prepared,
            sync_bn,
            sum_order,
            ..
        } = self;
        let sync = BatchSum { order: *sum_order, shards: sync_bn.as_deref() };
        let (path, prepared) = (*path, &*prepared);
        unit_forward(&plan.stem, stem, (params, stats, path, prepared, sync), input, n, train, None);
        if let Some((mp, d)) = plan.pool {
            let (sd, od) = (Dims { n, ..plan.stem.yd }, Dims { n, ..d });
            let arg = train.then_some(&mut pool_arg[..od.len()]);
            mp.forward_indexed_if(&stem.out[..sd.len()], sd, &mut pool_out[..od.len()], arg);
        }
        for i in 0..blocks.len() {
            let (before, rest) = blocks.split_at_mut(i);
            let x = block_input(plan.pool.is_some(), stem, pool_out, before);
            block_forward(&plan.blocks[i], &mut rest[0], (params, stats, path, prepared, sync), x, n, train);
        }
        let last = Dims { n, ..plan.block_input_dims(blocks.len()) };
        let out = block_input(plan.pool.is_some(), stem, pool_out, blocks);
        let (fin, fout) = (plan.fc.fin, plan.fc.fout);
        pool::gap_forward(&out[..last.len()], last, &mut feat[..n * fin]);
        plan.fc.forward(
            &params[plan.fc_w..plan.fc_w + fin * fout],
            &params[plan.fc_b..plan.fc_b + fout],
            &feat[..n * fin],
            &mut logits[..n * fout],
        );
    }

    /// Make every convolution's prepared weights for batches of `n` (inference nets).
    fn prepare(&mut self, n: usize) {
        self.prepared.clear();
        for u in self.plan.units() {
            let w = &self.params[u.w..u.w + u.conv.weight_len()];
            if let Some(p) = u.conv.prepare(self.path, w, Dims { n, ..u.xd }) {
                self.prepared.insert(u.w, p);
            }
        }
        self.prepared_n = n;
    }

    /// Softmax cross-entropy of the last forward's logits against `labels`
    /// (one per image); keeps dL/dlogits for [`Net::backward`].
    pub fn loss(&mut self, labels: &[u32]) -> LossOut {
        let (n, k) = (labels.len(), self.classes());
        loss::cross_entropy(&self.logits[..n * k], labels, k, &mut self.dlogits[..n * k])
    }

    /// Logits of image `i` of the last forward.
    pub fn logits_of(&self, i: usize) -> &[f32] {
        let k = self.classes();
        &self.logits[i * k..(i + 1) * k]
    }

    /// The final feature map of the last forward (before global average pooling): (n, H', W', C).
    pub fn feature_map(&self, n: usize) -> (&[f32], Dims) {
        let last = self.blocks.len();
        let d = Dims { n, ..self.plan.block_input_dims(last) };
        (&self.block_input(last)[..d.len()], d)
    }

    /// The fully-convolutional form: the fc applied at every position of the final feature map,
    /// (n, H', W', classes). Its mean over positions is the plain forward's logits (the fc is linear).
    pub fn score_map(&self, n: usize) -> (Vec<f32>, Dims) {
        let (fmap, d) = self.feature_map(n);
        let (fin, fout) = (self.plan.fc.fin, self.plan.fc.fout);
        let mut out = vec![0.0; d.n * d.h * d.w * fout];
        self.plan.fc.forward(
            &self.params[self.plan.fc_w..self.plan.fc_w + fin * fout],
            &self.params[self.plan.fc_b..self.plan.fc_b + fout],
            fmap,
            &mut out,
        );
        (out, Dims { c: fout, ..d })
    }

    /// Features after global average pooling, image `i` of the last forward.
    pub fn features_of(&self, i: usize) -> &[f32] {
        let f = self.plan.fc.fin;
        &self.feat[i * f..(i + 1) * f]
    }
}
