//! IQ2_S: super-blocks of 256 values in 16 blocks of 16, each block 2 groups of 8 values
//! on the 1024-point E8-lattice codebook, explicit signs (2.5625 bits per weight).
//!
//! Layout (ggml `block_iq2_s`, 82 bytes): `d: f16`, `qs[64]` (32 low bytes of the grid
//! indices, then 32 sign bytes), `qh[8]` (bits `2j..2j+1` of `qh[i]`: bits 8..9 of index
//! `4i + j`), `scales[8]` (4-bit block scales `s`, two per byte). Value =
//! `d·(0.5 + s)·0.25·grid[j]·sign`.
//!
//! Quantizer: ggml's `quantize_row_iq2_s_impl`: weights `qw·√(σ² + x²)`, or `σ²/4 + x²`
//! without an importance matrix, with `σ² = 2Σx²/256`; plain signs; the IQ2_XS search
//! (neighbour lists of the nearest distance only); block scales to 4 bits against
//! `d = max_scale/31`, stored as `d·0.9875`.

use crate::types::c_math::{c_max, c_min, fp16_to_fp32, fp32_to_fp16, nearest_int, QK_K};
use crate::types::iq2_xs::iq2_search16;
use crate::types::iq2_xxs::{deq_group8, index2};
use crate::types::iq_grid::{dequant_table, lattice, Book};
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::lanes::{Lanes, Portable};
use crate::types::{by_blocks, GgmlBlock, GgmlType};

/// ggml's `GROUP_MAX_EPS_IQ2_S`.
const GROUP_MAX_EPS_IQ2_S: f32 = 1e-8;

/// ggml's `block_iq2_s`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq2S {
    /// Super-block scale (f16 bits).
    pub d: u16,
    /// Grid index low bytes, then signs.
    pub qs: [u8; 64],
    /// Grid index bits 8..9.
    pub qh: [u8; 8],
    /// 4-bit block scales.
    pub scales: [u8; 8],
}
const _: () = assert!(std::mem::size_of::<BlockIq2S>() == 82);

impl BlockIq2S {
    /// The block quantizer on the AVX2 lanes where available.
    #[inline(always)]
    fn quantize(xbl: &[f32], qwbl: Option<&[f32]>) -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = Avx2::get() {
            return Self::quantize_in(t, xbl, qwbl);
        }
        Self::quantize_in(Portable, xbl, qwbl)
    }

    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // ggml's loops, index for index
    fn quantize_in<S: Lanes>(s: S, xbl: &[f32], qwbl: Option<&[f32]>) -> Self {
        let lat = lattice(Book::Iq2S);
        let mut y = Self::ZERO;
        let mut scales = [0f32; 16];
        let mut weight = [0f32; 16];
        let mut waux = [0f32; 16];
        let mut xval = [0f32; 16];
        let mut max_scale = 0f32;
        let mut sumx2 = 0f32;
        for &v in xbl {
            sumx2 += v * v;
        }
        let sigma2 = 2.0 * sumx2 / QK_K as f32;
        for ib in 0..16 {
            let xb = &xbl[16 * ib..16 * ib + 16];
            match qwbl {
                Some(q) => {
                    let qw = &q[16 * ib..16 * ib + 16];
                    for i in 0..16 {
                        weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
                    }
                }
                None => {
                    for i in 0..16 {
                        weight[i] = 0.25f32 * sigma2 + xb[i] * xb[i];
                    }
                }
            }
            for i in 0..16 {
                waux[i] = weight[i].sqrt();
            }
            let mut block_signs = [0u8; 2];
            for k in 0..2 {
                let mut s = 0u8;
                for i in 0..8 {
                    if xb[8 * k + i] >= 0.0 {
                        xval[8 * k + i] = xb[8 * k + i];
                    } else {
                        xval[8 * k + i] = -xb[8 * k + i];
                        s |= 1 << i;
                    }
                }
                block_signs[k] = s;
            }
            let mut max = xval[0];
            for &v in &xval[1..] {
                max = c_max(max, v);
            }
            let mut l = [0i8; 16];
            if max < GROUP_MAX_EPS_IQ2_S {
                scales[ib] = 0.0;
                continue;
            }
            let mut scale = iq2_search16(s, lat, &xval, &weight, &waux, max, &mut l);
            if scale < 0.0 {
                scale = -scale;
                for s in &mut block_signs {
                    *s = !*s;
                }
            }
            for k in 0..2 {
                let gi = lat.map[index2(&l[8 * k..8 * k + 8])].max(0) as usize;
                let i8 = 2 * ib + k;
                y.qs[i8] = (gi & 255) as u8;
                y.qh[i8 / 4] |= ((gi >> 8) << (2 * (i8 % 4))) as u8;
                y.qs[32 + i8] = block_signs[k];
            }
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
        }
        if max_scale == 0.0 {
            return y;
        }
        let d = max_scale / 31.0;
        y.d = fp32_to_fp16(d * 0.9875f32);
        let id = 1.0 / d;
        for ib in 0..16 {
            let li = nearest_int(0.5f32 * (id * scales[ib] - 1.0));
            let li = c_max(0, c_min(15, li)) as u8;
            if ib % 2 == 0 {
                y.scales[ib / 2] = li;
            } else {
                y.scales[ib / 2] |= li << 4;
            }
        }
        y
    }
}

impl GgmlBlock for BlockIq2S {
    const TYPE: GgmlType = GgmlType::IQ2_S;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 82;
    const ZERO: Self = BlockIq2S {
        d: 0,
        qs: [0; 64],
        qh: [0; 8],
        scales: [0; 8],
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.qs.copy_from_slice(&b[2..66]);
        blk.qh.copy_from_slice(&b[66..74]);
        blk.scales.copy_from_slice(&b[74..82]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..66].copy_from_slice(&self.qs);
        out[66..74].copy_from_slice(&self.qh);
        out[74..82].copy_from_slice(&self.scales);
    }

    #[inline(always)]
    // An inline(always) closure, not the fn item, whose `Fn` shim would stay out of
    // the AVX2 build of `quantize_row_into`.
    #[allow(clippy::redundant_closure)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        by_blocks(
            x,
            None,
            y,
            #[inline(always)]
            |xb, qb| Self::quantize(xb, qb),
        );
    }

    #[inline(always)]
    // An inline(always) closure, not the fn item, whose `Fn` shim would stay out of
    // the AVX2 build of `quantize_row_into`.
    #[allow(clippy::redundant_closure)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        by_blocks(
            x,
            Some(qw),
            y,
            #[inline(always)]
            |xb, qb| Self::quantize(xb, qb),
        );
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        let grid = dequant_table(Book::Iq2S);
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(yb.d);
            for ib in 0..8 {
                let db = [
                    d * (0.5f32 + (yb.scales[ib] & 0xf) as f32) * 0.25f32,
                    d * (0.5f32 + (yb.scales[ib] >> 4) as f32) * 0.25f32,
                ];
                let qh = yb.qh[ib] as usize;
                for l in 0..4 {
                    let gi = yb.qs[4 * ib + l] as usize | ((qh << (8 - 2 * l)) & 0x300);
                    let at = 32 * ib + 8 * l;
                    deq_group8(
                        db[l / 2],
                        grid[gi],
                        yb.qs[32 + 4 * ib + l],
                        &mut o[at..at + 8],
                    );
                }
            }
        }
    }
}
