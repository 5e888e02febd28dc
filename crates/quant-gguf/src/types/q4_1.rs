//! Q4_1: blocks of 32 values, `x ≈ d·q + m`, `q ∈ [0, 15]`.
//!
//! Layout (ggml `block_q4_1`, 20 bytes): `d: f16`, `m: f16`, `qs[16]` (value `j` in the
//! low nibble of byte `j`, value `j + 16` in the high nibble).
//!
//! Without weights (`quantize_row_q4_1_ref`): `d = (max − min)/15`, `m = min`,
//! `q = min(15, (int8)((x − min)·(1/d) + 0.5))`. With weights (`quantize_row_q4_1_impl`):
//! `w = qw·√(σ² + x²)` with the row's `σ² = Σx²/n`, then `make_qkx3_quants(32, 15, w,
//! rmin −0.9, rdelta 0.05, 36 steps)`.

#[cfg(test)]
use crate::types::c_math::{c_f32_to_i32, c_min};
use crate::types::c_math::{fp16_to_fp32, fp32_to_fp16};
use crate::types::kquant_lanes::{self, Groups};
use crate::types::q4_0::{block_weights, row_sigma2};
use crate::types::search::QkxSearch;
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_q4_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    /// Scale (f16 bits).
    pub d: u16,
    /// Minimum (f16 bits).
    pub m: u16,
    /// Nibbles.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// The `_impl` quantizers of Q4_1 (`nmax` 15) and Q5_1 (31) over a row: weights
/// `qw·√(σ² + x²)`, then [`legacy_qkx3`] on eight blocks side by side, one per lane
/// ([`kquant_lanes::qkx`]); `block(k, d, m, codes)` stores block `k` (f16 bits of `d` and
/// of the minimum).
#[inline(always)]
pub(crate) fn weighted_asym_row(
    x: &[f32],
    qw: &[f32],
    nmax: i32,
    mut block: impl FnMut(usize, u16, u16, &[u8; 32]),
) {
    let sigma2 = row_sigma2(x);
    let mut l = [0u8; 32];
    let mut w = [0f32; 256];
    for (c, (xc, qc)) in x.chunks(256).zip(qw.chunks(256)).enumerate() {
        for ((wb, xb), qb) in w
            .chunks_exact_mut(32)
            .zip(xc.chunks_exact(32))
            .zip(qc.chunks_exact(32))
        {
            wb.copy_from_slice(&block_weights(xb, qb, sigma2));
        }
        let mut gr = Groups::gather(xc, 32);
        gr.gather_weights(&w[..xc.len()]);
        let found = kquant_lanes::qkx(legacy_qkx3(nmax), true, &gr);
        for g in 0..xc.len() / 32 {
            found.codes(g, &mut l);
            let d = fp32_to_fp16(found.scale[g]);
            let m = fp32_to_fp16(-found.neg_min[g]);
            block(8 * c + g, d, m, &l);
        }
    }
}

/// The weighted search of the Q4_1/Q5_1 `_impl` quantizers.
pub(crate) const fn legacy_qkx3(nmax: i32) -> QkxSearch {
    QkxSearch {
        nmax,
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    }
}

impl GgmlBlock for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 20;
    const ZERO: Self = BlockQ4_1 {
        d: 0,
        m: 0,
        qs: [0; 16],
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.m = u16::from_le_bytes([b[2], b[3]]);
        blk.qs.copy_from_slice(&b[4..20]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.m.to_le_bytes());
        out[4..20].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        crate::types::legacy_lanes::q4_1_row::<false>(x, y);
    }
    #[inline(always)]
    fn quantize_row_finite(x: &[f32], y: &mut [Self]) -> bool {
        crate::types::legacy_lanes::q4_1_row::<true>(x, y)
    }

    #[inline(always)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        weighted_asym_row(x, qw, 15, |k, d, m, l| {
            let yb = &mut y[k];
            (yb.d, yb.m) = (d, m);
            for j in 0..16 {
                yb.qs[j] = l[j] | (l[j + 16] << 4);
            }
        });
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(32)) {
            let d = fp16_to_fp32(yb.d);
            let m = fp16_to_fp32(yb.m);
            for j in 0..16 {
                let x0 = (yb.qs[j] & 0x0F) as i32;
                let x1 = (yb.qs[j] >> 4) as i32;
                o[j] = x0 as f32 * d + m;
                o[j + 16] = x1 as f32 * d + m;
            }
        }
    }
}

/// The unweighted quantizer as ggml writes it, one value at a time: the oracle of the
/// vector version ([`crate::types::legacy_lanes`]).
#[cfg(test)]
pub(crate) fn quantize_row_scalar(x: &[f32], y: &mut [BlockQ4_1]) {
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
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = fp32_to_fp16(d);
        yb.m = fp32_to_fp16(min);
        for j in 0..16 {
            let x0 = (xb[j] - min) * id;
            let x1 = (xb[16 + j] - min) * id;
            let xi0 = c_min(15, c_f32_to_i32(x0 + 0.5) as i8 as i32) as u8;
            let xi1 = c_min(15, c_f32_to_i32(x1 + 0.5) as i8 as i32) as u8;
            yb.qs[j] = xi0 | ((xi1 as u32) << 4) as u8;
        }
    }
}
