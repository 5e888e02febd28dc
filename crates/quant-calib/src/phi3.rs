//! What the `phi3` graph (`llama_model_phi3`) adds to [`crate::llama`]'s: its fused weights
//! cut into the products they hold, and its rope factors.

use candle_core::Tensor;
use quant_core::Result;

use crate::ops::{bad, ce, kv_f32, kv_u64};
use crate::source::ModelSource;

/// The rope factors and cos/sin scale of a phi3 model: `short` (`rope_factors_short`) as
/// the per-frequency divisors, `long` with `rope.scaling.original_context_length` for a
/// longer context (as `llama_model::get_rope_factors` chooses), and
/// `rope.scaling.attn_factor` (1 when absent).
pub(crate) type RopeFactors = (Option<Vec<f32>>, Option<(usize, Vec<f32>)>, f32);

/// [`RopeFactors`] of `src` from its short and long factor tensors (either may be absent).
pub(crate) fn rope_factors(
    src: &dyn ModelSource,
    short: Option<Vec<f32>>,
    long: Option<Vec<f32>>,
) -> Result<RopeFactors> {
    let attn_factor = kv_f32(src, "phi3.rope.scaling.attn_factor").unwrap_or(1.0);
    let long = match long {
        Some(f) => {
            let orig = kv_u64(src, "phi3.rope.scaling.original_context_length")
                .or_else(|| kv_u64(src, "phi3.context_length"))
                .ok_or_else(|| {
                    bad(
                        src,
                        "rope_factors_long.weight without phi3.rope.scaling.original_context_length"
                            .to_string(),
                    )
                })?;
            Some((orig as usize, f))
        }
        None => None,
    };
    Ok((short, long, attn_factor))
}

/// The consecutive row ranges of sizes `rows` of the weight `w` named `name` (`attn_qkv`:
/// Q, K, V); fails unless they cover its rows exactly.
pub(crate) fn split<const N: usize>(
    src: &dyn ModelSource,
    name: &str,
    w: &Tensor,
    rows: [usize; N],
) -> Result<[Tensor; N]> {
    let e = |e| ce(src.path(), name, e);
    let have = w.dim(0).map_err(e)?;
    if rows.iter().sum::<usize>() != have {
        return Err(bad(
            src,
            format!("{name} has {have} rows, not the {rows:?} its attention shape needs"),
        ));
    }
    let mut start = 0;
    let mut parts = Vec::with_capacity(N);
    for n in rows {
        parts.push(
            w.narrow(0, start, n)
                .and_then(|p| p.contiguous())
                .map_err(e)?,
        );
        start += n;
    }
    parts
        .try_into()
        .map_err(|_| bad(src, format!("{name}: cannot split into {N} parts")))
}

/// The gate and up halves of the fused `ffn_up` weight `w` named `name` (gate rows first,
/// as `ggml_swiglu` takes them); fails on an odd number of rows.
pub(crate) fn halves(src: &dyn ModelSource, name: &str, w: &Tensor) -> Result<[Tensor; 2]> {
    let rows = w.dim(0).map_err(|e| ce(src.path(), name, e))?;
    if rows % 2 != 0 {
        return Err(bad(
            src,
            format!("{name} has {rows} rows: not gate and up halves"),
        ));
    }
    split(src, name, w, [rows / 2, rows / 2])
}
