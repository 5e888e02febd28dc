//! Q8_K: super-blocks of 256 values, `x ≈ d·q`, `q ∈ [−128, 127]`, **f32** scale.
//!
//! Layout (ggml `block_q8_K`, 292 bytes): `d: f32`, `qs[256]: i8`, `bsums[16]: i16`
//! (sums of each 16 codes).
//!
//! `quantize_row_q8_K_ref`: `max` = value of largest magnitude, `iscale = −127/max`,
//! `q = min(127, nearest_int(iscale·x))`, `d = 1/iscale`. An all-zero block is stored
//! with `d = 0`, zero codes and zero sums (ggml leaves the sums unwritten). ggml has no
//! weighted Q8_K quantizer (`ggml_quantize_chunk` does not handle the type), so an
//! importance matrix is ignored.

use crate::types::c_math::{c_min, nearest_int, QK_K};
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_q8_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8K {
    /// Scale.
    pub d: f32,
    /// Codes.
    pub qs: [i8; 256],
    /// Sums of 16 codes.
    pub bsums: [i16; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl GgmlBlock for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 292;
    const ZERO: Self = BlockQ8K {
        d: 0.0,
        qs: [0; 256],
        bsums: [0; 16],
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for (q, &v) in blk.qs.iter_mut().zip(&b[4..260]) {
            *q = v as i8;
        }
        for (s, c) in blk.bsums.iter_mut().zip(b[260..292].chunks_exact(2)) {
            *s = i16::from_le_bytes([c[0], c[1]]);
        }
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.d.to_le_bytes());
        for (o, &q) in out[4..260].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
        for (o, s) in out[260..292].chunks_exact_mut(2).zip(&self.bsums) {
            o.copy_from_slice(&s.to_le_bytes());
        }
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        for (x, yb) in x.chunks_exact(QK_K).zip(y) {
            let mut max = 0f32;
            let mut amax = 0f32;
            for &v in x {
                let ax = v.abs();
                if ax > amax {
                    amax = ax;
                    max = v;
                }
            }
            if amax == 0.0 {
                *yb = Self::ZERO;
                continue;
            }
            let iscale = -127.0 / max;
            for (q, &v) in yb.qs.iter_mut().zip(x) {
                *q = c_min(127, nearest_int(iscale * v)) as i8;
            }
            for (s, qs) in yb.bsums.iter_mut().zip(yb.qs.chunks_exact(16)) {
                let mut sum = 0i32;
                for &q in qs {
                    sum += q as i32;
                }
                *s = sum as i16;
            }
            yb.d = 1.0 / iscale;
        }
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            for (o, &q) in o.iter_mut().zip(&yb.qs) {
                *o = yb.d * q as f32;
            }
        }
    }
}
