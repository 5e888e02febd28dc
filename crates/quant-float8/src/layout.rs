//! torchao's safetensors form (`torchao.prototype.safetensors`, pinned to torchao 0.18.0):
//! part keys, the per-tensor `__metadata__` records, `config.json`'s
//! `quantization_config`, and the detector that reads the form back.

use std::collections::BTreeMap;
use std::io;

use quant_core::format::ForeignFile;
use quant_core::{
    Artifacts, DType, Error, Params, PartLayout, PlannedTensor, Result, TensorMeta, TensorRecord,
};
use serde_json::{json, Value};

use crate::fp8::Fp8;
use crate::method::{Granularity, Scheme, TorchAo, METHODS};

/// The key torchao's `flatten_tensor_state_dict` gives tensor data `data` of the
/// parameter `name`: `<module>._<param>_<data>` (`_<name>_<data>` for a name without a
/// module).
pub fn data_key(name: &str, data: &str) -> String {
    match name.rsplit_once('.') {
        Some((module, param)) => format!("{module}._{param}_{data}"),
        None => format!("_{name}_{data}"),
    }
}

/// The `__metadata__` record torchao writes for a plain (unquantized) tensor.
pub const PLAIN_TENSOR_RECORD: &str = r#"{"_type": "Tensor"}"#;

fn torch_dtype(name: &str) -> Value {
    json!({"_type": "torch.dtype", "_data": name})
}

fn enum_value(ty: &str, member: &str) -> Value {
    json!({"_type": ty, "_data": member})
}

/// The value torchao 0.18 stores for `IntxUnpackedToInt8Tensor.activation_quantization`
/// of int4dq (`IntxUnpackedToInt8TensorActivationQuantization.INT8_ASYM_PER_TOKEN`).
pub const INT8_ASYM_PER_TOKEN: &str = "int8_asym_per_token";

/// A granularity as `TensorSubclassAttributeJSONEncoder` writes it (no `_version`), or as
/// `config_to_dict` does (with `"_version": 1`).
fn granularity(g: Granularity, versioned: bool) -> Value {
    let (ty, data) = match g {
        Granularity::PerRow => ("PerRow", json!({"dim": -1})),
        Granularity::PerTensor => ("PerTensor", json!({})),
    };
    if versioned {
        json!({"_type": ty, "_version": 1, "_data": data})
    } else {
        json!({"_type": ty, "_data": data})
    }
}

fn mm_config(versioned: bool) -> Value {
    let data = json!({"emulate": false, "use_fast_accum": true, "pad_inner_dim": false});
    if versioned {
        json!({"_type": "Float8MMConfig", "_version": 1, "_data": data})
    } else {
        json!({"_type": "Float8MMConfig", "_data": data})
    }
}

