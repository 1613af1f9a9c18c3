//! AVX-512 micro-kernels for NHWC convolution.
//!
//! One register-blocked "gather" kernel serves forward and backward-data:
//! an output pixel is a sum over kernel taps of (source pixel, all channels) x
//! (a weight matrix of channels x 16-lane output blocks). A block of P output
//! pixels x NB*16 output channels lives in registers; each step loads NB
//! weight vectors and broadcasts one source value per pixel (the
//! oneDNN / LIBXSMM scheme). Taps that fall into the padding read from
//! [`ZEROS`], so there are no branches in the inner loop.
//!
//! Forward: source = x, weights HWIO, source pixel = o*s + k - pad.
//! Backward-data: source = dy, weights (KH, KW, Cout, Cin), source pixel =
//! (i + pad - k) / s when that divides (the transposed convolution).
//!
//! The weight-gradient kernel keeps R input channels x NB*16 output channels
//! of one tap in registers and streams the pixels of one image through them.

#![allow(clippy::needless_range_loop)] // register blocks are indexed by pixel / channel on purpose
#![allow(clippy::too_many_arguments)]

use super::{Epilogue, ZEROS};
use std::arch::x86_64::*;

/// Geometry of a gather convolution.
#[derive(Clone, Copy, Debug)]
pub struct Gather {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// false: forward (source = input); true: backward-data (source = output gradient)
    pub transposed: bool,
    /// source (H, W, C) per image
    pub sh: usize,
    pub sw: usize,
    pub cs: usize,
    /// destination (H, W, C) per image; `co` must be a multiple of 16
    pub oh: usize,
    pub ow: usize,
    pub co: usize,
}

impl Gather {
    /// Source coordinate feeding destination coordinate `o` through tap `kk`.
    #[inline(always)]
    fn src(&self, o: usize, kk: usize, size: usize) -> Option<usize> {
        if self.transposed {
            let t = o as isize + self.pad as isize - kk as isize;
            if t < 0 || !(t as usize).is_multiple_of(self.stride) {
                return None;
            }
            let s = t as usize / self.stride;
            (s < size).then_some(s)
        } else {
            let s = (o * self.stride + kk) as isize - self.pad as isize;
            (s >= 0 && (s as usize) < size).then_some(s as usize)
        }
    }
}

/// One tap of a pixel block: weight offset and a source pointer per pixel.
#[derive(Clone, Copy)]
pub(crate) struct Tap<const P: usize> {
    pub w: usize,
    pub src: [*const f32; P],
}

/// Where a call writes: destination rows `first_row..first_row + nrows` (row =
/// n * oh + y, each ow * co values, starting at `ptr`), output channels `c0..c1`
/// (multiples of 16). Tasks may share rows with disjoint channel ranges.
#[derive(Clone, Copy)]
pub struct Dst {
    pub ptr: *mut f32,
    pub first_row: usize,
    pub nrows: usize,
    pub c0: usize,
    pub c1: usize,
}

