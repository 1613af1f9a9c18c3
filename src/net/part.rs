//! Parts of a network, for detection (issue 18: Faster R-CNN on a ResNet "C4" backbone). The
//! *prefix* (the stem and the stages up to stride 16) runs on whole images and is shared by the RPN
//! and the per-region head; the *suffix* (the remaining stage and global average pooling) runs on
//! a batch of RoI features. Both are the same type, [`Part`]: a [`PartPlan`] (the units of a
//! [`Stages`] range of an [`ArchSpec`], with their torchvision names, so that `.pth` weights and
//! our checkpoints load into each part by name) plus buffers allocated once for a capacity
//! ([`Capacity`]: inputs per call and their largest H x W).
//!
//! Unlike [`crate::net::Net`], a part
//! - runs inputs of any size within its capacity, per call ([`Part::input_mut`] re-lays the shapes:
//!   an image of 600 x 1000, the next of 1000 x 600, or 37 RoIs after 128): a call fits when every
//!   buffer holds its activation (so a part built for 600 x 1000 also runs 1000 x 600), and a call
//!   that does not is refused with [`PartError::Capacity`];
//! - takes the gradient at its output from outside ([`Part::output_grad_mut`]: the RPN head's and
//!   RoIAlign backward's for the prefix, the box predictor's for the suffix) and, without a stem,
//!   gives the gradient at its input ([`Part::input_grad`]: RoIAlign backward's input);
//! - is frozen as built ([`Freeze`]: BN as a constant affine map, the first stages with no gradient
//!   at all); backward stops below the last frozen stage, and frozen BN keeps no `pre` buffer.
//!
//! The layers are the whole network's (`forward.rs` / `backward.rs`, unit by unit and block by
//! block), so a prefix followed by a suffix computes the whole network's forward and backward up
//! to global average pooling bit for bit (tested below).
//!
//! One training step of a C4 Faster R-CNN on this engine (the region logic, `detect::rpn` and
//! `detect::roi_head`, left out: it turns the heads' outputs into losses and their gradients, and
//! proposals into the sampled RoIs):
//!
//! ```no_run
//! use resnet::arch::{ArchOptions, ArchSpec};
//! use resnet::detect::roi::{RoI, RoIAlign};
//! use resnet::net::Freeze;
//! use resnet::net::part::{Capacity, Part, Stages};
//! use resnet::net::predictor::BoxPredictor;
//! use resnet::net::rpn_head::RpnHead;
//! use resnet::par::SumOrder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let spec = ArchSpec::parse("resnet50", &ArchOptions::default())?;
//! let freeze = Freeze { bn: true, at: 2 }; // BN frozen everywhere; conv1 and layer1 learn nothing
//! let cap = Capacity { n: 1, h: 1000, w: 1000 }; // 600 x 1000 and 1000 x 600 images
//! let mut prefix = Part::new(&spec, Stages::c4_prefix(&spec), cap, freeze, true, 0)?;
//! let mut suffix = Part::new(&spec, Stages::c4_suffix(&spec), Capacity { n: 128, h: 14, w: 14 }, freeze, true, 0)?;
//! // (weights: resnet::weights::load_part(&mut prefix, &state_dict), and the suffix alike)
//! let m = prefix.plan.map; // the feature map at the capacity: 63 x 63 x 1024
//! let (anchors, classes) = (9, 21);
//! let mut rpn = RpnHead::new(m.c, anchors, Capacity { n: 1, h: m.h, w: m.w }, true, 0);
//! let mut predictor = BoxPredictor::new(spec.features(), classes, 0);
//! let align = RoIAlign { out_h: 14, out_w: 14, spatial_scale: 1.0 / 16.0, sampling_ratio: 0, aligned: true };
//! let image = vec![0.0; 600 * 1000 * 3]; // NHWC
//! let rois = vec![RoI { image: 0, bbox: [10.0, 20.0, 300.0, 400.0] }];
//!
//! // forward: prefix -> RPN head; RoIAlign -> suffix -> predictor
//! prefix.input_mut(1, 600, 1000)?.copy_from_slice(&image);
//! prefix.forward(true)?;
//! let (fmap, fd) = prefix.output(); // (1, 38, 63, 1024)
//! let (mut logits, mut deltas) = (vec![0.0; fd.pixels() * anchors], vec![0.0; fd.pixels() * 4 * anchors]);
//! rpn.forward(fmap, fd, &mut logits, &mut deltas)?;
//! align.forward(fmap, fd, &rois, suffix.input_mut(rois.len(), 14, 14)?);
//! suffix.forward(true)?;
//! let k = rois.len();
//! let (mut scores, mut boxes) = (vec![0.0; k * classes], vec![0.0; k * 4 * classes]);
//! predictor.forward(suffix.output().0, &mut scores, &mut boxes);
//! // the losses' gradients (detect::rpn::rpn_loss, detect::roi_head::fastrcnn_loss)
//! let (dlogits, ddeltas) = (vec![0.0; logits.len()], vec![0.0; deltas.len()]);
//! let (dscores, dboxes) = (vec![0.0; scores.len()], vec![0.0; boxes.len()]);
//!
//! // backward: predictor -> suffix -> RoIAlign + RPN head -> prefix
//! let (feat, dfeat) = suffix.output_and_grad_mut();
//! predictor.backward(feat, &dscores, &dboxes, Some(dfeat), SumOrder::Threads);
//! suffix.backward()?;
//! let (droi, _) = suffix.input_grad().expect("a part without a stem has an input gradient");
//! let (fmap, dfmap) = prefix.output_and_grad_mut();
//! align.backward(droi, fd, &rois, dfmap); // overwrites
//! rpn.backward(fmap, &dlogits, &ddeltas, dfmap, SumOrder::Threads)?; // adds
//! prefix.backward()?;
//! // then SGD on each (`step_operands`), masked by `plan.trainable()` for the parts
//! # Ok(())
//! # }
//! ```

