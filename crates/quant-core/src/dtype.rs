//! Element types and the exact conversions between them.
//!
//! f32 → f16 and f32 → bf16 round to nearest even, keep infinities, and overflow to
//! infinity, as PyTorch's `Tensor.to(torch.float16 / torch.bfloat16)` does. NaN becomes a
//! quiet NaN of the same sign for f16 (payload kept, as the F16C instruction and `half` do)
//! and `0x7FC0` for bf16 (c10's scalar `round_to_nearest_even`).

use std::fmt;
use std::mem::MaybeUninit;

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
/// Branch-free, so loops over it vectorize.
#[inline(always)]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    let rounded = (u.wrapping_add(0x7FFF + ((u >> 16) & 1)) >> 16) as u16;
    if (u & 0x7FFF_FFFF) > 0x7F80_0000 {
        0x7FC0
    } else {
        rounded
    }
}

/// f32 → f16 bits, round to nearest even, f16 subnormals, overflow to infinity, NaN
/// quiet with its sign and top payload bits: the results of F16C's `vcvtps2ph` and of
/// `half::f16::from_f32`. Branch-free, so loops over it vectorize.
#[inline(always)]
pub fn f32_to_f16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    let sign = (u >> 16) & 0x8000;
    let a = u & 0x7FFF_FFFF;
    // Normal range: rebias the exponent, keep 10 mantissa bits, ties to even (a carry
    // into the exponent is the right result).
    let normal = (a.wrapping_add(0x0FFF + ((a >> 13) & 1)) >> 13).wrapping_sub((127 - 15) << 10);
    // Below 2^-14: 0.5 has an ulp of 2^-24, the f16 subnormal step, so the FPU's addition
    // rounds to the code (0x400, the smallest normal, when it rounds up to 2^-14).
    let sub = (f32::from_bits(a) + 0.5)
        .to_bits()
        .wrapping_sub(0x3F00_0000);
    let nan = 0x7E00 | ((a >> 13) & 0x03FF);
    let h = if a > 0x7F80_0000 {
        nan
    } else if a >= 0x477F_F000 {
        0x7C00
    } else if a < 0x3880_0000 {
        sub
    } else {
        normal
    };
    (sign | h) as u16
}

/// f16 bits → f32, exact; a NaN is quieted keeping its payload (as F16C's `vcvtph2ps` and
/// `half::f16::to_f32` do). Branch-free, so loops over it vectorize.
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let a = h & 0x7FFF;
    let normal = (a << 13).wrapping_add((127 - 15) << 23);
    // Subnormal m·2^-24: (2^-14 + m·2^-24) - 2^-14, both exact.
    let sub = (f32::from_bits(normal.wrapping_add(1 << 23)) - f32::from_bits(113 << 23)).to_bits();
    let r = if a > 0x7C00 {
        (a << 13) | 0x7FC0_0000
    } else if a == 0x7C00 {
        0x7F80_0000
    } else if a < 0x0400 {
        sub
    } else {
        normal
    };
    f32::from_bits(sign | r)
}

/// Rounds an f32 through bf16 and back (exact representation of the bf16 value).
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits((f32_to_bf16_bits(x) as u32) << 16)
}

/// Rounds an f32 through f16 and back (NaN: see [`f32_to_f16_bits`]). Branch-free.
#[inline(always)]
pub fn round_f16(x: f32) -> f32 {
    let u = x.to_bits();
    let sign = u & 0x8000_0000;
    let a = u & 0x7FFF_FFFF;
    // Normal f16 range: keep 10 mantissa bits, ties to even (carries into the exponent).
    let normal = a.wrapping_add(0x0FFF + ((a >> 13) & 1)) & 0xFFFF_E000;
    // Below 2^-14: whole multiples of 2^-24, rounded by the FPU (the ulp of 0.5 is 2^-24).
    let sub = ((f32::from_bits(a) + 0.5) - 0.5).to_bits();
    let nan = 0x7FC0_0000 | (a & 0x007F_E000);
    let r = if a > 0x7F80_0000 {
        nan
    } else if a >= 0x477F_F000 {
        0x7F80_0000
    } else if a < 0x3880_0000 {
        sub
    } else {
        normal
    };
    f32::from_bits(sign | r)
}

