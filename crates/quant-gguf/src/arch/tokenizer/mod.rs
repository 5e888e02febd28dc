//! The `tokenizer.*` keys convert_hf_to_gguf.py (llama.cpp b11312) writes: SentencePiece
//! vocabularies from `tokenizer.model` ([`sentencepiece`]), WordPiece vocabularies from
//! `tokenizer.json` / `vocab.txt` ([`wordpiece`]), and the special tokens, add-BOS/EOS/SEP
//! flags and chat template gguf-py's `SpecialVocab` reads ([`special`]).

pub mod pre_hashes;
pub mod sentencepiece;
pub mod special;
pub mod wordpiece;

use std::path::Path;

use quant_core::{Error, Result};

use crate::gguf::GgufValue;
use crate::gguf::KvList;

/// llama.cpp's token types (`llama_token_type`, the SentencePiece piece types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// 1.
    Normal,
    /// 2.
    Unknown,
    /// 3.
    Control,
    /// 4.
    UserDefined,
    /// 5.
    Unused,
    /// 6.
    Byte,
}

impl TokenType {
    /// The stored number.
    pub const fn id(self) -> i32 {
        match self {
            TokenType::Normal => 1,
            TokenType::Unknown => 2,
            TokenType::Control => 3,
            TokenType::UserDefined => 4,
            TokenType::Unused => 5,
            TokenType::Byte => 6,
        }
    }

    /// The type of a SentencePiece piece type number (unknown numbers are NORMAL, as
    /// SentencePiece's `Is*` queries answer false for them).
    pub const fn from_piece_type(t: i32) -> Self {
        match t {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        }
    }
}

/// `TextModel.does_token_look_special`: added tokens some models forget to mark special.
pub fn does_token_look_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// A string array value.
pub fn string_array(items: Vec<String>) -> GgufValue {
    GgufValue::Array(8, items.into_iter().map(GgufValue::String).collect())
}

/// An i32 array of token types.
pub fn type_array(types: &[TokenType]) -> GgufValue {
    GgufValue::Array(5, types.iter().map(|t| GgufValue::I32(t.id())).collect())
}

/// Reads a JSON file of the model folder, `None` when it does not exist.
pub fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::file(path, "json", e.to_string()))
}

/// `_set_vocab_sentencepiece`: the `llama` tokenizer from `dir/tokenizer.model` with the
/// folder's added tokens, then the special tokens. `vocab_size` is the config's (the
/// model's piece count when absent).
pub fn set_vocab_sentencepiece(
    dir: &Path,
    vocab_size: Option<usize>,
    kv: &mut KvList,
) -> Result<()> {
    let path = dir.join("tokenizer.model");
    let model = sentencepiece::load_model(&path)?;
    let vocab_size = vocab_size.unwrap_or(model.pieces.len());
    let (mut tokens, mut scores, mut types) = sentencepiece::base_vocab(&model, vocab_size);

    let added_path = dir.join("added_tokens.json");
    if let Some(added) = read_json(&added_path)? {
        let Some(map) = added.as_object() else {
            return Err(Error::file(&added_path, "json", "not an object"));
        };
        for (key, id) in map {
            let Some(id) = id.as_u64().map(|i| i as usize) else {
                return Err(Error::file(
                    &added_path,
                    "json",
                    format!("token '{key}': id is not an integer"),
                ));
            };
            if id >= vocab_size {
                continue;
            }
            tokens[id] = key.clone();
            scores[id] = -1000.0;
            types[id] = TokenType::UserDefined;
        }
    }

    let config_path = dir.join("tokenizer_config.json");
    if let Some(cfg) = read_json(&config_path)? {
        if let Some(decoder) = cfg.get("added_tokens_decoder").and_then(|d| d.as_object()) {
            for (id, data) in decoder {
                let id: usize = id.parse().map_err(|_| {
                    Error::file(
                        &config_path,
                        "json",
                        format!("added_tokens_decoder key '{id}' is not a token id"),
                    )
                })?;
                let Some(content) = data.get("content").and_then(|c| c.as_str()) else {
                    return Err(Error::file(
                        &config_path,
                        "json",
                        format!("added token {id} has no content"),
                    ));
                };
                if id >= vocab_size {
                    continue;
                }
                let special = data.get("special").and_then(|s| s.as_bool()) == Some(true);
                let mut content = content.to_string();
                if special || does_token_look_special(&content) {
                    types[id] = TokenType::Control;
                } else {
                    content = content.replace('\u{2581}', " ");
                    types[id] = TokenType::UserDefined;
                }
                scores[id] = -1000.0;
                tokens[id] = content;
            }
        }
    }
    // The reference pads when the lists are shorter than vocab_size, which they never are
    // here: they were created with vocab_size entries.

    kv.set("tokenizer.ggml.model", GgufValue::String("llama".into()));
    kv.set("tokenizer.ggml.pre", GgufValue::String("default".into()));
    kv.set("tokenizer.ggml.tokens", string_array(tokens));
    kv.set(
        "tokenizer.ggml.scores",
        GgufValue::Array(6, scores.into_iter().map(GgufValue::F32).collect()),
    );
    kv.set("tokenizer.ggml.token_type", type_array(&types));
    special::SpecialVocab::load(dir, Some(vocab_size), special::DEFAULT_TYPES)?.add_to(kv)
}
