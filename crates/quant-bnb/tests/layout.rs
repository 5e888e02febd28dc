//! Loading bitsandbytes files (the library's and ours) through the registered layout
//! detector, malformed files, round trips, parameters and tensor selection.

// Test helpers panic on broken fixtures: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use quant_core::format::{layouts, ForeignFile};
use quant_core::safetensors_io::{write_safetensors, SafetensorsFile};
use quant_core::{
    DType, Error, Part, PartLayout, QuantizedTensor, Registry, Selection, TensorMeta, TensorRecord,
    TensorSource,
};
use serde_json::json;

/// Half the widest gap between neighbouring NF4 levels (-1.0 → -0.6961928), in units of absmax.
const NF4_MAX_ERROR: f32 = 0.151_904;
/// Half the widest gap between neighbouring FP4 levels (2/3 → 1).
const FP4_MAX_ERROR: f32 = 0.166_667;

fn detect(
    path: &Path,
    config: Option<&serde_json::Value>,
) -> quant_core::Result<Vec<TensorRecord>> {
    let f = SafetensorsFile::open(path)?;
    let metas: Vec<TensorMeta> = f.metas().cloned().collect();
    let file = ForeignFile {
        path,
        tensors: &metas,
        metadata: f.metadata(),
        config,
    };
    let entry = layouts().find(|l| l.backend == "quant-bnb").unwrap();
    (entry.detect)(&file)
}

/// Restores every detected tensor the way the generic loader does.
fn load_all(path: &Path, config: Option<&serde_json::Value>) -> BTreeMap<String, Vec<f32>> {
    let f = SafetensorsFile::open(path).unwrap();
    let mut out = BTreeMap::new();
    for rec in detect(path, config).unwrap() {
        let m = Registry::global()
            .unwrap()
            .create(rec.method.as_deref().unwrap(), &rec.params)
            .unwrap();
        let parts = rec.parts.iter().map(|k| f.part(k).unwrap()).collect();
        let q = QuantizedTensor {
            record: rec.clone(),
            parts,
        };
        let v = m.dequantize(&q).unwrap();
        assert_eq!(v.len(), rec.shape.iter().product::<usize>());
        out.insert(rec.name.clone(), v);
    }
    out
}

#[test]
fn detector_is_registered_and_ignores_other_files() {
    assert!(layouts().any(|l| l.backend == "quant-bnb"));
    let p = data_dir().join("inputs/A_64x128__float32.safetensors");
    assert!(detect(&p, None).unwrap().is_empty());
}

#[test]
fn library_vectors_load_bit_exact() {
    let entries = manifest("manifest.json")["entries"]
        .as_array()
        .unwrap()
        .clone();
    for e in entries.iter().filter(|e| e["library"] == "bitsandbytes") {
        let path = data_dir().join(e["file"].as_str().unwrap());
        let loaded = load_all(&path, None);
        assert_eq!(loaded.len(), 1);
        let f = open(e["file"].as_str().unwrap());
        let want = if e["method"] == "bnb_int8" {
            f32s(&f, "ref.dequant_f32")
        } else {
            f32s(&f, "ref.dequant")
        };
        let got = &loaded["weight"];
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{}",
            e["file"]
        );
    }
}

#[test]
fn checkpoint_folders_load() {
    for (folder, n, method) in [
        ("bert_nf4", 13, "bnb_4bit_config_fp16"),
        ("bert_fp4_dq", 13, "bnb_4bit_config_fp16"),
        ("bert_bf16_nf4_dq_storage_bf16", 13, "bnb_4bit_config_bf16"),
        ("bert_bf16_int8", 13, "bnb_8bit_config_bf16"),
        ("unet_nf4_dq", 47, "bnb_4bit_config_fp16"),
        ("unet_int8", 47, "bnb_8bit_config_fp16"),
    ] {
        let dir = data_dir().join("checkpoints/bnb").join(folder);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let file = ["model.safetensors", "diffusion_pytorch_model.safetensors"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())
            .unwrap();
        let recs = detect(&file, Some(&config)).unwrap();
        assert_eq!(recs.len(), n, "{folder}");
        assert!(
            recs.iter().all(|r| r.method.as_deref() == Some(method)),
            "{folder}"
        );
        let loaded = load_all(&file, Some(&config));
        assert!(loaded.values().flatten().all(|v| v.is_finite()), "{folder}");
    }
    // The loaded bert_nf4 weights are what our own quantize + dequantize give.
    let dir = data_dir().join("checkpoints/bnb/bert_nf4");
    let loaded = load_all(&dir.join("model.safetensors"), None);
    let orig = open("checkpoints/originals/bert_tiny_f32/model.safetensors");
    let m = method("bnb_4bit_config_fp16", json!({"dtype": "float32"}));
    for (name, values) in &loaded {
        let t = orig.get(name).unwrap();
        let q = m.quantize(t.meta(), &t.to_f32().unwrap()).unwrap();
        assert_eq!(&m.dequantize(&q).unwrap(), values, "{name}");
    }
}

