//! The numerics of each scheme on plain slices, as torchao 0.15 computes them (see the
//! crate docs for the formulas). Rows are `[K]` slices of a row-major `[N, K]` weight.

use quant_core::dtype::round_f16;
use quant_core::simd::{from_order_key, order_key};
use quant_core::DType;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::fp8::Fp8;

/// `torch.finfo(torch.float32).eps`, the eps of every int scheme except int4dq.
pub const EPS_F32: f32 = f32::EPSILON;

/// Rounding of one arithmetic result to the weight dtype: PyTorch computes each op on
/// bf16/f16 tensors in f32 and rounds the result (round to nearest even).
pub trait Wd: Copy + Send + Sync + 'static {
    /// The weight dtype.
    const DTYPE: DType;
    /// `torch.finfo(wd).eps`.
    const EPS: f32;
    /// Rounds an f32 result to the weight dtype.
    fn r(x: f32) -> f32;
}

/// bfloat16 arithmetic.
#[derive(Clone, Copy, Debug)]
pub struct Bf16;
/// float16 arithmetic.
#[derive(Clone, Copy, Debug)]
pub struct F16;
/// float32 arithmetic.
#[derive(Clone, Copy, Debug)]
pub struct F32;

impl Wd for Bf16 {
    const DTYPE: DType = DType::BF16;
    const EPS: f32 = 0.007_812_5; // 2^-7
    #[inline(always)]
    fn r(x: f32) -> f32 {
        bf16_round(x)
    }
}

impl Wd for F16 {
    const DTYPE: DType = DType::F16;
    const EPS: f32 = 0.000_976_562_5; // 2^-10
    #[inline(always)]
    fn r(x: f32) -> f32 {
        round_f16(x)
    }
}

impl Wd for F32 {
    const DTYPE: DType = DType::F32;
    const EPS: f32 = f32::EPSILON;
    #[inline(always)]
    fn r(x: f32) -> f32 {
        x
    }
}

/// Runs `$body` with `$W` bound to the [`Wd`] type of `$dtype` (f32 for anything but
/// BF16 / F16).
macro_rules! with_wd {
    ($dtype:expr, $W:ident => $body:expr) => {
        match $dtype {
            quant_core::DType::BF16 => {
                type $W = $crate::kernels::Bf16;
                $body
            }
            quant_core::DType::F16 => {
                type $W = $crate::kernels::F16;
                $body
            }
            _ => {
                type $W = $crate::kernels::F32;
                $body
            }
        }
    };
}
pub(crate) use with_wd;

/// Rounds `x` to `dtype` (identity for F32 and others).
#[inline]
pub fn round_out(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::BF16 => bf16_round(x),
        DType::F16 => round_f16(x),
        _ => x,
    }
}

/// f32 → bf16 → f32, round to nearest even, NaN → the canonical 0x7FC0 — the same as
/// `quant_core::dtype::round_bf16`, written without a branch so loops vectorize.
#[inline(always)]
pub fn bf16_round(x: f32) -> f32 {
    let u = x.to_bits();
    let rounded = u.wrapping_add(0x7FFF + ((u >> 16) & 1)) & 0xFFFF_0000;
    let nan = (u & 0x7FFF_FFFF) > 0x7F80_0000;
    f32::from_bits(if nan { 0x7FC0_0000 } else { rounded })
}

/// An integral f32 in [-2^22, 2^22] as the low byte of its two's complement (the value
/// of `x as i8` for x in [-128, 127]), through the 1.5·2^23 bias trick, so loops vectorize.
#[inline(always)]
pub fn int_to_byte(x: f32) -> u8 {
    const BIAS: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + BIAS).to_bits() as u8
}

/// Round half to even (`torch.round`), without a libm call: adding and subtracting 2^23
/// rounds any |x| < 2^23 to an integer in the current (nearest-even) mode; larger values
/// and non-finite ones are already integral or pass through.
#[inline(always)]
pub fn round_half_even(x: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let c = TWO_23.copysign(x);
    let r = ((x + c) - c).copysign(x);
    if x.abs() < TWO_23 {
        r
    } else {
        x
    }
}

