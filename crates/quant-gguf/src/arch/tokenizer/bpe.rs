//! GPT-2-style BPE vocabularies (Llama 3, Qwen 2/3, ...) as convert_hf_to_gguf.py's
//! `_set_vocab_gpt2` writes them (llama.cpp b11312): `get_vocab_base` over the Hugging
//! Face tokenizer of `tokenizer.json` (run with the `tokenizers` crate), the pre-tokenizer
//! name from the hash table of `get_vocab_base_pre`, and gguf-py's `SpecialVocab` with
//! `load_merges=True` (`tokenizer.json`'s `model.merges`, else `merges.txt`).

use std::path::Path;

use quant_core::{Error, Result};
use serde_json::Value;

use super::special::SpecialVocab;
use super::{read_json, string_array, type_array, wordpiece};
use crate::gguf::{GgufValue, KvList};

/// Which vocabulary reader llama's `set_vocab` ends up in for a folder without
/// `tokenizer.model` (gguf-py's `LlamaHfVocab` pre-check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfVocabKind {
    /// A byte-level BPE (`_set_vocab_gpt2`).
    Gpt2,
    /// A SentencePiece-style BPE with byte fallback (`_set_vocab_llama_hf`).
    LlamaHf,
}

/// `LlamaHfVocab.__init__`'s test of `tokenizer.json`: Llama 3's BPE (`ignore_merges`,
/// no byte fallback) and everything that is not a byte-fallback BPE with a `Sequence`
/// decoder go to `_set_vocab_gpt2`; the rest is a SentencePiece-style vocabulary.
pub fn llama_vocab_kind(tokenizer_json: &Path) -> Result<HfVocabKind> {
    let Some(t) = read_json(tokenizer_json)? else {
        return Ok(HfVocabKind::Gpt2);
    };
    let model = t.get("model").ok_or_else(|| {
        Error::file(
            tokenizer_json,
            "tokenizer.json",
            "no 'model' entry (the reference reads tokenizer_json['model'])",
        )
    })?;
    let ty = model.get("type").and_then(Value::as_str);
    let flag = |k: &str, default: bool| model.get(k).and_then(Value::as_bool).unwrap_or(default);
    if ty == Some("BPE") && flag("ignore_merges", false) && !flag("byte_fallback", true) {
        return Ok(HfVocabKind::Gpt2);
    }
    let decoder = t
        .get("decoder")
        .and_then(|d| d.get("type"))
        .and_then(Value::as_str);
    if ty != Some("BPE") || !flag("byte_fallback", false) || decoder != Some("Sequence") {
        return Ok(HfVocabKind::Gpt2);
    }
    Ok(HfVocabKind::LlamaHf)
}

/// `_set_vocab_gpt2`: `tokenizer.ggml.model = gpt2`, the pre-tokenizer, `vocab_size`
/// tokens and types (the config's `vocab_size`, else the tokenizer's size), then the
/// merges, special tokens, add flags and chat template. An unknown pre-tokenizer hash is
/// an error naming it, as the reference's.
pub fn set_vocab_gpt2(dir: &Path, vocab_size: Option<usize>, kv: &mut KvList) -> Result<()> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Err(Error::file(
            &path,
            "tokenizer.json",
            "missing: a BPE vocabulary is read from tokenizer.json",
        ));
    }
    // Read before the (slower) vocabulary: a broken merges list fails first.
    let merges = load_merges(dir)?;
    let tok = wordpiece::open(dir)?;
    let (tokens, types) = wordpiece::vocab_base(&tok, &path, vocab_size)?;
    let (hash, pre) = wordpiece::pre_tokenizer(&tok, &path)?;
    let Some(pre) = pre else {
        return Err(Error::file(
            &path,
            "tokenizer.json",
            format!(
                "the BPE pre-tokenizer was not recognized: hash {hash} is not in llama.cpp's table (convert_hf_to_gguf.py refuses it too)"
            ),
        ));
    };
    kv.set("tokenizer.ggml.model", GgufValue::String("gpt2".into()));
    kv.set("tokenizer.ggml.pre", GgufValue::String(pre.into()));
    kv.set("tokenizer.ggml.tokens", string_array(tokens));
    kv.set("tokenizer.ggml.token_type", type_array(&types));
    let mut special = SpecialVocab::load(dir, None, super::special::DEFAULT_TYPES)?;
    special.merges = merges;
    special.add_to(kv)
}