use super::backward::{
    ConvScratch, Scratch, block_backward, block_backward_frozen, frozen_buffer_needs, unit_bn_backward,
    unit_bn_backward_in_place, unit_conv_backward,
};
use super::forward::{Prepared, block_forward, unit_forward};
use super::plan::{BlockPlan, Freeze, Frozen, Plan, ShortcutPlan, TensorInfo, UnitPlan, trainable_ranges};
use super::{BlockBufs, BuildError, UnitBufs, available_memory, unit_bufs};
use crate::arch::ArchSpec;
use crate::kernels::KernelPath;
use crate::ops::bn::BatchSum;
use crate::ops::pool::{self, MaxPool};
use crate::shape::Dims;
use std::collections::HashMap;

/// Which part of a network: the stem (conv1 + BN + ReLU, and the max pool where the family has
/// one) if `stem`, the stages `from..to` (0-based: torchvision's `layer{from + 1}` ..
/// `layer{to}`), then global average pooling if `pool` (the output is (N, C), not a feature map).
/// Never the fc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stages {
    pub stem: bool,
    pub from: usize,
    pub to: usize,
    pub pool: bool,
}

impl Stages {
    /// The whole network up to global average pooling (everything but the fc).
    pub fn all(spec: &ArchSpec) -> Stages {
        Stages { stem: true, from: 0, to: spec.stages.len(), pool: true }
    }

    /// The C4 prefix: the stem and every stage but the last, no pooling. ImageNet family: conv1 ..
    /// layer3 ("conv4_x", stride 16); CIFAR family: the stem and the first two stages (stride 2).
    pub fn c4_prefix(spec: &ArchSpec) -> Stages {
        Stages { stem: true, from: 0, to: spec.stages.len().saturating_sub(1), pool: false }
    }

    /// The C4 suffix, run per RoI: the last stage (its first block strided, as torchvision's and
    /// detectron's res5 head) and global average pooling.
    pub fn c4_suffix(spec: &ArchSpec) -> Stages {
        let last = spec.stages.len().saturating_sub(1);
        Stages { stem: false, from: last, to: spec.stages.len(), pool: true }
    }

    fn check(&self, spec: &ArchSpec) -> Result<(), BuildError> {
        let n = spec.stages.len();
        if self.from > self.to || self.to > n {
            return Err(BuildError::Invalid(format!(
                "stages {}..{} are not a range of {}'s {n} stages",
                self.from, self.to, spec.name
            )));
        }
        if !self.stem && self.from == self.to {
            return Err(BuildError::Invalid("a network part needs the stem or at least one stage".into()));
        }
        Ok(())
    }
}

/// The largest input a [`Part`] is built for: `n` images (prefix) or RoIs (suffix) of `h` x `w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub n: usize,
    pub h: usize,
    pub w: usize,
}

/// The units of a [`Stages`] range of a network at one input size: the whole network's units
/// ([`Plan`]) with their torchvision names, their parameters and statistics laid out afresh in
/// two flat buffers of the part's own (in torchvision order). [`PartPlan::reshape`] sets every
/// shape for another input size without allocating.
#[derive(Clone, Debug)]
pub struct PartPlan {
    pub spec: ArchSpec,
    pub stages: Stages,
    /// input of one image / RoI (H, W, C)
    pub input: Dims,
    pub stem: Option<UnitPlan>,
    pub pool: Option<(MaxPool, Dims)>,
    pub blocks: Vec<BlockPlan>,
    /// the last feature map of one input (before global average pooling, if any)
    pub map: Dims,
    pub params: Vec<TensorInfo>,
    pub n_params: usize,
    pub stats: Vec<TensorInfo>,
    pub n_stats: usize,
}

/// Set a unit's shapes for input `xd`.
fn set_dims(u: &mut UnitPlan, xd: Dims) {
    u.xd = xd;
    u.yd = u.conv.out_dims(xd);
}

