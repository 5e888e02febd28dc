//! IQ2_XXS: super-blocks of 256 values in 8 blocks of 32, each block 4 groups of 8 values
//! on the 256-point E8-lattice codebook (2.0625 bits per weight). Needs an importance
//! matrix (ggml asserts one; so does [`crate::block::quantize`]).
//!
//! Layout (ggml `block_iq2_xxs`, 66 bytes): `d: f16`, then per block two `u32`: the 4
//! grid indices (one byte each), and four 7-bit sign groups (the 8th sign is the parity,
//! `ksigns_iq2xs`) with the 4-bit block scale `s` in bits 28..31. Value =
//! `d·(0.5 + s)·0.25·grid[j]·sign`.
//!
//! Quantizer: ggml's `quantize_row_iq2_xxs_impl`: weights `qw·√(σ² + x²)` with `σ² =
//! Σx²/256`; signs taken out as IQ3_XXS; a first scale from `make_qp_quants(nmax = 4)`,
//! then 13 trial scales `(5 + 0.1·is)/(3·scale)`, `is ∈ [−6, 6]`, each rounding the
//! magnitudes to the lattice (off-grid groups to their best neighbour), keeping the best
//! `Σwxq²/Σwq²`; every group re-searched at the chosen scale; block scales to 4 bits
//! against `d = max_scale/31`.

use crate::types::c_math::{
    c_max, c_min, fp16_to_fp32, fp32_to_fp16, nearest_int, GROUP_MAX_EPS, QK_K,
};
use crate::types::iq_grid::{
    dequant_table, lattice, round_levels, trial_sums, Book, Lattice, KSIGNS_IQ2XS, MAX_TRIALS,
};
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::lanes::{Lanes, Portable};
use crate::types::search::make_qp_quants;
use crate::types::{by_blocks, GgmlBlock, GgmlType};

/// ggml's `iq2_find_best_neighbour` (groups of 8): the neighbour of lattice point `u` of
/// least `Σ w·(scale·q − x)²` (the first on ties); writes its levels to `l`.
#[inline(always)]
pub(crate) fn iq2_find_best_neighbour<S: Lanes>(
    s: S,
    lat: &Lattice,
    u: usize,
    xval: &[f32],
    weight: &[f32],
    scale: f32,
    l: &mut [i8],
) -> usize {
    let grid_index = lat.best_neighbour_in::<S, 8>(s, u, xval, weight, scale, None);
    lat.put_levels::<8>(grid_index, l);
    grid_index
}

/// The lattice index of 8 two-bit levels.
#[inline(always)]
pub(crate) fn index2(l: &[i8]) -> usize {
    let mut u = 0usize;
    for (i, &v) in l.iter().enumerate().take(8) {
        u |= (v as usize) << (2 * i);
    }
    u
}

/// Levels `clamp(nearest_int(0.5·(id·x − 1)), 0, 2)` of a group of 8 into `l`, returning
/// the lattice index.
#[inline(always)]
pub(crate) fn round_group2<S: Lanes>(s: S, id: f32, xval: &[f32], l: &mut [i8]) -> usize {
    let lv = round_levels(s, id, xval, 2);
    let mut u = 0usize;
    for (i, (l, &li)) in l.iter_mut().zip(&lv).enumerate() {
        *l = li as i8;
        u |= (li as usize) << (2 * i);
    }
    u
}

/// Takes the signs out of the groups of 8 of `xb` into `xval` (ggml's even-sign rule: an
/// odd number of negatives flips back the value of least `w·x²`); returns the 7-bit sign
/// groups.
#[inline(always)]
pub(crate) fn even_signs(xb: &[f32], weight: &[f32], xval: &mut [f32], signs: &mut [u8]) {
    for (k, s_out) in signs.iter_mut().enumerate() {
        let mut nflip = 0;
        let mut s = 0u8;
        for i in 0..8 {
            if xb[8 * k + i] >= 0.0 {
                xval[8 * k + i] = xb[8 * k + i];
            } else {
                xval[8 * k + i] = -xb[8 * k + i];
                nflip += 1;
                s |= 1 << i;
            }
        }
        if nflip % 2 != 0 {
            let mut imin = 0;
            let mut min = weight[8 * k] * xb[8 * k] * xb[8 * k];
            for i in 1..8 {
                let ax = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                if ax < min {
                    min = ax;
                    imin = i;
                }
            }
            xval[8 * k + imin] = -xval[8 * k + imin];
            s ^= 1 << imin;
        }
        *s_out = s & 127;
    }
}

