//! The `gguf_<ftype>` methods: llama-quantize's file types as quant methods whose
//! [`QuantMethod::mixture`] gives every tensor the `gguf_config_*` method (or the kept
//! dtype) [`plan`](super::plan) chooses, in llama-quantize's order.

use std::sync::Arc;

use quant_core::{
    parse_params, Artifacts, DType, Error, Mixture, ModelView, ParamSpec, Params, PartLayout,
    PlannedTensor, QuantMethod, QuantizedTensor, Result, Selection, TensorChoice, TensorMeta,
};
use regex::Regex;
use serde::Deserialize;

use super::{plan, tensor_requires_imatrix, Ftype, FtypeOptions, ModelInfo, FTYPES};
use crate::imatrix::Imatrix;
use crate::method::{
    bits_per_weight, method_name, name_lists, GgufMethod, NameList, ALLOW_NONFINITE, IMATRIX_PARAMS,
};
use crate::types::GgmlType;
use crate::BACKEND;

/// The parameters of every `gguf_<ftype>` method (llama-quantize's options).
pub const FTYPE_PARAMS: &[ParamSpec] = &[
    IMATRIX_PARAMS[0],
    IMATRIX_PARAMS[1],
    IMATRIX_PARAMS[2],
    ParamSpec {
        name: "output_tensor_type",
        default: "the ftype's",
        help: "GGML type of output.weight: --output-tensor-type",
    },
    ParamSpec {
        name: "token_embedding_type",
        default: "the ftype's",
        help: "GGML type of token_embd.weight: --token-embedding-type",
    },
    ParamSpec {
        name: "leave_output_tensor",
        default: "false",
        help: "keep output.weight as stored: --leave-output-tensor",
    },
    ParamSpec {
        name: "tensor_type",
        default: "none",
        help: "PATTERN=TYPE overrides, comma-separated, first regex found in a name wins (counters skip them, the shape fallback applies): --tensor-type",
    },
    ParamSpec {
        name: "pure",
        default: "false",
        help: "every quantized tensor of the default type (plus the shape fallback): --pure",
    },
    ALLOW_NONFINITE,
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParams {
    #[serde(default)]
    imatrix: Option<String>,
    #[serde(default)]
    imatrix_include: Option<NameList>,
    #[serde(default)]
    imatrix_exclude: Option<NameList>,
    #[serde(default)]
    output_tensor_type: Option<String>,
    #[serde(default)]
    token_embedding_type: Option<String>,
    #[serde(default)]
    leave_output_tensor: bool,
    #[serde(default)]
    tensor_type: Option<NameList>,
    #[serde(default)]
    pure: bool,
    #[serde(default)]
    allow_nonfinite: bool,
}

/// A `gguf_<ftype>` method.
pub struct FtypeMethod {
    ftype: Ftype,
    opts: FtypeOptions,
    /// The user's parameters, recorded (without the imatrix path).
    recorded: Params,
    /// The parameters handed to every `gguf_config_*` method of the mixture.
    inner_params: Params,
    /// The default type's method (for tensors planned without the mixture).
    inner: GgufMethod,
    /// The importance matrix (after the include/exclude filters), if any entry is left.
    imatrix: Option<Arc<Imatrix>>,
}

fn bad_param(method: &str, param: &str, reason: String) -> Error {
    Error::BadParam {
        method: method.to_string(),
        param: param.to_string(),
        reason,
        known: FTYPE_PARAMS.iter().map(ParamSpec::describe).collect(),
    }
}

/// A GGML type name usable as an output type here (a `gguf_config_*` type or F32).
fn parse_type(method: &str, param: &str, name: &str) -> Result<GgmlType> {
    match GgmlType::from_name(name.trim()) {
        Some(t) if t == GgmlType::F32 || method_name(t).is_some() => Ok(t),
        _ => Err(bad_param(
            method,
            param,
            format!("'{name}' is not a GGML type quant writes (F32, F16, BF16, Q4_0 ... Q8_0, Q2_K ... Q6_K, IQ1_S ... IQ4_XS, TQ1_0, TQ2_0, MXFP4)"),
        )),
    }
}

impl FtypeMethod {
    /// The factory behind every `gguf_<ftype>` registration.
    pub fn create(name: &'static str, params: &Params) -> Result<Box<dyn QuantMethod>> {
        let ftype = Ftype::from_method(name).ok_or_else(|| Error::Unsupported {
            method: name.to_string(),
            op: "creation (not a gguf ftype method)".into(),
        })?;
        let raw: RawParams = parse_params(name, FTYPE_PARAMS, params)?;
        let mut opts = FtypeOptions {
            leave_output_tensor: raw.leave_output_tensor,
            pure: raw.pure,
            ..FtypeOptions::default()
        };
        if let Some(t) = &raw.output_tensor_type {
            opts.output_tensor_type = Some(parse_type(name, "output_tensor_type", t)?);
        }
        if let Some(t) = &raw.token_embedding_type {
            opts.token_embedding_type = Some(parse_type(name, "token_embedding_type", t)?);
        }
        for item in raw
            .tensor_type
            .as_ref()
            .map(NameList::items)
            .unwrap_or_default()
        {
            let (pattern, ty) = item.split_once('=').ok_or_else(|| {
                bad_param(name, "tensor_type", format!("'{item}' is not PATTERN=TYPE"))
            })?;
            // llama-quantize lower-cases the pattern.
            let pattern = pattern.to_ascii_lowercase();
            let re = Regex::new(&pattern)
                .map_err(|e| bad_param(name, "tensor_type", format!("pattern '{pattern}': {e}")))?;
            opts.tensor_types
                .push((re, parse_type(name, "tensor_type", ty)?));
        }
        let mut inner_params = Params::new();
        let mut imatrix = None;
        if let Some(path) = &raw.imatrix {
            let (include, exclude) = name_lists(&raw.imatrix_include, &raw.imatrix_exclude);
            let im = Imatrix::load_shared(path, &include, &exclude)?;
            if !im.is_empty() {
                opts.has_imatrix = true;
                imatrix = Some(im);
                inner_params.insert("imatrix".into(), path.clone().into());
                for (key, list) in [("imatrix_include", &include), ("imatrix_exclude", &exclude)] {
                    if !list.is_empty() {
                        inner_params.insert(key.into(), list.join(",").into());
                    }
                }
            }
        }
        if raw.allow_nonfinite {
            inner_params.insert("allow_nonfinite".into(), true.into());
        }
        let mut recorded = params.clone();
        recorded.remove("imatrix");
        let mut inner = GgufMethod::new(ftype.default_type())?.allow_nonfinite(raw.allow_nonfinite);
        if let Some(im) = &imatrix {
            inner = inner.with_imatrix(Arc::clone(im));
        }
        Ok(Box::new(FtypeMethod {
            ftype,
            opts,
            recorded,
            inner_params,
            inner,
            imatrix,
        }))
    }

    /// llama-quantize's and llama.cpp's refusals without importance weights: the six file
    /// types quantize.cpp refuses without a matrix, then every tensor whose planned type
    /// `tensor_requires_imatrix` (a lattice type, Q2_K in Q2_K_S) without its entry.
    fn check_imatrix(&self, tensor: &str, ty: GgmlType) -> Result<()> {
        let ftype = self.ftype;
        let refuse = |reason: String| Error::NeedsImatrix {
            method: ftype.method().into(),
            reason,
        };
        if self.imatrix.is_none() && ftype.requires_imatrix() {
            return Err(refuse(format!(
                "{} without an importance matrix: llama-quantize refuses it (\"Please do not use \
                 IQ1_S, IQ1_M, IQ2_S, IQ2_XXS, IQ2_XS or Q2_K_S quantization without an \
                 importance matrix\"); pass --imatrix FILE (from llama-imatrix or quant imatrix)",
                ftype.name()
            )));
        }
        if !tensor_requires_imatrix(tensor, ty, ftype) {
            return Ok(());
        }
        match &self.imatrix {
            None => Err(refuse(format!(
                "tensor '{tensor}' as {ty} without an importance matrix: llama.cpp requires one \
                 for this type (\"this quantization requires an imatrix!\"); pass --imatrix FILE"
            ))),
            Some(im) if im.get(tensor).is_none() => Err(refuse(format!(
                "tensor '{tensor}' as {ty}: the importance matrix {} has no entry for it \
                 (llama.cpp: \"Missing importance matrix for tensor {tensor} in a very \
                 low-bit quantization\"); give an --imatrix that covers it",
                im.source()
            ))),
            Some(_) => Ok(()),
        }
    }

    /// The ftype.
    pub fn ftype(&self) -> Ftype {
        self.ftype
    }
}

impl QuantMethod for FtypeMethod {
    fn name(&self) -> &str {
        self.ftype.method()
    }

    fn params(&self) -> Params {
        self.recorded.clone()
    }

    fn select(&self, t: &TensorMeta) -> Selection {
        self.inner.select(t)
    }

    fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
        self.inner.output_layout(t)
    }

    fn quantize(&self, t: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor> {
        self.quantize_reusing(t, values, Vec::new())
    }

    fn quantize_reusing(
        &self,
        t: &TensorMeta,
        values: &[f32],
        buffers: Vec<Vec<u8>>,
    ) -> Result<QuantizedTensor> {
        if self.imatrix.is_none() && self.ftype.requires_imatrix() {
            self.check_imatrix("", GgmlType::F32)?;
        }
        // Recorded as this method with its own parameters, so loading recreates it.
        let mut q = self.inner.quantize_reusing(t, values, buffers)?;
        q.record.method = Some(self.name().to_string());
        q.record.params = self.params();
        Ok(q)
    }

    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
        self.inner.dequantize(q)
    }

    fn dequantize_into(&self, q: &QuantizedTensor, out: &mut [f32]) -> Result<()> {
        self.inner.dequantize_into(q, out)
    }

    fn checks_finite(&self) -> bool {
        self.inner.checks_finite()
    }

    fn artifacts(&self, planned: &[PlannedTensor]) -> Result<Artifacts> {
        let mut a = self.inner.artifacts(planned)?;
        a.metadata
            .insert("quantize.ftype".into(), self.ftype.name().into());
        Ok(a)
    }

    fn mixture(&self, model: &ModelView<'_>) -> Result<Option<Mixture>> {
        // llama-quantize refuses these file types without a matrix whatever the model.
        if self.imatrix.is_none() && self.ftype.requires_imatrix() {
            self.check_imatrix("", GgmlType::F32)?;
        }
        // Not a llama.cpp model (e.g. a Hugging Face folder no converter knows): there
        // are no llama-quantize rules to follow, every tensor gets the default type
        // through `select` (with the shape fallbacks), as the `gguf_config_*` methods do.
        if !model.metadata.contains_key("general.architecture") {
            return Ok(None);
        }
        let info = ModelInfo::from_metadata(model.metadata, "(input)").map_err(|e| {
            Error::Unsupported {
                method: self.ftype.method().into(),
                op: format!(
                    "this input ({e}); give a .gguf with llama.cpp tensor names (convert_hf_to_gguf.py, or a model folder quant converts)"
                ),
            }
        })?;
        let planned = plan(self.ftype, &info, model.tensors, &self.opts)?;
        for p in &planned {
            if let (Some(ty), false, Some(t)) = (p.ty, p.keep, model.tensors.get(p.index)) {
                self.check_imatrix(&t.name, ty)?;
            }
        }
        let mut choices = vec![TensorChoice::Keep(None); model.tensors.len()];
        let mut order = Vec::with_capacity(planned.len());
        for p in planned {
            order.push(p.index);
            let choice = match p.ty {
                None => TensorChoice::Keep(None),
                Some(_) if p.keep => TensorChoice::Keep(None),
                Some(GgmlType::F32) => TensorChoice::Keep(Some(DType::F32)),
                Some(ty) => match method_name(ty) {
                    Some(name) => TensorChoice::Method {
                        name: name.to_string(),
                        params: self.inner_params.clone(),
                        fallback: p.fallback,
                    },
                    None => {
                        return Err(Error::Unsupported {
                            method: self.ftype.method().into(),
                            op: format!("{ty} for tensor '{}'", model.tensors[p.index].name),
                        })
                    }
                },
            };
            if let Some(slot) = choices.get_mut(p.index) {
                *slot = choice;
            }
        }
        Ok(Some(Mixture {
            choices,
            order: Some(order),
        }))
    }
}

macro_rules! register_ftype {
    ($($ftype:ident),*) => {$(
        quant_core::register_method!(quant_core::MethodEntry {
            name: Ftype::$ftype.method(),
            backend: BACKEND,
            // Of the default type (the mixture's real average depends on the model).
            bits_per_weight: bits_per_weight(Ftype::$ftype.default_type()),
            summary: concat!(
                "llama-quantize ",
                stringify!($ftype),
                ": its per-tensor type mixture, tensor order and key/values"
            ),
            params: FTYPE_PARAMS,
            create: |p| FtypeMethod::create(Ftype::$ftype.method(), p),
        });
    )*};
}

register_ftype!(
    Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M,
    Q6_K, IQ4_NL, IQ4_XS, IQ2_XXS, IQ2_XS, IQ2_S, IQ2_M, IQ3_XXS, IQ3_XS, IQ3_S, IQ3_M, IQ1_S,
    IQ1_M, Q2_K_S, TQ1_0, TQ2_0, MXFP4_MOE, F16, BF16
);

/// Whether `name` is a `gguf_<ftype>` method.
pub fn is_ftype_method(name: &str) -> bool {
    FTYPES.iter().any(|f| f.method() == name)
}
