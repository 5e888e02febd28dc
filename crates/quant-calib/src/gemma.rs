//! llama.cpp's `gemma2` and `gemma3` graphs (`llm_build_gemma2`, `llama_model_gemma3`) on
//! one sequence, with candle-core ops, recording the input of every weight product for a
//! [`Collector`].
//!
//! Weights come from quant-gguf's converter under llama.cpp names and values: every
//! `*norm.weight` already holds Gemma's `1 + w`, and q/k are not permuted (NEOX rope).
//! The token embeddings are scaled by `√n_embd`. Per block: RMS norm × `attn_norm` →
//! `attn_q/k/v`; gemma3 only: per-head RMS norms × `attn_q_norm` / `attn_k_norm`; NEOX
//! rope, with the sliding-window layers' own base (`rope.freq_base_swa`) and, on gemma3,
//! linear rope scaling (`rope.scaling.factor`) only on the global layers; Q scaled by
//! `1/√head_dim` (`1/√(n_embd/n_head)` for the 27B models, as llama.cpp does); gemma2
//! only: scores soft-capped (`c·tanh(s/c)`, `attn_logit_softcapping`); causal, and on the
//! sliding-window layers limited to the last `attention.sliding_window` positions (layer
//! `i` slides when `i % p < p − 1`, pattern `p` = `attention.sliding_window_pattern`, by
//! default 2 on gemma2, 6 on gemma3, or that key's per-layer flags); K and V rounded to
//! f16 (llama.cpp's KV cache) → `attn_output`; RMS norm × `post_attention_norm`;
//! residual; RMS norm × `ffn_norm` → `ffn_gate`, `ffn_up`; `gelu(gate) · up` (ggml's tanh
//! GELU) → `ffn_down`; RMS norm × `post_ffw_norm`; residual. The output product uses
//! `token_embd` (never collected by llama-imatrix); its logits are soft-capped by
//! `final_logit_softcapping` (when set) for the perplexity estimate.

use candle_core::{Device, Tensor};
use quant_core::Result;
use quant_gguf::gguf::GgufValue;

use crate::ops::{
    bad, ce, f16_round, gelu, heads, kv_f32, kv_u64, linear, need, nll_terms, record, rms_norm,
    softmax_in_place,
};
use crate::source::ModelSource;
use crate::Collector;

struct Block {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    /// gemma3's per-head RMS norms of Q and K.
    qk_norm: Option<(Tensor, Tensor)>,
    wo: Tensor,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    w_gate: Tensor,
    w_up: Tensor,
    w_down: Tensor,
    post_ffw_norm: Tensor,
}

/// Rope frequencies of one kind of layer: base and linear scale.
#[derive(Clone, Copy, Debug)]
struct Rope {
    base: f32,
    scale: f32,
}

/// A gemma2 or gemma3 model held as f32 candle tensors.
pub struct Gemma {
    dir: std::path::PathBuf,
    embd: Tensor,
    blocks: Vec<Block>,
    output_norm: Tensor,
    n_embd: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    rope_dim: usize,
    eps: f64,
    rope_global: Rope,
    rope_swa: Rope,
    q_scale: f32,
    attn_softcap: Option<f32>,
    final_softcap: Option<f32>,
    n_swa: usize,
    /// Per layer: whether it is a sliding-window layer.
    swa: Vec<bool>,
}

