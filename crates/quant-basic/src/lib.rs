//! The basic methods, always compiled in and the fallbacks of every backend.
//!
//! - `basic_fp16` / `basic_bf16`: every floating tensor is cast exactly as PyTorch's
//!   `Tensor.to(torch.float16 / torch.bfloat16)` does: round to nearest even, infinities
//!   kept, f16 overflow to ±inf, NaN stays NaN. Other tensors are kept as stored.
//!   Stored as one entry under the tensor's own name. Both declare themselves elementwise
//!   casts ([`QuantMethod::elementwise_cast`]), so the engine streams them from the mapped
//!   input in chunks instead of holding a whole tensor as f32.
//! - `basic_int8`: matrix weights (2-D or more, name ending in `weight`) are quantized per
//!   output row (the first dimension; the rest flattened), symmetric:
//!
//!   ```text
//!   absmax = max_j |w[i, j]|            (f32)
//!   scale  = absmax / 127               (f32 division)
//!   q[i,j] = clamp(round_half_even(w[i,j] / scale), -127, 127)   (0 when scale == 0)
//!   w'[i,j] = q[i,j] * scale            (then rounded to the original dtype)
//!   ```
//!
//!   Stored as `NAME` (I8, original shape) and `NAME.scale` (F32, `[rows]`). An all-zero
//!   row has scale 0 and codes 0, so it dequantizes to exact zeros, never NaN. Other
//!   tensors are kept as stored.

use quant_core::dtype::{decode_to_f32, encode_f32_reusing, round_bf16, round_f16};
use quant_core::{
    parse_params, DType, Error, Params, Part, PartLayout, QuantMethod, QuantizedTensor, Result,
    Selection, TensorMeta, TensorRecord,
};
use rayon::prelude::*;
use std::mem::MaybeUninit;

const BACKEND: &str = "quant-basic";

/// A cast of every floating tensor to f16 or bf16.
#[derive(Clone, Debug)]
pub struct Cast {
    name: &'static str,
    to: DType,
}

impl Cast {
    /// The `basic_fp16` method.
    pub const FP16: Cast = Cast {
        name: "basic_fp16",
        to: DType::F16,
    };
    /// The `basic_bf16` method.
    pub const BF16: Cast = Cast {
        name: "basic_bf16",
        to: DType::BF16,
    };
}

/// Builds the record every basic method writes.
fn record(method: &str, t: &TensorMeta, dequant: DType, parts: &[PartLayout]) -> TensorRecord {
    TensorRecord {
        name: t.name.clone(),
        method: Some(method.to_string()),
        dtype: t.dtype,
        shape: t.shape.clone(),
        dequant_dtype: dequant,
        params: Params::new(),
        parts: parts.iter().map(|p| p.key.clone()).collect(),
        fallback: None,
    }
}

fn check_len(t: &TensorMeta, values: &[f32]) -> Result<()> {
    if t.numel()? != values.len() {
        return Err(Error::ShapeMismatch {
            tensor: t.name.clone(),
            expected: format!("{} values", t.numel()?),
            got: vec![values.len()],
        });
    }
    Ok(())
}

impl QuantMethod for Cast {
    fn name(&self) -> &str {
        self.name
    }
    fn params(&self) -> Params {
        Params::new()
    }
    fn select(&self, t: &TensorMeta) -> Selection {
        if t.dtype.is_float() {
            Selection::Quantize
        } else {
            Selection::Keep(None)
        }
    }
    fn elementwise_cast(&self) -> Option<DType> {
        Some(self.to)
    }
    fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
        Ok(vec![PartLayout::new(&t.name, self.to, t.shape.clone())])
    }
    fn quantize(&self, t: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor> {
        self.quantize_reusing(t, values, Vec::new())
    }
    fn quantize_reusing(
        &self,
        t: &TensorMeta,
        values: &[f32],
        buffers: Vec<Vec<u8>>,
    ) -> Result<QuantizedTensor> {
        check_len(t, values)?;
        let layout = self.output_layout(t)?;
        let mut data = buffers.into_iter().next().unwrap_or_default();
        encode_f32_reusing(self.to, values, &mut data)?;
        let rec = record(self.name, t, self.to, &layout);
        QuantizedTensor::from_layout(rec, layout, vec![data])
    }
    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
        let part = q.part(&q.record.name)?;
        let mut out = Vec::new();
        decode_to_f32(part.layout.dtype, &part.data, &mut out)?;
        Ok(out)
    }

    fn dequantize_into(&self, q: &QuantizedTensor, out: &mut [f32]) -> Result<()> {
        let part = q.part(&q.record.name)?;
        quant_core::dtype::decode_float_into(part.layout.dtype, &part.data, out)
            .map_err(|e| Error::tensor("", &q.record.name, e.to_string()))
    }
}

