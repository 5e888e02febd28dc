//! llama.cpp importance matrices, as `llama-quantize --imatrix` reads them
//! (`common_imatrix_load` + `load_imatrix`):
//!
//! - **GGUF** (`llama-imatrix` default): per entry NAME, F32 tensors `NAME.in_sum2`
//!   (`ne0 · n_mat` sums of squared activations) and `NAME.counts` (`n_mat` counts);
//!   value = `sum / (float)lround(count)`, or 1 where the count is 0. Keys
//!   `imatrix.datasets`, `imatrix.chunk_count` are read when present.
//! - **legacy `.dat`**: i32 entry count; per entry i32 name length, name, i32 `ncall`,
//!   i32 `nval`, `nval` f32 sums; optionally i32 chunk count, i32 length + dataset name.
//!   value = `sum / (float)ncall` (the sums as they are when `ncall ≤ 0`).
//!
//! Entries are looked up by the exact tensor name. Non-finite values are an error when
//! the file is loaded (llama-quantize refuses them too).

mod stats;

pub use stats::{ImatrixStats, StatsEntries};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use quant_core::{Error, Result};

use crate::gguf::{GgufFile, GgufValue, GGUF_MAGIC};
use crate::types::GgmlType;
use crate::{GgufError, BACKEND};

/// Longest entry name accepted in a legacy file.
const MAX_NAME_LEN: i32 = 1 << 16;

/// A loaded importance matrix: per tensor name, one weight per column (per expert for
/// 3-D tensors).
#[derive(Clone, Debug, Default)]
pub struct Imatrix {
    source: String,
    entries: HashMap<String, Vec<f32>>,
    datasets: Vec<String>,
    chunk_count: Option<i64>,
}

fn err(file: &str, reason: impl Into<String>) -> Error {
    Error::Backend {
        backend: BACKEND,
        source: Box::new(GgufError::Imatrix {
            file: file.to_string(),
            reason: reason.into(),
        }),
    }
}

impl Imatrix {
    /// An importance matrix from values in memory (`source` names it in messages).
    /// Fails on a non-finite value.
    pub fn from_entries(
        source: &str,
        entries: impl IntoIterator<Item = (String, Vec<f32>)>,
    ) -> Result<Self> {
        let entries: HashMap<String, Vec<f32>> = entries.into_iter().collect();
        for (name, v) in &entries {
            if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                return Err(err(
                    source,
                    format!("entry '{name}' has the non-finite value {x} at index {i}"),
                ));
            }
        }
        Ok(Imatrix {
            source: source.to_string(),
            entries,
            datasets: Vec::new(),
            chunk_count: None,
        })
    }

    /// Loads a GGUF or legacy `.dat` importance matrix (chosen by the magic bytes).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let source = path.display().to_string();
        if bytes.get(..4) == Some(&GGUF_MAGIC[..]) {
            Self::load_gguf(path, &source)
        } else {
            Self::parse_legacy(&bytes, &source)
        }
    }

    /// Parses the legacy binary format.
    pub fn parse_legacy(bytes: &[u8], source: &str) -> Result<Self> {
        let mut pos = 0usize;
        let i32_at = |pos: &mut usize| -> Result<i32> {
            let b = bytes
                .get(*pos..*pos + 4)
                .ok_or_else(|| err(source, format!("truncated at byte {}", *pos)))?;
            *pos += 4;
            Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let n_entries = i32_at(&mut pos)?;
        // An entry is at least 4 + 1 + 4 + 4 + 4 bytes.
        if n_entries < 1 || n_entries as usize > bytes.len() / 17 {
            return Err(err(source, format!("bad entry count {n_entries}")));
        }
        let mut entries = Vec::with_capacity(n_entries as usize);
        for i in 0..n_entries {
            let len = i32_at(&mut pos)?;
            if !(0..=MAX_NAME_LEN).contains(&len) {
                return Err(err(source, format!("entry {i}: bad name length {len}")));
            }
            let name = bytes
                .get(pos..pos + len as usize)
                .ok_or_else(|| err(source, format!("entry {i}: truncated name")))?;
            pos += len as usize;
            let name = String::from_utf8_lossy(name).into_owned();
            let ncall = i32_at(&mut pos)?;
            let nval = i32_at(&mut pos)?;
            if nval < 1 || (nval as usize).saturating_mul(4) > bytes.len() - pos.min(bytes.len()) {
                return Err(err(
                    source,
                    format!("entry '{name}': bad value count {nval}"),
                ));
            }
            let raw = &bytes[pos..pos + nval as usize * 4];
            pos += nval as usize * 4;
            let values: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| {
                    let s = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    if ncall > 0 {
                        s / ncall as f32
                    } else {
                        s
                    }
                })
                .collect();
            entries.push((name, values));
        }
        let mut im = Self::from_entries(source, entries)?;
        if bytes.len() >= pos + 4 {
            im.chunk_count = Some(i64::from(i32_at(&mut pos)?));
            if let Ok(len) = i32_at(&mut pos) {
                if len > 0 && len <= MAX_NAME_LEN {
                    if let Some(d) = bytes.get(pos..pos + len as usize) {
                        im.datasets.push(String::from_utf8_lossy(d).into_owned());
                    }
                }
            }
        }
        Ok(im)
    }

    fn load_gguf(path: &Path, source: &str) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let mut entries = Vec::new();
        for (name, (s, c)) in read_sums(&file, source)? {
            let ne0 = s.len() / c.len();
            let mut values = Vec::with_capacity(s.len());
            for (row, &count) in s.chunks(ne0).zip(&c) {
                let count = count.round() as i64 as f32;
                if count > 0.0 {
                    values.extend(row.iter().map(|v| v / count));
                } else {
                    values.extend(row.iter().map(|_| 1.0f32));
                }
            }
            entries.push((name, values));
        }
        let mut im = Self::from_entries(source, entries)?;
        im.datasets = datasets(&file);
        im.chunk_count = file
            .get("imatrix.chunk_count")
            .and_then(GgufValue::as_u64)
            .and_then(|v| i64::try_from(v).ok());
        Ok(im)
    }

    /// [`Imatrix::load`] then [`Imatrix::filter_names`], shared: every method of a run
    /// given the same file and filters holds one copy, read once (a memory target makes
    /// dozens of GGUF methods, each with the imatrix). A file changed on disk (size or
    /// modification time) is read again.
    pub fn load_shared(
        path: impl AsRef<Path>,
        include: &[String],
        exclude: &[String],
    ) -> Result<Arc<Self>> {
        type Key = (PathBuf, u64, Option<SystemTime>, Vec<String>, Vec<String>);
        static LOADED: Mutex<Vec<(Key, Weak<Imatrix>)>> = Mutex::new(Vec::new());
        let path = path.as_ref();
        let stat = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let key: Key = (
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            stat.len(),
            stat.modified().ok(),
            include.to_vec(),
            exclude.to_vec(),
        );
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        loaded.retain(|(_, w)| w.strong_count() > 0);
        if let Some(im) = loaded
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(im);
        }
        let mut im = Imatrix::load(path)?;
        im.filter_names(include, exclude);
        let im = Arc::new(im);
        loaded.push((key, Arc::downgrade(&im)));
        Ok(im)
    }

    /// llama-quantize's `--exclude-weights` / `--include-weights`: drops every entry whose
    /// name contains one of `exclude`, then, when `include` is not empty, keeps only the
    /// entries whose name contains one of `include`.
    pub fn filter_names(&mut self, include: &[String], exclude: &[String]) {
        self.entries
            .retain(|name, _| !exclude.iter().any(|e| name.contains(e.as_str())));
        if !include.is_empty() {
            self.entries
                .retain(|name, _| include.iter().any(|i| name.contains(i.as_str())));
        }
    }

    /// The weights for tensor `name`.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.entries.get(name).map(Vec::as_slice)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where it was loaded from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The datasets it was computed on, when the file says.
    pub fn datasets(&self) -> &[String] {
        &self.datasets
    }

    /// The number of chunks it was computed on, when the file says.
    pub fn chunk_count(&self) -> Option<i64> {
        self.chunk_count
    }
}

