//! Hot loops behind the layers, with run-time dispatch: an AVX-512 path
//! (stable `std::arch` intrinsics) where the CPU has it, and the portable
//! loops in `ops/` everywhere else. The path is chosen once per network
//! (`KernelPath::detect`) and can be forced (`RESNET_KERNELS=portable`, or
//! `Net::path` in tests) so that both are tested against the same tolerances.

#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "x86_64")]
pub mod winograd;

use crate::shape::Dims;

/// Which implementation of the hot loops runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPath {
    /// Auto-vectorised Rust, any CPU.
    Portable,
    /// AVX-512F register-blocked micro-kernels, direct convolution (x86-64 only).
    Avx512,
    /// `Avx512` plus Winograd F(2x2, 3x3) for 3x3 / stride-1 convolutions (the default).
    Winograd,
}

impl KernelPath {
    /// The fastest path this CPU supports, unless `RESNET_KERNELS` names
    /// another (`portable`, `avx512` = direct convolutions only, `winograd`).
    pub fn detect() -> KernelPath {
        let best = Self::best_supported();
        match std::env::var("RESNET_KERNELS").map(|v| v.to_ascii_lowercase()).as_deref() {
            Ok("portable") => KernelPath::Portable,
            Ok("avx512") if best.simd() => KernelPath::Avx512,
            _ => best,
        }
    }

    /// The fastest path this CPU supports.
    pub fn best_supported() -> KernelPath {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return KernelPath::Winograd;
        }
        KernelPath::Portable
    }

    /// Whether this path runs the AVX-512 kernels.
    pub fn simd(self) -> bool {
        self != KernelPath::Portable
    }

    /// Every path this CPU can run (for tests).
    pub fn all_supported() -> Vec<KernelPath> {
        if Self::best_supported().simd() {
            vec![KernelPath::Portable, KernelPath::Avx512, KernelPath::Winograd]
        } else {
            vec![KernelPath::Portable]
        }
    }
}

/// The shortcut of a residual block as the fused add reads it: identity, or
/// option A (stride-s subsampling, channels beyond the input's are zero).
#[derive(Clone, Copy)]
pub enum ShortcutSrc<'a> {
    /// Same shape as the block output.
    Identity(&'a [f32]),
    /// Option A: x of shape xd, subsampled by `stride`, block output shape `yd`.
    PadA { x: &'a [f32], xd: Dims, yd: Dims, stride: usize },
}

impl<'a> ShortcutSrc<'a> {
    /// The shortcut values for output pixel `row` (= (n*OH + oh)*OW + ow) of
    /// a block output with `c` channels. May be shorter than `c`: the rest are zero.
    #[inline]
    pub fn row(&self, row: usize, c: usize) -> &'a [f32] {
        match *self {
            ShortcutSrc::Identity(x) => &x[row * c..(row + 1) * c],
            ShortcutSrc::PadA { x, xd, yd, stride } => {
                let (n, rem) = (row / (yd.h * yd.w), row % (yd.h * yd.w));
                let (oh, ow) = (rem / yd.w, rem % yd.w);
                let base = ((n * xd.h + oh * stride) * xd.w + ow * stride) * xd.c;
                &x[base..base + xd.c]
            }
        }
    }
}

/// What happens to a convolution's outputs on their way to memory (fused
/// into the kernel's store on the fast path): an affine map per channel
/// (eval-mode BN folded: y * scale + shift), a residual to add, a ReLU.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub affine: Option<(&'a [f32], &'a [f32])>,
    /// the shortcut added before the ReLU
    pub residual: Option<ShortcutSrc<'a>>,
    pub relu: bool,
}

impl Epilogue<'_> {
    /// Apply to the pixels `first_pixel..` of `rows` (c channels each) — the portable form.
    pub fn apply(&self, first_pixel: usize, rows: &mut [f32], c: usize) {
        for (i, px) in rows.chunks_exact_mut(c).enumerate() {
            if let Some((s, t)) = self.affine {
                px.iter_mut().zip(s).zip(t).for_each(|((v, s), t)| *v = *v * s + t);
            }
            if let Some(r) = self.residual {
                px.iter_mut().zip(r.row(first_pixel + i, c)).for_each(|(v, r)| *v += r);
            }
            if self.relu {
                px.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
    }
}

/// Zeros that padded taps read from (longer than any channel count we run).
pub static ZEROS: [f32; 4096] = [0.0; 4096];

impl KernelPath {
    /// `detect()`, computed once per process.
    pub fn cached() -> KernelPath {
        static P: std::sync::OnceLock<KernelPath> = std::sync::OnceLock::new();
        *P.get_or_init(KernelPath::detect)
    }
}

/// Run `f` compiled for AVX-512 where the CPU has it: the closure is inlined
/// into a `#[target_feature]` function, so its loops auto-vectorise with
/// 16-lane registers. The arithmetic is the same source, and the compiler
/// never reassociates float operations, so both builds give identical bits.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if KernelPath::cached().simd() {
        // SAFETY: SIMD paths are only chosen where the CPU has AVX-512F/BW/DQ/VL.
        return unsafe { with_avx512(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}
