//! TQ1_0: ternary super-blocks of 256 values, `x ≈ d·t` with `t ∈ {−1, 0, 1}` (BitNet
//! b1.58, TriLMs), 1.6875 bits per weight.
//!
//! Layout (ggml `block_tq1_0`, 54 bytes): `qs[48]` (5 trits per byte), `qh[4]` (4 trits
//! per byte), `d: f16`. A byte holds trits `t_0 … t_{n-1}` (shifted to 0..2) as the base-3
//! number `t_0 t_1 …` (most significant first; `qh` appends a zero trit), stored as
//! `⌈q·256/243⌉` so that the decoder reads trit `n` as `((q·3^n mod 256)·3) >> 8`.
//! Bytes `qs[0..32]` cover values `m + 32n` (`n < 5`) of the first 160, `qs[32..48]`
//! values `160 + m + 16n` of the next 80, `qh[j]` values `240 + j + 4m`.
//!
//! Quantizer: ggml's `quantize_row_tq1_0_ref` (what `ggml_quantize_chunk` runs; the
//! importance matrix is ignored): `d = max|x|`, `t = lroundf(x/d)`.

use crate::types::c_math::c_lroundf_small;
use crate::types::c_math::{c_max, fp16_to_fp32, fp32_to_fp16, QK_K};
#[cfg(target_arch = "x86_64")]
use crate::types::{lanes::Avx2, tq_avx2};
use crate::types::{GgmlBlock, GgmlType};

/// ggml's `block_tq1_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockTq1_0 {
    /// 5 trits per byte.
    pub qs: [u8; 48],
    /// 4 trits per byte.
    pub qh: [u8; 4],
    /// Scale (f16 bits).
    pub d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockTq1_0>() == 54);

/// `⌈q·256/243⌉` as ggml computes it (`q` a `uint8_t`).
#[inline(always)]
fn pack(q: u8) -> u8 {
    (q as u16 * 256).div_ceil(243) as u8
}

/// The trits of `vals` (already scaled by `1/d`), most significant first.
#[inline(always)]
fn trits(vals: impl Iterator<Item = f32>) -> u8 {
    let mut q = 0u8;
    for v in vals {
        let xi = c_lroundf_small(v).wrapping_add(1);
        q = q.wrapping_mul(3).wrapping_add(xi as u8);
    }
    q
}

impl BlockTq1_0 {
    /// One block of 256 (the portable build, and the AVX2 build's blocks that hold a
    /// non-finite value or a tiny maximum).
    #[inline(always)]
    fn quantize(x: &[f32]) -> Self {
        let mut amax = 0f32;
        for &v in x {
            amax = c_max(amax, v.abs());
        }
        let d = amax;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut y = Self::ZERO;
        y.d = fp32_to_fp16(d);
        for m in 0..32 {
            y.qs[m] = pack(trits((0..5).map(|n| x[m + n * 32] * id)));
        }
        let x1 = &x[160..];
        for m in 0..16 {
            y.qs[32 + m] = pack(trits((0..5).map(|n| x1[m + n * 16] * id)));
        }
        let x2 = &x[240..];
        for j in 0..4 {
            let q = trits((0..4).map(|m| x2[j + m * 4] * id));
            y.qh[j] = pack(q.wrapping_mul(3));
        }
        y
    }
}

impl GgmlBlock for BlockTq1_0 {
    const TYPE: GgmlType = GgmlType::TQ1_0;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 54;
    const ZERO: Self = BlockTq1_0 {
        qs: [0; 48],
        qh: [0; 4],
        d: 0,
    };

    fn read(b: &[u8]) -> Self {
        let mut blk = Self::ZERO;
        blk.qs.copy_from_slice(&b[0..48]);
        blk.qh.copy_from_slice(&b[48..52]);
        blk.d = u16::from_le_bytes([b[52], b[53]]);
        blk
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        out[0..48].copy_from_slice(&self.qs);
        out[48..52].copy_from_slice(&self.qh);
        out[52..54].copy_from_slice(&self.d.to_le_bytes());
    }

    #[inline(always)]
    fn quantize_row(x: &[f32], y: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = Avx2::get() {
            // SAFETY: the token exists only on CPUs with AVX2.
            return unsafe { tq_avx2::tq1_row(t, x, y, Self::quantize) };
        }
        for (xb, yb) in x.chunks_exact(QK_K).zip(y) {
            *yb = Self::quantize(xb);
        }
    }

    const AVX2_DEQUANTIZE: bool = true;

    /// `dequantize_row_tq1_0`, trit `n` of every byte of a run at once (loops over bytes,
    /// which vectorize).
    #[inline(always)]
    fn dequantize_row(y: &[Self], out: &mut [f32]) {
        #[inline(always)]
        fn run(q: &[u8], n: u32, d: f32, o: &mut [f32]) {
            let p = 3u16.pow(n);
            for (o, &q) in o.iter_mut().zip(q) {
                // `(uint8_t)(q·3ⁿ)` in 16-bit lanes, then its top trit `(3·q) >> 8`, as −1/0/1.
                let t = (q as u16 * p) & 0xFF;
                *o = (((t * 3) >> 8) as i16 - 1) as f32 * d;
            }
        }
        for (yb, o) in y.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(yb.d);
            let (a, rest) = o.split_at_mut(160);
            let (b, c) = rest.split_at_mut(80);
            for (n, a) in (0..5).zip(a.chunks_exact_mut(32)) {
                run(&yb.qs[..32], n, d, a);
            }
            for (n, b) in (0..5).zip(b.chunks_exact_mut(16)) {
                run(&yb.qs[32..], n, d, b);
            }
            for (n, c) in (0..4).zip(c.chunks_exact_mut(4)) {
                run(&yb.qh, n, d, c);
            }
        }
    }
}