/// Exact min and max of a slice of finite values ((+inf, -inf) for an empty slice). The
/// reduction runs on order-preserving integer keys: integer min/max vectorizes, float
/// min/max with IEEE semantics does not. (A NaN would count as larger than +inf or
/// smaller than -inf; torchao propagates NaN; non-finite weights are not specified.)
#[inline(always)]
pub fn min_max(v: &[f32]) -> (f32, f32) {
    if v.is_empty() {
        return (f32::INFINITY, f32::NEG_INFINITY);
    }
    let (mut lo, mut hi) = (i32::MAX, i32::MIN);
    for &x in v {
        let k = order_key(x);
        lo = if k < lo { k } else { lo };
        hi = if k > hi { k } else { hi };
    }
    (from_order_key(lo), from_order_key(hi))
}

/// Exact max |x| of a slice of finite values (0 for an empty slice): |x| orders like its
/// bits with the sign cleared.
#[inline(always)]
pub fn abs_max(v: &[f32]) -> f32 {
    let mut m = 0i32;
    for &x in v {
        let k = (x.to_bits() & 0x7FFF_FFFF) as i32;
        m = if k > m { k } else { m };
    }
    f32::from_bits(m as u32)
}

// ---------------------------------------------------------------- dispatch

/// Whether the AVX2 builds of the row kernels run (x86_64 CPUs with AVX2 and F16C, unless
/// turned off with [`set_simd`]): quant-core's switch, shared by every crate. Both builds
/// compute the same IEEE operations in the same order (Rust never contracts to FMA), so
/// their results are identical; the tests check it.
#[inline]
pub fn simd_enabled() -> bool {
    quant_core::simd::simd_enabled()
}

/// Turns the AVX2 builds off (`false`) or back on where the CPU has AVX2 (`true`), in
/// this crate and the others (see [`quant_core::simd::set_simd`]); for comparing them
/// with the baseline build.
pub fn set_simd(enabled: bool) {
    quant_core::simd::set_simd(enabled)
}

// ---------------------------------------------------------------- float8

/// The float8 scale for an exact `amax`: `f32(wd(amax / fp8_max))`, no eps (an all-zero
/// block gets scale 0).
#[inline(always)]
pub fn fp8_scale<W: Wd>(amax: f32, fmt: Fp8) -> f32 {
    W::r(amax / fmt.max())
}

/// `fp8(clamp(w / scale, ±max))` in f32 for each value. A quotient that is NaN while `w`
/// is not (0/0 for an all-zero block) is the x86 default NaN, negative, as torch on x86
/// gives: code 0xFF.
#[inline(always)]
fn fp8_encode_into(vals: &[f32], scale: f32, fmt: Fp8, out: &mut [u8]) {
    let max = fmt.max();
    if scale == 0.0 {
        for (o, &w) in out.iter_mut().zip(vals) {
            let x = w / scale;
            let x = if x.is_nan() && !w.is_nan() {
                -f32::NAN
            } else {
                x
            };
            *o = fmt.encode(x.clamp(-max, max));
        }
        return;
    }
    match fmt {
        Fp8::E4M3Fn => {
            for (o, &w) in out.iter_mut().zip(vals) {
                *o = crate::fp8::f32_to_e4m3fn((w / scale).clamp(-max, max));
            }
        }
        Fp8::E5M2 => {
            for (o, &w) in out.iter_mut().zip(vals) {
                *o = crate::fp8::f32_to_e5m2((w / scale).clamp(-max, max));
            }
        }
    }
}

quant_core::multiversion! {
    /// Float8 codes of `vals` with a given scale (see `fp8_encode_into`).
    pub fn fp8_encode_slice(vals: &[f32], scale: f32, fmt: Fp8, out: &mut [u8]) {
        fp8_encode_into(vals, scale, fmt, out)
    }
}

quant_core::multiversion! {
    /// Exact max |x| of a slice (the multiversioned [`abs_max`]).
    pub fn abs_max_slice(vals: &[f32]) -> f32 {
        abs_max(vals)
    }
}

