//! The torchao safetensors form: keys, dtypes, `__metadata__` records and
//! `quantization_config` written by every method; reading files back (ours, and records
//! exactly as torchao 0.18 writes them, filled with the reference tensors); malformed
//! files and bad inputs giving typed errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::load;
use quant_core::dtype::{decode_to_f32, encode_f32, round_to};
use quant_core::format::{layouts, ForeignFile};
use quant_core::safetensors_io::{write_safetensors, SafetensorsFile};
use quant_core::{
    DType, Error, Params, Part, PartLayout, PlannedTensor, QuantizedTensor, Registry, Selection,
    TensorMeta, TensorRecord,
};
use quant_float8::{Scheme, METHODS};
use serde_json::{json, Value};

/// Deterministic weights: a smooth pseudo-random mix, with one all-zero row.
fn sample(n: usize, k: usize, dtype: DType) -> Vec<f32> {
    let mut s: u32 = 12345;
    (0..n * k)
        .map(|i| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let u = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            let row = i / k;
            let v = if row == 3 {
                0.0
            } else {
                u * 0.08 * (1.0 + row as f32 / 8.0)
            };
            round_to(dtype, v)
        })
        .collect()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

fn detect(ff: &ForeignFile<'_>) -> quant_core::Result<Vec<TensorRecord>> {
    let entry = layouts()
        .find(|l| l.backend == "quant-float8")
        .expect("quant-float8 registers a layout");
    (entry.detect)(ff)
}

fn dequant_from_file(f: &SafetensorsFile, rec: &TensorRecord) -> quant_core::Result<Vec<f32>> {
    let method = Registry::global()?.create(rec.method.as_deref().unwrap(), &rec.params)?;
    let parts = rec
        .parts
        .iter()
        .map(|k| f.part(k))
        .collect::<quant_core::Result<Vec<_>>>()?;
    method.dequantize(&QuantizedTensor {
        record: rec.clone(),
        parts,
    })
}

#[test]
fn all_18_methods_are_registered() {
    let reg = Registry::global().unwrap();
    let ours: Vec<&str> = reg
        .entries()
        .filter(|e| e.backend == "quant-float8")
        .map(|e| e.name)
        .collect();
    let mut want: Vec<&str> = METHODS.iter().map(|(n, _)| *n).collect();
    want.sort_unstable();
    assert_eq!(ours, want);
    for c in quant_core::CATALOG
        .iter()
        .filter(|c| c.backend == "quant-float8")
    {
        assert!(reg.get(c.name).is_some(), "{} not registered", c.name);
    }
}

