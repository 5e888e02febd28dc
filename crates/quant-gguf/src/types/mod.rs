//! The GGML types: one file per block format (layout, ggml's row quantizer and
//! dequantizer, unit tests), the shared scale searches ([`search`]) and C arithmetic
//! ([`c_math`]) they are built from, the vector lanes (`lanes`, [`simd`]), the type
//! identifiers ([`GgmlType`]), and here the static per-format trait and the row-parallel
//! drivers. Nothing in
//! this folder knows about files, methods or models.

pub mod bf16;
pub mod c_math;
pub mod f16;
mod ggml_type;
pub mod iq1_m;
#[cfg(target_arch = "x86_64")]
mod iq1_m_lanes;
pub mod iq1_s;
pub mod iq2_s;
pub mod iq2_xs;
pub mod iq2_xxs;
pub mod iq3_s;
pub mod iq3_xxs;
pub mod iq4_nl;
pub mod iq4_xs;
mod iq_grid;
mod iq_kgrid;
pub(crate) mod kquant_lanes;
pub(crate) mod lanes;
pub(crate) mod legacy_lanes;
pub mod mxfp4;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;
pub mod search;
pub mod simd;
pub mod tq1_0;
pub mod tq2_0;
#[cfg(target_arch = "x86_64")]
mod tq_avx2;

use quant_core::method::reuse_bytes;
use quant_core::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

pub use ggml_type::GgmlType;
use simd::simd_enabled;

/// One GGML block format: a `#[repr(C)]` block of `BLOCK_SIZE` values stored in
/// `TYPE_SIZE` bytes, with ggml's row quantizer and dequantizer.
///
/// The block's memory is its file layout on a little-endian machine (fields in ggml's
/// order, no padding: `bytemuck::Pod`), so rows are quantized straight into the output
/// bytes there; [`GgmlBlock::write`] and [`GgmlBlock::read`] give the same bytes on any
/// machine (a test checks the two agree for every type).
pub trait GgmlBlock: bytemuck::Pod + Send + Sync + 'static {
    /// The GGML type.
    const TYPE: GgmlType;
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

    /// Quantizes one row without an importance matrix (ggml's `quantize_row_*_ref`);
    /// `x.len() == y.len() * BLOCK_SIZE`.
    fn quantize_row(x: &[f32], y: &mut [Self]);

    /// [`GgmlBlock::quantize_row`] refusing NaN and ±Inf: `false` (the blocks then
    /// unspecified) when `x` holds one. Default: a scan of the row, then the quantizer;
    /// the types whose first pass over a block can tell override it (one pass over the
    /// values instead of two).
    #[inline(always)]
    fn quantize_row_finite(x: &[f32], y: &mut [Self]) -> bool {
        if has_nonfinite(x) {
            return false;
        }
        Self::quantize_row(x, y);
        true
    }

    /// Quantizes one row with per-column importance weights `qw` (`qw.len() == x.len()`),
    /// as `ggml_quantize_chunk` does with an imatrix. Default: the weights are ignored
    /// (ggml's behaviour for Q8_0, F16 and BF16; Q8_1 and Q8_K have no weighted path).
    fn quantize_row_imat(x: &[f32], qw: &[f32], y: &mut [Self]) {
        let _ = qw;
        Self::quantize_row(x, y);
    }

    /// Dequantizes one row (ggml's `dequantize_row_*`); `out.len() == y.len() * BLOCK_SIZE`.
    fn dequantize_row(y: &[Self], out: &mut [f32]);

    /// Whether [`dequantize_rows_into`] runs [`GgmlBlock::dequantize_row`] in its AVX2 build
    /// (the same operations, wider vectors) where the CPU has it: set by the types whose
    /// dequantizer gains from it (for others the baseline build is as fast or faster).
    const AVX2_DEQUANTIZE: bool = false;
}

fn shape_error(ty: GgmlType, what: &str, detail: String) -> Error {
    Error::Backend {
        backend: crate::BACKEND,
        source: Box::new(crate::GgufError::Layout {
            ty: ty.name(),
            what: what.to_string(),
            detail,
        }),
    }
}

/// `quantize_row` / `quantize_row_imat` of a type quantized one `QK_K` block at a time:
/// `q` gets each block and, with an importance matrix, the block's weights.
#[inline(always)]
pub(crate) fn by_blocks<B>(
    x: &[f32],
    qw: Option<&[f32]>,
    y: &mut [B],
    q: impl Fn(&[f32], Option<&[f32]>) -> B,
) {
    let blocks = x.chunks_exact(c_math::QK_K).zip(y);
    match qw {
        Some(qw) => {
            for ((xb, yb), qb) in blocks.zip(qw.chunks_exact(c_math::QK_K)) {
                *yb = q(xb, Some(qb));
            }
        }
        None => {
            for (xb, yb) in blocks {
                *yb = q(xb, None);
            }
        }
    }
}

