//! llama.cpp's `bert` graph (`llama_model_bert::graph`) on one sequence, with candle-core
//! ops, recording the input of every weight product for a [`Collector`].
//!
//! Embeddings: `token_embd` rows + `token_types` row 0 + `position_embd` rows, then layer
//! norm (`token_embd_norm`). Per block: `attn_q/k/v` (with biases) on the block input;
//! non-causal softmax attention, scale `1/√head_dim`, K and V rounded to f16 (llama.cpp
//! casts them for flash attention, its CPU default, as there is no KV cache) →
//! `attn_output`; + block input, layer norm (`attn_output_norm`); `ffn_up`, ggml's GELU
//! (tanh form through its f16 table) → `ffn_down`; + the FFN input, layer norm
//! (`layer_output_norm`). Pooling happens after the blocks and records nothing.

use candle_core::{Device, Tensor};
use quant_core::Result;
use quant_gguf::gguf::GgufValue;

use crate::ops::{
    attention, bad, ce, f16_round, gelu, heads, kv_bool, kv_f32, kv_u64, layer_norm, linear, need,
    record,
};
use crate::source::ModelSource;
use crate::Collector;

struct Block {
    wq: Tensor,
    bq: Option<Tensor>,
    wk: Tensor,
    bk: Option<Tensor>,
    wv: Tensor,
    bv: Option<Tensor>,
    wo: Tensor,
    bo: Option<Tensor>,
    attn_norm: (Tensor, Tensor),
    w_up: Tensor,
    b_up: Option<Tensor>,
    w_down: Tensor,
    b_down: Option<Tensor>,
    out_norm: (Tensor, Tensor),
}

/// A BERT encoder held as f32 candle tensors.
pub struct Bert {
    dir: std::path::PathBuf,
    embd: Tensor,
    type0: Option<Tensor>,
    pos: Tensor,
    embd_norm: (Tensor, Tensor),
    blocks: Vec<Block>,
    n_head: usize,
    head_dim: usize,
    eps: f64,
}

