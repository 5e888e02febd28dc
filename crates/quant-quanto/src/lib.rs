//! optimum-quanto weight quantization for quant, byte-identical to optimum-quanto 0.2.7.
//!
//! Methods (all registered here):
//!
//! | method | qtype | stored parts under `P.weight` |
//! |---|---|---|
//! | `quanto_config_int8` | `qint8` | `._data` I8 (weight shape), `._scale` |
//! | `quanto_config_int4` | `qint4` | `._data._data` U8 (packed 2/byte), `._scale`, `._shift` |
//! | `quanto_config_int2` | `qint2` | `._data._data` U8 (packed 4/byte), `._scale`, `._shift` |
//! | `quanto_config_float8` | `qfloat8_e4m3fn` (default), `qfloat8_e5m2`, `qfloat8_e4m3fnuz` (`float8_format=`) | `._data` F8_E4M3 / F8_E5M2 / F8_E4M3FNUZ, `._scale` |
//!
//! Every quantized module also gets the scalar buffers `P.input_scale` and
//! `P.output_scale` (shape `[]`, value 1.0, model dtype) that every quanto `QModule`
//! registers; they are parts of the weight's record. Scales and shifts have the weight's
//! dtype (the *model dtype*: F32, F16 or BF16).
//!
//! # Arithmetic
//!
//! `rd(x)` rounds an f32 result to the model dtype with round-to-nearest-even (identity for
//! f32), because PyTorch computes each op on f16/bf16 tensors in f32 and rounds once. All
//! divisions are true f32 divisions. `W2 = W.reshape(out, -1)`.
//!
//! **qint8 / qfloat8** (`AbsmaxOptimizer`, axis 0):
//! ```text
//! rmax[r]  = max_j |W2[r, j]|
//! scale[r] = rd(rmax[r] / qmax)          qmax = 127 | 448 | 57344 | 240
//! q        = rd(W2[r, j] / scale[r])
//! qint8:   data = clamp(round_half_even(q), -128, 127)   (NaN → 0)
//! qfloat8: data = to_float8_rne(clamp(q, -qmax, qmax))
//! dequant: rd(scale[r] * data)
//! ```
//! Scale shape `[out, 1]` (`[out, 1, 1, 1]` for 4-D weights); a weight with one output row
//! has a scalar scale `[]` (quanto quantizes per tensor when the axis has size 1).
//!
//! **qint4 / qint2** (`MaxOptimizer`, axis 0, affine):
//! ```text
//! in_f  = numel / out
//! g     = first of 128, 96, 64, 32 dividing in_f when in_f > 128, else none
//! G     = W.reshape(-1, g)  (grouped)  or  W.reshape(out, -1)  (ungrouped)
//! scale = rd(rd(max(G_r) - min(G_r)) / (2^bits - 1))
//! shift = -min(G_r)
//! code  = clamp(round_half_even(rd(rd(G + shift) / scale)), 0, 2^bits - 1)   (NaN → 0)
//! dequant: rd(rd(scale * code) - shift), reshaped to the weight shape
//! ```
//! Codes are packed along dim 0 (`PackedTensor`): with `k = 8 / bits` codes per byte and
//! `Rp = ceil(R / k)`, packed row `r` holds code rows `r, r + Rp, ...` from the low bits up.
//! Grouped: data `[Rp, g]`, scale/shift `[R, 1]`; ungrouped: data is the weight shape
//! with `Rp` rows, scale/shift `[out, 1, ...]`.
//!
//! **TinyGemm (bf16, qint4, g = 128, 2-D)**: quanto's `freeze()` on CPU stores such weights
//! as a `TinyGemmWeightQBitsTensor`, whose serialized shift is
//! `rd(rd(8·scale) - rd(-shift + rd(8·scale)))` rather than `-min`; quant stores the same.
//!
//! **NaN bits**: an all-zero row gives scale 0 and 0/0 = NaN (a real optimum-quanto bug
//! with qfloat8; qint8 and qint4/qint2 turn it into code 0). quant reproduces the stored
//! bytes and dequantized bits of the reference: x86 NaN rules (default NaN 0xFFC00000, a
//! NaN operand returned quieted), bf16 NaN stored as 0xFFFF (ATen's AVX2 conversion),
//! float8 NaN decoded as c10 does. ATen's scalar tail loops (inner dimensions that are not a
//! multiple of the vector width) may give other NaN payloads; those are not modelled.
//!
//! # Which tensors
//!
//! Floating (F32/F16/BF16) weights named `*.weight` (or `weight`): 2-D ones (Linear) with
//! both layouts, except embeddings (module child name ending in `embedding(s)`/`embed`, or
//! `embed_tokens`, `embed_positions`, `wte`, `wpe`, `shared`), and 4-D ones (Conv2d) with
//! `layout=optimum`. Biases, norms and everything else are kept as stored. Modules whose
//! child name is in `modules_to_not_convert` are kept (diffusers matches the child name
//! too). Names alone cannot tell transformers' GPT-2-style `Conv1D` (2-D) from Linear, nor
//! `ConvTranspose2d` (4-D) from Conv2d; those are quantized although quanto would skip them
//! (a rule can keep them). Model-specific `_keep_in_fp32_modules` are not known here either.
//!
//! # Files
//!
//! - `layout=diffusers` (default): `config.json` gets diffusers' `quantization_config`
//!   `{"modules_to_not_convert": null, "quant_method": "quanto", "weights_dtype": "int4"}`,
//!   which `Model.from_pretrained` loads. Only qfloat8 e4m3fn exists there, so e5m2/e4m3fnuz
//!   require `layout=optimum`. Do not use it for transformers models: transformers reads a
//!   quanto `quantization_config` as quantize-on-load and silently re-initialises weights.
//! - `layout=optimum`: no `quantization_config`; load with optimum-quanto's
//!   `requantize` / `QuantizedModelForCausalLM.from_pretrained` /
//!   `QuantizedDiffusersModel.from_pretrained`.
//! - Both write the quantization map `quanto_qmap.json`
//!   (`{"module": {"weights": "qint4", "activations": "none"}}`, indented like Python's
//!   `json.dump(indent=4)`), and record the original shapes of grouped qint4/qint2 weights in
//!   the safetensors metadata key `quanto.weight_shapes` (JSON), since the stored groups do
//!   not determine them. The metadata also carries `format: pt`, without which
//!   transformers refuses to load a safetensors file.
//!
//! # Loading
//!
//! A layout detector recognises quanto safetensors files (keys `*._data`, `*._data._data`,
//! `*._scale`, `*._shift`) and returns a record per quantized weight. The qtype comes from
//! the data dtype (I8, F8_*) or, for packed data, from the packing ratio, `config.json`'s
//! `weights_dtype`, or the other weights of the file. The original shape of a grouped
//! qint4/qint2 weight comes from `quanto.weight_shapes`, else from the module's bias
//! (`[out, in_f]`, so a grouped Conv2d comes back flattened to 2-D); without either it is
//! ambiguous and reported as an error.
//!
//! # Not implemented
//!
//! `HqqOptimizer` (optional in optimum-quanto), activation quantization and calibration
//! (`input_scale`/`output_scale` are always 1.0), the XPU integer zero-point variant, and
//! the kernel-specific in-memory layouts (AWQ, Marlin, TinyGemm packing; the serialized
//! form is always the kernel-agnostic one).