/// Quantizes `values` (rows of `row_len`, row-major) as `T`, rows in parallel. With
/// `imatrix` (one weight per column) ggml's weighted path is used.
pub fn quantize_rows<T: GgmlBlock>(
    values: &[f32],
    row_len: usize,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    quantize_rows_into::<T>(values, row_len, imatrix, &mut out)?;
    Ok(out)
}

/// [`quantize_rows`] into `out`, which is resized to the output's length: its allocation
/// is reused, so a buffer that held an earlier output of this size costs no fresh pages.
pub fn quantize_rows_into<T: GgmlBlock>(
    values: &[f32],
    row_len: usize,
    imatrix: Option<&[f32]>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let n = checked_output_len::<T>(values, row_len, imatrix)?;
    match quantize_rows_checked::<T>(values, row_len, imatrix, false, reuse_bytes(out, n))? {
        Ok(()) => Ok(()),
        // Not reached: nothing is checked.
        Err(index) => Err(shape_error(
            T::TYPE,
            "value",
            format!("non-finite value at {index}"),
        )),
    }
}

/// The output length of `values` as `T` in rows of `row_len`, after checking the shape,
/// the importance matrix and whether ggml requires one.
pub(crate) fn checked_output_len<T: GgmlBlock>(
    values: &[f32],
    row_len: usize,
    imatrix: Option<&[f32]>,
) -> Result<usize> {
    let ty = T::TYPE;
    if row_len == 0 || row_len % T::BLOCK_SIZE != 0 || values.len() % row_len != 0 {
        return Err(shape_error(
            ty,
            "row length",
            format!(
                "{} values in rows of {row_len}; rows must be a multiple of {}",
                values.len(),
                T::BLOCK_SIZE
            ),
        ));
    }
    if imatrix.is_none() && ty.requires_imatrix() {
        return Err(Error::NeedsImatrix {
            method: format!("gguf {}", ty.name()),
            reason: format!(
                "quantizing {} without an importance matrix (ggml requires one for this \
                 type: pass --imatrix FILE)",
                ty.name()
            ),
        });
    }
    if let Some(w) = imatrix {
        if w.len() != row_len {
            return Err(shape_error(
                ty,
                "imatrix",
                format!("{} weights for rows of {row_len}", w.len()),
            ));
        }
    }
    Ok(values.len() / T::BLOCK_SIZE * T::TYPE_SIZE)
}

/// `bytes` as blocks of `T` where the block's memory is its file layout (a little-endian
/// machine) and the bytes are aligned for it (`None` otherwise).
fn as_blocks_mut<T: GgmlBlock>(bytes: &mut [u8]) -> Option<&mut [T]> {
    if cfg!(target_endian = "little") {
        bytemuck::try_cast_slice_mut(bytes).ok()
    } else {
        None
    }
}

/// The quantizer behind [`quantize_rows_into`], on inputs [`checked_output_len`] accepted
/// and `out` of the length it gave. With `check_finite`, each row is checked for NaN/±Inf
/// as it is quantized ([`GgmlBlock::quantize_row_finite`]) and `Ok(Err(index))` gives the
/// index of the first one.
fn quantize_rows_checked<T: GgmlBlock>(
    values: &[f32],
    row_len: usize,
    imatrix: Option<&[f32]>,
    check_finite: bool,
    out: &mut [u8],
) -> Result<std::result::Result<(), usize>> {
    if values.is_empty() {
        // No rows: nothing to quantize (and no per-thread row buffer to size by a row
        // length that nothing backs).
        return Ok(Ok(()));
    }
    let blocks_per_row = row_len / T::BLOCK_SIZE;
    // The first row holding a non-finite value (`usize::MAX`: none).
    let bad_row = AtomicUsize::new(usize::MAX);
    let bad = |r: usize, ok: bool| {
        if !ok {
            bad_row.fetch_min(r, Ordering::Relaxed);
        }
    };
    match as_blocks_mut::<T>(out) {
        // Each row's blocks are the output's bytes.
        Some(blocks) => blocks
            .par_chunks_mut(blocks_per_row)
            .zip(values.par_chunks(row_len))
            .enumerate()
            .for_each(|(r, (y, x))| bad(r, quantize_row_into(x, imatrix, check_finite, y, None))),
        // Quantized into a row of blocks, then written out.
        None => out
            .par_chunks_mut(blocks_per_row * T::TYPE_SIZE)
            .zip(values.par_chunks(row_len))
            .enumerate()
            .for_each_init(
                || vec![T::ZERO; blocks_per_row],
                |y, (r, (o, x))| bad(r, quantize_row_into(x, imatrix, check_finite, y, Some(o))),
            ),
    }
    let r = bad_row.into_inner();
    if r != usize::MAX {
        let row = &values[r * row_len..(r + 1) * row_len];
        let i = row.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Ok(Err(r * row_len + i));
    }
    Ok(Ok(()))
}

