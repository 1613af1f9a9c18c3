//! 2-D convolution, no bias (every conv of the paper is followed by BN).
//!
//! x: (N, H, W, Cin) NHWC, w: (KH, KW, Cin, Cout) HWIO, y: (N, OH, OW, Cout).
//! OH = (H + 2 pad - K) / stride + 1. Square kernels, symmetric padding: the
//! paper's 7x7/2, 3x3/1, 3x3/2, 1x1/1, 1x1/2 (and anything else square).

#[cfg(target_arch = "x86_64")]
use crate::kernels::winograd::Tile;
#[cfg(target_arch = "x86_64")]
use crate::kernels::{Avx512Cpu, ZEROS};
use crate::kernels::{Epilogue, KernelPath};
use crate::par;
#[cfg(target_arch = "x86_64")]
use crate::reuse::{Buffer, Buffers};
use crate::shape::Dims;

/// Run the AVX-512 gather kernel over all of `out` on every thread. Where the
/// weights outweigh the activations (the deep layers: 7x7 and 14x14 maps,
/// batch-1 inference), or there are too few rows for every thread, the tasks
/// split the output channels and each computes every row of its channels, so
/// that every weight is read from memory once (the kernel keeps each chunk of
/// them in L2 across the rows); elsewhere they split the rows and share the
/// weights.
///
/// `pack(b, block)` writes block b of the packed weights (`avx512::pack_block`);
/// `prepacked`: all of them, made before ([`Conv::prepare`]).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn run_gather(
    cpu: Avx512Cpu,
    g: &crate::kernels::avx512::Gather,
    prepacked: Option<&[f32]>,
    pack: impl Fn(usize, &mut [f32]) + Sync + Send,
    src: &[f32],
    out: &mut [f32],
    accumulate: bool,
    epi: &Epilogue,
) {
    if let Some(w) = prepacked {
        return run_gather_on(cpu, g, w, src, out, accumulate, epi);
    }
    // the packed weights live in a buffer kept by the calling thread between calls
    // (no allocation per layer); a nested call finds it taken and allocates
    PACKED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut kept) => run_gather_packed(cpu, g, pack, &mut kept, src, out, accumulate, epi),
        Err(_) => run_gather_packed(cpu, g, pack, &mut Vec::new(), src, out, accumulate, epi),
    })
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// The packed weights of the last convolution this thread ran.
    static PACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`run_gather`] with a buffer for the packed weights.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn run_gather_packed(
    cpu: Avx512Cpu,
    g: &crate::kernels::avx512::Gather,
    pack: impl Fn(usize, &mut [f32]) + Sync + Send,
    packed: &mut Vec<f32>,
    src: &[f32],
    out: &mut [f32],
    accumulate: bool,
    epi: &Epilogue,
) {
    // the weights in blocks of 32 output channels, the blocks in parallel
    let rows_w = g.k * g.k * g.cs;
    packed.resize(rows_w * g.co, 0.0);
    par::for_chunks(packed, 32 * rows_w, pack);
    run_gather_on(cpu, g, packed, src, out, accumulate, epi)
}

/// [`run_gather`] on packed weights `w`.
#[cfg(target_arch = "x86_64")]
fn run_gather_on(
    cpu: Avx512Cpu,
    g: &crate::kernels::avx512::Gather,
    w: &[f32],
    src: &[f32],
    out: &mut [f32],
    accumulate: bool,
    epi: &Epilogue,
) {
    use crate::kernels::avx512::{Dst, gather_rows};
    let row_len = g.ow * g.co;
    let rows = out.len() / row_len;
    let want = 4 * par::threads();
    let by_channels = (w.len() > src.len() + out.len() || rows < want) && g.co >= 64;
    let stream = stream_outputs(out.len());
    if !by_channels {
        par::for_rows(
            out,
            row_len,
            1,
            #[inline(always)]
            |first, chunk| {
                let (ptr, nrows) = (chunk.as_mut_ptr(), chunk.len() / row_len);
                let dst = Dst { ptr, first_row: first, nrows, c0: 0, c1: g.co, stream };
                // SAFETY: `cpu` proves the CPU features; the caller checked `src`
                // and `out` against the geometry and `epi` with `fits_simd`; each
                // task writes only its own rows.
                unsafe { gather_rows(cpu, g, w, src, dst, accumulate, epi) }
            },
        );
        return;
    }
    // blocks of a multiple of 32 channels, every row
    let per = (g.co / 32).div_ceil(want.min(g.co / 32)) * 32;
    let base = par::SyncPtr(out.as_mut_ptr());
    par::for_each_index(
        g.co.div_ceil(per),
        #[inline(always)]
        |b| {
            let (c0, c1) = (b * per, ((b + 1) * per).min(g.co));
            let dst = Dst { ptr: base.get(), first_row: 0, nrows: rows, c0, c1, stream };
            // SAFETY: as above; tasks write disjoint channel ranges of every row of `out`.
            unsafe { gather_rows(cpu, g, w, src, dst, accumulate, epi) }
        },
    );
}

/// Whether a convolution writes its `len` outputs past the caches (non-temporal stores):
/// from 4 MiB on. A store that misses the cache reads its line first (the write-allocate), so
/// a large output costs its bytes twice; streamed, once. Measured on the AMD EPYC machine,
/// alternating, for the direct kernel: ResNet-50 inference at batch 16 25.4 -> 26.4 img/s
/// (from 8 MiB on: 26.3), training at batch 16 7.70 -> 7.84; examples/conv_bench at batch 16,
/// 56x56 1x1 forward 64->64 155 -> 165 GFLOP/s, 64->256 150 -> 171, 256->64 165 -> 175; then
/// for Winograd as well: ResNet-56 training 327 -> 344 img/s, ResNet-20 805 -> 830, ResNet-50
/// inference and training at batch 16 within noise (26.2 / 26.2, 7.89 / 7.89).
#[cfg(target_arch = "x86_64")]
fn stream_outputs(len: usize) -> bool {
    len * 4 >= 4 << 20
}

/// Winograd F(2x2, 3x3) or F(4x4, 3x3) (`tile`) over every tile row of every image, on all
/// threads. `d`: the (same-size) source and destination shape with `ci` / `co` channels.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn run_winograd(
    cpu: Avx512Cpu,
    d: Dims,
    ci: usize,
    co: usize,
    tile: Tile,
    u: &[f32],
    src: &[f32],
    out: &mut [f32],
    accumulate: bool,
    epi: &Epilogue,
) {
    use crate::kernels::winograd::{Wino, tiles};
    let g = Wino { h: d.h, w: d.w, cin: ci, cout: co, tile };
    let total = d.n * g.tiles_per_image();
    assert!(src.len() == d.n * d.h * d.w * ci && out.len() == d.n * d.h * d.w * co);
    // Tasks of whole 8-tile blocks, about 8 per thread. Where there are few tiles and U outgrows
    // the L2 (batch 1 on 14x14 maps: 49 tiles, 4 MiB), one task per thread, so that U is read
    // once per super-block (winograd::tiles), not once per 8 tiles: each task takes every tile
    // for its share of the output channels, in the GEMM's 32-column blocks. Then each thread
    // reads only its share of U, and no thread's last block of 8 tiles runs part empty (49 tiles
    // are 7 blocks, where two threads' shares of 25 and 24 would be 8).
    let l2 = crate::kernels::Tuning::current(cpu).l2;
    let threads = par::threads();
    let few = total <= 64 * threads && g.weights_outgrow(l2);
    let (per, cols) = if few && co >= 32 * threads {
        (total, co.div_ceil(32).div_ceil(threads) * 32)
    } else if few {
        (total.div_ceil(threads), co)
    } else {
        (total.div_ceil(8 * threads).div_ceil(8).max(1) * 8, co)
    };
    let (row_tasks, col_tasks) = (total.div_ceil(per), co.div_ceil(cols));
    let base = par::SyncPtr(out.as_mut_ptr());
    let stream = stream_outputs(out.len());
    par::for_each_index(
        row_tasks * col_tasks,
        #[inline(always)]
        |i| {
            let (r, c) = (i / col_tasks, i % col_tasks);
            let (t, ch) = (r * per..((r + 1) * per).min(total), c * cols..((c + 1) * cols).min(co));
            // SAFETY: `cpu` proves the CPU features; `src` and `out` were checked
            // against `d` above, `epi` by the caller; each task writes its own channels of its
            // own tiles' pixels.
            unsafe { tiles(cpu, &g, u, src, base.get(), t, ch, l2, accumulate, stream, epi) }
        },
    );
}

