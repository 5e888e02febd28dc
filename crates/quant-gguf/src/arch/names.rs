//! Tensor-name tables: Hugging Face names with `{bid}` block patterns mapped to llama.cpp's,
//! and the tensors every text model drops.

use quant_core::{Error, Result};

use super::HfModel;

/// Matches `name` against a pattern where `{bid}` stands for a block number below
/// `blocks`; returns the block number (or `Some(None)` for patterns without one).
pub fn match_pattern(pattern: &str, name: &str, blocks: usize) -> Option<Option<usize>> {
    match pattern.split_once("{bid}") {
        None => (pattern == name).then_some(None),
        Some((pre, post)) => {
            let mid = name.strip_prefix(pre)?.strip_suffix(post)?;
            if mid.is_empty() || !mid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let bid: usize = mid.parse().ok()?;
            (bid < blocks).then_some(Some(bid))
        }
    }
}

/// gguf-py's `TensorNameMap.get_name` with suffixes `.weight`/`.bias` over a table of
/// (HF base name, llama.cpp base name) patterns.
pub fn map_name(table: &[(&str, &str)], name: &str, blocks: usize) -> Option<String> {
    let lookup = |base: &str| {
        table.iter().find_map(|(hf, gg)| {
            match_pattern(hf, base, blocks).map(|bid| match bid {
                Some(b) => gg.replace("{bid}", &b.to_string()),
                None => gg.to_string(),
            })
        })
    };
    if let Some(n) = lookup(name) {
        return Some(n);
    }
    for suffix in [".weight", ".bias"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(n) = lookup(base) {
                return Some(n + suffix);
            }
        }
    }
    None
}

/// The decoder names every llama-like text model shares (gguf-py `tensor_mapping.py`):
/// embeddings, output head and norm, the attention norm and output projection.
pub const DECODER: &[(&str, &str)] = &[
    ("model.embed_tokens", "token_embd"),
    ("lm_head", "output"),
    ("model.norm", "output_norm"),
    ("model.layers.{bid}.input_layernorm", "blk.{bid}.attn_norm"),
    (
        "model.layers.{bid}.self_attn.o_proj",
        "blk.{bid}.attn_output",
    ),
];

/// Separate q/k/v projections (all but phi3's fused `qkv_proj`).
pub const QKV: &[(&str, &str)] = &[
    ("model.layers.{bid}.self_attn.q_proj", "blk.{bid}.attn_q"),
    ("model.layers.{bid}.self_attn.k_proj", "blk.{bid}.attn_k"),
    ("model.layers.{bid}.self_attn.v_proj", "blk.{bid}.attn_v"),
];

/// `post_attention_layernorm` as the feed-forward norm (llama, qwen, phi3; gemma has its own).
pub const FFN_NORM: &[(&str, &str)] = &[(
    "model.layers.{bid}.post_attention_layernorm",
    "blk.{bid}.ffn_norm",
)];

/// The gated feed-forward.
pub const DENSE_FFN: &[(&str, &str)] = &[
    ("model.layers.{bid}.mlp.gate_proj", "blk.{bid}.ffn_gate"),
    ("model.layers.{bid}.mlp.up_proj", "blk.{bid}.ffn_up"),
    ("model.layers.{bid}.mlp.down_proj", "blk.{bid}.ffn_down"),
];

/// Per-head q/k norms (qwen3, qwen3moe, gemma3).
pub const QK_NORM: &[(&str, &str)] = &[
    (
        "model.layers.{bid}.self_attn.q_norm",
        "blk.{bid}.attn_q_norm",
    ),
    (
        "model.layers.{bid}.self_attn.k_norm",
        "blk.{bid}.attn_k_norm",
    ),
];

/// The llama.cpp name of `name` by the first of `tables` that maps it, or an error naming
/// the tensor, its folder and the architecture.
pub fn map_tables(
    model: &HfModel,
    name: &str,
    tables: &[&[(&str, &str)]],
    arch: &str,
) -> Result<String> {
    tables
        .iter()
        .find_map(|t| map_name(t, name, model.block_count))
        .ok_or_else(|| {
            Error::tensor(
                model.dir.as_path(),
                name,
                format!("cannot map the tensor to a llama.cpp name ({arch})"),
            )
        })
}

/// `TextModel.filter_tensors` then `ModelBase.filter_tensors`: multimodal towers are
/// dropped (`None`), `language_model.` prefixes removed.
pub fn text_model_filter(name: &str) -> Option<String> {
    const PREFIXES: [&str; 10] = [
        "mlp",
        "vit.",
        "vpm.",
        "siglip2.",
        "conformer.",
        "merger.",
        "resampler.",
        "sound_encoder.",
        "sound_projection.",
        "speech_embeddings.",
    ];
    const PARTS: [&str; 17] = [
        "visual.",
        "vision.",
        "audio.",
        "talker.",
        "vision_",
        "audio_",
        "token2wav.",
        "code2wav.",
        "projector.",
        "pre_mm_projector_norm",
        "image_newline",
        "view_seperator",
        "patch_embed",
        "patch_embedding",
        "patch_merger.",
        "patch_merge_mlp.",
        "model.connector.",
    ];
    if PREFIXES.iter().any(|p| name.starts_with(p)) || PARTS.iter().any(|p| name.contains(p)) {
        return None;
    }
    let name = match name.strip_suffix("e_score_correction_bias") {
        Some(b) => format!("{b}e_score_correction.bias"),
        None => name.to_string(),
    };
    Some(name.replace("language_model.", ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_need_a_block_below_the_count() {
        assert_eq!(match_pattern("a.{bid}.b", "a.3.b", 4), Some(Some(3)));
        assert_eq!(match_pattern("a.{bid}.b", "a.4.b", 4), None);
        assert_eq!(match_pattern("a.{bid}.b", "a.x.b", 4), None);
        assert_eq!(match_pattern("a.b", "a.b", 4), Some(None));
    }
}
