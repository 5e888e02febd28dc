//! LLM.int8 weight quantization (`Int8Params` with `has_fp16_weights=False`, spec §2).

use rayon::prelude::*;

use quant_core::dtype::{round_bf16, round_f16};
use quant_core::DType;

use crate::tables::INV_127;

/// Quantizes rows of values: each is rounded to `load` (F32, F16 or BF16), then to float16,
/// as `Int8Params` sees a weight loaded in `load`. Returns (int8 codes, SCB).
///
/// `SCB[r] = max |w[r, :]|`; `factor = RNE(RNE(1 / SCB) * 127)`;
/// `q = round_half_even(RNE(w * factor))`, NaN (all-zero row) → 0.
pub fn quantize_int8(w: &[f32], cols: usize, load: DType) -> (Vec<i8>, Vec<f32>) {
    match load {
        DType::BF16 => quantize_with(w, cols, &|v: f32| round_f16(round_bf16(v))),
        _ => quantize_with(w, cols, &round_f16),
    }
}

fn quantize_with<F: Fn(f32) -> f32 + Sync>(
    w16: &[f32],
    cols: usize,
    cast: &F,
) -> (Vec<i8>, Vec<f32>) {
    let rows = w16.len().checked_div(cols).unwrap_or(0);
    let mut codes = vec![0i8; w16.len()];
    let mut scb = vec![0f32; rows];
    if cols == 0 {
        return (codes, scb);
    }
    codes
        .par_chunks_mut(cols)
        .zip(w16.par_chunks(cols))
        .zip(scb.par_iter_mut())
        .for_each(|((q, row), s)| {
            let mut m = 0f32;
            let mut nan = false;
            for &v in row {
                let v = cast(v);
                nan |= v.is_nan();
                m = m.max(v.abs());
            }
            let absmax = if nan { f32::NAN } else { m };
            *s = absmax;
            let factor = (1.0 / absmax) * 127.0;
            for (q, &v) in q.iter_mut().zip(row) {
                let r = (cast(v) * factor).round_ties_even();
                // x86 converts NaN to 0 here; |r| <= 127 otherwise.
                *q = if r.is_nan() { 0 } else { r as i8 };
            }
        });
    (codes, scb)
}

/// `RNE(RNE(q * SCB[r]) * f32(1/127))` per element.
pub fn dequantize_int8(codes: &[u8], scb: &[f32], cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; codes.len()];
    if cols == 0 {
        return out;
    }
    out.par_chunks_mut(cols)
        .zip(codes.par_chunks(cols))
        .zip(scb.par_iter())
        .for_each(|((o, q), &s)| {
            for (o, &q) in o.iter_mut().zip(q) {
                *o = (f32::from(q as i8) * s) * INV_127;
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_row_and_ties() {
        let (q, s) = quantize_int8(&[0.0, 0.0, 1.0, -0.5], 2, DType::F16);
        assert_eq!(q, vec![0, 0, 127, -64]);
        assert_eq!(s, vec![0.0, 1.0]);
        let d = dequantize_int8(&q.iter().map(|&v| v as u8).collect::<Vec<_>>(), &s, 2);
        assert_eq!(d[0], 0.0);
        assert_eq!(d[2], 1.0);
    }
}
