//! all-MiniLM-L6-v2 end to end: quantize the model folder with quant, load it back, run
//! the BERT forward pass with candle and compare sentence embeddings with the f32 model.
//!
//! Embeddings are computed as sentence-transformers does for this model: the tokenizer
//! from `tokenizer.json` (WordPiece, lowercase, `[CLS] … [SEP]`, truncated at 256 tokens,
//! no padding), the BERT encoder, mean pooling over the attention mask, L2 normalisation.
//!
//! Two ways to load a quantized model:
//! - [`Embedder::dequantized`]: quant's loader ([`quant::ModelFiles`]) restores every tensor
//!   to f32 and candle-transformers' `BertModel` runs on them (every method);
//! - [`Embedder::native_gguf`]: a `.gguf` file read by candle's GGUF reader, its GGML
//!   blocks kept packed and multiplied by candle's `QMatMul` ([`qbert::QBert`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::Tokenizer;

pub mod qbert;
pub mod sentences;

pub use qbert::QBert;

/// Longest input, in tokens (sentence-transformers' `max_seq_length` for this model).
pub const MAX_TOKENS: usize = 256;

/// Errors of the MiniLM check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From quant (quantizing or loading).
    #[error(transparent)]
    Quant(#[from] quant::Error),
    /// From candle (tensors, GGUF reading, forward pass).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A bad `config.json` or `tokenizer.json`.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The weights do not make a BERT model.
    #[error("bad model: {reason}")]
    Model {
        /// What is wrong.
        reason: String,
    },
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the BERT `config.json` of a model folder.
pub fn read_config(model_dir: &Path) -> Result<Config> {
    let path = model_dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| Error::File {
        path,
        reason: e.to_string(),
    })
}

/// Reads `tokenizer.json` of a model folder, set up as sentence-transformers uses it:
/// truncation at [`MAX_TOKENS`], no padding (the file pads to 128).
pub fn read_tokenizer(model_dir: &Path) -> Result<Tokenizer> {
    let path = model_dir.join("tokenizer.json");
    let bad = |reason: String| Error::File {
        path: path.clone(),
        reason,
    };
    let mut tok = Tokenizer::from_file(&path).map_err(|e| bad(e.to_string()))?;
    tok.with_padding(None);
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length: MAX_TOKENS,
        ..Default::default()
    }))
    .map_err(|e| bad(e.to_string()))?;
    Ok(tok)
}

/// The encoder an [`Embedder`] runs.
pub enum Encoder {
    /// candle-transformers' BERT on dense f32 weights.
    Dense(BertModel),
    /// BERT with candle `QMatMul` on GGML blocks.
    Native(QBert),
}

/// Sentence embeddings from one model.
pub struct Embedder {
    tokenizer: Tokenizer,
    encoder: Encoder,
    device: Device,
}

/// Every floating-point tensor of `path` (a model folder, safetensors file or any file
/// quant reads), restored to f32 by quant's loader.
pub fn dequantized_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let files = quant::ModelFiles::open(path)?;
    let names: Vec<String> = files
        .records()
        .filter(|(_, r)| r.dtype.is_float())
        .map(|(_, r)| r.name.clone())
        .collect();
    let mut tensors = HashMap::with_capacity(names.len());
    for name in names {
        let t = files.load_candle(&name, Some(quant::DType::F32))?;
        tensors.insert(name, t);
    }
    Ok(tensors)
}

/// A copy of the model folder fit for the GGUF container: `config.json` and
/// `model.safetensors` without its non-float tensors. all-MiniLM-L6-v2 stores the
/// `embeddings.position_ids` buffer (I64, `0..512`): quant's container writes it as GGUF's
/// I64, but candle 0.11's GGUF reader has no integer types (llama.cpp's converter drops the
/// buffer too); BERT never reads it.
/// Returns the folder and the names dropped.
pub fn gguf_input(model_dir: &Path, dest: &Path) -> Result<(PathBuf, Vec<String>)> {
    use safetensors::SafeTensors;
    let src = model_dir.join("model.safetensors");
    let bytes = std::fs::read(&src).map_err(io(&src))?;
    let bad = |e: safetensors::SafeTensorError| Error::File {
        path: src.clone(),
        reason: e.to_string(),
    };
    let st = SafeTensors::deserialize(&bytes).map_err(bad)?;
    let (keep, dropped): (Vec<_>, Vec<_>) = st.tensors().into_iter().partition(|(_, v)| {
        matches!(
            v.dtype(),
            safetensors::Dtype::F32 | safetensors::Dtype::F16 | safetensors::Dtype::BF16
        )
    });
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    let out = dest.join("model.safetensors");
    safetensors::serialize_to_file(keep, None, &out).map_err(|e| Error::File {
        path: out.clone(),
        reason: e.to_string(),
    })?;
    let config = dest.join("config.json");
    std::fs::copy(model_dir.join("config.json"), &config).map_err(io(&config))?;
    Ok((
        dest.to_path_buf(),
        dropped.into_iter().map(|(n, _)| n).collect(),
    ))
}

