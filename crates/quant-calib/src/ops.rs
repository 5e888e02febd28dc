//! The tensor operations the graphs share, each computed as llama.cpp's CPU backend does
//! where that changes the recorded activations (f16 K/V, ggml's GELU table).

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use half::f16;
use quant_core::{Error, Result};
use quant_gguf::gguf::GgufValue;

use crate::source::ModelSource;
use crate::Collector;

/// A candle error while running `what` of the model at `dir`.
pub(crate) fn ce(dir: &Path, what: &str, e: candle_core::Error) -> Error {
    Error::tensor(dir, what, format!("candle: {e}"))
}

/// A model that cannot be run, with the reason.
pub(crate) fn bad(src: &dyn ModelSource, reason: String) -> Error {
    Error::file(src.path(), "model", reason)
}

/// An unsigned key/value of the model.
pub(crate) fn kv_u64(src: &dyn ModelSource, key: &str) -> Option<u64> {
    src.kv(key).and_then(GgufValue::as_u64)
}

/// A boolean key/value of the model.
pub(crate) fn kv_bool(src: &dyn ModelSource, key: &str) -> Option<bool> {
    match src.kv(key)? {
        GgufValue::Bool(b) => Some(*b),
        _ => None,
    }
}

/// A float key/value of the model.
pub(crate) fn kv_f32(src: &dyn ModelSource, key: &str) -> Option<f32> {
    match src.kv(key)? {
        GgufValue::F32(v) => Some(*v),
        GgufValue::F64(v) => Some(*v as f32),
        _ => None,
    }
}

/// A required unsigned key/value, as a size.
pub(crate) fn need(src: &dyn ModelSource, key: &str) -> Result<usize> {
    kv_u64(src, key)
        .map(|v| v as usize)
        .ok_or_else(|| bad(src, format!("no {key}")))
}

/// Tensor `name` of the model as an f32 candle tensor.
pub(crate) fn load(src: &dyn ModelSource, name: &str) -> Result<Tensor> {
    let (shape, values) = src.tensor(name)?;
    Tensor::from_vec(values, shape, &Device::Cpu).map_err(|e| ce(src.path(), name, e))
}

/// Gives `collector` the input `x` (`rows × cols`) of the products with each weight of
/// `names` (weights that share one input, read out of the tensor once).
pub(crate) fn record(collector: &mut Collector, names: &[&str], x: &Tensor) -> Result<()> {
    let what = names.first().copied().unwrap_or("imatrix");
    let cols = x.dim(1).map_err(|e| ce(Path::new("imatrix"), what, e))?;
    let values: Vec<f32> = x
        .flatten_all()
        .and_then(|v| v.to_vec1())
        .map_err(|e| ce(Path::new("imatrix"), what, e))?;
    for name in names {
        collector.add(name, &values, cols)?;
    }
    Ok(())
}

/// `x · wᵀ` for `w` of shape `(out, in)`, plus the bias `b` when there is one.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `x` as f16 holds it: K and V in llama.cpp's default f16 KV cache, or cast to f16 for
/// flash attention when there is no cache.
pub(crate) fn f16_round(x: &Tensor) -> candle_core::Result<Tensor> {
    x.to_dtype(DType::F16)?.to_dtype(DType::F32)
}

/// `(t, n·d)` → `(n, t, d)`.
pub(crate) fn heads(x: &Tensor, n: usize, d: usize) -> candle_core::Result<Tensor> {
    let t = x.dim(0)?;
    x.reshape((t, n, d))?.transpose(0, 1)?.contiguous()
}

/// Softmax attention of `q` `(n, t, d)` over `k`, `v` `(n, t, d)` with `scale`, causal
/// (query `i` sees keys `0..=i`) or not, back to `(t, n·d)`. The scores are scaled and
/// turned into probabilities in place, row by row, rather than through one temporary
/// tensor per step.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
    causal: bool,
) -> candle_core::Result<Tensor> {
    let (n, t, d) = q.dims3()?;
    let tk = k.dim(1)?;
    let mut p: Vec<f32> = q.matmul(&k.t()?.contiguous()?)?.flatten_all()?.to_vec1()?;
    for (r, row) in p.chunks_exact_mut(tk.max(1)).enumerate() {
        let seen = if causal { (r % t + 1).min(tk) } else { tk };
        let (row, hidden) = row.split_at_mut(seen);
        hidden.fill(0.0);
        for x in row.iter_mut() {
            *x *= scale;
        }
        softmax_in_place(row);
    }
    Tensor::from_vec(p, (n, t, tk), q.device())?
        .matmul(v)?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((t, n * d))
}

/// Softmax of `row` in place: the maximum, `exp(x − max)` summed left to right, then each
/// divided by the sum (masked entries at −∞ become 0).
pub(crate) fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut sum = 0.0f32;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in row.iter_mut() {
        *x /= sum;
    }
}

/// llama-imatrix's perplexity terms of a chunk: row `i` of `logits` (position `first + i`)
/// predicts `tokens[first + i + 1]`; returns (Σ −log p, Σ (−log p)², rows).
pub(crate) fn nll_terms(logits: &[Vec<f32>], tokens: &[u32], first: usize) -> (f64, f64, usize) {
    let (mut sum, mut sum2) = (0f64, 0f64);
    for (i, row) in logits.iter().enumerate() {
        let tok = tokens.get(first + i + 1).copied().unwrap_or(0) as usize;
        let v = -log_softmax(row, tok);
        sum += v;
        sum2 += v * v;
    }
    (sum, sum2, logits.len())
}

/// `x / √(mean(x²) + eps) · w` over the last dim (`ggml_rms_norm` then the weight).
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

/// `(x − mean) / √(var + eps) · w + b` over the last dim (`ggml_norm`, then weight and
/// bias).
pub(crate) fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    let c = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = c.sqr()?.mean_keepdim(D::Minus1)?;
    c.broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(w)?
        .broadcast_add(b)
}

/// ggml's tanh GELU of one value, `ggml_gelu_f32`.
fn gelu_tanh(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// ggml's GELU table (`ggml_table_gelu_f16`): for every f16 bit pattern, `gelu_tanh` of
/// its value, rounded to f16; built once.
fn gelu_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_tanh(f16::from_bits(bits).to_f32())).to_f32())
            .collect()
    })
}

/// ggml's CPU GELU (`ggml_vec_gelu_f32` with `GGML_GELU_FP16`): 0 at or below −10, the
/// input at or above 10, otherwise the table entry of the input rounded to f16.
pub(crate) fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    let table = gelu_table();
    let shape = x.shape().clone();
    let mut values: Vec<f32> = x.flatten_all()?.to_vec1()?;
    for v in &mut values {
        *v = if *v <= -10.0 {
            0.0
        } else if *v >= 10.0 {
            *v
        } else {
            table
                .get(usize::from(f16::from_f32(*v).to_bits()))
                .copied()
                .unwrap_or(f32::NAN)
        };
    }
    Tensor::from_vec(values, shape, x.device())
}

/// log p(`tok`) under the softmax of `logits`, as llama-imatrix's `log_softmax` takes it
/// (exponentials in f32 summed in f64).
fn log_softmax(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let at = logits.get(tok).copied().unwrap_or(f32::NEG_INFINITY);
    f64::from(at - max) - sum.ln()
}