quant_core::multiversion! {
    /// One row of per-row float8: writes the codes, returns the scale.
    pub fn fp8_row<W: Wd>(row: &[f32], fmt: Fp8, out: &mut [u8]) -> f32 {
        let scale = fp8_scale::<W>(abs_max(row), fmt);
        fp8_encode_into(row, scale, fmt, out);
        scale
    }
}

/// Per-row float8 of a row-major `[rows, k]` matrix: codes and one f32 scale per row.
pub fn fp8_rows<W: Wd>(vals: &[f32], k: usize, fmt: Fp8, codes: &mut [u8], scales: &mut [f32]) {
    codes
        .par_chunks_mut(k)
        .zip(vals.par_chunks(k))
        .zip(scales.par_iter_mut())
        .for_each(|((c, row), s)| *s = fp8_row::<W>(row, fmt, c));
}

/// Per-tensor float8: codes and the one f32 scale.
pub fn fp8_tensor<W: Wd>(vals: &[f32], fmt: Fp8, codes: &mut [u8]) -> f32 {
    const CHUNK: usize = 1 << 16;
    let amax = vals
        .par_chunks(CHUNK)
        .map(abs_max_slice)
        .reduce(|| 0f32, f32::max);
    let scale = fp8_scale::<W>(amax, fmt);
    codes
        .par_chunks_mut(CHUNK)
        .zip(vals.par_chunks(CHUNK))
        .for_each(|(c, v)| fp8_encode_slice(v, scale, fmt, c));
    scale
}

// ---------------------------------------------------------------- symmetric int (int8, int4dq)

/// Symmetric scale: `max(wd(amax / divisor), wd(eps))` with zero folded into the range.
#[inline(always)]
pub fn sym_scale<W: Wd>(lo: f32, hi: f32, divisor: f32, eps: f32) -> f32 {
    let amax = (-lo.min(0.0)).max(hi.max(0.0));
    W::r(amax / divisor).max(W::r(eps))
}

/// Symmetric codes: `clamp(round(wd(w * wd(1 / scale))), qmin, qmax)`, stored as
/// two's-complement bytes (int8).
#[inline(always)]
pub fn sym_codes<W: Wd>(vals: &[f32], scale: f32, qmin: f32, qmax: f32, out: &mut [u8]) {
    let inv = W::r(1.0 / scale);
    for (o, &w) in out.iter_mut().zip(vals) {
        *o = int_to_byte(round_half_even(W::r(w * inv)).clamp(qmin, qmax));
    }
}

quant_core::multiversion! {
    /// One row of symmetric groups: codes and one scale per group.
    pub fn sym_row<W: Wd>(
        row: &[f32],
        group: usize,
        divisor: f32,
        eps: f32,
        qmin: f32,
        qmax: f32,
        codes: &mut [u8],
        scales: &mut [f32],
    ) {
        for ((cg, vg), sg) in codes.chunks_mut(group).zip(row.chunks(group)).zip(scales) {
            let (lo, hi) = min_max(vg);
            *sg = sym_scale::<W>(lo, hi, divisor, eps);
            sym_codes::<W>(vg, *sg, qmin, qmax, cg);
        }
    }
}

/// Symmetric per-group quantization of a row-major matrix (`group == k` is per row):
/// int8 codes (two's-complement bytes) and one scale (a `wd` value) per group, row-major `[rows, k / group]`.
#[allow(clippy::too_many_arguments)]
pub fn sym_groups<W: Wd>(
    vals: &[f32],
    k: usize,
    group: usize,
    divisor: f32,
    eps: f32,
    qmin: f32,
    qmax: f32,
    codes: &mut [u8],
    scales: &mut [f32],
) {
    let per_row = k / group;
    codes
        .par_chunks_mut(k)
        .zip(vals.par_chunks(k))
        .zip(scales.par_chunks_mut(per_row))
        .for_each(|((c, row), s)| sym_row::<W>(row, group, divisor, eps, qmin, qmax, c, s));
}

// ---------------------------------------------------------------- asymmetric uintX

