//! Affine group-wise 4-/2-bit weights: qint4 and qint2 (quanto's `WeightQBitsTensor` with
//! the default `MaxOptimizer`, axis 0), and their `PackedTensor` bit packing.

use quant_core::simd::{from_order_key, order_key};
use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::num::{add, div, mul, round_half_even_small, sub, Rd};

/// Bits of a sub-byte qtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bits {
    /// qint4: codes 0..15, two per byte.
    Four,
    /// qint2: codes 0..3, four per byte.
    Two,
}

impl Bits {
    /// Bits per code.
    pub(crate) const fn bits(self) -> u32 {
        match self {
            Bits::Four => 4,
            Bits::Two => 2,
        }
    }

    /// Codes per byte.
    pub(crate) const fn per_byte(self) -> usize {
        (8 / self.bits()) as usize
    }

    /// `2^bits - 1`.
    pub(crate) const fn levels(self) -> f32 {
        match self {
            Bits::Four => 15.0,
            Bits::Two => 3.0,
        }
    }

    /// Packed rows for `rows` code rows: `ceil(rows / per_byte)`.
    pub(crate) const fn packed_rows(self, rows: usize) -> usize {
        rows.div_ceil(self.per_byte())
    }
}

/// quanto's group size for a weight whose rows hold `in_features` values
/// (`QModuleMixin.__init__`): above 128, the first of 128, 96, 64, 32 that divides it;
/// otherwise (or when none divides) no grouping.
pub fn group_size(in_features: usize) -> Option<usize> {
    if in_features <= 128 {
        return None;
    }
    [128, 96, 64, 32].into_iter().find(|g| in_features % g == 0)
}

const MIN_ELEMS_PER_TASK: usize = 1 << 14;

fn rows_per_task(cols: usize) -> usize {
    (MIN_ELEMS_PER_TASK / cols.max(1)).max(1)
}

/// The result of quantizing a `[rows, cols]` group matrix.
pub(crate) struct Quantized {
    /// Unpacked codes, `rows * cols`.
    pub codes: Vec<u8>,
    /// Per-row scale, model dtype.
    pub scale: Vec<f32>,
    /// Per-row shift as stored, model dtype.
    pub shift: Vec<f32>,
}

/// Quantizes each row (group) of a `[rows, cols]` matrix. With `tinygemm`, the stored
/// shift goes through `TinyGemmWeightQBitsTensor`'s round trip (see the crate docs).
pub(crate) fn quantize<R: Rd>(
    bits: Bits,
    values: &[f32],
    rows: usize,
    cols: usize,
    tinygemm: bool,
) -> Quantized {
    let mut scale = vec![0f32; rows];
    let mut shift = vec![0f32; rows];
    let codes = if cols > 0 && values.len() == rows * cols {
        let per = rows_per_task(cols);
        let fill = |codes: &mut [MaybeUninit<u8>]| {
            codes
                .par_chunks_mut(cols * per)
                .zip(values.par_chunks(cols * per))
                .zip(scale.par_chunks_mut(per).zip(shift.par_chunks_mut(per)))
                .for_each(|((c, v), (sc, sh))| {
                    quantize_groups::<R>(bits, v, c, sc, sh, cols, tinygemm)
                });
        };
        // SAFETY: `values` is `rows` whole groups (checked), tasks pair whole groups of
        // codes and values, and `quantize_group` writes one code per value.
        unsafe { quant_core::simd::vec_written(values.len(), fill) }
    } else {
        // Not whole groups: the codes of what is left over stay 0.
        let mut codes = vec![0u8; values.len()];
        if cols > 0 {
            // SAFETY: only values are written through the view.
            let view = unsafe { quant_core::simd::as_uninit_mut(&mut codes) };
            quantize_groups::<R>(bits, values, view, &mut scale, &mut shift, cols, tinygemm);
        }
        codes
    };
    Quantized {
        codes,
        scale,
        shift,
    }
}

quant_core::multiversion! {
    /// The groups of one task.
    fn quantize_groups<R: Rd>(
        bits: Bits,
        values: &[f32],
        codes: &mut [MaybeUninit<u8>],
        scale: &mut [f32],
        shift: &mut [f32],
        cols: usize,
        tinygemm: bool,
    ) {
        for (((c, v), sc), sh) in codes
            .chunks_mut(cols)
            .zip(values.chunks(cols))
            .zip(scale.iter_mut())
            .zip(shift.iter_mut())
        {
            (*sc, *sh) = quantize_group::<R>(bits, v, c, tinygemm);
        }
    }
}

