//! llama-quantize's file types (`llama_ftype`) as per-tensor type mixtures, exactly as
//! llama.cpp b11312 chooses them (`src/llama-quant.cpp`).
//!
//! [`plan`] is a pure function: given an [`Ftype`], the model's hyper-parameters
//! ([`ModelInfo`], read from the GGUF metadata as llama.cpp's loader does), the input tensors
//! and the llama-quantize options ([`FtypeOptions`]), it returns every tensor's output GGML
//! type in llama-quantize's tensor order:
//!
//! - **Order**: llama.cpp's `weights_map` order: tensors outside a block (`blk.N.`) first,
//!   then by block number, each group by name (byte order).
//! - **Which tensors**: `tensor_allows_quantization` (≥ 2 ggml dims, name ending in
//!   `weight`, not a norm, MoE router, position/token-type embedding, ...); the others keep
//!   their stored type.
//! - **Type**: `llama_tensor_get_type`: `--token-embedding-type` / `--output-tensor-type`
//!   first, then the ftype's default type; for a quantized default, the first matching
//!   `--tensor-type` pattern or (unless `--pure`) the ftype's mixture rules
//!   (`llama_tensor_get_type_impl`: output / tied token embedding to Q6_K or Q8_0, attn_v,
//!   ffn_down by layer through the `use_more_bits` counters, attn_output, attn_qkv, the
//!   Falcon, 70B and 8-expert cases), then the shape fallback (`tensor_type_fallback`) when
//!   a row does not fit the block.
//!
//! The counters (`i_attention_wv`, `i_ffn_down`, ...) advance in that order, as in
//! llama.cpp. The low-bit ftypes (IQ1_S … IQ3_M, Q2_K_S, TQ1_0/TQ2_0, MXFP4_MOE) follow
//! their own rules for the output, token embedding, attn_v/k/q, ffn_down/gate/up and
//! attn_output tensors; llama-quantize refuses six of them without an importance matrix
//! ([`Ftype::requires_imatrix`]), and llama.cpp refuses any tensor of a lattice type (or
//! Q2_K in Q2_K_S) without importance weights ([`tensor_requires_imatrix`]).
//! Architectures whose rules are special in ways not ported here (`glm5-next`,
//! `bailingmoe3`) are refused.

pub mod kv;
mod method;
mod rules;
mod select;

use std::collections::BTreeMap;

use quant_core::{DType, Error, Result, TensorMeta};
use regex::Regex;

use crate::types::GgmlType;

use rules::{Category, State};
use select::{allows_quantization, tensor_order};

pub use kv::{llama_ftype, llama_imatrix_kv, llama_quantize_kv};
pub use method::{is_ftype_method, FtypeMethod, FTYPE_PARAMS};
pub use select::tensor_order as llama_tensor_order;

