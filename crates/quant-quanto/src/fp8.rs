//! The three float8 formats of quanto's qfloat8 qtypes: f32 → float8 with round to nearest
//! even (as c10's `Float8_*` conversions), and float8 → f32 tables that reproduce c10's
//! decoded bit patterns, NaNs included.

use quant_core::DType;

/// A float8 format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Float8Format {
    /// `torch.float8_e4m3fn`: bias 7, no infinities, NaN = S.1111.111, max 448.
    E4M3FN,
    /// `torch.float8_e5m2`: bias 15, IEEE-like with infinities and NaNs, max 57344.
    E5M2,
    /// `torch.float8_e4m3fnuz`: bias 8, no infinities, one NaN (0x80), no negative zero,
    /// max 240.
    E4M3FNUZ,
}

const E4M3FN_TABLE: [u32; 256] = build_table(Float8Format::E4M3FN);
const E5M2_TABLE: [u32; 256] = build_table(Float8Format::E5M2);
const E4M3FNUZ_TABLE: [u32; 256] = build_table(Float8Format::E4M3FNUZ);

impl Float8Format {
    /// Every format, for parsing and listing.
    pub const ALL: [Float8Format; 3] = [
        Float8Format::E4M3FN,
        Float8Format::E5M2,
        Float8Format::E4M3FNUZ,
    ];

    /// The parameter value (`e4m3fn`, `e5m2`, `e4m3fnuz`).
    pub const fn name(self) -> &'static str {
        match self {
            Float8Format::E4M3FN => "e4m3fn",
            Float8Format::E5M2 => "e5m2",
            Float8Format::E4M3FNUZ => "e4m3fnuz",
        }
    }

    /// The quanto qtype name (`qfloat8_e4m3fn`, ...).
    pub const fn qtype(self) -> &'static str {
        match self {
            Float8Format::E4M3FN => "qfloat8_e4m3fn",
            Float8Format::E5M2 => "qfloat8_e5m2",
            Float8Format::E4M3FNUZ => "qfloat8_e4m3fnuz",
        }
    }

    /// The stored dtype.
    pub const fn dtype(self) -> DType {
        match self {
            Float8Format::E4M3FN => DType::F8E4M3,
            Float8Format::E5M2 => DType::F8E5M2,
            Float8Format::E4M3FNUZ => DType::F8E4M3FNUZ,
        }
    }

    /// The largest finite value (quanto's qmax).
    pub const fn max(self) -> f32 {
        match self {
            Float8Format::E4M3FN => 448.0,
            Float8Format::E5M2 => 57344.0,
            Float8Format::E4M3FNUZ => 240.0,
        }
    }

    const fn man_bits(self) -> u32 {
        match self {
            Float8Format::E5M2 => 2,
            _ => 3,
        }
    }

    const fn exp_bits(self) -> u32 {
        match self {
            Float8Format::E5M2 => 5,
            _ => 4,
        }
    }

    const fn bias(self) -> u32 {
        match self {
            Float8Format::E4M3FN => 7,
            Float8Format::E5M2 => 15,
            Float8Format::E4M3FNUZ => 8,
        }
    }

    /// The largest finite magnitude code.
    const fn max_code(self) -> u32 {
        match self {
            Float8Format::E4M3FN => 0x7E,
            Float8Format::E5M2 => 0x7B,
            Float8Format::E4M3FNUZ => 0x7F,
        }
    }

    /// The decoded f32 bit patterns of the 256 codes.
    pub fn table(self) -> &'static [u32; 256] {
        match self {
            Float8Format::E4M3FN => &E4M3FN_TABLE,
            Float8Format::E5M2 => &E5M2_TABLE,
            Float8Format::E4M3FNUZ => &E4M3FNUZ_TABLE,
        }
    }

    /// Decodes one code.
    #[inline(always)]
    pub fn decode(self, code: u8) -> f32 {
        f32::from_bits(self.table()[usize::from(code)])
    }

    /// Converts an f32 to this format with round to nearest even (subnormals included).
    /// NaN keeps its sign (one NaN code for fnuz); -0 and negatives rounding to zero give
    /// 0x00 for fnuz. Magnitudes past the largest finite value give NaN (e4m3fn, fnuz) or
    /// infinity (e5m2) as c10's non-saturating conversions do; quanto clamps first.
    #[inline(always)]
    pub fn encode(self, x: f32) -> u8 {
        self.encoder().encode(x)
    }

    /// The format's conversion constants, hoisted out of hot loops.
    pub(crate) fn encoder(self) -> Encoder {
        let m = self.man_bits();
        let bias = self.bias();
        let shift = 23 - m;
        Encoder {
            shift,
            round: (1 << (shift - 1)) - 1,
            rebias: (127 - bias) << m,
            // Smallest normal: 2^(1 - bias).
            min_normal: f32::from_bits((128 - bias) << 23),
            // 2^23 subnormal quanta (2^(1 - bias - m)): adding it rounds a subnormal to a
            // whole number of quanta with the FPU's round to nearest even.
            magic: f32::from_bits((127 + 24 - bias - m) << 23),
            max_code: self.max_code(),
            overflow: match self {
                Float8Format::E5M2 => 0x7C,
                _ => 0x7F,
            },
            fnuz: self == Float8Format::E4M3FNUZ,
        }
    }
}

/// Branch-free f32 → float8 conversion constants of one format (see [`Float8Format::encode`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Encoder {
    shift: u32,
    round: u32,
    rebias: u32,
    min_normal: f32,
    magic: f32,
    max_code: u32,
    overflow: u8,
    fnuz: bool,
}

