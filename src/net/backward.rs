//! Backward pass, in the reverse order of forward.rs. Writes every parameter
//! gradient (overwrites, no zeroing needed).
//!
//! Gradient buffers: gy (block output), gx (block input), t1 (a unit's conv
//! output = BN input), t2 (a unit's output / the shortcut's dz), t3 (a
//! projection's conv output). A block whose BN is frozen throughout (a constant
//! affine map: detection) needs only gy, gx and one more ([`block_backward_frozen`]).

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
        profile::time_labelled(
            Op::ConvBackwardWeight,
            || u.conv.label(xd),
            || {
                u.conv.backward_weight_with(
                    path,
                    &x[..xd.len()],
                    xd,
                    &t1[..yd.len()],
                    &mut grads[u.w..u.w + wl],
                    s.partials,
                    s.order,
                )
            },
        );
    }
    if let Some((dx, accumulate)) = dx {
        profile::time_labelled(
            Op::ConvBackwardData,
            || u.conv.label(xd),
            || {
                u.conv.backward_data_with(
                    path,
                    &params[u.w..u.w + wl],
                    &t1[..yd.len()],
                    xd,
                    &mut dx[..xd.len()],
                    accumulate,
                    s.wt,
                )
            },
        );
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
pub(super) struct Scratch<'a, 'k> {
    pub(super) t1: &'a mut [f32],
    pub(super) t2: &'a mut [f32],
    pub(super) t3: Option<&'a mut [f32]>,
    pub(super) k: &'a mut ConvScratch<'k>,
}

impl<'a, 'k> Scratch<'a, 'k> {
    /// t1, t2 and (with a projection) t3 from the first of `bufs`.
    pub(super) fn new(bufs: &'a mut [Vec<f32>], k: &'a mut ConvScratch<'k>) -> Self {
        let [t1, t2, rest @ ..] = bufs else { panic!("block_backward needs two scratch buffers") };
        Scratch { t1, t2, t3: rest.first_mut().map(|v| &mut v[..]), k }
    }
}

/// One block: gy (grad at the block output) -> gx (grad at the block input x). Frozen BN
/// included (`Net` runs frozen blocks here; a network part in place: [`block_backward_frozen`],
/// checked against this bit for bit in `part_tests.rs`).
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
                    unit_conv_backward(pu, params, grads, x, n, t3, Some((gx, false)), s.k);
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
        unit_conv_backward(u, params, grads, input, n, s.t1, dx, s.k);
    }
}

/// One block whose BN is frozen throughout (every unit's and the projection's BN a constant
/// affine map): gy (grad at the block output) -> gx (grad at the block input x; None: not
/// wanted, nothing below learns), in place. The BN backward is elementwise here, so the
/// gradients need no buffers of their own: `gy` becomes dz (ReLU mask), gives the shortcut its
/// gradient, becomes the last conv's output gradient (x scale); the convolutions' data
/// gradients then alternate between `t` and `gy`. The values are [`block_backward`]'s bit for
/// bit. Sizes: `gy` holds the block output and, for three units or more, unit j - 2's output
/// (j = last, last - 2, ...); `t` the projection's output and unit j - 1's (j = last, last - 2, ...)
/// ([`frozen_buffer_needs`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn block_backward_frozen(
    bp: &super::plan::BlockPlan,
    bb: &BlockBufs,
    params: &[f32],
    grads: &mut [f32],
    x: &[f32],
    n: usize,
    gy: &mut [f32],
    mut gx: Option<&mut [f32]>,
    t: &mut [f32],
    k: &mut ConvScratch,
) {
    debug_assert!(bp.bn_frozen());
    let last = bp.units.len() - 1;
    let (xd, yd) = (Dims { n, ..bp.xd }, Dims { n, ..bp.yd });
    // dz = gy masked by the block's ReLU: the shortcut's gradient
    let (u, b) = (&bp.units[last], &bb.units[last]);
    profile::time(Op::BnBackward, || {
        bn::backward_frozen_in_place(None, &b.out[..yd.len()], u.act, yd.c, &mut gy[..yd.len()])
    });
    match &bp.shortcut {
        ShortcutPlan::None => {}
        ShortcutPlan::Identity => {
            if let Some(gx) = gx.as_deref_mut() {
                gx[..xd.len()].copy_from_slice(&gy[..yd.len()]);
            }
        }
        ShortcutPlan::PadA { stride } => {
            if let Some(gx) = gx.as_deref_mut() {
                shortcut::pad_a_backward(&gy[..yd.len()], yd, &mut gx[..xd.len()], xd, *stride);
            }
        }
        ShortcutPlan::Proj(pu) => {
            let pb = bb.proj.as_ref().expect("projection buffers");
            let len = n * pu.yd.len();
            t[..len].copy_from_slice(&gy[..len]);
            unit_bn_backward_in_place(pu, pb, grads, n, t);
            unit_conv_backward(pu, params, grads, x, n, t, gx.as_deref_mut().map(|g| (g, false)), k);
        }
    }
    // gy: the last conv's output gradient; then down the units, alternating with t
    let (mut cur, mut other): (&mut [f32], &mut [f32]) = (gy, t);
    unit_bn_backward_in_place(u, b, grads, n, cur);
    for j in (1..=last).rev() {
        let (pu, pb) = (&bp.units[j - 1], &bb.units[j - 1]);
        unit_conv_backward(&bp.units[j], params, grads, &pb.out, n, cur, Some((&mut *other, false)), k);
        unit_bn_backward_in_place(pu, pb, grads, n, other);
        std::mem::swap(&mut cur, &mut other);
    }
    let accumulate = !matches!(bp.shortcut, ShortcutPlan::None);
    unit_conv_backward(&bp.units[0], params, grads, x, n, cur, gx.map(|g| (g, accumulate)), k);
}