/// Symmetric per-row int8 with an f32 scale per row (see the crate docs).
#[derive(Clone, Debug, Default)]
pub struct RowInt8;

impl RowInt8 {
    /// Quantizes one row: returns its scale and writes the codes (int8 as their bytes).
    pub fn quantize_row(row: &[f32], codes: &mut [u8]) -> f32 {
        // SAFETY: only initialized bytes are written through the view.
        let codes = unsafe { quant_core::simd::as_uninit_mut(codes) };
        Self::quantize_row_uninit(row, codes)
    }

    /// [`quantize_row`](Self::quantize_row) into a buffer not yet written: writes
    /// `min(row.len(), codes.len())` codes.
    fn quantize_row_uninit(row: &[f32], codes: &mut [MaybeUninit<u8>]) -> f32 {
        let absmax = absmax_skip_nan(row);
        let scale = absmax / 127.0;
        if scale == 0.0 || !scale.is_finite() {
            for (c, &v) in codes.iter_mut().zip(row) {
                // With a non-finite absmax only the non-finite values carry information.
                let code = if scale == 0.0 || v.is_nan() {
                    0
                } else if v == f32::INFINITY {
                    127
                } else if v == f32::NEG_INFINITY {
                    (-127i8) as u8
                } else {
                    0
                };
                c.write(code);
            }
            return scale;
        }
        int8_codes(row, scale, codes);
        scale
    }
}

quant_core::multiversion! {
    /// `max |v|` over the values that are not NaN (0 for none), as
    /// `fold(0, |m, v| m.max(v.abs()))` gives it: |v| orders like its bits with the sign
    /// cleared, and an integer maximum vectorizes.
    fn absmax_skip_nan(row: &[f32]) -> f32 {
        let m = row
            .iter()
            .map(|v| {
                let b = v.to_bits() & 0x7FFF_FFFF;
                if b > 0x7F80_0000 {
                    0
                } else {
                    b
                }
            })
            .fold(0u32, u32::max);
        f32::from_bits(m)
    }
}

quant_core::multiversion! {
    /// `clamp(round_half_even(v / scale), -127, 127) as i8` (NaN → 0) for a finite,
    /// non-zero scale. Clamping before rounding gives the same integers (the bounds are
    /// integers); adding 1.5·2^23 to a value in [-127, 127] rounds it half to even and
    /// leaves the integer's two's complement in the low byte of the sum's bits.
    fn int8_codes(row: &[f32], scale: f32, codes: &mut [MaybeUninit<u8>]) {
        const MAGIC: f32 = 12_582_912.0;
        for (c, &v) in codes.iter_mut().zip(row) {
            let x = (v / scale).clamp(-127.0, 127.0);
            let b = (x + MAGIC).to_bits() as u8;
            c.write(if x.is_nan() { 0 } else { b });
        }
    }
}

quant_core::multiversion! {
    /// `round(q * scale)` for one row of int8 codes, `round` to the output dtype.
    fn int8_dequant_row<F: Fn(f32) -> f32>(
        codes: &[u8],
        scale: f32,
        out: &mut [MaybeUninit<f32>],
        round: F,
    ) {
        for (o, &c) in out.iter_mut().zip(codes) {
            o.write(round((c as i8) as f32 * scale));
        }
    }
}

