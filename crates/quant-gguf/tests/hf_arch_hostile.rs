//! Hugging Face folders that disagree with themselves, converted to llama.cpp's layout:
//! every case is a typed error naming the file and the config key (or tensor) before any
//! output is written: block counts and vocabulary sizes that disagree with the tensors,
//! non-numeric rope factors, unreadable `tokenizer.json` files and merges lists, unknown
//! pre-tokenizer hashes, and mixture-of-experts checkpoints with missing or extra experts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;

use quant_core::{DType, Part, PartLayout};
use serde_json::{json, Value};

const HIDDEN: usize = 8;
const VOCAB: usize = 8;

/// A tiny byte-level BPE `tokenizer.json` (its pre-tokenizer hash is in no table).
fn tokenizer() -> Value {
    let vocab: serde_json::Map<String, Value> = ["a", "b", "c", "d", "ab", "cd", "abcd", "Ġ"]
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), Value::from(i)))
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": true, "vocab": vocab, "merges": ["a b", "c d", "ab cd"]}
    })
}

fn llama_config() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN, "intermediate_size": 16,
        "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 1,
        "vocab_size": VOCAB, "rms_norm_eps": 1e-5, "max_position_embeddings": 64
    })
}

fn part(name: &str, shape: &[usize]) -> Part {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .flat_map(|i| ((i % 7) as f32 * 0.01).to_le_bytes())
        .collect();
    Part::new(PartLayout::new(name, DType::F32, shape.to_vec()), data).unwrap()
}

fn llama_tensors() -> Vec<Part> {
    let l = "model.layers.0";
    vec![
        part("model.embed_tokens.weight", &[VOCAB, HIDDEN]),
        part("model.norm.weight", &[HIDDEN]),
        part("lm_head.weight", &[VOCAB, HIDDEN]),
        part(&format!("{l}.input_layernorm.weight"), &[HIDDEN]),
        part(&format!("{l}.post_attention_layernorm.weight"), &[HIDDEN]),
        part(&format!("{l}.self_attn.q_proj.weight"), &[HIDDEN, HIDDEN]),
        part(&format!("{l}.self_attn.k_proj.weight"), &[4, HIDDEN]),
        part(&format!("{l}.self_attn.v_proj.weight"), &[4, HIDDEN]),
        part(&format!("{l}.self_attn.o_proj.weight"), &[HIDDEN, HIDDEN]),
        part(&format!("{l}.mlp.gate_proj.weight"), &[16, HIDDEN]),
        part(&format!("{l}.mlp.up_proj.weight"), &[16, HIDDEN]),
        part(&format!("{l}.mlp.down_proj.weight"), &[HIDDEN, 16]),
    ]
}

/// A qwen3moe block with `experts` experts of which `skip` is left out.
fn moe_tensors(experts: usize, skip: Option<(usize, &str)>) -> Vec<Part> {
    let l = "model.layers.0";
    let mut t = vec![
        part("model.embed_tokens.weight", &[VOCAB, HIDDEN]),
        part("model.norm.weight", &[HIDDEN]),
        part(&format!("{l}.input_layernorm.weight"), &[HIDDEN]),
        part(&format!("{l}.post_attention_layernorm.weight"), &[HIDDEN]),
        part(&format!("{l}.self_attn.q_proj.weight"), &[HIDDEN, HIDDEN]),
        part(&format!("{l}.self_attn.k_proj.weight"), &[4, HIDDEN]),
        part(&format!("{l}.self_attn.v_proj.weight"), &[4, HIDDEN]),
        part(&format!("{l}.self_attn.o_proj.weight"), &[HIDDEN, HIDDEN]),
        part(&format!("{l}.self_attn.q_norm.weight"), &[4]),
        part(&format!("{l}.self_attn.k_norm.weight"), &[4]),
        part(&format!("{l}.mlp.gate.weight"), &[2, HIDDEN]),
    ];
    for x in 0..experts {
        for (k, shape) in [
            ("gate_proj", [16, HIDDEN]),
            ("up_proj", [16, HIDDEN]),
            ("down_proj", [HIDDEN, 16]),
        ] {
            if skip == Some((x, k)) {
                continue;
            }
            t.push(part(&format!("{l}.mlp.experts.{x}.{k}.weight"), &shape));
        }
    }
    t
}

fn moe_config() -> Value {
    json!({
        "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": HIDDEN, "intermediate_size": 16,
        "moe_intermediate_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 4, "num_hidden_layers": 1, "vocab_size": VOCAB, "num_experts": 2,
        "num_experts_per_tok": 1, "rms_norm_eps": 1e-6, "max_position_embeddings": 64
    })
}

fn folder(dir: &Path, config: &Value, tensors: &[Part], tokenizer: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    quant_core::safetensors_io::write_safetensors(
        dir.join("model.safetensors"),
        tensors,
        &Default::default(),
    )
    .unwrap();
    if let Some(t) = tokenizer {
        std::fs::write(dir.join("tokenizer.json"), t).unwrap();
    }
}

