//! MXFP4 (OCP microscaling FP4): blocks of 32 values, `x ≈ 2^(e−127)·v/2` where `v` is a
//! doubled E2M1 value of ggml's `kvalues_mxfp4` (0, ±1, ±2, ±3, ±4, ±6, ±8, ±12).
//!
//! Layout (ggml `block_mxfp4`, 17 bytes): `e` (E8M0 shared exponent), `qs[16]` (value `j`
//! in the low nibble of byte `j`, value `j + 16` in the high nibble).
//!
//! Quantizer: ggml's `quantize_row_mxfp4_ref` (the importance matrix is ignored):
//! `e = (uint8_t)(floorf(log2f(max|x|)) − 2 + 127)` (0 for an all-zero block), `d =
//! 2^(e−128)` (`GGML_E8M0_TO_FP32_HALF`), each value the entry of least `|v·d − x|`, the
//! first on ties.

use crate::types::c_math::c_f32_to_i32;
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `kvalues_mxfp4` (`kvalues_fp4`): E2M1 values times 2.
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// ggml's `ggml_e8m0_to_fp32_half`: `2^(e−128)` (denormal for `e < 2`).
#[inline(always)]
pub fn e8m0_to_fp32_half(e: u8) -> f32 {
    if e < 2 {
        f32::from_bits(0x0020_0000 << e)
    } else {
        f32::from_bits(((e as u32) - 1) << 23)
    }
}

/// ggml's `block_mxfp4`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockMxfp4 {
    /// Shared exponent (E8M0).
    pub e: u8,
    /// 4-bit codes, two per byte.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockMxfp4>() == 17);

/// ggml's `best_index_mxfp4`.
#[cfg(test)]
fn best_index(x: f32, e: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = (KVALUES_MXFP4[0] as f32 * e - x).abs();
    for (i, &k) in KVALUES_MXFP4.iter().enumerate().skip(1) {
        let err = (k as f32 * e - x).abs();
        if err < best_err {
            best = i as u8;
            best_err = err;
        }
    }
    best
}

/// `(uint8_t)(floorf(log2f(amax)) − 2 + 127)`, 0 for `amax = 0`: glibc's `log2f` (what
/// Rust's `log2` calls on Linux), then C's float → u8. Kept out of line: a libm call from
/// inside the AVX2 build of the row loop is several times slower.
#[inline(never)]
fn shared_exponent(amax: f32) -> u8 {
    if amax > 0.0 {
        c_f32_to_i32(amax.log2().floor() - 2.0 + 127.0) as u8
    } else {
        0
    }
}

/// [`shared_exponent`] without the libm call where its result is certain: for a normal
/// `amax = 2^E·m` with `m` at least `2⁻¹⁰` away from 1 and from 2, `log2(amax)` is at
/// least `7·10⁻⁴` away from an integer, more than 40 ulps of any float below 128, so
/// `floorf(log2f(amax))` is `E` for any `log2f` within a few ulps (glibc's is within
/// one); everything else (zero, subnormals, ±Inf, the binade edges) calls libm.
#[inline(always)]
fn shared_exponent_fast(amax: f32) -> u8 {
    let bits = amax.to_bits();
    let (exp, man) = (bits >> 23, bits & 0x007f_ffff);
    const EDGE: u32 = 1 << 13;
    if (1..255).contains(&exp) && man > EDGE && man < (1 << 23) - EDGE {
        // `(uint8_t)(E − 2 + 127)` with `E = exp − 127`: the low byte of `exp − 2`.
        (exp as i32 - 2) as u8
    } else {
        shared_exponent(amax)
    }
}

/// [`best_index`] of 16 values side by side. `k·e` is exact (`e` a power of two), so for
/// `x ≥ 0` an entry `k < 0` has the error `fl(|k|·e + x) ≥ x`, the error of entry 0, which
/// comes first and wins ties: only entries 0..7 can win, and for `x < 0` only 0 and
/// 9..15, whose errors are those of 0..7 against `|x|` (negation is exact). So each value
/// runs the same comparisons as ggml over 8 entries, and the loop vectorizes.
#[inline(always)]
fn best_indices(x: &[f32], e: f32) -> [u8; 16] {
    let mut best = [0u32; 16];
    let mut best_err = [0f32; 16];
    let mut ax = [0f32; 16];
    for j in 0..16 {
        ax[j] = x[j].abs();
        best_err[j] = (KVALUES_MXFP4[0] as f32 * e - ax[j]).abs();
    }
    for (i, &k) in KVALUES_MXFP4.iter().enumerate().take(8).skip(1) {
        let v = k as f32 * e;
        for j in 0..16 {
            let err = (v - ax[j]).abs();
            let take = err < best_err[j];
            best[j] = if take { i as u32 } else { best[j] };
            best_err[j] = if take { err } else { best_err[j] };
        }
    }
    let mut out = [0u8; 16];
    for j in 0..16 {
        let neg = x[j] < 0.0 && best[j] != 0;
        out[j] = (best[j] + if neg { 8 } else { 0 }) as u8;
    }
    out
}

