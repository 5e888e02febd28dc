//! llama.cpp's `llama` graph (`llm_build_llama`) on one sequence, with candle-core ops,
//! recording the input of every weight product for a [`Collector`]; also `qwen2`
//! (`llm_build_qwen2`: q/k/v biases, NEOX rope) and `qwen3` (`llm_build_qwen3`: per-head
//! RMS norms `attn_q_norm`/`attn_k_norm` before a NEOX rope), and Llama 3's `rope_freqs`
//! (each rope frequency divided by its factor, as `ggml_rope_ext` does). Blocks with a
//! router `ffn_gate_inp` (qwen3moe, and Mixtral as llama.cpp converts it: arch `llama`
//! with `llama.expert_count`) run the experts of [`crate::moe`]. Also `phi3`
//! (`llama_model_phi3`): fused `attn_qkv` and `ffn_up` (gate rows, then up rows, as
//! `ggml_swiglu` splits them) recorded under their fused names, NEOX rope with the
//! `rope_factors_short` divisors (`rope_factors_long` when the context, padded to 256 as
//! llama.cpp pads it, exceeds `rope.scaling.original_context_length`) and cos/sin scaled
//! by `rope.scaling.attn_factor`; llama.cpp b11312 disables Phi-3's sliding window, so
//! attention is fully causal here too.
//!
//! Weights come from quant-gguf's converter under llama.cpp names and values: `attn_q` and
//! `attn_k` rows are permuted for llama.cpp's rope, so rope here rotates adjacent pairs
//! (`LLAMA_ROPE_TYPE_NORM`). Per block: RMS norm × `attn_norm` → `attn_q/k/v`; rope; causal
//! softmax attention with grouped KV heads (K and V rounded to f16, as llama.cpp's default
//! KV cache holds them), scale `1/√head_dim` → `attn_output`; residual;
//! RMS norm × `ffn_norm` → `ffn_gate`, `ffn_up`; `silu(gate) · up` → `ffn_down`; residual.
//! Then RMS norm × `output_norm` → `output` (run only when `output.weight` is collected).

use candle_core::{Device, Tensor};
use quant_core::Result;
use quant_gguf::gguf::GgufValue;

use crate::ops::{
    attention, bad, ce, f16_round, heads, kv_f32, kv_u64, linear, need, nll_terms, record, rms_norm,
};
use crate::source::ModelSource;
use crate::Collector;

struct Block {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    bq: Option<Tensor>,
    bk: Option<Tensor>,
    bv: Option<Tensor>,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    wo: Tensor,
    ffn_norm: Tensor,
    ffn: Ffn,
}

/// A block's feed-forward: dense, or experts (qwen3moe).
enum Ffn {
    Dense {
        w_gate: Tensor,
        w_up: Tensor,
        w_down: Tensor,
    },
    Moe(crate::moe::Moe),
}

