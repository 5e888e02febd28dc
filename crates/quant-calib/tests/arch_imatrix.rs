//! quant's importance matrix of the Llama 3, Qwen 2, Qwen3-MoE, Phi-3 and Gemma 2 models of
//! `quant-gguf/tests/data/llamacpp/arch/` (real Llama-3.1 and Qwen3 tokenizers) against
//! llama-imatrix's (llama.cpp b11312, `-c 64 --chunks 8 -t 1` on that folder's
//! `corpus.txt`): the same entries in the same order with the same counts, and with
//! `QUANT_ARCH_MODELS_DIR` set to the folder of the real model folders (the weights are
//! not committed), every `in_sum2` within 1e-3 relative L2. Without it the models are
//! rebuilt with zero weights from the committed safetensors headers, which checks the
//! entries, their order and counts only. Mixtral's model is this crate's own, with its
//! weights (`tests/data/mixtral_t`): always compared in full.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Read;
use std::path::{Path, PathBuf};

use quant_calib::{compute_imatrix, ImatrixOptions};
use quant_gguf::gguf::GgufFile;

mod common;
use common::{f32s, rel_l2};

fn arch_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../quant-gguf/tests/data/llamacpp/arch")
}

/// This crate's own models, weights committed: `tests/data/<name>/` with llama-imatrix's
/// `imatrix_<name>.gguf` beside them.
fn local(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The model folder, and whether its weights are real.
fn model(name: &str, tmp: &Path) -> (PathBuf, bool) {
    if local(name).is_dir() {
        return (local(name), true);
    }
    if let Some(root) = std::env::var_os("QUANT_ARCH_MODELS_DIR") {
        return (Path::new(&root).join(name), true);
    }
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let src = arch_data().join("models").join(name);
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().to_string_lossy().into_owned();
        if n == "model.safetensors.header.json" {
            let header = std::fs::read(e.path()).unwrap();
            let meta: serde_json::Value = serde_json::from_slice(&header).unwrap();
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
    // Models without their own tokenizer.json take the real one they were made with.
    if !dir.join("tokenizer.json").is_file() {
        let tok = if name == "llama3_s" {
            "llama3_1"
        } else {
            "qwen3"
        };
        let gz = arch_data().join(format!("tokenizers/{tok}.tokenizer.json.gz"));
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(gz).unwrap())
            .read_to_end(&mut text)
            .unwrap();
        std::fs::write(dir.join("tokenizer.json"), text).unwrap();
    }
    (dir, false)
}

fn check(name: &str) {
    let reference = if local(name).is_dir() {
        local(name).join(format!("imatrix_{name}.gguf"))
    } else {
        arch_data().join(format!("gguf/{name}/imatrix_{name}.gguf"))
    };
    check_as(name, None, &reference);
}

/// [`check`] of model `name` with its `config.json` replaced by `config`, against
/// `reference`.
fn check_as(name: &str, config: Option<&Path>, reference: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut dir, real) = model(name, tmp.path());
    if let Some(config) = config {
        if real {
            let copy = tmp.path().join(name);
            std::fs::create_dir_all(&copy).unwrap();
            for e in std::fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
            }
            dir = copy;
        }
        std::fs::copy(config, dir.join("config.json")).unwrap();
    }
    let text = std::fs::read_to_string(arch_data().join("corpus.txt")).unwrap();
    let opts = ImatrixOptions {
        ctx: 64,
        chunks: Some(8),
        process_output: false,
        dataset: "corpus.txt".into(),
    };
    let stats =
        compute_imatrix(&dir, &dir.join("tokenizer.json"), &text, &opts, |_, _| {}).unwrap();
    let ours = tmp.path().join("quant.imatrix.gguf");
    std::fs::write(&ours, stats.gguf_bytes()).unwrap();
    let ours = GgufFile::open(&ours).unwrap();
    let theirs = GgufFile::open(reference).unwrap();
    assert_eq!(ours.metadata, theirs.metadata, "key/value pairs");
    let names = |f: &GgufFile| f.tensors.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ours), names(&theirs), "tensor names and order");
    let mut worst = 0.0f64;
    for (a, b) in ours.tensors.iter().zip(&theirs.tensors) {
        assert_eq!((a.ty, &a.dims), (b.ty, &b.dims), "{}", a.name);
        let va = f32s(&ours.read_data(a).unwrap());
        let vb = f32s(&theirs.read_data(b).unwrap());
        if a.name.ends_with(".counts") {
            if real || va.len() == 1 {
                assert_eq!(va, vb, "{}", a.name);
            } else {
                // Zero weights route every token to the first experts: only the total
                // number of (token, expert) rows is the reference's.
                let total = |v: &[f32]| v.iter().sum::<f32>();
                assert_eq!(total(&va), total(&vb), "{}", a.name);
            }
        } else if real {
            let r = rel_l2(&va, &vb);
            assert!(r < 1e-3, "{}: relative L2 {r:e}", a.name);
            worst = worst.max(r);
        }
    }
    println!(
        "{name}: {} tensors, counts checked, in_sum2 worst relative L2 {}",
        theirs.tensors.len(),
        if real {
            format!("{worst:e}")
        } else {
            "(zero weights: not compared)".into()
        }
    );
}

