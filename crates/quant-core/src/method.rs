//! The quantized-tensor type and the object-safe [`QuantMethod`] trait.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{checked_numel, TensorMeta};

/// Method parameters as key → JSON value (from `--param k=v`, a config file or code).
pub type Params = serde_json::Map<String, serde_json::Value>;

/// Where and how one part of a quantized tensor is stored, known before quantizing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartLayout {
    /// The full key in the output file, e.g. `fc1.weight.absmax`.
    pub key: String,
    /// Element type as stored.
    pub dtype: DType,
    /// Shape as stored.
    pub shape: Vec<usize>,
}

impl PartLayout {
    /// Builds a layout entry.
    pub fn new(key: impl Into<String>, dtype: DType, shape: impl Into<Vec<usize>>) -> Self {
        PartLayout {
            key: key.into(),
            dtype,
            shape: shape.into(),
        }
    }

    /// Stored size in bytes (`None` on overflow).
    pub fn byte_len(&self) -> Option<usize> {
        checked_numel(&self.shape)?.checked_mul(self.dtype.size())
    }
}

/// One stored part of a quantized tensor: a safetensors entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// Key, dtype and shape.
    pub layout: PartLayout,
    /// Little-endian bytes.
    pub data: Vec<u8>,
}

impl Part {
    /// Builds a part, checking the byte count against the layout.
    pub fn new(layout: PartLayout, data: Vec<u8>) -> Result<Self> {
        match layout.byte_len() {
            Some(n) if n == data.len() => Ok(Part { layout, data }),
            want => Err(Error::tensor(
                "",
                &layout.key,
                format!(
                    "{} bytes for shape {:?} of {} (expected {:?})",
                    data.len(),
                    layout.shape,
                    layout.dtype,
                    want
                ),
            )),
        }
    }
}

/// What a method records about one tensor, enough to restore it: stored in the file
/// header so a loader can find the method and its parameters again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorRecord {
    /// The original tensor name.
    pub name: String,
    /// The method that produced the parts (`None` when stored unquantized).
    pub method: Option<String>,
    /// The original dtype.
    pub dtype: DType,
    /// The original shape.
    pub shape: Vec<usize>,
    /// The dtype dequantization naturally gives back (e.g. bnb's compute dtype).
    pub dequant_dtype: DType,
    /// The method's parameters, as its factory takes them.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: Params,
    /// The keys of the stored parts, in order.
    pub parts: Vec<String>,
    /// Why another method than the requested one produced this tensor, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// A quantized (or passed-through) tensor: a record plus its stored parts.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedTensor {
    /// What was done.
    pub record: TensorRecord,
    /// The stored parts, in record order.
    pub parts: Vec<Part>,
}

impl QuantizedTensor {
    /// Pairs each planned part with its bytes (checked against the layout).
    pub fn from_layout(
        record: TensorRecord,
        layout: Vec<PartLayout>,
        data: Vec<Vec<u8>>,
    ) -> Result<Self> {
        if layout.len() != data.len() {
            return Err(Error::tensor(
                "",
                &record.name,
                format!("{} parts planned, {} produced", layout.len(), data.len()),
            ));
        }
        let parts = layout
            .into_iter()
            .zip(data)
            .map(|(l, d)| Part::new(l, d))
            .collect::<Result<Vec<_>>>()?;
        Ok(QuantizedTensor { record, parts })
    }

    /// The part stored under `key`, or a typed error naming the tensor.
    pub fn part(&self, key: &str) -> Result<&Part> {
        self.parts
            .iter()
            .find(|p| p.layout.key == key)
            .ok_or_else(|| {
                Error::tensor(
                    "",
                    &self.record.name,
                    format!("missing part '{key}' for method {:?}", self.record.method),
                )
            })
    }

    /// The part whose key ends with `suffix` (keys are full names).
    pub fn part_suffix(&self, suffix: &str) -> Result<&Part> {
        self.parts
            .iter()
            .find(|p| p.layout.key.ends_with(suffix))
            .ok_or_else(|| {
                Error::tensor(
                    "",
                    &self.record.name,
                    format!(
                        "missing part '*{suffix}' for method {:?}",
                        self.record.method
                    ),
                )
            })
    }

    /// Total stored bytes.
    pub fn byte_len(&self) -> usize {
        self.parts.iter().map(|p| p.data.len()).sum()
    }

    /// The parts' byte buffers, in order, for [`QuantMethod::quantize_reusing`].
    pub fn into_buffers(self) -> Vec<Vec<u8>> {
        self.parts.into_iter().map(|p| p.data).collect()
    }
}

/// `buf` holding exactly `n` bytes for a method to write: its allocation reused when it
/// is large enough (only bytes past its old length are zeroed), otherwise a fresh zeroed
/// allocation, whose pages the kernel zeroes as they are first touched instead of a
/// second pass here.
pub fn reuse_bytes(buf: &mut Vec<u8>, n: usize) -> &mut [u8] {
    if buf.capacity() < n {
        *buf = vec![0u8; n];
    } else {
        buf.resize(n, 0);
    }
    buf
}

