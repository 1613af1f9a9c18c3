//! The boundary between what a network computes and where it computes it.
//!
//! Training, evaluation and benchmarking code talk to a [`Backend`]: a
//! network built once for a batch capacity that runs forward / backward /
//! update steps over its own preallocated buffers, and exchanges tensors with
//! the host only by name (torchvision names and layouts). The CPU engine
//! ([`crate::net::Net`]) is the one implementation today; a CUDA backend
//! fills the same trait with device buffers.

use crate::ops::loss::LossOut;
use crate::optim::Sgd;

pub trait Backend {
    /// Largest batch the buffers were built for.
    fn capacity(&self) -> usize;
    fn classes(&self) -> usize;
    /// The host-side input batch, NHWC f32, to be filled before `forward`.
    fn input_mut(&mut self) -> &mut [f32];
    /// Forward the first `n` images (batch statistics if `train`).
    fn forward(&mut self, n: usize, train: bool);
    /// Logits of the last forward, (n, classes) row-major.
    fn logits(&self, n: usize) -> Vec<f32>;
    /// Loss of the last training forward against `labels`, then backward.
    fn loss_backward(&mut self, labels: &[u32]) -> LossOut;
    /// SGD update with the gradients of the last backward.
    fn sgd_step(&mut self, opt: &mut Sgd, lr: f32);
    /// A parameter or running statistic in torchvision layout.
    fn get_tensor(&self, name: &str) -> Option<Vec<f32>>;
    fn set_tensor(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<(), String>;
}

impl Backend for crate::net::Net {
    fn capacity(&self) -> usize {
        self.batch
    }
    fn classes(&self) -> usize {
        self.plan.fc.fout
    }
    fn input_mut(&mut self) -> &mut [f32] {
        &mut self.input
    }
    fn forward(&mut self, n: usize, train: bool) {
        crate::net::Net::forward(self, n, train)
    }
    fn logits(&self, n: usize) -> Vec<f32> {
        self.logits[..n * self.plan.fc.fout].to_vec()
    }
    fn loss_backward(&mut self, labels: &[u32]) -> LossOut {
        let out = self.loss(labels);
        self.backward(labels.len());
        out
    }
    fn sgd_step(&mut self, opt: &mut Sgd, lr: f32) {
        opt.step(&mut self.params, &self.grads, lr)
    }
    fn get_tensor(&self, name: &str) -> Option<Vec<f32>> {
        self.get_torch(name)
    }
    fn set_tensor(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<(), String> {
        self.set_torch(name, shape, data)
    }
}