/// A llama-quantize file type (`llama_ftype`) offered as a quant method.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ftype {
    /// `LLAMA_FTYPE_MOSTLY_Q4_0` (2).
    Q4_0,
    /// `LLAMA_FTYPE_MOSTLY_Q4_1` (3).
    Q4_1,
    /// `LLAMA_FTYPE_MOSTLY_Q5_0` (8).
    Q5_0,
    /// `LLAMA_FTYPE_MOSTLY_Q5_1` (9).
    Q5_1,
    /// `LLAMA_FTYPE_MOSTLY_Q8_0` (7).
    Q8_0,
    /// `LLAMA_FTYPE_MOSTLY_Q2_K` (10).
    Q2_K,
    /// `LLAMA_FTYPE_MOSTLY_Q3_K_S` (11).
    Q3_K_S,
    /// `LLAMA_FTYPE_MOSTLY_Q3_K_M` (12).
    Q3_K_M,
    /// `LLAMA_FTYPE_MOSTLY_Q3_K_L` (13).
    Q3_K_L,
    /// `LLAMA_FTYPE_MOSTLY_Q4_K_S` (14).
    Q4_K_S,
    /// `LLAMA_FTYPE_MOSTLY_Q4_K_M` (15).
    Q4_K_M,
    /// `LLAMA_FTYPE_MOSTLY_Q5_K_S` (16).
    Q5_K_S,
    /// `LLAMA_FTYPE_MOSTLY_Q5_K_M` (17).
    Q5_K_M,
    /// `LLAMA_FTYPE_MOSTLY_Q6_K` (18).
    Q6_K,
    /// `LLAMA_FTYPE_MOSTLY_IQ4_NL` (25).
    IQ4_NL,
    /// `LLAMA_FTYPE_MOSTLY_IQ4_XS` (30).
    IQ4_XS,
    /// `LLAMA_FTYPE_MOSTLY_IQ2_XXS` (19).
    IQ2_XXS,
    /// `LLAMA_FTYPE_MOSTLY_IQ2_XS` (20).
    IQ2_XS,
    /// `LLAMA_FTYPE_MOSTLY_Q2_K_S` (21).
    Q2_K_S,
    /// `LLAMA_FTYPE_MOSTLY_IQ3_XS` (22).
    IQ3_XS,
    /// `LLAMA_FTYPE_MOSTLY_IQ3_XXS` (23).
    IQ3_XXS,
    /// `LLAMA_FTYPE_MOSTLY_IQ1_S` (24).
    IQ1_S,
    /// `LLAMA_FTYPE_MOSTLY_IQ3_S` (26).
    IQ3_S,
    /// `LLAMA_FTYPE_MOSTLY_IQ3_M` (27).
    IQ3_M,
    /// `LLAMA_FTYPE_MOSTLY_IQ2_S` (28).
    IQ2_S,
    /// `LLAMA_FTYPE_MOSTLY_IQ2_M` (29).
    IQ2_M,
    /// `LLAMA_FTYPE_MOSTLY_IQ1_M` (31).
    IQ1_M,
    /// `LLAMA_FTYPE_MOSTLY_TQ1_0` (36).
    TQ1_0,
    /// `LLAMA_FTYPE_MOSTLY_TQ2_0` (37).
    TQ2_0,
    /// `LLAMA_FTYPE_MOSTLY_MXFP4_MOE` (38).
    MXFP4_MOE,
    /// `LLAMA_FTYPE_MOSTLY_F16` (1).
    F16,
    /// `LLAMA_FTYPE_MOSTLY_BF16` (32).
    BF16,
}

/// Every supported ftype: the K-quant and IQ4 ones, the low-bit ones (issue #25), F16, BF16.
pub const FTYPES: [Ftype; 32] = [
    Ftype::Q4_0,
    Ftype::Q4_1,
    Ftype::Q5_0,
    Ftype::Q5_1,
    Ftype::Q8_0,
    Ftype::Q2_K,
    Ftype::Q3_K_S,
    Ftype::Q3_K_M,
    Ftype::Q3_K_L,
    Ftype::Q4_K_S,
    Ftype::Q4_K_M,
    Ftype::Q5_K_S,
    Ftype::Q5_K_M,
    Ftype::Q6_K,
    Ftype::IQ4_NL,
    Ftype::IQ4_XS,
    Ftype::IQ2_XXS,
    Ftype::IQ2_XS,
    Ftype::IQ2_S,
    Ftype::IQ2_M,
    Ftype::IQ3_XXS,
    Ftype::IQ3_XS,
    Ftype::IQ3_S,
    Ftype::IQ3_M,
    Ftype::IQ1_S,
    Ftype::IQ1_M,
    Ftype::Q2_K_S,
    Ftype::TQ1_0,
    Ftype::TQ2_0,
    Ftype::MXFP4_MOE,
    Ftype::F16,
    Ftype::BF16,
];

