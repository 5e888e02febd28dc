//! IQ4_NL: blocks of 32 values, `x ≈ d·K[q]` with ggml's non-linear 16-entry table
//! `K = kvalues_iq4nl` (−127 … 113), `q ∈ [0, 15]`.
//!
//! Layout (ggml `block_iq4_nl`, 18 bytes): `d: f16`, `qs[16]` (value `j` in the low
//! nibble of byte `j`, value `j + 16` in the high nibble).
//!
//! Quantizer: ggml's `quantize_iq4_nl` (what `ggml_quantize_chunk` and llama-quantize
//! run; **not** `quantize_row_iq4_nl_ref`, which searches fewer scales): weights `x²`, or
//! `qw·√(σ² + x²)` with `σ² = 2Σx²/32` under an importance matrix; the first scale
//! `d = −max/K[0]` (the value of largest magnitude), codes by nearest table entry
//! (`best_index_int8`), the least-squares scale, then 15 more candidate scales
//! `(t + K[0])/max`, `t ∈ [−7, 7]`, keeping the best `Σwqx²/Σwq²`; finally the codes are
//! recomputed against the chosen `d` (`quantize_row_iq4_nl_impl`, shared with IQ4_XS).

use crate::block::{GgmlBlock, GgmlType};
use crate::util::{c_max, c_min, fp16_to_fp32, fp32_to_fp16, nearest_int, GROUP_MAX_EPS};

/// ggml's `kvalues_iq4nl`.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// ggml's `best_index_int8`: the index of the table entry nearest to `x` (binary
/// search; the upper entry wins ties).
#[inline(always)]
pub fn best_index_int8(val: &[i8; 16], x: f32) -> u8 {
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// What `quantize_row_iq4_nl_impl` produces for one super-block.
pub(crate) struct Iq4Out {
    /// `d` (f16 bits).
    pub d: u16,
    /// Packed codes (`sbs/2` bytes used).
    pub q4: [u8; 128],
    /// IQ4_XS high scale bits.
    pub scales_h: u16,
    /// IQ4_XS low scale nibbles.
    pub scales_l: [u8; 4],
}

/// ggml's `quantize_row_iq4_nl_impl` for a super-block `x` of 32 (IQ4_NL) or 256
/// (IQ4_XS) values in blocks of 32, with `ntry = 7` (the chunk quantizer's value).
#[inline(always)]
pub(crate) fn quantize_iq4_impl(x: &[f32], quant_weights: Option<&[f32]>) -> Iq4Out {
    const BLOCK: usize = 32;
    const NTRY: i32 = 7;
    let values = &KVALUES_IQ4NL;
    let sbs = x.len();
    let nblocks = sbs / BLOCK;
    let mut sigma2 = 0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 *= 2.0 / sbs as f32;
    let mut out = Iq4Out {
        d: fp32_to_fp16(0.0),
        q4: [0; 128],
        scales_h: 0,
        scales_l: [0; 4],
    };
    let mut l = [0u8; 256];
    let mut scales = [0f32; 8];
    let mut weight = [0f32; BLOCK];
    let mut max_scale = 0f32;
    let mut amax_scale = 0f32;
    for ib in 0..nblocks {
        let xb = &x[ib * BLOCK..ib * BLOCK + BLOCK];
        let lb = &mut l[ib * BLOCK..ib * BLOCK + BLOCK];
        match quant_weights {
            Some(qw) => {
                let qw = &qw[ib * BLOCK..ib * BLOCK + BLOCK];
                for ((w, &v), &q) in weight.iter_mut().zip(xb).zip(qw) {
                    *w = q * (sigma2 + v * v).sqrt();
                }
            }
            None => {
                for (w, &v) in weight.iter_mut().zip(xb) {
                    *w = v * v;
                }
            }
        }
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        let mut d = -max / values[0] as f32;
        let mut id = 1.0 / d;
        let mut sumqx = 0f32;
        let mut sumq2 = 0f32;
        for ((lj, &v), &w) in lb.iter_mut().zip(xb).zip(&weight) {
            let al = id * v;
            let li = best_index_int8(values, al);
            *lj = li;
            let q = values[li as usize] as f32;
            sumqx += w * q * v;
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -NTRY..=NTRY {
            id = (itry + values[0] as i32) as f32 / max;
            sumqx = 0.0;
            sumq2 = 0.0;
            for (&v, &w) in xb.iter().zip(&weight) {
                let al = id * v;
                let q = values[best_index_int8(values, al) as usize] as f32;
                sumqx += w * q * v;
                sumq2 += w * q * q;
            }
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        let abs_d = d.abs();
        if abs_d > amax_scale {
            amax_scale = abs_d;
            max_scale = d;
        }
    }
    if nblocks > 1 {
        let d = -max_scale / 32.0;
        out.d = fp32_to_fp16(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nblocks {
            let mut li = nearest_int(id * scales[ib]);
            li = c_max(-32, c_min(31, li));
            let dl = d * li as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for (lj, &v) in l[ib * BLOCK..ib * BLOCK + BLOCK]
                .iter_mut()
                .zip(&x[ib * BLOCK..ib * BLOCK + BLOCK])
            {
                *lj = best_index_int8(values, idl * v);
            }
            li += 32;
            let l_l = (li & 0xf) as u8;
            let l_h = (li >> 4) as u16;
            if ib % 2 == 0 {
                out.scales_l[ib / 2] = l_l;
            } else {
                out.scales_l[ib / 2] |= l_l << 4;
            }
            out.scales_h |= l_h << (2 * (ib % 8));
        }
    } else {
        out.d = fp32_to_fp16(scales[0]);
        let id = if scales[0] != 0.0 {
            1.0 / scales[0]
        } else {
            0.0
        };
        for (lj, &v) in l.iter_mut().zip(x) {
            *lj = best_index_int8(values, id * v);
        }
    }
    for i in 0..sbs / 32 {
        for j in 0..16 {
            out.q4[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
    out
}

/// ggml's `block_iq4_nl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockIq4Nl {
    /// Scale (f16 bits).
    pub d: u16,
    /// Table indices, two per byte.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockIq4Nl>() == 18);

impl GgmlBlock for BlockIq4Nl {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 18;
    const ZERO: Self = BlockIq4Nl { d: 0, qs: [0; 16] };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.qs.copy_from_slice(&b[2..18]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..18].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        for (xb, yb) in x.chunks_exact(32).zip(y) {
            let o = quantize_iq4_impl(xb, None);
            yb.d = o.d;
            yb.qs.copy_from_slice(&o.q4[..16]);
        }
    }

    #[inline(always)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        for ((xb, qb), yb) in x.chunks_exact(32).zip(qw.chunks_exact(32)).zip(y) {
            let o = quantize_iq4_impl(xb, Some(qb));
            yb.d = o.d;
            yb.qs.copy_from_slice(&o.q4[..16]);
        }
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(32)) {
            let d = fp16_to_fp32(yb.d);
            for j in 0..16 {
                o[j] = d * KVALUES_IQ4NL[(yb.qs[j] & 0xf) as usize] as f32;
                o[j + 16] = d * KVALUES_IQ4NL[(yb.qs[j] >> 4) as usize] as f32;
            }
        }
    }
}