impl std::fmt::Debug for Gemma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemma")
            .field("dir", &self.dir)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl Gemma {
    /// Loads the model of `general.architecture` `arch` (`gemma2` or `gemma3`; keys
    /// `<arch>.*`, llama.cpp's defaults where a key is absent).
    pub fn load(src: &dyn ModelSource, arch: &str) -> Result<Self> {
        let gemma3 = arch == "gemma3";
        let key = |k: &str| format!("{arch}.{k}");
        let n_layer = need(src, &key("block_count"))?;
        let n_embd = need(src, &key("embedding_length"))?;
        let n_head = need(src, &key("attention.head_count"))?;
        let n_head_kv = kv_u64(src, &key("attention.head_count_kv")).map_or(n_head, |v| v as usize);
        let head_dim = kv_u64(src, &key("attention.key_length"))
            .map_or(n_embd / n_head.max(1), |v| v as usize);
        let rope_dim = kv_u64(src, &key("rope.dimension_count")).map_or(head_dim, |v| v as usize);
        if n_head == 0
            || n_head_kv == 0
            || n_head % n_head_kv != 0
            || rope_dim > head_dim
            || rope_dim % 2 != 0
        {
            return Err(bad(
                src,
                format!(
                    "bad attention shape: {n_head} heads, {n_head_kv} kv heads, head size \
                     {head_dim}, rope over {rope_dim}"
                ),
            ));
        }
        let eps = kv_f32(src, &key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-6) as f64;
        let rope_global = Rope {
            base: kv_f32(src, &key("rope.freq_base")).unwrap_or(10000.0),
            scale: rope_scale(src, &key)?,
        };
        // llama.cpp: gemma2's sliding layers default to the global rope, gemma3's to
        // base 10000 unscaled.
        let swa_default = if gemma3 {
            Rope {
                base: 10000.0,
                scale: 1.0,
            }
        } else {
            rope_global
        };
        let rope_swa = Rope {
            base: kv_f32(src, &key("rope.freq_base_swa")).unwrap_or(swa_default.base),
            ..swa_default
        };
        let (attn_softcap, final_softcap) = if gemma3 {
            let f = kv_f32(src, &key("final_logit_softcapping")).unwrap_or(0.0);
            (None, (f != 0.0).then_some(f))
        } else {
            (
                Some(kv_f32(src, &key("attn_logit_softcapping")).unwrap_or(50.0)),
                Some(kv_f32(src, &key("final_logit_softcapping")).unwrap_or(30.0)),
            )
        };
        let n_swa = kv_u64(src, &key("attention.sliding_window"))
            .map_or(if gemma3 { 0 } else { 4096 }, |v| v as usize);
        if attn_softcap.is_some_and(|c| c <= 0.0)
            || final_softcap.is_some_and(|c| c <= 0.0)
            || (!gemma3 && n_swa == 0)
        {
            return Err(bad(
                src,
                format!(
                    "bad {arch} keys: attn_logit_softcapping {attn_softcap:?}, \
                     final_logit_softcapping {final_softcap:?}, sliding_window {n_swa}"
                ),
            ));
        }
        let swa = swa_layers(
            src,
            &key("attention.sliding_window_pattern"),
            n_layer,
            n_swa,
            gemma3,
        )?;
        // llama.cpp: the 27B (gemma2: 46 layers, gemma3: 62) scales by n_embd / n_head,
        // the others by head_dim.
        let q_scale = if n_layer == if gemma3 { 62 } else { 46 } {
            1.0 / ((n_embd / n_head) as f32).sqrt()
        } else {
            1.0 / (head_dim as f32).sqrt()
        };
        let load = |name: &str| crate::ops::load(src, name);
        let mut blocks = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let w = |s: &str| load(&format!("blk.{i}.{s}.weight"));
            blocks.push(Block {
                attn_norm: w("attn_norm")?,
                wq: w("attn_q")?,
                wk: w("attn_k")?,
                wv: w("attn_v")?,
                qk_norm: if gemma3 {
                    Some((w("attn_q_norm")?, w("attn_k_norm")?))
                } else {
                    None
                },
                wo: w("attn_output")?,
                post_attn_norm: w("post_attention_norm")?,
                ffn_norm: w("ffn_norm")?,
                w_gate: w("ffn_gate")?,
                w_up: w("ffn_up")?,
                w_down: w("ffn_down")?,
                post_ffw_norm: w("post_ffw_norm")?,
            });
        }
        Ok(Gemma {
            dir: src.path().to_path_buf(),
            embd: load("token_embd.weight")?,
            blocks,
            output_norm: load("output_norm.weight")?,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            rope_dim,
            eps,
            rope_global,
            rope_swa,
            q_scale,
            attn_softcap,
            final_softcap,
            n_swa,
            swa,
        })
    }

    /// Runs one sequence of tokens, giving `collector` the input of every weight product;
    /// with `nll`, also llama-imatrix's perplexity terms of the chunk's second half (sum
    /// of −log p, sum of squares, tokens), on the logits (soft-capped when the model says so).
    pub fn forward_nll(
        &self,
        tokens: &[u32],
        collector: &mut Collector,
        nll: bool,
    ) -> Result<Option<(f64, f64, usize)>> {
        let dir = self.dir.as_path();
        let e = |e: candle_core::Error| ce(dir, "forward", e);
        let t = tokens.len();
        let dev = Device::Cpu;
        let ids = Tensor::new(tokens, &dev).map_err(e)?;
        let mut x = self
            .embd
            .index_select(&ids, 0)
            .and_then(|x| x.affine(f64::from((self.n_embd as f32).sqrt()), 0.0))
            .map_err(e)?;
        let global = self.rope_tables(t, self.rope_global).map_err(e)?;
        let local = self.rope_tables(t, self.rope_swa).map_err(e)?;
        let group = self.n_head / self.n_head_kv;
        let kv_index: Vec<u32> = (0..self.n_head).map(|h| (h / group) as u32).collect();
        let kv_index = Tensor::new(kv_index.as_slice(), &dev).map_err(e)?;
        for (i, b) in self.blocks.iter().enumerate() {
            let name = |s: &str| format!("blk.{i}.{s}.weight");
            let h = rms_norm(&x, &b.attn_norm, self.eps).map_err(e)?;
            record(
                collector,
                &[&name("attn_q"), &name("attn_k"), &name("attn_v")],
                &h,
            )?;
            let swa = self.swa.get(i).copied().unwrap_or(false);
            let (cos, sin) = if swa { &local } else { &global };
            let (q, k) = match &b.qk_norm {
                Some((qn, kn)) => (
                    linear(&h, &b.wq, None)
                        .and_then(|q| self.head_norm(&q, self.n_head, qn))
                        .map_err(e)?,
                    linear(&h, &b.wk, None)
                        .and_then(|k| self.head_norm(&k, self.n_head_kv, kn))
                        .map_err(e)?,
                ),
                None => (
                    linear(&h, &b.wq, None).map_err(e)?,
                    linear(&h, &b.wk, None).map_err(e)?,
                ),
            };
            let q = self
                .rope(&q, self.n_head, cos, sin)
                .and_then(|q| q.affine(f64::from(self.q_scale), 0.0))
                .and_then(|q| heads(&q, self.n_head, self.head_dim))
                .map_err(e)?;
            let k = self
                .rope(&k, self.n_head_kv, cos, sin)
                .and_then(|k| f16_round(&k))
                .and_then(|k| heads(&k, self.n_head_kv, self.head_dim))
                .and_then(|k| k.index_select(&kv_index, 0))
                .map_err(e)?;
            let v = linear(&h, &b.wv, None)
                .and_then(|v| f16_round(&v))
                .and_then(|v| heads(&v, self.n_head_kv, self.head_dim))
                .and_then(|v| v.index_select(&kv_index, 0))
                .map_err(e)?;
            let window = swa.then_some(self.n_swa);
            let att = capped_attention(&q, &k, &v, self.attn_softcap, window).map_err(e)?;
            record(collector, &[&name("attn_output")], &att)?;
            let a = linear(&att, &b.wo, None)
                .and_then(|a| rms_norm(&a, &b.post_attn_norm, self.eps))
                .map_err(e)?;
            let sa = (x + a).map_err(e)?;
            let h = rms_norm(&sa, &b.ffn_norm, self.eps).map_err(e)?;
            record(collector, &[&name("ffn_gate"), &name("ffn_up")], &h)?;
            let g = linear(&h, &b.w_gate, None)
                .and_then(|g| gelu(&g))
                .and_then(|g| g.mul(&linear(&h, &b.w_up, None)?))
                .map_err(e)?;
            record(collector, &[&name("ffn_down")], &g)?;
            let y = linear(&g, &b.w_down, None)
                .and_then(|y| rms_norm(&y, &b.post_ffw_norm, self.eps))
                .map_err(e)?;
            x = (sa + y).map_err(e)?;
        }
        if !nll || t < 3 {
            return Ok(None);
        }
        // llama-imatrix: positions t/2 .. t-2 predict the token after them.
        let first = t / 2;
        let n = t - 1 - first;
        let logits = x
            .narrow(0, first, n)
            .and_then(|h| rms_norm(&h, &self.output_norm, self.eps))
            .and_then(|h| linear(&h, &self.embd, None))
            .and_then(|l| match self.final_softcap {
                Some(c) => {
                    let c = f64::from(c);
                    l.affine(1.0 / c, 0.0)?.tanh()?.affine(c, 0.0)
                }
                None => Ok(l),
            })
            .and_then(|l| l.to_vec2::<f32>())
            .map_err(e)?;
        Ok(Some(nll_terms(&logits, tokens, first)))
    }

    /// RMS norm of each head of `(t, n·head_dim)` × `w` `(head_dim)`.
    fn head_norm(&self, x: &Tensor, n: usize, w: &Tensor) -> candle_core::Result<Tensor> {
        let t = x.dim(0)?;
        rms_norm(&x.reshape((t, n, self.head_dim))?, w, self.eps)?.reshape((t, n * self.head_dim))
    }

    /// cos and sin of `scale · pos · base^(-2i/rope_dim)`, `(t, 1, rope_dim/2)`.
    fn rope_tables(&self, t: usize, rope: Rope) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.rope_dim / 2;
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for pos in 0..t {
            for i in 0..half {
                let theta = rope.base.powf(-2.0 * i as f32 / self.rope_dim as f32);
                let a = rope.scale * (pos as f32 * theta);
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok((
            Tensor::from_vec(cos, (t, 1, half), &Device::Cpu)?,
            Tensor::from_vec(sin, (t, 1, half), &Device::Cpu)?,
        ))
    }

    /// NEOX rope on `(t, n·head_dim)`: pairs `(i, i + rope_dim/2)` of each head's first
    /// `rope_dim` values rotated.
    fn rope(
        &self,
        x: &Tensor,
        n: usize,
        cos: &Tensor,
        sin: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let t = x.dim(0)?;
        let half = self.rope_dim / 2;
        let x = x.reshape((t, n, self.head_dim))?;
        let x0 = x.narrow(2, 0, half)?;
        let x1 = x.narrow(2, half, half)?;
        let y0 = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
        let y1 = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
        let mut y = Tensor::cat(&[y0, y1], 2)?;
        if self.rope_dim < self.head_dim {
            let rest = x.narrow(2, self.rope_dim, self.head_dim - self.rope_dim)?;
            y = Tensor::cat(&[y, rest], 2)?;
        }
        y.reshape((t, n * self.head_dim))
    }
}

