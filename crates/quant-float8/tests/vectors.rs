//! Every torchao 0.15 reference entry, byte for byte: codes, shards, scales, zero points,
//! and the dequantized weight in the weight dtype and in f32. Where the reference tensor
//! is stored under tests/data it is compared directly (NaN-aware for dequantized values);
//! otherwise through its SHA-256 in the manifest (all outputs of the 128x256 case and the
//! `dequant_f32` of most cases, not copied to keep the data small). Skipped entries must
//! be kept unquantized, and entries where torchao raises must fall back to basic_int8.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::{load, manifest, sha256_hex, Stored};
use quant_core::dtype::encode_f32;
use quant_core::{DType, Params, QuantizedTensor, Registry, Selection, TensorMeta};
use quant_float8::{uintx, Scheme, TorchAo};

/// Our output rewritten in the reference file's dtypes and names.
fn reference_form(
    method: &TorchAo,
    q: &QuantizedTensor,
    wd: DType,
    dequant: &[f32],
    dequant_f32: &[f32],
    k: usize,
) -> BTreeMap<&'static str, Vec<u8>> {
    let part = |suffix: &str| {
        q.parts
            .iter()
            .find(|p| p.layout.key == format!("proj._weight_{suffix}"))
            .unwrap_or_else(|| panic!("no part {suffix}"))
            .data
            .clone()
    };
    let mut out = BTreeMap::new();
    out.insert("dequant", encode_f32(wd, dequant).unwrap());
    out.insert("dequant_f32", encode_f32(DType::F32, dequant_f32).unwrap());
    let qdata = part("qdata");
    let scale = part("scale");
    let zero = || part("zero_point");
    match method.scheme() {
        Scheme::Float8Wo(_) | Scheme::Float8Dq(_) => {
            out.insert("qdata", qdata);
            out.insert("scale", scale);
        }
        Scheme::Int8Wo | Scheme::Int8Dq => {
            out.insert("qdata", qdata);
            // Int8Tensor keeps the scale as f32 [N, 1]; torchao 0.15 stored the same values
            // in the weight dtype, [N].
            let s: Vec<f32> = scale
                .chunks(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            out.insert("scale", encode_f32(wd, &s).unwrap());
            let z = zero();
            assert!(z.iter().all(|&b| b == 0));
            if method.scheme() == Scheme::Int8Wo {
                out.insert("zero_point", vec![0u8; z.len() * 8]); // int64 zeros
            }
        }
        Scheme::Int4Dq => {
            out.insert("qdata", qdata);
            out.insert("scale", scale);
            let z = zero();
            assert!(z.iter().all(|&b| b == 0));
            out.insert("zero_point", encode_f32(wd, &vec![0.0; z.len()]).unwrap());
        }
        Scheme::UintWo(bits) => {
            let shift = 1i32 << (bits - 1);
            let codes: Vec<u8> = qdata
                .iter()
                .map(|&c| (i32::from(c as i8) + shift) as u8)
                .collect();
            for (name, shard) in uintx::pack_shards(bits, &codes, k).unwrap() {
                out.insert(name, shard);
            }
            out.insert("qdata_unpacked", codes);
            out.insert("scale", scale);
            let zp: Vec<u8> = zero()
                .iter()
                .flat_map(|&z| (i32::from(z as i8) + shift).to_le_bytes())
                .collect();
            out.insert("zero_point", zp);
        }
        Scheme::Int4Wo => {
            let unpacked: Vec<u8> = quant_float8::kernels::unpack_int4(&qdata)
                .iter()
                .map(|&c| c as u8)
                .collect();
            out.insert("qdata_unpacked", unpacked);
            out.insert("qdata", qdata);
            out.insert("scale", scale);
            out.insert("zero_point", zero());
        }
    }
    out
}