impl Ftype {
    /// The `llama_ftype` value written as `general.file_type`.
    pub const fn id(self) -> u32 {
        match self {
            Ftype::F16 => 1,
            Ftype::Q4_0 => 2,
            Ftype::Q4_1 => 3,
            Ftype::Q8_0 => 7,
            Ftype::Q5_0 => 8,
            Ftype::Q5_1 => 9,
            Ftype::Q2_K => 10,
            Ftype::Q3_K_S => 11,
            Ftype::Q3_K_M => 12,
            Ftype::Q3_K_L => 13,
            Ftype::Q4_K_S => 14,
            Ftype::Q4_K_M => 15,
            Ftype::Q5_K_S => 16,
            Ftype::Q5_K_M => 17,
            Ftype::Q6_K => 18,
            Ftype::IQ4_NL => 25,
            Ftype::IQ4_XS => 30,
            Ftype::IQ2_XXS => 19,
            Ftype::IQ2_XS => 20,
            Ftype::Q2_K_S => 21,
            Ftype::IQ3_XS => 22,
            Ftype::IQ3_XXS => 23,
            Ftype::IQ1_S => 24,
            Ftype::IQ3_S => 26,
            Ftype::IQ3_M => 27,
            Ftype::IQ2_S => 28,
            Ftype::IQ2_M => 29,
            Ftype::IQ1_M => 31,
            Ftype::TQ1_0 => 36,
            Ftype::TQ2_0 => 37,
            Ftype::MXFP4_MOE => 38,
            Ftype::BF16 => 32,
        }
    }