impl QuantMethod for RowInt8 {
    fn name(&self) -> &str {
        "basic_int8"
    }
    fn params(&self) -> Params {
        Params::new()
    }
    fn select(&self, t: &TensorMeta) -> Selection {
        if t.is_matrix_weight() && t.dtype.is_float() && t.numel().is_ok_and(|n| n > 0) {
            Selection::Quantize
        } else {
            Selection::Keep(None)
        }
    }
    fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
        let rows = t.shape.first().copied().unwrap_or(1);
        Ok(vec![
            PartLayout::new(&t.name, DType::I8, t.shape.clone()),
            PartLayout::new(format!("{}.scale", t.name), DType::F32, vec![rows]),
        ])
    }
    fn quantize(&self, t: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor> {
        check_len(t, values)?;
        let layout = self.output_layout(t)?;
        let rows = t.shape.first().copied().unwrap_or(1).max(1);
        let cols = values.len() / rows;
        let mut scales = vec![0f32; rows];
        let codes = if cols > 0 {
            let fill = |codes: &mut [MaybeUninit<u8>]| {
                codes
                    .par_chunks_mut(cols)
                    .zip(values.par_chunks(cols))
                    .zip(scales.par_iter_mut())
                    .for_each(|((c, r), s)| *s = Self::quantize_row_uninit(r, c))
            };
            // SAFETY: `values` holds `rows * cols` values (checked), so each of the `rows`
            // chunks of codes pairs with a row of the same length, written in full.
            unsafe { quant_core::simd::vec_written(values.len(), fill) }
        } else {
            vec![0u8; values.len()]
        };
        let rec = record(self.name(), t, t.dtype, &layout);
        let scale_bytes = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        QuantizedTensor::from_layout(rec, layout, vec![codes, scale_bytes])
    }
    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
        let parts = int8_parts(q)?;
        let dtype = q.record.dequant_dtype;
        // SAFETY: `fill_int8` writes every value: the scales pair with the rows of `cols`
        // codes (checked by `int8_parts`), each row written in full.
        Ok(unsafe {
            quant_core::simd::vec_written(parts.0.data.len(), |out| fill_int8(parts, dtype, out))
        })
    }

    fn dequantize_into(&self, q: &QuantizedTensor, out: &mut [f32]) -> Result<()> {
        let parts = int8_parts(q)?;
        let n = parts.0.data.len();
        if out.len() != n {
            return Err(Error::ShapeMismatch {
                tensor: q.record.name.clone(),
                expected: format!("{n} values"),
                got: vec![out.len()],
            });
        }
        // SAFETY: `fill_int8` stores initialized values only.
        let out = unsafe { quant_core::simd::as_uninit_mut(out) };
        fill_int8(parts, q.record.dequant_dtype, out);
        Ok(())
    }
}

/// The codes and scales of a basic_int8 tensor and its row length, checked.
fn int8_parts(q: &QuantizedTensor) -> Result<(&Part, &Part, usize)> {
    let name = &q.record.name;
    let codes = q.part(name)?;
    let scales = q.part(&format!("{name}.scale"))?;
    let rows = scales.data.len() / 4;
    if codes.layout.dtype != DType::I8
        || scales.layout.dtype != DType::F32
        || rows == 0
        || codes.data.len() % rows != 0
    {
        return Err(Error::tensor(
            "",
            name,
            format!(
                "basic_int8 parts do not fit: {} codes of {}, {} scale bytes of {}",
                codes.data.len(),
                codes.layout.dtype,
                scales.data.len(),
                scales.layout.dtype
            ),
        ));
    }
    Ok((codes, scales, codes.data.len() / rows))
}

/// Restores checked basic_int8 parts into `out` (one value per code, rounded to
/// `out_dtype`): every element is written when `out` has the code count.
fn fill_int8(parts: (&Part, &Part, usize), out_dtype: DType, out: &mut [MaybeUninit<f32>]) {
    let (codes, scales, cols) = parts;
    if cols == 0 {
        return;
    }
    out.par_chunks_mut(cols)
        .zip(codes.data.par_chunks(cols))
        .zip(scales.data.par_chunks(4))
        .for_each(|((o, c), s)| {
            let scale = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            match out_dtype {
                DType::F16 => int8_dequant_row(c, scale, o, round_f16),
                DType::BF16 => int8_dequant_row(c, scale, o, round_bf16),
                _ => int8_dequant_row(c, scale, o, |x| x),
            }
        });
}

fn no_params(name: &str, params: &Params) -> Result<()> {
    parse_params::<serde_json::Map<String, serde_json::Value>>(name, &[], params).map(|_| ())
}

quant_core::register_method!(quant_core::MethodEntry {
    name: "basic_fp16",
    backend: BACKEND,
    bits_per_weight: 16.0,
    summary: "cast floating tensors to float16 (round to nearest even)",
    params: &[],
    create: |p| {
        no_params("basic_fp16", p)?;
        Ok(Box::new(Cast::FP16))
    },
});

