//! The glue that makes the GGML types quant methods: the object-safe [`QuantMethod`]
//! wrapper around the block formats, the llama.cpp tensor selection and shape fallback
//! ladder, the method registrations, and ([`container`]) the .gguf container as the engine
//! reads and writes it.

pub mod container;

use std::sync::Arc;

use quant_core::{
    parse_params, Artifacts, DType, Error, ParamSpec, Params, Part, PartLayout, PlannedTensor,
    QuantMethod, QuantizedTensor, Result, Selection, TensorMeta, TensorRecord,
};
use serde::Deserialize;

use crate::imatrix::Imatrix;
use crate::types::{self, GgmlType};
use crate::{GgufError, BACKEND};

/// The registered GGUF methods: (name, GGML type).
pub const METHODS: [(&str, GgmlType); 26] = [
    ("gguf_config_fp16", GgmlType::F16),
    ("gguf_config_bf16", GgmlType::BF16),
    ("gguf_config_q8_k", GgmlType::Q8_K),
    ("gguf_config_q8_0", GgmlType::Q8_0),
    ("gguf_config_q8_1", GgmlType::Q8_1),
    ("gguf_config_q6_k", GgmlType::Q6_K),
    ("gguf_config_q5_k", GgmlType::Q5_K),
    ("gguf_config_q5_1", GgmlType::Q5_1),
    ("gguf_config_q5_0", GgmlType::Q5_0),
    ("gguf_config_q4_k", GgmlType::Q4_K),
    ("gguf_config_q4_0", GgmlType::Q4_0),
    ("gguf_config_q4_1", GgmlType::Q4_1),
    ("gguf_config_q3_k", GgmlType::Q3_K),
    ("gguf_config_q2_k", GgmlType::Q2_K),
    ("gguf_config_iq4_nl", GgmlType::IQ4_NL),
    ("gguf_config_iq4_xs", GgmlType::IQ4_XS),
    ("gguf_config_iq3_s", GgmlType::IQ3_S),
    ("gguf_config_iq3_xxs", GgmlType::IQ3_XXS),
    ("gguf_config_iq2_s", GgmlType::IQ2_S),
    ("gguf_config_iq2_xs", GgmlType::IQ2_XS),
    ("gguf_config_iq2_xxs", GgmlType::IQ2_XXS),
    ("gguf_config_iq1_m", GgmlType::IQ1_M),
    ("gguf_config_iq1_s", GgmlType::IQ1_S),
    ("gguf_config_tq2_0", GgmlType::TQ2_0),
    ("gguf_config_tq1_0", GgmlType::TQ1_0),
    ("gguf_config_mxfp4", GgmlType::MXFP4),
];

/// The method name of a GGML type (`None` for F32, which is storage, not a method).
pub fn method_name(ty: GgmlType) -> Option<&'static str> {
    METHODS.iter().find(|(_, t)| *t == ty).map(|(n, _)| *n)
}

/// The GGML type of a method name.
pub fn method_type(name: &str) -> Option<GgmlType> {
    METHODS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// llama.cpp's per-tensor fallback when a row of `row_len` values does not fit `ty`'s
/// block (`tensor_type_fallback`): the IQ1/IQ2/IQ3 types and IQ4_XS → IQ4_NL,
/// Q2_K/Q3_K/TQ1_0/TQ2_0 → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0;
/// Q8_K (which llama.cpp never picks for weights and has no rule for) and the 32-blocks
/// → F16; then F16 when the replacement does not fit either. `None` when `ty` fits.
pub fn fallback_type(ty: GgmlType, row_len: usize) -> Option<GgmlType> {
    if row_len % ty.block_size() == 0 {
        return None;
    }
    let next = match ty {
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::TQ1_0 | GgmlType::TQ2_0 => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        GgmlType::IQ4_XS
        | GgmlType::IQ1_S
        | GgmlType::IQ1_M
        | GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
        | GgmlType::IQ3_XXS
        | GgmlType::IQ3_S => GgmlType::IQ4_NL,
        _ => GgmlType::F16,
    };
    if row_len % next.block_size() != 0 {
        Some(GgmlType::F16)
    } else {
        Some(next)
    }
}

/// Tensors llama.cpp never quantizes even though they are 2-D `*weight`s (norms, MoE
/// router inputs, position and token-type embeddings), by their llama.cpp names and by
/// the Hugging Face BERT names they are converted from.
fn llama_keeps(name: &str) -> bool {
    const KEPT: [&str; 7] = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "pos_embd.weight",
        "token_types.weight",
        "position_embd.weight",
        "position_embeddings.weight",
        "token_type_embeddings.weight",
    ];
    name.ends_with("norm.weight") || KEPT.iter().any(|k| name.ends_with(k))
}

