//! IQ4_NL: blocks of 32 values, `x ≈ d·K[q]` with ggml's non-linear 16-entry table
//! `K = kvalues_iq4nl` (−127 … 113), `q ∈ [0, 15]`.
//!
//! Layout (ggml `block_iq4_nl`, 18 bytes): `d: f16`, `qs[16]` (value `j` in the low
//! nibble of byte `j`, value `j + 16` in the high nibble).
//!
//! Quantizer: ggml's `quantize_iq4_nl` (what `ggml_quantize_chunk` and llama-quantize
//! run; **not** `quantize_row_iq4_nl_ref`, which searches fewer scales): weights `x²`, or
//! `qw·√(σ² + x²)` with `σ² = 2Σx²/32` under an importance matrix; the first scale
//! `d = −max/K[0]` (the value of largest magnitude), codes by nearest table entry
//! (`best_index_int8`), the least-squares scale, then 15 more candidate scales
//! `(t + K[0])/max`, `t ∈ [−7, 7]`, keeping the best `Σwqx²/Σwq²`; finally the codes are
//! recomputed against the chosen `d` (`quantize_row_iq4_nl_impl`, shared with IQ4_XS).

use crate::types::c_math::{c_max, c_min, fp16_to_fp32, fp32_to_fp16, nearest_int, GROUP_MAX_EPS};
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::lanes::{self, Lanes, Portable};
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `kvalues_iq4nl`.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// ggml's `best_index_int8`: the index of the table entry nearest to `x` (binary
/// search; the upper entry wins ties).
#[inline(always)]
pub fn best_index_int8(val: &[i8; 16], x: f32) -> u8 {
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// What `quantize_row_iq4_nl_impl` produces for one super-block.
pub(crate) struct Iq4Out {
    /// `d` (f16 bits).
    pub d: u16,
    /// Packed codes (`sbs/2` bytes used).
    pub q4: [u8; 128],
    /// IQ4_XS high scale bits.
    pub scales_h: u16,
    /// IQ4_XS low scale nibbles.
    pub scales_l: [u8; 4],
}

/// ggml's `quantize_row_iq4_nl_impl` for a super-block `x` of 32 (IQ4_NL) or 256
/// (IQ4_XS) values in blocks of 32, with `ntry = 7` (the chunk quantizer's value).
#[inline(always)]
pub(crate) fn quantize_iq4_impl(x: &[f32], quant_weights: Option<&[f32]>) -> Iq4Out {
    const BLOCK: usize = 32;
    let sbs = x.len();
    let nblocks = sbs / BLOCK;
    let mut sigma2 = 0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 *= 2.0 / sbs as f32;
    let mut out = Iq4Out {
        d: fp32_to_fp16(0.0),
        q4: [0; 128],
        scales_h: 0,
        scales_l: [0; 4],
    };
    let mut l = [0u8; 256];
    let mut scales = [0f32; 8];
    let mut weight = [0f32; BLOCK];
    let mut max_scale = 0f32;
    let mut amax_scale = 0f32;
    for ib in 0..nblocks {
        let xb = &x[ib * BLOCK..ib * BLOCK + BLOCK];
        match quant_weights {
            Some(qw) => {
                let qw = &qw[ib * BLOCK..ib * BLOCK + BLOCK];
                for ((w, &v), &q) in weight.iter_mut().zip(xb).zip(qw) {
                    *w = q * (sigma2 + v * v).sqrt();
                }
            }
            None => {
                for (w, &v) in weight.iter_mut().zip(xb) {
                    *w = v * v;
                }
            }
        }
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        let Ok(xa) = <&[f32; BLOCK]>::try_from(xb) else {
            continue;
        };
        let d = search_lanes(xa, &weight, max);
        scales[ib] = d;
        let abs_d = d.abs();
        if abs_d > amax_scale {
            amax_scale = abs_d;
            max_scale = d;
        }
    }
    if nblocks > 1 {
        let d = -max_scale / 32.0;
        out.d = fp32_to_fp16(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nblocks {
            let mut li = nearest_int(id * scales[ib]);
            li = c_max(-32, c_min(31, li));
            let dl = d * li as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            best_indices(
                &x[ib * BLOCK..ib * BLOCK + BLOCK],
                idl,
                &mut l[ib * BLOCK..ib * BLOCK + BLOCK],
            );
            li += 32;
            let l_l = (li & 0xf) as u8;
            let l_h = (li >> 4) as u16;
            if ib % 2 == 0 {
                out.scales_l[ib / 2] = l_l;
            } else {
                out.scales_l[ib / 2] |= l_l << 4;
            }
            out.scales_h |= l_h << (2 * (ib % 8));
        }
    } else {
        out.d = fp32_to_fp16(scales[0]);
        let id = if scales[0] != 0.0 {
            1.0 / scales[0]
        } else {
            0.0
        };
        best_indices(x, id, &mut l[..sbs]);
    }
    for i in 0..sbs / 32 {
        for j in 0..16 {
            out.q4[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
    out
}

/// ggml's `best_index_int8` over [`KVALUES_IQ4NL`] per lane, with the value found: the
/// binary search ends at `mu`, the first entry above `x` (15 when none is, NaN included),
/// then `x - val[mu-1] < val[mu] - x` picks `mu - 1`. The early returns of the C code
/// (`x <= val[0]`: 0, `x >= val[15]`: 15) are cases of the same rule.
#[inline(always)]
fn best_index_lanes<S: Lanes>(s: S, x: S::F) -> (S::I, S::F) {
    let v = KVALUES_IQ4NL;
    let mut mu = s.splat_i(15);
    let mut lo = s.splat(v[14] as f32);
    let mut hi = s.splat(v[15] as f32);
    for j in (1..15).rev() {
        let above = s.gt(s.splat(v[j] as f32), x);
        mu = s.select_i(above, s.splat_i(j as i32), mu);
        lo = s.select(above, s.splat(v[j - 1] as f32), lo);
        hi = s.select(above, s.splat(v[j] as f32), hi);
    }
    let take_lo = s.gt(s.sub(hi, x), s.sub(x, lo));
    let idx = s.select_i(take_lo, s.sub_i(mu, s.splat_i(1)), mu);
    (idx, s.select(take_lo, lo, hi))
}

/// `l[j] = best_index_int8(values, id * x[j])`.
#[inline(always)]
fn best_indices(x: &[f32], id: f32, l: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = Avx2::get() {
        // SAFETY: the token exists only on CPUs with AVX2.
        return unsafe { best_indices_avx2(t, x, id, l) };
    }
    best_indices_lanes(Portable, x, id, l)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn best_indices_avx2(t: Avx2, x: &[f32], id: f32, l: &mut [u8]) {
    best_indices_lanes(t, x, id, l)
}

#[inline(always)]
fn best_indices_lanes<S: Lanes>(s: S, x: &[f32], id: f32, l: &mut [u8]) {
    let idv = s.splat(id);
    for (xc, lc) in x.chunks_exact(lanes::N).zip(l.chunks_exact_mut(lanes::N)) {
        let mut a = [0f32; lanes::N];
        a.copy_from_slice(xc);
        let (idx, _) = best_index_lanes(s, s.mul(idv, s.load(&a)));
        for (lj, i) in lc.iter_mut().zip(s.store_i(idx)) {
            *lj = i as u8;
        }
    }
}

/// The scale search of `quantize_row_iq4_nl_impl` for one block of 32 (`max`: its value
/// of largest magnitude, not ~0): the first scale `1/(−max/val[0])` and the 15 candidates
/// `(itry + val[0])/max` are 16 independent sums, computed as the lanes of two vectors,
/// then compared in ggml's order. Returns the block scale.
#[inline(always)]
fn search_lanes(x: &[f32; 32], w: &[f32; 32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = Avx2::get() {
        // SAFETY: the token exists only on CPUs with AVX2.
        return unsafe { search_avx2(t, x, w, max) };
    }
    search(Portable, x, w, max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn search_avx2(t: Avx2, x: &[f32; 32], w: &[f32; 32], max: f32) -> f32 {
    search(t, x, w, max)
}

#[inline(always)]
fn search<S: Lanes>(s: S, x: &[f32; 32], w: &[f32; 32], max: f32) -> f32 {
    const NTRY: i32 = 7;
    let v0 = KVALUES_IQ4NL[0] as f32;
    let d0 = -max / v0;
    let mut ids = [0f32; 16];
    ids[0] = 1.0 / d0;
    for (k, itry) in (-NTRY..=NTRY).enumerate() {
        ids[k + 1] = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
    }
    let mut idv = [s.splat(0.0); 2];
    for (iv, c) in idv.iter_mut().zip(ids.chunks_exact(lanes::N)) {
        let mut a = [0f32; lanes::N];
        a.copy_from_slice(c);
        *iv = s.load(&a);
    }
    let mut sqx = [s.splat(0.0); 2];
    let mut sq2 = [s.splat(0.0); 2];
    for (&xi, &wi) in x.iter().zip(w) {
        let (xv, wv) = (s.splat(xi), s.splat(wi));
        for v in 0..2 {
            let (_, q) = best_index_lanes(s, s.mul(idv[v], xv));
            let wq = s.mul(wv, q);
            sqx[v] = s.add(sqx[v], s.mul(wq, xv));
            sq2[v] = s.add(sq2[v], s.mul(wq, q));
        }
    }
    let mut sumqx = [0f32; 16];
    let mut sumq2 = [0f32; 16];
    for v in 0..2 {
        sumqx[lanes::N * v..lanes::N * (v + 1)].copy_from_slice(&s.store(sqx[v]));
        sumq2[lanes::N * v..lanes::N * (v + 1)].copy_from_slice(&s.store(sq2[v]));
    }
    let mut d = if sumq2[0] > 0.0 {
        sumqx[0] / sumq2[0]
    } else {
        0.0
    };
    let mut best = d * sumqx[0];
    for k in 1..16 {
        if sumq2[k] > 0.0 && sumqx[k] * sumqx[k] > best * sumq2[k] {
            d = sumqx[k] / sumq2[k];
            best = d * sumqx[k];
        }
    }
    d
}

/// ggml's `block_iq4_nl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Nl {
    /// Scale (f16 bits).
    pub d: u16,
    /// Table indices, two per byte.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockIq4Nl>() == 18);

impl GgmlBlock for BlockIq4Nl {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 18;
    const ZERO: Self = BlockIq4Nl { d: 0, qs: [0; 16] };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.qs.copy_from_slice(&b[2..18]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..18].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        for (xb, yb) in x.chunks_exact(32).zip(y) {
            let o = quantize_iq4_impl(xb, None);
            yb.d = o.d;
            yb.qs.copy_from_slice(&o.q4[..16]);
        }
    }

    #[inline(always)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        for ((xb, qb), yb) in x.chunks_exact(32).zip(qw.chunks_exact(32)).zip(y) {
            let o = quantize_iq4_impl(xb, Some(qb));
            yb.d = o.d;
            yb.qs.copy_from_slice(&o.q4[..16]);
        }
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(32)) {
            let d = fp16_to_fp32(yb.d);
            for j in 0..16 {
                o[j] = d * KVALUES_IQ4NL[(yb.qs[j] & 0xf) as usize] as f32;
                o[j + 16] = d * KVALUES_IQ4NL[(yb.qs[j] >> 4) as usize] as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_index_lanes_equal_the_binary_search() {
        let mut xs: Vec<f32> = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
        for w in KVALUES_IQ4NL.windows(2) {
            let (a, b) = (w[0] as f32, w[1] as f32);
            // Table entries, exact midpoints and their neighbours.
            let mid = (a + b) / 2.0;
            let (up, down) = (
                f32::from_bits(mid.to_bits() + 1),
                f32::from_bits(mid.to_bits() - 1),
            );
            xs.extend([a, b, mid, up, down, a - 0.5, b + 0.25]);
        }
        xs.extend((-3000..3000).map(|i| i as f32 * 0.0517));
        while xs.len() % lanes::N != 0 {
            xs.push(1.0);
        }
        for simd in [true, false] {
            let _simd = quant_core::simd::force_simd(simd);
            let mut l = vec![0u8; xs.len()];
            best_indices(&xs, 1.0, &mut l);
            for (&x, &got) in xs.iter().zip(&l) {
                assert_eq!(got, best_index_int8(&KVALUES_IQ4NL, x), "x={x} simd={simd}");
            }
        }
    }
}
