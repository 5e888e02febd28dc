//! Recognises bitsandbytes checkpoints written by transformers / diffusers (and by quant,
//! which writes the same layout) so the generic loader can restore their tensors.

use std::collections::BTreeMap;
use std::path::Path;

use quant_core::format::ForeignFile;
use quant_core::safetensors_io::SafetensorsFile;
use quant_core::tensor::checked_numel;
use quant_core::{DType, Error, Params, Result, TensorMeta, TensorRecord};
use serde_json::{json, Value};

use crate::method::{Config4, BLOCKSIZES};
use crate::quant_state::QuantState;
use crate::QuantType;

const STATE_MARK: &str = "quant_state.bitsandbytes__";

/// The `quantization_config` of the config.json beside the file, if any.
fn quantization_config<'a>(f: &'a ForeignFile<'_>) -> Option<&'a serde_json::Map<String, Value>> {
    f.config?.get("quantization_config")?.as_object()
}

fn float_dtype_name(v: Option<&Value>) -> Option<DType> {
    match v?.as_str()?.trim_start_matches("torch.") {
        "float32" => Some(DType::F32),
        "float16" => Some(DType::F16),
        "bfloat16" => Some(DType::BF16),
        _ => None,
    }
}

/// The model's load dtype from config.json (`dtype`, or `torch_dtype` before transformers 5).
fn config_dtype(f: &ForeignFile<'_>) -> Option<DType> {
    let c = f.config?;
    float_dtype_name(c.get("dtype")).or_else(|| float_dtype_name(c.get("torch_dtype")))
}

struct Checker<'a> {
    path: &'a Path,
    metas: BTreeMap<&'a str, &'a TensorMeta>,
}

impl<'a> Checker<'a> {
    fn err(&self, tensor: &str, reason: impl Into<String>) -> Error {
        Error::tensor(self.path, tensor, reason)
    }

    fn get(&self, weight: &str, key: &str) -> Result<&'a TensorMeta> {
        self.metas
            .get(key)
            .copied()
            .ok_or_else(|| self.err(weight, format!("missing '{key}'")))
    }

    fn expect(&self, weight: &str, key: &str, dtype: DType, shape: &[usize]) -> Result<()> {
        let m = self.get(weight, key)?;
        if m.dtype != dtype || m.shape != shape {
            return Err(self.err(
                weight,
                format!(
                    "'{key}' is {} {:?}, expected {dtype} {shape:?}",
                    m.dtype, m.shape
                ),
            ));
        }
        Ok(())
    }
}

/// The layout detector registered for bitsandbytes (see the crate docs).
pub fn detect(f: &ForeignFile<'_>) -> Result<Vec<TensorRecord>> {
    let state_keys: Vec<&TensorMeta> = f
        .tensors
        .iter()
        .filter(|t| t.name.contains(STATE_MARK))
        .collect();
    let scb_keys: Vec<&TensorMeta> = f
        .tensors
        .iter()
        .filter(|t| t.name == "SCB" || t.name.ends_with(".SCB"))
        .collect();
    check_orphans(f)?;
    if state_keys.is_empty() && scb_keys.is_empty() {
        return Ok(Vec::new());
    }
    let c = Checker {
        path: f.path,
        metas: f.tensors.iter().map(|t| (t.name.as_str(), t)).collect(),
    };
    let qc = quantization_config(f);
    let compute = qc.and_then(|q| float_dtype_name(q.get("bnb_4bit_compute_dtype")));
    let load = config_dtype(f);
    let mut records = Vec::new();
    if !state_keys.is_empty() {
        let file = SafetensorsFile::open(f.path)?;
        for st in state_keys {
            records.push(detect_4bit(&c, &file, st, compute)?);
        }
    }
    if !scb_keys.is_empty() {
        let file = SafetensorsFile::open(f.path)?;
        for scb in scb_keys {
            records.push(detect_8bit(&c, &file, scb, load)?);
        }
    }
    Ok(records)
}

/// Fails on the parts of a bitsandbytes weight whose defining key is missing (the 4-bit
/// quant state, the 8-bit `SCB`): without the check such a file would not be recognised
/// and its packed codes would load as a plain integer tensor.
fn check_orphans(f: &ForeignFile<'_>) -> Result<()> {
    let has = |key: &str| f.tensors.iter().any(|t| t.name == key);
    for t in f.tensors {
        let four = [".quant_map", ".nested_quant_map", ".nested_absmax"]
            .iter()
            .find_map(|s| t.name.strip_suffix(s));
        if let Some(weight) = four {
            let state = format!("{weight}.{STATE_MARK}");
            if !f.tensors.iter().any(|s| s.name.starts_with(&state)) {
                return Err(Error::tensor(
                    f.path,
                    weight,
                    format!(
                        "'{}' is present but the quant state '{state}*' is missing",
                        t.name
                    ),
                ));
            }
        }
        if let Some(weight) = t.name.strip_suffix("_format") {
            let prefix = weight.strip_suffix("weight").unwrap_or(weight);
            let scb = format!("{prefix}SCB");
            if weight.ends_with("weight") && has(weight) && !has(&scb) {
                return Err(Error::tensor(
                    f.path,
                    weight,
                    format!("'{}' is present but '{scb}' is missing", t.name),
                ));
            }
        }
    }
    Ok(())
}

