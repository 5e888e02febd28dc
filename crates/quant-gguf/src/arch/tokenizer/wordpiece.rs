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

/// Opens the folder's tokenizer as transformers' fast tokenizer uses it for `encode`:
/// `tokenizer.json` with its truncation and padding switched off (transformers sets them
/// per call, and `encode` asks for neither), else `vocab.txt` with transformers'
/// BertTokenizer pipeline ([`from_vocab_txt`]).
pub fn open(dir: &Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        let vocab = dir.join("vocab.txt");
        if vocab.is_file() {
            return from_vocab_txt(dir, &vocab);
        }
        return Err(Error::file(
            &path,
            "tokenizer.json",
            "missing, and no vocab.txt either: quant reads WordPiece vocabularies from one of them",
        ));
    }
    let mut t = Tokenizer::from_file(&path).map_err(|e| tok_err(&path, e))?;
    t.with_truncation(None).map_err(|e| tok_err(&path, e))?;
    t.with_padding(None);
    Ok(t)
}

/// transformers' BERT tokenizer built from `vocab.txt` and `tokenizer_config.json`:
/// WordPiece (`##` continuation, the config's unknown token), BertNormalizer (clean text,
/// `tokenize_chinese_chars`, `strip_accents`, `do_lower_case`), BertPreTokenizer,
/// `[CLS] A [SEP]` post-processing, and the five special tokens added as special.
pub fn from_vocab_txt(dir: &Path, vocab: &Path) -> Result<Tokenizer> {
    use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::processors::bert::BertProcessing;
    use tokenizers::AddedToken;

    let cfg = super::read_json(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
    let name = |key: &str, default: &str| -> String {
        match cfg.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Object(o)) => o
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or(default)
                .to_string(),
            _ => default.to_string(),
        }
    };
    let flag = |key: &str, default: bool| cfg.get(key).and_then(|v| v.as_bool()).unwrap_or(default);
    let [unk, sep, pad, cls, mask] = [
        name("unk_token", "[UNK]"),
        name("sep_token", "[SEP]"),
        name("pad_token", "[PAD]"),
        name("cls_token", "[CLS]"),
        name("mask_token", "[MASK]"),
    ];
    let vocab_str = vocab.to_string_lossy();
    let model = WordPiece::from_file(&vocab_str)
        .unk_token(unk.clone())
        .continuing_subword_prefix("##".into())
        .build()
        .map_err(|e| tok_err(vocab, e))?;
    let id = |t: &str| {
        tokenizers::Model::token_to_id(&model, t).ok_or_else(|| {
            tok_err(
                vocab,
                format!("special token '{t}' is not in the vocabulary"),
            )
        })
    };
    let (sep_id, cls_id) = (id(&sep)?, id(&cls)?);
    let mut t = Tokenizer::new(model);
    t.with_normalizer(Some(BertNormalizer::new(
        true,
        flag("tokenize_chinese_chars", true),
        cfg.get("strip_accents").and_then(|v| v.as_bool()),
        flag("do_lower_case", true),
    )))
    .map_err(|e| tok_err(vocab, e))?;
    t.with_pre_tokenizer(Some(BertPreTokenizer));
    t.with_post_processor(Some(BertProcessing::new(
        (sep.clone(), sep_id),
        (cls.clone(), cls_id),
    )));
    t.with_decoder(Some(WordPieceDecoder::new("##".into(), true)));
    t.add_special_tokens([unk, sep, pad, cls, mask].map(|c| AddedToken::from(c, true)))
        .map_err(|e| tok_err(vocab, e))?;
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
