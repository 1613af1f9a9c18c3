//! The static shape of a network: every unit (conv + BN + activation) with its
//! shapes, the parameter table (torchvision names, offsets into one flat
//! buffer) and the running-statistics table. Built from an [`ArchSpec`]
//! without allocating activations, so that summaries, FLOP counts and memory
//! estimates cost nothing.

use crate::arch::{ArchSpec, BlockKind, ShortcutOpt, StrideIn};
use crate::ops::bn::Act;
use crate::ops::conv::Conv;
use crate::ops::fc::Fc;
use crate::ops::pool::MaxPool;
use crate::shape::Dims;

/// What a parameter is, and how it is laid out in our flat buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Stored HWIO (kh, kw, in, out); torchvision's is OIHW.
    ConvWeight {
        k: usize,
        cin: usize,
        cout: usize,
    },
    BnWeight,
    BnBias,
    FcWeight,
    FcBias,
    RunningMean,
    RunningVar,
}

/// One named tensor in a flat buffer.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// torchvision state_dict name, e.g. `layer2.0.downsample.0.weight`.
    pub name: String,
    /// Shape in torchvision's order (OIHW for convs).
    pub shape: Vec<usize>,
    pub offset: usize,
    pub len: usize,
    pub kind: ParamKind,
}

impl TensorInfo {
    /// This tensor of the flat buffer `flat` (parameters, statistics or gradients), in
    /// torchvision's layout (convs OIHW).
    pub fn read_torch(&self, flat: &[f32]) -> Vec<f32> {
        super::to_torch_layout(self.kind, &flat[self.offset..self.offset + self.len])
    }

    /// Write `data` (torchvision's layout, of `shape`) into this tensor of `flat`. A shape that
    /// is not this tensor's is an error naming the tensor and both shapes.
    pub fn write_torch(&self, shape: &[usize], data: &[f32], flat: &mut [f32]) -> Result<(), String> {
        if self.shape != shape || data.len() != self.len {
            return Err(format!("tensor '{}': expected shape {:?}, got {:?}", self.name, self.shape, shape));
        }
        super::from_torch_layout(self.kind, data, &mut flat[self.offset..self.offset + self.len]);
        Ok(())
    }
}

/// The entry named `name` in `params` (true: a parameter) or in `stats` (false).
pub fn find_tensor<'a>(
    params: &'a [TensorInfo],
    stats: &'a [TensorInfo],
    name: &str,
) -> Option<(&'a TensorInfo, bool)> {
    if let Some(t) = params.iter().find(|t| t.name == name) {
        return Some((t, true));
    }
    stats.iter().find(|t| t.name == name).map(|t| (t, false))
}

/// The error of a write to a tensor that is not there.
pub fn unexpected_tensor(name: &str) -> String {
    format!("unexpected tensor '{name}'")
}

/// What of a unit stays constant in training (detection fine-tuning: [`Freeze`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Frozen {
    /// everything learns: BN normalises with the batch statistics and updates the running ones
    #[default]
    No,
    /// BN is the constant affine map of its running statistics (`ops::bn::backward_frozen`): gamma,
    /// beta and the statistics never change, gradients flow through it; the conv weights learn
    Bn,
    /// BN frozen as in `Bn`, and the conv weights get no gradient either (a frozen stage)
    All,
}

/// Which units are frozen: detectron's `FREEZE_AT` / torchvision's `trainable_layers` as data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Freeze {
    /// every BN layer a constant affine map (torchvision's `FrozenBatchNorm2d`)
    pub bn: bool,
    /// the first `at` of (stem, stage 1, stage 2, ...) learn nothing: 0 none, 1 the stem, 2 the
    /// stem and the first stage (detectron's default `FREEZE_AT: 2`; torchvision's
    /// `trainable_layers = 3`), ...
    pub at: usize,
}

impl Freeze {
    /// Nothing frozen: classification training.
    pub const NONE: Freeze = Freeze { bn: false, at: 0 };

    /// What is frozen of a unit of the stem (`stage` None) or of stage `stage` (0-based).
    pub fn unit(&self, stage: Option<usize>) -> Frozen {
        let index = stage.map_or(0, |s| s + 1);
        if index < self.at {
            Frozen::All
        } else if self.bn {
            Frozen::Bn
        } else {
            Frozen::No
        }
    }
}

