//! Analyses of networks: parameter / FLOP summaries.

pub mod summary;