/// A change made to the parts of a file.
type Edit = Box<dyn FnOnce(&mut Vec<Part>)>;

/// Writes the non-`ref.` tensors of a vector file, changed by `edit`, to a temp file.
fn mutated(
    rel: &str,
    edit: impl FnOnce(&mut Vec<Part>),
) -> (tempfile::TempDir, std::path::PathBuf) {
    let f = open(rel);
    let mut parts: Vec<Part> = f
        .metas()
        .filter(|m| !m.name.starts_with("ref."))
        .map(|m| f.part(&m.name).unwrap())
        .collect();
    edit(&mut parts);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write_safetensors(&path, &parts, &BTreeMap::new()).unwrap();
    (dir, path)
}

fn replace(parts: &mut [Part], key: &str, dtype: DType, shape: Vec<usize>, data: Vec<u8>) {
    let p = parts.iter_mut().find(|p| p.layout.key == key).unwrap();
    *p = Part::new(PartLayout::new(key, dtype, shape), data).unwrap();
}

fn assert_invalid(r: quant_core::Result<Vec<TensorRecord>>, what: &str) {
    match r {
        Err(Error::InvalidTensor { path, tensor, .. }) => {
            assert!(path.ends_with("model.safetensors"), "{what}");
            assert_eq!(tensor, "weight", "{what}");
        }
        other => panic!("{what}: expected InvalidTensor, got {other:?}"),
    }
}

#[test]
fn malformed_four_bit_files_are_typed_errors() {
    let plain = "vectors/E_33x100__float32__nf4.safetensors";
    let dq = "vectors/E_33x100__float32__fp4_dq.safetensors";
    let state = "weight.quant_state.bitsandbytes__nf4";
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "missing absmax",
            plain,
            Box::new(|p| p.retain(|p| p.layout.key != "weight.absmax")),
        ),
        (
            "missing quant_map",
            plain,
            Box::new(|p| p.retain(|p| p.layout.key != "weight.quant_map")),
        ),
        (
            "missing packed weight",
            plain,
            Box::new(|p| p.retain(|p| p.layout.key != "weight")),
        ),
        (
            "absmax too short",
            plain,
            Box::new(|p| replace(p, "weight.absmax", DType::F32, vec![2], vec![0; 8])),
        ),
        (
            "absmax wrong dtype",
            plain,
            Box::new(|p| replace(p, "weight.absmax", DType::U8, vec![52], vec![0; 52])),
        ),
        (
            "packed too short",
            plain,
            Box::new(|p| replace(p, "weight", DType::U8, vec![10, 1], vec![0; 10])),
        ),
        (
            "bad JSON",
            plain,
            Box::new(move |p| replace(p, state, DType::U8, vec![5], b"{\"qua".to_vec())),
        ),
        (
            "not UTF-8",
            plain,
            Box::new(move |p| replace(p, state, DType::U8, vec![2], vec![0xff, 0xfe])),
        ),
        (
            "unknown JSON key",
            plain,
            Box::new(move |p| {
                let j = br#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [33, 100], "bogus": 1}"#;
                replace(p, state, DType::U8, vec![j.len()], j.to_vec())
            }),
        ),
        (
            "quant_type differs from key",
            plain,
            Box::new(move |p| {
                let j = br#"{"quant_type": "fp4", "blocksize": 64, "dtype": "float32", "shape": [33, 100]}"#;
                replace(p, state, DType::U8, vec![j.len()], j.to_vec())
            }),
        ),
        (
            "blocksize not allowed",
            plain,
            Box::new(move |p| {
                let j = br#"{"quant_type": "nf4", "blocksize": 48, "dtype": "float32", "shape": [33, 100]}"#;
                replace(p, state, DType::U8, vec![j.len()], j.to_vec())
            }),
        ),
        (
            "shape does not match the packed bytes",
            plain,
            Box::new(move |p| {
                let j = br#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [34, 100]}"#;
                replace(p, state, DType::U8, vec![j.len()], j.to_vec())
            }),
        ),
        (
            "missing nested_absmax",
            dq,
            Box::new(|p| p.retain(|p| p.layout.key != "weight.nested_absmax")),
        ),
        (
            "missing nested_quant_map",
            dq,
            Box::new(|p| p.retain(|p| p.layout.key != "weight.nested_quant_map")),
        ),
        (
            "nested absmax stored as f32",
            dq,
            Box::new(|p| replace(p, "weight.absmax", DType::F32, vec![52], vec![0; 208])),
        ),
    ];
    for (what, file, edit) in cases {
        let (_dir, path) = mutated(file, edit);
        assert_invalid(detect(&path, None), what);
    }
}