/// What a method does with a tensor when no rule says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Quantize it with this method.
    Quantize,
    /// Keep it unquantized, cast to this dtype (`None`: as stored).
    Keep(Option<DType>),
    /// The shape does not fit: quantize with `method` instead (a per-tensor fallback that
    /// is counted, printed and recorded; refused in strict mode).
    Fallback {
        /// The method to use instead (created with default parameters).
        method: String,
        /// Why, in words.
        reason: String,
    },
}

/// A quantization method, created by its registry entry from parameters.
///
/// Object safe; backends implement it for each format. Optional abilities return
/// [`Error::Unsupported`] rather than panicking.
pub trait QuantMethod: Send + Sync {
    /// The registered method name.
    fn name(&self) -> &str;

    /// The parameters this instance was created with, as the factory takes them (stored in
    /// each tensor record so loading can recreate the method).
    fn params(&self) -> Params;

    /// What to do with `tensor` by default (the method's ecosystem's rules).
    fn select(&self, tensor: &TensorMeta) -> Selection;

    /// The exact parts quantizing `tensor` produces, before any byte is computed.
    fn output_layout(&self, tensor: &TensorMeta) -> Result<Vec<PartLayout>>;

    /// Quantizes `values` (row-major f32, exact for f16/bf16 inputs; `tensor.dtype` is the
    /// stored dtype, for methods that first cast to it).
    fn quantize(&self, tensor: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor>;

    /// [`quantize`](Self::quantize), writing into `buffers` where the method can: the byte
    /// buffers of an earlier output (see [`QuantizedTensor::into_buffers`]), whose
    /// allocations are reused so that tensor after tensor costs no fresh pages. The
    /// result is the same as `quantize`'s. Default: the buffers are dropped and
    /// `quantize` called.
    fn quantize_reusing(
        &self,
        tensor: &TensorMeta,
        values: &[f32],
        buffers: Vec<Vec<u8>>,
    ) -> Result<QuantizedTensor> {
        drop(buffers);
        self.quantize(tensor, values)
    }

    /// Whether [`quantize`](Self::quantize) itself refuses NaN and ±Inf with
    /// [`Error::NonFinite`] naming the first one in row-major order (while each row is in
    /// cache), so the engine need not scan the values first. Default: `false`.
    fn checks_finite(&self) -> bool {
        false
    }

    /// Restores f32 values (exactly representable in `record.dequant_dtype`).
    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>>;
    /// [`dequantize`](Self::dequantize) into the caller's buffer, which holds exactly the
    /// tensor's element count (so one buffer can serve tensor after tensor without a fresh
    /// allocation). The default goes through `dequantize`; methods override it to write
    /// in place.
    fn dequantize_into(&self, q: &QuantizedTensor, out: &mut [f32]) -> Result<()> {
        let values = self.dequantize(q)?;
        if values.len() != out.len() {
            return Err(Error::ShapeMismatch {
                tensor: q.record.name.clone(),
                expected: format!("{} values", out.len()),
                got: vec![values.len()],
            });
        }
        out.copy_from_slice(&values);
        Ok(())
    }

    /// `Some(dtype)` when quantizing is an elementwise cast to `dtype`, stored as one part
    /// under the tensor's own name with its shape: the engine may then stream the tensor
    /// in chunks (bounded memory) instead of calling [`quantize`](Self::quantize) on it
    /// whole. Default: `None`.
    fn elementwise_cast(&self) -> Option<DType> {
        None
    }

    /// How much an error costs in each column of `tensor`'s rows: one non-negative weight
    /// per column (`tensor.row_len()` values, e.g. an importance matrix's expected squared
    /// activation of each input column), so that the error that matters is
    /// `Σ weight[col]·(v − v̂)²`. The memory-target planner measures every candidate
    /// method of a tensor with the same weights (see [`crate::planner`]). Default: `None`
    /// (every column counts the same).
    fn column_importance(&self, tensor: &TensorMeta) -> Option<Vec<f32>> {
        let _ = tensor;
        None
    }

    /// What the method adds around the tensors of one output file (header metadata,
    /// `config.json`'s `quantization_config`, sidecar files such as a quantization map),
    /// given every tensor of that file: its own ([`PlannedTensor::is_by`]), unquantized
    /// ones (`method: None`) and those of other methods. When several methods share a file
    /// the engine merges their artifacts: JSON lists are united, JSON objects merged.
    /// Default: nothing.
    fn artifacts(&self, planned: &[PlannedTensor]) -> Result<Artifacts> {
        let _ = planned;
        Ok(Artifacts::default())
    }

    /// A whole-model choice: for a method that mixes several methods by tensor (as
    /// llama-quantize's `Q4_K_M` does), one [`TensorChoice`] per tensor of `model` and
    /// optionally the output order. Called once per output before planning the tensors;
    /// a user rule matching a tensor wins over the mixture's choice. Default: `None`
    /// (every tensor goes through [`select`](Self::select)).
    fn mixture(&self, model: &ModelView<'_>) -> Result<Option<Mixture>> {
        let _ = model;
        Ok(None)
    }
}

/// What a method sees of a whole model when choosing a [`Mixture`].
#[derive(Clone, Copy, Debug)]
pub struct ModelView<'a> {
    /// Every input tensor, in input order.
    pub tensors: &'a [TensorMeta],
    /// The input's file-level metadata as text (e.g. a GGUF input's key/values).
    pub metadata: &'a std::collections::BTreeMap<String, String>,
}

