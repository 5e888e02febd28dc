//! BERT encoder whose Linear layers are candle `QMatMul`s, for GGUF files: the GGML
//! blocks stay packed in memory and every matmul runs candle's quantized kernels
//! (activations quantized on the fly to the weight type's dot-product partner, as
//! llama.cpp does). Types for which candle 0.11's CPU kernel is scalar (see
//! [`candle_cpu_matmul`]) are dequantized at load by default, as candle itself does for
//! F16/BF16; [`QBert::load_with`] can keep them packed.
//!
//! It is candle-transformers' `models::bert::BertModel` (v0.11.1) with `candle_nn::Linear`
//! replaced by `QMatMul` + bias: same layer order, `gelu_erf`, LayerNorm eps, additive
//! `f32::MIN` attention mask and `softmax` over the last dimension. candle-transformers
//! has no quantized BERT, and its `BertModel` only takes dense weights. Embedding tables,
//! biases and LayerNorm parameters are dequantized at load (candle's quantized models do
//! the same: an embedding lookup is not a matmul). A test checks that with plain f32
//! weights this encoder equals `BertModel`.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, LayerNorm};
use candle_transformers::models::bert::{Config, HiddenAct};

use crate::{Error, Result};

/// Where the weights of a [`QBert`] come from, by tensor name (HF BERT names, with or
/// without the `bert.` prefix).
pub trait QWeights {
    /// The weight `name` as a quantized tensor.
    fn qtensor(&self, name: &str) -> Result<Arc<QTensor>>;
}

impl QWeights for HashMap<String, Arc<QTensor>> {
    fn qtensor(&self, name: &str) -> Result<Arc<QTensor>> {
        self.get(name)
            .or_else(|| self.get(&format!("bert.{name}")))
            .cloned()
            .ok_or_else(|| Error::Model {
                reason: format!("no tensor '{name}' in the weights"),
            })
    }
}

/// How a matmul weight of a [`QBert`] is multiplied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulPath {
    /// GGML blocks kept packed, candle's SIMD `QMatMul` kernel.
    Packed,
    /// Kept packed although candle's CPU kernel for this type is scalar (slow).
    PackedScalar,
    /// Dequantized to f32 at load: candle's `QMatMul` does this itself for F32/F16/BF16.
    DequantizedByCandle,
    /// Dequantized to f32 at load because candle's CPU kernel for this type is scalar.
    DequantizedScalar,
}

/// Whether candle 0.11.1's CPU `QMatMul` has a SIMD (AVX2/NEON) dot product for a GGML
/// type: `Some(true)` for Q4_0, Q8_0 and the K-quants, `Some(false)` for the types whose
/// `vec_dot` is the generic scalar loop (Q4_1, Q5_0, Q5_1, Q8_1), `None` for the float
/// types candle dequantizes at load.
pub fn candle_cpu_matmul(t: GgmlDType) -> Option<bool> {
    match t {
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => None,
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q8_1 => Some(false),
        _ => Some(true),
    }
}

struct Weights<'a> {
    src: &'a dyn QWeights,
    device: &'a Device,
    /// Keep types with a scalar candle kernel packed instead of dequantizing them.
    pack_scalar: bool,
    /// GGML type and matmul path of every matmul weight, in load order (for reporting).
    linear_types: Vec<(GgmlDType, MatmulPath)>,
}

impl Weights<'_> {
    fn dense(&self, name: &str) -> Result<Tensor> {
        Ok(self.src.qtensor(name)?.dequantize(self.device)?)
    }

    fn linear(&mut self, prefix: &str) -> Result<Linear> {
        let w = self.src.qtensor(&format!("{prefix}.weight"))?;
        let bias = self.dense(&format!("{prefix}.bias"))?;
        let (path, weight) = match candle_cpu_matmul(w.dtype()) {
            None => (
                MatmulPath::DequantizedByCandle,
                QMatMul::from_arc(w.clone())?,
            ),
            Some(true) => (MatmulPath::Packed, QMatMul::from_arc(w.clone())?),
            Some(false) if self.pack_scalar => {
                (MatmulPath::PackedScalar, QMatMul::from_arc(w.clone())?)
            }
            Some(false) => (
                MatmulPath::DequantizedScalar,
                QMatMul::Tensor(w.dequantize(self.device)?),
            ),
        };
        self.linear_types.push((w.dtype(), path));
        Ok(Linear { weight, bias })
    }

    fn layer_norm(&self, prefix: &str, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm::new(
            self.dense(&format!("{prefix}.weight"))?,
            self.dense(&format!("{prefix}.bias"))?,
            eps,
        ))
    }

    fn embedding(&self, name: &str, hidden: usize) -> Result<Embedding> {
        Ok(Embedding::new(self.dense(name)?, hidden))
    }
}

