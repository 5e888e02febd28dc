//! Element types and the exact conversions between them.
//!
//! f32 → f16 and f32 → bf16 round to nearest even, keep infinities, and overflow to
//! infinity, as PyTorch's `Tensor.to(torch.float16 / torch.bfloat16)` does. NaN becomes a
//! quiet NaN of the same sign for f16 (payload kept, as the F16C instruction and `half` do)
//! and `0x7FC0` for bf16 (c10's scalar `round_to_nearest_even`).

use std::fmt;

use half::{f16, slice::HalfFloatSliceExt};

use crate::error::{Error, Result};

/// An element type, named as safetensors names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DType {
    /// Boolean, one byte.
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// float8 e4m3fn (no infinities, max 448).
    F8E4M3,
    /// float8 e5m2 (max 57344).
    F8E5M2,
    /// float8 e4m3fnuz (bias 8, max 240, one NaN 0x80, no negative zero).
    F8E4M3FNUZ,
}

impl DType {
    /// All dtypes, for parsing and listing.
    pub const ALL: [DType; 16] = [
        DType::Bool,
        DType::U8,
        DType::I8,
        DType::I16,
        DType::U16,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::U64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
        DType::F8E4M3,
        DType::F8E5M2,
        DType::F8E4M3FNUZ,
    ];

    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::Bool
            | DType::U8
            | DType::I8
            | DType::F8E4M3
            | DType::F8E5M2
            | DType::F8E4M3FNUZ => 1,
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 => 8,
        }
    }

    /// The safetensors name (`F32`, `BF16`, `F8_E4M3`, ...).
    pub const fn safetensors_name(self) -> &'static str {
        match self {
            DType::Bool => "BOOL",
            DType::U8 => "U8",
            DType::I8 => "I8",
            DType::I16 => "I16",
            DType::U16 => "U16",
            DType::I32 => "I32",
            DType::U32 => "U32",
            DType::I64 => "I64",
            DType::U64 => "U64",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::F8E4M3 => "F8_E4M3",
            DType::F8E5M2 => "F8_E5M2",
            DType::F8E4M3FNUZ => "F8_E4M3FNUZ",
        }
    }

    /// The PyTorch name (`float32`, `bfloat16`, `float8_e4m3fn`, ...).
    pub const fn torch_name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::U16 => "uint16",
            DType::I32 => "int32",
            DType::U32 => "uint32",
            DType::I64 => "int64",
            DType::U64 => "uint64",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::F8E4M3 => "float8_e4m3fn",
            DType::F8E5M2 => "float8_e5m2",
            DType::F8E4M3FNUZ => "float8_e4m3fnuz",
        }
    }

    /// True for floating-point dtypes (including float8).
    pub const fn is_float(self) -> bool {
        matches!(
            self,
            DType::F16
                | DType::BF16
                | DType::F32
                | DType::F64
                | DType::F8E4M3
                | DType::F8E5M2
                | DType::F8E4M3FNUZ
        )
    }

    /// Parses a safetensors name, a torch name (with or without `torch.`) or a short
    /// alias (`f32`, `fp16`, `bf16`, `half`, `float`).
    pub fn parse(name: &str) -> Result<DType> {
        let n = name.trim();
        let n = n.strip_prefix("torch.").unwrap_or(n);
        let lower = n.to_ascii_lowercase();
        let alias = match lower.as_str() {
            "f32" | "fp32" | "float" => Some(DType::F32),
            "f16" | "fp16" | "half" => Some(DType::F16),
            "bf16" => Some(DType::BF16),
            "f64" | "fp64" | "double" => Some(DType::F64),
            "f8_e4m3fn" | "float8_e4m3" | "e4m3" | "e4m3fn" => Some(DType::F8E4M3),
            "e5m2" => Some(DType::F8E5M2),
            _ => None,
        };
        if let Some(d) = alias {
            return Ok(d);
        }
        DType::ALL
            .into_iter()
            .find(|d| d.safetensors_name().eq_ignore_ascii_case(n) || d.torch_name() == lower)
            .ok_or_else(|| Error::UnknownDType {
                name: name.to_string(),
                context: String::new(),
            })
    }

    /// Maps a safetensors dtype. Dtypes quant does not handle are an error.
    pub fn from_safetensors(d: safetensors::Dtype) -> Result<DType> {
        use safetensors::Dtype as S;
        Ok(match d {
            S::BOOL => DType::Bool,
            S::U8 => DType::U8,
            S::I8 => DType::I8,
            S::I16 => DType::I16,
            S::U16 => DType::U16,
            S::I32 => DType::I32,
            S::U32 => DType::U32,
            S::I64 => DType::I64,
            S::U64 => DType::U64,
            S::F16 => DType::F16,
            S::BF16 => DType::BF16,
            S::F32 => DType::F32,
            S::F64 => DType::F64,
            S::F8_E4M3 => DType::F8E4M3,
            S::F8_E5M2 => DType::F8E5M2,
            S::F8_E4M3FNUZ => DType::F8E4M3FNUZ,
            other => {
                return Err(Error::UnknownDType {
                    name: format!("{other:?}"),
                    context: "safetensors dtype".into(),
                })
            }
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.safetensors_name())
    }
}

