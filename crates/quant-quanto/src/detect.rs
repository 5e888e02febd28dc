//! Recognises safetensors files written by optimum-quanto, diffusers' `QuantoConfig` or
//! quant itself, and returns one record per quantized weight.

use std::collections::{BTreeMap, HashMap};

use quant_core::format::ForeignFile;
use quant_core::{DType, Error, QuantMethod, Result, TensorMeta, TensorRecord};

use crate::fp8::Float8Format;
use crate::method::{module_prefix, Layout, QType, Quanto, SHAPES_METADATA_KEY};
use crate::qbits::group_size;

/// One weight found in the file, before its qtype and shape are settled.
struct Found<'a> {
    weight: String,
    data: &'a TensorMeta,
    scale: &'a TensorMeta,
    shift: Option<&'a TensorMeta>,
    packed: bool,
}

pub(crate) fn detect(f: &ForeignFile<'_>) -> Result<Vec<TensorRecord>> {
    let by_name: HashMap<&str, &TensorMeta> =
        f.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let err = |tensor: &str, reason: String| Error::tensor(f.path, tensor, reason);

    let qcfg = f
        .config
        .and_then(|c| c.get("quantization_config"))
        .filter(|q| q.get("quant_method").and_then(|m| m.as_str()) == Some("quanto"));
    let config_bits = match qcfg.and_then(|q| q.get("weights_dtype")) {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_str() {
            Some("int4") => Some(QType::Int4),
            Some("int2") => Some(QType::Int2),
            Some("int8" | "float8") => None,
            _ => {
                return Err(Error::file(
                    f.path,
                    "config.json",
                    format!(
                        "quantization_config.weights_dtype {v} is not int8, int4, int2 or float8"
                    ),
                ))
            }
        },
    };
    let layout = if qcfg.is_some() {
        Layout::Diffusers
    } else {
        Layout::Optimum
    };
    let shapes: Option<BTreeMap<String, Vec<usize>>> = match f.metadata.get(SHAPES_METADATA_KEY) {
        None => None,
        Some(text) => Some(serde_json::from_str(text).map_err(|e| {
            Error::file(
                f.path,
                "safetensors",
                format!("metadata '{SHAPES_METADATA_KEY}': {e}"),
            )
        })?),
    };

    // Weights with data, in file order; every scale or shift must belong to one.
    let mut found: Vec<Found<'_>> = Vec::new();
    for t in f.tensors {
        let (weight, packed) = if let Some(w) = t.name.strip_suffix("._data._data") {
            (w, true)
        } else if let Some(w) = t.name.strip_suffix("._data") {
            (w, false)
        } else {
            continue;
        };
        if !packed && by_name.contains_key(format!("{}._data", t.name).as_str()) {
            continue;
        }
        if !packed && by_name.contains_key(format!("{weight}._data._data").as_str()) {
            return Err(err(weight, "has both '._data' and '._data._data'".into()));
        }
        let scale = by_name
            .get(format!("{weight}._scale").as_str())
            .copied()
            .ok_or_else(|| err(weight, "quanto data without '._scale'".into()))?;
        let shift = by_name.get(format!("{weight}._shift").as_str()).copied();
        found.push(Found {
            weight: weight.to_string(),
            data: t,
            scale,
            shift,
            packed,
        });
    }
    if found.is_empty() {
        if qcfg.is_some() {
            if let Some(t) = f.tensors.iter().find(|t| t.name.ends_with("._scale")) {
                return Err(err(&t.name, "quanto scale without '._data'".into()));
            }
        }
        return Ok(Vec::new());
    }
    for t in f.tensors {
        for suffix in ["._scale", "._shift"] {
            if let Some(w) = t.name.strip_suffix(suffix) {
                if !found.iter().any(|x| x.weight == w) {
                    return Err(err(&t.name, format!("quanto '{suffix}' without '._data'")));
                }
            }
        }
    }

    // The qtype of each weight; packed ones whose ratio cannot tell 4 from 2 bits take the
    // config's or the file's other packed weights'.
    let mut qtypes: Vec<Option<QType>> = Vec::with_capacity(found.len());
    for x in &found {
        qtypes.push(qtype_of(x, config_bits).map_err(|r| err(&x.weight, r))?);
    }
    let mut file_bits: Vec<QType> = qtypes
        .iter()
        .zip(&found)
        .filter(|(_, x)| x.packed)
        .filter_map(|(q, _)| *q)
        .collect();
    file_bits.dedup();
    let fallback_bits = config_bits.or(match file_bits.as_slice() {
        [one] => Some(*one),
        _ => None,
    });

    let mut records = Vec::with_capacity(found.len());
    for (x, q) in found.iter().zip(qtypes) {
        let qtype = q.or(fallback_bits).ok_or_else(|| {
            err(
                &x.weight,
                "packed data of 1 or 2 rows cannot tell qint4 from qint2 and neither config.json nor the file says".into(),
            )
        })?;
        let dtype = x.scale.dtype;
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(err(
                &x.weight,
                format!("quanto scale dtype {dtype} (expected F32, F16 or BF16)"),
            ));
        }
        let shape = if x.packed {
            packed_shape(x, qtype, shapes.as_ref(), &by_name).map_err(|r| err(&x.weight, r))?
        } else {
            x.data.shape.clone()
        };
        let layout = if qtype.diffusers_weights_dtype().is_some() {
            layout
        } else {
            Layout::Optimum
        };
        let method = Quanto::new(qtype, layout, Vec::new())?;
        let meta = TensorMeta::new(x.weight.clone(), dtype, shape.clone());
        let want = method
            .output_layout(&meta)
            .map_err(|e| err(&x.weight, e.to_string()))?;
        let mut parts = Vec::with_capacity(want.len());
        for w in &want {
            let is_buffer = w.key.ends_with("input_scale") || w.key.ends_with("output_scale");
            match by_name.get(w.key.as_str()) {
                Some(got) if got.dtype == w.dtype && got.shape == w.shape => {
                    parts.push(w.key.clone())
                }
                Some(got) => {
                    return Err(err(
                        &w.key,
                        format!(
                            "{} {:?} for {} weight {:?} of {}, expected {} {:?}",
                            got.dtype,
                            got.shape,
                            qtype.name(),
                            shape,
                            dtype,
                            w.dtype,
                            w.shape
                        ),
                    ))
                }
                None if is_buffer => {}
                None => return Err(err(&w.key, "missing quanto part".into())),
            }
        }
        records.push(TensorRecord {
            name: x.weight.clone(),
            method: Some(qtype.method_name().to_string()),
            dtype,
            shape,
            dequant_dtype: dtype,
            params: method.params(),
            parts,
            fallback: None,
        });
    }
    Ok(records)
}

