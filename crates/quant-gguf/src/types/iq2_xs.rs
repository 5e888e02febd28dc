//! IQ2_XS: super-blocks of 256 values in 16 blocks of 16, each block 2 groups of 8 values
//! on the 512-point E8-lattice codebook (2.3125 bits per weight). Needs an importance
//! matrix (as in ggml).
//!
//! Layout (ggml `block_iq2_xs`, 74 bytes): `d: f16`, `qs[32]: u16` (grid index in bits
//! 0..8, 7-bit sign group in bits 9..15, parity as the 8th sign), `scales[8]` (4-bit
//! block scales `s`, two per byte). Value = `d·(0.5 + s)·0.25·grid[j]·sign`.
//!
//! Quantizer: ggml's `quantize_row_iq2_xs_impl`: weights `qw·√(σ² + x²)` with `σ² =
//! Σx²/256`; signs taken out as IQ2_XXS; 19 trial scales `(5 + 0.1·is)/max`,
//! `is ∈ [−9, 9]`, keeping the best `Σwxq²/Σwq²`; off-grid groups re-searched at the
//! chosen scale; block scales to 4 bits against `d = max_scale/31`.

use crate::types::c_math::{
    c_max, c_min, fp16_to_fp32, fp32_to_fp16, nearest_int, GROUP_MAX_EPS, QK_K,
};
use crate::types::iq2_xxs::{
    deq_group8, even_signs, index2, iq2_find_best_neighbour, round_group2, sums,
};
use crate::types::iq_grid::{
    dequant_table, lattice, trial_sums, Book, Lattice, KSIGNS_IQ2XS, MAX_TRIALS,
};
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::lanes::{Lanes, Portable};
use crate::types::{by_blocks, GgmlBlock, GgmlType};

/// The scale search of `quantize_row_iq2_xs_impl` / `quantize_row_iq2_s_impl` for one
/// block of 16 magnitudes `xval` (`max` their largest, not ~0): 19 trial scales
/// `(5 + 0.1·is)/max`, keeping the best `Σwxq²/Σwq²`; off-grid groups re-searched at the
/// chosen scale. Returns the scale; `l` gets the levels.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // ggml's loops, index for index
pub(crate) fn iq2_search16<S: Lanes>(
    s: S,
    lat: &Lattice,
    xval: &[f32; 16],
    weight: &[f32; 16],
    waux: &[f32; 16],
    max: f32,
    l: &mut [i8; 16],
) -> f32 {
    const KMAXQ: i32 = 3;
    const NTRIALS: usize = 19;
    let mut rows = [[0i8; 16]; NTRIALS];
    let mut cols = [[0i8; MAX_TRIALS]; 16];
    let mut on_grid = [[true; 2]; NTRIALS];
    // Every trial's levels first, then their sums eight trials at a time, then ggml's
    // sequential choice among them.
    for (t, (laux, is_on_grid_aux)) in rows.iter_mut().zip(on_grid.iter_mut()).enumerate() {
        let is = t as i32 - 9;
        let id = ((2 * KMAXQ - 1) as f32 + is as f32 * 0.1f32) / max;
        let this_scale = 1.0 / id;
        for k in 0..2 {
            let g = 8 * k..8 * k + 8;
            let u = round_group2(s, id, &xval[g.clone()], &mut laux[g.clone()]);
            is_on_grid_aux[k] = true;
            if lat.map[u] < 0 {
                is_on_grid_aux[k] = false;
                iq2_find_best_neighbour(
                    s,
                    lat,
                    u,
                    &xval[g.clone()],
                    &waux[g.clone()],
                    this_scale,
                    &mut laux[g],
                );
            }
        }
        for (col, &v) in cols.iter_mut().zip(laux.iter()) {
            col[t] = v;
        }
    }
    let (sumqx, sumq2) = trial_sums(weight, xval, &cols, NTRIALS);
    let mut best = 0f32;
    let mut scale = max / (2 * KMAXQ - 1) as f32;
    let mut is_on_grid = [true; 2];
    for t in 0..NTRIALS {
        let (sumqx, sumq2) = (sumqx[t], sumq2[t]);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            *l = rows[t];
            is_on_grid = on_grid[t];
        }
    }
    let n_not_ongrid = is_on_grid.iter().filter(|&&b| !b).count();
    if n_not_ongrid > 0 && scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..2 {
            if is_on_grid[k] {
                continue;
            }
            let g = 8 * k..8 * k + 8;
            let u = round_group2(s, id, &xval[g.clone()], &mut l[g.clone()]);
            if lat.map[u] < 0 {
                iq2_find_best_neighbour(
                    s,
                    lat,
                    u,
                    &xval[g.clone()],
                    &waux[g.clone()],
                    scale,
                    &mut l[g],
                );
            }
        }
        let (sumqx, sumq2) = sums(weight, xval, l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    scale
}

