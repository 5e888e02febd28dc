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
//! llama.cpp. Only the branches reachable with the 18 supported ftypes are ported (the IQ1,
//! IQ2, IQ3, TQ, Q2_K_S and MXFP4 ftypes are not offered); architectures whose rules are
//! special in ways not ported here (`glm5-next`, `bailingmoe3`) are refused.

mod method;

use std::collections::BTreeMap;

use quant_core::{DType, Error, Result, TensorMeta};
use regex::Regex;

use crate::block::GgmlType;
use crate::method::fallback_type;

pub use method::{is_ftype_method, FtypeMethod, FTYPE_PARAMS};

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
    /// `LLAMA_FTYPE_MOSTLY_F16` (1).
    F16,
    /// `LLAMA_FTYPE_MOSTLY_BF16` (32).
    BF16,
}

/// Every supported ftype, in the order.
pub const FTYPES: [Ftype; 18] = [
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttentionQkv,
    AttentionKvB,
    AttentionV,
    AttentionK,
    AttentionQ,
    AttentionOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

impl Category {
    /// `tensor_get_category`: exact names first, then the first substring found.
    fn of(name: &str) -> Category {
        const BY_SUBSTRING: [(&str, Category); 9] = [
            ("attn_qkv.weight", Category::AttentionQkv),
            ("attn_kv_b.weight", Category::AttentionKvB),
            ("attn_v.weight", Category::AttentionV),
            ("attn_k.weight", Category::AttentionK),
            ("attn_q.weight", Category::AttentionQ),
            ("attn_output.weight", Category::AttentionOutput),
            ("ffn_up", Category::FfnUp),
            ("ffn_gate", Category::FfnGate),
            ("ffn_down", Category::FfnDown),
        ];
        match name {
            "output.weight" => Category::Output,
            "token_embd.weight" | "per_layer_token_embd.weight" => Category::TokenEmbd,
            _ => BY_SUBSTRING
                .iter()
                .find(|(s, _)| name.contains(s))
                .map_or(Category::Other, |(_, c)| *c),
        }
    }

    /// `category_is_attn_v`.
    fn is_attn_v(self) -> bool {
        matches!(
            self,
            Category::AttentionV | Category::AttentionQkv | Category::AttentionKvB
        )
    }
}

/// `sscanf(name, "blk.%d.", &layer)`: the block number, if the name starts with one.
fn block_of(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?.trim_start();
    let (sign, digits) = match rest.as_bytes().first() {
        Some(b'-') => (-1, &rest[1..]),
        Some(b'+') => (1, &rest[1..]),
        _ => (1, rest),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    let n = digits[..end].parse::<i64>().unwrap_or(i64::MAX);
    Some(sign * n.min(i64::from(i32::MAX)))
}

/// llama.cpp's tensor order (`weight_name_comparer`): tensors outside a block first, then
/// by block number, then by name. Returns indices into `names`.
pub fn tensor_order<S: AsRef<str>>(names: &[S]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| {
        let (na, nb) = (names[a].as_ref(), names[b].as_ref());
        let la = block_of(na).unwrap_or(-1);
        let lb = block_of(nb).unwrap_or(-1);
        la.cmp(&lb).then_with(|| na.cmp(nb))
    });
    order
}

/// `ggml_n_dims` of a shape given outermost first.
fn n_dims(shape: &[usize]) -> usize {
    shape
        .iter()
        .rev()
        .rposition(|&d| d > 1)
        .map_or(1, |i| i + 1)
}

/// `tensor_allows_quantization` for the architectures supported here.
fn allows_quantization(name: &str, shape: &[usize], opts: &FtypeOptions) -> bool {
    if n_dims(shape) < 2 {
        return false;
    }
    // `name.rfind("weight") == name.size() - 6`: also true for any 5-byte name, whose
    // size - 6 wraps to npos in C++.
    let ends_with_weight = name.ends_with("weight") || name.len() == 5;
    const EXCLUDED: [&str; 35] = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    ends_with_weight
        && !(opts.leave_output_tensor && name == "output.weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
        && !EXCLUDED.iter().any(|e| name.contains(e))
}

/// llama.cpp's `use_more_bits`.
fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// `quantize_state_impl`: the counters.
struct State<'a> {
    ftype: Ftype,
    model: &'a ModelInfo,
    opts: &'a FtypeOptions,
    n_attention_wv: i64,
    i_attention_wv: i64,
    i_ffn_down: i64,
    i_ffn_gate: i64,
    i_ffn_up: i64,
    has_tied_embeddings: bool,
}

impl State<'_> {
    /// `layer_info`: the layer of an FFN tensor (parsed from the name with experts).
    fn layer_info(&self, i: i64, name: &str) -> Result<(i64, i64)> {
        let n = i64::from(self.model.n_layer);
        if self.model.n_expert.max(1) > 1 {
            let bad = |reason: String| Error::tensor("(model)", name, reason);
            let layer = block_of(name)
                .ok_or_else(|| bad("failed to determine the layer of an expert tensor".into()))?;
            if layer < 0 || layer >= n {
                return Err(bad(format!("bad layer {layer}: must be in [0, {n})")));
            }
            return Ok((layer, n));
        }
        Ok((i, n))
    }

    /// `llama_tensor_get_type_impl` for the supported ftypes.
    fn mixture_type(
        &mut self,
        mut new_type: GgmlType,
        name: &str,
        row_len: usize,
        cat: Category,
    ) -> Result<GgmlType> {
        use Ftype as F;
        use GgmlType as T;
        let ftype = self.ftype;
        let model = self.model;
        let falcon = model.is_falcon();
        if cat == Category::Output || (self.has_tied_embeddings && cat == Category::TokenEmbd) {
            if let Some(t) = self.opts.output_tensor_type {
                new_type = t;
            } else if falcon || row_len % new_type.block_size() != 0 {
                new_type = T::Q8_0;
            } else if new_type != T::Q8_0 {
                new_type = T::Q6_K;
            }
        } else if cat == Category::TokenEmbd {
            if let Some(t) = self.opts.token_embedding_type {
                new_type = t;
            }
        } else if cat.is_attn_v() {
            let gqa4 = model.n_gqa() >= 4;
            let (i, n) = (self.i_attention_wv, self.n_attention_wv);
            match ftype {
                F::Q2_K => new_type = if gqa4 { T::Q4_K } else { T::Q3_K },
                F::Q3_K_M => new_type = if i < 2 { T::Q5_K } else { T::Q4_K },
                F::Q3_K_L => new_type = T::Q5_K,
                F::IQ4_NL | F::IQ4_XS if gqa4 => new_type = T::Q5_K,
                F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => new_type = T::Q6_K,
                F::Q4_K_S if i < 4 => new_type = T::Q5_K,
                _ => {}
            }
            if model.is_70b() && matches!(new_type, T::Q3_K | T::Q4_K) {
                new_type = T::Q5_K;
            }
            if model.n_expert == 8 {
                new_type = T::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttentionK {
            if model.n_expert == 8 {
                new_type = T::Q8_0;
            }
        } else if cat == Category::FfnDown {
            let (i, n) = self.layer_info(self.i_ffn_down, name)?;
            match ftype {
                F::Q2_K => new_type = T::Q3_K,
                F::Q3_K_M => {
                    new_type = if i < n / 16 {
                        T::Q5_K
                    } else if !falcon || use_more_bits(i, n) {
                        T::Q4_K
                    } else {
                        T::Q3_K
                    }
                }
                F::Q3_K_L => new_type = if falcon { T::Q4_K } else { T::Q5_K },
                F::Q4_K_M => {
                    if falcon {
                        new_type = if i < n / 16 {
                            T::Q6_K
                        } else if use_more_bits(i, n) {
                            T::Q5_K
                        } else {
                            T::Q4_K
                        };
                    } else if use_more_bits(i, n) {
                        new_type = T::Q6_K;
                    }
                }
                F::IQ4_NL | F::IQ4_XS if i < n / 8 && !self.opts.has_imatrix => new_type = T::Q5_K,
                F::Q5_K_M if use_more_bits(i, n) => new_type = T::Q6_K,
                F::Q4_K_S if !falcon && i < n / 8 => new_type = T::Q5_K,
                F::Q4_0 | F::Q5_0 if self.opts.has_imatrix && i < n / 8 => {
                    new_type = if ftype == F::Q4_0 { T::Q4_1 } else { T::Q5_1 };
                }
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if cat == Category::AttentionOutput {
            if !falcon {
                if model.n_expert == 8 {
                    if matches!(
                        ftype,
                        F::Q2_K
                            | F::Q3_K_S
                            | F::Q3_K_M
                            | F::IQ4_NL
                            | F::Q4_K_S
                            | F::Q4_K_M
                            | F::IQ4_XS
                    ) {
                        new_type = T::Q5_K;
                    }
                } else {
                    match ftype {
                        F::Q2_K => new_type = T::Q3_K,
                        F::Q3_K_M => new_type = T::Q4_K,
                        F::Q3_K_L => new_type = T::Q5_K,
                        _ => {}
                    }
                }
            } else if ftype == F::Q3_K_L {
                new_type = T::Q4_K;
            }
        } else if cat == Category::AttentionQkv {
            match ftype {
                F::Q3_K_M | F::Q3_K_L => new_type = T::Q4_K,
                F::Q4_K_M => new_type = T::Q5_K,
                F::Q5_K_M => new_type = T::Q6_K,
                _ => {}
            }
        } else if cat == Category::FfnGate {
            self.layer_info(self.i_ffn_gate, name)?;
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.layer_info(self.i_ffn_up, name)?;
            self.i_ffn_up += 1;
        }
        Ok(new_type)
    }

    /// `llama_tensor_get_type` for a tensor `tensor_allows_quantization` accepted:
    /// (type, fallback reason).
    fn tensor_type(
        &mut self,
        name: &str,
        row_len: usize,
        cat: Category,
    ) -> Result<(GgmlType, Option<String>)> {
        let opts = self.opts;
        if let (Some(t), Category::TokenEmbd) = (opts.token_embedding_type, cat) {
            // per_layer_token_embd follows --token-embedding-type unless a pattern names it.
            let named = name == "per_layer_token_embd.weight"
                && opts.tensor_types.iter().any(|(re, _)| re.is_match(name));
            if !named {
                return Ok((t, None));
            }
        }
        if let (Some(t), Category::Output) = (opts.output_tensor_type, cat) {
            return Ok((t, None));
        }
        let default = self.ftype.default_type();
        // ggml_is_quantized(default_type): F16/BF16 ftypes use their type everywhere.
        if matches!(default, GgmlType::F16 | GgmlType::BF16 | GgmlType::F32) {
            return Ok((default, None));
        }
        let manual = opts
            .tensor_types
            .iter()
            .find(|(re, _)| re.is_match(name))
            .map(|(_, t)| *t);
        let chosen = match manual {
            Some(t) => t,
            None if opts.pure => default,
            None => self.mixture_type(default, name, row_len, cat)?,
        };
        // tensor_type_fallback: llama.cpp has no rule for Q8_K and refuses.
        if chosen == GgmlType::Q8_K && row_len % chosen.block_size() != 0 {
            return Err(Error::tensor(
                "(model)",
                name,
                format!("row length {row_len} does not fit Q8_K and llama.cpp defines no fallback"),
            ));
        }
        Ok(match fallback_type(chosen, row_len) {
            None => (chosen, None),
            Some(next) => (
                next,
                Some(format!(
                    "row length {row_len} is not a multiple of {} ({chosen}); llama.cpp falls back to {next}",
                    chosen.block_size()
                )),
            ),
        })
    }
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
        let (ty, fallback) = state.tensor_type(&t.name, t.row_len(), Category::of(&t.name))?;
        out.push(TensorPlan {
            index,
            ty: Some(ty),
            keep: Some(ty) == stored,
            fallback,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_puts_blocks_after_globals_by_number() {
        let names = [
            "blk.10.a",
            "blk.2.b",
            "output.weight",
            "blk.2.a",
            "token_embd.weight",
        ];
        let order: Vec<&str> = tensor_order(&names).iter().map(|&i| names[i]).collect();
        assert_eq!(
            order,
            [
                "output.weight",
                "token_embd.weight",
                "blk.2.a",
                "blk.2.b",
                "blk.10.a"
            ]
        );
    }

    #[test]
    fn n_dims_ignores_trailing_ones() {
        assert_eq!(n_dims(&[1, 256]), 1);
        assert_eq!(n_dims(&[2, 256]), 2);
        assert_eq!(n_dims(&[]), 1);
        assert_eq!(n_dims(&[4, 1, 1]), 3);
    }

    #[test]
    fn use_more_bits_matches_llama() {
        let picked: Vec<i64> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            picked,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }
}
