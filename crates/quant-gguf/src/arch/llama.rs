//! `LlamaModel` of convert_hf_to_gguf.py (arch `llama`): LlamaForCausalLM,
//! MistralForCausalLM (Mistral is written as `llama`; its `sliding_window` is dropped, as
//! the reference does) and MixtralForCausalLM (per-expert `block_sparse_moe.experts.N.w*`
//! stacked into `ffn_{gate,down,up}_exps`, the router as `ffn_gate_inp`). `q_proj`/`k_proj`
//! are permuted for llama.cpp's rope by `num_attention_heads` / `num_key_value_heads`;
//! `v_proj` is copied. Llama 3's `rope_type: llama3` becomes the `rope_freqs` tensor
//! ([`llama3_rope_factors`]). The vocabulary comes from `tokenizer.model` (SentencePiece),
//! else from `tokenizer.json`: Llama 3's byte-level BPE (`_set_vocab_gpt2`); SentencePiece
//! vocabularies stored only in `tokenizer.json` (`_set_vocab_llama_hf`) are refused.

use serde_json::{Map, Value};

use quant_core::{Error, Result};

use super::experts::{parse_expert, ExpertPart, Generated};
use super::hparams::{rope_number, rope_params};
use super::names::{map_tables, DECODER, DENSE_FFN, FFN_NORM, QKV};
use super::{rope_parameters, Architecture, HfModel, KvList, Transform};
use crate::arch::tokenizer::bpe::{llama_vocab_kind, HfVocabKind};
use crate::gguf::GgufValue;

/// The llama architecture.
#[derive(Debug)]
pub struct Llama;

/// Mixtral's router and experts (gguf-py `tensor_mapping.py`, MODEL_ARCH.LLAMA); the rest of
/// an HF Llama/Mistral/Mixtral checkpoint maps by the shared decoder tables.
const MIXTRAL: &[(&str, &str)] = &[
    (
        "model.layers.{bid}.block_sparse_moe.gate",
        "blk.{bid}.ffn_gate_inp",
    ),
    (
        "layers.{bid}.feed_forward.experts.w1",
        "blk.{bid}.ffn_gate_exps",
    ),
    (
        "layers.{bid}.feed_forward.experts.w2",
        "blk.{bid}.ffn_down_exps",
    ),
    (
        "layers.{bid}.feed_forward.experts.w3",
        "blk.{bid}.ffn_up_exps",
    ),
];

/// Mixtral's expert weights, in the order `LlamaModel.modify_tensors` stacks them.
const EXPERT_KINDS: [&str; 3] = ["w1", "w2", "w3"];

fn is_mixtral(model: &HfModel) -> bool {
    model
        .raw_config
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str)
        == Some("MixtralForCausalLM")
}