#[test]
fn malformed_int8_files_are_typed_errors() {
    let file = "vectors/E_33x100__float32__int8.safetensors";
    let cases: Vec<(&str, Edit)> = vec![
        (
            "SCB too short",
            Box::new(|p| replace(p, "SCB", DType::F32, vec![2], vec![0; 8])),
        ),
        (
            "weight_format not row",
            Box::new(|p| replace(p, "weight_format", DType::U8, vec![], vec![1])),
        ),
        (
            "weight not int8",
            Box::new(|p| replace(p, "weight", DType::U8, vec![33, 100], vec![0; 3300])),
        ),
        (
            "missing weight",
            Box::new(|p| p.retain(|p| p.layout.key != "weight")),
        ),
    ];
    for (what, edit) in cases {
        let (_dir, path) = mutated(file, edit);
        assert_invalid(detect(&path, None), what);
    }
}

#[test]
fn malformed_parts_do_not_panic_on_dequantize() {
    let m = method("bnb_4bit_config_fp16", json!({"double_quant": true}));
    let meta = TensorMeta::new("w.weight", DType::F16, vec![8, 64]);
    let values: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
        .collect();
    let good = m.quantize(&meta, &values).unwrap();
    for k in 0..good.parts.len() {
        // Drop one part.
        let mut q = good.clone();
        q.parts.remove(k);
        assert!(
            matches!(m.dequantize(&q), Err(Error::InvalidTensor { .. })),
            "part {k}"
        );
        // Truncate one part.
        let mut q = good.clone();
        let p = &mut q.parts[k];
        p.data.truncate(p.data.len() / 2);
        assert!(
            matches!(m.dequantize(&q), Err(Error::InvalidTensor { .. })),
            "part {k}"
        );
    }
    let m8 = method("bnb_8bit_config_fp16", json!({}));
    let good = m8.quantize(&meta, &values).unwrap();
    for k in 0..2 {
        let mut q = good.clone();
        q.parts[k].data.pop();
        assert!(
            matches!(m8.dequantize(&q), Err(Error::InvalidTensor { .. })),
            "part {k}"
        );
    }
}

/// splitmix64 → approximately normal values (deterministic).
fn sample(n: usize, seed: u64, std: f64) -> Vec<f32> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| ((0..12).map(|_| next()).sum::<f64>() - 6.0) as f32 * std as f32)
        .collect()
}

