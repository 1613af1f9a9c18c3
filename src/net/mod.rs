//! A network built once for a batch capacity: the plan plus every buffer it
//! needs (parameters, gradients, running statistics, activations kept for
//! backward, gradient scratch), allocated here and never in a step.
//!
//! Buffer plan (training, batch N): per unit (conv + BN + act) the conv output
//! `pre` (BN's input, needed by BN backward) and the unit output `out` (the
//! next conv's input, needed by its weight gradient; its sign is the ReLU
//! mask). Nothing else is kept: BN's normalised values are recomputed in
//! backward from `pre` and the saved mean / inverse std; the option-A shortcut
//! reads the block input directly. Backward runs through four (five with
//! projections) gradient buffers of the largest activation size, rotated
//! block by block.

mod backward;
mod forward;
pub mod part;
pub mod plan;
pub mod predictor;
pub mod rpn_head;

use crate::arch::ArchSpec;
use crate::kernels::KernelPath;
use crate::ops::bn::BnSaved;
use crate::shape::Dims;
pub use plan::{Freeze, Frozen, ParamKind, Plan, ShortcutPlan, TensorInfo, UnitPlan};

/// Activation buffers of one unit.
#[derive(Default)]
pub(crate) struct UnitBufs {
    pub pre: Vec<f32>,
    pub out: Vec<f32>,
    pub saved: BnSaved,
    /// eval-mode BN's scale and shift (2 x Cout), remade each forward without an allocation
    pub affine: Vec<f32>,
}

pub(crate) struct BlockBufs {
    pub units: Vec<UnitBufs>,
    pub proj: Option<UnitBufs>,
}

/// Errors building a network.
#[derive(Debug)]
pub enum BuildError {
    TooLarge { need_bytes: u64, available_bytes: u64, batch: usize },
    Invalid(String),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::TooLarge { need_bytes, available_bytes, batch } => {
                let gib = |b: f64| b / (1u64 << 30) as f64;
                let (need, avail) = (*need_bytes as f64, *available_bytes as f64);
                write!(
                    f,
                    "batch {batch} needs about {:.1} GiB of memory for this network, but only {:.1} GiB is available; ",
                    gib(need),
                    gib(avail)
                )?;
                // 90% of the batch that would fill the memory (in f64: no overflow, no wrap)
                let fits = (*batch as f64 * avail / need.max(1.0) * 0.9).floor();
                if fits >= 1.0 {
                    write!(f, "use a smaller --batch (about {fits} would fit)")
                } else {
                    write!(
                        f,
                        "even one image needs about {:.1} GiB: use a smaller input size or a smaller network",
                        gib(need / (*batch).max(1) as f64)
                    )
                }
            }
            BuildError::Invalid(s) => f.write_str(s),
        }
    }
}
impl std::error::Error for BuildError {}