/// Winograd-transformed weights `U[pos][ci][co]` (positions x cin x cout) of `w` (HWIO, 3 x 3 x
/// cin x cout) for `tile`, each position's cin x cout matrix packed in blocks of 32 output
/// channels as the direct kernel's weights are (`avx512::pack_block`): `winograd::tiles` streams a
/// block's cin rows in order, where in rows of cout they lie cout * 4 bytes apart (1 KiB at 256
/// channels, a stride the prefetchers do not follow across pages).
#[cfg(target_arch = "x86_64")]
fn winograd_weights(w: &[f32], cin: usize, cout: usize, tile: Tile) -> Buffer {
    let (np, matrix) = (tile.positions(), cin * cout);
    // row by row, the input channels in parallel
    let mut rows = Buffer::zeroed(np * matrix);
    let base = par::SyncPtr(rows.as_mut_ptr());
    par::for_each_index(
        cin,
        #[inline(always)]
        |ci| {
            // SAFETY: task ci writes only the rows U[pos][ci][..] (disjoint across
            // tasks), each `cout` values inside `rows`, which outlives the loop.
            let mut rows: Vec<&mut [f32]> = (0..np)
                .map(|pos| unsafe { std::slice::from_raw_parts_mut(base.get().add(pos * matrix + ci * cout), cout) })
                .collect();
            crate::kernels::winograd::transform_weights_of_channel(w, cin, cout, ci, tile, &mut rows)
        },
    );
    // packed, the positions in parallel
    let mut u = Buffer::zeroed(np * matrix);
    par::for_chunks(&mut u, matrix, |pos, packed| {
        let m = &rows[pos * matrix..][..matrix];
        for (b, block) in packed.chunks_mut(32 * cin).enumerate() {
            crate::kernels::avx512::pack_block(m, cin, cout, b, block);
        }
    });
    u
}

/// A convolution's weights in the form its forward kernel reads them, for
/// one input shape ([`Conv::prepare`]).
#[derive(Clone, Debug)]
pub struct Prepared {
    form: Form,
    xd: Dims,
    data: Vec<f32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// blocks of 32 output channels (`avx512::pack_block`)
    Packed,
    /// Winograd U (positions x cin x cout) of this tile (`Conv::inference_tile`)
    #[cfg(target_arch = "x86_64")]
    Winograd(Tile),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv {
    pub fn new(cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> Conv {
        Conv { cin, cout, k, stride, pad }
    }

    /// "56x56 64->256 k1/1": the shape on input `x`, as examples/conv_bench and BENCHMARKS.md
    /// name it (a `--profile` line per shape).
    pub fn label(&self, x: Dims) -> String {
        format!("{}x{} {}->{} k{}/{}", x.h, x.w, self.cin, self.cout, self.k, self.stride)
    }

    /// Whether the Winograd path computes this convolution on `x`: 3x3, stride 1,
    /// pad 1, channels in 16s — and where it pays (examples/conv_bench, ResNet-50
    /// shapes): 48 2x2 tiles or more (batch 1 on 14x14 maps has 49: ResNet-50 inference
    /// there, its five 256->256 layers, 5.5 -> 4.3 ms per step, with the weights transformed
    /// once, [`Conv::prepare`], and read once per thread: `run_winograd`), and transformed
    /// weights (16 x Cin x Cout) of at most 4 MiB (512 channels on 7x7 maps: ResNet-50 training
    /// at batch 16, its two backward passes on Winograd 89-126 against 68-71 ms per step;
    /// inference goes beyond the bound, [`Conv::inference_winograd`]).
    pub fn winograd_applies(&self, x: Dims) -> bool {
        self.winograd_shape() && Self::f2_tiles(x) >= 48 && self.f2_weights_within_4mib()
    }

    /// Whether an inference net prepares Winograd weights for `x` ([`Conv::prepare`]): where
    /// [`Conv::winograd_applies`], and beyond its 4 MiB bound on U from 16 tiles on: 512 x 512
    /// channels on 7x7 maps, ResNet-50's stage 4, with U read once per thread's share of the
    /// output channels and packed (`winograd::tiles`): its two layers at batch 1 2.1 -> 1.8-1.9
    /// ms per step, at batch 16 29.7-30.4 -> 22.9-23.8 (F(2x2), 16 MiB of U each).
    pub fn inference_winograd(&self, x: Dims) -> bool {
        self.winograd_applies(x) || (self.winograd_shape() && Self::f2_tiles(x) >= 16 && !self.f2_weights_within_4mib())
    }

    /// Whether F(2x2)'s transformed weights (16 x Cin x Cout) take at most 4 MiB, the bound of
    /// [`Conv::winograd_applies`].
    fn f2_weights_within_4mib(&self) -> bool {
        16 * self.cin * self.cout * 4 <= 4 << 20
    }

    /// 3x3, stride 1, pad 1, channels in 16s: the convolutions the Winograd kernels compute.
    fn winograd_shape(&self) -> bool {
        self.k == 3 && self.stride == 1 && self.pad == 1 && self.cin.is_multiple_of(16) && self.cout.is_multiple_of(16)
    }

    /// F(2x2) tiles over `x`'s images.
    fn f2_tiles(x: Dims) -> usize {
        x.n * x.h.div_ceil(2) * x.w.div_ceil(2)
    }

    /// The Winograd tile on `path` where [`Conv::winograd_applies`]: F(4x4, 3x3) where the path
    /// allows it and Cin x Cout is at most 64 x 64, else F(2x2, 3x3). The bound is accuracy, not
    /// speed: F(4x4) also runs faster on 128 channels (examples/conv_bench, 28x28 at batch 16:
    /// 6.4 against 8.7 ms), but its rounding there took the detector's layer2 weight gradients
    /// to 1.5e-4 of float64 torchvision's (tests/faster_rcnn_golden.rs holds them to 1e-4;
    /// 3.8e-5 with this bound, 5.5e-5 on F(2x2) alone). A function of the channels only, so the
    /// same for any share of a batch (leaf order's bits).
    #[cfg(target_arch = "x86_64")]
    pub fn winograd_tile(&self, path: KernelPath) -> Tile {
        if path.large_tiles() && self.cin * self.cout <= 64 * 64 { Tile::F4 } else { Tile::F2 }
    }

    /// The Winograd tile of the weights an inference net prepares for `x` ([`Conv::prepare`]):
    /// F(4x4, 3x3) where the path allows it and either [`Conv::winograd_tile`] takes it too (up to
    /// 64 x 64 channels: a forward on unprepared weights, a detector's network parts, then gives
    /// the same bits) or `x` has 64 of its tiles or more, else F(2x2). Beyond
    /// [`Conv::winograd_tile`]'s bound, which is set by a training
    /// gradient's accuracy (the detector's): a forward alone on F(4x4) rounds within 3.3e-6 of
    /// max |y| at 128 channels and 5.8e-6 at 256 (against 1.5e-6 for the direct form: the
    /// float64 tests below). F(4x4) computes 2.25 times fewer products than F(2x2) but reads a U
    /// 2.25 times larger (packed, `winograd_weights`), from memory where it outgrows the caches,
    /// once per thread's share of the channels: with few tiles that read is the layer's time.
    /// Measured, F(2x2) against F(4x4), ms per step of ResNet-50's layers:
    /// - batch 16, on the earlier AMD EPYC (one FMA unit per core): 28x28 128->128 27-28 against 18-21; 14x14
    ///   256->256 41.6-44.3 against 35.7-37.5; on the Zen 5 machine, 7x7 512->512 (64 tiles, U of
    ///   38 MiB) 12.2-12.6 against 8.7-9.3;
    /// - batch 1, Zen 5: 14x14 256->256 (16 tiles) 1.9-2.0 against 2.1-2.3, 28x28 128->128 (49)
    ///   1.0 against 1.1-1.2, 7x7 512->512 (4) 1.0 against 1.5-1.7; 56x56 64->64 (196) 0.9
    ///   against 0.8 (on the earlier EPYC, half the FMA throughput, 14x14 256->256 at batch 1
    ///   measured the other way: 3.4-3.6 against 3.1-3.2, about 1% of its pass);
    /// - between, 7x7 512->512 at batch 4 (16 tiles) 2.9 against 2.5-2.7 and batch 8 5.5 against
    ///   4.7: F(2x2) there costs under 1% of the net.
    #[cfg(target_arch = "x86_64")]
    pub fn inference_tile(&self, path: KernelPath, x: Dims) -> Tile {
        let f4 = self.cin * self.cout <= 64 * 64 || x.n * x.h.div_ceil(4) * x.w.div_ceil(4) >= 64;
        if path.large_tiles() && f4 { Tile::F4 } else { Tile::F2 }
    }

    /// The kernel path for this convolution on `x` when the batch's sums run in `order`. In leaf
    /// order Winograd only where it applies to one leaf: the choice (which changes the bits) is
    /// then the same for every share of the batch, since what applies to a leaf applies to any
    /// number of leaves.
    pub fn path_for(&self, path: KernelPath, x: Dims, order: par::SumOrder) -> KernelPath {
        match (path, order) {
            (KernelPath::Winograd(cpu) | KernelPath::WinogradF2(cpu), par::SumOrder::Leaves { images })
                if !self.winograd_applies(Dims { n: images, ..x }) =>
            {
                KernelPath::Avx512(cpu)
            }
            _ => path,
        }
    }

    /// Number of weights (KH * KW * Cin * Cout).
    pub fn weight_len(&self) -> usize {
        self.k * self.k * self.cin * self.cout
    }

    /// Output shape for an input shape.
    pub fn out_dims(&self, x: Dims) -> Dims {
        let o = |s: usize| (s + 2 * self.pad).saturating_sub(self.k) / self.stride + 1;
        Dims::new(x.n, o(x.h), o(x.w), self.cout)
    }

    /// Multiply-adds for one image of input size (h, w).
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let o = self.out_dims(Dims::new(1, h, w, self.cin));
        (o.h * o.w * self.weight_len()) as u64
    }

    /// Input index range of kernel offsets valid for output coordinate `o`:
    /// returns (first kernel tap, first input coordinate, number of taps).
    #[inline]
    fn taps(&self, o: usize, size: usize) -> (usize, usize, usize) {
        let start = (o * self.stride) as isize - self.pad as isize;
        let k0 = (-start).max(0) as usize;
        let k1 = ((size as isize - start).min(self.k as isize)).max(0) as usize;
        let i0 = (start + k0 as isize) as usize;
        (k0, i0, k1.saturating_sub(k0))
    }

    #[cfg(target_arch = "x86_64")]
    fn gather(&self, cpu: Avx512Cpu, xd: Dims, transposed: bool) -> crate::kernels::avx512::Gather {
        let yd = self.out_dims(xd);
        let (s, d, cs, co) = if transposed { (yd, xd, self.cout, self.cin) } else { (xd, yd, self.cin, self.cout) };
        crate::kernels::avx512::Gather {
            k: self.k,
            stride: self.stride,
            pad: self.pad,
            transposed,
            sh: s.h,
            sw: s.w,
            cs,
            oh: d.h,
            ow: d.w,
            co,
            flat_rows: true,
            tune: crate::kernels::Tuning::current(cpu),
        }
    }

    /// Panics unless the operands fit the geometry: weights, an input of shape
    /// `xd` with `cin` channels, an output of `out_dims(xd)`. The AVX-512
    /// kernels read and write through pointers, so this is checked, not assumed.
    fn check_operands(&self, weights: usize, xd: Dims, input: usize, output: usize) {
        assert!(
            xd.c == self.cin && weights == self.weight_len() && input == xd.len() && output == self.out_dims(xd).len(),
            "{self:?} on input {xd:?}: {weights} weights, {input} input and {output} output values do not fit"
        );
    }

    // ---------------------------------------------------------------- forward
    /// y = conv(x, w).  x: (N,H,W,Cin), y: (N,OH,OW,Cout). Fastest path.
    pub fn forward(&self, w: &[f32], x: &[f32], xd: Dims, y: &mut [f32]) {
        self.forward_with(KernelPath::cached(), w, x, xd, y)
    }

    /// Forward on a chosen kernel path.
    pub fn forward_with(&self, path: KernelPath, w: &[f32], x: &[f32], xd: Dims, y: &mut [f32]) {
        self.forward_fused(path, w, x, xd, y, &Epilogue::default())
    }

    /// y = epilogue(conv(x, w)): per-channel affine (folded BN), residual, ReLU
    /// applied as the outputs are stored.
    pub fn forward_fused(&self, path: KernelPath, w: &[f32], x: &[f32], xd: Dims, y: &mut [f32], epi: &Epilogue) {
        self.forward_prepared(path, w, None, x, xd, y, epi)
    }

    /// The form of `w` that the forward pass on inputs of shape `xd` computes
    /// on `path` before its kernel runs (the Winograd transform, or the packed
    /// blocks of the direct kernel): made once, it spares a pass over the
    /// weights per call when the weights do not change (inference). None where
    /// the kernel reads `w` as it is.
    pub fn prepare(&self, path: KernelPath, w: &[f32], xd: Dims) -> Option<Prepared> {
        assert_eq!(w.len(), self.weight_len(), "{self:?}: {} weights", w.len());
        #[cfg(target_arch = "x86_64")]
        if path.avx512().is_some() {
            if path.winograd() && self.inference_winograd(xd) {
                let tile = self.inference_tile(path, xd);
                let data = winograd_weights(w, self.cin, self.cout, tile).into_vec();
                return Some(Prepared { form: Form::Winograd(tile), xd, data });
            }
            if self.cout.is_multiple_of(16) && self.cin <= ZEROS.len() {
                let (rows, co) = (self.k * self.k * self.cin, self.cout);
                let mut data = vec![0.0; w.len()];
                par::for_chunks(&mut data, 32 * rows, |b, block| {
                    crate::kernels::avx512::pack_block(w, rows, co, b, block)
                });
                return Some(Prepared { form: Form::Packed, xd, data });
            }
        }
        let _ = (path, xd);
        None
    }

    /// [`Conv::forward_fused`] with the weights' prepared form, where made
    /// ([`Conv::prepare`] of these `w`, this path and this input shape; a form
    /// made for another shape is not used).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_prepared(
        &self,
        path: KernelPath,
        w: &[f32],
        prepared: Option<&Prepared>,
        x: &[f32],
        xd: Dims,
        y: &mut [f32],
        epi: &Epilogue,
    ) {
        self.check_operands(w.len(), xd, x.len(), y.len());
        let prepared = prepared.filter(|p| p.xd == xd && p.data.len() >= w.len());
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = path.avx512().filter(|_| epi.fits_simd(self.cout)) {
            let wino_prepared = matches!(prepared, Some(Prepared { form: Form::Winograd(_), .. }));
            if path.winograd() && (wino_prepared || self.winograd_applies(xd)) {
                // the prepared weights' tile, else this path's
                let made;
                let (u, tile) = match prepared {
                    Some(Prepared { form: Form::Winograd(tile), data, .. })
                        if data.len() == tile.positions() * w.len() / 9 && tile.fits(path) =>
                    {
                        (&data[..], *tile)
                    }
                    _ => {
                        let tile = self.winograd_tile(path);
                        made = winograd_weights(w, self.cin, self.cout, tile);
                        (&made[..], tile)
                    }
                };
                run_winograd(cpu, xd, self.cin, self.cout, tile, u, x, y, false, epi);
                return;
            }
            if self.cout.is_multiple_of(16) && self.cin <= ZEROS.len() {
                let (rows, co) = (self.k * self.k * self.cin, self.cout);
                let pack = |b, block: &mut [f32]| crate::kernels::avx512::pack_block(w, rows, co, b, block);
                let prepacked = prepared.filter(|p| p.form == Form::Packed).map(|p| &p.data[..]);
                run_gather(cpu, &self.gather(cpu, xd, false), prepacked, pack, x, y, false, epi);
                return;
            }
        }
        let _ = (path, prepared);
        self.forward_portable(w, x, xd, y, epi)
    }

