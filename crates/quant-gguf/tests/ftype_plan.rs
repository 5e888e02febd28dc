//! `ftype::plan` against every llama-quantize dump of the llama.cpp b11312 reference data
//! (tests/data/llamacpp, copied from the shared reference outputs): for each model and
//! ftype, the tensors' names, order, GGML types and shapes must equal the dump of the file
//! `llama-quantize <model>-f32.gguf OUT <FTYPE> 1` wrote (and `--imatrix` for the imatrix
//! dumps), starting from the tensors of `<model>-f32.gguf` (the convert_hf_to_gguf.py dump).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quant_core::{DType, TensorMeta};
use quant_gguf::ftype::{plan, Ftype, FtypeOptions, ModelInfo};
use serde_json::Value;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llamacpp/gguf")
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The dump's KVs as text, as `ContainerReader::metadata` gives them (scalars only: the
/// type choice reads no arrays).
fn metadata(dump: &Value) -> BTreeMap<String, String> {
    dump["kv"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|kv| {
            let v = kv.get("value")?;
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Array(_) => return None,
                other => other.to_string(),
            };
            Some((kv["name"].as_str()?.to_string(), text))
        })
        .collect()
}

/// (name, type, shape in ne order) of every tensor of a dump, in file order.
fn tensors(dump: &Value) -> Vec<(String, String, Vec<u64>)> {
    dump["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["type"].as_str().unwrap().to_string(),
                t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

fn input_metas(f32_dump: &Value) -> Vec<TensorMeta> {
    tensors(f32_dump)
        .into_iter()
        .map(|(name, ty, ne)| {
            assert_eq!(ty, "F32", "{name}");
            let shape: Vec<usize> = ne.iter().rev().map(|&d| d as usize).collect();
            TensorMeta::new(name, DType::F32, shape)
        })
        .collect()
}

/// Plans `ftype` for `model` and compares with the dump; returns the number of tensors.
fn check(model: &str, dump_path: &Path, ftype: Ftype, has_imatrix: bool) -> usize {
    let f32_dump = load(&data_dir().join(format!("{model}/{model}-f32.gguf.json")));
    let meta = metadata(&f32_dump);
    let info = ModelInfo::from_metadata(&meta, model).unwrap();
    let inputs = input_metas(&f32_dump);
    let opts = FtypeOptions {
        has_imatrix,
        ..FtypeOptions::default()
    };
    let planned = plan(ftype, &info, &inputs, &opts).unwrap();
    let got: Vec<(String, String, Vec<u64>)> = planned
        .iter()
        .map(|p| {
            let t = &inputs[p.index];
            (
                t.name.clone(),
                p.ty.unwrap().name().to_string(),
                t.shape.iter().rev().map(|&d| d as u64).collect(),
            )
        })
        .collect();
    let want = tensors(&load(dump_path));
    assert_eq!(got.len(), want.len(), "{}", dump_path.display());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "{} tensor #{i}", dump_path.display());
    }
    want.len()
}

fn ftype_of(file: &str) -> Option<Ftype> {
    let stem = file.strip_suffix(".gguf.json")?;
    let name = stem.rsplit('-').next()?;
    Ftype::from_name(name)
}

#[test]
fn every_ftype_dump_matches() {
    let mut checked = Vec::new();
    for model in ["llama_a", "llama_d", "minilm"] {
        let dir = data_dir().join(model);
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        for file in files {
            let Some(ftype) = ftype_of(&file) else {
                continue;
            };
            let n = check(model, &dir.join(&file), ftype, false);
            checked.push(format!("{model} {}: {n} tensors", ftype.name()));
        }
    }
    // 16 ftypes for each llama, 5 for MiniLM.
    assert_eq!(checked.len(), 16 + 16 + 5, "{checked:#?}");
}

#[test]
fn every_imatrix_dump_matches() {
    let dir = data_dir().join("llama_a/imatrix");
    let mut n = 0;
    for ftype in [Ftype::Q4_K_M, Ftype::Q3_K_M, Ftype::Q2_K, Ftype::IQ4_XS] {
        let path = dir.join(format!("llama_a-imat-{}.gguf.json", ftype.name()));
        check("llama_a", &path, ftype, true);
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn model_info_of_the_references() {
    let a = ModelInfo::from_metadata(
        &metadata(&load(&data_dir().join("llama_a/llama_a-f32.gguf.json"))),
        "llama_a",
    )
    .unwrap();
    assert_eq!(
        (
            a.arch.as_str(),
            a.n_layer,
            a.n_head,
            a.n_head_kv,
            a.n_expert
        ),
        ("llama", 2, 4, 2, 0)
    );
    let m = ModelInfo::from_metadata(
        &metadata(&load(&data_dir().join("minilm/minilm-f32.gguf.json"))),
        "minilm",
    )
    .unwrap();
    assert_eq!(
        (m.arch.as_str(), m.n_layer, m.n_head, m.n_head_kv),
        ("bert", 6, 12, 12)
    );
}
