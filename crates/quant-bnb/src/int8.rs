//! LLM.int8 weight quantization (`Int8Params` with `has_fp16_weights=False`, spec §2).

use rayon::prelude::*;
use std::mem::MaybeUninit;

use quant_core::dtype::round_bf16;
use quant_core::DType;

use crate::fourbit::absmax_of;
use crate::tables::INV_127;

/// Quantizes rows of values: each is rounded to `load` (F32, F16 or BF16), then to float16,
/// as `Int8Params` sees a weight loaded in `load`. Returns (int8 codes, SCB).
///
/// `SCB[r] = max |w[r, :]|`; `factor = RNE(RNE(1 / SCB) * 127)`;
/// `q = round_half_even(RNE(w * factor))`, NaN (all-zero row) → 0.
pub fn quantize_int8(w: &[f32], cols: usize, load: DType) -> (Vec<i8>, Vec<f32>) {
    let (codes, scb) = quantize_int8_bytes(w, cols, load);
    (codes.into_iter().map(|c| c as i8).collect(), scb)
}

/// [`quantize_int8`] with the codes as their two's-complement bytes (as stored).
pub fn quantize_int8_bytes(w: &[f32], cols: usize, load: DType) -> (Vec<u8>, Vec<f32>) {
    match load {
        DType::BF16 => quantize_with(w, cols, &|v: f32| round_f16_value(round_bf16(v))),
        _ => quantize_with(w, cols, &round_f16_value),
    }
}

/// The f32 value of `x` rounded (RNE) to float16, as `Tensor.to(torch.float16)`: overflow
/// to ±inf from 65520 on, subnormals in steps of 2^-24, NaN kept. Branch-free bit arithmetic
/// (the loops vectorize), checked against `quant_core::dtype::round_f16` in the tests.
#[inline(always)]
pub fn round_f16_value(x: f32) -> f32 {
    let bits = x.to_bits();
    let sign = bits & 0x8000_0000;
    let a = bits & 0x7FFF_FFFF;
    // Normal f16 range: keep 10 mantissa bits, round to nearest even.
    let normal = (a + 0x0FFF + ((a >> 13) & 1)) & !0x1FFF;
    // Subnormal f16 range: adding 0.75 (ulp 2^-24) rounds to a multiple of 2^-24.
    let sub = ((f32::from_bits(a) + 0.75) - 0.75).to_bits();
    let r = if a < 0x3880_0000 {
        sub
    } else if a < 0x477F_F000 {
        normal
    } else if a <= 0x7F80_0000 {
        0x7F80_0000
    } else {
        a
    };
    f32::from_bits(r | sign)
}

/// Round half to even for |v| < 2^22 (and NaN stays NaN): adding and subtracting 1.5 · 2^23
/// leaves an integer (RNE); avoids a libm call on baseline x86-64.
#[inline(always)]
fn round_half_even_small(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

fn quantize_with<F: Fn(f32) -> f32 + Sync>(
    w16: &[f32],
    cols: usize,
    cast: &F,
) -> (Vec<u8>, Vec<f32>) {
    let rows = w16.len().checked_div(cols).unwrap_or(0);
    let mut scb = vec![0f32; rows];
    if cols == 0 {
        return (vec![0u8; w16.len()], scb);
    }
    let n = rows * cols;
    let fill = |codes: &mut [MaybeUninit<u8>]| {
        codes
            .par_chunks_mut(cols)
            .zip(w16.par_chunks(cols))
            .zip(scb.par_iter_mut())
            .for_each(|((q, row), s)| *s = quantize_row(row, q, cast));
    };
    // SAFETY: the `rows` chunks of `n = rows * cols` codes pair with `rows` whole rows of
    // values, and `quantize_row` writes one code per value.
    let mut codes = unsafe { quant_core::simd::vec_written(n, fill) };
    // A ragged end (not a whole row) is left as zeros, as before.
    codes.resize(w16.len(), 0);
    (codes, scb)
}

quant_core::multiversion! {
    /// One row: returns `SCB` and writes the codes.
    fn quantize_row<F: Fn(f32) -> f32>(row: &[f32], q: &mut [MaybeUninit<u8>], cast: F) -> f32 {
        let absmax = absmax_of(row, &cast);
        let factor = (1.0 / absmax) * 127.0;
        for (q, &v) in q.iter_mut().zip(row) {
            // |w * factor| <= ~127 (or NaN): in range of the magic-number rounding.
            let r = round_half_even_small(cast(v) * factor);
            // x86 converts NaN to 0 here; |r| <= 127 otherwise.
            q.write(if r.is_nan() { 0 } else { r as i8 as u8 });
        }
        absmax
    }
}

quant_core::multiversion! {
    /// `RNE(RNE(q * SCB) * f32(1/127))` for one row.
    fn dequantize_row(q: &[u8], s: f32, o: &mut [MaybeUninit<f32>]) {
        for (o, &q) in o.iter_mut().zip(q) {
            o.write((f32::from(q as i8) * s) * INV_127);
        }
    }
}

/// `RNE(RNE(q * SCB[r]) * f32(1/127))` per element.
pub fn dequantize_int8(codes: &[u8], scb: &[f32], cols: usize) -> Vec<f32> {
    let rows = codes.len().checked_div(cols).unwrap_or(0);
    if cols == 0 || scb.len() < rows || codes.len() != rows * cols {
        // Not the checked sizes: what has no scale stays 0.
        let mut out = vec![0f32; codes.len()];
        if cols > 0 {
            out.par_chunks_mut(cols)
                .zip(codes.par_chunks(cols))
                .zip(scb.par_iter())
                .for_each(|((o, q), &s)| {
                    for (o, &q) in o.iter_mut().zip(q) {
                        *o = (f32::from(q as i8) * s) * INV_127;
                    }
                });
        }
        return out;
    }
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(cols)
            .zip(codes.par_chunks(cols))
            .zip(scb.par_iter())
            .for_each(|((o, q), &s)| dequantize_row(q, s, o));
    };
    // SAFETY: `codes` is `rows` whole rows, each with a scale (checked above), and
    // `dequantize_row` writes one value per code.
    unsafe { quant_core::simd::vec_written(codes.len(), fill) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_rounding_matches_core() {
        let check = |x: f32| {
            let want = quant_core::dtype::round_f16(x);
            let got = round_f16_value(x);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{x:e} ({:#x}): {got:e} vs {want:e}",
                x.to_bits()
            );
        };
        for bits in (0u32..=u32::MAX).step_by(977) {
            check(f32::from_bits(bits));
        }
        // Around every f16 rounding boundary of a few binades, subnormals and overflow.
        for e in [
            0x3300_0000u32,
            0x3380_0000,
            0x3880_0000,
            0x3F80_0000,
            0x477F_E000,
        ] {
            for d in 0..20_000 {
                check(f32::from_bits(e + d));
                check(f32::from_bits(e.wrapping_sub(d)));
                check(-f32::from_bits(e + d));
            }
        }
        for x in [
            65504.0f32,
            65519.996,
            65520.0,
            1e9,
            f32::INFINITY,
            5.96e-8,
            2.98e-8,
            2.99e-8,
        ] {
            check(x);
            check(-x);
        }
    }

    #[test]
    fn magic_rounding_is_half_even() {
        for v in [
            0.5f32, 1.5, 2.5, -0.5, -1.5, 126.5, -126.5, 127.0, 0.49999997, 63.5,
        ] {
            assert_eq!(round_half_even_small(v), v.round_ties_even(), "{v}");
        }
        assert!(round_half_even_small(f32::NAN).is_nan());
    }

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
