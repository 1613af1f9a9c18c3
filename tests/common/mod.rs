pub mod golden;
pub mod scratch;