/// The `imatrix.datasets` strings of a GGUF imatrix.
fn datasets(file: &GgufFile) -> Vec<String> {
    match file.get("imatrix.datasets") {
        Some(GgufValue::Array(_, items)) => items
            .iter()
            .filter_map(|v| match v {
                GgufValue::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Per entry, its `in_sum2` and `counts` as stored.
type RawSums = BTreeMap<String, (Vec<f32>, Vec<f32>)>;

/// The raw (sums, counts) of every entry of a GGUF imatrix: each `NAME.in_sum2` with its
/// `NAME.counts`, both F32, the sums a whole multiple of the counts.
fn read_sums(file: &GgufFile, source: &str) -> Result<RawSums> {
    let mut sums = HashMap::new();
    let mut counts = HashMap::new();
    for t in &file.tensors {
        let (map, base) = if let Some(b) = t.name.strip_suffix(".in_sum2") {
            (&mut sums, b)
        } else if let Some(b) = t.name.strip_suffix(".counts") {
            (&mut counts, b)
        } else {
            continue;
        };
        if t.ty != GgmlType::F32 {
            return Err(err(
                source,
                format!("tensor '{}' must be F32, is {}", t.name, t.ty),
            ));
        }
        let data: Vec<f32> = file
            .read_data(t)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        map.insert(base.to_string(), data);
    }
    let mut entries = BTreeMap::new();
    for (name, s) in sums {
        let c = counts
            .remove(&name)
            .ok_or_else(|| err(source, format!("mismatched sums and counts for '{name}'")))?;
        if c.is_empty() || s.is_empty() || s.len() % c.len() != 0 {
            return Err(err(
                source,
                format!("entry '{name}': {} sums for {} counts", s.len(), c.len()),
            ));
        }
        entries.insert(name, (s, c));
    }
    if let Some(name) = counts.keys().next() {
        return Err(err(
            source,
            format!("mismatched sums and counts for '{name}'"),
        ));
    }
    Ok(entries)
}
