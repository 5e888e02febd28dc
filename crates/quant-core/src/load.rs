//! Opening models and quantized files, and restoring tensors through their methods.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dtype::{decode_to_f32, encode_f32, DType};
use crate::error::{Error, Result};
use crate::format::{self, ContainerReader, ForeignFile};
use crate::method::{Part, QuantizedTensor, TensorRecord};
use crate::registry::Registry;
use crate::safetensors_io::SafetensorsFile;
use crate::tensor::{HostTensor, TensorMeta, TensorSource};

/// Metadata key holding the per-tensor records (JSON list of [`TensorRecord`]).
pub const META_TENSORS: &str = "quant.tensors";
/// Metadata key holding quant's file format version.
pub const META_FORMAT_VERSION: &str = "quant.format_version";
/// The format version quant writes.
pub const FORMAT_VERSION: &str = "1";

/// A safetensors file as a [`ContainerReader`]: records come from quant's own metadata,
/// from a registered foreign-layout detector (bitsandbytes, quanto, torchao folders), or
/// else every tensor is a plain, unquantized record.
pub struct SafetensorsReader {
    file: SafetensorsFile,
    records: Vec<TensorRecord>,
}

impl SafetensorsReader {
    /// Opens `path`; `config` is the `config.json` beside it, if any.
    pub fn open(path: &Path, config: Option<&serde_json::Value>) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let metas: Vec<TensorMeta> = file.metas().cloned().collect();
        let records = if let Some(text) = file.metadata().get(META_TENSORS) {
            let recs: Vec<TensorRecord> = serde_json::from_str(text).map_err(|e| {
                Error::file(
                    path,
                    "safetensors",
                    format!("bad {META_TENSORS} metadata: {e}"),
                )
            })?;
            for r in &recs {
                for key in &r.parts {
                    if file.get(key).is_none() {
                        return Err(Error::tensor(
                            path,
                            &r.name,
                            format!("part '{key}' named in the metadata is not in the file"),
                        ));
                    }
                }
            }
            recs
        } else {
            let foreign = ForeignFile {
                path,
                tensors: &metas,
                metadata: file.metadata(),
                config,
            };
            let mut found: Vec<TensorRecord> = Vec::new();
            for layout in format::layouts() {
                let recs = (layout.detect)(&foreign)?;
                if !recs.is_empty() {
                    found = recs;
                    break;
                }
            }
            if found.is_empty() {
                check_foreign_markers(path, &metas)?;
            }
            let covered: std::collections::HashSet<&str> = found
                .iter()
                .flat_map(|r| r.parts.iter().map(String::as_str))
                .collect();
            let mut plain: Vec<TensorRecord> = metas
                .iter()
                .filter(|m| !covered.contains(m.name.as_str()))
                .map(plain_record)
                .collect();
            plain.extend(found);
            // Keep file order of the first part for stable output.
            let order: BTreeMap<&str, usize> = metas
                .iter()
                .enumerate()
                .map(|(i, m)| (m.name.as_str(), i))
                .collect();
            plain.sort_by_key(|r| {
                r.parts
                    .first()
                    .and_then(|k| order.get(k.as_str()).copied())
                    .unwrap_or(usize::MAX)
            });
            plain
        };
        Ok(SafetensorsReader { file, records })
    }

    /// The underlying mapped file.
    pub fn file(&self) -> &SafetensorsFile {
        &self.file
    }
}

