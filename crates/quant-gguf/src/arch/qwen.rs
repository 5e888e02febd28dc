//! `Qwen2Model`, `Qwen3Model` and `Qwen3MoeModel` of convert_hf_to_gguf.py (archs
//! `qwen2`, `qwen3`, `qwen3moe`): Qwen2ForCausalLM (q/k/v biases), Qwen3ForCausalLM
//! (q/k norms) and Qwen3MoeForCausalLM (per-expert `mlp.experts.N.{down,gate,up}_proj`
//! stacked into `ffn_{down,gate,up}_exps`, the router `mlp.gate` as `ffn_gate_inp`, and
//! `expert_feed_forward_length`). No permutation. The vocabulary is SentencePiece when the
//! folder has `tokenizer.model`, else the BPE of `tokenizer.json` (`_set_vocab_gpt2`).
//! Qwen3 rerankers (a classifier head built from the tokenizer) are refused.

use serde_json::{Map, Value};

use quant_core::{Error, Result};

use super::experts::{parse_expert, ExpertPart};
use super::names::{map_tables, DECODER, DENSE_FFN, FFN_NORM, QKV, QK_NORM};
use super::{rope_parameters, Architecture, HfModel, KvList, Transform};

/// The qwen2 architecture.
#[derive(Debug)]
pub struct Qwen2;
/// The qwen3 architecture.
#[derive(Debug)]
pub struct Qwen3;
/// The qwen3moe architecture.
#[derive(Debug)]
pub struct Qwen3Moe;

/// The experts (qwen3moe): the router and the stacked expert weights.
const MOE_FFN: &[(&str, &str)] = &[
    ("model.layers.{bid}.mlp.gate", "blk.{bid}.ffn_gate_inp"),
    (
        "model.layers.{bid}.mlp.experts.down_proj",
        "blk.{bid}.ffn_down_exps",
    ),
    (
        "model.layers.{bid}.mlp.experts.gate_proj",
        "blk.{bid}.ffn_gate_exps",
    ),
    (
        "model.layers.{bid}.mlp.experts.up_proj",
        "blk.{bid}.ffn_up_exps",
    ),
];

/// The stacked weights in the order `Qwen2MoeModel.modify_tensors` yields them.
const EXPERT_KINDS: [&str; 3] = ["down_proj", "gate_proj", "up_proj"];

/// Qwen2Config / Qwen3Config / Qwen3MoeConfig (transformers 5) defaults for what the
/// conversion reads.
fn complete(c: &mut Map<String, Value>, head_dim: Option<u64>, moe: bool) {
    let mut default = |k: &str, v: Value| {
        if !c.contains_key(k) {
            c.insert(k.into(), v);
        }
    };
    default("vocab_size", Value::from(151936));
    default("max_position_embeddings", Value::from(32768));
    default("rms_norm_eps", Value::from(1e-6));
    if let Some(d) = head_dim {
        default("head_dim", Value::from(d));
    }
    if moe {
        default("num_key_value_heads", Value::from(4));
        default("moe_intermediate_size", Value::from(768));
        default("num_experts_per_tok", Value::from(8));
        default("num_experts", Value::from(128));
    } else {
        default("num_key_value_heads", Value::from(32));
    }
    if c.get("num_key_value_heads").is_some_and(Value::is_null) {
        if let Some(h) = c.get("num_attention_heads").cloned() {
            c.insert("num_key_value_heads".into(), h);
        }
    }
    rope_parameters(c, 10000.0);
}

/// `Qwen2Model.set_vocab`: SentencePiece from `tokenizer.model`, else `_set_vocab_gpt2`.
fn set_vocab(model: &HfModel, kv: &mut KvList) -> Result<()> {
    let vocab = model
        .find(&["vocab_size"])
        .and_then(Value::as_u64)
        .map(|v| v as usize);
    if model.dir.join("tokenizer.model").is_file() {
        return crate::arch::tokenizer::set_vocab_sentencepiece(&model.dir, vocab, kv);
    }
    crate::arch::tokenizer::bpe::set_vocab_gpt2(&model.dir, vocab, kv)
}

/// `Qwen3Model._is_qwen3_reranker`: quant does not build the reranker's classifier.
fn refuse_reranker(model: &HfModel) -> Result<()> {
    let readme = std::fs::read_to_string(model.dir.join("README.md"))
        .unwrap_or_default()
        .to_lowercase();
    let class = model
        .raw_config
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str)
        .unwrap_or("");
    let hints = [
        model
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        model
            .hparams
            .get("_name_or_path")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        model
            .hparams
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        class.to_string(),
    ];
    let named = hints.iter().any(|h| {
        let h = h.to_lowercase();
        h.contains("qwen3-reranker") || h.contains("qwen3-vl-reranker")
    });
    if readme.contains("# qwen3-reranker")
        || readme.contains("# qwen3-vl-reranker")
        || named
        || class.to_lowercase().contains("sequenceclassification")
    {
        return Err(model.bad(
            "architectures",
            "Qwen3 rerankers (a yes/no classifier head) are not converted by quant",
        ));
    }
    Ok(())
}

