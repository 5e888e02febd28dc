//! quant's importance matrix of llama_a against llama-imatrix's (llama.cpp b11312,
//! `llama-imatrix -m llama_a-f32.gguf -f corpus.txt -c 64 --chunks 8 -t 1`): the same
//! entries in the same order, the same counts and keys, `in_sum2` within 1e-3 relative L2
//! per tensor; and the writers reproduce llama-imatrix's files byte for byte from its own
//! statistics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;

use quant_calib::{chunks, compute_imatrix, Collector, ImatrixOptions};
use quant_gguf::{Imatrix, ImatrixStats};

mod common;
use common::{compare_with_reference, corpus_stats, data, rel_l2};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../quant-gguf/tests/data/llamacpp/llama_a")
}

fn quant_stats() -> ImatrixStats {
    stats_of(&model_dir())
}

fn stats_of(model: &std::path::Path) -> ImatrixStats {
    corpus_stats(model, &model_dir().join("tokenizer.json"))
}

#[test]
fn gguf_matches_llama_imatrix() {
    let (_, tensors) = compare_with_reference(&quant_stats(), &data("imatrix_llama_a.gguf"), 512.0);
    assert_eq!(tensors, 28);
}

#[test]
fn legacy_dat_matches_llama_imatrix() {
    let stats = quant_stats();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quant.imatrix.dat");
    std::fs::write(&path, stats.legacy_bytes()).unwrap();
    let ours = Imatrix::load(&path).unwrap();
    let theirs = Imatrix::load(data("imatrix_llama_a.dat")).unwrap();
    assert_eq!(ours.len(), 14);
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(ours.chunk_count(), theirs.chunk_count());
    assert_eq!(ours.datasets(), theirs.datasets());
    let from_gguf = Imatrix::load(data("imatrix_llama_a.gguf")).unwrap();
    for name in stats.entries.keys() {
        let (a, b) = (ours.get(name).unwrap(), theirs.get(name).unwrap());
        let r = rel_l2(a, b);
        assert!(r < 1e-3, "{name}: relative L2 {r:e}");
        // The two reference forms give the same weights (up to the dat's ×ncall/ncall).
        assert!(rel_l2(b, from_gguf.get(name).unwrap()) < 1e-6, "{name}");
    }
}

#[test]
fn writers_reproduce_llama_imatrix_files() {
    let stats = ImatrixStats::load_gguf(data("imatrix_llama_a.gguf")).unwrap();
    assert_eq!((stats.chunk_count, stats.chunk_size), (8, 64));
    assert_eq!(stats.datasets, vec!["corpus.txt".to_string()]);
    let gguf = std::fs::read(data("imatrix_llama_a.gguf")).unwrap();
    assert!(stats.gguf_bytes() == gguf, "GGUF bytes differ");
    let dat = std::fs::read(data("imatrix_llama_a.dat")).unwrap();
    assert!(stats.legacy_bytes() == dat, "legacy .dat bytes differ");
}

#[test]
fn chunking_follows_llama_imatrix() {
    let tokens: Vec<u32> = (10..10 + 300).collect();
    let c = chunks("t", &tokens, 64, None, Some(1)).unwrap();
    assert_eq!(c.len(), 4);
    assert_eq!(c[1][0], 1);
    assert_eq!(&c[1][1..], &tokens[65..128]);
    assert_eq!(chunks("t", &tokens, 64, Some(2), None).unwrap()[1][0], 74);
    // Fewer than 2·ctx tokens, or a context under 16 tokens: refused.
    assert!(chunks("t", &tokens, 151, None, None).is_err());
    assert!(chunks("t", &tokens, 8, None, None).is_err());
}

#[test]
fn collector_skips_what_llama_imatrix_skips() {
    let mut c = Collector::new(false);
    let x16 = vec![2.0f32; 16 * 4];
    c.add("output.weight", &x16, 4).unwrap();
    c.add("token_embd.weight", &x16, 4).unwrap();
    c.add("blk.0.attn_q.weight", &x16[..15 * 4], 4).unwrap();
    assert!(c.into_entries().is_empty());

    let mut c = Collector::new(true);
    c.add("output.weight", &x16, 4).unwrap();
    c.add("blk.0.ffn_up.weight", &x16, 4).unwrap();
    c.add("blk.0.ffn_up.weight", &x16, 4).unwrap();
    assert!(c.add("blk.0.ffn_up.weight", &[1.0; 16 * 8], 8).is_err());
    let e = c.into_entries();
    assert_eq!(e["output.weight"], (vec![64.0; 4], vec![16]));
    assert_eq!(e["blk.0.ffn_up.weight"], (vec![128.0; 4], vec![32]));
}

#[test]
fn refuses_a_text_too_short() {
    let opts = ImatrixOptions {
        ctx: 64,
        ..Default::default()
    };
    let tokenizer = model_dir().join("tokenizer.json");
    let e =
        compute_imatrix(&model_dir(), &tokenizer, "a short text", &opts, |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("needs at least 128 tokens"), "{e}");
}

#[test]
fn a_gguf_model_gives_the_same_matrix_as_its_folder() {
    // llama_a-bf16.gguf holds llama_a's exact (bf16) weights, already permuted for rope.
    let gguf = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../quant-gguf/tests/data/llamacpp/gguf/llama_a/llama_a-bf16.gguf");
    assert!(stats_of(&gguf) == quant_stats());
}

#[test]
fn tokenizer_is_required_beside_a_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.gguf");
    std::fs::write(&m, b"GGUF").unwrap();
    let e = quant_calib::tokenizer_path(&m, None).unwrap_err();
    assert!(e.to_string().contains("--tokenizer"), "{e}");
    let t = quant_calib::tokenizer_path(&model_dir(), None).unwrap();
    assert_eq!(t, model_dir().join("tokenizer.json"));
}
