//! Checks of a converted model that the reference does not make but llama.cpp's loader
//! needs: a config that disagrees with its checkpoint is an error naming the config key
//! and both values before anything is written (a file llama.cpp refuses, or one with
//! a 10^12-block header, is not written).

use quant_core::{Result, TensorRecord};

use super::{HfModel, KvList};
use crate::gguf::GgufValue;

/// The block of a llama.cpp tensor name (`blk.N.…`).
fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// Before the vocabulary is built: blocks `0..block_count` all present (at least one
/// tensor each) and fitting the u32 key, and the config's `vocab_size` equal to the rows
/// of `token_embd` (the vocabulary is built with `vocab_size` entries).
pub fn check_model(model: &HfModel, records: &[TensorRecord]) -> Result<()> {
    let blocks = model.block_count;
    if u32::try_from(blocks).is_err() {
        return Err(model.bad(
            "num_hidden_layers",
            format!("{blocks} does not fit llama.cpp's u32 block count"),
        ));
    }
    let mut seen = vec![false; blocks.min(records.len() + 1)];
    for r in records {
        if let Some(s) = block_of(&r.name).and_then(|b| seen.get_mut(b)) {
            *s = true;
        }
    }
    if let Some(missing) = (0..blocks).find(|&b| !seen.get(b).copied().unwrap_or(false)) {
        return Err(model.bad(
            "num_hidden_layers",
            format!(
                "{blocks} blocks, but the checkpoint has no tensor of block {missing} ({} block tensors in all)",
                records.iter().filter(|r| block_of(&r.name).is_some()).count()
            ),
        ));
    }
    let embd_rows = records
        .iter()
        .find(|r| r.name == "token_embd.weight")
        .and_then(|r| r.shape.first().copied());
    if let (Some(rows), Some(v)) = (embd_rows, model.hparams.get("vocab_size")) {
        if v.as_u64() != Some(rows as u64) {
            return Err(model.bad(
                "vocab_size",
                format!("{v}, but token_embd (the embedding) has {rows} rows"),
            ));
        }
    }
    Ok(())
}

/// After the vocabulary is built: `token_embd` (and an untied `output`) has one row per
/// token of `tokenizer.ggml.tokens`.
pub fn check_vocab(model: &HfModel, records: &[TensorRecord], kv: &KvList) -> Result<()> {
    let n_tokens = match kv.get("tokenizer.ggml.tokens") {
        Some(GgufValue::Array(_, items)) => items.len(),
        _ => return Ok(()),
    };
    for name in ["token_embd.weight", "output.weight"] {
        let Some(r) = records.iter().find(|r| r.name == name) else {
            continue;
        };
        let rows = r.shape.first().copied().unwrap_or(0);
        if rows != n_tokens {
            return Err(model.bad(
                "vocab_size",
                format!(
                    "the vocabulary has {n_tokens} tokens (vocab_size {}), but {name} has {rows} rows",
                    model
                        .hparams
                        .get("vocab_size")
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "absent".into())
                ),
            ));
        }
    }
    Ok(())
}