/// Whether `x` holds a NaN or ±Inf (a branch-free scan the compiler vectorises; inlined
/// into the AVX2 build of [`quantize_row_into`]).
#[inline(always)]
fn has_nonfinite(x: &[f32]) -> bool {
    x.iter().fold(false, |acc, v| {
        acc | (v.to_bits() & 0x7f80_0000 == 0x7f80_0000)
    })
}

/// One row: `T`'s quantizer (weighted with `w`) into `blocks`, then written to `o` when
/// given; the AVX2 build when [`simd_enabled`]. With `check_finite`, a row holding a NaN
/// or ±Inf is left unquantized and `false` returned (the scan runs in the same build).
fn quantize_row_into<T: GgmlBlock>(
    x: &[f32],
    w: Option<&[f32]>,
    check_finite: bool,
    blocks: &mut [T],
    o: Option<&mut [u8]>,
) -> bool {
    #[inline(always)]
    fn imp<T: GgmlBlock>(
        x: &[f32],
        w: Option<&[f32]>,
        check_finite: bool,
        blocks: &mut [T],
        o: Option<&mut [u8]>,
    ) -> bool {
        match w {
            Some(_) if check_finite && has_nonfinite(x) => return false,
            Some(w) => T::quantize_row_imat(x, w, blocks),
            None if check_finite => {
                if !T::quantize_row_finite(x, blocks) {
                    return false;
                }
            }
            None => T::quantize_row(x, blocks),
        }
        if let Some(o) = o {
            for (b, ob) in blocks.iter().zip(o.chunks_exact_mut(T::TYPE_SIZE)) {
                b.write(ob);
            }
        }
        true
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<T: GgmlBlock>(
        x: &[f32],
        w: Option<&[f32]>,
        check_finite: bool,
        blocks: &mut [T],
        o: Option<&mut [u8]>,
    ) -> bool {
        imp(x, w, check_finite, blocks, o)
    }
    #[cfg(target_arch = "x86_64")]
    {
        if simd_enabled() {
            // SAFETY: `simd_enabled` checked at run time that this CPU has AVX2.
            return unsafe { avx2(x, w, check_finite, blocks, o) };
        }
    }
    imp(x, w, check_finite, blocks, o)
}

/// Dequantizes rows of `row_len` values stored as `T`, rows in parallel.
pub fn dequantize_rows<T: GgmlBlock>(bytes: &[u8], row_len: usize) -> Result<Vec<f32>> {
    let rows = rows_of::<T>(bytes, row_len)?;
    let mut out = vec![0f32; rows.saturating_mul(row_len)];
    dequantize_rows_into::<T>(bytes, row_len, &mut out)?;
    Ok(out)
}

/// The number of whole rows of `row_len` values in `bytes` of `T` blocks.
fn rows_of<T: GgmlBlock>(bytes: &[u8], row_len: usize) -> Result<usize> {
    let ty = T::TYPE;
    if row_len == 0 || row_len % T::BLOCK_SIZE != 0 {
        return Err(shape_error(
            ty,
            "row length",
            format!("rows of {row_len} are not a multiple of {}", T::BLOCK_SIZE),
        ));
    }
    if bytes.is_empty() {
        // No rows (an empty tensor may still declare a huge row length).
        return Ok(0);
    }
    let blocks_per_row = row_len / T::BLOCK_SIZE;
    let Some(row_bytes) = blocks_per_row.checked_mul(T::TYPE_SIZE) else {
        return Err(shape_error(
            ty,
            "row length",
            format!("rows of {row_len} overflow the byte size"),
        ));
    };
    if bytes.len() % row_bytes != 0 {
        return Err(shape_error(
            ty,
            "data size",
            format!(
                "{} bytes is not a whole number of {row_bytes}-byte rows",
                bytes.len()
            ),
        ));
    }
    Ok(bytes.len() / row_bytes)
}

/// [`dequantize_rows`] into `out`, which must hold exactly the rows' values.
pub fn dequantize_rows_into<T: GgmlBlock>(
    bytes: &[u8],
    row_len: usize,
    out: &mut [f32],
) -> Result<()> {
    let rows = rows_of::<T>(bytes, row_len)?;
    if bytes.is_empty() {
        // No rows: nothing to restore, and no per-thread row buffer to size by the length.
        return if out.is_empty() {
            Ok(())
        } else {
            Err(shape_error(
                T::TYPE,
                "data size",
                format!("no data for {} values", out.len()),
            ))
        };
    }
    if rows.checked_mul(row_len) != Some(out.len()) {
        return Err(shape_error(
            T::TYPE,
            "data size",
            format!("{rows} rows of {row_len} for {} values", out.len()),
        ));
    }
    let blocks_per_row = row_len / T::BLOCK_SIZE;
    let row_bytes = bytes.len() / rows;
    out.par_chunks_mut(row_len)
        .zip(bytes.par_chunks(row_bytes))
        .for_each_init(
            || vec![T::ZERO; blocks_per_row],
            |blocks, (o, b)| {
                for (blk, bb) in blocks.iter_mut().zip(b.chunks_exact(T::TYPE_SIZE)) {
                    *blk = T::read(bb);
                }
                dequantize_row_simd(blocks, o);
            },
        );
    Ok(())
}

/// `T::dequantize_row`, in its AVX2 build when `T` asks for it
/// ([`GgmlBlock::AVX2_DEQUANTIZE`]) and [`simd_enabled`].
#[inline(always)]
fn dequantize_row_simd<T: GgmlBlock>(y: &[T], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<T: GgmlBlock>(y: &[T], out: &mut [f32]) {
        T::dequantize_row(y, out)
    }
    #[cfg(target_arch = "x86_64")]
    if T::AVX2_DEQUANTIZE && simd_enabled() {
        // SAFETY: `simd_enabled` checked at run time that this CPU has AVX2.
        return unsafe { avx2(y, out) };
    }
    T::dequantize_row(y, out)
}

macro_rules! dispatch {
    ($ty:expr, $f:ident :: <_> ( $($arg:expr),* )) => {
        match $ty {
            GgmlType::F32 => Err(Error::Unsupported {
                method: "gguf".into(),
                op: "F32 as a block format".into(),
            }),
            GgmlType::F16 => $f::<f16::BlockF16>($($arg),*),
            GgmlType::BF16 => $f::<bf16::BlockBF16>($($arg),*),
            GgmlType::Q4_0 => $f::<q4_0::BlockQ4_0>($($arg),*),
            GgmlType::Q4_1 => $f::<q4_1::BlockQ4_1>($($arg),*),
            GgmlType::Q5_0 => $f::<q5_0::BlockQ5_0>($($arg),*),
            GgmlType::Q5_1 => $f::<q5_1::BlockQ5_1>($($arg),*),
            GgmlType::Q8_0 => $f::<q8_0::BlockQ8_0>($($arg),*),
            GgmlType::Q8_1 => $f::<q8_1::BlockQ8_1>($($arg),*),
            GgmlType::Q2_K => $f::<q2_k::BlockQ2K>($($arg),*),
            GgmlType::Q3_K => $f::<q3_k::BlockQ3K>($($arg),*),
            GgmlType::Q4_K => $f::<q4_k::BlockQ4K>($($arg),*),
            GgmlType::Q5_K => $f::<q5_k::BlockQ5K>($($arg),*),
            GgmlType::Q6_K => $f::<q6_k::BlockQ6K>($($arg),*),
            GgmlType::Q8_K => $f::<q8_k::BlockQ8K>($($arg),*),
            GgmlType::IQ4_NL => $f::<iq4_nl::BlockIq4Nl>($($arg),*),
            GgmlType::IQ4_XS => $f::<iq4_xs::BlockIq4Xs>($($arg),*),
            GgmlType::IQ2_XXS => $f::<iq2_xxs::BlockIq2Xxs>($($arg),*),
            GgmlType::IQ2_XS => $f::<iq2_xs::BlockIq2Xs>($($arg),*),
            GgmlType::IQ3_XXS => $f::<iq3_xxs::BlockIq3Xxs>($($arg),*),
            GgmlType::IQ1_S => $f::<iq1_s::BlockIq1S>($($arg),*),
            GgmlType::IQ3_S => $f::<iq3_s::BlockIq3S>($($arg),*),
            GgmlType::IQ2_S => $f::<iq2_s::BlockIq2S>($($arg),*),
            GgmlType::IQ1_M => $f::<iq1_m::BlockIq1M>($($arg),*),
            GgmlType::TQ1_0 => $f::<tq1_0::BlockTq1_0>($($arg),*),
            GgmlType::TQ2_0 => $f::<tq2_0::BlockTq2_0>($($arg),*),
            GgmlType::MXFP4 => $f::<mxfp4::BlockMxfp4>($($arg),*),
        }
    };
}

/// [`quantize_rows`] for a type chosen at run time (F32 is not a block format).
pub fn quantize(
    ty: GgmlType,
    values: &[f32],
    row_len: usize,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>> {
    dispatch!(ty, quantize_rows::<_>(values, row_len, imatrix))
}

/// [`quantize_rows_into`] for a type chosen at run time.
pub fn quantize_into(
    ty: GgmlType,
    values: &[f32],
    row_len: usize,
    imatrix: Option<&[f32]>,
    out: &mut Vec<u8>,
) -> Result<()> {
    dispatch!(ty, quantize_rows_into::<_>(values, row_len, imatrix, out))
}

/// The output length of [`quantize`] after its checks (shape, importance matrix).
pub(crate) fn output_len(
    ty: GgmlType,
    values: &[f32],
    row_len: usize,
    imatrix: Option<&[f32]>,
) -> Result<usize> {
    dispatch!(ty, checked_output_len::<_>(values, row_len, imatrix))
}

/// [`quantize`] into `out` (exactly [`output_len`] bytes), refusing NaN/±Inf:
/// `Ok(Err(index))` is the index of the first non-finite value (checked row by row during
/// quantization). With `check_finite` false nothing is checked.
pub(crate) fn quantize_checked_into(
    ty: GgmlType,
    values: &[f32],
    row_len: usize,
    imatrix: Option<&[f32]>,
    check_finite: bool,
    out: &mut [u8],
) -> Result<std::result::Result<(), usize>> {
    let n = output_len(ty, values, row_len, imatrix)?;
    if out.len() != n {
        return Err(shape_error(
            ty,
            "output",
            format!("{} bytes for an output of {n}", out.len()),
        ));
    }
    dispatch!(
        ty,
        quantize_rows_checked::<_>(values, row_len, imatrix, check_finite, out)
    )
}

/// [`dequantize_rows`] for a type chosen at run time (F32 is not a block format).
pub fn dequantize(ty: GgmlType, bytes: &[u8], row_len: usize) -> Result<Vec<f32>> {
    dispatch!(ty, dequantize_rows::<_>(bytes, row_len))
}

/// [`dequantize_rows_into`] for a type chosen at run time.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], row_len: usize, out: &mut [f32]) -> Result<()> {
    dispatch!(ty, dequantize_rows_into::<_>(bytes, row_len, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block's memory is its file layout (what rows are quantized straight into):
    /// `write` gives the block's own bytes and `read` takes them back, on blocks of
    /// arbitrary bytes.
    fn memory_is_file_layout<T: GgmlBlock>() -> Result<()> {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..64 {
            let bytes: Vec<u8> = (0..T::TYPE_SIZE)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s >> 24) as u8
                })
                .collect();
            let b = T::read(&bytes);
            assert_eq!(bytemuck::bytes_of(&b), &bytes[..], "{:?} read", T::TYPE);
            let mut out = vec![0u8; T::TYPE_SIZE];
            b.write(&mut out);
            assert_eq!(out, bytes, "{:?} write", T::TYPE);
        }
        assert_eq!(std::mem::size_of::<T>(), T::TYPE_SIZE);
        Ok(())
    }

    #[test]
    fn every_block_in_memory_is_its_file_layout() {
        for ty in GgmlType::ALL.into_iter().filter(|&t| t != GgmlType::F32) {
            dispatch!(ty, memory_is_file_layout::<_>()).unwrap();
        }
    }

    /// Quantizing into a reused buffer (longer, shorter, the same) gives `quantize`'s bytes.
    #[test]
    fn reused_output_buffers_give_the_same_bytes() {
        let x: Vec<f32> = (0..256 * 6)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
            .collect();
        for ty in [GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::F16] {
            let want = quantize(ty, &x, 256, None).unwrap();
            for start in [
                vec![0xAAu8; want.len() * 2],
                vec![0x55; 3],
                Vec::with_capacity(want.len() + 7),
            ] {
                let mut buf = start;
                quantize_into(ty, &x, 256, None, &mut buf).unwrap();
                assert_eq!(buf, want, "{ty}");
                quantize_into(ty, &x, 256, None, &mut buf).unwrap();
                assert_eq!(buf, want, "{ty} again");
            }
        }
    }
}
