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

//!
//! Safety: every function here is `#[target_feature]` AVX-512 code. The public
//! entry points take an [`Avx512Cpu`], the proof that the CPU has the features
//! (kernels/dispatch.rs); the private functions are called only from them, so
//! that proof covers them too, and each `unsafe` block below is left with the
//! memory argument: which bound keeps its pointer inside its buffer.

#![allow(clippy::needless_range_loop)] // register blocks are indexed by pixel / channel on purpose
#![allow(clippy::too_many_arguments)]

use super::{Avx512Cpu, Epilogue, Pixels, Tuning, ZEROS};
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
    /// run a kernel row as one tap where that pays and is exact ([`flat_row`]); the
    /// bits are the same either way (false: a tap per (kh, kw), for the tests that say so)
    pub flat_rows: bool,
    /// the blocking and pixel block for this CPU (the same bits for any)
    pub tune: Tuning,
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

/// One tap of a pixel block: its first weight row and a source pointer per pixel.
#[derive(Clone, Copy)]
pub(crate) struct Tap<const P: usize> {
    pub w: usize,
    pub src: [*const f32; P],
}

/// Where a call writes: destination rows `first_row..first_row + nrows` (row =
/// n * oh + y, each ow * co values, starting at `ptr`), output channels `c0..c1`
/// (multiples of 16). Tasks may share rows with disjoint channel ranges. `stream`:
/// write with non-temporal stores, past the caches (taken where `ptr` is on a 64-byte
/// line and the call does not accumulate; else ignored).
#[derive(Clone, Copy)]
pub struct Dst {
    pub ptr: *mut f32,
    pub first_row: usize,
    pub nrows: usize,
    pub c0: usize,
    pub c1: usize,
    pub stream: bool,
}

/// Compute the destination block `dst`. `w`: (k, k, cs, co) packed by
/// [`pack_block`]. `accumulate` adds to what is there, then the epilogue applies.
///
/// # Safety
/// The CPU's features are proven by `cpu`. The caller guarantees the memory:
/// `src` holds whole images of (sh, sw, cs), `dst` points at its rows of
/// (ow, co) values inside one allocation that no other task writes in
/// `c0..c1`. Channel counts (`co` a multiple of 16, `cs` at most the zero
/// row), the weights' length and the epilogue ([`Epilogue::fits_simd`]) are
/// checked here.
#[target_feature(enable = "avx512f")]
pub unsafe fn gather_rows(
    cpu: Avx512Cpu,
    g: &Gather,
    w: &[f32],
    src: &[f32],
    dst: Dst,
    accumulate: bool,
    epi: &Epilogue,
) {
    let _ = cpu;
    assert!(g.co.is_multiple_of(16) && g.cs <= ZEROS.len(), "gather: {} -> {} channels", g.cs, g.co);
    assert_eq!(w.len(), g.k * g.k * g.cs * g.co, "gather: weights");
    assert!(epi.fits_simd(g.co), "gather: epilogue does not fit {} channels", g.co);
    // Each pixel block sweeps the weights of every output channel it computes:
    // run large weight sets (deep 1x1 layers: 2048 x 512 = 4 MiB) in channel
    // chunks of at most half the L2 (512 KiB of 1 MiB), which stay there across the pixel blocks.
    let per_channel = g.k * g.k * g.cs * 4;
    let chunk = (g.tune.weight_chunk() / per_channel / 32 * 32).max(32);
    // every 16-channel vector of the output on a line: co is a multiple of 16 (checked)
    let stream = dst.stream && !accumulate && (dst.ptr as usize).is_multiple_of(64);
    let dst = Dst { stream, ..dst };
    let mut c0 = dst.c0;
    while c0 < dst.c1 {
        let part = Dst { c0, c1: (c0 + chunk).min(dst.c1), ..dst };
        // SAFETY: `cpu` proves the features; `part` is inside `dst` (this function's contract).
        unsafe {
            if g.co == 16 && g.ow.is_multiple_of(16) {
                // one 16-lane output block: 16 pixels keep 16 FMA chains in flight
                rows::<16>(g, w, src, part, accumulate, epi)
            } else if g.tune.pixels == Pixels::Fourteen && g.ow.is_multiple_of(14) && 14 * g.cs <= 4096 {
                // 14 pixels where their source channels (14 x cs, at most 16 KiB) stay in L1 with
                // the weights' rows: on 1024 channels (56 KiB) they measured 25% slower
                rows::<14>(g, w, src, part, accumulate, epi)
            } else if !g.ow.is_multiple_of(8) && g.ow.is_multiple_of(7) {
                rows::<7>(g, w, src, part, accumulate, epi)
            } else {
                rows::<8>(g, w, src, part, accumulate, epi)
            }
        }
        c0 = part.c1;
    }
    if stream {
        // the non-temporal stores reach memory before anything after this call reads them
        _mm_sfence();
    }
}