    /// llama-quantize's name, e.g. `Q4_K_M`.
    pub const fn name(self) -> &'static str {
        match self {
            Ftype::Q4_0 => "Q4_0",
            Ftype::Q4_1 => "Q4_1",
            Ftype::Q5_0 => "Q5_0",
            Ftype::Q5_1 => "Q5_1",
            Ftype::Q8_0 => "Q8_0",
            Ftype::Q2_K => "Q2_K",
            Ftype::Q3_K_S => "Q3_K_S",
            Ftype::Q3_K_M => "Q3_K_M",
            Ftype::Q3_K_L => "Q3_K_L",
            Ftype::Q4_K_S => "Q4_K_S",
            Ftype::Q4_K_M => "Q4_K_M",
            Ftype::Q5_K_S => "Q5_K_S",
            Ftype::Q5_K_M => "Q5_K_M",
            Ftype::Q6_K => "Q6_K",
            Ftype::IQ4_NL => "IQ4_NL",
            Ftype::IQ4_XS => "IQ4_XS",
            Ftype::F16 => "F16",
            Ftype::IQ2_XXS => "IQ2_XXS",
            Ftype::IQ2_XS => "IQ2_XS",
            Ftype::Q2_K_S => "Q2_K_S",
            Ftype::IQ3_XS => "IQ3_XS",
            Ftype::IQ3_XXS => "IQ3_XXS",
            Ftype::IQ1_S => "IQ1_S",
            Ftype::IQ3_S => "IQ3_S",
            Ftype::IQ3_M => "IQ3_M",
            Ftype::IQ2_S => "IQ2_S",
            Ftype::IQ2_M => "IQ2_M",
            Ftype::IQ1_M => "IQ1_M",
            Ftype::TQ1_0 => "TQ1_0",
            Ftype::TQ2_0 => "TQ2_0",
            Ftype::MXFP4_MOE => "MXFP4_MOE",
            Ftype::BF16 => "BF16",
        }
    }

    /// The quant method name, e.g. `gguf_q4_k_m`.
    pub const fn method(self) -> &'static str {
        match self {
            Ftype::Q4_0 => "gguf_q4_0",
            Ftype::Q4_1 => "gguf_q4_1",
            Ftype::Q5_0 => "gguf_q5_0",
            Ftype::Q5_1 => "gguf_q5_1",
            Ftype::Q8_0 => "gguf_q8_0",
            Ftype::Q2_K => "gguf_q2_k",
            Ftype::Q3_K_S => "gguf_q3_k_s",
            Ftype::Q3_K_M => "gguf_q3_k_m",
            Ftype::Q3_K_L => "gguf_q3_k_l",
            Ftype::Q4_K_S => "gguf_q4_k_s",
            Ftype::Q4_K_M => "gguf_q4_k_m",
            Ftype::Q5_K_S => "gguf_q5_k_s",
            Ftype::Q5_K_M => "gguf_q5_k_m",
            Ftype::Q6_K => "gguf_q6_k",
            Ftype::IQ4_NL => "gguf_iq4_nl",
            Ftype::IQ4_XS => "gguf_iq4_xs",
            Ftype::F16 => "gguf_f16",
            Ftype::IQ2_XXS => "gguf_iq2_xxs",
            Ftype::IQ2_XS => "gguf_iq2_xs",
            Ftype::Q2_K_S => "gguf_q2_k_s",
            Ftype::IQ3_XS => "gguf_iq3_xs",
            Ftype::IQ3_XXS => "gguf_iq3_xxs",
            Ftype::IQ1_S => "gguf_iq1_s",
            Ftype::IQ3_S => "gguf_iq3_s",
            Ftype::IQ3_M => "gguf_iq3_m",
            Ftype::IQ2_S => "gguf_iq2_s",
            Ftype::IQ2_M => "gguf_iq2_m",
            Ftype::IQ1_M => "gguf_iq1_m",
            Ftype::TQ1_0 => "gguf_tq1_0",
            Ftype::TQ2_0 => "gguf_tq2_0",
            Ftype::MXFP4_MOE => "gguf_mxfp4_moe",
            Ftype::BF16 => "gguf_bf16",
        }
    }

    /// The ftype of llama-quantize's name (case-insensitive), e.g. `q4_k_m`.
    pub fn from_name(name: &str) -> Option<Ftype> {
        FTYPES
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// The ftype of a method name, e.g. `gguf_q4_k_m`.
    pub fn from_method(method: &str) -> Option<Ftype> {
        FTYPES.into_iter().find(|f| f.method() == method)
    }

    /// Whether llama-quantize refuses this file type without an importance matrix
    /// ("Please do not use IQ1_S, IQ1_M, IQ2_S, IQ2_XXS, IQ2_XS or Q2_K_S quantization
    /// without an importance matrix").
    pub const fn requires_imatrix(self) -> bool {
        matches!(
            self,
            Ftype::IQ1_S
                | Ftype::IQ1_M
                | Ftype::IQ2_S
                | Ftype::IQ2_XXS
                | Ftype::IQ2_XS
                | Ftype::Q2_K_S
        )
    }

    /// The llama.cpp family of low-bit ftypes that share the IQ1/IQ2 rules.
    const fn is_iq1_iq2(self) -> bool {
        matches!(
            self,
            Ftype::IQ2_XXS
                | Ftype::IQ2_XS
                | Ftype::IQ1_S
                | Ftype::IQ2_S
                | Ftype::IQ2_M
                | Ftype::IQ1_M
        )
    }

    /// `llama_ftype_get_default_type`.
    pub const fn default_type(self) -> GgmlType {
        match self {
            Ftype::Q4_0 => GgmlType::Q4_0,
            Ftype::Q4_1 => GgmlType::Q4_1,
            Ftype::Q5_0 => GgmlType::Q5_0,
            Ftype::Q5_1 => GgmlType::Q5_1,
            Ftype::Q8_0 => GgmlType::Q8_0,
            Ftype::Q2_K => GgmlType::Q2_K,
            Ftype::Q3_K_S | Ftype::Q3_K_M | Ftype::Q3_K_L => GgmlType::Q3_K,
            Ftype::Q4_K_S | Ftype::Q4_K_M => GgmlType::Q4_K,
            Ftype::Q5_K_S | Ftype::Q5_K_M => GgmlType::Q5_K,
            Ftype::Q6_K => GgmlType::Q6_K,
            Ftype::IQ4_NL => GgmlType::IQ4_NL,
            Ftype::IQ4_XS => GgmlType::IQ4_XS,
            Ftype::F16 => GgmlType::F16,
            Ftype::IQ2_XXS => GgmlType::IQ2_XXS,
            Ftype::IQ2_XS => GgmlType::IQ2_XS,
            Ftype::Q2_K_S => GgmlType::Q2_K,
            Ftype::IQ3_XS => GgmlType::IQ3_S,
            Ftype::IQ3_XXS => GgmlType::IQ3_XXS,
            Ftype::IQ1_S => GgmlType::IQ1_S,
            Ftype::IQ3_S => GgmlType::IQ3_S,
            Ftype::IQ3_M => GgmlType::IQ3_S,
            Ftype::IQ2_S => GgmlType::IQ2_XS,
            Ftype::IQ2_M => GgmlType::IQ2_S,
            Ftype::IQ1_M => GgmlType::IQ1_M,
            Ftype::TQ1_0 => GgmlType::TQ1_0,
            Ftype::TQ2_0 => GgmlType::TQ2_0,
            Ftype::MXFP4_MOE => GgmlType::MXFP4,
            Ftype::BF16 => GgmlType::BF16,
        }
    }
}

