//! End to end: `quant` with every `gguf_<ftype>` method on llama_a (llama.cpp b11312
//! reference data, tests/data/llamacpp/gguf) against the dumps of `llama-quantize
//! llama_a-f32.gguf OUT <FTYPE> 1` (and `--imatrix`): every tensor (name, type, shape,
//! sha256 of its data), every key/value (name, type, value, or length, first items and
//! sha256 of long arrays) and the whole file's sha256.
//!
//! The input is `llama_a-bf16.gguf` (3.7 MB; the f32 original is 7.4 MB): llama_a's
//! weights are bf16, so its BF16 file holds the f32 file's exact values.
//! [`input_is_the_reference_model`] checks that every tensor widened to f32 has the f32
//! dump's sha256 and that its key/values are the f32 file's. (It is quant's `gguf_bf16`
//! output of llama_a-f32.gguf, which is byte for byte llama-quantize's BF16 output.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};

use quant_core::ModelQuantizer;
use quant_gguf::gguf::{GgufFile, GgufValue};
use quant_gguf::{Ftype, GgmlType};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod common;
use common::array_raw;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llamacpp")
}

fn input() -> PathBuf {
    data_dir().join("gguf/llama_a/llama_a-bf16.gguf")
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A scalar as the dump's JSON value (an f32 also as its little-endian hex).
fn scalar_json(v: &GgufValue) -> Value {
    match v {
        GgufValue::U8(x) => (*x).into(),
        GgufValue::I8(x) => (*x).into(),
        GgufValue::U16(x) => (*x).into(),
        GgufValue::I16(x) => (*x).into(),
        GgufValue::U32(x) => (*x).into(),
        GgufValue::I32(x) => (*x).into(),
        GgufValue::U64(x) => (*x).into(),
        GgufValue::I64(x) => (*x).into(),
        GgufValue::F32(x) => hex(&x.to_le_bytes()).into(),
        GgufValue::F64(x) => (*x).into(),
        GgufValue::Bool(x) => (*x).into(),
        GgufValue::String(s) => s.clone().into(),
        GgufValue::Array(..) => Value::Null,
    }
}

/// An array item as the dump's JSON (an f32 as its exact f64 value).
fn item_json(v: &GgufValue) -> Value {
    match v {
        GgufValue::F32(x) => f64::from(*x).into(),
        other => scalar_json(other),
    }
}

/// The key/values of `file` that differ from the dump (names and order included).
fn kv_mismatches(file: &GgufFile, dump: &Value) -> Vec<String> {
    let want: Vec<&Value> = dump["kv"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|kv| !kv["name"].as_str().unwrap().starts_with("GGUF."))
        .collect();
    let mut bad = Vec::new();
    let got_names: Vec<&str> = file.metadata.iter().map(|(k, _)| k.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|kv| kv["name"].as_str().unwrap()).collect();
    if got_names != want_names {
        bad.push(format!("keys {got_names:?} != {want_names:?}"));
        return bad;
    }
    for ((name, v), w) in file.metadata.iter().zip(want) {
        if v.type_name() != w["type"] {
            bad.push(format!("{name}: type {} != {}", v.type_name(), w["type"]));
            continue;
        }
        match v {
            GgufValue::Array(_, items) => {
                let ok = match w.get("value") {
                    Some(all) => {
                        Value::from(items.iter().map(item_json).collect::<Vec<_>>()) == *all
                    }
                    None => {
                        let first: Vec<Value> = items.iter().take(5).map(item_json).collect();
                        w["length"] == items.len()
                            && w["first5"] == Value::from(first)
                            && w["sha256_raw"] == sha256(&array_raw(items))
                    }
                };
                if !ok {
                    bad.push(format!("{name}: array differs"));
                }
            }
            GgufValue::F32(_) => {
                if w["value_hex"] != scalar_json(v) {
                    bad.push(format!("{name}: {v:?} != {}", w["value_hex"]));
                }
            }
            _ => {
                if w["value"] != scalar_json(v) {
                    bad.push(format!("{name}: {v:?} != {}", w["value"]));
                }
            }
        }
    }
    bad
}

/// (tensors identical, total, key/value mismatches, whole file identical) of `out`.
fn compare(out: &Path, dump: &Value) -> (usize, usize, Vec<String>, bool) {
    let file = GgufFile::open(out).unwrap();
    let want = dump["tensors"].as_array().unwrap();
    let mut same = 0;
    for (t, w) in file.tensors.iter().zip(want) {
        let dims: Vec<u64> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        let data = file.read_data(t).unwrap();
        if t.name == w["name"].as_str().unwrap()
            && t.ty.name() == w["type"].as_str().unwrap()
            && t.dims == dims
            && sha256(&data) == w["sha256"].as_str().unwrap()
        {
            same += 1;
        }
    }
    if file.tensors.len() != want.len() {
        same = 0;
    }
    let bytes = std::fs::read(out).unwrap();
    let identical = sha256(&bytes) == dump["sha256"].as_str().unwrap();
    (same, want.len(), kv_mismatches(&file, dump), identical)
}

/// Quantizes the input with `method` (and `imatrix`) into `work` and compares with
/// `dump`; prints the report line, and records `label` in `failed` on any difference.
fn check_ftype(
    label: &str,
    method: &str,
    imatrix: Option<&str>,
    dump: &Value,
    work: &Path,
    failed: &mut Vec<String>,
) {
    let mut q = ModelQuantizer::new(method);
    if let Some(im) = imatrix {
        q = q.param("imatrix", im.into());
    }
    let out = work.join(format!("{label}.gguf"));
    q.quantize_path(input(), &out).unwrap();
    let (same, total, kv_bad, identical) = compare(&out, dump);
    println!(
        "{label:15} tensors {same}/{total} identical, {} KV mismatches, file {}",
        kv_bad.len(),
        if identical { "identical" } else { "DIFFERENT" }
    );
    if same != total || !kv_bad.is_empty() || !identical {
        failed.push(format!("{label}: {kv_bad:?}"));
    }
}

#[test]
fn input_is_the_reference_model() {
    let f32_dump = load(&data_dir().join("gguf/llama_a/llama_a-f32.gguf.json"));
    let file = GgufFile::open(input()).unwrap();
    let want = f32_dump["tensors"].as_array().unwrap();
    assert_eq!(file.tensors.len(), want.len());
    // The same tensors (in llama-quantize's order, the f32 file has convert's).
    for t in &file.tensors {
        let w = want
            .iter()
            .find(|w| w["name"] == t.name.as_str())
            .unwrap_or_else(|| panic!("{} is not in the f32 file", t.name));
        let data = file.read_data(t).unwrap();
        let widened: Vec<u8> = match t.ty.ggml() {
            Some(GgmlType::F32) => data,
            Some(GgmlType::BF16) => data
                .chunks_exact(2)
                .flat_map(|b| [0, 0, b[0], b[1]])
                .collect(),
            other => panic!("{}: {other:?}", t.name),
        };
        assert_eq!(t.name, w["name"].as_str().unwrap());
        assert_eq!(
            sha256(&widened),
            w["sha256"].as_str().unwrap(),
            "{}",
            t.name
        );
    }
    // The f32 file's key/values as llama-quantize BF16 lists them: quantization_version
    // and file_type (BF16 = 32) moved last.
    let mut f32_kv = f32_dump.clone();
    let kv = f32_kv["kv"].as_array_mut().unwrap();
    for key in ["general.quantization_version", "general.file_type"] {
        let at = kv.iter().position(|k| k["name"] == key).unwrap();
        let item = kv.remove(at);
        kv.push(item);
    }
    if let Some(ft) = kv.last_mut() {
        ft["value"] = 32.into();
    }
    assert_eq!(kv_mismatches(&file, &f32_kv), Vec::<String>::new());
}

#[test]
fn every_ftype_is_llama_quantize_byte_for_byte() {
    let work = tempfile::tempdir().unwrap();
    let dir = data_dir().join("gguf/llama_a");
    let mut checked = 0;
    let mut failed = Vec::new();
    for ftype in quant_gguf::FTYPES {
        let dump_path = dir.join(format!("llama_a-{}.gguf.json", ftype.name()));
        if !dump_path.exists() {
            // F16 and BF16: no dump (see options.json).
            continue;
        }
        let dump = load(&dump_path);
        check_ftype(
            ftype.name(),
            ftype.method(),
            None,
            &dump,
            work.path(),
            &mut failed,
        );
        checked += 1;
    }
    assert_eq!(checked, 16);
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn imatrix_ftypes_are_llama_quantize_byte_for_byte() {
    // llama-quantize ran in the reference folder with this relative path, which it
    // records as quantize.imatrix.file; the other tests use absolute paths only.
    std::env::set_current_dir(data_dir()).unwrap();
    let imatrix = "gguf/llama_a/imatrix/imatrix_llama_a.gguf";
    let work = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    for ftype in [Ftype::Q4_K_M, Ftype::Q3_K_M, Ftype::Q2_K, Ftype::IQ4_XS] {
        let dump = load(&data_dir().join(format!(
            "gguf/llama_a/imatrix/llama_a-imat-{}.gguf.json",
            ftype.name()
        )));
        let label = format!("imatrix-{}", ftype.name());
        check_ftype(
            &label,
            ftype.method(),
            Some(imatrix),
            &dump,
            work.path(),
            &mut failed,
        );
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The low-bit file types (issue #25) with llama_a's importance matrix, against
/// llama-quantize's files; each output also dequantizes through quant's loader (the path
/// `quant dequantize` takes) to llama-quantize's tensor count of finite values.
#[test]
fn low_bit_imatrix_ftypes_are_llama_quantize_byte_for_byte() {
    std::env::set_current_dir(data_dir()).unwrap();
    let imatrix = "gguf/llama_a/imatrix/imatrix_llama_a.gguf";
    let work = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    let low_bit = [
        Ftype::IQ2_XXS,
        Ftype::IQ2_XS,
        Ftype::IQ2_S,
        Ftype::IQ2_M,
        Ftype::IQ3_XXS,
        Ftype::IQ3_XS,
        Ftype::IQ3_S,
        Ftype::IQ3_M,
        Ftype::IQ1_S,
        Ftype::IQ1_M,
        Ftype::Q2_K_S,
        Ftype::TQ1_0,
        Ftype::TQ2_0,
        Ftype::MXFP4_MOE,
    ];
    for ftype in low_bit {
        let dump = load(&data_dir().join(format!(
            "gguf/llama_a/imatrix/llama_a-imat-{}.gguf.json",
            ftype.name()
        )));
        let label = format!("imatrix-{}", ftype.name());
        check_ftype(
            &label,
            ftype.method(),
            Some(imatrix),
            &dump,
            work.path(),
            &mut failed,
        );
        let out = work.path().join(format!("{label}.gguf"));
        let files = quant_core::ModelFiles::open(&out).unwrap();
        let mut n = 0;
        for (_, r) in files.records() {
            let v = files.load_f32(&r.name).unwrap();
            assert_eq!(
                v.len(),
                r.shape.iter().product::<usize>(),
                "{label} {}",
                r.name
            );
            assert!(v.iter().all(|x| x.is_finite()), "{label} {}", r.name);
            n += 1;
        }
        assert_eq!(n, dump["tensors"].as_array().unwrap().len(), "{label}");
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// llama-quantize refuses IQ1_S, IQ1_M, IQ2_S, IQ2_XXS, IQ2_XS and Q2_K_S without an
/// importance matrix with its advice; llama.cpp refuses IQ3_XXS's IQ2_S/IQ3_XXS tensors
/// without one too. The others quantize without one.
#[test]
fn low_bit_ftypes_without_an_imatrix_are_refused_as_llama_quantize_does() {
    let work = tempfile::tempdir().unwrap();
    for ftype in [
        Ftype::IQ1_S,
        Ftype::IQ1_M,
        Ftype::IQ2_S,
        Ftype::IQ2_XXS,
        Ftype::IQ2_XS,
        Ftype::Q2_K_S,
    ] {
        assert!(ftype.requires_imatrix());
        let err = ModelQuantizer::new(ftype.method())
            .quantize_path(input(), work.path().join("x.gguf"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Please do not use IQ1_S, IQ1_M, IQ2_S, IQ2_XXS, IQ2_XS or Q2_K_S quantization without an importance matrix")
                && err.contains("--imatrix"),
            "{}: {err}",
            ftype.name()
        );
    }
    let err = ModelQuantizer::new(Ftype::IQ3_XXS.method())
        .quantize_path(input(), work.path().join("x.gguf"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("requires an imatrix") && err.contains("--imatrix"),
        "{err}"
    );
    for ftype in [Ftype::TQ1_0, Ftype::MXFP4_MOE, Ftype::IQ3_M] {
        assert!(!ftype.requires_imatrix());
        let out = work.path().join(format!("{}.gguf", ftype.name()));
        ModelQuantizer::new(ftype.method())
            .quantize_path(input(), &out)
            .unwrap();
        let file = GgufFile::open(&out).unwrap();
        let want = GgufValue::U32(ftype.id());
        assert_eq!(file.get("general.file_type"), Some(&want));
    }
}

#[test]
fn llama_quantize_options_as_params_are_byte_for_byte() {
    // The imatrix path is relative to the reference folder, as given to llama-quantize.
    std::env::set_current_dir(data_dir()).unwrap();
    let doc = load(&data_dir().join("options.json"));
    let work = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    let cases = doc["cases"].as_array().unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut q = ModelQuantizer::new(case["method"].as_str().unwrap());
        for (k, v) in case["params"].as_object().unwrap() {
            q = q.param(k.clone(), v.clone());
        }
        let out = work.path().join(format!("{name}.gguf"));
        q.quantize_path(input(), &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let same = sha256(&bytes) == case["sha256"].as_str().unwrap();
        let command: Vec<&str> = case["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        println!(
            "{name:6} {} -> {}",
            command.join(" "),
            if same { "identical" } else { "DIFFERENT" }
        );
        if !same {
            failed.push(name);
        }
    }
    assert_eq!(cases.len(), 12);
    assert!(failed.is_empty(), "{failed:?}");
}

/// A pure `gguf_config_*` method requantizing a llama.cpp GGUF keeps the input's typed
/// key/values in order (as `llama-quantize --pure`), so llama.cpp still loads the file; its
/// own provenance keys follow.
#[test]
fn pure_methods_keep_the_input_key_values() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pure.gguf");
    ModelQuantizer::new("gguf_config_q8_0")
        .quantize_path(input(), &out)
        .unwrap();
    let src = GgufFile::open(input()).unwrap();
    let got = GgufFile::open(&out).unwrap();
    let kept: Vec<&(String, GgufValue)> = src
        .metadata
        .iter()
        .filter(|(k, _)| k != "general.file_type")
        .collect();
    let head: Vec<&(String, GgufValue)> = got
        .metadata
        .iter()
        .filter(|(k, _)| src.get(k).is_some() && k != "general.file_type")
        .collect();
    assert_eq!(head, kept);
    // Q8_0 for the matrices: llama_ftype MOSTLY_Q8_0 = 7.
    assert_eq!(got.get("general.file_type"), Some(&GgufValue::U32(7)));
    assert!(got.metadata.iter().all(|(k, _)| !k.starts_with("source.")));
    assert!(got.get("quantize.tool").is_some());
}