/// conv + BN + activation. Offsets point into the parameter / statistics buffers.
#[derive(Clone, Debug)]
pub struct UnitPlan {
    pub conv: Conv,
    pub act: Act,
    /// what stays constant in training (set by [`Plan::freeze`]; nothing by default)
    pub frozen: Frozen,
    /// input / output shapes for one image
    pub xd: Dims,
    pub yd: Dims,
    pub w: usize,
    pub gamma: usize,
    pub beta: usize,
    pub rmean: usize,
    pub rvar: usize,
    /// torchvision names of the conv and the BN, e.g. `layer1.0.conv1`, `layer1.0.bn1`
    pub conv_name: String,
    pub bn_name: String,
}

#[derive(Clone, Debug)]
pub enum ShortcutPlan {
    /// plain network: no shortcut
    None,
    Identity,
    /// option A: subsample by `stride`, zero-pad channels
    PadA {
        stride: usize,
    },
    /// options B/C: 1x1 conv + BN
    Proj(UnitPlan),
}

#[derive(Clone, Debug)]
pub struct BlockPlan {
    /// e.g. `layer2.0`
    pub name: String,
    pub stage: usize,
    pub units: Vec<UnitPlan>,
    pub shortcut: ShortcutPlan,
    pub xd: Dims,
    pub yd: Dims,
}

impl BlockPlan {
    /// The block's first parameter in the flat order (its parameters and every later block's
    /// follow it): the smallest offset of its units' and projection's weights.
    pub fn first_param(&self) -> usize {
        let proj = match &self.shortcut {
            ShortcutPlan::Proj(u) => Some(u.w),
            _ => None,
        };
        self.units.iter().map(|u| u.w).chain(proj).min().unwrap_or(0)
    }

    /// Every unit's BN, the projection's included, is a constant affine map (frozen): backward
    /// runs in place (`backward::block_backward_frozen`).
    pub fn bn_frozen(&self) -> bool {
        let proj = match &self.shortcut {
            ShortcutPlan::Proj(u) => Some(u),
            _ => None,
        };
        self.units.iter().chain(proj).all(|u| u.frozen != Frozen::No)
    }
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub spec: ArchSpec,
    /// input shape for one image (H, W, Cin)
    pub input: Dims,
    pub stem: UnitPlan,
    pub pool: Option<(MaxPool, Dims)>,
    pub blocks: Vec<BlockPlan>,
    pub fc: Fc,
    pub fc_w: usize,
    pub fc_b: usize,
    /// trainable parameters, in torchvision state_dict order
    pub params: Vec<TensorInfo>,
    pub n_params: usize,
    /// BN running mean / var
    pub stats: Vec<TensorInfo>,
    pub n_stats: usize,
}

struct Builder {
    params: Vec<TensorInfo>,
    n_params: usize,
    stats: Vec<TensorInfo>,
    n_stats: usize,
}

impl Builder {
    fn param(&mut self, name: String, shape: Vec<usize>, kind: ParamKind) -> usize {
        let len = shape.iter().product();
        let offset = self.n_params;
        self.params.push(TensorInfo { name, shape, offset, len, kind });
        self.n_params += len;
        offset
    }
    fn stat(&mut self, name: String, c: usize, kind: ParamKind) -> usize {
        let offset = self.n_stats;
        self.stats.push(TensorInfo { name, shape: vec![c], offset, len: c, kind });
        self.n_stats += c;
        offset
    }
    /// conv (no bias) + BN, named like torchvision.
    fn unit(&mut self, conv_name: String, bn_name: String, conv: Conv, act: Act, xd: Dims) -> UnitPlan {
        let (k, cin, cout) = (conv.k, conv.cin, conv.cout);
        let w =
            self.param(format!("{conv_name}.weight"), vec![cout, cin, k, k], ParamKind::ConvWeight { k, cin, cout });
        let gamma = self.param(format!("{bn_name}.weight"), vec![cout], ParamKind::BnWeight);
        let beta = self.param(format!("{bn_name}.bias"), vec![cout], ParamKind::BnBias);
        let rmean = self.stat(format!("{bn_name}.running_mean"), cout, ParamKind::RunningMean);
        let rvar = self.stat(format!("{bn_name}.running_var"), cout, ParamKind::RunningVar);
        UnitPlan {
            conv,
            act,
            frozen: Frozen::No,
            xd,
            yd: conv.out_dims(xd),
            w,
            gamma,
            beta,
            rmean,
            rvar,
            conv_name,
            bn_name,
        }
    }
}

