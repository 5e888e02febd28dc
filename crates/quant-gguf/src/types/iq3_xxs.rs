//! IQ3_XXS: super-blocks of 256 values in 8 blocks of 32, each block 8 groups of 4
//! values on the 256-point D4-lattice codebook (3.0625 bits per weight).
//!
//! Layout (ggml `block_iq3_xxs`, 98 bytes): `d: f16`, `qs[96]`: 64 grid indices (8 per
//! block), then per block a `u32`: four 7-bit sign groups (bit `j` of group `l`: value
//! `8l + j` negative; the 8th sign is the group's parity, `ksigns_iq2xs`) and the 4-bit
//! block scale `s` in bits 28..31. Value = `d·(0.5 + s)·0.5·grid[j]·sign`.
//!
//! Quantizer: ggml's `quantize_row_iq3_xxs_impl(256, …)` (what `ggml_quantize_chunk`
//! runs, with or without an importance matrix): weights `x²` or `qw·√(σ² + x²)`; signs
//! taken out (an odd count of negatives in a group of 8 flips the least important one);
//! 31 trial scales `(15 + 0.2·is)/max`, `is ∈ [−15, 15]`, each rounding the magnitudes to
//! the lattice (off-grid groups to their best neighbour), keeping the best `Σwxq²/Σwq²`;
//! off-grid groups re-searched at the chosen scale; block scales to 4 bits against
//! `d = max_scale/31`, stored as `d·1.0125`.

use crate::types::c_math::{c_max, c_min, fp16_to_fp32, fp32_to_fp16, nearest_int, QK_K};
use crate::types::iq2_xxs::even_signs;
use crate::types::iq_grid::{
    dequant_table, lattice, round_levels, trial_sums, Book, Lattice, KSIGNS_IQ2XS, MAX_TRIALS,
};
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::lanes::{Lanes, Portable};
use crate::types::{by_blocks, GgmlBlock, GgmlType};

/// ggml's `GROUP_MAX_EPS_IQ3_XXS`.
const GROUP_MAX_EPS_IQ3_XXS: f32 = 1e-8;

/// ggml's `iq3_find_best_neighbour`: the neighbour of lattice point `u` of least
/// `Σ w·(scale·q − x)²` (the first on ties); writes its levels to `l`.
#[inline(always)]
pub(crate) fn iq3_find_best_neighbour<S: Lanes>(
    s: S,
    lat: &Lattice,
    u: usize,
    xval: &[f32],
    weight: &[f32],
    scale: f32,
    l: &mut [i8],
) -> usize {
    let grid_index = lat.best_neighbour_in::<S, 4>(s, u, xval, weight, scale, None);
    lat.put_levels::<4>(grid_index, l);
    grid_index
}

/// The lattice index of the 4 levels `l`.
#[inline(always)]
pub(crate) fn index3(l: &[i8]) -> usize {
    let mut u = 0usize;
    for (i, &v) in l.iter().enumerate().take(4) {
        u |= (v as usize) << (3 * i);
    }
    u
}