impl GgmlBlock for BlockMxfp4 {
    const TYPE: GgmlType = GgmlType::MXFP4;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 17;
    const ZERO: Self = BlockMxfp4 { e: 0, qs: [0; 16] };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.e = b[0];
        blk.qs.copy_from_slice(&b[1..17]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0] = self.e;
        out[1..17].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = Avx2::get() {
            // SAFETY: the token exists only on CPUs with AVX2.
            return unsafe { avx2::row(t, x, y) };
        }
        for (xb, yb) in x.chunks_exact(32).zip(y) {
            let mut amax = 0f32;
            for &v in xb {
                if amax < v.abs() {
                    amax = v.abs();
                }
            }
            yb.e = shared_exponent_fast(amax);
            let d = e8m0_to_fp32_half(yb.e);
            let lo = best_indices(&xb[..16], d);
            let hi = best_indices(&xb[16..], d);
            for j in 0..16 {
                yb.qs[j] = lo[j] | (hi[j] << 4);
            }
        }
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(32)) {
            let d = e8m0_to_fp32_half(yb.e);
            for j in 0..16 {
                o[j] = KVALUES_MXFP4[(yb.qs[j] & 0xf) as usize] as f32 * d;
                o[j + 16] = KVALUES_MXFP4[(yb.qs[j] >> 4) as usize] as f32 * d;
            }
        }
    }
}

