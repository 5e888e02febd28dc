//! bitsandbytes weight formats for quant: NF4 / FP4 4-bit with optional double quantization,
//! and LLM.int8, byte-identical with bitsandbytes 0.50 on CPU and stored in the checkpoint
//! layout transformers and diffusers `save_pretrained` write (spec: `specs/BNB.md`).
//!
//! # Methods
//!
//! | method | weights | unquantized tensors and load dtype |
//! |---|---|---|
//! | `bnb_4bit_config_fp16` | 4-bit (NF4, blocksize 64 by default) | float16 |
//! | `bnb_4bit_config_bf16` | 4-bit (NF4, blocksize 64 by default) | bfloat16 |
//! | `bnb_8bit_config_fp16` | LLM.int8 | float16 |
//! | `bnb_8bit_config_bf16` | LLM.int8 | bfloat16 |
//!
//! The suffix is what transformers does when a model is loaded with that `torch_dtype` and
//! the config: every weight is first cast (RNE) to that dtype, then quantized; every other
//! floating tensor is stored in it (`Selection::Keep(Some(dtype))`); non-floating tensors are
//! kept as stored. For the 4-bit methods the suffix is also `bnb_4bit_compute_dtype`.
//!
//! Parameters of the 4-bit methods: `quant_type` (`nf4` | `fp4`), `blocksize` (32, 64, …,
//! 4096), `double_quant` (bool: `compress_statistics`, nested absmax in blocks of 256),
//! `quant_storage` (`uint8` | `int8` | `float16` | `bfloat16` | `float32` | `float64`: the
//! packed bytes reinterpreted, never converted), `dtype` (`float32` | `float16` | `bfloat16`:
//! the load dtype, like `torch_dtype`; default the compute dtype) and `compute_dtype` (what
//! config.json records as `bnb_4bit_compute_dtype`; default the method's). The 8-bit methods
//! take `dtype` only (`llm_int8_threshold` does not change stored weights).
//!
//! # 4-bit (spec §1)
//!
//! The weight, cast to the load dtype, is flattened row-major to `x[0..n)` and cut into
//! blocks of `blocksize` (the last one short when `blocksize ∤ n`). Per block, in f32:
//!
//! ```text
//! absmax = max |x|                          (NaN propagates, as torch.max)
//! full block: s = clamp(x * (1 / max(absmax, 1e-38)), -1, 1)   (reciprocal, then multiply)
//! tail block: s = clamp(x / max(absmax, 1e-38), -1, 1)          (true division)
//! code = #{ j : !(t_j >= s) }               (torch.bucketize on the 15 f32 midpoints t_j of
//!                                            the sorted table: ties go to the lower level)
//! FP4:  code = ORDER[code], ORDER = [11,10,13,12,15,14,9,0,8,1,6,7,4,5,2,3]
//! byte[k] = code[2k] << 4 | code[2k+1]      (odd n: one pad element 0.0 → NF4 7, FP4 0)
//! ```
//!
//! The stored absmax is the raw block maximum for full blocks and, as bitsandbytes 0.50's
//! `quantize_4bit` does (`am.clamp(min=1e-38)`), the clamped value for a short tail block, so
//! an all-zero tail stores `1e-38` (spec §1.3 and `emul.py` keep the raw 0 there; this
//! follows the library source, and no reference vector has an all-zero tail); an all-zero
//! full block stores 0 and codes of 0.0 (byte `0x77` for NF4).
//!
//! Dequantization: `w = TABLE[code] * absmax[i / blocksize]` (f32), rounded to the quant
//! state's `dtype`. FP4 code 8 decodes to -0.0 when the last dimension of the shape is even
//! (the CPU native kernel) and +0.0 when it is odd (the PyTorch fallback).
//!
//! **Double quantization** (spec §1.7): `offset = mean(absmax)`, computed as torch's CPU
//! `Tensor.mean()` on one thread with AVX2: the cascade sum of `SumKernel.cpp` (8-lane
//! vectors, 4 interleaved accumulators, 4 levels of `max(16, 2^(ceil_log2(m)/4))`-element
//! chunks, the scalar tail, then the 8 lanes in order), then `/ n` in f32. torch splits
//! vectors of 32768 blocks or more across threads, so for such large weights the last bits
//! of the offset can differ from a given torch run (loaders use the stored value); every
//! reference vector matches exactly. `c = absmax - offset` is quantized in blocks of 256:
//! `nested_absmax = max |c|`, `v = c * (1 / nested_absmax)` (all-zero block → codes 0),
//! `q = LUT[trunc(((clamp(v, -1, 1) + 1) * 0.5) * 65535 + 0.5)]` with bitsandbytes 0.50's
//! 65536-bin CPU table of the signed dynamic map (`LUT[i]` = number of map midpoints below
//! `-1 + 2i / 65535`). Dequantization: `absmax = DYN[q] * nested_absmax + offset` (f32
//! multiply, then add), with the stored map and the JSON offset rounded to f32.
//!
//! # LLM.int8 (spec §2)
//!
//! The weight, cast to the load dtype and then to float16, per output row `r`:
//! `SCB[r] = max |w|`, `factor = RNE(RNE(1 / SCB) * 127)`,
//! `CB = round_half_even(RNE(w * factor))` as int8 (all-zero row: NaN → 0). Dequantization:
//! `RNE(RNE(CB * SCB) * f32(1/127))` in f32, so the records' `dequant_dtype` is float32.
//!
//! # Layout (spec §3)
//!
//! For a weight `P.weight` (4-bit): `P.weight` (the quant_storage dtype, `[(n + 1) / 2 /
//! itemsize, 1]`), `P.weight.absmax` (f32, or u8 codes with double quantization, `[nblocks]`),
//! `P.weight.quant_map` (f32 `[16]`), with double quantization `P.weight.nested_absmax` (f32)
//! and `P.weight.nested_quant_map` (f32 `[256]`), and `P.weight.quant_state.bitsandbytes__nf4`
//! (or `__fp4`): the JSON bytes as u8, formatted like Python's `json.dumps` (keys in
//! bitsandbytes' order, `", "` / `": "` separators, CPython's float repr for `nested_offset`:
//! the shortest round-trip digits, nearest, ties to even). The layout must be known before quantizing, and the offset's
//! repr length is not; so with double quantization the JSON is right-padded with spaces to
//! the length it has with a 23-byte offset (the longest repr of an f32); JSON ignores the
//! trailing whitespace (`json.loads` in bitsandbytes' `unpack_tensor_to_dict`). Without
//! double quantization the bytes are exactly the library's; with it, the text before the
//! padding is. 8-bit: `P.weight` (i8, original shape), `P.SCB` (f32
//! `[out]`), `P.weight_format` (u8 scalar 0). [`QuantMethod::artifacts`] gives
//! `__metadata__ = {"format": "pt"}` and the full `quantization_config` transformers writes
//! (keys sorted; 8-bit: exactly `BitsAndBytesConfig(load_in_8bit=True)`).
//!
//! # Which tensors
//!
//! Like transformers' defaults, decided from the name and shape only: 2-D floating tensors
//! named `weight` or `*.weight` are quantized unless their module's last name component
//! contains `embed` (but does not end in `embedder`, diffusers' Linear `x_embedder`,
//! `context_embedder`) or is one of `lm_head`, `embed_out`, `wte`, `wpe`, `shared`,
//! `relative_attention_bias` (embeddings and output heads). Norms, biases and convolutions
//! (1-D / 4-D) stay floating. With `quant_storage` wider than a byte, a weight whose packed
//! bytes do not fill whole storage values falls back to `basic_int8`.
//!
//! # Loading
//!
//! The registered layout detector recognises bitsandbytes files (transformers' and quant's)
//! by their `*.quant_state.bitsandbytes__*` and `*.SCB` keys, parses and checks every quant
//! state and part size, and returns records whose method and parameters recreate a method
//! that dequantizes them. A malformed file (missing part, wrong dtype or size, bad JSON,
//! non-zero `weight_format`) is a [`quant_core::Error::InvalidTensor`] naming the file and weight.
//!
//! # Not implemented
//!
//! - GPT-2 style `Conv1D` weights (stored `[in, out]`) are not transposed before
//!   quantization as transformers does; `_keep_in_fp32_modules` and "the module of the last
//!   parameter" skips of transformers are not known from names (use rules to keep them).
//! - Sharded checkpoints whose shards split one weight's parts (e.g. `P.weight` in one shard,
//!   `P.weight.absmax` in the next) are reported as missing parts: the detector sees one file
//!   at a time.
//! - The CUDA kernels' variants (decision-tree thresholds, NaN codes of all-zero blocks,
//!   exact-nearest nested codes) are not reproduced: the target is the CPU semantics.
//! - `llm_int8_has_fp16_weight=True` (no stored int8) is not a pre-quantized format.