/// [`gather_rows`] for one channel range, P pixels per block.
///
/// # Safety
/// As [`gather_rows`], whose checks have run.
#[target_feature(enable = "avx512f")]
unsafe fn rows<const P: usize>(g: &Gather, w: &[f32], src: &[f32], dst: Dst, accumulate: bool, epi: &Epilogue) {
    let row_len = g.ow * g.co;
    let stream = dst.stream;
    let rows_w = g.k * g.k * g.cs;
    let mut res = ([ZEROS.as_ptr(); P], 0usize);
    let mut taps = [Tap::<P> { w: 0, src: [ZEROS.as_ptr(); P] }; 49];
    assert!(g.k * g.k <= 49, "kernel larger than 7x7");
    // Backward-data with stride s > 1 runs per column class x = b (mod s): in a
    // class every pixel takes the same taps, from consecutive source columns.
    let classes = if g.transposed { g.stride } else { 1 };
    for r in 0..dst.nrows {
        let row = dst.first_row + r;
        // SAFETY: row r < nrows of `dst`, each row_len values.
        let orow = unsafe { dst.ptr.add(r * row_len) };
        let (n, y) = (row / g.oh, row % g.oh);
        for b in 0..classes.min(g.ow) {
            let nq = (g.ow - b).div_ceil(classes);
            let mut q0 = 0;
            while q0 < nq {
                let np = P.min(nq - q0);
                let mut nt = 0;
                // A forward block whose pixels see every column of the kernel reads a kernel
                // row's k x cs values as one run (see `flat_row`); otherwise a tap per (kh, kw).
                let cs = if flat_row(g, q0, np) { g.k * g.cs } else { g.cs };
                for kh in 0..g.k {
                    let Some(sy) = g.src(y, kh, g.sh) else {
                        continue;
                    };
                    let srow_ptr = src.as_ptr().wrapping_add((n * g.sh + sy) * g.sw * g.cs);
                    if cs > g.cs {
                        // one tap per kernel row: weight rows (kh, 0, 0).., pixel p's run
                        // from column o * stride - pad (all k columns inside the row)
                        let t = &mut taps[nt];
                        t.w = kh * g.k * g.cs;
                        for p in 0..P {
                            let sx = (q0 + p) * g.stride - g.pad;
                            t.src[p] = if p < np { srow_ptr.wrapping_add(sx * g.cs) } else { ZEROS.as_ptr() };
                        }
                        nt += 1;
                        continue;
                    }
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
                        t.w = (kh * g.k + kw) * g.cs;
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
                if g.k == 1 && (!g.transposed || g.stride == 1) && nt == 1 {
                    // the next block's source pixels (a 1x1 convolution reads each once): asked
                    // for now, into L1, they arrive while this block's tiles run. conv_bench at
                    // batch 16 on the earlier AMD EPYC, into L2: 56x56 256->64 174 -> 191 GFLOP/s,
                    // 256->128 196 -> 202 (into L1 the same there); on the Zen 5 EPYC (two FMA
                    // units), L2 against L1: 256->64 407-409 -> 431-437, 64->256 424-429 -> 467,
                    // the other 1x1 shapes within noise, ResNet-50 inference at batch 16 ahead in
                    // 3 of 3 rounds (0.2-1%), batch 1 even
                    let lines = (g.cs * 4).div_ceil(64);
                    for p in 0..np {
                        let next = taps[0].src[p].wrapping_add(P * g.stride * g.cs) as *const i8;
                        for l in 0..lines {
                            // a prefetch never faults: past the source's end it is a wasted request
                            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(64 * l));
                        }
                    }
                }
                let store = Store { accumulate, stream, epi, res: epi.residual.map(|_| &res) };
                // SAFETY: column x0 < ow of this row.
                let (obase, ps) = (unsafe { orow.add(x0 * g.co) }, classes * g.co);
                let mut ob = dst.c0;
                while ob < dst.c1 {
                    // the packed block of channels ob.. (see `pack_block`)
                    let (wp, width) = (w[ob * rows_w..].as_ptr(), (g.co - ob).min(32));
                    // SAFETY: channel ob < c1 <= co of pixel x0.
                    let op = unsafe { obase.add(ob) };
                    // SAFETY (both tiles): the taps point at source pixels of cs values
                    // (k x cs for a kernel row: `flat_row` checked that all k columns are
                    // inside the row) or at ZEROS (cs <= its length, checked); the weights from ob on
                    // hold cs rows of co; the np pixels at stride ps from op are in this
                    // row, and their channels ob..ob + 16 NB inside c0..c1.
                    if dst.c1 - ob >= 32 {
                        unsafe { tile::<P, 2>(&taps[..nt], cs, wp, width, op, ps, np, ob, &store) };
                        ob += 32;
                    } else {
                        unsafe { tile::<P, 1>(&taps[..nt], cs, wp, width, op, ps, np, ob, &store) };
                        ob += 16;
                    }
                }
                q0 += P;
            }
        }
    }
}

