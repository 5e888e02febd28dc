//! Blockwise 4-bit quantization (NF4 / FP4) with bitsandbytes 0.50's CPU semantics (spec §1),
//! and the double quantization of the absmax vector (spec §1.7).

use quant_core::dtype::round_bf16;
use quant_core::DType;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::int8::round_f16_value;
use crate::tables::{
    dynamic_lut, lut_index, ABSMAX_FLOOR, FP4, FP4_BOUNDS, FP4_ORDER, FP4_SIGNED_ZERO, NF4,
    NF4_BOUNDS,
};
use crate::QuantType;

/// Blocks handed to one rayon task at least (keeps task overhead small for blocksize 64).
const MIN_BLOCKS_PER_TASK: usize = 64;

/// torch's `max(|x|)` (NaN if any value is NaN) of the cast values: the maximum of the
/// magnitudes' bit patterns, which order like the values (NaN above infinity); vectorizes.
#[inline(always)]
pub(crate) fn absmax_of<F: Fn(f32) -> f32>(block: &[f32], cast: &F) -> f32 {
    let bits = block
        .iter()
        .map(|&v| cast(v).to_bits() & 0x7FFF_FFFF)
        .fold(0u32, u32::max);
    if bits > 0x7F80_0000 {
        f32::NAN
    } else {
        f32::from_bits(bits)
    }
}

/// `torch.clamp(x, min=lo)`: NaN stays NaN.
#[inline(always)]
fn clamp_min_nan(x: f32, lo: f32) -> f32 {
    if x.is_nan() || x >= lo {
        x
    } else {
        lo
    }
}

impl QuantType {
    /// The sorted decision thresholds.
    #[inline(always)]
    fn bounds(self) -> &'static [f32; 15] {
        match self {
            QuantType::Nf4 => &NF4_BOUNDS,
            QuantType::Fp4 => &FP4_BOUNDS,
        }
    }

    /// The code of a scaled value: `torch.bucketize(s, bounds)` (the number of thresholds
    /// `t` with `!(t >= s)`, so exact ties go to the lower level and NaN to the top), then
    /// FP4's sorted-index → code permutation.
    #[inline]
    pub fn code(self, s: f32) -> u8 {
        let nan = s.is_nan();
        let idx = self
            .bounds()
            .iter()
            .map(|&t| u8::from(t < s || nan))
            .sum::<u8>();
        self.code_of_index(u32::from(idx))
    }

    /// The code of the `idx`-th sorted level (identity for NF4, [`FP4_ORDER`] for FP4).
    #[inline]
    fn code_of_index(self, idx: u32) -> u8 {
        self.codes_by_index()[(idx & 15) as usize]
    }

    /// Code of each sorted level.
    #[inline(always)]
    fn codes_by_index(self) -> &'static [u8; 16] {
        const IDENTITY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        match self {
            QuantType::Nf4 => &IDENTITY,
            QuantType::Fp4 => &FP4_ORDER,
        }
    }

    /// The table bitsandbytes' CPU dequantization uses for a weight whose last dimension is
    /// `last_dim`: the native kernel (even last dimension) decodes FP4 code 8 as -0.0, the
    /// PyTorch fallback (odd) as +0.0.
    pub fn dequant_table(self, last_dim: usize) -> &'static [f32; 16] {
        match self {
            QuantType::Nf4 => &NF4,
            QuantType::Fp4 if last_dim % 2 == 0 => &FP4_SIGNED_ZERO,
            QuantType::Fp4 => &FP4,
        }
    }

    /// The stored `quant_map` table.
    pub fn quant_map(self) -> &'static [f32; 16] {
        match self {
            QuantType::Nf4 => &NF4,
            QuantType::Fp4 => &FP4,
        }
    }
}

/// Elements scaled and coded together (a multiple of 2; the loops over it vectorize).
const CHUNK: usize = 64;

