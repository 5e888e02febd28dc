//! MXFP4 (OCP microscaling FP4): blocks of 32 values, `x ≈ 2^(e−127)·v/2` where `v` is a
//! doubled E2M1 value of ggml's `kvalues_mxfp4` (0, ±1, ±2, ±3, ±4, ±6, ±8, ±12).
//!
//! Layout (ggml `block_mxfp4`, 17 bytes): `e` (E8M0 shared exponent), `qs[16]` (value `j`
//! in the low nibble of byte `j`, value `j + 16` in the high nibble).
//!
//! Quantizer: ggml's `quantize_row_mxfp4_ref` (the importance matrix is ignored):
//! `e = (uint8_t)(floorf(log2f(max|x|)) − 2 + 127)` (0 for an all-zero block), `d =
//! 2^(e−128)` (`GGML_E8M0_TO_FP32_HALF`), each value the entry of least `|v·d − x|`, the
//! first on ties.

use crate::types::c_math::c_f32_to_i32;
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `kvalues_mxfp4` (`kvalues_fp4`): E2M1 values times 2.
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// ggml's `ggml_e8m0_to_fp32_half`: `2^(e−128)` (denormal for `e < 2`).
#[inline(always)]
pub fn e8m0_to_fp32_half(e: u8) -> f32 {
    if e < 2 {
        f32::from_bits(0x0020_0000 << e)
    } else {
        f32::from_bits(((e as u32) - 1) << 23)
    }
}

/// ggml's `block_mxfp4`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockMxfp4 {
    /// Shared exponent (E8M0).
    pub e: u8,
    /// 4-bit codes, two per byte.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockMxfp4>() == 17);

/// ggml's `best_index_mxfp4`.
#[cfg(test)]
fn best_index(x: f32, e: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = (KVALUES_MXFP4[0] as f32 * e - x).abs();
    for (i, &k) in KVALUES_MXFP4.iter().enumerate().skip(1) {
        let err = (k as f32 * e - x).abs();
        if err < best_err {
            best = i as u8;
            best_err = err;
        }
    }
    best
}

/// `(uint8_t)(floorf(log2f(amax)) − 2 + 127)`, 0 for `amax = 0`: glibc's `log2f` (what
/// Rust's `log2` calls on Linux), then C's float → u8. Kept out of line: a libm call from
/// inside the AVX2 build of the row loop is several times slower.
#[inline(never)]
fn shared_exponent(amax: f32) -> u8 {
    if amax > 0.0 {
        c_f32_to_i32(amax.log2().floor() - 2.0 + 127.0) as u8
    } else {
        0
    }
}

/// [`best_index`] of 16 values side by side. `k·e` is exact (`e` a power of two), so for
/// `x ≥ 0` an entry `k < 0` has the error `fl(|k|·e + x) ≥ x`, the error of entry 0, which
/// comes first and wins ties: only entries 0..7 can win, and for `x < 0` only 0 and
/// 9..15, whose errors are those of 0..7 against `|x|` (negation is exact). So each value
/// runs the same comparisons as ggml over 8 entries, and the loop vectorizes.
#[inline(always)]
fn best_indices(x: &[f32], e: f32) -> [u8; 16] {
    let mut best = [0u32; 16];
    let mut best_err = [0f32; 16];
    let mut ax = [0f32; 16];
    for j in 0..16 {
        ax[j] = x[j].abs();
        best_err[j] = (KVALUES_MXFP4[0] as f32 * e - ax[j]).abs();
    }
    for (i, &k) in KVALUES_MXFP4.iter().enumerate().take(8).skip(1) {
        let v = k as f32 * e;
        for j in 0..16 {
            let err = (v - ax[j]).abs();
            let take = err < best_err[j];
            best[j] = if take { i as u32 } else { best[j] };
            best_err[j] = if take { err } else { best_err[j] };
        }
    }
    let mut out = [0u8; 16];
    for j in 0..16 {
        let neg = x[j] < 0.0 && best[j] != 0;
        out[j] = (best[j] + if neg { 8 } else { 0 }) as u8;
    }
    out
}

impl GgmlBlock for BlockMxfp4 {
    const TYPE: GgmlType = GgmlType::MXFP4;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 17;
    const ZERO: Self = BlockMxfp4 { e: 0, qs: [0; 16] };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.e = b[0];
        blk.qs.copy_from_slice(&b[1..17]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0] = self.e;
        out[1..17].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        for (xb, yb) in x.chunks_exact(32).zip(y) {
            let mut amax = 0f32;
            for &v in xb {
                if amax < v.abs() {
                    amax = v.abs();
                }
            }
            yb.e = shared_exponent(amax);
            let d = e8m0_to_fp32_half(yb.e);
            let lo = best_indices(&xb[..16], d);
            let hi = best_indices(&xb[16..], d);
            for j in 0..16 {
                yb.qs[j] = lo[j] | (hi[j] << 4);
            }
        }
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(32)) {
            let d = e8m0_to_fp32_half(yb.e);
            for j in 0..16 {
                o[j] = KVALUES_MXFP4[(yb.qs[j] & 0xf) as usize] as f32 * d;
                o[j + 16] = KVALUES_MXFP4[(yb.qs[j] >> 4) as usize] as f32 * d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_indices_equal_best_index() {
        let mut s = 3u64;
        let mut r = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32) / (1u64 << 24) as f32 - 0.5
        };
        for e in [0.25f32, 1.0, 0.125, 3.0] {
            for _ in 0..2000 {
                let mut x: Vec<f32> = (0..16).map(|_| r() * 30.0 * e).collect();
                x[0] = f32::NAN;
                x[1] = 6.0 * e * 0.5 + 4.0 * e * 0.5;
                x[2] = -x[1];
                x[3] = -0.0;
                x[4] = 1e-30;
                x[5] = -1e-30;
                x[6] = -(8.0 * e + 12.0 * e) * 0.5;
                let got = best_indices(&x, e);
                for j in 0..16 {
                    assert_eq!(got[j], best_index(x[j], e), "x={} e={e}", x[j]);
                }
            }
        }
    }
}
