//! Q5_1: blocks of 32 values, `x ≈ d·q + m`, `q ∈ [0, 31]`.
//!
//! Layout (ggml `block_q5_1`, 24 bytes): `d: f16`, `m: f16`, `qh[4]`, `qs[16]` (as Q5_0).
//!
//! Without weights (`quantize_row_q5_1_ref`): `d = (max − min)/31`, `m = min`,
//! `q = (uint8)((x − min)·(1/d) + 0.5)`. With weights (`quantize_row_q5_1_impl`):
//! `make_qkx3_quants(32, 31, w, −0.9, 0.05, 36)` with `w = qw·√(σ² + x²)`.

use crate::types::c_math::fp16_to_fp32;
#[cfg(test)]
use crate::types::c_math::{c_f32_to_i32, fp32_to_fp16};
use crate::types::q4_1::weighted_asym_row;
use crate::types::q5_0::{pack5, unpack5};
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_q5_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_1 {
    /// Scale (f16 bits).
    pub d: u16,
    /// Minimum (f16 bits).
    pub m: u16,
    /// High bits, as stored (little-endian u32).
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

impl GgmlBlock for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 24;
    const ZERO: Self = BlockQ5_1 {
        d: 0,
        m: 0,
        qh: [0; 4],
        qs: [0; 16],
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.m = u16::from_le_bytes([b[2], b[3]]);
        blk.qh.copy_from_slice(&b[4..8]);
        blk.qs.copy_from_slice(&b[8..24]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.m.to_le_bytes());
        out[4..8].copy_from_slice(&self.qh);
        out[8..24].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        crate::types::legacy_lanes::q5_1_row::<false>(x, y);
    }
    #[inline(always)]
    fn quantize_row_finite(x: &[f32], y: &mut [Self]) -> bool {
        crate::types::legacy_lanes::q5_1_row::<true>(x, y)
    }

    #[inline(always)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        weighted_asym_row(x, qw, 31, |k, d, m, l| {
            let yb = &mut y[k];
            (yb.d, yb.m) = (d, m);
            yb.qh = pack5(|j| l[j], &mut yb.qs);
        });
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(32)) {
            let d = fp16_to_fp32(yb.d);
            let m = fp16_to_fp32(yb.m);
            for j in 0..16 {
                let (x0, x1) = unpack5(&yb.qs, yb.qh, j);
                o[j] = x0 as f32 * d + m;
                o[j + 16] = x1 as f32 * d + m;
            }
        }
    }
}

/// The unweighted quantizer as ggml writes it, one value at a time: the oracle of the
/// vector version ([`crate::types::legacy_lanes`]).
#[cfg(test)]
pub(crate) fn quantize_row_scalar(x: &[f32], y: &mut [BlockQ5_1]) {
    for (xb, yb) in x.chunks_exact(32).zip(y) {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in xb {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = fp32_to_fp16(d);
        yb.m = fp32_to_fp16(min);
        let code = |j: usize| c_f32_to_i32((xb[j] - min) * id + 0.5) as u8;
        yb.qh = pack5(code, &mut yb.qs);
    }
}
