//! The code tables of bitsandbytes 0.50 (spec §1.4, §1.5, §1.7), as exact f32 bit patterns.

use std::sync::OnceLock;

/// NF4 levels, code = index (sorted).
pub const NF4: [f32; 16] = bits16([
    0xBF800000, 0xBF3239B1, 0xBF066B30, 0xBECA32A0, 0xBE91A24D, 0xBE3D353F, 0xBDBA7871, 0x00000000,
    0x3DA2FAFF, 0x3E24CAE3, 0x3E7C04DD, 0x3EAD033A, 0x3EE1A4B8, 0x3F1007AB, 0x3F3913B3, 0x3F800000,
]);

/// FP4 levels as bitsandbytes stores them in `quant_map` (entry 8 is +0.0).
pub const FP4: [f32; 16] = bits16([
    0x00000000, 0x3BAAAAAB, 0x3F2AAAAB, 0x3F800000, 0x3EAAAAAB, 0x3F000000, 0x3E2AAAAB, 0x3E800000,
    0x00000000, 0xBBAAAAAB, 0xBF2AAAAB, 0xBF800000, 0xBEAAAAAB, 0xBF000000, 0xBE2AAAAB, 0xBE800000,
]);

/// FP4 levels as the CPU native dequantization kernel decodes them (sign-magnitude: entry 8 is -0.0).
pub const FP4_SIGNED_ZERO: [f32; 16] = bits16([
    0x00000000, 0x3BAAAAAB, 0x3F2AAAAB, 0x3F800000, 0x3EAAAAAB, 0x3F000000, 0x3E2AAAAB, 0x3E800000,
    0x80000000, 0xBBAAAAAB, 0xBF2AAAAB, 0xBF800000, 0xBEAAAAAB, 0xBF000000, 0xBE2AAAAB, 0xBE800000,
]);

/// NF4 decision thresholds: f32 midpoints of consecutive levels (code = count strictly below).
pub const NF4_BOUNDS: [f32; 15] = bits15([
    0xBF591CD8, 0xBF1C5270, 0xBEEB8480, 0xBEADEA76, 0xBE703CEC, 0xBE0D38BC, 0xBD3A7871, 0x3D22FAFF,
    0x3DF64862, 0x3E5067E0, 0x3E9582D4, 0x3EC753F9, 0x3F006D04, 0x3F248DAF, 0x3F5C89DA,
]);

/// FP4 decision thresholds: f32 midpoints of the sorted FP4 levels.
pub const FP4_BOUNDS: [f32; 15] = bits15([
    0xBF555556, 0xBF155556, 0xBED55556, 0xBE955556, 0xBE555556, 0xBDB00000, 0xBB2AAAAB, 0x00000000,
    0x3B2AAAAB, 0x3DB00000, 0x3E555556, 0x3E955556, 0x3ED55556, 0x3F155556, 0x3F555556,
]);

/// FP4 code of the i-th sorted level (`argsort` of [`FP4`] as torch returns it).
pub const FP4_ORDER: [u8; 16] = [11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3];

