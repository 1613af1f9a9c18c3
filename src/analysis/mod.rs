//! Analyses of networks: parameter / FLOP summaries.

pub mod plot;
pub mod summary;