/// A network with its buffers.
pub struct Net {
    pub plan: Plan,
    /// batch capacity
    pub batch: usize,
    pub train: bool,
    /// which kernels run (the fastest this CPU supports unless forced); private
    /// so that it changes only to another checked path (`set_kernel_path`)
    path: KernelPath,
    /// every parameter, flat (offsets in `plan`); private so that every change
    /// goes through [`Net::params_mut`] or [`Net::set_torch`], which drop `prepared`
    params: Vec<f32>,
    /// Nets built for inference: each convolution's weights in the form its
    /// kernel reads (packed or Winograd-transformed; `Conv::prepare`), keyed by
    /// the weights' offset, for batches of `prepared_n` images (0: none). Made
    /// at the first forward, dropped whenever the parameters may change.
    pub(crate) prepared: std::collections::HashMap<usize, crate::ops::conv::Prepared>,
    pub(crate) prepared_n: usize,
    pub grads: Vec<f32>,
    /// BN running mean / var
    pub stats: Vec<f32>,
    /// input (N, H, W, Cin), NHWC
    pub input: Vec<f32>,
    pub(crate) stem: UnitBufs,
    pub(crate) pool_out: Vec<f32>,
    pub(crate) pool_arg: Vec<u32>,
    pub(crate) blocks: Vec<BlockBufs>,
    /// (N, features) after global average pooling
    pub(crate) feat: Vec<f32>,
    /// (N, classes)
    pub logits: Vec<f32>,
    pub(crate) dlogits: Vec<f32>,
    pub(crate) dfeat: Vec<f32>,
    /// gradient buffers (backward only)
    pub(crate) g: Vec<Vec<f32>>,
    /// scratch: transposed conv weights, per-task weight-gradient partials
    pub(crate) wt: Vec<f32>,
    pub(crate) partials: Vec<Vec<f32>>,
    /// synchronised BN: batch statistics summed over the shards of a batch split across
    /// processes (None: this process's images only)
    pub(crate) sync_bn: Option<std::sync::Arc<dyn crate::ops::bn::ShardSum>>,
    /// the order of every sum over the batch (BN statistics, weight gradients)
    pub(crate) sum_order: crate::par::SumOrder,
}

/// The input of block `i` (see [`Net::block_input`]) from the buffers before
/// it, `earlier` = the blocks `..i`: the one rule, also for the passes that
/// hold block i's buffers mutably.
pub(crate) fn block_input<'a>(
    has_pool: bool,
    stem: &'a UnitBufs,
    pool_out: &'a [f32],
    earlier: &'a [BlockBufs],
) -> &'a [f32] {
    match earlier.last() {
        Some(prev) => &prev.units.last().expect("a block has units").out,
        None if has_pool => pool_out,
        None => &stem.out,
    }
}

/// `pre` (the conv output BN normalises in training) only where backward needs it.
fn unit_bufs(u: &UnitPlan, n: usize, train: bool) -> UnitBufs {
    UnitBufs {
        pre: vec![0.0; if train { u.yd.len() * n } else { 0 }],
        out: vec![0.0; u.yd.len() * n],
        saved: BnSaved::default(),
        affine: vec![0.0; 2 * u.yd.c],
    }
}

/// Our layout -> torchvision's (conv weights HWIO -> OIHW; others as they are).
fn to_torch_layout(kind: ParamKind, data: &[f32]) -> Vec<f32> {
    match kind {
        ParamKind::ConvWeight { k, cin, cout } => {
            let mut out = vec![0.0; data.len()];
            for o in 0..cout {
                for i in 0..cin {
                    for kk in 0..k * k {
                        out[(o * cin + i) * k * k + kk] = data[(kk * cin + i) * cout + o];
                    }
                }
            }
            out
        }
        _ => data.to_vec(),
    }
}

/// torchvision's layout -> ours, into `dst` (the inverse of [`to_torch_layout`]).
fn from_torch_layout(kind: ParamKind, data: &[f32], dst: &mut [f32]) {
    match kind {
        ParamKind::ConvWeight { k, cin, cout } => {
            for o in 0..cout {
                for i in 0..cin {
                    for kk in 0..k * k {
                        dst[(kk * cin + i) * cout + o] = data[(o * cin + i) * k * k + kk];
                    }
                }
            }
        }
        _ => dst.copy_from_slice(data),
    }
}

/// Memory the system says is available (Linux MemAvailable), if known.
pub fn available_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Net {
    /// `pass(self)` on a pool worker ([`crate::par::on_pool`]): a pass's parallel loops then
    /// start without a hand-over and a wake-up each. Not where BN statistics are summed with
    /// other shards ([`crate::backend::Backend::set_sync_bn`]): those passes wait for each
    /// other, which `on_pool` does not allow.
    fn on_pool<R: Send>(&mut self, pass: impl FnOnce(&mut Net) -> R + Send) -> R {
        if self.sync_bn.is_some() { pass(self) } else { crate::par::on_pool(|| pass(self)) }
    }
}

