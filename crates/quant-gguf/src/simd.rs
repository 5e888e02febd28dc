//! Run-time choice between the baseline build of the row quantizers and an AVX2 build of
//! the same code.
//!
//! The quantizers are written as plain Rust over fixed-size arrays so that the compiler
//! vectorises them; [`crate::block::quantize_rows`] compiles each row quantizer a second
//! time with AVX2 enabled (wider vectors, `pminsd`/`pmaxsd`, `vroundps`) and picks that
//! build at run time on CPUs that have it. Both builds evaluate the same IEEE operations
//! in the same order (Rust never contracts `a*b + c` into a fused multiply-add, and AVX2
//! does not enable FMA), so their bytes are identical; the tests compare them.

use std::sync::atomic::{AtomicBool, Ordering};

static SIMD_OFF: AtomicBool = AtomicBool::new(false);

/// Whether the AVX2 build of the row quantizers runs (x86-64 CPUs with AVX2, unless
/// turned off with [`set_simd`]).
#[inline]
pub fn simd_enabled() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !SIMD_OFF.load(Ordering::Relaxed) && std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Turns the AVX2 build off (`false`) or back on where the CPU has AVX2 (`true`); for
/// comparing it with the baseline build. Process-wide.
pub fn set_simd(enabled: bool) {
    SIMD_OFF.store(!enabled, Ordering::Relaxed);
}