/// Asymmetric parameters with an integer zero point in `[0, qmax]`:
/// `scale = max(wd(wd(max_pos - min_neg) / qmax), eps)`,
/// `zp = clamp(-round(wd(min_neg / scale)), 0, qmax)`.
#[inline(always)]
pub fn asym_params<W: Wd>(lo: f32, hi: f32, qmax: f32) -> (f32, f32) {
    let min_neg = lo.min(0.0);
    let max_pos = hi.max(0.0);
    let scale = W::r(W::r(max_pos - min_neg) / qmax).max(W::r(EPS_F32));
    let zp = (0.0 - round_half_even(W::r(min_neg / scale))).clamp(0.0, qmax);
    (scale, zp)
}

quant_core::multiversion! {
    /// One row of asymmetric groups: codes, and per group a scale and zero point.
    pub fn asym_row<W: Wd>(
        row: &[f32],
        group: usize,
        qmax: f32,
        codes: &mut [u8],
        scales: &mut [f32],
        zps: &mut [i32],
    ) {
        for (((cg, vg), sg), zg) in codes
            .chunks_mut(group)
            .zip(row.chunks(group))
            .zip(scales)
            .zip(zps)
        {
            let (lo, hi) = min_max(vg);
            let (scale, zp) = asym_params::<W>(lo, hi, qmax);
            *sg = scale;
            *zg = zp as i32;
            let inv = W::r(1.0 / scale);
            for (o, &w) in cg.iter_mut().zip(vg) {
                let q = W::r(round_half_even(W::r(w * inv)) + zp);
                *o = int_to_byte(q.clamp(0.0, qmax));
            }
        }
    }
}

/// Asymmetric per-group quantization: codes in `[0, qmax]`, and per group a scale (a
/// `wd` value) and an integer zero point, row-major `[rows, k / group]`.
#[allow(clippy::too_many_arguments)]
pub fn asym_groups<W: Wd>(
    vals: &[f32],
    k: usize,
    group: usize,
    qmax: f32,
    codes: &mut [u8],
    scales: &mut [f32],
    zps: &mut [i32],
) {
    par_group_rows(vals, k, group, codes, scales, zps, |row, c, s, z| {
        asym_row::<W>(row, group, qmax, c, s, z)
    });
}

/// Runs `row_fn(row, codes, scales, zeros)` over the rows of a row-major `[rows, k]`
/// matrix in parallel, handing each row its `k` codes and its `k / group` scales and
/// zero points.
fn par_group_rows<C: Send, Z: Send>(
    vals: &[f32],
    k: usize,
    group: usize,
    codes: &mut [C],
    scales: &mut [f32],
    zeros: &mut [Z],
    row_fn: impl Fn(&[f32], &mut [C], &mut [f32], &mut [Z]) + Sync,
) {
    let per_row = k / group;
    codes
        .par_chunks_mut(k)
        .zip(vals.par_chunks(k))
        .zip(
            scales
                .par_chunks_mut(per_row)
                .zip(zeros.par_chunks_mut(per_row)),
        )
        .for_each(|((c, row), (s, z))| row_fn(row, c, s, z));
}

// ---------------------------------------------------------------- int4wo (fbgemm)

/// fbgemm `int4_row_quantize_zp` on one group, all in f32: codes in `[-8, 7]` and the f32
/// scale and zero (cast to the weight dtype only for storage).
#[inline(always)]
pub fn int4wo_group(vals: &[f32], out: &mut [i8]) -> (f32, f32) {
    let (lo, hi) = min_max(vals);
    let scale = (hi - lo).max(1e-6) / 15.0;
    let zero = lo + scale * 8.0;
    for (o, &w) in out.iter_mut().zip(vals) {
        *o = int_to_byte(round_half_even((w - lo) / scale).clamp(0.0, 15.0) - 8.0) as i8;
    }
    (scale, zero)
}

quant_core::multiversion! {
    /// One row of int4wo groups.
    pub fn int4wo_row(row: &[f32], group: usize, codes: &mut [i8], scales: &mut [f32], zeros: &mut [f32]) {
        for (((cg, vg), sg), zg) in codes
            .chunks_mut(group)
            .zip(row.chunks(group))
            .zip(scales)
            .zip(zeros)
        {
            (*sg, *zg) = int4wo_group(vg, cg);
        }
    }
}

