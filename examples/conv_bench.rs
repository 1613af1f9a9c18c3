//! Per-shape convolution throughput (forward, backward-data, backward-weight)
//! on the ResNet-20 shapes at batch 128, all threads, fastest path.
//!
//!     cargo run --release --example conv_bench [-- BATCH [imagenet]]

use resnet::ops::conv::Conv;
use resnet::par::Dims;
use std::time::Instant;

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(128);
    let rand = |len: usize, s: &str| -> Vec<f32> {
        (0..len).map(|i| 2.0 * resnet::init::counter_uniform(s, i as u64) - 1.0).collect()
    };
    println!("batch {n}, {} threads; GFLOP/s (ms) per call", resnet::par::threads());
    println!("{:<28} {:>16} {:>16} {:>16}", "conv", "forward", "backward-data", "backward-weight");
    let imagenet = std::env::args().nth(2).is_some_and(|a| a == "imagenet");
    let cifar = [
        (32, 3, 16, 3, 1, 1),
        (32, 16, 16, 3, 1, 1),
        (32, 16, 32, 3, 2, 1),
        (16, 32, 32, 3, 1, 1),
        (16, 32, 64, 3, 2, 1),
        (8, 64, 64, 3, 1, 1),
    ];
    // ResNet-50 v1.5 (input side, cin, cout, k, stride, pad)
    let resnet50 = [
        (224, 3, 64, 7, 2, 3),
        (56, 64, 64, 1, 1, 0),
        (56, 64, 64, 3, 1, 1),
        (56, 64, 256, 1, 1, 0),
        (56, 256, 64, 1, 1, 0),
        (56, 256, 128, 1, 1, 0),
        (56, 128, 128, 3, 2, 1),
        (28, 128, 512, 1, 1, 0),
        (56, 256, 512, 1, 2, 0),
        (28, 512, 128, 1, 1, 0),
        (28, 128, 128, 3, 1, 1),
        (14, 256, 256, 3, 1, 1),
        (14, 1024, 256, 1, 1, 0),
        (14, 256, 1024, 1, 1, 0),
        (7, 512, 512, 3, 1, 1),
        (7, 2048, 512, 1, 1, 0),
        (7, 512, 2048, 1, 1, 0),
    ];
    for (h, ci, co, k, s, p) in if imagenet { resnet50.to_vec() } else { cifar.to_vec() } {
        let c = Conv::new(ci, co, k, s, p);
        let xd = Dims::new(n, h, h, ci);
        let yd = c.out_dims(xd);
        let (x, w, dy) = (rand(xd.len(), "x"), rand(c.weight_len(), "w"), rand(yd.len(), "dy"));
        let (mut y, mut dx, mut dw) = (vec![0.0; yd.len()], vec![0.0; xd.len()], vec![0.0; c.weight_len()]);
        let mut wt = vec![0.0; c.weight_len()];
        let mut parts = vec![vec![0.0; c.weight_len()]; resnet::par::threads()];
        let gf = 2.0 * (yd.pixels() * c.weight_len()) as f64 / 1e9;
        let tf = best(5, || c.forward(&w, &x, xd, &mut y));
        let td = best(5, || c.backward_data(&w, &dy, xd, &mut dx, false, &mut wt));
        let tw = best(5, || c.backward_weight(&x, xd, &dy, &mut dw, &mut parts));
        let cell = |t: f64| format!("{:.0} ({:.2})", gf / t, t * 1e3);
        println!("{:<28} {:>16} {:>16} {:>16}", format!("{h}x{h} {ci}->{co} k{k}/{s}"), cell(tf), cell(td), cell(tw));
    }
}
