//! WordPiece (BERT) vocabularies as convert_hf_to_gguf.py builds them: `get_vocab_base`
//! over the Hugging Face tokenizer of `tokenizer.json` (run with the `tokenizers` crate,
//! the library transformers' fast tokenizers wrap), the pre-tokenizer name from
//! `get_vocab_base_pre`'s hash of the tokenization of a fixed text, and BertModel's
//! "phantom space" token spelling.

use std::collections::HashMap;
use std::path::Path;

use quant_core::{Error, Result};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::pre_hashes::PRE_TOKENIZER_HASHES;
use super::{does_token_look_special, TokenType};

/// The text `get_vocab_base_pre` tokenizes (llama.cpp b11312).
pub const CHECK_TEXT: &str = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u{200d}🌫\u{fe0f} (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

fn tok_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::file(path, "tokenizer.json", e.to_string())
}

/// Opens `dir/tokenizer.json` as transformers' fast tokenizer uses it for `encode`: with
/// the file's truncation and padding switched off (transformers sets them per call, and
/// `encode` asks for neither).
pub fn open(dir: &Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Err(Error::file(
            &path,
            "tokenizer.json",
            "missing: quant reads WordPiece vocabularies from tokenizer.json (vocab.txt alone is not supported)",
        ));
    }
    let mut t = Tokenizer::from_file(&path).map_err(|e| tok_err(&path, e))?;
    t.with_truncation(None).map_err(|e| tok_err(&path, e))?;
    t.with_padding(None);
    Ok(t)
}

/// `get_vocab_base_pre`: the name llama.cpp gives the tokenizer's pre-tokenization, from
/// the sha256 of Python's `str()` of the ids of [`CHECK_TEXT`] (special tokens added).
/// `None` when the hash is not in llama.cpp's table (the reference refuses such models).
pub fn pre_tokenizer(t: &Tokenizer, path: &Path) -> Result<(String, Option<&'static str>)> {
    let enc = t.encode(CHECK_TEXT, true).map_err(|e| tok_err(path, e))?;
    let text = format!(
        "[{}]",
        enc.get_ids()
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let hash: String = Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Every matching `if` of the reference assigns; the last one wins.
    let name = PRE_TOKENIZER_HASHES
        .iter()
        .rev()
        .find(|(h, _)| *h == hash)
        .map(|(_, n)| *n);
    Ok((hash, name))
}

/// `get_vocab_base`: `vocab_size` tokens and types (`[PAD{i}]`/UNUSED for ids the
/// tokenizer lacks; added tokens CONTROL when special or special-looking, else
/// USER_DEFINED with `▁` as space; the rest NORMAL).
pub fn vocab_base(
    t: &Tokenizer,
    path: &Path,
    vocab_size: Option<usize>,
) -> Result<(Vec<String>, Vec<TokenType>)> {
    let vocab = t.get_vocab(true);
    let vocab_size = vocab_size.unwrap_or(vocab.len());
    if let Some((tok, id)) = vocab.iter().find(|(_, &id)| id as usize >= vocab_size) {
        return Err(tok_err(
            path,
            format!("token '{tok}' has id {id}, not below the vocabulary size {vocab_size}"),
        ));
    }
    let reverse: HashMap<u32, &String> = vocab.iter().map(|(k, &v)| (v, k)).collect();
    let added = t.get_added_tokens_decoder();
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for i in 0..vocab_size as u32 {
        let Some(&token) = reverse.get(&i) else {
            tokens.push(format!("[PAD{i}]"));
            types.push(TokenType::Unused);
            continue;
        };
        let mut token = token.clone();
        match added.get(&i).filter(|a| a.content == token) {
            Some(a) => {
                if !a.normalized {
                    let ids = t
                        .encode(token.as_str(), false)
                        .map_err(|e| tok_err(path, e))?;
                    token = t
                        .decode(ids.get_ids(), false)
                        .map_err(|e| tok_err(path, e))?;
                }
                if a.special || does_token_look_special(&token) {
                    types.push(TokenType::Control);
                } else {
                    token = token.replace('\u{2581}', " ");
                    types.push(TokenType::UserDefined);
                }
            }
            None => types.push(TokenType::Normal),
        }
        tokens.push(token);
    }
    Ok((tokens, types))
}

/// BertModel's spelling: CONTROL tokens as they are, `##x` → `x`, others `▁` + token.
pub fn phantom_space(tokens: Vec<String>, types: &[TokenType]) -> Vec<String> {
    tokens
        .into_iter()
        .zip(types)
        .map(|(t, ty)| {
            if *ty == TokenType::Control {
                t
            } else if let Some(rest) = t.strip_prefix("##") {
                rest.to_string()
            } else {
                format!("\u{2581}{t}")
            }
        })
        .collect()
}
