//! `Phi3MiniModel` of convert_hf_to_gguf.py (arch `phi3`): Phi3ForCausalLM with its fused
//! `qkv_proj` (`attn_qkv`) and `gate_up_proj` (`ffn_up`, 2 × intermediate rows) kept fused,
//! its own hyperparameter keys (not `TextModel`'s), `attention.sliding_window` (0 when
//! absent), and for long-context checkpoints the `rope_factors_long`/`_short` tensors and
//! `rope.scaling.attn_factor`. The vocabulary is Phi-3's own SentencePiece reading
//! (`tokenizer.model`, then the added tokens of `added_tokens.json`,
//! `tokenizer_config.json` and `tokenizer.json`), or `_set_vocab_gpt2` when
//! `tokenizer_config.json` names `GPT2Tokenizer` (Phi-4).

use serde_json::{Map, Value};

use quant_core::{Error, Result};

use super::experts::Generated;
use super::hparams::{f32_value, mirror_rope, rope_number, u32_value};
use super::names::{map_tables, DECODER, FFN_NORM};
use super::{rope_parameters, Architecture, HfModel, KvList, Transform};
use crate::arch::tokenizer::{
    read_json, sentencepiece, special, string_array, type_array, TokenType,
};
use crate::gguf::GgufValue;

/// The phi3 architecture.
#[derive(Debug)]
pub struct Phi3;

/// Phi-3's fused projections (gguf-py `tensor_mapping.py`, MODEL_ARCH.PHI3); the rest maps
/// by the shared decoder tables.
const FUSED: &[(&str, &str)] = &[
    (
        "model.layers.{bid}.self_attn.qkv_proj",
        "blk.{bid}.attn_qkv",
    ),
    ("model.layers.{bid}.mlp.gate_up_proj", "blk.{bid}.ffn_up"),
    ("model.layers.{bid}.mlp.down_proj", "blk.{bid}.ffn_down"),
];

