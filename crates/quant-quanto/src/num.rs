//! Model-dtype arithmetic as PyTorch's CPU kernels do it: every op on bf16/f16 tensors is
//! computed in f32 and rounded once to the tensor dtype, and NaN results follow x86 SSE/AVX
//! rules (so stored NaN codes and dequantized NaN bits match the reference files).

use half::f16;
use quant_core::{DType, Error, Result};

/// Rounding of one f32 result to the model dtype (`rd` in the spec).
pub(crate) trait Rd: Copy + Send + Sync + 'static {
    /// The safetensors dtype of the model.
    const DTYPE: DType;
    /// Rounds an f32 result to the model dtype (identity for f32).
    fn rd(x: f32) -> f32;
}

/// f32 models: no rounding.
#[derive(Clone, Copy)]
pub(crate) struct RdF32;
/// f16 models: round to nearest even (F16C semantics; NaN keeps its sign).
#[derive(Clone, Copy)]
pub(crate) struct RdF16;
/// bf16 models: round to nearest even; NaN becomes 0xFFFF as ATen's AVX2 vectorized
/// f32 → bf16 conversion (`cvtfp32_bf16`) produces it.
#[derive(Clone, Copy)]
pub(crate) struct RdBF16;

impl Rd for RdF32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn rd(x: f32) -> f32 {
        x
    }
}

impl Rd for RdF16 {
    const DTYPE: DType = DType::F16;
    #[inline(always)]
    fn rd(x: f32) -> f32 {
        round_f16(x)
    }
}

/// f32 → f16 → f32 in plain arithmetic (selects only, so loops vectorize): quant-core's
/// [`quant_core::dtype::round_f16`], the same results as F16C's `vcvtps2ph`.
pub(crate) use quant_core::dtype::round_f16;

impl Rd for RdBF16 {
    const DTYPE: DType = DType::BF16;
    #[inline(always)]
    fn rd(x: f32) -> f32 {
        f32::from_bits(u32::from(bf16_bits(x)) << 16)
    }
}

/// f32 → bf16 bits, round to nearest even, NaN → 0xFFFF (ATen AVX2 vectorized path).
#[inline(always)]
pub(crate) fn bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    let rounded = (u.wrapping_add(0x7FFF + ((u >> 16) & 1)) >> 16) as u16;
    // A select, not an early return, so loops over it vectorize.
    if x.is_nan() {
        0xFFFF
    } else {
        rounded
    }
}

/// Quiets a NaN as x86 does when it returns a NaN operand.
#[inline(always)]
fn quiet(x: f32) -> f32 {
    f32::from_bits(x.to_bits() | 0x0040_0000)
}

/// The x86 SSE/AVX result of a binary op whose result is `r`: when it is NaN, the first
/// NaN operand (quieted), else the default NaN 0xFFC00000 (0/0, 0·inf, inf-inf).
/// Independent of the host's own NaN rules and of constant folding.
#[inline(always)]
pub(crate) fn x86(r: f32, a: f32, b: f32) -> f32 {
    if !r.is_nan() {
        r
    } else if a.is_nan() {
        quiet(a)
    } else if b.is_nan() {
        quiet(b)
    } else {
        f32::from_bits(0xFFC0_0000)
    }
}

/// `a / b` with x86 NaN results.
#[inline(always)]
pub(crate) fn div(a: f32, b: f32) -> f32 {
    x86(a / b, a, b)
}

/// `a * b` with x86 NaN results.
#[inline(always)]
pub(crate) fn mul(a: f32, b: f32) -> f32 {
    x86(a * b, a, b)
}

/// `a + b` with x86 NaN results.
#[inline(always)]
pub(crate) fn add(a: f32, b: f32) -> f32 {
    x86(a + b, a, b)
}

/// `a - b` with x86 NaN results.
#[inline(always)]
pub(crate) fn sub(a: f32, b: f32) -> f32 {
    x86(a - b, a, b)
}

/// Rounds to the nearest integer, ties to even, for |x| < 2^22 (and passes larger
/// magnitudes, infinities and NaN through unchanged in value class): the classic
/// add-and-subtract of 1.5·2^23, exact under the default rounding mode, and vectorizable
/// on baseline x86-64 where `round_ties_even` is a library call.
#[inline(always)]
pub(crate) fn round_half_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    if x.abs() < 4_194_304.0 {
        (x + MAGIC) - MAGIC
    } else {
        x
    }
}