quant_core::register_method!(quant_core::MethodEntry {
    name: "basic_bf16",
    backend: BACKEND,
    bits_per_weight: 16.0,
    summary: "cast floating tensors to bfloat16 (round to nearest even)",
    params: &[],
    create: |p| {
        no_params("basic_bf16", p)?;
        Ok(Box::new(Cast::BF16))
    },
});

quant_core::register_method!(quant_core::MethodEntry {
    name: "basic_int8",
    backend: BACKEND,
    bits_per_weight: 8.0,
    summary: "symmetric per-row int8 of matrix weights with an f32 scale per row",
    params: &[],
    create: |p| {
        no_params("basic_int8", p)?;
        Ok(Box::new(RowInt8))
    },
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_rows() {
        let t = TensorMeta::new("w.weight", DType::F32, vec![3, 4]);
        let v = [
            0.0, 0.0, 0.0, 0.0, 1.0, -2.0, 0.5, 127.0, -1.0, 1.0, 0.0, 0.25,
        ];
        let q = RowInt8.quantize(&t, &v).unwrap();
        assert_eq!(q.parts[0].data[..4], [0, 0, 0, 0]);
        assert_eq!(q.parts[0].data[4..8], [1, (-2i8) as u8, 0, 127]);
        let d = RowInt8.dequantize(&q).unwrap();
        assert!(d.iter().all(|x| x.is_finite()));
        assert_eq!(&d[..4], &[0.0; 4]);
        assert_eq!(d[7], 127.0);
        // 0.25 / (1/127) = 31.75 -> 32
        assert_eq!(q.parts[0].data[11], 32);
    }

    /// The formula as first written (scalar, `round_ties_even`), for checking the
    /// vectorized kernels bit for bit.
    fn reference_row(row: &[f32]) -> (f32, Vec<u8>) {
        let absmax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = absmax / 127.0;
        let codes = row
            .iter()
            .map(|&v| {
                if scale == 0.0 || !scale.is_finite() {
                    return if scale == 0.0 || v.is_nan() {
                        0
                    } else if v == f32::INFINITY {
                        127
                    } else if v == f32::NEG_INFINITY {
                        (-127i8) as u8
                    } else {
                        0
                    };
                }
                (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8 as u8
            })
            .collect();
        (scale, codes)
    }

    #[test]
    fn int8_kernels_match_reference_in_both_builds() {
        let mut state = 0x1234_5678u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for len in [1usize, 3, 8, 31, 64, 257, 4096] {
            for kind in 0..6 {
                let row: Vec<f32> = (0..len)
                    .map(|i| {
                        let r = next();
                        match kind {
                            0 => (r as i32 as f32) * 1e-9,
                            1 => f32::from_bits(r & 0x80FF_FFFF), // subnormals
                            2 if i % 7 == 3 => f32::NAN,
                            3 if i % 11 == 5 => f32::NEG_INFINITY,
                            4 => ((r % 255) as f32 - 127.0) * 0.5, // ties
                            _ => f32::from_bits(r),
                        }
                    })
                    .collect();
                rows.push(row);
            }
        }
        for simd in [false, true] {
            let _simd = quant_core::simd::force_simd(simd);
            for row in &rows {
                let (want_scale, want) = reference_row(row);
                let mut got = vec![0u8; row.len()];
                let scale = RowInt8::quantize_row(row, &mut got);
                assert_eq!(scale.to_bits(), want_scale.to_bits());
                assert_eq!(got, want);
                for dt in [DType::F32, DType::F16, DType::BF16] {
                    let mut out = vec![MaybeUninit::new(0f32); row.len()];
                    match dt {
                        DType::F16 => int8_dequant_row(&got, scale, &mut out, round_f16),
                        DType::BF16 => int8_dequant_row(&got, scale, &mut out, round_bf16),
                        _ => int8_dequant_row(&got, scale, &mut out, |x| x),
                    }
                    for (o, &c) in out.iter().zip(&got) {
                        // SAFETY: initialized above.
                        let o = unsafe { o.assume_init() };
                        let want = quant_core::dtype::round_to(dt, (c as i8) as f32 * scale);
                        assert!(o.to_bits() == want.to_bits() || (o.is_nan() && want.is_nan()));
                    }
                }
            }
        }
    }

    #[test]
    fn half_even_ties() {
        let mut c = [0u8; 3];
        // scale 1: 2.5 -> 2, 3.5 -> 4
        RowInt8::quantize_row(&[2.5, 3.5, 127.0], &mut c);
        assert_eq!(c, [2, 4, 127]);
    }
}
