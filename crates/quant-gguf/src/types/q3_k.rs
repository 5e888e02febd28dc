//! Q3_K: super-blocks of 256 values in 16 sub-blocks of 16, `x ≈ d·(sc_j − 32)·(q − 4)`,
//! `q ∈ [0, 7]`, 6-bit `sc_j`.
//!
//! Layout (ggml `block_q3_K`, 110 bytes): `hmask[32]` (bit 2 of each code: value `i` at
//! byte `i % 32`, bit `i / 32`), `qs[64]` (low 2 bits, packed as Q2_K), `scales[12]`
//! (low nibbles of `sc_0..7` in bytes 0-7, of `sc_8..15` in the high nibbles of bytes 0-7,
//! the top 2 bits of `sc_j` in byte `8 + j%4` at bit `2·(j/4)`), `d: f16`.
//!
//! Without weights (`quantize_row_q3_K_ref`): per sub-block `make_q3_quants(16, 4,
//! rmse)`; `d = max_scale/−32` with the sub-block scale of largest magnitude; values
//! requantized against the stored scales. With weights (`quantize_row_q3_K_impl`):
//! `w = qw·√(σ² + x²)` with `σ² = 2Σx²/256`, sub-block scales by `make_qx_quants(16, 4,
//! rmse 1, w)`, the block scale by `make_qx_quants(16, 32, rmse 1, Σw)`.

use crate::types::c_math::{c_max, c_min, fp16_to_fp32, fp32_to_fp16, nearest_int, QK_K};
use crate::types::q2_k::pack2;
use crate::types::search::{make_q3_quants_x16, make_qx_quants};
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_q3_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ3K {
    /// High bit of each code.
    pub hmask: [u8; 32],
    /// Low 2 bits of each code.
    pub qs: [u8; 64],
    /// 6-bit sub-block scales, packed.
    pub scales: [u8; 12],
    /// Super-block scale (f16 bits).
    pub d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

/// Packs the 16 6-bit scales (`l_j ∈ [0, 63]`) into 12 bytes.
#[inline(always)]
fn pack_scales(l: impl Fn(usize) -> i32) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..16 {
        let mut lj = l(j);
        if j < 8 {
            s[j] = (lj & 0xF) as u8;
        } else {
            s[j - 8] = (s[j - 8] as i32 | ((lj & 0xF) << 4)) as u8;
        }
        lj >>= 4;
        s[j % 4 + 8] = (s[j % 4 + 8] as i32 | (lj << (2 * (j / 4)))) as u8;
    }
    s
}