struct Linear {
    weight: QMatMul,
    bias: Tensor,
}

impl Linear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.weight.forward(xs)?.broadcast_add(&self.bias)
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// A BERT encoder running its matmuls on quantized weights.
pub struct QBert {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_size: usize,
    act: HiddenAct,
    linear_types: Vec<(GgmlDType, MatmulPath)>,
}

impl QBert {
    /// Builds the encoder from `weights` (see [`QWeights`]); types whose candle CPU
    /// kernel is scalar are dequantized at load.
    pub fn load(weights: &dyn QWeights, config: &Config, device: &Device) -> Result<Self> {
        Self::load_with(weights, config, device, false)
    }

    /// [`QBert::load`], keeping types with a scalar candle kernel packed when
    /// `pack_scalar` is set.
    pub fn load_with(
        weights: &dyn QWeights,
        config: &Config,
        device: &Device,
        pack_scalar: bool,
    ) -> Result<Self> {
        let mut w = Weights {
            src: weights,
            device,
            pack_scalar,
            linear_types: Vec::new(),
        };
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let word = w.embedding("embeddings.word_embeddings.weight", h)?;
        let position = w.embedding("embeddings.position_embeddings.weight", h)?;
        let token_type = w.embedding("embeddings.token_type_embeddings.weight", h)?;
        let emb_norm = w.layer_norm("embeddings.LayerNorm", eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                query: w.linear(&format!("{p}.attention.self.query"))?,
                key: w.linear(&format!("{p}.attention.self.key"))?,
                value: w.linear(&format!("{p}.attention.self.value"))?,
                attn_out: w.linear(&format!("{p}.attention.output.dense"))?,
                attn_norm: w.layer_norm(&format!("{p}.attention.output.LayerNorm"), eps)?,
                intermediate: w.linear(&format!("{p}.intermediate.dense"))?,
                output: w.linear(&format!("{p}.output.dense"))?,
                out_norm: w.layer_norm(&format!("{p}.output.LayerNorm"), eps)?,
            });
        }
        if config.num_attention_heads == 0 || h % config.num_attention_heads != 0 {
            return Err(Error::Model {
                reason: format!(
                    "hidden size {h} is not a multiple of {} attention heads",
                    config.num_attention_heads
                ),
            });
        }
        Ok(Self {
            word,
            position,
            token_type,
            emb_norm,
            layers,
            heads: config.num_attention_heads,
            head_size: h / config.num_attention_heads,
            act: config.hidden_act,
            linear_types: w.linear_types,
        })
    }

    /// The GGML type and matmul path of every matmul weight, in layer order.
    pub fn linear_types(&self) -> &[(GgmlDType, MatmulPath)] {
        &self.linear_types
    }

    fn split_heads(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, _) = xs.dims3()?;
        xs.reshape((b, n, self.heads, self.head_size))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Hidden states `[batch, tokens, hidden]` for `input_ids` / `token_type_ids`
    /// `[batch, tokens]` and a 0/1 `attention_mask` of the same shape.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (_, n) = input_ids.dims2()?;
        let positions = Tensor::arange(0u32, n as u32, input_ids.device())?;
        let x = (self.word.forward(input_ids)? + self.token_type.forward(token_type_ids)?)?
            .broadcast_add(&self.position.forward(&positions)?)?;
        let mut x = self.emb_norm.forward(&x)?;
        // 0 where attended, f32::MIN where masked, as transformers and candle do.
        let mask = attention_mask
            .unsqueeze(1)?
            .unsqueeze(1)?
            .to_dtype(DType::F32)?;
        let mask = (mask.ones_like()? - &mask)?.affine(f32::MIN as f64, 0.0)?;
        let scale = (self.head_size as f64).sqrt();
        for l in &self.layers {
            let q = self.split_heads(&l.query.forward(&x)?)?;
            let k = self.split_heads(&l.key.forward(&x)?)?;
            let v = self.split_heads(&l.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?)? / scale)?.broadcast_add(&mask)?;
            let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .flatten_from(D::Minus2)?;
            let a = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + &x)?)?;
            let i = l.intermediate.forward(&a)?;
            let i = match self.act {
                HiddenAct::Gelu => i.gelu_erf()?,
                HiddenAct::GeluApproximate => i.gelu()?,
                HiddenAct::Relu => i.relu()?,
            };
            x = l.out_norm.forward(&(l.output.forward(&i)? + &a)?)?;
        }
        Ok(x)
    }
}
