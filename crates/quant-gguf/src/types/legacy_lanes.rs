//! The unweighted quantizers of Q4_1, Q5_1, Q5_0 and Q8_0 with each block of 32 as four
//! 8-lane vectors (as Q4_0's, see [`crate::types::q4_0`]): `quantize_row_q4_1_ref`,
//! `quantize_row_q5_1_ref`, `quantize_row_q5_0_ref`, `quantize_row_q8_0_ref`.
//!
//! ggml scans a block in order (`if (v < min) min = v`, `if (amax < fabsf(v))`); the
//! lanes compute the same extremes in another order. Values that compare equal have the
//! same bits except `-0`/`+0`, so the result is the same value unless the extreme is a
//! zero, where the block is scanned again in ggml's order for the sign. NaN never
//! compares, so it is never an extreme in either order.

use crate::types::c_math::{fp32_to_fp16, max_by_magnitude};
use crate::types::kquant_lanes::LanesMore;
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::lanes::{Lanes, Portable, N};
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
    let mut mn = s.splat(f32::MAX);
    let mut mx = s.splat(-f32::MAX);
    for &vk in v {
        mn = s.select(s.gt(mn, vk), vk, mn);
        mx = s.select(s.gt(vk, mx), vk, mx);
    }
    let (mut min, mut max) = (s.hmin(mn), s.hmax(mx));
    if min == 0.0 || max == 0.0 {
        // The sign of a zero extreme: the first zero in ggml's order.
        min = f32::MAX;
        max = -f32::MAX;
        for &x in xb {
            if x < min {
                min = x;
            }
            if x > max {
                max = x;
            }
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
        #[inline(always)]
        pub(crate) fn $name(x: &[f32], y: &mut [$blk]) {
            #[cfg(target_arch = "x86_64")]
            if let Some(t) = Avx2::get() {
                // SAFETY: the token exists only on CPUs with AVX2.
                return unsafe { $avx2(t, x, y) };
            }
            $lanes(Portable, x, y)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2(t: Avx2, x: &[f32], y: &mut [$blk]) {
            $lanes(t, x, y)
        }
    };
}

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

/// C's `(int)roundf(v)` (x86-64 conversion: `INT_MIN` for NaN and out of range) per lane:
/// the truncation `i`, then one step away from zero when the exact remainder `v − i` is
/// at least one half; lanes that converted to `INT_MIN` stay there (no float in
/// `(−2³¹ − 1, −2³¹)` has a fraction, so those are NaN or out of range).
#[inline(always)]
fn round_away<S: LanesMore>(s: S, v: S::F) -> S::I {
    let i = s.trunc_i(v);
    let frac = s.sub(v, s.to_f(i));
    let (one, zero) = (s.splat_i(1), s.splat_i(0));
    let up = s.select_i(s.le(s.splat(0.5), frac), one, zero);
    let down = s.select_i(s.le(frac, s.splat(-0.5)), one, zero);
    // i + up - down
    let r = s.sub_i(s.sub_i(i, s.sub_i(zero, up)), down);
    s.select_i(s.ne_i(i, s.splat_i(i32::MIN)), r, i)
}

#[inline(always)]
fn q8_0_lanes<S: LanesMore>(s: S, x: &[f32], y: &mut [BlockQ8_0]) {
    for (xb, yb) in x.chunks_exact(32).zip(y) {
        let v = load4(s, xb);
        // `amax = MAX(amax, fabsf(v))`: in any order when the block has no NaN (a NaN
        // only survives in ggml's order, as the last value).
        let mut am = s.splat(0.0);
        let mut ordered = u32::MAX;
        for (k, &vk) in v.iter().enumerate() {
            let a = s.abs(vk);
            am = s.select(s.gt(am, a), am, a);
            ordered &= s.eq_bits(vk, vk) | !(0xFF << (N * k));
        }
        let (d, id) = if ordered == u32::MAX {
            let amax = s.hmax(am);
            let d = amax / 127.0;
            (d, if d != 0.0 { 1.0 / d } else { 0.0 })
        } else {
            q8_scale(xb)
        };
        yb.d = fp32_to_fp16(d);
        let idv = s.splat(id);
        let mut q = [s.splat_i(0); 4];
        for (q, &vk) in q.iter_mut().zip(&v) {
            *q = round_away(s, s.mul(vk, idv));
        }
        let (a, b) = (s.low_bytes(q[0], q[1]), s.low_bytes(q[2], q[3]));
        for (o, &b) in yb.qs.iter_mut().zip(a.iter().chain(&b)) {
            *o = b as i8;
        }
    }
}

#[inline(always)]
fn q4_1_lanes<S: LanesMore>(s: S, x: &[f32], y: &mut [BlockQ4_1]) {
    let (lo, hi) = (s.splat_i(i32::MIN), s.splat_i(15));
    for (xb, yb) in x.chunks_exact(32).zip(y) {
        let v = load4(s, xb);
        let (min, max) = min_max(s, &v, xb);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = fp32_to_fp16(d);
        yb.m = fp32_to_fp16(min);
        // `MIN(15, (int8_t)(... + 0.5f))`.
        let mut q = asym_codes(s, &v, min, id);
        for q in q.iter_mut() {
            *q = s.clamp_i(s.low_i8(*q), lo, hi);
        }
        yb.qs = s.low_bytes(s.or_shl4(q[0], q[2]), s.or_shl4(q[1], q[3]));
    }
}

#[inline(always)]
fn q5_1_lanes<S: LanesMore>(s: S, x: &[f32], y: &mut [BlockQ5_1]) {
    for (xb, yb) in x.chunks_exact(32).zip(y) {
        let v = load4(s, xb);
        let (min, max) = min_max(s, &v, xb);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = fp32_to_fp16(d);
        yb.m = fp32_to_fp16(min);
        // `(uint8_t)(... + 0.5f)`: only the low 5 bits are stored.
        (yb.qs, yb.qh) = pack5(s, &asym_codes(s, &v, min, id));
    }
}

#[inline(always)]
fn q5_0_lanes<S: LanesMore>(s: S, x: &[f32], y: &mut [BlockQ5_0]) {
    let (lo, hi) = (s.splat_i(i32::MIN), s.splat_i(31));
    for (xb, yb) in x.chunks_exact(32).zip(y) {
        let v = load4(s, xb);
        // The first value of largest magnitude: the largest magnitude in any order, then
        // the first value that has it (a NaN never compares greater).
        let mut am = s.splat(0.0);
        for &vk in &v {
            let a = s.abs(vk);
            am = s.select(s.gt(a, am), a, am);
        }
        let amax = s.hmax(am);
        let max = if amax > 0.0 {
            let target = s.splat(amax);
            let mut bits = 0u32;
            for (k, &vk) in v.iter().enumerate() {
                bits |= s.eq_bits(s.abs(vk), target) << (N * k);
            }
            xb[bits.trailing_zeros() as usize % 32]
        } else {
            max_by_magnitude(xb)
        };
        // `max / -16` (a multiplication by the exact 1/16 rounds the same real number).
        let d = max * -0.0625;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = fp32_to_fp16(d);
        let (idv, off) = (s.splat(id), s.splat(16.5));
        // `MIN(31, (int8_t)(x·id + 16.5f))`, stored as a byte.
        let mut q = [s.splat_i(0); 4];
        for (q, &vk) in q.iter_mut().zip(&v) {
            *q = s.clamp_i(s.low_i8(s.trunc_i(s.add(s.mul(vk, idv), off))), lo, hi);
        }
        (yb.qs, yb.qh) = pack5(s, &q);
    }
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
        out
    }

    fn check<S: LanesMore>(s: S) {
        for x in cases() {
            let nb = x.len() / 32;
            let (mut a, mut b) = (vec![BlockQ4_1::ZERO; nb], vec![BlockQ4_1::ZERO; nb]);
            q4_1_lanes(s, &x, &mut a);
            crate::types::q4_1::quantize_row_scalar(&x, &mut b);
            assert_eq!(a, b, "q4_1 {x:?}");
            let (mut a, mut b) = (vec![BlockQ5_1::ZERO; nb], vec![BlockQ5_1::ZERO; nb]);
            q5_1_lanes(s, &x, &mut a);
            crate::types::q5_1::quantize_row_scalar(&x, &mut b);
            assert_eq!(a, b, "q5_1 {x:?}");
            let (mut a, mut b) = (vec![BlockQ5_0::ZERO; nb], vec![BlockQ5_0::ZERO; nb]);
            q5_0_lanes(s, &x, &mut a);
            crate::types::q5_0::quantize_row_scalar(&x, &mut b);
            assert_eq!(a, b, "q5_0 {x:?}");
            let (mut a, mut b) = (vec![BlockQ8_0::ZERO; nb], vec![BlockQ8_0::ZERO; nb]);
            q8_0_lanes(s, &x, &mut a);
            crate::types::q8_0::quantize_row_scalar(&x, &mut b);
            assert_eq!(a, b, "q8_0 {x:?}");
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