/// ggml's `block_iq2_xs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq2Xs {
    /// Super-block scale (f16 bits).
    pub d: u16,
    /// Grid index and signs per group of 8.
    pub qs: [u16; 32],
    /// 4-bit block scales.
    pub scales: [u8; 8],
}
const _: () = assert!(std::mem::size_of::<BlockIq2Xs>() == 74);

impl BlockIq2Xs {
    /// The block quantizer on the AVX2 lanes where available.
    #[inline(always)]
    fn quantize(xbl: &[f32], qwbl: &[f32]) -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = Avx2::get() {
            return Self::quantize_in(t, xbl, qwbl);
        }
        Self::quantize_in(Portable, xbl, qwbl)
    }

    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // ggml's loops, index for index
    fn quantize_in<S: Lanes>(s: S, xbl: &[f32], qwbl: &[f32]) -> Self {
        let lat = lattice(Book::Iq2Xs);
        let mut y = Self::ZERO;
        let mut q2 = [0u16; 32];
        let mut scales = [0f32; 16];
        let mut weight = [0f32; 16];
        let mut waux = [0f32; 16];
        let mut xval = [0f32; 16];
        let mut max_scale = 0f32;
        let mut sumx2 = 0f32;
        for &v in xbl {
            sumx2 += v * v;
        }
        let sigma2 = sumx2 / QK_K as f32;
        for ib in 0..16 {
            let xb = &xbl[16 * ib..16 * ib + 16];
            let qw = &qwbl[16 * ib..16 * ib + 16];
            for i in 0..16 {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
            for i in 0..16 {
                waux[i] = weight[i].sqrt();
            }
            let mut block_signs = [0u8; 2];
            even_signs(xb, &weight, &mut xval, &mut block_signs);
            let mut max = xval[0];
            for &v in &xval[1..] {
                max = c_max(max, v);
            }
            let mut l = [0i8; 16];
            if max < GROUP_MAX_EPS {
                scales[ib] = 0.0;
                continue;
            }
            let mut scale = iq2_search16(s, lat, &xval, &weight, &waux, max, &mut l);
            if scale < 0.0 {
                scale = -scale;
                for s in &mut block_signs {
                    *s = !*s & 127;
                }
            }
            for k in 0..2 {
                let gi = lat.map[index2(&l[8 * k..8 * k + 8])].max(0) as u16;
                q2[2 * ib + k] = gi | ((block_signs[k] as u16) << 9);
            }
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
        }
        if max_scale == 0.0 {
            return y;
        }
        let d = max_scale / 31.0;
        y.d = fp32_to_fp16(d);
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
        y.qs = q2;
        y
    }
}

impl GgmlBlock for BlockIq2Xs {
    const TYPE: GgmlType = GgmlType::IQ2_XS;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 74;
    const ZERO: Self = BlockIq2Xs {
        d: 0,
        qs: [0; 32],
        scales: [0; 8],
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        for (q, c) in blk.qs.iter_mut().zip(b[2..66].chunks_exact(2)) {
            *q = u16::from_le_bytes([c[0], c[1]]);
        }
        blk.scales.copy_from_slice(&b[66..74]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        for (q, c) in self.qs.iter().zip(out[2..66].chunks_exact_mut(2)) {
            c.copy_from_slice(&q.to_le_bytes());
        }
        out[66..74].copy_from_slice(&self.scales);
    }

    #[inline(always)]
    /// Not reached through [`crate::block::quantize`], which requires an importance
    /// matrix for this type (as ggml does); all-ones weights here.
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        by_blocks(
            x,
            None,
            y,
            #[inline(always)]
            |xb, _| Self::quantize(xb, &[1.0; QK_K]),
        );
    }

    #[inline(always)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        by_blocks(
            x,
            Some(qw),
            y,
            #[inline(always)]
            |xb, qb| Self::quantize(xb, qb.unwrap_or(&[1.0; QK_K])),
        );
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        let grid = dequant_table(Book::Iq2Xs);
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(yb.d);
            for ib in 0..8 {
                let db = [
                    d * (0.5f32 + (yb.scales[ib] & 0xf) as f32) * 0.25f32,
                    d * (0.5f32 + (yb.scales[ib] >> 4) as f32) * 0.25f32,
                ];
                for l in 0..4 {
                    let q = yb.qs[4 * ib + l];
                    let signs = KSIGNS_IQ2XS[(q >> 9) as usize];
                    let at = 32 * ib + 8 * l;
                    deq_group8(
                        db[l / 2],
                        grid[(q & 511) as usize],
                        signs,
                        &mut o[at..at + 8],
                    );
                }
            }
        }
    }
}