impl Net {
    /// Build `spec` for batches of up to `batch` images of `h` x `w` pixels.
    /// `train` allocates what backward needs. Parameters are He-initialised
    /// (see [`crate::init`]) from `seed`.
    pub fn new(spec: &ArchSpec, batch: usize, h: usize, w: usize, train: bool, seed: u64) -> Result<Net, BuildError> {
        let mut net = Net::zeroed(spec, batch, h, w, train)?;
        crate::init::he_init(&mut net, seed);
        Ok(net)
    }

    /// A network like `self` (same weights and statistics, kernel path) for batches of `batch` images of
    /// `h` x `w` pixels, in eval mode: the fully-convolutional form at other input sizes.
    pub fn resized(&self, batch: usize, h: usize, w: usize) -> Result<Net, BuildError> {
        let mut net = Net::zeroed(self.spec(), batch, h, w, false)?;
        net.params.copy_from_slice(&self.params);
        net.stats.copy_from_slice(&self.stats);
        net.path = self.path;
        Ok(net)
    }

    /// [`Net::new`] with every parameter zero (no initialisation).
    fn zeroed(spec: &ArchSpec, batch: usize, h: usize, w: usize, train: bool) -> Result<Net, BuildError> {
        if batch == 0 {
            return Err(BuildError::Invalid("batch size must be at least 1".into()));
        }
        let min = if spec.has_maxpool() { 32 } else { 8 };
        if h < min || w < min {
            return Err(BuildError::Invalid(format!(
                "input {h}x{w} is too small for {}: at least {min}x{min}",
                spec.name
            )));
        }
        let plan = Plan::new(spec, h, w);
        let threads = crate::par::threads();
        let need = plan.memory_bytes(batch, train, threads);
        if let Some(avail) = available_memory().filter(|&a| need > a) {
            return Err(BuildError::TooLarge { need_bytes: need, available_bytes: avail, batch });
        }
        let n = batch;
        let pool_len = plan.pool.map(|(_, d)| d.len() * n).unwrap_or(0);
        let blocks = plan
            .blocks
            .iter()
            .map(|b| BlockBufs {
                units: b.units.iter().map(|u| unit_bufs(u, n, train)).collect(),
                proj: match &b.shortcut {
                    ShortcutPlan::Proj(u) => Some(unit_bufs(u, n, train)),
                    _ => None,
                },
            })
            .collect();
        let gmax = plan.max_activation_per_image() * n;
        let ng = if !train {
            0
        } else if plan.has_projection() {
            5
        } else {
            4
        };
        let net = Net {
            batch,
            train,
            path: KernelPath::cached(),
            params: vec![0.0; plan.n_params],
            prepared: Default::default(),
            prepared_n: 0,
            grads: vec![0.0; if train { plan.n_params } else { 0 }],
            stats: vec![0.0; plan.n_stats],
            input: vec![0.0; plan.input.len() * n],
            stem: unit_bufs(&plan.stem, n, train),
            pool_out: vec![0.0; pool_len],
            pool_arg: vec![0; pool_len],
            blocks,
            feat: vec![0.0; plan.fc.fin * n],
            logits: vec![0.0; plan.fc.fout * n],
            dlogits: vec![0.0; plan.fc.fout * n],
            dfeat: vec![0.0; if train { plan.fc.fin * n } else { 0 }],
            g: (0..ng).map(|_| vec![0.0; gmax]).collect(),
            wt: vec![0.0; if train { plan.max_conv_weights() } else { 0 }],
            partials: (0..if train { threads } else { 0 }).map(|_| vec![0.0; plan.max_conv_weights()]).collect(),
            sync_bn: None,
            sum_order: crate::par::SumOrder::Threads,
            plan,
        };
        Ok(net)
    }