/// One tensor's method in a [`Mixture`].
#[derive(Clone, Debug, PartialEq)]
pub enum TensorChoice {
    /// The mixing method's own [`QuantMethod::select`].
    Default,
    /// Quantize with this registered method.
    Method {
        /// The registered method name.
        name: String,
        /// Its parameters.
        params: Params,
        /// Why, when the choice is a fallback (counted, printed and recorded as one).
        fallback: Option<String>,
    },
    /// Keep unquantized, cast to this dtype (`None`: as stored).
    Keep(Option<DType>),
}

/// A per-tensor choice of methods for a whole model (see [`QuantMethod::mixture`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Mixture {
    /// One choice per tensor of the [`ModelView`], in its order.
    pub choices: Vec<TensorChoice>,
    /// The output order, as indices into the [`ModelView`]'s tensors (a permutation);
    /// `None`: input order.
    pub order: Option<Vec<usize>>,
}

/// A tensor of one output file, with its layout and the method storing it.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    /// The source tensor.
    pub meta: TensorMeta,
    /// The parts it will be stored as.
    pub layout: Vec<PartLayout>,
    /// The method that stores it (`None`: unquantized).
    pub method: Option<String>,
}

impl PlannedTensor {
    /// True when `method` stores this tensor.
    pub fn is_by(&self, method: &str) -> bool {
        self.method.as_deref() == Some(method)
    }
}

/// File-level output a method contributes (see [`QuantMethod::artifacts`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Artifacts {
    /// Entries for the safetensors `__metadata__` (string values).
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The `quantization_config` block for `config.json`.
    pub quantization_config: Option<serde_json::Value>,
    /// Extra files written beside the weights: (file name, bytes).
    pub files: Vec<(String, Vec<u8>)>,
}

/// A documented method parameter.
#[derive(Clone, Copy, Debug)]
pub struct ParamSpec {
    /// The key, e.g. `blocksize`.
    pub name: &'static str,
    /// The default, as text.
    pub default: &'static str,
    /// One line of help, listing the accepted values.
    pub help: &'static str,
}

impl ParamSpec {
    /// `key=default: help`.
    pub fn describe(&self) -> String {
        format!("{}={}: {}", self.name, self.default, self.help)
    }
}

/// Parses `params` into a backend's own `Deserialize` struct (which should use
/// `#[serde(deny_unknown_fields)]`); any problem becomes [`Error::BadParam`] listing `specs`.
pub fn parse_params<T: DeserializeOwned>(
    method: &str,
    specs: &[ParamSpec],
    params: &Params,
) -> Result<T> {
    let known = || specs.iter().map(ParamSpec::describe).collect::<Vec<_>>();
    if let Some(key) = params.keys().find(|k| !specs.iter().any(|s| s.name == *k)) {
        return Err(Error::BadParam {
            method: method.to_string(),
            param: key.clone(),
            reason: "unknown parameter".into(),
            known: known(),
        });
    }
    serde_json::from_value(serde_json::Value::Object(params.clone())).map_err(|e| {
        let text = e.to_string();
        let param = specs
            .iter()
            .find(|s| {
                text.contains(&format!("`{}`", s.name))
                    || params.contains_key(s.name) && text.contains(s.name)
            })
            .map(|s| s.name.to_string())
            .unwrap_or_else(|| params.keys().cloned().collect::<Vec<_>>().join(","));
        Error::BadParam {
            method: method.to_string(),
            param,
            reason: text,
            known: known(),
        }
    })
}

/// Parses `KEY=VALUE` into a parameter: the value is read as JSON when it parses
/// (`128`, `true`, `"x"`), else kept as a string (`nf4`).
pub fn parse_param_arg(arg: &str) -> Result<(String, serde_json::Value)> {
    let (k, v) = arg.split_once('=').ok_or_else(|| Error::Config {
        source_name: "--param".into(),
        entry: arg.to_string(),
        reason: "expected KEY=VALUE".into(),
    })?;
    let value =
        serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
    Ok((k.trim().to_string(), value))
}