impl serde::Serialize for DType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.safetensors_name())
    }
}

impl<'de> serde::Deserialize<'de> for DType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DType::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// f32 → bf16 bits, round to nearest even, NaN → 0x7FC0 (c10 `round_to_nearest_even`).
#[inline]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7FC0;
    }
    let u = x.to_bits();
    let bias = ((u >> 16) & 1) + 0x7FFF;
    (u.wrapping_add(bias) >> 16) as u16
}

/// f32 → f16 bits, round to nearest even, overflow to infinity.
#[inline]
pub fn f32_to_f16_bits(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// Rounds an f32 through bf16 and back (exact representation of the bf16 value).
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits((f32_to_bf16_bits(x) as u32) << 16)
}

/// Rounds an f32 through f16 and back.
#[inline]
pub fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Rounds an f32 to the precision of `dtype` (F32 unchanged; F16/BF16 as PyTorch casts).
pub fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F16 => round_f16(x),
        DType::BF16 => round_bf16(x),
        _ => x,
    }
}

/// Decodes little-endian `bytes` of `dtype` into f32 values, appending to `out`.
/// Integers are converted as by `float(x)`; f64 rounds to nearest.
pub fn decode_to_f32(dtype: DType, bytes: &[u8], out: &mut Vec<f32>) -> Result<()> {
    let size = dtype.size();
    if bytes.len() % size != 0 {
        return Err(Error::UnsupportedDType {
            tensor: String::new(),
            dtype: dtype.to_string(),
            op: format!("decoding {} bytes (not a multiple of {size})", bytes.len()),
        });
    }
    let n = bytes.len() / size;
    out.reserve(n);
    match dtype {
        DType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        DType::F16 => {
            let start = out.len();
            out.resize(start + n, 0.0);
            let halves: Vec<f16> = bytes
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            halves.convert_to_f32_slice(&mut out[start..]);
        }
        DType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)),
        ),
        DType::F64 => out.extend(bytes.chunks_exact(8).map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            f64::from_le_bytes(a) as f32
        })),
        DType::F8E4M3 => out.extend(bytes.iter().map(|&b| f8e4m3_to_f32(b))),
        DType::F8E5M2 => out.extend(bytes.iter().map(|&b| f8e5m2_to_f32(b))),
        DType::F8E4M3FNUZ => out.extend(bytes.iter().map(|&b| f8e4m3fnuz_to_f32(b))),
        DType::Bool | DType::U8 => out.extend(bytes.iter().map(|&b| b as f32)),
        DType::I8 => out.extend(bytes.iter().map(|&b| b as i8 as f32)),
        DType::I16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32),
        ),
        DType::U16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32),
        ),
        DType::I32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32),
        ),
        DType::U32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32),
        ),
        DType::I64 | DType::U64 => out.extend(bytes.chunks_exact(8).map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            if dtype == DType::I64 {
                i64::from_le_bytes(a) as f32
            } else {
                u64::from_le_bytes(a) as f32
            }
        })),
    }
    Ok(())
}