/// The importance-matrix parameters (also taken by the `gguf_<ftype>` methods).
pub(crate) const IMATRIX_PARAMS: [ParamSpec; 3] = [
    ParamSpec {
        name: "imatrix",
        default: "none",
        help: "path to a llama.cpp importance matrix (legacy .dat or GGUF): llama-quantize --imatrix; used by Q2_K..Q6_K, Q4_0..Q5_1 and the IQ types (required by IQ2_XXS, IQ2_XS, IQ1_S), never recorded",
    },
    ParamSpec {
        name: "imatrix_include",
        default: "all",
        help: "only the imatrix entries whose name contains one of these (comma-separated): llama-quantize --include-weights",
    },
    ParamSpec {
        name: "imatrix_exclude",
        default: "none",
        help: "drop the imatrix entries whose name contains one of these (comma-separated): llama-quantize --exclude-weights",
    },
];

/// `allow_nonfinite` (also taken by the `gguf_<ftype>` methods).
pub(crate) const ALLOW_NONFINITE: ParamSpec = ParamSpec {
    name: "allow_nonfinite",
    default: "false",
    help: "quantize NaN/Inf weights the way ggml does instead of refusing them",
};

/// The parameters every GGUF method takes.
pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "type",
        default: "(the method's)",
        help: "GGML type name (F16, BF16, Q8_K, Q8_0, Q8_1, Q6_K, Q5_K, Q5_1, Q5_0, Q4_K, Q4_0, Q4_1, Q3_K, Q2_K, IQ4_NL, IQ4_XS, IQ3_S, IQ3_XXS, IQ2_S, IQ2_XS, IQ2_XXS, IQ1_M, IQ1_S, TQ2_0, TQ1_0, MXFP4); must match the method, recorded so loading finds it",
    },
    IMATRIX_PARAMS[0],
    IMATRIX_PARAMS[1],
    IMATRIX_PARAMS[2],
    ALLOW_NONFINITE,
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParams {
    #[serde(default, rename = "type")]
    ty: Option<String>,
    #[serde(default)]
    imatrix: Option<String>,
    #[serde(default)]
    imatrix_include: Option<NameList>,
    #[serde(default)]
    imatrix_exclude: Option<NameList>,
    #[serde(default)]
    allow_nonfinite: bool,
}

/// A list of names given as one comma-separated string or as a JSON array.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub(crate) enum NameList {
    /// `"a,b"`.
    Joined(String),
    /// `["a", "b"]`.
    List(Vec<String>),
}

