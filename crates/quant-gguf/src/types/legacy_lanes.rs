//! The unweighted quantizers of Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 with each block of 32 as
//! four 8-lane vectors: `quantize_row_q4_0_ref`, `quantize_row_q4_1_ref`,
//! `quantize_row_q5_0_ref`, `quantize_row_q5_1_ref`, `quantize_row_q8_0_ref`. Eight
//! blocks at a time, their scales are found side by side, one block per lane (the
//! horizontal extremes of eight blocks in one transpose, one division and one f16
//! conversion for all eight); a row's last blocks (fewer than eight) go one by one.
//!
//! ggml scans a block in order (`if (v < min) min = v`, `if (amax < fabsf(v))`); the
//! lanes compute the same extremes in another order. Values that compare equal have the
//! same bits except `-0`/`+0`, so the result is the same value unless the extreme is a
//! zero, where the block is scanned again in ggml's order for the sign. NaN never
//! compares, so it is never an extreme in either order.

use crate::types::c_math::fp32_to_fp16;
use crate::types::kquant_lanes::LanesMore;
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::lanes::{Lanes, Portable, N};
use crate::types::q4_0::BlockQ4_0;
use crate::types::q4_1::BlockQ4_1;
use crate::types::q5_0::BlockQ5_0;
use crate::types::q5_1::BlockQ5_1;
use crate::types::q8_0::{q8_scale, BlockQ8_0};

// No closures in the kernels below: a closure is not always inlined into the AVX2 build,
// and an intrinsic left in one becomes an out-of-line call.

/// A block of 32 as four vectors.
#[inline(always)]
fn load4<S: Lanes>(s: S, xb: &[f32]) -> [S::F; 4] {
    let mut v = [s.splat(0.0); 4];
    for (v, c) in v.iter_mut().zip(xb.chunks_exact(N)) {
        let mut a = [0f32; N];
        a.copy_from_slice(c);
        *v = s.load(&a);
    }
    v
}

/// ggml's `min` (from `FLT_MAX`) and `max` (from `-FLT_MAX`) of a block.
#[inline(always)]
fn min_max<S: LanesMore>(s: S, v: &[S::F; 4], xb: &[f32]) -> (f32, f32) {
    let (mn, mx) = min_max_partial(s, v);
    let (min, max) = (s.hmin(mn), s.hmax(mx));
    if min == 0.0 || max == 0.0 {
        // The sign of a zero extreme: the first zero in ggml's order.
        return scan_min_max(xb);
    }
    (min, max)
}

/// Per lane, the smallest and largest of the block's values in that lane (from `FLT_MAX`
/// and `-FLT_MAX`; a NaN never compares, so it is never taken).
#[inline(always)]
fn min_max_partial<S: LanesMore>(s: S, v: &[S::F; 4]) -> (S::F, S::F) {
    let mut mn = s.splat(f32::MAX);
    let mut mx = s.splat(-f32::MAX);
    for &vk in v {
        mn = s.select(s.gt(mn, vk), vk, mn);
        mx = s.select(s.gt(vk, mx), vk, mx);
    }
    (mn, mx)
}

/// ggml's scan of a block for its extremes, in order.
fn scan_min_max(xb: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &x in xb {
        if x < min {
            min = x;
        }
        if x > max {
            max = x;
        }
    }
    (min, max)
}

/// Q4_1 and Q5_1's codes `(int)((x − min)·id + 0.5)` of one block.
#[inline(always)]
fn asym_codes<S: Lanes>(s: S, v: &[S::F; 4], min: f32, id: f32) -> [S::I; 4] {
    let (mv, idv, half) = (s.splat(min), s.splat(id), s.splat(0.5));
    let mut q = [s.splat_i(0); 4];
    for (q, &vk) in q.iter_mut().zip(v) {
        *q = s.trunc_i(s.add(s.mul(s.sub(vk, mv), idv), half));
    }
    q
}