#[test]
fn llama3_matches_llama_imatrix() {
    check("llama3_s");
}

#[test]
fn qwen2_matches_llama_imatrix() {
    check("qwen2_s");
}

/// Per-expert statistics (`MUL_MAT_ID`): with real weights the routing, hence every
/// expert's count, equals llama.cpp's.
#[test]
fn qwen3moe_matches_llama_imatrix() {
    check("qwen3moe_s");
}

/// Gemma 2: `√n_embd` embeddings, soft-capped attention, a 32-position sliding window on
/// layer 0 (the chunks are 64 long), post-attention/feed-forward norms, GELU.
#[test]
fn gemma2_matches_llama_imatrix() {
    check("gemma2_s");
}

/// Mixtral (`llama` with experts, llama.cpp's llama graph with softmax-gated, normalised
/// top-2 of 4 experts): a 0.3 M-parameter `MixtralForCausalLM` with random weights and
/// the SentencePiece vocabulary of gemma2_s, committed in `tests/data/mixtral_t`; the
/// reference is llama.cpp b11312's `convert_hf_to_gguf.py mixtral_t --outtype f32`, then
/// `llama-imatrix -m mixtral_t-f32.gguf -f corpus.txt -c 64 --chunks 8 -t 1 -nr` (the
/// `corpus.txt` of the arch folder).
#[test]
fn mixtral_matches_llama_imatrix() {
    check("mixtral_t");
}

/// Gemma 3 text model (`gemma3`): per-head q/k RMS norms, no attention soft-capping,
/// sliding-window pattern 6 (layers 0–4 and 6 slide over 32 positions of the 64-token
/// chunks, layer 5 is global), local rope base `rope.freq_base_swa` 10000 unscaled, global
/// base 1e6 with linear rope scaling 8. A random-weight 0.3 M-parameter
/// `Gemma3ForCausalLM` (7 layers) with gemma2_s's SentencePiece vocabulary, committed in
/// `tests/data/gemma3_t`; the reference is llama.cpp b11312's `convert_hf_to_gguf.py
/// gemma3_t --outtype f32`, then `llama-imatrix -m gemma3_t-f32.gguf -f corpus.txt -c 64
/// --chunks 8 -t 1 -nr` (the `corpus.txt` of the arch folder).
#[test]
fn gemma3_matches_llama_imatrix() {
    check("gemma3_t");
}

/// Fused `attn_qkv` and `ffn_up` (gate | up) recorded under their fused names, NEOX rope.
#[test]
fn phi3_matches_llama_imatrix() {
    check("phi3_s");
}

/// phi3_s with long-context rope (`rope_type: longrope`, made-up short and long factors, a
/// 131072-token context): `config_short.json` keeps the original context at 4096, so
/// llama.cpp's padded 256-token context takes `rope_factors_short`; `config_long.json` sets
/// it to 64, which takes `rope_factors_long`; both scale cos/sin by
/// `rope.scaling.attn_factor`. References in `tests/data/phi3_rope/` (see its README): the
/// two matrices differ from each other by 5.7e-2 relative L2, so a wrong choice of factors
/// fails with real weights.
#[test]
fn phi3_rope_factors_match_llama_imatrix() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/phi3_rope");
    for which in ["short", "long"] {
        check_as(
            "phi3_s",
            Some(&data.join(format!("config_{which}.json"))),
            &data.join(format!("imatrix_phi3_{which}.gguf")),
        );
    }
}
