//! C arithmetic as ggml's quantizers compile it (ggml `src/ggml-quants.c` and `ggml-impl.h`,
//! commit d99724f2): `nearest_int`, the `MIN`/`MAX` macros, x86-64 float→int casts and the
//! f16/bf16 conversions, bit for bit. Every quantizer in [`crate::types`] builds on these.

/// ggml's `GROUP_MAX_EPS`: below this a group counts as all zero.
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `QK_K`: the super-block size of the K-quants.
pub const QK_K: usize = 256;

/// ggml's `nearest_int`: round to nearest, ties to even, through the float magic number
/// `12582912.0` (1.5 × 2^23). Exact for |x| ≤ 4194303; outside that range (or for NaN)
/// it returns the same bit-pattern garbage as the C code.
#[inline(always)]
pub fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0_f32;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

/// C's `MAX(a, b)` macro: `a > b ? a : b` (so `b` wins on NaN or equality).
#[inline(always)]
pub fn c_max<T: PartialOrd>(a: T, b: T) -> T {
    if a > b {
        a
    } else {
        b
    }
}

/// C's `MIN(a, b)` macro: `a < b ? a : b` (so `b` wins on NaN or equality).
#[inline(always)]
pub fn c_min<T: PartialOrd>(a: T, b: T) -> T {
    if a < b {
        a
    } else {
        b
    }
}

/// The value of largest magnitude in `x`, the first one on ties (ggml's `amax`/`max`
/// scan of `quantize_row_q4_0_ref` and `quantize_row_q5_0_ref`); 0 when every value is
/// ±0 or NaN.
#[inline(always)]
pub fn max_by_magnitude(x: &[f32]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// C's `(int)x` for a float on x86-64 (`cvttss2si`): truncation toward zero, and
/// `INT_MIN` for NaN or values out of range (where Rust's `as` would saturate). A C cast
/// to `int8_t`/`uint8_t` is this value's low byte.
#[inline(always)]
pub fn c_f32_to_i32(x: f32) -> i32 {
    if x.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        i32::MIN
    } else {
        x as i32
    }
}

/// ggml's `GGML_FP32_TO_FP16` (`ggml_compute_fp32_to_fp16`, from Maratyszcza/FP16):
/// round to nearest even, overflow to infinity, every NaN to `0x7E00` (sign kept).
#[inline(always)]
pub fn fp32_to_fp16(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let mut bias = shl1_w & 0xFF00_0000;
    if bias < 0x7100_0000 {
        bias = 0x7100_0000;
    }
    // ggml writes `fp32_from_bits(...) + base`; IEEE addition commutes exactly.
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    ((sign >> 16)
        | if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign
        }) as u16
}

/// ggml's `GGML_FP16_TO_FP32` (`ggml_compute_fp16_to_fp32`): exact.
#[inline(always)]
pub fn fp16_to_fp32(h: u16) -> f32 {
    let w = (h as u32) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);
    let exp_offset = 0xE0u32 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 2^-112
    let normalized = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;
    let magic_mask = 126u32 << 23;
    let denormalized = f32::from_bits((two_w >> 17) | magic_mask) - 0.5;
    let cutoff = 1u32 << 27;
    let result = sign
        | if two_w < cutoff {
            denormalized.to_bits()
        } else {
            normalized.to_bits()
        };
    f32::from_bits(result)
}

/// ggml's `GGML_FP32_TO_BF16`: round to nearest even; NaN → `(bits >> 16) | 64` (quiet,
/// payload and sign kept).
#[inline(always)]
pub fn fp32_to_bf16(s: f32) -> u16 {
    let u = s.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// ggml's `GGML_BF16_TO_FP32`: exact.
#[inline(always)]
pub fn bf16_to_fp32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Reads a little-endian u16 from two bytes.
#[inline(always)]
pub fn le16(b: [u8; 2]) -> u16 {
    u16::from_le_bytes(b)
}

/// C's `lroundf` (glibc, x86-64) narrowed to `int`: round half away from zero; NaN and
/// out-of-range values give `LONG_MIN`, whose low 32 bits are 0.
#[inline(always)]
pub fn c_lroundf(x: f32) -> i32 {
    const TWO_63: f32 = 9_223_372_036_854_775_808.0;
    if x.is_nan() || !(-TWO_63..TWO_63).contains(&x) {
        return 0;
    }
    let r = x.round();
    if r.abs() < 2_147_483_648.0 {
        r as i32
    } else {
        (r as i64) as i32
    }
}

/// [`c_lroundf`] for the ternary types, whose arguments are `x/max|x|`: in `(−1.5, 1.5)`
/// the result is decided by two comparisons (branch-free, so the loops vectorize);
/// anything else (NaN, ±Inf) takes [`c_lroundf`].
#[inline(always)]
pub fn c_lroundf_small(x: f32) -> i32 {
    if x.abs() < 1.5 {
        (x >= 0.5) as i32 - (x <= -0.5) as i32
    } else {
        c_lroundf(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lroundf_small_equals_lroundf() {
        let mut xs = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
        ];
        for k in -1_600_000..1_600_000 {
            xs.push(k as f32 * 1e-6);
        }
        for v in [0.5f32, -0.5, 1.5, -1.5, 1.0, -1.0] {
            xs.push(f32::from_bits(v.to_bits() + 1));
            xs.push(f32::from_bits(v.to_bits() - 1));
        }
        for x in xs {
            assert_eq!(c_lroundf_small(x), c_lroundf(x), "{x}");
            if x.is_finite() && x.abs() < 1e9 {
                assert_eq!(c_lroundf(x), x.round() as i32, "{x}");
            }
        }
    }

    #[test]
    fn nearest_int_ties_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.4), -2);
        assert_eq!(nearest_int(4194303.0), 4194303);
    }

    #[test]
    fn fp16_conversions_match_exact_rounding() {
        for bits in 0..=u16::MAX {
            let f = fp16_to_fp32(bits);
            if f.is_nan() {
                assert_eq!(fp32_to_fp16(f) & 0x7fff, 0x7e00);
            } else {
                assert_eq!(fp32_to_fp16(f), bits, "{bits:#06x}");
            }
        }
        assert_eq!(fp32_to_fp16(65520.0), 0x7c00);
        assert_eq!(fp32_to_fp16(65519.99), 0x7bff);
        assert_eq!(fp32_to_fp16(-1e-10), 0x8000);
    }

    #[test]
    fn bf16_nan_is_quieted() {
        assert_eq!(fp32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(fp32_to_bf16(1.0), 0x3f80);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
    }
}