/// `rope_parameters` (mirrored as `TextModel` does).
fn rope(model: &HfModel) -> Map<String, Value> {
    model
        .hparams
        .get("rope_parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// `int(rot_pct * n_embd) // n_head`.
fn rope_dims(model: &HfModel) -> Result<u64> {
    let n_embd = model.uint(&["hidden_size", "n_embd"])?;
    let n_head = model.uint(&["num_attention_heads", "n_head"])?;
    if n_head == 0 {
        return Err(model.bad("num_attention_heads", "0 heads"));
    }
    let pct = rope_number(model, &rope(model), "partial_rotary_factor")?.unwrap_or(1.0);
    Ok(((pct * n_embd as f64) as u64) / n_head)
}

/// A rope factor list as float32 values, or an error naming the key.
fn factors(model: &HfModel, key: &str, v: &Value) -> Result<Vec<f32>> {
    let list = v
        .as_array()
        .ok_or_else(|| model.bad(&format!("rope_parameters.{key}"), "not a list"))?;
    list.iter()
        .map(|x| {
            x.as_f64().map(|f| f as f32).ok_or_else(|| {
                model.bad(
                    &format!("rope_parameters.{key}"),
                    format!("{x} is not a number"),
                )
            })
        })
        .collect()
}

impl Architecture for Phi3 {
    fn name(&self) -> &'static str {
        "phi3"
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["Phi3ForCausalLM"]
    }

    fn complete_config(&self, c: &mut Map<String, Value>) {
        // Phi3Config (transformers 5) defaults for what the conversion reads.
        for (k, v) in [
            ("vocab_size", Value::from(32064)),
            ("max_position_embeddings", Value::from(4096)),
            ("original_max_position_embeddings", Value::from(4096)),
            ("rms_norm_eps", Value::from(1e-5)),
        ] {
            c.entry(k).or_insert(v);
        }
        if !c.get("num_key_value_heads").is_some_and(Value::is_number) {
            if let Some(h) = c.get("num_attention_heads").cloned() {
                c.insert("num_key_value_heads".into(), h);
            }
        }
        rope_parameters(c, 10000.0);
        mirror_rope(c);
    }

    fn filter(&self, name: &str) -> Option<String> {
        super::text_model_filter(name)
    }

    fn map_tensor(&self, model: &HfModel, name: &str) -> Result<(String, Transform)> {
        let n = map_tables(model, name, &[DECODER, FFN_NORM, FUSED], "phi3")?;
        Ok((n, Transform::None))
    }

    fn text_parameters(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        let rope = rope(model);
        let u32_of = |keys: &[&str]| -> Result<GgufValue> {
            let v = model
                .find(keys)
                .ok_or_else(|| model.bad(keys[0], "missing"))?;
            u32_value(model, keys[0], v)
        };
        let orig = rope
            .get("original_max_position_embeddings")
            .ok_or_else(|| model.bad("original_max_position_embeddings", "missing"))?;
        kv.set(
            "phi3.context_length",
            u32_of(&["n_positions", "max_position_embeddings"])?,
        );
        kv.set(
            "phi3.rope.scaling.original_context_length",
            u32_value(model, "original_max_position_embeddings", orig)?,
        );
        kv.set("phi3.embedding_length", u32_of(&["hidden_size", "n_embd"])?);
        kv.set("phi3.feed_forward_length", u32_of(&["intermediate_size"])?);
        kv.set("phi3.block_count", GgufValue::U32(model.block_count as u32));
        kv.set(
            "phi3.attention.head_count",
            u32_of(&["num_attention_heads", "n_head"])?,
        );
        kv.set(
            "phi3.attention.head_count_kv",
            u32_of(&["num_key_value_heads", "n_head_kv"])?,
        );
        let eps = model
            .find(&["rms_norm_eps"])
            .ok_or_else(|| model.bad("rms_norm_eps", "missing"))?;
        kv.set(
            "phi3.attention.layer_norm_rms_epsilon",
            f32_value(model, "rms_norm_eps", eps)?,
        );
        kv.set(
            "phi3.rope.dimension_count",
            GgufValue::U32(rope_dims(model)? as u32),
        );
        let full = rope
            .get("full_attention")
            .and_then(Value::as_object)
            .unwrap_or(&rope);
        let theta = full
            .get("rope_theta")
            .ok_or_else(|| model.bad("rope_theta", "missing"))?;
        kv.set(
            "phi3.rope.freq_base",
            f32_value(model, "rope_theta", theta)?,
        );
        kv.set("general.file_type", GgufValue::U32(0));
        let window = match model.hparams.get("sliding_window") {
            None | Some(Value::Null) => GgufValue::U32(0),
            Some(v) => u32_value(model, "sliding_window", v)?,
        };
        kv.set("phi3.attention.sliding_window", window);
        Ok(())
    }

    fn set_gguf_parameters(&self, _model: &HfModel, _kv: &mut KvList) -> Result<()> {
        Ok(())
    }

    fn extra_tensors(&self, model: &HfModel, kv: &mut KvList) -> Result<Vec<Generated>> {
        let rope = rope(model);
        let long = rope.get("long_factor").filter(|v| !v.is_null());
        let long = match long {
            Some(Value::Array(a)) if a.is_empty() => None,
            other => other,
        };
        let Some(long) = long else {
            return Ok(Vec::new());
        };
        let max_pos = model.uint(&["n_positions", "max_position_embeddings"])? as f64;
        let orig = rope_number(model, &rope, "original_max_position_embeddings")?
            .ok_or_else(|| model.bad("original_max_position_embeddings", "missing"))?;
        let scale = max_pos / orig;
        let ty = rope
            .get("rope_type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_lowercase();
        let attn_factor = match ty.as_str() {
            "" => return Err(model.bad("rope_parameters.rope_type", "missing")),
            "su" | "longrope" if scale > 1.0 => (1.0 + scale.ln() / orig.ln()).sqrt(),
            "yarn" if scale > 1.0 => 0.1 * scale.ln() + 1.0,
            "su" | "longrope" | "yarn" => 1.0,
            other => {
                return Err(model.bad(
                    "rope_parameters.rope_type",
                    format!("rope scaling type '{other}' is not supported (as in the reference)"),
                ))
            }
        };
        kv.set(
            "phi3.rope.scaling.attn_factor",
            GgufValue::F32(attn_factor as f32),
        );
        let long = factors(model, "long_factor", long)?;
        let short = rope
            .get("short_factor")
            .filter(|v| !v.is_null())
            .ok_or_else(|| model.bad("rope_parameters.short_factor", "missing"))?;
        let short = factors(model, "short_factor", short)?;
        let half = rope_dims(model)? as usize / 2;
        if long.len() != short.len() || long.len() != half || rope_dims(model)? % 2 != 0 {
            return Err(model.bad(
                "rope_parameters.long_factor",
                format!(
                    "long and short factors must have {half} entries (rope dims / 2): {} and {}",
                    long.len(),
                    short.len()
                ),
            ));
        }
        Ok(vec![
            Generated {
                name: "rope_factors_long.weight".into(),
                shape: vec![long.len()],
                values: long,
            },
            Generated {
                name: "rope_factors_short.weight".into(),
                shape: vec![short.len()],
                values: short,
            },
        ])
    }

    fn vocab_files(&self) -> &'static [&'static str] {
        &["tokenizer.model", "tokenizer_config.json"]
    }

    fn set_vocab(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        let cfg_path = model.dir.join("tokenizer_config.json");
        let cfg = read_json(&cfg_path)?;
        if let Some(cfg) = &cfg {
            let class = cfg.get("tokenizer_class").ok_or_else(|| {
                Error::file(
                    &cfg_path,
                    "json",
                    "no tokenizer_class (the reference reads it)",
                )
            })?;
            if class.as_str() == Some("GPT2Tokenizer") {
                let vocab = model
                    .find(&["vocab_size"])
                    .and_then(Value::as_u64)
                    .map(|v| v as usize);
                return crate::arch::tokenizer::bpe::set_vocab_gpt2(&model.dir, vocab, kv);
            }
        }
        let path = model.dir.join("tokenizer.model");
        if !path.is_file() {
            return Err(Error::file(&path, "tokenizer", "missing"));
        }
        let sp = sentencepiece::load_model(&path)?;
        let vocab_size = match model.find(&["vocab_size"]) {
            Some(v) => v
                .as_u64()
                .ok_or_else(|| model.bad("vocab_size", format!("{v} is not an integer")))?
                as usize,
            None => sp.pieces.len(),
        };
        if sp.pieces.len() > vocab_size {
            return Err(model.bad(
                "vocab_size",
                format!(
                    "{vocab_size} is below the {} pieces of tokenizer.model",
                    sp.pieces.len()
                ),
            ));
        }
        let (mut tokens, mut scores, mut types) = sentencepiece::base_vocab(&sp, vocab_size);
        // Phi-3 asks SentencePiece IsUnknown/IsControl/IsUnused/IsByte only.
        for t in types.iter_mut().take(sp.pieces.len()) {
            if *t == TokenType::UserDefined {
                *t = TokenType::Normal;
            }
        }
        let added_path = model.dir.join("added_tokens.json");
        if let Some(added) = read_json(&added_path)? {
            let map = added
                .as_object()
                .ok_or_else(|| Error::file(&added_path, "json", "not an object"))?;
            for (key, id) in map {
                let id = id.as_u64().ok_or_else(|| {
                    Error::file(
                        &added_path,
                        "json",
                        format!("token '{key}': id is not an integer"),
                    )
                })? as usize;
                if id >= vocab_size {
                    continue;
                }
                tokens[id] = key.clone();
                scores[id] = -1000.0;
                types[id] = TokenType::UserDefined;
            }
        }
        let mut put = |path: &std::path::Path, id: usize, data: &Value| -> Result<()> {
            let content = data.get("content").and_then(Value::as_str).ok_or_else(|| {
                Error::file(path, "json", format!("added token {id} has no content"))
            })?;
            if id >= vocab_size {
                return Err(Error::file(
                    path,
                    "json",
                    format!("added token {id} is not below vocab_size {vocab_size}"),
                ));
            }
            tokens[id] = content.to_string();
            scores[id] = -1000.0;
            let special = data.get("special").and_then(Value::as_bool) == Some(true);
            types[id] = if special {
                TokenType::Control
            } else {
                TokenType::UserDefined
            };
            Ok(())
        };
        if let Some(decoder) = cfg
            .as_ref()
            .and_then(|c| c.get("added_tokens_decoder"))
            .and_then(Value::as_object)
        {
            for (id, data) in decoder {
                let id: usize = id.parse().map_err(|_| {
                    Error::file(
                        &cfg_path,
                        "json",
                        format!("added_tokens_decoder key '{id}' is not a token id"),
                    )
                })?;
                put(&cfg_path, id, data)?;
            }
        }
        let json_path = model.dir.join("tokenizer.json");
        if let Some(t) = read_json(&json_path)? {
            for data in t
                .get("added_tokens")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let id = data.get("id").and_then(Value::as_u64).ok_or_else(|| {
                    Error::file(
                        &json_path,
                        "tokenizer.json",
                        "an added token has no integer id",
                    )
                })? as usize;
                put(&json_path, id, data)?;
            }
        }
        let n = tokens.len();
        kv.set("tokenizer.ggml.model", GgufValue::String("llama".into()));
        kv.set("tokenizer.ggml.pre", GgufValue::String("default".into()));
        kv.set("tokenizer.ggml.tokens", string_array(tokens));
        kv.set(
            "tokenizer.ggml.scores",
            GgufValue::Array(6, scores.into_iter().map(GgufValue::F32).collect()),
        );
        kv.set("tokenizer.ggml.token_type", type_array(&types));
        special::SpecialVocab::load(&model.dir, Some(n), special::DEFAULT_TYPES)?.add_to(kv)
    }
}