/// Rounds an f32 to the precision of `dtype` (F32 unchanged; F16/BF16 as PyTorch casts).
pub fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F16 => round_f16(x),
        DType::BF16 => round_bf16(x),
        _ => x,
    }
}

/// Elements per parallel task of the slice conversions.
const PAR_CHUNK: usize = 1 << 16;

// The slice kernels write every element of `out` (the callers pass `src` holding exactly
// `out.len()` elements), which is what lets their callers skip zeroing output buffers.

crate::multiversion! {
    /// Little-endian f16 bytes → f32 (exact).
    fn decode_f16_into(bytes: &[u8], out: &mut [MaybeUninit<f32>]) {
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            o.write(f16_bits_to_f32(u16::from_le_bytes([c[0], c[1]])));
        }
    }
}

crate::multiversion! {
    /// Little-endian bf16 bytes → f32 (exact).
    fn decode_bf16_into(bytes: &[u8], out: &mut [MaybeUninit<f32>]) {
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            o.write(f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16));
        }
    }
}

crate::multiversion! {
    /// Little-endian f32 bytes → f32.
    fn decode_f32_into(bytes: &[u8], out: &mut [MaybeUninit<f32>]) {
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            o.write(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
    }
}

/// f32 → little-endian f16 bytes (see [`f32_to_f16_bits`]): with F16C, eight values per
/// `vcvtps2ph` (round to nearest even; a NaN quieted keeping its payload's top bits, as
/// `f32_to_f16_bits` does: the same bits for every f32, checked by a test).
fn encode_f16_into(values: &[f32], out: &mut [MaybeUninit<u8>]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::simd_enabled() {
        // SAFETY: `simd_enabled` checked at run time that this CPU has AVX2 and F16C.
        return unsafe { encode_f16_f16c(values, out) };
    }
    encode_f16_scalar(values, out)
}

/// [`encode_f16_into`] one value at a time.
#[inline(always)]
fn encode_f16_scalar(values: &[f32], out: &mut [MaybeUninit<u8>]) {
    for (o, &v) in out.chunks_exact_mut(2).zip(values) {
        let [a, b] = f32_to_f16_bits(v).to_le_bytes();
        o[0].write(a);
        o[1].write(b);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn encode_f16_f16c(values: &[f32], out: &mut [MaybeUninit<u8>]) {
    use std::arch::x86_64::*;
    let n = values.len().min(out.len() / 2);
    let (values, out) = (&values[..n], &mut out[..2 * n]);
    let mut xs = values.chunks_exact(8);
    let mut os = out.chunks_exact_mut(16);
    for (x, o) in (&mut xs).zip(&mut os) {
        // SAFETY: `x` holds 8 floats and `o` 16 bytes; unaligned loads and stores.
        unsafe {
            let h = _mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(_mm256_loadu_ps(x.as_ptr()));
            _mm_storeu_si128(o.as_mut_ptr().cast(), h);
        }
    }
    encode_f16_scalar(xs.remainder(), os.into_remainder());
}

crate::multiversion! {
    /// f32 → little-endian bf16 bytes (see [`f32_to_bf16_bits`]).
    fn encode_bf16_into(values: &[f32], out: &mut [MaybeUninit<u8>]) {
        for (o, &v) in out.chunks_exact_mut(2).zip(values) {
            let [a, b] = f32_to_bf16_bits(v).to_le_bytes();
            o[0].write(a);
            o[1].write(b);
        }
    }
}

crate::multiversion! {
    /// f32 → little-endian f32 bytes.
    fn encode_f32_into(values: &[f32], out: &mut [MaybeUninit<u8>]) {
        for (o, &v) in out.chunks_exact_mut(4).zip(values) {
            for (o, b) in o.iter_mut().zip(v.to_le_bytes()) {
                o.write(b);
            }
        }
    }
}

/// Runs `f` on matching chunks of `src` (`ratio_src` units per element) and `dst`
/// (`ratio_dst` per element), in parallel for large inputs.
fn par_convert<S: Sync, D: Send>(
    src: &[S],
    ratio_src: usize,
    dst: &mut [D],
    ratio_dst: usize,
    f: fn(&[S], &mut [D]),
) {
    use rayon::prelude::*;
    if dst.len() <= PAR_CHUNK * ratio_dst || rayon::current_num_threads() == 1 {
        f(src, dst);
        return;
    }
    dst.par_chunks_mut(PAR_CHUNK * ratio_dst)
        .zip(src.par_chunks(PAR_CHUNK * ratio_src))
        .for_each(|(d, s)| f(s, d));
}

/// Decodes little-endian F32/F16/BF16 `bytes` into `out`, which must hold exactly their
/// element count (other dtypes: see [`decode_to_f32`]).
pub fn decode_float_into(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let size = dtype.size();
    let f: fn(&[u8], &mut [MaybeUninit<f32>]) = match dtype {
        DType::F32 => decode_f32_into,
        DType::F16 => decode_f16_into,
        DType::BF16 => decode_bf16_into,
        _ => {
            return Err(Error::UnsupportedDType {
                tensor: String::new(),
                dtype: dtype.to_string(),
                op: "decoding into a float buffer (f32, f16 or bf16)".into(),
            })
        }
    };
    if bytes.len() != out.len().saturating_mul(size) {
        return Err(Error::UnsupportedDType {
            tensor: String::new(),
            dtype: dtype.to_string(),
            op: format!("decoding {} bytes into {} values", bytes.len(), out.len()),
        });
    }
    // SAFETY: the kernels store a value (never `uninit`) for every element of their chunk,
    // so `out` stays initialized.
    let dst = unsafe { crate::simd::as_uninit_mut(out) };
    par_convert(bytes, size, dst, 1, f);
    Ok(())
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
    if matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        let f: fn(&[u8], &mut [MaybeUninit<f32>]) = match dtype {
            DType::F32 => decode_f32_into,
            DType::F16 => decode_f16_into,
            _ => decode_bf16_into,
        };
        // SAFETY: `bytes` holds exactly `n` elements, and each kernel writes one value per
        // element of its chunk (`par_convert` pairs `n` outputs with `n * size` bytes).
        unsafe {
            crate::simd::extend_written(out, n, |dst| par_convert(bytes, size, dst, 1, f));
        }
        return Ok(());
    }
    out.reserve(n);
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => {}
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

/// Decodes little-endian `bytes` of `dtype` into `out`, which must hold exactly
/// `bytes.len() / dtype.size()` values (else an error). As [`decode_to_f32`], without a
/// buffer of its own for F32, F16 and BF16.
pub fn decode_into(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let size = dtype.size();
    if Some(bytes.len()) != out.len().checked_mul(size) {
        return Err(Error::UnsupportedDType {
            tensor: String::new(),
            dtype: dtype.to_string(),
            op: format!("decoding {} bytes into {} values", bytes.len(), out.len()),
        });
    }
    let f: fn(&[u8], &mut [MaybeUninit<f32>]) = match dtype {
        DType::F32 => decode_f32_into,
        DType::F16 => decode_f16_into,
        DType::BF16 => decode_bf16_into,
        _ => {
            let mut tmp = Vec::with_capacity(out.len());
            decode_to_f32(dtype, bytes, &mut tmp)?;
            out.copy_from_slice(&tmp);
            return Ok(());
        }
    };
    // SAFETY: the kernels only write values.
    let view = unsafe { crate::simd::as_uninit_mut(out) };
    par_convert(bytes, size, view, 1, f);
    Ok(())
}

/// Encodes f32 values as little-endian `dtype` bytes (F32, F16 or BF16), rounding to
/// nearest even as PyTorch does.
pub fn encode_f32(dtype: DType, values: &[f32]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_f32_reusing(dtype, values, &mut out)?;
    Ok(out)
}

/// [`encode_f32`] into `out`, replacing what it held: its allocation is reused when
/// large enough (no byte is zeroed first; every one is written).
pub fn encode_f32_reusing(dtype: DType, values: &[f32], out: &mut Vec<u8>) -> Result<()> {
    let f: fn(&[f32], &mut [MaybeUninit<u8>]) = match dtype {
        DType::F32 => encode_f32_into,
        DType::F16 => encode_f16_into,
        DType::BF16 => encode_bf16_into,
        other => {
            return Err(Error::UnsupportedDType {
                tensor: String::new(),
                dtype: other.to_string(),
                op: "encoding from f32 (F32, F16, BF16 only)".into(),
            })
        }
    };
    let size = dtype.size();
    out.clear();
    // SAFETY: each kernel writes `size` bytes for each of the values of its chunk, and
    // `par_convert` pairs `values.len() * size` bytes with `values.len()` values.
    unsafe {
        crate::simd::extend_written(out, values.len() * size, |dst| {
            par_convert(values, 1, dst, size, f)
        });
    }
    Ok(())
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
    f16_bits_to_f32((b as u16) << 8)
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

    /// Bit patterns covering every f16 rounding boundary region, subnormals, overflow and
    /// NaN payloads, plus a stride over all f32.
    fn f32_samples() -> Vec<u32> {
        let mut v: Vec<u32> = (0u32..=u32::MAX).step_by(3_331).collect();
        for e in [
            0x3300_0000u32,
            0x3380_0000,
            0x3880_0000,
            0x3F80_0000,
            0x477F_E000,
            0x477F_F000,
            0x7F80_0000,
        ] {
            for d in 0..5_000 {
                v.push(e.wrapping_add(d));
                v.push(e.wrapping_sub(d));
            }
        }
        let signed: Vec<u32> = v.iter().map(|b| b ^ 0x8000_0000).collect();
        v.extend(signed);
        v
    }

    #[test]
    fn f16_conversions_match_half() {
        for bits in f32_samples() {
            let x = f32::from_bits(bits);
            let want = half::f16::from_f32(x);
            assert_eq!(f32_to_f16_bits(x), want.to_bits(), "{bits:#x}");
            assert_eq!(round_f16(x).to_bits(), want.to_f32().to_bits(), "{bits:#x}");
        }
        for h in 0..=u16::MAX {
            assert_eq!(
                f16_bits_to_f32(h).to_bits(),
                half::f16::from_bits(h).to_f32().to_bits(),
                "{h:#x}"
            );
        }
    }

    #[test]
    fn slice_conversions_match_scalar_in_both_builds() {
        let xs: Vec<f32> = f32_samples().into_iter().map(f32::from_bits).collect();
        let halves: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        for simd in [false, true] {
            let _simd = crate::simd::force_simd(simd);
            let f16 = encode_f32(DType::F16, &xs).unwrap();
            let bf16 = encode_f32(DType::BF16, &xs).unwrap();
            let f32b = encode_f32(DType::F32, &xs).unwrap();
            for (i, &x) in xs.iter().enumerate() {
                assert_eq!(f16[2 * i..2 * i + 2], f32_to_f16_bits(x).to_le_bytes());
                assert_eq!(bf16[2 * i..2 * i + 2], f32_to_bf16_bits(x).to_le_bytes());
                assert_eq!(f32b[4 * i..4 * i + 4], x.to_le_bytes());
            }
            let mut back = vec![1.0];
            decode_to_f32(DType::F32, &f32b, &mut back).unwrap();
            assert!(back[1..]
                .iter()
                .zip(&xs)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            for dt in [DType::F16, DType::BF16] {
                let mut out = Vec::new();
                decode_to_f32(dt, &halves, &mut out).unwrap();
                for (h, v) in (0..=u16::MAX).zip(&out) {
                    let want = if dt == DType::F16 {
                        f16_bits_to_f32(h)
                    } else {
                        f32::from_bits(u32::from(h) << 16)
                    };
                    assert_eq!(v.to_bits(), want.to_bits());
                }
            }
        }
    }

    /// The F16C encoder against `f32_to_f16_bits` on every f32 (about 2^32 values: run
    /// with `--ignored` in release; the samples above run in every build).
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[ignore = "every f32: minutes in a debug build"]
    fn f16c_encoder_is_f32_to_f16_bits_for_every_float() {
        if !crate::simd::simd_enabled() {
            return;
        }
        let mut out = vec![MaybeUninit::new(0u8); 2 << 24];
        for hi in 0u32..256 {
            let xs: Vec<f32> = (0..1u32 << 24)
                .map(|lo| f32::from_bits(hi << 24 | lo))
                .collect();
            // SAFETY: `simd_enabled` checked that this CPU has AVX2 and F16C.
            unsafe { encode_f16_f16c(&xs, &mut out) };
            for (x, o) in xs.iter().zip(out.chunks_exact(2)) {
                // SAFETY: every byte was written (initially and by the encoder).
                let got = unsafe { u16::from_le_bytes([o[0].assume_init(), o[1].assume_init()]) };
                assert_eq!(got, f32_to_f16_bits(*x), "{:#x}", x.to_bits());
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
