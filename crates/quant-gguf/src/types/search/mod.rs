//! The scale searches ggml's quantizers share (ggml `src/ggml-quants.c`, commit d99724f2), one
//! file per family, each ported operation by operation: every `f32` expression is evaluated
//! in the C code's order (`a*b*c` is `(a*b)*c`), no fused multiply-add. The vector versions
//! run one independent candidate (or sub-block) per lane and are checked bit for bit against
//! the straight ports (`*_scalar`) by unit tests.

pub mod q3;
pub mod qkx;
pub mod qp;
pub mod qx;

pub use q3::{make_q3_quants, make_q3_quants_x16};
pub use qkx::{make_qkx_quants_scalar, QkxSearch};
pub use qp::make_qp_quants;
pub use qx::{make_qx_quants, make_qx_quants_scalar};

/// Deterministic test values with ties, zeros, outliers and both signs.
#[cfg(test)]
pub(crate) fn test_values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((s >> 40) as f32) / (1u64 << 24) as f32 - 0.5;
            match i % 7 {
                0 => 0.0,
                3 => u * 40.0,
                5 => (u * 8.0).round() * 0.25,
                _ => u,
            }
        })
        .collect()
}
