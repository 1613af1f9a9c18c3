//! Backward pass, in the reverse order of forward.rs. Writes every parameter
//! gradient (overwrites, no zeroing needed).
//!
//! Gradient buffers: gy (block output), gx (block input), t1 (a unit's conv
//! output = BN input), t2 (a unit's output / the shortcut's dz), t3 (a
//! projection's conv output).

use super::{BlockBufs, Frozen, Net, ShortcutPlan, UnitBufs, UnitPlan, block_input};
use crate::ops::bn::{self, BatchSum};
use crate::ops::{pool, shortcut};
use crate::profile::{self, Op};
use crate::shape::Dims;

#[allow(clippy::too_many_arguments)]
/// BN (+act) backward of a unit: dy at the unit output -> t1 = dL/d(pre).
pub(super) fn unit_bn_backward(
    u: &UnitPlan,
    b: &UnitBufs,
    (params, sync): (&[f32], BatchSum),
    grads: &mut [f32],
    n: usize,
    dy: &[f32],
    t1: &mut [f32],
    dz_out: Option<&mut [f32]>,
) {
    let yd = Dims { n, ..u.yd };
    let c = yd.c;
    let (dgamma, dbeta) = grads[u.gamma..u.gamma + 2 * c].split_at_mut(c);
    debug_assert_eq!(u.beta, u.gamma + c);
    if u.frozen != Frozen::No {
        // a constant affine map: gamma and beta get no gradient
        dgamma.fill(0.0);
        dbeta.fill(0.0);
        let (y, dy, t1) = (&b.out[..yd.len()], &dy[..yd.len()], &mut t1[..yd.len()]);
        let dz = dz_out.map(|d| &mut d[..yd.len()]);
        profile::time(Op::BnBackward, || bn::backward_frozen(&b.saved.scale[..c], y, dy, u.act, t1, dz));
        return;
    }
    profile::time(Op::BnBackward, || {
        bn::backward(
            &params[u.gamma..u.gamma + c],
            &b.saved,
            &b.pre[..yd.len()],
            yd,
            &b.out[..yd.len()],
            &dy[..yd.len()],
            u.act,
            &mut t1[..yd.len()],
            dgamma,
            dbeta,
            dz_out.map(|d| &mut d[..yd.len()]),
            sync,
        );
    });
}

/// Conv backward of a unit: t1 = dL/d(pre) -> dW, and dx (= or += ) if asked.
#[allow(clippy::too_many_arguments)]
pub(super) fn unit_conv_backward(
    u: &UnitPlan,
    params: &[f32],
    grads: &mut [f32],
    x: &[f32],
    n: usize,
    t1: &[f32],
    dx: Option<(&mut [f32], bool)>,
    s: &mut ConvScratch,
) {
    let (xd, yd) = (Dims { n, ..u.xd }, Dims { n, ..u.yd });
    let wl = u.conv.weight_len();
    let path = u.conv.path_for(s.path, xd, s.order);
    if u.frozen == Frozen::All {
        // a frozen stage's weights get no gradient
        grads[u.w..u.w + wl].fill(0.0);
    } else {
        profile::time(Op::ConvBackwardWeight, || {
            u.conv.backward_weight_with(
                path,
                &x[..xd.len()],
                xd,
                &t1[..yd.len()],
                &mut grads[u.w..u.w + wl],
                s.partials,
                s.order,
            )
        });
    }
    if let Some((dx, accumulate)) = dx {
        profile::time(Op::ConvBackwardData, || {
            u.conv.backward_data_with(
                path,
                &params[u.w..u.w + wl],
                &t1[..yd.len()],
                xd,
                &mut dx[..xd.len()],
                accumulate,
                s.wt,
            )
        });
    }
}

/// What the convolution kernels need besides their operands.
pub(super) struct ConvScratch<'a> {
    /// transposed weights
    pub(super) wt: &'a mut [f32],
    /// per-part weight-gradient partial sums
    pub(super) partials: &'a mut Vec<Vec<f32>>,
    pub(super) path: crate::kernels::KernelPath,
    pub(super) order: crate::par::SumOrder,
}

/// Gradient scratch t1..t3 and the kernels' scratch.
pub(super) struct Scratch<'a> {
    pub(super) t1: &'a mut [f32],
    pub(super) t2: &'a mut [f32],
    pub(super) t3: Option<&'a mut [f32]>,
    pub(super) k: ConvScratch<'a>,
}

