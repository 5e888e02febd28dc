//! Acceptance of the layout: quantizing an original model tensor by tensor with these
//! methods (select → keep or quantize) gives exactly the tensors transformers / diffusers
//! saved for the same config (tests/data/checkpoints, bitsandbytes 0.50.2 on CPU): same keys,
//! dtypes, shapes and bytes; quant-state JSON compared as JSON; and the same
//! `quantization_config`.

// Test helpers panic on broken fixtures: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::*;
use quant_bnb::{quantize_4bit, quantize_nested, QuantType};
use quant_core::dtype::{encode_f32, round_bf16};
use quant_core::safetensors_io::SafetensorsFile;
use quant_core::{DType, Part, PartLayout, Selection, TensorMeta, TensorSource};
use serde_json::json;

const MAX_OFFSET_ULPS: u32 = 2;

/// (name, dtype, shape, values) of every tensor of an original model.
type Tensors = Vec<(TensorMeta, Vec<f32>)>;

fn original(name: &str) -> Tensors {
    // bert_tiny_bf16 is the RNE bfloat16 cast of bert_tiny_f32 (see checkpoints/manifest.json).
    let (file, to_bf16) = match name {
        "bert_tiny_f32" => ("bert_tiny_f32/model.safetensors", false),
        "bert_tiny_bf16" => ("bert_tiny_f32/model.safetensors", true),
        "unet_tiny_f16" => ("unet_tiny_f16/diffusion_pytorch_model.safetensors", false),
        other => panic!("{other}"),
    };
    let f = open(&format!("checkpoints/originals/{file}"));
    f.tensors()
        .into_iter()
        .map(|t| {
            let mut meta = t.meta().clone();
            let mut v = t.to_f32().unwrap();
            if to_bf16 {
                meta.dtype = DType::BF16;
                v.iter_mut().for_each(|x| *x = round_bf16(*x));
            }
            (meta, v)
        })
        .collect()
}

