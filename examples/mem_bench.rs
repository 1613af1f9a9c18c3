//! Memory bandwidth on all threads, the ceiling of the memory-bound convolution shapes
//! (BENCHMARKS.md's per-shape table): reading, writing and copying f32 buffers far larger
//! than the caches, and a 12.8 MB copy (one 56 x 56 x 64 activation at batch 16) that fits
//! the L3 of the machines we run on. GB/s counts the bytes the program asks for (a write that
//! misses the cache also reads its line first: the hardware moves more).
//!
//!     cargo run --release --example mem_bench [-- MiB=256]

use resnet::bench::best_of;
use std::hint::black_box;

// the binaries' allocator: large blocks on a cache line (resnet::alloc)
#[global_allocator]
static ALLOC: resnet::alloc::LineAligned = resnet::alloc::LineAligned;

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let threads = resnet::par::threads();
    let cpu = resnet::bench::cpu_model();
    println!("{cpu}, {threads} threads; best of 7, GB/s");
    for len in [mib << 18, 12_845_056 / 4] {
        let mut a = vec![1.0f32; len];
        let mut b = vec![2.0f32; len];
        let bytes = (len * 4) as f64;
        let read = best_of(7, || {
            let mut sums = vec![0.0f32; threads];
            let per = len.div_ceil(threads);
            let a = &a;
            resnet::par::for_each_mut(&mut sums, |i, s| {
                // 16 partial sums: the compiler's vector lanes, no serial chain
                let mut acc = [0.0f32; 16];
                for c in a[(i * per).min(len)..((i + 1) * per).min(len)].chunks_exact(16) {
                    for (x, v) in acc.iter_mut().zip(c) {
                        *x += v;
                    }
                }
                *s = acc.iter().sum();
            });
            black_box(sums);
        });
        let write = best_of(7, || resnet::par::for_chunks(&mut a, 1 << 16, |_, c| c.fill(black_box(3.0))));
        let copy = best_of(7, || {
            let src = &b;
            resnet::par::for_chunks(&mut a, 1 << 16, |k, c| c.copy_from_slice(&src[k << 16..][..c.len()]))
        });
        b[0] = black_box(a[len - 1]);
        println!(
            "{:>7.1} MB: read {:5.1}  write {:5.1}  copy {:5.1} (read + write bytes)",
            bytes / 1e6,
            bytes / read / 1e9,
            bytes / write / 1e9,
            2.0 * bytes / copy / 1e9
        );
    }
}