/// The signed scale `sc_j − 32` of sub-block `j`.
#[inline]
fn scale(s: &[u8; 12], j: usize) -> i8 {
    let lo = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    let sc = (lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i8;
    sc.wrapping_sub(32)
}

impl BlockQ3K {
    /// Requantizes against the stored scales and packs `hmask`/`qs`.
    #[inline(always)]
    fn finish(&mut self, x: &[f32], l: &mut [i8; QK_K]) {
        let dall = fp16_to_fp32(self.d);
        for j in 0..QK_K / 16 {
            let d = dall * scale(&self.scales, j) as f32;
            if d == 0.0 {
                continue;
            }
            for (lj, &xj) in l[16 * j..16 * j + 16]
                .iter_mut()
                .zip(&x[16 * j..16 * j + 16])
            {
                let q = nearest_int(xj / d);
                *lj = (c_max(-4, c_min(3, q)) + 4) as i8;
            }
        }
        // Value `i` sets bit `i / 32` of `hmask[i % 32]` when it is above 3.
        self.hmask = [0; 32];
        let mut lu = [0u8; QK_K];
        for (bit, (lc, uc)) in l.chunks_exact(32).zip(lu.chunks_exact_mut(32)).enumerate() {
            for ((h, &lj), u) in self.hmask.iter_mut().zip(lc).zip(uc) {
                let high = lj > 3;
                *h |= (high as u8) << bit;
                *u = (lj - if high { 4 } else { 0 }) as u8;
            }
        }
        pack2(&lu, &mut self.qs);
    }
}

impl GgmlBlock for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 110;
    const ZERO: Self = BlockQ3K {
        hmask: [0; 32],
        qs: [0; 64],
        scales: [0; 12],
        d: 0,
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.hmask.copy_from_slice(&b[0..32]);
        blk.qs.copy_from_slice(&b[32..96]);
        blk.scales.copy_from_slice(&b[96..108]);
        blk.d = u16::from_le_bytes([b[108], b[109]]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..32].copy_from_slice(&self.hmask);
        out[32..96].copy_from_slice(&self.qs);
        out[96..108].copy_from_slice(&self.scales);
        out[108..110].copy_from_slice(&self.d.to_le_bytes());
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; 16];
        for (x, yb) in x.chunks_exact(QK_K).zip(y) {
            let mut max_scale = 0f32;
            let mut amax = 0f32;
            let Ok(xa) = <&[f32; QK_K]>::try_from(x) else {
                continue;
            };
            make_q3_quants_x16(4, xa, &mut l, &mut scales);
            for &sj in &scales {
                let s = sj.abs();
                if s > amax {
                    amax = s;
                    max_scale = sj;
                }
            }
            if max_scale != 0.0 {
                let iscale = -32.0 / max_scale;
                yb.scales = pack_scales(|j| {
                    let lj = nearest_int(iscale * scales[j]) as i8 as i32;
                    c_max(-32, c_min(31, lj)) + 32
                });
                yb.d = fp32_to_fp16(1.0 / iscale);
            } else {
                yb.scales = [0; 12];
                yb.d = fp32_to_fp16(0.0);
            }
            yb.finish(x, &mut l);
        }
    }

    #[inline(always)]
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let mut weight = [0f32; 16];
        let mut sw = [0f32; 16];
        let mut ls = [0i8; 16];
        for ((x, qwb), yb) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(y) {
            let mut sumx2 = 0f32;
            for &v in x {
                sumx2 += v * v;
            }
            let sigma2 = 2.0 * sumx2 / QK_K as f32;
            for j in 0..QK_K / 16 {
                let xs = &x[16 * j..16 * j + 16];
                let q = &qwb[16 * j..16 * j + 16];
                for ((w, &v), &qv) in weight.iter_mut().zip(xs).zip(q) {
                    *w = qv * (sigma2 + v * v).sqrt();
                }
                let mut sumw = 0f32;
                for &w in &weight {
                    sumw += w;
                }
                sw[j] = sumw;
                scales[j] = make_qx_quants(4, xs, &mut l[16 * j..16 * j + 16], 1, Some(&weight));
            }
            let d_block = make_qx_quants(32, &scales, &mut ls, 1, Some(&sw));
            yb.scales = pack_scales(|j| ls[j] as i32);
            yb.d = fp32_to_fp16(d_block);
            yb.finish(x, &mut l);
        }
    }

    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d_all = fp16_to_fp32(yb.d);
            let mut m = 1u8;
            let mut is = 0;
            let mut k = 0;
            for n in (0..QK_K).step_by(128) {
                let q = &yb.qs[n / 4..n / 4 + 32];
                let mut shift = 0;
                for _j in 0..4 {
                    for half in 0..2 {
                        let dl = d_all * scale(&yb.scales, is) as f32;
                        is += 1;
                        for l in 0..16 {
                            let i = l + 16 * half;
                            let lo = ((q[i] >> shift) & 3) as i8 as i32;
                            let hi = if yb.hmask[i] & m != 0 { 0 } else { 4 };
                            o[k] = dl * (lo - hi) as f32;
                            k += 1;
                        }
                    }
                    shift += 2;
                    m = m.wrapping_shl(1);
                }
            }
        }
    }
}