/// Quantizes one block into `out` (`ceil(len / 2)` bytes, first element in the high
/// nibble, an odd tail padded with the code of 0.0); returns the stored absmax. `cast`
/// rounds each input to the load dtype first.
#[inline(always)]
fn quantize_block<F: Fn(f32) -> f32>(
    block: &[f32],
    out: &mut [MaybeUninit<u8>],
    tail: bool,
    qt: QuantType,
    cast: &F,
) -> f32 {
    let absmax = absmax_of(block, cast);
    let clamped = clamp_min_nan(absmax, ABSMAX_FLOOR);
    let inv = 1.0 / clamped;
    // Whole chunks of full blocks on fixed-size arrays (no masked loads and stores).
    let (rest_x, rest_o) = if tail {
        (block, out)
    } else {
        let mut xf = block.chunks_exact(CHUNK);
        let mut of = out.chunks_exact_mut(CHUNK / 2);
        for (xs, os) in (&mut xf).zip(&mut of) {
            if let (Ok(xs), Ok(os)) = (
                <&[f32; CHUNK]>::try_from(xs),
                <&mut [MaybeUninit<u8>; CHUNK / 2]>::try_from(os),
            ) {
                let mut scaled = [0f32; CHUNK];
                for (d, &v) in scaled.iter_mut().zip(xs) {
                    *d = nan_to_inf((cast(v) * inv).clamp(-1.0, 1.0));
                }
                code_chunk(&scaled, qt, os);
            }
        }
        (xf.remainder(), of.into_remainder())
    };
    for (xs, os) in rest_x.chunks(CHUNK).zip(rest_o.chunks_mut(CHUNK / 2)) {
        // Elements past the end (the pad of an odd tail) are 0.0.
        let mut scaled = [0f32; CHUNK];
        if tail {
            for (d, &v) in scaled.iter_mut().zip(xs) {
                *d = nan_to_inf((cast(v) / clamped).clamp(-1.0, 1.0));
            }
        } else {
            for (d, &v) in scaled.iter_mut().zip(xs) {
                *d = nan_to_inf((cast(v) * inv).clamp(-1.0, 1.0));
            }
        }
        code_chunk(&scaled, qt, os);
    }
    // The library stores the clamped absmax of a short tail block (`am.clamp(min=1e-38)`),
    // the raw absmax of full blocks.
    if tail {
        clamped
    } else {
        absmax
    }
}

/// bucketize puts NaN above every threshold: it counts as +inf (a select, which
/// vectorizes without masked stores).
#[inline(always)]
fn nan_to_inf(x: f32) -> f32 {
    if x.is_nan() {
        f32::INFINITY
    } else {
        x
    }
}

/// Codes of `CHUNK` scaled values (no NaN: see [`nan_to_inf`]), packed two per byte into
/// `os` (as many bytes as `os` holds, at most `CHUNK / 2`).
#[inline(always)]
fn code_chunk(scaled: &[f32; CHUNK], qt: QuantType, os: &mut [MaybeUninit<u8>]) {
    let mut count = [0u32; CHUNK];
    for &t in qt.bounds() {
        for (c, &v) in count.iter_mut().zip(scaled.iter()) {
            *c += u32::from(t < v);
        }
    }
    match qt {
        // NF4 codes are the sorted indices themselves: pure arithmetic, which vectorizes.
        QuantType::Nf4 => {
            for (o, pair) in os.iter_mut().zip(count.chunks_exact(2)) {
                if let [hi, lo] = pair {
                    o.write((((*hi & 15) << 4) | (*lo & 15)) as u8);
                }
            }
        }
        QuantType::Fp4 => {
            let codes = qt.codes_by_index();
            for (o, pair) in os.iter_mut().zip(count.chunks_exact(2)) {
                if let [hi, lo] = pair {
                    o.write((codes[(*hi & 15) as usize] << 4) | codes[(*lo & 15) as usize]);
                }
            }
        }
    }
}

/// Quantizes a flattened weight: returns (packed bytes `[(n + 1) / 2]`, f32 absmax per block).
/// `blocksize` must be even and non-zero (bitsandbytes' values are powers of two ≥ 32); an
/// odd one gives meaningless bytes, and 0 or 1 panics.
pub fn quantize_4bit(x: &[f32], blocksize: usize, qt: QuantType) -> (Vec<u8>, Vec<f32>) {
    quantize_4bit_cast(x, blocksize, qt, DType::F32)
}

/// [`quantize_4bit`] of the values first rounded (RNE) to `load` (F32, F16 or BF16).
pub fn quantize_4bit_cast(
    x: &[f32],
    blocksize: usize,
    qt: QuantType,
    load: DType,
) -> (Vec<u8>, Vec<f32>) {
    match load {
        DType::F16 => quantize_with(x, blocksize, qt, &round_f16_value),
        DType::BF16 => quantize_with(x, blocksize, qt, &round_bf16),
        _ => quantize_with(x, blocksize, qt, &|v: f32| v),
    }
}