/// The scale search of `quantize_row_iq3_xxs_impl` / `quantize_row_iq3_s_impl` for one
/// block of 32 magnitudes `xval` (`max` their largest): trial scales
/// `(15 + 0.2·is)/max` for `is ∈ [−steps, steps]` (`steps` ≤ 15); `on_grid_start` is the initial
/// on-grid flag of every group (IQ3_XXS true, IQ3_S false) and `refine_all` re-searches
/// every group at the chosen scale (IQ3_S) instead of only the off-grid ones. Returns the
/// scale; `l` gets the levels.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn iq3_search<S: Lanes>(
    s: S,
    lat: &Lattice,
    xval: &[f32; 32],
    weight: &[f32; 32],
    waux: &[f32; 32],
    max: f32,
    steps: i32,
    on_grid_start: bool,
    refine_all: bool,
    l: &mut [i8; 32],
) -> f32 {
    const KMAXQ: i32 = 8;
    let mut rows = [[0i8; 32]; MAX_TRIALS];
    let mut cols = [[0i8; MAX_TRIALS]; 32];
    let mut on_grid = [[false; 8]; MAX_TRIALS];
    let ntrials = ((2 * steps + 1) as usize).min(MAX_TRIALS);
    // Every trial's levels first, then their sums eight trials at a time, then ggml's
    // sequential choice among them.
    for (t, (laux, is_on_grid_aux)) in rows
        .iter_mut()
        .zip(on_grid.iter_mut())
        .take(ntrials)
        .enumerate()
    {
        let is = t as i32 - steps;
        let id = ((2 * KMAXQ - 1) as f32 + is as f32 * 0.2f32) / max;
        let this_scale = 1.0 / id;
        let mut us = [0usize; 8];
        for h in 0..4 {
            let lv = round_levels(s, id, &xval[8 * h..8 * h + 8], KMAXQ - 1);
            for (l, &li) in laux[8 * h..8 * h + 8].iter_mut().zip(&lv) {
                *l = li as i8;
            }
            for g in 0..2 {
                let v = &lv[4 * g..4 * g + 4];
                us[2 * h + g] = (v[0] | v[1] << 3 | v[2] << 6 | v[3] << 9) as usize;
            }
        }
        for k in 0..8 {
            let u = us[k];
            is_on_grid_aux[k] = true;
            if lat.map[u] < 0 {
                is_on_grid_aux[k] = false;
                iq3_find_best_neighbour(
                    s,
                    lat,
                    u,
                    &xval[4 * k..4 * k + 4],
                    &waux[4 * k..4 * k + 4],
                    this_scale,
                    &mut laux[4 * k..4 * k + 4],
                );
            }
        }
        for (col, &v) in cols.iter_mut().zip(laux.iter()) {
            col[t] = v;
        }
    }
    let (sumqx, sumq2) = trial_sums(weight, xval, &cols, ntrials);
    let mut is_on_grid = [on_grid_start; 8];
    let mut best = 0f32;
    let mut scale = max / (2 * KMAXQ - 1) as f32;
    for t in 0..ntrials {
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
        for k in 0..8 {
            if !refine_all && is_on_grid[k] {
                continue;
            }
            let mut u = 0usize;
            for i in 0..4 {
                let li = nearest_int(0.5f32 * (id * xval[4 * k + i] - 1.0));
                let li = c_max(0, c_min(KMAXQ - 1, li));
                u |= (li as usize) << (3 * i);
            }
            let grid_index = if lat.map[u] < 0 {
                iq3_find_best_neighbour(
                    s,
                    lat,
                    u,
                    &xval[4 * k..4 * k + 4],
                    &waux[4 * k..4 * k + 4],
                    scale,
                    &mut l[4 * k..4 * k + 4],
                )
            } else {
                lat.map[u] as usize
            };
            let pg = lat.point(grid_index);
            for i in 0..4 {
                l[4 * k + i] = (pg[i] - 1) / 2;
            }
        }
        let mut sumqx = 0f32;
        let mut sumq2 = 0f32;
        for i in 0..32 {
            let w = weight[i];
            let q = (2 * l[i] as i32 + 1) as f32;
            sumqx += w * xval[i] * q;
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    scale
}

/// The weights of block `ib` (32 values) of a super-block: `x²`, or `qw·√(σ² + x²)`.
#[inline(always)]
pub(crate) fn iq_weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, weight: &mut [f32]) {
    match qw {
        Some(qw) => {
            for ((w, &x), &q) in weight.iter_mut().zip(xb).zip(qw) {
                *w = q * (sigma2 + x * x).sqrt();
            }
        }
        None => {
            for (w, &x) in weight.iter_mut().zip(xb) {
                *w = x * x;
            }
        }
    }
}

/// ggml's `block_iq3_xxs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq3Xxs {
    /// Super-block scale (f16 bits).
    pub d: u16,
    /// Grid indices, then the scales and signs.
    pub qs: [u8; 96],
}
const _: () = assert!(std::mem::size_of::<BlockIq3Xxs>() == 98);