/// The AVX2 build of the row quantizer: eight values per vector, the operations of
/// [`best_indices`] per lane.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{e8m0_to_fp32_half, shared_exponent_fast, BlockMxfp4, KVALUES_MXFP4};
    use crate::types::lanes::Avx2;

    /// The largest `|x|` that is not NaN (ggml's `if (amax < fabsf(v))` scan skips NaN),
    /// 0 when there is none: the float order of non-negative floats is the integer order
    /// of their bits, NaN lanes are zeroed first.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn amax(v: &[__m256; 4]) -> f32 {
        let mask = _mm256_set1_epi32(0x7fff_ffff);
        let inf = _mm256_set1_epi32(0x7f80_0000);
        let mut m = _mm256_setzero_si256();
        for &x in v {
            let a = _mm256_and_si256(_mm256_castps_si256(x), mask);
            let nan = _mm256_cmpgt_epi32(a, inf);
            m = _mm256_max_epi32(m, _mm256_andnot_si256(nan, a));
        }
        let h = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
        let h = _mm_max_epi32(h, _mm_shuffle_epi32::<0b01_00_11_10>(h));
        let h = _mm_max_epi32(h, _mm_shuffle_epi32::<0b10_11_00_01>(h));
        f32::from_bits(_mm_cvtsi128_si32(h) as u32)
    }

    /// `|v|`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn abs(v: __m256) -> __m256 {
        _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)))
    }

    /// `best_index_mxfp4(x, e)` per lane, as [`super::best_indices`] computes it (`kv[i]`
    /// holds `kvalues_mxfp4[i]·e`).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn best(x: __m256, kv: &[__m256; 8]) -> __m256i {
        let ax = abs(x);
        let mut best = _mm256_setzero_si256();
        let mut best_err = abs(_mm256_sub_ps(kv[0], ax));
        for (i, &k) in kv.iter().enumerate().skip(1) {
            let err = abs(_mm256_sub_ps(k, ax));
            let take = _mm256_cmp_ps::<_CMP_LT_OQ>(err, best_err);
            let idx = _mm256_set1_epi32(i as i32);
            best = _mm256_blendv_epi8(best, idx, _mm256_castps_si256(take));
            best_err = _mm256_blendv_ps(best_err, err, take);
        }
        let neg = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_setzero_ps()));
        let zero = _mm256_cmpeq_epi32(best, _mm256_setzero_si256());
        let eight = _mm256_andnot_si256(zero, _mm256_and_si256(neg, _mm256_set1_epi32(8)));
        _mm256_add_epi32(best, eight)
    }

    /// `quantize_row_mxfp4_ref`.
    ///
    /// # Safety
    /// The CPU has AVX2 (the token's existence says so).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row(_t: Avx2, x: &[f32], y: &mut [BlockMxfp4]) {
        for (xb, yb) in x.chunks_exact(32).zip(y) {
            // SAFETY: `xb` holds 32 floats.
            let v = unsafe {
                [
                    _mm256_loadu_ps(xb[0..8].as_ptr()),
                    _mm256_loadu_ps(xb[8..16].as_ptr()),
                    _mm256_loadu_ps(xb[16..24].as_ptr()),
                    _mm256_loadu_ps(xb[24..32].as_ptr()),
                ]
            };
            yb.e = shared_exponent_fast(amax(&v));
            let d = e8m0_to_fp32_half(yb.e);
            let mut kv = [_mm256_setzero_ps(); 8];
            for i in 0..8 {
                kv[i] = _mm256_set1_ps(KVALUES_MXFP4[i] as f32 * d);
            }
            let b = [
                best(v[0], &kv),
                best(v[1], &kv),
                best(v[2], &kv),
                best(v[3], &kv),
            ];
            let lo = _mm256_or_si256(b[0], _mm256_slli_epi32::<4>(b[2]));
            let hi = _mm256_or_si256(b[1], _mm256_slli_epi32::<4>(b[3]));
            let w = _mm256_packus_epi32(lo, hi);
            let w = _mm256_packus_epi16(w, w);
            let w = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            // SAFETY: `qs` holds 16 bytes.
            unsafe { _mm_storeu_si128(yb.qs.as_mut_ptr().cast(), _mm256_castsi256_si128(w)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::quantize_rows;

    #[test]
    fn shared_exponent_fast_equals_libm() {
        let mut s = 11u64;
        let mut r = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 41) as u32
        };
        let edge = 1u32 << 13;
        for exp in 0..=255u32 {
            let mut mans = vec![0, 1, edge, edge + 1, (1 << 23) - edge - 1, (1 << 23) - edge];
            mans.extend([(1 << 23) - 1, (1 << 23) - 2]);
            mans.extend((0..2000).map(|_| r() & 0x007f_ffff));
            for man in mans {
                let a = f32::from_bits((exp << 23) | man);
                assert_eq!(shared_exponent_fast(a), shared_exponent(a), "{a:e}");
            }
        }
    }

    #[test]
    fn builds_agree() {
        let mut s = 5u64;
        let mut r = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32) / (1u64 << 24) as f32
        };
        let mut x = Vec::new();
        for k in 0..400 {
            let scale = f32::from_bits((((k * 7919) % 255) << 23) | ((k * 104729) % (1 << 23)));
            let mut b: Vec<f32> = (0..32).map(|_| (r() * 2.0 - 1.0) * scale).collect();
            let d = e8m0_to_fp32_half(shared_exponent(b.iter().fold(0f32, |a, v| a.max(v.abs()))));
            // Ties between neighbouring entries, NaN, ±Inf, zeros of both signs.
            b[1] = 5.0 * d;
            b[2] = -10.0 * d;
            b[3] = -0.0;
            match k % 5 {
                1 => b[k as usize % 32] = f32::NAN,
                2 => b[7] = f32::INFINITY,
                3 => b[31] = f32::NEG_INFINITY,
                _ => {}
            }
            x.extend(b);
        }
        let mut out = Vec::new();
        for simd in [true, false] {
            let _simd = quant_core::simd::force_simd(simd);
            out.push(quantize_rows::<BlockMxfp4>(&x, 64, None).ok());
        }
        assert!(out[0].is_some());
        assert_eq!(out[0], out[1]);
    }

    #[test]
    fn best_indices_equal_best_index() {
        let mut s = 3u64;
        let mut r = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32) / (1u64 << 24) as f32 - 0.5
        };
        for e in [0.25f32, 1.0, 0.125, 3.0] {
            for _ in 0..2000 {
                let mut x: Vec<f32> = (0..16).map(|_| r() * 30.0 * e).collect();
                x[0] = f32::NAN;
                x[1] = 6.0 * e * 0.5 + 4.0 * e * 0.5;
                x[2] = -x[1];
                x[3] = -0.0;
                x[4] = 1e-30;
                x[5] = -1e-30;
                x[6] = -(8.0 * e + 12.0 * e) * 0.5;
                let got = best_indices(&x, e);
                for j in 0..16 {
                    assert_eq!(got[j], best_index(x[j], e), "x={} e={e}", x[j]);
                }
            }
        }
    }
}
