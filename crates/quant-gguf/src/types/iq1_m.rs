//! IQ1_M: super-blocks of 256 values in 16 blocks of 16, each block 2 groups of 8 ternary
//! values from the IQ1_S codebook, each group with its own ±1/8 shift (1.75 bits per
//! weight).
//!
//! Layout (ggml `block_iq1_m`, 56 bytes): `qs[32]` (low 8 bits of the grid indices),
//! `qh[16]` (per block: bits 0..2 / 4..6 the high index bits of groups 0 / 1, bits 3 / 7
//! their shift signs), `scales[8]` read as four `u16`: 3-bit block scales `s` (bits
//! `3j..3j+2` of `sc[ib/4]`), the f16 super-block scale in the top nibbles. Value =
//! `d·(2s + 1)·(grid[j] + δ)`.
//!
//! Quantizer: ggml d99724f2's `quantize_row_iq1_m_impl`: weights `x²` or `qw·√(σ² + x²)`;
//! every split of the sorted block into three runs tried with the 4 shift combinations,
//! the sums accumulated value by value for each split (llama.cpp b11312 uses prefix
//! sums, which round differently); groups off the codebook moved to their best
//! neighbour; 3-bit block scales against `d = max_scale/15`, then `d` refitted over the
//! whole super-block and stored as `d·1.1125`.

use crate::types::c_math::{c_max, c_min, fp16_to_fp32, fp32_to_fp16, nearest_int, QK_K};
#[cfg(target_arch = "x86_64")]
use crate::types::iq1_m_lanes::{sorted_order16, split_search16};
use crate::types::iq1_s::{iq1_find_best_neighbour2, sorted_order, X_M, X_P};
use crate::types::iq2_xxs::index2;
use crate::types::iq_grid::{dequant_table, lattice, Book};
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::lanes::{Lanes, Portable};
use crate::types::{by_blocks, GgmlBlock, GgmlType};

/// ggml's `GROUP_MAX_EPS_IQ1_M`.
const GROUP_MAX_EPS_IQ1_M: f32 = 1e-7;

/// ggml's `block_iq1_m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq1M {
    /// Grid indices, low 8 bits.
    pub qs: [u8; 32],
    /// High index bits and shift signs.
    pub qh: [u8; 16],
    /// Block scales and the super-block scale.
    pub scales: [u8; 8],
}
const _: () = assert!(std::mem::size_of::<BlockIq1M>() == 56);

/// The levels of group `k` (0 or 1) for shift combination `best_k`.
#[inline(always)]
fn levels(k: usize, best_k: i8) -> &'static [f32; 3] {
    let plus = if k == 0 { best_k < 2 } else { best_k % 2 == 0 };
    if plus {
        &X_P
    } else {
        &X_M
    }
}

