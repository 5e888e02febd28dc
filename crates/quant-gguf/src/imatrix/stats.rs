//! [`ImatrixStats`]: the activation statistics `quant imatrix` collects, written as
//! llama-imatrix writes them (GGUF, or the legacy `.dat`).

use std::collections::BTreeMap;
use std::path::Path;

use quant_core::Result;

use super::{datasets, read_sums};
use crate::gguf::{GgufFile, GgufValue};
use crate::types::GgmlType;

/// Per weight name, the sums of squared inputs (`ne0 · n_mat`) and the rows seen (`n_mat`).
pub type StatsEntries = BTreeMap<String, (Vec<f32>, Vec<i64>)>;

/// Activation statistics as `llama-imatrix` collects them, before they are saved: per
/// weight name, `Σx²` of each input column (`ne0 · n_mat` f32 sums) and the number of rows
/// seen (`n_mat` counts). Written as llama.cpp's GGUF imatrix ([`ImatrixStats::gguf_bytes`])
/// or legacy `.dat` ([`ImatrixStats::legacy_bytes`]), as `save_imatrix` and
/// `save_imatrix_legacy` write them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImatrixStats {
    /// Per weight name: (sums, counts).
    pub entries: StatsEntries,
    /// The text files it was computed on, as given.
    pub datasets: Vec<String>,
    /// Chunks processed (`imatrix.chunk_count`).
    pub chunk_count: u32,
    /// Tokens per chunk (`imatrix.chunk_size`).
    pub chunk_size: u32,
}

impl ImatrixStats {
    /// Reads the raw statistics of a GGUF imatrix (as `llama-imatrix --in-file` does;
    /// counts rounded to integers).
    pub fn load_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let file = GgufFile::open(path)?;
        let entries = read_sums(&file, &source)?
            .into_iter()
            .map(|(n, (s, c))| (n, (s, c.iter().map(|&x| x.round() as i64).collect())))
            .collect();
        let u32_key = |k: &str| {
            file.get(k)
                .and_then(GgufValue::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0)
        };
        Ok(ImatrixStats {
            entries,
            datasets: datasets(&file),
            chunk_count: u32_key("imatrix.chunk_count"),
            chunk_size: u32_key("imatrix.chunk_size"),
        })
    }

    /// The GGUF form: KVs `general.type` = `imatrix`, `imatrix.datasets`,
    /// `imatrix.chunk_count`, `imatrix.chunk_size`; per entry (names sorted) F32 tensors
    /// `NAME.in_sum2` (`[ne0, n_mat]`) and `NAME.counts` (`[1, n_mat]`), trailing 1-dims
    /// dropped as ggml does; data aligned to 32 bytes.
    pub fn gguf_bytes(&self) -> Vec<u8> {
        use crate::gguf::{header_bytes, GgufType, TensorInfo, DEFAULT_ALIGNMENT};
        let kv = [
            ("general.type", GgufValue::String("imatrix".into())),
            (
                "imatrix.datasets",
                GgufValue::Array(
                    8,
                    self.datasets
                        .iter()
                        .map(|d| GgufValue::String(d.clone()))
                        .collect(),
                ),
            ),
            ("imatrix.chunk_count", GgufValue::U32(self.chunk_count)),
            ("imatrix.chunk_size", GgufValue::U32(self.chunk_size)),
        ];
        // (name, ggml dims, f32 data)
        let mut tensors: Vec<(String, Vec<u64>, Vec<f32>)> = Vec::new();
        for (name, (sums, counts)) in &self.entries {
            let n_mat = counts.len();
            if sums.is_empty() || n_mat == 0 {
                continue;
            }
            let dims = |ne0: usize| {
                let mut d = vec![ne0 as u64, n_mat as u64];
                while d.len() > 1 && d.last() == Some(&1) {
                    d.pop();
                }
                d
            };
            tensors.push((
                format!("{name}.in_sum2"),
                dims(sums.len() / n_mat),
                sums.clone(),
            ));
            tensors.push((
                format!("{name}.counts"),
                dims(1),
                counts.iter().map(|&c| c as f32).collect(),
            ));
        }
        let align = |n: u64| n.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        let kv: Vec<(String, GgufValue)> = kv.into_iter().map(|(k, v)| (k.into(), v)).collect();
        let mut offset = 0u64;
        let infos: Vec<TensorInfo> = tensors
            .iter()
            .map(|(name, dims, data)| {
                let size = data.len() as u64 * 4;
                let info = (
                    name.clone(),
                    dims.clone(),
                    GgufType::Ggml(GgmlType::F32),
                    offset,
                    size,
                );
                offset += align(size);
                info
            })
            .collect();
        let mut out = header_bytes(&kv, &infos);
        for (_, _, data) in &tensors {
            for v in data {
                out.extend(v.to_le_bytes());
            }
            out.resize(align(out.len() as u64) as usize, 0);
        }
        out
    }

    /// The legacy `.dat` form: entries with data (names sorted), each with
    /// `ncall = ⌈max count / chunk_size⌉` and values `sum / count · ncall` (1 where a
    /// count is 0), then the chunk count and the last dataset's name.
    pub fn legacy_bytes(&self) -> Vec<u8> {
        let chunk = i64::from(self.chunk_size.max(1));
        let stored: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, (s, c))| !s.is_empty() && c.iter().any(|&n| n != 0))
            .collect();
        let mut out = Vec::new();
        out.extend((stored.len() as i32).to_le_bytes());
        for (name, (sums, counts)) in stored {
            out.extend((name.len() as i32).to_le_bytes());
            out.extend(name.as_bytes());
            let max = counts.iter().copied().max().unwrap_or(0);
            let ncall = (max + chunk - 1) / chunk;
            out.extend((ncall as i32).to_le_bytes());
            out.extend((sums.len() as i32).to_le_bytes());
            let per_mat = sums.len() / counts.len();
            for (i, &s) in sums.iter().enumerate() {
                let count = counts.get(i / per_mat).copied().unwrap_or(0) as f32;
                let (value, count) = if count == 0.0 { (1.0, 1.0) } else { (s, count) };
                out.extend((value / count * ncall as f32).to_le_bytes());
            }
        }
        out.extend((self.chunk_count as i32).to_le_bytes());
        let dataset = self.datasets.last().map_or("", String::as_str);
        out.extend((dataset.len() as i32).to_le_bytes());
        out.extend(dataset.as_bytes());
        out
    }
}
