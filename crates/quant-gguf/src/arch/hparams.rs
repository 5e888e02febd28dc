//! Hyperparameter key/values shared by the architectures: config values as GGUF types, rope
//! parameters, the keys `TextModel.set_gguf_parameters` of convert_hf_to_gguf.py (llama.cpp
//! b11312) writes before each architecture's own (block count, context, widths, heads,
//! causality, rope, norm epsilons, experts, head dims, then `general.file_type`), pooling.

use serde_json::{Map, Value};

use quant_core::{Error, Result};

use super::{HfModel, KvList};
use crate::gguf::GgufValue;

/// A JSON number as gguf-py's `add_uint32` stores it (a Python int → u32).
pub fn u32_value(model: &HfModel, key: &str, v: &Value) -> Result<GgufValue> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .map(GgufValue::U32)
        .ok_or_else(|| model.bad(key, format!("{v} is not a u32")))
}

/// A JSON number as gguf-py's `add_float32` stores it (a Python float → f32).
pub fn f32_value(model: &HfModel, key: &str, v: &Value) -> Result<GgufValue> {
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
        // Anything but null is kept, for the key writer to accept or name.
        .filter(|t| !t.is_null())
        .cloned()
        .unwrap_or_else(|| Value::from(default_theta));
    rope.entry("rope_theta").or_insert(theta);
    rope.entry("rope_type")
        .or_insert_with(|| Value::from("default"));
    config.insert("rope_parameters".into(), Value::Object(rope));
}

/// The rope parameters `TextModel` reads (`rope_parameters`, its `full_attention` entry
/// when there is one).
pub fn rope_params(model: &HfModel) -> Map<String, Value> {
    let rope = model
        .hparams
        .get("rope_parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    rope.get("full_attention")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or(rope)
}

/// A number of the rope parameters, `None` when absent or null; an error naming it when
/// it is something else.
pub fn rope_number(model: &HfModel, rope: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
    match rope.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            model.bad(
                &format!("rope_parameters.{key}"),
                format!("{v} is not a number"),
            )
        }),
    }
}