impl std::fmt::Debug for Bert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bert")
            .field("dir", &self.dir)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl Bert {
    /// Loads the model; fails on another architecture or a causal BERT.
    pub fn load(src: &dyn ModelSource) -> Result<Self> {
        match src.kv("general.architecture") {
            Some(GgufValue::String(a)) if a == "bert" => {}
            other => {
                return Err(bad(
                    src,
                    format!("not a bert model (general.architecture {other:?})"),
                ))
            }
        }
        if kv_bool(src, "bert.attention.causal") == Some(true) {
            return Err(bad(
                src,
                "causal bert attention is not implemented by quant's imatrix".into(),
            ));
        }
        let n_layer = need(src, "bert.block_count")?;
        let n_embd = need(src, "bert.embedding_length")?;
        let n_head = need(src, "bert.attention.head_count")?;
        let n_head_kv = kv_u64(src, "bert.attention.head_count_kv").map_or(n_head, |v| v as usize);
        if n_head == 0 || n_head_kv != n_head || n_embd % n_head != 0 {
            return Err(bad(
                src,
                format!(
                    "bad attention shape: {n_head} heads, {n_head_kv} kv heads, width {n_embd}"
                ),
            ));
        }
        let eps = kv_f32(src, "bert.attention.layer_norm_epsilon").unwrap_or(1e-12) as f64;
        let load = |name: &str| crate::ops::load(src, name);
        let opt = |name: &str| {
            if src.has(name) {
                load(name).map(Some)
            } else {
                Ok(None)
            }
        };
        let norm = |name: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                load(&format!("{name}.weight"))?,
                load(&format!("{name}.bias"))?,
            ))
        };
        let mut blocks = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let w = |s: &str| load(&format!("blk.{i}.{s}.weight"));
            let b = |s: &str| opt(&format!("blk.{i}.{s}.bias"));
            blocks.push(Block {
                wq: w("attn_q")?,
                bq: b("attn_q")?,
                wk: w("attn_k")?,
                bk: b("attn_k")?,
                wv: w("attn_v")?,
                bv: b("attn_v")?,
                wo: w("attn_output")?,
                bo: b("attn_output")?,
                attn_norm: norm(&format!("blk.{i}.attn_output_norm"))?,
                w_up: w("ffn_up")?,
                b_up: b("ffn_up")?,
                w_down: w("ffn_down")?,
                b_down: b("ffn_down")?,
                out_norm: norm(&format!("blk.{i}.layer_output_norm"))?,
            });
        }
        let dir = src.path();
        // Token types are all 0 ("sentence A"), as llama.cpp has them.
        let type0 = opt("token_types.weight")?
            .map(|t| t.narrow(0, 0, 1))
            .transpose()
            .map_err(|e| ce(dir, "token_types.weight", e))?;
        Ok(Bert {
            dir: dir.to_path_buf(),
            embd: load("token_embd.weight")?,
            type0,
            pos: load("position_embd.weight")?,
            embd_norm: norm("token_embd_norm")?,
            blocks,
            n_head,
            head_dim: n_embd / n_head,
            eps,
        })
    }

    /// Runs one sequence of tokens, giving `collector` the input of every weight product.
    pub fn forward(&self, tokens: &[u32], collector: &mut Collector) -> Result<()> {
        let dir = self.dir.as_path();
        let e = |e: candle_core::Error| ce(dir, "forward", e);
        let t = tokens.len();
        if t > self.pos.dim(0).map_err(e)? {
            return Err(quant_core::Error::file(
                dir,
                "model",
                format!(
                    "a chunk of {t} tokens is longer than the model's {} positions",
                    self.pos.dim(0).map_err(e)?
                ),
            ));
        }
        let ids = Tensor::new(tokens, &Device::Cpu).map_err(e)?;
        let mut x = self.embd.index_select(&ids, 0).map_err(e)?;
        if let Some(t0) = &self.type0 {
            x = x.broadcast_add(t0).map_err(e)?;
        }
        x = (self.pos.narrow(0, 0, t).map_err(e)? + x).map_err(e)?;
        x = layer_norm(&x, &self.embd_norm.0, &self.embd_norm.1, self.eps).map_err(e)?;
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        for (i, b) in self.blocks.iter().enumerate() {
            let name = |s: &str| format!("blk.{i}.{s}.weight");
            let (q, k, v) = (name("attn_q"), name("attn_k"), name("attn_v"));
            record(collector, &[&q, &k, &v], &x)?;
            let (n, d) = (self.n_head, self.head_dim);
            let att = (|| {
                let q = heads(&linear(&x, &b.wq, b.bq.as_ref())?, n, d)?;
                let k = heads(&f16_round(&linear(&x, &b.wk, b.bk.as_ref())?)?, n, d)?;
                let v = heads(&f16_round(&linear(&x, &b.wv, b.bv.as_ref())?)?, n, d)?;
                attention(&q, &k, &v, scale, false)
            })()
            .map_err(e)?;
            record(collector, &[&name("attn_output")], &att)?;
            let cur = (linear(&att, &b.wo, b.bo.as_ref()).map_err(e)? + &x).map_err(e)?;
            let ffn_inp = layer_norm(&cur, &b.attn_norm.0, &b.attn_norm.1, self.eps).map_err(e)?;
            record(collector, &[&name("ffn_up")], &ffn_inp)?;
            let h = linear(&ffn_inp, &b.w_up, b.b_up.as_ref())
                .and_then(|h| gelu(&h))
                .map_err(e)?;
            record(collector, &[&name("ffn_down")], &h)?;
            let cur =
                (linear(&h, &b.w_down, b.b_down.as_ref()).map_err(e)? + &ffn_inp).map_err(e)?;
            x = layer_norm(&cur, &b.out_norm.0, &b.out_norm.1, self.eps).map_err(e)?;
        }
        Ok(())
    }
}