/// int4wo over a row-major matrix: codes `[rows, k]` and scale / zero per group,
/// row-major `[rows, k / group]` (not yet transposed), as f32.
pub fn int4wo_groups(
    vals: &[f32],
    k: usize,
    group: usize,
    codes: &mut [i8],
    scales: &mut [f32],
    zeros: &mut [f32],
) {
    par_group_rows(vals, k, group, codes, scales, zeros, |row, c, s, z| {
        int4wo_row(row, group, c, s, z)
    });
}

// ---------------------------------------------------------------- dequantization

/// Views an initialized output row as one the `*_into` kernels write (they write only
/// values, never uninitialized bytes).
fn as_uninit(out: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: only values are written through the view.
    unsafe { quant_core::simd::as_uninit_mut(out) }
}

/// `wd(f32(q) * scale)` for one row of float8 codes (`table`: the decoded bytes).
pub fn dequant_fp8_row<W: Wd>(codes: &[u8], table: &[f32; 256], scale: f32, out: &mut [f32]) {
    dequant_fp8_row_into::<W>(codes, table, scale, as_uninit(out))
}

quant_core::multiversion! {
    /// [`dequant_fp8_row`] into a row not yet written: writes
    /// `min(codes.len(), out.len())` values.
    pub(crate) fn dequant_fp8_row_into<W: Wd>(
        codes: &[u8],
        table: &[f32; 256],
        scale: f32,
        out: &mut [MaybeUninit<f32>],
    ) {
        for (o, &b) in out.iter_mut().zip(codes) {
            o.write(W::r(table[usize::from(b)] * scale));
        }
    }
}

/// `wd((q - zp) * scale)` for one row of int8-stored codes, one scale (and zero point)
/// per group.
pub fn dequant_affine_row<W: Wd>(
    codes: &[u8],
    scales: &[f32],
    zps: Option<&[f32]>,
    group: usize,
    out: &mut [f32],
) {
    dequant_affine_row_into::<W>(codes, scales, zps, group, as_uninit(out))
}

quant_core::multiversion! {
    /// [`dequant_affine_row`] into a row not yet written: writes
    /// `min(codes.len(), out.len())` values.
    pub(crate) fn dequant_affine_row_into<W: Wd>(
        codes: &[u8],
        scales: &[f32],
        zps: Option<&[f32]>,
        group: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        for (gi, (og, cg)) in out.chunks_mut(group).zip(codes.chunks(group)).enumerate() {
            let s = scales.get(gi).copied().unwrap_or(0.0);
            let z = zps.and_then(|z| z.get(gi)).copied().unwrap_or(0.0);
            for (o, &b) in og.iter_mut().zip(cg) {
                o.write(W::r((f32::from(b as i8) - z) * s));
            }
        }
    }
}

/// `wd(q * scale + zero)` for one row of packed int4 codes (this row's scale and zero
/// per group).
pub fn dequant_int4_row<W: Wd>(
    packed: &[u8],
    scales: &[f32],
    zeros: &[f32],
    group: usize,
    out: &mut [f32],
) {
    dequant_int4_row_into::<W>(packed, scales, zeros, group, as_uninit(out))
}

quant_core::multiversion! {
    /// [`dequant_int4_row`] into a row not yet written: with an even `group`, writes
    /// `min(2 * packed.len(), out.len())` values.
    pub(crate) fn dequant_int4_row_into<W: Wd>(
        packed: &[u8],
        scales: &[f32],
        zeros: &[f32],
        group: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        for (gi, (og, pg)) in out
            .chunks_mut(group)
            .zip(packed.chunks(group / 2))
            .enumerate()
        {
            let s = scales.get(gi).copied().unwrap_or(0.0);
            let z = zeros.get(gi).copied().unwrap_or(0.0);
            for (o2, &b) in og.chunks_exact_mut(2).zip(pg) {
                let lo = f32::from(((b << 4) as i8) >> 4);
                let hi = f32::from((b as i8) >> 4);
                if let [a, c] = o2 {
                    a.write(W::r(lo * s + z));
                    c.write(W::r(hi * s + z));
                }
            }
        }
    }
}

