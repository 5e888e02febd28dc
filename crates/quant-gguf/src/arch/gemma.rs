//! `Gemma2Model` and `Gemma3Model` of convert_hf_to_gguf.py (archs `gemma2`, `gemma3`),
//! text models: every `*norm.weight` gets `+ 1` (Gemma's RMSNorm scales by
//! `1 + weight`), Gemma 2 drops `lm_head` and writes its own keys with the logit
//! soft-capping values and the sliding window; Gemma 3 writes `TextModel`'s keys then its
//! overrides (context, heads, eps, head dims, global rope theta, final soft-cap, sliding
//! window, kv heads) and cuts `token_embd` to the tokenizer's real size. The vocabulary is
//! SentencePiece (`add_space_prefix = false`); Gemma 3 falls back to the BPE of
//! `tokenizer.json` without `tokenizer.model`.

use serde_json::{Map, Value};

use quant_core::{Error, Result};

use super::hparams::{f32_value, mirror_rope, rope_params, u32_value};
use super::names::{map_tables, DECODER, DENSE_FFN, QKV, QK_NORM};
use super::{rope_parameters, Architecture, HfModel, KvList, Transform};
use crate::gguf::GgufValue;

/// The gemma2 architecture.
#[derive(Debug)]
pub struct Gemma2;
/// The gemma3 architecture (text models).
#[derive(Debug)]
pub struct Gemma3;

/// Gemma's own norms around attention and feed-forward (gguf-py `tensor_mapping.py`,
/// MODEL_ARCH.GEMMA2/GEMMA3); the rest maps by the shared decoder tables.
const GEMMA_NORMS: &[(&str, &str)] = &[
    (
        "model.layers.{bid}.post_attention_layernorm",
        "blk.{bid}.post_attention_norm",
    ),
    (
        "model.layers.{bid}.pre_feedforward_layernorm",
        "blk.{bid}.ffn_norm",
    ),
    (
        "model.layers.{bid}.post_feedforward_layernorm",
        "blk.{bid}.post_ffw_norm",
    ),
];

fn map(
    model: &HfModel,
    name: &str,
    tables: &[&[(&str, &str)]],
    arch: &str,
) -> Result<(String, Transform)> {
    let n = map_tables(model, name, tables, arch)?;
    let t = if name.ends_with("norm.weight") {
        Transform::AddOne
    } else {
        Transform::None
    };
    Ok((n, t))
}

/// `hparams[key]` (the reference's KeyError is an error naming the key).
fn need<'m>(model: &'m HfModel, key: &str) -> Result<&'m Value> {
    model
        .hparams
        .get(key)
        .ok_or_else(|| model.bad(key, "missing"))
}

/// `_set_vocab_sentencepiece` then `add_space_prefix = false`.
fn sentencepiece_vocab(model: &HfModel, kv: &mut KvList) -> Result<()> {
    let vocab = model
        .find(&["vocab_size"])
        .and_then(Value::as_u64)
        .map(|v| v as usize);
    crate::arch::tokenizer::set_vocab_sentencepiece(&model.dir, vocab, kv)?;
    kv.set("tokenizer.ggml.add_space_prefix", GgufValue::Bool(false));
    Ok(())
}

fn defaults(c: &mut Map<String, Value>, list: &[(&str, Value)]) {
    for (k, v) in list {
        c.entry(*k).or_insert_with(|| v.clone());
    }
}