/// `TextModel.set_gguf_parameters`.
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
    let rope = rope_params(model);
    if let Some(t) = rope.get("rope_type").filter(|t| !t.is_null()) {
        let Some(t) = t.as_str() else {
            return Err(model.bad("rope_parameters.rope_type", format!("{t} is not a string")));
        };
        let factor = rope_number(model, &rope, "factor")?;
        match (t, factor) {
            ("linear", Some(f)) => {
                kv.set(key("rope.scaling.type"), GgufValue::String("linear".into()));
                kv.set(key("rope.scaling.factor"), GgufValue::F32(f as f32));
            }
            ("yarn", Some(f)) => {
                kv.set(key("rope.scaling.type"), GgufValue::String("yarn".into()));
                kv.set(key("rope.scaling.factor"), GgufValue::F32(f as f32));
                let orig = rope
                    .get("original_max_position_embeddings")
                    .ok_or_else(|| {
                        model.bad(
                            "rope_parameters.original_max_position_embeddings",
                            "missing (yarn needs it)",
                        )
                    })?;
                kv.set(
                    key("rope.scaling.original_context_length"),
                    u32_value(model, "original_max_position_embeddings", orig)?,
                );
                let attn = match rope_number(model, &rope, "attention_factor")? {
                    Some(a) => Some(a),
                    None => rope_number(model, &rope, "attn_factor")?,
                };
                for (k, v) in [
                    (
                        "extrapolation_factor",
                        rope_number(model, &rope, "extrapolation_factor")?,
                    ),
                    ("attn_factor", attn),
                    ("beta_fast", rope_number(model, &rope, "beta_fast")?),
                    ("beta_slow", rope_number(model, &rope, "beta_slow")?),
                ] {
                    if let Some(v) = v {
                        let name = match k {
                            "extrapolation_factor" => "rope.scaling.yarn_ext_factor",
                            "attn_factor" => "rope.scaling.yarn_attn_factor",
                            "beta_fast" => "rope.scaling.yarn_beta_fast",
                            _ => "rope.scaling.yarn_beta_slow",
                        };
                        kv.set(key(name), GgufValue::F32(v as f32));
                    }
                }
            }
            ("su" | "longrope", _) => {
                kv.set(
                    key("rope.scaling.type"),
                    GgufValue::String("longrope".into()),
                );
            }
            // default / linear and yarn without a factor write nothing (the reference
            // warns "Unknown RoPE type" for default); llama3's factors are the
            // `rope_freqs` tensor; dynamic is handled per model.
            _ => {}
        }
    }
    if let Some(theta) = rope.get("rope_theta").filter(|v| !v.is_null()) {
        kv.set(
            key("rope.freq_base"),
            f32_value(model, "rope_theta", theta)?,
        );
    }
    if let Some(Value::Object(swa)) = model
        .hparams
        .get("rope_parameters")
        .and_then(|r| r.get("sliding_attention"))
    {
        if let Some(theta) = swa.get("rope_theta").filter(|v| !v.is_null()) {
            kv.set(
                key("rope.freq_base_swa"),
                f32_value(model, "rope_parameters.sliding_attention.rope_theta", theta)?,
            );
        }
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
    if let Some(v) = model.find(&["num_local_experts", "num_experts", "n_routed_experts"]) {
        kv.set(key("expert_count"), u32_value(model, "num_experts", v)?);
    }
    if let Some(v) = model.find(&[
        "num_experts_per_tok",
        "num_experts_per_token",
        "top_k_experts",
    ]) {
        kv.set(
            key("expert_used_count"),
            u32_value(model, "num_experts_per_tok", v)?,
        );
    }
    for (hf, gg) in [
        ("n_group", "expert_group_count"),
        ("topk_group", "expert_group_used_count"),
    ] {
        if let Some(v) = model.hparams.get(hf).filter(|v| !v.is_null()) {
            kv.set(key(gg), u32_value(model, hf, v)?);
        }
    }
    if let Some(f) = model.find(&[
        "score_function",
        "scoring_func",
        "score_func",
        "moe_router_activation",
        "moe_router_activation_func",
        "expert_selection_fn",
    ]) {
        let id = match f.as_str() {
            Some("softmax") => 1,
            Some("sigmoid") => 2,
            Some("sqrtsoftplus") => 4,
            _ => {
                return Err(model.bad(
                    "scoring_func",
                    format!("unsupported expert score gating function {f}"),
                ))
            }
        };
        kv.set(key("expert_gating_func"), GgufValue::U32(id));
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

/// `TextModel.__init__`'s mirroring of global rope keys into `rope_parameters` (when it
/// has no per-attention-type entries): a local theta as `sliding_attention.rope_theta`,
/// and `rope_theta`, `rope_type` (from `type`), `partial_rotary_factor`,
/// `original_max_position_embeddings` when absent.
pub fn mirror_rope(c: &mut Map<String, Value>) {
    let find = |c: &Map<String, Value>, keys: &[&str]| {
        keys.iter()
            .find_map(|k| c.get(*k))
            .filter(|v| !v.is_null())
            .cloned()
    };
    let theta = find(
        c,
        &[
            "global_rope_theta",
            "rope_global_theta",
            "rope_theta_global",
            "rope_theta",
            "rotary_emb_base",
        ],
    );
    let local = find(
        c,
        &[
            "local_rope_theta",
            "rope_local_theta",
            "rope_theta_local",
            "swa_rope_theta",
            "rope_local_base_freq",
        ],
    );
    let partial = find(c, &["partial_rotary_factor", "rope_pct", "rope_percent"]);
    let orig = find(c, &["original_max_position_embeddings"]);
    let mut rope = match c.get("rope_parameters").or_else(|| c.get("rope_scaling")) {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    if rope.contains_key("full_attention") || rope.contains_key("sliding_attention") {
        return;
    }
    if let Some(l) = local {
        rope.insert(
            "sliding_attention".into(),
            serde_json::json!({ "rope_theta": l }),
        );
    }
    for (k, v) in [
        ("rope_theta", theta),
        ("rope_type", rope.get("type").cloned()),
        ("partial_rotary_factor", partial),
        ("original_max_position_embeddings", orig),
    ] {
        if let Some(v) = v {
            rope.entry(k).or_insert(v);
        }
    }
    c.insert("rope_parameters".into(), Value::Object(rope));
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