/// The weights of a block of 16.
#[inline(always)]
fn weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, weight: &mut [f32; 16]) {
    match qw {
        Some(qw) => {
            for i in 0..16 {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
        }
        None => {
            for i in 0..16 {
                weight[i] = xb[i] * xb[i];
            }
        }
    }
}

/// `sorted_order` of a block of 16, on AVX2 with vector comparisons.
#[inline(always)]
fn sorted16(xb: &[f32]) -> [usize; 16] {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = Avx2::get() {
        // SAFETY: the token exists only on CPUs with AVX2.
        if let Some(idx) = unsafe { sorted_order16(t, xb) } {
            return idx;
        }
    }
    sorted_order::<16>(xb)
}

/// [`split_search`] for the 16 blocks of a super-block (blocks whose largest magnitude is
/// under `GROUP_MAX_EPS_IQ1_M` are skipped by the caller; their results are unused). On
/// AVX2 the blocks run side by side, one per lane ([`split_search16`]).
#[inline(always)]
fn split_search_all(
    xbl: &[f32],
    weights: &[[f32; 16]; 16],
    idx: &[[usize; 16]; 16],
    maxes: &[f32; 16],
) -> [(f32, usize, usize, i8); 16] {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = Avx2::get() {
        // SAFETY: the token exists only on CPUs with AVX2.
        return unsafe { split_search16(t, xbl, weights, idx) };
    }
    let mut out = [(0f32, 0usize, 0usize, -1i8); 16];
    for ib in 0..16 {
        if maxes[ib] >= GROUP_MAX_EPS_IQ1_M {
            out[ib] = split_search(&xbl[16 * ib..16 * ib + 16], &weights[ib], &idx[ib]);
        }
    }
    out
}

/// The split search of `quantize_row_iq1_m_impl` for one block of 16 (`idx`: the values
/// in ascending order): every split `i1 ≤ i2` of the sorted values into levels 0/1/2 with
/// the 4 shift combinations, keeping the best `Σwxq²/Σwq²` (in ggml's order of splits and
/// combinations). Each split's sums are accumulated value by value in sorted order, as in
/// ggml; the products `w·q·x`, `w·q·q` of a value at a level are the same floats for every
/// split, so they are computed once, and 8 splits run side by side. Returns (scale, i1,
/// i2, combination), the combination −1 when none qualified.
#[inline(always)]
fn split_search(xb: &[f32], weight: &[f32; 16], idx: &[usize; 16]) -> (f32, usize, usize, i8) {
    split_search_portable(xb, weight, idx)
}

/// [`split_search`], 8 splits side by side in [`Portable`] lanes.
#[inline(always)]
pub(crate) fn split_search_portable(
    xb: &[f32],
    weight: &[f32; 16],
    idx: &[usize; 16],
) -> (f32, usize, usize, i8) {
    const BS: usize = 16;
    // terms[j][lv] = (w·p·x, w·m·x, w·p·p, w·m·m) of the j-th smallest value at level lv.
    let mut tqx_p = [[0f32; 3]; BS];
    let mut tqx_m = [[0f32; 3]; BS];
    let mut tq2_p = [[0f32; 3]; BS];
    let mut tq2_m = [[0f32; 3]; BS];
    for j in 0..BS {
        let i = idx[j];
        let (w, x) = (weight[i], xb[i]);
        for lv in 0..3 {
            tqx_p[j][lv] = w * X_P[lv] * x;
            tqx_m[j][lv] = w * X_M[lv] * x;
            tq2_p[j][lv] = w * X_P[lv] * X_P[lv];
            tq2_m[j][lv] = w * X_M[lv] * X_M[lv];
        }
    }
    let mut pairs = [(0usize, 0usize); 160];
    let mut np = 0;
    for i1 in 0..=BS {
        for i2 in i1..=BS {
            pairs[np] = (i1, i2);
            np += 1;
        }
    }
    let mut best_score = -f32::MAX;
    let mut result = (0f32, 0usize, 0usize, -1i8);
    for chunk in pairs[..np].chunks(8) {
        let mut i1v = [BS as f32; 8];
        let mut i2v = [BS as f32; 8];
        for (l, &(a, b)) in chunk.iter().enumerate() {
            i1v[l] = a as f32;
            i2v[l] = b as f32;
        }
        let t = Terms {
            qx_p: &tqx_p,
            qx_m: &tqx_m,
            q2_p: &tq2_p,
            q2_m: &tq2_m,
        };
        let (sqx, sq2) = split_sums(&t, idx, &i1v, &i2v);
        for (l, &(i1, i2)) in chunk.iter().enumerate() {
            for k in 0..4 {
                if sq2[k][l] > 0.0 && sqx[k][l] * sqx[k][l] > best_score * sq2[k][l] {
                    let scale = sqx[k][l] / sq2[k][l];
                    best_score = scale * sqx[k][l];
                    result = (scale, i1, i2, k as i8);
                }
            }
        }
    }
    result
}

/// The per-value, per-level products of [`split_search`].
struct Terms<'a> {
    qx_p: &'a [[f32; 3]; 16],
    qx_m: &'a [[f32; 3]; 16],
    q2_p: &'a [[f32; 3]; 16],
    q2_m: &'a [[f32; 3]; 16],
}

/// The 4 `Σwqx` and 4 `Σwq²` of 8 splits (`i1`, `i2` as floats), value by value.
#[inline(always)]
fn split_sums(
    t: &Terms,
    idx: &[usize; 16],
    i1: &[f32; 8],
    i2: &[f32; 8],
) -> ([[f32; 8]; 4], [[f32; 8]; 4]) {
    split_sums_lanes(Portable, t, idx, i1, i2)
}