impl BlockIq3Xxs {
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
        let lat = lattice(Book::Iq3Xxs);
        let mut y = Self::ZERO;
        let mut scales = [0f32; 8];
        let mut sas = [0u32; 8];
        let mut weight = [0f32; 32];
        let mut waux = [0f32; 32];
        let mut xval = [0f32; 32];
        let mut max_scale = 0f32;
        let mut sumx2 = 0f32;
        for &v in xbl {
            sumx2 += v * v;
        }
        let sigma2 = 2.0 * sumx2 / QK_K as f32;
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
            even_signs(xb, &weight, &mut xval, &mut block_signs);
            let mut max = xval[0];
            for &v in &xval[1..] {
                max = c_max(max, v);
            }
            let mut l = [0i8; 32];
            if max < GROUP_MAX_EPS_IQ3_XXS {
                scales[ib] = 0.0;
                continue;
            }
            let mut scale = iq3_search(s, lat, &xval, &weight, &waux, max, 15, true, false, &mut l);
            if scale < 0.0 {
                scale = -scale;
                for s in &mut block_signs {
                    *s = !*s & 127;
                }
            }
            for k in 0..8 {
                let u = index3(&l[4 * k..4 * k + 4]);
                y.qs[8 * ib + k] = lat.map[u].max(0) as u8;
            }
            sas[ib] = block_signs[0] as u32
                | (block_signs[1] as u32) << 7
                | (block_signs[2] as u32) << 14
                | (block_signs[3] as u32) << 21;
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
        }
        if max_scale == 0.0 {
            return Self::ZERO;
        }
        let d = max_scale / 31.0;
        y.d = fp32_to_fp16(d * 1.0125f32);
        let id = 1.0 / d;
        for ib in 0..8 {
            let li = nearest_int(0.5f32 * (id * scales[ib] - 1.0));
            let li = c_max(0, c_min(15, li));
            sas[ib] |= (li as u32) << 28;
            y.qs[64 + 4 * ib..68 + 4 * ib].copy_from_slice(&sas[ib].to_le_bytes());
        }
        y
    }
}

impl GgmlBlock for BlockIq3Xxs {
    const TYPE: GgmlType = GgmlType::IQ3_XXS;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 98;
    const ZERO: Self = BlockIq3Xxs { d: 0, qs: [0; 96] };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.qs.copy_from_slice(&b[2..98]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..98].copy_from_slice(&self.qs);
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
        let grid = dequant_table(Book::Iq3Xxs);
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(yb.d);
            for ib in 0..8 {
                let aux = u32::from_le_bytes([
                    yb.qs[64 + 4 * ib],
                    yb.qs[65 + 4 * ib],
                    yb.qs[66 + 4 * ib],
                    yb.qs[67 + 4 * ib],
                ]);
                let db = d * (0.5f32 + (aux >> 28) as f32) * 0.5f32;
                let qs = &yb.qs[8 * ib..8 * ib + 8];
                for l in 0..4 {
                    let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                    let g1 = grid[qs[2 * l] as usize].to_le_bytes();
                    let g2 = grid[qs[2 * l + 1] as usize].to_le_bytes();
                    let ob = &mut o[32 * ib + 8 * l..32 * ib + 8 * l + 8];
                    for j in 0..4 {
                        let s1 = if signs & (1 << j) != 0 { -1.0 } else { 1.0 };
                        let s2 = if signs & (1 << (j + 4)) != 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The straight port of `iq3_find_best_neighbour` (the oracle of the lane search).
    fn scalar_best(lat: &Lattice, u: usize, x: &[f32], w: &[f32], scale: f32) -> usize {
        let mut best_d2 = f32::MAX;
        let mut grid_index = usize::MAX;
        for &j in lat.neighbours_of(u) {
            let pg = lat.point(j as usize);
            let mut d2 = 0f32;
            for i in 0..4 {
                let diff = scale * pg[i] as f32 - x[i];
                d2 += w[i] * diff * diff;
            }
            if d2 < best_d2 {
                best_d2 = d2;
                grid_index = j as usize;
            }
        }
        grid_index
    }

    #[test]
    fn lane_neighbour_search_equals_the_scalar_one() {
        let mut s = 7u64;
        let mut r = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32) / (1u64 << 24) as f32
        };
        for book in [Book::Iq3Xxs, Book::Iq3S] {
            let lat = lattice(book);
            for u in 0..4096 {
                if lat.map[u] >= 0 {
                    continue;
                }
                for _ in 0..4 {
                    let x: Vec<f32> = (0..4).map(|_| r() * 16.0).collect();
                    let w: Vec<f32> = (0..4).map(|_| r()).collect();
                    let scale = 0.5 + r() * 2.0;
                    assert_eq!(
                        lat.best_neighbour_checked::<4>(u, &x, &w, scale, None),
                        scalar_best(lat, u, &x, &w, scale),
                        "{book:?} u={u}"
                    );
                }
                // Whole values, unit weights: exact sums, many ties (the first wins).
                for _ in 0..2 {
                    let x: Vec<f32> = (0..4).map(|_| (r() * 16.0).floor()).collect();
                    let w = [1.0f32; 4];
                    assert_eq!(
                        lat.best_neighbour_checked::<4>(u, &x, &w, 1.0, None),
                        scalar_best(lat, u, &x, &w, 1.0),
                        "{book:?} u={u} ties"
                    );
                }
            }
        }
    }
}
