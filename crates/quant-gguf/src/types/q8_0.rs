//! Q8_0: blocks of 32 values, `x ≈ d·q`, `q ∈ [−127, 127]`.
//!
//! Layout (ggml `block_q8_0`, 34 bytes): `d: f16`, `qs[32]: i8`.
//!
//! `quantize_row_q8_0_ref`: `amax = MAX(amax, |x|)` (C macro order, so a NaN only
//! survives as the block's last value), `d = amax/127`, `q = (int8)roundf(x·(1/d))`
//! (round half away from zero). ggml ignores the importance matrix for Q8_0.

#[cfg(test)]
use crate::types::c_math::fp32_to_fp16;
use crate::types::c_math::{c_f32_to_i32, c_max, fp16_to_fp32};
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_q8_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// Scale (f16 bits).
    pub d: u16,
    /// Codes.
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// `d = amax/127` and `1/d` of a Q8_0/Q8_1 block.
#[inline(always)]
pub(crate) fn q8_scale(xb: &[f32]) -> (f32, f32) {
    let mut amax = 0f32;
    for &v in xb {
        amax = c_max(amax, v.abs());
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, id)
}

/// C's `(int8_t)roundf(v)`.
#[inline(always)]
pub(crate) fn round_i8(v: f32) -> i8 {
    c_f32_to_i32(v.round()) as i8
}

impl GgmlBlock for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 34;
    const ZERO: Self = BlockQ8_0 { d: 0, qs: [0; 32] };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        for (q, &v) in blk.qs.iter_mut().zip(&b[2..34]) {
            *q = v as i8;
        }
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..34].copy_from_slice(&self.qs.map(|q| q as u8));
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        crate::types::legacy_lanes::q8_0_row::<false>(x, y);
    }
    #[inline(always)]
    fn quantize_row_finite(x: &[f32], y: &mut [Self]) -> bool {
        crate::types::legacy_lanes::q8_0_row::<true>(x, y)
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(32)) {
            let d = fp16_to_fp32(yb.d);
            for (o, &q) in o.iter_mut().zip(&yb.qs) {
                *o = q as f32 * d;
            }
        }
    }
}

/// The quantizer as ggml writes it, one value at a time: the oracle of the vector version
/// ([`crate::types::legacy_lanes`]).
#[cfg(test)]
pub(crate) fn quantize_row_scalar(x: &[f32], y: &mut [BlockQ8_0]) {
    for (xb, yb) in x.chunks_exact(32).zip(y) {
        let (d, id) = q8_scale(xb);
        yb.d = fp32_to_fp16(d);
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = round_i8(v * id);
        }
    }
}
