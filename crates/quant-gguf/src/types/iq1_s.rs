//! IQ1_S: super-blocks of 256 values in 8 blocks of 32, each block 4 groups of 8 ternary
//! values from the 2048-point codebook, shifted by ±1/8 (1.5625 bits per weight). Needs an
//! importance matrix (as in ggml).
//!
//! Layout (ggml `block_iq1_s`, 50 bytes): `d: f16`, `qs[32]` (low 8 bits of the grid
//! indices), `qh[8]: u16` (per block: bits `3k..3k+2` the high 3 bits of index `k`, bits
//! 12..14 the 3-bit scale `s`, bit 15 the sign of the shift `δ`). Value =
//! `d·(2s + 1)·(grid[j] + δ)`, `grid[j] ∈ {−1, 0, 1}`, `δ = ±0.125`.
//!
//! Quantizer: ggml's `quantize_row_iq1_s_impl`: weights `qw·√(σ² + x²)` (`σ² = 2Σx²/256`);
//! the values of a block sorted (stably, as glibc's merge-sort `qsort`), then every split
//! into three runs tried with both shifts (`{−1, 0, 1} ± 0.125`), keeping the best
//! `Σwxq²/Σwq²`; groups off the codebook moved to the neighbour of least weighted error;
//! block scales to 3 bits against `d = max_scale/15`, stored as `d·1.125`.

use crate::types::c_math::{c_max, c_min, fp16_to_fp32, fp32_to_fp16, nearest_int, QK_K};
use crate::types::iq2_xxs::index2;
use crate::types::iq_grid::{dequant_table, lattice, Book, Lattice};
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::lanes::{Lanes, Portable};
use crate::types::{by_blocks, GgmlBlock, GgmlType};

/// ggml's `IQ1S_DELTA` (and `IQ1M_DELTA`).
pub(crate) const IQ1S_DELTA: f32 = 0.125;
/// ggml's `x_p`: the levels with the positive shift.
pub(crate) const X_P: [f32; 3] = [-1.0 + IQ1S_DELTA, IQ1S_DELTA, 1.0 + IQ1S_DELTA];
/// ggml's `x_m`: the levels with the negative shift.
pub(crate) const X_M: [f32; 3] = [-1.0 - IQ1S_DELTA, -IQ1S_DELTA, 1.0 - IQ1S_DELTA];

/// ggml's `GROUP_MAX_EPS_IQ1_S`.
const GROUP_MAX_EPS_IQ1_S: f32 = 1e-12;

/// The indices of `xb` in ascending order of value, equal values in their original
/// order (glibc 2.36's `qsort` is a merge sort, so ggml's `iq1_sort_helper` sort is
/// stable): each value's rank counted, or with NaN an insertion sort, which is stable
/// too. (With NaN, whose comparisons are all false, the orders may differ from ggml's.)
#[inline(always)]
pub(crate) fn sorted_order<const N: usize>(xb: &[f32]) -> [usize; N] {
    let mut idx: [usize; N] = std::array::from_fn(|i| i);
    if let Ok(x) = <&[f32; N]>::try_from(xb) {
        if !x.iter().any(|v| v.is_nan()) {
            // Without NaN `<` is a strict weak order, and the stable sort puts value `i`
            // after every smaller value and every equal one before it: its rank is their
            // count (branch-free, so it vectorizes; the insertion sort's order).
            for (i, &v) in x.iter().enumerate() {
                let mut r = 0usize;
                for (j, &u) in x.iter().enumerate() {
                    r += ((u < v) | ((u == v) & (j < i))) as usize;
                }
                idx[r] = i;
            }
            return idx;
        }
    }
    for i in 1..N {
        let cur = idx[i];
        let v = xb[cur];
        let mut j = i;
        while j > 0 && xb[idx[j - 1]] > v {
            idx[j] = idx[j - 1];
            j -= 1;
        }
        idx[j] = cur;
    }
    idx
}