#[test]
fn every_method_writes_the_torchao_form_and_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::global().unwrap();
    for (name, scheme) in METHODS {
        for dtype in [DType::BF16, DType::F32] {
            let meta = TensorMeta::new("blocks.0.attn.to_q.weight", dtype, vec![48, 256]);
            let m = reg.create(name, &Params::new()).unwrap();
            if scheme == Scheme::Float8Dq(quant_float8::Granularity::PerRow) && dtype == DType::F32
            {
                assert!(matches!(m.select(&meta), Selection::Fallback { .. }));
                assert!(matches!(
                    m.quantize(&meta, &sample(48, 256, dtype)),
                    Err(Error::UnsupportedDType { .. })
                ));
                continue;
            }
            assert_eq!(m.select(&meta), Selection::Quantize, "{name}");
            let values = sample(48, 256, dtype);
            let q = m.quantize(&meta, &values).unwrap();
            let want = m.dequantize(&q).unwrap();

            // Keys and dtypes as torchao names them.
            let keys: Vec<&str> = q.parts.iter().map(|p| p.layout.key.as_str()).collect();
            assert_eq!(keys[0], "blocks.0.attn.to_q._weight_qdata");
            assert_eq!(keys[1], "blocks.0.attn.to_q._weight_scale");
            let qdtype = q.parts[0].layout.dtype;
            match scheme {
                Scheme::Float8Wo(f) => assert_eq!(qdtype, f.dtype()),
                Scheme::Float8Dq(_) => assert_eq!(qdtype, DType::F8E4M3),
                _ => assert_eq!(qdtype, DType::I8),
            }

            let planned = [PlannedTensor {
                meta: meta.clone(),
                layout: m.output_layout(&meta).unwrap(),
                method: Some(m.name().to_string()),
            }];
            let art = m.artifacts(&planned).unwrap();
            assert_eq!(art.metadata["format"], "pt");
            let names: Vec<String> = serde_json::from_str(&art.metadata["tensor_names"]).unwrap();
            assert_eq!(names, vec![meta.name.clone()]);
            let rec: Value = serde_json::from_str(&art.metadata[&meta.name]).unwrap();
            let class = match scheme {
                Scheme::Float8Wo(_) | Scheme::Float8Dq(_) => "Float8Tensor",
                Scheme::Int8Wo | Scheme::Int8Dq => "Int8Tensor",
                Scheme::Int4Wo => "Int4Tensor",
                Scheme::Int4Dq | Scheme::UintWo(_) => "IntxUnpackedToInt8Tensor",
            };
            assert_eq!(rec["_type"], class);
            let mut data_names: Vec<String> =
                serde_json::from_value(rec["_tensor_data_names"].clone()).unwrap();
            data_names.sort();
            let mut part_names: Vec<String> = keys
                .iter()
                .map(|k| {
                    k.trim_start_matches("blocks.0.attn.to_q._weight_")
                        .to_string()
                })
                .collect();
            part_names.sort();
            assert_eq!(data_names, part_names, "{name}");
            let qc = art.quantization_config.clone().unwrap();
            assert_eq!(qc["quant_method"], "torchao");
            assert!(qc["quant_type"]["default"]["_type"]
                .as_str()
                .unwrap()
                .ends_with("Config"));
            assert_eq!(qc["quant_type"]["default"]["_version"], 2);

            // Write a file with a plain tensor beside it, as the engine does, and read it.
            let path = dir.path().join(format!("{name}-{dtype}.safetensors"));
            let bias = Part::new(
                PartLayout::new("blocks.0.attn.to_q.bias", DType::F32, vec![48]),
                vec![0; 48 * 4],
            )
            .unwrap();
            let mut parts = q.parts.clone();
            parts.push(bias);
            // The whole file's metadata, as torchao writes it: plain tensors listed too.
            let mut metadata = art.metadata.clone();
            metadata.insert(
                "blocks.0.attn.to_q.bias".into(),
                quant_float8::layout::PLAIN_TENSOR_RECORD.into(),
            );
            metadata.insert(
                "tensor_names".into(),
                serde_json::to_string(&[meta.name.as_str(), "blocks.0.attn.to_q.bias"]).unwrap(),
            );
            write_safetensors(&path, &parts, &metadata).unwrap();
            let f = SafetensorsFile::open(&path).unwrap();
            let tensors: Vec<TensorMeta> = f.metas().cloned().collect();
            let config = json!({ "quantization_config": qc });
            let recs = detect(&ForeignFile {
                path: &path,
                tensors: &tensors,
                metadata: f.metadata(),
                config: Some(&config),
            })
            .unwrap();
            assert_eq!(recs.len(), 1, "{name}");
            let r = &recs[0];
            assert_eq!(r.name, meta.name);
            assert_eq!(r.dtype, dtype);
            assert_eq!(r.shape, meta.shape);
            assert_eq!(r.params, m.params(), "{name}");
            let restored = reg.create(r.method.as_deref().unwrap(), &r.params).unwrap();
            assert_eq!(
                restored.output_layout(&meta).unwrap(),
                m.output_layout(&meta).unwrap(),
                "{name} restores as {:?}",
                r.method
            );
            let got = dequant_from_file(&f, r).unwrap();
            assert!(same_bits(&got, &want), "{name} {dtype}");
        }
    }
}

