//! An example of a backend crate that lives outside quant: it depends on `quant-core`
//! only and registers `example_ternary` through [`quant_core::register_method!`].
//!
//! `example_ternary` is BitNet b1.58's absmean ternary quantization of matrix weights:
//! `gamma = mean(|W|)`, `q = clamp(round_half_even(W / (gamma + 1e-5)), -1, 1)` stored as
//! I8 under the weight's name, and `gamma` as a one-element F32 `NAME.gamma`; dequantized as
//! `q * gamma`. Any linking binary (the `quant` CLI built with this crate, or a test) sees it.

use quant_core::{
    DType, Error, Params, Part, PartLayout, QuantMethod, QuantizedTensor, Result, Selection,
    TensorMeta, TensorRecord,
};

/// Absmean ternary weights.
#[derive(Debug, Default)]
pub struct Ternary;

impl QuantMethod for Ternary {
    fn name(&self) -> &str {
        "example_ternary"
    }
    fn params(&self) -> Params {
        Params::new()
    }
    fn select(&self, t: &TensorMeta) -> Selection {
        if t.is_matrix_weight() && t.dtype.is_float() {
            Selection::Quantize
        } else {
            Selection::Keep(None)
        }
    }
    fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
        Ok(vec![
            PartLayout::new(&t.name, DType::I8, t.shape.clone()),
            PartLayout::new(format!("{}.gamma", t.name), DType::F32, vec![1]),
        ])
    }
    fn quantize(&self, t: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor> {
        let layout = self.output_layout(t)?;
        let n = values.len().max(1) as f64;
        let gamma = (values.iter().map(|v| v.abs() as f64).sum::<f64>() / n) as f32;
        let codes: Vec<u8> = values
            .iter()
            .map(|v| (v / (gamma + 1e-5)).round_ties_even().clamp(-1.0, 1.0) as i8 as u8)
            .collect();
        let [l0, l1]: [PartLayout; 2] = layout
            .try_into()
            .map_err(|_| Error::tensor("", &t.name, "layout lost its parts"))?;
        Ok(QuantizedTensor {
            record: TensorRecord {
                name: t.name.clone(),
                method: Some(self.name().into()),
                dtype: t.dtype,
                shape: t.shape.clone(),
                dequant_dtype: DType::F32,
                params: Params::new(),
                parts: vec![l0.key.clone(), l1.key.clone()],
                fallback: None,
            },
            parts: vec![
                Part::new(l0, codes)?,
                Part::new(l1, gamma.to_le_bytes().to_vec())?,
            ],
        })
    }
    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
        let codes = q.part(&q.record.name)?;
        let g = q.part_suffix(".gamma")?;
        let gamma = match g.data[..] {
            [a, b, c, d] => f32::from_le_bytes([a, b, c, d]),
            _ => return Err(Error::tensor("", &q.record.name, "gamma must be one f32")),
        };
        Ok(codes
            .data
            .iter()
            .map(|&c| (c as i8) as f32 * gamma)
            .collect())
    }
}

quant_core::register_method!(quant_core::MethodEntry {
    name: "example_ternary",
    backend: "quant-example-backend",
    bits_per_weight: 8.0,
    summary: "BitNet b1.58 absmean ternary weights (example third-party backend)",
    params: &[],
    create: |_| Ok(Box::new(Ternary)),
});