/// The merges `SpecialVocab(load_merges=True)` finds: `tokenizer.json`'s `model.merges`
/// (strings as they are; `[a, b]` pairs joined by a space, spaces inside a part written
/// as U+0120... i.e. `chr(ord(' ') + 256)`), else `merges.txt`.
pub fn load_merges(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join("tokenizer.json");
    if let Some(t) = read_json(&path)? {
        let merges = t.get("model").and_then(|m| m.get("merges"));
        if let Some(Value::Array(list)) = merges {
            if !list.is_empty() {
                return merges_from_json(&path, list);
            }
        }
    }
    merges_txt(&dir.join("merges.txt"))
}

fn bad_merge(path: &Path, i: usize, what: &str) -> Error {
    Error::file(path, "tokenizer.json", format!("model.merges[{i}]: {what}"))
}

/// `model.merges` in either of its formats (the first entry decides, as in gguf-py; every
/// entry must then have that format).
fn merges_from_json(path: &Path, list: &[Value]) -> Result<Vec<String>> {
    let pairs = match list.first() {
        Some(Value::String(_)) => false,
        Some(Value::Array(p)) if p.len() == 2 && p.first().is_some_and(Value::is_string) => true,
        _ => {
            return Err(bad_merge(
                path,
                0,
                "unknown tokenizer merges format (neither \"a b\" strings nor [a, b] pairs)",
            ))
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        if !pairs {
            let s = m
                .as_str()
                .ok_or_else(|| bad_merge(path, i, "not a string like the first entry"))?;
            out.push(s.to_string());
            continue;
        }
        let parts = match m.as_array() {
            Some(p) if p.len() == 2 => p,
            _ => {
                return Err(bad_merge(
                    path,
                    i,
                    "not an [a, b] pair like the first entry",
                ))
            }
        };
        let mut joined = String::new();
        for (k, part) in parts.iter().enumerate() {
            let s = part
                .as_str()
                .ok_or_else(|| bad_merge(path, i, "a part is not a string"))?;
            if k > 0 {
                joined.push(' ');
            }
            joined.extend(s.chars().map(|c| if c == ' ' { '\u{120}' } else { c }));
        }
        out.push(joined);
    }
    Ok(out)
}

/// `_try_load_merges_txt`: an optional `#` header line, then `a b` per line (blank lines
/// skipped; malformed lines skipped, as the reference does with a warning).
fn merges_txt(path: &Path) -> Result<Vec<String>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines().peekable();
    if lines.peek().is_some_and(|l| l.trim().starts_with('#')) {
        lines.next();
    }
    let mut out = Vec::new();
    for line in lines {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let [a, b] = parts.as_slice() {
            out.push(format!("{a} {b}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_pairs_encode_inner_spaces() {
        let list: Vec<Value> = serde_json::from_str(r#"[["a b", "c"], ["d", "e"]]"#).unwrap();
        let m = merges_from_json(Path::new("t.json"), &list).unwrap();
        assert_eq!(m, ["a\u{120}b c", "d e"]);
    }

    #[test]
    fn mixed_merge_formats_are_errors() {
        let list: Vec<Value> = serde_json::from_str(r#"["a b", ["c", "d"]]"#).unwrap();
        let e = merges_from_json(Path::new("t.json"), &list).unwrap_err();
        assert!(e.to_string().contains("model.merges[1]"), "{e}");
        let list: Vec<Value> = serde_json::from_str(r#"[3]"#).unwrap();
        assert!(merges_from_json(Path::new("t.json"), &list).is_err());
    }
}
