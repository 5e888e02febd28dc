//! Symmetric per-row 8-bit weights: qint8 and qfloat8 (quanto's `WeightQBytesTensor` with
//! the default `AbsmaxOptimizer`, axis 0).

use rayon::prelude::*;
use std::mem::MaybeUninit;

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
    let mut scales = vec![0f32; rows];
    if cols == 0 || values.len() != rows * cols {
        let mut codes = vec![0u8; values.len()];
        if cols > 0 {
            for ((c, v), s) in codes
                .chunks_mut(cols)
                .zip(values.chunks(cols))
                .zip(&mut scales)
            {
                *s = quantize_row::<R>(code, v, as_uninit(c));
            }
        }
        return (codes, scales);
    }
    let per = rows_per_task(cols);
    let fill = |codes: &mut [MaybeUninit<u8>]| {
        codes
            .par_chunks_mut(cols * per)
            .zip(values.par_chunks(cols * per))
            .zip(scales.par_chunks_mut(per))
            .for_each(|((c, v), s)| quantize_rows::<R>(code, v, c, s, cols));
    };
    // SAFETY: `values` is `rows` whole rows (checked above) and each task pairs whole rows
    // of codes and values; `quantize_row` writes one code per value.
    let codes = unsafe { quant_core::simd::vec_written(values.len(), fill) };
    (codes, scales)
}

/// Views initialized bytes as a buffer the kernels write (they write no uninit bytes).
fn as_uninit(c: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: the kernels only write values.
    unsafe { quant_core::simd::as_uninit_mut(c) }
}

quant_core::multiversion! {
    /// The rows of one task.
    fn quantize_rows<R: Rd>(
        code: ByteCode,
        values: &[f32],
        codes: &mut [MaybeUninit<u8>],
        scales: &mut [f32],
        cols: usize,
    ) {
        for ((c, v), s) in codes.chunks_mut(cols).zip(values.chunks(cols)).zip(scales) {
            *s = quantize_row::<R>(code, v, c);
        }
    }
}

/// `max |row|`, NaN when the row holds a NaN (as `torch.amax` propagates it): |v| orders
/// like its bits with the sign cleared, and NaN bits are above infinity's; an integer
/// maximum vectorizes.
#[inline(always)]
fn absmax(row: &[f32]) -> f32 {
    let m = row
        .iter()
        .map(|v| v.to_bits() & 0x7FFF_FFFF)
        .fold(0u32, u32::max);
    if m > 0x7F80_0000 {
        f32::NAN
    } else {
        f32::from_bits(m)
    }
}

/// One row: `scale = rd(rmax / qmax)`, `q = rd(w / scale)`, then int8
/// `clamp(round_half_even(q), -128, 127)` (NaN → 0) or float8 `encode(clamp(q, ±qmax))`.
#[inline(always)]
fn quantize_row<R: Rd>(code: ByteCode, row: &[f32], out: &mut [MaybeUninit<u8>]) -> f32 {
    let rmax = absmax(row);
    let qmax = code.qmax();
    let scale = R::rd(div(rmax, qmax));
    // With a finite row and a positive finite scale no quotient is NaN: the plain division
    // (vectorizable) gives the same result as the x86-exact one.
    let fast = rmax.is_finite() && scale > 0.0 && scale.is_finite();
    match code {
        ByteCode::Int8 if fast => {
            for (o, &w) in out.iter_mut().zip(row) {
                // Clamping before rounding gives the same integers (the bounds are
                // integers); adding 1.5·2^23 rounds half to even and leaves the integer's
                // two's complement in the low byte.
                let x = R::rd(w / scale).clamp(-128.0, 127.0);
                o.write((x + MAGIC).to_bits() as u8);
            }
        }
        ByteCode::Int8 => {
            for (o, &w) in out.iter_mut().zip(row) {
                let x = R::rd(div(w, scale));
                // NaN survives clamp and rounding and casts to 0.
                o.write(round_half_even_small(x.clamp(-128.0, 127.0)) as i8 as u8);
            }
        }
        ByteCode::Float8(fmt) => {
            let enc = fmt.encoder();
            if fast {
                for (o, &w) in out.iter_mut().zip(row) {
                    o.write(enc.encode(R::rd(w / scale).clamp(-qmax, qmax)));
                }
            } else {
                for (o, &w) in out.iter_mut().zip(row) {
                    o.write(enc.encode(R::rd(div(w, scale)).clamp(-qmax, qmax)));
                }
            }
        }
    }
    scale
}

/// 1.5·2^23: adding it to |x| <= 2^22 rounds to an integer (half to even).
const MAGIC: f32 = 12_582_912.0;

/// Dequantizes `[rows, cols]` codes with one scale per row: `rd(scale * value(code))`.
pub(crate) fn dequantize<R: Rd>(code: ByteCode, codes: &[u8], scales: &[f32]) -> Vec<f32> {
    let rows = scales.len();
    if rows == 0 || codes.is_empty() {
        return vec![0f32; codes.len()];
    }
    let cols = codes.len() / rows;
    if cols == 0 {
        return vec![0f32; codes.len()];
    }
    if codes.len() != rows * cols {
        // Not whole rows: what has no scale stays 0.
        let mut out = vec![0f32; codes.len()];
        for ((o, c), &s) in out.chunks_mut(cols).zip(codes.chunks(cols)).zip(scales) {
            // SAFETY: only values are written through the view.
            let o = unsafe { quant_core::simd::as_uninit_mut(o) };
            dequantize_row::<R>(code, c, s, o);
        }
        return out;
    }
    let per = rows_per_task(cols);
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(cols * per)
            .zip(codes.par_chunks(cols * per))
            .zip(scales.par_chunks(per))
            .for_each(|((o, c), s)| dequantize_rows::<R>(code, c, s, o, cols));
    };
    // SAFETY: `codes` is `rows` whole rows, one per scale (checked above); tasks pair whole
    // rows and `dequantize_row` writes one value per code.
    unsafe { quant_core::simd::vec_written(codes.len(), fill) }
}

quant_core::multiversion! {
    /// The rows of one task.
    fn dequantize_rows<R: Rd>(
        code: ByteCode,
        codes: &[u8],
        scales: &[f32],
        out: &mut [MaybeUninit<f32>],
        cols: usize,
    ) {
        for ((o, c), &s) in out.chunks_mut(cols).zip(codes.chunks(cols)).zip(scales) {
            dequantize_row::<R>(code, c, s, o);
        }
    }
}

/// One row: `rd(scale * value(code))`.
#[inline(always)]
fn dequantize_row<R: Rd>(code: ByteCode, c: &[u8], s: f32, o: &mut [MaybeUninit<f32>]) {
    match code {
        // A finite scale times an int8 is never NaN: plain (vectorizable) product.
        ByteCode::Int8 if s.is_finite() => o.iter_mut().zip(c).for_each(|(o, &c)| {
            o.write(R::rd(s * f32::from(c as i8)));
        }),
        // Otherwise every code's result is computed once per row (exact x86 NaN rules and
        // model-dtype rounding), then looked up.
        _ => {
            let mut lut = [0f32; 256];
            for (i, l) in lut.iter_mut().enumerate() {
                let v = match code {
                    ByteCode::Int8 => f32::from(i as u8 as i8),
                    ByteCode::Float8(fmt) => fmt.decode(i as u8),
                };
                *l = R::rd(mul(s, v));
            }
            o.iter_mut().zip(c).for_each(|(o, &c)| {
                o.write(lut[usize::from(c)]);
            });
        }
    }
}