/// Whether the forward block of pixels q0..q0 + np (of an output row) runs a kernel row as one
/// tap of k x cs values: in NHWC the k columns x cs channels a pixel reads from a source row
/// lie side by side, as do the weight rows (kh, kw, c) in HWIO. The sum visits the same
/// products in the same order as a tap per (kh, kw), so the bits are the same; the kernel
/// then runs k times fewer taps, each k times longer. Worth it where the channel loop is
/// short (the stems: 3 channels); only where every pixel sees all k columns (no padding).
#[inline(always)]
fn flat_row(g: &Gather, q0: usize, np: usize) -> bool {
    let first = q0 * g.stride;
    let last = (q0 + np - 1) * g.stride + g.k - 1;
    g.flat_rows
        && !g.transposed
        && g.k > 1
        && g.cs < 16
        && g.k * g.cs <= ZEROS.len()
        && first >= g.pad
        && last < g.sw + g.pad
}

/// P pixels x NB*16 channels: out[p][j] (+)= sum_taps sum_c src[p][c] * w[c][j].
/// Output pixel p is at `out + p * ps`. Not inlined: its register allocation
/// (P x NB accumulators, P source pointers) must not compete with the caller's.
///
/// # Safety
/// AVX-512 code under the caller's proof. Each tap's P pointers have `cs`
/// readable values, `w` from row `t.w` has cs rows of `co` (the row stride)
/// from which NB*16 are read,
/// the np pixels at `out + p * ps` have NB*16 writable values, and the
/// epilogue's affine vectors and residual rows cover channels `ob..ob + 16 NB`.
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
    // the residual lines this tile's stores will read: asked for now, they arrive while the
    // taps run (a line of a residual that left the caches costs its memory latency otherwise)
    if let Some((ptrs, len)) = store.res {
        for p in 0..np {
            for j in 0..NB {
                let ch = ob + 16 * j;
                if ch < *len {
                    // SAFETY: as the residual loads below (pixel p < np, channel ch < its length)
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(ptrs[p].add(ch) as *const i8) };
                }
            }
        }
    }
    // a match, not `Option::map`: that stayed an out-of-line call, and after the sums the 16 live
    // accumulators were spilled to the stack (twice) around it
    #[allow(clippy::manual_map)]
    let affine = match store.epi.affine {
        Some((s, t)) => Some((s.as_ptr(), t.as_ptr())),
        None => None,
    };
    let mut acc = [[_mm512_setzero_ps(); NB]; P];
    for t in taps {
        // SAFETY (this loop): tap offsets, rows c < cs and lanes 16 j < 16 NB are the
        // bounds of this function's contract.
        let wt = unsafe { w.add(t.w * co) };
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
    // SAFETY (this loop): pixels p < np, channels ch..ch + 16 inside ob..ob + 16 NB:
    // this function's contract; residual rows are read only below their length.
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
            if store.stream {
                // SAFETY: `stream` is set only for outputs whose every 16-channel vector
                // starts a 64-byte line (gather_rows' check).
                unsafe { _mm512_stream_ps(dst, v) };
            } else {
                unsafe { _mm512_storeu_ps(dst, v) };
            }
        }
    }
}

