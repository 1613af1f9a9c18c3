//! resnet: deep residual networks (He, Zhang, Ren, Sun 2015) on a dedicated
//! CPU engine. See ARCHITECTURE.md for the map.
//!
//! ```
//! use resnet::arch::{ArchOptions, ArchSpec};
//! use resnet::net::Net;
//! let spec = ArchSpec::parse("resnet20", &ArchOptions::default()).unwrap();
//! let mut net = Net::new(&spec, 2, 32, 32, false, 0).unwrap();
//! net.forward(2, false);
//! assert_eq!(net.logits_of(0).len(), 10);
//! ```

pub mod alloc;
pub mod analysis;
pub mod arch;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod data;
pub mod detect;
pub mod eval;
pub mod file_error;
pub mod init;
pub mod kernels;
#[cfg(feature = "mpi")]
pub mod mpi_comm;
pub mod net;
pub mod onnx;
pub mod ops;
pub mod optim;
pub mod par;
pub mod paths;
pub mod pickle;
pub mod predict;
pub mod profile;
pub mod reproduce;
pub mod reuse;
pub mod rng;
pub mod shape;
#[cfg(test)]
pub(crate) mod testutil;
pub mod train;
pub mod weights;

// the unit tests run under the allocator of the binaries (alloc.rs)
#[cfg(test)]
#[global_allocator]
static ALLOC: alloc::LineAligned = alloc::LineAligned;
