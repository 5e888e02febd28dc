//! IQ4_XS: super-blocks of 256 values in 8 blocks of 32, `x ≈ d·(s_j − 32)·K[q]` with
//! the IQ4_NL table `K` and 6-bit block scales `s_j`.
//!
//! Layout (ggml `block_iq4_xs`, 136 bytes): `d: f16`, `scales_h: u16` (bits `2j..2j+1` =
//! top 2 bits of `s_j`), `scales_l[4]` (low nibbles, `s_{2i}` low, `s_{2i+1}` high),
//! `qs[128]` (per block of 32: value `j` low nibble, `j + 16` high nibble).
//!
//! Quantizer: ggml's `quantize_iq4_xs` (`quantize_row_iq4_nl_impl` with super-block 256,
//! `ntry = 7`): per-block scales as IQ4_NL (`σ² = 2Σx²/256` over the super-block), then
//! `d = −max_scale/32`, `s_j = clamp(nearest_int(scale_j/d), −32, 31) + 32`, and the codes
//! recomputed against `d·(s_j − 32)`.

use crate::types::c_math::{fp16_to_fp32, QK_K};
use crate::types::iq4_nl::{quantize_iq4_impl, KVALUES_IQ4NL};
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_iq4_xs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Xs {
    /// Super-block scale (f16 bits).
    pub d: u16,
    /// High 2 bits of the 8 block scales.
    pub scales_h: u16,
    /// Low 4 bits of the 8 block scales.
    pub scales_l: [u8; 4],
    /// Table indices, two per byte.
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockIq4Xs>() == 136);

impl BlockIq4Xs {
    #[inline(always)]
    fn from_impl(x: &[f32], qw: Option<&[f32]>) -> Self {
        let o = quantize_iq4_impl(x, qw);
        BlockIq4Xs {
            d: o.d,
            scales_h: o.scales_h,
            scales_l: o.scales_l,
            qs: o.q4,
        }
    }
}

impl GgmlBlock for BlockIq4Xs {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 136;
    const ZERO: Self = BlockIq4Xs {
        d: 0,
        scales_h: 0,
        scales_l: [0; 4],
        qs: [0; 128],
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.scales_h = u16::from_le_bytes([b[2], b[3]]);
        blk.scales_l.copy_from_slice(&b[4..8]);
        blk.qs.copy_from_slice(&b[8..136]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.scales_h.to_le_bytes());
        out[4..8].copy_from_slice(&self.scales_l);
        out[8..136].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        for (xb, yb) in x.chunks_exact(QK_K).zip(y) {
            *yb = Self::from_impl(xb, None);
        }
    }

    #[inline(always)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        for ((xb, qb), yb) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(y) {
            *yb = Self::from_impl(xb, Some(qb));
        }
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(yb.d);
            for (ib, (o, qs)) in o
                .chunks_exact_mut(32)
                .zip(yb.qs.chunks_exact(16))
                .enumerate()
            {
                let ls = ((yb.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf) as i32
                    | ((((yb.scales_h >> (2 * ib)) & 3) as i32) << 4);
                let dl = d * (ls - 32) as f32;
                for j in 0..16 {
                    o[j] = dl * KVALUES_IQ4NL[(qs[j] & 0xf) as usize] as f32;
                    o[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
                }
            }
        }
    }
}