impl Encoder {
    /// Converts one value (selects only, so loops over it vectorize).
    #[inline(always)]
    pub(crate) fn encode(&self, x: f32) -> u8 {
        let bits = x.to_bits();
        let sign = ((bits >> 24) & 0x80) as u8;
        let ab = bits & 0x7FFF_FFFF;
        let a = f32::from_bits(ab);
        let normal = (ab.wrapping_add(self.round + ((ab >> self.shift) & 1)) >> self.shift)
            .wrapping_sub(self.rebias);
        let sub = (a + self.magic)
            .to_bits()
            .wrapping_sub(self.magic.to_bits());
        let mag = if a < self.min_normal { sub } else { normal };
        let is_nan = ab > 0x7F80_0000;
        let over = mag > self.max_code;
        if self.fnuz {
            let code = if mag == 0 { 0 } else { (mag as u8) | sign };
            if over || is_nan {
                0x80
            } else {
                code
            }
        } else {
            let mag8 = if is_nan {
                0x7F
            } else if over {
                self.overflow
            } else {
                mag as u8
            };
            mag8 | sign
        }
    }
}

/// f32 bits of every code, as c10 decodes them (NaN payloads included: e4m3fn NaN is
/// S|0x7FF00000, e5m2 NaNs keep their mantissa as an f16 would, fnuz 0x80 is 0x7F800001).
const fn build_table(fmt: Float8Format) -> [u32; 256] {
    let m = fmt.man_bits();
    let e_bits = fmt.exp_bits();
    let bias = fmt.bias();
    let mut table = [0u32; 256];
    let mut c = 0usize;
    while c < 256 {
        let code = c as u32;
        let sign = (code & 0x80) << 24;
        let exp = (code >> m) & ((1 << e_bits) - 1);
        let man = code & ((1 << m) - 1);
        let bits = match fmt {
            Float8Format::E4M3FNUZ if code == 0x80 => 0x7F80_0001,
            Float8Format::E4M3FN if exp == 15 && man == 7 => sign | 0x7FF0_0000,
            Float8Format::E5M2 if exp == 31 => sign | 0x7F80_0000 | (man << 21),
            _ => {
                if exp == 0 {
                    // man · 2^(1 - bias - m), exact in f32.
                    let unit = f32::from_bits((127 + 1 - bias - m) << 23);
                    let v = man as f32 * unit;
                    sign | v.to_bits()
                } else {
                    sign | ((exp + 127 - bias) << 23) | (man << (23 - m))
                }
            }
        };
        table[c] = bits;
        c += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest finite code by exhaustive search, ties to the even code (the definition).
    fn reference_encode(fmt: Float8Format, x: f32) -> u8 {
        let a = f64::from(x.abs());
        let mut best = 0u8;
        let mut best_d = f64::INFINITY;
        for c in 0..=fmt.max_code() as u8 {
            let v = f64::from(fmt.decode(c));
            let d = (v - a).abs();
            if d < best_d || (d == best_d && c % 2 == 0) {
                best = c;
                best_d = d;
            }
        }
        if x.is_sign_negative() && !(fmt == Float8Format::E4M3FNUZ && best == 0) {
            best | 0x80
        } else {
            best
        }
    }

    #[test]
    fn encode_is_round_to_nearest_even() {
        for fmt in Float8Format::ALL {
            let max = fmt.max();
            // Every bf16 value within range, plus f32 values around each code midpoint.
            for hi in 0u32..=0xFFFF {
                let x = f32::from_bits(hi << 16);
                if x.is_nan() || x.abs() > max {
                    continue;
                }
                assert_eq!(fmt.encode(x), reference_encode(fmt, x), "{fmt:?} {x:e}");
            }
            for c in 0..fmt.max_code() as u8 {
                let lo = fmt.decode(c);
                let hi = fmt.decode(c + 1);
                let mid = (lo + hi) / 2.0;
                for x in [
                    mid,
                    f32::from_bits(mid.to_bits() - 1),
                    f32::from_bits(mid.to_bits() + 1),
                ] {
                    assert_eq!(fmt.encode(x), reference_encode(fmt, x), "{fmt:?} {x:e}");
                    assert_eq!(fmt.encode(-x), reference_encode(fmt, -x), "{fmt:?} -{x:e}");
                }
            }
        }
    }

    #[test]
    fn decode_round_trips_every_finite_code() {
        for fmt in Float8Format::ALL {
            for c in 0..=255u8 {
                let v = fmt.decode(c);
                if v.is_finite() && !(fmt != Float8Format::E4M3FNUZ && c == 0x80) {
                    assert_eq!(fmt.encode(v), c, "{fmt:?} {c:#x}");
                }
            }
        }
    }

    #[test]
    fn specials() {
        assert_eq!(Float8Format::E4M3FN.encode(-0.0), 0x80);
        assert_eq!(Float8Format::E4M3FNUZ.encode(-0.0), 0x00);
        assert_eq!(Float8Format::E4M3FNUZ.encode(-1e-9), 0x00);
        assert_eq!(Float8Format::E4M3FNUZ.encode(f32::NAN), 0x80);
        assert_eq!(
            Float8Format::E4M3FN.encode(f32::from_bits(0xFFC0_0000)),
            0xFF
        );
        assert_eq!(Float8Format::E5M2.encode(f32::from_bits(0x7FC0_0000)), 0x7F);
        assert_eq!(Float8Format::E4M3FN.encode(448.0), 0x7E);
        assert_eq!(Float8Format::E5M2.encode(57344.0), 0x7B);
        assert_eq!(Float8Format::E4M3FNUZ.encode(240.0), 0x7F);
        assert_eq!(Float8Format::E5M2.encode(f32::INFINITY), 0x7C);
    }
}