/// The 256-entry signed dynamic map of `create_dynamic_map(signed=True, max_exponent_bits=7,
/// total_bits=8)`, used for the nested (double-quantized) absmax.
pub const DYNAMIC_MAP: [f32; 256] = bits256([
    0xBF7E3333, 0xBF7A999A, 0xBF770000, 0xBF736666, 0xBF6FCCCD, 0xBF6C3333, 0xBF68999A, 0xBF650000,
    0xBF616666, 0xBF5DCCCD, 0xBF5A3333, 0xBF56999A, 0xBF530000, 0xBF4F6666, 0xBF4BCCCD, 0xBF483333,
    0xBF44999A, 0xBF410000, 0xBF3D6666, 0xBF39CCCD, 0xBF363334, 0xBF32999A, 0xBF2F0000, 0xBF2B6666,
    0xBF27CCCD, 0xBF243334, 0xBF20999A, 0xBF1D0000, 0xBF196666, 0xBF15CCCD, 0xBF123334, 0xBF0E999A,
    0xBF0B0000, 0xBF076666, 0xBF03CCCC, 0xBF003333, 0xBEF93332, 0xBEF20000, 0xBEEACCCC, 0xBEE3999A,
    0xBEDC6666, 0xBED53333, 0xBECE0000, 0xBEC6CCCC, 0xBEBF999A, 0xBEB86666, 0xBEB13333, 0xBEAA0000,
    0xBEA2CCCC, 0xBE9B999A, 0xBE946666, 0xBE8D3334, 0xBE860000, 0xBE7D9999, 0xBE6F3333, 0xBE60CCCD,
    0xBE526666, 0xBE440000, 0xBE35999A, 0xBE273333, 0xBE18CCCD, 0xBE0A6666, 0xBDF80000, 0xBDDB3334,
    0xBDC9EB85, 0xBDC428F7, 0xBDBE6667, 0xBDB8A3D7, 0xBDB2E148, 0xBDAD1EB8, 0xBDA75C2A, 0xBDA1999A,
    0xBD9BD70A, 0xBD96147B, 0xBD9051EB, 0xBD8A8F5D, 0xBD84CCCD, 0xBD7E147B, 0xBD728F5D, 0xBD670A3D,
    0xBD5B851F, 0xBD500000, 0xBD447AE1, 0xBD38F5C3, 0xBD2D70A3, 0xBD21EB85, 0xBD166667, 0xBD0AE148,
    0xBCFEB852, 0xBCE7AE15, 0xBCD0A3D7, 0xBCB9999A, 0xBCA28F5D, 0xBC8B851F, 0xBC68F5C3, 0xBC3AE148,
    0xBC1F3B64, 0xBC160418, 0xBC0CCCCD, 0xBC039581, 0xBBF4BC6A, 0xBBE24DD3, 0xBBCFDF3B, 0xBBBD70A4,
    0xBBAB020D, 0xBB989374, 0xBB8624DD, 0xBB676C8A, 0xBB428F5C, 0xBB1DB22D, 0xBAF1A9FC, 0xBAA7EF9D,
    0xBA7765FF, 0xBA59E83E, 0xBA3C6A80, 0xBA1EECC1, 0xBA016F01, 0xB9C7E283, 0xB98CE705, 0xB923D70B,
    0xB8BA1F4B, 0xB88AEFB3, 0xB8378034, 0xB7B24206, 0xB70205FF, 0xB65A1A94, 0xB513A3B7, 0x00000000,
    0x3513A3B7, 0x365A1A94, 0x370205FF, 0x37B24206, 0x38378034, 0x388AEFB3, 0x38BA1F4B, 0x3923D70B,
    0x398CE705, 0x39C7E283, 0x3A016F01, 0x3A1EECC1, 0x3A3C6A80, 0x3A59E83E, 0x3A7765FF, 0x3AA7EF9D,
    0x3AF1A9FC, 0x3B1DB22D, 0x3B428F5C, 0x3B676C8A, 0x3B8624DD, 0x3B989374, 0x3BAB020D, 0x3BBD70A4,
    0x3BCFDF3B, 0x3BE24DD3, 0x3BF4BC6A, 0x3C039581, 0x3C0CCCCD, 0x3C160418, 0x3C1F3B64, 0x3C3AE148,
    0x3C68F5C3, 0x3C8B851F, 0x3CA28F5D, 0x3CB9999A, 0x3CD0A3D7, 0x3CE7AE15, 0x3CFEB852, 0x3D0AE148,
    0x3D166667, 0x3D21EB85, 0x3D2D70A3, 0x3D38F5C3, 0x3D447AE1, 0x3D500000, 0x3D5B851F, 0x3D670A3D,
    0x3D728F5D, 0x3D7E147B, 0x3D84CCCD, 0x3D8A8F5D, 0x3D9051EB, 0x3D96147B, 0x3D9BD70A, 0x3DA1999A,
    0x3DA75C2A, 0x3DAD1EB8, 0x3DB2E148, 0x3DB8A3D7, 0x3DBE6667, 0x3DC428F7, 0x3DC9EB85, 0x3DDB3334,
    0x3DF80000, 0x3E0A6666, 0x3E18CCCD, 0x3E273333, 0x3E35999A, 0x3E440000, 0x3E526666, 0x3E60CCCD,
    0x3E6F3333, 0x3E7D9999, 0x3E860000, 0x3E8D3334, 0x3E946666, 0x3E9B999A, 0x3EA2CCCC, 0x3EAA0000,
    0x3EB13333, 0x3EB86666, 0x3EBF999A, 0x3EC6CCCC, 0x3ECE0000, 0x3ED53333, 0x3EDC6666, 0x3EE3999A,
    0x3EEACCCC, 0x3EF20000, 0x3EF93332, 0x3F003333, 0x3F03CCCC, 0x3F076666, 0x3F0B0000, 0x3F0E999A,
    0x3F123334, 0x3F15CCCD, 0x3F196666, 0x3F1D0000, 0x3F20999A, 0x3F243334, 0x3F27CCCD, 0x3F2B6666,
    0x3F2F0000, 0x3F32999A, 0x3F363334, 0x3F39CCCD, 0x3F3D6666, 0x3F410000, 0x3F44999A, 0x3F483333,
    0x3F4BCCCD, 0x3F4F6666, 0x3F530000, 0x3F56999A, 0x3F5A3333, 0x3F5DCCCD, 0x3F616666, 0x3F650000,
    0x3F68999A, 0x3F6C3333, 0x3F6FCCCD, 0x3F736666, 0x3F770000, 0x3F7A999A, 0x3F7E3333, 0x3F800000,
]);