impl PartPlan {
    /// The units of `stages` of `spec` for inputs of `h` x `w`, frozen as `freeze` says.
    pub fn new(spec: &ArchSpec, stages: Stages, h: usize, w: usize, freeze: Freeze) -> Result<PartPlan, BuildError> {
        stages.check(spec)?;
        let mut full = Plan::new(spec, spec.input_size, spec.input_size);
        full.freeze(freeze);
        let keep = |name: &str| {
            (stages.stem && (name.starts_with("conv1.") || name.starts_with("bn1.")))
                || (stages.from..stages.to).any(|s| name.starts_with(&format!("layer{}.", s + 1)))
        };
        // the kept tensors, laid out afresh in the same (torchvision) order
        let relay = |table: &[TensorInfo]| {
            let (mut kept, mut at, mut moved) = (vec![], 0, HashMap::new());
            for t in table.iter().filter(|t| keep(&t.name)) {
                moved.insert(t.offset, at);
                kept.push(TensorInfo { offset: at, ..t.clone() });
                at += t.len;
            }
            (kept, at, moved)
        };
        let (params, n_params, pmap) = relay(&full.params);
        let (stats, n_stats, smap) = relay(&full.stats);
        let moved = |u: &UnitPlan| UnitPlan {
            w: pmap[&u.w],
            gamma: pmap[&u.gamma],
            beta: pmap[&u.beta],
            rmean: smap[&u.rmean],
            rvar: smap[&u.rvar],
            ..u.clone()
        };
        let blocks: Vec<BlockPlan> = full
            .blocks
            .iter()
            .filter(|b| (stages.from..stages.to).contains(&b.stage))
            .map(|b| BlockPlan {
                units: b.units.iter().map(moved).collect(),
                shortcut: match &b.shortcut {
                    ShortcutPlan::Proj(u) => ShortcutPlan::Proj(moved(u)),
                    other => other.clone(),
                },
                ..b.clone()
            })
            .collect();
        let cin = if stages.stem { spec.in_channels } else { blocks[0].xd.c };
        let mut plan = PartPlan {
            spec: spec.clone(),
            stages,
            input: Dims::new(1, h, w, cin),
            stem: stages.stem.then(|| moved(&full.stem)),
            pool: if stages.stem { full.pool } else { None },
            blocks,
            map: Dims::default(),
            params,
            n_params,
            stats,
            n_stats,
        };
        plan.reshape(h, w);
        Ok(plan)
    }

    /// Set every shape for inputs of `h` x `w` (no allocation).
    pub fn reshape(&mut self, h: usize, w: usize) {
        let mut d = Dims::new(1, h, w, self.input.c);
        self.input = d;
        if let Some(u) = &mut self.stem {
            set_dims(u, d);
            d = u.yd;
        }
        if let Some((mp, pd)) = &mut self.pool {
            *pd = mp.out_dims(d);
            d = *pd;
        }
        for b in &mut self.blocks {
            b.xd = d;
            for u in &mut b.units {
                set_dims(u, d);
                d = u.yd;
            }
            if let ShortcutPlan::Proj(u) = &mut b.shortcut {
                set_dims(u, b.xd);
            }
            b.yd = d;
        }
        self.map = d;
    }

    /// The output of one input: the last feature map, or (1, 1, C) after global average pooling.
    pub fn output(&self) -> Dims {
        if self.stages.pool { Dims::new(1, 1, 1, self.map.c) } else { self.map }
    }

    /// Every unit in forward order.
    pub fn units(&self) -> impl Iterator<Item = &UnitPlan> {
        self.stem.iter().chain(self.blocks.iter().flat_map(|b| {
            b.units.iter().chain(match &b.shortcut {
                ShortcutPlan::Proj(u) => Some(u),
                _ => None,
            })
        }))
    }

    /// The parameter ranges that learn (the optimizer mask `Sgd::trainable`).
    pub fn trainable(&self) -> Vec<std::ops::Range<usize>> {
        trainable_ranges(self.n_params, self.units())
    }

    /// The first block backward runs through: below it every unit is frozen entirely and no
    /// gradient is asked for (a part with a stem gives none at its input).
    fn first_backward_block(&self) -> usize {
        let learns = |u: &UnitPlan| u.frozen != Frozen::All;
        if self.stem.as_ref().is_none_or(learns) {
            return 0;
        }
        let block_learns = |b: &BlockPlan| b.units.iter().any(learns);
        self.blocks.iter().position(block_learns).unwrap_or(self.blocks.len())
    }

    /// The projections' outputs share one buffer: nothing reads them after the block's forward
    /// (inference, or backward in place: frozen BN's backward of a unit without ReLU needs no
    /// output). In training that buffer is backward's scratch (`g[2]`, idle in forward), in
    /// inference one of its own. Otherwise each keeps its own.
    fn shares_projection_output(&self, train: bool) -> bool {
        !train || self.backward_in_place()
    }

    /// Values per input of the shared projection buffer of its own (inference; training lends
    /// backward's scratch instead, and parts that do not share have none).
    fn projection_buffer(&self, train: bool) -> usize {
        if !train && self.shares_projection_output(train) { self.max_projection_output() } else { 0 }
    }

    /// Largest projection output of one input at the current shape (0: none).
    fn max_projection_output(&self) -> usize {
        let proj = |b: &BlockPlan| match &b.shortcut {
            ShortcutPlan::Proj(u) => Some(u.yd.len()),
            _ => None,
        };
        self.blocks.iter().filter_map(proj).max().unwrap_or(0)
    }