impl NameList {
    /// The non-empty items.
    pub(crate) fn items(&self) -> Vec<String> {
        match self {
            NameList::Joined(s) => s.split(',').map(str::to_string).collect(),
            NameList::List(v) => v.clone(),
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
    }
}

/// `--include-weights` / `--exclude-weights` as lists (empty when not given).
pub(crate) fn name_lists(
    include: &Option<NameList>,
    exclude: &Option<NameList>,
) -> (Vec<String>, Vec<String>) {
    let items = |l: &Option<NameList>| l.as_ref().map(NameList::items).unwrap_or_default();
    (items(include), items(exclude))
}

/// A GGUF method: one GGML type, optionally an importance matrix.
#[derive(Clone, Debug)]
pub struct GgufMethod {
    name: &'static str,
    ty: GgmlType,
    imatrix: Option<Arc<Imatrix>>,
    allow_nonfinite: bool,
}

fn bad_param(method: &str, param: &str, reason: String) -> Error {
    Error::BadParam {
        method: method.to_string(),
        param: param.to_string(),
        reason,
        known: PARAMS.iter().map(ParamSpec::describe).collect(),
    }
}

impl GgufMethod {
    /// The method for GGML type `ty` with default parameters (no imatrix).
    pub fn new(ty: GgmlType) -> Result<Self> {
        let name = method_name(ty).ok_or_else(|| Error::Unsupported {
            method: "gguf".into(),
            op: format!("{ty} as a quantization method"),
        })?;
        Ok(GgufMethod {
            name,
            ty,
            imatrix: None,
            allow_nonfinite: false,
        })
    }

    /// Uses `imatrix` for the tensors it has entries for.
    pub fn with_imatrix(mut self, imatrix: Arc<Imatrix>) -> Self {
        self.imatrix = Some(imatrix);
        self
    }

    /// Quantizes NaN/Inf like ggml instead of refusing them.
    pub fn allow_nonfinite(mut self, allow: bool) -> Self {
        self.allow_nonfinite = allow;
        self
    }

    /// The stored part of `q` and its row length, checked against the record's shape.
    fn stored_rows<'q>(&self, q: &'q QuantizedTensor) -> Result<(&'q quant_core::Part, usize)> {
        let rec = &q.record;
        let part = q.part(&rec.name)?;
        if part.layout.dtype != self.stored_dtype() {
            return Err(Error::tensor(
                "",
                &rec.name,
                format!(
                    "{} part stored as {}, expected {}",
                    self.ty,
                    part.layout.dtype,
                    self.stored_dtype()
                ),
            ));
        }
        let meta = TensorMeta::new(rec.name.clone(), rec.dtype, rec.shape.clone());
        let (rows, row_len, row_bytes) = self.geometry(&meta)?;
        if Some(part.data.len()) != rows.checked_mul(row_bytes) {
            return Err(Error::tensor(
                "",
                &rec.name,
                format!(
                    "{} bytes of {} for shape {:?}, expected {rows} rows of {row_bytes}",
                    part.data.len(),
                    self.ty,
                    rec.shape
                ),
            ));
        }
        Ok((part, row_len))
    }

