//! `LlamaModel` of convert_hf_to_gguf.py (arch `llama`): LlamaForCausalLM and
//! MistralForCausalLM (Mistral is written as `llama`; its `sliding_window` is dropped, as
//! the reference does). `q_proj`/`k_proj` are permuted for llama.cpp's rope by
//! `num_attention_heads` / `num_key_value_heads`; `v_proj` is copied. The vocabulary comes
//! from `tokenizer.model` (SentencePiece); folders without one (Llama 3's BPE tokenizer)
//! are refused.

use serde_json::{Map, Value};

use quant_core::{Error, Result};

use super::{map_name, rope_parameters, Architecture, HfModel, KvList, Transform};
use crate::gguf::GgufValue;

/// The llama architecture.
#[derive(Debug)]
pub struct Llama;

/// HF → llama.cpp base names (gguf-py `tensor_mapping.py`, the entries of MODEL_ARCH.LLAMA
/// an HF Llama/Mistral checkpoint uses).
const NAMES: &[(&str, &str)] = &[
    ("model.embed_tokens", "token_embd"),
    ("lm_head", "output"),
    ("model.norm", "output_norm"),
    ("model.layers.{bid}.input_layernorm", "blk.{bid}.attn_norm"),
    ("model.layers.{bid}.self_attn.q_proj", "blk.{bid}.attn_q"),
    ("model.layers.{bid}.self_attn.k_proj", "blk.{bid}.attn_k"),
    ("model.layers.{bid}.self_attn.v_proj", "blk.{bid}.attn_v"),
    (
        "model.layers.{bid}.self_attn.o_proj",
        "blk.{bid}.attn_output",
    ),
    (
        "model.layers.{bid}.post_attention_layernorm",
        "blk.{bid}.ffn_norm",
    ),
    ("model.layers.{bid}.mlp.gate_proj", "blk.{bid}.ffn_gate"),
    ("model.layers.{bid}.mlp.up_proj", "blk.{bid}.ffn_up"),
    ("model.layers.{bid}.mlp.down_proj", "blk.{bid}.ffn_down"),
];

impl Architecture for Llama {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["LlamaForCausalLM", "MistralForCausalLM"]
    }

    fn complete_config(&self, c: &mut Map<String, Value>) {
        // LlamaConfig / MistralConfig (transformers 5) fill these in when absent.
        let heads = c.get("num_attention_heads").cloned();
        if !c.get("num_key_value_heads").is_some_and(Value::is_number) {
            if let Some(h) = heads.clone() {
                c.insert("num_key_value_heads".into(), h);
            }
        }
        if !c.get("head_dim").is_some_and(Value::is_number) {
            let hidden = c.get("hidden_size").and_then(Value::as_u64);
            let h = heads.as_ref().and_then(Value::as_u64).filter(|&h| h > 0);
            if let (Some(hidden), Some(h)) = (hidden, h) {
                c.insert("head_dim".into(), Value::from(hidden / h));
            }
        }
        c.entry("rms_norm_eps").or_insert_with(|| Value::from(1e-6));
        rope_parameters(c, 10000.0);
    }

    fn filter(&self, name: &str) -> Option<String> {
        super::text_model_filter(&name.replace("text_model.", ""))
    }

    fn map_tensor(&self, model: &HfModel, name: &str) -> Result<(String, Transform)> {
        let n_head = model.uint(&["n_heads", "num_attention_heads"])? as usize;
        let n_kv = model.uint(&["n_kv_heads", "num_key_value_heads"])? as usize;
        let transform = if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
            Transform::RopePermute(n_head)
        } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
            // permute(w, n_head, n_kv) uses n_kv whenever the two differ.
            Transform::RopePermute(n_kv)
        } else {
            Transform::None
        };
        let gguf = map_name(NAMES, name, model.block_count).ok_or_else(|| {
            Error::tensor(
                model.dir.as_path(),
                name,
                "cannot map the tensor to a llama.cpp name (llama)",
            )
        })?;
        Ok((gguf, transform))
    }

    fn set_gguf_parameters(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        let vocab = model.uint(&["vocab_size"])?;
        kv.set("llama.vocab_size", GgufValue::U32(vocab as u32));
        let rope_dim = match model.hparams.get("head_dim").and_then(Value::as_u64) {
            Some(d) => d,
            None => model.uint(&["hidden_size"])? / model.uint(&["num_attention_heads"])?.max(1),
        };
        kv.set(
            "llama.rope.dimension_count",
            GgufValue::U32(rope_dim as u32),
        );
        Ok(())
    }

    fn vocab_files(&self) -> &'static [&'static str] {
        &["tokenizer.model"]
    }

    fn set_vocab(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        let cfg = crate::arch::tokenizer::read_json(&model.dir.join("tokenizer_config.json"))?;
        if let Some(p) = cfg
            .as_ref()
            .and_then(|c| c.get("add_prefix_space"))
            .and_then(Value::as_bool)
        {
            kv.set("tokenizer.ggml.add_space_prefix", GgufValue::Bool(p));
        }
        if !model.dir.join("tokenizer.model").is_file() {
            return Err(Error::file(
                model.dir.join("tokenizer.model"),
                "tokenizer",
                "missing: quant converts SentencePiece llama vocabularies only (not tokenizer.json BPE ones)",
            ));
        }
        let vocab = model
            .find(&["vocab_size"])
            .and_then(Value::as_u64)
            .map(|v| v as usize);
        crate::arch::tokenizer::set_vocab_sentencepiece(&model.dir, vocab, kv)?;
        if vocab == Some(49152) {
            // The reference turns BOS off for granite's small models, keyed on this size.
            kv.set("tokenizer.ggml.add_bos_token", GgufValue::Bool(false));
        }
        if vocab == Some(32016) {
            return Err(model.bad(
                "vocab_size",
                "CodeLlama's infill tokens (vocab 32016) are not converted by quant",
            ));
        }
        Ok(())
    }
}