/// `1 / rope.scaling.factor` when `rope.scaling.type` is `linear`, 1 when it is `none` or
/// absent; other scalings are refused.
fn rope_scale(src: &dyn ModelSource, key: &dyn Fn(&str) -> String) -> Result<f32> {
    match src.kv(&key("rope.scaling.type")) {
        None => Ok(1.0),
        Some(GgufValue::String(t)) if t == "none" => Ok(1.0),
        Some(GgufValue::String(t)) if t == "linear" => {
            let f = kv_f32(src, &key("rope.scaling.factor")).unwrap_or(0.0);
            if f.is_finite() && f >= 0.0 {
                Ok(if f == 0.0 { 1.0 } else { 1.0 / f })
            } else {
                Err(bad(src, format!("bad rope.scaling.factor {f}")))
            }
        }
        Some(t) => Err(bad(
            src,
            format!(
                "rope scaling {} is not implemented by quant's imatrix",
                t.to_text()
            ),
        )),
    }
}

/// Which of `n_layer` layers slide, as llama.cpp's `load_swa_pattern`: the per-layer flags
/// of `key` when it is an array, else layer `i` slides when `i % p < p − 1` with `p` =
/// `key` (default 2 on gemma2, 6 on gemma3; 0: every layer). A gemma3 model without a
/// window has none.
fn swa_layers(
    src: &dyn ModelSource,
    key: &str,
    n_layer: usize,
    n_swa: usize,
    gemma3: bool,
) -> Result<Vec<bool>> {
    if gemma3 && n_swa == 0 {
        return Ok(vec![false; n_layer]);
    }
    if let Some(GgufValue::Array(_, flags)) = src.kv(key) {
        return (0..n_layer)
            .map(|i| match flags.get(i) {
                Some(GgufValue::Bool(b)) => Ok(*b),
                _ => Err(bad(src, format!("{key}: no boolean for layer {i}"))),
            })
            .collect();
    }
    let p = kv_u64(src, key).map_or(if gemma3 { 6 } else { 2 }, |v| v as usize);
    Ok((0..n_layer).map(|i| p == 0 || i % p < p - 1).collect())
}

/// Causal softmax attention of the pre-scaled `q` `(n, t, d)` over `k`, `v` `(n, t, d)`
/// with the scores soft-capped (`cap · tanh(s / cap)`) when a `cap` is given and, with a
/// `window`, query `r` seeing only keys `j` with `r − j < window`; back to `(t, n·d)`.
fn capped_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cap: Option<f32>,
    window: Option<usize>,
) -> candle_core::Result<Tensor> {
    let (n, t, d) = q.dims3()?;
    let tk = k.dim(1)?;
    let mut p: Vec<f32> = q.matmul(&k.t()?.contiguous()?)?.flatten_all()?.to_vec1()?;
    for (r, row) in p.chunks_exact_mut(tk.max(1)).enumerate() {
        let pos = r % t;
        let end = (pos + 1).min(tk);
        let start = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        for (j, x) in row.iter_mut().enumerate() {
            *x = if j < start || j >= end {
                f32::NEG_INFINITY
            } else if let Some(cap) = cap {
                (*x / cap).tanh() * cap
            } else {
                *x
            };
        }
        softmax_in_place(row);
    }
    Tensor::from_vec(p, (n, t, tk), q.device())?
        .matmul(v)?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((t, n * d))
}
