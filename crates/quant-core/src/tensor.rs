//! Tensors as quant sees them: a name, a dtype, a shape and bytes.

use std::borrow::Cow;

use crate::dtype::{decode_to_f32, encode_f32, DType};
use crate::error::{Error, Result};

/// Name, dtype and shape of a tensor: all a method needs to plan its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    /// Full name, e.g. `model.layers.0.mlp.down_proj.weight`.
    pub name: String,
    /// Stored element type.
    pub dtype: DType,
    /// Shape, outermost first (PyTorch order).
    pub shape: Vec<usize>,
}

impl TensorMeta {
    /// Builds a meta record.
    pub fn new(name: impl Into<String>, dtype: DType, shape: impl Into<Vec<usize>>) -> Self {
        TensorMeta {
            name: name.into(),
            dtype,
            shape: shape.into(),
        }
    }

    /// Number of elements, or an error when the product overflows.
    pub fn numel(&self) -> Result<usize> {
        checked_numel(&self.shape).ok_or_else(|| {
            Error::tensor(
                "",
                &self.name,
                format!(
                    "shape {:?} has more elements than fit in memory",
                    self.shape
                ),
            )
        })
    }

    /// Number of bytes as stored.
    pub fn byte_len(&self) -> Result<usize> {
        self.numel()?
            .checked_mul(self.dtype.size())
            .ok_or_else(|| Error::tensor("", &self.name, "byte size overflows"))
    }

    /// Length of the innermost dimension (1 for scalars).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Number of rows when viewed as a matrix `[rows, row_len]`.
    pub fn rows(&self) -> usize {
        self.numel()
            .unwrap_or(0)
            .checked_div(self.row_len())
            .unwrap_or(0)
    }

    /// A matrix weight: 2-D or more and named `*weight`.
    pub fn is_matrix_weight(&self) -> bool {
        self.shape.len() >= 2 && self.name.ends_with("weight")
    }

    /// The weight of an embedding table (`nn.Embedding`) by the naming conventions of
    /// transformers and diffusers: `weight` of a module whose last name component is
    /// [`is_embedding_module`].
    pub fn is_embedding_weight(&self) -> bool {
        let Some(module) = self.name.strip_suffix(".weight") else {
            return false;
        };
        is_embedding_module(module.rsplit('.').next().unwrap_or(module))
    }
}

/// Whether a module's last name component names an embedding table in transformers or
/// diffusers models: `*embeddings`, `*embedding`, `*embed` (BERT's `word_embeddings`,
/// Llama's `embed_tokens` is covered below, ViT's `patch_embedding`), `embed_tokens`,
/// `embed_positions`, GPT-2's `wte`/`wpe` and T5's `shared`; case-insensitive.
/// diffusers' `*embedder` modules (`x_embedder`, `context_embedder`) are `nn.Linear` and
/// do not match. Backends that quantize only `nn.Linear` weights (bitsandbytes, quanto,
/// TorchAO) keep these.
pub fn is_embedding_module(last: &str) -> bool {
    let c = last.to_ascii_lowercase();
    c.ends_with("embeddings")
        || c.ends_with("embedding")
        || c.ends_with("embed")
        || matches!(
            c.as_str(),
            "embed_tokens" | "embed_positions" | "wte" | "wpe" | "shared"
        )
}

/// Product of dims, `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Something that holds one tensor: a memory-mapped safetensors view, a candle tensor,
/// a GGUF tensor, or bytes in memory.
pub trait TensorSource: Send + Sync {
    /// Name, dtype and shape.
    fn meta(&self) -> &TensorMeta;

    /// The stored bytes (little-endian), borrowed when they are mapped.
    fn bytes(&self) -> Result<Cow<'_, [u8]>>;

