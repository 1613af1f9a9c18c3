//! Per-shape convolution throughput (forward, backward-data, backward-weight)
//! on the ResNet-20 shapes at batch 128, all threads, fastest path.
//!
//!     cargo run --release --example conv_bench [-- BATCH [imagenet]]

use resnet::bench::best_of;
use resnet::kernels::KernelPath;
use resnet::ops::conv::Conv;
use resnet::shape::Dims;

// the binaries' allocator: large blocks on a cache line (resnet::alloc)
#[global_allocator]
static ALLOC: resnet::alloc::LineAligned = resnet::alloc::LineAligned;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(128);
    let rand = |len: usize, s: &str| -> Vec<f32> {
        (0..len).map(|i| 2.0 * resnet::rng::counter_uniform(s, i as u64) - 1.0).collect()
    };
    println!("batch {n}, {} threads; GFLOP/s (ms) per call", resnet::par::threads());
    println!("{:<36} {:>16} {:>16} {:>16}", "conv", "forward", "backward-data", "backward-weight");
    let imagenet = std::env::args().nth(2).is_some_and(|a| a == "imagenet");
    // a third argument: only the shapes whose label contains it (e.g. "k1/2")
    let only = std::env::args().nth(3);
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
        (28, 512, 256, 1, 1, 0),
        (28, 256, 256, 3, 2, 1),
        (28, 512, 1024, 1, 2, 0),
        (14, 256, 256, 3, 1, 1),
        (14, 1024, 256, 1, 1, 0),
        (14, 256, 1024, 1, 1, 0),
        (14, 1024, 512, 1, 1, 0),
        (14, 512, 512, 3, 2, 1),
        (14, 1024, 2048, 1, 2, 0),
        (7, 512, 512, 3, 1, 1),
        (7, 2048, 512, 1, 1, 0),
        (7, 512, 2048, 1, 1, 0),
    ];
    // CB_SHAPE="h,cin,cout,k,stride,pad": that one shape instead (experiments)
    type Shape = (usize, usize, usize, usize, usize, usize);
    let custom: Option<Vec<Shape>> = std::env::var("CB_SHAPE").ok().map(|v| {
        let f: Vec<usize> = v.split(',').map(|x| x.trim().parse().expect("CB_SHAPE: six integers")).collect();
        assert_eq!(f.len(), 6, "CB_SHAPE: h,cin,cout,k,stride,pad");
        vec![(f[0], f[1], f[2], f[3], f[4], f[5])]
    });
    let shapes = custom.unwrap_or_else(|| if imagenet { resnet50.to_vec() } else { cifar.to_vec() });
    for (h, ci, co, k, s, p) in shapes {
        if only.as_ref().is_some_and(|o| !format!("{h}x{h} {ci}->{co} k{k}/{s}").contains(o.as_str())) {
            continue;
        }
        let c = Conv::new(ci, co, k, s, p);
        let xd = Dims::new(n, h, h, ci);
        let yd = c.out_dims(xd);
        let (x, w, dy) = (rand(xd.len(), "x"), rand(c.weight_len(), "w"), rand(yd.len(), "dy"));
        let off: usize = std::env::var("CB_OFF").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        let (mut yb, mut dxb, mut dw) =
            (vec![0.0; yd.len() + off], vec![0.0; xd.len() + off], vec![0.0; c.weight_len()]);
        let (y, dx) = (&mut yb[off..], &mut dxb[off..]);
        let mut wt = vec![0.0; c.weight_len()];
        // CB_EPI=1: the forward with the inference epilogue of a block's last convolution
        // (folded BN, identity residual, ReLU)
        let epi_on = std::env::var("CB_EPI").is_ok_and(|v| v == "1");
        let (scale, shift, res) = (rand(co, "s"), rand(co, "t"), rand(yd.len(), "r"));
        let mut parts = vec![vec![0.0; c.weight_len()]; resnet::par::threads()];
        let gf = 2.0 * (yd.pixels() * c.weight_len()) as f64 / 1e9;
        // each path timed interleaved with the others (best of 7), so that a
        // slow phase of a shared machine hits all of them alike
        let paths = KernelPath::all_supported();
        let paths: Vec<KernelPath> = paths.into_iter().filter(|p| p.simd()).collect();
        let mut fastest = vec![[f64::INFINITY; 3]; paths.len()];
        for _ in 0..7 {
            for (pi, &path) in paths.iter().enumerate() {
                let b = &mut fastest[pi];
                b[0] = b[0].min(best_of(1, || {
                    if epi_on {
                        let epi = resnet::kernels::Epilogue {
                            affine: Some((&scale, &shift)),
                            residual: Some(resnet::kernels::ShortcutSrc::Identity(&res)),
                            relu: true,
                        };
                        c.forward_fused(path, &w, &x, xd, y, &epi)
                    } else {
                        c.forward_with(path, &w, &x, xd, y)
                    }
                }));
                b[1] = b[1].min(best_of(1, || c.backward_data_with(path, &w, &dy, xd, dx, false, &mut wt)));
                b[2] = b[2].min(best_of(1, || {
                    c.backward_weight_with(path, &x, xd, &dy, &mut dw, &mut parts, resnet::par::SumOrder::Threads)
                }));
            }
        }
        let cell = |t: f64| format!("{:.0} ({:.2})", gf / t, t * 1e3);
        for (pi, path) in paths.iter().enumerate() {
            let [tf, td, tw] = fastest[pi];
            println!(
                "{:<36} {:>16} {:>16} {:>16}",
                format!("{h}x{h} {ci}->{co} k{k}/{s} {path:?}"),
                cell(tf),
                cell(td),
                cell(tw)
            );
        }
    }
}
