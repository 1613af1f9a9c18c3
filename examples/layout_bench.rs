//! The layout decision, measured: ResNet-20's 3x3 convolutions (forward, one
//! thread, batch 32) in NCHW (im2col + GEMM, and direct) against NHWC (our
//! portable kernel, and an AVX-512 register-blocked micro-kernel of the kind
//! the fast path will use: 8 output pixels x 16 output channels in registers,
//! one broadcast input value per FMA). Results go into ARCHITECTURE.md.
//!
//!     cargo run --release --example layout_bench

use resnet::bench::best_of;
use resnet::ops::conv::Conv;
use resnet::shape::Dims;

// the binaries' allocator: large blocks on a cache line (resnet::alloc)
#[global_allocator]
static ALLOC: resnet::alloc::LineAligned = resnet::alloc::LineAligned;

fn rand(n: usize, seed: u64) -> Vec<f32> {
    (0..n).map(|i| 2.0 * resnet::rng::counter_uniform(&seed.to_string(), i as u64) - 1.0).collect()
}

#[allow(clippy::too_many_arguments)]
/// NCHW: im2col (C*9, H*W) then GEMM (Cout, C*9) x (C*9, H*W), axpy over H*W.
fn nchw_im2col(x: &[f32], w: &[f32], n: usize, c: usize, h: usize, co: usize, y: &mut [f32], col: &mut [f32]) {
    let hw = h * h;
    for b in 0..n {
        let xi = &x[b * c * hw..(b + 1) * c * hw];
        for ci in 0..c {
            for kh in 0..3 {
                for kw in 0..3 {
                    let row = &mut col[((ci * 3 + kh) * 3 + kw) * hw..][..hw];
                    for oy in 0..h {
                        for ox in 0..h {
                            let (iy, ix) = (oy as isize + kh as isize - 1, ox as isize + kw as isize - 1);
                            row[oy * h + ox] = if iy < 0 || ix < 0 || iy >= h as isize || ix >= h as isize {
                                0.0
                            } else {
                                xi[(ci * h + iy as usize) * h + ix as usize]
                            };
                        }
                    }
                }
            }
        }
        let yi = &mut y[b * co * hw..(b + 1) * co * hw];
        for o in 0..co {
            let yr = &mut yi[o * hw..(o + 1) * hw];
            yr.fill(0.0);
            for k in 0..c * 9 {
                let a = w[o * c * 9 + k];
                for (d, s) in yr.iter_mut().zip(&col[k * hw..(k + 1) * hw]) {
                    *d += a * s;
                }
            }
        }
    }
}

