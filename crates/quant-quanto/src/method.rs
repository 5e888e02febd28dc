//! The four quanto methods as one [`QuantMethod`] implementation parameterised by qtype.

use std::borrow::Cow;
use std::collections::BTreeMap;

use quant_core::{
    parse_params, Artifacts, DType, Error, ParamSpec, Params, Part, PartLayout, PlannedTensor,
    QuantMethod, QuantizedTensor, Result, Selection, TensorMeta, TensorRecord,
};
use serde::Deserialize;

use crate::fp8::Float8Format;
use crate::num::{decode, encode, with_rd, Rd};
use crate::qbits::{self, group_size, Bits};
use crate::qbytes::{self, ByteCode};

/// Metadata key under which quant records the original shape of grouped qint4/qint2
/// weights (the stored `[R, g]` groups do not determine it).
pub const SHAPES_METADATA_KEY: &str = "quanto.weight_shapes";

/// The name of the quantization map sidecar file.
pub const QMAP_FILE: &str = "quanto_qmap.json";

/// A quanto weight qtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    /// `qint8`: symmetric int8, one scale per output row.
    Int8,
    /// `qint4`: affine 4-bit codes in groups, scale + shift, packed two per byte.
    Int4,
    /// `qint2`: affine 2-bit codes in groups, scale + shift, packed four per byte.
    Int2,
    /// `qfloat8_*`: symmetric float8, one scale per output row.
    Float8(Float8Format),
}

impl QType {
    /// quanto's qtype name (`qint8`, `qint4`, `qint2`, `qfloat8_e4m3fn`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            QType::Int8 => "qint8",
            QType::Int4 => "qint4",
            QType::Int2 => "qint2",
            QType::Float8(f) => f.qtype(),
        }
    }

    /// The quant method name that produces this qtype.
    pub const fn method_name(self) -> &'static str {
        match self {
            QType::Int8 => "quanto_config_int8",
            QType::Int4 => "quanto_config_int4",
            QType::Int2 => "quanto_config_int2",
            QType::Float8(_) => "quanto_config_float8",
        }
    }

    /// Parses a quanto qtype name (`qfloat8` means e4m3fn).
    pub fn parse(name: &str) -> Option<QType> {
        Some(match name {
            "qint8" => QType::Int8,
            "qint4" => QType::Int4,
            "qint2" => QType::Int2,
            "qfloat8" => QType::Float8(Float8Format::E4M3FN),
            other => QType::Float8(Float8Format::ALL.into_iter().find(|f| f.qtype() == other)?),
        })
    }

    /// diffusers' `QuantoConfig.weights_dtype` for this qtype, when it has one.
    pub const fn diffusers_weights_dtype(self) -> Option<&'static str> {
        match self {
            QType::Int8 => Some("int8"),
            QType::Int4 => Some("int4"),
            QType::Int2 => Some("int2"),
            QType::Float8(Float8Format::E4M3FN) => Some("float8"),
            QType::Float8(_) => None,
        }
    }

    fn bits(self) -> Option<Bits> {
        match self {
            QType::Int4 => Some(Bits::Four),
            QType::Int2 => Some(Bits::Two),
            _ => None,
        }
    }
}

/// Which folder layout a method writes (and so which tensors it quantizes by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// diffusers' native `QuantoConfig`: every Linear weight (2-D), `config.json` gets
    /// `quantization_config` so `Model.from_pretrained` loads the folder.
    #[default]
    Diffusers,
    /// optimum-quanto's own `quantize()` + `save_pretrained` (`QuantizedModelForCausalLM`,
    /// `QuantizedDiffusersModel`): Linear and Conv2d weights (2-D and 4-D), no
    /// `quantization_config`; loaded with `requantize` and `quanto_qmap.json`.
    Optimum,
}

impl Layout {
    /// The parameter value.
    pub const fn name(self) -> &'static str {
        match self {
            Layout::Diffusers => "diffusers",
            Layout::Optimum => "optimum",
        }
    }
}

/// Parameters of `quanto_config_int8`, `quanto_config_int4` and `quanto_config_int2`.
pub const INT_PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "layout",
        default: "diffusers",
        help: "diffusers (Linear weights, config.json quantization_config) or optimum (Linear and Conv2d weights, quanto_qmap.json only)",
    },
    ParamSpec {
        name: "modules_to_not_convert",
        default: "[]",
        help: "module child names (last path component) whose weights stay unquantized, as diffusers' QuantoConfig",
    },
];