/// Encodes f32 values as little-endian `dtype` bytes (F32, F16 or BF16), rounding to
/// nearest even as PyTorch does.
pub fn encode_f32(dtype: DType, values: &[f32]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(values.len() * dtype.size());
    match dtype {
        DType::F32 => {
            for v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        DType::F16 => {
            // Converted in slices so no second full-size buffer is needed.
            let mut halves = [f16::ZERO; 4096];
            for chunk in values.chunks(halves.len()) {
                let h = &mut halves[..chunk.len()];
                h.convert_from_f32_slice(chunk);
                for x in h.iter() {
                    out.extend_from_slice(&x.to_bits().to_le_bytes());
                }
            }
        }
        DType::BF16 => {
            for &v in values {
                out.extend_from_slice(&f32_to_bf16_bits(v).to_le_bytes());
            }
        }
        other => {
            return Err(Error::UnsupportedDType {
                tensor: String::new(),
                dtype: other.to_string(),
                op: "encoding from f32 (F32, F16, BF16 only)".into(),
            })
        }
    }
    Ok(out)
}

/// Decodes one float8 e4m3fn byte (bias 7, no infinities, 0x7F/0xFF are NaN).
pub fn f8e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((b >> 3) & 0x0F) as i32;
    let man = (b & 0x07) as f32;
    if exp == 0x0F && (b & 0x07) == 0x07 {
        return f32::NAN;
    }
    if exp == 0 {
        sign * man * 2f32.powi(-9)
    } else {
        sign * (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    }
}

/// Decodes one float8 e4m3fnuz byte (bias 8, no infinities, 0x80 is the only NaN and
/// there is no negative zero).
pub fn f8e4m3fnuz_to_f32(b: u8) -> f32 {
    if b == 0x80 {
        return f32::NAN;
    }
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((b >> 3) & 0x0F) as i32;
    let man = (b & 0x07) as f32;
    if exp == 0 {
        sign * man * 2f32.powi(-10)
    } else {
        sign * (1.0 + man / 8.0) * 2f32.powi(exp - 8)
    }
}

/// Decodes one float8 e5m2 byte (bias 15, IEEE-like with infinities and NaN).
pub fn f8e5m2_to_f32(b: u8) -> f32 {
    // e5m2 is the upper byte of an f16.
    f16::from_bits((b as u16) << 8).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn bf16_rounding_matches_half_for_finite() {
        for bits in (0u32..=u32::MAX).step_by(65_537) {
            let x = f32::from_bits(bits);
            if x.is_nan() {
                assert_eq!(f32_to_bf16_bits(x), 0x7FC0);
            } else {
                assert_eq!(
                    f32_to_bf16_bits(x),
                    bf16::from_f32(x).to_bits(),
                    "{bits:#x}"
                );
            }
        }
    }

    #[test]
    fn f16_overflow_is_inf() {
        assert_eq!(f32_to_f16_bits(65520.0), 0x7C00);
        assert_eq!(f32_to_f16_bits(65519.0), 0x7BFF);
        assert_eq!(f32_to_f16_bits(-1e9), 0xFC00);
    }

    #[test]
    fn parse_names() {
        assert_eq!(DType::parse("torch.bfloat16").unwrap(), DType::BF16);
        assert_eq!(DType::parse("F8_E4M3").unwrap(), DType::F8E4M3);
        assert_eq!(DType::parse("fp16").unwrap(), DType::F16);
        assert!(matches!(
            DType::parse("int3"),
            Err(Error::UnknownDType { .. })
        ));
    }

    #[test]
    fn e4m3_decode_table() {
        assert_eq!(f8e4m3_to_f32(0x7E), 448.0);
        assert!(f8e4m3_to_f32(0x7F).is_nan());
        assert_eq!(f8e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(f8e5m2_to_f32(0x7B), 57344.0);
        assert_eq!(f8e4m3fnuz_to_f32(0x7F), 240.0);
        assert_eq!(f8e4m3fnuz_to_f32(0x01), 2f32.powi(-10));
        assert!(f8e4m3fnuz_to_f32(0x80).is_nan());
        assert_eq!(DType::parse("F8_E4M3FNUZ").unwrap(), DType::F8E4M3FNUZ);
    }
}
