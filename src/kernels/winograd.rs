//! Winograd F(2x2, 3x3) for 3x3 / stride 1 / pad 1 convolutions, NHWC, AVX-512.
//!
//! Y = A^T [ (G g G^T) . (B^T d B) ] A per 2x2 output tile (Lavin & Gray 2015):
//! 16 multiplies per tile and channel pair instead of 36 (2.25x fewer), the
//! rest additions. Fused per block of T tiles of one tile row, so that the
//! transformed data never leaves the cache:
//!   1. input transform of T 4x4 patches (x Cin) into `V[16][T][Cin]`
//!   2. 16 small GEMMs `M[pos] = V[pos] . U[pos]` with the register-blocked
//!      micro-kernel of the direct convolution (tiles in place of pixels)
//!   3. output transform of `M[16][T][Cout]` into 2x2 pixels, through the
//!      epilogue (accumulate, folded BN, residual, ReLU) on the way to memory.
//!
//! Backward-data of a 3x3/1/1 convolution is the same computation on dy with
//! the kernel rotated by 180 degrees and transposed (see conv.rs).
//! Float32 error: about 2e-7 relative, like the direct form (shared/notes).

//!
//! Safety: as in avx512.rs, the public entry points take the [`Avx512Cpu`]
//! proof and the private functions run only under them; each `unsafe` block
//! is left with the memory argument.

#![allow(clippy::too_many_arguments)]
#![allow(clippy::needless_range_loop)] // register blocks are indexed on purpose