/// The `__metadata__` record of one quantized weight: torchao tensor class, its
/// non-tensor attributes and the names of its tensor data.
pub fn tensor_record(scheme: Scheme, group: Option<usize>, t: &TensorMeta) -> Value {
    let (n, k) = match t.shape[..] {
        [n, k] => (n, k),
        _ => (0, 0),
    };
    let g = group.unwrap_or(k);
    let wd = torch_dtype(t.dtype.torch_name());
    match scheme {
        Scheme::Float8Wo(_) => json!({
            "_type": "Float8Tensor",
            "_data": {
                "block_size": [1, k],
                "mm_config": null,
                "act_quant_kwargs": null,
                "kernel_preference": enum_value("KernelPreference", "AUTO"),
                "dtype": wd,
            },
            "_tensor_data_names": ["qdata", "scale"],
        }),
        Scheme::Float8Dq(gran) => json!({
            "_type": "Float8Tensor",
            "_data": {
                "block_size": if gran == Granularity::PerRow { [1, k] } else { [n, k] },
                "mm_config": mm_config(false),
                "act_quant_kwargs": {
                    "_type": "QuantizeTensorToFloat8Kwargs",
                    "_data": {
                        "float8_dtype": torch_dtype(Fp8::E4M3Fn.torch_name()),
                        "granularity": granularity(gran, false),
                        "mm_config": null,
                        "hp_value_lb": null,
                        "hp_value_ub": null,
                        "kernel_preference": enum_value("KernelPreference", "AUTO"),
                    },
                },
                "kernel_preference": enum_value("KernelPreference", "AUTO"),
                "dtype": wd,
            },
            "_tensor_data_names": ["qdata", "scale"],
        }),
        Scheme::Int8Wo | Scheme::Int8Dq => {
            let act = if scheme == Scheme::Int8Dq {
                json!({
                    "_type": "QuantizeTensorToInt8Kwargs",
                    "_data": {
                        "granularity": granularity(Granularity::PerRow, false),
                        "mapping_type": enum_value("MappingType", "SYMMETRIC"),
                        "reduce_range": false,
                    },
                })
            } else {
                Value::Null
            };
            json!({
                "_type": "Int8Tensor",
                "_data": {
                    "act_quant_kwargs": act,
                    "reduce_range": false,
                    "block_size": [1, k],
                    "dtype": wd,
                },
                "_tensor_data_names": ["zero_point", "qdata", "scale"],
            })
        }
        Scheme::Int4Wo => json!({
            "_type": "Int4Tensor",
            "_data": {
                "activation_dtype": null,
                "block_size": [1, g],
                "shape": [n, k],
            },
            "_tensor_data_names": ["qdata", "scale", "zero_point"],
        }),
        Scheme::Int4Dq | Scheme::UintWo(_) => {
            let (bits, act) = match scheme {
                Scheme::UintWo(b) => (b, Value::Null),
                // A `str` enum: Python's JSON encoder writes its value before torchao's
                // encoder sees it, so torchao stores the bare string.
                _ => (4, Value::from(INT8_ASYM_PER_TOKEN)),
            };
            json!({
                "_type": "IntxUnpackedToInt8Tensor",
                "_data": {
                    "target_dtype": torch_dtype(&format!("int{bits}")),
                    "block_size": [1, g],
                    "dtype": wd,
                    "activation_quantization": act,
                },
                "_tensor_data_names": ["qdata", "scale", "zero_point"],
            })
        }
    }
}

/// torchao's `config_to_dict` of the config class that produces this layout in torchao
/// 0.18 (the string-era names are gone there).
pub fn config_dict(scheme: Scheme, group: Option<usize>) -> Value {
    let g = group.unwrap_or(0);
    match scheme {
        Scheme::Float8Wo(fmt) => json!({
            "_type": "Float8WeightOnlyConfig",
            "_version": 2,
            "_data": {
                "weight_dtype": torch_dtype(fmt.torch_name()),
                "set_inductor_config": true,
                "granularity": granularity(Granularity::PerRow, true),
            },
        }),
        Scheme::Float8Dq(gran) => json!({
            "_type": "Float8DynamicActivationFloat8WeightConfig",
            "_version": 2,
            "_data": {
                "activation_dtype": torch_dtype(Fp8::E4M3Fn.torch_name()),
                "weight_dtype": torch_dtype(Fp8::E4M3Fn.torch_name()),
                "granularity": [granularity(gran, true), granularity(gran, true)],
                "packing_format": enum_value("Float8PackingFormat", "PLAIN"),
                "mm_config": mm_config(true),
                "activation_value_lb": null,
                "activation_value_ub": null,
                "kernel_preference": enum_value("KernelPreference", "AUTO"),
                "set_inductor_config": true,
                "alg_id": 0,
            },
        }),
        Scheme::Int8Wo => json!({
            "_type": "Int8WeightOnlyConfig",
            "_version": 2,
            "_data": {
                "group_size": null,
                "granularity": granularity(Granularity::PerRow, true),
                "set_inductor_config": true,
            },
        }),
        Scheme::Int8Dq => json!({
            "_type": "Int8DynamicActivationInt8WeightConfig",
            "_version": 2,
            "_data": {
                "act_mapping_type": enum_value("MappingType", "SYMMETRIC"),
                "weight_only_decode": false,
                "granularity": granularity(Granularity::PerRow, true),
                "set_inductor_config": true,
                "reduce_range": false,
            },
        }),
        Scheme::Int4Wo => json!({
            "_type": "Int4WeightOnlyConfig",
            "_version": 2,
            "_data": {
                "group_size": g,
                "set_inductor_config": true,
                "int4_packing_format": enum_value("Int4PackingFormat", "PLAIN"),
                "int4_choose_qparams_algorithm": enum_value("Int4ChooseQParamsAlgorithm", "TINYGEMM"),
                "int4_tile_packed_ntile": 8,
            },
        }),
        Scheme::Int4Dq => json!({
            "_type": "Int8DynamicActivationIntxWeightConfig",
            "_version": 2,
            "_data": {
                "weight_dtype": torch_dtype("int4"),
                "weight_granularity": {"_type": "PerGroup", "_version": 1, "_data": {"group_size": g}},
                "weight_mapping_type": enum_value("MappingType", "SYMMETRIC"),
                "weight_scale_dtype": null,
                "act_mapping_type": enum_value("MappingType", "ASYMMETRIC"),
                "intx_packing_format": enum_value("IntxPackingFormat", "UNPACKED_TO_INT8"),
                "intx_choose_qparams_algorithm": enum_value("IntxChooseQParamsAlgorithm", "AFFINE"),
            },
        }),
        Scheme::UintWo(bits) => json!({
            "_type": "IntxWeightOnlyConfig",
            "_version": 2,
            "_data": {
                "weight_dtype": torch_dtype(&format!("int{bits}")),
                "granularity": {"_type": "PerGroup", "_version": 1, "_data": {"group_size": g}},
                "mapping_type": enum_value("MappingType", "ASYMMETRIC"),
                "scale_dtype": null,
                "intx_packing_format": enum_value("IntxPackingFormat", "UNPACKED_TO_INT8"),
                "intx_choose_qparams_algorithm": enum_value("IntxChooseQParamsAlgorithm", "AFFINE"),
            },
        }),
    }
}

