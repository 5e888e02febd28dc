//! # quant
//!
//! Quantize neural-network weights into the formats the ML ecosystem loads — GGUF
//! (llama.cpp), bitsandbytes NF4/FP4 and LLM.int8, optimum-quanto, TorchAO, and plain
//! fp16/bf16/int8 — and load them back.
//!
//! This facade re-exports [`quant_core`] and links every backend enabled by a Cargo
//! feature; each backend registers its methods with the core registry.
//!
//! | feature | backend crate | methods |
//! |---|---|---|
//! | (always) | `quant-basic` | `basic_fp16`, `basic_bf16`, `basic_int8` |
//! | `bnb` | `quant-bnb` | `bnb_4bit_config_{fp16,bf16}`, `bnb_8bit_config_{fp16,bf16}` |
//! | `gguf` | `quant-gguf` | `gguf_config_{fp16,bf16,q8_k,q8_0,q8_1,q6_k,q5_k,q5_1,q5_0,q4_k,q4_0,q4_1,q3_k,q2_k}` |
//! | `quanto` | `quant-quanto` | `quanto_config_{float8,int8,int4,int2}` |
//! | `float8` | `quant-float8` | `torch_ao_config_*` (18 TorchAO methods) |
//!
//! A method whose backend is compiled out resolves to its basic fallback with a warning
//! (recorded in the output), or fails in strict mode naming the feature to enable.
//!
//! ```
//! use quant::{HostTensor, DType, ModelQuantizer, TensorSource};
//!
//! # fn main() -> quant::Result<()> {
//! let w = HostTensor::from_f32("layer.weight", DType::F32, vec![2, 4],
//!     &[0.1, -0.2, 0.3, 0.4, 1.0, 0.0, -1.0, 0.5])?;
//! let b = HostTensor::from_f32("layer.bias", DType::F32, vec![2], &[0.0, 1.0])?;
//! let model = ModelQuantizer::new("basic_int8").quantize_sources(&[&w, &b])?;
//! let restored = model.dequantize("layer.weight")?;
//! assert!((restored[4] - 1.0).abs() < 1e-6);
//! # Ok(()) }
//! ```

pub use quant_core::*;

/// The always-on basic methods.
pub use quant_basic as basic;

/// bitsandbytes NF4/FP4 4-bit and LLM.int8 (feature `bnb`).
#[cfg(feature = "bnb")]
pub use quant_bnb as bnb;

/// GGML block formats and `.gguf` files (feature `gguf`).
#[cfg(feature = "gguf")]
pub use quant_gguf as gguf;

/// optimum-quanto qint8/qint4/qint2/qfloat8 (feature `quanto`).
#[cfg(feature = "quanto")]
pub use quant_quanto as quanto;

/// TorchAO float8 / int4 / int8 / uintN weight methods (feature `float8`).
#[cfg(feature = "float8")]
pub use quant_float8 as float8;

pub mod sample;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
