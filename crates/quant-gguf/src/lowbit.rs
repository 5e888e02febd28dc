//! The block interface of the low-bit types (TQ1_0, TQ2_0, MXFP4, IQ1_*, IQ2_*, IQ3_*),
//! the same as [`crate::block::GgmlBlock`] without the type id, and C's `lroundf`.

/// One low-bit block format (see [`crate::block::GgmlBlock`], whose methods these are).
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

#[cfg(test)]
pub(crate) mod test_rows {
    //! Row drivers for the vector tests.
    use super::LowBit;

    /// Quantizes rows of `ncols` with `T`.
    pub(crate) fn quant<T: LowBit>(x: &[f32], ncols: usize, w: Option<&[f32]>) -> Vec<u8> {
        let nb = ncols / T::BLOCK_SIZE;
        let mut out = Vec::new();
        let mut blocks = vec![T::ZERO; nb];
        for row in x.chunks_exact(ncols) {
            match w {
                Some(w) => T::quantize_row_imat(row, w, &mut blocks),
                None => T::quantize_row(row, &mut blocks),
            }
            for b in &blocks {
                let mut buf = vec![0u8; T::TYPE_SIZE];
                b.write(&mut buf);
                out.extend_from_slice(&buf);
            }
        }
        out
    }

    /// Dequantizes rows of `ncols` stored as `T`.
    pub(crate) fn deq<T: LowBit>(q: &[u8], ncols: usize) -> Vec<f32> {
        let nb = ncols / T::BLOCK_SIZE;
        let mut out = Vec::new();
        for row in q.chunks_exact(nb * T::TYPE_SIZE) {
            let blocks: Vec<T> = row.chunks_exact(T::TYPE_SIZE).map(T::read).collect();
            let mut o = vec![0f32; ncols];
            T::dequantize_row(&blocks, &mut o);
            out.extend_from_slice(&o);
        }
        out
    }
}