    fn has_projection(&self) -> bool {
        self.blocks.iter().any(|b| matches!(b.shortcut, ShortcutPlan::Proj(_)))
    }

    /// Largest activation of one input at the current shape, any unit's input or output.
    fn max_activation(&self) -> usize {
        self.units().map(|u| u.yd.len().max(u.xd.len())).max().unwrap_or(0)
    }

    /// Largest unit output of one input at the current shape. On RoIs the block input
    /// (14 x 14 x 1024) is twice any output (7 x 7 x 2048).
    fn max_output(&self) -> usize {
        self.units().map(|u| u.yd.len()).max().unwrap_or(0)
    }

    /// Every unit backward reaches has frozen BN (a constant affine map): backward runs in place
    /// (`backward::block_backward_frozen`) with three gradient buffers.
    fn backward_in_place(&self) -> bool {
        let lo = self.first_backward_block();
        let stem = self.stem.as_ref().filter(|_| lo == 0);
        stem.is_none_or(|u| u.frozen != Frozen::No) && self.blocks[lo..].iter().all(BlockPlan::bn_frozen)
    }

    /// Whether backward computes the gradient at block `i`'s input: not below the blocks that
    /// learn, unless the part has no stem (the suffix: RoIAlign backward takes it).
    fn wants_input_grad(&self, i: usize, lo: usize) -> bool {
        self.stem.is_none() || i > lo || lo == 0
    }

    /// Values per input each gradient buffer holds at the current shape (none for inference):
    /// [0] and [1] at block outputs and inputs, alternating ([0]: the gradient at the output when
    /// backward starts), then the scratch. In place (frozen BN) the two alternating buffers also
    /// hold units' gradients and one scratch buffer the rest, each sized by what lands in it;
    /// otherwise `block_backward`'s t1..t3, sized by the largest unit output.
    fn gradient_needs(&self, train: bool) -> Vec<usize> {
        if !train {
            return vec![];
        }
        if !self.backward_in_place() {
            let (a, o) = (self.max_activation(), self.max_output());
            return if self.has_projection() { vec![a, a, o, o, o] } else { vec![a, a, o, o] };
        }
        let lo = self.first_backward_block();
        // the scratch also holds every projection's output in forward
        let mut need = vec![self.map.len(), 0, self.max_projection_output()];
        let (mut iy, mut ix) = (0, 1);
        for i in (lo..self.blocks.len()).rev() {
            let b = &self.blocks[i];
            let (gy, t) = frozen_buffer_needs(b);
            need[iy] = need[iy].max(gy);
            need[2] = need[2].max(t);
            if self.wants_input_grad(i, lo) {
                need[ix] = need[ix].max(b.xd.len());
            }
            std::mem::swap(&mut iy, &mut ix);
        }
        if let (Some(u), 0) = (&self.stem, lo) {
            if let Some((_, d)) = self.pool {
                need[iy] = need[iy].max(d.len());
                need[ix] = need[ix].max(u.yd.len());
                std::mem::swap(&mut iy, &mut ix);
            }
            need[iy] = need[iy].max(u.yd.len());
        }
        need
    }

    /// Bytes a [`Part`] of this plan allocates for `n` inputs of the current shape (training if
    /// `train`; `threads` weight-gradient partials): activations (no `pre` where BN is frozen),
    /// gradient buffers, parameters with gradients and momentum, statistics, scratch.
    pub fn memory_bytes(&self, n: usize, train: bool, threads: usize) -> u64 {
        let keeps_pre = |u: &UnitPlan| train && u.frozen == Frozen::No;
        let shared = self.shares_projection_output(train);
        let proj_outputs: usize = self
            .blocks
            .iter()
            .map(|b| match &b.shortcut {
                ShortcutPlan::Proj(u) if shared => u.yd.len(),
                _ => 0,
            })
            .sum();
        let per_input = self.input.len()
            + self.units().map(|u| u.yd.len() * if keeps_pre(u) { 2 } else { 1 }).sum::<usize>()
            - proj_outputs
            + self.projection_buffer(train)
            + self.pool.map_or(0, |(_, d)| 2 * d.len())
            + if self.stages.pool { self.map.c * if train { 2 } else { 1 } } else { 0 };
        let grads = self.gradient_needs(train).iter().sum::<usize>() as u64;
        let wmax = self.units().map(|u| u.conv.weight_len()).max().unwrap_or(0) as u64;
        let scratch = if train { wmax * (threads as u64 + 1) } else { 0 };
        let params = self.n_params as u64 * if train { 3 } else { 1 };
        4 * ((per_input as u64 + grads) * n as u64 + scratch + params + self.n_stats as u64)
    }
}

/// Why a call on a [`Part`] is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartError {
    /// the input (n inputs of h x w) needs more than the buffers hold
    Capacity { n: usize, h: usize, w: usize, capacity: Capacity, buffer: String, need: usize, have: usize },
    /// no input, or an empty side
    Empty { n: usize, h: usize, w: usize },
    /// a training forward or a backward on a part built for inference
    NotTraining,
    /// backward without a training forward of the current input
    NoForward,
}

