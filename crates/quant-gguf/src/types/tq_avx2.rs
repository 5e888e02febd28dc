//! AVX2 builds of the ternary row quantizers (TQ1_0, TQ2_0): eight values per vector,
//! the same IEEE operations as ggml's `quantize_row_tq1_0_ref`/`quantize_row_tq2_0_ref`
//! per value.
//!
//! A block takes this path when every value is finite and `1/max|x|` is finite (or
//! `max|x| = 0`); any other block runs the scalar quantizer. Then:
//! - `max|x|` is ggml's `MAX` chain: over finite values with the sign cleared the chain
//!   is the largest value, and the float order of non-negative floats is the integer
//!   order of their bits, so a vector `max` of the bits gives the same float;
//! - each `v = x·(1/d)` is the same product, and `|v| < 1.5` (`|x| ≤ d`, `1/d` is
//!   rounded once), where `lroundf(v)` is `(v ≥ ½) − (v ≤ −½)`
//!   ([`crate::types::c_math::c_lroundf_small`]);
//! - the trits combine in `i32` lanes exactly as the `uint8_t` arithmetic (no sum
//!   exceeds 242, so nothing wraps), and TQ1_0's `⌈q·256/243⌉` is a multiply-shift that
//!   equals the division for every `q ≤ 242` (tested).

use std::arch::x86_64::*;

use crate::types::c_math::{fp32_to_fp16, QK_K};
use crate::types::lanes::Avx2;
use crate::types::tq1_0::BlockTq1_0;
use crate::types::tq2_0::BlockTq2_0;

/// Eight values from `x[i..]`.
#[inline]
#[target_feature(enable = "avx2")]
fn load(x: &[f32; QK_K], i: usize) -> __m256 {
    let c = &x[i..i + 8];
    // SAFETY: `c` holds 8 floats.
    unsafe { _mm256_loadu_ps(c.as_ptr()) }
}

/// `(d, 1/d)` for `d = max|x|` (ggml's `id`: 0 when `d = 0`), when every value is finite
/// and `1/d` is finite; `None` otherwise.
#[inline]
#[target_feature(enable = "avx2")]
fn scale(x: &[f32; QK_K]) -> Option<(f32, f32)> {
    let mask = _mm256_set1_epi32(0x7fff_ffff);
    let mut m = [_mm256_setzero_si256(); 4];
    for k in 0..QK_K / 32 {
        for (a, mk) in m.iter_mut().enumerate() {
            let v = _mm256_castps_si256(load(x, 32 * k + 8 * a));
            *mk = _mm256_max_epi32(*mk, _mm256_and_si256(v, mask));
        }
    }
    let m = _mm256_max_epi32(_mm256_max_epi32(m[0], m[1]), _mm256_max_epi32(m[2], m[3]));
    let h = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
    let h = _mm_max_epi32(h, _mm_shuffle_epi32::<0b01_00_11_10>(h));
    let h = _mm_max_epi32(h, _mm_shuffle_epi32::<0b10_11_00_01>(h));
    let bits = _mm_cvtsi128_si32(h) as u32;
    if bits >= 0x7f80_0000 {
        return None;
    }
    let d = f32::from_bits(bits);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    id.is_finite().then_some((d, id))
}

/// `lroundf(x[i + l]·id) + 1` of lanes `l` (see the module documentation).
#[inline]
#[target_feature(enable = "avx2")]
fn trits(x: &[f32; QK_K], i: usize, id: __m256) -> __m256i {
    let v = _mm256_mul_ps(load(x, i), id);
    let ge = _mm256_cmp_ps::<_CMP_GE_OQ>(v, _mm256_set1_ps(0.5));
    let le = _mm256_cmp_ps::<_CMP_LE_OQ>(v, _mm256_set1_ps(-0.5));
    // The masks are −1 where set.
    _mm256_sub_epi32(
        _mm256_add_epi32(_mm256_set1_epi32(1), _mm256_castps_si256(le)),
        _mm256_castps_si256(ge),
    )
}

/// The low bytes of the lanes of `q[0]`, then `q[1]`, `q[2]`, `q[3]` (each in 0..=255).
#[inline]
#[target_feature(enable = "avx2")]
fn bytes32(q: [__m256i; 4]) -> [u8; 32] {
    let a = _mm256_packus_epi32(q[0], q[1]);
    let b = _mm256_packus_epi32(q[2], q[3]);
    let c = _mm256_packus_epi16(a, b);
    let c = _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    let mut out = [0u8; 32];
    // SAFETY: `out` holds 32 bytes.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), c) };
    out
}

