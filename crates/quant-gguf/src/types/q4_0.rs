//! Q4_0: blocks of 32 values, `x ≈ d·(q − 8)`, `q ∈ [0, 15]`.
//!
//! Layout (ggml `block_q4_0`, 18 bytes): `d: f16`, `qs[16]`: byte `j` holds value `j` in
//! its low nibble and value `j + 16` in its high nibble.
//!
//! Without weights (`quantize_row_q4_0_ref`): `max` = the value of largest magnitude
//! (first one on ties), `d = max / −8`, `id = 1/d` (0 when `d == 0`),
//! `q = min(15, (int8)(x·id + 8.5))` (truncation). With weights (`quantize_row_q4_0_impl`):
//! `σ² = Σx²/n` over the whole row, `w = qw·√(σ² + x²)`, `d` from `make_qx_quants(32, 8,
//! rmse_type 1, w)`.

use crate::types::c_math::{fp16_to_fp32, fp32_to_fp16};
use crate::types::search::make_qx_quants;
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_q4_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    /// Scale (f16 bits).
    pub d: u16,
    /// Nibbles.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// Row-wide `σ²` of the weighted legacy quantizers: `Σx² / n`.
#[inline(always)]
pub(crate) fn row_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    sum_x2 / x.len() as f32
}

/// `w[j] = qw[j]·√(σ² + x[j]²)` for one block of 32.
#[inline(always)]
pub(crate) fn block_weights(xb: &[f32], qw: &[f32], sigma2: f32) -> [f32; 32] {
    let mut w = [0f32; 32];
    for ((wj, &xj), &q) in w.iter_mut().zip(xb).zip(qw) {
        *wj = q * (sigma2 + xj * xj).sqrt();
    }
    w
}

impl GgmlBlock for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 18;
    const ZERO: Self = BlockQ4_0 { d: 0, qs: [0; 16] };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.qs.copy_from_slice(&b[2..18]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..18].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        crate::types::legacy_lanes::q4_0_row::<false>(x, y);
    }
    #[inline(always)]
    fn quantize_row_finite(x: &[f32], y: &mut [Self]) -> bool {
        crate::types::legacy_lanes::q4_0_row::<true>(x, y)
    }

    #[inline(always)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        let sigma2 = row_sigma2(x);
        let mut l = [0i8; 32];
        for ((xb, qb), yb) in x.chunks_exact(32).zip(qw.chunks_exact(32)).zip(y) {
            let w = block_weights(xb, qb, sigma2);
            let d = make_qx_quants(8, xb, &mut l, 1, Some(&w));
            yb.d = fp32_to_fp16(d);
            for j in 0..16 {
                yb.qs[j] = (l[j] as u8) | ((l[j + 16] as u8) << 4);
            }
        }
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(32)) {
            let d = fp16_to_fp32(yb.d);
            for j in 0..16 {
                let x0 = (yb.qs[j] & 0x0F) as i32 - 8;
                let x1 = (yb.qs[j] >> 4) as i32 - 8;
                o[j] = x0 as f32 * d;
                o[j + 16] = x1 as f32 * d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::c_math::{c_f32_to_i32, c_min};

    /// The straight port of `quantize_row_q4_0_ref`.
    fn quantize_row_scalar(x: &[f32], y: &mut [BlockQ4_0]) {
        for (xb, yb) in x.chunks_exact(32).zip(y) {
            let max = crate::types::c_math::max_by_magnitude(xb);
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb.d = fp32_to_fp16(d);
            for j in 0..16 {
                let xi0 = c_min(15, c_f32_to_i32(xb[j] * id + 8.5) as i8 as i32) as u8;
                let xi1 = c_min(15, c_f32_to_i32(xb[16 + j] * id + 8.5) as i8 as i32) as u8;
                yb.qs[j] = xi0 | ((xi1 as u32) << 4) as u8;
            }
        }
    }

    #[test]
    fn lanes_equal_the_straight_port() {
        let mut s = 7u64;
        let mut x: Vec<f32> = (0..32 * 600)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((s >> 40) as f32) / (1u64 << 24) as f32 - 0.5;
                match i % 11 {
                    0 => -u,
                    3 => (u * 8.0).round() * 0.25,
                    _ => u,
                }
            })
            .collect();
        // Ties of magnitude with both signs, zeros, -0, NaN, Inf, huge and tiny blocks.
        x[32..64].fill(0.0);
        x[64..96].fill(-0.0);
        x[100] = 0.75;
        x[101] = -0.75;
        x[96..100].fill(-0.75);
        x[130] = f32::NAN;
        x[170] = f32::INFINITY;
        x[200] = f32::NEG_INFINITY;
        x[230] = f32::NAN;
        x[231] = 3.0;
        x[260..292].iter_mut().for_each(|v| *v *= 1e30);
        x[300..320].iter_mut().for_each(|v| *v *= 1e-38);
        x[330..352].fill(f32::NAN);
        // A NaN first in its lane, the block's largest magnitude later in that lane.
        x[352] = f32::NAN;
        x[360] = 2.0;
        x[384 + 9] = f32::NAN;
        x[384 + 25] = -2.0;
        let mut want = vec![BlockQ4_0::ZERO; x.len() / 32];
        quantize_row_scalar(&x, &mut want);
        for simd in [true, false] {
            let _simd = quant_core::simd::force_simd(simd);
            let mut got = vec![BlockQ4_0::ZERO; x.len() / 32];
            BlockQ4_0::quantize_row(&x, &mut got);
            assert_eq!(got, want, "simd={simd}");
        }
    }
}
