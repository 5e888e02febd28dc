//! quant-gguf (docs written below).

pub mod bf16;
pub mod block;
pub mod f16;
pub mod gguf;
pub mod imatrix;
pub mod method;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;
pub mod util;

pub use block::{dequantize, quantize, GgmlBlock, GgmlType};
pub use imatrix::Imatrix;
pub use method::{fallback_type, method_name, method_type, GgufMethod, METHODS};

/// The backend name used in registrations and errors.
pub const BACKEND: &str = "quant-gguf";

/// Errors of this crate, boxed into [`quant_core::Error::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// Data does not fit a GGML type's block layout.
    #[error("{ty}: bad {what}: {detail}")]
    Layout {
        /// The GGML type.
        ty: &'static str,
        /// What is wrong (row length, data size, imatrix).
        what: String,
        /// Details with the values.
        detail: String,
    },
    /// An importance matrix file or entry is unusable.
    #[error("imatrix {file}: {reason}")]
    Imatrix {
        /// The file (or in-memory source name).
        file: String,
        /// What is wrong.
        reason: String,
    },
}