#[allow(clippy::needless_range_loop)] // ggml's loops, index for index
#[inline(always)]
fn split_sums_lanes<S: Lanes>(
    s: S,
    t: &Terms,
    idx: &[usize; 16],
    i1: &[f32; 8],
    i2: &[f32; 8],
) -> ([[f32; 8]; 4], [[f32; 8]; 4]) {
    let (i1, i2) = (s.load(i1), s.load(i2));
    let z = s.splat(0.0);
    let mut sqx = [z; 4];
    let mut sq2 = [z; 4];
    for j in 0..16 {
        let jv = s.splat(j as f32);
        let (m0, m1) = (s.gt(i1, jv), s.gt(i2, jv));
        let pick = |v: &[f32; 3]| {
            s.select(
                m0,
                s.splat(v[0]),
                s.select(m1, s.splat(v[1]), s.splat(v[2])),
            )
        };
        let a = pick(&t.qx_p[j]);
        let b = pick(&t.qx_m[j]);
        let c = pick(&t.q2_p[j]);
        let d = pick(&t.q2_m[j]);
        // Combination 0: +,+; 1: +,−; 2: −,+; 3: −,− (first half, second half).
        let (a1, b1, c1, d1) = if idx[j] < 8 {
            (a, b, c, d)
        } else {
            (b, a, d, c)
        };
        sqx[0] = s.add(sqx[0], a);
        sqx[1] = s.add(sqx[1], a1);
        sqx[2] = s.add(sqx[2], b1);
        sqx[3] = s.add(sqx[3], b);
        sq2[0] = s.add(sq2[0], c);
        sq2[1] = s.add(sq2[1], c1);
        sq2[2] = s.add(sq2[2], d1);
        sq2[3] = s.add(sq2[3], d);
    }
    (sqx.map(|v| s.store(v)), sq2.map(|v| s.store(v)))
}

impl BlockIq1M {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // ggml's loops, index for index
    fn quantize(xbl: &[f32], qwbl: Option<&[f32]>) -> Self {
        const BS: usize = 16;
        const MASKS: [u8; 4] = [0x00, 0x80, 0x08, 0x88];
        let lat = lattice(Book::Iq1);
        let mut y = Self::ZERO;
        let mut scales = [0f32; 16];
        let mut shifts = [0i8; 16];
        let mut weight = [0f32; BS];
        let mut l = [0i8; BS];
        let mut index = [0usize; 2];
        let mut max_scale = 0f32;
        let mut sumx2 = 0f32;
        for &v in xbl {
            sumx2 += v * v;
        }
        let sigma2 = 2.0 * sumx2 / QK_K as f32;
        let mut weights_all = [[0f32; BS]; QK_K / BS];
        let mut idx_all = [[0usize; BS]; QK_K / BS];
        let mut maxes = [0f32; QK_K / BS];
        for ib in 0..QK_K / BS {
            let xb = &xbl[BS * ib..BS * ib + BS];
            weights(
                xb,
                qwbl.map(|q| &q[BS * ib..BS * ib + BS]),
                sigma2,
                &mut weights_all[ib],
            );
            let mut max = xb[0].abs();
            for &v in &xb[1..] {
                max = c_max(max, v.abs());
            }
            maxes[ib] = max;
            idx_all[ib] = sorted16(xb);
        }
        let found = split_search_all(xbl, &weights_all, &idx_all, &maxes);
        for ib in 0..QK_K / BS {
            let xb = &xbl[BS * ib..BS * ib + BS];
            let weight = weights_all[ib];
            let max = maxes[ib];
            if max < GROUP_MAX_EPS_IQ1_M {
                scales[ib] = 0.0;
                shifts[ib] = 0;
                continue;
            }
            let idx = idx_all[ib];
            let (scale_found, besti1, besti2, best_k) = found[ib];
            let mut scale = if best_k < 0 { max } else { scale_found };
            let mut best_k = best_k;
            if best_k < 0 {
                scales[ib] = 0.0;
                shifts[ib] = 0;
                continue;
            }
            let (b1, b2) = (besti1, besti2);
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
                best_k = 3 - best_k;
            }
            let mut all_on_grid = true;
            for k in 0..BS / 8 {
                let xx = levels(k, best_k);
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
                let mut sumqx_f = 0f32;
                let mut sumq2_f = 0f32;
                for k in 0..BS / 8 {
                    let xx = levels(k, best_k);
                    let pg = lat.point(index[k]);
                    for j in 0..8 {
                        let w = weight[8 * k + j];
                        let q = xx[((pg[j] - 1) / 2) as usize];
                        sumqx_f += w * q * xb[8 * k + j];
                        sumq2_f += w * q * q;
                    }
                }
                if sumqx_f > 0.0 && sumq2_f > 0.0 {
                    scale = sumqx_f / sumq2_f;
                }
            }
            y.qs[2 * ib] = (index[0] & 255) as u8;
            y.qs[2 * ib + 1] = (index[1] & 255) as u8;
            y.qh[ib] = ((index[0] >> 8) | ((index[1] >> 8) << 4)) as u8;
            scales[ib] = scale;
            shifts[ib] = best_k;
            max_scale = c_max(max_scale, scale);
        }
        if max_scale == 0.0 {
            return y;
        }
        let mut sc = [0u16; 4];
        let mut d = max_scale / 15.0;
        let id = 1.0 / d;
        let mut sumqx_f = 0f32;
        let mut sumq2_f = 0f32;
        for ib in 0..QK_K / BS {
            let li = nearest_int(0.5f32 * (id * scales[ib] - 1.0));
            let li = c_max(0, c_min(7, li));
            sc[ib / 4] |= (li << (3 * (ib % 4))) as u16;
            y.qh[ib] |= MASKS[shifts[ib] as usize];
            let xb = &xbl[BS * ib..BS * ib + BS];
            weights(
                xb,
                qwbl.map(|q| &q[BS * ib..BS * ib + BS]),
                sigma2,
                &mut weight,
            );
            for k in 0..BS / 8 {
                let xx = levels(k, shifts[ib]);
                let gi = y.qs[2 * ib + k] as usize + (((y.qh[ib] as usize) << (8 - 4 * k)) & 0x700);
                let pg = lat.point(gi);
                for j in 0..8 {
                    let w = weight[8 * k + j];
                    let q = xx[((pg[j] - 1) / 2) as usize] * (2 * li + 1) as f32;
                    sumqx_f += w * q * xb[8 * k + j];
                    sumq2_f += w * q * q;
                }
            }
        }
        if sumq2_f > 0.0 {
            d = sumqx_f / sumq2_f;
        }
        let s = fp32_to_fp16(d * 1.1125f32);
        sc[0] |= (s & 0x000f) << 12;
        sc[1] |= (s & 0x00f0) << 8;
        sc[2] |= (s & 0x0f00) << 4;
        sc[3] |= s & 0xf000;
        for (o, v) in y.scales.chunks_exact_mut(2).zip(sc) {
            o.copy_from_slice(&v.to_le_bytes());
        }
        y
    }
}

