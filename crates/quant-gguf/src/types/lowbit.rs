//! The block interface of the low-bit types (TQ1_0, TQ2_0, MXFP4, IQ1_*, IQ2_*, IQ3_*),
//! the same as [`crate::types::GgmlBlock`] without the type id, and C's `lroundf`.

/// One low-bit block format (see [`crate::types::GgmlBlock`], whose methods these are).
pub(crate) trait LowBit: Copy + Send + Sync + 'static {
    /// Values per block.
    const BLOCK_SIZE: usize;
    /// Bytes per block.
    const TYPE_SIZE: usize;
    /// An all-zero block.
    const ZERO: Self;
    /// Reads a block from exactly `TYPE_SIZE` little-endian bytes.
    fn read(bytes: &[u8]) -> Self;
    /// Writes the block into exactly `TYPE_SIZE` bytes.
    fn write(&self, out: &mut [u8]);
    /// Quantizes one row without an importance matrix.
    fn quantize_row(x: &[f32], y: &mut [Self]);
    /// Quantizes one row with per-column importance weights `qw`.
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        let _ = qw;
        Self::quantize_row(x, y);
    }
    /// Dequantizes one row.
    fn dequantize_row(y: &[Self], out: &mut [f32]);
}

/// C's `lroundf` (glibc, x86-64) narrowed to `int`: round half away from zero; NaN and
/// out-of-range values give `LONG_MIN`, whose low 32 bits are 0.
#[inline(always)]
pub(crate) fn c_lroundf(x: f32) -> i32 {
    const TWO_63: f32 = 9_223_372_036_854_775_808.0;
    if x.is_nan() || !(-TWO_63..TWO_63).contains(&x) {
        return 0;
    }
    let r = x.round();
    if r.abs() < 2_147_483_648.0 {
        r as i32
    } else {
        (r as i64) as i32
    }
}

/// [`c_lroundf`] for the ternary types, whose arguments are `x/max|x|`: in `(−1.5, 1.5)`
/// the result is decided by two comparisons (branch-free, so the loops vectorize);
/// anything else (NaN, ±Inf) takes [`c_lroundf`].
#[inline(always)]
pub(crate) fn c_lroundf_small(x: f32) -> i32 {
    if x.abs() < 1.5 {
        (x >= 0.5) as i32 - (x <= -0.5) as i32
    } else {
        c_lroundf(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lroundf_small_equals_lroundf() {
        let mut xs = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
        ];
        for k in -1_600_000..1_600_000 {
            xs.push(k as f32 * 1e-6);
        }
        for v in [0.5f32, -0.5, 1.5, -1.5, 1.0, -1.0] {
            xs.push(f32::from_bits(v.to_bits() + 1));
            xs.push(f32::from_bits(v.to_bits() - 1));
        }
        for x in xs {
            assert_eq!(c_lroundf_small(x), c_lroundf(x), "{x}");
            if x.is_finite() && x.abs() < 1e9 {
                assert_eq!(c_lroundf(x), x.round() as i32, "{x}");
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod test_rows {
    //! Row drivers for the vector tests.
    use super::LowBit;

    /// Quantizes rows of `ncols` with `T`, through the AVX2 build when it is enabled (as
    /// `crate::types::quantize_rows` does).
    pub(crate) fn quant<T: LowBit>(x: &[f32], ncols: usize, w: Option<&[f32]>) -> Vec<u8> {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<T: LowBit>(x: &[f32], ncols: usize, w: Option<&[f32]>) -> Vec<u8> {
            quant_impl::<T>(x, ncols, w)
        }
        #[cfg(target_arch = "x86_64")]
        if crate::types::simd::simd_enabled() {
            // SAFETY: `simd_enabled` checked that this CPU has AVX2.
            return unsafe { avx2::<T>(x, ncols, w) };
        }
        quant_impl::<T>(x, ncols, w)
    }

    #[inline(always)]
    fn quant_impl<T: LowBit>(x: &[f32], ncols: usize, w: Option<&[f32]>) -> Vec<u8> {
        let nb = ncols / T::BLOCK_SIZE;
        let mut out = vec![0u8; x.len() / T::BLOCK_SIZE * T::TYPE_SIZE];
        let mut blocks = vec![T::ZERO; nb];
        for (row, o) in x
            .chunks_exact(ncols)
            .zip(out.chunks_exact_mut(nb * T::TYPE_SIZE))
        {
            match w {
                Some(w) => T::quantize_row_imat(row, w, &mut blocks),
                None => T::quantize_row(row, &mut blocks),
            }
            for (b, ob) in blocks.iter().zip(o.chunks_exact_mut(T::TYPE_SIZE)) {
                b.write(ob);
            }
        }
        out
    }

    /// Dequantizes rows of `ncols` stored as `T`.
    pub(crate) fn deq<T: LowBit>(q: &[u8], ncols: usize) -> Vec<f32> {
        let nb = ncols / T::BLOCK_SIZE;
        let mut out = vec![0f32; q.len() / T::TYPE_SIZE * T::BLOCK_SIZE];
        let mut blocks = vec![T::ZERO; nb];
        for (row, o) in q
            .chunks_exact(nb * T::TYPE_SIZE)
            .zip(out.chunks_exact_mut(ncols))
        {
            for (b, rb) in blocks.iter_mut().zip(row.chunks_exact(T::TYPE_SIZE)) {
                *b = T::read(rb);
            }
            T::dequantize_row(&blocks, o);
        }
        out
    }
}