/// `(min, max)` of a group as a first-to-last scan with strict `<` / `>` finds them
/// (of equal values the first one, which matters for ±0); NaN when it holds a NaN (as
/// `torch.amin/amax` propagate it). Integer reductions on order-preserving keys, which
/// vectorize; a zero result takes the sign of the group's first zero.
#[inline(always)]
fn min_max(g: &[f32]) -> (f32, f32) {
    if g.is_empty() {
        return (0.0, 0.0);
    }
    let (mut lo, mut hi, mut mag) = (i32::MAX, i32::MIN, 0u32);
    for &v in g {
        let k = order_key(v);
        lo = lo.min(k);
        hi = hi.max(k);
        mag = mag.max(v.to_bits() & 0x7FFF_FFFF);
    }
    if mag > 0x7F80_0000 {
        return (f32::NAN, f32::NAN);
    }
    let (mut lo, mut hi) = (from_order_key(lo), from_order_key(hi));
    if lo == 0.0 || hi == 0.0 {
        let first_zero = g.iter().copied().find(|&v| v == 0.0).unwrap_or(0.0);
        if lo == 0.0 {
            lo = first_zero;
        }
        if hi == 0.0 {
            hi = first_zero;
        }
    }
    (lo, hi)
}

/// One group: `scale = rd(rd(max - min) / levels)`, `shift = -min`,
/// `code = clamp(round_half_even(rd(rd(w + shift) / scale)), 0, levels)` (NaN → 0).
#[inline(always)]
fn quantize_group<R: Rd>(
    bits: Bits,
    g: &[f32],
    out: &mut [MaybeUninit<u8>],
    tinygemm: bool,
) -> (f32, f32) {
    let (rmin, rmax) = min_max(g);
    let levels = bits.levels();
    let scale = R::rd(div(R::rd(sub(rmax, rmin)), levels));
    let shift = -rmin;
    let fast = rmin.is_finite() && rmax.is_finite() && scale > 0.0 && scale.is_finite();
    if fast {
        // No quotient is NaN here; adding 1.5·2^23 to the clamped value rounds it half to
        // even and leaves the integer in the low byte of the sum's bits.
        const MAGIC: f32 = 12_582_912.0;
        for (o, &w) in out.iter_mut().zip(g) {
            let x = R::rd(R::rd(w + shift) / scale);
            o.write((x.clamp(0.0, levels) + MAGIC).to_bits() as u8);
        }
    } else {
        for (o, &w) in out.iter_mut().zip(g) {
            let x = R::rd(div(R::rd(add(w, shift)), scale));
            o.write(round_half_even_small(x.clamp(0.0, levels)) as u8);
        }
    }
    let stored_shift = if tinygemm {
        // TinyGemm keeps `shift_tg = -shift + 2^(bits-1)·scale` and converts back on save.
        let mid = f32::from(1u8 << (bits.bits() - 1));
        let half = R::rd(mul(mid, scale));
        let shift_tg = R::rd(add(-shift, half));
        R::rd(sub(half, shift_tg))
    } else {
        shift
    };
    (scale, stored_shift)
}

/// Packs `[rows, cols]` codes along dim 0: packed row `r` holds code rows
/// `r, r + Rp, r + 2·Rp, ...` in increasing bit positions (`Rp = ceil(rows / per_byte)`).
pub(crate) fn pack(bits: Bits, codes: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let rp = bits.packed_rows(rows);
    let mut packed = vec![0u8; rp * cols];
    if cols == 0 {
        return packed;
    }
    let per = rows_per_task(cols);
    packed
        .par_chunks_mut(cols * per)
        .enumerate()
        .for_each(|(task, block)| {
            for (i, prow) in block.chunks_mut(cols).enumerate() {
                let r = task * per + i;
                for k in 0..bits.per_byte() {
                    let src_row = k * rp + r;
                    if src_row >= rows {
                        break;
                    }
                    let shift = bits.bits() as usize * k;
                    let src = codes
                        .get(src_row * cols..(src_row + 1) * cols)
                        .unwrap_or(&[]);
                    prow.iter_mut()
                        .zip(src)
                        .for_each(|(p, &c)| *p |= c << shift);
                }
            }
        });
    packed
}

/// Dequantizes packed codes of a `[rows, cols]` group matrix:
/// `rd(rd(scale · code) - shift)` per element, row-major.
pub(crate) fn dequantize<R: Rd>(
    bits: Bits,
    packed: &[u8],
    scale: &[f32],
    shift: &[f32],
    cols: usize,
) -> Vec<f32> {
    let rows = scale.len();
    let rp = bits.packed_rows(rows);
    let mask = (1u8 << bits.bits()) - 1;
    if cols == 0 {
        return vec![0f32; rows * cols];
    }
    let per = rows_per_task(cols);
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(cols * per)
            .enumerate()
            .for_each(|(task, block)| {
                dequantize_rows::<R>(
                    bits,
                    packed,
                    scale,
                    shift,
                    cols,
                    rp,
                    mask,
                    task * per,
                    block,
                )
            });
    };
    // SAFETY: the chunks of `rows * cols` outputs are whole rows, and `dequantize_rows`
    // writes every element of each row (zeros where the stored parts fall short).
    unsafe { quant_core::simd::vec_written(rows * cols, fill) }
}

