//! Symmetric per-row 8-bit weights: qint8 and qfloat8 (quanto's `WeightQBytesTensor` with
//! the default `AbsmaxOptimizer`, axis 0).

use rayon::prelude::*;

use quant_core::DType;

use crate::fp8::Float8Format;
use crate::num::{div, mul, round_half_even_small, Rd};

/// The code type of an 8-bit qtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ByteCode {
    /// int8 codes, qmax 127.
    Int8,
    /// float8 codes, qmax the format's largest finite value.
    Float8(Float8Format),
}

impl ByteCode {
    fn qmax(self) -> f32 {
        match self {
            ByteCode::Int8 => 127.0,
            ByteCode::Float8(f) => f.max(),
        }
    }
}

/// Rows handed to one rayon task at least (keeps tasks large for narrow matrices).
const MIN_ELEMS_PER_TASK: usize = 1 << 14;

fn rows_per_task(cols: usize) -> usize {
    (MIN_ELEMS_PER_TASK / cols.max(1)).max(1)
}

/// Quantizes a `[rows, cols]` row-major matrix: one scale per row, codes in place of the
/// values. Returns the code bytes and the scales (rounded to the model dtype).
pub(crate) fn quantize<R: Rd>(
    code: ByteCode,
    values: &[f32],
    rows: usize,
    cols: usize,
) -> (Vec<u8>, Vec<f32>) {
    let mut codes = vec![0u8; values.len()];
    let mut scales = vec![0f32; rows];
    if cols == 0 {
        return (codes, scales);
    }
    let per = rows_per_task(cols);
    codes
        .par_chunks_mut(cols * per)
        .zip(values.par_chunks(cols * per))
        .zip(scales.par_chunks_mut(per))
        .for_each(|((c, v), s)| {
            for ((c, v), s) in c.chunks_mut(cols).zip(v.chunks(cols)).zip(s.iter_mut()) {
                *s = quantize_row::<R>(code, v, c);
            }
        });
    (codes, scales)
}

/// `max |row|`, NaN when the row holds a NaN (as `torch.amax` propagates it).
fn absmax(row: &[f32]) -> f32 {
    let mut m = 0f32;
    let mut nan = false;
    for &v in row {
        m = m.max(v.abs());
        nan |= v.is_nan();
    }
    if nan {
        f32::NAN
    } else {
        m
    }
}

/// One row: `scale = rd(rmax / qmax)`, `q = rd(w / scale)`, then int8
/// `clamp(round_half_even(q), -128, 127)` (NaN → 0) or float8 `encode(clamp(q, ±qmax))`.
fn quantize_row<R: Rd>(code: ByteCode, row: &[f32], out: &mut [u8]) -> f32 {
    let rmax = absmax(row);
    let qmax = code.qmax();
    let scale = R::rd(div(rmax, qmax));
    // With a finite row and a positive finite scale no quotient is NaN: the plain division
    // (vectorizable) gives the same result as the x86-exact one.
    let fast = rmax.is_finite() && scale > 0.0 && scale.is_finite();
    match code {
        ByteCode::Int8 => {
            let q = |w: f32| {
                let x = if fast {
                    R::rd(w / scale)
                } else {
                    R::rd(div(w, scale))
                };
                // NaN survives clamp and rounding and casts to 0.
                round_half_even_small(x.clamp(-128.0, 127.0)) as i8 as u8
            };
            out.iter_mut().zip(row).for_each(|(o, &w)| *o = q(w));
        }
        ByteCode::Float8(fmt) => {
            let q = |w: f32| {
                let x = if fast {
                    R::rd(w / scale)
                } else {
                    R::rd(div(w, scale))
                };
                fmt.encode(x.clamp(-qmax, qmax))
            };
            out.iter_mut().zip(row).for_each(|(o, &w)| *o = q(w));
        }
    }
    scale
}

/// Dequantizes `[rows, cols]` codes with one scale per row: `rd(scale * value(code))`.
pub(crate) fn dequantize<R: Rd>(code: ByteCode, codes: &[u8], scales: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; codes.len()];
    let rows = scales.len();
    if rows == 0 || codes.is_empty() {
        return out;
    }
    let cols = codes.len() / rows;
    if cols == 0 {
        return out;
    }
    let per = rows_per_task(cols);
    out.par_chunks_mut(cols * per)
        .zip(codes.par_chunks(cols * per))
        .zip(scales.par_chunks(per))
        .for_each(|((o, c), s)| {
            for ((o, c), &s) in o.chunks_mut(cols).zip(c.chunks(cols)).zip(s) {
                match code {
                    // A finite scale times an int8 is never NaN: plain (vectorizable) product.
                    ByteCode::Int8 if s.is_finite() && R::DTYPE == DType::F32 => o
                        .iter_mut()
                        .zip(c)
                        .for_each(|(o, &c)| *o = R::rd(s * f32::from(c as i8))),
                    // Otherwise every code's result is computed once per row (exact x86 NaN
                    // rules and model-dtype rounding), then looked up.
                    _ => {
                        let mut lut = [0f32; 256];
                        for (i, l) in lut.iter_mut().enumerate() {
                            let v = match code {
                                ByteCode::Int8 => f32::from(i as u8 as i8),
                                ByteCode::Float8(fmt) => fmt.decode(i as u8),
                            };
                            *l = R::rd(mul(s, v));
                        }
                        o.iter_mut()
                            .zip(c)
                            .for_each(|(o, &c)| *o = lut[usize::from(c)]);
                    }
                }
            }
        });
    out
}