/// One block: gy (grad at the block output) -> gx (grad at the block input x).
#[allow(clippy::too_many_arguments)]
pub(super) fn block_backward(
    bp: &super::plan::BlockPlan,
    bb: &BlockBufs,
    (params, sync): (&[f32], BatchSum),
    grads: &mut [f32],
    x: &[f32],
    n: usize,
    gy: &[f32],
    gx: &mut [f32],
    s: &mut Scratch,
) {
    let last = bp.units.len() - 1;
    let (xd, yd) = (Dims { n, ..bp.xd }, Dims { n, ..bp.yd });
    for j in (0..=last).rev() {
        let (u, b) = (&bp.units[j], &bb.units[j]);
        if j == last {
            match &bp.shortcut {
                ShortcutPlan::None => unit_bn_backward(u, b, (params, sync), grads, n, gy, s.t1, None),
                // dz flows unchanged to the block input
                ShortcutPlan::Identity => unit_bn_backward(u, b, (params, sync), grads, n, gy, s.t1, Some(gx)),
                ShortcutPlan::PadA { stride } => {
                    unit_bn_backward(u, b, (params, sync), grads, n, gy, s.t1, Some(s.t2));
                    shortcut::pad_a_backward(&s.t2[..yd.len()], yd, &mut gx[..xd.len()], xd, *stride);
                }
                ShortcutPlan::Proj(pu) => {
                    unit_bn_backward(u, b, (params, sync), grads, n, gy, s.t1, Some(s.t2));
                    let pb = bb.proj.as_ref().expect("projection buffers");
                    let t3 = s.t3.as_deref_mut().expect("projection scratch");
                    unit_bn_backward(pu, pb, (params, sync), grads, n, s.t2, t3, None);
                    unit_conv_backward(pu, params, grads, x, n, t3, Some((gx, false)), &mut s.k);
                }
            }
        } else {
            unit_bn_backward(u, b, (params, sync), grads, n, s.t2, s.t1, None);
        }
        let input: &[f32] = if j == 0 { x } else { &bb.units[j - 1].out };
        let dx = if j == 0 {
            Some((&mut *gx, !matches!(bp.shortcut, ShortcutPlan::None)))
        } else {
            Some((&mut *s.t2, false))
        };
        unit_conv_backward(u, params, grads, input, n, s.t1, dx, &mut s.k);
    }
}

impl Net {
    /// Backward through the last training forward of `n` images, from the
    /// gradient [`Net::loss`] left at the logits. Fills `self.grads`.
    pub fn backward(&mut self, n: usize) {
        self.backward_with(n, &mut |_, _| {})
    }

    /// [`Net::backward`], telling `ready(from, &grads[from..])` after each block that the
    /// gradients from parameter `from` on are final (the overlapped all-reduce starts on them).
    pub fn backward_with(&mut self, n: usize, ready: &mut dyn FnMut(usize, &[f32])) {
        assert!(self.train, "backward on a net built for inference");
        let Net {
            plan,
            params,
            grads,
            input,
            stem,
            pool_out,
            pool_arg,
            blocks,
            feat,
            dlogits,
            dfeat,
            g,
            wt,
            partials,
            path,
            sync_bn,
            sum_order,
            ..
        } = self;
        let sync = BatchSum { order: *sum_order, shards: sync_bn.as_deref() };
        let (fin, fout) = (plan.fc.fin, plan.fc.fout);
        let (dw, db) = grads[plan.fc_w..plan.fc_b + fout].split_at_mut(fin * fout);
        debug_assert_eq!(plan.fc_b, plan.fc_w + fin * fout);
        plan.fc.backward(
            &params[plan.fc_w..plan.fc_w + fin * fout],
            &feat[..n * fin],
            &dlogits[..n * fout],
            dw,
            db,
            Some(&mut dfeat[..n * fin]),
            sync.order,
        );
        let (mut iy, mut ix) = (0usize, 1usize);
        let last = Dims { n, ..plan.block_input_dims(blocks.len()) };
        pool::gap_backward(&dfeat[..n * fin], last, &mut g[iy][..last.len()]);
        let (gbufs, rest) = g.split_at_mut(2);
        let (t1, rest) = rest.split_at_mut(1);
        let (t2, rest) = rest.split_at_mut(1);
        let mut s = Scratch {
            t1: &mut t1[0],
            t2: &mut t2[0],
            t3: rest.first_mut().map(|v| &mut v[..]),
            k: ConvScratch { wt, partials, path: *path, order: *sum_order },
        };
        for i in (0..blocks.len()).rev() {
            let x = block_input(plan.pool.is_some(), stem, pool_out, &blocks[..i]);
            let [gy, gx] = gbufs.get_disjoint_mut([iy, ix]).unwrap();
            block_backward(&plan.blocks[i], &blocks[i], (params, sync), grads, x, n, gy, gx, &mut s);
            std::mem::swap(&mut iy, &mut ix);
            let from = plan.blocks[i].first_param();
            ready(from, &grads[from..]);
        }
        if let Some((mp, d)) = plan.pool {
            let (sd, od) = (Dims { n, ..plan.stem.yd }, Dims { n, ..d });
            let [gy, gx] = gbufs.get_disjoint_mut([iy, ix]).unwrap();
            mp.backward(&gy[..od.len()], &pool_arg[..od.len()], sd, &mut gx[..sd.len()]);
            std::mem::swap(&mut iy, &mut ix);
        }
        let gy = &gbufs[iy];
        unit_bn_backward(&plan.stem, stem, (params, sync), grads, n, gy, s.t1, None);
        unit_conv_backward(&plan.stem, params, grads, input, n, s.t1, None, &mut s.k);
    }
}