/// Compute the destination block `dst`. `w`: (k, k, cs, co). `accumulate` adds
/// to what is there, then the epilogue applies.
///
/// # Safety
/// The CPU must support AVX-512F; slices must match the geometry.
#[target_feature(enable = "avx512f")]
pub unsafe fn gather_rows(g: &Gather, w: &[f32], src: &[f32], dst: Dst, accumulate: bool, epi: &Epilogue) {
    debug_assert!(g.co.is_multiple_of(16) && g.cs <= ZEROS.len());
    debug_assert_eq!(w.len(), g.k * g.k * g.cs * g.co);
    // Each pixel block sweeps the weights of every output channel it computes:
    // run large weight sets (deep 1x1 layers: 2048 x 512 = 4 MiB) in channel
    // chunks of at most 512 KiB, which stay in L2 across the pixel blocks.
    let per_channel = g.k * g.k * g.cs * 4;
    let chunk = ((512 << 10) / per_channel / 32 * 32).max(32);
    let mut c0 = dst.c0;
    while c0 < dst.c1 {
        let part = Dst { c0, c1: (c0 + chunk).min(dst.c1), ..dst };
        unsafe {
            if g.co == 16 && g.ow.is_multiple_of(16) {
                // one 16-lane output block: 16 pixels keep 16 FMA chains in flight
                rows::<16>(g, w, src, part, accumulate, epi)
            } else if !g.ow.is_multiple_of(8) && g.ow.is_multiple_of(7) {
                rows::<7>(g, w, src, part, accumulate, epi)
            } else {
                rows::<8>(g, w, src, part, accumulate, epi)
            }
        }
        c0 = part.c1;
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn rows<const P: usize>(g: &Gather, w: &[f32], src: &[f32], dst: Dst, accumulate: bool, epi: &Epilogue) {
    let row_len = g.ow * g.co;
    let mut res = ([ZEROS.as_ptr(); P], 0usize);
    let mut taps = [Tap::<P> { w: 0, src: [ZEROS.as_ptr(); P] }; 49];
    assert!(g.k * g.k <= 49, "kernel larger than 7x7");
    // Backward-data with stride s > 1 runs per column class x = b (mod s): in a
    // class every pixel takes the same taps, from consecutive source columns.
    let classes = if g.transposed { g.stride } else { 1 };
    for r in 0..dst.nrows {
        let row = dst.first_row + r;
        let orow = unsafe { dst.ptr.add(r * row_len) };
        let (n, y) = (row / g.oh, row % g.oh);
        for b in 0..classes.min(g.ow) {
            let nq = (g.ow - b).div_ceil(classes);
            let mut q0 = 0;
            while q0 < nq {
                let np = P.min(nq - q0);
                let mut nt = 0;
                for kh in 0..g.k {
                    let Some(sy) = g.src(y, kh, g.sh) else {
                        continue;
                    };
                    let srow_ptr = src.as_ptr().wrapping_add((n * g.sh + sy) * g.sw * g.cs);
                    for kw in 0..g.k {
                        // source column = off + p * step for pixel p of the block
                        let (off, step) = if !g.transposed {
                            ((q0 * g.stride + kw) as isize - g.pad as isize, g.stride as isize)
                        } else {
                            let t = b as isize + g.pad as isize - kw as isize;
                            if t.rem_euclid(g.stride as isize) != 0 {
                                continue;
                            }
                            (q0 as isize + t.div_euclid(g.stride as isize), 1)
                        };
                        let t = &mut taps[nt];
                        t.w = (kh * g.k + kw) * g.cs * g.co;
                        let mut any = false;
                        for p in 0..P {
                            let sx = off + p as isize * step;
                            let valid = p < np && sx >= 0 && sx < g.sw as isize;
                            any |= valid;
                            t.src[p] =
                                if valid { srow_ptr.wrapping_offset(sx * g.cs as isize) } else { ZEROS.as_ptr() };
                        }
                        nt += any as usize;
                    }
                }
                let x0 = b + classes * q0;
                if let Some(r) = epi.residual {
                    for p in 0..np {
                        let v = r.row(row * g.ow + x0 + p, g.co);
                        res.0[p] = v.as_ptr();
                        res.1 = v.len();
                    }
                }
                let store = Store { accumulate, epi, res: epi.residual.map(|_| &res) };
                let (obase, ps) = (unsafe { orow.add(x0 * g.co) }, classes * g.co);
                let mut ob = dst.c0;
                while ob < dst.c1 {
                    let wp = w[ob..].as_ptr();
                    let op = unsafe { obase.add(ob) };
                    if dst.c1 - ob >= 32 {
                        unsafe { tile::<P, 2>(&taps[..nt], g.cs, wp, g.co, op, ps, np, ob, &store) };
                        ob += 32;
                    } else {
                        unsafe { tile::<P, 1>(&taps[..nt], g.cs, wp, g.co, op, ps, np, ob, &store) };
                        ob += 16;
                    }
                }
                q0 += P;
            }
        }
    }
}

/// P pixels x NB*16 channels: out[p][j] (+)= sum_taps sum_c src[p][c] * w[c][j].
/// Output pixel p is at `out + p * ps`. Not inlined: its register allocation
/// (P x NB accumulators, P source pointers) must not compete with the caller's.
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const P: usize, const NB: usize>(
    taps: &[Tap<P>],
    cs: usize,
    w: *const f32,
    co: usize,
    out: *mut f32,
    ps: usize,
    np: usize,
    ob: usize,
    store: &Store<'_, '_, P>,
) {
    let mut acc = [[_mm512_setzero_ps(); NB]; P];
    for t in taps {
        let wt = unsafe { w.add(t.w) };
        for c in 0..cs {
            let mut wv = [_mm512_setzero_ps(); NB];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = unsafe { _mm512_loadu_ps(wt.add(c * co + 16 * j)) };
            }
            for p in 0..P {
                let xv = _mm512_set1_ps(unsafe { *t.src[p].add(c) });
                for j in 0..NB {
                    acc[p][j] = _mm512_fmadd_ps(xv, wv[j], acc[p][j]);
                }
            }
        }
    }
    let affine = store.epi.affine.map(|(s, t)| (s.as_ptr(), t.as_ptr()));
    for (p, a) in acc.iter().enumerate().take(np) {
        for (j, v) in a.iter().enumerate() {
            let (dst, ch) = (unsafe { out.add(p * ps + 16 * j) }, ob + 16 * j);
            let mut v = *v;
            if store.accumulate {
                v = _mm512_add_ps(v, unsafe { _mm512_loadu_ps(dst) });
            }
            if let Some((s, t)) = affine {
                v = unsafe { _mm512_fmadd_ps(v, _mm512_loadu_ps(s.add(ch)), _mm512_loadu_ps(t.add(ch))) };
            }
            if let Some((ptrs, len)) = store.res
                && ch < *len
            {
                v = _mm512_add_ps(v, unsafe { _mm512_loadu_ps(ptrs[p].add(ch)) });
            }
            if store.epi.relu {
                v = _mm512_max_ps(v, _mm512_setzero_ps());
            }
            unsafe { _mm512_storeu_ps(dst, v) };
        }
    }
}

/// P = 8 pixels x all `co` channels, plain stores (the Winograd GEMM step):
/// out[p][:] = sum_taps sum_c src[p][c] * w[c][:], pixel p at `out + p * co`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn tile_store(taps: &[Tap<8>], cs: usize, w: *const f32, co: usize, out: *mut f32, np: usize) {
    let epi = Epilogue::default();
    let store = Store::<8> { accumulate: false, epi: &epi, res: None };
    let mut ob = 0;
    while ob < co {
        unsafe {
            if co - ob >= 32 {
                tile::<8, 2>(taps, cs, w.add(ob), co, out.add(ob), co, np, ob, &store);
                ob += 32;
            } else {
                tile::<8, 1>(taps, cs, w.add(ob), co, out.add(ob), co, np, ob, &store);
                ob += 16;
            }
        }
    }
}