impl BlockIq1M {
    /// The blocks of a row. The closure is
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
            |xb, qb| Self::quantize(xb, qb),
        );
    }
}

impl GgmlBlock for BlockIq1M {
    const TYPE: GgmlType = GgmlType::IQ1_M;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 56;
    const ZERO: Self = BlockIq1M {
        qs: [0; 32],
        qh: [0; 16],
        scales: [0; 8],
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.qs.copy_from_slice(&b[0..32]);
        blk.qh.copy_from_slice(&b[32..48]);
        blk.scales.copy_from_slice(&b[48..56]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..32].copy_from_slice(&self.qs);
        out[32..48].copy_from_slice(&self.qh);
        out[48..56].copy_from_slice(&self.scales);
    }

    #[inline(always)]
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
            let sc: [u16; 4] = std::array::from_fn(|i| {
                u16::from_le_bytes([yb.scales[2 * i], yb.scales[2 * i + 1]])
            });
            let s = (sc[0] >> 12)
                | ((sc[1] >> 8) & 0x00f0)
                | ((sc[2] >> 4) & 0x0f00)
                | (sc[3] & 0xf000);
            let d = fp16_to_fp32(s);
            for ib in 0..8 {
                let s = sc[ib / 2];
                let dl1 = d * (2 * ((s >> (6 * (ib % 2))) & 7) as i32 + 1) as f32;
                let dl2 = d * (2 * ((s >> (6 * (ib % 2) + 3)) & 7) as i32 + 1) as f32;
                let qs = &yb.qs[4 * ib..4 * ib + 4];
                let qh = [yb.qh[2 * ib] as usize, yb.qh[2 * ib + 1] as usize];
                let idx = [
                    qs[0] as usize | ((qh[0] << 8) & 0x700),
                    qs[1] as usize | ((qh[0] << 4) & 0x700),
                    qs[2] as usize | ((qh[1] << 8) & 0x700),
                    qs[3] as usize | ((qh[1] << 4) & 0x700),
                ];
                let delta = |b: usize| {
                    if b != 0 {
                        -crate::types::iq1_s::IQ1S_DELTA
                    } else {
                        crate::types::iq1_s::IQ1S_DELTA
                    }
                };
                let deltas = [
                    delta(qh[0] & 0x08),
                    delta(qh[0] & 0x80),
                    delta(qh[1] & 0x08),
                    delta(qh[1] & 0x80),
                ];
                for l in 0..4 {
                    let dl = if l < 2 { dl1 } else { dl2 };
                    let g = grid[idx[l]].to_le_bytes();
                    let at = 32 * ib + 8 * l;
                    for j in 0..8 {
                        o[at + j] = dl * (g[j] as i8 as f32 + deltas[l]);
                    }
                }
            }
        }
    }
}