fn quantize_with<F: Fn(f32) -> f32 + Sync>(
    x: &[f32],
    blocksize: usize,
    qt: QuantType,
    cast: &F,
) -> (Vec<u8>, Vec<f32>) {
    let n = x.len();
    let nblocks = n.div_ceil(blocksize);
    let mut absmax = vec![0f32; nblocks];
    let mut fill = |packed: &mut [MaybeUninit<u8>]| {
        packed
            .par_chunks_mut(blocksize / 2 * MIN_BLOCKS_PER_TASK)
            .zip(x.par_chunks(blocksize * MIN_BLOCKS_PER_TASK))
            .zip(absmax.par_chunks_mut(MIN_BLOCKS_PER_TASK))
            .for_each(|((out, xs), am)| quantize_blocks(xs, out, am, blocksize, qt, cast));
    };
    if !pairs_whole_blocks(blocksize) {
        // Outside the documented sizes: what no task writes stays 0.
        let mut packed = vec![0u8; n.div_ceil(2)];
        // SAFETY: the kernels store initialized bytes only.
        fill(unsafe { quant_core::simd::as_uninit_mut(&mut packed) });
        return (packed, absmax);
    }
    // SAFETY: `packed` has `ceil(n / 2)` bytes; tasks pair whole blocks of bytes with whole
    // blocks of values (`blocksize` is even, checked above), and `quantize_block` writes
    // `ceil(len / 2)` bytes for a block of `len` values.
    let packed = unsafe { quant_core::simd::vec_written(n.div_ceil(2), fill) };
    (packed, absmax)
}

/// Whether the task chunks of `blocksize / 2` bytes and `blocksize` values line up block
/// for block (an even, non-zero `blocksize` whose task span does not overflow).
fn pairs_whole_blocks(blocksize: usize) -> bool {
    blocksize >= 2 && blocksize % 2 == 0 && blocksize.checked_mul(MIN_BLOCKS_PER_TASK).is_some()
}

quant_core::multiversion! {
    /// The blocks of one task (see `quantize_block`).
    fn quantize_blocks<F: Fn(f32) -> f32>(
        xs: &[f32],
        out: &mut [MaybeUninit<u8>],
        absmax: &mut [f32],
        blocksize: usize,
        qt: QuantType,
        cast: F,
    ) {
        for ((o, block), am) in out
            .chunks_mut(blocksize / 2)
            .zip(xs.chunks(blocksize))
            .zip(absmax)
        {
            *am = quantize_block(block, o, block.len() < blocksize, qt, &cast);
        }
    }
}

/// Dequantizes `n` codes from `packed` with per-block `absmax`, rounding each f32 product
/// `table[code] * absmax` to `dtype` (RNE). Sizes must have been checked by the caller:
/// `packed.len() * 2 >= n`, `absmax.len() >= ceil(n / blocksize)`.
pub fn dequantize_4bit(
    packed: &[u8],
    absmax: &[f32],
    n: usize,
    blocksize: usize,
    table: &[f32; 16],
    dtype: DType,
) -> Vec<f32> {
    match dtype {
        DType::F16 => dequantize_with(packed, absmax, n, blocksize, table, &round_f16_value),
        DType::BF16 => dequantize_with(packed, absmax, n, blocksize, table, &round_bf16),
        _ => dequantize_with(packed, absmax, n, blocksize, table, &|v: f32| v),
    }
}

fn dequantize_with<F: Fn(f32) -> f32 + Sync>(
    packed: &[u8],
    absmax: &[f32],
    n: usize,
    blocksize: usize,
    table: &[f32; 16],
    round: &F,
) -> Vec<f32> {
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(blocksize * MIN_BLOCKS_PER_TASK)
            .zip(packed.par_chunks(blocksize / 2 * MIN_BLOCKS_PER_TASK))
            .zip(absmax.par_chunks(MIN_BLOCKS_PER_TASK))
            .for_each(|((o, p), am)| dequantize_blocks(p, am, o, blocksize, table, round));
    };
    if !pairs_whole_blocks(blocksize)
        || packed.len() < n.div_ceil(2)
        || absmax.len() < n.div_ceil(blocksize)
    {
        // Not the checked sizes: what has no codes stays 0.
        let mut out = vec![0f32; n];
        // SAFETY: the kernels store initialized values only.
        fill(unsafe { quant_core::simd::as_uninit_mut(&mut out) });
        return out;
    }
    // SAFETY: `packed.len() * 2 >= n` and `absmax.len() >= ceil(n / blocksize)` (checked
    // above); tasks pair whole blocks (`blocksize` even, checked above), and `dequantize_blocks` writes every element of
    // each block (the pairs, then an odd tail from the high nibble of the next byte).
    unsafe { quant_core::simd::vec_written(n, fill) }
}