/// `LlamaModel.generate_extra_tensors` for `rope_type: llama3`: the per-frequency rope
/// factors, computed in float32 as the reference's torch code does.
pub fn llama3_rope_factors(model: &HfModel) -> Result<Option<Vec<f32>>> {
    let rope = rope_params(model);
    let is_llama3 = rope
        .get("rope_type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("llama3"));
    if !is_llama3 {
        return Ok(None);
    }
    let base = rope_number(model, &rope, "rope_theta")?.unwrap_or(10000.0);
    let dim = match model.hparams.get("head_dim").filter(|v| !v.is_null()) {
        Some(d) => d
            .as_u64()
            .ok_or_else(|| model.bad("head_dim", format!("{d} is not an integer")))?,
        None => model.uint(&["hidden_size"])? / model.uint(&["num_attention_heads"])?.max(1),
    };
    if dim == 0 || dim > 1 << 16 {
        return Err(model.bad("head_dim", format!("{dim} is not a usable rope dimension")));
    }
    let factor = rope_number(model, &rope, "factor")?.unwrap_or(8.0) as f32;
    let low = rope_number(model, &rope, "low_freq_factor")?.unwrap_or(1.0);
    let high = rope_number(model, &rope, "high_freq_factor")?.unwrap_or(4.0);
    let old_ctx = rope_number(model, &rope, "original_max_position_embeddings")?.unwrap_or(8192.0);
    // Python floats: the wavelength bounds in double, compared with float32 tensors.
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    let base = base as f32;
    let mut out = Vec::with_capacity(dim as usize / 2);
    for i in (0..dim).step_by(2) {
        let freq = 1.0f32 / base.powf(i as f32 / dim as f32);
        let wavelen = two_pi / freq;
        let w = f64::from(wavelen);
        out.push(if w < high_wavelen {
            1.0
        } else if w > low_wavelen {
            factor
        } else {
            let smooth = (old_ctx as f32 / wavelen - low as f32) / (high - low) as f32;
            1.0 / ((1.0 - smooth) / factor + smooth)
        });
    }
    Ok(Some(out))
}

impl Architecture for Llama {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &[
            "LlamaForCausalLM",
            "MistralForCausalLM",
            "MixtralForCausalLM",
        ]
    }

    fn complete_config(&self, c: &mut Map<String, Value>) {
        let mixtral = c
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            == Some("MixtralForCausalLM");
        if mixtral {
            // MixtralConfig (transformers 5): head_dim stays None when absent.
            for (k, v) in [
                ("num_local_experts", Value::from(8)),
                ("num_experts_per_tok", Value::from(2)),
                ("rms_norm_eps", Value::from(1e-5)),
                ("max_position_embeddings", Value::from(4096 * 32)),
            ] {
                c.entry(k).or_insert(v);
            }
            if !c.get("num_key_value_heads").is_some_and(Value::is_number) {
                let v = c
                    .get("num_attention_heads")
                    .cloned()
                    .unwrap_or(Value::from(8));
                c.insert("num_key_value_heads".into(), v);
            }
            rope_parameters(c, 1_000_000.0);
            return;
        }
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
        let gguf = map_tables(
            model,
            name,
            &[DECODER, QKV, FFN_NORM, DENSE_FFN, MIXTRAL],
            "llama",
        )?;
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
        &["tokenizer.model", "tokenizer.json"]
    }

    fn extra_tensors(&self, model: &HfModel, _kv: &mut KvList) -> Result<Vec<Generated>> {
        Ok(match llama3_rope_factors(model)? {
            Some(values) => vec![Generated {
                name: "rope_freqs.weight".into(),
                shape: vec![values.len()],
                values,
            }],
            None => Vec::new(),
        })
    }

    fn expert_part(&self, model: &HfModel, name: &str) -> Result<Option<ExpertPart>> {
        if !name.contains("block_sparse_moe.experts") {
            return Ok(None);
        }
        if !is_mixtral(model) {
            return Err(Error::tensor(
                model.dir.as_path(),
                name,
                "expert weights in a model that is not MixtralForCausalLM",
            ));
        }
        let Some((block, expert, kind)) = parse_expert(
            name,
            "model.layers.",
            "block_sparse_moe.experts.",
            &EXPERT_KINDS,
        ) else {
            return Err(Error::tensor(
                model.dir.as_path(),
                name,
                "not a per-expert weight model.layers.N.block_sparse_moe.experts.M.w{1,2,3}.weight",
            ));
        };
        let n_experts = model.uint(&["num_local_experts"])? as usize;
        Ok(Some(ExpertPart {
            block,
            expert,
            n_experts,
            kind,
            kinds: EXPERT_KINDS
                .iter()
                .map(|k| format!("layers.{block}.feed_forward.experts.{k}.weight"))
                .collect(),
        }))
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
        let vocab = model
            .find(&["vocab_size"])
            .and_then(Value::as_u64)
            .map(|v| v as usize);
        if model.dir.join("tokenizer.model").is_file() {
            crate::arch::tokenizer::set_vocab_sentencepiece(&model.dir, vocab, kv)?;
        } else {
            let json = model.dir.join("tokenizer.json");
            match llama_vocab_kind(&json)? {
                HfVocabKind::Gpt2 => crate::arch::tokenizer::bpe::set_vocab_gpt2(&model.dir, vocab, kv)?,
                HfVocabKind::LlamaHf => {
                    return Err(Error::file(
                        &json,
                        "tokenizer.json",
                        "a SentencePiece-style BPE (byte fallback) without tokenizer.model: the reference's LlamaHfVocab path is not converted by quant",
                    ))
                }
            }
        }
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
