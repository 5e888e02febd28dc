//! The GGML types: one file per block format (layout, ggml's row quantizer and
//! dequantizer, unit tests), the shared scale searches ([`search`]) and C arithmetic
//! ([`c_math`]) they are built from, the vector lanes (`lanes`, [`simd`]), and here the
//! static per-format trait, the type identifiers and the row-parallel drivers. Nothing in
//! this folder knows about files, methods or models.

pub mod bf16;
pub mod c_math;
pub mod f16;
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

use quant_core::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use simd::simd_enabled;

/// One GGML block format: a `#[repr(C)]` block of `BLOCK_SIZE` values stored in
/// `TYPE_SIZE` bytes, with ggml's row quantizer and dequantizer.
pub trait GgmlBlock: Copy + Send + Sync + 'static {
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

/// The GGML tensor types this crate implements (ids as in ggml's `enum ggml_type`).
#[allow(non_camel_case_types)] // ggml's own names (Q4_K), as users type them
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float (only stored, never a method).
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 4-bit symmetric, blocks of 32.
    Q4_0,
    /// 4-bit with min, blocks of 32.
    Q4_1,
    /// 5-bit symmetric, blocks of 32.
    Q5_0,
    /// 5-bit with min, blocks of 32.
    Q5_1,
    /// 8-bit symmetric, blocks of 32.
    Q8_0,
    /// 8-bit symmetric with the block sum, blocks of 32 (36 bytes).
    Q8_1,
    /// 2-bit K-quant.
    Q2_K,
    /// 3-bit K-quant.
    Q3_K,
    /// 4-bit K-quant.
    Q4_K,
    /// 5-bit K-quant.
    Q5_K,
    /// 6-bit K-quant.
    Q6_K,
    /// 8-bit K-quant with an f32 scale.
    Q8_K,
    /// 4-bit non-linear (table) quant, blocks of 32.
    IQ4_NL,
    /// 4-bit non-linear quant with 6-bit block scales, super-blocks of 256.
    IQ4_XS,
    /// 2-bit E8-lattice quant (256-point codebook), super-blocks of 256; needs an importance matrix.
    IQ2_XXS,
    /// 2-bit E8-lattice quant (512 points) with 4-bit block scales; needs an importance matrix.
    IQ2_XS,
    /// 3-bit D4-lattice quant (256 points).
    IQ3_XXS,
    /// 1.5-bit ternary-lattice quant (2048 points); needs an importance matrix.
    IQ1_S,
    /// 3-bit D4-lattice quant (512 points) with explicit signs.
    IQ3_S,
    /// 2-bit E8-lattice quant (1024 points) with explicit signs.
    IQ2_S,
    /// 1.75-bit ternary-lattice quant with per-group shifts.
    IQ1_M,
    /// Ternary (1.6875 bits: 5 trits per byte).
    TQ1_0,
    /// Ternary (2 bits per value).
    TQ2_0,
    /// OCP MXFP4: E2M1 values with a shared E8M0 exponent, blocks of 32.
    MXFP4,
}