/// Byte equality, except that a NaN of the reference matches any NaN of ours (quant's
/// bf16 encoder writes the canonical 0x7FC0; torch on x86 keeps the NaN's payload).
fn same_values(name: &str, dtype: DType, ours: &[u8], theirs: &Stored) -> bool {
    if ours == theirs.data.as_slice() {
        return true;
    }
    if !name.starts_with("dequant") || ours.len() != theirs.data.len() {
        return false;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    quant_core::dtype::decode_to_f32(dtype, ours, &mut a).unwrap();
    quant_core::dtype::decode_to_f32(theirs.dtype, &theirs.data, &mut b).unwrap();
    a.iter()
        .zip(&b)
        .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

#[test]
fn every_reference_entry_is_reproduced() {
    // Both builds of the row kernels: AVX2 (where the CPU has it) and the baseline.
    for simd in [true, false] {
        let _simd = quant_core::simd::force_simd(simd);
        reproduce_all(simd);
    }
}

fn reproduce_all(simd: bool) {
    let m = manifest();
    let registry = Registry::global().unwrap();
    let mut checked = 0usize;
    let mut table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in m["entries"].as_array().unwrap() {
        let method_short = e["method"].as_str().unwrap();
        if method_short == "__input__" {
            continue;
        }
        let case = e["case"].as_str().unwrap();
        let status = e["status"].as_str().unwrap();
        let name = format!("torch_ao_config_{method_short}");
        let input = load(&format!("inputs/{case}.safetensors"));
        let w = &input["w"];
        assert_eq!(
            sha256_hex(&w.data),
            e_input_hash(&m, case),
            "{case}: input differs from the manifest"
        );
        let meta = TensorMeta::new("proj.weight", w.dtype, w.shape.clone());
        let mut values = Vec::new();
        quant_core::dtype::decode_to_f32(w.dtype, &w.data, &mut values).unwrap();

        let boxed = registry.create(&name, &Params::new()).unwrap();
        let method = TorchAo::new(&name, &Params::new()).unwrap();
        let sel = boxed.select(&meta);
        match status {
            "skipped" => {
                assert_eq!(sel, Selection::Keep(None), "{case} {name}");
                continue;
            }
            "torchao_error" => {
                assert!(
                    matches!(&sel, Selection::Fallback { method, .. } if method == "basic_int8"),
                    "{case} {name}: {sel:?}"
                );
                continue;
            }
            "ok" => assert_eq!(sel, Selection::Quantize, "{case} {name}"),
            other => panic!("unknown status {other}"),
        }

        let q = boxed.quantize(&meta, &values).unwrap();
        assert_eq!(q.record.params, boxed.params());
        let layout = boxed.output_layout(&meta).unwrap();
        assert_eq!(
            q.parts.iter().map(|p| p.layout.clone()).collect::<Vec<_>>(),
            layout
        );
        let dequant = boxed.dequantize(&q).unwrap();
        let mut q32 = q.clone();
        q32.record.dequant_dtype = DType::F32;
        let dequant_f32 = boxed.dequantize(&q32).unwrap();
        let ours = reference_form(&method, &q, w.dtype, &dequant, &dequant_f32, w.shape[1]);

        let files = e["files"].as_array().unwrap();
        let stored = load(files[0].as_str().unwrap());
        let hashes = e["tensor_sha256"].as_object().unwrap();
        let mut matched = Vec::new();
        for (tensor, hash) in hashes {
            if tensor == "y" || tensor.starts_with("act_") {
                continue; // activations and matmul outputs: not weight data
            }
            let Some(bytes) = ours.get(tensor.as_str()) else {
                panic!("{case} {name}: we produce no '{tensor}'");
            };
            let dtype = if tensor == "dequant_f32" {
                DType::F32
            } else {
                w.dtype
            };
            let ok = match stored.get(tensor) {
                Some(theirs) => same_values(tensor, dtype, bytes, theirs),
                None => sha256_hex(bytes) == hash.as_str().unwrap(),
            };
            assert!(ok, "{case} {name}: '{tensor}' differs from torchao");
            matched.push(tensor.clone());
            checked += 1;
        }
        assert!(matched.iter().any(|t| t == "dequant"), "{case} {name}");
        table
            .entry(case.to_string())
            .or_default()
            .push(method_short.to_string());
    }
    for (case, methods) in &table {
        println!(
            "simd={simd} {case}: {} methods byte-exact: {}",
            methods.len(),
            methods.join(" ")
        );
    }
    let ok_entries = m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "ok")
        .count();
    assert_eq!(table.values().map(Vec::len).sum::<usize>(), ok_entries);
    assert!(
        ok_entries >= 76 && checked >= 5 * ok_entries,
        "{checked} tensors"
    );
}

fn e_input_hash(m: &serde_json::Value, case: &str) -> String {
    m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["case"] == case && e["method"] == "__input__")
        .and_then(|e| e["tensor_sha256"]["w"].as_str())
        .unwrap()
        .to_string()
}