    /// Freeze BN layers and / or the first stages ([`Freeze`]): training forwards then use the running
    /// statistics where frozen (a constant affine map, as in eval mode) and leave them unchanged,
    /// and backward writes zero gradients for the frozen parameters. Pair it with the optimizer mask
    /// `Sgd::trainable = Some(net.plan.trainable())`, so that weight decay and momentum leave them too.
    pub fn freeze(&mut self, f: Freeze) {
        self.plan.freeze(f);
    }

    /// Which kernels this network runs.
    pub fn kernel_path(&self) -> KernelPath {
        self.path
    }

    /// Run `path` from now on: every golden and gradient test runs each of
    /// [`KernelPath::all_supported`]. A `KernelPath` is one this CPU runs (see
    /// kernels/dispatch.rs), so there is nothing left to check here.
    pub fn set_kernel_path(&mut self, path: KernelPath) {
        self.path = path;
    }

    pub fn spec(&self) -> &ArchSpec {
        &self.plan.spec
    }

    /// The input of block `i` in the last forward: the max pool's output (or
    /// the stem's) for the first block, the previous block's output after;
    /// `i == blocks.len()` is the last block's output, the final feature map.
    /// The whole buffer (batch capacity); per image of shape `plan.block_input_dims(i)`.
    pub fn block_input(&self, i: usize) -> &[f32] {
        block_input(self.plan.pool.is_some(), &self.stem, &self.pool_out, &self.blocks[..i])
    }

    /// Shape of the input for `n` images.
    pub fn input_dims(&self, n: usize) -> Dims {
        Dims { n, ..self.plan.input }
    }

    pub fn classes(&self) -> usize {
        self.plan.fc.fout
    }

    /// Every parameter, flat (a tensor's offset and length are in `plan.params`).
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// Every parameter, to change (the prepared convolution weights of an
    /// inference net are dropped and made again at the next forward).
    pub fn params_mut(&mut self) -> &mut [f32] {
        self.drop_prepared();
        &mut self.params
    }

    /// The parameters to change and the gradients to change them with (an
    /// optimiser step; drops the prepared weights as [`Net::params_mut`] does).
    pub fn step_operands(&mut self) -> (&mut [f32], &[f32]) {
        self.drop_prepared();
        (&mut self.params, &self.grads)
    }

    pub(crate) fn drop_prepared(&mut self) {
        self.prepared.clear();
        self.prepared_n = 0;
    }

    /// Parameter / statistics entry by torchvision name.
    pub fn tensor_info(&self, name: &str) -> Option<(&TensorInfo, bool)> {
        plan::find_tensor(&self.plan.params, &self.plan.stats, name)
    }

    /// Every tensor's name, in torchvision state_dict order (params, then stats per layer).
    pub fn tensor_names(&self) -> Vec<String> {
        self.plan.params.iter().chain(&self.plan.stats).map(|t| t.name.clone()).collect()
    }

    /// A tensor in torchvision layout (convs OIHW), from params or stats.
    pub fn get_torch(&self, name: &str) -> Option<Vec<f32>> {
        let (t, is_param) = self.tensor_info(name)?;
        Some(t.read_torch(if is_param { &self.params } else { &self.stats }))
    }

    /// The gradient of a parameter in torchvision layout.
    pub fn grad_torch(&self, name: &str) -> Option<Vec<f32>> {
        let (t, is_param) = self.tensor_info(name)?;
        (is_param && !self.grads.is_empty()).then(|| t.read_torch(&self.grads))
    }

    /// Set a tensor from torchvision layout. Errors name the tensor and the shapes.
    pub fn set_torch(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<(), String> {
        let Net { plan, params, stats, .. } = self;
        let (t, is_param) =
            plan::find_tensor(&plan.params, &plan.stats, name).ok_or_else(|| plan::unexpected_tensor(name))?;
        t.write_torch(shape, data, if is_param { params } else { stats })?;
        if is_param {
            self.drop_prepared();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
