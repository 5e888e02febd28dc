//! Q4_K: super-blocks of 256 values in 8 sub-blocks of 32,
//! `x ≈ d·sc_j·q − dmin·m_j`, `q ∈ [0, 15]`, 6-bit `sc_j` and `m_j`.
//!
//! Layout (ggml `block_q4_K`, 144 bytes): `d: f16`, `dmin: f16`, `scales[12]` (see
//! [`crate::types::q4_k::get_scale_min_k4`]), `qs[128]` (for each 64 values, byte `l` holds
//! value `l` in the low nibble and value `l + 32` in the high nibble).
//!
//! Without weights (`quantize_row_q4_K_ref`): per sub-block `w = √(Σx²/32) + |x|`,
//! `make_qkx2_quants(32, 15, w, rmin −1, rdelta 0.1, 20 steps)`; scales and mins to 6 bits
//! against their maxima (`d = max_scale/63`, `dmin = max_min/63`); values requantized
//! against the stored scales. With weights (`quantize_row_q4_K_impl`): `σ² = 2Σx²/256`,
//! `w = qw·√(σ² + x²)`, `make_qkx3_quants(32, 15, w, −0.9, 0.05, 36)`, scales and mins by
//! `make_qp_quants(8, 63, ·, Σw)`.

use crate::types::c_math::{c_max, c_min, fp16_to_fp32, fp32_to_fp16, nearest_int, QK_K};
use crate::types::kquant_lanes::{self, Groups};
use crate::types::lanes::N;
use crate::types::search::{make_qp_quants, QkxSearch};
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_q4_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4K {
    /// Super-block scale of the scales (f16 bits).
    pub d: u16,
    /// Super-block scale of the mins (f16 bits).
    pub dmin: u16,
    /// 6-bit scales and mins, packed.
    pub scales: [u8; 12],
    /// 4-bit codes.
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

/// The per-super-block work shared by Q4_K and Q5_K: sub-block scales and mins from
/// `x`, then (`d`, `dmin`, `scales`) and requantized codes `l ∈ [0, nmax]`.
pub(crate) struct KQuantStep {
    /// Largest code (15 or 31).
    pub nmax: i32,
    /// The unweighted search (`make_qkx2_quants`).
    pub plain: QkxSearch,
}

impl KQuantStep {
    /// `quantize_row_q{4,5}_K_ref` for one super-block: returns `(d, dmin, scales)`. The
    /// 8 sub-block searches run side by side, one per lane ([`kquant_lanes::qkx`]).
    #[inline(always)]
    pub fn plain(&self, x: &[f32], l: &mut [u8; QK_K]) -> (u16, u16, [u8; 12]) {
        let mut gr = Groups::gather(&x[..QK_K], 32);
        // Per sub-block `av_x = √(Σx²/32)` (the sums in ggml's order, lane by lane),
        // then the weights `av_x + |x|`.
        let mut sum_x2 = [0f32; N];
        for xi in &gr.x {
            for (s, &v) in sum_x2.iter_mut().zip(xi) {
                *s += v * v;
            }
        }
        let av_x = sum_x2.map(|s| (s / 32.0).sqrt());
        for (wi, xi) in gr.w.iter_mut().zip(&gr.x) {
            for ((w, &v), &a) in wi.iter_mut().zip(xi).zip(&av_x) {
                *w = a + v.abs();
            }
        }
        let found = kquant_lanes::qkx(self.plain, false, &gr);
        let mut max_scale = 0f32;
        let mut max_min = 0f32;
        for j in 0..QK_K / 32 {
            found.codes(j, &mut l[32 * j..32 * j + 32]);
            let (s, m) = (found.scale[j], found.neg_min[j]);
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        let (scales, mins) = (found.scale, found.neg_min);
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let mut ls = [0u8; 8];
        let mut lm = [0u8; 8];
        for j in 0..8 {
            ls[j] = c_min(63, nearest_int(inv_scale * scales[j]) as u8);
            lm[j] = c_min(63, nearest_int(inv_min * mins[j]) as u8);
        }
        let packed = pack_scale_min_k4(&ls, &lm);
        let d = fp32_to_fp16(max_scale / 63.0);
        let dmin = fp32_to_fp16(max_min / 63.0);
        self.requantize(x, d, dmin, &packed, l);
        (d, dmin, packed)
    }

    /// `quantize_row_q{4,5}_K_impl` for one super-block with weights `qw`; `clamp63`
    /// applies the `MIN(63, ·)` that only the Q5_K variant has.
    #[inline(always)]
    pub fn weighted(
        &self,
        x: &[f32],
        qw: &[f32],
        l: &mut [u8; QK_K],
        clamp63: bool,
    ) -> (u16, u16, [u8; 12]) {
        let search = QkxSearch {
            nmax: self.nmax,
            rmin: -0.9,
            rdelta: 0.05,
            nstep: 36,
            use_mad: false,
        };
        let mut weights = [0f32; QK_K];
        let mut sw = [0f32; 8];
        let mut sum_x2 = 0f32;
        for &v in x.iter().take(QK_K) {
            sum_x2 += v * v;
        }
        let sigma2 = 2.0 * sum_x2 / QK_K as f32;
        for (j, ((w, xs), q)) in weights
            .chunks_exact_mut(32)
            .zip(x.chunks_exact(32))
            .zip(qw.chunks_exact(32))
            .enumerate()
        {
            for ((w, &v), &qv) in w.iter_mut().zip(xs).zip(q) {
                *w = qv * (sigma2 + v * v).sqrt();
            }
            let mut sumw = 0f32;
            for &w in w.iter() {
                sumw += w;
            }
            sw[j] = sumw;
        }
        let mut gr = Groups::gather(&x[..QK_K], 32);
        gr.gather_weights(&weights);
        let found = kquant_lanes::qkx(search, true, &gr);
        for j in 0..QK_K / 32 {
            found.codes(j, &mut l[32 * j..32 * j + 32]);
        }
        let (scales, mins) = (found.scale, found.neg_min);
        let mut ls = [0u8; 8];
        let mut lm = [0u8; 8];
        let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
        let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
        if clamp63 {
            for v in ls.iter_mut().chain(lm.iter_mut()) {
                *v = c_min(63, *v);
            }
        }
        let packed = pack_scale_min_k4(&ls, &lm);
        let d = fp32_to_fp16(d_block);
        let dmin = fp32_to_fp16(m_block);
        self.requantize(x, d, dmin, &packed, l);
        (d, dmin, packed)
    }

    #[inline(always)]
    fn requantize(&self, x: &[f32], d: u16, dmin: u16, packed: &[u8; 12], l: &mut [u8; QK_K]) {
        let dall = fp16_to_fp32(d);
        let dmin = fp16_to_fp32(dmin);
        for j in 0..QK_K / 32 {
            let (sc, m) = get_scale_min_k4(j, packed);
            let d = dall * sc as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin * m as f32;
            for ii in 0..32 {
                let q = nearest_int((x[32 * j + ii] + dm) / d);
                l[32 * j + ii] = c_max(0, c_min(self.nmax, q)) as u8;
            }
        }
    }
}

const STEP: KQuantStep = KQuantStep {
    nmax: 15,
    plain: QkxSearch {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    },
};

impl BlockQ4K {
    #[inline(always)]
    fn pack(&mut self, l: &[u8; QK_K]) {
        for (n, q) in (0..QK_K).step_by(64).zip(self.qs.chunks_exact_mut(32)) {
            for (i, qv) in q.iter_mut().enumerate() {
                *qv = l[n + i] | (l[n + i + 32] << 4);
            }
        }
    }
}

impl GgmlBlock for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 144;
    const ZERO: Self = BlockQ4K {
        d: 0,
        dmin: 0,
        scales: [0; 12],
        qs: [0; 128],
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.d = u16::from_le_bytes([b[0], b[1]]);
        blk.dmin = u16::from_le_bytes([b[2], b[3]]);
        blk.scales.copy_from_slice(&b[4..16]);
        blk.qs.copy_from_slice(&b[16..144]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.dmin.to_le_bytes());
        out[4..16].copy_from_slice(&self.scales);
        out[16..144].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        let mut l = [0u8; QK_K];
        for (x, yb) in x.chunks_exact(QK_K).zip(y) {
            (yb.d, yb.dmin, yb.scales) = STEP.plain(x, &mut l);
            yb.pack(&l);
        }
    }

    #[inline(always)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        let mut l = [0u8; QK_K];
        for ((x, q), yb) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(y) {
            (yb.d, yb.dmin, yb.scales) = STEP.weighted(x, q, &mut l, false);
            yb.pack(&l);
        }
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(yb.d);
            let min = fp16_to_fp32(yb.dmin);
            for (k, (q, o)) in yb
                .qs
                .chunks_exact(32)
                .zip(o.chunks_exact_mut(64))
                .enumerate()
            {
                let (sc, m) = get_scale_min_k4(2 * k, &yb.scales);
                let (d1, m1) = (d * sc as f32, min * m as f32);
                let (sc, m) = get_scale_min_k4(2 * k + 1, &yb.scales);
                let (d2, m2) = (d * sc as f32, min * m as f32);
                for l in 0..32 {
                    o[l] = d1 * (q[l] & 0xF) as f32 - m1;
                    o[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
                }
            }
        }
    }
}

/// `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` from the 12 packed bytes
/// of a Q4_K/Q5_K block.
#[inline(always)]
pub fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs the 6-bit scales and mins of the 8 sub-blocks of a Q4_K/Q5_K block the way
/// ggml does (`ls`/`lm` already limited to 63).
#[inline(always)]
pub fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        let (l_s, l_m) = (ls[j], lm[j]);
        if j < 4 {
            s[j] = l_s;
            s[j + 4] = l_m;
        } else {
            s[j + 4] = (l_s & 0xF) | ((l_m & 0xF) << 4);
            s[j - 4] |= (l_s >> 4) << 6;
            s[j] |= (l_m >> 4) << 6;
        }
    }
    s
}