    /// All values as f32 (exact for f16/bf16/f8 and integers up to 2^24).
    fn to_f32(&self) -> Result<Vec<f32>> {
        let meta = self.meta();
        let bytes = self.bytes()?;
        let mut out = Vec::new();
        decode_to_f32(meta.dtype, &bytes, &mut out)
            .map_err(|e| Error::tensor("", &meta.name, e.to_string()))?;
        Ok(out)
    }

    /// All values as f32 in `out`, replacing what it held and reusing its allocation when it
    /// is large enough (a run reads tensor after tensor into one buffer).
    fn to_f32_into(&self, out: &mut Vec<f32>) -> Result<()> {
        let meta = self.meta();
        let bytes = self.bytes()?;
        out.clear();
        if out.capacity() < bytes.len() / meta.dtype.size().max(1) {
            // Not kept beside the larger one about to be allocated.
            *out = Vec::new();
        }
        decode_to_f32(meta.dtype, &bytes, out)
            .map_err(|e| Error::tensor("", &meta.name, e.to_string()))
    }

    /// Hands the values to `f` as f32 in chunks of at most `chunk` elements, in order;
    /// sources backed by mapped files release each chunk's pages after use.
    fn for_each_f32_chunk(
        &self,
        chunk: usize,
        f: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<()> {
        let meta = self.meta();
        let bytes = self.bytes()?;
        let size = meta.dtype.size();
        let mut tmp = Vec::new();
        for c in bytes.chunks(chunk.max(1) * size) {
            tmp.clear();
            decode_to_f32(meta.dtype, c, &mut tmp)
                .map_err(|e| Error::tensor("", &meta.name, e.to_string()))?;
            f(&tmp)?;
        }
        Ok(())
    }

    /// Writes the stored bytes to `w` (in chunks, for mapped sources).
    fn write_bytes(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let bytes = self.bytes().map_err(std::io::Error::other)?;
        w.write_all(&bytes)
    }
}

/// A tensor whose bytes live in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Name, dtype and shape.
    pub meta: TensorMeta,
    /// Little-endian bytes, `numel * dtype.size()` long.
    pub data: Vec<u8>,
}

impl HostTensor {
    /// Wraps bytes, checking their length against the shape.
    pub fn new(meta: TensorMeta, data: Vec<u8>) -> Result<Self> {
        let want = meta.byte_len()?;
        if data.len() != want {
            return Err(Error::tensor(
                "",
                &meta.name,
                format!(
                    "{} bytes for shape {:?} of {} (expected {want})",
                    data.len(),
                    meta.shape,
                    meta.dtype
                ),
            ));
        }
        Ok(HostTensor { meta, data })
    }

    /// Encodes f32 values as `dtype` (F32/F16/BF16, rounding to nearest even).
    pub fn from_f32(
        name: impl Into<String>,
        dtype: DType,
        shape: impl Into<Vec<usize>>,
        values: &[f32],
    ) -> Result<Self> {
        let meta = TensorMeta::new(name, dtype, shape);
        let data =
            encode_f32(dtype, values).map_err(|e| Error::tensor("", &meta.name, e.to_string()))?;
        HostTensor::new(meta, data)
    }
}

impl TensorSource for HostTensor {
    fn meta(&self) -> &TensorMeta {
        &self.meta
    }
    fn bytes(&self) -> Result<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(&self.data))
    }
}

#[cfg(feature = "candle")]
mod candle_impl {
    use super::*;
    use candle_core::{DType as CD, Tensor};

    /// Maps a candle dtype to quant's.
    pub fn from_candle_dtype(d: CD) -> Result<DType> {
        Ok(match d {
            CD::U8 => DType::U8,
            CD::U32 => DType::U32,
            CD::I64 => DType::I64,
            CD::BF16 => DType::BF16,
            CD::F16 => DType::F16,
            CD::F32 => DType::F32,
            CD::F64 => DType::F64,
            other => {
                return Err(Error::UnknownDType {
                    name: format!("{other:?}"),
                    context: "candle dtype".into(),
                })
            }
        })
    }

