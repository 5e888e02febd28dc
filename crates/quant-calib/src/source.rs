//! Where a model's llama.cpp key/values and f32 weights come from: a Hugging Face folder
//! converted on the fly ([`HfGgufReader`]) or a `.gguf` file (any float or quantized ggml
//! type, dequantized as llama.cpp's CPU backend reads it).

use std::path::{Path, PathBuf};

use quant_core::format::ContainerReader;
use quant_core::{Error, Result};
use quant_gguf::arch::{architecture_for, HfGgufReader};
use quant_gguf::gguf::{GgufFile, GgufType, GgufValue};
use quant_gguf::GgmlType;

/// A model as llama.cpp sees it: typed key/values and tensors under llama.cpp names.
pub trait ModelSource {
    /// The file or folder, for messages.
    fn path(&self) -> &Path;
    /// The value of a llama.cpp key.
    fn kv(&self, key: &str) -> Option<&GgufValue>;
    /// Whether tensor `name` exists.
    fn has(&self, name: &str) -> bool;
    /// Tensor `name`: its shape (outermost first) and f32 values, row-major.
    fn tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)>;
}

/// A Hugging Face folder, converted as convert_hf_to_gguf.py does.
#[derive(Debug)]
pub struct HfSource {
    dir: PathBuf,
    reader: HfGgufReader,
}

impl HfSource {
    /// Opens the folder `dir` (its `config.json` picks the architecture).
    pub fn open(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?,
        )
        .map_err(|e| Error::file(&config_path, "json", e.to_string()))?;
        let arch = architecture_for(&config).ok_or_else(|| {
            Error::file(
                &config_path,
                "config.json",
                "not an architecture quant converts (architectures[0])",
            )
        })?;
        let reader = HfGgufReader::open(dir, &config, arch)?;
        // The graphs read the vocabulary's keys (special token ids): wait for it here, so
        // its errors surface when the model is opened.
        reader.kvs()?;
        Ok(HfSource {
            dir: dir.to_path_buf(),
            reader,
        })
    }
}

impl ModelSource for HfSource {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn kv(&self, key: &str) -> Option<&GgufValue> {
        // Read (or refused) when the source was opened.
        self.reader.kvs().ok()?.get(key)
    }

    fn has(&self, name: &str) -> bool {
        self.reader.records().iter().any(|r| r.name == name)
    }

    fn tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let shape = self
            .reader
            .records()
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.shape.clone())
            .ok_or_else(|| Error::tensor(&self.dir, name, "missing from the model"))?;
        Ok((shape, self.reader.values(name)?))
    }
}

/// A `.gguf` model file.
#[derive(Debug)]
pub struct GgufSource {
    file: GgufFile,
}

impl GgufSource {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(GgufSource {
            file: GgufFile::open(path)?,
        })
    }
}

impl ModelSource for GgufSource {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn kv(&self, key: &str) -> Option<&GgufValue> {
        self.file.get(key)
    }

    fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    fn tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let path = self.file.path();
        let info = self
            .file
            .tensor(name)
            .ok_or_else(|| Error::tensor(path, name, "missing from the model"))?;
        let bytes = self.file.read_data(info)?;
        let row_len = info.dims.first().copied().unwrap_or(1) as usize;
        let values = match info.ty {
            GgufType::Ggml(GgmlType::F32) => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            GgufType::Ggml(ty) => quant_gguf::dequantize(ty, &bytes, row_len)?,
            GgufType::Int(_) => {
                return Err(Error::tensor(
                    path,
                    name,
                    "an integer tensor is not a weight",
                ))
            }
        };
        Ok((info.shape(), values))
    }
}