quant_core::multiversion! {
    /// The blocks of one task: each block's 16 possible values `round(table[c] * absmax)`
    /// are computed once, then looked up by nibble.
    fn dequantize_blocks<F: Fn(f32) -> f32>(
        packed: &[u8],
        absmax: &[f32],
        out: &mut [MaybeUninit<f32>],
        blocksize: usize,
        table: &[f32; 16],
        round: F,
    ) {
        for ((o, p), &am) in out
            .chunks_mut(blocksize)
            .zip(packed.chunks(blocksize / 2))
            .zip(absmax)
        {
            let mut lut = [0f32; 16];
            for (l, &t) in lut.iter_mut().zip(table) {
                *l = round(t * am);
            }
            let last_byte = p.get(o.len() / 2).copied();
            let mut pairs = o.chunks_exact_mut(2);
            for (pair, &byte) in (&mut pairs).zip(p) {
                if let [a, b] = pair {
                    a.write(lut[usize::from(byte >> 4)]);
                    b.write(lut[usize::from(byte & 0x0F)]);
                }
            }
            // An odd tail: its last element is the high nibble of the last byte.
            if let ([a], Some(byte)) = (pairs.into_remainder(), last_byte) {
                a.write(lut[usize::from(byte >> 4)]);
            }
        }
    }
}

/// `Tensor.mean()` of a contiguous 1-D f32 tensor as torch 2.x computes it on an AVX2 CPU in
/// one thread: the cascade sum of `SumKernel.cpp` (8-lane vectors, 4 interleaved
/// accumulators, 4 cascade levels; scalar tail, then the 8 lanes added in order), divided by
/// `n` in f32.
pub fn torch_mean(x: &[f32]) -> f32 {
    if x.is_empty() {
        return f32::NAN;
    }
    torch_sum(x) / x.len() as f32
}

/// torch's f32 `sum` of a contiguous vector (see [`torch_mean`]).
pub fn torch_sum(x: &[f32]) -> f32 {
    const LANES: usize = 8;
    let n = x.len();
    if n >= LANES {
        let vec_size = n / LANES;
        let lanes = row_sum::<LANES>(&x[..vec_size * LANES]);
        let mut acc = 0f32;
        for &v in &x[vec_size * LANES..] {
            acc += v;
        }
        for v in lanes {
            acc += v;
        }
        acc
    } else {
        row_sum::<1>(x)[0]
    }
}

fn ceil_log2(x: usize) -> usize {
    if x <= 2 {
        1
    } else {
        (usize::BITS - (x - 1).leading_zeros()) as usize
    }
}

#[inline]
fn add_lanes<const L: usize>(acc: &mut [f32; L], v: &[f32]) {
    for (a, b) in acc.iter_mut().zip(v) {
        *a += b;
    }
}

/// `row_sum` over `x.len() / L` elements of `L` lanes each (`x.len()` a multiple of `L`).
fn row_sum<const L: usize>(x: &[f32]) -> [f32; L] {
    const ILP: usize = 4;
    let size = x.len() / L;
    let size_ilp = size / ILP;
    let mut partial = multi_row_sum::<L>(&x[..size_ilp * ILP * L], size_ilp);
    for i in size_ilp * ILP..size {
        add_lanes(&mut partial[0], &x[i * L..(i + 1) * L]);
    }
    for k in 1..ILP {
        let p = partial[k];
        add_lanes(&mut partial[0], &p);
    }
    partial[0]
}

/// `multi_row_sum` with 4 rows: row `i`, column `k` is element `4i + k` (of `L` lanes).
fn multi_row_sum<const L: usize>(x: &[f32], size: usize) -> [[f32; L]; 4] {
    const LEVELS: usize = 4;
    const NROWS: usize = 4;
    let level_power = 4.max(ceil_log2(size) / LEVELS);
    let level_step = 1usize << level_power;
    let level_mask = level_step - 1;
    let mut acc = [[[0f32; L]; NROWS]; LEVELS];
    let elem = |i: usize, k: usize| -> &[f32] {
        let start = (i * NROWS + k) * L;
        &x[start..start + L]
    };
    let mut i = 0usize;
    while i + level_step <= size {
        for _ in 0..level_step {
            for (k, a) in acc[0].iter_mut().enumerate() {
                add_lanes(a, elem(i, k));
            }
            i += 1;
        }
        for j in 1..LEVELS {
            let lower = std::mem::replace(&mut acc[j - 1], [[0f32; L]; NROWS]);
            for (a, l) in acc[j].iter_mut().zip(&lower) {
                add_lanes(a, l);
            }
            let mask = level_mask << (j * level_power);
            if i & mask != 0 {
                break;
            }
        }
    }
    while i < size {
        for (k, a) in acc[0].iter_mut().enumerate() {
            add_lanes(a, elem(i, k));
        }
        i += 1;
    }
    for j in 1..LEVELS {
        let upper = acc[j];
        for (a, u) in acc[0].iter_mut().zip(&upper) {
            add_lanes(a, u);
        }
    }
    acc[0]
}

