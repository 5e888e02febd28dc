//! Run-time choice between the baseline build of the row quantizers and an AVX2 build of
//! the same code.
//!
//! The quantizers are written as plain Rust over fixed-size arrays so that the compiler
//! vectorises them; [`crate::types::quantize_rows`] compiles each row quantizer a second
//! time with AVX2 enabled (wider vectors, `pminsd`/`pmaxsd`, `vroundps`) and picks that
//! build at run time on CPUs that have it. Both builds evaluate the same IEEE operations
//! in the same order (Rust never contracts `a*b + c` into a fused multiply-add, and AVX2
//! does not enable FMA), so their bytes are identical; the tests compare them.
//!
//! The switch is quant-core's, shared by every backend: [`set_simd`] turns the AVX2
//! builds of all crates off or on together.

pub use quant_core::simd::{force_simd, set_simd, simd_enabled};
