//! Parameter initialisation.
//!
//! He initialisation (He et al. 2015, "Delving deep into rectifiers", eq. 10,
//! the forward case that the ResNet paper cites as \[13\]): conv weights drawn
//! from N(0, 2 / fan_in) with fan_in = k * k * Cin — Caffe's "msra" filler
//! default. (torchvision uses fan_out; both keep activations at unit scale
//! through ReLU stacks.) BN gamma = 1, beta = 0, running mean 0, var 1. The fc
//! layer: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and zero bias.
//!
//! Every random value is a pure function of (seed, tensor name, element
//! index) — the counter-based generator of [`crate::rng`] — so initialisation is identical
//! whatever the thread count, and the golden tests can recreate weights in
//! PyTorch without storing them.

use crate::net::{Net, ParamKind, TensorInfo};
use crate::rng::{counter_normal, counter_uniform};

/// He-initialise every parameter of `net` from `seed` (see the module docs).
pub fn he_init(net: &mut Net, seed: u64) {
    let infos: Vec<_> = net.plan.params.iter().chain(&net.plan.stats).cloned().collect();
    for t in infos {
        net.set_torch(&t.name, &t.shape, &he_values(&t, seed)).expect("own tensor table");
    }
}

/// The initial values of tensor `t` (torchvision layout) from `seed`: a function of the seed, the
/// tensor's name and the element index only, so that a part of a network
/// ([`crate::net::part::Part`]) starts from the same values as the whole network.
pub fn he_values(t: &TensorInfo, seed: u64) -> Vec<f32> {
    let stream = format!("{seed}/{}", t.name);
    match t.kind {
        ParamKind::ConvWeight { k, cin, .. } => {
            let std = (2.0 / (k * k * cin) as f32).sqrt();
            (0..t.len).map(|i| std * counter_normal(&stream, i as u64)).collect()
        }
        ParamKind::FcWeight => {
            let bound = 1.0 / (t.shape[1] as f32).sqrt();
            (0..t.len).map(|i| bound * (2.0 * counter_uniform(&stream, i as u64) - 1.0)).collect()
        }
        ParamKind::BnWeight | ParamKind::RunningVar => vec![1.0; t.len],
        ParamKind::BnBias | ParamKind::FcBias | ParamKind::RunningMean => vec![0.0; t.len],
    }
}
