//! The boundary between what a network computes and where it computes it.
//!
//! Training, evaluation, checkpointing and benchmarking talk to a [`Backend`]: a network built
//! once for a batch capacity that runs forward / backward / update steps over its own
//! preallocated buffers, and exchanges tensors with the host only by name (torchvision names and
//! layouts). The CPU engine ([`crate::net::Net`]) is the one implementation today; a CUDA backend
//! fills the same trait with device buffers.
//!
//! The trainer's step is `forward` -> `loss_backward` (gradients ready: [`Backend::grads_mut`] is
//! where a data-parallel hook all-reduces them) -> `sgd_step`.

use crate::arch::ArchSpec;
use crate::ops::loss::LossOut;
use crate::optim::Sgd;
use std::ops::Range;

pub trait Backend {
    fn spec(&self) -> &ArchSpec;
    /// Largest batch the buffers were built for.
    fn capacity(&self) -> usize;
    fn classes(&self) -> usize;
    /// Values of one input image (H * W * C).
    fn input_len(&self) -> usize;
    /// The host-side input batch, NHWC f32, to be filled before `forward`.
    fn input_mut(&mut self) -> &mut [f32];
    /// Forward the first `n` images (batch statistics if `train`).
    fn forward(&mut self, n: usize, train: bool);
    /// Logits of the last forward, (n, classes) row-major.
    fn logits(&self, n: usize) -> &[f32];
    /// Loss of the last training forward against `labels`, then backward.
    fn loss_backward(&mut self, labels: &[u32]) -> LossOut;
    /// [`Backend::loss_backward`], telling `ready(from, &grads[from..])` whenever the gradients
    /// from parameter `from` on are final (the overlapped all-reduce starts on them).
    fn loss_backward_with(&mut self, labels: &[u32], ready: &mut (dyn FnMut(usize, &[f32]) + Send)) -> LossOut;
    /// The gradients of the last backward, flat in parameter order (host memory).
    fn grads_mut(&mut self) -> &mut [f32];
    /// The parameters, flat in parameter order (host memory): broadcast from rank 0 in data-parallel runs.
    fn params_mut(&mut self) -> &mut [f32];
    /// The BN running statistics, flat (host memory).
    fn stats_mut(&mut self) -> &mut [f32];
    /// Synchronised BN: from now on, training forward and backward sum every BN layer's batch
    /// statistics over the shards of a batch split across processes through `sync` (None: local).
    fn set_sync_bn(&mut self, sync: Option<std::sync::Arc<dyn crate::ops::bn::ShardSum>>);
    /// The order of every sum over the batch from now on: [`crate::par::SumOrder::Leaves`] makes
    /// a step's bits a function of the batch alone (any thread count, any power-of-two split).
    fn set_sum_order(&mut self, order: crate::par::SumOrder);
    /// SGD update with the gradients of the last backward (only `opt`'s trainable ranges).
    fn sgd_step(&mut self, opt: &mut Sgd, lr: f32);
    /// Number of parameters (the optimizer state's length).
    fn param_count(&self) -> usize;
    /// Where parameter `name` lies in the flat parameter order (None: not a parameter).
    fn param_range(&self, name: &str) -> Option<Range<usize>>;
    /// The first parameter tensor holding a non-finite value, by name.
    fn non_finite_param(&self) -> Option<String>;
    /// Every parameter and running statistic: torchvision name and shape, in state_dict order.
    fn tensors(&self) -> Vec<(String, Vec<usize>)>;
    /// A parameter or running statistic in torchvision layout.
    fn get_tensor(&self, name: &str) -> Option<Vec<f32>>;
    fn set_tensor(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<(), String>;
}

impl Backend for crate::net::Net {
    fn spec(&self) -> &ArchSpec {
        &self.plan.spec
    }
    fn capacity(&self) -> usize {
        self.batch
    }
    fn classes(&self) -> usize {
        self.plan.fc.fout
    }
    fn input_len(&self) -> usize {
        self.input_dims(1).len()
    }
    fn input_mut(&mut self) -> &mut [f32] {
        &mut self.input
    }
    fn forward(&mut self, n: usize, train: bool) {
        crate::net::Net::forward(self, n, train)
    }
    fn logits(&self, n: usize) -> &[f32] {
        &self.logits[..n * self.plan.fc.fout]
    }
    fn loss_backward(&mut self, labels: &[u32]) -> LossOut {
        let out = self.loss(labels);
        self.backward(labels.len());
        out
    }
    fn loss_backward_with(&mut self, labels: &[u32], ready: &mut (dyn FnMut(usize, &[f32]) + Send)) -> LossOut {
        let out = self.loss(labels);
        self.backward_with(labels.len(), ready);
        out
    }
    fn grads_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }
    fn params_mut(&mut self) -> &mut [f32] {
        crate::net::Net::params_mut(self)
    }
    fn stats_mut(&mut self) -> &mut [f32] {
        &mut self.stats
    }
    fn set_sync_bn(&mut self, sync: Option<std::sync::Arc<dyn crate::ops::bn::ShardSum>>) {
        self.sync_bn = sync;
    }
    fn set_sum_order(&mut self, order: crate::par::SumOrder) {
        self.sum_order = order;
    }
    fn sgd_step(&mut self, opt: &mut Sgd, lr: f32) {
        let (params, grads) = self.step_operands();
        opt.step(params, grads, lr)
    }
    fn param_count(&self) -> usize {
        self.params().len()
    }
    fn param_range(&self, name: &str) -> Option<Range<usize>> {
        self.plan.params.iter().find(|t| t.name == name).map(|t| t.offset..t.offset + t.len)
    }
    fn non_finite_param(&self) -> Option<String> {
        let bad = |t: &&crate::net::plan::TensorInfo| {
            self.params()[t.offset..t.offset + t.len].iter().any(|v| !v.is_finite())
        };
        self.plan.params.iter().find(bad).map(|t| t.name.clone())
    }
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.plan.params.iter().chain(&self.plan.stats).map(|t| (t.name.clone(), t.shape.clone())).collect()
    }
    fn get_tensor(&self, name: &str) -> Option<Vec<f32>> {
        self.get_torch(name)
    }
    fn set_tensor(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<(), String> {
        self.set_torch(name, shape, data)
    }
}