/// `Σ w·x·q` and `Σ w·q²` with `q = 2l + 1`.
#[inline(always)]
pub(crate) fn sums(weight: &[f32], xval: &[f32], l: &[i8]) -> (f32, f32) {
    let mut sumqx = 0f32;
    let mut sumq2 = 0f32;
    for ((&w, &x), &li) in weight.iter().zip(xval).zip(l) {
        let q = (2 * li as i32 + 1) as f32;
        sumqx += w * x * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// ggml's `block_iq2_xxs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq2Xxs {
    /// Super-block scale (f16 bits).
    pub d: u16,
    /// Per block: grid indices (u32), signs and scale (u32), little-endian.
    pub qs: [u8; 64],
}
const _: () = assert!(std::mem::size_of::<BlockIq2Xxs>() == 66);

impl BlockIq2Xxs {
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
    fn quantize_in<S: Lanes>(s: S, xbl: &[f32], qwbl: &[f32]) -> Self {
        const KMAXQ: i32 = 3;
        const NTRIALS: usize = 13;
        let lat = lattice(Book::Iq2Xxs);
        let mut q2 = [0u32; 16];
        let mut scales = [0f32; 8];
        let mut weight = [0f32; 32];
        let mut waux = [0f32; 32];
        let mut xval = [0f32; 32];
        let mut l = [0i8; 32];
        let mut max_scale = 0f32;
        let mut sumx2 = 0f32;
        for &v in xbl {
            sumx2 += v * v;
        }
        let sigma2 = sumx2 / QK_K as f32;
        for ib in 0..8 {
            let xb = &xbl[32 * ib..32 * ib + 32];
            let qw = &qwbl[32 * ib..32 * ib + 32];
            for i in 0..32 {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
            for i in 0..32 {
                waux[i] = weight[i].sqrt();
            }
            let mut block_signs = [0u8; 4];
            even_signs(xb, &weight, &mut xval, &mut block_signs);
            let mut max = xval[0];
            for &v in &xval[1..] {
                max = c_max(max, v);
            }
            if max < GROUP_MAX_EPS {
                scales[ib] = 0.0;
                continue;
            }
            let mut lq = [0u8; 32];
            let mut scale = make_qp_quants(KMAXQ + 1, &xval, &mut lq, &weight);
            for (a, &b) in l.iter_mut().zip(&lq) {
                *a = b as i8;
            }
            let eff_max = scale * KMAXQ as f32;
            if eff_max <= 0.0 {
                scales[ib] = 0.0;
                continue;
            }
            // Every trial's levels first, then their sums eight trials at a time, then
            // ggml's sequential choice among them.
            let mut rows = [[0i8; 32]; NTRIALS];
            let mut cols = [[0i8; MAX_TRIALS]; 32];
            for (t, laux) in rows.iter_mut().enumerate() {
                let is = t as i32 - 6;
                let id = ((2 * KMAXQ - 1) as f32 + is as f32 * 0.1f32) / eff_max;
                let this_scale = 1.0 / id;
                for k in 0..4 {
                    let g = 8 * k..8 * k + 8;
                    let u = round_group2(s, id, &xval[g.clone()], &mut laux[g.clone()]);
                    if lat.map[u] < 0 {
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
            let (sumqx, sumq2) = trial_sums(&weight, &xval, &cols, NTRIALS);
            let mut best = 0f32;
            for t in 0..NTRIALS {
                let (sumqx, sumq2) = (sumqx[t], sumq2[t]);
                if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                    scale = sumqx / sumq2;
                    best = scale * sumqx;
                    l = rows[t];
                }
            }
            if scale > 0.0 {
                let id = 1.0 / scale;
                for k in 0..4 {
                    let g = 8 * k..8 * k + 8;
                    let mut tmp = [0i8; 8];
                    let u = round_group2(s, id, &xval[g.clone()], &mut tmp);
                    let gi = if lat.map[u] < 0 {
                        iq2_find_best_neighbour(
                            s,
                            lat,
                            u,
                            &xval[g.clone()],
                            &waux[g.clone()],
                            scale,
                            &mut l[g.clone()],
                        )
                    } else {
                        lat.map[u] as usize
                    };
                    let pg = lat.point(gi);
                    for i in 0..8 {
                        l[8 * k + i] = (pg[i] - 1) / 2;
                    }
                }
                let (sumqx, sumq2) = sums(&weight, &xval, &l);
                if sumq2 > 0.0 {
                    scale = sumqx / sumq2;
                }
            }
            if scale < 0.0 {
                scale = -scale;
                for s in &mut block_signs {
                    *s = !*s & 127;
                }
            }
            for k in 0..4 {
                let gi = lat.map[index2(&l[8 * k..8 * k + 8])].max(0) as u32;
                q2[2 * ib] |= gi << (8 * k);
                q2[2 * ib + 1] |= (block_signs[k] as u32) << (7 * k);
            }
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
        }
        let mut y = Self::ZERO;
        if max_scale == 0.0 {
            return y;
        }
        let d = max_scale / 31.0;
        y.d = fp32_to_fp16(d);
        let id = 1.0 / d;
        for ib in 0..8 {
            let li = nearest_int(0.5f32 * (id * scales[ib] - 1.0));
            let li = c_max(0, c_min(15, li));
            q2[2 * ib + 1] |= (li as u32) << 28;
        }
        for (o, v) in y.qs.chunks_exact_mut(4).zip(q2) {
            o.copy_from_slice(&v.to_le_bytes());
        }
        y
    }
}

/// `db·grid·sign` for one group of 8 (ggml's dequantizer loop).
#[inline(always)]
pub(crate) fn deq_group8(db: f32, grid: u64, signs: u8, out: &mut [f32]) {
    let g = grid.to_le_bytes();
    for j in 0..8 {
        let s = if signs & (1 << j) != 0 { -1.0 } else { 1.0 };
        out[j] = db * g[j] as f32 * s;
    }
}

impl GgmlBlock for BlockIq2Xxs {
    const TYPE: GgmlType = GgmlType::IQ2_XXS;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 66;
    const ZERO: Self = BlockIq2Xxs { d: 0, qs: [0; 64] };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.qs.copy_from_slice(&b[2..66]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..66].copy_from_slice(&self.qs);
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
        let grid = dequant_table(Book::Iq2Xxs);
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(yb.d);
            for ib in 0..8 {
                let q = &yb.qs[8 * ib..8 * ib + 8];
                let aux1 = u32::from_le_bytes([q[4], q[5], q[6], q[7]]);
                let db = d * (0.5f32 + (aux1 >> 28) as f32) * 0.25f32;
                for l in 0..4 {
                    let signs = KSIGNS_IQ2XS[((aux1 >> (7 * l)) & 127) as usize];
                    let at = 32 * ib + 8 * l;
                    deq_group8(db, grid[q[l] as usize], signs, &mut o[at..at + 8]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The straight ports of `iq2_find_best_neighbour` and `iq1_find_best_neighbour2`
    /// (the oracles of the lane search).
    fn scalar_best(
        lat: &Lattice,
        u: usize,
        x: &[f32],
        w: &[f32],
        scale: f32,
        xg: Option<[f32; 3]>,
    ) -> usize {
        let mut best_d2 = f32::MAX;
        let mut grid_index = usize::MAX;
        for &j in lat.neighbours_of(u) {
            let pg = lat.point(j as usize);
            let mut d2 = 0f32;
            for i in 0..8 {
                let q = match xg {
                    Some(xg) => xg[((pg[i] - 1) / 2) as usize],
                    None => pg[i] as f32,
                };
                let diff = scale * q - x[i];
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
        use crate::types::iq1_s::{X_M, X_P};
        let mut s = 11u64;
        let mut r = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32) / (1u64 << 24) as f32
        };
        for book in [Book::Iq2Xxs, Book::Iq2Xs, Book::Iq2S, Book::Iq1] {
            let lat = lattice(book);
            for u in (0..43692).step_by(3) {
                let reachable = (0..8).all(|k| (u >> (2 * k)) & 3 <= 2);
                if lat.map[u] >= 0 || !reachable {
                    continue;
                }
                let x: Vec<f32> = (0..8).map(|_| (r() - 0.3) * 6.0).collect();
                let w: Vec<f32> = (0..8).map(|_| r()).collect();
                let scale = 0.5 + r() * 2.0;
                if book == Book::Iq1 {
                    for xg in [X_P, X_M] {
                        assert_eq!(
                            lat.best_neighbour_checked::<8>(u, &x, &w, scale, Some(xg[0])),
                            scalar_best(lat, u, &x, &w, scale, Some(xg)),
                            "{book:?} u={u}"
                        );
                    }
                } else {
                    assert_eq!(
                        lat.best_neighbour_checked::<8>(u, &x, &w, scale, None),
                        scalar_best(lat, u, &x, &w, scale, None),
                        "{book:?} u={u}"
                    );
                }
                // Whole values, unit weights: exact sums, many ties (the first wins).
                let x: Vec<f32> = (0..8).map(|_| (r() * 6.0).floor()).collect();
                let w = [1.0f32; 8];
                let xg = (book == Book::Iq1).then_some(X_P);
                assert_eq!(
                    lat.best_neighbour_checked::<8>(u, &x, &w, 1.0, xg.map(|g| g[0])),
                    scalar_best(lat, u, &x, &w, 1.0, xg),
                    "{book:?} u={u} ties"
                );
            }
        }
    }
}
