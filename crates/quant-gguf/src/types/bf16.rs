//! BF16: one bfloat16 per value (ggml `ggml_fp32_to_bf16_row_ref`).
//!
//! Conversion is ggml's `GGML_FP32_TO_BF16`: round to nearest even; NaN becomes
//! `(bits >> 16) | 64` (quiet, sign and upper payload kept).

use crate::types::c_math::{bf16_to_fp32, fp32_to_bf16};
use crate::types::{GgmlBlock, GgmlType};

/// One bf16 value (`ggml_bf16_t`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockBF16 {
    /// The bfloat16 bits.
    pub bits: u16,
}
const _: () = assert!(std::mem::size_of::<BlockBF16>() == 2);

impl GgmlBlock for BlockBF16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const BLOCK_SIZE: usize = 1;
    const TYPE_SIZE: usize = 2;
    const ZERO: Self = BlockBF16 { bits: 0 };

    fn read(b: &[u8]) -> Self {
        BlockBF16 {
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
            b.bits = fp32_to_bf16(*v);
        }
    }
    /// The conversion and the NaN/±Inf test in one loop (one pass over the row).
    #[inline(always)]
    fn quantize_row_finite(x: &[f32], y: &mut [Self]) -> bool {
        let mut bad = false;
        for (v, b) in x.iter().zip(y) {
            b.bits = fp32_to_bf16(*v);
            bad |= v.to_bits() & 0x7F80_0000 == 0x7F80_0000;
        }
        !bad
    }
    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (b, o) in y.iter().zip(out) {
            *o = bf16_to_fp32(b.bits);
        }
    }
}