impl std::fmt::Display for PartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartError::Capacity { n, h, w, capacity: c, buffer, need, have } => write!(
                f,
                "{n} input(s) of {h} x {w} exceed this network part's capacity ({} of {} x {}): \
                 {buffer} needs {need} values, {have} are allocated; build the part for larger inputs",
                c.n, c.h, c.w
            ),
            PartError::Empty { n, h, w } => write!(f, "empty input to a network part: {n} of {h} x {w}"),
            PartError::NotTraining => f.write_str("training on a network part built for inference"),
            PartError::NoForward => f.write_str("backward without a training forward of the current input"),
        }
    }
}
impl std::error::Error for PartError {}

/// A part of a network with its buffers (see the module docs).
pub struct Part {
    pub plan: PartPlan,
    capacity: Capacity,
    /// built for training (backward's buffers allocated)
    pub train: bool,
    path: KernelPath,
    params: Vec<f32>,
    grads: Vec<f32>,
    stats: Vec<f32>,
    /// (n, H, W, C) of the current input, NHWC
    input: Vec<f32>,
    stem: UnitBufs,
    pool_out: Vec<f32>,
    pool_arg: Vec<u32>,
    blocks: Vec<BlockBufs>,
    /// the projections' outputs, one at a time, where nothing reads them after their block's
    /// forward, in inference (`PartPlan::shares_projection_output`; each block's own is empty
    /// then; in training `g[2]` is lent)
    proj_out: Vec<f32>,
    /// (n, C) after global average pooling, and its gradient
    feat: Vec<f32>,
    dfeat: Vec<f32>,
    /// gradient buffers: [0], [1] at block inputs / outputs ([0]: the gradient at the last feature
    /// map when backward starts), [2..] inside blocks (sized by unit outputs)
    g: Vec<Vec<f32>>,
    wt: Vec<f32>,
    partials: Vec<Vec<f32>>,
    /// inputs in the current call (0: none yet)
    n: usize,
    /// a training forward ran on the current input
    trained: bool,
    /// after backward: which of `g` holds the gradient at the input
    input_grad_at: Option<usize>,
    sync_bn: Option<std::sync::Arc<dyn crate::ops::bn::ShardSum>>,
    sum_order: crate::par::SumOrder,
}

/// The input of block `i` from the buffers before it: the input itself for a part without a stem.
fn part_block_input<'a>(
    plan: &PartPlan,
    input: &'a [f32],
    stem: &'a UnitBufs,
    pool_out: &'a [f32],
    earlier: &'a [BlockBufs],
) -> &'a [f32] {
    match earlier.last() {
        Some(prev) => &prev.units.last().expect("a block has units").out,
        None if plan.stem.is_none() => input,
        None => super::block_input(plan.pool.is_some(), stem, pool_out, earlier),
    }
}

impl Part {
    /// Build `stages` of `spec` for up to `capacity` inputs, He-initialised from `seed` (the same
    /// values, tensor by tensor, as `Net::new(spec, .., seed)`), frozen as `freeze` says. `train`
    /// allocates what backward needs.
    pub fn new(
        spec: &ArchSpec,
        stages: Stages,
        capacity: Capacity,
        freeze: Freeze,
        train: bool,
        seed: u64,
    ) -> Result<Part, BuildError> {
        let mut part = Part::zeroed(spec, stages, capacity, freeze, train)?;
        for t in part.plan.params.clone().iter().chain(&part.plan.stats.clone()) {
            part.set_torch(&t.name, &t.shape, &crate::init::he_values(t, seed)).expect("own tensor table");
        }
        Ok(part)
    }

