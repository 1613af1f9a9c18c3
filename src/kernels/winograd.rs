//! Winograd F(2x2, 3x3) and F(4x4, 3x3) for 3x3 / stride 1 / pad 1 convolutions, NHWC, AVX-512.
//!
//! Y = A^T [ (G g G^T) . (B^T d B) ] A per m x m output tile (Lavin & Gray 2015), over
//! (m+2) x (m+2) input patches: F(2x2) multiplies 16 times per tile and channel pair
//! instead of 36 (2.25x fewer), F(4x4) 36 times instead of 144 (4x fewer), the rest
//! additions ([`Tile`]). Fused per block of T tiles of one tile row, so that the
//! transformed data never leaves the cache:
//!   1. input transform of T patches (x Cin) into `V[P][T][Cin]` (P = (m+2)^2 positions)
//!   2. P small GEMMs `M[pos] = V[pos] . U[pos]` with the register-blocked
//!      micro-kernel of the direct convolution (tiles in place of pixels)
//!   3. output transform of `M[P][T][Cout]` into m x m pixels, through the
//!      epilogue (accumulate, folded BN, residual, ReLU) on the way to memory.
//!
//! Backward-data of a 3x3/1/1 convolution is the same computation on dy with
//! the kernel rotated by 180 degrees and transposed (see conv.rs). The weight
//! gradient runs on either tile (conv.rs chooses).
//! Float32 error: F(2x2) about 2e-7 relative, like the direct form (shared/notes);
//! F(4x4) (points 0, +-1, 1/2, -2) two to four times the direct form's (max |error| /
//! max |y|: 3.3e-6 against 1.5e-6 at 128 channels; ops/conv.rs's float64 test).
//!
//! Safety: as in avx512.rs, the public entry points take the [`Avx512Cpu`]
//! proof and the private functions run only under them; each `unsafe` block
//! is left with the memory argument.

#![allow(clippy::too_many_arguments)]
#![allow(clippy::needless_range_loop)] // register blocks are indexed on purpose

use super::avx512::{Tap, tile_store};
use super::{Avx512Cpu, Epilogue, ZEROS};
use crate::reuse::Buffer;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Tiles per block (the micro-kernel's "pixels").
const T: usize = 8;

/// The output tile: F(2x2, 3x3) on 4x4 patches or F(4x4, 3x3) on 6x6 patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    F2,
    F4,
}

impl Tile {
    /// Output pixels per tile side (m).
    pub const fn side(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Patch side (m + 2): the transform domain is patch x patch positions.
    pub const fn patch(self) -> usize {
        self.side() + 2
    }

    /// Transform-domain positions per tile (16 or 36): U is positions x cin x cout.
    pub const fn positions(self) -> usize {
        self.patch() * self.patch()
    }

    /// Whether `path` runs this tile (F(4x4) not on the F(2x2)-only path).
    pub fn fits(self, path: super::KernelPath) -> bool {
        self == Tile::F2 || path.large_tiles()
    }
}

/// `G` applied to one kernel line (a, b, d), each a row over co: `out` gets the
/// `tile.patch()` rows of the transformed line.
fn g_line(tile: Tile, a: &[f32], b: &[f32], d: &[f32], out: &mut [&mut [f32]]) {
    match tile {
        Tile::F2 => {
            let [u0, u1, u2, u3] = out else { unreachable!("4 rows") };
            for o in 0..a.len() {
                u0[o] = a[o];
                u1[o] = 0.5 * (a[o] + b[o] + d[o]);
                u2[o] = 0.5 * (a[o] - b[o] + d[o]);
                u3[o] = d[o];
            }
        }
        Tile::F4 => {
            // points 0, 1, -1, 1/2, -2: G = [1 0 0; 1/3 1/3 1/3; -1/3 1/3 -1/3;
            // -16/15 -8/15 -4/15; 1/15 -2/15 4/15; 0 0 1]
            let [u0, u1, u2, u3, u4, u5] = out else { unreachable!("6 rows") };
            for o in 0..a.len() {
                let ad = a[o] + d[o];
                u0[o] = a[o];
                u1[o] = (ad + b[o]) / 3.0;
                u2[o] = -(ad - b[o]) / 3.0;
                u3[o] = -(16.0 * a[o] + 8.0 * b[o] + 4.0 * d[o]) / 15.0;
                u4[o] = (a[o] - 2.0 * b[o] + 4.0 * d[o]) / 15.0;
                u5[o] = d[o];
            }
        }
    }
}

/// `U[pos][ci][co] = (G g G^T)[pos]` for one input channel `ci` and every
/// co, into `u_rows[pos]` (`cout` values each, one per position of `tile`); w is HWIO
/// (3, 3, cin, cout). Vectorised over co; the caller runs the input channels in parallel and
/// packs the rows for [`tiles`] (ops/conv.rs).
pub fn transform_weights_of_channel(
    w: &[f32],
    cin: usize,
    cout: usize,
    ci: usize,
    tile: Tile,
    u_rows: &mut [&mut [f32]],
) {
    debug_assert_eq!(w.len(), 9 * cin * cout);
    assert_eq!(u_rows.len(), tile.positions(), "winograd: one row per position");
    let p = tile.patch();
    let g = |kh: usize, kw: usize| &w[((kh * 3 + kw) * cin + ci) * cout..][..cout];
    // G g (p x 3 rows over co, row k * 3 + c), then (G g) G^T (p x p)
    let mut gg = Buffer::zeroed(3 * p * cout);
    for c in 0..3 {
        let mut rows: Vec<&mut [f32]> = gg.chunks_exact_mut(cout).skip(c).step_by(3).collect();
        g_line(tile, g(0, c), g(1, c), g(2, c), &mut rows);
    }
    for (r, line) in u_rows.chunks_exact_mut(p).enumerate() {
        let (a, b, d) =
            (&gg[(3 * r) * cout..][..cout], &gg[(3 * r + 1) * cout..][..cout], &gg[(3 * r + 2) * cout..][..cout]);
        g_line(tile, a, b, d, line);
    }
}

/// Geometry: source (h, w, cin) per image, destination (h, w, cout): same size; the tile.
#[derive(Clone, Copy, Debug)]
pub struct Wino {
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub tile: Tile,
}

impl Wino {
    /// Whether the transformed weights (positions x cin x cout) outgrow `l2` bytes: then each
    /// thread's tiles run in super-blocks ([`tiles`]), and few tiles in one task per thread
    /// (ops/conv.rs), so that U is read once per super-block.
    pub fn weights_outgrow(&self, l2: usize) -> bool {
        self.tile.positions() * self.cin * self.cout * 4 >= l2
    }