/// Python's `json.dumps` separators (`", "` and `": "`), so records read like torchao's.
struct PyFormatter;

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// Serialises `v` as Python's `json.dumps` would.
pub fn to_py_json(v: &Value) -> Result<String> {
    use serde::Serialize;
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, PyFormatter);
    v.serialize(&mut ser)
        .map_err(|e| Error::file("", "json", e.to_string()))?;
    String::from_utf8(buf).map_err(|e| Error::file("", "json", e.to_string()))
}

/// `__metadata__` (`format`, `tensor_names`, one record per quantized weight) and the
/// `quantization_config` for the tensors `method` quantizes in one file.
pub fn artifacts(method: &TorchAo, planned: &[PlannedTensor]) -> Result<Artifacts> {
    let mut metadata = BTreeMap::new();
    let mut names = Vec::with_capacity(planned.len());
    use quant_core::QuantMethod;
    for p in planned {
        if p.is_by(method.name()) {
            let rec = tensor_record(method.scheme(), method.group_size(), &p.meta);
            metadata.insert(p.meta.name.clone(), to_py_json(&rec)?);
            names.push(Value::String(p.meta.name.clone()));
        } else if p.method.is_none() {
            // torchao's loader only returns the tensors named in `tensor_names`.
            metadata.insert(p.meta.name.clone(), PLAIN_TENSOR_RECORD.to_string());
            names.push(Value::String(p.meta.name.clone()));
        }
    }
    metadata.insert("tensor_names".into(), to_py_json(&Value::Array(names))?);
    metadata.insert("format".into(), "pt".into());
    let quantization_config = json!({
        "quant_method": "torchao",
        "modules_to_not_convert": null,
        "quant_type": {"default": config_dict(method.scheme(), method.group_size())},
    });
    Ok(Artifacts {
        metadata,
        quantization_config: Some(quantization_config),
        files: Vec::new(),
    })
}

const FORMAT: &str = "torchao safetensors";

