//! llama.cpp's mixture-of-experts feed-forward (`build_moe_ffn` with softmax gating, as
//! `qwen3moe` builds it) for the importance matrix: the router `ffn_gate_inp` (a normal
//! product, collected as one), the top `n_used` experts of each token by router
//! probability, and each expert's `ffn_gate_exps`/`ffn_up_exps` (input: the token) and
//! `ffn_down_exps` (input: `silu(gate) · up`), collected per expert as llama-imatrix
//! collects `GGML_OP_MUL_MAT_ID`. The output is the experts' outputs weighted by their
//! probabilities renormalised over the chosen ones (`norm_w`).

use candle_core::{Device, Tensor};
use quant_core::Result;

use crate::ops::{ce, linear, record, softmax_in_place};
use crate::Collector;

/// One block's experts: the router `(n_expert, n_embd)` and the stacked expert weights
/// `(n_expert, n_ff, n_embd)` (gate, up) and `(n_expert, n_embd, n_ff)` (down).
pub(crate) struct Moe {
    pub(crate) gate_inp: Tensor,
    pub(crate) gate_exps: Tensor,
    pub(crate) up_exps: Tensor,
    pub(crate) down_exps: Tensor,
    pub(crate) n_used: usize,
}

/// The indices of the `k` largest values of `row`, largest first (ties: lower index).
fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

impl Moe {
    /// The layer's output for `h` `(t, n_embd)` (block `i`), collecting the inputs.
    pub(crate) fn forward(
        &self,
        i: usize,
        h: &Tensor,
        collector: &mut Collector,
    ) -> Result<Tensor> {
        let here = std::path::Path::new("imatrix");
        let e = |e: candle_core::Error| ce(here, "moe", e);
        let name = |s: &str| format!("blk.{i}.{s}.weight");
        let (t, n_embd) = h.dims2().map_err(e)?;
        record(collector, &[&name("ffn_gate_inp")], h)?;
        let logits: Vec<f32> = linear(h, &self.gate_inp, None)
            .and_then(|l| l.flatten_all())
            .and_then(|l| l.to_vec1())
            .map_err(e)?;
        let n_expert = self.gate_inp.dim(0).map_err(e)?;
        let hv: Vec<f32> = h.flatten_all().and_then(|v| v.to_vec1()).map_err(e)?;
        // Per token: the chosen experts and their renormalised softmax weights.
        let mut routes: Vec<Vec<(usize, f32)>> = Vec::with_capacity(t);
        for row in logits.chunks_exact(n_expert.max(1)) {
            let mut p = row.to_vec();
            softmax_in_place(&mut p);
            let chosen = top_k(&p, self.n_used);
            let wsum: f32 = chosen.iter().map(|&x| p[x]).sum();
            routes.push(chosen.iter().map(|&x| (x, p[x] / wsum)).collect());
        }
        let mut out = vec![0.0f32; t * n_embd];
        let (gate, up, down) = (
            name("ffn_gate_exps"),
            name("ffn_up_exps"),
            name("ffn_down_exps"),
        );
        for ex in 0..n_expert {
            let rows: Vec<(usize, f32)> = routes
                .iter()
                .enumerate()
                .filter_map(|(r, c)| c.iter().find(|(x, _)| *x == ex).map(|&(_, w)| (r, w)))
                .collect();
            let mut x = Vec::with_capacity(rows.len() * n_embd);
            for &(r, _) in &rows {
                x.extend_from_slice(&hv[r * n_embd..(r + 1) * n_embd]);
            }
            collector.add_expert(&gate, ex, n_expert, &x, n_embd)?;
            collector.add_expert(&up, ex, n_expert, &x, n_embd)?;
            if rows.is_empty() {
                let n_ff = self.down_exps.dim(2).map_err(e)?;
                collector.add_expert(&down, ex, n_expert, &[], n_ff)?;
                continue;
            }
            let xt = Tensor::from_vec(x, (rows.len(), n_embd), &Device::Cpu).map_err(e)?;
            let w = |m: &Tensor| m.get(ex);
            let par = (|| {
                linear(&xt, &w(&self.gate_exps)?, None)?
                    .silu()?
                    .mul(&linear(&xt, &w(&self.up_exps)?, None)?)
            })()
            .map_err(e)?;
            let n_ff = par.dim(1).map_err(e)?;
            let pv: Vec<f32> = par.flatten_all().and_then(|v| v.to_vec1()).map_err(e)?;
            collector.add_expert(&down, ex, n_expert, &pv, n_ff)?;
            let y: Vec<f32> = linear(&par, &w(&self.down_exps).map_err(e)?, None)
                .and_then(|y| y.flatten_all())
                .and_then(|y| y.to_vec1())
                .map_err(e)?;
            for (k, &(r, wgt)) in rows.iter().enumerate() {
                for (o, &v) in out[r * n_embd..(r + 1) * n_embd]
                    .iter_mut()
                    .zip(&y[k * n_embd..(k + 1) * n_embd])
                {
                    *o += wgt * v;
                }
            }
        }
        Tensor::from_vec(out, (t, n_embd), &Device::Cpu).map_err(e)
    }
}