/// Packed weights: (rows, co) -> blocks of 32 output channels (the last one
/// 16 wide where co is an odd multiple of 16), each (rows, width) contiguous:
/// block b starts at 32 b rows. A tile then reads its weights as one
/// contiguous stream; in the (rows, co) layout its rows lie co * 4 bytes
/// apart, which for co >= 1024 (4 KiB and more) maps them all to a few cache
/// sets. This writes block `b` (callers run the blocks in parallel).
pub fn pack_block(w: &[f32], rows: usize, co: usize, b: usize, block: &mut [f32]) {
    let width = (co - 32 * b).min(32);
    for (r, dst) in block[..rows * width].chunks_exact_mut(width).enumerate() {
        let src = &w[r * co + 32 * b..][..width];
        if let (Ok(d), Ok(s)) = (<&mut [f32; 32]>::try_from(&mut *dst), <&[f32; 32]>::try_from(src)) {
            *d = *s; // a fixed-size copy: vector moves, not a memcpy call per row
        } else {
            dst.copy_from_slice(src);
        }
    }
}

/// Block `b` of the packed weights of the transposed convolution (backward-
/// data), straight from the forward weights w (taps, cin, cout): its rows are
/// (tap, o), its columns the input channels 32 b.. (32 or 16 of them):
/// block[(t cout + o) width + j] = w[(t cin + 32 b + j) cout + o].
pub fn pack_block_transposed(w: &[f32], taps: usize, cin: usize, cout: usize, b: usize, block: &mut [f32]) {
    let width = (cin - 32 * b).min(32);
    for t in 0..taps {
        let dst = &mut block[t * cout * width..][..cout * width];
        for j in 0..width {
            let src = &w[(t * cin + 32 * b + j) * cout..][..cout];
            for (o, v) in src.iter().enumerate() {
                dst[o * width + j] = *v;
            }
        }
    }
}

/// P = 8 pixels x NB*16 channels, plain stores (the Winograd GEMM step): out[p][j] = sum_taps
/// sum_c src[p][c] * w[c][j] for j < 16 NB, w's rows `ws` apart (a packed block), pixel p at
/// `out + p * ps`. `ob`: the block's first channel (for the epilogue, which is empty here).
///
/// # Safety
/// Called from AVX-512 code only (the caller's proof covers this); each tap's
/// pointers have `cs` values, `w` has cs rows of ws >= 16 NB, `out` np rows of ps from which
/// 16 NB are written.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn tile_store<const NB: usize>(
    taps: &[Tap<8>],
    cs: usize,
    w: *const f32,
    ws: usize,
    out: *mut f32,
    ps: usize,
    np: usize,
    ob: usize,
) {
    let epi = Epilogue::default();
    let store = Store::<8> { accumulate: false, stream: false, epi: &epi, res: None };
    // SAFETY: this function's contract.
    unsafe { tile::<8, NB>(taps, cs, w, ws, out, ps, np, ob, &store) }
}

