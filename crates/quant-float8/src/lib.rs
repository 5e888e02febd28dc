//! TorchAO weight quantization for quant: the 18 `TorchAoConfig` string types of
//! diffusers 0.32–0.37, computed exactly as torchao 0.15 computes them (every reference
//! vector of `testdata/torchao` is reproduced byte for byte), and stored in the
//! safetensors form that torchao ≥ 0.16 (diffusers ≥ 0.39, transformers 5) loads.
//!
//! # Methods
//!
//! | method (`torch_ao_config_…`) | torchao 0.15 object | weight numerics | stored as (torchao ≥ 0.16 class) |
//! |---|---|---|---|
//! | `int4wo` | `Int4WeightOnlyConfig` v2 (fbgemm `Int4Tensor`) | asymmetric min/max, groups of 128, f32 | `Int4Tensor` |
//! | `int4dq` | `Int8DynamicActivationInt4WeightConfig` | symmetric /7.5, groups of 32, eps finfo(wd).eps | `IntxUnpackedToInt8Tensor` (int4, activation `int8_asym_per_token`) |
//! | `int8wo` | `Int8WeightOnlyConfig` v1 | symmetric /127.5 per row, eps 2^-23 | `Int8Tensor` |
//! | `int8dq` | `Int8DynamicActivationInt8WeightConfig` v1 | same weight as int8wo | `Int8Tensor` (+ int8 activation kwargs) |
//! | `float8wo`, `float8wo_e5m2` | `Float8WeightOnlyConfig(e5m2)` — diffusers' `float8wo` **is e5m2** | per row, amax/57344 | `Float8Tensor` |
//! | `float8wo_e4m3` | `Float8WeightOnlyConfig(e4m3fn)` | per row, amax/448 | `Float8Tensor` |
//! | `float8dq`, `float8dq_e4m3`, `float8_e4m3_tensor` | `Float8DynamicActivationFloat8WeightConfig(PerTensor)` | per tensor, amax/448 | `Float8Tensor` |
//! | `float8_e4m3_row` | same with `PerRow` (registry key `float8dq_e4m3_row`) | per row, amax/448, bf16 weights only | `Float8Tensor` |
//! | `uint1wo` … `uint7wo` | `UIntXWeightOnlyConfig(uintN, group_size=64)` | asymmetric, integer zero point, groups of 64 | `IntxUnpackedToInt8Tensor` (intN, codes shifted) |
//!
//! `float8_e4m3_tensor` / `float8_e4m3_row` are the diffusers docstring shorthands; the
//! keys diffusers really builds are `float8dq_e4m3_tensor` / `float8dq_e4m3_row`, and these
//! two methods are exactly those. The three per-tensor names are numerically identical.
//!
//! # Numerics (torchao 0.15, `specs/TORCHAO.md`)
//!
//! W is `[N, K]` (out, in features); groups run along K; `wd` is the weight dtype (bf16,
//! f16 or f32). `wd(x)` means: compute the single operation in f32 and round the result
//! to `wd`, nearest even — PyTorch does exactly this for every op on bf16/f16 tensors, and
//! the port rounds after **every** op (for f32 weights `wd` is the identity). `round` is
//! round half to even. Ranges fold zero in (`lo = min(min W, 0)`, `hi = max(max W, 0)`)
//! except for int4wo.
//!
//! - **int8wo / int8dq** (per row): `scale = max(wd(max(-lo, hi) / 127.5), wd(2^-23))`;
//!   `q = clamp(round(wd(w · wd(1 / scale))), -128, 127)`. The reciprocal is rounded, then
//!   multiplied (torchao does not divide). int8dq skips weights with K ≤ 16.
//! - **int4dq** (groups of 32): `scale = max(wd(max(-lo, hi) / 7.5), wd(finfo(wd).eps))`
//!   — 2^-7 for bf16, so most small-weight groups get exactly 2^-7, as in torchao;
//!   `q = clamp(round(wd(w · wd(1 / scale))), -8, 7)`, zero point 0. Skipped when K % 32 ≠ 0.
//! - **uintNwo** (groups of 64, `qmax = 2^N − 1`):
//!   `scale = max(wd(wd(hi − lo) / qmax), wd(2^-23))`,
//!   `zp = clamp(−round(wd(lo / scale)), 0, qmax)`,
//!   `q = clamp(wd(round(wd(w · wd(1 / scale))) + zp), 0, qmax)`.
//! - **float8\*** : `scale = f32(wd(amax / fp8_max))` over the row or the whole tensor, no
//!   eps; `q = fp8(clamp(f32(w) / scale, ±fp8_max))` with a true f32 division and RNE
//!   ([`fp8`]: e4m3fn max 448, e5m2 max 57344, subnormals kept). float8dq\* skip weights
//!   with N or K not a multiple of 16.
//! - **int4wo** (fbgemm `int4_row_quantize_zp`, groups of 128, all in f32, no zero fold):
//!   `scale = max(hi − lo, 1e-6) / 15`, `zero = lo + scale · 8`,
//!   `q = clamp(round((w − lo) / scale), 0, 15) − 8`; scale and zero are cast to `wd` after
//!   the codes are computed. Skipped when K % 128 ≠ 0.
//!
//! Dequantization (torchao's `dequantize()`, bit-exact to the reference `dequant` in `wd`
//! and `dequant_f32` in f32): int8 / int4dq / uintN `wd((q − zp) · scale)`, float8
//! `wd(f32(q) · scale)`, int4wo `wd(q · scale + zero)`. [`quant_core::TensorRecord`]'s
//! `dequant_dtype` is the original weight dtype.
//!
//! **All-zero rows under float8.** torchao has no eps for float8: an all-zero row (or
//! weight, per tensor) gets scale 0, every code is `0/0` = NaN — on x86 the negative
//! default NaN, code `0xFF` — and dequantizes to NaN. quant **reproduces** this, as the
//! reference does (edge case row 0), so its files stay byte-identical to torchao's; the
//! NaN payload of the dequantized values is not reproduced (quant's bf16 encoder writes
//! the canonical `0x7FC0`, torch keeps another payload): the tests compare NaN as NaN.
//! Use an int method or keep such tensors unquantized (a rule) when this matters.
//! Non-finite weights are not specified by the reference and are not checked.
//!
//! # Which tensors
//!
//! 2-D tensors named `*weight` of dtype bf16, f16 or f32, except embedding tables
//! ([`quant_core::TensorMeta::is_embedding_weight`]): torchao's `quantize_` only touches
//! `nn.Linear` by default, and transformers/diffusers leave input embeddings out.
//! Everything else is kept as stored (`Selection::Keep`).
//! Where torchao silently leaves a weight unquantized (the skips above) quant keeps it
//! too and the engine reports it. Where torchao **raises** — uintNwo with K not a
//! multiple of 64 (or 8), float8_e4m3_row on a non-bf16 weight — the method returns a
//! per-tensor fallback to `basic_int8` (counted, printed, recorded; refused in strict mode).
//!
//! # Parameters
//!
//! `int4wo`, `int4dq` and `uintNwo` take `group_size` (torchao's kwarg; a power of two from
//! 8 to 1024; defaults 128, 32, 64). The other methods take none. f16 weights are computed
//! in f16 by the same rule (not covered by the reference vectors).
//!
//! # Layout (`specs/TORCHAO_SERIALIZATION.md`, pinned to torchao 0.18.0)
//!
//! A weight `P.weight` becomes `P._weight_qdata`, `P._weight_scale` and (where the class
//! has one) `P._weight_zero_point`, the keys torchao's `flatten_tensor_state_dict` uses:
//!
//! | class | qdata | scale | zero_point |
//! |---|---|---|---|
//! | `Float8Tensor` | F8_E4M3 / F8_E5M2 `[N, K]` | F32 `[N, 1]` per row, `[1, 1]` per tensor | — |
//! | `Int8Tensor` | I8 `[N, K]` | F32 `[N, 1]` (the `wd` value, widened) | I8 `[N, 1]` zeros |
//! | `Int4Tensor` | I8 `[N, K/2]`, even column in the low nibble | `wd` `[K/g, N]` (group-major) | `wd` `[K/g, N]` |
//! | `IntxUnpackedToInt8Tensor` | I8 `[N, K]` | `wd` `[N, K/g]` | I8 `[N, K/g]` |
//!
//! For uintNwo the codes and zero points are shifted down by 2^(N−1) into the signed
//! `intN` range torchao's class holds (`q − zp` is unchanged). They are stored one code per
//! byte: torchao ≥ 0.16 cannot load the packed `UintxTensor` of 0.15 from safetensors, so
//! uintNwo costs 8 bits per weight on disk here (the packing itself is in [`uintx`] and
//! checked against the reference shards). int8wo/int8dq keep torchao **0.15**'s codes;
//! torchao ≥ 0.16 computes int8 in f32 and differs by ±1 on a few % of bf16 codes — the
//! file still loads and dequantizes to the 0.15 weight.
//!
//! [`QuantMethod::artifacts`](quant_core::QuantMethod::artifacts) gives `__metadata__`:
//! `"format": "pt"`, `"tensor_names"` (the weights this method quantized in the file), and
//! per weight the JSON record `{"_type": <class>, "_data": {<attributes>},
//! "_tensor_data_names": [...]}` with torchao 0.18.0's attribute sets, written with
//! Python's `json.dumps` separators; and `config.json`'s `quantization_config`:
//! `{"quant_method": "torchao", "modules_to_not_convert": null, "quant_type": {"default":
//! config_to_dict(<config>)}}` with the torchao ≥ 0.16 config class listed above
//! (`Int8DynamicActivationIntxWeightConfig` for int4dq, `IntxWeightOnlyConfig(intN,
//! PerGroup(64), ASYMMETRIC)` for uintNwo).
//!
//! Reading back: a [`quant_core::format::LayoutEntry`] detector ([`layout::detect`])
//! recognises files with `tensor_names` metadata — written by quant or by torchao — and
//! returns a record per `Float8Tensor`, `Int8Tensor`, `Int4Tensor` and
//! `IntxUnpackedToInt8Tensor` weight (plain `{"_type": "Tensor"}` entries are left to the
//! generic loader). A missing part, a size or dtype that does not fit, bad JSON or a class
//! or variant quant cannot restore is an [`quant_core::Error`] naming the file and tensor.
//! Distinct names that store identically come back under one name: e5m2 weight-only as
//! `float8wo`, per-tensor dynamic as `float8dq`.
//!
//! # Speed
//!
//! Rows (or row chunks for per-tensor float8) run in parallel with rayon. The row
//! kernels are written without branches or libm calls (bit-level bf16 rounding, round
//! half to even by the 2^23 trick, integer-key min/max) so they vectorize, and each is
//! compiled twice — baseline x86-64 and AVX2, chosen at run time
//! ([`kernels::simd_enabled`]). Both builds do the same IEEE operations in the same order
//! (no FMA contraction), and the tests run every reference vector through both.
//!
//! # Not implemented
//!
//! - torchao ≤ 0.13's `int4wo` (tinygemm, `int4wo_v1_tinygemm` in the reference): not one
//!   of the 18 names (in torchao 0.15 `int4wo` is the fbgemm variant above).
//! - The run-time activation quantization of the `dq` methods (quant stores weights).
//! - The pickle (`.bin`) form of the string era, and the packed `UintxTensor` layout.
//! - torchao 0.18 cannot deserialize int4dq's activation enum from safetensors (its
//!   allow-list lacks it); quant writes it as torchao's encoder does and reads it back.
//! - `__metadata__` lists only the tensors this method quantized (that is all
//!   `artifacts()` sees). torchao's writer lists **every** tensor of the file in
//!   `tensor_names`, plain ones with the record `{"_type": "Tensor"}`
//!   ([`layout::PLAIN_TENSOR_RECORD`]); the engine, which sees the whole file, should add
//!   those and merge the lists when several torchao methods share a file.