/// The qtype from the data dtype, or for packed data from the packing ratio
/// (`None`: 1 or 2 rows, either ratio fits).
fn qtype_of(
    x: &Found<'_>,
    config_bits: Option<QType>,
) -> std::result::Result<Option<QType>, String> {
    if !x.packed {
        return match x.data.dtype {
            DType::I8 => Ok(Some(QType::Int8)),
            DType::F8E4M3 => Ok(Some(QType::Float8(Float8Format::E4M3FN))),
            DType::F8E5M2 => Ok(Some(QType::Float8(Float8Format::E5M2))),
            DType::F8E4M3FNUZ => Ok(Some(QType::Float8(Float8Format::E4M3FNUZ))),
            other => Err(format!(
                "quanto '._data' dtype {other} (expected I8, F8_E4M3, F8_E5M2 or F8_E4M3FNUZ)"
            )),
        };
    }
    if x.data.dtype != DType::U8 {
        return Err(format!(
            "packed quanto data has dtype {} (expected U8)",
            x.data.dtype
        ));
    }
    let shift = x.shift.ok_or("packed quanto data without '._shift'")?;
    if shift.shape != x.scale.shape || shift.dtype != x.scale.dtype {
        return Err(format!(
            "'._shift' {} {:?} does not match '._scale' {} {:?}",
            shift.dtype, shift.shape, x.scale.dtype, x.scale.shape
        ));
    }
    let rows = x.scale.shape.first().copied().unwrap_or(0);
    let packed_rows = x.data.shape.first().copied().unwrap_or(0);
    let fits4 = packed_rows == rows.div_ceil(2);
    let fits2 = packed_rows == rows.div_ceil(4);
    match (fits4, fits2, config_bits) {
        (false, false, _) => Err(format!(
            "{packed_rows} packed rows for {rows} scale rows fit neither qint4 nor qint2"
        )),
        (true, true, c) => Ok(c),
        (true, false, Some(QType::Int2)) | (false, true, Some(QType::Int4)) => Err(format!(
            "{packed_rows} packed rows for {rows} scale rows contradict config.json's weights_dtype"
        )),
        (true, false, _) => Ok(Some(QType::Int4)),
        (false, true, _) => Ok(Some(QType::Int2)),
    }
}