/// The hyper-parameters llama-quantize's type choice depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// `general.architecture`.
    pub arch: String,
    /// `<arch>.block_count` (`n_layer_all`).
    pub n_layer: u32,
    /// `<arch>.attention.head_count` (of layer 0).
    pub n_head: u32,
    /// `<arch>.attention.head_count_kv` (of layer 0; `n_head` when absent).
    pub n_head_kv: u32,
    /// `<arch>.expert_count` (0 when absent).
    pub n_expert: u32,
}

impl ModelInfo {
    /// Reads the hyper-parameters from a GGUF's metadata (values as text, per-layer
    /// arrays as `[a, b, ...]`); `source` names the input in errors.
    pub fn from_metadata(metadata: &BTreeMap<String, String>, source: &str) -> Result<Self> {
        let bad = |key: &str, reason: String| Error::InvalidFile {
            path: source.into(),
            format: "gguf",
            reason: format!("metadata {key}: {reason}"),
        };
        let arch = metadata
            .get("general.architecture")
            .cloned()
            .ok_or_else(|| {
                bad(
                    "general.architecture",
                    "missing (not a llama.cpp model)".into(),
                )
            })?;
        if matches!(arch.as_str(), "glm5-next" | "bailingmoe3") {
            return Err(Error::Unsupported {
                method: "gguf ftypes".into(),
                op: format!(
                    "architecture '{arch}' (its llama-quantize special cases are not ported)"
                ),
            });
        }
        let get = |suffix: &str| -> Result<Option<u32>> {
            let key = format!("{arch}.{suffix}");
            let Some(text) = metadata.get(&key) else {
                return Ok(None);
            };
            // Per-layer arrays: layer 0's value, as llama.cpp's n_head() / n_head_kv().
            let first = text
                .trim_start_matches('[')
                .split([',', ']'])
                .next()
                .unwrap_or("")
                .trim();
            first
                .parse::<u32>()
                .map(Some)
                .map_err(|_| bad(&key, format!("'{text}' is not an unsigned integer")))
        };
        let n_layer = get("block_count")?
            .ok_or_else(|| bad(&format!("{arch}.block_count"), "missing".into()))?;
        let n_head = get("attention.head_count")?.unwrap_or(0);
        let n_head_kv = get("attention.head_count_kv")?.unwrap_or(n_head);
        let n_expert = get("expert_count")?.unwrap_or(0);
        Ok(ModelInfo {
            arch,
            n_layer,
            n_head,
            n_head_kv,
            n_expert,
        })
    }

    /// `hparams.n_gqa()`: query heads per key/value head (0 without kv heads).
    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// `model.type == LLM_TYPE_70B`, as the architectures' loaders set it.
    fn is_70b(&self) -> bool {
        match self.arch.as_str() {
            "llama" => self.n_expert != 8 && self.n_layer == 80 && self.n_head != self.n_head_kv,
            "qwen2" | "deci" | "olmo" => self.n_layer == 80,
            "jais2" => self.n_layer == 68,
            _ => false,
        }
    }

    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }
}

