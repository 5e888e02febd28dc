//! Hyperparameter key/values shared by the architectures: config values as GGUF types, rope
//! parameters, the text-model keys convert_hf_to_gguf.py's base class writes, pooling.

use serde_json::{Map, Value};

use quant_core::{Error, Result};

use super::{HfModel, KvList};
use crate::gguf::GgufValue;

/// A JSON number as gguf-py's `add_uint32` / `add_float32` store it (Python int → u32,
/// float → f32); `None` for other JSON.
fn u32_value(model: &HfModel, key: &str, v: &Value) -> Result<GgufValue> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .map(GgufValue::U32)
        .ok_or_else(|| model.bad(key, format!("{v} is not a u32")))
}

fn f32_value(model: &HfModel, key: &str, v: &Value) -> Result<GgufValue> {
    v.as_f64()
        .map(|x| GgufValue::F32(x as f32))
        .ok_or_else(|| model.bad(key, format!("{v} is not a number")))
}

/// The rope parameters the reference sees: transformers (5.x) folds `rope_theta` and
/// `rope_scaling` into `rope_parameters` (`type` → `rope_type`, default `default`).
pub fn rope_parameters(config: &mut Map<String, Value>, default_theta: f64) {
    if config.get("rope_parameters").is_some_and(Value::is_object) {
        return;
    }
    let mut rope = match config.get("rope_scaling") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    if let Some(t) = rope.remove("type") {
        rope.entry("rope_type").or_insert(t);
    }
    let theta = config
        .get("rope_theta")
        .filter(|t| t.is_number())
        .cloned()
        .unwrap_or_else(|| Value::from(default_theta));
    rope.entry("rope_theta").or_insert(theta);
    rope.entry("rope_type")
        .or_insert_with(|| Value::from("default"));
    config.insert("rope_parameters".into(), Value::Object(rope));
}

/// `TextModel.set_gguf_parameters` for the hyperparameters of dense text models (no
/// experts): block count, context, widths, heads, causality, rope, norm epsilons, head
/// dims, then `general.file_type` (placeholder 0).
pub fn text_model_parameters(model: &HfModel, arch: &str, kv: &mut KvList) -> Result<()> {
    let key = |k: &str| format!("{arch}.{k}");
    kv.set(key("block_count"), GgufValue::U32(model.block_count as u32));
    let u32_keys: [(&[&str], &str); 5] = [
        (
            &[
                "max_position_embeddings",
                "n_ctx",
                "n_positions",
                "max_length",
                "max_sequence_length",
                "model_max_length",
            ],
            "context_length",
        ),
        (&["hidden_size", "n_embd", "dim"], "embedding_length"),
        (
            &[
                "prefix_dense_intermediate_size",
                "dense_intermediate_size",
                "intermediate_size",
                "n_inner",
                "hidden_dim",
            ],
            "feed_forward_length",
        ),
        (
            &["num_attention_heads", "n_head", "n_heads"],
            "attention.head_count",
        ),
        (
            &["num_key_value_heads", "n_kv_heads"],
            "attention.head_count_kv",
        ),
    ];
    for (names, k) in u32_keys {
        if let Some(v) = model.find(names) {
            kv.set(key(k), u32_value(model, names[0], v)?);
        }
    }
    if model.hparams.get("is_causal") == Some(&Value::Bool(false)) {
        kv.set(key("attention.causal"), GgufValue::Bool(false));
    }
    let rope = model
        .hparams
        .get("rope_parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let rope = rope
        .get("full_attention")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or(rope);
    if let Some(t) = rope.get("rope_type").and_then(Value::as_str) {
        let factor = rope.get("factor").filter(|f| f.is_number());
        match (t, factor) {
            ("linear", Some(f)) => {
                kv.set(key("rope.scaling.type"), GgufValue::String("linear".into()));
                kv.set(key("rope.scaling.factor"), f32_value(model, "factor", f)?);
            }
            ("default" | "linear", _) => {}
            (other, _) => {
                return Err(model.bad(
                    "rope_parameters.rope_type",
                    format!(
                        "rope type '{other}' is not converted by quant (default and linear are)"
                    ),
                ))
            }
        }
    }
    if let Some(theta) = rope.get("rope_theta").filter(|v| !v.is_null()) {
        kv.set(
            key("rope.freq_base"),
            f32_value(model, "rope_theta", theta)?,
        );
    }
    if let Some(v) = model.find(&["rms_norm_eps", "norm_eps"]) {
        kv.set(
            key("attention.layer_norm_rms_epsilon"),
            f32_value(model, "rms_norm_eps", v)?,
        );
    }
    if let Some(v) = model.find(&["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"]) {
        kv.set(
            key("attention.layer_norm_epsilon"),
            f32_value(model, "layer_norm_eps", v)?,
        );
    }
    if model
        .find(&["num_local_experts", "num_experts", "n_routed_experts"])
        .is_some()
    {
        return Err(model.bad(
            "num_local_experts",
            "mixture-of-experts models are not converted by quant",
        ));
    }
    if let Some(h) = model.hparams.get("head_dim").filter(|v| !v.is_null()) {
        kv.set(
            key("attention.key_length"),
            u32_value(model, "head_dim", h)?,
        );
        kv.set(
            key("attention.value_length"),
            u32_value(model, "head_dim", h)?,
        );
    }
    kv.set("general.file_type", GgufValue::U32(0));
    Ok(())
}

/// `_try_set_pooling_type`: a sentence-transformers folder's pooling (`modules.json` →
/// the Pooling module's `config.json`) as `{arch}.pooling_type`.
pub fn set_pooling_type(model: &HfModel, arch: &str, kv: &mut KvList) -> Result<()> {
    let modules_path = model.dir.join("modules.json");
    let Some(modules) = crate::arch::tokenizer::read_json(&modules_path)? else {
        return Ok(());
    };
    let pooling_dir = modules.as_array().into_iter().flatten().find_map(|m| {
        m.get("type")
            .and_then(Value::as_str)
            .filter(|t| t.ends_with("Pooling"))
            .and_then(|_| m.get("path").and_then(Value::as_str))
    });
    let Some(pooling_dir) = pooling_dir else {
        return Ok(());
    };
    let path = model.dir.join(pooling_dir).join("config.json");
    let pooling = crate::arch::tokenizer::read_json(&path)?
        .ok_or_else(|| Error::file(&path, "json", "the pooling module's config is missing"))?;
    let on = |k: &str| pooling.get(k).and_then(Value::as_bool) == Some(true);
    let ty = if on("pooling_mode_mean_tokens") {
        1
    } else if on("pooling_mode_cls_token") {
        2
    } else if on("pooling_mode_lasttoken") {
        3
    } else {
        match pooling.get("pooling_mode").and_then(Value::as_str) {
            Some("mean") => 1,
            Some("cls") => 2,
            Some("lasttoken") => 3,
            _ => {
                return Err(Error::file(
                    &path,
                    "json",
                    "only mean, cls and last-token pooling are supported (as llama.cpp)",
                ))
            }
        }
    };
    kv.set(format!("{arch}.pooling_type"), GgufValue::U32(ty));
    Ok(())
}