/// Quantizes `dir`: must fail, leave no output, and say `needles` in its message.
fn refused(dir: &Path, needles: &[&str]) -> quant_core::Error {
    // Links quant-gguf (and its registrations) into this test.
    assert!(!quant_gguf::arch::ARCHITECTURES.is_empty());
    let out = dir.parent().unwrap().join("out.gguf");
    let err = quant_core::engine::ModelQuantizer::new("gguf_q8_0")
        .quantize_path(dir, &out)
        .unwrap_err();
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "{n:?} not in: {msg}");
    }
    assert!(!out.exists(), "an output was written");
    let leftovers: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "m")
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    err
}

#[test]
fn a_block_count_beyond_the_tensors_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let mut c = llama_config();
    c["num_hidden_layers"] = json!(1_000_000_000_000u64);
    folder(&dir, &c, &llama_tensors(), Some(&tokenizer().to_string()));
    let err = refused(&dir, &["config.json", "num_hidden_layers", "1000000000000"]);
    assert!(matches!(err, quant_core::Error::Config { .. }), "{err:?}");
    // Fewer blocks than the tensors: the tensor of block 0 cannot be named.
    c["num_hidden_layers"] = json!(0);
    folder(&dir, &c, &llama_tensors(), Some(&tokenizer().to_string()));
    refused(&dir, &["model.layers.0"]);
}

#[test]
fn a_vocab_size_beside_a_bigger_embedding_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let mut c = llama_config();
    c["vocab_size"] = json!(3);
    folder(&dir, &c, &llama_tensors(), Some(&tokenizer().to_string()));
    refused(&dir, &["config.json", "vocab_size", "3", "8 rows"]);
    // A huge one is refused before any allocation for it.
    c["vocab_size"] = json!(1_000_000_000_000u64);
    folder(&dir, &c, &llama_tensors(), Some(&tokenizer().to_string()));
    refused(&dir, &["vocab_size"]);
}

#[test]
fn a_rope_factor_that_is_no_number_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    for (ty, key) in [
        ("llama3", "factor"),
        ("linear", "factor"),
        ("yarn", "factor"),
    ] {
        let mut c = llama_config();
        c["rope_scaling"] =
            json!({"rope_type": ty, key: "x", "original_max_position_embeddings": 8});
        folder(&dir, &c, &llama_tensors(), Some(&tokenizer().to_string()));
        refused(&dir, &["config.json", "rope_parameters.factor", "\"x\""]);
    }
    let mut c = llama_config();
    c["rope_theta"] = json!("x");
    folder(&dir, &c, &llama_tensors(), Some(&tokenizer().to_string()));
    refused(&dir, &["config.json", "rope_theta"]);
}

#[test]
fn broken_tokenizers_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    // Not JSON.
    folder(&dir, &llama_config(), &llama_tensors(), Some("{not json"));
    refused(&dir, &["tokenizer.json"]);
    // A merges list that is neither strings nor pairs, or mixes them.
    for merges in [
        json!([1, 2]),
        json!(["a b", ["c", "d"]]),
        json!([["a", "b", "c"]]),
    ] {
        let mut t = tokenizer();
        t["model"]["merges"] = merges;
        folder(
            &dir,
            &llama_config(),
            &llama_tensors(),
            Some(&t.to_string()),
        );
        refused(&dir, &["tokenizer.json", "model.merges["]);
    }
    // A vocabulary the tokenizers library refuses (a merge of unknown tokens).
    let mut t = tokenizer();
    t["model"]["merges"] = json!(["x y"]);
    folder(
        &dir,
        &llama_config(),
        &llama_tensors(),
        Some(&t.to_string()),
    );
    refused(&dir, &["tokenizer.json"]);
    // A valid BPE whose pre-tokenization is in no table: the error names the hash.
    folder(
        &dir,
        &llama_config(),
        &llama_tensors(),
        Some(&tokenizer().to_string()),
    );
    let err = refused(&dir, &["tokenizer.json", "pre-tokenizer", "hash"]);
    let msg = err.to_string();
    let hash = msg
        .split_whitespace()
        .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no sha256 in: {msg}"));
    assert_eq!(hash.len(), 64);
}

#[test]
fn experts_that_do_not_stack_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let tok = tokenizer().to_string();
    // One expert weight missing.
    folder(
        &dir,
        &moe_config(),
        &moe_tensors(2, Some((1, "up_proj"))),
        Some(&tok),
    );
    refused(&dir, &["expert"]);
    // More experts than the config says.
    folder(&dir, &moe_config(), &moe_tensors(3, None), Some(&tok));
    refused(&dir, &["expert 2", "expert count 2"]);
    // Experts of different shapes.
    let mut t = moe_tensors(2, Some((1, "down_proj")));
    t.push(part(
        "model.layers.0.mlp.experts.1.down_proj.weight",
        &[HIDDEN, 8],
    ));
    folder(&dir, &moe_config(), &t, Some(&tok));
    refused(&dir, &["down_proj"]);
    // An expert count of zero.
    let mut c = moe_config();
    c["num_experts"] = json!(0);
    folder(&dir, &c, &moe_tensors(2, None), Some(&tok));
    refused(&dir, &["expert"]);
}
