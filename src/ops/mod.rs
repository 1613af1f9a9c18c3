//! Layers. One file per layer, forward and backward side by side.
//!
//! Layout: every activation is NHWC (batch, row, column, channel), f32,
//! channels innermost, so the inner loops run over channels (16/32/64/...
//! lanes: whole AVX-512 vectors). Convolution weights are HWIO
//! (kh, kw, in, out). See ARCHITECTURE.md for the measurements behind this.

pub mod bn;
pub mod conv;
pub mod fc;
pub mod loss;
pub mod pool;
pub mod relu;
pub mod shortcut;
