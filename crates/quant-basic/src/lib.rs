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

use quant_core::dtype::{decode_to_f32, encode_f32, round_to};
use quant_core::{
    parse_params, DType, Error, Params, PartLayout, QuantMethod, QuantizedTensor, Result,
    Selection, TensorMeta, TensorRecord,
};
use rayon::prelude::*;

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
        check_len(t, values)?;
        let layout = self.output_layout(t)?;
        let data = encode_f32(self.to, values)?;
        let rec = record(self.name, t, self.to, &layout);
        QuantizedTensor::from_layout(rec, layout, vec![data])
    }
    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
        let part = q.part(&q.record.name)?;
        let mut out = Vec::new();
        decode_to_f32(part.layout.dtype, &part.data, &mut out)?;
        Ok(out)
    }
}

/// Symmetric per-row int8 with an f32 scale per row (see the crate docs).
#[derive(Clone, Debug, Default)]
pub struct RowInt8;

impl RowInt8 {
    /// Quantizes one row: returns its scale and writes the codes (int8 as their bytes).
    pub fn quantize_row(row: &[f32], codes: &mut [u8]) -> f32 {
        let absmax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = absmax / 127.0;
        if scale == 0.0 || !scale.is_finite() {
            for (c, &v) in codes.iter_mut().zip(row) {
                // With a non-finite absmax only the non-finite values carry information.
                *c = if scale == 0.0 || v.is_nan() {
                    0
                } else if v == f32::INFINITY {
                    127
                } else if v == f32::NEG_INFINITY {
                    (-127i8) as u8
                } else {
                    0
                };
            }
            return scale;
        }
        for (c, &v) in codes.iter_mut().zip(row) {
            *c = (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8 as u8;
        }
        scale
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
        let mut codes = vec![0u8; values.len()];
        let mut scales = vec![0f32; rows];
        if cols > 0 {
            codes
                .par_chunks_mut(cols)
                .zip(values.par_chunks(cols))
                .zip(scales.par_iter_mut())
                .for_each(|((c, r), s)| *s = Self::quantize_row(r, c));
        }
        let rec = record(self.name(), t, t.dtype, &layout);
        let scale_bytes = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        QuantizedTensor::from_layout(rec, layout, vec![codes, scale_bytes])
    }
    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
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
        let cols = codes.data.len() / rows;
        let out_dtype = q.record.dequant_dtype;
        let mut out = vec![0f32; codes.data.len()];
        if cols > 0 {
            out.par_chunks_mut(cols)
                .zip(codes.data.par_chunks(cols))
                .zip(scales.data.par_chunks(4))
                .for_each(|((o, c), s)| {
                    let scale = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                    for (o, &c) in o.iter_mut().zip(c) {
                        *o = round_to(out_dtype, (c as i8) as f32 * scale);
                    }
                });
        }
        Ok(out)
    }
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

    #[test]
    fn half_even_ties() {
        let mut c = [0u8; 3];
        // scale 1: 2.5 -> 2, 3.5 -> 4
        RowInt8::quantize_row(&[2.5, 3.5, 127.0], &mut c);
        assert_eq!(c, [2, 4, 127]);
    }
}