    /// [`Part::new`] with every parameter and statistic zero.
    pub fn zeroed(
        spec: &ArchSpec,
        stages: Stages,
        capacity: Capacity,
        freeze: Freeze,
        train: bool,
    ) -> Result<Part, BuildError> {
        let Capacity { n, h, w } = capacity;
        if n == 0 || h == 0 || w == 0 {
            return Err(BuildError::Invalid(format!(
                "a network part's capacity must be positive, not {n} of {h} x {w}"
            )));
        }
        let plan = PartPlan::new(spec, stages, h, w, freeze)?;
        let threads = crate::par::threads();
        let need = plan.memory_bytes(n, train, threads);
        if let Some(avail) = available_memory().filter(|&a| need > a) {
            return Err(BuildError::TooLarge { need_bytes: need, available_bytes: avail, batch: n });
        }
        let keeps_pre = |u: &UnitPlan| train && u.frozen == Frozen::No;
        let wmax = plan.units().map(|u| u.conv.weight_len()).max().unwrap_or(0);
        let bufs = |u: &UnitPlan| unit_bufs(u, n, keeps_pre(u));
        let shared = plan.shares_projection_output(train);
        let blocks = plan
            .blocks
            .iter()
            .map(|b| BlockBufs {
                units: b.units.iter().map(bufs).collect(),
                proj: match &b.shortcut {
                    ShortcutPlan::Proj(u) if shared => Some(UnitBufs { out: vec![], ..bufs(u) }),
                    ShortcutPlan::Proj(u) => Some(bufs(u)),
                    _ => None,
                },
            })
            .collect();
        let pool_len = plan.pool.map_or(0, |(_, d)| d.len() * n);
        let feat_len = if stages.pool { plan.map.c * n } else { 0 };
        Ok(Part {
            capacity,
            train,
            path: KernelPath::cached(),
            params: vec![0.0; plan.n_params],
            grads: vec![0.0; if train { plan.n_params } else { 0 }],
            stats: vec![0.0; plan.n_stats],
            input: vec![0.0; plan.input.len() * n],
            stem: plan.stem.as_ref().map_or_else(UnitBufs::default, bufs),
            pool_out: vec![0.0; pool_len],
            pool_arg: vec![0; pool_len],
            proj_out: vec![0.0; plan.projection_buffer(train) * n],
            blocks,
            feat: vec![0.0; feat_len],
            dfeat: vec![0.0; if train { feat_len } else { 0 }],
            g: plan.gradient_needs(train).iter().map(|&need| vec![0.0; need * n]).collect(),
            wt: vec![0.0; if train { wmax } else { 0 }],
            partials: (0..if train { threads } else { 0 }).map(|_| vec![0.0; wmax]).collect(),
            n: 0,
            trained: false,
            input_grad_at: None,
            sync_bn: None,
            sum_order: crate::par::SumOrder::Threads,
            plan,
        })
    }

    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Set the next call's input shape, `n` inputs of `h` x `w`, and give its buffer to fill:
    /// (n, h, w, C) NHWC, C = `plan.input.c` (the image channels, or the RoI features' channels).
    /// Refused, with the shape left as it was, when a buffer is too small for it.
    pub fn input_mut(&mut self, n: usize, h: usize, w: usize) -> Result<&mut [f32], PartError> {
        if n == 0 || h == 0 || w == 0 {
            return Err(PartError::Empty { n, h, w });
        }
        let old = self.plan.input;
        self.plan.reshape(h, w);
        if let Err(e) = self.fits(n) {
            self.plan.reshape(old.h, old.w);
            return Err(e);
        }
        self.n = n;
        self.trained = false;
        self.input_grad_at = None;
        let len = n * self.plan.input.len();
        Ok(&mut self.input[..len])
    }

    /// Whether `n` inputs of the plan's current shape fit every buffer.
    fn fits(&self, n: usize) -> Result<(), PartError> {
        let p = &self.plan;
        // (what, values per input, values allocated); a unit's output named by its conv
        let mut checks: Vec<(&str, usize, usize)> = vec![("the input", p.input.len(), self.input.len())];
        if let Some(u) = &p.stem {
            checks.push((&u.conv_name, u.yd.len(), self.stem.out.len()));
        }
        if let Some((_, d)) = p.pool {
            checks.push(("the max pool", d.len(), self.pool_out.len()));
        }
        for (b, bb) in p.blocks.iter().zip(&self.blocks) {
            for (u, ub) in b.units.iter().zip(&bb.units) {
                checks.push((&u.conv_name, u.yd.len(), ub.out.len()));
            }
            if let (ShortcutPlan::Proj(u), Some(ub)) = (&b.shortcut, &bb.proj) {
                let shared =
                    if self.proj_out.is_empty() { self.g.get(2).map_or(0, Vec::len) } else { self.proj_out.len() };
                let have = if ub.out.is_empty() { shared } else { ub.out.len() };
                checks.push((&u.conv_name, u.yd.len(), have));
            }
        }
        for (need, g) in p.gradient_needs(self.train).into_iter().zip(&self.g) {
            checks.push(("the gradient buffers", need, g.len()));
        }
        for (what, per_input, have) in checks {
            let need = per_input.saturating_mul(n);
            if need > have {
                let Dims { h, w, .. } = p.input;
                let buffer = if what.starts_with("the ") { what.to_string() } else { format!("{what}'s output") };
                return Err(PartError::Capacity { n, h, w, capacity: self.capacity, buffer, need, have });
            }
        }
        Ok(())
    }

    /// The current input's shape, (n, H, W, C).
    pub fn input_dims(&self) -> Dims {
        Dims { n: self.n, ..self.plan.input }
    }