/// How a tile stores: add to what is there, then the epilogue; `res` holds
/// the residual pointer of each pixel and the residual's channel count.
struct Store<'s, 'e, const P: usize> {
    accumulate: bool,
    /// non-temporal stores (whole 64-byte lines on a line boundary; not with `accumulate`)
    stream: bool,
    epi: &'s Epilogue<'e>,
    res: Option<&'s ([*const f32; P], usize)>,
}

/// Weight gradient of `n` images of the forward convolution `g` (source = x), added into `dw`
/// (k, k, cin, cout): `dw[tap][i][o] += sum over output pixels of x[src pixel][i] * dy[pixel][o]`.
/// x: (n, sh, sw, cs), dy: (n, oh, ow, co), co a multiple of 16.
///
/// A GEMM whose reduction runs over pixels: dW (cin x cout) += X^T dY. The
/// pixels go in chunks of about 512 (output rows of every image alike, so
/// that a chunk of a 7x7 layer spans several images and dW, larger than the
/// activations there, is read and written once per 512 pixels, not once per
/// image); in a chunk the input channels go in blocks whose x values stay in
/// L2 (a quarter of it: 256 KiB of 1 MiB), and for each 32 output channels the tiles of 8 input
/// channels of the block stream the chunk's pixels (dy's 32 columns stay in L1).
///
/// # Safety
/// The CPU's features are proven by `cpu`. The caller guarantees the slices
/// match the geometry: x is (n, h, wd, cin), dy (n, oh, ow, cout) the output
/// of a k x k / stride / pad convolution of x, dw (k, k, cin, cout); cout a multiple of 16.
#[target_feature(enable = "avx512f")]
pub unsafe fn wgrad_images(cpu: Avx512Cpu, g: &Gather, n: usize, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let Gather { k, sh: h, sw: wd, cs: cin, oh, ow, co: cout, .. } = *g;
    assert!(!g.transposed && cout.is_multiple_of(16), "weight gradient: {g:?}");
    assert!(x.len() >= n * h * wd * cin && dy.len() >= n * oh * ow * cout && dw.len() >= k * k * cin * cout);
    if cin < 8 && k > 1 {
        for i in 0..n {
            let (xi, yi) = (&x[i * h * wd * cin..], &dy[i * oh * ow * cout..]);
            // SAFETY: image i of the contract of this function.
            unsafe { wgrad_image_flat(g, xi, yi, dw) };
        }
        return;
    }
    let mut taps: Vec<&mut [f32]> = dw[..k * k * cin * cout].chunks_exact_mut(cin * cout).collect();
    // SAFETY: this function's contract, for every input channel.
    unsafe { wgrad_channels(cpu, g, n, x, dy, 0..cin, &mut taps) }
}