quant_core::multiversion! {
    /// The rows of one task, the first being row `first`.
    fn dequantize_rows<R: Rd>(
        bits: Bits,
        packed: &[u8],
        scale: &[f32],
        shift: &[f32],
        cols: usize,
        rp: usize,
        mask: u8,
        first: usize,
        block: &mut [MaybeUninit<f32>],
    ) {
        for (i, orow) in block.chunks_mut(cols).enumerate() {
            let r = first + i;
            let (Some(&s), Some(&z)) = (scale.get(r), shift.get(r)) else {
                orow.iter_mut().for_each(|o| {
                    o.write(0.0);
                });
                continue;
            };
            let pr = r % rp.max(1);
            let bit = bits.bits() * (r / rp.max(1)) as u32;
            let src = packed.get(pr * cols..(pr + 1) * cols).unwrap_or(&[]);
            if src.len() < orow.len() {
                // Missing packed bytes: those values stay 0, as before.
                orow.iter_mut().for_each(|o| {
                    o.write(0.0);
                });
            }
            if s.is_finite() && z.is_finite() {
                // No NaN can arise: plain (vectorizable) arithmetic.
                orow.iter_mut().zip(src).for_each(|(o, &p)| {
                    let c = f32::from((p >> bit) & mask);
                    o.write(R::rd(R::rd(s * c) - z));
                });
            } else {
                orow.iter_mut().zip(src).for_each(|(o, &p)| {
                    let c = f32::from((p >> bit) & mask);
                    o.write(R::rd(sub(R::rd(mul(s, c)), z)));
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_sizes_follow_quanto() {
        assert_eq!(group_size(4096), Some(128));
        assert_eq!(group_size(320), Some(64));
        assert_eq!(group_size(192), Some(96));
        assert_eq!(group_size(200), None);
        assert_eq!(group_size(128), None);
        assert_eq!(group_size(64), None);
        assert_eq!(group_size(864), Some(96));
    }

    #[test]
    fn min_max_matches_a_first_to_last_scan() {
        fn scan(g: &[f32]) -> (f32, f32) {
            let (mut lo, mut hi) = (g[0], g[0]);
            let mut nan = false;
            for &v in g {
                if v < lo {
                    lo = v;
                }
                if v > hi {
                    hi = v;
                }
                nan |= v.is_nan();
            }
            if nan {
                (f32::NAN, f32::NAN)
            } else {
                (lo, hi)
            }
        }
        let pool = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            2.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-40,
        ];
        let mut s = 7u32;
        for len in 1..12 {
            for _ in 0..2000 {
                let g: Vec<f32> = (0..len)
                    .map(|_| {
                        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        if s >> 28 == 15 {
                            f32::NAN
                        } else {
                            pool[(s >> 8) as usize % pool.len()]
                        }
                    })
                    .collect();
                let (a, b) = min_max(&g);
                let (c, d) = scan(&g);
                assert!(
                    a.to_bits() == c.to_bits() || (a.is_nan() && c.is_nan()),
                    "{g:?}"
                );
                assert!(
                    b.to_bits() == d.to_bits() || (b.is_nan() && d.is_nan()),
                    "{g:?}"
                );
            }
        }
    }

    #[test]
    fn pack_unpack_layout() {
        // 5 rows of 2 codes, 4 bits: Rp = 3, packed row r = row r | row r+3 << 4.
        let codes: Vec<u8> = (0..10).collect();
        let p = pack(Bits::Four, &codes, 5, 2);
        assert_eq!(p, vec![6 << 4, 1 | 7 << 4, 2 | 8 << 4, 3 | 9 << 4, 4, 5]);
        let ones = vec![1.0f32; 5];
        let zeros = vec![0.0f32; 5];
        let d = dequantize::<crate::num::RdF32>(Bits::Four, &p, &ones, &zeros, 2);
        assert_eq!(d, (0..10).map(|c| c as f32).collect::<Vec<_>>());
        // 2 bits: 6 rows of 1 code -> Rp = 2.
        let codes = [0u8, 1, 2, 3, 3, 2];
        let p = pack(Bits::Two, &codes, 6, 1);
        assert_eq!(p, vec![2 << 2 | 3 << 4, 1 | 3 << 2 | 2 << 4]);
    }
}