/// Parameters of `quanto_config_float8`.
pub const FLOAT8_PARAMS: &[ParamSpec] = &[
    INT_PARAMS[0],
    INT_PARAMS[1],
    ParamSpec {
        name: "float8_format",
        default: "e4m3fn",
        help: "e4m3fn (qfloat8), e5m2 or e4m3fnuz; the last two need layout=optimum (diffusers only knows e4m3fn)",
    },
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntParams {
    #[serde(default)]
    layout: Layout,
    #[serde(default)]
    modules_to_not_convert: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Float8Params {
    #[serde(default)]
    layout: Layout,
    #[serde(default)]
    modules_to_not_convert: Option<Vec<String>>,
    #[serde(default)]
    float8_format: Option<String>,
}

/// An optimum-quanto weight method (see the crate docs for the exact algorithm).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quanto {
    qtype: QType,
    layout: Layout,
    modules_to_not_convert: Vec<String>,
}

impl Quanto {
    /// A method for `qtype` with the given layout and modules kept unquantized.
    pub fn new(qtype: QType, layout: Layout, modules_to_not_convert: Vec<String>) -> Result<Self> {
        if layout == Layout::Diffusers && qtype.diffusers_weights_dtype().is_none() {
            return Err(Error::BadParam {
                method: qtype.method_name().into(),
                param: "layout".into(),
                reason: format!(
                    "diffusers' QuantoConfig cannot load {}; use layout=optimum",
                    qtype.name()
                ),
                known: FLOAT8_PARAMS.iter().map(ParamSpec::describe).collect(),
            });
        }
        Ok(Quanto {
            qtype,
            layout,
            modules_to_not_convert,
        })
    }

    /// Creates an integer method (`Int8`, `Int4`, `Int2`) from parameters.
    pub fn from_int_params(qtype: QType, params: &Params) -> Result<Self> {
        let p: IntParams = parse_params(qtype.method_name(), INT_PARAMS, params)?;
        Quanto::new(
            qtype,
            p.layout,
            p.modules_to_not_convert.unwrap_or_default(),
        )
    }

    /// Creates `quanto_config_float8` from parameters.
    pub fn from_float8_params(params: &Params) -> Result<Self> {
        let name = "quanto_config_float8";
        let p: Float8Params = parse_params(name, FLOAT8_PARAMS, params)?;
        let format = match p.float8_format.as_deref() {
            None => Float8Format::E4M3FN,
            Some(s) => Float8Format::ALL
                .into_iter()
                .find(|f| f.name() == s || f.qtype() == s)
                .ok_or_else(|| Error::BadParam {
                    method: name.into(),
                    param: "float8_format".into(),
                    reason: format!("unknown float8 format '{s}' (e4m3fn, e5m2, e4m3fnuz)"),
                    known: FLOAT8_PARAMS.iter().map(ParamSpec::describe).collect(),
                })?,
        };
        Quanto::new(
            QType::Float8(format),
            p.layout,
            p.modules_to_not_convert.unwrap_or_default(),
        )
    }

    /// The qtype.
    pub fn qtype(&self) -> QType {
        self.qtype
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    fn plan(&self, t: &TensorMeta) -> Result<Plan> {
        if !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::UnsupportedDType {
                tensor: t.name.clone(),
                dtype: t.dtype.to_string(),
                op: format!("{} (F32, F16, BF16 weights)", self.qtype.method_name()),
            });
        }
        let numel = t.numel()?;
        let out = t.shape.first().copied().unwrap_or(0);
        if t.shape.len() < 2 || numel == 0 {
            return Err(Error::ShapeMismatch {
                tensor: t.name.clone(),
                expected: "a non-empty weight of 2 or more dimensions".into(),
                got: t.shape.clone(),
            });
        }
        let in_f = numel / out;
        let kind = match self.qtype.bits() {
            None => PlanKind::Bytes,
            Some(bits) => {
                let (rows, cols, grouped) = match group_size(in_f) {
                    Some(g) => (numel / g, g, true),
                    None => (out, in_f, false),
                };
                PlanKind::Bits {
                    bits,
                    rows,
                    cols,
                    grouped,
                    tinygemm: t.dtype == DType::BF16
                        && bits == Bits::Four
                        && cols == 128
                        && grouped
                        && t.shape.len() == 2,
                }
            }
        };
        Ok(Plan {
            dtype: t.dtype,
            out,
            in_f,
            kind,
        })
    }

    fn layout_for(&self, t: &TensorMeta, plan: &Plan) -> Vec<PartLayout> {
        let name = &t.name;
        let prefix = module_prefix(name);
        let ones = |n: usize| {
            let mut s = vec![plan.out];
            s.extend(std::iter::repeat_n(1, n));
            s
        };
        let mut parts = Vec::with_capacity(5);
        match plan.kind {
            PlanKind::Bytes => {
                let dtype = match self.qtype {
                    QType::Float8(f) => f.dtype(),
                    _ => DType::I8,
                };
                parts.push(PartLayout::new(
                    format!("{name}._data"),
                    dtype,
                    t.shape.clone(),
                ));
                let scale_shape = if plan.out == 1 {
                    vec![]
                } else {
                    ones(t.shape.len() - 1)
                };
                parts.push(PartLayout::new(
                    format!("{name}._scale"),
                    plan.dtype,
                    scale_shape,
                ));
            }
            PlanKind::Bits {
                bits,
                rows,
                cols,
                grouped,
                ..
            } => {
                let rp = bits.packed_rows(rows);
                let (data_shape, scale_shape) = if grouped {
                    (vec![rp, cols], vec![rows, 1])
                } else {
                    let mut d = t.shape.clone();
                    if let Some(first) = d.first_mut() {
                        *first = rp;
                    }
                    (d, ones(t.shape.len() - 1))
                };
                parts.push(PartLayout::new(
                    format!("{name}._data._data"),
                    DType::U8,
                    data_shape,
                ));
                parts.push(PartLayout::new(
                    format!("{name}._scale"),
                    plan.dtype,
                    scale_shape.clone(),
                ));
                parts.push(PartLayout::new(
                    format!("{name}._shift"),
                    plan.dtype,
                    scale_shape,
                ));
            }
        }
        parts.push(PartLayout::new(
            format!("{prefix}input_scale"),
            plan.dtype,
            vec![],
        ));
        parts.push(PartLayout::new(
            format!("{prefix}output_scale"),
            plan.dtype,
            vec![],
        ));
        parts
    }

    fn record(&self, t: &TensorMeta, layout: &[PartLayout]) -> TensorRecord {
        TensorRecord {
            name: t.name.clone(),
            method: Some(self.qtype.method_name().to_string()),
            dtype: t.dtype,
            shape: t.shape.clone(),
            dequant_dtype: t.dtype,
            params: self.params(),
            parts: layout.iter().map(|l| l.key.clone()).collect(),
            fallback: None,
        }
    }
}

