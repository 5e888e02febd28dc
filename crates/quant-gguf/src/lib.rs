//! GGML block formats and .gguf files for quant, **byte-identical to ggml**.
//!
//! The reference is ggml (github.com/ggml-org/ggml, commit d99724f2), `src/ggml-quants.c`:
//! the code llama.cpp's quantize tool runs through `ggml_quantize_chunk`. Every quantizer
//! and dequantizer here is a port of the C function named in its module, operation by
//! operation: `f32` arithmetic in the C association order, no fused multiply-add,
//! `nearest_int` via the `12582912.0` magic number, C's `MAX`/`MIN` argument order, the
//! x86-64 behaviour of C float→int casts, and ggml's own f16/bf16 conversions
//! ([`types::c_math`]). The tests compare every `kind: main` reference vector of ggml byte for byte
//! (quantized) and bit for bit (dequantized), including the importance-matrix outputs;
//! the `edge` (f16 scale overflow) and `special` (NaN/Inf) vectors match too.
//!
//! # Where each job lives
//!
//! One folder per job; data flows one way (the converter writes into the container, the
//! methods use the types; nothing under [`types`] or [`gguf`] imports upward). How to add a
//! GGML type or an architecture: `crates/quant-gguf/README.md`.
//!
//! | folder | job |
//! |---|---|
//! | [`types`] | the GGML block formats, one file per type; the scale searches they share ([`types::search`]), C arithmetic ([`types::c_math`]), vector lanes and the run-time SIMD switch |
//! | [`gguf`] | the .gguf container: typed key/values, bounded reader, streaming writer, llama-gguf-split's layout |
//! | [`arch`] | Hugging Face folder → llama.cpp's GGUF (convert_hf_to_gguf.py): one file per architecture, shared hyperparameters and name tables, the reader, the vocabularies ([`arch::tokenizer`]) |
//! | [`ftype`] | llama-quantize's file types: which tensors, in which order, which type (`llama_tensor_get_type`), its key/values |
//! | [`imatrix`] | importance matrices: loading (GGUF and `.dat`), the statistics `quant imatrix` writes |
//! | [`method`] | the glue: `gguf_config_*` methods and their registrations, the fallback ladder, the container as the engine reads and writes it ([`method::container`]) |
//!
//! # Methods
//!
//! | method | GGML type | block | bytes | bits/weight | imatrix |
//! |---|---|---|---|---|---|
//! | `gguf_config_fp16` | F16 | 1 | 2 | 16 | ignored |
//! | `gguf_config_bf16` | BF16 | 1 | 2 | 16 | ignored |
//! | `gguf_config_q8_k` | Q8_K | 256 | 292 | 9.125 | ignored (no weighted path in ggml) |
//! | `gguf_config_q8_0` | Q8_0 | 32 | 34 | 8.5 | ignored (as ggml) |
//! | `gguf_config_q8_1` | Q8_1 | 32 | 36 | 9 | ignored (no weighted path in ggml) |
//! | `gguf_config_q6_k` | Q6_K | 256 | 210 | 6.5625 | used |
//! | `gguf_config_q5_k` | Q5_K | 256 | 176 | 5.5 | used |
//! | `gguf_config_q5_1` | Q5_1 | 32 | 24 | 6 | used |
//! | `gguf_config_q5_0` | Q5_0 | 32 | 22 | 5.5 | used |
//! | `gguf_config_q4_k` | Q4_K | 256 | 144 | 4.5 | used |
//! | `gguf_config_q4_0` | Q4_0 | 32 | 18 | 4.5 | used |
//! | `gguf_config_q4_1` | Q4_1 | 32 | 20 | 5 | used |
//! | `gguf_config_q3_k` | Q3_K | 256 | 110 | 3.4375 | used |
//! | `gguf_config_q2_k` | Q2_K | 256 | 84 | 2.625 | used |
//! | `gguf_config_iq4_nl` (extra) | IQ4_NL | 32 | 18 | 4.5 | used |
//! | `gguf_config_iq4_xs` (extra) | IQ4_XS | 256 | 136 | 4.25 | used |
//! | `gguf_config_iq3_s` (extra) | IQ3_S | 256 | 110 | 3.4375 | used |
//! | `gguf_config_iq3_xxs` (extra) | IQ3_XXS | 256 | 98 | 3.0625 | used |
//! | `gguf_config_iq2_s` (extra) | IQ2_S | 256 | 82 | 2.5625 | used |
//! | `gguf_config_iq2_xs` (extra) | IQ2_XS | 256 | 74 | 2.3125 | required |
//! | `gguf_config_iq2_xxs` (extra) | IQ2_XXS | 256 | 66 | 2.0625 | required |
//! | `gguf_config_iq1_m` (extra) | IQ1_M | 256 | 56 | 1.75 | used |
//! | `gguf_config_iq1_s` (extra) | IQ1_S | 256 | 50 | 1.5625 | required |
//! | `gguf_config_tq2_0` (extra) | TQ2_0 | 256 | 66 | 2.0625 | ignored (as ggml) |
//! | `gguf_config_tq1_0` (extra) | TQ1_0 | 256 | 54 | 1.6875 | ignored (as ggml) |
//! | `gguf_config_mxfp4` (extra) | MXFP4 | 32 | 17 | 4.25 | ignored (as ggml) |
//!
//! The lattice types (IQ1_S … IQ3_S) build their codebooks and neighbour lists at first use
//! from ggml's compact index lists (`types::iq_grid`, checked against ggml-common.h's
//! tables by a test); ggml refuses IQ2_XXS, IQ2_XS and IQ1_S without an importance matrix
//! (`ggml_quantize_requires_imatrix`), and so does quant, with an error naming `--imatrix`.
//!
//! The exact formulas and block layouts are in each format's module under [`types`]
//! ([`types::q4_0`], [`types::q4_k`], …, [`types::iq4_xs`], [`types::f16`](mod@types::f16),
//! [`types::bf16`]); the shared searches (`make_qx_quants`, `make_q3_quants`,
//! `make_qkx2_quants`, `make_qkx3_quants`, `make_qp_quants`) in [`types::search`], one file
//! per family. Without an
//! importance matrix each row goes through ggml's `quantize_row_*_ref`; with one, through
//! the `quantize_row_*_impl` function ggml's `ggml_quantize_chunk` calls (Q8_1 and Q8_K
//! through `quantize_row_*_ref`, which is all ggml has). Note that an all-ones importance
//! matrix is not the same as none (it selects the weighted algorithm), and that the
//! weighted Q4_0/Q4_1/Q5_0/Q5_1 use statistics over the whole row.
//!
//! **Q8_1** is ggml's 36-byte block (f16 `d`, f16 `s = d·Σq`, 32 × i8). gguf-py 0.19 still
//! declares 40 bytes per block, so gguf-py cannot read Q8_1 tensors ggml or quant write.
//! ggml has no Q8_1 dequantizer; ours is `d·q`. **Q8_K** stores an f32 scale; an all-zero
//! super-block gets zero `bsums` (ggml leaves them unwritten). candle 0.11 and gguf-py
//! cannot load/dequantize Q8_K data; candle cannot load Q8_1.
//!
//! # Storage
//!
//! In safetensors, a quantized tensor is one `U8` entry under the tensor's own name with
//! shape `[rows, row_bytes]` (rows = all dims but the last, flattened; the last dim is
//! ggml's `ne[0]`); F16/BF16 are stored as `F16`/`BF16` entries with the original shape.
//! The tensor record holds `{"type": "Q4_K"}` (plus `"allow_nonfinite": true` when set),
//! which the factory accepts back. Dequantization gives f32 (F16/BF16 values for those).
//!
//! # Which tensors, and the fallback ladder
//!
//! As llama.cpp: tensors of 2 or more dims whose name ends in `weight` are quantized,
//! except norms (`*norm.weight`), MoE router inputs (`ffn_gate_inp.weight`) and
//! position/token-type embeddings; other floating tensors are kept as F32; non-floating
//! tensors are kept as stored. When the row length is not a multiple of the block size the
//! method returns [`quant_core::Selection::Fallback`] with llama.cpp's ladder: IQ4_XS →
//! IQ4_NL, Q2_K/Q3_K →
//! Q4_0, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, and then F16 when the row is not a
//! multiple of 32 either. Q8_K (no llama.cpp rule: llama.cpp would refuse) and the 32-block
//! types fall back to F16. A fallback method is created with default parameters (no
//! importance matrix). Quantizing a non-fitting shape directly is
//! [`quant_core::Error::ShapeMismatch`].
//!
//! # Non-finite values
//!
//! NaN/Inf weights are refused with [`quant_core::Error::NonFinite`] (llama.cpp's
//! `ggml_validate_row_data` rejects such rows too). With the parameter
//! `allow_nonfinite = true` they are quantized exactly as ggml does on x86-64 (a NaN in a
//! Q8_0 block becomes 0 unless it is the block's last value, an Inf makes most blocks NaN,
//! Q3_K/Q6_K zero the sub-block, ...): the `special` reference vectors match.
//!
//! # Importance matrix
//!
//! The parameter `imatrix = PATH` loads a llama.cpp importance matrix once (legacy `.dat`
//! or GGUF, see [`imatrix`]); entries are looked up by the exact tensor name; a tensor
//! without an entry is quantized without weights (and listed in the artifact metadata key
//! `quantize.imatrix.missing`); an entry of the wrong size is an error; non-finite values
//! are an error at load time. 3-D (expert) tensors use one slice of `ne0` weights per
//! expert, as llama.cpp. The path is never recorded in the tensor records (`params()`),
//! so files load on machines without it; the artifacts carry `quantize.imatrix.file`,
//! `.entries_count`, `.chunks_count`, `.dataset`. A lower-level entry point is
//! [`quantize`]`(type, values, row_len, Some(weights))`.
//!
//! # .gguf files
//!
//! The `gguf` container (extension `.gguf`, see [`gguf`]) writes GGUF v3 by streaming:
//! the header is computed from the plan, each tensor appended and padded to 32 bytes
//! (including after the last one). Keys written: `general.architecture` (from the given
//! metadata, the input GGUF's, or what the input's `config.json` names — `model_type`,
//! `architectures[0]`, a diffusers `_class_name` such as `flux`; left out when nothing
//! names it, never guessed), `general.name` (given, else the file stem),
//! `general.file_type` (llama.cpp's ftype of the type holding the most non-fallback
//! elements: the `_S` variant for K-quants, 1024 = `LLAMA_FTYPE_GUESSED` for Q8_1/Q8_K,
//! which have none), `general.quantization_version = 2`, `quantize.tool`,
//! `quantize.ggml_type`, and every given metadata key containing a dot
//! (`quantize.imatrix.*_count` as i32, the rest as strings). Dims are in ggml order
//! (`ne[0]` = row length). Tensors kept unquantized are written F32/F16/BF16; methods of
//! other backends cannot be stored in .gguf (typed error). The writer is hand-written
//! (about 200 lines, sizes checked against the plan): gguf-rs-lib's builder takes tensor
//! data in memory before writing, which breaks quant's streaming. The reader reads v2 and
//! v3, checks every count and length against the file size before allocating, caps
//! strings (16 MiB) and array nesting (4), requires ≤ 4 dims, known type ids, aligned
//! in-bounds offsets, and returns [`quant_core::Error::InvalidFile`] otherwise. F32, F16
//! and BF16 tensors read back as plain tensors of that dtype (as llama-quantize reads
//! them: quantizing them is not a requantization); every other type as its
//! `gguf_config_*` method.
//!
//! With a `gguf_<ftype>` method and a .gguf input, the writer writes llama-quantize's key
//! list instead ([`ftype::llama_quantize_kv`]): the input's key/values in order and typed,
//! `general.quantization_version` and `general.file_type` moved last, then the
//! `quantize.imatrix.*` keys ([`ftype::llama_imatrix_kv`]).
//!
//! # llama-quantize file types
//!
//! `gguf_q4_0` … `gguf_iq4_xs`, the low-bit `gguf_iq2_xxs` … `gguf_iq3_m`, `gguf_iq1_s`,
//! `gguf_iq1_m`, `gguf_q2_k_s`, `gguf_tq1_0`, `gguf_tq2_0`, `gguf_mxfp4_moe`, and
//! `gguf_f16`, `gguf_bf16` (see [`ftype`]) reproduce
//! `llama-quantize IN OUT <FTYPE>` (llama.cpp b11312) byte for byte: their
//! [`QuantMethod::mixture`](quant_core::QuantMethod::mixture) gives every tensor the
//! `gguf_config_*` method of the type llama-quantize picks (or keeps it), in
//! llama-quantize's order; the parameters are llama-quantize's options (`imatrix`,
//! `imatrix_include`, `imatrix_exclude`, `output_tensor_type`, `token_embedding_type`,
//! `leave_output_tensor`, `tensor_type`, `pure`). The input must have llama.cpp tensor
//! names and key/values (`general.architecture`, `<arch>.block_count`, ...).
//!
//! # Hugging Face folders → llama.cpp's GGUF
//!
//! Writing a Hugging Face model folder to `.gguf` goes through the registered converter
//! ([`arch`]) first, which does what `convert_hf_to_gguf.py --outtype f32` (llama.cpp
//! b11312) does: llama.cpp tensor names (`token_embd`, `blk.N.attn_q`, …, `output_norm`,
//! `output`), the reference's tensor order (parts in order, names sorted in each),
//! `q_proj`/`k_proj` permuted for rope by `n_head`/`n_head_kv`, dropped tensors (rotary
//! `inv_freq`, BERT's `position_ids`, pooler and MLM heads), and its typed key/values in
//! its order: `general.*` (gguf-py's name/size-label/model-card heuristics), the
//! hyperparameters llama.cpp reads, and `tokenizer.ggml.*` from `tokenizer.model`
//! (SentencePiece, parsed with prost) or `tokenizer.json` (byte-level BPE with its merges,
//! or WordPiece; tokenized with the `tokenizers` crate to find llama.cpp's pre-tokenizer
//! name by its hash table), special token ids, add-BOS/EOS/SEP flags and the chat template
//! ([`arch::tokenizer`]). Architectures: `llama` (LlamaForCausalLM including Llama 3's
//! `rope_freqs`, MistralForCausalLM, MixtralForCausalLM with its experts stacked), `qwen2`,
//! `qwen3`, `qwen3moe`, `phi3`, `gemma2`, `gemma3` (text), `bert` (BertModel,
//! BertForMaskedLM, sentence-transformers folders with their pooling). The writer then writes those keys
//! first, with `general.file_type` set to the file's type, followed by quant's
//! `quantize.*`/`quant.*` keys; with `gguf_config_fp16`/`_bf16` (or a rule keeping every
//! tensor `float32`) the tensors are byte for byte those of `convert_hf_to_gguf.py
//! --outtype f16`/`bf16`/`f32`. A folder of another architecture is written as a generic
//! GGUF (names and values as stored) with a warning naming it. Not converted (typed
//! errors): SentencePiece-style `tokenizer.json` vocabularies without `tokenizer.model`,
//! pre-stacked expert tensors, classifier heads and rerankers, pytorch `.bin` weights,
//! CodeLlama's infill tokens; a config that disagrees with its checkpoint.
//!
//! # Speed
//!
//! Rows are quantized and dequantized in parallel with rayon; a tensor's NaN/Inf check
//! runs row by row inside the same pass. The row quantizers are plain Rust compiled
//! twice, for the baseline target and with AVX2 (picked at run time, see [`types::simd`]), and
//! the hot kernels work on 8-lane vectors (portable arrays, or AVX2 intrinsics) where
//! each lane is one independent computation running ggml's scalar operations in ggml's
//! order: the candidate scales of `make_qx_quants` (Q6_K, Q3_K/Q4_0/Q5_0 weighted) and
//! of the IQ4 search, the 16 sub-blocks of Q3_K's `make_q3_quants` (coordinate descent
//! included), the 8 positions of a Q4_0 block. `make_qkx2/3_quants` (Q2_K, Q4_K, Q5_K,
//! Q4_1/Q5_1 weighted) and Q6_K's `make_qx_quants` run one sub-block per lane
//! (`types::kquant_lanes`), 8 sub-blocks side by side. The straight ports (`*_scalar`)
//! stay in [`types::search`]; unit tests check the vector versions against them bit for
//! bit, and the reference vectors run with and without AVX2.
//!
//! # Not implemented
//!
//! NVFP4, Q1_0/Q2_0 (reading a .gguf that holds them is an "unsupported type id" error); `quantize_row_iq4_nl_ref` (a row reference
//! that differs from the chunk path llama-quantize uses; the chunk path is implemented);
//! the I8..F64 GGUF tensor types; big-endian GGUF.

#![deny(missing_docs)]

pub mod arch;
pub mod ftype;
pub mod gguf;
pub mod imatrix;
pub mod method;
pub mod types;

pub use ftype::{Ftype, FtypeOptions, ModelInfo, FTYPES};
pub use imatrix::{Imatrix, ImatrixStats, StatsEntries};
pub use method::{fallback_type, method_name, method_type, GgufMethod, METHODS};
pub use types::{dequantize, quantize, GgmlBlock, GgmlType};

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