/// The nibbles and the fifth bits of Q5_0/Q5_1 codes (`qs`, `qh`).
#[inline(always)]
fn pack5<S: LanesMore>(s: S, q: &[S::I; 4]) -> ([u8; 16], [u8; 4]) {
    let m = s.splat_i(0x0F);
    let mut lo = [m; 4];
    for (lo, &q) in lo.iter_mut().zip(q) {
        *lo = s.and_i(q, m);
    }
    let qs = s.low_bytes(s.or_shl4(lo[0], lo[2]), s.or_shl4(lo[1], lo[3]));
    let qh = s.bit4(q[0]) | (s.bit4(q[1]) << 8) | (s.bit4(q[2]) << 16) | (s.bit4(q[3]) << 24);
    (qs, qh.to_le_bytes())
}

macro_rules! dispatch {
    ($(#[$m:meta])* $name:ident, $lanes:ident, $avx2:ident, $blk:ty) => {
        $(#[$m])*
        /// With `CHECK`, `false` when the row holds a NaN or ±Inf (found in the first pass
        /// over each block; the blocks are then unspecified), else `true`.
        #[inline(always)]
        pub(crate) fn $name<const CHECK: bool>(x: &[f32], y: &mut [$blk]) -> bool {
            #[cfg(target_arch = "x86_64")]
            if let Some(t) = Avx2::get() {
                // SAFETY: the token exists only on CPUs with AVX2.
                return unsafe { $avx2::<CHECK>(t, x, y) };
            }
            $lanes::<_, CHECK>(Portable, x, y)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2<const CHECK: bool>(t: Avx2, x: &[f32], y: &mut [$blk]) -> bool {
            $lanes::<_, CHECK>(t, x, y)
        }
    };
}

/// Whether a block (as `v`) may hold a NaN or ±Inf: its lane sums are not all finite. A
/// NaN or infinite value makes its lane's sum NaN or infinite; finite values whose sum
/// overflows land here too, and the caller's exact look at the values sorts them out.
#[inline(always)]
fn sums_not_finite<S: LanesMore>(s: S, v: &[S::F; 4]) -> bool {
    let t = s.add(s.add(v[0], v[1]), s.add(v[2], v[3]));
    let z = s.sub(t, t);
    s.eq_bits(z, z) != (1 << N) - 1
}

/// With `CHECK`, whether the block `xb` (as `v`) is free of NaN and ±Inf (without, `true`):
/// the lane sums, and the values only when a sum is not finite.
#[inline(always)]
fn block_finite<S: LanesMore, const CHECK: bool>(s: S, v: &[S::F; 4], xb: &[f32]) -> bool {
    !CHECK || !sums_not_finite(s, v) || xb.iter().all(|x| x.is_finite())
}

dispatch!(
    /// `quantize_row_q4_0_ref`.
    q4_0_row, q4_0_lanes, q4_0_avx2, BlockQ4_0
);
dispatch!(
    /// `quantize_row_q4_1_ref`.
    q4_1_row, q4_1_lanes, q4_1_avx2, BlockQ4_1
);
dispatch!(
    /// `quantize_row_q5_1_ref`.
    q5_1_row, q5_1_lanes, q5_1_avx2, BlockQ5_1
);
dispatch!(
    /// `quantize_row_q5_0_ref`.
    q5_0_row, q5_0_lanes, q5_0_avx2, BlockQ5_0
);
dispatch!(
    /// `quantize_row_q8_0_ref`.
    q8_0_row, q8_0_lanes, q8_0_avx2, BlockQ8_0
);

/// ggml's `amax = MAX(amax, fabsf(v))` of a block, per lane (`None`: the block may hold
/// a NaN, which only survives in ggml's order, as the last value, or ±Inf; the caller
/// takes ggml's exact scan, which gives the same answer for any block).
#[inline(always)]
fn q8_amax_partial<S: LanesMore>(s: S, v: &[S::F; 4]) -> Option<S::F> {
    let mut am = s.splat(0.0);
    for &vk in v {
        let a = s.abs(vk);
        am = s.select(s.gt(am, a), am, a);
    }
    (!sums_not_finite(s, v)).then_some(am)
}

/// Q8_0's codes `roundf(x·id)` of one block.
#[inline(always)]
fn q8_0_codes<S: LanesMore>(s: S, v: &[S::F; 4], id: f32, qs: &mut [i8; 32]) {
    let idv = s.splat(id);
    let mut q = [s.splat_i(0); 4];
    for (q, &vk) in q.iter_mut().zip(v) {
        *q = s.round_away(s.mul(vk, idv));
    }
    // Two plain copies (a chained iterator here becomes a byte-by-byte loop).
    let (lo, hi) = qs.split_at_mut(16);
    for (o, &b) in lo.iter_mut().zip(&s.low_bytes(q[0], q[1])) {
        *o = b as i8;
    }
    for (o, &b) in hi.iter_mut().zip(&s.low_bytes(q[2], q[3])) {
        *o = b as i8;
    }
}

#[inline(always)]
fn q8_0_lanes<S: LanesMore, const CHECK: bool>(s: S, x: &[f32], y: &mut [BlockQ8_0]) -> bool {
    let mut xs = x.chunks_exact(32 * N);
    let mut ys = y.chunks_exact_mut(N);
    for (x8, y8) in (&mut xs).zip(&mut ys) {
        let mut am = [s.splat(0.0); N];
        let mut scanned = [None; N];
        for (k, xb) in x8.chunks_exact(32).enumerate() {
            match q8_amax_partial(s, &load4(s, xb)) {
                Some(a) => am[k] = a,
                None if CHECK && !xb.iter().all(|x| x.is_finite()) => return false,
                None => scanned[k] = Some(q8_scale(xb)),
            }
        }
        let d = s.div(s.hmax_each(&am), s.splat(127.0));
        let zero = s.splat(0.0);
        let (mut d, mut id) = (
            s.store(d),
            s.store(s.select(s.eq(d, zero), zero, s.div(s.splat(1.0), d))),
        );
        for ((d, id), sc) in d.iter_mut().zip(id.iter_mut()).zip(scanned) {
            if let Some(sc) = sc {
                (*d, *id) = sc;
            }
        }
        let dh = s.fp16_each(s.load(&d));
        for (k, (xb, yb)) in x8.chunks_exact(32).zip(y8.iter_mut()).enumerate() {
            yb.d = dh[k];
            q8_0_codes(s, &load4(s, xb), id[k], &mut yb.qs);
        }
    }
    for (xb, yb) in xs.remainder().chunks_exact(32).zip(ys.into_remainder()) {
        let v = load4(s, xb);
        let (d, id) = match q8_amax_partial(s, &v) {
            Some(am) => {
                let d = s.hmax(am) / 127.0;
                (d, if d != 0.0 { 1.0 / d } else { 0.0 })
            }
            None if CHECK && !xb.iter().all(|x| x.is_finite()) => return false,
            None => q8_scale(xb),
        };
        yb.d = fp32_to_fp16(d);
        q8_0_codes(s, &v, id, &mut yb.qs);
    }
    true
}

#[inline(always)]
fn q4_1_lanes<S: LanesMore, const CHECK: bool>(s: S, x: &[f32], y: &mut [BlockQ4_1]) -> bool {
    let mut xs = x.chunks_exact(32 * N);
    let mut ys = y.chunks_exact_mut(N);
    for (x8, y8) in (&mut xs).zip(&mut ys) {
        let Some(a) = asym_scales::<S, CHECK>(s, x8, 15.0) else {
            return false;
        };
        for (k, (xb, yb)) in x8.chunks_exact(32).zip(y8.iter_mut()).enumerate() {
            yb.d = a.d[k];
            yb.m = a.m[k];
            // `MIN(15, (int8_t)(... + 0.5f))`.
            yb.qs = s.nibbles_min15(&asym_codes(s, &load4(s, xb), a.min[k], a.id[k]));
        }
    }
    for (xb, yb) in xs.remainder().chunks_exact(32).zip(ys.into_remainder()) {
        let v = load4(s, xb);
        if !block_finite::<S, CHECK>(s, &v, xb) {
            return false;
        }
        let (min, max) = min_max(s, &v, xb);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = fp32_to_fp16(d);
        yb.m = fp32_to_fp16(min);
        yb.qs = s.nibbles_min15(&asym_codes(s, &v, min, id));
    }
    true
}

#[inline(always)]
fn q5_1_lanes<S: LanesMore, const CHECK: bool>(s: S, x: &[f32], y: &mut [BlockQ5_1]) -> bool {
    let mut xs = x.chunks_exact(32 * N);
    let mut ys = y.chunks_exact_mut(N);
    for (x8, y8) in (&mut xs).zip(&mut ys) {
        let Some(a) = asym_scales::<S, CHECK>(s, x8, 31.0) else {
            return false;
        };
        for (k, (xb, yb)) in x8.chunks_exact(32).zip(y8.iter_mut()).enumerate() {
            yb.d = a.d[k];
            yb.m = a.m[k];
            // `(uint8_t)(... + 0.5f)`: only the low 5 bits are stored.
            (yb.qs, yb.qh) = pack5(s, &asym_codes(s, &load4(s, xb), a.min[k], a.id[k]));
        }
    }
    for (xb, yb) in xs.remainder().chunks_exact(32).zip(ys.into_remainder()) {
        let v = load4(s, xb);
        if !block_finite::<S, CHECK>(s, &v, xb) {
            return false;
        }
        let (min, max) = min_max(s, &v, xb);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = fp32_to_fp16(d);
        yb.m = fp32_to_fp16(min);
        (yb.qs, yb.qh) = pack5(s, &asym_codes(s, &v, min, id));
    }
    true
}

/// The scales of eight Q4_1/Q5_1 blocks (`x8`: 8 × 32 values), one block per lane:
/// ggml's `min`, `id = 1/d` (0 when `d` is 0) and the f16 bits of `d = (max − min)/nmax`
/// and of `min`.
struct AsymScales {
    min: [f32; N],
    id: [f32; N],
    d: [u16; N],
    m: [u16; N],
}

/// ggml's `min` and `max` of eight blocks (`x8`: 8 × 32 values), one block per lane (from
/// `FLT_MAX` and `-FLT_MAX`; NaN never taken); with `CHECK`, `None` when a block holds a
/// NaN or ±Inf.
#[inline(always)]
fn extremes8<S: LanesMore, const CHECK: bool>(s: S, x8: &[f32]) -> Option<(S::F, S::F)> {
    let mut mn = [s.splat(0.0); N];
    let mut mx = [s.splat(0.0); N];
    for ((mn, mx), xb) in mn.iter_mut().zip(mx.iter_mut()).zip(x8.chunks_exact(32)) {
        let v = load4(s, xb);
        if !block_finite::<S, CHECK>(s, &v, xb) {
            return None;
        }
        (*mn, *mx) = min_max_partial(s, &v);
    }
    Some((s.hmin_each(&mn), s.hmax_each(&mx)))
}

/// With `CHECK`, `None` when a block holds a NaN or ±Inf.
#[inline(always)]
fn asym_scales<S: LanesMore, const CHECK: bool>(s: S, x8: &[f32], nmax: f32) -> Option<AsymScales> {
    let (mut minv, mut maxv) = extremes8::<S, CHECK>(s, x8)?;
    let zero = s.splat(0.0);
    if s.any(s.eq(minv, zero)) || s.any(s.eq(maxv, zero)) {
        // A zero extreme takes its sign from ggml's order ([`min_max`]).
        let (mut min, mut max) = (s.store(minv), s.store(maxv));
        for ((min, max), xb) in min.iter_mut().zip(max.iter_mut()).zip(x8.chunks_exact(32)) {
            if *min == 0.0 || *max == 0.0 {
                (*min, *max) = scan_min_max(xb);
            }
        }
        (minv, maxv) = (s.load(&min), s.load(&max));
    }
    let d = s.div(s.sub(maxv, minv), s.splat(nmax));
    let id = s.select(s.eq(d, zero), zero, s.div(s.splat(1.0), d));
    Some(AsymScales {
        min: s.store(minv),
        id: s.store(id),
        d: s.fp16_each(d),
        m: s.fp16_each(minv),
    })
}

/// ggml's `max` of Q4_0/Q5_0, the first value of largest magnitude, as its
/// `if (amax < fabsf(v))` scan finds it, from the block's extremes `lo` and `hi` (a NaN
/// never compares, so it is neither): the one of larger magnitude; when both have the same
/// (a tie of opposite signs, only zeros, no number at all) the first such value in ggml's
/// order ([`first_of_magnitude`]), 0 when that magnitude is 0.
#[inline(always)]
fn sym_max<S: LanesMore>(s: S, lo: f32, hi: f32, xb: &[f32]) -> f32 {
    if hi > -lo {
        hi
    } else if -lo > hi {
        lo
    } else {
        first_of_magnitude(s, &load4(s, xb), xb, hi)
    }
}

/// The first value of `xb` (as `v`) whose magnitude is `amax`; 0 unless `amax` is above 0.
#[inline(always)]
fn first_of_magnitude<S: LanesMore>(s: S, v: &[S::F; 4], xb: &[f32], amax: f32) -> f32 {
    if amax > 0.0 {
        let target = s.splat(amax);
        let mut bits = 0u32;
        for (k, &vk) in v.iter().enumerate() {
            bits |= s.eq_bits(s.abs(vk), target) << (N * k);
        }
        xb[bits.trailing_zeros() as usize % 32]
    } else {
        0.0
    }
}

/// `d = max·scale` (`max / −8`, `max / −16`: a multiplication by the exact power of two
/// rounds the same real number) and `id = 1/d` (0 when `d` is 0) of eight Q4_0/Q5_0
/// blocks, one per lane: `(id, f16 bits of d)`; with `CHECK`, `None` when a block holds a
/// NaN or ±Inf.
#[inline(always)]
fn sym_scales<S: LanesMore, const CHECK: bool>(
    s: S,
    x8: &[f32],
    scale: f32,
) -> Option<([f32; N], [u16; N])> {
    let (lo, hi) = extremes8::<S, CHECK>(s, x8)?;
    // `sym_max` on the lanes without a branch per block (which side wins is random), the
    // blocks whose extremes have equal magnitudes then one by one.
    let neg_lo = s.sub(s.splat(0.0), lo);
    let mut max = s.store(s.select(s.gt(hi, neg_lo), hi, lo));
    if s.any(s.eq(hi, neg_lo)) {
        let (lo, hi) = (s.store(lo), s.store(hi));
        for (k, (m, xb)) in max.iter_mut().zip(x8.chunks_exact(32)).enumerate() {
            if hi[k] == -lo[k] {
                *m = sym_max(s, lo[k], hi[k], xb);
            }
        }
    }
    let d = s.mul(s.load(&max), s.splat(scale));
    let zero = s.splat(0.0);
    let id = s.select(s.eq(d, zero), zero, s.div(s.splat(1.0), d));
    Some((s.store(id), s.fp16_each(d)))
}

/// The scale of one Q4_0/Q5_0 block, as [`sym_scales`]: `(d, id)`.
#[inline(always)]
fn sym_scale<S: LanesMore>(s: S, v: &[S::F; 4], xb: &[f32], scale: f32) -> (f32, f32) {
    let (mn, mx) = min_max_partial(s, v);
    let d = sym_max(s, s.hmin(mn), s.hmax(mx), xb) * scale;
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

/// Q4_0's nibbles `MIN(15, (int8_t)(x·id + 8.5f))` of one block (byte `j`: value `j` low,
/// value `j + 16` high).
#[inline(always)]
fn q4_0_codes<S: LanesMore>(s: S, v: &[S::F; 4], id: f32) -> [u8; 16] {
    let (idv, half) = (s.splat(id), s.splat(8.5));
    let mut q = [s.splat_i(0); 4];
    for (q, &vk) in q.iter_mut().zip(v) {
        *q = s.trunc_i(s.add(s.mul(vk, idv), half));
    }
    s.nibbles_min15(&q)
}

/// Q5_0's codes `MIN(31, (int8_t)(x·id + 16.5f))` of one block, packed.
#[inline(always)]
fn q5_0_codes<S: LanesMore>(s: S, v: &[S::F; 4], id: f32) -> ([u8; 16], [u8; 4]) {
    let (lo, hi) = (s.splat_i(i32::MIN), s.splat_i(31));
    let (idv, off) = (s.splat(id), s.splat(16.5));
    let mut q = [s.splat_i(0); 4];
    for (q, &vk) in q.iter_mut().zip(v) {
        *q = s.clamp_i(s.low_i8(s.trunc_i(s.add(s.mul(vk, idv), off))), lo, hi);
    }
    pack5(s, &q)
}

#[inline(always)]
fn q4_0_lanes<S: LanesMore, const CHECK: bool>(s: S, x: &[f32], y: &mut [BlockQ4_0]) -> bool {
    let mut xs = x.chunks_exact(32 * N);
    let mut ys = y.chunks_exact_mut(N);
    for (x8, y8) in (&mut xs).zip(&mut ys) {
        let Some((id, dh)) = sym_scales::<S, CHECK>(s, x8, -0.125) else {
            return false;
        };
        for (k, (xb, yb)) in x8.chunks_exact(32).zip(y8.iter_mut()).enumerate() {
            yb.d = dh[k];
            yb.qs = q4_0_codes(s, &load4(s, xb), id[k]);
        }
    }
    for (xb, yb) in xs.remainder().chunks_exact(32).zip(ys.into_remainder()) {
        let v = load4(s, xb);
        if !block_finite::<S, CHECK>(s, &v, xb) {
            return false;
        }
        let (d, id) = sym_scale(s, &v, xb, -0.125);
        yb.d = fp32_to_fp16(d);
        yb.qs = q4_0_codes(s, &v, id);
    }
    true
}

#[inline(always)]
fn q5_0_lanes<S: LanesMore, const CHECK: bool>(s: S, x: &[f32], y: &mut [BlockQ5_0]) -> bool {
    let mut xs = x.chunks_exact(32 * N);
    let mut ys = y.chunks_exact_mut(N);
    for (x8, y8) in (&mut xs).zip(&mut ys) {
        let Some((id, dh)) = sym_scales::<S, CHECK>(s, x8, -0.0625) else {
            return false;
        };
        for (k, (xb, yb)) in x8.chunks_exact(32).zip(y8.iter_mut()).enumerate() {
            yb.d = dh[k];
            (yb.qs, yb.qh) = q5_0_codes(s, &load4(s, xb), id[k]);
        }
    }
    for (xb, yb) in xs.remainder().chunks_exact(32).zip(ys.into_remainder()) {
        let v = load4(s, xb);
        if !block_finite::<S, CHECK>(s, &v, xb) {
            return false;
        }
        let (d, id) = sym_scale(s, &v, xb, -0.0625);
        yb.d = fp32_to_fp16(d);
        (yb.qs, yb.qh) = q5_0_codes(s, &v, id);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::GgmlBlock;

    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                match (seed + i as u64) % 23 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => u * 1e-30,
                    _ => u,
                }
            })
            .collect()
    }

    /// Blocks with zero extremes of both signs, ties, NaN, ±Inf, huge values.
    fn cases() -> Vec<Vec<f32>> {
        let mut out: Vec<Vec<f32>> = (0..40).map(|s| values(s, 32 * 9)).collect();
        let mut z = vec![0.0f32; 64];
        z[3] = -0.0;
        z[40] = -0.0;
        out.push(z.clone());
        z[0] = -0.0;
        out.push(z);
        let mut p: Vec<f32> = (0..64).map(|i| (i % 7) as f32).collect();
        p[10] = -0.0;
        out.push(p.clone());
        p.iter_mut().for_each(|v| *v = -*v);
        out.push(p);
        let mut sp = values(99, 128);
        sp[1] = f32::NAN;
        sp[40] = f32::INFINITY;
        sp[70] = f32::NEG_INFINITY;
        sp[100] = 3e38;
        sp[101] = -3e38;
        out.push(sp);
        out.push(vec![f32::NAN; 32]);
        let mut t = values(5, 64);
        t[31] = f32::NAN;
        t[33] = 1e-40;
        out.push(t);
        let mut t: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) * 1e-41).collect();
        t[7] = 2.5e-39;
        out.push(t);
        let h: Vec<f32> = (0..32)
            .map(|i| (i as f32 - 16.0) * (127.0 / 16.0))
            .collect();
        out.push(h);
        out.push(vec![f32::INFINITY; 32]);
        // Largest magnitudes of both signs (ggml takes the first), in either order, and
        // one of them beside a NaN.
        let mut tie = values(11, 64);
        (tie[5], tie[9], tie[40], tie[33]) = (-3.0, 3.0, 3.0, -3.0);
        out.push(tie.clone());
        tie[4] = f32::NAN;
        out.push(tie);
        // Every case above again, whole blocks of them eight at a time (the batched
        // scales of Q4_1/Q5_1), with ±Inf, NaN and zero extremes inside a batch.
        let mut all: Vec<f32> = out.iter().flatten().copied().collect();
        let mut mixed = vec![f32::NEG_INFINITY; 32];
        mixed[5] = f32::INFINITY;
        all.extend(mixed);
        all.extend((0..32).map(|i| if i == 9 { -0.0 } else { 0.0 }));
        let tail = all.len() % 256;
        all.extend(values(7, 256 - tail + 32 * 3));
        out.push(all);
        out
    }

    /// `lanes` with and without the finite check on `x`: the check's answer is whether
    /// every value is finite, and a finite row gets the same blocks either way.
    fn check_finite<B: GgmlBlock>(
        x: &[f32],
        lanes: impl Fn(&[f32], &mut [B], bool) -> bool,
    ) -> Vec<B> {
        let nb = x.len() / 32;
        let (mut a, mut b) = (vec![B::ZERO; nb], vec![B::ZERO; nb]);
        assert!(lanes(x, &mut a, false));
        let finite = x.iter().all(|v| v.is_finite());
        assert_eq!(lanes(x, &mut b, true), finite, "{:?}", B::TYPE);
        if finite {
            let bytes = |v: &[B]| bytemuck::cast_slice::<B, u8>(v).to_vec();
            assert_eq!(bytes(&a), bytes(&b), "{:?}", B::TYPE);
        }
        a
    }

    fn check<S: LanesMore>(s: S) {
        let mut inputs = cases();
        // Rows with one non-finite value at each position of a batch of eight blocks and
        // of a last, lone block; rows of values whose lane sums overflow but are finite.
        for (i, bad) in [
            (0, f32::NAN),
            (77, f32::INFINITY),
            (255, f32::NEG_INFINITY),
            (270, f32::NAN),
        ] {
            let mut x = values(3, 32 * 9);
            x[i] = bad;
            inputs.push(x);
        }
        inputs.push(
            (0..32 * 9)
                .map(|i| if i % 3 == 0 { 3e38 } else { -3e38 })
                .collect(),
        );
        inputs.push(vec![f32::MAX; 32 * 9]);
        for x in inputs {
            let nb = x.len() / 32;
            let mut b = vec![BlockQ4_1::ZERO; nb];
            crate::types::q4_1::quantize_row_scalar(&x, &mut b);
            let a = check_finite(&x, |x, y, c| {
                if c {
                    q4_1_lanes::<_, true>(s, x, y)
                } else {
                    q4_1_lanes::<_, false>(s, x, y)
                }
            });
            assert_eq!(a, b, "q4_1 {x:?}");
            let mut b = vec![BlockQ5_1::ZERO; nb];
            crate::types::q5_1::quantize_row_scalar(&x, &mut b);
            let a = check_finite(&x, |x, y, c| {
                if c {
                    q5_1_lanes::<_, true>(s, x, y)
                } else {
                    q5_1_lanes::<_, false>(s, x, y)
                }
            });
            assert_eq!(a, b, "q5_1 {x:?}");
            let mut b = vec![BlockQ5_0::ZERO; nb];
            crate::types::q5_0::quantize_row_scalar(&x, &mut b);
            let a = check_finite(&x, |x, y, c| {
                if c {
                    q5_0_lanes::<_, true>(s, x, y)
                } else {
                    q5_0_lanes::<_, false>(s, x, y)
                }
            });
            assert_eq!(a, b, "q5_0 {x:?}");
            let mut b = vec![BlockQ8_0::ZERO; nb];
            crate::types::q8_0::quantize_row_scalar(&x, &mut b);
            let a = check_finite(&x, |x, y, c| {
                if c {
                    q8_0_lanes::<_, true>(s, x, y)
                } else {
                    q8_0_lanes::<_, false>(s, x, y)
                }
            });
            assert_eq!(a, b, "q8_0 {x:?}");
            // Q4_0's blocks against its straight port: `q4_0::tests`.
            check_finite(&x, |x, y, c| {
                if c {
                    q4_0_lanes::<_, true>(s, x, y)
                } else {
                    q4_0_lanes::<_, false>(s, x, y)
                }
            });
        }
    }

    #[test]
    fn portable_rows_equal_the_straight_ports() {
        check(Portable);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_rows_equal_the_straight_ports() {
        #[target_feature(enable = "avx2")]
        unsafe fn run(t: Avx2) {
            check(t)
        }
        let _on = crate::types::simd::force_simd(true);
        if let Some(t) = Avx2::get() {
            // SAFETY: the token exists only on CPUs with AVX2.
            unsafe { run(t) }
        }
    }
}
