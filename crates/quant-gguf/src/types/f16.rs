//! F16: one IEEE half per value (ggml `ggml_fp32_to_fp16_row` / `ggml_fp16_to_fp32_row`).
//!
//! Conversion is ggml's `GGML_FP32_TO_FP16`: round to nearest even, overflow to ±inf,
//! every NaN to `0x7E00` with its sign.

use crate::types::c_math::{fp16_to_fp32, fp32_to_fp16};
use crate::types::{GgmlBlock, GgmlType};

/// One f16 value (`ggml_fp16_t`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockF16 {
    /// The half bits.
    pub bits: u16,
}
const _: () = assert!(std::mem::size_of::<BlockF16>() == 2);

impl GgmlBlock for BlockF16 {
    const TYPE: GgmlType = GgmlType::F16;
    const BLOCK_SIZE: usize = 1;
    const TYPE_SIZE: usize = 2;
    const ZERO: Self = BlockF16 { bits: 0 };

    fn read(b: &[u8]) -> Self {
        BlockF16 {
            bits: u16::from_le_bytes([b[0], b[1]]),
        }
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[..2].copy_from_slice(&self.bits.to_le_bytes());
    }
    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        row::<false>(x, y);
    }
    #[inline(always)]
    fn quantize_row_finite(x: &[f32], y: &mut [Self]) -> bool {
        row::<true>(x, y)
    }
    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (b, o) in y.iter().zip(out) {
            *o = fp16_to_fp32(b.bits);
        }
    }
}

/// `GGML_FP32_TO_FP16` of each value; with `CHECK`, `false` when one is NaN or ±Inf. With
/// F16C, eight values per `vcvtps2ph` (round to nearest even, as ggml's bit algorithm), NaN
/// lanes then set to ggml's `0x7E00` with their sign.
#[inline(always)]
fn row<const CHECK: bool>(x: &[f32], y: &mut [BlockF16]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if quant_core::simd::simd_enabled() {
        // SAFETY: `simd_enabled` checked at run time that this CPU has AVX2 and F16C.
        return unsafe { row_f16c::<CHECK>(x, y) };
    }
    row_scalar::<CHECK>(x, y)
}

#[inline(always)]
fn row_scalar<const CHECK: bool>(x: &[f32], y: &mut [BlockF16]) -> bool {
    let mut bad = false;
    for (v, b) in x.iter().zip(y) {
        b.bits = fp32_to_fp16(*v);
        bad |= CHECK && v.to_bits() & 0x7F80_0000 == 0x7F80_0000;
    }
    !bad
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn row_f16c<const CHECK: bool>(x: &[f32], y: &mut [BlockF16]) -> bool {
    use std::arch::x86_64::*;
    let mut xs = x.chunks_exact(8);
    let mut ys = y.chunks_exact_mut(8);
    // SAFETY (whole block): `xc` holds 8 floats and `yc` 8 two-byte blocks, so 16 bytes;
    // unaligned loads and stores.
    unsafe {
        let exp = _mm256_set1_epi32(0x7F80_0000);
        let mut bad = _mm256_setzero_si256();
        for (xc, yc) in (&mut xs).zip(&mut ys) {
            let v = _mm256_loadu_ps(xc.as_ptr());
            let h = _mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(v);
            let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            let nan16 = _mm_packs_epi32(
                _mm256_castsi256_si128(nan),
                _mm256_extracti128_si256::<1>(nan),
            );
            let canon = _mm_or_si128(
                _mm_and_si128(h, _mm_set1_epi16(0x8000u16 as i16)),
                _mm_set1_epi16(0x7E00),
            );
            _mm_storeu_si128(yc.as_mut_ptr().cast(), _mm_blendv_epi8(h, canon, nan16));
            if CHECK {
                let e = _mm256_and_si256(_mm256_castps_si256(v), exp);
                bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(e, exp));
            }
        }
        let tail = row_scalar::<CHECK>(xs.remainder(), ys.into_remainder());
        tail && _mm256_testz_si256(bad, bad) == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The F16C row against `fp32_to_fp16` (ggml's bit algorithm) and its finite check,
    /// on every 4099th f32 bit pattern and the rounding edges (`--ignored`: every f32).
    #[test]
    fn rows_are_ggml_fp32_to_fp16() {
        let mut xs: Vec<f32> = (0..=u32::MAX).step_by(4099).map(f32::from_bits).collect();
        for e in [
            0x3300_0000u32,
            0x3380_0000,
            0x3880_0000,
            0x477F_E000,
            0x477F_F000,
            0x7F80_0000,
        ] {
            for d in 0..64 {
                xs.extend([f32::from_bits(e - d), f32::from_bits(e + d)]);
                xs.extend([-f32::from_bits(e - d), -f32::from_bits(e + d)]);
            }
        }
        check(&xs);
    }

    #[test]
    #[ignore = "every f32: minutes in a debug build"]
    fn rows_are_ggml_fp32_to_fp16_for_every_float() {
        for hi in 0u32..256 {
            let xs: Vec<f32> = (0..1u32 << 24)
                .map(|lo| f32::from_bits(hi << 24 | lo))
                .collect();
            check(&xs);
        }
    }

    fn check(xs: &[f32]) {
        let mut y = [BlockF16::ZERO; 61];
        for c in xs.chunks(61) {
            let y = &mut y[..c.len()];
            let finite = c.iter().all(|v| v.is_finite());
            assert_eq!(row::<true>(c, y), finite);
            assert!(row::<false>(c, y));
            for (v, b) in c.iter().zip(y.iter()) {
                assert_eq!(b.bits, fp32_to_fp16(*v), "{:#x}", v.to_bits());
            }
        }
    }
}
