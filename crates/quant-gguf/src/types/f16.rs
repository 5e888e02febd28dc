//! F16: one IEEE half per value (ggml `ggml_fp32_to_fp16_row` / `ggml_fp16_to_fp32_row`).
//!
//! Conversion is ggml's `GGML_FP32_TO_FP16`: round to nearest even, overflow to ±inf,
//! every NaN to `0x7E00` with its sign.

use crate::types::c_math::{fp16_to_fp32, fp32_to_fp16};
use crate::types::{GgmlBlock, GgmlType};

/// One f16 value (`ggml_fp16_t`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockF16 {
    /// The half bits.
    pub bits: u16,
}
const _: () = assert!(std::mem::size_of::<BlockF16>() == 2);

impl GgmlBlock for BlockF16 {
    const TYPE: GgmlType = GgmlType::F16;
    const BLOCK_SIZE: usize = 1;
    const TYPE_SIZE: usize = 2;
    const ZERO: Self = BlockF16 { bits: 0 };

    fn read(b: &[u8]) -> Self {
        BlockF16 {
            bits: u16::from_le_bytes([b[0], b[1]]),
        }
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[..2].copy_from_slice(&self.bits.to_le_bytes());
    }
    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        for (v, b) in x.iter().zip(y) {
            b.bits = fp32_to_fp16(*v);
        }
    }
    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (b, o) in y.iter().zip(out) {
            *o = fp16_to_fp32(b.bits);
        }
    }
}