mod detect;
mod fp8;
mod method;
mod num;
mod qbits;
mod qbytes;

pub use fp8::Float8Format;
pub use method::{
    parse_qmap, Layout, QType, Quanto, FLOAT8_PARAMS, INT_PARAMS, QMAP_FILE, SHAPES_METADATA_KEY,
};
pub use qbits::group_size;

/// The backend name used in registrations and errors.
pub const BACKEND: &str = "quant-quanto";

quant_core::register_method!(quant_core::MethodEntry {
    name: "quanto_config_int8",
    backend: BACKEND,
    bits_per_weight: 8.0,
    summary:
        "optimum-quanto qint8: symmetric int8 per output row (absmax scale in the model dtype)",
    params: INT_PARAMS,
    create: |p| Ok(Box::new(Quanto::from_int_params(QType::Int8, p)?)),
});

quant_core::register_method!(quant_core::MethodEntry {
    name: "quanto_config_int4",
    backend: BACKEND,
    bits_per_weight: 4.25,
    summary: "optimum-quanto qint4: affine 4-bit groups of 128 (scale + shift), packed 2 per byte",
    params: INT_PARAMS,
    create: |p| Ok(Box::new(Quanto::from_int_params(QType::Int4, p)?)),
});

quant_core::register_method!(quant_core::MethodEntry {
    name: "quanto_config_int2",
    backend: BACKEND,
    bits_per_weight: 2.25,
    summary: "optimum-quanto qint2: affine 2-bit groups of 128 (scale + shift), packed 4 per byte",
    params: INT_PARAMS,
    create: |p| Ok(Box::new(Quanto::from_int_params(QType::Int2, p)?)),
});

quant_core::register_method!(quant_core::MethodEntry {
    name: "quanto_config_float8",
    backend: BACKEND,
    bits_per_weight: 8.0,
    summary:
        "optimum-quanto qfloat8 (e4m3fn; e5m2 / e4m3fnuz by parameter): symmetric per output row",
    params: FLOAT8_PARAMS,
    create: |p| Ok(Box::new(Quanto::from_float8_params(p)?)),
});

quant_core::register_layout!(quant_core::format::LayoutEntry {
    backend: BACKEND,
    detect: detect::detect,
});
