//! Q2_K: super-blocks of 256 values in 16 sub-blocks of 16,
//! `x ≈ d·sc_j·q − dmin·m_j`, `q ∈ [0, 3]`, 4-bit `sc_j` and `m_j`.
//!
//! Layout (ggml `block_q2_K`, 84 bytes): `scales[16]` (low nibble `sc_j`, high nibble
//! `m_j`), `qs[64]` (for each half of 128 values, byte `l` holds values `l`, `l+32`,
//! `l+64`, `l+96` in bits 0-1, 2-3, 4-5, 6-7), `d: f16`, `dmin: f16`.
//!
//! Without weights (`quantize_row_q2_K_ref`): per sub-block `make_qkx2_quants(16, 3,
//! w = |x|, rmin −0.5, rdelta 0.1, 15 steps, MAD)`; scales and mins quantized to 4 bits
//! against their maxima (`d = max_scale/15`, `dmin = max_min/15`); values requantized
//! against the stored f16 scales. With weights (`quantize_row_q2_K_impl`):
//! `w = qw·√(σ² + x²)` with `σ² = Σx²/256` over the super-block, `make_qkx3_quants(16, 3,
//! w, −0.9, 0.05, 36)`, scales and mins by `make_qp_quants(16, 15, ·, Σw)`.