fn saved(folder: &str) -> (SafetensorsFile, serde_json::Value) {
    let dir = data_dir().join("checkpoints/bnb").join(folder);
    let file = ["model.safetensors", "diffusion_pytorch_model.safetensors"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    (SafetensorsFile::open(file).unwrap(), config)
}

fn check(folder: &str, orig: &str, method_name: &str, params: serde_json::Value) {
    let m = method(method_name, params);
    let (file, config) = saved(folder);
    let mut ours: BTreeMap<String, Part> = BTreeMap::new();
    let mut quantized = 0;
    for (meta, values) in original(orig) {
        match m.select(&meta) {
            Selection::Keep(dtype) => {
                let dt = dtype.unwrap_or(meta.dtype);
                let layout = PartLayout::new(meta.name.clone(), dt, meta.shape.clone());
                let data = encode_f32(dt, &values).unwrap();
                ours.insert(meta.name.clone(), Part::new(layout, data).unwrap());
            }
            Selection::Quantize => {
                quantized += 1;
                let q = m.quantize(&meta, &values).unwrap();
                let layout = m.output_layout(&meta).unwrap();
                assert_eq!(
                    q.parts.iter().map(|p| p.layout.clone()).collect::<Vec<_>>(),
                    layout
                );
                for mut p in q.parts {
                    if p.layout.key.contains(".quant_state.bitsandbytes__") {
                        nested_given_offset(&file, &meta, &values, &mut ours, &mut p);
                    }
                    ours.insert(p.layout.key.clone(), p);
                }
            }
            Selection::Fallback { method, reason } => {
                panic!("{}: fallback {method}: {reason}", meta.name)
            }
        }
    }
    let mut theirs: Vec<String> = file.metas().map(|m| m.name.clone()).collect();
    let mut mine: Vec<String> = ours.keys().cloned().collect();
    theirs.sort();
    mine.sort();
    assert_eq!(mine, theirs, "{folder}: keys");
    for key in &theirs {
        let lib = file.part(key).unwrap();
        let our = &ours[key];
        let ctx = format!("{folder}: {key}");
        assert_eq!(our.layout.dtype, lib.layout.dtype, "{ctx}: dtype");
        if key.contains(".quant_state.bitsandbytes__") {
            if let Some((a, b)) = compare_state(&our.data, &lib.data, &ctx) {
                assert!(ulps(a, b) <= MAX_OFFSET_ULPS, "{ctx}: offset {a} vs {b}");
                if a.to_bits() == b.to_bits() {
                    // Same text as json.dumps; ours is right-padded with spaces.
                    assert_eq!(our.data.trim_ascii_end(), &lib.data[..], "{ctx}: JSON text");
                }
            } else {
                assert_eq!(our.data, lib.data, "{ctx}: quant state bytes");
            }
            continue;
        }
        assert_eq!(our.layout.shape, lib.layout.shape, "{ctx}: shape");
        assert_eq!(our.data, lib.data, "{ctx}: bytes");
    }
    assert!(quantized > 0);
    let art = m.artifacts(&[]).unwrap();
    assert_eq!(
        art.quantization_config.as_ref(),
        config.get("quantization_config"),
        "{folder}: quantization_config"
    );
    assert_eq!(art.metadata.get("format").map(String::as_str), Some("pt"));
}

/// When our nested offset differs from the library's in its last bits (allowed: it is a
/// torch reduction), the nested codes and nested absmax are recomputed with the library's
/// offset; they must then be exact. (With the cascade-sum order every offset here is exact.)
fn nested_given_offset(
    file: &SafetensorsFile,
    meta: &TensorMeta,
    values: &[f32],
    ours: &mut BTreeMap<String, Part>,
    state: &mut Part,
) {
    let lib = json_of(&file.part(&state.layout.key).unwrap().data);
    let Some(theirs) = lib["nested_offset"].as_f64().map(|x| x as f32) else {
        return;
    };
    let mine = json_of(&state.data)["nested_offset"].as_f64().unwrap() as f32;
    if mine.to_bits() == theirs.to_bits() {
        return;
    }
    let qt = if lib["quant_type"] == "nf4" {
        QuantType::Nf4
    } else {
        QuantType::Fp4
    };
    let load = DType::parse(lib["dtype"].as_str().unwrap()).unwrap();
    let x: Vec<f32> = values
        .iter()
        .map(|&v| quant_core::dtype::round_to(load, v))
        .collect();
    let (_, absmax) = quantize_4bit(&x, lib["blocksize"].as_u64().unwrap() as usize, qt);
    let (codes, nested) = quantize_nested(&absmax, theirs, 256);
    let w = &meta.name;
    let codes_part = ours.get_mut(&format!("{w}.absmax")).unwrap();
    codes_part.data = codes;
    let nested_part = ours.get_mut(&format!("{w}.nested_absmax")).unwrap();
    nested_part.data = nested.iter().flat_map(|v| v.to_le_bytes()).collect();
}

#[test]
fn bert_nf4_f32() {
    check(
        "bert_nf4",
        "bert_tiny_f32",
        "bnb_4bit_config_fp16",
        json!({"dtype": "float32", "compute_dtype": "float32"}),
    );
}

#[test]
fn bert_fp4_double_quant_f32() {
    check(
        "bert_fp4_dq",
        "bert_tiny_f32",
        "bnb_4bit_config_fp16",
        json!({"quant_type": "fp4", "double_quant": true, "dtype": "float32", "compute_dtype": "float32"}),
    );
}

#[test]
fn bert_bf16_nf4_double_quant_bf16_storage() {
    check(
        "bert_bf16_nf4_dq_storage_bf16",
        "bert_tiny_bf16",
        "bnb_4bit_config_bf16",
        json!({"double_quant": true, "quant_storage": "bfloat16"}),
    );
}

#[test]
fn bert_bf16_int8() {
    check(
        "bert_bf16_int8",
        "bert_tiny_bf16",
        "bnb_8bit_config_bf16",
        json!({}),
    );
}

#[test]
fn unet_nf4_double_quant_f16() {
    check(
        "unet_nf4_dq",
        "unet_tiny_f16",
        "bnb_4bit_config_fp16",
        json!({"double_quant": true}),
    );
}

#[test]
fn unet_int8_f16() {
    check(
        "unet_int8",
        "unet_tiny_f16",
        "bnb_8bit_config_fp16",
        json!({}),
    );
}

#[test]
fn f32_original_through_bf16_method_casts_first() {
    // bnb_4bit_config_bf16 on the f32 original = the library on the bf16 model.
    let m = method(
        "bnb_4bit_config_bf16",
        json!({"double_quant": true, "quant_storage": "bfloat16"}),
    );
    let (file, _) = saved("bert_bf16_nf4_dq_storage_bf16");
    for (meta, values) in original("bert_tiny_f32") {
        if let Selection::Quantize = m.select(&meta) {
            let q = m.quantize(&meta, &values).unwrap();
            assert_eq!(
                q.parts[0].data,
                file.part(&meta.name).unwrap().data,
                "{}",
                meta.name
            );
        }
    }
}
