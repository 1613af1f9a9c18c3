//! Analyses of networks: parameter / FLOP summaries.

pub mod plot;
pub mod responses;
pub mod summary;
