//! float8 encodings as PyTorch implements them (`torch.float8_e4m3fn`, `torch.float8_e5m2`).
//!
//! Encoding is round-to-nearest-even with subnormals. Out of range, e4m3fn (which has no
//! infinity) gives NaN from 464 up (448 is the largest finite value; 464 is the tie point,
//! which rounds to the even 448) and e5m2 gives infinity from 61440 up, as c10's scalar
//! converters do. A NaN input keeps its sign: `S.1111.111` / `S.11111.11`. torchao clamps
//! to ±max before it casts, so the quantizers never reach the overflow branch.

use quant_core::dtype::{f8e4m3_to_f32, f8e5m2_to_f32};
use quant_core::DType;

/// A float8 format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fp8 {
    /// `float8_e4m3fn`: 1-4-3, bias 7, max 448, no infinities.
    E4M3Fn,
    /// `float8_e5m2`: 1-5-2, bias 15, max 57344, IEEE-like.
    E5M2,
}

impl Fp8 {
    /// Largest finite value (torch `finfo.max`).
    pub const fn max(self) -> f32 {
        match self {
            Fp8::E4M3Fn => 448.0,
            Fp8::E5M2 => 57344.0,
        }
    }

    /// The safetensors / quant dtype.
    pub const fn dtype(self) -> DType {
        match self {
            Fp8::E4M3Fn => DType::F8E4M3,
            Fp8::E5M2 => DType::F8E5M2,
        }
    }

    /// The torch dtype name, e.g. `float8_e4m3fn`.
    pub const fn torch_name(self) -> &'static str {
        match self {
            Fp8::E4M3Fn => "float8_e4m3fn",
            Fp8::E5M2 => "float8_e5m2",
        }
    }

    /// The format stored as `dtype`, if it is a float8 dtype.
    pub fn from_dtype(dtype: DType) -> Option<Fp8> {
        match dtype {
            DType::F8E4M3 => Some(Fp8::E4M3Fn),
            DType::F8E5M2 => Some(Fp8::E5M2),
            _ => None,
        }
    }

    /// Encodes one f32 (see the module docs).
    #[inline(always)]
    pub fn encode(self, x: f32) -> u8 {
        match self {
            Fp8::E4M3Fn => f32_to_e4m3fn(x),
            Fp8::E5M2 => f32_to_e5m2(x),
        }
    }

    /// Decodes one byte exactly.
    #[inline]
    pub fn decode(self, b: u8) -> f32 {
        match self {
            Fp8::E4M3Fn => f8e4m3_to_f32(b),
            Fp8::E5M2 => f8e5m2_to_f32(b),
        }
    }

    /// The 256 decoded values, indexed by byte.
    pub fn table(self) -> [f32; 256] {
        let mut t = [0f32; 256];
        for (b, v) in (0u8..=255).zip(t.iter_mut()) {
            *v = self.decode(b);
        }
        t
    }
}

/// f32 → e4m3fn byte, round to nearest even.
#[inline(always)]
pub fn f32_to_e4m3fn(x: f32) -> u8 {
    const NAN_FROM: u32 = 0x43F0_0000; // 480.0: first value whose rounding would need exponent 16
    const MIN_NORMAL: u32 = 121 << 23; // 2^-6
    const SUB_MAGIC: u32 = 141 << 23; // 2^14, whose f32 ulp is 2^-9 = the e4m3 subnormal step
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let abs = bits & 0x7FFF_FFFF;
    // Both paths are computed and one selected, so that loops over this vectorize.
    // Subnormal: the f32 addition rounds to a multiple of 2^-9 (nearest even); the low
    // bits are then the subnormal code (8 means 2^-6, the first normal: still right).
    let sub = (f32::from_bits(abs) + f32::from_bits(SUB_MAGIC))
        .to_bits()
        .wrapping_sub(SUB_MAGIC);
    // Normal: rebias the exponent from 127 to 7, then round away 20 mantissa bits.
    let odd = (abs >> 20) & 1;
    let normal = abs
        .wrapping_sub((127 - 7) << 23)
        .wrapping_add(0x7FFFF + odd)
        >> 20;
    let code = if abs >= NAN_FROM {
        0x7F
    } else if abs < MIN_NORMAL {
        sub
    } else {
        normal
    };
    sign | (code as u8)
}

/// f32 → e5m2 byte, round to nearest even.
#[inline(always)]
pub fn f32_to_e5m2(x: f32) -> u8 {
    const INF_FROM: u32 = 143 << 23; // 65536.0
    const F32_INF: u32 = 0x7F80_0000;
    const MIN_NORMAL: u32 = 113 << 23; // 2^-14
    const SUB_MAGIC: u32 = 134 << 23; // 2^7, whose f32 ulp is 2^-16 = the e5m2 subnormal step
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let abs = bits & 0x7FFF_FFFF;
    let sub = (f32::from_bits(abs) + f32::from_bits(SUB_MAGIC))
        .to_bits()
        .wrapping_sub(SUB_MAGIC);
    let odd = (abs >> 21) & 1;
    let normal = abs
        .wrapping_sub((127 - 15) << 23)
        .wrapping_add(0xFFFFF + odd)
        >> 21;
    let code = if abs > F32_INF {
        0x7F
    } else if abs >= INF_FROM {
        0x7C
    } else if abs < MIN_NORMAL {
        sub
    } else {
        normal
    };
    sign | (code as u8)
}

/// A slow, obviously-correct encoder for checking [`Fp8::encode`]: the finite code whose
/// value is nearest to `x` (exact comparison in f64), ties to the even code; NaN keeps its
/// sign. Only defined for `|x| <= max` (torchao always clamps first).
pub fn encode_reference(fmt: Fp8, x: f32) -> u8 {
    if x.is_nan() {
        return if x.is_sign_negative() { 0xFF } else { 0x7F };
    }
    let x = f64::from(x);
    let mut best: Option<(f64, u8)> = None;
    for b in 0u8..=255 {
        let v = fmt.decode(b);
        if !v.is_finite() {
            continue;
        }
        // Zeros: pick the one with x's sign.
        if v == 0.0 && (b & 0x80 != 0) != x.is_sign_negative() {
            continue;
        }
        let d = (f64::from(v) - x).abs();
        best = match best {
            None => Some((d, b)),
            Some((bd, bb)) if d < bd || (d == bd && b & 1 == 0 && bb & 1 == 1) => Some((d, b)),
            keep => keep,
        };
    }
    best.map_or(0, |(_, b)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finite_code_round_trips() {
        for fmt in [Fp8::E4M3Fn, Fp8::E5M2] {
            for b in 0u8..=255 {
                let v = fmt.decode(b);
                if v.is_finite() {
                    assert_eq!(fmt.encode(v), b, "{fmt:?} {b:#04x}");
                }
            }
        }
    }
}