    /// Run the current input ([`Part::input_mut`]) forward. `train`: batch statistics where BN is
    /// not frozen (updating the running ones), and what backward needs is kept.
    pub fn forward(&mut self, train: bool) -> Result<(), PartError> {
        if train && !self.train {
            return Err(PartError::NotTraining);
        }
        let n = self.n;
        if n == 0 {
            return Err(PartError::Empty { n, h: self.plan.input.h, w: self.plan.input.w });
        }
        let Part {
            plan,
            params,
            stats,
            input,
            stem,
            pool_out,
            pool_arg,
            blocks,
            proj_out,
            g,
            feat,
            path,
            sync_bn,
            sum_order,
            ..
        } = self;
        let sync = BatchSum { order: *sum_order, shards: sync_bn.as_deref() };
        let (params, path, prepared) = (&params[..], *path, &Prepared::new());
        if let Some(u) = &plan.stem {
            unit_forward(u, stem, (params, stats, path, prepared, sync), input, n, train, None);
            if let Some((mp, d)) = plan.pool {
                let (sd, od) = (Dims { n, ..u.yd }, Dims { n, ..d });
                let arg = train.then_some(&mut pool_arg[..od.len()]);
                mp.forward_indexed_if(&stem.out[..sd.len()], sd, &mut pool_out[..od.len()], arg);
            }
        }
        for i in 0..blocks.len() {
            let (before, rest) = blocks.split_at_mut(i);
            let x = part_block_input(plan, input, stem, pool_out, before);
            // the shared projection output is lent to a block without its own for its forward
            let lent = match rest[0].proj.as_mut().filter(|pb| pb.out.is_empty()) {
                Some(pb) => {
                    let shared = if proj_out.is_empty() { &mut g[2] } else { &mut *proj_out };
                    std::mem::swap(&mut pb.out, shared);
                    Some(shared)
                }
                None => None,
            };
            block_forward(&plan.blocks[i], &mut rest[0], (params, stats, path, prepared, sync), x, n, train);
            if let Some(shared) = lent {
                std::mem::swap(&mut rest[0].proj.as_mut().expect("lent above").out, shared);
            }
        }
        if plan.stages.pool {
            let map = Dims { n, ..plan.map };
            let x = part_block_input(plan, input, stem, pool_out, blocks);
            pool::gap_forward(&x[..map.len()], map, &mut feat[..n * map.c]);
        }
        self.trained = train;
        self.input_grad_at = None;
        Ok(())
    }

    /// The last forward's output: (n, H', W', C) feature maps, or (n, 1, 1, C) pooled features.
    pub fn output(&self) -> (&[f32], Dims) {
        let d = Dims { n: self.n, ..self.plan.output() };
        if self.plan.stages.pool {
            return (&self.feat[..d.len()], d);
        }
        let x = part_block_input(&self.plan, &self.input, &self.stem, &self.pool_out, &self.blocks);
        (&x[..d.len()], d)
    }

    /// The gradient at the output, shaped as [`Part::output`], zeroed for the caller to fill (or
    /// add into) before [`Part::backward`]. Empty on a part built for inference.
    pub fn output_grad_mut(&mut self) -> &mut [f32] {
        if !self.train {
            return &mut [];
        }
        let len = self.n * self.plan.output().len();
        if !self.plan.stages.pool {
            self.input_grad_at = None; // the buffer may be the one that held it
        }
        let g = if self.plan.stages.pool { &mut self.dfeat[..len] } else { &mut self.g[0][..len] };
        g.fill(0.0);
        g
    }

    /// [`Part::output`] and [`Part::output_grad_mut`] at once: a layer after the part (the box
    /// predictor) reads the one and writes the other.
    pub fn output_and_grad_mut(&mut self) -> (&[f32], &mut [f32]) {
        let d = Dims { n: self.n, ..self.plan.output() };
        if !self.plan.stages.pool {
            self.input_grad_at = None; // the buffer may be the one that held it
        }
        let Part { plan, input, stem, pool_out, blocks, feat, dfeat, g, train, .. } = self;
        let (out, grad): (&[f32], &mut [f32]) = match (plan.stages.pool, *train) {
            (true, true) => (&feat[..d.len()], &mut dfeat[..d.len()]),
            (true, false) => (&feat[..d.len()], &mut []),
            (false, train) => {
                let x = part_block_input(plan, input, stem, pool_out, blocks);
                (&x[..d.len()], if train { &mut g[0][..d.len()] } else { &mut [] })
            }
        };
        grad.fill(0.0);
        (out, grad)
    }

