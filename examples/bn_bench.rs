//! BN's training forward and backward (ReLU, and residual add + ReLU) at the CIFAR ResNets'
//! shapes (batch 128) and ResNet-50's first two stages (batch 16), best of 7 calls each, with
//! each tensor's size: BN is bound by memory (two passes each way), so a time against the
//! bytes it moves (examples/mem_bench) says how close it is to the machine's bandwidth.
//!
//!     cargo run --release --example bn_bench
use resnet::bench::best_of;
use resnet::ops::bn::{self, Act, BatchSum, BnParams, BnSaved};
use resnet::shape::Dims;
#[global_allocator]
static ALLOC: resnet::alloc::LineAligned = resnet::alloc::LineAligned;
fn main() {
    for (hw, c) in [(32usize, 16usize), (16, 32), (8, 64), (56, 64), (28, 128)] {
        let n = if hw >= 28 && c >= 64 { 16 } else { 128 };
        let xd = Dims { n, h: hw, w: hw, c };
        let len = xd.len();
        let x: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let dy: Vec<f32> = (0..len).map(|i| ((i * 104729) % 997) as f32 / 500.0 - 1.0).collect();
        let s: Vec<f32> = (0..len).map(|i| ((i * 31) % 101) as f32 / 50.0 - 1.0).collect();
        let (gamma, beta) = (vec![1.0f32; c], vec![0.0f32; c]);
        let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
        let mut saved = BnSaved::default();
        let mut y = vec![0.0f32; len];
        let mut dx = vec![0.0f32; len];
        let mut dz = vec![0.0f32; len];
        let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
        let mb = (len * 4) as f64 / 1e6;
        for act in [Act::Relu, Act::AddRelu] {
            let sc = if act == Act::AddRelu { Some(resnet::kernels::ShortcutSrc::Identity(&s)) } else { None };
            let f = best_of(7, || {
                bn::forward_train(
                    &BnParams { gamma: &gamma, beta: &beta },
                    &mut rm,
                    &mut rv,
                    &mut saved,
                    &x,
                    xd,
                    act,
                    sc,
                    &mut y,
                    BatchSum::default(),
                )
            });
            let b = best_of(7, || {
                bn::backward(
                    &gamma,
                    &saved,
                    &x,
                    xd,
                    &y,
                    &dy,
                    act,
                    &mut dx,
                    &mut dg,
                    &mut db,
                    if act == Act::AddRelu { Some(&mut dz) } else { None },
                    BatchSum::default(),
                )
            });
            println!(
                "{n}x{hw}x{hw}x{c} {act:?}: tensor {mb:.1} MB, forward {:.3} ms, backward {:.3} ms",
                f * 1e3,
                b * 1e3
            );
        }
    }
}
