//! Hugging Face folder → llama.cpp GGUF for Llama 3, Qwen 2, Qwen3-MoE, Phi-3 and Gemma 2
//! against
//! convert_hf_to_gguf.py + llama-quantize (llama.cpp b11312): the dumps of
//! `tests/data/llamacpp/arch/` (README there; made from `models/<m>`).
//!
//! The committed folders hold the real configs and tokenizers (the 128k/152k-entry
//! `tokenizer.json` files gzip-compressed in `tokenizers/`) and the safetensors *header*
//! of each checkpoint, not its weights (8-20 MB each): the test writes the checkpoint
//! with zero weights of the same names, dtypes and shapes, and compares every key/value
//! and every tensor's name, order, type and shape. With `QUANT_ARCH_MODELS_DIR` set to the
//! folder holding the real `<m>/` model folders (the reference's, e.g.
//! `shared/testdata/llamacpp/arch/models`), the tensor bytes and whole quantized files are
//! compared too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Read;
use std::path::{Path, PathBuf};

use quant_core::format::ContainerReader;
use quant_core::DType;
use quant_gguf::arch::{architecture_for, HfGgufReader};
use quant_gguf::gguf::GgufValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

mod common;
use common::array_raw;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llamacpp/arch")
}

fn hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn dump(model: &str, suffix: &str) -> Value {
    let p = data().join(format!("gguf/{model}/{model}-{suffix}.gguf.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A model folder: the real one (`QUANT_ARCH_MODELS_DIR`) or one built from the committed
/// files with zero weights. The bool says whether the weights are real.
struct Model {
    _tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    real: bool,
}

fn tokenizer_of(model: &str) -> &'static str {
    match model {
        "llama3_s" => "llama3_1",
        _ => "qwen3",
    }
}

fn model(name: &str) -> Model {
    if let Some(root) = std::env::var_os("QUANT_ARCH_MODELS_DIR") {
        return Model {
            _tmp: None,
            dir: Path::new(&root).join(name),
            real: true,
        };
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    let src = data().join("models").join(name);
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().to_string_lossy().into_owned();
        if n == "model.safetensors.header.json" {
            let header = std::fs::read(e.path()).unwrap();
            let meta: Value = serde_json::from_slice(&header).unwrap();
            let end = meta
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "__metadata__")
                .map(|(_, t)| t["data_offsets"][1].as_u64().unwrap())
                .max()
                .unwrap();
            let mut file = (header.len() as u64).to_le_bytes().to_vec();
            file.extend_from_slice(&header);
            file.resize(file.len() + end as usize, 0);
            std::fs::write(dir.join("model.safetensors"), file).unwrap();
        } else {
            std::fs::copy(e.path(), dir.join(&n)).unwrap();
        }
    }
    if !dir.join("tokenizer.json").is_file() {
        let gz = data().join(format!(
            "tokenizers/{}.tokenizer.json.gz",
            tokenizer_of(name)
        ));
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(gz).unwrap())
            .read_to_end(&mut text)
            .unwrap();
        std::fs::write(dir.join("tokenizer.json"), text).unwrap();
    }
    Model {
        _tmp: Some(tmp),
        dir,
        real: false,
    }
}

fn open(dir: &Path) -> HfGgufReader {
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let arch = architecture_for(&config).expect("a converted architecture");
    HfGgufReader::open(dir, &config, arch).unwrap()
}

fn json_item(v: &GgufValue) -> Value {
    match v {
        GgufValue::String(s) => Value::from(s.as_str()),
        GgufValue::F32(x) => Value::from(f64::from(*x)),
        GgufValue::I32(x) => Value::from(*x),
        GgufValue::U32(x) => Value::from(*x),
        GgufValue::Bool(x) => Value::from(*x),
        other => panic!("unexpected value {other:?}"),
    }
}

