//! Split .gguf outputs in llama-gguf-split's format (llama.cpp `tools/gguf-split`), so that
//! llama.cpp loads them directly and `llama-gguf-split --merge` joins them.
//!
//! - Files are `<stem>-00001-of-0000N.gguf` beside the output path `<stem>.gguf`
//!   (`llama_split_path`).
//! - Tensors stay in the single file's order. With `max_bytes`, a new file starts when the
//!   running total of the current file's tensor sizes, each padded to 32 bytes, would pass
//!   the limit; with `max_tensors`, every `max_tensors` tensors (`split_strategy`). Unlike
//!   llama-gguf-split, a tensor larger than the limit gets a file of its own rather than
//!   an error.
//! - The first file holds every key/value of the single file; each file then gets
//!   `split.no` (u16, 0-based), `split.tensors.count` (i32, all files' tensors) and
//!   `split.count` (u16), in that order (llama-gguf-split sets `split.count` last, and
//!   setting a key in gguf moves it to the end).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quant_core::format::{
    PlannedOutput, SplitLimits, META_SPLIT_COUNT, META_SPLIT_NO, META_SPLIT_TENSORS,
};
use quant_core::{Error, Result};

use crate::gguf::{GgufValue, DEFAULT_ALIGNMENT};

/// The path of file `no` (0-based) of `count` for output `path` (`llama_split_path`).
pub fn split_path(path: &Path, no: usize, count: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    path.with_file_name(format!("{stem}-{:05}-of-{count:05}.gguf", no + 1))
}

/// The output's stem for file `path`: without the `-0000K-of-0000N` of a split file.
pub(crate) fn model_stem(path: &Path, metadata: &BTreeMap<String, String>) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let split = metadata.contains_key(META_SPLIT_NO);
    match stem
        .rsplit_once("-of-")
        .and_then(|(head, _)| head.rsplit_once('-'))
    {
        Some((base, _)) if split => base.to_string(),
        _ => stem,
    }
}

/// Assigns each planned tensor to a file as llama-gguf-split does (see the module docs).
pub fn split_files(
    path: &Path,
    planned: &[PlannedOutput],
    limits: &SplitLimits,
) -> Result<(Vec<PathBuf>, Vec<usize>)> {
    let bad = |reason: &str| Error::Config {
        source_name: path.display().to_string(),
        entry: "gguf split".into(),
        reason: reason.into(),
    };
    match (limits.max_bytes, limits.max_tensors) {
        (Some(_), Some(_)) => return Err(bad(
            "give either a maximum size or a maximum tensor count, not both (as llama-gguf-split)",
        )),
        (None, None) => return Err(bad("no split limit given")),
        (Some(0), _) | (_, Some(0)) => return Err(bad("a split limit must be positive")),
        _ => {}
    }
    let mut file_of = Vec::with_capacity(planned.len());
    let (mut file, mut in_file, mut size) = (0usize, 0usize, 0u64);
    for (i, p) in planned.iter().enumerate() {
        let bytes = p
            .byte_len()
            .ok_or_else(|| Error::tensor(path, &p.meta.name, "byte size overflows"))?;
        let padded = bytes.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        let next = size + padded;
        let split = match (limits.max_bytes, limits.max_tensors) {
            (Some(max), _) => next > max,
            (_, Some(n)) => i > 0 && i % n == 0,
            _ => false,
        };
        if split && in_file > 0 {
            file += 1;
            in_file = 0;
            size = padded;
        } else {
            size = next;
        }
        in_file += 1;
        file_of.push(file);
    }
    let count = file + 1;
    let files = (0..count).map(|k| split_path(path, k, count)).collect();
    Ok((files, file_of))
}

/// One split file's index and the key/values that end its header.
pub(crate) type SplitKeys = (u16, Vec<(String, GgufValue)>);

/// The split keys of one file, from the engine's metadata (`None`: not a split output).
pub(crate) fn split_keys(
    path: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<Option<SplitKeys>> {
    let Some(no) = metadata.get(META_SPLIT_NO) else {
        return Ok(None);
    };
    let num = |key: &str, text: Option<&String>| -> Result<u64> {
        text.and_then(|t| t.parse::<u64>().ok()).ok_or_else(|| {
            Error::file(
                path,
                "gguf",
                format!("split metadata {key} = {text:?} is not a number"),
            )
        })
    };
    let no = num(META_SPLIT_NO, Some(no))?;
    let count = num(META_SPLIT_COUNT, metadata.get(META_SPLIT_COUNT))?;
    let tensors = num(META_SPLIT_TENSORS, metadata.get(META_SPLIT_TENSORS))?;
    let (Ok(no), Ok(count), Ok(tensors)) = (
        u16::try_from(no),
        u16::try_from(count),
        i32::try_from(tensors),
    ) else {
        return Err(Error::file(
            path,
            "gguf",
            format!("split {no} of {count} with {tensors} tensors is beyond llama.cpp's split keys (u16, u16, i32)"),
        ));
    };
    Ok(Some((
        no,
        vec![
            ("split.no".into(), GgufValue::U16(no)),
            ("split.tensors.count".into(), GgufValue::I32(tensors)),
            ("split.count".into(), GgufValue::U16(count)),
        ],
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quant_core::{DType, PartLayout, TensorMeta};

    fn planned(sizes: &[usize]) -> Vec<PlannedOutput> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let name = format!("t{i}");
                PlannedOutput {
                    meta: TensorMeta::new(&name, DType::F32, vec![n]),
                    method: None,
                    params: Default::default(),
                    layout: vec![PartLayout::new(&name, DType::U8, vec![n])],
                    fallback: None,
                }
            })
            .collect()
    }

    #[test]
    fn sizes_are_padded_and_a_big_tensor_gets_a_file_of_its_own() {
        let p = planned(&[10, 30, 40, 200, 5]);
        let limits = SplitLimits {
            max_bytes: Some(64),
            max_tensors: None,
        };
        let (files, of) = split_files(Path::new("out/m.gguf"), &p, &limits).unwrap();
        // 10→32, 30→32 (64 fits), 40→64 starts a file, 200→224 another, 5→32 another.
        assert_eq!(of, vec![0, 0, 1, 2, 3]);
        assert_eq!(files[0], Path::new("out/m-00001-of-00004.gguf"));
        assert_eq!(files[3], Path::new("out/m-00004-of-00004.gguf"));
    }

    #[test]
    fn tensor_counts_split_every_n() {
        let p = planned(&[1; 7]);
        let limits = SplitLimits {
            max_bytes: None,
            max_tensors: Some(3),
        };
        let (files, of) = split_files(Path::new("m.gguf"), &p, &limits).unwrap();
        assert_eq!(of, vec![0, 0, 0, 1, 1, 1, 2]);
        assert_eq!(files.len(), 3);
        let both = SplitLimits {
            max_bytes: Some(1),
            max_tensors: Some(1),
        };
        assert!(split_files(Path::new("m.gguf"), &p, &both).is_err());
    }
}