/// `3·q + t`.
#[inline]
#[target_feature(enable = "avx2")]
fn horner(q: __m256i, t: __m256i) -> __m256i {
    _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32::<1>(q), q), t)
}

/// `⌈q·256/243⌉` (`(q·256 + 242)/243`) for lanes `q ≤ 242`: `n·69043 >> 24` equals
/// `⌊n/243⌋` for `n < 2²⁴/233` (`243·69043 = 2²⁴ + 233`), and `n·69043 < 2³²`.
#[inline]
#[target_feature(enable = "avx2")]
fn pack_ceil(q: __m256i) -> __m256i {
    let n = _mm256_add_epi32(_mm256_slli_epi32::<8>(q), _mm256_set1_epi32(242));
    _mm256_srli_epi32::<24>(_mm256_mullo_epi32(n, _mm256_set1_epi32(69043)))
}

/// The TQ2_0 codes of a block on the fast path.
#[inline]
#[target_feature(enable = "avx2")]
fn tq2_codes(x: &[f32; QK_K], id: f32) -> [u8; 64] {
    let idv = _mm256_set1_ps(id);
    let mut qs = [0u8; 64];
    for (j, out) in qs.chunks_exact_mut(32).enumerate() {
        let mut q = [_mm256_setzero_si256(); 4];
        for (c, qc) in q.iter_mut().enumerate() {
            let i = 128 * j + 8 * c;
            let t0 = trits(x, i, idv);
            let t1 = _mm256_slli_epi32::<2>(trits(x, i + 32, idv));
            let t2 = _mm256_slli_epi32::<4>(trits(x, i + 64, idv));
            let t3 = _mm256_slli_epi32::<6>(trits(x, i + 96, idv));
            *qc = _mm256_or_si256(_mm256_or_si256(t0, t1), _mm256_or_si256(t2, t3));
        }
        out.copy_from_slice(&bytes32(q));
    }
    qs
}

/// TQ1_0's byte of the five trits at `x[i + l + stride·n]` (`n < 5`), lanes `l`.
#[inline]
#[target_feature(enable = "avx2")]
fn tq1_byte5(x: &[f32; QK_K], i: usize, stride: usize, id: __m256) -> __m256i {
    let mut q = trits(x, i, id);
    for n in 1..5 {
        q = horner(q, trits(x, i + stride * n, id));
    }
    pack_ceil(q)
}

/// The TQ1_0 `qs` and `qh` of a block on the fast path.
#[inline]
#[target_feature(enable = "avx2")]
fn tq1_codes(x: &[f32; QK_K], id: f32) -> ([u8; 48], [u8; 4]) {
    let idv = _mm256_set1_ps(id);
    let mut qs = [0u8; 48];
    let q = [0, 8, 16, 24].map(|m| tq1_byte5(x, m, 32, idv));
    qs[..32].copy_from_slice(&bytes32(q));
    let z = _mm256_setzero_si256();
    let q = [tq1_byte5(x, 160, 16, idv), tq1_byte5(x, 168, 16, idv), z, z];
    qs[32..].copy_from_slice(&bytes32(q)[..16]);
    // The last 16 values: trits of x[240 + j + 4m] form byte j (m most significant).
    let mut t = [0i32; 16];
    for (h, th) in t.chunks_exact_mut(8).enumerate() {
        // SAFETY: `th` holds 8 `i32`.
        unsafe { _mm256_storeu_si256(th.as_mut_ptr().cast(), trits(x, 240 + 8 * h, idv)) };
    }
    let mut qh = [0u8; 4];
    for (j, b) in qh.iter_mut().enumerate() {
        let q = ((t[j] * 3 + t[j + 4]) * 3 + t[j + 8]) * 3 + t[j + 12];
        *b = ((q * 3 * 256 + 242) / 243) as u8;
    }
    (qs, qh)
}

/// The blocks of 256 of `x` as arrays.
#[inline]
fn blocks(x: &[f32]) -> impl Iterator<Item = &[f32; QK_K]> {
    x.chunks_exact(QK_K).filter_map(|c| c.try_into().ok())
}