/// A llama model held as f32 candle tensors.
pub struct Llama {
    dir: std::path::PathBuf,
    embd: Tensor,
    blocks: Vec<Block>,
    output_norm: Tensor,
    output: Option<Tensor>,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    eps: f64,
    freq_base: f32,
    rope_dim: usize,
    /// NEOX rope (pairs `i`, `i + rope_dim/2`) rather than adjacent pairs.
    neox: bool,
    /// `rope_freqs.weight`: a divisor per frequency.
    freq_factors: Option<Vec<f32>>,
    /// phi3: the original context length and `rope_factors_long.weight`, used instead of
    /// `freq_factors` (the short factors) when the padded context exceeds it.
    long_factors: Option<(usize, Vec<f32>)>,
    /// phi3: `rope.scaling.attn_factor`, scaling rope's cos and sin.
    attn_factor: f32,
    /// phi3: `attn_qkv` and `ffn_up` are fused weights, recorded under those names.
    fused: bool,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama")
            .field("dir", &self.dir)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl Llama {
    /// Loads the model; fails on another architecture or on rope scaling, which this
    /// graph does not implement.
    pub fn load(src: &dyn ModelSource) -> Result<Self> {
        let arch = match src.kv("general.architecture") {
            Some(GgufValue::String(a)) => a.clone(),
            _ => String::new(),
        };
        let neox = match arch.as_str() {
            "llama" => false,
            "qwen2" | "qwen3" | "qwen3moe" | "phi3" => true,
            _ => {
                return Err(bad(
                    src,
                    format!(
                    "this graph runs llama, qwen2, qwen3, qwen3moe and phi3 models, not '{arch}'"
                ),
                ))
            }
        };
        let key = |k: &str| format!("{arch}.{k}");
        if let Some(GgufValue::String(t)) = src.kv(&key("rope.scaling.type")) {
            if t != "none" {
                return Err(bad(
                    src,
                    format!("rope scaling '{t}' is not implemented by quant's imatrix"),
                ));
            }
        }
        let n_layer = need(src, &key("block_count"))?;
        let n_embd = need(src, &key("embedding_length"))?;
        let n_head = need(src, &key("attention.head_count"))?;
        let n_head_kv = kv_u64(src, &key("attention.head_count_kv")).map_or(n_head, |v| v as usize);
        let head_dim = kv_u64(src, &key("attention.key_length"))
            .map_or(n_embd / n_head.max(1), |v| v as usize);
        let rope_dim = kv_u64(src, &key("rope.dimension_count")).map_or(head_dim, |v| v as usize);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 || rope_dim > head_dim {
            return Err(bad(
                src,
                format!(
                    "bad attention shape: {n_head} heads, {n_head_kv} kv heads, head size \
                     {head_dim}, rope over {rope_dim}"
                ),
            ));
        }
        let eps = kv_f32(src, &key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5) as f64;
        let freq_base = kv_f32(src, &key("rope.freq_base")).unwrap_or(10000.0);
        let dir = src.path();
        let load = |name: &str| crate::ops::load(src, name);
        let factors = |name: &str| -> Result<Option<Vec<f32>>> {
            if !src.has(name) {
                return Ok(None);
            }
            let (shape, values) = src.tensor(name)?;
            if values.len() != rope_dim / 2 {
                return Err(bad(
                    src,
                    format!(
                        "{name} has shape {shape:?}, not {} factors (rope over {rope_dim})",
                        rope_dim / 2
                    ),
                ));
            }
            Ok(Some(values))
        };
        let fused = arch == "phi3";
        let (freq_factors, long_factors, attn_factor) = if fused {
            crate::phi3::rope_factors(
                src,
                factors("rope_factors_short.weight")?,
                factors("rope_factors_long.weight")?,
            )?
        } else {
            (factors("rope_freqs.weight")?, None, 1.0)
        };
        let maybe = |name: &str| -> Result<Option<Tensor>> {
            if src.has(name) {
                load(name).map(Some)
            } else {
                Ok(None)
            }
        };
        let mut blocks = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let w = |s: &str| load(&format!("blk.{i}.{s}.weight"));
            let [wq, wk, wv] = if fused {
                let rows = [
                    n_head * head_dim,
                    n_head_kv * head_dim,
                    n_head_kv * head_dim,
                ];
                crate::phi3::split(
                    src,
                    &format!("blk.{i}.attn_qkv.weight"),
                    &w("attn_qkv")?,
                    rows,
                )?
            } else {
                [w("attn_q")?, w("attn_k")?, w("attn_v")?]
            };
            blocks.push(Block {
                attn_norm: w("attn_norm")?,
                wq,
                wk,
                wv,
                bq: maybe(&format!("blk.{i}.attn_q.bias"))?,
                bk: maybe(&format!("blk.{i}.attn_k.bias"))?,
                bv: maybe(&format!("blk.{i}.attn_v.bias"))?,
                q_norm: maybe(&format!("blk.{i}.attn_q_norm.weight"))?,
                k_norm: maybe(&format!("blk.{i}.attn_k_norm.weight"))?,
                wo: w("attn_output")?,
                ffn_norm: w("ffn_norm")?,
                // qwen3moe, and Mixtral (`llama` with experts): the same softmax-gated
                // experts (`build_moe_ffn` with normalised top-k weights in both graphs).
                ffn: if arch == "qwen3moe" || src.has(&format!("blk.{i}.ffn_gate_inp.weight")) {
                    Ffn::Moe(crate::moe::Moe {
                        gate_inp: w("ffn_gate_inp")?,
                        gate_exps: w("ffn_gate_exps")?,
                        up_exps: w("ffn_up_exps")?,
                        down_exps: w("ffn_down_exps")?,
                        n_used: need(src, &key("expert_used_count"))?,
                    })
                } else if fused {
                    let name = format!("blk.{i}.ffn_up.weight");
                    let [w_gate, w_up] = crate::phi3::halves(src, &name, &w("ffn_up")?)?;
                    Ffn::Dense {
                        w_gate,
                        w_up,
                        w_down: w("ffn_down")?,
                    }
                } else {
                    Ffn::Dense {
                        w_gate: w("ffn_gate")?,
                        w_up: w("ffn_up")?,
                        w_down: w("ffn_down")?,
                    }
                },
            });
        }
        let embd = load("token_embd.weight")?;
        // Tied embeddings: no output.weight (llama.cpp multiplies by token_embd).
        let output = if src.has("output.weight") {
            Some(load("output.weight")?)
        } else {
            None
        };
        Ok(Llama {
            dir: dir.to_path_buf(),
            embd,
            blocks,
            output_norm: load("output_norm.weight")?,
            output,
            n_head,
            n_head_kv,
            head_dim,
            eps,
            freq_base,
            rope_dim,
            neox,
            freq_factors,
            long_factors,
            attn_factor,
            fused,
        })
    }