/// ggml's `iq1_find_best_neighbour2`: the neighbour of lattice point `u` of least
/// `Σ w·(scale·xg[level] − x)²` (the first on ties; the first neighbour when every
/// error is NaN, where ggml aborts). Writes its levels to `l`.
#[inline(always)]
pub(crate) fn iq1_find_best_neighbour2(
    lat: &Lattice,
    u: usize,
    xval: &[f32],
    weight: &[f32],
    scale: f32,
    xg: &[f32; 3],
    l: &mut [i8],
) -> usize {
    #[cfg(target_arch = "x86_64")]
    let grid_index = match (Avx2::get(), xval.try_into(), weight.try_into()) {
        // SAFETY: the token exists only on CPUs with AVX2.
        (Some(t), Ok(x), Ok(w)) => unsafe { best_neighbour_avx2(t, lat, u, x, w, scale, xg[0]) },
        _ => lat.best_neighbour::<8>(u, xval, weight, scale, Some(xg[0])),
    };
    #[cfg(not(target_arch = "x86_64"))]
    let grid_index = lat.best_neighbour::<8>(u, xval, weight, scale, Some(xg[0]));
    let pg = lat.point(grid_index);
    for i in 0..8 {
        l[i] = (pg[i] - 1) / 2;
    }
    grid_index
}

/// [`Lattice::best_neighbour`] with `iq1 = Some(xg0)` for a group of 8, in AVX2
/// registers: each lane's sum is the same chain of operations; a chunk's least sum below
/// `best` (NaN lanes and the last chunk's missing neighbours never taken: they count as
/// +∞, above any `best ≤ f32::MAX`) is the value the sequential scan ends on, at its
/// first lane.
///
/// # Safety
/// The CPU has AVX2 (the token's existence says so).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn best_neighbour_avx2(
    _t: Avx2,
    lat: &Lattice,
    u: usize,
    x: &[f32; 8],
    w: &[f32; 8],
    scale: f32,
    xg0: f32,
) -> usize {
    use std::arch::x86_64::*;
    let ids = lat.neighbours_of(u);
    let mut best = f32::MAX;
    let mut best_j = ids.first().copied().unwrap_or(0) as usize;
    let (one, half, inf) = (
        _mm256_set1_ps(1.0),
        _mm256_set1_ps(0.5),
        _mm256_set1_ps(f32::INFINITY),
    );
    let (xg0v, scalev) = (_mm256_set1_ps(xg0), _mm256_set1_ps(scale));
    for chunk_ids in ids.chunks(8) {
        // The chunk's grid points (8 bytes each; the last chunk's missing ones repeat its
        // first, their sums masked below), transposed so that vector `i` holds
        // coordinate `i` of the 8 points: the values of `Lattice::lanes`, read from the
        // 16 KiB grid instead of the 32 bytes per neighbour of the lane table.
        let mut rows = [0u64; 8];
        for (k, r) in rows.iter_mut().enumerate() {
            let j = chunk_ids.get(k).or(chunk_ids.first()).copied().unwrap_or(0) as usize;
            if let Some(p) = lat.grid.get(8 * j..8 * j + 8) {
                *r = u64::from_le_bytes(std::array::from_fn(|b| p[b] as u8));
            }
        }
        let r = rows.map(|v| _mm_cvtsi64_si128(v as i64));
        let a = [
            _mm_unpacklo_epi8(r[0], r[1]),
            _mm_unpacklo_epi8(r[2], r[3]),
            _mm_unpacklo_epi8(r[4], r[5]),
            _mm_unpacklo_epi8(r[6], r[7]),
        ];
        let b = [
            _mm_unpacklo_epi16(a[0], a[1]),
            _mm_unpackhi_epi16(a[0], a[1]),
            _mm_unpacklo_epi16(a[2], a[3]),
            _mm_unpackhi_epi16(a[2], a[3]),
        ];
        // Coordinates 2k, 2k + 1 in the low and high 8 bytes of c[k].
        let c = [
            _mm_unpacklo_epi32(b[0], b[2]),
            _mm_unpackhi_epi32(b[0], b[2]),
            _mm_unpacklo_epi32(b[1], b[3]),
            _mm_unpackhi_epi32(b[1], b[3]),
        ];
        let mut d2 = _mm256_setzero_ps();
        for i in 0..8 {
            let ci = c[i / 2];
            let bytes = if i % 2 == 0 {
                ci
            } else {
                _mm_unpackhi_epi64(ci, ci)
            };
            let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
            let q = _mm256_add_ps(xg0v, _mm256_mul_ps(_mm256_sub_ps(v, one), half));
            let diff = _mm256_sub_ps(_mm256_mul_ps(scalev, q), _mm256_set1_ps(x[i]));
            let t = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(w[i]), diff), diff);
            d2 = _mm256_add_ps(d2, t);
        }
        let n = chunk_ids.len();
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let real = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes));
        let valid = _mm256_and_ps(real, _mm256_cmp_ps::<_CMP_ORD_Q>(d2, d2));
        let d = _mm256_blendv_ps(inf, d2, valid);
        let m = _mm256_min_ps(d, _mm256_permute2f128_ps::<1>(d, d));
        let m = _mm_min_ps(
            _mm256_castps256_ps128(m),
            _mm_movehl_ps(_mm256_castps256_ps128(m), _mm256_castps256_ps128(m)),
        );
        let m = _mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps::<1>(m, m)));
        if m < best {
            let eq = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(d2, _mm256_set1_ps(m))) as u32;
            let lane = (eq & ((1u32 << n) - 1)).trailing_zeros() as usize;
            if let Some(&j) = chunk_ids.get(lane) {
                best = m;
                best_j = j as usize;
            }
        }
    }
    best_j
}

