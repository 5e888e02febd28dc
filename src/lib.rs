//! facade
pub use quant_core::*;