    /// Runs one sequence of tokens, giving `collector` the input of every weight product.
    pub fn forward(&self, tokens: &[u32], collector: &mut Collector) -> Result<()> {
        self.forward_nll(tokens, collector, false).map(|_| ())
    }

    /// [`forward`](Self::forward); with `nll`, also the negative log-likelihood of each
    /// token of the chunk's second half given those before it, as llama-imatrix
    /// estimates perplexity: (sum of −log p, sum of its squares, tokens).
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
        let mut x = self.embd.index_select(&ids, 0).map_err(e)?;
        let (cos, sin) = self.rope_tables(t).map_err(e)?;
        let group = self.n_head / self.n_head_kv;
        let kv_index: Vec<u32> = (0..self.n_head).map(|h| (h / group) as u32).collect();
        let kv_index = Tensor::new(kv_index.as_slice(), &dev).map_err(e)?;
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        for (i, b) in self.blocks.iter().enumerate() {
            let name = |s: &str| format!("blk.{i}.{s}.weight");
            let h = rms_norm(&x, &b.attn_norm, self.eps).map_err(e)?;
            if self.fused {
                record(collector, &[&name("attn_qkv")], &h)?;
            } else {
                let (q, k, v) = (name("attn_q"), name("attn_k"), name("attn_v"));
                record(collector, &[&q, &k, &v], &h)?;
            }
            let q = linear(&h, &b.wq, b.bq.as_ref()).map_err(e)?;
            let k = linear(&h, &b.wk, b.bk.as_ref()).map_err(e)?;
            let v = linear(&h, &b.wv, b.bv.as_ref()).map_err(e)?;
            let q = self
                .head_norm(&q, self.n_head, b.q_norm.as_ref())
                .map_err(e)?;
            let k = self
                .head_norm(&k, self.n_head_kv, b.k_norm.as_ref())
                .map_err(e)?;
            let q = self.rope(&q, self.n_head, &cos, &sin).map_err(e)?;
            let k = self
                .rope(&k, self.n_head_kv, &cos, &sin)
                .and_then(|k| f16_round(&k))
                .map_err(e)?;
            let v = f16_round(&v).map_err(e)?;
            // (heads, t, head_dim), kv heads repeated for their query heads.
            let q = heads(&q, self.n_head, self.head_dim).map_err(e)?;
            let k = heads(&k, self.n_head_kv, self.head_dim)
                .and_then(|k| k.index_select(&kv_index, 0))
                .map_err(e)?;
            let v = heads(&v, self.n_head_kv, self.head_dim)
                .and_then(|v| v.index_select(&kv_index, 0))
                .map_err(e)?;
            let att = attention(&q, &k, &v, scale, true).map_err(e)?;
            record(collector, &[&name("attn_output")], &att)?;
            x = (x + linear(&att, &b.wo, None).map_err(e)?).map_err(e)?;
            let h = rms_norm(&x, &b.ffn_norm, self.eps).map_err(e)?;
            let y = match &b.ffn {
                Ffn::Moe(m) => m.forward(i, &h, collector)?,
                Ffn::Dense {
                    w_gate,
                    w_up,
                    w_down,
                } => {
                    if self.fused {
                        record(collector, &[&name("ffn_up")], &h)?;
                    } else {
                        record(collector, &[&name("ffn_gate"), &name("ffn_up")], &h)?;
                    }
                    let g = (|| {
                        linear(&h, w_gate, None)?
                            .silu()?
                            .mul(&linear(&h, w_up, None)?)
                    })()
                    .map_err(e)?;
                    record(collector, &[&name("ffn_down")], &g)?;
                    linear(&g, w_down, None).map_err(e)?
                }
            };
            x = (x + y).map_err(e)?;
        }
        // With tied embeddings the output product uses token_embd, which llama-imatrix
        // never collects; the logits themselves are not needed.
        if self.output.is_some() && collector.wants("output.weight", t) {
            let h = rms_norm(&x, &self.output_norm, self.eps).map_err(e)?;
            record(collector, &["output.weight"], &h)?;
        }
        if !nll || t < 3 {
            return Ok(None);
        }
        // llama-imatrix: positions first = t/2 .. t-2 predict the token after them.
        let first = t / 2;
        let n = t - 1 - first;
        let h = rms_norm(
            &x.narrow(0, first, n).map_err(e)?,
            &self.output_norm,
            self.eps,
        )
        .map_err(e)?;
        let w = self.output.as_ref().unwrap_or(&self.embd);
        let logits = linear(&h, w, None)
            .and_then(|l| l.to_vec2::<f32>())
            .map_err(e)?;
        Ok(Some(nll_terms(&logits, tokens, first)))
    }

    /// cos and sin of `pos · base^(-2i/rope_dim)`, `(t, rope_dim/2)`.
    fn rope_tables(&self, t: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.rope_dim / 2;
        let factors = match &self.long_factors {
            Some((orig, long)) if t.div_ceil(256) * 256 > *orig => Some(long),
            _ => self.freq_factors.as_ref(),
        };
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for pos in 0..t {
            for i in 0..half {
                let mut theta = self.freq_base.powf(-2.0 * i as f32 / self.rope_dim as f32);
                if let Some(f) = factors.and_then(|f| f.get(i)) {
                    theta /= f;
                }
                let a = pos as f32 * theta;
                cos.push(a.cos() * self.attn_factor);
                sin.push(a.sin() * self.attn_factor);
            }
        }
        Ok((
            Tensor::from_vec(cos, (t, 1, half), &Device::Cpu)?,
            Tensor::from_vec(sin, (t, 1, half), &Device::Cpu)?,
        ))
    }

    /// Each head of `(t, n·head_dim)` RMS-normed with `w` (over `head_dim`), when given.
    fn head_norm(&self, x: &Tensor, n: usize, w: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let Some(w) = w else {
            return Ok(x.clone());
        };
        let t = x.dim(0)?;
        rms_norm(&x.reshape((t, n, self.head_dim))?, w, self.eps)?.reshape((t, n * self.head_dim))
    }

    /// llama.cpp's rope on `(t, n·head_dim)`: pairs `(2i, 2i+1)` (normal) or
    /// `(i, i + rope_dim/2)` (NEOX) of the first `rope_dim` values of each head rotated.
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
        let r = x.narrow(2, 0, self.rope_dim)?;
        let (x0, x1) = if self.neox {
            (r.narrow(2, 0, half)?, r.narrow(2, half, half)?)
        } else {
            let r = r.reshape((t, n, half, 2))?;
            (
                r.narrow(3, 0, 1)?.squeeze(3)?,
                r.narrow(3, 1, 1)?.squeeze(3)?,
            )
        };
        let y0 = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
        let y1 = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
        let mut y = if self.neox {
            Tensor::cat(&[y0, y1], 2)?
        } else {
            Tensor::stack(&[y0, y1], 3)?.reshape((t, n, self.rope_dim))?
        };
        if self.rope_dim < self.head_dim {
            let rest = x.narrow(2, self.rope_dim, self.head_dim - self.rope_dim)?;
            y = Tensor::cat(&[y, rest], 2)?;
        }
        y.reshape((t, n * self.head_dim))
    }
}