/// Double quantization: `absmax - offset` quantized blockwise (`nested_blocksize` values per
/// block) to 8-bit codes of [`crate::tables::DYNAMIC_MAP`] through bitsandbytes 0.50's 65536-bin CPU
/// lookup table. Returns (codes, nested absmax).
pub fn quantize_nested(
    absmax: &[f32],
    offset: f32,
    nested_blocksize: usize,
) -> (Vec<u8>, Vec<f32>) {
    let lut = dynamic_lut();
    let centered: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
    let mut codes = vec![0u8; centered.len()];
    let mut nested = vec![0f32; centered.len().div_ceil(nested_blocksize)];
    codes
        .par_chunks_mut(nested_blocksize)
        .zip(centered.par_chunks(nested_blocksize))
        .zip(nested.par_iter_mut())
        .for_each(|((q, c), na)| {
            // std::max(acc, fabs(v)) from 0: NaN values are skipped.
            let a = c.iter().fold(0f32, |m, v| m.max(v.abs()));
            *na = a;
            if a == 0.0 {
                q.fill(0);
                return;
            }
            let inv = 1.0 / a;
            for (q, &v) in q.iter_mut().zip(c) {
                *q = lut[lut_index(v * inv)];
            }
        });
    (codes, nested)
}

/// Restores the f32 absmax of a double-quantized weight:
/// `map[code] * nested_absmax[b / nested_blocksize] + offset` (f32 multiply, then add).
/// Sizes must have been checked by the caller.
pub fn dequantize_nested(
    codes: &[u8],
    nested_absmax: &[f32],
    map: &[f32; 256],
    offset: f32,
    nested_blocksize: usize,
) -> Vec<f32> {
    codes
        .chunks(nested_blocksize)
        .zip(nested_absmax)
        .flat_map(|(c, &na)| c.iter().map(move |&q| map[usize::from(q)] * na + offset))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_low_and_zero_codes() {
        assert_eq!(QuantType::Nf4.code(0.0), 7);
        assert_eq!(QuantType::Nf4.code(NF4_BOUNDS[7]), 7);
        assert_eq!(
            QuantType::Nf4.code(f32::from_bits(NF4_BOUNDS[7].to_bits() + 1)),
            8
        );
        assert_eq!(QuantType::Fp4.code(0.0), 0);
        assert_eq!(QuantType::Fp4.code(-0.0), 0);
        assert_eq!(QuantType::Fp4.code(1e-4), 8);
        assert_eq!(QuantType::Nf4.code(1.0), 15);
        assert_eq!(QuantType::Fp4.code(-1.0), 11);
    }

    #[test]
    fn all_zero_block_and_padding() {
        let (p, a) = quantize_4bit(&[0.0; 65], 64, QuantType::Nf4);
        assert_eq!(p.len(), 33);
        assert!(p[..32].iter().all(|&b| b == 0x77));
        assert_eq!(p[32], 0x77);
        assert_eq!(a[0], 0.0);
        // A zero tail block stores the clamped absmax, as the library does.
        assert_eq!(a[1], ABSMAX_FLOOR);
    }

    #[test]
    fn cascade_sum_small_cases() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32) * 0.001).collect();
        let exact: f64 = x.iter().map(|&v| f64::from(v)).sum();
        assert!((f64::from(torch_sum(&x)) - exact).abs() < 1e-3);
        assert_eq!(torch_sum(&[1.0, 2.0, 3.0]), 6.0);
        assert_eq!(ceil_log2(3), 2);
        assert_eq!(ceil_log2(4), 2);
        assert_eq!(ceil_log2(5), 3);
    }

    /// An odd block size (outside the documented contract) must not hand back
    /// uninitialized memory: the unwritten tail stays 0.
    #[test]
    fn odd_blocksize_gives_initialized_outputs() {
        let x: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
        let (packed, absmax) = quantize_4bit(&x, 3, QuantType::Nf4);
        assert_eq!((packed.len(), absmax.len()), (3, 2));
        assert_eq!(packed[2], 0);
        let back = dequantize_4bit(
            &packed,
            &absmax,
            6,
            3,
            QuantType::Nf4.dequant_table(6),
            DType::F32,
        );
        assert_eq!(back.len(), 6);
        assert!(back.iter().all(|v| v.is_finite()));
    }
}