/// The split search of `quantize_row_iq1_s_impl` over the prefix sums of a block of 32:
/// every split `i1 ≤ i2` with the positive then the negative shift, in ggml's order,
/// keeping the best `Σwxq²/Σwq²`; for each `i1`, 8 consecutive `i2` side by side (each
/// sum evaluated as in ggml). Returns (scale, i1, i2, shift), shift 0 when none qualified.
#[inline(always)]
fn split_search(sumx: &[f32; 33], sumw: &[f32; 33]) -> (f32, i32, i32, i8) {
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = Avx2::get() {
        // SAFETY: the token exists only on CPUs with AVX2.
        return unsafe { split_search_avx2(s, sumx, sumw) };
    }
    split_search_lanes(Portable, sumx, sumw)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn split_search_avx2(s: Avx2, sumx: &[f32; 33], sumw: &[f32; 33]) -> (f32, i32, i32, i8) {
    split_search_lanes(s, sumx, sumw)
}

#[inline(always)]
fn split_search_lanes<S: Lanes>(s: S, sumx: &[f32; 33], sumw: &[f32; 33]) -> (f32, i32, i32, i8) {
    const BS: usize = 32;
    // sumx/sumw padded so that 8 lanes from any i2 ≤ 32 can be loaded.
    let mut px = [0f32; 40];
    let mut pw = [0f32; 40];
    px[..33].copy_from_slice(sumx);
    pw[..33].copy_from_slice(sumw);
    let (sx0, sw0, sxn, swn) = (sumx[0], sumw[0], sumx[BS], sumw[BS]);
    let mut best_score = -f32::MAX;
    let mut result = (0f32, -1i32, -1i32, 0i8);
    for i1 in 0..=BS {
        let (sx1, sw1) = (s.splat(sumx[i1]), s.splat(sumw[i1]));
        let ax = s.splat(sumx[i1] - sx0);
        let aw = s.splat(sumw[i1] - sw0);
        let mut i2 = i1;
        while i2 <= BS {
            let mut lx = [0f32; 8];
            let mut lw = [0f32; 8];
            lx.copy_from_slice(&px[i2..i2 + 8]);
            lw.copy_from_slice(&pw[i2..i2 + 8]);
            let (x2, w2) = (s.load(&lx), s.load(&lw));
            let bx = s.sub(x2, sx1);
            let bw = s.sub(w2, sw1);
            let cx = s.sub(s.splat(sxn), x2);
            let cw = s.sub(s.splat(swn), w2);
            // Whether any of the 16 comparisons passes against the score at the chunk's
            // start: when none does, none updates the score, so all fail in turn (the sums
            // stay in registers and are stored only for a chunk that passes).
            let bs = s.splat(best_score);
            let (px_, p2_, mp) = split_sums(s, &X_P, [ax, bx, cx], [aw, bw, cw], bs);
            let (mx_, m2_, mm) = split_sums(s, &X_M, [ax, bx, cx], [aw, bw, cw], bs);
            if !(s.any(mp) || s.any(mm)) {
                i2 += 8;
                continue;
            }
            let qx = [s.store(px_), s.store(mx_)];
            let q2 = [s.store(p2_), s.store(m2_)];
            let n = (BS + 1 - i2).min(8);
            for l in 0..n {
                for (k, shift) in [(0usize, 1i8), (1, -1)] {
                    let (sumqx, sumq2) = (qx[k][l], q2[k][l]);
                    if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                        let scale = sumqx / sumq2;
                        best_score = scale * sumqx;
                        result = (scale, i1 as i32, (i2 + l) as i32, shift);
                    }
                }
            }
            i2 += 8;
        }
    }
    result
}