/// Fails when a tensor key marks another library's quantized layout whose backend is not
/// compiled in (so no detector claimed it).
fn check_foreign_markers(path: &Path, metas: &[TensorMeta]) -> Result<()> {
    let registry = Registry::global()?;
    for m in metas {
        for (suffix, backend, feature) in crate::catalog::FOREIGN_MARKERS {
            if m.name.ends_with(suffix) && !registry.entries().any(|e| e.backend == *backend) {
                return Err(Error::MethodNotCompiled {
                    name: format!("{} (tensor '{}' in {})", backend, m.name, path.display()),
                    backend: backend.to_string(),
                    feature: feature.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// A record for a tensor stored as is.
pub fn plain_record(m: &TensorMeta) -> TensorRecord {
    TensorRecord {
        name: m.name.clone(),
        method: None,
        dtype: m.dtype,
        shape: m.shape.clone(),
        dequant_dtype: m.dtype,
        params: Default::default(),
        parts: vec![m.name.clone()],
        fallback: None,
    }
}

impl ContainerReader for SafetensorsReader {
    fn metadata(&self) -> BTreeMap<String, String> {
        self.file.metadata().clone()
    }
    fn records(&self) -> &[TensorRecord] {
        &self.records
    }
    fn read(&self, name: &str) -> Result<QuantizedTensor> {
        let rec = self
            .records
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::tensor(self.file.path(), name, "no such tensor"))?;
        let parts = rec
            .parts
            .iter()
            .map(|k| self.file.part(k))
            .collect::<Result<Vec<Part>>>()?;
        Ok(QuantizedTensor {
            record: rec.clone(),
            parts,
        })
    }
    fn stored_bytes(&self, name: &str) -> Result<u64> {
        let rec = self
            .records
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::tensor(self.file.path(), name, "no such tensor"))?;
        rec.parts.iter().try_fold(0u64, |acc, key| {
            let meta = self
                .file
                .metas()
                .find(|m| &m.name == key)
                .ok_or_else(|| Error::tensor(self.file.path(), key, "not in file"))?;
            Ok(acc + meta.byte_len()? as u64)
        })
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
    fn source(&self, name: &str) -> Option<Box<dyn TensorSource + '_>> {
        let rec = self.records.iter().find(|r| r.name == name)?;
        if rec.method.is_some() || rec.parts.len() != 1 || rec.parts[0] != rec.name {
            return None;
        }
        self.file
            .get(name)
            .map(|t| Box::new(t) as Box<dyn TensorSource>)
    }
}

/// [`dequantize`] into `out`, resized to the tensor's element count (its capacity is
/// reused: one buffer serves a whole model).
pub fn dequantize_into(q: &QuantizedTensor, out: &mut Vec<f32>) -> Result<()> {
    let Some(m) = &q.record.method else {
        let part = q
            .parts
            .first()
            .ok_or_else(|| Error::tensor("", &q.record.name, "no stored part"))?;
        out.clear();
        return decode_to_f32(part.layout.dtype, &part.data, out)
            .map_err(|e| Error::tensor("", &q.record.name, e.to_string()));
    };
    let method = Registry::global()?.create(m, &q.record.params)?;
    let n = crate::tensor::checked_numel(&q.record.shape).ok_or_else(|| {
        Error::tensor(
            "",
            &q.record.name,
            format!("shape {:?} overflows", q.record.shape),
        )
    })?;
    out.resize(n, 0.0);
    method.dequantize_into(q, out)
}

/// Restores f32 values of a stored tensor through its method (or by decoding it when it
/// is stored unquantized). Values are exact in `q.record.dequant_dtype`.
pub fn dequantize(q: &QuantizedTensor) -> Result<Vec<f32>> {
    match &q.record.method {
        None => {
            let part = q
                .parts
                .first()
                .ok_or_else(|| Error::tensor("", &q.record.name, "no stored part"))?;
            let mut out = Vec::new();
            decode_to_f32(part.layout.dtype, &part.data, &mut out)
                .map_err(|e| Error::tensor("", &q.record.name, e.to_string()))?;
            Ok(out)
        }
        Some(m) => {
            let method = Registry::global()?.create(m, &q.record.params)?;
            let values = method.dequantize(q)?;
            let want = crate::tensor::checked_numel(&q.record.shape).unwrap_or(usize::MAX);
            if values.len() != want {
                return Err(Error::ShapeMismatch {
                    tensor: q.record.name.clone(),
                    expected: format!("{want} dequantized values for shape {:?}", q.record.shape),
                    got: vec![values.len()],
                });
            }
            Ok(values)
        }
    }
}

/// The input or output of a model: one file, or a folder of shards with `config.json`.
pub struct ModelFiles {
    /// The file or folder as given.
    pub root: PathBuf,
    /// True for a folder.
    pub is_dir: bool,
    /// Each weight file: its path relative to `root` (the file name for a single file) and
    /// its reader.
    pub shards: Vec<(PathBuf, Box<dyn ContainerReader>)>,
    /// `config.json`, when the folder has one.
    pub config: Option<serde_json::Value>,
    /// Other files of the folder (tokenizer, configs...), relative to `root`.
    pub other_files: Vec<PathBuf>,
}

impl std::fmt::Debug for ModelFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelFiles")
            .field("root", &self.root)
            .field(
                "shards",
                &self.shards.iter().map(|s| &s.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn open_file(path: &Path, config: Option<&serde_json::Value>) -> Result<Box<dyn ContainerReader>> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ext == "safetensors" {
        return Ok(Box::new(SafetensorsReader::open(path, config)?));
    }
    if let Some(c) = format::container(&ext) {
        return (c.open)(path);
    }
    if let Some(c) = format::containers().find(|c| (c.sniff)(path)) {
        return (c.open)(path);
    }
    if ext == "gguf" {
        return Err(Error::MethodNotCompiled {
            name: "gguf files".into(),
            backend: "quant-gguf".into(),
            feature: "gguf".into(),
        });
    }
    Ok(Box::new(SafetensorsReader::open(path, config)?))
}

impl ModelFiles {
    /// Opens a weight file (safetensors, or a registered container such as GGUF) or a
    /// model folder (`config.json` and one or sharded safetensors files).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let root = path.as_ref().to_path_buf();
        let meta = std::fs::metadata(&root).map_err(|e| Error::io(&root, e))?;
        if !meta.is_dir() {
            let reader = open_file(&root, None)?;
            let name = root
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("model.safetensors"));
            return Ok(ModelFiles {
                root,
                is_dir: false,
                shards: vec![(name, reader)],
                config: None,
                other_files: Vec::new(),
            });
        }
        let config_path = root.join("config.json");
        let config = if config_path.is_file() {
            let text =
                std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
            Some(
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|e| Error::file(&config_path, "json", e.to_string()))?,
            )
        } else {
            None
        };
        let mut weights = Vec::new();
        let mut other_files = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(&root)
            .map_err(|e| Error::io(&root, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            let Some(name) = p.file_name().map(PathBuf::from) else {
                continue;
            };
            let n = name.to_string_lossy().to_string();
            if n.starts_with('.') || p.is_dir() {
                continue;
            }
            let is_weight = n.ends_with(".safetensors")
                || format::containers()
                    .any(|c| c.extensions.iter().any(|e| n.ends_with(&format!(".{e}"))));
            if is_weight {
                weights.push(name);
            } else if n.ends_with(".safetensors.index.json") || n == "quantization_info.json" {
                // Regenerated on output.
            } else {
                other_files.push(name);
            }
        }
        if weights.is_empty() {
            return Err(Error::file(
                &root,
                "model folder",
                "no .safetensors (or other weight) files in the folder",
            ));
        }
        let mut shards = Vec::with_capacity(weights.len());
        for w in weights {
            let reader = open_file(&root.join(&w), config.as_ref())?;
            shards.push((w, reader));
        }
        Ok(ModelFiles {
            root,
            is_dir: true,
            shards,
            config,
            other_files,
        })
    }

    /// Every record with the index of its shard.
    pub fn records(&self) -> impl Iterator<Item = (usize, &TensorRecord)> {
        self.shards
            .iter()
            .enumerate()
            .flat_map(|(i, (_, r))| r.records().iter().map(move |rec| (i, rec)))
    }

    /// The stored parts of `name`.
    pub fn read(&self, name: &str) -> Result<QuantizedTensor> {
        self.reader_of(name)
            .ok_or_else(|| Error::tensor(&self.root, name, "no such tensor"))?
            .read(name)
    }

    /// The reader of the file holding tensor `name`.
    fn reader_of(&self, name: &str) -> Option<&dyn ContainerReader> {
        self.shards
            .iter()
            .find(|(_, r)| r.records().iter().any(|rec| rec.name == name))
            .map(|(_, r)| r.as_ref())
    }

    /// An unquantized tensor as a zero-copy source (memory-mapped safetensors), if it is
    /// one.
    pub fn source(&self, name: &str) -> Option<Box<dyn TensorSource + '_>> {
        self.reader_of(name)?.source(name)
    }

    /// The stored part `key` of tensor `name` as a zero-copy source, when it is an entry
    /// of a memory-mapped safetensors file (quantized or not).
    pub fn stored_source(&self, name: &str, key: &str) -> Option<Box<dyn TensorSource + '_>> {
        let st = self
            .reader_of(name)?
            .as_any()?
            .downcast_ref::<SafetensorsReader>()?;
        st.file
            .get(key)
            .map(|t| Box::new(t) as Box<dyn TensorSource>)
    }

    /// Restores `name` as f32 values into `out` (resized; its capacity is reused).
    pub fn load_f32_into(&self, name: &str, out: &mut Vec<f32>) -> Result<()> {
        let q = self.read(name)?;
        dequantize_into(&q, out).map_err(|e| e.with_path(&self.root))
    }

    /// Restores `name` as f32 values.
    pub fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        let q = self.read(name)?;
        dequantize(&q).map_err(|e| e.with_path(&self.root))
    }

    /// Restores `name` in `dtype` (F32/F16/BF16), or in its natural dequantized dtype when
    /// `dtype` is `None`.
    pub fn load(&self, name: &str, dtype: Option<DType>) -> Result<HostTensor> {
        let q = self.read(name)?;
        let values = dequantize(&q).map_err(|e| e.with_path(&self.root))?;
        let dt = dtype.unwrap_or(q.record.dequant_dtype);
        let dt = if dt.is_float() && matches!(dt, DType::F32 | DType::F16 | DType::BF16) {
            dt
        } else if q.record.method.is_none() {
            // Stored unquantized in a non-float dtype: hand the bytes back unchanged.
            return HostTensor::new(
                TensorMeta::new(name, q.record.dtype, q.record.shape.clone()),
                q.parts
                    .into_iter()
                    .next()
                    .map(|p| p.data)
                    .unwrap_or_default(),
            );
        } else {
            DType::F32
        };
        let data = encode_f32(dt, &values)?;
        HostTensor::new(TensorMeta::new(name, dt, q.record.shape.clone()), data)
    }

    /// Restores `name` as a candle tensor on the CPU.
    #[cfg(feature = "candle")]
    pub fn load_candle(&self, name: &str, dtype: Option<DType>) -> Result<candle_core::Tensor> {
        self.load(name, dtype)?.to_candle()
    }
}