/// [`wgrad_images`] for the input channels `channels` only: `taps[t]` holds tap t's rows of those
/// channels (cout values each, channel `channels.start` first), added into. Each value is the
/// same sum, in the same order, as [`wgrad_images`]'s, so tasks that split the input channels
/// between them (one image, two cores) get its result bit for bit.
///
/// # Safety
/// As [`wgrad_images`] (without the few-channel path: cin >= 8 or k == 1); `channels` inside
/// 0..cin, k * k taps of at least `channels.len() * cout` values each.
#[target_feature(enable = "avx512f")]
pub unsafe fn wgrad_channels(
    cpu: Avx512Cpu,
    g: &Gather,
    n: usize,
    x: &[f32],
    dy: &[f32],
    channels: std::ops::Range<usize>,
    taps: &mut [&mut [f32]],
) {
    let _ = cpu;
    let Gather { k, stride, pad, sh: h, sw: wd, cs: cin, oh, ow, co: cout, .. } = *g;
    assert!(!g.transposed && cout.is_multiple_of(16), "weight gradient: {g:?}");
    assert!(x.len() >= n * h * wd * cin && dy.len() >= n * oh * ow * cout);
    assert!(channels.end <= cin && taps.len() == k * k);
    assert!(taps.iter().all(|t| t.len() >= channels.len() * cout));
    let (c0, c1) = (channels.start, channels.end);
    // output rows (n * oh of them) per chunk; input channels per block
    let chunk = 512usize.div_ceil(ow).max(1);
    let x_pixels = (chunk * stride).min(n * h) * wd;
    let mc = (g.tune.wgrad_input_block() / 4 / x_pixels / 8 * 8).clamp(8, cin.next_multiple_of(8));
    let mut ys = Vec::with_capacity(chunk);
    for r0 in (0..n * oh).step_by(chunk) {
        let r1 = (r0 + chunk).min(n * oh);
        for m0 in (c0..c1).step_by(mc) {
            let m1 = (m0 + mc).min(c1);
            for kh in 0..k {
                // (output row, source row) over the images: rows whose source row is inside
                ys.clear();
                ys.extend((r0..r1).filter_map(|r| g.src(r % oh, kh, h).map(|sy| (r, r / oh * h + sy))));
                if ys.is_empty() {
                    continue;
                }
                for kw in 0..k {
                    let Some(lo) = (0..ow).find(|&xo| g.src(xo, kw, wd).is_some()) else {
                        continue;
                    };
                    let hi = (0..ow).rev().find(|&xo| g.src(xo, kw, wd).is_some()).unwrap_or(lo);
                    let sx0 = (lo * stride + kw) - pad;
                    let span = Span { ys: &ys, lo, n: hi - lo + 1, sx0, stride, sw: wd, cin, ow, cout };
                    let tap = &mut taps[kh * k + kw][..];
                    let mut ob = 0;
                    while ob < cout {
                        let nb = if cout - ob >= 32 { 2 } else { 1 };
                        let mut i = m0;
                        while i < m1 {
                            let r = tile_rows(m1 - i);
                            // SAFETY: the span's pixels are inside the images (x, dy as this
                            // function's contract, rows counted over the images); input
                            // channels i..i + r <= c1 <= cin (the tap's rows from c0) and output
                            // channels ob..ob + 16 nb <= cout.
                            unsafe { wtile_of(r, nb, &span, x, dy, i, ob, &mut tap[(i - c0) * cout + ob..]) };
                            i += r;
                        }
                        ob += 16 * nb;
                    }
                }
            }
        }
    }
}

/// The weight gradient of a convolution with few input channels (the stems:
/// 3 of them), one image: x is copied into a zero-padded image, where every tap
/// is valid at every output pixel, and the k taps x cin channels of one kernel
/// row — contiguous in the padded row — are the rows of one GEMM (k cin of them,
/// not cin), so that the tiles have 8 rows of accumulators, not 1.
///
/// # Safety
/// As [`wgrad_images`], for one image.
#[target_feature(enable = "avx512f")]
unsafe fn wgrad_image_flat(g: &Gather, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let Gather { k, stride, pad, sh: h, sw: wd, cs: cin, oh, ow, co: cout, .. } = *g;
    let (hp, wp) = (h + 2 * pad, wd + 2 * pad);
    let mut xp = crate::reuse::Buffer::zeroed(hp * wp * cin);
    for (y, row) in x[..h * wd * cin].chunks_exact(wd * cin).enumerate() {
        xp[((y + pad) * wp + pad) * cin..][..wd * cin].copy_from_slice(row);
    }
    let per_row = ow * cout + stride * wp * cin;
    // the chunk cuts the sum over output rows: fixed, not tuned per CPU (the same bits on every CPU)
    let chunk = ((384 << 10) / 4 / per_row).max(1);
    for y0 in (0..oh).step_by(chunk) {
        let y1 = (y0 + chunk).min(oh);
        for kh in 0..k {
            // in the padded image output row y reads row y * stride + kh, always inside
            let ys: Vec<(usize, usize)> = (y0..y1).map(|y| (y, y * stride + kh)).collect();
            let span = Span { ys: &ys, lo: 0, n: ow, sx0: 0, stride, sw: wp, cin, ow, cout };
            // SAFETY: pixel (y, xo) reads padded columns xo * stride + kw < wp for
            // kw < k (the output size's definition), i.e. the k cin values from its
            // first one; dw from row kh k cin holds k cin rows of cout.
            unsafe { wgrad_rows(&span, &xp, dy, k * cin, &mut dw[kh * k * cin * cout..]) };
        }
    }
}

