//! Q5_K: super-blocks of 256 values in 8 sub-blocks of 32,
//! `x ≈ d·sc_j·q − dmin·m_j`, `q ∈ [0, 31]`, 6-bit `sc_j` and `m_j`.
//!
//! Layout (ggml `block_q5_K`, 176 bytes): `d: f16`, `dmin: f16`, `scales[12]` (as Q4_K),
//! `qh[32]` (bit 4 of value `64·k + i` at byte `i % 32`, bit `2k` for `i < 32`, bit
//! `2k + 1` for the upper 32), `qs[128]` (low nibbles, as Q4_K).
//!
//! Same algorithm as Q4_K with `nmax = 31`; the unweighted search is
//! `make_qkx2_quants(32, 31, w, rmin −0.5, rdelta 0.1, 15 steps)`.

use crate::types::c_math::{fp16_to_fp32, QK_K};
use crate::types::q4_k::get_scale_min_k4;
use crate::types::q4_k::KQuantStep;
use crate::types::search::QkxSearch;
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_q5_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5K {
    /// Super-block scale of the scales (f16 bits).
    pub d: u16,
    /// Super-block scale of the mins (f16 bits).
    pub dmin: u16,
    /// 6-bit scales and mins, packed.
    pub scales: [u8; 12],
    /// High bits.
    pub qh: [u8; 32],
    /// Low nibbles.
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

const STEP: KQuantStep = KQuantStep {
    nmax: 31,
    plain: QkxSearch {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    },
};

impl BlockQ5K {
    #[inline(always)]
    fn pack(&mut self, l: &[u8; QK_K]) {
        self.qh = [0; 32];
        let mut m1 = 1u8;
        let mut m2 = 2u8;
        for (n, ql) in (0..QK_K).step_by(64).zip(self.qs.chunks_exact_mut(32)) {
            for j in 0..32 {
                let mut l1 = l[n + j];
                if l1 > 15 {
                    l1 -= 16;
                    self.qh[j] |= m1;
                }
                let mut l2 = l[n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    self.qh[j] |= m2;
                }
                ql[j] = l1 | (l2 << 4);
            }
            m1 = m1.wrapping_shl(2);
            m2 = m2.wrapping_shl(2);
        }
    }
}

impl GgmlBlock for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 176;
    const ZERO: Self = BlockQ5K {
        d: 0,
        dmin: 0,
        scales: [0; 12],
        qh: [0; 32],
        qs: [0; 128],
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.dmin = u16::from_le_bytes([b[2], b[3]]);
        blk.scales.copy_from_slice(&b[4..16]);
        blk.qh.copy_from_slice(&b[16..48]);
        blk.qs.copy_from_slice(&b[48..176]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.dmin.to_le_bytes());
        out[4..16].copy_from_slice(&self.scales);
        out[16..48].copy_from_slice(&self.qh);
        out[48..176].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        let mut l = [0u8; QK_K];
        for (x, yb) in x.chunks_exact(QK_K).zip(y) {
            (yb.d, yb.dmin, yb.scales) = STEP.plain(x, &mut l);
            yb.pack(&l);
        }
    }

    #[inline(always)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        let mut l = [0u8; QK_K];
        for ((x, q), yb) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(y) {
            (yb.d, yb.dmin, yb.scales) = STEP.weighted(x, q, &mut l, true);
            yb.pack(&l);
        }
    }

    const AVX2_DEQUANTIZE: bool = true;

    /// `dequantize_row_q5_K`.
    #[inline(always)]
    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(yb.d);
            let min = fp16_to_fp32(yb.dmin);
            for (k, (ql, o)) in yb
                .qs
                .chunks_exact(32)
                .zip(o.chunks_exact_mut(64))
                .enumerate()
            {
                let (sc, m) = get_scale_min_k4(2 * k, &yb.scales);
                let (d1, m1) = (d * sc as f32, min * m as f32);
                let (sc, m) = get_scale_min_k4(2 * k + 1, &yb.scales);
                let (d2, m2) = (d * sc as f32, min * m as f32);
                // ggml's `(ql & 0xF) + (qh & u1 ? 16 : 0)`, with `u1 = 1 << 2k`, `u2 = 2 << 2k`:
                // the high bit ORed in (the nibble is below 16), branch-free so it vectorizes.
                let (s1, s2) = (2 * k as u32, 2 * k as u32 + 1);
                for l in 0..32 {
                    let lo = (ql[l] & 0xF) | (((yb.qh[l] >> s1) & 1) << 4);
                    let hi = (ql[l] >> 4) | (((yb.qh[l] >> s2) & 1) << 4);
                    o[l] = d1 * lo as f32 - m1;
                    o[l + 32] = d2 * hi as f32 - m2;
                }
            }
        }
    }
}