impl Architecture for Gemma2 {
    fn name(&self) -> &'static str {
        "gemma2"
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["Gemma2ForCausalLM"]
    }

    fn complete_config(&self, c: &mut Map<String, Value>) {
        // Gemma2Config (transformers 5).
        defaults(
            c,
            &[
                ("vocab_size", Value::from(256000)),
                ("num_key_value_heads", Value::from(4)),
                ("head_dim", Value::from(256)),
                ("max_position_embeddings", Value::from(8192)),
                ("rms_norm_eps", Value::from(1e-6)),
                ("sliding_window", Value::from(4096)),
                ("final_logit_softcapping", Value::from(30.0)),
                ("attn_logit_softcapping", Value::from(50.0)),
            ],
        );
        rope_parameters(c, 10000.0);
        mirror_rope(c);
    }

    fn filter(&self, name: &str) -> Option<String> {
        if name == "lm_head.weight" {
            return None;
        }
        super::text_model_filter(name)
    }

    fn map_tensor(&self, model: &HfModel, name: &str) -> Result<(String, Transform)> {
        map(
            model,
            name,
            &[DECODER, QKV, GEMMA_NORMS, DENSE_FFN],
            "gemma2",
        )
    }

    fn text_parameters(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        let u = |key: &str| -> Result<GgufValue> { u32_value(model, key, need(model, key)?) };
        let f = |key: &str| -> Result<GgufValue> { f32_value(model, key, need(model, key)?) };
        kv.set("gemma2.context_length", u("max_position_embeddings")?);
        kv.set("gemma2.embedding_length", u("hidden_size")?);
        kv.set(
            "gemma2.block_count",
            GgufValue::U32(model.block_count as u32),
        );
        kv.set("gemma2.feed_forward_length", u("intermediate_size")?);
        kv.set("gemma2.attention.head_count", u("num_attention_heads")?);
        let kv_heads = if model.hparams.contains_key("num_key_value_heads") {
            u("num_key_value_heads")?
        } else {
            u("num_attention_heads")?
        };
        kv.set("gemma2.attention.head_count_kv", kv_heads);
        kv.set(
            "gemma2.attention.layer_norm_rms_epsilon",
            f("rms_norm_eps")?,
        );
        kv.set("gemma2.attention.key_length", u("head_dim")?);
        kv.set("gemma2.attention.value_length", u("head_dim")?);
        kv.set("general.file_type", GgufValue::U32(0));
        kv.set(
            "gemma2.attn_logit_softcapping",
            f("attn_logit_softcapping")?,
        );
        kv.set(
            "gemma2.final_logit_softcapping",
            f("final_logit_softcapping")?,
        );
        kv.set("gemma2.attention.sliding_window", u("sliding_window")?);
        Ok(())
    }

    fn set_gguf_parameters(&self, _model: &HfModel, _kv: &mut KvList) -> Result<()> {
        Ok(())
    }

    fn vocab_files(&self) -> &'static [&'static str] {
        &["tokenizer.model"]
    }

    fn set_vocab(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        sentencepiece_vocab(model, kv)
    }
}

/// Gemma 3's real vocabulary size (the rows of `token_embd` it keeps).
fn gemma3_vocab_rows(model: &HfModel) -> Result<usize> {
    if model.dir.join("tokenizer.model").is_file() {
        // `_create_vocab_sentencepiece` pads to vocab_size (else the model's size).
        if let Some(v) = model.find(&["vocab_size"]).and_then(Value::as_u64) {
            return Ok(v as usize);
        }
        let sp =
            crate::arch::tokenizer::sentencepiece::load_model(&model.dir.join("tokenizer.model"))?;
        return Ok(sp.pieces.len());
    }
    let path = model.dir.join("tokenizer.json");
    let t = crate::arch::tokenizer::read_json(&path)?
        .ok_or_else(|| Error::file(&path, "tokenizer.json", "missing"))?;
    let vocab = t
        .get("model")
        .and_then(|m| m.get("vocab"))
        .and_then(Value::as_object)
        .ok_or_else(|| Error::file(&path, "tokenizer.json", "no model.vocab object"))?;
    let added = t
        .get("added_tokens")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::file(&path, "tokenizer.json", "no added_tokens list"))?;
    Ok(vocab.len() + added.len())
}