    /// Output tiles per image.
    pub fn tiles_per_image(&self) -> usize {
        let m = self.tile.side();
        self.h.div_ceil(m) * self.w.div_ceil(m)
    }

    /// (image, tile row, tile column) of flat tile index `i`.
    fn tile(&self, i: usize) -> (usize, usize, usize) {
        let (tw, per) = (self.w.div_ceil(self.tile.side()), self.tiles_per_image());
        let (n, r) = (i / per, i % per);
        (n, r / tw, r % tw)
    }

    /// [`Wino::tile`] of the flat indices from `i` on, in order: divisions for the first, then
    /// counting (two divisions per tile cost a fifth of a 16-channel tile's transform).
    fn tiles_from(&self, i: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let m = self.tile.side();
        let (tw, th) = (self.w.div_ceil(m), self.h.div_ceil(m));
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

/// Compute output channels `cols` of the tiles `tiles` (flat indices over the batch, images in
/// order, row-major tiles) into `out` (the whole destination tensor, NHWC). `u`: transformed
/// weights of `g.tile`, each position's cin x cout packed (`avx512::pack_block`). `l2`: the L2
/// bytes per core (`Tuning`), which sizes the super-blocks. `stream`: non-temporal stores (taken
/// where `out` starts on a 64-byte line and nothing is accumulated).
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
    cols: std::ops::Range<usize>,
    l2: usize,
    accumulate: bool,
    stream: bool,
    epi: &Epilogue,
) {
    let _ = cpu;
    let (cin, cout, np) = (g.cin, g.cout, g.tile.positions());
    // every 16-channel vector of the output on a line: cout is a multiple of 16 (checked below)
    let stream = stream && !accumulate && (out as usize).is_multiple_of(64);
    let how = Out { accumulate, stream, epi, cols: cols.clone() };
    assert!(cin.is_multiple_of(16) && cout.is_multiple_of(16) && cin <= ZEROS.len(), "winograd: {cin} -> {cout}");
    assert!(u.len() >= np * cin * cout, "winograd: transformed weights");
    assert!(epi.fits_simd(cout), "winograd: epilogue does not fit {cout} channels");
    assert!(
        cols.start.is_multiple_of(32) && cols.end.is_multiple_of(16) && cols.start < cols.end && cols.end <= cout,
        "winograd: output channels {cols:?} of {cout}"
    );
    // Sub-blocks of T tiles per super-block. Where U outgrows the L2 (1 MiB and more: F(2x2) on
    // 256 x 256 channels is 4 MiB), a super-block of up to 16 sub-blocks runs the GEMMs position
    // by position, 32 output channels at a time over all its sub-blocks ([`gemm`]), so that each
    // slice of U is read from L3 once per super-block instead of once per T tiles; its V and M
    // stay within 4 MiB. The same sums in the same order either way.
    let per_sub = np * T * (cin + cout);
    let subs = if g.weights_outgrow(l2) { ((4 << 20) / 4 / per_sub).clamp(1, 16) } else { 1 };
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < subs * per_sub {
            s.resize(subs * per_sub, 0.0);
        }
        // v: sub-block k's V (np x T x cin) from k np T cin on; m: its M (np x T x cout) likewise
        let (v, m) = s.split_at_mut(subs * np * T * cin);
        let mut t0 = tiles.start;
        while t0 < tiles.end {
            let n = (tiles.end - t0).min(subs * T);
            let mut counts = [0usize; 16];
            for (k, nt) in counts.iter_mut().enumerate().take(n.div_ceil(T)) {
                *nt = T.min(n - k * T);
            }
            let nts = &counts[..n.div_ceil(T)];
            for (k, &nt) in nts.iter().enumerate() {
                let vk = &mut v[k * np * T * cin..][..np * T * cin];
                // SAFETY: `cpu` proves the features; vk holds np T cin values; src is this
                // function's contract.
                unsafe {
                    match g.tile {
                        Tile::F2 => input_transform_f2::<T>(g, src, t0 + k * T, nt, vk),
                        Tile::F4 => input_transform_f4::<T>(g, src, t0 + k * T, nt, vk),
                    }
                };
            }
            // np GEMMs per sub-block: M[pos][t][:] = V[pos][t][:] . U[pos]
            let (vp, up, mp) = (v.as_ptr(), u.as_ptr(), m.as_mut_ptr());
            let c = cols.clone();
            // SAFETY: v and m hold nts.len() sub-blocks, u np x cin x cout, cols within cout (checked).
            unsafe {
                match cin {
                    16 => gemm::<16>(np, 16, cout, c, nts, vp, up, mp),
                    32 => gemm::<32>(np, 32, cout, c, nts, vp, up, mp),
                    64 => gemm::<64>(np, 64, cout, c, nts, vp, up, mp),
                    128 => gemm::<128>(np, 128, cout, c, nts, vp, up, mp),
                    _ => gemm::<0>(np, cin, cout, c, nts, vp, up, mp),
                }
            };
            for (k, &nt) in nts.iter().enumerate() {
                let mk = &m[k * np * T * cout..][..np * T * cout];
                // SAFETY: as the input transforms; out is this function's contract.
                unsafe {
                    match g.tile {
                        Tile::F2 => output_transform_f2(g, mk, out, t0 + k * T, nt, &how),
                        Tile::F4 => output_transform_f4(g, mk, out, t0 + k * T, nt, &how),
                    }
                };
            }
            t0 += n;
        }
    });
    if stream {
        // the non-temporal stores reach memory before anything after this call reads them
        _mm_sfence();
    }
}