use crate::types::c_math::{c_max, c_min, fp16_to_fp32, fp32_to_fp16, nearest_int, QK_K};
use crate::types::kquant_lanes::{self, Groups};
use crate::types::search::{make_qp_quants, QkxSearch};
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_q2_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ2K {
    /// Sub-block scales (low nibble) and mins (high nibble).
    pub scales: [u8; 16],
    /// 2-bit codes.
    pub qs: [u8; 64],
    /// Super-block scale of the scales (f16 bits).
    pub d: u16,
    /// Super-block scale of the mins (f16 bits).
    pub dmin: u16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

/// Packs 256 2-bit codes as Q2_K and Q3_K store them.
#[inline(always)]
pub(crate) fn pack2(l: &[u8; QK_K], qs: &mut [u8; 64]) {
    for j in (0..QK_K).step_by(128) {
        for i in 0..32 {
            qs[j / 4 + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

impl BlockQ2K {
    #[inline(always)]
    fn requantize(&mut self, x: &[f32], l: &mut [u8; QK_K]) {
        let dall = fp16_to_fp32(self.d);
        let dmin = fp16_to_fp32(self.dmin);
        for j in 0..QK_K / 16 {
            let d = dall * (self.scales[j] & 0xF) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin * (self.scales[j] >> 4) as f32;
            for ii in 0..16 {
                let q = nearest_int((x[16 * j + ii] + dm) / d);
                l[16 * j + ii] = c_max(0, c_min(3, q)) as u8;
            }
        }
        pack2(l, &mut self.qs);
    }
}

impl GgmlBlock for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 84;
    const ZERO: Self = BlockQ2K {
        scales: [0; 16],
        qs: [0; 64],
        d: 0,
        dmin: 0,
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.scales.copy_from_slice(&b[0..16]);
        blk.qs.copy_from_slice(&b[16..80]);
        blk.d = u16::from_le_bytes([b[80], b[81]]);
        blk.dmin = u16::from_le_bytes([b[82], b[83]]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..16].copy_from_slice(&self.scales);
        out[16..80].copy_from_slice(&self.qs);
        out[80..82].copy_from_slice(&self.d.to_le_bytes());
        out[82..84].copy_from_slice(&self.dmin.to_le_bytes());
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        let search = QkxSearch {
            nmax: 3,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: true,
        };
        let q4scale = 15f32;
        let mut l = [0u8; QK_K];
        let mut mins = [0f32; 16];
        let mut scales = [0f32; 16];
        for (x, yb) in x.chunks_exact(QK_K).zip(y) {
            // The 16 sub-block searches, 8 side by side ([`kquant_lanes::qkx`]).
            for (h, xh) in x.chunks_exact(128).enumerate() {
                let mut gr = Groups::gather(xh, 16);
                for (wi, xi) in gr.w.iter_mut().zip(&gr.x) {
                    for (w, &v) in wi.iter_mut().zip(xi) {
                        *w = v.abs();
                    }
                }
                let found = kquant_lanes::qkx(search, false, &gr);
                for g in 0..8 {
                    let j = 8 * h + g;
                    found.codes(g, &mut l[16 * j..16 * j + 16]);
                    scales[j] = found.scale[g];
                    mins[j] = found.neg_min[g];
                }
            }
            let mut max_scale = 0f32;
            let mut max_min = 0f32;
            for (&s, &m) in scales.iter().zip(&mins) {
                if s > max_scale {
                    max_scale = s;
                }
                if m > max_min {
                    max_min = m;
                }
            }
            if max_scale > 0.0 {
                let iscale = q4scale / max_scale;
                for (q, &s) in yb.scales.iter_mut().zip(&scales) {
                    *q = nearest_int(iscale * s) as u8;
                }
                yb.d = fp32_to_fp16(max_scale / q4scale);
            } else {
                yb.scales = [0; 16];
                yb.d = fp32_to_fp16(0.0);
            }
            if max_min > 0.0 {
                let iscale = q4scale / max_min;
                for (q, &m) in yb.scales.iter_mut().zip(&mins) {
                    let l = nearest_int(iscale * m);
                    *q = (*q as i32 | (l << 4)) as u8;
                }
                yb.dmin = fp32_to_fp16(max_min / q4scale);
            } else {
                yb.dmin = fp32_to_fp16(0.0);
            }
            yb.requantize(x, &mut l);
        }
    }

    #[inline(always)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        let search = QkxSearch {
            nmax: 3,
            rmin: -0.9,
            rdelta: 0.05,
            nstep: 36,
            use_mad: false,
        };
        let mut l = [0u8; QK_K];
        let mut mins = [0f32; 16];
        let mut scales = [0f32; 16];
        let mut sw = [0f32; 16];
        let mut weights = [0f32; QK_K];
        let mut ls = [0u8; 16];
        let mut lm = [0u8; 16];
        for ((x, qwb), yb) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(y) {
            sw.fill(0.0);
            let mut sumx2 = 0f32;
            for &v in x {
                sumx2 += v * v;
            }
            let sigma2 = sumx2 / QK_K as f32;
            for (j, ((w, xs), q)) in weights
                .chunks_exact_mut(16)
                .zip(x.chunks_exact(16))
                .zip(qwb.chunks_exact(16))
                .enumerate()
            {
                for ((w, &v), &qv) in w.iter_mut().zip(xs).zip(q) {
                    *w = qv * (sigma2 + v * v).sqrt();
                }
                for &w in w.iter() {
                    sw[j] += w;
                }
            }
            // The 16 sub-block searches, 8 side by side ([`kquant_lanes::qkx`]).
            for (h, (xh, wh)) in x
                .chunks_exact(128)
                .zip(weights.chunks_exact(128))
                .enumerate()
            {
                let mut gr = Groups::gather(xh, 16);
                gr.gather_weights(wh);
                let found = kquant_lanes::qkx(search, true, &gr);
                for g in 0..8 {
                    let j = 8 * h + g;
                    found.codes(g, &mut l[16 * j..16 * j + 16]);
                    scales[j] = found.scale[g];
                    mins[j] = found.neg_min[g];
                }
            }
            let dm = make_qp_quants(15, &scales, &mut ls, &sw);
            let mm = make_qp_quants(15, &mins, &mut lm, &sw);
            yb.d = fp32_to_fp16(dm);
            yb.dmin = fp32_to_fp16(mm);
            for j in 0..QK_K / 16 {
                yb.scales[j] = ls[j] | (lm[j] << 4);
            }
            yb.requantize(x, &mut l);
        }
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(yb.d);
            let min = fp16_to_fp32(yb.dmin);
            let mut is = 0;
            let mut k = 0;
            for n in (0..QK_K).step_by(128) {
                let q = &yb.qs[n / 4..n / 4 + 32];
                let mut shift = 0;
                for _j in 0..4 {
                    for half in 0..2 {
                        let sc = yb.scales[is];
                        is += 1;
                        let dl = d * (sc & 0xF) as f32;
                        let ml = min * (sc >> 4) as f32;
                        for l in 0..16 {
                            let v = ((q[l + 16 * half] >> shift) & 3) as i8;
                            o[k] = dl * v as f32 - ml;
                            k += 1;
                        }
                    }
                    shift += 2;
                }
            }
        }
    }
}
