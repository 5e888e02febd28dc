//! TQ2_0: ternary super-blocks of 256 values, `x ≈ d·t` with `t ∈ {−1, 0, 1}` stored in
//! 2 bits each (2.0625 bits per weight).
//!
//! Layout (ggml `block_tq2_0`, 66 bytes): `qs[64]`, `d: f16`. In each group of 128
//! values, byte `m` (of 32) holds `t + 1` of value `m + 32n` in bits `2n..2n+1`.
//!
//! Quantizer: ggml's `quantize_row_tq2_0_ref` (the importance matrix is ignored):
//! `d = max|x|`, `t = lroundf(x/d)`.

use crate::types::c_math::c_lroundf_small;
use crate::types::c_math::{c_max, fp16_to_fp32, fp32_to_fp16, QK_K};
#[cfg(target_arch = "x86_64")]
use crate::types::{lanes::Avx2, tq_avx2};
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_tq2_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockTq2_0 {
    /// 2 bits per value.
    pub qs: [u8; 64],
    /// Scale (f16 bits).
    pub d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockTq2_0>() == 66);

impl BlockTq2_0 {
    /// One block of 256 (the portable build, and the AVX2 build's blocks that hold a
    /// non-finite value or a tiny maximum).
    #[inline(always)]
    fn quantize(xb: &[f32]) -> Self {
        let mut amax = 0f32;
        for &v in xb {
            amax = c_max(amax, v.abs());
        }
        let d = amax;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut yb = Self::ZERO;
        yb.d = fp32_to_fp16(d);
        for (j, xg) in xb.chunks_exact(128).enumerate() {
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..4 {
                    let xi = c_lroundf_small(xg[m + n * 32] * id).wrapping_add(1);
                    q = q.wrapping_add(((xi & 3) << (2 * n)) as u8);
                }
                yb.qs[32 * j + m] = q;
            }
        }
        yb
    }
}

impl GgmlBlock for BlockTq2_0 {
    const TYPE: GgmlType = GgmlType::TQ2_0;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 66;
    const ZERO: Self = BlockTq2_0 { qs: [0; 64], d: 0 };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.qs.copy_from_slice(&b[0..64]);
        blk.d = u16::from_le_bytes([b[64], b[65]]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..64].copy_from_slice(&self.qs);
        out[64..66].copy_from_slice(&self.d.to_le_bytes());
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = Avx2::get() {
            // SAFETY: the token exists only on CPUs with AVX2.
            return unsafe { tq_avx2::tq2_row(t, x, y, Self::quantize) };
        }
        for (xb, yb) in x.chunks_exact(QK_K).zip(y) {
            *yb = Self::quantize(xb);
        }
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(yb.d);
            for (qs, og) in yb.qs.chunks_exact(32).zip(o.chunks_exact_mut(128)) {
                for l in 0..4 {
                    for m in 0..32 {
                        let q = ((qs[m] >> (2 * l)) & 3) as i8;
                        og[32 * l + m] = (q - 1) as f32 * d;
                    }
                }
            }
        }
    }
}
