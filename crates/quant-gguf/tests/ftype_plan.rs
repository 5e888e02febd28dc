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
    for ftype in [Ftype::Q4_K_M, Ftype::Q3_K_M, Ftype::Q2_K, Ftype::IQ4_XS]
        .into_iter()
        .chain(low_bit)
    {
        let path = dir.join(format!("llama_a-imat-{}.gguf.json", ftype.name()));
        check("llama_a", &path, ftype, true);
        n += 1;
    }
    assert_eq!(n, 18);
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

/// A dense decoder's sizes, as a snapshot header gives them (plus the head size).
struct Dense {
    arch: &'static str,
    n_embd: usize,
    n_ff: usize,
    n_vocab: usize,
    n_layer: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    /// Qwen3's per-head q/k norms.
    qk_norm: bool,
}

/// Compares `plan` with one of llama.cpp's type-selection snapshots (b11312
/// `tests/snapshots/*.schema`, made by `test-quant-type-selection` through
/// `llama_quant_compute_types` on mock F32 tensors): per ftype, every quantizable tensor
/// whose type is not the default, in order. The tensors are built from the model's sizes
/// (the snapshot's header is checked). Returns the number of ftype sections checked.
fn check_snapshot(file: &str, m: &Dense) -> usize {
    let text = std::fs::read_to_string(data_dir().join("../snapshots").join(file)).unwrap();
    assert!(
        text.contains(&format!(
            "n_embd={}, n_ff={}, n_vocab={}, n_layer={}, n_head={}, n_head_kv={}",
            m.n_embd, m.n_ff, m.n_vocab, m.n_layer, m.n_head, m.n_head_kv
        )),
        "{file}"
    );
    let (q_dim, kv_dim) = (m.n_head * m.head_dim, m.n_head_kv * m.head_dim);
    let mut tensors = vec![
        TensorMeta::new("token_embd.weight", DType::F32, vec![m.n_vocab, m.n_embd]),
        TensorMeta::new("output_norm.weight", DType::F32, vec![m.n_embd]),
        TensorMeta::new("output.weight", DType::F32, vec![m.n_vocab, m.n_embd]),
    ];
    for i in 0..m.n_layer {
        let t = |name: &str, shape: Vec<usize>| {
            TensorMeta::new(format!("blk.{i}.{name}.weight"), DType::F32, shape)
        };
        tensors.extend([
            t("attn_norm", vec![m.n_embd]),
            t("attn_q", vec![q_dim, m.n_embd]),
            t("attn_k", vec![kv_dim, m.n_embd]),
            t("attn_v", vec![kv_dim, m.n_embd]),
            t("attn_output", vec![m.n_embd, q_dim]),
            t("ffn_norm", vec![m.n_embd]),
            t("ffn_gate", vec![m.n_ff, m.n_embd]),
            t("ffn_up", vec![m.n_ff, m.n_embd]),
            t("ffn_down", vec![m.n_embd, m.n_ff]),
        ]);
        if m.qk_norm {
            tensors.push(t("attn_q_norm", vec![m.head_dim]));
            tensors.push(t("attn_k_norm", vec![m.head_dim]));
        }
    }
    let metadata: BTreeMap<String, String> = [
        ("general.architecture".to_string(), m.arch.to_string()),
        (format!("{}.block_count", m.arch), m.n_layer.to_string()),
        (
            format!("{}.attention.head_count", m.arch),
            m.n_head.to_string(),
        ),
        (
            format!("{}.attention.head_count_kv", m.arch),
            m.n_head_kv.to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let info = ModelInfo::from_metadata(&metadata, file).unwrap();
    // Sections: "[FTYPE] default" then "name type" lines.
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(rest) = line.strip_prefix('[') {
            sections.push((rest.split(']').next().unwrap().to_string(), Vec::new()));
        } else {
            let (name, ty) = line.rsplit_once(' ').unwrap();
            let last = sections.last_mut().unwrap();
            last.1.push((name.to_string(), ty.to_ascii_uppercase()));
        }
    }
    let mut checked = 0;
    for (name, want) in &sections {
        let Some(ftype) = Ftype::from_name(name) else {
            continue;
        };
        let planned = plan(ftype, &info, &tensors, &FtypeOptions::default()).unwrap();
        let got: Vec<(String, String)> = planned
            .iter()
            .filter(|p| !p.keep && p.ty != Some(ftype.default_type()))
            .map(|p| {
                (
                    tensors[p.index].name.clone(),
                    p.ty.unwrap().name().to_ascii_uppercase(),
                )
            })
            .collect();
        assert_eq!(&got, want, "{file} {name}");
        checked += 1;
    }
    checked
}

/// Llama 3.1 70B: the 70B attn_v rule and the counters over 80 blocks.
#[test]
fn llama_70b_snapshot_matches() {
    let m = Dense {
        arch: "llama",
        n_embd: 8192,
        n_ff: 28672,
        n_vocab: 128256,
        n_layer: 80,
        n_head: 64,
        n_head_kv: 8,
        head_dim: 128,
        qk_norm: false,
    };
    // Every ftype section but F32: the 18 of before and the 14 low-bit ones.
    assert_eq!(check_snapshot("meta-llama-3.1-70b-instruct.schema", &m), 32);
}

/// Qwen3 0.6B and 14B (n_gqa 2 and 5: the IQ4 attn_v rule).
#[test]
fn qwen3_snapshots_match() {
    let small = Dense {
        arch: "qwen3",
        n_embd: 1024,
        n_ff: 3072,
        n_vocab: 151936,
        n_layer: 28,
        n_head: 16,
        n_head_kv: 8,
        head_dim: 128,
        qk_norm: true,
    };
    assert_eq!(check_snapshot("qwen3-0.6b.schema", &small), 32);
    let big = Dense {
        n_embd: 5120,
        n_ff: 17408,
        n_layer: 40,
        n_head: 40,
        ..small
    };
    assert_eq!(check_snapshot("qwen3-14b.schema", &big), 32);
}

/// The `gguf_<ftype>` methods: typed errors for bad parameters and inputs, no mixture for
/// a model without llama.cpp metadata.
#[test]
fn ftype_methods_check_params_and_inputs() {
    use quant_core::{Error, ModelView, Params, Registry};
    let reg = Registry::global().unwrap();
    let with = |k: &str, v: &str| {
        let mut p = Params::new();
        p.insert(k.into(), v.into());
        p
    };
    for (k, v) in [
        ("output_tensor_type", "q9_9"),
        ("token_embedding_type", "q1_0"),
        ("tensor_type", "attn_v"),
        ("tensor_type", "attn_v=q7"),
        ("tensor_type", "([=q8_0"),
        ("no_such_option", "1"),
    ] {
        let r = reg.create("gguf_q4_k_m", &with(k, v));
        assert!(matches!(r, Err(Error::BadParam { .. })), "{k}={v}");
    }
    let m = reg.create("gguf_q4_k_m", &Params::new()).unwrap();
    let tensors = [TensorMeta::new("w.weight", DType::F32, vec![4, 256])];
    let mut metadata = BTreeMap::new();
    fn view<'a>(
        tensors: &'a [TensorMeta],
        metadata: &'a BTreeMap<String, String>,
    ) -> ModelView<'a> {
        ModelView { tensors, metadata }
    }
    assert_eq!(m.mixture(&view(&tensors, &metadata)).unwrap(), None);
    metadata.insert("general.architecture".into(), "llama".into());
    assert!(matches!(
        m.mixture(&view(&tensors, &metadata)),
        Err(Error::Unsupported { .. })
    ));
    metadata.insert("llama.block_count".into(), "two".into());
    assert!(m.mixture(&view(&tensors, &metadata)).is_err());
    metadata.insert("llama.block_count".into(), "2".into());
    assert!(m.mixture(&view(&tensors, &metadata)).unwrap().is_some());
    // An already quantized weight (stored as bytes) is refused, not requantized.
    let quantized = [TensorMeta::new(
        "blk.0.ffn_up.weight",
        DType::U8,
        vec![4, 144],
    )];
    let r = m.mixture(&view(&quantized, &metadata));
    assert!(matches!(r, Err(Error::Unsupported { .. })));
}
