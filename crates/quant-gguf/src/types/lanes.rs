//! Eight-lane `f32`/`i32` vectors for the quantizer kernels that work on several
//! independent computations side by side (candidate scales, sub-blocks).
//!
//! A kernel is written once, generic over [`Lanes`], and runs each lane through exactly
//! the scalar sequence of IEEE operations of the C code: lanes never mix, nothing is
//! reassociated, nothing is fused. [`Portable`] is plain arrays; [`Avx2`] is
//! `std::arch` AVX2 (one `__m256` per vector), available only where the CPU has AVX2 and
//! [`crate::types::simd::simd_enabled`] says so. Both give the same bits.

/// Number of lanes.
pub(crate) const N: usize = 8;

/// Eight-lane vector operations (see the module documentation).
pub(crate) trait Lanes: Copy {
    /// Eight `f32`.
    type F: Copy;
    /// Eight `i32`.
    type I: Copy;
    /// Eight lane masks.
    type M: Copy;

    /// Every lane `v`.
    fn splat(self, v: f32) -> Self::F;
    /// The lanes of `a`.
    fn load(self, a: &[f32; N]) -> Self::F;
    /// The lanes as an array.
    fn store(self, v: Self::F) -> [f32; N];
    /// `a + b`.
    fn add(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a - b`.
    fn sub(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a * b`.
    fn mul(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a / b`.
    fn div(self, a: Self::F, b: Self::F) -> Self::F;
    /// `|a|` (sign bit cleared).
    fn abs(self, a: Self::F) -> Self::F;
    /// `a > b` (false on NaN).
    fn gt(self, a: Self::F, b: Self::F) -> Self::M;
    /// `m ? a : b`.
    fn select(self, m: Self::M, a: Self::F, b: Self::F) -> Self::F;
    /// `m ? a : b`.
    fn select_i(self, m: Self::M, a: Self::I, b: Self::I) -> Self::I;
    /// `a & b`.
    fn and(self, a: Self::M, b: Self::M) -> Self::M;
    /// Whether any lane is set.
    fn any(self, m: Self::M) -> bool;
    /// `a != b`.
    fn ne_i(self, a: Self::I, b: Self::I) -> Self::M;
    /// Every lane `v`.
    fn splat_i(self, v: i32) -> Self::I;
    /// `a - b` (wrapping).
    fn sub_i(self, a: Self::I, b: Self::I) -> Self::I;
    /// The lanes as an array.
    fn store_i(self, v: Self::I) -> [i32; N];
    /// [`crate::types::c_math::nearest_int`] per lane (same bits for every input, NaN included).
    fn nearest_int(self, a: Self::F) -> Self::I;
    /// `c_max(lo, c_min(hi, a))` per lane.
    fn clamp_i(self, a: Self::I, lo: Self::I, hi: Self::I) -> Self::I;
    /// `a as f32` per lane.
    fn to_f(self, a: Self::I) -> Self::F;
    /// C's `(int)a` on x86-64 ([`crate::types::c_math::c_f32_to_i32`]) per lane.
    fn trunc_i(self, a: Self::F) -> Self::I;
    /// `(int8_t)a` per lane: the low byte, sign-extended.
    fn low_i8(self, a: Self::I) -> Self::I;
    /// Bit `k` set when lane `k` of `a` equals lane `k` of `b` (IEEE `==`).
    fn eq_bits(self, a: Self::F, b: Self::F) -> u32;
    /// The largest lane of `a`, which holds no NaN.
    fn hmax(self, a: Self::F) -> f32;
    /// `a | (b << 4)` per lane.
    fn or_shl4(self, a: Self::I, b: Self::I) -> Self::I;
    /// The low byte of each lane of `a`, then of `b`.
    fn low_bytes(self, a: Self::I, b: Self::I) -> [u8; 2 * N];
    /// The lanes of `a`.
    fn load_i(self, a: &[i32; N]) -> Self::I;
    /// The lanes of `a`, zero-extended.
    fn load_u8(self, a: &[u8; N]) -> Self::I;
    /// Lane `k`: lane `idx[k] & 7` of `table`.
    fn permute(self, table: Self::F, idx: Self::I) -> Self::F;
    /// The least lane of `a` in every lane (`a` holds no NaN and no −0, so the order of
    /// the comparisons cannot matter).
    fn hmin_splat(self, a: Self::F) -> Self::F;
}

/// The portable build: plain arrays, left to the compiler.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

#[inline(always)]
fn map2(a: [f32; N], b: [f32; N], f: impl Fn(f32, f32) -> f32) -> [f32; N] {
    let mut r = a;
    for (r, b) in r.iter_mut().zip(b) {
        *r = f(*r, b);
    }
    r
}

impl Lanes for Portable {
    type F = [f32; N];
    type I = [i32; N];
    type M = [bool; N];

    #[inline(always)]
    fn load_i(self, a: &[i32; N]) -> Self::I {
        *a
    }
    #[inline(always)]
    fn load_u8(self, a: &[u8; N]) -> Self::I {
        a.map(i32::from)
    }
    #[inline(always)]
    fn permute(self, table: Self::F, idx: Self::I) -> Self::F {
        idx.map(|i| table[(i & 7) as usize])
    }
    #[inline(always)]
    fn hmin_splat(self, a: Self::F) -> Self::F {
        [a.iter().fold(a[0], |m, &v| if v < m { v } else { m }); N]
    }

    #[inline(always)]
    fn splat(self, v: f32) -> Self::F {
        [v; N]
    }
    #[inline(always)]
    fn load(self, a: &[f32; N]) -> Self::F {
        *a
    }
    #[inline(always)]
    fn store(self, v: Self::F) -> [f32; N] {
        v
    }
    #[inline(always)]
    fn add(self, a: Self::F, b: Self::F) -> Self::F {
        map2(a, b, |a, b| a + b)
    }
    #[inline(always)]
    fn sub(self, a: Self::F, b: Self::F) -> Self::F {
        map2(a, b, |a, b| a - b)
    }
    #[inline(always)]
    fn mul(self, a: Self::F, b: Self::F) -> Self::F {
        map2(a, b, |a, b| a * b)
    }
    #[inline(always)]
    fn div(self, a: Self::F, b: Self::F) -> Self::F {
        map2(a, b, |a, b| a / b)
    }
    #[inline(always)]
    fn abs(self, a: Self::F) -> Self::F {
        a.map(|v| f32::from_bits(v.to_bits() & 0x7fff_ffff))
    }
    #[inline(always)]
    fn gt(self, a: Self::F, b: Self::F) -> Self::M {
        let mut m = [false; N];
        for ((m, a), b) in m.iter_mut().zip(a).zip(b) {
            *m = a > b;
        }
        m
    }
    #[inline(always)]
    fn select(self, m: Self::M, a: Self::F, b: Self::F) -> Self::F {
        let mut r = b;
        for ((r, m), a) in r.iter_mut().zip(m).zip(a) {
            if m {
                *r = a;
            }
        }
        r
    }
    #[inline(always)]
    fn select_i(self, m: Self::M, a: Self::I, b: Self::I) -> Self::I {
        let mut r = b;
        for ((r, m), a) in r.iter_mut().zip(m).zip(a) {
            if m {
                *r = a;
            }
        }
        r
    }
    #[inline(always)]
    fn and(self, a: Self::M, b: Self::M) -> Self::M {
        let mut r = a;
        for (r, b) in r.iter_mut().zip(b) {
            *r &= b;
        }
        r
    }
    #[inline(always)]
    fn any(self, m: Self::M) -> bool {
        m.iter().any(|&m| m)
    }
    #[inline(always)]
    fn ne_i(self, a: Self::I, b: Self::I) -> Self::M {
        let mut m = [false; N];
        for ((m, a), b) in m.iter_mut().zip(a).zip(b) {
            *m = a != b;
        }
        m
    }
    #[inline(always)]
    fn splat_i(self, v: i32) -> Self::I {
        [v; N]
    }
    #[inline(always)]
    fn sub_i(self, a: Self::I, b: Self::I) -> Self::I {
        let mut r = a;
        for (r, b) in r.iter_mut().zip(b) {
            *r = r.wrapping_sub(b);
        }
        r
    }
    #[inline(always)]
    fn store_i(self, v: Self::I) -> [i32; N] {
        v
    }
    #[inline(always)]
    fn nearest_int(self, a: Self::F) -> Self::I {
        a.map(crate::types::c_math::nearest_int)
    }
    #[inline(always)]
    fn clamp_i(self, a: Self::I, lo: Self::I, hi: Self::I) -> Self::I {
        let mut r = a;
        for ((r, lo), hi) in r.iter_mut().zip(lo).zip(hi) {
            *r = crate::types::c_math::c_max(lo, crate::types::c_math::c_min(hi, *r));
        }
        r
    }
    #[inline(always)]
    fn to_f(self, a: Self::I) -> Self::F {
        a.map(|v| v as f32)
    }
    #[inline(always)]
    fn trunc_i(self, a: Self::F) -> Self::I {
        a.map(crate::types::c_math::c_f32_to_i32)
    }
    #[inline(always)]
    fn low_i8(self, a: Self::I) -> Self::I {
        a.map(|v| v as i8 as i32)
    }
    #[inline(always)]
    fn hmax(self, a: Self::F) -> f32 {
        let mut m = a[0];
        for v in a {
            if v > m {
                m = v;
            }
        }
        m
    }
    #[inline(always)]
    fn or_shl4(self, a: Self::I, b: Self::I) -> Self::I {
        let mut r = a;
        for (r, b) in r.iter_mut().zip(b) {
            *r |= b << 4;
        }
        r
    }
    #[inline(always)]
    fn low_bytes(self, a: Self::I, b: Self::I) -> [u8; 2 * N] {
        let mut r = [0u8; 2 * N];
        for (r, v) in r.iter_mut().zip(a.into_iter().chain(b)) {
            *r = v as u8;
        }
        r
    }
    #[inline(always)]
    fn eq_bits(self, a: Self::F, b: Self::F) -> u32 {
        let mut bits = 0;
        for (k, (a, b)) in a.iter().zip(b).enumerate() {
            bits |= u32::from(*a == b) << k;
        }
        bits
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Avx2;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Lanes, N};

    /// The AVX2 build. A value exists only on CPUs with AVX2 ([`Avx2::get`]), which is
    /// what makes the `unsafe` intrinsic calls below sound.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2(());

    impl Avx2 {
        /// The token, when the AVX2 build is enabled and the CPU has AVX2.
        #[inline(always)]
        pub fn get() -> Option<Self> {
            crate::types::simd::simd_enabled().then_some(Avx2(()))
        }
    }

    // SAFETY (every `unsafe` block below): an `Avx2` value exists only when the CPU has
    // AVX2 (`Avx2::get`), and the intrinsics only read the arrays they are given.
    impl Lanes for Avx2 {
        type F = __m256;
        type I = __m256i;
        type M = __m256;

        #[inline(always)]
        fn load_i(self, a: &[i32; N]) -> Self::I {
            unsafe { _mm256_loadu_si256(a.as_ptr().cast()) }
        }
        #[inline(always)]
        fn load_u8(self, a: &[u8; N]) -> Self::I {
            // The 8 bytes of `a`, zero-extended to 32 bits.
            unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(a.as_ptr().cast())) }
        }
        #[inline(always)]
        fn permute(self, table: Self::F, idx: Self::I) -> Self::F {
            unsafe { _mm256_permutevar8x32_ps(table, idx) }
        }
        #[inline(always)]
        fn hmin_splat(self, a: Self::F) -> Self::F {
            // Without NaN or −0, min is exact in any order.
            unsafe {
                let m = _mm256_min_ps(a, _mm256_permute2f128_ps::<1>(a, a));
                let m = _mm256_min_ps(m, _mm256_shuffle_ps::<0b01_00_11_10>(m, m));
                _mm256_min_ps(m, _mm256_shuffle_ps::<0b10_11_00_01>(m, m))
            }
        }

        #[inline(always)]
        fn splat(self, v: f32) -> Self::F {
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        fn load(self, a: &[f32; N]) -> Self::F {
            unsafe { _mm256_loadu_ps(a.as_ptr()) }
        }
        #[inline(always)]
        fn store(self, v: Self::F) -> [f32; N] {
            let mut r = [0f32; N];
            unsafe { _mm256_storeu_ps(r.as_mut_ptr(), v) };
            r
        }
        #[inline(always)]
        fn add(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn div(self, a: Self::F, b: Self::F) -> Self::F {
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        fn abs(self, a: Self::F) -> Self::F {
            unsafe { _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff))) }
        }
        #[inline(always)]
        fn gt(self, a: Self::F, b: Self::F) -> Self::M {
            unsafe { _mm256_cmp_ps::<_CMP_GT_OQ>(a, b) }
        }
        #[inline(always)]
        fn select(self, m: Self::M, a: Self::F, b: Self::F) -> Self::F {
            unsafe { _mm256_blendv_ps(b, a, m) }
        }
        #[inline(always)]
        fn select_i(self, m: Self::M, a: Self::I, b: Self::I) -> Self::I {
            unsafe {
                _mm256_castps_si256(_mm256_blendv_ps(
                    _mm256_castsi256_ps(b),
                    _mm256_castsi256_ps(a),
                    m,
                ))
            }
        }
        #[inline(always)]
        fn and(self, a: Self::M, b: Self::M) -> Self::M {
            unsafe { _mm256_and_ps(a, b) }
        }
        #[inline(always)]
        fn any(self, m: Self::M) -> bool {
            unsafe { _mm256_movemask_ps(m) != 0 }
        }
        #[inline(always)]
        fn ne_i(self, a: Self::I, b: Self::I) -> Self::M {
            unsafe {
                let eq = _mm256_cmpeq_epi32(a, b);
                _mm256_castsi256_ps(_mm256_xor_si256(eq, _mm256_set1_epi32(-1)))
            }
        }
        #[inline(always)]
        fn splat_i(self, v: i32) -> Self::I {
            unsafe { _mm256_set1_epi32(v) }
        }
        #[inline(always)]
        fn sub_i(self, a: Self::I, b: Self::I) -> Self::I {
            unsafe { _mm256_sub_epi32(a, b) }
        }
        #[inline(always)]
        fn store_i(self, v: Self::I) -> [i32; N] {
            let mut r = [0i32; N];
            unsafe { _mm256_storeu_si256(r.as_mut_ptr().cast(), v) };
            r
        }
        #[inline(always)]
        fn nearest_int(self, a: Self::F) -> Self::I {
            unsafe {
                let v = _mm256_add_ps(a, _mm256_set1_ps(12_582_912.0));
                let i = _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x007f_ffff));
                _mm256_sub_epi32(i, _mm256_set1_epi32(0x0040_0000))
            }
        }
        #[inline(always)]
        fn clamp_i(self, a: Self::I, lo: Self::I, hi: Self::I) -> Self::I {
            unsafe { _mm256_max_epi32(lo, _mm256_min_epi32(hi, a)) }
        }
        #[inline(always)]
        fn to_f(self, a: Self::I) -> Self::F {
            unsafe { _mm256_cvtepi32_ps(a) }
        }
        #[inline(always)]
        fn trunc_i(self, a: Self::F) -> Self::I {
            // cvttps2dq: truncation, 0x80000000 for NaN and out-of-range values, as
            // cvttss2si (the scalar conversion C compilers emit).
            unsafe { _mm256_cvttps_epi32(a) }
        }
        #[inline(always)]
        fn low_i8(self, a: Self::I) -> Self::I {
            unsafe { _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(a)) }
        }
        #[inline(always)]
        fn hmax(self, a: Self::F) -> f32 {
            // Without NaN, max is exact in any order.
            unsafe {
                let m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
                let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                let m = _mm_max_ss(m, _mm_movehdup_ps(m));
                _mm_cvtss_f32(m)
            }
        }
        #[inline(always)]
        fn or_shl4(self, a: Self::I, b: Self::I) -> Self::I {
            unsafe { _mm256_or_si256(a, _mm256_slli_epi32::<4>(b)) }
        }
        #[inline(always)]
        fn low_bytes(self, a: Self::I, b: Self::I) -> [u8; 2 * N] {
            let mut r = [0u8; 2 * N];
            unsafe {
                let m = _mm256_set1_epi32(0xff);
                // Lanes 0..255 pack without saturating: a0-3 b0-3 | a4-7 b4-7 as u16 ...
                let w = _mm256_packus_epi32(_mm256_and_si256(a, m), _mm256_and_si256(b, m));
                // ... a0-7 | b0-7 ...
                let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(w);
                // ... then bytes.
                let bytes =
                    _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
                _mm_storeu_si128(r.as_mut_ptr().cast(), bytes);
            }
            r
        }
        #[inline(always)]
        fn eq_bits(self, a: Self::F, b: Self::F) -> u32 {
            unsafe { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(a, b)) as u32 }
        }
    }
}
