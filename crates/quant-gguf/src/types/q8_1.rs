//! Q8_1: blocks of 32 values, `x ≈ d·q`, plus `s = d·Σq` for dot products.
//!
//! Layout (ggml `block_q8_1`, **36 bytes**): `d: f16`, `s: f16`, `qs[32]: i8`. gguf-py
//! 0.19 still declares 40 bytes per block (an old layout with f32 `d` and `s`), so
//! gguf-py cannot read the Q8_1 tensors ggml — and this crate — write.
//!
//! `quantize_row_q8_1_ref`: as Q8_0, then `s = fp16((float)Σq · d)` with the sum of the
//! stored codes. ggml has no Q8_1 dequantizer; ours is `d·q` (the reference vectors' too).

use crate::types::c_math::{fp16_to_fp32, fp32_to_fp16};
use crate::types::q8_0::{q8_scale, round_i8};
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_q8_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_1 {
    /// Scale (f16 bits).
    pub d: u16,
    /// `d · Σ qs` (f16 bits).
    pub s: u16,
    /// Codes.
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

impl GgmlBlock for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 36;
    const ZERO: Self = BlockQ8_1 {
        d: 0,
        s: 0,
        qs: [0; 32],
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.s = u16::from_le_bytes([b[2], b[3]]);
        for (q, &v) in blk.qs.iter_mut().zip(&b[4..36]) {
            *q = v as i8;
        }
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.s.to_le_bytes());
        for (o, &q) in out[4..36].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        for (xb, yb) in x.chunks_exact(32).zip(y) {
            let (d, id) = q8_scale(xb);
            yb.d = fp32_to_fp16(d);
            let mut sum = 0i32;
            for j in 0..16 {
                let q0 = round_i8(xb[j] * id);
                let q1 = round_i8(xb[16 + j] * id);
                yb.qs[j] = q0;
                yb.qs[16 + j] = q1;
                sum += q0 as i32;
                sum += q1 as i32;
            }
            yb.s = fp32_to_fp16(sum as f32 * d);
        }
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(32)) {
            let d = fp16_to_fp32(yb.d);
            for (o, &q) in o.iter_mut().zip(&yb.qs) {
                *o = d * q as f32;
            }
        }
    }
}