/// What quantizing one tensor produces, decided from its shape and dtype.
struct Plan {
    dtype: DType,
    out: usize,
    in_f: usize,
    kind: PlanKind,
}

enum PlanKind {
    Bytes,
    Bits {
        bits: Bits,
        /// Rows of the group matrix (groups, or output rows when ungrouped).
        rows: usize,
        /// Values per group row.
        cols: usize,
        grouped: bool,
        tinygemm: bool,
    },
}

/// `"P."` for a weight named `P.weight` (`""` for a top-level `weight`): where the
/// module's `input_scale` / `output_scale` buffers live.
pub(crate) fn module_prefix(weight: &str) -> &str {
    match weight.rfind('.') {
        Some(i) => weight.get(..=i).unwrap_or(""),
        None => "",
    }
}

/// The module path of a weight (`P` for `P.weight`, `""` for `weight`).
pub(crate) fn module_name(weight: &str) -> &str {
    weight.rsplit_once('.').map(|(m, _)| m).unwrap_or("")
}

fn bad_part(key: &str, want: &PartLayout, got: &PartLayout) -> Error {
    Error::tensor(
        "",
        key,
        format!(
            "quanto part is {} {:?}, expected {} {:?}",
            got.dtype, got.shape, want.dtype, want.shape
        ),
    )
}