/// Frozen BN backward of a unit in place: `d` (dy at the unit output) becomes the gradient at
/// its conv output (ReLU mask x scale); gamma and beta get zero gradient.
pub(super) fn unit_bn_backward_in_place(u: &UnitPlan, b: &UnitBufs, grads: &mut [f32], n: usize, d: &mut [f32]) {
    debug_assert!(u.frozen != Frozen::No);
    let (len, c) = (n * u.yd.len(), u.yd.c);
    grads[u.gamma..u.beta + c].fill(0.0);
    let y = if u.act == bn::Act::None { &[][..] } else { &b.out[..len] };
    profile::time(Op::BnBackward, || {
        bn::backward_frozen_in_place(Some(&b.saved.scale[..c]), y, u.act, c, &mut d[..len])
    });
}

/// What [`block_backward_frozen`] needs of its buffers, per input: (`gy`, `t`) beyond the block
/// output (gy) and input (gx).
pub(super) fn frozen_buffer_needs(bp: &super::plan::BlockPlan) -> (usize, usize) {
    let (mut gy, mut t) = (bp.yd.len(), 0);
    if let ShortcutPlan::Proj(pu) = &bp.shortcut {
        t = pu.yd.len();
    }
    let last = bp.units.len() - 1;
    for j in (1..=last).rev() {
        // unit j's data gradient (unit j - 1's output) lands in t, gy, t, ... from the last unit
        let need = bp.units[j - 1].yd.len();
        if (last - j).is_multiple_of(2) { t = t.max(need) } else { gy = gy.max(need) }
    }
    (gy, t)
}

impl Net {
    /// Backward through the last training forward of `n` images, from the
    /// gradient [`Net::loss`] left at the logits. Fills `self.grads`.
    pub fn backward(&mut self, n: usize) {
        self.backward_with(n, &mut |_, _| {})
    }

    /// [`Net::backward`], telling `ready(from, &grads[from..])` after each block that the
    /// gradients from parameter `from` on are final (the overlapped all-reduce starts on them).
    pub fn backward_with(&mut self, n: usize, ready: &mut (dyn FnMut(usize, &[f32]) + Send)) {
        self.on_pool(|net| net.backward_here(n, ready))
    }

    /// [`Net::backward_with`] on the calling thread.
    fn backward_here(&mut self, n: usize, ready: &mut (dyn FnMut(usize, &[f32]) + Send)) {
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
        let mut k = ConvScratch { wt, partials, path: *path, order: *sum_order };
        let mut s = Scratch::new(rest, &mut k);
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
        unit_conv_backward(&plan.stem, params, grads, input, n, s.t1, None, s.k);
    }
}