quant_core::multiversion! {
    /// True when every value is already in the model dtype (NaN counts as in it).
    pub(crate) fn all_in_dtype<R: Rd>(values: &[f32]) -> bool {
        // Whole chunks without an early exit, so the test vectorizes.
        values.chunks(4096).all(|c| {
            c.iter().fold(true, |ok, &v| {
                ok & ((R::rd(v).to_bits() == v.to_bits()) | v.is_nan())
            })
        })
    }
}

/// Encodes values already rounded to `dtype` (F32, F16 or BF16) as little-endian bytes.
pub(crate) fn encode(dtype: DType, values: &[f32]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(values.len() * dtype.size());
    match dtype {
        DType::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DType::F16 => values
            .iter()
            .for_each(|&v| out.extend_from_slice(&f16::from_f32(v).to_bits().to_le_bytes())),
        DType::BF16 => values
            .iter()
            .for_each(|&v| out.extend_from_slice(&bf16_bits(v).to_le_bytes())),
        other => {
            return Err(Error::UnsupportedDType {
                tensor: String::new(),
                dtype: other.to_string(),
                op: "quanto scales (F32, F16, BF16)".into(),
            })
        }
    }
    Ok(out)
}

/// Decodes little-endian F32/F16/BF16 bytes to f32 (exact).
pub(crate) fn decode(dtype: DType, bytes: &[u8]) -> Result<Vec<f32>> {
    match dtype {
        DType::F32 => Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        DType::F16 => Ok(bytes
            .chunks_exact(2)
            .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect()),
        DType::BF16 => Ok(bytes
            .chunks_exact(2)
            .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
            .collect()),
        other => Err(Error::UnsupportedDType {
            tensor: String::new(),
            dtype: other.to_string(),
            op: "quanto scales (F32, F16, BF16)".into(),
        }),
    }
}

/// Runs `$body` with `$r` bound to the [`Rd`] type of `$dtype` (F32, F16, BF16).
macro_rules! with_rd {
    ($dtype:expr, $r:ident => $body:expr, else $other:expr) => {
        match $dtype {
            quant_core::DType::F32 => {
                type $r = $crate::num::RdF32;
                $body
            }
            quant_core::DType::F16 => {
                type $r = $crate::num::RdF16;
                $body
            }
            quant_core::DType::BF16 => {
                type $r = $crate::num::RdBF16;
                $body
            }
            _ => $other,
        }
    };
}
pub(crate) use with_rd;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_round_is_half_even() {
        for i in -4000..4000 {
            let x = i as f32 * 0.25;
            assert_eq!(round_half_even_small(x), x.round_ties_even(), "{x}");
        }
        assert!(round_half_even_small(f32::NAN).is_nan());
        assert_eq!(round_half_even_small(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn bf16_matches_half_for_finite() {
        for bits in (0u32..=u32::MAX).step_by(40_503) {
            let x = f32::from_bits(bits);
            if !x.is_nan() {
                assert_eq!(bf16_bits(x), half::bf16::from_f32(x).to_bits(), "{bits:#x}");
            }
        }
    }

    #[test]
    fn f16_rounding_matches_half() {
        for bits in (0u32..=u32::MAX).step_by(4_093).chain([
            0x477F_F000,
            0x477F_EFFF,
            0x3880_0000,
            0x387F_FFFF,
            0x3300_0000,
            0x3300_0001,
            0x7F80_0000,
            0xFFC0_0000,
            0x7FA0_1234,
        ]) {
            let x = f32::from_bits(bits);
            let want = f16::from_f32(x).to_f32();
            let got = round_f16(x);
            if x.is_nan() {
                assert!(got.is_nan());
                assert_eq!(
                    f16::from_f32(got).to_bits(),
                    f16::from_f32(x).to_bits(),
                    "{bits:#x}"
                );
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#x}");
            }
        }
    }

    #[test]
    fn x86_nan_rules() {
        let zero = std::hint::black_box(0.0f32);
        assert_eq!(div(zero, zero).to_bits(), 0xFFC0_0000);
        assert_eq!(mul(0.0, f32::from_bits(0x7F80_0001)).to_bits(), 0x7FC0_0001);
        assert_eq!(mul(f32::from_bits(0xFFF0_0000), 2.0).to_bits(), 0xFFF0_0000);
        assert_eq!(div(1.0, 4.0), 0.25);
    }
}