/// Packs int4 codes two per byte: the even column in the low nibble (two's complement).
pub fn pack_int4(codes: &[i8]) -> Vec<u8> {
    const CHUNK: usize = 1 << 16;
    let mut out = vec![0u8; codes.len().div_ceil(2)];
    out.par_chunks_mut(CHUNK / 2)
        .zip(codes.par_chunks(CHUNK))
        .for_each(|(o, c)| pack_int4_into(c, o));
    out
}

quant_core::multiversion! {
    /// [`pack_int4`] of one chunk into `out` (`ceil(codes.len() / 2)` bytes).
    fn pack_int4_into(codes: &[i8], out: &mut [u8]) {
        let mut pairs = codes.chunks_exact(2);
        for (o, p) in out.iter_mut().zip(&mut pairs) {
            if let [a, b] = p {
                *o = ((*a as u8) & 0x0F) | ((*b as u8) << 4);
            }
        }
        if let ([a], Some(o)) = (pairs.remainder(), out.get_mut(codes.len() / 2)) {
            *o = (*a as u8) & 0x0F;
        }
    }
}

/// Unpacks [`pack_int4`] bytes (sign-extending each nibble).
pub fn unpack_int4(bytes: &[u8]) -> Vec<i8> {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(((b << 4) as i8) >> 4);
        out.push((b as i8) >> 4);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_even_matches_std() {
        let mut x = -70_000.0f32;
        while x < 70_000.0 {
            for v in [x, x + 0.5, x + 0.25, x - 0.5, x * 1.000_001] {
                assert_eq!(
                    round_half_even(v).to_bits(),
                    v.round_ties_even().to_bits(),
                    "{v}"
                );
            }
            x += 0.75;
        }
        for bits in (0u32..=u32::MAX).step_by(9_973) {
            let v = f32::from_bits(bits);
            if !v.is_nan() {
                assert_eq!(
                    round_half_even(v).to_bits(),
                    v.round_ties_even().to_bits(),
                    "{v:e}"
                );
            }
        }
    }

    #[test]
    fn bf16_round_matches_core() {
        for bits in (0u32..=u32::MAX).step_by(997) {
            let x = f32::from_bits(bits);
            assert_eq!(
                bf16_round(x).to_bits(),
                quant_core::dtype::round_bf16(x).to_bits(),
                "{bits:#x}"
            );
        }
    }

    #[test]
    fn int_to_byte_is_the_i8_cast() {
        for i in -128i32..=127 {
            assert_eq!(int_to_byte(i as f32), i as i8 as u8);
        }
    }

    #[test]
    fn reductions_are_exact() {
        let mut s: u32 = 1;
        for len in [1usize, 2, 7, 77, 4096] {
            for scale in [1e-30f32, 1e-3, 1.0, 3e38] {
                let v: Vec<f32> = (0..len)
                    .map(|_| {
                        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * scale
                    })
                    .collect();
                let (lo, hi) = min_max(&v);
                assert_eq!(lo, v.iter().copied().fold(f32::INFINITY, f32::min));
                assert_eq!(hi, v.iter().copied().fold(f32::NEG_INFINITY, f32::max));
                assert_eq!(abs_max(&v), v.iter().fold(0f32, |a, x| a.max(x.abs())));
            }
        }
        assert_eq!(min_max(&[0.0, -0.0]).0, 0.0);
        assert_eq!(abs_max(&[]), 0.0);
    }

    #[test]
    fn int4_pack_round_trip() {
        let codes: Vec<i8> = (-8..8).chain((-8..8).rev()).collect();
        assert_eq!(unpack_int4(&pack_int4(&codes)), codes);
    }

    #[test]
    fn wd_eps_is_finfo_eps() {
        assert_eq!(Bf16::EPS, 2f32.powi(-7));
        assert_eq!(F16::EPS, 2f32.powi(-10));
        assert_eq!(F32::EPS, 2f32.powi(-23));
    }
}