fn model_dtype_error(t: &str, dtype: DType) -> Error {
    Error::UnsupportedDType {
        tensor: t.to_string(),
        dtype: dtype.to_string(),
        op: "quanto (F32, F16, BF16 weights)".into(),
    }
}

impl QuantMethod for Quanto {
    fn name(&self) -> &str {
        self.qtype.method_name()
    }

    fn params(&self) -> Params {
        let mut p = Params::new();
        p.insert("layout".into(), self.layout.name().into());
        p.insert(
            "modules_to_not_convert".into(),
            serde_json::Value::Array(
                self.modules_to_not_convert
                    .iter()
                    .map(|m| serde_json::Value::String(m.clone()))
                    .collect(),
            ),
        );
        if let QType::Float8(f) = self.qtype {
            p.insert("float8_format".into(), f.name().into());
        }
        p
    }

    fn select(&self, t: &TensorMeta) -> Selection {
        let float = matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16);
        let is_weight = t.name == "weight" || t.name.ends_with(".weight");
        if !float || !is_weight || t.numel().map_or(true, |n| n == 0) {
            return Selection::Keep(None);
        }
        let module = module_name(&t.name);
        let child = module.rsplit('.').next().unwrap_or(module);
        if self.modules_to_not_convert.iter().any(|m| m == child) {
            return Selection::Keep(None);
        }
        match (t.shape.len(), self.layout) {
            (2, _) if !quant_core::tensor::is_embedding_module(child) => Selection::Quantize,
            (4, Layout::Optimum) => Selection::Quantize,
            _ => Selection::Keep(None),
        }
    }

    fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
        let plan = self.plan(t)?;
        Ok(self.layout_for(t, &plan))
    }

    fn quantize(&self, t: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor> {
        let plan = self.plan(t)?;
        if values.len() != t.numel()? {
            return Err(Error::ShapeMismatch {
                tensor: t.name.clone(),
                expected: format!("{} values", t.numel()?),
                got: vec![values.len()],
            });
        }
        // quanto computes in the weight dtype: make sure the values are in it.
        let values: Cow<'_, [f32]> = with_rd!(plan.dtype, R => {
            if R::DTYPE == DType::F32 || crate::num::all_in_dtype::<R>(values) {
                Cow::Borrowed(values)
            } else {
                Cow::Owned(values.iter().map(|&v| R::rd(v)).collect())
            }
        }, else return Err(model_dtype_error(&t.name, plan.dtype)));
        let layout = self.layout_for(t, &plan);
        let one = encode(plan.dtype, &[1.0])?;
        let mut blobs: Vec<Vec<u8>> = match plan.kind {
            PlanKind::Bytes => {
                let code = match self.qtype {
                    QType::Float8(f) => ByteCode::Float8(f),
                    _ => ByteCode::Int8,
                };
                let (codes, scales) = with_rd!(plan.dtype, R => {
                    qbytes::quantize::<R>(code, &values, plan.out, plan.in_f)
                }, else return Err(model_dtype_error(&t.name, plan.dtype)));
                vec![codes, encode(plan.dtype, &scales)?]
            }
            PlanKind::Bits {
                bits,
                rows,
                cols,
                tinygemm,
                ..
            } => {
                let q = with_rd!(plan.dtype, R => {
                    qbits::quantize::<R>(bits, &values, rows, cols, tinygemm)
                }, else return Err(model_dtype_error(&t.name, plan.dtype)));
                vec![
                    qbits::pack(bits, &q.codes, rows, cols),
                    encode(plan.dtype, &q.scale)?,
                    encode(plan.dtype, &q.shift)?,
                ]
            }
        };
        blobs.push(one.clone());
        blobs.push(one);
        let record = self.record(t, &layout);
        let parts = layout
            .into_iter()
            .zip(blobs)
            .map(|(l, d)| Part::new(l, d))
            .collect::<Result<Vec<_>>>()?;
        Ok(QuantizedTensor { record, parts })
    }

    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
        let rec = &q.record;
        let t = TensorMeta::new(rec.name.clone(), rec.dtype, rec.shape.clone());
        let plan = self.plan(&t)?;
        let layout = self.layout_for(&t, &plan);
        let fetch = |i: usize| -> Result<&Part> {
            let want = layout
                .get(i)
                .ok_or_else(|| Error::tensor("", &rec.name, "quanto layout lost a part"))?;
            let part = q.part(&want.key)?;
            if part.layout.dtype != want.dtype || part.layout.shape != want.shape {
                return Err(bad_part(&want.key, want, &part.layout));
            }
            Ok(part)
        };
        let data = fetch(0)?;
        let scale = decode(plan.dtype, &fetch(1)?.data)?;
        match plan.kind {
            PlanKind::Bytes => {
                let code = match self.qtype {
                    QType::Float8(f) => ByteCode::Float8(f),
                    _ => ByteCode::Int8,
                };
                with_rd!(plan.dtype, R => {
                    Ok(qbytes::dequantize::<R>(code, &data.data, &scale))
                }, else Err(model_dtype_error(&rec.name, plan.dtype)))
            }
            PlanKind::Bits { bits, cols, .. } => {
                let shift = decode(plan.dtype, &fetch(2)?.data)?;
                with_rd!(plan.dtype, R => {
                    Ok(qbits::dequantize::<R>(bits, &data.data, &scale, &shift, cols))
                }, else Err(model_dtype_error(&rec.name, plan.dtype)))
            }
        }
    }

    fn artifacts(&self, planned: &[PlannedTensor]) -> Result<Artifacts> {
        let mut qmap = serde_json::Map::new();
        let mut shapes = serde_json::Map::new();
        let planned: Vec<&PlannedTensor> =
            planned.iter().filter(|p| p.is_by(self.name())).collect();
        for p in &planned {
            let mut entry = serde_json::Map::new();
            entry.insert("weights".into(), self.qtype.name().into());
            entry.insert("activations".into(), "none".into());
            qmap.insert(
                module_name(&p.meta.name).to_string(),
                serde_json::Value::Object(entry),
            );
            let grouped = self
                .plan(&p.meta)
                .is_ok_and(|plan| matches!(plan.kind, PlanKind::Bits { grouped: true, .. }));
            if grouped {
                shapes.insert(p.meta.name.clone(), serde_json::json!(p.meta.shape));
            }
        }
        let mut out = Artifacts::default();
        // transformers refuses safetensors files whose metadata lacks `format: pt`.
        out.metadata.insert("format".into(), "pt".into());
        if !planned.is_empty() {
            out.files
                .push((QMAP_FILE.to_string(), python_json_dump(&qmap)?));
        }
        if !shapes.is_empty() {
            out.metadata.insert(
                SHAPES_METADATA_KEY.to_string(),
                serde_json::Value::Object(shapes).to_string(),
            );
        }
        if self.layout == Layout::Diffusers {
            if let Some(w) = self.qtype.diffusers_weights_dtype() {
                let not_convert = if self.modules_to_not_convert.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::json!(self.modules_to_not_convert)
                };
                let mut cfg = serde_json::Map::new();
                cfg.insert("modules_to_not_convert".into(), not_convert);
                cfg.insert("quant_method".into(), "quanto".into());
                cfg.insert("weights_dtype".into(), w.into());
                out.quantization_config = Some(serde_json::Value::Object(cfg));
            }
        }
        Ok(out)
    }
}

/// `json.dump(obj, f, indent=4)` as Python writes it (no trailing newline).
fn python_json_dump(map: &serde_json::Map<String, serde_json::Value>) -> Result<Vec<u8>> {
    use serde::Serialize;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    map.serialize(&mut ser)
        .map_err(|e| Error::file(QMAP_FILE, "json", e.to_string()))?;
    Ok(buf)
}

/// Parses a `quanto_qmap.json` into module → (weights qtype, activations).
pub fn parse_qmap(bytes: &[u8]) -> Result<BTreeMap<String, (String, String)>> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::file(QMAP_FILE, "json", e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::file(QMAP_FILE, "json", "not a JSON object"))?;
    let mut out = BTreeMap::new();
    for (module, entry) in obj {
        let field = |k: &str| {
            entry
                .get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    Error::file(
                        QMAP_FILE,
                        "json",
                        format!("module '{module}': missing string '{k}'"),
                    )
                })
        };
        out.insert(module.clone(), (field("weights")?, field("activations")?));
    }
    Ok(out)
}