/// Every key/value of the dump (less gguf-py's `GGUF.*` header fields and `skip`ped keys)
/// equals `got`'s, in order.
fn check_kvs(got: &[(String, GgufValue)], dump: &Value, skip: &[&str]) {
    let want: Vec<&Value> = dump["kv"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| {
            let n = k["name"].as_str().unwrap();
            !n.starts_with("GGUF.") && !skip.contains(&n)
        })
        .collect();
    let got: Vec<&(String, GgufValue)> = got
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .collect();
    let names: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, want_names, "key order");
    for (w, (k, v)) in want.iter().zip(got) {
        assert_eq!(w["type"].as_str().unwrap(), v.type_name(), "{k}: type");
        match v {
            GgufValue::F32(x) => {
                let hex: String = x.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(w["value_hex"].as_str().unwrap(), hex, "{k}");
            }
            GgufValue::Array(_, items) => {
                assert_eq!(
                    w["length"].as_u64().unwrap() as usize,
                    items.len(),
                    "{k}: length"
                );
                if let Some(first5) = w.get("first5") {
                    let ours: Vec<Value> = items.iter().take(5).map(json_item).collect();
                    assert_eq!(first5.as_array().unwrap(), &ours, "{k}: first items");
                    assert_eq!(
                        w["sha256_raw"].as_str().unwrap(),
                        hex(&array_raw(items)),
                        "{k}: payload"
                    );
                } else {
                    let ours: Vec<Value> = items.iter().map(json_item).collect();
                    assert_eq!(w["value"].as_array().unwrap(), &ours, "{k}");
                }
            }
            other => assert_eq!(w["value"], json_item(other), "{k}"),
        }
    }
}

/// The type convert_hf_to_gguf.py gives a tensor under `--outtype`.
fn outtype(name: &str, dims: usize, wide: DType) -> DType {
    if dims <= 1
        || name.ends_with("_norm.weight")
        || name.ends_with("ffn_gate_inp.weight")
        || !name.ends_with(".weight")
    {
        DType::F32
    } else {
        wide
    }
}

/// Every tensor of the dump equals the reader's (order, type, shape; bytes when the
/// weights are real; generated tensors always).
fn check_tensors(reader: &HfGgufReader, dump: &Value, wide: DType, real: bool) {
    let want = dump["tensors"].as_array().unwrap();
    let got = reader.records();
    let names: Vec<&str> = got.iter().map(|r| r.name.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, want_names, "tensor order");
    for (w, r) in want.iter().zip(got) {
        let ty = outtype(&r.name, r.shape.len(), wide);
        assert_eq!(
            w["type"].as_str().unwrap(),
            ty.to_string().to_uppercase(),
            "{}",
            r.name
        );
        let ne: Vec<u64> = r.shape.iter().rev().map(|&d| d as u64).collect();
        let want_ne: Vec<u64> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(ne, want_ne, "{}: shape", r.name);
        if real || r.name == "rope_freqs.weight" {
            let values = reader.values(&r.name).unwrap();
            let bytes = quant_core::dtype::encode_f32(ty, &values).unwrap();
            assert_eq!(
                w["sha256"].as_str().unwrap(),
                hex(&bytes),
                "{}: data",
                r.name
            );
        }
    }
}

const OUTTYPES: [(&str, u32, DType); 3] = [
    ("f32", 0, DType::F32),
    ("f16", 1, DType::F16),
    ("bf16", 32, DType::BF16),
];

fn check_conversion(name: &str) {
    let m = model(name);
    let reader = open(&m.dir);
    for (suffix, file_type, wide) in OUTTYPES {
        let d = dump(name, suffix);
        check_kvs(reader.kvs().unwrap().entries(), &d, &["general.file_type"]);
        let ft = d["kv"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == "general.file_type")
            .unwrap();
        assert_eq!(ft["value"].as_u64().unwrap(), u64::from(file_type));
        check_tensors(&reader, &d, wide, m.real);
    }
}

#[test]
fn llama3_matches_convert_hf_to_gguf() {
    check_conversion("llama3_s");
}

#[test]
fn qwen2_matches_convert_hf_to_gguf() {
    check_conversion("qwen2_s");
}

#[test]
fn qwen3moe_matches_convert_hf_to_gguf() {
    check_conversion("qwen3moe_s");
}

#[test]
fn phi3_matches_convert_hf_to_gguf() {
    check_conversion("phi3_s");
}

#[test]
fn gemma2_matches_convert_hf_to_gguf() {
    check_conversion("gemma2_s");
}