impl Architecture for Gemma3 {
    fn name(&self) -> &'static str {
        "gemma3"
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["Gemma3ForCausalLM"]
    }

    fn complete_config(&self, c: &mut Map<String, Value>) {
        // Gemma3TextConfig (transformers 5): global theta 1e6, local 1e4.
        defaults(
            c,
            &[
                ("vocab_size", Value::from(262_208)),
                ("num_key_value_heads", Value::from(4)),
                ("head_dim", Value::from(256)),
                ("max_position_embeddings", Value::from(131_072)),
                ("rms_norm_eps", Value::from(1e-6)),
                ("sliding_window", Value::from(4096)),
                ("final_logit_softcapping", Value::Null),
                ("attn_logit_softcapping", Value::Null),
            ],
        );
        if !c.contains_key("rope_parameters") {
            let local = c
                .get("rope_local_base_freq")
                .filter(|v| v.is_number())
                .cloned()
                .unwrap_or(Value::from(10000.0));
            let global = c
                .get("rope_theta")
                .filter(|v| v.is_number())
                .cloned()
                .unwrap_or(Value::from(1_000_000.0));
            let mut full = match c.get("rope_scaling") {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            };
            if let Some(t) = full.remove("type") {
                full.entry("rope_type").or_insert(t);
            }
            full.entry("rope_type").or_insert(Value::from("default"));
            full.insert("rope_theta".into(), global);
            c.insert(
                "rope_parameters".into(),
                serde_json::json!({
                    "full_attention": Value::Object(full),
                    "sliding_attention": {"rope_type": "default", "rope_theta": local},
                }),
            );
        }
    }

    fn filter(&self, name: &str) -> Option<String> {
        super::text_model_filter(name)
    }

    fn map_tensor(&self, model: &HfModel, name: &str) -> Result<(String, Transform)> {
        let (n, t) = map(
            model,
            name,
            &[DECODER, QKV, GEMMA_NORMS, DENSE_FFN, QK_NORM],
            "gemma3",
        )?;
        if name.contains("embed_tokens.weight") {
            return Ok((n, Transform::KeepRows(gemma3_vocab_rows(model)?)));
        }
        Ok((n, t))
    }

    fn set_gguf_parameters(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        let h = &model.hparams;
        let get = |k: &str| h.get(k).filter(|v| !v.is_null());
        let u_or = |k: &str, d: u64| -> Result<GgufValue> {
            match get(k) {
                Some(v) => u32_value(model, k, v),
                None => Ok(GgufValue::U32(d as u32)),
            }
        };
        kv.set(
            "gemma3.context_length",
            u_or("max_position_embeddings", 131072)?,
        );
        kv.set(
            "gemma3.attention.head_count",
            u_or("num_attention_heads", 8)?,
        );
        let eps = match get("rms_norm_eps") {
            Some(v) => f32_value(model, "rms_norm_eps", v)?,
            None => GgufValue::F32(1e-6),
        };
        kv.set("gemma3.attention.layer_norm_rms_epsilon", eps);
        kv.set("gemma3.attention.key_length", u_or("head_dim", 256)?);
        kv.set("gemma3.attention.value_length", u_or("head_dim", 256)?);
        let theta = match rope_params(model)
            .get("rope_theta")
            .filter(|v| !v.is_null())
        {
            Some(v) => f32_value(model, "rope_theta", v)?,
            None => GgufValue::F32(1_000_000.0),
        };
        kv.set("gemma3.rope.freq_base", theta);
        if get("attn_logit_softcapping").is_some() {
            return Err(model.bad(
                "attn_logit_softcapping",
                "Gemma 3 has no attention soft-capping (the reference asserts it is unset)",
            ));
        }
        if let Some(v) = get("final_logit_softcapping") {
            if v.as_f64() != Some(0.0) {
                kv.set(
                    "gemma3.final_logit_softcapping",
                    f32_value(model, "final_logit_softcapping", v)?,
                );
            }
        }
        if h.get("sliding_window_pattern").and_then(Value::as_u64) != Some(1) {
            let w = h
                .get("sliding_window")
                .ok_or_else(|| model.bad("sliding_window", "missing"))?;
            kv.set(
                "gemma3.attention.sliding_window",
                u32_value(model, "sliding_window", w)?,
            );
        }
        kv.set(
            "gemma3.attention.head_count_kv",
            u_or("num_key_value_heads", 4)?,
        );
        Ok(())
    }

    fn vocab_files(&self) -> &'static [&'static str] {
        &["tokenizer.model", "tokenizer.json"]
    }

    fn set_vocab(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        if model.dir.join("tokenizer.model").is_file() {
            return sentencepiece_vocab(model, kv);
        }
        let vocab = model
            .find(&["vocab_size"])
            .and_then(Value::as_u64)
            .map(|v| v as usize);
        crate::arch::tokenizer::bpe::set_vocab_gpt2(&model.dir, vocab, kv)
    }
}