mod fourbit;
mod int8;
pub mod layout;
pub mod method;
pub mod quant_state;
pub mod tables;

pub use fourbit::{
    dequantize_4bit, dequantize_nested, quantize_4bit, quantize_4bit_cast, quantize_nested,
    torch_mean, torch_sum,
};
pub use int8::{dequantize_int8, quantize_int8, quantize_int8_bytes};
pub use method::{Bnb4, Bnb8, Config4};

use quant_core::{DType, QuantMethod};

/// The 4-bit data type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// NormalFloat4 (QLoRA).
    Nf4,
    /// bitsandbytes' 4-bit float (sign + 3-bit magnitude).
    Fp4,
}

impl QuantType {
    /// `nf4` or `fp4`, as stored in keys and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            QuantType::Nf4 => "nf4",
            QuantType::Fp4 => "fp4",
        }
    }
}

fn create_4bit(
    name: &'static str,
    compute: DType,
    p: &quant_core::Params,
) -> quant_core::Result<Box<dyn QuantMethod>> {
    Ok(Box::new(Bnb4::new(name, Config4::parse(name, compute, p)?)))
}

quant_core::register_method!(quant_core::MethodEntry {
    name: "bnb_4bit_config_fp16",
    backend: method::BACKEND,
    bits_per_weight: 4.5,
    summary: "bitsandbytes 4-bit NF4/FP4 (blocksize 64, optional double quant), load and compute dtype float16",
    params: method::PARAMS_4BIT,
    create: |p| create_4bit("bnb_4bit_config_fp16", DType::F16, p),
});