/// `quantize_row_tq2_0_ref` (blocks that leave the fast path run `scalar`).
///
/// # Safety
/// The CPU has AVX2 (the token's existence says so).
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn tq2_row(
    _t: Avx2,
    x: &[f32],
    y: &mut [BlockTq2_0],
    scalar: fn(&[f32]) -> BlockTq2_0,
) {
    for (xb, yb) in blocks(x).zip(y) {
        *yb = match scale(xb) {
            Some((d, id)) => BlockTq2_0 {
                qs: tq2_codes(xb, id),
                d: fp32_to_fp16(d),
            },
            None => scalar(xb),
        };
    }
}

/// `quantize_row_tq1_0_ref` (blocks that leave the fast path run `scalar`).
///
/// # Safety
/// The CPU has AVX2 (the token's existence says so).
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn tq1_row(
    _t: Avx2,
    x: &[f32],
    y: &mut [BlockTq1_0],
    scalar: fn(&[f32]) -> BlockTq1_0,
) {
    for (xb, yb) in blocks(x).zip(y) {
        *yb = match scale(xb) {
            Some((d, id)) => {
                let (qs, qh) = tq1_codes(xb, id);
                BlockTq1_0 {
                    qs,
                    qh,
                    d: fp32_to_fp16(d),
                }
            }
            None => scalar(xb),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{quantize_rows, GgmlBlock};

    /// Blocks that probe every boundary of the fast path: values at and next to `±d/2`,
    /// tiny and huge maxima (`1/d` infinite or subnormal), zeros of both signs, NaN, ±Inf.
    fn hostile_rows() -> Vec<f32> {
        let mut s = 7u64;
        let mut r = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32) / (1u64 << 24) as f32
        };
        let mut v = Vec::new();
        let scales = [
            1.0f32,
            0.02,
            3e-39,
            1e-45,
            2.9e-39,
            f32::MIN_POSITIVE,
            f32::MAX,
            1e38,
            0.0,
        ];
        for (k, &d) in scales.iter().cycle().take(90).enumerate() {
            let mut b: Vec<f32> = (0..QK_K)
                .map(|_| {
                    let u = r();
                    let h = d * 0.5;
                    match (u * 8.0) as u32 {
                        0 => h,
                        1 => -h,
                        2 => f32::from_bits(h.to_bits().wrapping_add(1)),
                        3 => -f32::from_bits(h.to_bits().wrapping_sub(1)),
                        4 => -0.0,
                        _ => (r() * 2.0 - 1.0) * d,
                    }
                })
                .collect();
            b[(k * 37) % QK_K] = if k % 2 == 0 { d } else { -d };
            match k % 9 {
                3 => b[k % QK_K] = f32::NAN,
                5 => b[(k * 5) % QK_K] = f32::INFINITY,
                7 => b[QK_K - 1] = f32::NEG_INFINITY,
                _ => {}
            }
            v.extend(b);
        }
        v
    }

    fn builds_agree<B: GgmlBlock>() {
        let x = hostile_rows();
        let mut out = Vec::new();
        for simd in [true, false] {
            let _simd = quant_core::simd::force_simd(simd);
            out.push(quantize_rows::<B>(&x, 2 * QK_K, None).ok());
        }
        assert!(out[0].is_some());
        assert_eq!(out[0], out[1], "{}", B::TYPE);
    }

    #[test]
    fn tq2_builds_agree() {
        builds_agree::<BlockTq2_0>();
    }

    #[test]
    fn tq1_builds_agree() {
        builds_agree::<BlockTq1_0>();
    }

    #[test]
    fn pack_ceil_is_the_ceiling_division() {
        let Some(_t) = Avx2::get() else { return };
        for q0 in (0..=242).step_by(8) {
            let lanes: [i32; 8] = std::array::from_fn(|l| (q0 + l as i32).min(242));
            let mut out = [0i32; 8];
            // SAFETY: the token says the CPU has AVX2; the arrays hold 8 `i32`.
            unsafe {
                let q = _mm256_loadu_si256(lanes.as_ptr().cast());
                _mm256_storeu_si256(out.as_mut_ptr().cast(), pack_ceil(q));
            }
            for (q, r) in lanes.iter().zip(out) {
                assert_eq!(r, (q * 256 + 242) / 243, "q={q}");
            }
        }
    }
}