impl Plan {
    /// Lay out `spec` for an input of `h` x `w` pixels.
    pub fn new(spec: &ArchSpec, h: usize, w: usize) -> Plan {
        let mut b = Builder { params: vec![], n_params: 0, stats: vec![], n_stats: 0 };
        let input = Dims::new(1, h, w, spec.in_channels);
        let (k, s, p, width) = spec.stem();
        let stem = b.unit("conv1".into(), "bn1".into(), Conv::new(spec.in_channels, width, k, s, p), Act::Relu, input);
        let mut d = stem.yd;
        let pool = spec.has_maxpool().then(|| {
            let mp = MaxPool { k: 3, stride: 2, pad: 1 };
            d = mp.out_dims(d);
            (mp, d)
        });
        let exp = spec.expansion();
        let mut blocks = vec![];
        for (si, stage) in spec.stages.iter().enumerate() {
            for bi in 0..stage.blocks {
                let name = format!("layer{}.{bi}", si + 1);
                let stride = if bi == 0 { stage.stride } else { 1 };
                let (cin, cout, wd) = (d.c, stage.width * exp, stage.width);
                let xd = d;
                let last_act = if spec.shortcut.is_some() { Act::AddRelu } else { Act::Relu };
                let convs: Vec<Conv> = match spec.block {
                    BlockKind::Basic => vec![Conv::new(cin, wd, 3, stride, 1), Conv::new(wd, cout, 3, 1, 1)],
                    BlockKind::Bottleneck => {
                        let (s1, s3) = match spec.stride_in {
                            StrideIn::OneByOne => (stride, 1),
                            StrideIn::ThreeByThree => (1, stride),
                        };
                        vec![Conv::new(cin, wd, 1, s1, 0), Conv::new(wd, wd, 3, s3, 1), Conv::new(wd, cout, 1, 1, 0)]
                    }
                };
                let nconv = convs.len();
                let mut units = vec![];
                let mut ud = xd;
                for (j, conv) in convs.into_iter().enumerate() {
                    let act = if j + 1 == nconv { last_act } else { Act::Relu };
                    let u = b.unit(format!("{name}.conv{}", j + 1), format!("{name}.bn{}", j + 1), conv, act, ud);
                    ud = u.yd;
                    units.push(u);
                }
                let changes = stride != 1 || cin != cout;
                let shortcut = match spec.shortcut {
                    None => ShortcutPlan::None,
                    Some(ShortcutOpt::A) if changes => ShortcutPlan::PadA { stride },
                    Some(ShortcutOpt::C) | Some(ShortcutOpt::B) if changes || spec.shortcut == Some(ShortcutOpt::C) => {
                        ShortcutPlan::Proj(b.unit(
                            format!("{name}.downsample.0"),
                            format!("{name}.downsample.1"),
                            Conv::new(cin, cout, 1, stride, 0),
                            Act::None,
                            xd,
                        ))
                    }
                    Some(_) => ShortcutPlan::Identity,
                };
                blocks.push(BlockPlan { name, stage: si, units, shortcut, xd, yd: ud });
                d = ud;
            }
        }
        let fc = Fc { fin: d.c, fout: spec.classes };
        let fc_w = b.param("fc.weight".into(), vec![spec.classes, d.c], ParamKind::FcWeight);
        let fc_b = b.param("fc.bias".into(), vec![spec.classes], ParamKind::FcBias);
        Plan {
            spec: spec.clone(),
            input,
            stem,
            pool,
            blocks,
            fc,
            fc_w,
            fc_b,
            params: b.params,
            n_params: b.n_params,
            stats: b.stats,
            n_stats: b.n_stats,
        }
    }

    /// Freeze units as `f` says (and unfreeze the rest): see [`Freeze`].
    pub fn freeze(&mut self, f: Freeze) {
        self.stem.frozen = f.unit(None);
        for b in &mut self.blocks {
            let frozen = f.unit(Some(b.stage));
            for u in b.units.iter_mut().chain(match &mut b.shortcut {
                ShortcutPlan::Proj(u) => Some(u),
                _ => None,
            }) {
                u.frozen = frozen;
            }
        }
    }