/// Every tensor of a `.gguf` file as candle `QTensor`s (blocks as stored).
pub fn gguf_qtensors(path: &Path, device: &Device) -> Result<HashMap<String, Arc<QTensor>>> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| e.with_path(path))?;
    let mut tensors = HashMap::with_capacity(content.tensor_infos.len());
    for name in content.tensor_infos.keys() {
        let t = content
            .tensor(&mut file, name, device)
            .map_err(|e| e.with_path(path))?;
        tensors.insert(name.clone(), Arc::new(t));
    }
    Ok(tensors)
}

impl Embedder {
    /// candle-transformers' `BertModel` on `tensors` (f32), with the tokenizer of
    /// `model_dir`.
    pub fn dense(
        tokenizer: Tokenizer,
        config: &Config,
        tensors: HashMap<String, Tensor>,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = BertModel::load(vb, config)?;
        Ok(Self {
            tokenizer,
            encoder: Encoder::Dense(model),
            device,
        })
    }

    /// A quantized (or plain) model read by quant's loader and dequantized to f32.
    pub fn dequantized(model_dir: &Path, weights: &Path) -> Result<Self> {
        let config = read_config(model_dir)?;
        Self::dense(
            read_tokenizer(model_dir)?,
            &config,
            dequantized_tensors(weights)?,
        )
    }

    /// A `.gguf` file run with candle's quantized matmul ([`QBert::load_with`]: types
    /// whose candle CPU kernel is scalar are dequantized at load unless `pack_scalar`).
    pub fn native_gguf(model_dir: &Path, gguf: &Path, pack_scalar: bool) -> Result<Self> {
        let config = read_config(model_dir)?;
        let device = Device::Cpu;
        let tensors = gguf_qtensors(gguf, &device)?;
        Self::native(read_tokenizer(model_dir)?, &config, &tensors, pack_scalar)
    }

    /// [`QBert`] on `weights` (see [`QBert::load_with`] for `pack_scalar`).
    pub fn native(
        tokenizer: Tokenizer,
        config: &Config,
        weights: &dyn qbert::QWeights,
        pack_scalar: bool,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let model = QBert::load_with(weights, config, &device, pack_scalar)?;
        Ok(Self {
            tokenizer,
            encoder: Encoder::Native(model),
            device,
        })
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The L2-normalised, mean-pooled embedding of `text` (batch 1).
    pub fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Model {
                reason: format!("tokenizing {text:?}: {e}"),
            })?;
        let ids = Tensor::new(enc.get_ids(), &self.device)?.unsqueeze(0)?;
        let types = Tensor::new(enc.get_type_ids(), &self.device)?.unsqueeze(0)?;
        let mask = Tensor::new(enc.get_attention_mask(), &self.device)?.unsqueeze(0)?;
        let hidden = match &self.encoder {
            Encoder::Dense(m) => m.forward(&ids, &types, Some(&mask))?,
            Encoder::Native(m) => m.forward(&ids, &types, &mask)?,
        };
        Ok(mean_pool_normalize(&hidden, &mask)?)
    }
}

/// sentence-transformers' pooling for this model: the mean of the token states where
/// the mask is 1, then L2 normalisation (norm clamped at 1e-12 as torch's `normalize`).
fn mean_pool_normalize(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Vec<f32>> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9f32, f32::MAX)?;
    let mean = summed.broadcast_div(&count)?;
    let norm = mean
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    mean.broadcast_div(&norm)?.squeeze(0)?.to_vec1()
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// The cosine an 8/16-bit method must reach against f32 (issue 10).
pub const MIN_COSINE_8BIT: f64 = 0.999;
/// The cosine a 4/5/6-bit method must reach against f32 (issue 10).
pub const MIN_COSINE_4BIT: f64 = 0.99;

/// The bit width a method's name promises for its quantized values (`uint3wo` → 3,
/// `q4_k` → 4, `int8` → 8, `fp16` → 16), else `bits_per_weight` rounded. Storage can be
/// wider than the name: TorchAO's uintN and int4dq keep their codes in bytes.
pub fn nominal_bits(method: &str, bits_per_weight: f32) -> u32 {
    const MARKERS: &[(&str, u32)] = &[
        ("uint1", 1),
        ("uint2", 2),
        ("uint3", 3),
        ("uint4", 4),
        ("uint5", 5),
        ("uint6", 6),
        ("uint7", 7),
        ("int2", 2),
        ("int4", 4),
        ("int8", 8),
        ("iq4", 4),
        ("q2_", 2),
        ("q3_", 3),
        ("q4_", 4),
        ("q5_", 5),
        ("q6_", 6),
        ("q8_", 8),
        ("4bit", 4),
        ("8bit", 8),
        ("float8", 8),
        ("fp16", 16),
        ("bf16", 16),
    ];
    MARKERS
        .iter()
        .find(|(m, _)| method.contains(m))
        .map_or(bits_per_weight.round() as u32, |&(_, b)| b)
}

/// The cosine target for a method of `bits` nominal bits (see [`nominal_bits`]): 8 and
/// 16-bit [`MIN_COSINE_8BIT`], 4 to 7-bit [`MIN_COSINE_4BIT`] (the issue names 4/5/6; 7 is
/// held to the same), none for 1/2/3-bit, which are reported, not held to a target.
pub fn cosine_target(bits: u32) -> Option<f64> {
    match bits {
        8.. => Some(MIN_COSINE_8BIT),
        4..=7 => Some(MIN_COSINE_4BIT),
        _ => None,
    }
}