/// How the output transform stores: added to what is there, streamed past the caches,
/// through the epilogue; which output channels (multiples of 16 within cout).
struct Out<'s, 'e> {
    accumulate: bool,
    stream: bool,
    epi: &'s Epilogue<'e>,
    cols: std::ops::Range<usize>,
}

/// M_k[pos][t][cols] = V_k[pos][t][:] . U[pos][:][cols] for all `np` positions and every
/// sub-block k of a super-block (`nts[k]` tiles in it; tiles past a sub-block's end compute
/// harmless leftovers): position by position, 32 output channels at a time over the sub-blocks,
/// so that a (pos, 32 columns) packed block of U stays in cache across them. CIN: the input
/// channels as a constant, so that every broadcast is one address register plus an immediate
/// offset ([`wblock`]); 0 for any other count `cin` (the direct kernel's tile on the rows of V).
///
/// # Safety
/// AVX-512 code under the caller's proof; v holds nts.len() blocks of np x T x cin, m as many
/// of np x T x cout, u np x cin x cout, each position packed (`avx512::pack_block`); cols
/// within cout, from a multiple of 32 to one of 16; CIN 0 or cin.
#[target_feature(enable = "avx512f")]
unsafe fn gemm<const CIN: usize>(
    np: usize,
    cin: usize,
    cout: usize,
    cols: std::ops::Range<usize>,
    nts: &[usize],
    v: *const f32,
    u: *const f32,
    m: *mut f32,
) {
    let (vstep, mstep) = (np * T * cin, np * T * cout);
    for pos in 0..np {
        // SAFETY (this loop): positions < np, sub-blocks k < nts.len(), channel blocks
        // ob..ob + 16 nb <= cols.end <= cout: the sizes in the contract.
        let up = unsafe { u.add(pos * cin * cout) };
        let mut ob = cols.start;
        while ob < cols.end {
            let nb = if cols.end - ob >= 32 { 2 } else { 1 };
            // the packed block of channels ob.. (`avx512::pack_block`): cin rows of `ws`
            let (ub, ws) = (unsafe { up.add(ob * cin) }, (cout - ob).min(32));
            for (k, &nt) in nts.iter().enumerate() {
                let (vp, mp) = unsafe { (v.add(k * vstep + pos * T * cin), m.add(k * mstep + pos * T * cout + ob)) };
                unsafe {
                    match (CIN, nb) {
                        (0, _) => {
                            let mut tap = [Tap::<T> { w: 0, src: [ZEROS.as_ptr(); T] }];
                            for t in 0..nt {
                                tap[0].src[t] = vp.add(t * cin);
                            }
                            if nb == 2 {
                                tile_store::<2>(&tap, cin, ub, ws, mp, cout, nt, ob)
                            } else {
                                tile_store::<1>(&tap, cin, ub, ws, mp, cout, nt, ob)
                            }
                        }
                        (_, 2) => wblock::<CIN, 2>(vp, ub, ws, cout, mp),
                        _ => wblock::<CIN, 1>(vp, ub, ws, cout, mp),
                    }
                }
            }
            ob += 16 * nb;
        }
    }
}

