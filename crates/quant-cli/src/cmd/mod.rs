//! One module per subcommand; `crate::run` dispatches to them.

pub mod demo;
pub mod dequantize;
pub mod eval;
#[cfg(feature = "imatrix")]
pub mod imatrix;
pub mod inspect;
pub mod merge;
pub mod methods;
pub mod plan;
pub mod quantize;
pub mod restore;
pub mod util;