fn detect_4bit(
    c: &Checker<'_>,
    file: &SafetensorsFile,
    st: &TensorMeta,
    compute: Option<DType>,
) -> Result<TensorRecord> {
    let (weight, kind) = st
        .name
        .rsplit_once(&format!(".{STATE_MARK}"))
        .ok_or_else(|| c.err(&st.name, "quant state key does not follow a weight name"))?;
    let key_type = match kind {
        "nf4" => QuantType::Nf4,
        "fp4" => QuantType::Fp4,
        other => return Err(c.err(weight, format!("unknown quant state type '{other}'"))),
    };
    if st.dtype != DType::U8 {
        return Err(c.err(
            weight,
            format!("'{}' must be uint8, got {}", st.name, st.dtype),
        ));
    }
    let bytes = file
        .get(&st.name)
        .map(|t| t.data().to_vec())
        .ok_or_else(|| c.err(weight, format!("cannot read '{}'", st.name)))?;
    let qs = QuantState::parse(&bytes, key_type).map_err(|e| c.err(weight, e))?;
    if !BLOCKSIZES.contains(&qs.blocksize) {
        return Err(c.err(
            weight,
            format!("blocksize {} is not one of {BLOCKSIZES:?}", qs.blocksize),
        ));
    }
    let n = checked_numel(&qs.shape)
        .filter(|&n| n > 0)
        .ok_or_else(|| c.err(weight, format!("bad shape {:?}", qs.shape)))?;
    let packed = c.get(weight, weight)?;
    let storage = packed.dtype;
    let packed_bytes = packed.byte_len()?;
    if packed_bytes != n.div_ceil(2) {
        return Err(c.err(
            weight,
            format!(
                "packed weight holds {packed_bytes} bytes, shape {:?} needs {}",
                qs.shape,
                n.div_ceil(2)
            ),
        ));
    }
    let nblocks = n.div_ceil(qs.blocksize);
    let absmax_key = format!("{weight}.absmax");
    let map_key = format!("{weight}.quant_map");
    let nested_key = format!("{weight}.nested_absmax");
    let nested_map_key = format!("{weight}.nested_quant_map");
    c.expect(weight, &map_key, DType::F32, &[16])?;
    let mut parts = vec![weight.to_string(), absmax_key.clone(), map_key];
    match qs.nested {
        None => {
            if c.metas.contains_key(nested_key.as_str()) {
                return Err(c.err(
                    weight,
                    "nested_absmax present but the quant state has no nested_offset",
                ));
            }
            c.expect(weight, &absmax_key, DType::F32, &[nblocks])?;
        }
        Some((nbs, _)) => {
            c.expect(weight, &absmax_key, DType::U8, &[nblocks])?;
            c.expect(weight, &nested_key, DType::F32, &[nblocks.div_ceil(nbs)])?;
            c.expect(weight, &nested_map_key, DType::F32, &[256])?;
            parts.push(nested_key);
            parts.push(nested_map_key);
        }
    }
    parts.push(st.name.clone());
    let compute = compute.unwrap_or(qs.dtype);
    let method = if compute == DType::BF16 {
        "bnb_4bit_config_bf16"
    } else {
        "bnb_4bit_config_fp16"
    };
    let mut params = Params::new();
    params.insert("quant_type".into(), json!(qs.quant_type.as_str()));
    params.insert("blocksize".into(), json!(qs.blocksize));
    params.insert("double_quant".into(), json!(qs.nested.is_some()));
    params.insert("quant_storage".into(), json!(storage.torch_name()));
    params.insert("dtype".into(), json!(qs.dtype.torch_name()));
    params.insert("compute_dtype".into(), json!(compute.torch_name()));
    // The loader recreates the method from these: check now that it can.
    Config4::parse(method, compute, &params).map_err(|e| c.err(weight, e.to_string()))?;
    Ok(TensorRecord {
        name: weight.to_string(),
        method: Some(method.to_string()),
        dtype: qs.dtype,
        shape: qs.shape,
        dequant_dtype: qs.dtype,
        params,
        parts,
        fallback: None,
    })
}

fn detect_8bit(
    c: &Checker<'_>,
    file: &SafetensorsFile,
    scb: &TensorMeta,
    load: Option<DType>,
) -> Result<TensorRecord> {
    let prefix = scb.name.strip_suffix("SCB").unwrap_or("");
    let weight = format!("{prefix}weight");
    let w = c.get(&weight, &weight)?;
    let rows = match (w.dtype, &w.shape[..]) {
        (DType::I8, [rows, _]) => *rows,
        _ => {
            return Err(c.err(
                &weight,
                format!(
                    "int8 weight must be 2-D int8, got {} {:?}",
                    w.dtype, w.shape
                ),
            ))
        }
    };
    c.expect(&weight, &scb.name, DType::F32, &[rows])?;
    let mut parts = vec![weight.clone(), scb.name.clone()];
    let format_key = format!("{weight}_format");
    if let Some(fm) = c.metas.get(format_key.as_str()) {
        let value = file.get(&format_key).map(|t| t.data().to_vec());
        if fm.dtype != DType::U8 || value.as_deref() != Some(&[0u8][..]) {
            return Err(c.err(
                &weight,
                format!(
                    "'{format_key}' must be the uint8 scalar 0 (row format), got {} {:?}",
                    fm.dtype, value
                ),
            ));
        }
        parts.push(format_key);
    }
    let load = load.unwrap_or(DType::F16);
    let method = if load == DType::BF16 {
        "bnb_8bit_config_bf16"
    } else {
        "bnb_8bit_config_fp16"
    };
    let mut params = Params::new();
    params.insert("dtype".into(), json!(load.torch_name()));
    Ok(TensorRecord {
        name: weight,
        method: Some(method.to_string()),
        dtype: load,
        shape: w.shape.clone(),
        dequant_dtype: DType::F32,
        params,
        parts,
        fallback: None,
    })
}