impl Architecture for Qwen2 {
    fn name(&self) -> &'static str {
        "qwen2"
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["Qwen2ForCausalLM"]
    }

    fn complete_config(&self, c: &mut Map<String, Value>) {
        complete(c, None, false);
    }

    fn filter(&self, name: &str) -> Option<String> {
        super::text_model_filter(name)
    }

    fn map_tensor(&self, model: &HfModel, name: &str) -> Result<(String, Transform)> {
        Ok((
            map_tables(model, name, &[DECODER, QKV, FFN_NORM, DENSE_FFN], "qwen2")?,
            Transform::None,
        ))
    }

    fn set_gguf_parameters(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        super::set_pooling_type(model, "qwen2", kv)
    }

    fn vocab_files(&self) -> &'static [&'static str] {
        &["tokenizer.model", "tokenizer.json"]
    }

    fn set_vocab(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        set_vocab(model, kv)
    }
}

impl Architecture for Qwen3 {
    fn name(&self) -> &'static str {
        "qwen3"
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["Qwen3ForCausalLM"]
    }

    fn complete_config(&self, c: &mut Map<String, Value>) {
        complete(c, Some(128), false);
    }

    fn filter(&self, name: &str) -> Option<String> {
        super::text_model_filter(name)
    }

    fn map_tensor(&self, model: &HfModel, name: &str) -> Result<(String, Transform)> {
        let n = map_tables(
            model,
            name,
            &[DECODER, QKV, FFN_NORM, QK_NORM, DENSE_FFN],
            "qwen3",
        )?;
        Ok((n, Transform::None))
    }

    fn set_gguf_parameters(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        refuse_reranker(model)?;
        super::set_pooling_type(model, "qwen3", kv)
    }

    fn vocab_files(&self) -> &'static [&'static str] {
        &["tokenizer.model", "tokenizer.json"]
    }

    fn set_vocab(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        set_vocab(model, kv)
    }
}

impl Architecture for Qwen3Moe {
    fn name(&self) -> &'static str {
        "qwen3moe"
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["Qwen3MoeForCausalLM"]
    }

    fn complete_config(&self, c: &mut Map<String, Value>) {
        complete(c, None, true);
    }

    fn filter(&self, name: &str) -> Option<String> {
        super::text_model_filter(name)
    }

    fn map_tensor(&self, model: &HfModel, name: &str) -> Result<(String, Transform)> {
        let n = map_tables(
            model,
            name,
            &[DECODER, QKV, FFN_NORM, QK_NORM, MOE_FFN],
            "qwen3moe",
        )?;
        Ok((n, Transform::None))
    }

    fn set_gguf_parameters(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        for (hf, gg) in [
            ("moe_intermediate_size", "expert_feed_forward_length"),
            (
                "shared_expert_intermediate_size",
                "expert_shared_feed_forward_length",
            ),
        ] {
            if let Some(v) = model.hparams.get(hf).filter(|v| !v.is_null()) {
                kv.set(
                    format!("qwen3moe.{gg}"),
                    super::hparams::u32_value(model, hf, v)?,
                );
            }
        }
        Ok(())
    }

    fn vocab_files(&self) -> &'static [&'static str] {
        &["tokenizer.model", "tokenizer.json"]
    }

    fn set_vocab(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        set_vocab(model, kv)
    }

    fn expert_part(&self, model: &HfModel, name: &str) -> Result<Option<ExpertPart>> {
        if !name.contains("experts") {
            return Ok(None);
        }
        let Some((block, expert, kind)) =
            parse_expert(name, "model.layers.", "mlp.experts.", &EXPERT_KINDS)
        else {
            // Stacked checkpoints (`mlp.experts.down_proj`, `gate_up_proj`) are not
            // converted by quant yet.
            return Err(Error::tensor(
                model.dir.as_path(),
                name,
                "not a per-expert weight model.layers.N.mlp.experts.M.{down,gate,up}_proj.weight",
            ));
        };
        let n_experts = model.uint(&["num_local_experts", "num_experts"])? as usize;
        Ok(Some(ExpertPart {
            block,
            expert,
            n_experts,
            kind,
            kinds: EXPERT_KINDS
                .iter()
                .map(|k| format!("model.layers.{block}.mlp.experts.{k}.weight"))
                .collect(),
        }))
    }
}