    /// Backward from the gradient at the output ([`Part::output_grad_mut`]) through the last
    /// training forward: writes every parameter gradient (zero for frozen ones) and, for a part
    /// without a stem, the gradient at the input ([`Part::input_grad`]). Blocks below the last
    /// frozen stage are skipped (nothing there learns, and no gradient is asked at the images).
    pub fn backward(&mut self) -> Result<(), PartError> {
        if !self.train {
            return Err(PartError::NotTraining);
        }
        if !self.trained {
            return Err(PartError::NoForward);
        }
        let n = self.n;
        let lo = self.plan.first_backward_block();
        let Part {
            plan,
            params,
            grads,
            input,
            stem,
            pool_out,
            pool_arg,
            blocks,
            dfeat,
            g,
            wt,
            partials,
            path,
            sync_bn,
            sum_order,
            input_grad_at,
            ..
        } = self;
        let sync = BatchSum { order: *sum_order, shards: sync_bn.as_deref() };
        let map = Dims { n, ..plan.map };
        if plan.stages.pool {
            pool::gap_backward(&dfeat[..n * map.c], map, &mut g[0][..map.len()]);
        }
        let (mut iy, mut ix) = (0usize, 1usize);
        let in_place = plan.backward_in_place();
        let (gbufs, rest) = g.split_at_mut(2);
        let mut k = ConvScratch { wt, partials, path: *path, order: *sum_order };
        for i in (lo..blocks.len()).rev() {
            let x = part_block_input(plan, input, stem, pool_out, &blocks[..i]);
            let [gy, gx] = gbufs.get_disjoint_mut([iy, ix]).expect("two gradient buffers");
            let (bp, bb) = (&plan.blocks[i], &blocks[i]);
            if in_place {
                let gx = plan.wants_input_grad(i, lo).then_some(&mut gx[..]);
                block_backward_frozen(bp, bb, params, grads, x, n, gy, gx, &mut rest[0], &mut k);
            } else {
                let mut s = Scratch::new(rest, &mut k);
                block_backward(bp, bb, (params, sync), grads, x, n, gy, gx, &mut s);
            }
            std::mem::swap(&mut iy, &mut ix);
        }
        match &plan.stem {
            None => *input_grad_at = Some(iy),
            Some(u) if lo == 0 => {
                if let Some((mp, d)) = plan.pool {
                    let (sd, od) = (Dims { n, ..u.yd }, Dims { n, ..d });
                    let [gy, gx] = gbufs.get_disjoint_mut([iy, ix]).expect("two gradient buffers");
                    mp.backward(&gy[..od.len()], &pool_arg[..od.len()], sd, &mut gx[..sd.len()]);
                    std::mem::swap(&mut iy, &mut ix);
                }
                let d: &[f32] = if in_place {
                    unit_bn_backward_in_place(u, stem, grads, n, &mut gbufs[iy]);
                    &gbufs[iy]
                } else {
                    unit_bn_backward(u, stem, (params, sync), grads, n, &gbufs[iy], &mut rest[0], None);
                    &rest[0]
                };
                unit_conv_backward(u, params, grads, input, n, d, None, &mut k);
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// The gradient at the input of the last backward, (n, H, W, C): a part without a stem only
    /// (the RoI features' gradient, for RoIAlign backward). Valid until the next call that
    /// changes the part.
    pub fn input_grad(&self) -> Option<(&[f32], Dims)> {
        let d = self.input_dims();
        self.input_grad_at.map(|i| (&self.g[i][..d.len()], d))
    }

    /// Every parameter, flat (offsets in `plan.params`).
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// The last backward's parameter gradients, flat like the parameters.
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    pub fn grads_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }

    /// The BN running statistics, flat (offsets in `plan.stats`).
    pub fn stats(&self) -> &[f32] {
        &self.stats
    }

    /// The BN running statistics, to set (a data-parallel broadcast; `set_torch` by name otherwise).
    pub fn stats_mut(&mut self) -> &mut [f32] {
        &mut self.stats
    }

    /// The parameters to change and the gradients to change them with (an optimizer step, with
    /// `Sgd::trainable = Some(part.plan.trainable())` where anything is frozen).
    pub fn step_operands(&mut self) -> (&mut [f32], &[f32]) {
        (&mut self.params, &self.grads)
    }

    pub fn kernel_path(&self) -> KernelPath {
        self.path
    }

    pub fn set_kernel_path(&mut self, path: KernelPath) {
        self.path = path;
    }

    /// The order of every sum over the batch from now on (see `Backend::set_sum_order`).
    pub fn set_sum_order(&mut self, order: crate::par::SumOrder) {
        self.sum_order = order;
    }

    /// Synchronised BN over the shards of a batch split across processes (None: local).
    pub fn set_sync_bn(&mut self, sync: Option<std::sync::Arc<dyn crate::ops::bn::ShardSum>>) {
        self.sync_bn = sync;
    }

    /// Whether BN statistics are summed with other shards ([`Part::set_sync_bn`]).
    pub fn syncs_bn(&self) -> bool {
        self.sync_bn.is_some()
    }

    /// Parameter / statistics entry by torchvision name (true: a parameter).
    pub fn tensor_info(&self, name: &str) -> Option<(&TensorInfo, bool)> {
        super::plan::find_tensor(&self.plan.params, &self.plan.stats, name)
    }

    /// Every tensor: torchvision name and shape, parameters then statistics.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.plan.params.iter().chain(&self.plan.stats).map(|t| (t.name.clone(), t.shape.clone())).collect()
    }

    /// A tensor in torchvision layout (convs OIHW).
    pub fn get_torch(&self, name: &str) -> Option<Vec<f32>> {
        let (t, is_param) = self.tensor_info(name)?;
        Some(t.read_torch(if is_param { &self.params } else { &self.stats }))
    }

    /// A parameter's gradient in torchvision layout.
    pub fn grad_torch(&self, name: &str) -> Option<Vec<f32>> {
        let (t, is_param) = self.tensor_info(name)?;
        (is_param && !self.grads.is_empty()).then(|| t.read_torch(&self.grads))
    }

    /// Set a tensor from torchvision layout. Errors name the tensor and the shapes.
    pub fn set_torch(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<(), String> {
        let Part { plan, params, stats, .. } = self;
        let (t, is_param) = super::plan::find_tensor(&plan.params, &plan.stats, name)
            .ok_or_else(|| super::plan::unexpected_tensor(name))?;
        t.write_torch(shape, data, if is_param { params } else { stats })
    }
}

#[cfg(test)]
#[path = "part_tests.rs"]
mod tests;