/// T tiles x NB*16 output channels of one position.
///
/// # Safety
/// AVX-512 code under the caller's proof; v is T x CIN, u has CIN rows of ws
/// from which NB*16 are read, m has T rows of cout with NB*16 writable.
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn wblock<const CIN: usize, const NB: usize>(v: *const f32, u: *const f32, ws: usize, cout: usize, m: *mut f32) {
    let mut acc = [[_mm512_setzero_ps(); NB]; T];
    // SAFETY (this function): rows c < CIN, tiles t < T, lanes 16 j < 16 NB: the contract.
    for c in 0..CIN {
        let mut w = [_mm512_setzero_ps(); NB];
        for (j, wv) in w.iter_mut().enumerate() {
            *wv = unsafe { _mm512_loadu_ps(u.add(c * ws + 16 * j)) };
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

/// Into `ptrs` (null on entry), the pointers of the S x S (N = S * S) block of pixels of
/// image n of `src` (h x w pixels of `c` channels) whose corner is (y0, x0): element (r, c) is
/// pixel (y0 + r, x0 + c), left null outside the image. Returns whether the whole block is
/// inside (then none is null). An input patch starts one pixel above and left of its tile's
/// outputs; a gradient tile at them.
#[inline(always)]
fn block_pixels<const S: usize, const N: usize>(
    g: &Wino,
    src: &[f32],
    c: usize,
    n: usize,
    (y0, x0): (isize, isize),
    ptrs: &mut [*const f32; N],
) -> bool {
    debug_assert_eq!(S * S, N);
    let inside = y0 >= 0 && x0 >= 0 && y0 as usize + S <= g.h && x0 as usize + S <= g.w;
    if inside {
        let corner = &src[((n * g.h + y0 as usize) * g.w + x0 as usize) * c..];
        for r in 0..S {
            for k in 0..S {
                ptrs[r * S + k] = corner[(r * g.w + k) * c..].as_ptr();
            }
        }
    } else {
        for r in 0..S {
            for k in 0..S {
                let (y, x) = (y0 + r as isize, x0 + k as isize);
                if y >= 0 && x >= 0 && (y as usize) < g.h && (x as usize) < g.w {
                    ptrs[r * S + k] = src[((n * g.h + y as usize) * g.w + x as usize) * c..].as_ptr();
                }
            }
        }
    }
    inside
}

/// Prefetch into L2, for the tile row below, channels `cv..cv + 16` of the pixels a block of
/// `S` x `S` (`ptrs`, [`block_pixels`]) does not share with it and the block before it: its last
/// `M` rows moved `M` rows down (the rows the tile row below reads and this one does not), in its
/// last `M` columns (the previous tile in the row prefetched the others). Tile rows are short (8
/// tiles on 32 x 32 maps) and their source rows come from memory in training, where the hardware
/// prefetchers have barely found a stream when the row ends: measured on the AMD EPYC (Zen 5)
/// machine, ResNet-110's weight gradient stalled on these loads (in a net, 1.5 ms per 32x32
/// 16->16 call against 0.93 with its operands in cache).
#[inline(always)]
fn prefetch_below<const S: usize, const N: usize, const M: usize>(ptrs: &[*const f32; N], row: usize, cv: usize) {
    for r in S - M..S {
        for k in S - M..S {
            let p = ptrs[r * S + k];
            if !p.is_null() {
                // a prefetch never faults: the address may lie past the tensor (the last rows)
                let q = p.wrapping_add(M * row + cv);
                // SAFETY: a prefetch reads nothing the program sees and cannot fault.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(q as *const i8) };
            }
        }
    }
}

/// V[pos][t][ci] = (B^T d B)[pos] of the 4x4 patch of F(2x2) tile t (zero outside
/// the image), for blocks of `TB` tiles.
///
/// # Safety
/// AVX-512 code under the caller's proof; src is (n, h, w, cin) with the tiles'
/// images, cin a multiple of 16, v 16 x TB x cin, nt <= TB.
#[target_feature(enable = "avx512f")]
unsafe fn input_transform_f2<const TB: usize>(g: &Wino, src: &[f32], t0: usize, nt: usize, v: &mut [f32]) {
    let cin = g.cin;
    let zero = _mm512_setzero_ps();
    for (t, (n, ty, tx)) in g.tiles_from(t0).take(nt).enumerate() {
        let mut ptrs = [std::ptr::null::<f32>(); 16];
        let inside = block_pixels::<4, 16>(g, src, cin, n, (2 * ty as isize - 1, 2 * tx as isize - 1), &mut ptrs);
        for cv in (0..cin).step_by(16) {
            prefetch_below::<4, 16, 2>(&ptrs, g.w * cin, cv);
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

/// V[pos][t][ci] = (B^T d B)[pos] of the 6x6 patch of F(4x4) tile t (zero outside
/// the image), for blocks of `TB` tiles.
///
/// # Safety
/// AVX-512 code under the caller's proof; src is (n, h, w, cin) with the tiles'
/// images, cin a multiple of 16, v 36 x TB x cin, nt <= TB.
#[target_feature(enable = "avx512f")]
unsafe fn input_transform_f4<const TB: usize>(g: &Wino, src: &[f32], t0: usize, nt: usize, v: &mut [f32]) {
    let cin = g.cin;
    let zero = _mm512_setzero_ps();
    for (t, (n, ty, tx)) in g.tiles_from(t0).take(nt).enumerate() {
        let mut ptrs = [std::ptr::null::<f32>(); 36];
        let inside = block_pixels::<6, 36>(g, src, cin, n, (4 * ty as isize - 1, 4 * tx as isize - 1), &mut ptrs);
        for cv in (0..cin).step_by(16) {
            prefetch_below::<6, 36, 4>(&ptrs, g.w * cin, cv);
            // B^T d: column by column
            let mut b = [zero; 36];
            for c in 0..6 {
                let col: [__m512; 6] = std::array::from_fn(|r| {
                    let p = ptrs[r * 6 + c];
                    // (a patch inside the image loads all 36 without a test)
                    if inside || !p.is_null() {
                        // SAFETY: p starts a pixel of cin values (a checked slice index), cv + 16 <= cin.
                        unsafe { _mm512_loadu_ps(p.add(cv)) }
                    } else {
                        zero
                    }
                });
                for (r, val) in bt_f4(col).into_iter().enumerate() {
                    b[r * 6 + c] = val;
                }
            }
            // (B^T d) B: row by row
            for r in 0..6 {
                let row = bt_f4([b[6 * r], b[6 * r + 1], b[6 * r + 2], b[6 * r + 3], b[6 * r + 4], b[6 * r + 5]]);
                for (c, val) in row.into_iter().enumerate() {
                    // SAFETY: a checked slice start, 16 values before the row of cin ends.
                    unsafe { _mm512_storeu_ps(v[((r * 6 + c) * TB + t) * cin + cv..].as_mut_ptr(), val) };
                }
            }
        }
    }
}

/// F(4x4)'s B^T on one line of 6 (points 0, 1, -1, 1/2, -2; rows 1 -3/2 -2 3/2 1 0;
/// 0 -1 1/2 5/2 1 0; 0 1 -5/2 1/2 1 0; 0 -2 -1 2 1 0; 0 1/2 -1 -1/2 1 0; 0 1 -3/2 -2 3/2 1).
/// These points round about half as much as 0, +-1, +-2 (Barabasz et al. 2020; measured
/// with scripts/winograd_points.py: 1.6e-6 against 3.0e-6 of the output's scale over 64 channels).
#[inline]
#[target_feature(enable = "avx512f")]
fn bt_f4(d: [__m512; 6]) -> [__m512; 6] {
    let c = |v: f32| _mm512_set1_ps(v);
    let (d42, d31) = (_mm512_sub_ps(d[4], d[2]), _mm512_sub_ps(d[3], d[1]));
    [
        _mm512_fmadd_ps(c(1.5), d31, _mm512_fnmadd_ps(c(2.0), d[2], _mm512_add_ps(d[0], d[4]))),
        _mm512_fmadd_ps(c(2.5), d[3], _mm512_fmadd_ps(c(0.5), d[2], _mm512_sub_ps(d[4], d[1]))),
        _mm512_fmadd_ps(c(0.5), d[3], _mm512_fnmadd_ps(c(2.5), d[2], _mm512_add_ps(d[4], d[1]))),
        _mm512_fmadd_ps(c(2.0), d31, d42),
        _mm512_fnmadd_ps(c(0.5), d31, d42),
        _mm512_fmadd_ps(c(1.5), d42, _mm512_fnmadd_ps(c(2.0), d[3], _mm512_add_ps(d[1], d[5]))),
    ]
}

/// The 2x2 outputs of each F(2x2) tile, channels `how.cols`: A^T m A, then accumulate /
/// epilogue, stored.
///
/// # Safety
/// AVX-512 code under the caller's proof; m is 16 x T x cout, out an
/// (n, h, w, cout) tensor holding the tiles, cout and `how.cols` multiples of 16, the columns
/// within cout, and the epilogue fits (`Epilogue::fits_simd`).
#[target_feature(enable = "avx512f")]
unsafe fn output_transform_f2(g: &Wino, m: &[f32], out: *mut f32, t0: usize, nt: usize, how: &Out) {
    let cout = g.cout;
    for (t, (n, ty, tx)) in g.tiles_from(t0).take(nt).enumerate() {
        let (y0, x0) = (2 * ty, 2 * tx);
        for cv in how.cols.clone().step_by(16) {
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
                    if y < g.h && x < g.w {
                        // SAFETY: the pixel is inside the image, the contract's tensor.
                        unsafe { store_output(g, out, (n * g.h + y) * g.w + x, cv, *yv, how) };
                    }
                }
            }
        }
    }
}

/// The 4x4 outputs of each F(4x4) tile, channels `how.cols`: A^T m A, then accumulate /
/// epilogue, stored.
///
/// # Safety
/// As [`output_transform_f2`], with m 36 x T x cout.
#[target_feature(enable = "avx512f")]
unsafe fn output_transform_f4(g: &Wino, m: &[f32], out: *mut f32, t0: usize, nt: usize, how: &Out) {
    let cout = g.cout;
    for (t, (n, ty, tx)) in g.tiles_from(t0).take(nt).enumerate() {
        let (y0, x0) = (4 * ty, 4 * tx);
        for cv in how.cols.clone().step_by(16) {
            // A^T m: 4 x 6, column by column
            let mut a = [_mm512_setzero_ps(); 24];
            for c in 0..6 {
                // SAFETY: checked slice starts, cv + 16 <= cout.
                let col: [__m512; 6] = std::array::from_fn(|r| unsafe {
                    _mm512_loadu_ps(m[((r * 6 + c) * T + t) * cout + cv..].as_ptr())
                });
                for (i, v) in at_f4(col).into_iter().enumerate() {
                    a[i * 6 + c] = v;
                }
            }
            // (A^T m) A: 4 x 4
            for i in 0..4 {
                let row = at_f4([a[6 * i], a[6 * i + 1], a[6 * i + 2], a[6 * i + 3], a[6 * i + 4], a[6 * i + 5]]);
                let y = y0 + i;
                if y >= g.h {
                    break;
                }
                for (j, yv) in row.into_iter().enumerate() {
                    let x = x0 + j;
                    if x < g.w {
                        // SAFETY: the pixel is inside the image, the contract's tensor.
                        unsafe { store_output(g, out, (n * g.h + y) * g.w + x, cv, yv, how) };
                    }
                }
            }
        }
    }
}

/// F(4x4)'s A^T on one line of 6 (points 0, 1, -1, 1/2, -2): y0 = m0+m1+m2+m3+m4,
/// y1 = (m1-m2) + m3/2 - 2 m4, y2 = (m1+m2) + m3/4 + 4 m4, y3 = (m1-m2) + m3/8 - 8 m4 + m5.
#[inline]
#[target_feature(enable = "avx512f")]
fn at_f4(m: [__m512; 6]) -> [__m512; 4] {
    let (s12, d12) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
    let c = |v: f32| _mm512_set1_ps(v);
    [
        _mm512_add_ps(_mm512_add_ps(m[0], s12), _mm512_add_ps(m[3], m[4])),
        _mm512_fmadd_ps(c(0.5), m[3], _mm512_fnmadd_ps(c(2.0), m[4], d12)),
        _mm512_fmadd_ps(c(0.25), m[3], _mm512_fmadd_ps(c(4.0), m[4], s12)),
        _mm512_add_ps(_mm512_fmadd_ps(c(0.125), m[3], _mm512_fnmadd_ps(c(8.0), m[4], d12)), m[5]),
    ]
}

/// One output vector `val` (channels cv..cv + 16 of `pixel`) through accumulate and the
/// epilogue (folded BN, residual, ReLU) into `out`, as `how` says.
///
/// # Safety
/// AVX-512 code under the caller's proof; `pixel` is inside `out`'s (n, h, w, cout) tensor,
/// cv + 16 <= cout, the epilogue fits (`Epilogue::fits_simd`), and where `how.stream`
/// every 16-channel vector of `out` starts a 64-byte line.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_output(g: &Wino, out: *mut f32, pixel: usize, cv: usize, val: __m512, how: &Out) {
    let (cout, epi) = (g.cout, how.epi);
    // SAFETY (this function): channels cv..cv + 16 <= cout of the pixel, of `out` and of the
    // affine vectors (fits_simd); residual rows are read below their length, a multiple of 16.
    let dst = unsafe { out.add(pixel * cout + cv) };
    let mut val = val;
    if how.accumulate {
        val = _mm512_add_ps(val, unsafe { _mm512_loadu_ps(dst) });
    }
    if let Some((s, sh)) = epi.affine {
        val =
            unsafe { _mm512_fmadd_ps(val, _mm512_loadu_ps(s.as_ptr().add(cv)), _mm512_loadu_ps(sh.as_ptr().add(cv))) };
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
    if how.stream {
        unsafe { _mm512_stream_ps(dst, val) };
    } else {
        unsafe { _mm512_storeu_ps(dst, val) };
    }
}

// ------------------------------------------------------------ weight gradient
//
// dL/dU = (A dY A^T) . V per tile (U = G g G^T, V = B^T d B), summed over the
// tiles: dU[pos][ci][co] = sum_t V[pos][t][ci] Z[pos][t][co]; then
// dW = G^T dU G. Output pixels past an edge of the image contribute zero gradient.

/// Tiles per weight-gradient block (V and Z stay in L2): F(2x2), F(4x4).
const TW2: usize = 32;
const TW4: usize = 16;

/// Accumulate dU (positions x cin x cout, of `g.tile`) over the tiles `tiles` of x (source) and dy.
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
    let (cin, cout, np) = (g.cin, g.cout, g.tile.positions());
    assert!(cin.is_multiple_of(16) && cout.is_multiple_of(16), "winograd weight gradient: {cin} -> {cout}");
    assert!(du.len() >= np * cin * cout, "winograd weight gradient: dU");
    // SAFETY: `cpu` proves the features; x, dy and du as checked and this function's contract.
    unsafe {
        match g.tile {
            Tile::F2 => weight_grad_blocks::<TW2>(g, x, dy, tiles, du),
            Tile::F4 => weight_grad_blocks::<TW4>(g, x, dy, tiles, du),
        }
    }
}

/// [`weight_grad_tiles`] in blocks of `TB` tiles.
///
/// # Safety
/// AVX-512 code under the caller's proof; the operands as [`weight_grad_tiles`] checked them.
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_blocks<const TB: usize>(
    g: &Wino,
    x: &[f32],
    dy: &[f32],
    tiles: std::ops::Range<usize>,
    du: &mut [f32],
) {
    let (cin, cout, np) = (g.cin, g.cout, g.tile.positions());
    let mut v = Buffer::zeroed(np * TB * cin);
    let mut z = Buffer::zeroed(np * TB * cout);
    let mut t0 = tiles.start;
    while t0 < tiles.end {
        let nt = TB.min(tiles.end - t0);
        // SAFETY: v and z have the sizes the transforms index, x and dy are this function's contract.
        unsafe {
            match g.tile {
                Tile::F2 => {
                    input_transform_f2::<TB>(g, x, t0, nt, &mut v);
                    grad_transform_f2::<TB>(g, dy, t0, nt, &mut z);
                }
                Tile::F4 => {
                    input_transform_f4::<TB>(g, x, t0, nt, &mut v);
                    grad_transform_f4::<TB>(g, dy, t0, nt, &mut z);
                }
            }
        }
        for pos in 0..np {
            let (vp, zp) = (&v[pos * TB * cin..], &z[pos * TB * cout..]);
            let dup = &mut du[pos * cin * cout..][..cin * cout];
            for ci in (0..cin).step_by(8) {
                let mut ob = 0;
                while ob < cout {
                    // SAFETY: rows ci..ci + 8 <= cin (a multiple of 16), channels
                    // ob..ob + 16 NB <= cout, nt <= TB tiles of v, z and dup's sizes.
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
        t0 += TB;
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

/// Z[pos][t][co] = (A dY A^T)[pos] of the 2x2 gradient tile t of F(2x2) (zero past the edges).
///
/// # Safety
/// AVX-512 code under the caller's proof; dy is (n, h, w, cout) with the
/// tiles' images, cout a multiple of 16, z 16 x TB x cout, nt <= TB.
#[target_feature(enable = "avx512f")]
unsafe fn grad_transform_f2<const TB: usize>(g: &Wino, dy: &[f32], t0: usize, nt: usize, z: &mut [f32]) {
    let cout = g.cout;
    let zero = _mm512_setzero_ps();
    for (t, (n, ty, tx)) in g.tiles_from(t0).take(nt).enumerate() {
        let mut ptrs = [std::ptr::null::<f32>(); 4];
        let inside = block_pixels::<2, 4>(g, dy, cout, n, (2 * ty as isize, 2 * tx as isize), &mut ptrs);
        for cv in (0..cout).step_by(16) {
            prefetch_below::<2, 4, 2>(&ptrs, g.w * cout, cv);
            let mut d = [zero; 4];
            for (i, p) in ptrs.iter().enumerate() {
                if inside || !p.is_null() {
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
                    unsafe { _mm512_storeu_ps(z[((r * 4 + c) * TB + t) * cout + cv..].as_mut_ptr(), *val) };
                }
            }
        }
    }
}

/// Z[pos][t][co] = (A dY A^T)[pos] of the 4x4 gradient tile t of F(4x4) (zero past the edges).
///
/// # Safety
/// AVX-512 code under the caller's proof; dy is (n, h, w, cout) with the
/// tiles' images, cout a multiple of 16, z 36 x TB x cout, nt <= TB.
#[target_feature(enable = "avx512f")]
unsafe fn grad_transform_f4<const TB: usize>(g: &Wino, dy: &[f32], t0: usize, nt: usize, z: &mut [f32]) {
    let cout = g.cout;
    let zero = _mm512_setzero_ps();
    for (t, (n, ty, tx)) in g.tiles_from(t0).take(nt).enumerate() {
        let mut ptrs = [std::ptr::null::<f32>(); 16];
        let inside = block_pixels::<4, 16>(g, dy, cout, n, (4 * ty as isize, 4 * tx as isize), &mut ptrs);
        for cv in (0..cout).step_by(16) {
            prefetch_below::<4, 16, 4>(&ptrs, g.w * cout, cv);
            // A dY: 6 x 4, column by column
            let mut a = [zero; 24];
            for c in 0..4 {
                let col: [__m512; 4] = std::array::from_fn(|r| {
                    let p = ptrs[r * 4 + c];
                    // SAFETY: p starts a pixel of cout values (a checked slice index), cv + 16 <= cout.
                    if inside || !p.is_null() { unsafe { _mm512_loadu_ps(p.add(cv)) } } else { zero }
                });
                for (r, val) in a_f4(col).into_iter().enumerate() {
                    a[r * 4 + c] = val;
                }
            }
            // (A dY) A^T: 6 x 6, row by row
            for r in 0..6 {
                let row = a_f4([a[4 * r], a[4 * r + 1], a[4 * r + 2], a[4 * r + 3]]);
                for (c, val) in row.into_iter().enumerate() {
                    // SAFETY: a checked slice start, 16 values before the row of cout ends.
                    unsafe { _mm512_storeu_ps(z[((r * 6 + c) * TB + t) * cout + cv..].as_mut_ptr(), val) };
                }
            }
        }
    }
}

/// F(4x4)'s A (the transpose of [`at_f4`]'s A^T) on one line of 4: z0 = y0,
/// z1 = y0+y1+y2+y3, z2 = y0-y1+y2-y3, z3 = y0 + y1/2 + y2/4 + y3/8, z4 = y0 - 2y1 + 4y2 - 8y3, z5 = y3.
#[inline]
#[target_feature(enable = "avx512f")]
fn a_f4(y: [__m512; 4]) -> [__m512; 6] {
    let c = |v: f32| _mm512_set1_ps(v);
    let (s02, s13) = (_mm512_add_ps(y[0], y[2]), _mm512_add_ps(y[1], y[3]));
    [
        y[0],
        _mm512_add_ps(s02, s13),
        _mm512_sub_ps(s02, s13),
        _mm512_fmadd_ps(c(0.5), y[1], _mm512_fmadd_ps(c(0.25), y[2], _mm512_fmadd_ps(c(0.125), y[3], y[0]))),
        _mm512_fnmadd_ps(c(2.0), y[1], _mm512_fmadd_ps(c(4.0), y[2], _mm512_fnmadd_ps(c(8.0), y[3], y[0]))),
        y[3],
    ]
}

/// dW (HWIO, 3 x 3 x cin x cout) = G^T dU G for every (ci, co), dU of `tile`.
pub fn weight_grad_finish(du: &[f32], cin: usize, cout: usize, tile: Tile, dw: &mut [f32]) {
    let at = |p: usize, ci: usize, co: usize| du[(p * cin + ci) * cout + co];
    match tile {
        Tile::F2 => {
            for ci in 0..cin {
                for co in 0..cout {
                    // G^T dU: 3 x 4
                    let mut h = [[0.0f32; 4]; 3];
                    for c in 0..4 {
                        let (d0, d1, d2, d3) =
                            (at(c, ci, co), at(4 + c, ci, co), at(8 + c, ci, co), at(12 + c, ci, co));
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
        Tile::F4 => {
            // G^T (3 x 6) of the points 0, 1, -1, 1/2, -2 (g_line's G)
            const GT: [[f32; 6]; 3] = [
                [1.0, 1.0 / 3.0, -1.0 / 3.0, -16.0 / 15.0, 1.0 / 15.0, 0.0],
                [0.0, 1.0 / 3.0, 1.0 / 3.0, -8.0 / 15.0, -2.0 / 15.0, 0.0],
                [0.0, 1.0 / 3.0, -1.0 / 3.0, -4.0 / 15.0, 4.0 / 15.0, 1.0],
            ];
            for ci in 0..cin {
                for co in 0..cout {
                    // G^T dU: 3 x 6, then (G^T dU) G: 3 x 3
                    let mut h = [[0.0f32; 6]; 3];
                    for (k, hk) in h.iter_mut().enumerate() {
                        for (c, v) in hk.iter_mut().enumerate() {
                            *v = (0..6).map(|r| GT[k][r] * at(r * 6 + c, ci, co)).sum();
                        }
                    }
                    for (kh, row) in h.iter().enumerate() {
                        for kw in 0..3 {
                            let val: f32 = (0..6).map(|c| row[c] * GT[kw][c]).sum();
                            dw[((kh * 3 + kw) * cin + ci) * cout + co] = val;
                        }
                    }
                }
            }
        }
    }
}
