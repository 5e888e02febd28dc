//! The registered methods: parameters, tensor selection, layouts, quantize / dequantize,
//! and the `quantization_config` transformers writes.

use quant_core::{
    parse_params, Artifacts, DType, Error, ParamSpec, Params, Part, PartLayout, PlannedTensor,
    QuantMethod, QuantizedTensor, Result, Selection, TensorMeta, TensorRecord,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::fourbit::{
    dequantize_4bit, dequantize_nested, quantize_4bit_cast, quantize_nested, torch_mean,
};
use crate::int8::{dequantize_int8, quantize_int8_bytes};
use crate::quant_state::QuantState;
use crate::tables::DYNAMIC_MAP;
use crate::QuantType;

/// The backend name used in registrations and errors.
pub const BACKEND: &str = "quant-bnb";

/// The nested (double-quantization) blocksize bitsandbytes always uses.
pub const NESTED_BLOCKSIZE: usize = 256;

/// The 4-bit blocksizes bitsandbytes accepts.
pub const BLOCKSIZES: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Parameters of the 4-bit methods.
pub const PARAMS_4BIT: &[ParamSpec] = &[
    ParamSpec {
        name: "quant_type",
        default: "nf4",
        help: "4-bit data type: nf4 | fp4 (bnb_4bit_quant_type)",
    },
    ParamSpec {
        name: "blocksize",
        default: "64",
        help: "elements per absmax block: 32 | 64 | 128 | 256 | 512 | 1024 | 2048 | 4096",
    },
    ParamSpec {
        name: "double_quant",
        default: "false",
        help: "quantize the absmax to 8 bits in blocks of 256 (bnb_4bit_use_double_quant)",
    },
    ParamSpec {
        name: "quant_storage",
        default: "uint8",
        help: "dtype the packed bytes are stored as: uint8 | int8 | float16 | bfloat16 | float32 | float64",
    },
    ParamSpec {
        name: "dtype",
        default: "the compute dtype",
        help: "load dtype (transformers' torch_dtype): float32 | float16 | bfloat16; weights are cast to it before quantizing, unquantized tensors are stored in it",
    },
    ParamSpec {
        name: "compute_dtype",
        default: "float16 (_fp16) / bfloat16 (_bf16)",
        help: "bnb_4bit_compute_dtype written to config.json: float32 | float16 | bfloat16",
    },
];

/// Parameters of the 8-bit methods.
pub const PARAMS_8BIT: &[ParamSpec] = &[ParamSpec {
    name: "dtype",
    default: "the method's dtype",
    help: "load dtype (transformers' torch_dtype): float32 | float16 | bfloat16; weights are cast to it, then to float16, before quantizing; unquantized tensors are stored in it",
}];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw4 {
    #[serde(default)]
    quant_type: Option<String>,
    #[serde(default)]
    blocksize: Option<u64>,
    #[serde(default)]
    double_quant: Option<bool>,
    #[serde(default)]
    quant_storage: Option<String>,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    compute_dtype: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw8 {
    #[serde(default)]
    dtype: Option<String>,
}

fn bad(method: &str, specs: &[ParamSpec], param: &str, reason: String) -> Error {
    Error::BadParam {
        method: method.to_string(),
        param: param.to_string(),
        reason,
        known: specs.iter().map(ParamSpec::describe).collect(),
    }
}

/// Parses one of float32 | float16 | bfloat16 (aliases such as `bf16` and `torch.` prefixes
/// accepted).
fn float_dtype(method: &str, specs: &[ParamSpec], param: &str, v: &str) -> Result<DType> {
    match DType::parse(v) {
        Ok(d @ (DType::F32 | DType::F16 | DType::BF16)) => Ok(d),
        _ => Err(bad(
            method,
            specs,
            param,
            format!("'{v}' is not one of float32, float16, bfloat16"),
        )),
    }
}

/// The settings of a 4-bit method, parsed once.
#[derive(Clone, Debug, PartialEq)]
pub struct Config4 {
    /// nf4 or fp4.
    pub quant_type: QuantType,
    /// One of [`BLOCKSIZES`].
    pub blocksize: usize,
    /// Double quantization of the absmax.
    pub double_quant: bool,
    /// The dtype the packed bytes are stored as.
    pub storage: DType,
    /// The load dtype: weights are cast to it before quantizing.
    pub dtype: DType,
    /// `bnb_4bit_compute_dtype` for config.json.
    pub compute_dtype: DType,
}

impl Config4 {
    /// Parses parameters for `method`, whose compute dtype is `compute`.
    pub fn parse(method: &str, compute: DType, params: &Params) -> Result<Config4> {
        let s = PARAMS_4BIT;
        let raw: Raw4 = parse_params(method, s, params)?;
        let quant_type = match raw.quant_type.as_deref().unwrap_or("nf4") {
            "nf4" => QuantType::Nf4,
            "fp4" => QuantType::Fp4,
            other => {
                return Err(bad(
                    method,
                    s,
                    "quant_type",
                    format!("'{other}' is not nf4 or fp4"),
                ))
            }
        };
        let blocksize = raw.blocksize.unwrap_or(64);
        let blocksize = BLOCKSIZES
            .iter()
            .copied()
            .find(|&b| b as u64 == blocksize)
            .ok_or_else(|| {
                bad(
                    method,
                    s,
                    "blocksize",
                    format!("{blocksize} is not one of {BLOCKSIZES:?}"),
                )
            })?;
        let storage_name = raw.quant_storage.as_deref().unwrap_or("uint8");
        let storage = match DType::parse(storage_name) {
            Ok(
                d @ (DType::U8
                | DType::I8
                | DType::F16
                | DType::BF16
                | DType::F32
                | DType::F64),
            ) => d,
            _ => {
                return Err(bad(
                    method,
                    s,
                    "quant_storage",
                    format!("'{storage_name}' is not one of uint8, int8, float16, bfloat16, float32, float64"),
                ))
            }
        };
        let dtype = match raw.dtype.as_deref() {
            Some(v) => float_dtype(method, s, "dtype", v)?,
            None => compute,
        };
        let compute_dtype = match raw.compute_dtype.as_deref() {
            Some(v) => float_dtype(method, s, "compute_dtype", v)?,
            None => compute,
        };
        Ok(Config4 {
            quant_type,
            blocksize,
            double_quant: raw.double_quant.unwrap_or(false),
            storage,
            dtype,
            compute_dtype,
        })
    }

    /// The parameters as the factory takes them (every key explicit).
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.insert("quant_type".into(), json!(self.quant_type.as_str()));
        p.insert("blocksize".into(), json!(self.blocksize));
        p.insert("double_quant".into(), json!(self.double_quant));
        p.insert("quant_storage".into(), json!(self.storage.torch_name()));
        p.insert("dtype".into(), json!(self.dtype.torch_name()));
        p.insert(
            "compute_dtype".into(),
            json!(self.compute_dtype.torch_name()),
        );
        p
    }
}

/// Module names transformers never converts to bnb layers although their weight is a 2-D
/// `*.weight` (embeddings, the output head): the last component of the module name.
pub const SKIPPED_MODULES: [&str; 6] = [
    "lm_head",
    "embed_out",
    "wte",
    "wpe",
    "shared",
    "relative_attention_bias",
];

/// Whether transformers / diffusers would quantize this tensor as a `nn.Linear` weight:
/// a 2-D floating tensor named `weight` or `*.weight`, non-empty, whose module is not an
/// embedding (`*embed*` except `*embedder`) or one of [`SKIPPED_MODULES`].
pub fn is_linear_weight(t: &TensorMeta) -> bool {
    if t.shape.len() != 2 || !t.dtype.is_float() || t.numel().map_or(true, |n| n == 0) {
        return false;
    }
    let module = if t.name == "weight" {
        ""
    } else {
        match t.name.strip_suffix(".weight") {
            Some(m) => m,
            None => return false,
        }
    };
    let last = module.rsplit('.').next().unwrap_or(module);
    let lower = last.to_ascii_lowercase();
    // `*embedder` modules (diffusers' `x_embedder`, `context_embedder`) are nn.Linear.
    let embedding = lower.contains("embed") && !lower.ends_with("embedder");
    !(embedding || SKIPPED_MODULES.contains(&lower.as_str()))
}

fn check_len(t: &TensorMeta, values: &[f32]) -> Result<usize> {
    let n = t.numel()?;
    if n != values.len() {
        return Err(Error::ShapeMismatch {
            tensor: t.name.clone(),
            expected: format!("{n} values"),
            got: vec![values.len()],
        });
    }
    Ok(n)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_values(p: &Part, name: &str, what: &str, want: usize) -> Result<Vec<f32>> {
    if p.layout.dtype != DType::F32 || p.data.len() != want * 4 {
        return Err(Error::tensor(
            "",
            name,
            format!(
                "{what} must be {want} float32 values, got {} bytes of {}",
                p.data.len(),
                p.layout.dtype
            ),
        ));
    }
    Ok(p.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// bitsandbytes 4-bit (NF4 / FP4, optional double quantization).
#[derive(Clone, Debug)]
pub struct Bnb4 {
    name: &'static str,
    cfg: Config4,
}

impl Bnb4 {
    /// A method named `name` with settings `cfg`.
    pub fn new(name: &'static str, cfg: Config4) -> Self {
        Bnb4 { name, cfg }
    }

    /// The settings.
    pub fn config(&self) -> &Config4 {
        &self.cfg
    }

    fn quant_state(&self, t: &TensorMeta, offset: f32) -> QuantState {
        QuantState {
            quant_type: self.cfg.quant_type,
            blocksize: self.cfg.blocksize,
            dtype: self.cfg.dtype,
            shape: t.shape.clone(),
            nested: self.cfg.double_quant.then_some((NESTED_BLOCKSIZE, offset)),
        }
    }

    fn state_key(name: &str, qt: QuantType) -> String {
        format!("{name}.quant_state.bitsandbytes__{}", qt.as_str())
    }
}

impl QuantMethod for Bnb4 {
    fn name(&self) -> &str {
        self.name
    }

    fn params(&self) -> Params {
        self.cfg.to_params()
    }

    fn select(&self, t: &TensorMeta) -> Selection {
        if !t.dtype.is_float() {
            return Selection::Keep(None);
        }
        if !is_linear_weight(t) {
            return Selection::Keep(Some(self.cfg.dtype));
        }
        let nbytes = t.numel().unwrap_or(0).div_ceil(2);
        if nbytes % self.cfg.storage.size() != 0 {
            return Selection::Fallback {
                method: "basic_int8".into(),
                reason: format!(
                    "{nbytes} packed bytes are not a whole number of {} values (quant_storage)",
                    self.cfg.storage.torch_name()
                ),
            };
        }
        Selection::Quantize
    }

    fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
        let n = t.numel()?;
        let nbytes = n.div_ceil(2);
        let item = self.cfg.storage.size();
        if n == 0 || nbytes % item != 0 {
            return Err(Error::ShapeMismatch {
                tensor: t.name.clone(),
                expected: format!(
                    "a non-empty tensor whose {nbytes} packed bytes fill whole {} values",
                    self.cfg.storage.torch_name()
                ),
                got: t.shape.clone(),
            });
        }
        let nblocks = n.div_ceil(self.cfg.blocksize);
        let name = &t.name;
        let mut parts = vec![PartLayout::new(
            name.clone(),
            self.cfg.storage,
            vec![nbytes / item, 1],
        )];
        let absmax_dtype = if self.cfg.double_quant {
            DType::U8
        } else {
            DType::F32
        };
        parts.push(PartLayout::new(
            format!("{name}.absmax"),
            absmax_dtype,
            vec![nblocks],
        ));
        parts.push(PartLayout::new(
            format!("{name}.quant_map"),
            DType::F32,
            vec![16],
        ));
        if self.cfg.double_quant {
            parts.push(PartLayout::new(
                format!("{name}.nested_absmax"),
                DType::F32,
                vec![nblocks.div_ceil(NESTED_BLOCKSIZE)],
            ));
            parts.push(PartLayout::new(
                format!("{name}.nested_quant_map"),
                DType::F32,
                vec![256],
            ));
        }
        parts.push(PartLayout::new(
            Self::state_key(name, self.cfg.quant_type),
            DType::U8,
            vec![self.quant_state(t, 0.0).stored_len()],
        ));
        Ok(parts)
    }

    fn quantize(&self, t: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor> {
        check_len(t, values)?;
        let layout = self.output_layout(t)?;
        let load = self.cfg.dtype;
        let (packed, absmax) =
            quantize_4bit_cast(values, self.cfg.blocksize, self.cfg.quant_type, load);
        let mut data: Vec<Vec<u8>> = vec![packed];
        let mut offset = 0.0;
        if self.cfg.double_quant {
            offset = torch_mean(&absmax);
            let (codes, nested) = quantize_nested(&absmax, offset, NESTED_BLOCKSIZE);
            data.push(codes);
            data.push(f32_bytes(self.cfg.quant_type.quant_map()));
            data.push(f32_bytes(&nested));
            data.push(f32_bytes(&DYNAMIC_MAP));
        } else {
            data.push(f32_bytes(&absmax));
            data.push(f32_bytes(self.cfg.quant_type.quant_map()));
        }
        data.push(self.quant_state(t, offset).to_stored_bytes());
        let record = TensorRecord {
            name: t.name.clone(),
            method: Some(self.name.to_string()),
            dtype: t.dtype,
            shape: t.shape.clone(),
            dequant_dtype: load,
            params: self.params(),
            parts: layout.iter().map(|l| l.key.clone()).collect(),
            fallback: None,
        };
        QuantizedTensor::from_layout(record, layout, data)
    }

    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
        dequantize_4bit_parts(q)
    }

    fn artifacts(&self, _planned: &[PlannedTensor]) -> Result<Artifacts> {
        Ok(artifacts(quantization_config_4bit(&self.cfg)))
    }
}

/// Restores a 4-bit weight from its parts (ours or transformers'), checking every size.
pub fn dequantize_4bit_parts(q: &QuantizedTensor) -> Result<Vec<f32>> {
    let name = q.record.name.as_str();
    let prefix = format!("{name}.quant_state.bitsandbytes__");
    let state_part = q
        .parts
        .iter()
        .find(|p| p.layout.key.starts_with(&prefix))
        .ok_or_else(|| Error::tensor("", name, "missing quant_state.bitsandbytes__* part"))?;
    let key_type = match state_part.layout.key.strip_prefix(&prefix) {
        Some("nf4") => QuantType::Nf4,
        Some("fp4") => QuantType::Fp4,
        other => {
            return Err(Error::tensor(
                "",
                name,
                format!("unknown quant state type {other:?}"),
            ))
        }
    };
    let qs =
        QuantState::parse(&state_part.data, key_type).map_err(|e| Error::tensor("", name, e))?;
    let n = quant_core::tensor::checked_numel(&qs.shape)
        .ok_or_else(|| Error::tensor("", name, "quant state shape overflows"))?;
    if qs.blocksize % 2 != 0 {
        return Err(Error::tensor(
            "",
            name,
            format!("blocksize {} is odd", qs.blocksize),
        ));
    }
    let packed = q.part(name)?;
    if packed.data.len() != n.div_ceil(2) {
        return Err(Error::tensor(
            "",
            name,
            format!(
                "packed weight has {} bytes, shape {:?} needs {}",
                packed.data.len(),
                qs.shape,
                n.div_ceil(2)
            ),
        ));
    }
    let nblocks = n.div_ceil(qs.blocksize);
    let absmax_part = q.part(&format!("{name}.absmax"))?;
    q.part(&format!("{name}.quant_map"))
        .and_then(|p| f32_values(p, name, "quant_map", 16))?;
    let absmax = match qs.nested {
        None => f32_values(absmax_part, name, "absmax", nblocks)?,
        Some((nbs, offset)) => {
            if absmax_part.layout.dtype != DType::U8 || absmax_part.data.len() != nblocks {
                return Err(Error::tensor(
                    "",
                    name,
                    format!(
                        "double-quantized absmax must be {nblocks} uint8 codes, got {} bytes of {}",
                        absmax_part.data.len(),
                        absmax_part.layout.dtype
                    ),
                ));
            }
            let nested = f32_values(
                q.part(&format!("{name}.nested_absmax"))?,
                name,
                "nested_absmax",
                nblocks.div_ceil(nbs),
            )?;
            let map_values = f32_values(
                q.part(&format!("{name}.nested_quant_map"))?,
                name,
                "nested_quant_map",
                256,
            )?;
            let mut map = [0f32; 256];
            map.copy_from_slice(&map_values);
            dequantize_nested(&absmax_part.data, &nested, &map, offset, nbs)
        }
    };
    let last = qs.shape.last().copied().unwrap_or(n);
    Ok(dequantize_4bit(
        &packed.data,
        &absmax,
        n,
        qs.blocksize,
        qs.quant_type.dequant_table(last),
        qs.dtype,
    ))
}

fn artifacts(config: Value) -> Artifacts {
    let mut a = Artifacts::default();
    a.metadata.insert("format".into(), "pt".into());
    a.quantization_config = Some(config);
    a
}

/// `BitsAndBytesConfig(...).to_dict()` as transformers writes it into config.json (keys
/// sorted) for a 4-bit config.
pub fn quantization_config_4bit(cfg: &Config4) -> Value {
    bnb_config(
        true,
        cfg.compute_dtype.torch_name(),
        cfg.storage.torch_name(),
        cfg.quant_type.as_str(),
        cfg.double_quant,
    )
}

/// The config transformers writes for `BitsAndBytesConfig(load_in_8bit=True)`.
pub fn quantization_config_8bit() -> Value {
    bnb_config(false, "float32", "uint8", "fp4", false)
}

fn bnb_config(four: bool, compute: &str, storage: &str, qt: &str, dq: bool) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("_load_in_4bit".into(), json!(four));
    m.insert("_load_in_8bit".into(), json!(!four));
    m.insert("bnb_4bit_compute_dtype".into(), json!(compute));
    m.insert("bnb_4bit_quant_storage".into(), json!(storage));
    m.insert("bnb_4bit_quant_type".into(), json!(qt));
    m.insert("bnb_4bit_use_double_quant".into(), json!(dq));
    m.insert("llm_int8_enable_fp32_cpu_offload".into(), json!(false));
    m.insert("llm_int8_has_fp16_weight".into(), json!(false));
    m.insert("llm_int8_skip_modules".into(), Value::Null);
    m.insert("llm_int8_threshold".into(), json!(6.0));
    m.insert("load_in_4bit".into(), json!(four));
    m.insert("load_in_8bit".into(), json!(!four));
    m.insert("quant_method".into(), json!("bitsandbytes"));
    Value::Object(m)
}

/// bitsandbytes LLM.int8 (`Linear8bitLt` with `has_fp16_weights=False`).
#[derive(Clone, Debug)]
pub struct Bnb8 {
    name: &'static str,
    dtype: DType,
}

impl Bnb8 {
    /// A method named `name` whose load dtype is `dtype`.
    pub fn new(name: &'static str, dtype: DType) -> Self {
        Bnb8 { name, dtype }
    }

    /// Parses parameters for `method`, whose default load dtype is `default`.
    pub fn parse(name: &'static str, default: DType, params: &Params) -> Result<Self> {
        let raw: Raw8 = parse_params(name, PARAMS_8BIT, params)?;
        let dtype = match raw.dtype.as_deref() {
            Some(v) => float_dtype(name, PARAMS_8BIT, "dtype", v)?,
            None => default,
        };
        Ok(Bnb8 { name, dtype })
    }

    /// `P.SCB` and `P.weight_format` for a weight named `P.weight` (`SCB`, `weight_format`
    /// for a bare `weight`).
    pub fn keys(name: &str) -> (String, String) {
        let scb = match name.strip_suffix("weight") {
            Some(prefix) if prefix.is_empty() || prefix.ends_with('.') => format!("{prefix}SCB"),
            _ => format!("{name}.SCB"),
        };
        (scb, format!("{name}_format"))
    }
}

impl QuantMethod for Bnb8 {
    fn name(&self) -> &str {
        self.name
    }

    fn params(&self) -> Params {
        let mut p = Params::new();
        p.insert("dtype".into(), json!(self.dtype.torch_name()));
        p
    }

    fn select(&self, t: &TensorMeta) -> Selection {
        if !t.dtype.is_float() {
            Selection::Keep(None)
        } else if is_linear_weight(t) {
            Selection::Quantize
        } else {
            Selection::Keep(Some(self.dtype))
        }
    }

    fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
        let n = t.numel()?;
        let rows = match t.shape[..] {
            [rows, _] if n > 0 => rows,
            _ => {
                return Err(Error::ShapeMismatch {
                    tensor: t.name.clone(),
                    expected: "a non-empty 2-D [out_features, in_features] weight".into(),
                    got: t.shape.clone(),
                })
            }
        };
        let (scb, format) = Self::keys(&t.name);
        Ok(vec![
            PartLayout::new(t.name.clone(), DType::I8, t.shape.clone()),
            PartLayout::new(scb, DType::F32, vec![rows]),
            PartLayout::new(format, DType::U8, Vec::<usize>::new()),
        ])
    }

    fn quantize(&self, t: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor> {
        check_len(t, values)?;
        let layout = self.output_layout(t)?;
        let cols = t.row_len();
        let (codes, scb) = quantize_int8_bytes(values, cols, self.dtype);
        let data = [codes, f32_bytes(&scb), vec![0u8]];
        let record = TensorRecord {
            name: t.name.clone(),
            method: Some(self.name.to_string()),
            dtype: t.dtype,
            shape: t.shape.clone(),
            dequant_dtype: DType::F32,
            params: self.params(),
            parts: layout.iter().map(|l| l.key.clone()).collect(),
            fallback: None,
        };
        QuantizedTensor::from_layout(record, layout, data.into())
    }

    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
        dequantize_8bit_parts(q)
    }

    fn artifacts(&self, _planned: &[PlannedTensor]) -> Result<Artifacts> {
        Ok(artifacts(quantization_config_8bit()))
    }
}

/// Restores an LLM.int8 weight from its parts (ours or transformers'), checking sizes.
pub fn dequantize_8bit_parts(q: &QuantizedTensor) -> Result<Vec<f32>> {
    let name = q.record.name.as_str();
    let (scb_key, format_key) = Bnb8::keys(name);
    let w = q.part(name)?;
    let (rows, cols) = match w.layout.shape[..] {
        [r, c] if w.layout.dtype == DType::I8 => (r, c),
        _ => {
            return Err(Error::tensor(
                "",
                name,
                format!(
                    "int8 weight must be 2-D int8, got {} {:?}",
                    w.layout.dtype, w.layout.shape
                ),
            ))
        }
    };
    let scb = f32_values(q.part(&scb_key)?, name, "SCB", rows)?;
    if let Ok(f) = q.part(&format_key) {
        if f.data.iter().any(|&b| b != 0) || f.data.len() != 1 {
            return Err(Error::tensor(
                "",
                name,
                format!("weight_format {:?} is not 0 (row)", f.data),
            ));
        }
    }
    if w.data.len() != rows * cols {
        return Err(Error::tensor(
            "",
            name,
            "int8 weight bytes do not match its shape",
        ));
    }
    Ok(dequantize_int8(&w.data, &scb, cols))
}
