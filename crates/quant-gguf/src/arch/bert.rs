//! `BertModel` of convert_hf_to_gguf.py (arch `bert`): BertModel, BertForMaskedLM and
//! sentence-transformers folders (their Pooling module gives `bert.pooling_type`). The
//! pooler, `position_ids` and the MLM/NSP heads are dropped; `bert.` prefixes and
//! `gamma`/`beta` names are normalised. The WordPiece vocabulary comes from
//! `tokenizer.json` (else `vocab.txt`), spelled with llama.cpp's phantom spaces.

use serde_json::{Map, Value};

use quant_core::{Error, Result};

use super::{map_name, set_pooling_type, Architecture, HfModel, KvList, Transform};
use crate::arch::tokenizer::{special, string_array, type_array, wordpiece};
use crate::gguf::GgufValue;

/// The bert architecture.
#[derive(Debug)]
pub struct Bert;

/// HF → llama.cpp base names (gguf-py `tensor_mapping.py`, MODEL_ARCH.BERT).
const NAMES: &[(&str, &str)] = &[
    ("embeddings.word_embeddings", "token_embd"),
    ("embeddings.token_type_embeddings", "token_types"),
    ("embeddings.position_embeddings", "position_embd"),
    ("embeddings.LayerNorm", "token_embd_norm"),
    (
        "encoder.layer.{bid}.attention.self.query",
        "blk.{bid}.attn_q",
    ),
    ("encoder.layer.{bid}.attention.self.key", "blk.{bid}.attn_k"),
    (
        "encoder.layer.{bid}.attention.self.value",
        "blk.{bid}.attn_v",
    ),
    (
        "encoder.layer.{bid}.attention.output.dense",
        "blk.{bid}.attn_output",
    ),
    (
        "encoder.layer.{bid}.attention.output.LayerNorm",
        "blk.{bid}.attn_output_norm",
    ),
    ("encoder.layer.{bid}.intermediate.dense", "blk.{bid}.ffn_up"),
    ("encoder.layer.{bid}.output.dense", "blk.{bid}.ffn_down"),
    (
        "encoder.layer.{bid}.output.LayerNorm",
        "blk.{bid}.layer_output_norm",
    ),
];

impl Architecture for Bert {
    fn name(&self) -> &'static str {
        "bert"
    }

    fn hf_classes(&self) -> &'static [&'static str] {
        &["BertModel", "BertForMaskedLM"]
    }

    fn complete_config(&self, c: &mut Map<String, Value>) {
        // BertConfig's defaults for what the conversion reads.
        c.entry("layer_norm_eps")
            .or_insert_with(|| Value::from(1e-12));
        c.entry("type_vocab_size").or_insert_with(|| Value::from(2));
        c.entry("max_position_embeddings")
            .or_insert_with(|| Value::from(512));
    }

    fn filter(&self, name: &str) -> Option<String> {
        let mut n = name.strip_prefix("bert.").unwrap_or(name).to_string();
        if let Some(b) = n.strip_suffix(".gamma") {
            n = format!("{b}.weight");
        }
        if let Some(b) = n.strip_suffix(".beta") {
            n = format!("{b}.bias");
        }
        if matches!(
            n.as_str(),
            "embeddings.position_ids" | "pooler.dense.weight" | "pooler.dense.bias"
        ) || n.starts_with("cls.predictions")
            || n.starts_with("cls.seq_relationship")
        {
            return None;
        }
        super::text_model_filter(&n)
    }

    fn map_tensor(&self, model: &HfModel, name: &str) -> Result<(String, Transform)> {
        let gguf = map_name(NAMES, name, model.block_count).ok_or_else(|| {
            Error::tensor(
                model.dir.as_path(),
                name,
                "cannot map the tensor to a llama.cpp name (bert)",
            )
        })?;
        Ok((gguf, Transform::None))
    }

    fn set_gguf_parameters(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        kv.set("bert.attention.causal", GgufValue::Bool(false));
        set_pooling_type(model, "bert", kv)?;
        if let Some(labels) = model.hparams.get("id2label").and_then(Value::as_object) {
            let dummy =
                labels.len() == 2 && labels.get("0").and_then(Value::as_str) == Some("LABEL_0");
            if !labels.is_empty() && !dummy {
                return Err(model.bad("id2label", "classifier heads are not converted by quant"));
            }
        }
        Ok(())
    }

    fn vocab_files(&self) -> &'static [&'static str] {
        &["tokenizer.json", "vocab.txt"]
    }

    fn set_vocab(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        let path = match model.dir.join("tokenizer.json") {
            p if p.is_file() => p,
            _ => model.dir.join("vocab.txt"),
        };
        let tok = wordpiece::open(&model.dir)?;
        let vocab = model
            .find(&["vocab_size"])
            .and_then(Value::as_u64)
            .map(|v| v as usize);
        let (tokens, types) = wordpiece::vocab_base(&tok, &path, vocab)?;
        let (hash, pre) = wordpiece::pre_tokenizer(&tok, &path)?;
        let Some(pre) = pre else {
            return Err(Error::file(
                &path,
                "tokenizer.json",
                format!("pre-tokenizer hash {hash} is not in llama.cpp's table (the reference refuses it too)"),
            ));
        };
        let n = tokens.len();
        let type_count = model
            .hparams
            .get("type_vocab_size")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        kv.set(
            "tokenizer.ggml.token_type_count",
            GgufValue::U32(type_count as u32),
        );
        let tokens = wordpiece::phantom_space(tokens, &types);
        kv.set("tokenizer.ggml.model", GgufValue::String("bert".into()));
        kv.set("tokenizer.ggml.pre", GgufValue::String(pre.into()));
        kv.set("tokenizer.ggml.tokens", string_array(tokens));
        kv.set("tokenizer.ggml.token_type", type_array(&types));
        special::SpecialVocab::load(&model.dir, Some(n), special::DEFAULT_TYPES)?.add_to(kv)
    }
}
