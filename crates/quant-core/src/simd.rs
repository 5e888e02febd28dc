//! Run-time dispatch to AVX2 builds of hot loops.
//!
//! quant is compiled for baseline x86-64 (SSE2), where many loops do not vectorize well
//! and `f32::round_ties_even` is a library call. [`multiversion!`](crate::multiversion)
//! compiles a function body twice, once as is and once with AVX2 and F16C enabled, and
//! picks the second at run time on CPUs that have both. Both builds execute the same IEEE
//! operations in the same order (Rust never contracts `a * b + c` into an FMA, and no
//! build enables FMA), so they give bit-identical results; the tests compare them through
//! [`set_simd`].

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

static SIMD_OFF: AtomicBool = AtomicBool::new(false);

/// Whether the AVX2 builds of [`multiversion!`](crate::multiversion) functions run:
/// x86_64 CPUs with AVX2 and F16C, unless turned off with [`set_simd`].
#[inline]
pub fn simd_enabled() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !SIMD_OFF.load(Ordering::Relaxed)
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Turns the AVX2 builds off (`false`) or back on where the CPU has them (`true`), for
/// comparing them with the baseline build. Process-wide; code that compares the builds
/// while other threads may switch too (parallel tests) should use [`force_simd`].
pub fn set_simd(enabled: bool) {
    SIMD_OFF.store(!enabled, Ordering::Relaxed);
}

static SWITCH: Mutex<()> = Mutex::new(());

/// Holds the SIMD switch in one position until dropped (then turns the AVX2 builds back
/// on): from [`force_simd`].
#[must_use = "the switch is released when the guard is dropped"]
pub struct SimdGuard {
    _lock: MutexGuard<'static, ()>,
}

impl Drop for SimdGuard {
    fn drop(&mut self) {
        set_simd(true);
    }
}

/// [`set_simd`] under a process-wide lock held by the returned guard, so that two
/// comparisons of the builds (e.g. tests running in parallel) cannot flip the switch
/// under each other. Do not call it again on the same thread while holding a guard.
pub fn force_simd(enabled: bool) -> SimdGuard {
    let lock = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    set_simd(enabled);
    SimdGuard { _lock: lock }
}

/// Defines a function whose body is compiled twice, for the baseline target and with
/// `avx2,f16c`, the latter picked at run time by [`simd_enabled`].
///
/// Generic parameters take one bound each (`<R: Round, F: Fn(f32) -> f32>`); closures
/// and generic helpers called from the body are inlined into each build. Call it on
/// slices large enough (a row, a block of blocks) that the dispatch is negligible.
///
/// ```
/// quant_core::multiversion! {
///     /// Doubles every value.
///     pub fn double(v: &mut [f32]) {
///         for x in v {
///             *x *= 2.0;
///         }
///     }
/// }
/// let mut v = [1.0, 2.0];
/// double(&mut v);
/// assert_eq!(v, [2.0, 4.0]);
/// ```
#[macro_export]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident $(<$($G:ident: $B:path),+ $(,)?>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        #[inline]
        $vis fn $name $(<$($G: $B),+>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp $(<$($G: $B),+>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,f16c")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2 $(<$($G: $B),+>)? ($($arg: $ty),*) $(-> $ret)? {
                imp $(::<$($G),+>)? ($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            {
                if $crate::simd::simd_enabled() {
                    // SAFETY: `simd_enabled` checked at run time that this CPU has AVX2
                    // and F16C.
                    return unsafe { avx2 $(::<$($G),+>)? ($($arg),*) };
                }
            }
            imp $(::<$($G),+>)? ($($arg),*)
        }
    };
}

/// Appends `n` elements to `v` that `fill` writes into the uninitialized tail, without a
/// pass that zeroes the memory first (a fresh output buffer otherwise costs a `memset`
/// as large as the output whenever the allocator hands back reused memory).
///
/// # Safety
///
/// `fill` must write every one of the `n` elements of the slice it is given (a panic in
/// `fill` is fine: the elements are then not appended).
pub unsafe fn extend_written<T>(
    v: &mut Vec<T>,
    n: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]),
) {
    v.reserve(n);
    let len = v.len();
    if let Some(tail) = v.spare_capacity_mut().get_mut(..n) {
        fill(tail);
        // SAFETY: `reserve` made room for `n` more elements and the caller guarantees that
        // `fill` initialized all of them.
        unsafe { v.set_len(len + n) };
    }
}

/// An initialized slice viewed as `MaybeUninit`, for handing to a kernel that writes
/// through `&mut [MaybeUninit<T>]`.
///
/// # Safety
///
/// Whoever writes through the view must store initialized values only (never
/// `MaybeUninit::uninit()`), so that the slice is still initialized afterwards.
pub unsafe fn as_uninit_mut<T: Copy>(v: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`; the caller keeps it initialized.
    unsafe { &mut *(v as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// A `Vec` of `n` elements, each written by `fill` (see [`extend_written`]).
///
/// # Safety
///
/// `fill` must write every one of the `n` elements of the slice it is given.
pub unsafe fn vec_written<T>(n: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut v = Vec::new();
    // SAFETY: forwarded to the caller.
    unsafe { extend_written(&mut v, n, fill) };
    v
}

/// A float's bits as an `i32` that orders like the float (-0 just below +0; NaNs beyond
/// ±inf): integer min/max over these keys vectorize where IEEE float min/max does not.
#[inline(always)]
pub fn order_key(x: f32) -> i32 {
    let i = x.to_bits() as i32;
    i ^ ((i >> 31) & 0x7FFF_FFFF)
}

/// The float whose [`order_key`] is `k`.
#[inline(always)]
pub fn from_order_key(k: i32) -> f32 {
    f32::from_bits((k ^ ((k >> 31) & 0x7FFF_FFFF)) as u32)
}

/// The index of the first NaN or ±Inf in `values`: chunks in parallel, each tested with a
/// branch-free (vectorisable) scan before it is searched.
pub fn first_nonfinite(values: &[f32]) -> Option<usize> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    let exp_all_ones = |v: &f32| v.to_bits() & 0x7f80_0000 == 0x7f80_0000;
    let chunk = values
        .par_chunks(CHUNK)
        .position_first(|c| c.iter().fold(false, |acc, v| acc | exp_all_ones(v)))?;
    let start = chunk * CHUNK;
    values[start..]
        .iter()
        .position(exp_all_ones)
        .map(|i| start + i)
}