/// f32(1/127): LLM.int8 dequantization multiplies by this constant.
pub const INV_127: f32 = f32::from_bits(0x3C010204);

/// 1e-38 as f32 (a subnormal): the lower clamp of a 4-bit block's absmax before the reciprocal.
pub const ABSMAX_FLOOR: f32 = f32::from_bits(0x006CE3EE);

const fn bits16(b: [u32; 16]) -> [f32; 16] {
    let mut out = [0f32; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = f32::from_bits(b[i]);
        i += 1;
    }
    out
}

const fn bits15(b: [u32; 15]) -> [f32; 15] {
    let mut out = [0f32; 15];
    let mut i = 0;
    while i < 15 {
        out[i] = f32::from_bits(b[i]);
        i += 1;
    }
    out
}

const fn bits256(b: [u32; 256]) -> [f32; 256] {
    let mut out = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        out[i] = f32::from_bits(b[i]);
        i += 1;
    }
    out
}

/// Number of bins of the bitsandbytes 0.50 CPU lookup table for 8-bit blockwise quantization.
pub const LUT_SIZE: usize = 65536;

/// The 65536-bin lookup table of bitsandbytes 0.50's CPU `quantize_blockwise` for [`DYNAMIC_MAP`]:
/// `LUT[i]` = number of map midpoints `0.5 * (m[k] + m[k+1])` strictly below
/// `-1 + (2 * i) / 65535` (all f32).
pub fn dynamic_lut() -> &'static [u8; LUT_SIZE] {
    static LUT: OnceLock<Box<[u8; LUT_SIZE]>> = OnceLock::new();
    LUT.get_or_init(|| {
        let mut mid = [0f32; 255];
        for (k, m) in mid.iter_mut().enumerate() {
            *m = 0.5 * (DYNAMIC_MAP[k] + DYNAMIC_MAP[k + 1]);
        }
        let mut lut = Box::new([0u8; LUT_SIZE]);
        let mut code = 0usize;
        for (i, slot) in lut.iter_mut().enumerate() {
            let g = -1.0f32 + (2.0f32 * i as f32) / (LUT_SIZE - 1) as f32;
            while code < mid.len() && mid[code] < g {
                code += 1;
            }
            *slot = code as u8;
        }
        lut
    })
}

/// The LUT bin of a scaled value: `trunc(((clamp(v, -1, 1) + 1) * 0.5) * 65535 + 0.5)` in f32.
#[inline]
pub fn lut_index(v: f32) -> usize {
    let v = v.clamp(-1.0, 1.0);
    let x = (v + 1.0) * 0.5;
    let x = x * (LUT_SIZE - 1) as f32;
    let x = x + 0.5;
    // NaN (only from a NaN input) truncates to 0 like a saturating cast; in range otherwise.
    (x as usize).min(LUT_SIZE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_f32_midpoints() {
        for j in 0..15 {
            assert_eq!(
                ((NF4[j] + NF4[j + 1]) / 2.0).to_bits(),
                NF4_BOUNDS[j].to_bits()
            );
            let a = FP4[FP4_ORDER[j] as usize];
            let b = FP4[FP4_ORDER[j + 1] as usize];
            assert_eq!(((a + b) / 2.0).to_bits(), FP4_BOUNDS[j].to_bits(), "{j}");
        }
        // ORDER sorts the table.
        for j in 0..15 {
            assert!(FP4[FP4_ORDER[j] as usize] <= FP4[FP4_ORDER[j + 1] as usize]);
        }
    }

    #[test]
    fn fp4_levels_are_raw_over_12() {
        let raw = [0.0f32, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0];
        for (i, r) in raw.iter().enumerate() {
            assert_eq!((r / 12.0).to_bits(), FP4[i].to_bits());
            assert_eq!((-r / 12.0).to_bits(), FP4_SIGNED_ZERO[i + 8].to_bits());
        }
    }

    #[test]
    fn dynamic_map_shape() {
        assert_eq!(DYNAMIC_MAP[127], 0.0);
        assert_eq!(DYNAMIC_MAP[255], 1.0);
        assert!(DYNAMIC_MAP.windows(2).all(|w| w[0] < w[1]));
        let lut = dynamic_lut();
        assert!(lut.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(lut_index(0.0), 32768);
        assert_eq!(lut[lut_index(1.0)], 255);
        assert_eq!(lut[lut_index(-1.0)], 0);
        assert_eq!(ABSMAX_FLOOR, 1e-38f32);
    }
}