    fn forward_portable(&self, w: &[f32], x: &[f32], xd: Dims, y: &mut [f32], epi: &Epilogue) {
        let yd = self.out_dims(xd);
        debug_assert_eq!(w.len(), self.weight_len());
        debug_assert_eq!(x.len(), xd.len());
        debug_assert_eq!(y.len(), yd.len());
        let (cin, cout, k) = (self.cin, self.cout, self.k);
        // one task row = one output row (OW * Cout values) of one image
        par::for_rows(
            y,
            yd.w * cout,
            1,
            #[inline(always)]
            |first, chunk| {
                for (r, yrow) in chunk.chunks_exact_mut(yd.w * cout).enumerate() {
                    let row = first + r;
                    let (n, oh) = (row / yd.h, row % yd.h);
                    let (kh0, ih0, nkh) = self.taps(oh, xd.h);
                    for ow in 0..yd.w {
                        let acc = &mut yrow[ow * cout..(ow + 1) * cout];
                        acc.fill(0.0);
                        let (kw0, iw0, nkw) = self.taps(ow, xd.w);
                        for dh in 0..nkh {
                            let xbase = ((n * xd.h + ih0 + dh) * xd.w + iw0) * cin;
                            let wbase = ((kh0 + dh) * k + kw0) * cin * cout;
                            // the taps of one kernel row are contiguous in both x and w
                            let xs = &x[xbase..xbase + nkw * cin];
                            let ws = &w[wbase..wbase + nkw * cin * cout];
                            for (a, wrow) in xs.iter().zip(ws.chunks_exact(cout)) {
                                for (o, wv) in acc.iter_mut().zip(wrow) {
                                    *o += a * wv;
                                }
                            }
                        }
                    }
                    epi.apply(row * yd.w, yrow, cout);
                }
            },
        );
    }

