//! IQ3_S: super-blocks of 256 values in 8 blocks of 32, each block 8 groups of 4 values
//! on the 512-point D4-lattice codebook, explicit signs (3.4375 bits per weight).
//!
//! Layout (ggml `block_iq3_s`, 110 bytes): `d: f16`, `qs[64]` (low 8 bits of the grid
//! indices), `qh[8]` (bit `k` of `qh[ib]`: bit 8 of index `k` of block `ib`), `signs[32]`
//! (one bit per value), `scales[4]` (4-bit block scales `s`, two per byte). Value =
//! `d·(1 + 2s)·grid[j]·sign`.
//!
//! Quantizer: ggml's `quantize_row_iq3_s_impl` (block size 32) as `quantize_iq3_s` runs
//! it: the IQ3_XXS search with plain signs, 19 trial scales (`is ∈ [−9, 9]`), every group
//! re-searched at the chosen scale, block scales against `d = max_scale/31` stored as
//! `d·1.033`. As in ggml, an all-zero block does not advance the `qs`/`signs` write
//! position (the next block's codes land in its place).

use crate::types::c_math::{c_max, c_min, fp16_to_fp32, fp32_to_fp16, nearest_int, QK_K};
use crate::types::iq3_xxs::{index3, iq3_search, iq_weights};
use crate::types::iq_grid::{dequant_table, lattice, Book};
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::lanes::{Lanes, Portable};
use crate::types::{by_blocks, GgmlBlock, GgmlType};

/// ggml's `block_iq3_s`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq3S {
    /// Super-block scale (f16 bits).
    pub d: u16,
    /// Grid indices, low 8 bits.
    pub qs: [u8; 64],
    /// Grid indices, bit 8.
    pub qh: [u8; 8],
    /// Sign bits.
    pub signs: [u8; 32],
    /// 4-bit block scales.
    pub scales: [u8; 4],
}
const _: () = assert!(std::mem::size_of::<BlockIq3S>() == 110);

impl BlockIq3S {
    /// The block quantizer on the AVX2 lanes where available.
    #[inline(always)]
    fn quantize(xbl: &[f32], qw: Option<&[f32]>) -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = Avx2::get() {
            return Self::quantize_in(t, xbl, qw);
        }
        Self::quantize_in(Portable, xbl, qw)
    }

    #[inline(always)]
    fn quantize_in<S: Lanes>(s: S, xbl: &[f32], qw: Option<&[f32]>) -> Self {
        let lat = lattice(Book::Iq3S);
        let mut y = Self::ZERO;
        let mut scales = [0f32; 8];
        let mut weight = [0f32; 32];
        let mut waux = [0f32; 32];
        let mut xval = [0f32; 32];
        let mut max_scale = 0f32;
        let mut sumx2 = 0f32;
        for &v in xbl {
            sumx2 += v * v;
        }
        let sigma2 = 2.0 * sumx2 / QK_K as f32;
        let (mut qs_pos, mut signs_pos) = (0usize, 0usize);
        for ib in 0..8 {
            let xb = &xbl[32 * ib..32 * ib + 32];
            iq_weights(
                xb,
                qw.map(|q| &q[32 * ib..32 * ib + 32]),
                sigma2,
                &mut weight,
            );
            for i in 0..32 {
                waux[i] = weight[i].sqrt();
            }
            let mut block_signs = [0u8; 4];
            for k in 0..4 {
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
            let mut l = [0i8; 32];
            if max == 0.0 {
                scales[ib] = 0.0;
                continue;
            }
            let mut scale = iq3_search(s, lat, &xval, &weight, &waux, max, 9, false, true, &mut l);
            if scale < 0.0 {
                scale = -scale;
                for s in &mut block_signs {
                    *s = !*s;
                }
            }
            for k in 0..8 {
                let u = index3(&l[4 * k..4 * k + 4]);
                let grid_index = lat.map[u].max(0) as usize;
                y.qs[qs_pos + k] = (grid_index & 255) as u8;
                y.qh[ib] |= ((grid_index >> 8) << k) as u8;
            }
            qs_pos += 8;
            y.signs[signs_pos..signs_pos + 4].copy_from_slice(&block_signs);
            signs_pos += 4;
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
        }
        if max_scale == 0.0 {
            return y;
        }
        let d = max_scale / 31.0;
        y.d = fp32_to_fp16(d * 1.033f32);
        let id = 1.0 / d;
        for ib in (0..8).step_by(2) {
            let l1 = nearest_int(0.5f32 * (id * scales[ib] - 1.0));
            let l1 = c_max(0, c_min(15, l1));
            let l2 = nearest_int(0.5f32 * (id * scales[ib + 1] - 1.0));
            let l2 = c_max(0, c_min(15, l2));
            y.scales[ib / 2] = (l1 | (l2 << 4)) as u8;
        }
        y
    }
}

impl GgmlBlock for BlockIq3S {
    const TYPE: GgmlType = GgmlType::IQ3_S;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 110;
    const ZERO: Self = BlockIq3S {
        d: 0,
        qs: [0; 64],
        qh: [0; 8],
        signs: [0; 32],
        scales: [0; 4],
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.qs.copy_from_slice(&b[2..66]);
        blk.qh.copy_from_slice(&b[66..74]);
        blk.signs.copy_from_slice(&b[74..106]);
        blk.scales.copy_from_slice(&b[106..110]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..66].copy_from_slice(&self.qs);
        out[66..74].copy_from_slice(&self.qh);
        out[74..106].copy_from_slice(&self.signs);
        out[106..110].copy_from_slice(&self.scales);
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
        let grid = dequant_table(Book::Iq3S);
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(yb.d);
            for ib in 0..8 {
                let sc = yb.scales[ib / 2] >> (4 * (ib % 2)) & 0xf;
                let db = d * (1 + 2 * sc as i32) as f32;
                let qs = &yb.qs[8 * ib..8 * ib + 8];
                let qh = yb.qh[ib] as usize;
                let signs = &yb.signs[4 * ib..4 * ib + 4];
                for l in 0..4 {
                    let i1 = qs[2 * l] as usize | ((qh << (8 - 2 * l)) & 256);
                    let i2 = qs[2 * l + 1] as usize | ((qh << (7 - 2 * l)) & 256);
                    let g1 = grid[i1].to_le_bytes();
                    let g2 = grid[i2].to_le_bytes();
                    let ob = &mut o[32 * ib + 8 * l..32 * ib + 8 * l + 8];
                    for j in 0..4 {
                        let s1 = if signs[l] & (1 << j) != 0 { -1.0 } else { 1.0 };
                        let s2 = if signs[l] & (1 << (j + 4)) != 0 {
                            -1.0
                        } else {
                            1.0
                        };
                        ob[j] = db * g1[j] as f32 * s1;
                        ob[j + 4] = db * g2[j] as f32 * s2;
                    }
                }
            }
        }
    }
}