/// How a tile stores: add to what is there, then the epilogue; `res` holds
/// the residual pointer of each pixel and the residual's channel count.
struct Store<'s, 'e, const P: usize> {
    accumulate: bool,
    epi: &'s Epilogue<'e>,
    res: Option<&'s ([*const f32; P], usize)>,
}

/// Weight gradient of one image, added into `dw` (k, k, cin, cout):
/// `dw[tap][i][o] += sum over output pixels of x[src pixel][i] * dy[pixel][o]`.
/// x: (h, w, cin), dy: (oh, ow, cout), cout a multiple of 16.
///
/// # Safety
/// The CPU must support AVX-512F; slices must match the geometry.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn wgrad_image(
    k: usize,
    stride: usize,
    pad: usize,
    x: &[f32],
    (h, wd, cin): (usize, usize, usize),
    dy: &[f32],
    (oh, ow, cout): (usize, usize, usize),
    dw: &mut [f32],
) {
    debug_assert!(cout % 16 == 0);
    let g = Gather { k, stride, pad, transposed: false, sh: h, sw: wd, cs: cin, oh, ow, co: cout };
    for kh in 0..k {
        // output rows whose source row is inside the image
        let ys: Vec<(usize, usize)> = (0..oh).filter_map(|y| g.src(y, kh, h).map(|sy| (y, sy))).collect();
        for kw in 0..k {
            let xs: Vec<usize> = (0..ow).filter(|&xo| g.src(xo, kw, wd).is_some()).collect();
            let (Some(&lo), Some(&hi)) = (xs.first(), xs.last()) else {
                continue;
            };
            let sx0 = (lo * stride + kw) - pad;
            let span = Span { ys: &ys, lo, n: hi - lo + 1, sx0, stride, sw: wd, cin, ow, cout };
            let tap = (kh * k + kw) * cin * cout;
            let mut i = 0;
            while i < cin {
                let r = if cin - i >= 8 { 8 } else { 1 };
                let mut ob = 0;
                while ob < cout {
                    let nb = if cout - ob >= 32 { 2 } else { 1 };
                    let dst = &mut dw[tap + i * cout + ob..];
                    unsafe {
                        match (r, nb) {
                            (8, 2) => wtile::<8, 2>(&span, x, dy, i, ob, dst),
                            (8, _) => wtile::<8, 1>(&span, x, dy, i, ob, dst),
                            (_, 2) => wtile::<1, 2>(&span, x, dy, i, ob, dst),
                            _ => wtile::<1, 1>(&span, x, dy, i, ob, dst),
                        }
                    }
                    ob += 16 * nb;
                }
                i += r;
            }
        }
    }
}