/// llama-quantize's options that change the tensor types.
#[derive(Clone, Debug, Default)]
pub struct FtypeOptions {
    /// `--output-tensor-type`.
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--leave-output-tensor`: `output.weight` keeps its stored type.
    pub leave_output_tensor: bool,
    /// `--pure`: no mixture rules, only the default type (and the shape fallback).
    pub pure: bool,
    /// `--tensor-type PATTERN=TYPE`, in order (the first pattern found in a name wins).
    pub tensor_types: Vec<(Regex, GgmlType)>,
    /// An importance matrix is used (`qs.has_imatrix`: changes ffn_down for Q4_0/Q5_0 and
    /// IQ4_NL/IQ4_XS).
    pub has_imatrix: bool,
}

/// llama.cpp's `tensor_requires_imatrix`: a tensor of type `ty` in an `ftype` file that
/// llama.cpp refuses to quantize without importance weights (the lattice types IQ1_S,
/// IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS; Q2_K in a Q2_K_S file), except the token
/// embedding and output.
pub fn tensor_requires_imatrix(name: &str, ty: GgmlType, ftype: Ftype) -> bool {
    if matches!(
        name,
        "token_embd.weight" | "per_layer_token_embd.weight" | "output.weight"
    ) {
        return false;
    }
    match ty {
        GgmlType::IQ3_XXS
        | GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
        | GgmlType::IQ1_M
        | GgmlType::IQ1_S => true,
        GgmlType::Q2_K => ftype == Ftype::Q2_K_S,
        _ => false,
    }
}

/// The choice for one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPlan {
    /// Index into the input tensor list.
    pub index: usize,
    /// The output type; `None` for a non-floating tensor kept as stored.
    pub ty: Option<GgmlType>,
    /// The output type equals the stored one (copied, not converted).
    pub keep: bool,
    /// Why the mixture's type was replaced by the shape fallback, if it was.
    pub fallback: Option<String>,
}

/// The GGML type a stored dtype is read as (`None`: not a floating type).
fn stored_type(dtype: DType) -> Option<GgmlType> {
    match dtype {
        DType::F32 => Some(GgmlType::F32),
        DType::F16 => Some(GgmlType::F16),
        DType::BF16 => Some(GgmlType::BF16),
        _ => None,
    }
}

/// Every tensor's output type for `ftype`, in llama-quantize's order (see the module
/// docs). `tensors` are the input tensors with llama.cpp names, shapes outermost first.
/// A non-floating tensor llama-quantize would quantize (already quantized, i.e. a
/// requantization) is refused.
pub fn plan(
    ftype: Ftype,
    model: &ModelInfo,
    tensors: &[TensorMeta],
    opts: &FtypeOptions,
) -> Result<Vec<TensorPlan>> {
    let order = tensor_order(&tensors.iter().map(|t| &t.name).collect::<Vec<_>>());
    let mut state = State {
        ftype,
        model,
        opts,
        n_attention_wv: tensors
            .iter()
            .filter(|t| Category::of(&t.name).is_attn_v())
            .count() as i64,
        i_attention_wv: 0,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
        has_tied_embeddings: !tensors
            .iter()
            .any(|t| Category::of(&t.name) == Category::Output),
    };
    let mut out = Vec::with_capacity(tensors.len());
    for index in order {
        let t = &tensors[index];
        let stored = stored_type(t.dtype);
        if !allows_quantization(&t.name, &t.shape, opts) {
            out.push(TensorPlan {
                index,
                ty: stored,
                keep: true,
                fallback: None,
            });
            continue;
        }
        if stored.is_none() {
            return Err(Error::Unsupported {
                method: ftype.method().into(),
                op: format!(
                    "requantizing tensor '{}' stored as {:?} (llama-quantize needs --allow-requantize; give an F32/F16/BF16 model)",
                    t.name, t.dtype
                ),
            });
        }
        // ggml's ne[2] (the expert count of a 3-D expert tensor).
        let ne2 = if t.shape.len() >= 3 {
            t.shape[t.shape.len() - 3]
        } else {
            1
        };
        let (ty, fallback) = state.tensor_type(&t.name, t.row_len(), ne2, Category::of(&t.name))?;
        out.push(TensorPlan {
            index,
            ty: Some(ty),
            keep: Some(ty) == stored,
            fallback,
        });
    }
    Ok(out)
}