/// `__metadata__` records exactly as torchao 0.18.0 writes them (quoted in
/// specs/TORCHAO_SERIALIZATION.md), filled with the torchao 0.15 reference tensors of
/// case w64x128_bf16 converted as that note describes; each must restore torchao's
/// dequantized weight bit for bit.
#[test]
fn torchao_written_records_restore_the_reference_weights() {
    let case = "w64x128_bf16";
    let bf16 = r#"{"_type":"torch.dtype","_data":"bfloat16"}"#;
    let records = [
        (
            "f8.weight",
            "float8wo_e4m3",
            format!(
                r#"{{"_type":"Float8Tensor","_data":{{"block_size":[1,128],"mm_config":null,"act_quant_kwargs":null,"kernel_preference":{{"_type":"KernelPreference","_data":"AUTO"}},"dtype":{bf16}}},"_tensor_data_names":["qdata","scale"]}}"#
            ),
        ),
        (
            "i8.weight",
            "int8wo",
            format!(
                r#"{{"_type":"Int8Tensor","_data":{{"act_quant_kwargs":null,"reduce_range":false,"block_size":[1,128],"dtype":{bf16}}},"_tensor_data_names":["zero_point","qdata","scale"]}}"#
            ),
        ),
        (
            "i4.weight",
            "int4wo",
            r#"{"_type":"Int4Tensor","_data":{"block_size":[1,128],"shape":[64,128]},"_tensor_data_names":["qdata","scale","zero_point"]}"#.to_string(),
        ),
        (
            "u4.weight",
            "uint4wo",
            format!(
                r#"{{"_type":"IntxUnpackedToInt8Tensor","_data":{{"target_dtype":{{"_type":"torch.dtype","_data":"int4"}},"block_size":[1,64],"dtype":{bf16},"activation_quantization":null}},"_tensor_data_names":["qdata","scale","zero_point"]}}"#
            ),
        ),
    ];
    let mut metadata = BTreeMap::new();
    let mut parts = Vec::new();
    let mut expected = BTreeMap::new();
    let key = |name: &str, d: &str| quant_float8::layout::data_key(name, d);
    for (name, method, rec) in &records {
        let r = load(&format!("{case}/{method}.safetensors"));
        let part = |k: String, dtype: DType, shape: Vec<usize>, data: Vec<u8>| {
            Part::new(PartLayout::new(k, dtype, shape), data).unwrap()
        };
        match *method {
            "float8wo_e4m3" => {
                parts.push(part(
                    key(name, "qdata"),
                    DType::F8E4M3,
                    vec![64, 128],
                    r["qdata"].data.clone(),
                ));
                parts.push(part(
                    key(name, "scale"),
                    DType::F32,
                    vec![64, 1],
                    r["scale"].data.clone(),
                ));
            }
            "int8wo" => {
                let mut s = Vec::new();
                decode_to_f32(DType::BF16, &r["scale"].data, &mut s).unwrap();
                parts.push(part(
                    key(name, "zero_point"),
                    DType::I8,
                    vec![64, 1],
                    vec![0; 64],
                ));
                parts.push(part(
                    key(name, "qdata"),
                    DType::I8,
                    vec![64, 128],
                    r["qdata"].data.clone(),
                ));
                parts.push(part(
                    key(name, "scale"),
                    DType::F32,
                    vec![64, 1],
                    encode_f32(DType::F32, &s).unwrap(),
                ));
            }
            "int4wo" => {
                parts.push(part(
                    key(name, "qdata"),
                    DType::I8,
                    vec![64, 64],
                    r["qdata"].data.clone(),
                ));
                parts.push(part(
                    key(name, "scale"),
                    DType::BF16,
                    vec![1, 64],
                    r["scale"].data.clone(),
                ));
                parts.push(part(
                    key(name, "zero_point"),
                    DType::BF16,
                    vec![1, 64],
                    r["zero_point"].data.clone(),
                ));
            }
            _ => {
                let q: Vec<u8> = r["qdata_unpacked"]
                    .data
                    .iter()
                    .map(|&v| v.wrapping_sub(8))
                    .collect();
                let zp: Vec<u8> = r["zero_point"]
                    .data
                    .chunks(4)
                    .map(|c| (i32::from_le_bytes([c[0], c[1], c[2], c[3]]) - 8) as i8 as u8)
                    .collect();
                parts.push(part(key(name, "qdata"), DType::I8, vec![64, 128], q));
                parts.push(part(
                    key(name, "scale"),
                    DType::BF16,
                    vec![64, 2],
                    r["scale"].data.clone(),
                ));
                parts.push(part(key(name, "zero_point"), DType::I8, vec![64, 2], zp));
            }
        }
        metadata.insert(name.to_string(), rec.clone());
        expected.insert(name.to_string(), r["dequant"].data.clone());
    }
    parts.push(
        Part::new(
            PartLayout::new("f8.bias", DType::BF16, vec![64]),
            vec![0; 128],
        )
        .unwrap(),
    );
    metadata.insert("f8.bias".into(), r#"{"_type": "Tensor"}"#.into());
    let names: Vec<&str> = records.iter().map(|r| r.0).chain(["f8.bias"]).collect();
    metadata.insert(
        "tensor_names".into(),
        serde_json::to_string(&names).unwrap(),
    );
    metadata.insert("format".into(), "pt".into());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diffusion_pytorch_model.safetensors");
    write_safetensors(&path, &parts, &metadata).unwrap();
    let f = SafetensorsFile::open(&path).unwrap();
    let tensors: Vec<TensorMeta> = f.metas().cloned().collect();
    let recs = detect(&ForeignFile {
        path: &path,
        tensors: &tensors,
        metadata: f.metadata(),
        config: None,
    })
    .unwrap();
    assert_eq!(recs.len(), 4);
    for rec in &recs {
        assert_eq!(rec.dtype, DType::BF16);
        assert_eq!(rec.shape, vec![64, 128]);
        let got = dequant_from_file(&f, rec).unwrap();
        let bytes = encode_f32(DType::BF16, &got).unwrap();
        assert!(
            bytes == expected[&rec.name],
            "{} ({:?})",
            rec.name,
            rec.method
        );
    }
}

/// A good torchao-form file made by `method`, as (tensors, metadata).
fn good_file(method: &str) -> (Vec<TensorMeta>, BTreeMap<String, String>) {
    let m = Registry::global()
        .unwrap()
        .create(method, &Params::new())
        .unwrap();
    let meta = TensorMeta::new("x.weight", DType::BF16, vec![32, 128]);
    let layout = m.output_layout(&meta).unwrap();
    let art = m
        .artifacts(&[PlannedTensor {
            meta: meta.clone(),
            layout: layout.clone(),
            method: Some(m.name().to_string()),
        }])
        .unwrap();
    let tensors = layout
        .iter()
        .map(|l| TensorMeta::new(l.key.clone(), l.dtype, l.shape.clone()))
        .collect();
    (tensors, art.metadata)
}

fn detect_in(
    tensors: &[TensorMeta],
    metadata: &BTreeMap<String, String>,
) -> quant_core::Result<Vec<TensorRecord>> {
    detect(&ForeignFile {
        path: Path::new("model.safetensors"),
        tensors,
        metadata,
        config: None,
    })
}

#[test]
fn malformed_torchao_files_give_typed_errors() {
    let (tensors, metadata) = good_file("torch_ao_config_uint4wo");
    assert_eq!(detect_in(&tensors, &metadata).unwrap().len(), 1);

    // Not in this form at all: nothing detected, no error.
    assert!(detect_in(&tensors, &BTreeMap::new()).unwrap().is_empty());

    let with = |k: &str, v: &str| {
        let mut m = metadata.clone();
        m.insert(k.into(), v.into());
        m
    };
    // tensor_names is not a JSON list.
    assert!(matches!(
        detect_in(&tensors, &with("tensor_names", "x.weight")),
        Err(Error::InvalidFile { .. })
    ));
    // A listed name without a record.
    assert!(matches!(
        detect_in(&tensors, &with("tensor_names", r#"["x.weight", "y.weight"]"#)),
        Err(Error::InvalidTensor { tensor, .. }) if tensor == "y.weight"
    ));
    // A record that is not JSON, or has no type.
    for bad in [
        "{not json",
        r#"{"_data": {}}"#,
        r#"{"_type": "MXTensor", "_data": {}, "_tensor_data_names": []}"#,
    ] {
        assert!(matches!(
            detect_in(&tensors, &with("x.weight", bad)),
            Err(Error::InvalidTensor { tensor, .. }) if tensor == "x.weight"
        ));
    }
    // An unsupported target dtype.
    let rec = metadata["x.weight"].replace("\"int4\"", "\"int8\"");
    assert!(matches!(
        detect_in(&tensors, &with("x.weight", &rec)),
        Err(Error::InvalidTensor { .. })
    ));
    // A missing part.
    let missing: Vec<TensorMeta> = tensors
        .iter()
        .filter(|t| !t.name.ends_with("_scale"))
        .cloned()
        .collect();
    assert!(matches!(
        detect_in(&missing, &metadata),
        Err(Error::InvalidTensor { .. })
    ));
    // A tensor with none of its parts here is in another shard of the checkpoint.
    let other_shard: Vec<TensorMeta> = tensors
        .iter()
        .filter(|t| !t.name.starts_with("x._weight_"))
        .cloned()
        .collect();
    assert!(detect_in(&other_shard, &metadata).unwrap().is_empty());
    // Wrong sizes and dtypes.
    let mutate = |f: &dyn Fn(&mut TensorMeta)| {
        let mut t = tensors.clone();
        t.iter_mut().for_each(f);
        t
    };
    for t in [
        mutate(&|m| {
            if m.name.ends_with("_scale") {
                m.shape = vec![32, 3]
            }
        }),
        mutate(&|m| {
            if m.name.ends_with("_qdata") {
                m.shape = vec![32, 64]
            }
        }),
        mutate(&|m| {
            if m.name.ends_with("_qdata") {
                m.dtype = DType::F32
            }
        }),
        mutate(&|m| {
            if m.name.ends_with("_scale") {
                m.dtype = DType::I32
            }
        }),
        mutate(&|m| {
            if m.name.ends_with("_zero_point") {
                m.shape = vec![31, 2]
            }
        }),
    ] {
        assert!(
            matches!(detect_in(&t, &metadata), Err(Error::InvalidTensor { .. })),
            "{t:?}"
        );
    }
    // A block size that does not divide the row.
    let rec = metadata["x.weight"].replace("[1, 64]", "[1, 48]");
    assert!(matches!(
        detect_in(&tensors, &with("x.weight", &rec)),
        Err(Error::InvalidTensor { .. })
    ));

    // float8: a float8 qdata stored as U8, and a blockwise scale.
    let (tensors, metadata) = good_file("torch_ao_config_float8_e4m3_row");
    assert_eq!(
        detect_in(&tensors, &metadata).unwrap()[0].method.as_deref(),
        Some("torch_ao_config_float8_e4m3_row")
    );
    let mut t = tensors.clone();
    t[0].dtype = DType::U8;
    assert!(matches!(
        detect_in(&t, &metadata),
        Err(Error::InvalidTensor { .. })
    ));
    let mut t = tensors.clone();
    t[1].shape = vec![32, 4];
    assert!(matches!(
        detect_in(&t, &metadata),
        Err(Error::InvalidTensor { .. })
    ));
}

#[test]
fn bad_inputs_and_parts_give_typed_errors() {
    let reg = Registry::global().unwrap();
    // Parameters.
    let p = |k: &str, v: Value| {
        let mut p = Params::new();
        p.insert(k.into(), v);
        p
    };
    assert!(matches!(
        reg.create("torch_ao_config_uint4wo", &p("group_size", json!(100))),
        Err(Error::BadParam { .. })
    ));
    assert!(matches!(
        reg.create("torch_ao_config_int4wo", &p("group_size", json!("big"))),
        Err(Error::BadParam { .. })
    ));
    assert!(matches!(
        reg.create("torch_ao_config_int4wo", &p("groupsize", json!(64))),
        Err(Error::BadParam { .. })
    ));
    assert!(matches!(
        reg.create("torch_ao_config_float8wo", &p("group_size", json!(64))),
        Err(Error::BadParam { .. })
    ));
    let m = reg
        .create("torch_ao_config_int4wo", &p("group_size", json!(64)))
        .unwrap();
    assert_eq!(m.params(), p("group_size", json!(64)));

    // Shapes and lengths.
    let m = reg
        .create("torch_ao_config_int8wo", &Params::new())
        .unwrap();
    let t3 = TensorMeta::new("w.weight", DType::BF16, vec![2, 4, 8]);
    assert!(matches!(
        m.output_layout(&t3),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        m.quantize(&t3, &[0.0; 64]),
        Err(Error::ShapeMismatch { .. })
    ));
    let t = TensorMeta::new("w.weight", DType::BF16, vec![4, 64]);
    assert!(matches!(
        m.quantize(&t, &[0.0; 255]),
        Err(Error::ShapeMismatch { .. })
    ));
    let t8 = TensorMeta::new("w.weight", DType::F8E4M3, vec![4, 64]);
    assert!(matches!(
        m.quantize(&t8, &[0.0; 256]),
        Err(Error::UnsupportedDType { .. })
    ));

    // Parts that do not fit the record.
    let q = m.quantize(&t, &sample(4, 64, DType::BF16)).unwrap();
    let mut no_scale = q.clone();
    no_scale.parts.remove(1);
    assert!(matches!(
        m.dequantize(&no_scale),
        Err(Error::InvalidTensor { .. })
    ));
    let mut wrong_shape = q.clone();
    wrong_shape.record.shape = vec![8, 32];
    assert!(matches!(
        m.dequantize(&wrong_shape),
        Err(Error::InvalidTensor { .. })
    ));
    let mut flat = q.clone();
    flat.record.shape = vec![256];
    assert!(matches!(
        m.dequantize(&flat),
        Err(Error::InvalidTensor { .. })
    ));
}

#[test]
fn selection_follows_torchao() {
    let reg = Registry::global().unwrap();
    let sel = |method: &str, name: &str, dtype: DType, shape: &[usize]| {
        reg.create(method, &Params::new())
            .unwrap()
            .select(&TensorMeta::new(name, dtype, shape.to_vec()))
    };
    for (method, _) in METHODS {
        // Only 2-D float weights.
        assert_eq!(
            sel(method, "proj.bias", DType::BF16, &[64]),
            Selection::Keep(None)
        );
        assert_eq!(
            sel(method, "norm.weight", DType::BF16, &[64]),
            Selection::Keep(None)
        );
        assert_eq!(
            sel(method, "conv.weight", DType::BF16, &[64, 64, 3, 3]),
            Selection::Keep(None)
        );
        assert_eq!(
            sel(method, "proj.weight", DType::I64, &[64, 128]),
            Selection::Keep(None)
        );
        assert_eq!(
            sel(method, "proj.weight", DType::BF16, &[64, 128]),
            Selection::Quantize,
            "{method}"
        );
        // Only nn.Linear: embedding tables are kept (torchao's default filter).
        for name in [
            "embeddings.word_embeddings.weight",
            "model.embed_tokens.weight",
            "transformer.wte.weight",
        ] {
            assert_eq!(
                sel(method, name, DType::BF16, &[64, 128]),
                Selection::Keep(None),
                "{method} {name}"
            );
        }
        assert_eq!(
            sel(method, "x_embedder.weight", DType::BF16, &[64, 128]),
            Selection::Quantize,
            "{method}"
        );
    }
    // Skips (torchao leaves the weight as it is).
    assert_eq!(
        sel(
            "torch_ao_config_int4wo",
            "a.weight",
            DType::BF16,
            &[64, 192]
        ),
        Selection::Keep(None)
    );
    assert_eq!(
        sel("torch_ao_config_int4dq", "a.weight", DType::BF16, &[64, 48]),
        Selection::Keep(None)
    );
    assert_eq!(
        sel("torch_ao_config_int8dq", "a.weight", DType::BF16, &[64, 16]),
        Selection::Keep(None)
    );
    assert_eq!(
        sel("torch_ao_config_int8dq", "a.weight", DType::BF16, &[64, 17]),
        Selection::Quantize
    );
    assert_eq!(
        sel(
            "torch_ao_config_float8dq",
            "a.weight",
            DType::BF16,
            &[40, 128]
        ),
        Selection::Keep(None)
    );
    // Where torchao raises: a per-tensor fallback to basic_int8.
    for m in ["torch_ao_config_uint1wo", "torch_ao_config_uint7wo"] {
        assert!(matches!(
            sel(m, "a.weight", DType::BF16, &[64, 96]),
            Selection::Fallback { method, .. } if method == "basic_int8"
        ));
    }
    assert!(matches!(
        sel("torch_ao_config_float8_e4m3_row", "a.weight", DType::F16, &[64, 128]),
        Selection::Fallback { method, .. } if method == "basic_int8"
    ));
}

/// A folder quant writes in torchao's form passes the checks transformers' and diffusers'
/// torchao loaders make on `__metadata__` (every dotted key's value a JSON object, as
/// `_discover_quantized_param_names` json-parses it and calls `.get`; `is_metadata_torchao`
/// on `tensor_names`), keeps quant's own records under dot-free `quant:*` keys, and reads
/// back in quant with every weight restored by its method, bit for bit.
#[test]
fn written_folders_load_in_transformers_and_in_quant() {
    const ALLOWED: [&str; 6] = [
        "Tensor",
        "Float8Tensor",
        "Int4Tensor",
        "Int8Tensor",
        "IntxUnpackedToInt8Tensor",
        "Int4TilePackedTo4dTensor",
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    // Rows a multiple of 16 (float8dq keeps other shapes unquantized, as torchao does).
    let (n, k) = (16, 256);
    let values = sample(n, k, DType::BF16);
    let weight = Part::new(
        PartLayout::new("blocks.0.ff.weight", DType::BF16, vec![n, k]),
        encode_f32(DType::BF16, &values).unwrap(),
    )
    .unwrap();
    let bias = Part::new(
        PartLayout::new("blocks.0.ff.bias", DType::BF16, vec![n]),
        encode_f32(DType::BF16, &values[..n]).unwrap(),
    )
    .unwrap();
    write_safetensors(
        input.join("model.safetensors"),
        &[weight, bias],
        &BTreeMap::new(),
    )
    .unwrap();
    std::fs::write(input.join("config.json"), r#"{"model_type": "x"}"#).unwrap();
    for (name, _) in METHODS {
        let out = dir.path().join(name);
        quant_core::ModelQuantizer::new(name)
            .quantize_path(&input, &out)
            .unwrap();
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
        let md = header["__metadata__"].as_object().unwrap();
        for (key, v) in md {
            assert!(
                !key.starts_with("quant."),
                "{name}: {key} in {:?}",
                md.keys().collect::<Vec<_>>()
            );
            if key.contains('.') {
                let parsed: Value = serde_json::from_str(v.as_str().unwrap()).unwrap();
                assert!(parsed.is_object(), "{name}: {key} = {v}");
            }
        }
        assert!(md.contains_key("quant:tensors"), "{name}");
        let mut listed: Vec<String> =
            serde_json::from_str(md["tensor_names"].as_str().unwrap()).unwrap();
        listed.sort();
        assert_eq!(listed, ["blocks.0.ff.bias", "blocks.0.ff.weight"], "{name}");
        for t in &listed {
            let rec: Value = serde_json::from_str(md[t].as_str().unwrap()).unwrap();
            assert!(ALLOWED.contains(&rec["_type"].as_str().unwrap()), "{name}");
        }
        // torchao 0.18's flatten_tensor_state_dict of Int8DynamicActivationIntxWeightConfig
        // (int4, PerGroup(32)) stores the activation enum as its bare value.
        if name == "torch_ao_config_int4dq" {
            let rec: Value =
                serde_json::from_str(md["blocks.0.ff.weight"].as_str().unwrap()).unwrap();
            assert_eq!(
                rec["_data"]["activation_quantization"],
                "int8_asym_per_token"
            );
        }
        let model = quant_core::ModelFiles::open(&out).unwrap();
        let (_, rec) = model
            .records()
            .find(|(_, r)| r.name == "blocks.0.ff.weight")
            .unwrap();
        assert_eq!(rec.method.as_deref(), Some(name));
        let meta = TensorMeta::new("blocks.0.ff.weight", DType::BF16, vec![n, k]);
        let m = Registry::global()
            .unwrap()
            .create(name, &Params::new())
            .unwrap();
        let want = m.dequantize(&m.quantize(&meta, &values).unwrap()).unwrap();
        let got = model.load_f32("blocks.0.ff.weight").unwrap();
        assert!(same_bits(&got, &want), "{name}");
    }
}

/// A sharded model: every output shard lists the whole model in `tensor_names` with a
/// record per tensor (transformers merges the shards' metadata and looks each weight up
/// there), and quant reads every weight back from its own shard.
#[test]
fn every_shard_lists_the_whole_model() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let (n, k) = (16, 256);
    let values = sample(n, k, DType::BF16);
    let mut weight_map = serde_json::Map::new();
    for (i, name) in ["a.proj.weight", "b.proj.weight"].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let part = Part::new(
            PartLayout::new(*name, DType::BF16, vec![n, k]),
            encode_f32(DType::BF16, &values).unwrap(),
        )
        .unwrap();
        write_safetensors(input.join(&file), &[part], &BTreeMap::new()).unwrap();
        weight_map.insert(name.to_string(), Value::from(file));
    }
    std::fs::write(
        input.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": weight_map}).to_string(),
    )
    .unwrap();
    std::fs::write(input.join("config.json"), r#"{"model_type": "x"}"#).unwrap();
    let out = dir.path().join("out");
    quant_core::ModelQuantizer::new("torch_ao_config_int8wo")
        .quantize_path(&input, &out)
        .unwrap();
    for i in 1..=2 {
        let f =
            SafetensorsFile::open(out.join(format!("model-0000{i}-of-00002.safetensors"))).unwrap();
        let mut listed: Vec<String> = serde_json::from_str(&f.metadata()["tensor_names"]).unwrap();
        listed.sort();
        assert_eq!(listed, ["a.proj.weight", "b.proj.weight"]);
        assert!(listed.iter().all(|t| f.metadata().contains_key(t)));
    }
    let model = quant_core::ModelFiles::open(&out).unwrap();
    for name in ["a.proj.weight", "b.proj.weight"] {
        let (_, r) = model.records().find(|(_, r)| r.name == name).unwrap();
        assert_eq!(r.method.as_deref(), Some("torch_ao_config_int8wo"));
        assert_eq!(model.load_f32(name).unwrap().len(), n * k);
    }
}