pub mod fp8;
pub mod kernels;
pub mod layout;
pub mod method;
pub mod uintx;

pub use fp8::Fp8;
pub use method::{Granularity, Scheme, TorchAo, METHODS};

const BACKEND: &str = "quant-float8";

macro_rules! register {
    ($name:literal, $bits:expr, $params:expr, $summary:literal) => {
        quant_core::register_method!(quant_core::MethodEntry {
            name: $name,
            backend: BACKEND,
            bits_per_weight: $bits,
            summary: $summary,
            params: $params,
            create: |p| Ok(Box::new(TorchAo::new($name, p)?)),
        });
    };
}

const NONE: &[quant_core::ParamSpec] = &[];
const GROUP: &[quant_core::ParamSpec] = method::GROUP_PARAMS;

register!("torch_ao_config_int4wo", 4.25, GROUP, "torchao int4wo: fbgemm Int4Tensor, asymmetric min/max groups of 128, packed 2 per byte, bf16 scale and zero");
register!("torch_ao_config_int4dq", 8.75, GROUP, "torchao int4dq: symmetric int4 groups of 32 (amax/7.5, eps finfo(wd).eps) in int8 storage, for dynamic int8 activations");
register!(
    "torch_ao_config_int8wo",
    8.0,
    NONE,
    "torchao int8wo: symmetric per-row int8 (amax/127.5) computed in the weight dtype"
);
register!(
    "torch_ao_config_int8dq",
    8.0,
    NONE,
    "torchao int8dq: the int8wo weight, for dynamic per-token int8 activations"
);
register!(
    "torch_ao_config_float8wo",
    8.0,
    NONE,
    "torchao float8wo: per-row float8 e5m2 (diffusers' float8wo means e5m2), f32 scale"
);
register!(
    "torch_ao_config_float8wo_e5m2",
    8.0,
    NONE,
    "torchao float8wo_e5m2: per-row float8 e5m2, f32 scale"
);
register!(
    "torch_ao_config_float8wo_e4m3",
    8.0,
    NONE,
    "torchao float8wo_e4m3: per-row float8 e4m3fn, f32 scale"
);
register!(
    "torch_ao_config_float8dq",
    8.0,
    NONE,
    "torchao float8dq: per-tensor float8 e4m3fn weight for dynamic float8 activations"
);
register!(
    "torch_ao_config_float8dq_e4m3",
    8.0,
    NONE,
    "torchao float8dq_e4m3: per-tensor float8 e4m3fn weight for dynamic float8 activations"
);
register!(
    "torch_ao_config_float8_e4m3_tensor",
    8.0,
    NONE,
    "torchao float8dq_e4m3_tensor: per-tensor float8 e4m3fn weight for dynamic float8 activations"
);
register!("torch_ao_config_float8_e4m3_row", 8.0, NONE, "torchao float8dq_e4m3_row: per-row float8 e4m3fn weight (bf16 weights only) for dynamic per-token float8 activations");
register!("torch_ao_config_uint1wo", 8.375, GROUP, "torchao uint1wo: asymmetric 1-bit groups of 64 with integer zero point, stored unpacked as IntxUnpackedToInt8Tensor");
register!("torch_ao_config_uint2wo", 8.375, GROUP, "torchao uint2wo: asymmetric 2-bit groups of 64 with integer zero point, stored unpacked as IntxUnpackedToInt8Tensor");
register!("torch_ao_config_uint3wo", 8.375, GROUP, "torchao uint3wo: asymmetric 3-bit groups of 64 with integer zero point, stored unpacked as IntxUnpackedToInt8Tensor");
register!("torch_ao_config_uint4wo", 8.375, GROUP, "torchao uint4wo: asymmetric 4-bit groups of 64 with integer zero point, stored unpacked as IntxUnpackedToInt8Tensor");
register!("torch_ao_config_uint5wo", 8.375, GROUP, "torchao uint5wo: asymmetric 5-bit groups of 64 with integer zero point, stored unpacked as IntxUnpackedToInt8Tensor");
register!("torch_ao_config_uint6wo", 8.375, GROUP, "torchao uint6wo: asymmetric 6-bit groups of 64 with integer zero point, stored unpacked as IntxUnpackedToInt8Tensor");
register!("torch_ao_config_uint7wo", 8.375, GROUP, "torchao uint7wo: asymmetric 7-bit groups of 64 with integer zero point, stored unpacked as IntxUnpackedToInt8Tensor");

quant_core::register_layout!(quant_core::format::LayoutEntry {
    backend: BACKEND,
    detect: layout::detect,
});