impl GgmlType {
    /// Every type, in ggml id order.
    pub const ALL: [GgmlType; 27] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ3_XXS,
        GgmlType::IQ1_S,
        GgmlType::IQ4_NL,
        GgmlType::IQ3_S,
        GgmlType::IQ2_S,
        GgmlType::IQ4_XS,
        GgmlType::IQ1_M,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::MXFP4,
    ];

    /// ggml's type name (`Q4_K`, `F16`, ...), as stored in tensor records.
    pub const fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::Q8_K => "Q8_K",
            GgmlType::IQ4_NL => "IQ4_NL",
            GgmlType::IQ4_XS => "IQ4_XS",
            GgmlType::IQ2_XXS => "IQ2_XXS",
            GgmlType::IQ2_XS => "IQ2_XS",
            GgmlType::IQ3_XXS => "IQ3_XXS",
            GgmlType::IQ1_S => "IQ1_S",
            GgmlType::IQ3_S => "IQ3_S",
            GgmlType::IQ2_S => "IQ2_S",
            GgmlType::IQ1_M => "IQ1_M",
            GgmlType::TQ1_0 => "TQ1_0",
            GgmlType::TQ2_0 => "TQ2_0",
            GgmlType::MXFP4 => "MXFP4",
        }
    }

    /// ggml's numeric type id (`GGML_TYPE_*`), as stored in .gguf tensor infos.
    pub const fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::Q8_K => 15,
            GgmlType::IQ4_NL => 20,
            GgmlType::IQ4_XS => 23,
            GgmlType::BF16 => 30,
            GgmlType::IQ2_XXS => 16,
            GgmlType::IQ2_XS => 17,
            GgmlType::IQ3_XXS => 18,
            GgmlType::IQ1_S => 19,
            GgmlType::IQ3_S => 21,
            GgmlType::IQ2_S => 22,
            GgmlType::IQ1_M => 29,
            GgmlType::TQ1_0 => 34,
            GgmlType::TQ2_0 => 35,
            GgmlType::MXFP4 => 39,
        }
    }

    /// The type with ggml id `id`.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| t.id() == id)
    }

    /// The type named `name` (case-insensitive: `q4_k` and `Q4_K` both work).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GgmlType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Values per block.
    pub const fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q8_1
            | GgmlType::IQ4_NL
            | GgmlType::MXFP4 => 32,
            GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::Q8_K
            | GgmlType::IQ4_XS
            | GgmlType::IQ2_XXS
            | GgmlType::IQ2_XS
            | GgmlType::IQ2_S
            | GgmlType::IQ3_XXS
            | GgmlType::IQ3_S
            | GgmlType::IQ1_S
            | GgmlType::IQ1_M
            | GgmlType::TQ1_0
            | GgmlType::TQ2_0 => 256,
        }
    }

    /// Bytes per block.
    pub const fn type_size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q8_1 => 36,
            GgmlType::Q2_K => 84,
            GgmlType::Q3_K => 110,
            GgmlType::Q4_K => 144,
            GgmlType::Q5_K => 176,
            GgmlType::Q6_K => 210,
            GgmlType::Q8_K => 292,
            GgmlType::IQ4_NL => 18,
            GgmlType::IQ4_XS => 136,
            GgmlType::IQ2_XXS => 66,
            GgmlType::IQ2_XS => 74,
            GgmlType::IQ3_XXS => 98,
            GgmlType::IQ1_S => 50,
            GgmlType::IQ3_S => 110,
            GgmlType::IQ2_S => 82,
            GgmlType::IQ1_M => 56,
            GgmlType::TQ1_0 => 54,
            GgmlType::TQ2_0 => 66,
            GgmlType::MXFP4 => 17,
        }
    }

    /// Bytes of one row of `n` values (`None` when `n` is not a multiple of the block
    /// size or the size overflows).
    pub fn row_size(self, n: usize) -> Option<usize> {
        if n % self.block_size() != 0 {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }

    /// Whether the imatrix changes ggml's output for this type.
    pub const fn uses_imatrix(self) -> bool {
        matches!(
            self,
            GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q2_K
                | GgmlType::Q3_K
                | GgmlType::Q4_K
                | GgmlType::Q5_K
                | GgmlType::Q6_K
                | GgmlType::IQ4_NL
                | GgmlType::IQ4_XS
                | GgmlType::IQ2_XXS
                | GgmlType::IQ2_XS
                | GgmlType::IQ2_S
                | GgmlType::IQ3_XXS
                | GgmlType::IQ3_S
                | GgmlType::IQ1_S
                | GgmlType::IQ1_M
        )
    }

    /// Whether ggml refuses to quantize this type without an importance matrix
    /// (`ggml_quantize_requires_imatrix`: IQ2_XXS, IQ2_XS, IQ1_S).
    pub const fn requires_imatrix(self) -> bool {
        matches!(self, GgmlType::IQ2_XXS | GgmlType::IQ2_XS | GgmlType::IQ1_S)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
    match quantize_rows_checked::<T>(values, row_len, imatrix, false)? {
        Ok(out) => Ok(out),
        // Not reached: nothing is checked.
        Err(index) => Err(shape_error(
            T::TYPE,
            "value",
            format!("non-finite value at {index}"),
        )),
    }
}

/// [`quantize_rows`]; with `check_finite`, each row is first scanned for NaN/±Inf (while
/// it is in cache) and `Ok(Err(index))` gives the index of the first one.
fn quantize_rows_checked<T: GgmlBlock>(
    values: &[f32],
    row_len: usize,
    imatrix: Option<&[f32]>,
    check_finite: bool,
) -> Result<std::result::Result<Vec<u8>, usize>> {
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
    if values.is_empty() {
        // No rows: nothing to quantize (and no per-thread row buffer to size by a row
        // length that nothing backs).
        return Ok(Ok(Vec::new()));
    }
    let blocks_per_row = row_len / T::BLOCK_SIZE;
    let row_bytes = blocks_per_row * T::TYPE_SIZE;
    let mut out = vec![0u8; values.len() / T::BLOCK_SIZE * T::TYPE_SIZE];
    // The first row holding a non-finite value (`usize::MAX`: none).
    let bad_row = AtomicUsize::new(usize::MAX);
    out.par_chunks_mut(row_bytes)
        .zip(values.par_chunks(row_len))
        .enumerate()
        .for_each_init(
            || vec![T::ZERO; blocks_per_row],
            |blocks, (r, (o, x))| {
                if !quantize_row_into(x, imatrix, check_finite, blocks, o) {
                    bad_row.fetch_min(r, Ordering::Relaxed);
                }
            },
        );
    let r = bad_row.into_inner();
    if r != usize::MAX {
        let row = &values[r * row_len..(r + 1) * row_len];
        let i = row.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Ok(Err(r * row_len + i));
    }
    Ok(Ok(out))
}

/// Whether `x` holds a NaN or ±Inf (a branch-free scan the compiler vectorises; inlined
/// into the AVX2 build of [`quantize_row_into`]).
#[inline(always)]
fn has_nonfinite(x: &[f32]) -> bool {
    x.iter().fold(false, |acc, v| {
        acc | (v.to_bits() & 0x7f80_0000 == 0x7f80_0000)
    })
}

/// One row: `T`'s quantizer (weighted with `w`) into `blocks`, then written to `o`; the
/// AVX2 build when [`simd_enabled`]. With `check_finite`, a row holding a NaN or ±Inf is
/// left unquantized and `false` returned (the scan runs in the same build).
fn quantize_row_into<T: GgmlBlock>(
    x: &[f32],
    w: Option<&[f32]>,
    check_finite: bool,
    blocks: &mut [T],
    o: &mut [u8],
) -> bool {
    #[inline(always)]
    fn imp<T: GgmlBlock>(
        x: &[f32],
        w: Option<&[f32]>,
        check_finite: bool,
        blocks: &mut [T],
        o: &mut [u8],
    ) -> bool {
        if check_finite && has_nonfinite(x) {
            return false;
        }
        match w {
            Some(w) => T::quantize_row_imat(x, w, blocks),
            None => T::quantize_row(x, blocks),
        }
        for (b, ob) in blocks.iter().zip(o.chunks_exact_mut(T::TYPE_SIZE)) {
            b.write(ob);
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
        o: &mut [u8],
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

/// [`quantize`] refusing NaN/±Inf: `Ok(Err(index))` is the index of the first
/// non-finite value (checked row by row during quantization).
pub(crate) fn quantize_finite(
    ty: GgmlType,
    values: &[f32],
    row_len: usize,
    imatrix: Option<&[f32]>,
) -> Result<std::result::Result<Vec<u8>, usize>> {
    dispatch!(
        ty,
        quantize_rows_checked::<_>(values, row_len, imatrix, true)
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