/// The original weight shape of packed qint4/qint2 data.
fn packed_shape(
    x: &Found<'_>,
    qtype: QType,
    shapes: Option<&BTreeMap<String, Vec<usize>>>,
    by_name: &HashMap<&str, &TensorMeta>,
) -> std::result::Result<Vec<usize>, String> {
    if let Some(s) = shapes.and_then(|m| m.get(&x.weight)) {
        return Ok(s.clone());
    }
    let s = &x.scale.shape;
    let d = &x.data.shape;
    let rows = s.first().copied().unwrap_or(0);
    if s.len() < 2 || s.iter().skip(1).any(|&n| n != 1) || d.len() < 2 || rows == 0 {
        return Err(format!(
            "quanto scale {s:?} / packed data {d:?} are not [R, 1, ...] / [Rp, ...]"
        ));
    }
    let mut ungrouped = d.clone();
    if let Some(first) = ungrouped.first_mut() {
        *first = rows;
    }
    if s.len() != 2 || d.len() != 2 {
        // Only ungrouped weights keep more than 2 dimensions.
        return Ok(ungrouped);
    }
    let k = d.get(1).copied().unwrap_or(0);
    let ungrouped_ok = group_size(k).is_none();
    let bias = by_name
        .get(format!("{}bias", module_prefix(&x.weight)).as_str())
        .and_then(|b| match b.shape.as_slice() {
            [n] => Some(*n),
            _ => None,
        });
    let grouped_with = |out: usize| -> Option<Vec<usize>> {
        let total = rows.checked_mul(k)?;
        if out == 0 || total % out != 0 {
            return None;
        }
        let in_f = total / out;
        (group_size(in_f) == Some(k) && in_f > k).then(|| vec![out, in_f])
    };
    match bias {
        Some(out) if out == rows && ungrouped_ok => Ok(ungrouped),
        Some(out) => grouped_with(out).ok_or_else(|| {
            format!(
                "{} data {d:?} with scale {s:?} does not fit a module of {out} outputs (bias)",
                qtype.name()
            )
        }),
        None => {
            let could_group = matches!(k, 32 | 64 | 96 | 128)
                && (2..=rows).any(|j| rows % j == 0 && group_size(k * j) == Some(k));
            match (ungrouped_ok, could_group) {
                (true, false) => Ok(ungrouped),
                (false, false) => Err(format!(
                    "{} data {d:?} with scale {s:?} fits no quanto weight shape",
                    qtype.name()
                )),
                _ => Err(format!(
                    "the original shape of {} groups {d:?} is ambiguous: no bias and no '{SHAPES_METADATA_KEY}' metadata",
                    qtype.name()
                )),
            }
        }
    }
}