use super::avx512::{Tap, tile_store};
use super::{Avx512Cpu, Epilogue, ZEROS};
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Tiles per block (the micro-kernel's "pixels").
const T: usize = 8;

/// `U[pos][ci][co] = (G g G^T)[pos]` for one input channel `ci` and every
/// co, into `u_rows[pos]` (the rows `U[pos][ci][..]`, `cout` values each);
/// w is HWIO (3, 3, cin, cout). Vectorised over co; the caller runs the
/// input channels in parallel (ops/conv.rs).
pub fn transform_weights_of_channel(w: &[f32], cin: usize, cout: usize, ci: usize, u_rows: [&mut [f32]; 16]) {
    debug_assert_eq!(w.len(), 9 * cin * cout);
    let g = |kh: usize, kw: usize| &w[((kh * 3 + kw) * cin + ci) * cout..][..cout];
    // G g (4 x 3 rows over co), then (G g) G^T (4 x 4)
    let mut gg = vec![0.0f32; 12 * cout];
    for c in 0..3 {
        let (a, b, d) = (g(0, c), g(1, c), g(2, c));
        for o in 0..cout {
            gg[c * cout + o] = a[o];
            gg[(3 + c) * cout + o] = 0.5 * (a[o] + b[o] + d[o]);
            gg[(6 + c) * cout + o] = 0.5 * (a[o] - b[o] + d[o]);
            gg[(9 + c) * cout + o] = d[o];
        }
    }
    let mut u_rows = u_rows;
    for (r, quad) in u_rows.chunks_exact_mut(4).enumerate() {
        let (a, b, d) =
            (&gg[(3 * r) * cout..][..cout], &gg[(3 * r + 1) * cout..][..cout], &gg[(3 * r + 2) * cout..][..cout]);
        let [u0, u1, u2, u3] = quad else { unreachable!("chunks of 4") };
        for o in 0..cout {
            u0[o] = a[o];
            u1[o] = 0.5 * (a[o] + b[o] + d[o]);
            u2[o] = 0.5 * (a[o] - b[o] + d[o]);
            u3[o] = d[o];
        }
    }
}

/// Geometry: source (h, w, cin) per image, destination (h, w, cout): same size.
#[derive(Clone, Copy, Debug)]
pub struct Wino {
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
}

impl Wino {
    /// 2x2 output tiles per image.
    pub fn tiles_per_image(&self) -> usize {
        self.h.div_ceil(2) * self.w.div_ceil(2)
    }

    /// (image, tile row, tile column) of flat tile index `i`.
    fn tile(&self, i: usize) -> (usize, usize, usize) {
        let (tw, per) = (self.w.div_ceil(2), self.tiles_per_image());
        let (n, r) = (i / per, i % per);
        (n, r / tw, r % tw)
    }

    /// [`Wino::tile`] of the flat indices from `i` on, in order: divisions for the first, then
    /// counting (two divisions per tile cost a fifth of a 16-channel tile's transform).
    fn tiles_from(&self, i: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let (tw, th) = (self.w.div_ceil(2), self.h.div_ceil(2));
        let mut next = self.tile(i);
        std::iter::from_fn(move || {
            let here = next;
            next.2 += 1;
            if next.2 == tw {
                next.2 = 0;
                next.1 += 1;
                if next.1 == th {
                    next.1 = 0;
                    next.0 += 1;
                }
            }
            Some(here)
        })
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Compute the 2x2 tiles `tiles` (flat indices over the batch, images in
/// order, row-major tiles) into `out` (the whole destination tensor, NHWC).
/// `u`: transformed weights.
///
/// # Safety
/// The CPU's features are proven by `cpu`. The caller guarantees the memory:
/// `src` is (n, h, w, cin) and `out` points at an (n, h, w, cout) tensor of
/// which no other task writes these tiles. Channel counts, u's length and the
/// epilogue ([`Epilogue::fits_simd`]) are checked here.
#[target_feature(enable = "avx512f")]
pub unsafe fn tiles(
    cpu: Avx512Cpu,
    g: &Wino,
    u: &[f32],
    src: &[f32],
    out: *mut f32,
    tiles: std::ops::Range<usize>,
    accumulate: bool,
    epi: &Epilogue,
) {
    let _ = cpu;
    let (cin, cout) = (g.cin, g.cout);
    assert!(cin.is_multiple_of(16) && cout.is_multiple_of(16) && cin <= ZEROS.len(), "winograd: {cin} -> {cout}");
    assert!(u.len() >= 16 * cin * cout, "winograd: transformed weights");
    assert!(epi.fits_simd(cout), "winograd: epilogue does not fit {cout} channels");
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let need = 16 * T * (cin + cout);
        if s.len() < need {
            s.resize(need, 0.0);
        }
        let (v, m) = s.split_at_mut(16 * T * cin);
        let mut t0 = tiles.start;
        while t0 < tiles.end {
            let nt = T.min(tiles.end - t0);
            // SAFETY (this loop): `cpu` proves the features; v (16 T cin), m (16 T cout)
            // and u (16 cin cout, checked) have the sizes the GEMMs and transforms
            // index; src and out are this function's contract.
            unsafe { input_transform(g, src, t0, nt, v) };
            // 16 GEMMs: M[pos][t][:] = V[pos][t][:] . U[pos]
            let (vp, up, mp) = (v.as_ptr(), u.as_ptr(), m.as_mut_ptr());
            let done = unsafe {
                match cin {
                    16 => wgemm::<16>(vp, up, mp, cout),
                    32 => wgemm::<32>(vp, up, mp, cout),
                    64 => wgemm::<64>(vp, up, mp, cout),
                    128 => wgemm::<128>(vp, up, mp, cout),
                    _ => false,
                }
            };
            for pos in (0..16).filter(|_| !done) {
                let mut tap = [Tap::<T> { w: 0, src: [ZEROS.as_ptr(); T] }];
                for t in 0..T {
                    tap[0].src[t] = if t < nt { v[(pos * T + t) * cin..].as_ptr() } else { ZEROS.as_ptr() };
                }
                let up = u[pos * cin * cout..].as_ptr();
                let mp = m[pos * T * cout..].as_mut_ptr();
                unsafe { tile_store(&tap, cin, up, cout, mp, nt) };
            }
            unsafe { output_transform(g, m, out, t0, nt, accumulate, epi) };
            t0 += T;
        }
    });
}

/// M[pos][t][:] = V[pos][t][:] . U[pos] for all 16 positions and all T tiles
/// of a block (tiles past the block's end compute harmless leftovers), with
/// the channel count a constant so that every broadcast is one address
/// register plus an immediate offset. Returns true (it handled the block).
///
/// # Safety
/// AVX-512 code under the caller's proof; v is 16 x T x CIN, u 16 x CIN x cout,
/// m 16 x T x cout, cout a multiple of 16.
#[target_feature(enable = "avx512f")]
unsafe fn wgemm<const CIN: usize>(v: *const f32, u: *const f32, m: *mut f32, cout: usize) -> bool {
    for pos in 0..16 {
        // SAFETY (this loop): positions, channel blocks ob < cout: the sizes in the contract.
        let (vp, up, mp) = unsafe { (v.add(pos * T * CIN), u.add(pos * CIN * cout), m.add(pos * T * cout)) };
        let mut ob = 0;
        while ob < cout {
            unsafe {
                if cout - ob >= 32 {
                    wblock::<CIN, 2>(vp, up.add(ob), cout, mp.add(ob));
                    ob += 32;
                } else {
                    wblock::<CIN, 1>(vp, up.add(ob), cout, mp.add(ob));
                    ob += 16;
                }
            }
        }
    }
    true
}

/// T tiles x NB*16 output channels of one position.
///
/// # Safety
/// AVX-512 code under the caller's proof; v is T x CIN, u has CIN rows of cout
/// from which NB*16 are read, m has T rows of cout with NB*16 writable.
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn wblock<const CIN: usize, const NB: usize>(v: *const f32, u: *const f32, cout: usize, m: *mut f32) {
    let mut acc = [[_mm512_setzero_ps(); NB]; T];
    // SAFETY (this function): rows c < CIN, tiles t < T, lanes 16 j < 16 NB: the contract.
    for c in 0..CIN {
        let mut w = [_mm512_setzero_ps(); NB];
        for (j, wv) in w.iter_mut().enumerate() {
            *wv = unsafe { _mm512_loadu_ps(u.add(c * cout + 16 * j)) };
        }
        for t in 0..T {
            let x = _mm512_set1_ps(unsafe { *v.add(t * CIN + c) });
            for j in 0..NB {
                acc[t][j] = _mm512_fmadd_ps(x, w[j], acc[t][j]);
            }
        }
    }
    for (t, a) in acc.iter().enumerate() {
        for (j, val) in a.iter().enumerate() {
            unsafe { _mm512_storeu_ps(m.add(t * cout + 16 * j), *val) };
        }
    }
}

/// V[pos][t][ci] = (B^T d B)[pos] of the 4x4 patch of tile t (zero outside the image).
///
/// # Safety
/// As [`input_transform_n`].
#[target_feature(enable = "avx512f")]
unsafe fn input_transform(g: &Wino, src: &[f32], t0: usize, nt: usize, v: &mut [f32]) {
    // SAFETY: this function's contract.
    unsafe { input_transform_n::<T>(g, src, t0, nt, v) }
}

/// `input_transform` for blocks of `TB` tiles.
///
/// # Safety
/// AVX-512 code under the caller's proof; src is (n, h, w, cin) with the tiles'
/// images, cin a multiple of 16, v 16 x TB x cin, nt <= TB.
#[target_feature(enable = "avx512f")]
unsafe fn input_transform_n<const TB: usize>(g: &Wino, src: &[f32], t0: usize, nt: usize, v: &mut [f32]) {
    let cin = g.cin;
    let zero = _mm512_setzero_ps();
    for (t, (n, ty, tx)) in g.tiles_from(t0).take(nt).enumerate() {
        let (y0, x0) = (2 * ty as isize - 1, 2 * tx as isize - 1);
        // pointer of patch element (r, c), None outside the image
        let mut ptrs = [std::ptr::null::<f32>(); 16];
        let inside = y0 >= 0 && x0 >= 0 && y0 as usize + 4 <= g.h && x0 as usize + 4 <= g.w;
        if inside {
            let corner = &src[((n * g.h + y0 as usize) * g.w + x0 as usize) * cin..];
            for r in 0..4 {
                for c in 0..4 {
                    ptrs[r * 4 + c] = corner[(r * g.w + c) * cin..].as_ptr();
                }
            }
        } else {
            for r in 0..4 {
                for c in 0..4 {
                    let (y, x) = (y0 + r as isize, x0 + c as isize);
                    if y >= 0 && x >= 0 && (y as usize) < g.h && (x as usize) < g.w {
                        ptrs[r * 4 + c] = src[((n * g.h + y as usize) * g.w + x as usize) * cin..].as_ptr();
                    }
                }
            }
        }
        for cv in (0..cin).step_by(16) {
            let mut d = [zero; 16];
            for (i, p) in ptrs.iter().enumerate() {
                // (a patch inside the image loads all 16 without a test)
                if inside || !p.is_null() {
                    // SAFETY: p starts a pixel of cin values (a checked slice index), cv + 16 <= cin.
                    d[i] = unsafe { _mm512_loadu_ps(p.add(cv)) };
                }
            }
            // B^T d: rows
            let mut b = [zero; 16];
            for c in 0..4 {
                let (d0, d1, d2, d3) = (d[c], d[4 + c], d[8 + c], d[12 + c]);
                b[c] = _mm512_sub_ps(d0, d2);
                b[4 + c] = _mm512_add_ps(d1, d2);
                b[8 + c] = _mm512_sub_ps(d2, d1);
                b[12 + c] = _mm512_sub_ps(d1, d3);
            }
            // (B^T d) B: columns
            for r in 0..4 {
                let (e0, e1, e2, e3) = (b[4 * r], b[4 * r + 1], b[4 * r + 2], b[4 * r + 3]);
                let vals = [_mm512_sub_ps(e0, e2), _mm512_add_ps(e1, e2), _mm512_sub_ps(e2, e1), _mm512_sub_ps(e1, e3)];
                for (c, val) in vals.iter().enumerate() {
                    // SAFETY: a checked slice start, 16 values before the row of cin ends.
                    unsafe { _mm512_storeu_ps(v[((r * 4 + c) * TB + t) * cin + cv..].as_mut_ptr(), *val) };
                }
            }
        }
    }
}

/// The 2x2 outputs of each tile: A^T m A, then accumulate / epilogue, stored.
///
/// # Safety
/// AVX-512 code under the caller's proof; m is 16 x T x cout, out an
/// (n, h, w, cout) tensor holding the tiles, cout a multiple of 16, and the
/// epilogue fits (`Epilogue::fits_simd`).
#[target_feature(enable = "avx512f")]
unsafe fn output_transform(g: &Wino, m: &[f32], out: *mut f32, t0: usize, nt: usize, accumulate: bool, epi: &Epilogue) {
    let cout = g.cout;
    let affine = epi.affine.map(|(s, t)| (s.as_ptr(), t.as_ptr()));
    for (t, (n, ty, tx)) in g.tiles_from(t0).take(nt).enumerate() {
        let (y0, x0) = (2 * ty, 2 * tx);
        for cv in (0..cout).step_by(16) {
            let mut mm = [_mm512_setzero_ps(); 16];
            for (pos, v) in mm.iter_mut().enumerate() {
                // SAFETY: a checked slice start, cv + 16 <= cout.
                *v = unsafe { _mm512_loadu_ps(m[(pos * T + t) * cout + cv..].as_ptr()) };
            }
            // A^T m: 2x4
            let mut a = [_mm512_setzero_ps(); 8];
            for c in 0..4 {
                let (m0, m1, m2, m3) = (mm[c], mm[4 + c], mm[8 + c], mm[12 + c]);
                a[c] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                a[4 + c] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
            }
            for i in 0..2 {
                let (c0, c1, c2, c3) = (a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]);
                let ys = [_mm512_add_ps(_mm512_add_ps(c0, c1), c2), _mm512_sub_ps(_mm512_sub_ps(c1, c2), c3)];
                for (j, yv) in ys.iter().enumerate() {
                    let (y, x) = (y0 + i, x0 + j);
                    if y >= g.h || x >= g.w {
                        continue;
                    }
                    let pixel = (n * g.h + y) * g.w + x;
                    // SAFETY (to the store): the pixel is inside the image (y < h, x < w),
                    // channels cv..cv + 16 <= cout of it, of `out` and of the affine
                    // vectors; residual rows are read below their length, a multiple of 16.
                    let dst = unsafe { out.add(pixel * cout + cv) };
                    let mut val = *yv;
                    if accumulate {
                        val = _mm512_add_ps(val, unsafe { _mm512_loadu_ps(dst) });
                    }
                    if let Some((s, sh)) = affine {
                        val = unsafe { _mm512_fmadd_ps(val, _mm512_loadu_ps(s.add(cv)), _mm512_loadu_ps(sh.add(cv))) };
                    }
                    if let Some(r) = epi.residual {
                        let row = r.row(pixel, cout);
                        if cv < row.len() {
                            val = _mm512_add_ps(val, unsafe { _mm512_loadu_ps(row.as_ptr().add(cv)) });
                        }
                    }
                    if epi.relu {
                        val = _mm512_max_ps(val, _mm512_setzero_ps());
                    }
                    unsafe { _mm512_storeu_ps(dst, val) };
                }
            }
        }
    }
}

// ------------------------------------------------------------ weight gradient
//
// dL/dU = (A dY A^T) . V per tile (U = G g G^T, V = B^T d B), summed over the
// tiles: dU[pos][ci][co] = sum_t V[pos][t][ci] Z[pos][t][co]; then
// dW = G^T dU G. Output pixels past an odd edge contribute zero gradient.

/// Tiles per weight-gradient block (V and Z stay in L2).
const TW: usize = 32;

/// Accumulate dU (16 x cin x cout) over the tiles `tiles` of x (source) and dy.
///
/// # Safety
/// The CPU's features are proven by `cpu`. The caller guarantees the slices
/// match `g`: x is (n, h, w, cin), dy (n, h, w, cout) with n images covering
/// `tiles`. Channel counts and du's length are checked here.
#[target_feature(enable = "avx512f")]
pub unsafe fn weight_grad_tiles(
    cpu: Avx512Cpu,
    g: &Wino,
    x: &[f32],
    dy: &[f32],
    tiles: std::ops::Range<usize>,
    du: &mut [f32],
) {
    let _ = cpu;
    let (cin, cout) = (g.cin, g.cout);
    assert!(cin.is_multiple_of(16) && cout.is_multiple_of(16), "winograd weight gradient: {cin} -> {cout}");
    assert!(du.len() >= 16 * cin * cout, "winograd weight gradient: dU");
    let mut v = vec![0.0f32; 16 * TW * cin];
    let mut z = vec![0.0f32; 16 * TW * cout];
    let mut t0 = tiles.start;
    while t0 < tiles.end {
        let nt = TW.min(tiles.end - t0);
        // SAFETY: `cpu` proves the features; v and z have the sizes the transforms
        // index, x and dy are this function's contract.
        unsafe {
            input_transform_n::<TW>(g, x, t0, nt, &mut v);
            grad_transform(g, dy, t0, nt, &mut z);
        }
        for pos in 0..16 {
            let (vp, zp) = (&v[pos * TW * cin..], &z[pos * TW * cout..]);
            let dup = &mut du[pos * cin * cout..][..cin * cout];
            for ci in (0..cin).step_by(8) {
                let mut ob = 0;
                while ob < cout {
                    // SAFETY: rows ci..ci + 8 <= cin (a multiple of 16), channels
                    // ob..ob + 16 NB <= cout, nt <= TW tiles of v, z and dup's sizes.
                    unsafe {
                        if cout - ob >= 32 {
                            outer::<2>(vp, zp, cin, cout, ci, ob, nt, dup);
                            ob += 32;
                        } else {
                            outer::<1>(vp, zp, cin, cout, ci, ob, nt, dup);
                            ob += 16;
                        }
                    }
                }
            }
        }
        t0 += TW;
    }
}

/// du[ci..ci+8][ob..ob+16NB] += sum over nt tiles of v[t][ci + r] * z[t][ob..].
///
/// # Safety
/// AVX-512 code under the caller's proof; v is nt x cin, z nt x cout, du cin x
/// cout, ci + 8 <= cin, ob + 16 NB <= cout.
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn outer<const NB: usize>(
    v: &[f32],
    z: &[f32],
    cin: usize,
    cout: usize,
    ci: usize,
    ob: usize,
    nt: usize,
    du: &mut [f32],
) {
    let mut acc = [[_mm512_setzero_ps(); NB]; 8];
    let (vp, zp) = (v.as_ptr(), z.as_ptr());
    // SAFETY (this function): tiles t < nt, rows ci + r, channels ob + 16 j: the contract.
    for t in 0..nt {
        let mut zv = [_mm512_setzero_ps(); NB];
        for (j, val) in zv.iter_mut().enumerate() {
            *val = unsafe { _mm512_loadu_ps(zp.add(t * cout + ob + 16 * j)) };
        }
        for r in 0..8 {
            let xv = _mm512_set1_ps(unsafe { *vp.add(t * cin + ci + r) });
            for j in 0..NB {
                acc[r][j] = _mm512_fmadd_ps(xv, zv[j], acc[r][j]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        for (j, val) in a.iter().enumerate() {
            let p = du[(ci + r) * cout + ob + 16 * j..].as_mut_ptr();
            unsafe { _mm512_storeu_ps(p, _mm512_add_ps(*val, _mm512_loadu_ps(p))) };
        }
    }
}

/// Z[pos][t][co] = (A dY A^T)[pos] of the 2x2 gradient tile t (zero past the edges).
///
/// # Safety
/// AVX-512 code under the caller's proof; dy is (n, h, w, cout) with the
/// tiles' images, cout a multiple of 16, z 16 x TW x cout, nt <= TW.
#[target_feature(enable = "avx512f")]
unsafe fn grad_transform(g: &Wino, dy: &[f32], t0: usize, nt: usize, z: &mut [f32]) {
    let cout = g.cout;
    let zero = _mm512_setzero_ps();
    for (t, (n, ty, tx)) in g.tiles_from(t0).take(nt).enumerate() {
        let mut ptrs = [std::ptr::null::<f32>(); 4];
        for i in 0..2 {
            for j in 0..2 {
                let (y, x) = (2 * ty + i, 2 * tx + j);
                if y < g.h && x < g.w {
                    ptrs[i * 2 + j] = dy[((n * g.h + y) * g.w + x) * cout..].as_ptr();
                }
            }
        }
        for cv in (0..cout).step_by(16) {
            let mut d = [zero; 4];
            for (i, p) in ptrs.iter().enumerate() {
                if !p.is_null() {
                    // SAFETY: p starts a pixel of cout values (a checked slice index), cv + 16 <= cout.
                    d[i] = unsafe { _mm512_loadu_ps(p.add(cv)) };
                }
            }
            // A dY (4x2): rows d0, d0 + d1, d0 - d1, -d1 of the 2 rows of dY
            let mut a = [zero; 8];
            for c in 0..2 {
                let (r0, r1) = (d[c], d[2 + c]);
                a[c] = r0;
                a[2 + c] = _mm512_add_ps(r0, r1);
                a[4 + c] = _mm512_sub_ps(r0, r1);
                a[6 + c] = _mm512_sub_ps(zero, r1);
            }
            // (A dY) A^T (4x4): the same on columns
            for r in 0..4 {
                let (e0, e1) = (a[2 * r], a[2 * r + 1]);
                let vals = [e0, _mm512_add_ps(e0, e1), _mm512_sub_ps(e0, e1), _mm512_sub_ps(zero, e1)];
                for (c, val) in vals.iter().enumerate() {
                    // SAFETY: a checked slice start, 16 values before the row of cout ends.
                    unsafe { _mm512_storeu_ps(z[((r * 4 + c) * TW + t) * cout + cv..].as_mut_ptr(), *val) };
                }
            }
        }
    }
}

/// dW (HWIO, 3 x 3 x cin x cout) = G^T dU G for every (ci, co).
pub fn weight_grad_finish(du: &[f32], cin: usize, cout: usize, dw: &mut [f32]) {
    let at = |p: usize, ci: usize, co: usize| du[(p * cin + ci) * cout + co];
    for ci in 0..cin {
        for co in 0..cout {
            // G^T dU: 3 x 4
            let mut h = [[0.0f32; 4]; 3];
            for c in 0..4 {
                let (d0, d1, d2, d3) = (at(c, ci, co), at(4 + c, ci, co), at(8 + c, ci, co), at(12 + c, ci, co));
                h[0][c] = d0 + 0.5 * (d1 + d2);
                h[1][c] = 0.5 * (d1 - d2);
                h[2][c] = 0.5 * (d1 + d2) + d3;
            }
            for (kh, row) in h.iter().enumerate() {
                let (e0, e1, e2, e3) = (row[0], row[1], row[2], row[3]);
                let vals = [e0 + 0.5 * (e1 + e2), 0.5 * (e1 - e2), 0.5 * (e1 + e2) + e3];
                for (kw, val) in vals.iter().enumerate() {
                    dw[((kh * 3 + kw) * cin + ci) * cout + co] = *val;
                }
            }
        }
    }
}
