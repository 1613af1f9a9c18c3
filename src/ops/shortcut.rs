//! The shortcut of a residual block as seen by the fused add (see bn.rs):
//! identity, or option A (Sec. 4.1): stride-s subsampling plus zero-padded
//! channels. The new channels are appended after the existing ones (channel
//! c of the output is channel c of the input for c < Cin, zero beyond).
//! Projection shortcuts (options B/C) are a conv + BN unit whose output is
//! then used as an identity source.

use crate::par;
use crate::shape::Dims;

pub use crate::kernels::ShortcutSrc;

// ---------------------------------------------------------------- forward
// (the forward add lives in the BN epilogue: bn::normalize)

// --------------------------------------------------------------- backward
/// Option A backward: gx = S^T dz — the first Cin channels of dz at the
/// subsampled positions, zero elsewhere.  dz: (N,OH,OW,Cout), gx: (N,H,W,Cin).
pub fn pad_a_backward(dz: &[f32], yd: Dims, gx: &mut [f32], xd: Dims, stride: usize) {
    par::for_rows(
        gx,
        xd.w * xd.c,
        1,
        #[inline(always)]
        |first, chunk| {
            for (r, gr) in chunk.chunks_exact_mut(xd.w * xd.c).enumerate() {
                gr.fill(0.0);
                let row = first + r;
                let (n, ih) = (row / xd.h, row % xd.h);
                if ih % stride != 0 || ih / stride >= yd.h {
                    continue;
                }
                let oh = ih / stride;
                for ow in 0..yd.w {
                    let iw = ow * stride;
                    if iw >= xd.w {
                        break;
                    }
                    let src = &dz[((n * yd.h + oh) * yd.w + ow) * yd.c..][..xd.c];
                    gr[iw * xd.c..(iw + 1) * xd.c].copy_from_slice(src);
                }
            }
        },
    );
}
