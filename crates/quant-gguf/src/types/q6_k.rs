//! Q6_K: super-blocks of 256 values in 16 sub-blocks of 16, `x ≈ d·sc_j·(q − 32)`,
//! `q ∈ [0, 63]`, signed 8-bit `sc_j`.
//!
//! Layout (ggml `block_q6_K`, 210 bytes): `ql[128]` (low nibbles: per 128 values, byte
//! `l` holds values `l` / `l + 64` and byte `l + 32` values `l + 32` / `l + 96`), `qh[64]`
//! (per 128 values, byte `l` holds the top 2 bits of values `l`, `l+32`, `l+64`, `l+96`),
//! `scales[16]: i8`, `d: f16`.
//!
//! Both paths: per sub-block `make_qx_quants(16, 32, rmse 1, w)` with `w = x²` (no
//! imatrix) or the raw importance weights; `d = max_scale/−128` with the sub-block scale
//! of largest magnitude, `sc_j = min(127, nearest_int(−128·s_j/max_scale))`; values
//! requantized against the stored scales. A super-block whose scales are all below
//! `GROUP_MAX_EPS` is stored as zeros.

use crate::types::c_math::{
    c_max, c_min, fp16_to_fp32, fp32_to_fp16, nearest_int, GROUP_MAX_EPS, QK_K,
};
use crate::types::kquant_lanes::{self, Groups};
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_q6_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6K {
    /// Low 4 bits of the codes.
    pub ql: [u8; 128],
    /// High 2 bits of the codes.
    pub qh: [u8; 64],
    /// Sub-block scales.
    pub scales: [i8; 16],
    /// Super-block scale (f16 bits).
    pub d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

impl BlockQ6K {
    #[inline(always)]
    fn quantize_block(x: &[f32], qw: Option<&[f32]>) -> Self {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; 16];
        // The 16 sub-block searches, 8 side by side ([`kquant_lanes::qx`]).
        for (h, xh) in x.chunks_exact(128).take(2).enumerate() {
            let mut gr = Groups::gather(xh, 16);
            match qw {
                Some(q) => gr.gather_weights(&q[128 * h..128 * h + 128]),
                None => {
                    for (wi, xi) in gr.w.iter_mut().zip(&gr.x) {
                        for (w, &v) in wi.iter_mut().zip(xi) {
                            *w = v * v;
                        }
                    }
                }
            }
            let found = kquant_lanes::qx(32, &gr);
            for g in 0..8 {
                let j = 8 * h + g;
                for (o, li) in l[16 * j..16 * j + 16].iter_mut().zip(&found.l) {
                    *o = li[g] as i8;
                }
                scales[j] = found.scale[g];
            }
        }
        let mut max_scale = 0f32;
        let mut max_abs_scale = 0f32;
        for &scale in &scales {
            let abs_scale = scale.abs();
            if abs_scale > max_abs_scale {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        let mut y = Self::ZERO;
        if max_abs_scale < GROUP_MAX_EPS {
            y.d = fp32_to_fp16(0.0);
            return y;
        }
        let iscale = -128.0 / max_scale;
        y.d = fp32_to_fp16(1.0 / iscale);
        for (sc, &s) in y.scales.iter_mut().zip(&scales) {
            *sc = c_min(127, nearest_int(iscale * s)) as i8;
        }
        let dall = fp16_to_fp32(y.d);
        for j in 0..QK_K / 16 {
            let d = dall * y.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d);
                l[16 * j + ii] = (c_max(-32, c_min(31, q)) + 32) as i8;
            }
        }
        for (n, (ql, qh)) in (0..QK_K)
            .step_by(128)
            .zip(y.ql.chunks_exact_mut(64).zip(y.qh.chunks_exact_mut(32)))
        {
            for i in 0..32 {
                let v = |k: usize| l[n + i + 32 * k] as u8;
                ql[i] = (v(0) & 0xF) | ((v(2) & 0xF) << 4);
                ql[i + 32] = (v(1) & 0xF) | ((v(3) & 0xF) << 4);
                qh[i] = (v(0) >> 4) | ((v(1) >> 4) << 2) | ((v(2) >> 4) << 4) | ((v(3) >> 4) << 6);
            }
        }
        y
    }
}

impl GgmlBlock for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 210;
    const ZERO: Self = BlockQ6K {
        ql: [0; 128],
        qh: [0; 64],
        scales: [0; 16],
        d: 0,
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.ql.copy_from_slice(&b[0..128]);
        blk.qh.copy_from_slice(&b[128..192]);
        for (s, &v) in blk.scales.iter_mut().zip(&b[192..208]) {
            *s = v as i8;
        }
        blk.d = u16::from_le_bytes([b[208], b[209]]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..128].copy_from_slice(&self.ql);
        out[128..192].copy_from_slice(&self.qh);
        for (o, &s) in out[192..208].iter_mut().zip(&self.scales) {
            *o = s as u8;
        }
        out[208..210].copy_from_slice(&self.d.to_le_bytes());
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        for (x, yb) in x.chunks_exact(QK_K).zip(y) {
            *yb = Self::quantize_block(x, None);
        }
    }

    #[inline(always)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        for ((x, q), yb) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(y) {
            *yb = Self::quantize_block(x, Some(q));
        }
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(yb.d);
            for (n, o) in o.chunks_exact_mut(128).enumerate() {
                let ql = &yb.ql[64 * n..64 * n + 64];
                let qh = &yb.qh[32 * n..32 * n + 32];
                let sc = &yb.scales[8 * n..8 * n + 8];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                    o[l] = d * sc[is] as f32 * q1 as f32;
                    o[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                    o[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                    o[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
                }
            }
        }
    }
}