/// `quant quantize <m>/ -o x.gguf --method gguf_<ftype>`: llama-quantize's key/values (in
/// its order), tensor order, types, shapes and offsets; with real weights the whole file's
/// sha256.
fn folder_to_llama_quantize(name: &str, ci_ftypes: &[&str]) {
    let m = model(name);
    // Every dumped file type with the real weights; a few (debug builds are slow on the
    // 128k-152k-row embeddings) without. `imat-<FTYPE>`: with the reference's imatrix.
    // Types dumped for one model only (MXFP4_MOE: the mixture of experts) come with it.
    let ftypes: Vec<&str> = if m.real {
        let only: Vec<&str> = ci_ftypes
            .iter()
            .copied()
            .filter(|f| !FTYPES.contains(f))
            .collect();
        FTYPES.iter().copied().chain(only).collect()
    } else {
        ci_ftypes.to_vec()
    };
    let out = tempfile::tempdir().unwrap();
    for &ftype in &ftypes {
        let d = dump(name, ftype);
        let path = out.path().join(format!("{ftype}.gguf"));
        let (imatrix, plain) = match ftype.strip_prefix("imat-") {
            Some(f) => (true, f),
            None => (false, ftype),
        };
        let method = format!("gguf_{}", plain.to_ascii_lowercase());
        let mut q = quant_core::engine::ModelQuantizer::new(method.as_str());
        if imatrix {
            // llama-quantize ran in the reference folder with this relative path, which
            // it records as quantize.imatrix.file.
            std::env::set_current_dir(data()).unwrap();
            let rel = format!("gguf/{name}/imatrix_{name}.gguf");
            q = q.param("imatrix", rel.into());
        }
        let report = q.quantize_path(&m.dir, &path).unwrap();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let file = quant_gguf::gguf::GgufFile::open(&path).unwrap();
        check_kvs(&file.metadata, &d, &[]);
        let want = d["tensors"].as_array().unwrap();
        let names: Vec<&str> = file.tensors.iter().map(|t| t.name.as_str()).collect();
        let want_names: Vec<&str> = want.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, want_names, "{ftype}: tensor order");
        for (t, w) in file.tensors.iter().zip(want) {
            assert_eq!(
                t.ty.name(),
                w["type"].as_str().unwrap(),
                "{ftype}: {}",
                t.name
            );
            assert_eq!(
                t.offset,
                w["rel_offset"].as_u64().unwrap(),
                "{ftype}: {}",
                t.name
            );
        }
        if m.real {
            for (t, w) in file.tensors.iter().zip(want) {
                assert_eq!(
                    hex(&file.read_data(t).unwrap()),
                    w["sha256"].as_str().unwrap(),
                    "{ftype}: {} data",
                    t.name
                );
            }
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(hex(&bytes), d["sha256"].as_str().unwrap(), "{ftype}: file");
        }
    }
}

const FTYPES: [&str; 7] = [
    "Q4_K_M",
    "Q8_0",
    "Q6_K",
    "Q3_K_M",
    "IQ4_XS",
    "Q4_0",
    "imat-Q4_K_M",
];

#[test]
fn llama3_folder_to_llama_quantize_files() {
    folder_to_llama_quantize("llama3_s", &["Q4_K_M", "imat-Q4_K_M"]);
}

#[test]
fn qwen2_folder_to_llama_quantize_files() {
    folder_to_llama_quantize("qwen2_s", &["IQ4_XS"]);
}

#[test]
fn qwen3moe_folder_to_llama_quantize_files() {
    // MXFP4_MOE: MXFP4 for the stacked experts only, Q8_0 elsewhere (the dump: llama-quantize
    // MXFP4_MOE of the f32 conversion, b11312, read with its gguf-py).
    folder_to_llama_quantize("qwen3moe_s", &["Q3_K_M", "imat-Q4_K_M", "MXFP4_MOE"]);
}

#[test]
fn phi3_folder_to_llama_quantize_files() {
    folder_to_llama_quantize("phi3_s", &FTYPES);
}

#[test]
fn gemma2_folder_to_llama_quantize_files() {
    folder_to_llama_quantize("gemma2_s", &FTYPES);
}
