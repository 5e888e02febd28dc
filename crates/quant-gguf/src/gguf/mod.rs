//! The .gguf container (GGUF v3, read v2/v3): typed key/values ([`value`]), a bounded reader
//! ([`read`]), a streaming writer ([`mod@write`]) and llama-gguf-split's layout ([`split`]). It knows
//! GGML types and key/values, not architectures or methods (those are [`crate::arch`] and
//! [`crate::method`]).
//!
//! File layout: magic `GGUF`, version u32, tensor count u64, KV count u64, KV pairs
//! (string key, u32 value type, value), tensor infos (name, n_dims u32, dims u64 with
//! `ne[0]` = row length first, type u32, offset u64 relative to the data section), padding
//! to `general.alignment` (default 32), then tensor data, each tensor padded to the
//! alignment — including after the last one, which ggml's loader requires.
//!
//! Reading never trusts a count or length: every count is checked against the bytes
//! left in the file before anything is allocated, strings are capped, n_dims ≤ 4,
//! dims products are checked, type ids must be known, offsets must be aligned and inside
//! the file. Any violation is [`quant_core::Error::InvalidFile`] naming the file.

pub mod read;
pub mod split;
pub mod value;
pub mod write;

pub use read::{sniff, GgufFile, GgufTensorInfo};
pub use value::{kv_text, GgufType, GgufValue, IntType, KvList};
pub use write::{header_bytes, GgufWriter, TensorInfo};

/// The file magic.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// The version this crate writes.
pub const GGUF_VERSION: u32 = 3;

/// ggml's default tensor data alignment.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Longest string accepted when reading (keys, names, values).
pub const MAX_STRING_LEN: u64 = 1 << 24;

/// Deepest array nesting accepted when reading.
pub const MAX_ARRAY_DEPTH: usize = 4;

/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;
