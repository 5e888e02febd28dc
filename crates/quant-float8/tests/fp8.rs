//! The float8 encoders against the slow nearest-value reference (`fp8::encode_reference`):
//! every bf16 value in range, and 200 000 pseudo-random f32 values in range.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use quant_float8::fp8::{encode_reference, Fp8};

#[test]
fn all_bf16_values_in_range() {
    for fmt in [Fp8::E4M3Fn, Fp8::E5M2] {
        let mut tested = 0;
        for bits in 0u16..=u16::MAX {
            let x = f32::from_bits(u32::from(bits) << 16);
            if !(x.is_nan() || x.abs() <= fmt.max()) {
                continue;
            }
            let fast = fmt.encode(x);
            let slow = encode_reference(fmt, x);
            assert_eq!(fast, slow, "{fmt:?} bf16 {bits:#06x} = {x:e}");
            tested += 1;
        }
        assert!(tested > 30_000, "{tested}");
    }
}

#[test]
fn random_f32_values_in_range() {
    // xorshift64*: reproducible, no dependency.
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for fmt in [Fp8::E4M3Fn, Fp8::E5M2] {
        for i in 0..100_000 {
            let r = next();
            // Half uniform in [-max, max], half log-uniform over the whole exponent range
            // (subnormals of the format and below included).
            let x = if i % 2 == 0 {
                ((r >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * fmt.max()
            } else {
                let mag = f32::from_bits(((r >> 32) as u32) & 0x7FFF_FFFF);
                let sign = if r & 1 == 1 { -1.0 } else { 1.0 };
                sign * (mag % fmt.max())
            };
            if !x.is_finite() {
                continue;
            }
            assert_eq!(fmt.encode(x), encode_reference(fmt, x), "{fmt:?} {x:e}");
        }
    }
}

#[test]
fn nan_keeps_its_sign() {
    for fmt in [Fp8::E4M3Fn, Fp8::E5M2] {
        assert_eq!(fmt.encode(-f32::NAN), encode_reference(fmt, -f32::NAN));
        assert_eq!(fmt.encode(f32::NAN), encode_reference(fmt, f32::NAN));
        assert!(fmt.decode(fmt.encode(f32::NAN)).is_nan());
    }
}

/// The slice encoder the quantizers use (AVX2 and baseline builds): scale 1 leaves every
/// in-range bf16 value as it is, so each code must be the reference's.
#[test]
fn slice_encoder_builds_match_the_reference() {
    for fmt in [Fp8::E4M3Fn, Fp8::E5M2] {
        let vals: Vec<f32> = (0u16..=u16::MAX)
            .map(|b| f32::from_bits(u32::from(b) << 16))
            .filter(|x| x.abs() <= fmt.max())
            .collect();
        let want: Vec<u8> = vals.iter().map(|&x| encode_reference(fmt, x)).collect();
        for simd in [true, false] {
            let _simd = quant_core::simd::force_simd(simd);
            let mut got = vec![0u8; vals.len()];
            quant_float8::kernels::fp8_encode_slice(&vals, 1.0, fmt, &mut got);
            assert!(got == want, "{fmt:?} simd={simd}");
        }
    }
}