/// The pixels one tap of the weight gradient visits.
struct Span<'a> {
    /// (output row, source row)
    ys: &'a [(usize, usize)],
    /// first output column and count; source column of the first
    lo: usize,
    n: usize,
    sx0: usize,
    stride: usize,
    sw: usize,
    cin: usize,
    ow: usize,
    cout: usize,
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn wtile<const R: usize, const NB: usize>(
    s: &Span,
    x: &[f32],
    dy: &[f32],
    i0: usize,
    ob: usize,
    dst: &mut [f32],
) {
    let mut acc = [[_mm512_setzero_ps(); NB]; R];
    let (xp, dp) = (x.as_ptr(), dy.as_ptr());
    for &(y, sy) in s.ys {
        let mut xo = unsafe { xp.add((sy * s.sw + s.sx0) * s.cin + i0) };
        let mut d = unsafe { dp.add((y * s.ow + s.lo) * s.cout + ob) };
        for _ in 0..s.n {
            let mut dv = [_mm512_setzero_ps(); NB];
            for (j, v) in dv.iter_mut().enumerate() {
                *v = unsafe { _mm512_loadu_ps(d.add(16 * j)) };
            }
            for r in 0..R {
                let xv = _mm512_set1_ps(unsafe { *xo.add(r) });
                for j in 0..NB {
                    acc[r][j] = _mm512_fmadd_ps(xv, dv[j], acc[r][j]);
                }
            }
            xo = unsafe { xo.add(s.stride * s.cin) };
            d = unsafe { d.add(s.cout) };
        }
    }
    for (r, a) in acc.iter().enumerate() {
        for (j, v) in a.iter().enumerate() {
            let p = dst[r * s.cout + 16 * j..].as_mut_ptr();
            unsafe { _mm512_storeu_ps(p, _mm512_add_ps(*v, _mm512_loadu_ps(p))) };
        }
    }
}