    /// The GGML type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ty
    }

    /// The factory behind every registration.
    pub fn create(name: &'static str, params: &Params) -> Result<Box<dyn QuantMethod>> {
        let ty = method_type(name).ok_or_else(|| Error::Unsupported {
            method: name.to_string(),
            op: "creation (not a gguf method)".into(),
        })?;
        let raw: RawParams = parse_params(name, PARAMS, params)?;
        if let Some(t) = &raw.ty {
            match GgmlType::from_name(t) {
                Some(given) if given == ty => {}
                _ => {
                    return Err(bad_param(
                        name,
                        "type",
                        format!("'{t}' does not match this method's type {ty}"),
                    ))
                }
            }
        }
        let mut m = GgufMethod::new(ty)?.allow_nonfinite(raw.allow_nonfinite);
        if let Some(path) = raw.imatrix {
            let (include, exclude) = name_lists(&raw.imatrix_include, &raw.imatrix_exclude);
            let im = Imatrix::load_shared(&path, &include, &exclude)?;
            // As llama-quantize: an imatrix left without entries is no imatrix.
            if !im.is_empty() {
                m = m.with_imatrix(im);
            }
        }
        Ok(Box::new(m))
    }

    fn stored_dtype(&self) -> DType {
        match self.ty {
            GgmlType::F16 => DType::F16,
            GgmlType::BF16 => DType::BF16,
            _ => DType::U8,
        }
    }

    fn dequant_dtype(&self) -> DType {
        match self.ty {
            GgmlType::F16 => DType::F16,
            GgmlType::BF16 => DType::BF16,
            _ => DType::F32,
        }
    }

    /// Rows, row length and row bytes of `t` as a `[rows, row_len]` matrix.
    fn geometry(&self, t: &TensorMeta) -> Result<(usize, usize, usize)> {
        let row_len = t.row_len();
        let numel = t.numel()?;
        let row_bytes = self.ty.row_size(row_len).filter(|_| row_len > 0);
        match row_bytes {
            Some(rb) => Ok((numel / row_len, row_len, rb)),
            _ => Err(Error::ShapeMismatch {
                tensor: t.name.clone(),
                expected: format!(
                    "rows whose length is a non-zero multiple of {} for {}",
                    self.ty.block_size(),
                    self.ty
                ),
                got: t.shape.clone(),
            }),
        }
    }

    /// The importance weights for `t` (per expert for 3-D tensors), if the imatrix has
    /// an entry for it.
    fn weights_for<'a>(&'a self, t: &TensorMeta, row_len: usize) -> Result<Option<&'a [f32]>> {
        let Some(im) = &self.imatrix else {
            return Ok(None);
        };
        let Some(w) = im.get(&t.name) else {
            return Ok(None);
        };
        let n_mat = if t.shape.len() == 3 {
            t.shape.first().copied().unwrap_or(1)
        } else {
            1
        };
        if Some(w.len()) != row_len.checked_mul(n_mat) {
            return Err(Error::Backend {
                backend: BACKEND,
                source: Box::new(GgufError::Imatrix {
                    file: im.source().to_string(),
                    reason: format!(
                        "entry '{}' has {} values, tensor shape {:?} needs {row_len} x {n_mat}",
                        t.name,
                        w.len(),
                        t.shape
                    ),
                }),
            });
        }
        Ok(Some(w))
    }
}

impl QuantMethod for GgufMethod {
    fn name(&self) -> &str {
        self.name
    }

    fn params(&self) -> Params {
        let mut p = Params::new();
        p.insert("type".into(), self.ty.name().into());
        if self.allow_nonfinite {
            p.insert("allow_nonfinite".into(), true.into());
        }
        p
    }

    fn select(&self, t: &TensorMeta) -> Selection {
        if !t.dtype.is_float() {
            return Selection::Keep(None);
        }
        if !t.is_matrix_weight() || llama_keeps(&t.name) || t.numel().map_or(true, |n| n == 0) {
            return Selection::Keep(Some(DType::F32));
        }
        let row_len = t.row_len();
        match fallback_type(self.ty, row_len) {
            None => Selection::Quantize,
            Some(next) => match method_name(next) {
                Some(method) => Selection::Fallback {
                    method: method.to_string(),
                    reason: format!(
                        "row length {row_len} is not a multiple of {} ({}); llama.cpp falls back to {next}",
                        self.ty.block_size(),
                        self.ty
                    ),
                },
                None => Selection::Keep(Some(DType::F32)),
            },
        }
    }

    fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
        let (rows, _, row_bytes) = self.geometry(t)?;
        let dtype = self.stored_dtype();
        let shape = if dtype == DType::U8 {
            vec![rows, row_bytes]
        } else {
            t.shape.clone()
        };
        Ok(vec![PartLayout::new(&t.name, dtype, shape)])
    }

    fn quantize(&self, t: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor> {
        self.quantize_reusing(t, values, Vec::new())
    }

    fn checks_finite(&self) -> bool {
        !self.allow_nonfinite
    }

    fn quantize_reusing(
        &self,
        t: &TensorMeta,
        values: &[f32],
        buffers: Vec<Vec<u8>>,
    ) -> Result<QuantizedTensor> {
        let numel = t.numel()?;
        if values.len() != numel {
            return Err(Error::ShapeMismatch {
                tensor: t.name.clone(),
                expected: format!("{numel} values"),
                got: vec![values.len()],
            });
        }
        let (_, row_len, _) = self.geometry(t)?;
        let nonfinite = |index: usize| Error::NonFinite {
            tensor: t.name.clone(),
            index,
            value: values[index],
        };
        let weights = if self.ty.uses_imatrix() {
            match self.weights_for(t, row_len) {
                Ok(w) => w,
                // A non-finite value is reported first, as when it was checked up front.
                Err(e) => {
                    return Err(match quant_core::simd::first_nonfinite(values) {
                        Some(index) if !self.allow_nonfinite => nonfinite(index),
                        _ => e,
                    })
                }
            }
        } else {
            None
        };
        if weights.is_none() && self.ty.requires_imatrix() {
            // Named here, where the tensor and the matrix are known (the type-level guard
            // in `types` knows neither).
            let reason = match &self.imatrix {
                Some(im) => format!(
                    "tensor '{}' as {}: the importance matrix {} has no entry for it; give an \
                     --imatrix that covers it",
                    t.name,
                    self.ty.name(),
                    im.source()
                ),
                None => format!(
                    "tensor '{}' as {} without an importance matrix (ggml requires one for \
                     this type: pass --imatrix FILE)",
                    t.name,
                    self.ty.name()
                ),
            };
            return Err(Error::NeedsImatrix {
                method: self.name.to_string(),
                reason,
            });
        }
        // NaN/Inf are refused row by row during quantization (while each row is in cache).
        let check = !self.allow_nonfinite;
        let mut data = buffers.into_iter().next().unwrap_or_default();
        match weights {
            Some(w) if w.len() > row_len => {
                // 3-D expert tensors: one imatrix slice per expert, as llama.cpp does,
                // each quantized into its share of the output.
                let per_mat = (numel / (w.len() / row_len)).max(1);
                let chunks = values.chunks(per_mat).zip(w.chunks(row_len));
                let lens = chunks
                    .clone()
                    .map(|(chunk, wm)| types::output_len(self.ty, chunk, row_len, Some(wm)))
                    .collect::<Result<Vec<_>>>()?;
                let mut rest = quant_core::method::reuse_bytes(&mut data, lens.iter().sum());
                for (k, ((chunk, wm), n)) in chunks.zip(lens).enumerate() {
                    let (o, tail) = rest.split_at_mut(n);
                    rest = tail;
                    types::quantize_checked_into(self.ty, chunk, row_len, Some(wm), check, o)?
                        .map_err(|i| nonfinite(k * per_mat + i))?;
                }
            }
            w => {
                let n = types::output_len(self.ty, values, row_len, w)?;
                let o = quant_core::method::reuse_bytes(&mut data, n);
                types::quantize_checked_into(self.ty, values, row_len, w, check, o)?
                    .map_err(nonfinite)?;
            }
        }
        let layout = self.output_layout(t)?;
        let record = TensorRecord {
            name: t.name.clone(),
            method: Some(self.name.to_string()),
            dtype: t.dtype,
            shape: t.shape.clone(),
            dequant_dtype: self.dequant_dtype(),
            params: self.params(),
            parts: layout.iter().map(|l| l.key.clone()).collect(),
            fallback: None,
        };
        let Some(part_layout) = layout.into_iter().next() else {
            return Err(Error::tensor("", &t.name, "gguf layout has no part"));
        };
        Ok(QuantizedTensor {
            record,
            parts: vec![Part::new(part_layout, data)?],
        })
    }

    /// The imatrix entry of a 2-D tensor (by its llama.cpp name): `Σx²/count` of each
    /// input column, the weights ggml's quantizers minimise `Σ w·(x − x̂)²` with. Given
    /// whatever this method's type (the planner weights every candidate's error alike,
    /// also of the types that quantize without it). `None` without an entry, for an
    /// entry of the wrong length and for 3-D expert tensors (one imatrix slice per
    /// expert, which one weight per column of the planner's `[experts, rest]` view
    /// cannot express).
    fn column_importance(&self, t: &TensorMeta) -> Option<Vec<f32>> {
        if t.shape.len() != 2 {
            return None;
        }
        self.weights_for(t, t.row_len())
            .ok()
            .flatten()
            .map(<[f32]>::to_vec)
    }

    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
        let (part, row_len) = self.stored_rows(q)?;
        types::dequantize(self.ty, &part.data, row_len)
    }

    fn dequantize_into(&self, q: &QuantizedTensor, out: &mut [f32]) -> Result<()> {
        let (part, row_len) = self.stored_rows(q)?;
        types::dequantize_into(self.ty, &part.data, row_len, out)
    }

    fn artifacts(&self, planned: &[PlannedTensor]) -> Result<Artifacts> {
        let mut a = Artifacts::default();
        a.metadata
            .insert("quantize.ggml_type".into(), self.ty.name().into());
        if let Some(im) = &self.imatrix {
            a.metadata
                .insert("quantize.imatrix.file".into(), im.source().to_string());
            a.metadata.insert(
                "quantize.imatrix.entries_count".into(),
                im.len().to_string(),
            );
            if let Some(c) = im.chunk_count() {
                a.metadata
                    .insert("quantize.imatrix.chunks_count".into(), c.to_string());
            }
            if let Some(d) = im.datasets().first() {
                a.metadata
                    .insert("quantize.imatrix.dataset".into(), d.clone());
            }
            let missing: Vec<&str> = planned
                .iter()
                .filter(|p| p.is_by(self.name()) && im.get(&p.meta.name).is_none())
                .map(|p| p.meta.name.as_str())
                .collect();
            if !missing.is_empty() && self.ty.uses_imatrix() {
                a.metadata
                    .insert("quantize.imatrix.missing".into(), missing.join(","));
            }
        }
        Ok(a)
    }
}

