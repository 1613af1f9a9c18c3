//! Hot loops behind the layers, with run-time dispatch: an AVX-512 path
//! (stable `std::arch` intrinsics) where the CPU has it, and the portable
//! loops in `ops/` everywhere else. The path is chosen once per network
//! (`KernelPath::detect`) and can be forced (`RESNET_KERNELS=portable`, or
//! `Net::set_kernel_path` in tests) so that both are tested against the same
//! tolerances. A path that runs AVX-512 code carries the proof that the CPU
//! has it (dispatch.rs), so choosing one is safe and the kernels take the proof.
//!
//! A leaf: the kernels import only `shape::Dims` from the rest of the crate;
//! ops/conv.rs splits their work across threads.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
mod dispatch;
#[cfg(target_arch = "x86_64")]
pub mod tuning;
#[cfg(target_arch = "x86_64")]
pub(crate) mod winograd;

pub use dispatch::{AVX512_FEATURES, Avx512Cpu, CpuFeatures, KernelKind, KernelPath, KernelsError};
#[cfg(target_arch = "x86_64")]
pub use tuning::{Pixels, Tuning};

use crate::shape::Dims;

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
    /// Channels of each row [`ShortcutSrc::row`] returns for an output of `c` channels.
    pub fn channels(&self, c: usize) -> usize {
        match self {
            ShortcutSrc::Identity(_) => c,
            ShortcutSrc::PadA { xd, .. } => xd.c,
        }
    }

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
    /// Whether the AVX-512 stores may apply this epilogue to outputs of `c`
    /// channels: they read the affine vectors and the residual rows 16 lanes
    /// at a time, so the former must cover `c` and the latter have a multiple
    /// of 16 channels (option A's inputs in every ResNet: 16, 32, 64). Where
    /// not, the portable loops run.
    pub fn fits_simd(&self, c: usize) -> bool {
        let affine = self.affine.is_none_or(|(s, t)| s.len() >= c && t.len() >= c);
        let residual = self.residual.is_none_or(|r| r.channels(c).is_multiple_of(16));
        affine && residual
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simd_store_takes_only_epilogues_it_can_read_in_16_lanes() {
        let (s, x) = ([1.0f32; 32], [0.0f32; 2 * 4 * 4 * 24]);
        let pad_a = |c| ShortcutSrc::PadA { x: &x, xd: Dims::new(2, 4, 4, c), yd: Dims::new(2, 2, 2, 32), stride: 2 };
        assert!(Epilogue::default().fits_simd(32));
        assert!(Epilogue { affine: Some((&s, &s)), residual: Some(pad_a(16)), relu: true }.fits_simd(32));
        assert!(!Epilogue { affine: Some((&s[..16], &s)), ..Default::default() }.fits_simd(32));
        assert!(!Epilogue { residual: Some(pad_a(24)), ..Default::default() }.fits_simd(32));
    }
}