#[test]
fn four_bit_round_trip_within_bound() {
    for (qt, bound) in [("nf4", NF4_MAX_ERROR), ("fp4", FP4_MAX_ERROR)] {
        for dq in [false, true] {
            for (shape, bs) in [
                (vec![33usize, 101], 64usize),
                (vec![7, 9], 32),
                (vec![64, 256], 4096),
                (vec![3, 1000], 128),
            ] {
                let name = "bnb_4bit_config_bf16";
                let m = method(
                    name,
                    json!({"quant_type": qt, "double_quant": dq, "blocksize": bs, "dtype": "float32"}),
                );
                let again = Registry::global()
                    .unwrap()
                    .create(name, &m.params())
                    .unwrap();
                assert_eq!(again.params(), m.params());
                let n: usize = shape.iter().product();
                let meta = TensorMeta::new("x.weight", DType::F32, shape.clone());
                let values = sample(n, 7, 0.02);
                let q = m.quantize(&meta, &values).unwrap();
                assert_eq!(q.record.dequant_dtype, DType::F32);
                let d = again.dequantize(&q).unwrap();
                for (b, (x, y)) in values.chunks(bs).zip(d.chunks(bs)).enumerate() {
                    let am = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                    // Double quantization adds the absmax error (< 1 % of the mean here).
                    let slack = if dq { 1.02 } else { 1.0 + 1e-6 };
                    for (a, c) in x.iter().zip(y) {
                        assert!(
                            (a - c).abs() <= am * bound * slack + 1e-7,
                            "{qt} {dq} {shape:?} block {b}: {a} vs {c}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn int8_round_trip_within_bound() {
    let m = method("bnb_8bit_config_bf16", json!({"dtype": "float32"}));
    let meta = TensorMeta::new("fc.weight", DType::F32, vec![17, 300]);
    let values = sample(17 * 300, 3, 0.05);
    let q = m.quantize(&meta, &values).unwrap();
    assert_eq!(q.parts[1].layout.key, "fc.SCB");
    assert_eq!(q.parts[2].layout.key, "fc.weight_format");
    let d = m.dequantize(&q).unwrap();
    for (x, y) in values.chunks(300).zip(d.chunks(300)) {
        let scb = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in x.iter().zip(y) {
            // Half a step plus the float16 cast.
            assert!((a - b).abs() <= scb / 127.0 * 0.5 + a.abs() * 1e-3 + 1e-6);
        }
    }
}

#[test]
fn bad_params_are_rejected() {
    link_backend();
    let reg = Registry::global().unwrap();
    for (name, params) in [
        ("bnb_4bit_config_fp16", json!({"blocksize": 100})),
        ("bnb_4bit_config_fp16", json!({"blocksize": 16})),
        ("bnb_4bit_config_fp16", json!({"quant_type": "int4"})),
        ("bnb_4bit_config_fp16", json!({"quant_storage": "int32"})),
        ("bnb_4bit_config_fp16", json!({"dtype": "int8"})),
        ("bnb_4bit_config_bf16", json!({"double_quant": "maybe"})),
        ("bnb_4bit_config_bf16", json!({"nested": true})),
        ("bnb_8bit_config_fp16", json!({"blocksize": 64})),
        ("bnb_8bit_config_bf16", json!({"dtype": "float64"})),
    ] {
        let p = params.as_object().unwrap().clone();
        match reg.create(name, &p) {
            Err(Error::BadParam { method, .. }) => assert_eq!(method, name),
            Err(other) => panic!("{name} {params}: {other}"),
            Ok(_) => panic!("{name} {params}: accepted"),
        }
    }
    // CLI-style values parse.
    let p: quant_core::Params = [
        "quant_type=fp4",
        "double_quant=true",
        "blocksize=128",
        "quant_storage=bfloat16",
    ]
    .iter()
    .map(|a| quant_core::parse_param_arg(a).unwrap())
    .collect();
    let m = reg.create("bnb_4bit_config_bf16", &p).unwrap();
    assert_eq!(m.params()["blocksize"], 128);
    assert_eq!(m.params()["dtype"], "bfloat16");
    assert_eq!(m.params()["compute_dtype"], "bfloat16");
}

#[test]
fn all_four_methods_are_registered() {
    link_backend();
    let reg = Registry::global().unwrap();
    for name in [
        "bnb_4bit_config_fp16",
        "bnb_4bit_config_bf16",
        "bnb_8bit_config_fp16",
        "bnb_8bit_config_bf16",
    ] {
        let e = reg.get(name).unwrap();
        assert_eq!(e.backend, "quant-bnb");
        assert_eq!(reg.resolve(name, true).unwrap().effective, name);
    }
}

#[test]
fn selection_follows_transformers_defaults() {
    let m4 = method("bnb_4bit_config_fp16", json!({}));
    let m8 = method("bnb_8bit_config_bf16", json!({}));
    let t = |n: &str, d: DType, s: &[usize]| TensorMeta::new(n, d, s.to_vec());
    for m in [&m4, &m8] {
        let keep = if m.name().ends_with("bf16") {
            DType::BF16
        } else {
            DType::F16
        };
        assert_eq!(
            m.select(&t(
                "encoder.layer.0.attention.self.query.weight",
                DType::F32,
                &[128, 128]
            )),
            Selection::Quantize
        );
        assert_eq!(
            m.select(&t("weight", DType::F32, &[4, 4])),
            Selection::Quantize
        );
        assert_eq!(
            m.select(&t("x_embedder.weight", DType::BF16, &[64, 64])),
            Selection::Quantize
        );
        assert_eq!(
            m.select(&t("time_embedding.linear_1.weight", DType::F16, &[192, 48])),
            Selection::Quantize
        );
        for kept in [
            t("embeddings.word_embeddings.weight", DType::F32, &[256, 128]),
            t("model.embed_tokens.weight", DType::F32, &[256, 128]),
            t("lm_head.weight", DType::F32, &[256, 128]),
            t(
                "encoder.layer.0.output.LayerNorm.weight",
                DType::F32,
                &[128],
            ),
            t("encoder.layer.0.output.dense.bias", DType::F32, &[128]),
            t("conv_in.weight", DType::F16, &[48, 4, 3, 3]),
            t("proj.weight_scale", DType::F32, &[4, 4]),
        ] {
            assert_eq!(
                m.select(&kept),
                Selection::Keep(Some(keep)),
                "{}",
                kept.name
            );
        }
        assert_eq!(
            m.select(&t("position_ids", DType::I64, &[1, 64])),
            Selection::Keep(None)
        );
    }
    let bf = method("bnb_4bit_config_bf16", json!({"quant_storage": "float32"}));
    assert!(matches!(
        bf.select(&t("a.weight", DType::F32, &[3, 3])),
        Selection::Fallback { .. }
    ));
    assert!(matches!(
        bf.output_layout(&t("a.weight", DType::F32, &[3, 3])),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        m8.output_layout(&t("a.weight", DType::F32, &[3, 3, 3])),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn artifacts_are_the_transformers_config() {
    let m = method(
        "bnb_4bit_config_bf16",
        json!({"quant_type": "fp4", "double_quant": true}),
    );
    let qc = m.artifacts(&[]).unwrap().quantization_config.unwrap();
    assert_eq!(qc["bnb_4bit_compute_dtype"], "bfloat16");
    assert_eq!(qc["bnb_4bit_quant_type"], "fp4");
    assert_eq!(qc["bnb_4bit_use_double_quant"], true);
    assert_eq!(qc["load_in_4bit"], true);
    assert_eq!(qc["quant_method"], "bitsandbytes");
    let keys: Vec<&String> = qc.as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[test]
fn our_files_load_through_the_detector() {
    let dir = tempfile::tempdir().unwrap();
    for (name, params) in [
        ("bnb_4bit_config_fp16", json!({"double_quant": true})),
        (
            "bnb_4bit_config_bf16",
            json!({"quant_type": "fp4", "blocksize": 128, "quant_storage": "bfloat16"}),
        ),
        ("bnb_8bit_config_bf16", json!({})),
    ] {
        let m = method(name, params);
        let mut parts = Vec::new();
        let mut want = BTreeMap::new();
        for (i, shape) in [vec![48usize, 64], vec![33, 100], vec![7, 12]]
            .into_iter()
            .enumerate()
        {
            let meta =
                TensorMeta::new(format!("layers.{i}.proj.weight"), DType::F32, shape.clone());
            let values = sample(shape.iter().product(), i as u64 + 1, 0.05);
            let q = m.quantize(&meta, &values).unwrap();
            want.insert(meta.name.clone(), m.dequantize(&q).unwrap());
            parts.extend(q.parts);
        }
        let art = m.artifacts(&[]).unwrap();
        let path = dir.path().join(format!("{name}.safetensors"));
        write_safetensors(&path, &parts, &art.metadata).unwrap();
        let dtype = if name.ends_with("bf16") {
            "bfloat16"
        } else {
            "float16"
        };
        let config = json!({"quantization_config": art.quantization_config, "dtype": dtype});
        let recs = detect(&path, Some(&config)).unwrap();
        assert!(
            recs.iter().all(|r| r.method.as_deref() == Some(name)),
            "{name}"
        );
        assert_eq!(load_all(&path, Some(&config)), want, "{name}");
    }
}