/// Add the span's sums into `dst` rows 0..rows (each `cout` values): row i
/// gets sum x[pixel][i] * dy[pixel][..], in tiles of up to 8 rows x 32 channels.
///
/// # Safety
/// AVX-512 code under the caller's proof. The span's pixels are inside x and dy,
/// each x pixel has `rows` readable values from its first, dst has rows x cout.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn wgrad_rows(span: &Span, x: &[f32], dy: &[f32], rows: usize, dst: &mut [f32]) {
    let cout = span.cout;
    let mut i = 0;
    while i < rows {
        let r = tile_rows(rows - i);
        let mut ob = 0;
        while ob < cout {
            let nb = if cout - ob >= 32 { 2 } else { 1 };
            // SAFETY: rows i..i + r < rows and channels ob..ob + 16 nb <= cout of
            // `dst`; the span as this function's contract.
            unsafe { wtile_of(r, nb, span, x, dy, i, ob, &mut dst[i * cout + ob..]) };
            ob += 16 * nb;
        }
        i += r;
    }
}

/// Rows of accumulators of the weight-gradient tile for `left` rows still to do: 8, 4 or 1.
fn tile_rows(left: usize) -> usize {
    match left {
        8.. => 8,
        4..8 => 4,
        _ => 1,
    }
}

/// [`wtile`] with `r` rows (8, 4 or 1) and `nb` 16-lane blocks (2 or 1).
///
/// # Safety
/// As [`wtile`] for R = r, NB = nb.
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn wtile_of(r: usize, nb: usize, span: &Span, x: &[f32], dy: &[f32], i: usize, ob: usize, d: &mut [f32]) {
    // SAFETY: this function's contract.
    unsafe {
        match (r, nb) {
            (8, 2) => wtile::<8, 2>(span, x, dy, i, ob, d),
            (8, _) => wtile::<8, 1>(span, x, dy, i, ob, d),
            (4, 2) => wtile::<4, 2>(span, x, dy, i, ob, d),
            (4, _) => wtile::<4, 1>(span, x, dy, i, ob, d),
            (_, 2) => wtile::<1, 2>(span, x, dy, i, ob, d),
            _ => wtile::<1, 1>(span, x, dy, i, ob, d),
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

/// dst[r][j] += the span's sum of x[pixel][i0 + r] * dy[pixel][ob + 16 j..].
///
/// # Safety
/// AVX-512 code under the caller's proof; the span's pixels are inside x and dy,
/// i0 + R <= cin, ob + 16 NB <= cout, and dst has R rows of cout from its start.
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
    // SAFETY (this function): the span's rows and columns, R input channels from
    // i0 and NB*16 output channels from ob: this function's contract.
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

/// The bare FMA loop that measures this core's fp32 peak: `CHAINS`
/// independent accumulators (enough to cover the FMA latency on two ports),
/// `iters` rounds of one `vfmadd231ps zmm` each. Returns a value that depends
/// on every FMA so that none is optimised away. FLOPs: `iters * CHAINS * 32`.
pub fn fma_loop(cpu: Avx512Cpu, iters: u64) -> f32 {
    // SAFETY: `cpu` proves the features `fma_chains` enables; it touches no memory.
    unsafe { fma_chains(cpu, iters) }
}

/// Independent FMA chains [`fma_loop`] runs.
pub const CHAINS: usize = 24;

#[target_feature(enable = "avx512f")]
unsafe fn fma_chains(_cpu: Avx512Cpu, iters: u64) -> f32 {
    let mut acc: [__m512; CHAINS] = std::array::from_fn(|i| _mm512_set1_ps(i as f32 * 1e-3));
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for v in acc {
        s = _mm512_add_ps(s, v);
    }
    _mm512_reduce_add_ps(s)
}