/// Reads torchao's safetensors form: a record for every weight stored (in this shard) as a
/// `Float8Tensor`, `Int8Tensor`, `Int4Tensor` or `IntxUnpackedToInt8Tensor`; an empty list
/// when the file has no `tensor_names` metadata; a typed error naming the file and tensor
/// when it is in this form but malformed or uses a variant quant cannot restore.
pub fn detect(file: &ForeignFile<'_>) -> Result<Vec<TensorRecord>> {
    let Some(names) = file.metadata.get("tensor_names") else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = serde_json::from_str(names).map_err(|e| {
        Error::file(
            file.path,
            FORMAT,
            format!("__metadata__ 'tensor_names' is not a JSON list of names: {e}"),
        )
    })?;
    let mut out = Vec::new();
    for name in &names {
        let bad = |reason: String| Error::tensor(file.path, name, reason);
        let raw = file
            .metadata
            .get(name)
            .ok_or_else(|| bad("listed in tensor_names but has no __metadata__ record".into()))?;
        let rec: Value = serde_json::from_str(raw)
            .map_err(|e| bad(format!("__metadata__ record is not JSON: {e}")))?;
        let ty = rec
            .get("_type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("__metadata__ record has no '_type'".into()))?;
        if ty == "Tensor" {
            continue;
        }
        // Every shard of a checkpoint lists the whole model: a tensor none of whose
        // parts are here lives in another shard.
        let prefix = data_key(name, "");
        if !file.tensors.iter().any(|t| t.name.starts_with(&prefix)) {
            continue;
        }
        out.push(detect_one(file, name, ty, &rec).map_err(bad)?);
    }
    Ok(out)
}

fn detect_one(
    file: &ForeignFile<'_>,
    name: &str,
    ty: &str,
    rec: &Value,
) -> std::result::Result<TensorRecord, String> {
    let data = rec
        .get("_data")
        .and_then(Value::as_object)
        .ok_or("record has no '_data' object")?;
    let data_names: Vec<String> = rec
        .get("_tensor_data_names")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .ok_or("record has no '_tensor_data_names' list")?;
    let mut parts = Vec::with_capacity(data_names.len());
    for d in &data_names {
        let key = data_key(name, d);
        let meta = file
            .tensors
            .iter()
            .find(|t| t.name == key)
            .ok_or_else(|| format!("missing part '{key}'"))?;
        parts.push((d.as_str(), meta));
    }
    let part = |d: &str| {
        parts
            .iter()
            .find(|(n, _)| *n == d)
            .map(|(_, m)| *m)
            .ok_or_else(|| format!("{ty} record lists no '{d}'"))
    };
    let qdata = part("qdata")?;
    let scale = part("scale")?;
    let attr_dtype = || -> std::result::Result<DType, String> {
        let d = data
            .get("dtype")
            .and_then(|v| v.get("_data"))
            .and_then(Value::as_str)
            .ok_or("record has no torch dtype in '_data.dtype'")?;
        DType::parse(d).map_err(|e| e.to_string())
    };
    let block = data
        .get("block_size")
        .and_then(|v| serde_json::from_value::<Vec<usize>>(v.clone()).ok());
    let (method, dtype, shape): (&str, DType, Vec<usize>) = match ty {
        "Float8Tensor" => {
            let fmt = Fp8::from_dtype(qdata.dtype)
                .ok_or_else(|| format!("Float8Tensor qdata has dtype {}", qdata.dtype))?;
            let [n, _] = qdata.shape[..] else {
                return Err(format!(
                    "Float8Tensor qdata shape {:?} is not 2-D",
                    qdata.shape
                ));
            };
            let scale_n: usize = scale.shape.iter().product();
            let dynamic = !data.get("act_quant_kwargs").is_none_or(Value::is_null);
            let method = match (fmt, dynamic, scale_n) {
                (Fp8::E5M2, false, _) => "torch_ao_config_float8wo",
                (Fp8::E4M3Fn, false, _) => "torch_ao_config_float8wo_e4m3",
                (Fp8::E4M3Fn, true, 1) => "torch_ao_config_float8dq",
                (Fp8::E4M3Fn, true, s) if s == n => "torch_ao_config_float8_e4m3_row",
                _ => {
                    return Err(format!(
                        "Float8Tensor with {} dynamic={dynamic} and {scale_n} scales is not a torchao method quant restores",
                        fmt.torch_name()
                    ))
                }
            };
            if scale_n != 1 && scale_n != n {
                return Err(format!(
                    "Float8Tensor scale shape {:?} is neither per tensor nor per row (block_size {block:?})",
                    scale.shape
                ));
            }
            (method, attr_dtype()?, qdata.shape.clone())
        }
        "Int8Tensor" => {
            let dynamic = !data.get("act_quant_kwargs").is_none_or(Value::is_null);
            let method = if dynamic {
                "torch_ao_config_int8dq"
            } else {
                "torch_ao_config_int8wo"
            };
            (method, attr_dtype()?, qdata.shape.clone())
        }
        "Int4Tensor" => {
            if data_names.iter().any(|d| d == "act_pre_scale") {
                return Err("Int4Tensor with act_pre_scale is not supported".into());
            }
            let shape = data
                .get("shape")
                .and_then(|v| serde_json::from_value::<Vec<usize>>(v.clone()).ok())
                .ok_or("Int4Tensor record has no 'shape'")?;
            ("torch_ao_config_int4wo", scale.dtype, shape)
        }
        "IntxUnpackedToInt8Tensor" => {
            let target = data
                .get("target_dtype")
                .and_then(|v| v.get("_data"))
                .and_then(Value::as_str)
                .ok_or("record has no 'target_dtype'")?;
            let bits: u8 = target
                .strip_prefix("int")
                .and_then(|b| b.parse().ok())
                .filter(|b| (1..=7).contains(b))
                .ok_or_else(|| format!("target_dtype {target} is not int1..int7"))?;
            // torchao's bare enum value; the enum object `{"_type": ..., "_data":
            // "INT8_ASYM_PER_TOKEN"}` quant wrote before is read too.
            let act = data
                .get("activation_quantization")
                .filter(|v| !v.is_null())
                .map(|v| {
                    v.as_str()
                        .or_else(|| v.get("_data").and_then(Value::as_str))
                        .unwrap_or("?")
                });
            let method = match (act, bits) {
                (None, b) => METHODS
                    .iter()
                    .find(|(_, s)| *s == Scheme::UintWo(b))
                    .map(|(n, _)| *n)
                    .ok_or("no uint method")?,
                (Some(a), 4) if a.eq_ignore_ascii_case(INT8_ASYM_PER_TOKEN) => {
                    "torch_ao_config_int4dq"
                }
                (Some(a), b) => {
                    return Err(format!(
                        "IntxUnpackedToInt8Tensor int{b} with activation_quantization {a} is not supported"
                    ))
                }
            };
            (method, attr_dtype()?, qdata.shape.clone())
        }
        other => {
            return Err(format!(
                "torchao tensor class {other} is not supported by quant-float8"
            ))
        }
    };
    let [_, k] = shape[..] else {
        return Err(format!("weight shape {shape:?} is not 2-D"));
    };
    let mut params = Params::new();
    let scheme = METHODS
        .iter()
        .find(|(n, _)| *n == method)
        .map(|(_, s)| *s)
        .ok_or("unknown method")?;
    if scheme.default_group().is_some() {
        let g = match block.as_deref() {
            Some([1, g]) if *g > 0 && k % *g == 0 => *g,
            _ => {
                return Err(format!(
                    "block_size {block:?} is not [1, group_size] for shape {shape:?}"
                ))
            }
        };
        params.insert("group_size".into(), Value::from(g));
    }
    // Check every size now, so a malformed file fails here, naming the file.
    let method_obj = TorchAo::new(method, &params).map_err(|e| e.to_string())?;
    let record = TensorRecord {
        name: name.to_string(),
        method: Some(method.to_string()),
        dtype,
        shape,
        dequant_dtype: dtype,
        params,
        parts: parts.iter().map(|(d, _)| data_key(name, d)).collect(),
        fallback: None,
    };
    let layouts: Vec<PartLayout> = parts
        .iter()
        .map(|(d, m)| PartLayout::new(data_key(name, d), m.dtype, m.shape.clone()))
        .collect();
    crate::method::check_layout(&method_obj, &record, &layouts)?;
    Ok(record)
}
