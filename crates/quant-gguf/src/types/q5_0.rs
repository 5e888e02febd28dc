//! Q5_0: blocks of 32 values, `x ≈ d·(q − 16)`, `q ∈ [0, 31]`.
//!
//! Layout (ggml `block_q5_0`, 22 bytes): `d: f16`, `qh[4]` (a little-endian u32 whose bit
//! `j` is bit 4 of value `j`), `qs[16]` (low nibbles: value `j` low, value `j + 16` high).
//!
//! Without weights (`quantize_row_q5_0_ref`): `d = max / −16` (`max` = value of largest
//! magnitude), `q = min(31, (int8)(x·(1/d) + 16.5))`. With weights
//! (`quantize_row_q5_0_impl`): `make_qx_quants(32, 16, rmse_type 1, w)` with
//! `w = qw·√(σ² + x²)`, `σ² = Σx²/n` over the row.

#[cfg(test)]
use crate::types::c_math::{c_f32_to_i32, c_min};
use crate::types::c_math::{fp16_to_fp32, fp32_to_fp16};
use crate::types::q4_0::{block_weights, row_sigma2};
use crate::types::search::make_qx_quants;
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_q5_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    /// Scale (f16 bits).
    pub d: u16,
    /// High bits, as stored (little-endian u32).
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// Packs 32 five-bit codes into `qs` and the `qh` bit field (shared with Q5_1).
#[inline(always)]
pub(crate) fn pack5(l0: impl Fn(usize) -> u8, qs: &mut [u8; 16]) -> [u8; 4] {
    let mut qh = 0u32;
    for (j, q) in qs.iter_mut().enumerate() {
        let xi0 = l0(j);
        let xi1 = l0(j + 16);
        *q = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= (((xi0 as u32) & 0x10) >> 4) << j;
        qh |= (((xi1 as u32) & 0x10) >> 4) << (j + 16);
    }
    qh.to_le_bytes()
}

/// The 5-bit code `j` and `j + 16` of a Q5 block.
#[inline]
pub(crate) fn unpack5(qs: &[u8; 16], qh: [u8; 4], j: usize) -> (i32, i32) {
    let qh = u32::from_le_bytes(qh);
    let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
    let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
    (((qs[j] & 0x0F) | xh_0) as i32, ((qs[j] >> 4) | xh_1) as i32)
}

impl GgmlBlock for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 22;
    const ZERO: Self = BlockQ5_0 {
        d: 0,
        qh: [0; 4],
        qs: [0; 16],
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.qh.copy_from_slice(&b[2..6]);
        blk.qs.copy_from_slice(&b[6..22]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..6].copy_from_slice(&self.qh);
        out[6..22].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        crate::types::legacy_lanes::q5_0_row::<false>(x, y);
    }
    #[inline(always)]
    fn quantize_row_finite(x: &[f32], y: &mut [Self]) -> bool {
        crate::types::legacy_lanes::q5_0_row::<true>(x, y)
    }

    #[inline(always)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        let sigma2 = row_sigma2(x);
        let mut l = [0i8; 32];
        for ((xb, qb), yb) in x.chunks_exact(32).zip(qw.chunks_exact(32)).zip(y) {
            let w = block_weights(xb, qb, sigma2);
            let d = make_qx_quants(16, xb, &mut l, 1, Some(&w));
            yb.d = fp32_to_fp16(d);
            yb.qh = pack5(|j| l[j] as u8, &mut yb.qs);
        }
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(32)) {
            let d = fp16_to_fp32(yb.d);
            for j in 0..16 {
                let (x0, x1) = unpack5(&yb.qs, yb.qh, j);
                o[j] = (x0 - 16) as f32 * d;
                o[j + 16] = (x1 - 16) as f32 * d;
            }
        }
    }
}

/// The unweighted quantizer as ggml writes it, one value at a time: the oracle of the
/// vector version ([`crate::types::legacy_lanes`]).
#[cfg(test)]
pub(crate) fn quantize_row_scalar(x: &[f32], y: &mut [BlockQ5_0]) {
    for (xb, yb) in x.chunks_exact(32).zip(y) {
        let max = crate::types::c_math::max_by_magnitude(xb);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = fp32_to_fp16(d);
        let code = |j: usize| c_min(31, c_f32_to_i32(xb[j] * id + 16.5) as i8 as i32) as u8;
        yb.qh = pack5(code, &mut yb.qs);
    }
}