    // --------------------------------------------------------------- backward
    /// dx (=|+=) conv^T(dy, w).  `wt` is scratch of `weight_len()` for the
    /// weights transposed to (KH, KW, Cout, Cin). Fastest path.
    pub fn backward_data(&self, w: &[f32], dy: &[f32], xd: Dims, dx: &mut [f32], accumulate: bool, wt: &mut [f32]) {
        self.backward_data_with(KernelPath::cached(), w, dy, xd, dx, accumulate, wt)
    }

    /// Backward-data on a chosen kernel path.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_data_with(
        &self,
        path: KernelPath,
        w: &[f32],
        dy: &[f32],
        xd: Dims,
        dx: &mut [f32],
        accumulate: bool,
        wt: &mut [f32],
    ) {
        self.check_operands(w.len(), xd, dx.len(), dy.len());
        let (cin, cout, k) = (self.cin, self.cout, self.k);
        // the weights transposed to (KH, KW, Cout, Cin), for the paths that take them so
        let transpose = |wt: &mut [f32]| {
            for t in 0..k * k {
                for i in 0..cin {
                    for o in 0..cout {
                        wt[(t * cout + o) * cin + i] = w[(t * cin + i) * cout + o];
                    }
                }
            }
        };
        let wt = &mut wt[..self.weight_len()];
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = path.avx512() {
            if path.winograd() && self.winograd_applies(xd) {
                transpose(wt);
                // the transposed convolution of a 3x3/1/1 kernel: rotate it by 180 degrees
                let mut wr = Buffer::zeroed(self.weight_len());
                for t in 0..9 {
                    wr[(8 - t) * cout * cin..][..cout * cin].copy_from_slice(&wt[t * cout * cin..][..cout * cin]);
                }
                let tile = self.winograd_tile(path);
                let u = winograd_weights(&wr, cout, cin, tile);
                run_winograd(cpu, xd, cout, cin, tile, &u, dy, dx, accumulate, &Epilogue::default());
                return;
            }
            if cin.is_multiple_of(16) && cout <= ZEROS.len() {
                // packed straight from w: no transposed copy
                let pack =
                    |b, block: &mut [f32]| crate::kernels::avx512::pack_block_transposed(w, k * k, cin, cout, b, block);
                run_gather(cpu, &self.gather(cpu, xd, true), None, pack, dy, dx, accumulate, &Epilogue::default());
                return;
            }
        }
        let _ = path;
        transpose(wt);
        self.backward_data_portable(wt, dy, xd, dx, accumulate)
    }

    fn backward_data_portable(&self, wt: &[f32], dy: &[f32], xd: Dims, dx: &mut [f32], accumulate: bool) {
        let yd = self.out_dims(xd);
        let (cin, cout, k, s) = (self.cin, self.cout, self.k, self.stride);
        // gather form: every dx row is written by one task, no atomics
        par::for_rows(
            dx,
            xd.w * cin,
            1,
            #[inline(always)]
            |first, chunk| {
                for (r, dxrow) in chunk.chunks_exact_mut(xd.w * cin).enumerate() {
                    let row = first + r;
                    let (n, ih) = (row / xd.h, row % xd.h);
                    if !accumulate {
                        dxrow.fill(0.0);
                    }
                    for kh in 0..k {
                        let t = ih as isize + self.pad as isize - kh as isize;
                        if t < 0 || t % s as isize != 0 || (t as usize / s) >= yd.h {
                            continue;
                        }
                        let oh = t as usize / s;
                        for iw in 0..xd.w {
                            let acc = &mut dxrow[iw * cin..(iw + 1) * cin];
                            for kw in 0..k {
                                let u = iw as isize + self.pad as isize - kw as isize;
                                if u < 0 || u % s as isize != 0 || (u as usize / s) >= yd.w {
                                    continue;
                                }
                                let ow = u as usize / s;
                                let g = &dy[((n * yd.h + oh) * yd.w + ow) * cout..][..cout];
                                let wb = &wt[(kh * k + kw) * cout * cin..][..cout * cin];
                                for (gv, wrow) in g.iter().zip(wb.chunks_exact(cin)) {
                                    for (a, wv) in acc.iter_mut().zip(wrow) {
                                        *a += gv * wv;
                                    }
                                }
                            }
                        }
                    }
                }
            },
        );
    }

    /// dw = sum over the batch of x (x) dy.  `partials`: one buffer per task (its length, at
    /// least one) or per leaf of `order` (grown to as many as needed), each at least
    /// `weight_len()`; the parts' sums are combined in `order` into dw. Fastest path.
    pub fn backward_weight(
        &self,
        x: &[f32],
        xd: Dims,
        dy: &[f32],
        dw: &mut [f32],
        partials: &mut Vec<Vec<f32>>,
        order: par::SumOrder,
    ) {
        self.backward_weight_with(KernelPath::cached(), x, xd, dy, dw, partials, order)
    }

    /// Weight gradient on a chosen kernel path.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_weight_with(
        &self,
        path: KernelPath,
        x: &[f32],
        xd: Dims,
        dy: &[f32],
        dw: &mut [f32],
        partials: &mut Vec<Vec<f32>>,
        order: par::SumOrder,
    ) {
        self.check_operands(dw.len(), xd, x.len(), dy.len());
        let yd = self.out_dims(xd);
        let (cin, cout, k) = (self.cin, self.cout, self.k);
        let wl = self.weight_len();
        let tasks = order.image_parts(xd.n, partials.len());
        // one partial per part: grown to as many as the leaves need
        while partials.len() < tasks {
            partials.push(vec![0.0; wl]);
        }
        partials.iter_mut().take(tasks).filter(|p| p.len() < wl).for_each(|p| p.resize(wl, 0.0));
        #[cfg(target_arch = "x86_64")]
        let fast = path.avx512().filter(|_| cout.is_multiple_of(16)).map(|cpu| (cpu, self.gather(cpu, xd, false)));
        // F(4x4) tiles up to 32 x 32 channels; on 64 x 64 its transform-domain sums (36 x Cin x
        // Cout per thread) outgrow the cache: examples/conv_bench at batch 128, against the
        // F(2x2) or direct form, 8x8 64->64 2.2 against 1.6 ms, 16x16 32->32 1.6 against 2.1,
        // 32x32 16->16 2.4 against 2.7 (direct: on 16 input channels F(2x2)'s transforms
        // cost more than they save, 3.13 vs 2.86 ms on ResNet-20's first stage)
        #[cfg(target_arch = "x86_64")]
        let tile = if self.cin * self.cout <= 32 * 32 { self.winograd_tile(path) } else { Tile::F2 };
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = path.avx512()
            && path.winograd()
            && self.winograd_applies(xd)
            && (cin >= 32 || tile == Tile::F4)
        {
            use crate::kernels::winograd::{Wino, weight_grad_finish, weight_grad_tiles};
            let g = Wino { h: xd.h, w: xd.w, cin, cout, tile };
            let np = tile.positions();
            let total = xd.n * g.tiles_per_image();
            // one transform-domain partial per thread (a share of the tiles), or per leaf (its
            // images' tiles)
            let (parts, per) = match order {
                par::SumOrder::Threads => (par::threads(), total.div_ceil(par::threads())),
                par::SumOrder::Leaves { images } => (xd.n.div_ceil(images), images * g.tiles_per_image()),
            };
            let mut dus = Buffers::zeroed(parts, np * cin * cout);
            par::for_partials(
                &mut dus,
                total,
                per,
                #[inline(always)]
                |tiles, du| {
                    // SAFETY: `cpu` proves the CPU features; x and dy were checked
                    // against xd and its output shape, which `total` tiles cover.
                    unsafe { weight_grad_tiles(cpu, &g, x, dy, tiles, du) }
                },
            );
            match order {
                par::SumOrder::Threads => {
                    order.combine(&mut dus, np * cin * cout);
                    weight_grad_finish(&dus[0], cin, cout, tile, dw);
                }
                // each leaf's gradient in the weights' domain, then the leaves' tree (the transform
                // back is not exact: a sum of transformed sums would not be the halves' sum)
                par::SumOrder::Leaves { .. } => {
                    for (du, p) in dus.iter().zip(partials.iter_mut()) {
                        weight_grad_finish(du, cin, cout, tile, &mut p[..wl]);
                    }
                    order.combine(&mut partials[..parts], wl);
                    dw.copy_from_slice(&partials[0][..wl]);
                }
            }
            return;
        }
        let _ = path;
        #[cfg(target_arch = "x86_64")]
        if let Some((cpu, geometry)) = &fast
            && tasks == 1
            && cin >= 16
        {
            // one part (one image, or one leaf): split its input channels across the threads
            // instead; each value is the one task's sum in the same order
            let parts = par::threads().min(cin / 8);
            if parts > 1 {
                let bound = |t: usize| if t == parts { cin } else { t * cin / parts / 8 * 8 };
                let mut work: Vec<(std::ops::Range<usize>, Vec<&mut [f32]>)> =
                    (0..parts).map(|t| (bound(t)..bound(t + 1), Vec::with_capacity(k * k))).collect();
                dw.fill(0.0);
                for tap in dw.chunks_exact_mut(cin * cout) {
                    let mut rest = tap;
                    for (channels, taps) in work.iter_mut() {
                        let (mine, more) = std::mem::take(&mut rest).split_at_mut(channels.len() * cout);
                        taps.push(mine);
                        rest = more;
                    }
                }
                par::for_each_mut(&mut work, |_, (channels, taps)| {
                    // SAFETY: `cpu` proves the CPU features; x and dy were checked against xd
                    // and its output shape; cin >= 16, so not the few-channel path; each task's
                    // taps hold its channels' rows of every tap.
                    unsafe {
                        crate::kernels::avx512::wgrad_channels(*cpu, geometry, xd.n, x, dy, channels.clone(), taps)
                    }
                });
                return;
            }
        }
        par::for_partials(
            &mut partials[..tasks],
            xd.n,
            order.image_share(xd.n, tasks),
            #[inline(always)]
            |imgs, p| {
                let p = &mut p[..wl];
                #[cfg(target_arch = "x86_64")]
                if let Some((cpu, geometry)) = &fast {
                    p.fill(0.0);
                    let (xi, yi) = (xd.h * xd.w * cin, yd.h * yd.w * cout);
                    let (x, dy) = (&x[imgs.start * xi..imgs.end * xi], &dy[imgs.start * yi..imgs.end * yi]);
                    // SAFETY: `cpu` proves the CPU features; the task's images of x and
                    // dy (checked against xd) and p (wl values) fit the geometry.
                    unsafe { crate::kernels::avx512::wgrad_images(*cpu, geometry, imgs.len(), x, dy, p) };
                    return;
                }
                p.fill(0.0);
                for n in imgs {
                    for oh in 0..yd.h {
                        let (kh0, ih0, nkh) = self.taps(oh, xd.h);
                        for ow in 0..yd.w {
                            let (kw0, iw0, nkw) = self.taps(ow, xd.w);
                            let g = &dy[((n * yd.h + oh) * yd.w + ow) * cout..][..cout];
                            for dh in 0..nkh {
                                let xbase = ((n * xd.h + ih0 + dh) * xd.w + iw0) * cin;
                                let wbase = ((kh0 + dh) * k + kw0) * cin * cout;
                                let xs = &x[xbase..xbase + nkw * cin];
                                let ps = &mut p[wbase..wbase + nkw * cin * cout];
                                for (a, prow) in xs.iter().zip(ps.chunks_exact_mut(cout)) {
                                    for (d, gv) in prow.iter_mut().zip(g) {
                                        *d += a * gv;
                                    }
                                }
                            }
                        }
                    }
                }
            },
        );
        order.combine(&mut partials[..tasks], wl);
        dw.copy_from_slice(&partials[0][..wl]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, rand_vec};

    /// Direct definition, used as the reference.
    fn naive(c: &Conv, w: &[f32], x: &[f32], xd: Dims) -> Vec<f32> {
        definition(c, w, x, xd).into_iter().map(|v| v as f32).collect()
    }

    /// The definition in float64: products and sums.
    fn definition(c: &Conv, w: &[f32], x: &[f32], xd: Dims) -> Vec<f64> {
        let yd = c.out_dims(xd);
        let mut y = vec![0.0; yd.len()];
        for n in 0..xd.n {
            for oh in 0..yd.h {
                for ow in 0..yd.w {
                    for o in 0..c.cout {
                        let mut s = 0.0f64;
                        for kh in 0..c.k {
                            for kw in 0..c.k {
                                let ih = (oh * c.stride + kh) as isize - c.pad as isize;
                                let iw = (ow * c.stride + kw) as isize - c.pad as isize;
                                if ih < 0 || iw < 0 || ih >= xd.h as isize || iw >= xd.w as isize {
                                    continue;
                                }
                                for i in 0..c.cin {
                                    s += x[((n * xd.h + ih as usize) * xd.w + iw as usize) * c.cin + i] as f64
                                        * w[((kh * c.k + kw) * c.cin + i) * c.cout + o] as f64;
                                }
                            }
                        }
                        y[((n * yd.h + oh) * yd.w + ow) * c.cout + o] = s;
                    }
                }
            }
        }
        y
    }

    type Case = (usize, usize, usize, usize, usize, usize, usize, usize);
    const CASES: &[Case] = &[
        // n, h, w, cin, cout, k, stride, pad
        (2, 7, 5, 3, 4, 3, 1, 1),
        (2, 9, 8, 5, 3, 3, 2, 1),
        (1, 11, 9, 2, 3, 7, 2, 3),
        (3, 5, 6, 4, 5, 1, 1, 0),
        (2, 7, 7, 3, 6, 1, 2, 0),
        (1, 4, 4, 2, 2, 3, 1, 0),
        // channel counts that take the AVX-512 path (multiples of 16), odd sizes, tails
        (2, 9, 7, 16, 32, 3, 2, 1),
        (1, 8, 8, 32, 16, 3, 1, 1),
        (2, 7, 7, 16, 48, 1, 2, 0),
        (1, 14, 14, 16, 16, 3, 1, 1),
        (2, 11, 10, 3, 16, 7, 2, 3),
        (1, 5, 5, 48, 32, 1, 1, 0),
        // enough 2x2 tiles (128) for the Winograd path, odd size, 32 input channels
        (2, 15, 15, 32, 16, 3, 1, 1),
    ];

    #[test]
    fn forward_matches_definition() {
        for (i, &(n, h, w, ci, co, k, s, p)) in CASES.iter().enumerate() {
            let c = Conv::new(ci, co, k, s, p);
            let xd = Dims::new(n, h, w, ci);
            let x = rand_vec(xd.len(), i as u64);
            let wt = rand_vec(c.weight_len(), 100 + i as u64);
            let r = naive(&c, &wt, &x, xd);
            for path in KernelPath::all_supported() {
                let mut y = vec![0.0; c.out_dims(xd).len()];
                c.forward_with(path, &wt, &x, xd, &mut y);
                for (a, b) in y.iter().zip(&r) {
                    assert!((a - b).abs() < 1e-4, "case {i} {path:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (i, &(n, h, w, ci, co, k, s, p)) in CASES.iter().enumerate() {
            let c = Conv::new(ci, co, k, s, p);
            let xd = Dims::new(n, h, w, ci);
            let yd = c.out_dims(xd);
            let x = rand_vec(xd.len(), 10 + i as u64);
            let wts = rand_vec(c.weight_len(), 20 + i as u64);
            let proj = rand_vec(yd.len(), 30 + i as u64); // loss = <y, proj>
            let loss = |x: &[f32], w: &[f32]| -> f64 {
                let mut y = vec![0.0; yd.len()];
                c.forward(w, x, xd, &mut y);
                y.iter().zip(&proj).map(|(a, b)| (*a as f64) * (*b as f64)).sum()
            };
            for path in KernelPath::all_supported() {
                let mut dx = vec![1.0; xd.len()];
                let mut scratch = vec![0.0; c.weight_len()];
                c.backward_data_with(path, &wts, &proj, xd, &mut dx, false, &mut scratch);
                let mut dw = vec![0.0; c.weight_len()];
                let mut parts = vec![vec![0.0; c.weight_len()]; 3];
                c.backward_weight_with(path, &x, xd, &proj, &mut dw, &mut parts, par::SumOrder::Threads);
                let name = format!("conv case {i} {path:?}");
                check_grad(&format!("{name} dx"), &x, &dx, 1e-2, 2e-3, |xp| loss(xp, &wts));
                check_grad(&format!("{name} dw"), &wts, &dw, 1e-2, 2e-3, |wp| loss(&x, wp));
                // accumulate mode adds to what is there
                let mut dx2 = vec![1.0; xd.len()];
                c.backward_data_with(path, &wts, &proj, xd, &mut dx2, true, &mut scratch);
                for (a, b) in dx2.iter().zip(&dx) {
                    assert!((a - b - 1.0).abs() < 1e-5, "{name}: accumulate");
                }
            }
        }
    }

    /// A forward block whose pixels see every kernel column runs a kernel row as one tap of
    /// k x cs values (`flat_row`, the stems): the same products in the same order as a tap per
    /// (kh, kw), so the same bits, with every epilogue; blocks at the borders keep the taps.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn kernel_rows_as_one_tap_are_the_same_bits() {
        let Some(cpu) = KernelPath::all_supported().into_iter().find_map(|p| p.avx512()) else {
            return; // no AVX-512 here: the path does not exist
        };
        // n, h, w, cin, cout, k, stride, pad: the ImageNet stem's geometry with blocks inside and
        // at both borders, the CIFAR stem's, and a partial last block
        for (i, &(n, h, w, ci, co, k, s, p)) in
            [(1, 9, 40, 3, 32, 7, 2, 3), (2, 6, 32, 3, 16, 3, 1, 1), (1, 5, 27, 5, 48, 3, 1, 1)].iter().enumerate()
        {
            let c = Conv::new(ci, co, k, s, p);
            let xd = Dims::new(n, h, w, ci);
            let yd = c.out_dims(xd);
            let x = rand_vec(xd.len(), 300 + i as u64);
            let wt = rand_vec(c.weight_len(), 310 + i as u64);
            let (scale, shift) = (rand_vec(co, 320 + i as u64), rand_vec(co, 330 + i as u64));
            let residual = rand_vec(yd.len(), 340 + i as u64);
            let epilogues = [
                Epilogue::default(),
                Epilogue { affine: Some((&scale, &shift)), relu: true, ..Default::default() },
                Epilogue {
                    affine: Some((&scale, &shift)),
                    residual: Some(crate::kernels::ShortcutSrc::Identity(&residual)),
                    relu: true,
                },
            ];
            let g = c.gather(cpu, xd, false);
            let rows = k * k * ci;
            let pack = |b, block: &mut [f32]| crate::kernels::avx512::pack_block(&wt, rows, co, b, block);
            for (e, epi) in epilogues.iter().enumerate() {
                let run = |flat_rows: bool| {
                    let mut y = vec![0.5; yd.len()];
                    let g = crate::kernels::avx512::Gather { flat_rows, ..g };
                    run_gather(cpu, &g, None, pack, &x, &mut y, e == 0, epi);
                    y
                };
                let (flat, taps) = (run(true), run(false));
                assert!(
                    flat.iter().zip(&taps).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "case {i}, epilogue {e}: kernel rows as one tap changed the bits"
                );
            }
        }
    }

    /// The kernels read through pointers: operands that do not fit the geometry
    /// are refused before any of them runs, on every path.
    #[test]
    fn operands_that_do_not_fit_the_geometry_are_refused() {
        let c = Conv::new(16, 16, 3, 1, 1);
        let xd = Dims::new(2, 8, 8, 16);
        let w = vec![0.0; c.weight_len()];
        for path in KernelPath::all_supported() {
            let short = std::panic::catch_unwind(|| {
                let (x, mut y) = (vec![0.0; xd.len() - 1], vec![0.0; c.out_dims(xd).len()]);
                c.forward_with(path, &w, &x, xd, &mut y)
            });
            let wide = std::panic::catch_unwind(|| {
                let (x, mut dx) = (vec![0.0; xd.len()], vec![0.0; xd.len()]);
                let mut scratch = vec![0.0; c.weight_len()];
                c.backward_data_with(path, &w, &x, Dims { c: 32, ..xd }, &mut dx, false, &mut scratch)
            });
            assert!(short.is_err() && wide.is_err(), "{path:?}");
        }
    }

    /// The F(4x4) forward's error bound, as a fraction of max |y|: it rounds more with more input
    /// channels (measured 3.3e-6 at 128, 5.8e-6 at 256, 6.0e-6 at 512).
    fn f4_bound(cin: usize) -> f64 {
        if cin <= 192 { 5e-6 } else { 8e-6 }
    }

    /// max |a - b| against the float64 definition, NaN (a value never written) included.
    fn worst(a: &[f32], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(p, q)| (*p as f64 - q).abs()).fold(0.0f64, |m, e| if e > m || e.is_nan() { e } else { m })
    }

    /// [y, dx, dw] of `c` on `path`: the forward through `epi`, backward-data added to a copy of x
    /// (accumulate), the weight gradient over two partials in thread order.
    fn three_passes(
        c: &Conv,
        path: KernelPath,
        w: &[f32],
        x: &[f32],
        xd: Dims,
        dy: &[f32],
        epi: &Epilogue,
    ) -> [Vec<f32>; 3] {
        let mut y = vec![0.0; c.out_dims(xd).len()];
        c.forward_fused(path, w, x, xd, &mut y, epi);
        let mut dx = x.to_vec();
        let mut wt = vec![0.0; c.weight_len()];
        c.backward_data_with(path, w, dy, xd, &mut dx, true, &mut wt);
        let mut dw = vec![0.0; c.weight_len()];
        let mut parts = vec![vec![0.0; c.weight_len()]; 2];
        c.backward_weight_with(path, x, xd, dy, &mut dw, &mut parts, par::SumOrder::Threads);
        [y, dx, dw]
    }

    /// The fast path computes what the portable one does, on the network shapes, the forward
    /// with a block's epilogue.
    #[test]
    fn paths_agree_on_resnet_shapes() {
        let paths = KernelPath::all_supported();
        let shapes: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
            // h, cin, cout, k, stride, pad, n
            (8, 128, 128, 3, 1, 1, 4),
            (16, 64, 128, 3, 2, 1, 4),
            (16, 64, 128, 1, 2, 0, 4),
            (32, 16, 16, 3, 1, 1, 2),
            (14, 256, 64, 1, 1, 0, 2),
            (21, 3, 64, 7, 2, 3, 2),
            // Winograd-sized (>= 128 tiles): odd edges, 32+ input channels (its weight gradient),
            // F(4x4) tiles cut by the edges (13 = 3 x 4 + 1) in all three passes
            (15, 32, 48, 3, 1, 1, 3),
            (13, 32, 32, 3, 1, 1, 3),
            (16, 64, 64, 3, 1, 1, 2),
            // batch 1 on small maps: rows are split by channel blocks across threads
            (7, 64, 128, 3, 1, 1, 1),
            (7, 128, 96, 1, 1, 0, 1),
            (3, 32, 64, 3, 1, 1, 1),
            // the weight gradient runs in chunks of output rows (several here)
            (56, 64, 256, 1, 1, 0, 1),
            // outputs of 4 MiB and more: written with non-temporal stores (y and dx)
            (64, 256, 256, 1, 1, 0, 1),
            (56, 32, 64, 3, 2, 1, 1),
            // the stem: 3 input channels, the flattened-tap weight gradient
            (40, 3, 64, 7, 2, 3, 1),
            // split by output channels (weights outweigh the activations), a 16-wide last block
            (5, 64, 80, 3, 1, 1, 1),
            (4, 512, 208, 1, 2, 0, 2),
        ];
        for &(h, ci, co, k, st, pd, n) in shapes {
            let c = Conv::new(ci, co, k, st, pd);
            let xd = Dims::new(n, h, h, ci);
            let yd = c.out_dims(xd);
            let x = rand_vec(xd.len(), 1);
            let w = rand_vec(c.weight_len(), 2);
            let dy = rand_vec(yd.len(), 3);
            // the forward through a block's whole epilogue: folded BN, residual, ReLU
            let (scale, shift, residual) = (rand_vec(co, 4), rand_vec(co, 5), rand_vec(yd.len(), 6));
            let epi = Epilogue {
                affine: Some((&scale, &shift)),
                residual: Some(crate::kernels::ShortcutSrc::Identity(&residual)),
                relu: true,
            };
            let run = |path: KernelPath| three_passes(&c, path, &w, &x, xd, &dy, &epi);
            let reference = run(KernelPath::Portable);
            for &path in &paths[1..] {
                for (what, (a, b)) in ["y", "dx", "dw"].iter().zip(run(path).iter().zip(&reference)) {
                    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let err = a.iter().zip(b).fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
                    assert!(err <= 1e-5 * scale, "{path:?} {what} h{h} {ci}->{co} k{k}s{st}: {err} vs scale {scale}");
                }
            }
        }
    }

    /// An inference net's prepared weights carry their Winograd tile: F(4x4) up to 256 x 256
    /// channels on the default path (beyond training's 64 x 64), F(2x2) above and on the F(2x2)
    /// path; the forward on them is the convolution within F(4x4)'s rounding, also when handed to
    /// a path that does not run their tile (it then transforms the weights for its own).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn prepared_weights_carry_their_winograd_tile() {
        let Some(cpu) = KernelPath::best_supported().avx512() else {
            return; // no Winograd kernels here
        };
        let (wino, f2) = (KernelPath::Winograd(cpu), KernelPath::WinogradF2(cpu));
        // 16x16 images (64 F(2x2) tiles each) or 14x14 (49), where Winograd applies; and 512 x 512
        // channels on 7x7 images (16 F(2x2) tiles each, 16 MiB of U) and 256 x 512 (8 MiB), where
        // it applies in inference alone. F(4x4) from 64 of its tiles on: 16 per 16x16 or 14x14
        // image, 4 per 7x7
        let cases = [
            (128, 128, 16, 4, Tile::F4),
            (64, 128, 16, 2, Tile::F2),
            (256, 256, 14, 4, Tile::F4),
            (256, 256, 14, 1, Tile::F2),
            (256, 512, 16, 2, Tile::F2),
            (512, 512, 7, 1, Tile::F2),
            (512, 512, 7, 16, Tile::F4),
        ];
        for (ci, co, side, n, on_wino) in cases {
            let c = Conv::new(ci, co, 3, 1, 1);
            let xd = Dims::new(n, side, side, ci);
            assert!(c.inference_winograd(xd));
            assert_eq!(c.winograd_applies(xd), ci * co <= 256 * 256); // U within 4 MiB
            let (x, w) = (rand_vec(xd.len(), 7), rand_vec(c.weight_len(), 8));
            let want = definition(&c, &w, &x, xd);
            let top = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (path, tile) in [(wino, on_wino), (f2, Tile::F2)] {
                let p = c.prepare(path, &w, xd).expect("prepared");
                assert_eq!(p.form, Form::Winograd(tile), "{ci}->{co} on {path:?}");
                // and the forward computes on them (zeroed, they give zeros)
                let zeroed = Prepared { data: vec![0.0; p.data.len()], ..p.clone() };
                let mut y = vec![f32::NAN; c.out_dims(xd).len()];
                c.forward_prepared(path, &w, Some(&zeroed), &x, xd, &mut y, &Epilogue::default());
                assert!(y.iter().all(|v| *v == 0.0), "{ci}->{co} on {path:?}: the prepared weights were not used");
                for run_on in [path, f2] {
                    let mut y = vec![f32::NAN; c.out_dims(xd).len()];
                    c.forward_prepared(run_on, &w, Some(&p), &x, xd, &mut y, &Epilogue::default());
                    let err = worst(&y, &want);
                    let bound = f4_bound(ci);
                    assert!(err <= bound * top, "{ci}->{co} {tile:?} on {run_on:?}: {:.2e} of max", err / top);
                }
            }
        }
    }

    /// The per-CPU tuning (kernels/tuning.rs: the L2 the blocks are cut for, the 8- or 14-pixel
    /// micro-kernel) moves where blocks start, never the order of a sum: every tuning gives the
    /// same bits in all three passes, with the whole inference epilogue. Cases: widths 14 divides,
    /// with source channels within the 14-pixel bound and beyond it; an odd width; a stride; the
    /// stem's flat rows (and its few-channel weight gradient); weights cut into L2 chunks; one image
    /// (split by channels across the threads).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_tuning_gives_the_same_bits() {
        use crate::kernels::{Pixels, Tuning};
        let Some(cpu) = KernelPath::best_supported().avx512() else {
            return; // the tuning is the AVX-512 kernels'
        };
        let tunings = [
            Tuning::BASELINE,
            Tuning { l2: 128 << 10, pixels: Pixels::Fourteen },
            Tuning { l2: 4 << 20, pixels: Pixels::Fourteen },
            Tuning { l2: 256 << 10, pixels: Pixels::Eight },
        ];
        let shapes: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
            // h, cin, cout, k, stride, pad, n
            (28, 32, 64, 1, 1, 0, 2),
            (14, 320, 64, 1, 1, 0, 1),
            (14, 48, 96, 3, 1, 1, 2),
            (15, 32, 48, 3, 1, 1, 1),
            (56, 16, 32, 3, 2, 1, 1),
            (56, 3, 32, 7, 2, 3, 1),
            (28, 640, 96, 1, 1, 0, 1),
        ];
        for &(h, ci, co, k, st, pd, n) in shapes {
            let c = Conv::new(ci, co, k, st, pd);
            let xd = Dims::new(n, h, h, ci);
            let yd = c.out_dims(xd);
            let (x, w, dy) = (rand_vec(xd.len(), 1), rand_vec(c.weight_len(), 2), rand_vec(yd.len(), 3));
            let (scale, shift, residual) = (rand_vec(co, 4), rand_vec(co, 5), rand_vec(yd.len(), 6));
            let epi = Epilogue {
                affine: Some((&scale, &shift)),
                residual: Some(crate::kernels::ShortcutSrc::Identity(&residual)),
                relu: true,
            };
            let path = KernelPath::Avx512(cpu);
            let run = |t: Tuning| Tuning::with(t, || three_passes(&c, path, &w, &x, xd, &dy, &epi));
            let reference = run(tunings[0]);
            for &t in &tunings[1..] {
                for (what, (a, b)) in ["y", "dx", "dw"].iter().zip(run(t).iter().zip(&reference)) {
                    let same = a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(same, "{t}: {what} of h{h} {ci}->{co} k{k}s{st} n{n} differs from {}", tunings[0]);
                }
            }
        }
    }

    /// One image's weight gradient (one task: a detector's prefix and RPN head) is split over its
    /// input channels across the threads: the same bits on 1, 2 and 3 threads, in both sum orders,
    /// and the sums of the definition (f64) within float rounding.
    #[test]
    fn one_image_weight_gradients_split_by_input_channel_are_the_same_bits() {
        // h, w, cin, cout, k, stride, pad
        let shapes =
            [(9, 13, 64, 32, 3, 1, 1), (10, 7, 24, 48, 1, 2, 0), (6, 6, 16, 16, 3, 2, 1), (5, 8, 40, 64, 1, 1, 0)];
        for path in KernelPath::all_supported() {
            for &(h, w, ci, co, k, st, pd) in &shapes {
                let c = Conv::new(ci, co, k, st, pd);
                let xd = Dims::new(1, h, w, ci);
                let yd = c.out_dims(xd);
                let (x, dy) = (rand_vec(xd.len(), 7), rand_vec(yd.len(), 8));
                let run = |threads: usize, order: par::SumOrder| {
                    let mut dw = vec![f32::NAN; c.weight_len()];
                    let mut parts = vec![];
                    par::with_threads(threads, || {
                        c.backward_weight_with(path, &x, xd, &dy, &mut dw, &mut parts, order)
                    })
                    .unwrap();
                    dw
                };
                let one = run(1, par::SumOrder::Threads);
                for (threads, order) in
                    [(2, par::SumOrder::Threads), (3, par::SumOrder::Threads), (2, par::SumOrder::Leaves { images: 1 })]
                {
                    let got = run(threads, order);
                    let same = got.iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{path:?} {h}x{w} {ci}->{co} k{k}/{st}: {threads} threads, {order:?}");
                }
                // the definition: dw[kh][kw][i][o] = sum over output pixels of x[source][i] dy[pixel][o]
                let mut reference = vec![0.0f64; c.weight_len()];
                for oh in 0..yd.h {
                    for ow in 0..yd.w {
                        for kh in 0..k {
                            for kw in 0..k {
                                let (ih, iw) =
                                    ((oh * st + kh) as isize - pd as isize, (ow * st + kw) as isize - pd as isize);
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                                    continue;
                                }
                                for i in 0..ci {
                                    let xv = x[(ih as usize * w + iw as usize) * ci + i] as f64;
                                    for o in 0..co {
                                        reference[((kh * k + kw) * ci + i) * co + o] +=
                                            xv * dy[(oh * yd.w + ow) * co + o] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
                let worst = one.iter().zip(&reference).fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
                assert!(worst < 1e-4, "{path:?} {h}x{w} {ci}->{co} k{k}/{st}: {worst} from the definition");
            }
        }
    }

    /// In leaf order the weight gradient is a function of the batch alone: the same bits on 1 and
    /// 3 threads, and the sum of the two halves' gradients (each half a subtree of leaves) is the
    /// whole batch's, bit for bit, on every kernel path (exact data-parallel steps rely on it).
    #[test]
    fn leaf_order_weight_gradients_do_not_depend_on_threads_or_the_split() {
        let shapes = [
            // h, cin, cout, k, stride, pad, n (leaves of 2 images)
            (16, 32, 32, 3, 1, 1, 8),
            (8, 64, 64, 3, 1, 1, 16),
            (8, 16, 32, 3, 2, 1, 8),
            (8, 32, 64, 1, 1, 0, 8),
            (12, 3, 16, 7, 2, 3, 4),
            (16, 3, 16, 3, 1, 1, 8),
            (16, 1, 16, 3, 1, 1, 8),
            // small maps, weights outweigh the activations: split by output channels
            (5, 64, 80, 3, 1, 1, 4),
            (4, 256, 128, 1, 1, 0, 4),
        ];
        let order = par::SumOrder::Leaves { images: 2 };
        for path in KernelPath::all_supported() {
            for &(h, ci, co, k, st, pd, n) in &shapes {
                let c = Conv::new(ci, co, k, st, pd);
                let xd = Dims::new(n, h, h, ci);
                let yd = c.out_dims(xd);
                let (x, dy) = (rand_vec(xd.len(), 4), rand_vec(yd.len(), 5));
                let dw = |images: std::ops::Range<usize>, threads: usize| {
                    let d = Dims { n: images.len(), ..xd };
                    let (xi, yi) = (xd.len() / n, yd.len() / n);
                    let (x, dy) = (&x[images.start * xi..images.end * xi], &dy[images.start * yi..images.end * yi]);
                    let mut dw = vec![0.0; c.weight_len()];
                    let mut parts = vec![];
                    par::with_threads(threads, || c.backward_weight_with(path, x, d, dy, &mut dw, &mut parts, order))
                        .unwrap();
                    dw
                };
                // forward and backward-data are per image: a half's outputs are the whole's rows
                let (path_whole, path_half) =
                    (c.path_for(path, xd, order), c.path_for(path, Dims { n: n / 2, ..xd }, order));
                assert_eq!(path_whole, path_half, "{path:?} h{h} {ci}->{co} k{k}: one path for any share");
                let w = rand_vec(c.weight_len(), 6);
                let y_dx = |images: std::ops::Range<usize>| {
                    let d = Dims { n: images.len(), ..xd };
                    let (xi, yi) = (xd.len() / n, yd.len() / n);
                    let mut y = vec![0.0; images.len() * yi];
                    c.forward_with(path_whole, &w, &x[images.start * xi..images.end * xi], d, &mut y);
                    let mut dx = vec![0.0; images.len() * xi];
                    let mut wt = vec![0.0; c.weight_len()];
                    let dy = &dy[images.start * yi..images.end * yi];
                    c.backward_data_with(path_whole, &w, dy, d, &mut dx, false, &mut wt);
                    [y, dx].concat()
                };
                let (yw, yh) = (y_dx(0..n), [y_dx(0..n / 2), y_dx(n / 2..n)]);
                let (xl, yl) = (xd.len() / 2, yd.len() / 2);
                assert!(
                    yh[0][..yl] == yw[..yl] && yh[1][..yl] == yw[yl..2 * yl],
                    "{path:?} h{h} {ci}->{co} k{k}: forward of a half differs"
                );
                assert!(
                    yh[0][yl..] == yw[2 * yl..2 * yl + xl] && yh[1][yl..] == yw[2 * yl + xl..],
                    "{path:?} h{h} {ci}->{co} k{k}: backward-data of a half differs"
                );
                let whole = dw(0..n, 1);
                let what = format!("{path:?} h{h} {ci}->{co} k{k}");
                assert!(dw(0..n, 3) == whole, "{what}: 3 threads differ from 1");
                let (a, b) = (dw(0..n / 2, 2), dw(n / 2..n, 1));
                let halves: Vec<f32> = a.iter().zip(&b).map(|(p, q)| p + q).collect();
                assert!(halves == whole, "{what}: the halves' sum differs from the whole batch's");
            }
        }
    }

    /// Both Winograd tiles against the definition in float64, whatever `winograd_tile` picks:
    /// odd edges (partial tiles), accumulate, and the whole epilogue (folded BN, residual,
    /// ReLU). The bounds hold each tile to its rounding (max |error| / max |y|; measured
    /// F(2x2) 4.5e-7, F(4x4) 3.3e-6 at 128 channels, where the points 0, +-1, +-2 gave 8.3e-6).
    #[test]
    fn winograd_tiles_match_the_definition_in_float64() {
        use crate::kernels::winograd::Tile;
        use crate::kernels::{Epilogue, ShortcutSrc};
        let Some(cpu) = KernelPath::all_supported().into_iter().find_map(|p| p.avx512()) else {
            eprintln!("this CPU lacks AVX-512: no Winograd kernels to test");
            return;
        };
        // h, w, cin, cout, n; U of 1 MiB and more runs in super-blocks (winograd::tiles): 128 x 128
        // (F(2x2) 1 MiB, F(4x4) 2.3 MiB); 192 -> 96 on the GEMM for any channel count, with few
        // tiles (a task per thread: on shares of the output channels, or of the tiles where the
        // channels are too few, 512 -> 48) and with tasks of several super-blocks
        let cases = [
            (15, 13, 32, 48, 3),
            (8, 8, 16, 16, 8),
            (16, 16, 64, 64, 2),
            (28, 28, 128, 128, 1),
            (9, 11, 192, 96, 2),
            (9, 11, 512, 48, 1),
            (48, 48, 192, 96, 2),
        ];
        for &(h, w, ci, co, n) in &cases {
            let xd = Dims::new(n, h, w, ci);
            let yd = Dims::new(n, h, w, co);
            let (x, wt) = (rand_vec(xd.len(), 1), rand_vec(9 * ci * co, 2));
            let (prior, res) = (rand_vec(yd.len(), 3), rand_vec(yd.len(), 4));
            let (scale, shift) = (rand_vec(co, 5), rand_vec(co, 6));
            let conv = definition(&Conv::new(ci, co, 3, 1, 1), &wt, &x, xd);
            for tile in [Tile::F2, Tile::F4] {
                let u = winograd_weights(&wt, ci, co, tile);
                let bound = if tile == Tile::F2 { 1e-6 } else { f4_bound(ci) };
                // plain
                let mut y = vec![f32::NAN; yd.len()];
                run_winograd(cpu, xd, ci, co, tile, &u, &x, &mut y, false, &Epilogue::default());
                let top = conv.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let err = worst(&y, &conv);
                assert!(err <= bound * top, "{tile:?} {h}x{w} {ci}->{co}: {:.2e} of max", err / top);
                // the same bits as every tile and channel in one call: however the threads share
                // the work, each output is the same sums in the same order
                let g = crate::kernels::winograd::Wino { h, w, cin: ci, cout: co, tile };
                let mut one = vec![f32::NAN; yd.len()];
                let l2 = crate::kernels::Tuning::current(cpu).l2;
                // SAFETY: cpu proves AVX-512; x and one are (n, h, w, ci / co), u is this tile's.
                unsafe {
                    let all = 0..n * g.tiles_per_image();
                    crate::kernels::winograd::tiles(
                        cpu,
                        &g,
                        &u,
                        &x,
                        one.as_mut_ptr(),
                        all,
                        0..co,
                        l2,
                        false,
                        false,
                        &Epilogue::default(),
                    )
                };
                assert!(one == y, "{tile:?} {h}x{w} {ci}->{co}: the threads' shares change the bits");
                // accumulated onto `prior`, then scale, shift, residual, ReLU
                let epi = Epilogue {
                    affine: Some((&scale, &shift)),
                    residual: Some(ShortcutSrc::Identity(&res)),
                    relu: true,
                };
                let mut y = prior.clone();
                run_winograd(cpu, xd, ci, co, tile, &u, &x, &mut y, true, &epi);
                let want: Vec<f64> = (0..yd.len())
                    .map(|i| {
                        let c = i % co;
                        let v = (conv[i] + prior[i] as f64) * scale[c] as f64 + shift[c] as f64 + res[i] as f64;
                        v.max(0.0)
                    })
                    .collect();
                let top = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let err = worst(&y, &want);
                assert!(err <= bound * top, "{tile:?} {h}x{w} {ci}->{co} with epilogue: {:.2e} of max", err / top);
            }
        }
    }

    /// Outputs large enough for non-temporal stores (4 MiB and more) that do not start on a
    /// 64-byte line take ordinary stores (a streamed store there would fault), with the same
    /// bits as on a line; on a line they are the same bits as a small output's (ordinary
    /// stores): the direct kernel (1x1) and Winograd (3x3).
    #[test]
    fn large_outputs_off_a_line_are_stored_like_on_one() {
        for (c, side) in [(Conv::new(64, 256, 1, 1, 0), 64), (Conv::new(64, 64, 3, 1, 1), 128)] {
            let xd = Dims::new(1, side, side, 64);
            let yd = c.out_dims(xd);
            assert!(yd.len() * 4 >= 4 << 20);
            let (x, w) = (rand_vec(xd.len(), 1), rand_vec(c.weight_len(), 2));
            for path in KernelPath::all_supported() {
                let mut on_line = vec![0.0; yd.len()];
                c.forward_with(path, &w, &x, xd, &mut on_line);
                for shift in [1, 4] {
                    let mut buf = vec![0.0; yd.len() + shift];
                    c.forward_with(path, &w, &x, xd, &mut buf[shift..]);
                    assert!(buf[shift..] == on_line[..], "{path:?} {c:?}: shifted by {shift}");
                }
                // the image less 8 rows: an output under the bound, ordinary stores; the rows
                // away from its new edge are the same tiles
                let small = Dims::new(1, side - 8, side, 64);
                let mut y = vec![0.0; c.out_dims(small).len()];
                c.forward_with(path, &w, &x[..small.len()], small, &mut y);
                let same = (side - 16) * side * c.cout;
                assert!(y[..same] == on_line[..same], "{path:?} {c:?}: streamed and stored rows differ");
            }
        }
    }
}
