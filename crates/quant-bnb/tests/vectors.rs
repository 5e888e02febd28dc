//! Every bitsandbytes reference vector (tests/data/manifest.json, produced by bitsandbytes
//! 0.50.2 on CPU): quantized bytes byte for byte, dequantized values bit for bit.

// Test helpers panic on broken fixtures: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use quant_bnb::method::{dequantize_4bit_parts, dequantize_8bit_parts};
use quant_bnb::{quantize_4bit, quantize_nested, QuantType};
use quant_core::{DType, PartLayout, QuantizedTensor, TensorMeta, TensorSource};
use serde_json::json;

/// The nested offset is a torch f32 mean whose last bits depend on the reduction order.
const MAX_OFFSET_ULPS: u32 = 2;

fn entries() -> Vec<serde_json::Value> {
    manifest("manifest.json")["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["library"] == "bitsandbytes")
        .cloned()
        .collect()
}

fn input(case: &str, dtype: &str) -> (TensorMeta, Vec<f32>) {
    let f = open(&format!("inputs/{case}__{dtype}.safetensors"));
    let t = f.get("weight").unwrap();
    (t.meta().clone(), t.to_f32().unwrap())
}

/// The library's parts of an entry as a QuantizedTensor (every non-`ref.` tensor).
fn reference_parts(
    f: &quant_core::safetensors_io::SafetensorsFile,
    record: &quant_core::TensorRecord,
) -> QuantizedTensor {
    let parts = f
        .metas()
        .filter(|m| !m.name.starts_with("ref."))
        .map(|m| f.part(&m.name).unwrap())
        .collect();
    QuantizedTensor {
        record: record.clone(),
        parts,
    }
}

fn assert_bits(ours: &[f32], want: &[f32], ctx: &str) {
    assert_eq!(ours.len(), want.len(), "{ctx}");
    let bad = ours
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(bad, 0, "{ctx}: {bad} dequantized values differ");
}

#[test]
fn four_bit_vectors_are_byte_identical() {
    // Both builds of the kernels: AVX2 (where the CPU has it) and the baseline.
    for simd in [true, false] {
        let _simd = quant_core::simd::force_simd(simd);
        four_bit_vectors_are_byte_identical_once();
    }
}

fn four_bit_vectors_are_byte_identical_once() {
    let mut checked = 0;
    let mut offsets_exact = 0;
    for e in entries().iter().filter(|e| e["method"] != "bnb_int8") {
        let ctx = format!("{} {} {}", e["case"], e["dtype"], e["method"]);
        let p = &e["params"];
        let dtype = e["dtype"].as_str().unwrap();
        let (meta, values) = input(e["case"].as_str().unwrap(), dtype);
        let m = method(
            "bnb_4bit_config_fp16",
            json!({
                "quant_type": p["quant_type"],
                "blocksize": p["blocksize"],
                "double_quant": p["double_quant"],
                "quant_storage": p["quant_storage"],
                "dtype": dtype,
            }),
        );
        let layout = m.output_layout(&meta).unwrap();
        let q = m.quantize(&meta, &values).unwrap();
        assert_eq!(
            q.parts.iter().map(|p| &p.layout).collect::<Vec<_>>(),
            layout.iter().collect::<Vec<_>>(),
            "{ctx}: layout"
        );
        let f = open(e["file"].as_str().unwrap());
        let lib_keys: Vec<String> = f
            .metas()
            .map(|m| m.name.clone())
            .filter(|k| !k.starts_with("ref."))
            .collect();
        let mut our_keys: Vec<String> = q.parts.iter().map(|p| p.layout.key.clone()).collect();
        our_keys.sort();
        let mut sorted = lib_keys.clone();
        sorted.sort();
        assert_eq!(our_keys, sorted, "{ctx}: keys");

        let state_key = q.parts.last().unwrap().layout.key.clone();
        let nested = compare_state(
            &q.part(&state_key).unwrap().data,
            &f.part(&state_key).unwrap().data,
            &ctx,
        );
        let mut exact_offset = true;
        if let Some((ours, theirs)) = nested {
            let ref_off = f32s(&f, "ref.nested_offset")[0];
            assert_eq!(theirs.to_bits(), ref_off.to_bits(), "{ctx}");
            assert!(
                ulps(ours, theirs) <= MAX_OFFSET_ULPS,
                "{ctx}: offset {ours} vs {theirs}"
            );
            exact_offset = ours.to_bits() == theirs.to_bits();
            if exact_offset {
                // Same text as json.dumps; ours is right-padded with spaces.
                let our_text = &q.part(&state_key).unwrap().data;
                let lib_text = &f.part(&state_key).unwrap().data;
                assert_eq!(our_text.trim_ascii_end(), &lib_text[..], "{ctx}: JSON text");
            }
            offsets_exact += usize::from(exact_offset);
            // The nested codes that follow from the library's offset must be exact.
            let qt = if p["quant_type"] == "nf4" {
                QuantType::Nf4
            } else {
                QuantType::Fp4
            };
            let (_, absmax) = quantize_4bit(&values, 64, qt);
            let (codes, nabs) = quantize_nested(&absmax, theirs, 256);
            assert_eq!(
                codes,
                f.part("weight.absmax").unwrap().data,
                "{ctx}: nested codes"
            );
            let want = f32s(&f, "weight.nested_absmax");
            assert_bits(&nabs, &want, &format!("{ctx}: nested_absmax"));
        } else {
            assert_eq!(
                q.part(&state_key).unwrap().data,
                f.part(&state_key).unwrap().data,
                "{ctx}: quant state bytes"
            );
        }
        for part in &q.parts {
            let key = &part.layout.key;
            let lib = f.part(key).unwrap();
            assert_eq!(part.layout.dtype, lib.layout.dtype, "{ctx}: {key} dtype");
            if *key == state_key {
                continue;
            }
            assert_eq!(part.layout.shape, lib.layout.shape, "{ctx}: {key} shape");
            if exact_offset || !(key.ends_with(".absmax") || key.ends_with("nested_absmax")) {
                assert_eq!(part.data, lib.data, "{ctx}: {key} bytes");
            }
        }

        // Dequantization of our parts and of the library's parts, bit for bit.
        let want = f32s(&f, "ref.dequant");
        assert_eq!(
            f.get("ref.dequant").unwrap().meta().dtype,
            DType::parse(dtype).unwrap()
        );
        let lib_q = reference_parts(&f, &q.record);
        assert_bits(
            &dequantize_4bit_parts(&lib_q).unwrap(),
            &want,
            &format!("{ctx}: library parts"),
        );
        if exact_offset {
            assert_bits(
                &m.dequantize(&q).unwrap(),
                &want,
                &format!("{ctx}: our parts"),
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 44);
    // Every vector's offset is matched exactly by the torch cascade-sum order.
    assert_eq!(offsets_exact, 22);
}

#[test]
fn int8_vectors_are_byte_identical() {
    // Both builds of the kernels: AVX2 (where the CPU has it) and the baseline.
    for simd in [true, false] {
        let _simd = quant_core::simd::force_simd(simd);
        int8_vectors_are_byte_identical_once();
    }
}

fn int8_vectors_are_byte_identical_once() {
    let mut checked = 0;
    for e in entries().iter().filter(|e| e["method"] == "bnb_int8") {
        let ctx = format!("{} {}", e["case"], e["dtype"]);
        let dtype = e["dtype"].as_str().unwrap();
        let (meta, values) = input(e["case"].as_str().unwrap(), dtype);
        let m = method("bnb_8bit_config_fp16", json!({ "dtype": dtype }));
        let q = m.quantize(&meta, &values).unwrap();
        assert_eq!(q.parts.len(), 3);
        let f = open(e["file"].as_str().unwrap());
        for key in ["weight", "SCB", "weight_format"] {
            let ours = q.part(key).unwrap();
            let lib = f.part(key).unwrap();
            assert_eq!(ours.layout, lib.layout, "{ctx}: {key}");
            assert_eq!(ours.data, lib.data, "{ctx}: {key} bytes");
        }
        let want = f32s(&f, "ref.dequant_f32");
        assert_bits(&m.dequantize(&q).unwrap(), &want, &ctx);
        let lib_q = reference_parts(&f, &q.record);
        assert_bits(&dequantize_8bit_parts(&lib_q).unwrap(), &want, &ctx);
        checked += 1;
    }
    assert_eq!(checked, 11);
}

#[test]
fn nested_absmax_restores_the_library_absmax() {
    for e in entries()
        .iter()
        .filter(|e| e["params"]["double_quant"] == true)
    {
        let f = open(e["file"].as_str().unwrap());
        let state = f
            .part("weight.quant_state.bitsandbytes__nf4")
            .or_else(|_| f.part("weight.quant_state.bitsandbytes__fp4"))
            .unwrap();
        let offset = json_of(&state.data)["nested_offset"].as_f64().unwrap() as f32;
        let nab = f32s(&f, "weight.nested_absmax");
        let map: Vec<f32> = f32s(&f, "weight.nested_quant_map");
        let mut m = [0f32; 256];
        m.copy_from_slice(&map);
        let restored = quant_bnb::dequantize_nested(
            &f.part("weight.absmax").unwrap().data,
            &nab,
            &m,
            offset,
            256,
        );
        assert_bits(
            &restored,
            &f32s(&f, "ref.absmax_f32"),
            &format!("{}", e["case"]),
        );
    }
}

#[test]
fn quant_storage_reinterprets_the_same_bytes() {
    let (meta, values) = input("A_64x128", "float32");
    let a = method("bnb_4bit_config_fp16", json!({"dtype": "float32"}));
    let b = method(
        "bnb_4bit_config_fp16",
        json!({"dtype": "float32", "quant_storage": "bfloat16"}),
    );
    let qa = a.quantize(&meta, &values).unwrap();
    let qb = b.quantize(&meta, &values).unwrap();
    assert_eq!(qa.parts[0].data, qb.parts[0].data);
    assert_eq!(
        qb.parts[0].layout,
        PartLayout::new("weight", DType::BF16, vec![2048, 1])
    );
    assert_eq!(b.dequantize(&qb).unwrap(), a.dequantize(&qa).unwrap());
}