    /// Maps quant's dtype to candle's, when candle has it.
    pub fn to_candle_dtype(d: DType) -> Result<CD> {
        Ok(match d {
            DType::U8 | DType::Bool => CD::U8,
            DType::U32 => CD::U32,
            DType::I64 => CD::I64,
            DType::BF16 => CD::BF16,
            DType::F16 => CD::F16,
            DType::F32 => CD::F32,
            DType::F64 => CD::F64,
            other => {
                return Err(Error::UnsupportedDType {
                    tensor: String::new(),
                    dtype: other.to_string(),
                    op: "candle tensors".into(),
                })
            }
        })
    }

    /// The little-endian bytes of `v`, in one pre-sized buffer.
    fn le_bytes<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        let mut out = Vec::with_capacity(v.len() * N);
        for &x in v {
            out.extend_from_slice(&f(x));
        }
        out
    }

    /// A named candle tensor as a [`TensorSource`].
    pub struct CandleSource {
        meta: TensorMeta,
        tensor: Tensor,
    }

    impl CandleSource {
        /// Wraps a candle tensor under a name.
        pub fn new(name: impl Into<String>, tensor: Tensor) -> Result<Self> {
            let meta = TensorMeta::new(
                name,
                from_candle_dtype(tensor.dtype())?,
                tensor.dims().to_vec(),
            );
            Ok(CandleSource { meta, tensor })
        }
    }

    impl TensorSource for CandleSource {
        fn meta(&self) -> &TensorMeta {
            &self.meta
        }
        fn bytes(&self) -> Result<Cow<'_, [u8]>> {
            let flat = self.tensor.flatten_all()?;
            let bytes = match self.tensor.dtype() {
                CD::U8 => flat.to_vec1::<u8>()?,
                CD::U32 => le_bytes(&flat.to_vec1::<u32>()?, u32::to_le_bytes),
                CD::I64 => le_bytes(&flat.to_vec1::<i64>()?, i64::to_le_bytes),
                CD::BF16 => le_bytes(&flat.to_vec1::<half::bf16>()?, |v| {
                    v.to_bits().to_le_bytes()
                }),
                CD::F16 => le_bytes(&flat.to_vec1::<half::f16>()?, |v| v.to_bits().to_le_bytes()),
                CD::F32 => le_bytes(&flat.to_vec1::<f32>()?, f32::to_le_bytes),
                CD::F64 => le_bytes(&flat.to_vec1::<f64>()?, f64::to_le_bytes),
                other => {
                    return Err(Error::UnknownDType {
                        name: format!("{other:?}"),
                        context: format!("candle tensor '{}'", self.meta.name),
                    })
                }
            };
            Ok(Cow::Owned(bytes))
        }
    }

    impl HostTensor {
        /// Converts to a candle tensor on the CPU.
        pub fn to_candle(&self) -> Result<Tensor> {
            let dt = to_candle_dtype(self.meta.dtype)?;
            Ok(Tensor::from_raw_buffer(
                &self.data,
                dt,
                &self.meta.shape,
                &candle_core::Device::Cpu,
            )?)
        }
    }
}

#[cfg(feature = "candle")]
pub use candle_impl::{from_candle_dtype, to_candle_dtype, CandleSource};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn embedding_names() {
        let w = |name: &str| TensorMeta::new(name, DType::F32, vec![4, 4]).is_embedding_weight();
        for name in [
            "embeddings.word_embeddings.weight",
            "bert.embeddings.position_embeddings.weight",
            "model.embed_tokens.weight",
            "transformer.wte.weight",
            "shared.weight",
            "vision_model.embeddings.patch_embedding.weight",
            "decoder.embed_positions.weight",
        ] {
            assert!(w(name), "{name}");
        }
        for name in [
            "x_embedder.weight",
            "context_embedder.weight",
            "encoder.layer.0.attention.self.query.weight",
            "embeddings.LayerNorm.weight",
            "word_embeddings",
            "weight",
        ] {
            assert!(!w(name), "{name}");
        }
    }
}