    /// The parameter ranges that learn (an optimizer mask, `Sgd::trainable`): all but frozen
    /// units' BN gamma / beta and, for `Frozen::All`, their conv weights.
    pub fn trainable(&self) -> Vec<std::ops::Range<usize>> {
        trainable_ranges(self.n_params, self.units())
    }

    /// Every unit in forward order (stem, then per block its main path and projection).
    pub fn units(&self) -> impl Iterator<Item = &UnitPlan> {
        std::iter::once(&self.stem).chain(self.blocks.iter().flat_map(|b| {
            b.units.iter().chain(match &b.shortcut {
                ShortcutPlan::Proj(u) => Some(u),
                _ => None,
            })
        }))
    }

    /// Shape (one image) of the input of block `i`: the max pool's output (or
    /// the stem's) for the first block, the previous block's output after;
    /// `i == blocks.len()` is the last block's output, the final feature map.
    /// The buffer is [`crate::net::Net::block_input`].
    pub fn block_input_dims(&self, i: usize) -> Dims {
        match i.checked_sub(1) {
            Some(prev) => self.blocks[prev].yd,
            None => self.pool.map_or(self.stem.yd, |(_, d)| d),
        }
    }

    /// Forward multiply-adds for one image: convolutions + fc.
    pub fn macs(&self) -> u64 {
        self.units().map(|u| u.conv.macs(u.xd.h, u.xd.w)).sum::<u64>() + (self.fc.fin * self.fc.fout) as u64
    }

    /// f32 activations kept per image (unit outputs, and in training the conv
    /// outputs BN normalises) — the dominant term of the buffer plan.
    pub fn activation_floats_per_image(&self, train: bool) -> usize {
        let mut n = self.input.len();
        for u in self.units() {
            n += if train { 2 } else { 1 } * u.yd.len();
        }
        if let Some((_, d)) = self.pool {
            n += 2 * d.len(); // output + argmax
        }
        n
    }

    /// Largest activation of one image (sizes the gradient and scratch buffers).
    pub fn max_activation_per_image(&self) -> usize {
        self.units().map(|u| u.yd.len().max(u.xd.len())).max().unwrap_or(0)
    }

    pub fn max_conv_weights(&self) -> usize {
        self.units().map(|u| u.conv.weight_len()).max().unwrap_or(0)
    }

    /// Whether any block has a projection shortcut (needs one more scratch buffer).
    pub fn has_projection(&self) -> bool {
        self.blocks.iter().any(|b| matches!(b.shortcut, ShortcutPlan::Proj(_)))
    }

    /// Bytes the engine allocates for a batch of `n` (training if `train`).
    pub fn memory_bytes(&self, n: usize, train: bool, threads: usize) -> u64 {
        let act = self.activation_floats_per_image(train) as u64 * n as u64;
        let grads = if train {
            let bufs = if self.has_projection() { 5 } else { 4 };
            bufs as u64 * self.max_activation_per_image() as u64 * n as u64
        } else {
            0
        };
        let params = self.n_params as u64 * if train { 3 } else { 1 }; // weights, grads, momentum
        let scratch = self.max_conv_weights() as u64 * (threads as u64 + 1);
        4 * (act + grads + params + scratch + self.n_stats as u64)
    }
}

/// The complement, in `0..n_params`, of the parameters `units` freeze, as sorted disjoint ranges.
pub(crate) fn trainable_ranges<'a>(
    n_params: usize,
    units: impl Iterator<Item = &'a UnitPlan>,
) -> Vec<std::ops::Range<usize>> {
    let mut frozen: Vec<std::ops::Range<usize>> = vec![];
    for u in units {
        let c = u.conv.cout;
        match u.frozen {
            Frozen::No => {}
            Frozen::Bn => frozen.push(u.gamma..u.beta + c),
            Frozen::All => {
                frozen.push(u.w..u.w + u.conv.weight_len());
                frozen.push(u.gamma..u.beta + c);
            }
        }
    }
    frozen.sort_by_key(|r| r.start);
    let (mut out, mut at) = (vec![], 0);
    for r in frozen {
        if r.start > at {
            out.push(at..r.start);
        }
        at = at.max(r.end);
    }
    if at < n_params {
        out.push(at..n_params);
    }
    out
}
