//! Times the detection ops on the shapes (bench/detect_ops.py runs it alternately with
//! torchvision.ops): `nms` (6000 boxes -> the first 300 kept at IoU 0.7, `nms_limit`: torchvision's
//! `nms` has no limit and suppresses through all 6000) and `roi_align` (300 RoIs
//! on a 1024-channel 38 x 63 map at stride 16 -> 14 x 14, aligned, sampling ratio 2, forward +
//! backward). Prints one JSON line: the median milliseconds of `reps` repetitions.
//!
//!     cargo run --release --example detect_bench -- nms 20
//!     cargo run --release --example detect_bench -- roi_align 5 [threads]

use resnet::detect::Convention;
use resnet::detect::nms::nms_limit;
use resnet::detect::roi::{RoI, RoIAlign};
use resnet::rng::counter_uniform;
use resnet::shape::Dims;
use std::time::Instant;

// the binaries' allocator: large blocks on a cache line (resnet::alloc)
#[global_allocator]
static ALLOC: resnet::alloc::LineAligned = resnet::alloc::LineAligned;

/// Boxes inside a 1008 x 608 image, 8..400 px a side (stream "bench/boxes").
fn boxes(n: usize) -> Vec<[f32; 4]> {
    (0..n)
        .map(|i| {
            let u = |k: u64| counter_uniform("bench/boxes", 4 * i as u64 + k);
            let (w, h) = (8.0 + u(0) * 392.0, 8.0 + u(1) * 392.0);
            let (x, y) = (u(2) * (1008.0 - w), u(3) * (608.0 - h));
            [x, y, x + w, y + h]
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let op = args.get(1).map(String::as_str).unwrap_or("nms");
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2);
    resnet::par::set_threads(threads).unwrap();
    let mut times = vec![];
    match op {
        "nms" => {
            let b = boxes(6000);
            let s: Vec<f32> = (0..6000).map(|i| counter_uniform("bench/scores", i)).collect();
            for _ in 0..reps {
                let t = Instant::now();
                let keep = nms_limit(&b, &s, 0.7, Convention::Pixel, 300);
                std::hint::black_box(&keep);
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        "roi_align" => {
            let xd = Dims::new(1, 38, 63, 1024);
            let x: Vec<f32> = (0..xd.len()).map(|i| counter_uniform("bench/map", i as u64) - 0.5).collect();
            let rois: Vec<RoI> = boxes(300).into_iter().map(|bbox| RoI { image: 0, bbox }).collect();
            let op = RoIAlign { out_h: 14, out_w: 14, spatial_scale: 1.0 / 16.0, sampling_ratio: 2, aligned: true };
            let mut y = vec![0.0; 300 * 14 * 14 * 1024];
            let dy: Vec<f32> = (0..y.len()).map(|i| counter_uniform("bench/dy", i as u64) - 0.5).collect();
            let mut dx = vec![0.0; xd.len()];
            for _ in 0..reps {
                let t = Instant::now();
                op.forward(&x, xd, &rois, &mut y);
                op.backward(&dy, xd, &rois, &mut dx);
                std::hint::black_box((&y, &dx));
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        _ => {
            eprintln!("usage: detect_bench nms|roi_align [reps] [threads]");
            std::process::exit(2);
        }
    }
    println!("{{\"op\": \"{op}\", \"threads\": {threads}, \"reps\": {reps}, \"ms\": {:.3}}}", median(times));
}