/// NCHW direct: for each (o, i, kh, kw) an axpy over output rows.
fn nchw_direct(x: &[f32], w: &[f32], n: usize, c: usize, h: usize, co: usize, y: &mut [f32]) {
    let hw = h * h;
    for b in 0..n {
        for o in 0..co {
            let yr = &mut y[(b * co + o) * hw..][..hw];
            yr.fill(0.0);
            for i in 0..c {
                let xp = &x[(b * c + i) * hw..][..hw];
                for kh in 0..3 {
                    for kw in 0..3 {
                        let a = w[((o * c + i) * 3 + kh) * 3 + kw];
                        for oy in 0..h {
                            let iy = oy as isize + kh as isize - 1;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            let (x0, x1) = (if kw == 0 { 1 } else { 0 }, if kw == 2 { h - 1 } else { h });
                            let src = &xp[iy as usize * h..][..h];
                            for ox in x0..x1 {
                                yr[oy * h + ox] += a * src[ox + kw - 1];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// NHWC, AVX-512: input pre-padded to (H+2, W+2, C); 8 pixels x 16 channels per register block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn nhwc_avx512(xp: &[f32], w: &[f32], n: usize, c: usize, h: usize, co: usize, y: &mut [f32]) {
    use std::arch::x86_64::*;
    let hp = h + 2;
    for b in 0..n {
        for oy in 0..h {
            for ox0 in (0..h).step_by(8) {
                for ob in (0..co).step_by(16) {
                    let mut acc = [_mm512_setzero_ps(); 8];
                    for kh in 0..3 {
                        for kw in 0..3 {
                            let xrow = &xp[((b * hp + oy + kh) * hp + ox0 + kw) * c..];
                            let wk = &w[((kh * 3 + kw) * c) * co + ob..];
                            for i in 0..c {
                                let wv = unsafe { _mm512_loadu_ps(wk.as_ptr().add(i * co)) };
                                for (p, a) in acc.iter_mut().enumerate() {
                                    let xv = _mm512_set1_ps(xrow[p * c + i]);
                                    *a = _mm512_fmadd_ps(xv, wv, *a);
                                }
                            }
                        }
                    }
                    for (p, a) in acc.iter().enumerate() {
                        let dst = &mut y[((b * h + oy) * h + ox0 + p) * co + ob..][..16];
                        unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), *a) };
                    }
                }
            }
        }
    }
}

fn main() {
    let n = 32;
    println!(
        "ResNet-20 3x3/1 convolutions, forward, batch {n}, 1 thread, best of 5 (GFLOP/s; 2 FLOPs per multiply-add)"
    );
    println!(
        "{:<16} {:>14} {:>12} {:>14} {:>16}",
        "shape", "NCHW im2col", "NCHW direct", "NHWC portable", "NHWC AVX-512 8x16"
    );
    for (c, h) in [(16usize, 32usize), (32, 16), (64, 8)] {
        let flops = 2.0 * (n * h * h * c * c * 9) as f64;
        let gf = |t: f64| flops / t / 1e9;
        let x = rand(n * c * h * h, 1);
        let w_oihw = rand(c * c * 9, 2);
        let mut y = vec![0.0; n * c * h * h];
        let mut col = vec![0.0; c * 9 * h * h];
        let t_im2col = best_of(5, || nchw_im2col(&x, &w_oihw, n, c, h, c, &mut y, &mut col));
        let y_ref = y.clone();
        let t_direct = best_of(5, || nchw_direct(&x, &w_oihw, n, c, h, c, &mut y));
        // NHWC copies of the same data
        let mut xh = vec![0.0; x.len()];
        let mut wh = vec![0.0; w_oihw.len()];
        for b in 0..n {
            for i in 0..c {
                for p in 0..h * h {
                    xh[(b * h * h + p) * c + i] = x[(b * c + i) * h * h + p];
                }
            }
        }
        for o in 0..c {
            for i in 0..c {
                for k in 0..9 {
                    wh[(k * c + i) * c + o] = w_oihw[(o * c + i) * 9 + k];
                }
            }
        }
        let conv = Conv::new(c, c, 3, 1, 1);
        let xd = Dims::new(n, h, h, c);
        let mut yh = vec![0.0; x.len()];
        let t_port = resnet::par::with_threads(1, || best_of(5, || conv.forward(&wh, &xh, xd, &mut yh))).unwrap();
        // same result as NCHW
        let err = (0..y_ref.len())
            .map(|j| {
                let (b, rem) = (j / (c * h * h), j % (c * h * h));
                (y_ref[j] - yh[(b * h * h + rem % (h * h)) * c + rem / (h * h)]).abs()
            })
            .fold(0.0f32, f32::max);
        assert!(err < 1e-3, "layouts disagree: {err}");
        let mut t_simd = f64::NAN;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            let hp = h + 2;
            let mut xp = vec![0.0; n * hp * hp * c];
            for b in 0..n {
                for yy in 0..h {
                    for xx in 0..h {
                        let s = ((b * h + yy) * h + xx) * c;
                        xp[((b * hp + yy + 1) * hp + xx + 1) * c..][..c].copy_from_slice(&xh[s..s + c]);
                    }
                }
            }
            let mut ys = vec![0.0; x.len()];
            t_simd = best_of(5, || unsafe { nhwc_avx512(&xp, &wh, n, c, h, c, &mut ys) });
            let e = ys.iter().zip(&yh).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(e < 1e-3, "avx512 kernel disagrees: {e}");
        }
        println!(
            "{:<16} {:>14.1} {:>12.1} {:>14.1} {:>16.1}",
            format!("{c}ch {h}x{h}"),
            gf(t_im2col),
            gf(t_direct),
            gf(t_port),
            gf(t_simd)
        );
    }
}