quant_core::register_method!(quant_core::MethodEntry {
    name: "bnb_4bit_config_bf16",
    backend: method::BACKEND,
    bits_per_weight: 4.5,
    summary: "bitsandbytes 4-bit NF4/FP4 (blocksize 64, optional double quant), load and compute dtype bfloat16",
    params: method::PARAMS_4BIT,
    create: |p| create_4bit("bnb_4bit_config_bf16", DType::BF16, p),
});

quant_core::register_method!(quant_core::MethodEntry {
    name: "bnb_8bit_config_fp16",
    backend: method::BACKEND,
    bits_per_weight: 8.0,
    summary: "bitsandbytes LLM.int8 weights (int8 per-row absmax, SCB), load dtype float16",
    params: method::PARAMS_8BIT,
    create: |p| Ok(Box::new(Bnb8::parse(
        "bnb_8bit_config_fp16",
        DType::F16,
        p
    )?)),
});

quant_core::register_method!(quant_core::MethodEntry {
    name: "bnb_8bit_config_bf16",
    backend: method::BACKEND,
    bits_per_weight: 8.0,
    summary: "bitsandbytes LLM.int8 weights (int8 per-row absmax, SCB), load dtype bfloat16",
    params: method::PARAMS_8BIT,
    create: |p| Ok(Box::new(Bnb8::parse(
        "bnb_8bit_config_bf16",
        DType::BF16,
        p
    )?)),
});

quant_core::register_layout!(quant_core::format::LayoutEntry {
    backend: method::BACKEND,
    detect: layout::detect,
});