/// Stored bits per weight of `ty` (scales included).
pub(crate) const fn bits_per_weight(ty: GgmlType) -> f32 {
    (ty.type_size() * 8) as f32 / ty.block_size() as f32
}

macro_rules! register {
    ($name:literal, $ty:expr, $summary:literal) => {
        quant_core::register_method!(quant_core::MethodEntry {
            name: $name,
            backend: BACKEND,
            bits_per_weight: bits_per_weight($ty),
            summary: $summary,
            params: PARAMS,
            create: |p| GgufMethod::create($name, p),
        });
    };
}

register!(
    "gguf_config_fp16",
    GgmlType::F16,
    "GGML F16: float16 per value, ggml's rounding (NaN -> 0x7E00)"
);
register!(
    "gguf_config_bf16",
    GgmlType::BF16,
    "GGML BF16: bfloat16 per value, round to nearest even"
);
register!(
    "gguf_config_q8_k",
    GgmlType::Q8_K,
    "GGML Q8_K: 256-blocks of int8 with an f32 scale and 16-sums (292 bytes)"
);
register!(
    "gguf_config_q8_0",
    GgmlType::Q8_0,
    "GGML Q8_0: 32-blocks of int8 with an f16 scale (34 bytes)"
);
register!(
    "gguf_config_q8_1",
    GgmlType::Q8_1,
    "GGML Q8_1: 32-blocks of int8, f16 scale and sum (36 bytes; gguf-py 0.19 wrongly expects 40 and cannot read it)"
);
register!(
    "gguf_config_q6_k",
    GgmlType::Q6_K,
    "GGML Q6_K: 6-bit K-quant, int8 sub-block scales (210 bytes / 256)"
);
register!(
    "gguf_config_q5_k",
    GgmlType::Q5_K,
    "GGML Q5_K: 5-bit K-quant with mins, 6-bit scales (176 bytes / 256)"
);
register!(
    "gguf_config_q5_1",
    GgmlType::Q5_1,
    "GGML Q5_1: 32-blocks of 5-bit with f16 scale and min (24 bytes)"
);
register!(
    "gguf_config_q5_0",
    GgmlType::Q5_0,
    "GGML Q5_0: 32-blocks of 5-bit with an f16 scale (22 bytes)"
);
register!(
    "gguf_config_q4_k",
    GgmlType::Q4_K,
    "GGML Q4_K: 4-bit K-quant with mins, 6-bit scales (144 bytes / 256)"
);
register!(
    "gguf_config_q4_0",
    GgmlType::Q4_0,
    "GGML Q4_0: 32-blocks of 4-bit with an f16 scale (18 bytes)"
);
register!(
    "gguf_config_q4_1",
    GgmlType::Q4_1,
    "GGML Q4_1: 32-blocks of 4-bit with f16 scale and min (20 bytes)"
);
register!(
    "gguf_config_q3_k",
    GgmlType::Q3_K,
    "GGML Q3_K: 3-bit K-quant, 6-bit scales (110 bytes / 256)"
);
register!(
    "gguf_config_q2_k",
    GgmlType::Q2_K,
    "GGML Q2_K: 2-bit K-quant with mins, 4-bit scales (84 bytes / 256)"
);
register!(
    "gguf_config_iq4_nl",
    GgmlType::IQ4_NL,
    "GGML IQ4_NL: 32-blocks of 4-bit non-linear (table) codes with an f16 scale (18 bytes)"
);
register!(
    "gguf_config_iq4_xs",
    GgmlType::IQ4_XS,
    "GGML IQ4_XS: 4-bit non-linear codes, 6-bit block scales (136 bytes / 256)"
);
register!(
    "gguf_config_iq3_s",
    GgmlType::IQ3_S,
    "GGML IQ3_S: 3-bit D4-lattice codes (512 points), explicit signs, 4-bit block scales (110 bytes / 256)"
);
register!(
    "gguf_config_iq3_xxs",
    GgmlType::IQ3_XXS,
    "GGML IQ3_XXS: 3-bit D4-lattice codes (256 points), even signs, 4-bit block scales (98 bytes / 256)"
);
register!(
    "gguf_config_iq2_s",
    GgmlType::IQ2_S,
    "GGML IQ2_S: 2-bit E8-lattice codes (1024 points), explicit signs, 4-bit block scales (82 bytes / 256)"
);
register!(
    "gguf_config_iq2_xs",
    GgmlType::IQ2_XS,
    "GGML IQ2_XS: 2-bit E8-lattice codes (512 points), 4-bit block scales (74 bytes / 256); needs --imatrix"
);
register!(
    "gguf_config_iq2_xxs",
    GgmlType::IQ2_XXS,
    "GGML IQ2_XXS: 2-bit E8-lattice codes (256 points), 4-bit block scales (66 bytes / 256); needs --imatrix"
);
register!(
    "gguf_config_iq1_m",
    GgmlType::IQ1_M,
    "GGML IQ1_M: ternary-lattice codes (2048 points) with per-group shifts, 3-bit block scales (56 bytes / 256)"
);
register!(
    "gguf_config_iq1_s",
    GgmlType::IQ1_S,
    "GGML IQ1_S: ternary-lattice codes (2048 points), 3-bit block scales and shifts (50 bytes / 256); needs --imatrix"
);
register!(
    "gguf_config_tq2_0",
    GgmlType::TQ2_0,
    "GGML TQ2_0: ternary values in 2 bits with an f16 scale (66 bytes / 256)"
);
register!(
    "gguf_config_tq1_0",
    GgmlType::TQ1_0,
    "GGML TQ1_0: ternary values, 5 per byte, with an f16 scale (54 bytes / 256)"
);
register!(
    "gguf_config_mxfp4",
    GgmlType::MXFP4,
    "GGML MXFP4: 32-blocks of E2M1 values with a shared E8M0 exponent (17 bytes)"
);