/// One shift's `sumqx = Σ x·p` and `sumq2 = Σ w·p·p` over the three parts of the splits
/// of eight lanes (`x`, `w`: the parts' sums), and which of them beat `best`
/// (`sumq2 > 0 && sumqx² > best·sumq2`), in ggml's order of operations.
#[inline(always)]
fn split_sums<S: Lanes>(
    s: S,
    p: &[f32; 3],
    x: [S::F; 3],
    w: [S::F; 3],
    best: S::F,
) -> (S::F, S::F, S::M) {
    let (p0, p1, p2) = (s.splat(p[0]), s.splat(p[1]), s.splat(p[2]));
    let sqx = s.add(s.add(s.mul(x[0], p0), s.mul(x[1], p1)), s.mul(x[2], p2));
    let sq2 = s.add(
        s.add(s.mul(s.mul(w[0], p0), p0), s.mul(s.mul(w[1], p1), p1)),
        s.mul(s.mul(w[2], p2), p2),
    );
    let m = s.and(
        s.gt(sq2, s.splat(0.0)),
        s.gt(s.mul(sqx, sqx), s.mul(best, sq2)),
    );
    (sqx, sq2, m)
}

/// ggml's `block_iq1_s`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq1S {
    /// Super-block scale (f16 bits).
    pub d: u16,
    /// Grid indices, low 8 bits.
    pub qs: [u8; 32],
    /// High index bits, block scale and shift sign.
    pub qh: [u16; 8],
}
const _: () = assert!(std::mem::size_of::<BlockIq1S>() == 50);

