//! Support code for tests/onnx_ops.rs.

pub mod pb;