impl BlockIq1S {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // ggml's loops, index for index
    fn quantize(xbl: &[f32], qwbl: &[f32]) -> Self {
        const BS: usize = 32;
        let lat = lattice(Book::Iq1);
        let mut y = Self::ZERO;
        let mut scales = [0f32; 8];
        let mut shifts = [0i8; 8];
        let mut weight = [0f32; BS];
        let mut sumx = [0f32; BS + 1];
        let mut sumw = [0f32; BS + 1];
        let mut l = [0i8; BS];
        let mut index = [0usize; 4];
        let mut max_scale = 0f32;
        let mut sumx2 = 0f32;
        for &v in xbl {
            sumx2 += v * v;
        }
        let sigma2 = 2.0 * sumx2 / QK_K as f32;
        for ib in 0..QK_K / BS {
            let xb = &xbl[BS * ib..BS * ib + BS];
            let qw = &qwbl[BS * ib..BS * ib + BS];
            for i in 0..BS {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
            let mut max = xb[0].abs();
            for &v in &xb[1..] {
                max = c_max(max, v.abs());
            }
            if max < GROUP_MAX_EPS_IQ1_S {
                scales[ib] = 0.0;
                shifts[ib] = 1;
                continue;
            }
            let idx = sorted_order::<BS>(xb);
            sumx[0] = 0.0;
            sumw[0] = 0.0;
            for j in 0..BS {
                let i = idx[j];
                sumx[j + 1] = sumx[j] + weight[i] * xb[i];
                sumw[j + 1] = sumw[j] + weight[i];
            }
            let (found, besti1, besti2, best_shift) = split_search(&sumx, &sumw);
            let mut best_shift = best_shift;
            let mut scale = if best_shift == 0 { max } else { found };
            if besti1 < 0 || besti2 < 0 || best_shift == 0 {
                scales[ib] = 0.0;
                shifts[ib] = 1;
                continue;
            }
            let (b1, b2) = (besti1 as usize, besti2 as usize);
            for (j, &i) in idx.iter().enumerate() {
                l[i] = if j < b1 {
                    0
                } else if j < b2 {
                    1
                } else {
                    2
                };
            }
            if scale < 0.0 {
                for v in &mut l {
                    *v = 2 - *v;
                }
                scale = -scale;
                best_shift = -best_shift;
            }
            let xx = if best_shift == 1 { &X_P } else { &X_M };
            let mut all_on_grid = true;
            for k in 0..BS / 8 {
                let g = 8 * k..8 * k + 8;
                let u = index2(&l[g.clone()]);
                index[k] = if lat.map[u] < 0 {
                    all_on_grid = false;
                    iq1_find_best_neighbour2(
                        lat,
                        u,
                        &xb[g.clone()],
                        &weight[g.clone()],
                        scale,
                        xx,
                        &mut l[g],
                    )
                } else {
                    lat.map[u] as usize
                };
            }
            if !all_on_grid {
                let mut sumqx = 0f32;
                let mut sumq2 = 0f32;
                for k in 0..BS / 8 {
                    let pg = lat.point(index[k]);
                    for j in 0..8 {
                        let w = weight[8 * k + j];
                        let q = xx[((pg[j] - 1) / 2) as usize];
                        sumqx += w * q * xb[8 * k + j];
                        sumq2 += w * q * q;
                    }
                }
                if sumqx > 0.0 && sumq2 > 0.0 {
                    scale = sumqx / sumq2;
                }
            }
            let mut h = 0u16;
            for k in 0..BS / 8 {
                y.qs[(BS / 8) * ib + k] = (index[k] & 255) as u8;
                h |= ((index[k] >> 8) << (3 * k)) as u16;
            }
            y.qh[ib] = h;
            scales[ib] = scale;
            shifts[ib] = best_shift;
            max_scale = c_max(max_scale, scale);
        }
        if max_scale == 0.0 {
            return y;
        }
        let d = max_scale / 15.0;
        y.d = fp32_to_fp16(d * 1.125f32);
        let id = 1.0 / d;
        for ib in 0..QK_K / BS {
            let li = nearest_int(0.5f32 * (id * scales[ib] - 1.0));
            let mut li = c_max(0, c_min(7, li));
            if shifts[ib] == -1 {
                li |= 8;
            }
            y.qh[ib] |= (li << 12) as u16;
        }
        y
    }
}

impl BlockIq1S {
    /// The blocks of a row (all-ones weights without `qw`). The closure is
    /// `inline(always)` so that it is compiled into the AVX2 build of `quantize_row_into`
    /// (a plain closure or fn item stays an out-of-line baseline function).
    #[inline(always)]
    #[allow(clippy::redundant_closure)]
    fn quantize_blocks(x: &[f32], qw: Option<&[f32]>, y: &mut [Self]) {
        by_blocks(
            x,
            qw,
            y,
            #[inline(always)]
            |xb, qb| Self::quantize(xb, qb.unwrap_or(&[1.0; QK_K])),
        );
    }
}

impl GgmlBlock for BlockIq1S {
    const TYPE: GgmlType = GgmlType::IQ1_S;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 50;
    const ZERO: Self = BlockIq1S {
        d: 0,
        qs: [0; 32],
        qh: [0; 8],
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.qs.copy_from_slice(&b[2..34]);
        for (q, c) in blk.qh.iter_mut().zip(b[34..50].chunks_exact(2)) {
            *q = u16::from_le_bytes([c[0], c[1]]);
        }
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..34].copy_from_slice(&self.qs);
        for (q, c) in self.qh.iter().zip(out[34..50].chunks_exact_mut(2)) {
            c.copy_from_slice(&q.to_le_bytes());
        }
    }

    #[inline(always)]
    /// Not reached through [`crate::block::quantize`], which requires an importance
    /// matrix for this type (as ggml does); all-ones weights here.
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        Self::quantize_blocks(x, None, y);
    }

    #[inline(always)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        Self::quantize_blocks(x, Some(qw), y);
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        let grid = dequant_table(Book::Iq1);
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(yb.d);
            for ib in 0..8 {
                let qh = yb.qh[ib];
                let dl = d * (2 * ((qh >> 12) & 7) as i32 + 1) as f32;
                let delta = if qh & 0x8000 != 0 {
                    -IQ1S_DELTA
                } else {
                    IQ1S_DELTA
                };
                for l in 0..4 {
                    let gi = yb.qs[4 * ib + l] as usize | ((((qh >> (3 * l)) & 7) as usize) << 8);
                    let g = grid[gi].to_le_bytes();
                    let at = 32 * ib + 8 * l;
                    for j in 0..8 {
                        o[at + j] = dl * (g[j] as i8 as f32 + delta);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stable insertion sort (the NaN path) as the oracle of the rank count.
    fn insertion<const N: usize>(xb: &[f32]) -> [usize; N] {
        let mut idx: [usize; N] = std::array::from_fn(|i| i);
        for i in 1..N {
            let cur = idx[i];
            let mut j = i;
            while j > 0 && xb[idx[j - 1]] > xb[cur] {
                idx[j] = idx[j - 1];
                j -= 1;
            }
            idx[j] = cur;
        }
        idx
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_best_neighbour_equals_the_lanes_scan() {
        let Some(t) = Avx2::get() else { return };
        let lat = lattice(Book::Iq1);
        let mut s = 3u64;
        let mut r = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let mut tried = 0;
        while tried < 20000 {
            let levels: [i8; 8] = std::array::from_fn(|_| (r() % 3) as i8);
            let u = index2(&levels);
            if lat.map[u] >= 0 {
                continue;
            }
            tried += 1;
            // Coarse values make ties between neighbours common.
            let x: [f32; 8] = std::array::from_fn(|_| (r() % 9) as f32 * 0.25 - 1.0);
            let w: [f32; 8] = std::array::from_fn(|_| match r() % 4 {
                0 => 0.0,
                1 => 1.0,
                _ => (r() % 1000) as f32 / 100.0,
            });
            let scale = [1.0f32, 0.5, 0.37, 1e-20][tried % 4];
            for xg0 in [X_P[0], X_M[0]] {
                // SAFETY: the token says the CPU has AVX2.
                let got = unsafe { best_neighbour_avx2(t, lat, u, &x, &w, scale, xg0) };
                let want = lat.best_neighbour::<8>(u, &x, &w, scale, Some(xg0));
                assert_eq!(got, want, "u={u} x={x:?} w={w:?} scale={scale}");
            }
        }
    }

    #[test]
    fn ranks_give_the_stable_order() {
        let mut s = 9u64;
        let mut r = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let pool = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            0.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-40,
        ];
        for _ in 0..3000 {
            let x: Vec<f32> = (0..32)
                .map(|_| match r() % 3 {
                    0 => pool[(r() % 8) as usize],
                    _ => (r() % 2000) as f32 / 1000.0 - 1.0,
                })
                .collect();
            assert_eq!(sorted_order::<32>(&x), insertion::<32>(&x));
            assert_eq!(sorted_order::<16>(&x[..16]), insertion::<16>(&x[..16]));
        }
    }
}
