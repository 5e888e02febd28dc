//! The sub-block searches of the K-quants with one sub-block per lane: eight groups of
//! values (the 8 sub-blocks of a Q4_K/Q5_K super-block, 8 of the 16 of Q2_K/Q6_K, 8
//! blocks of a Q4_1/Q5_1 row) go through `make_qkx2_quants`/`make_qkx3_quants` or
//! `make_qx_quants` side by side. Each lane runs exactly the scalar sequence of ggml's
//! IEEE operations for its group, candidate after candidate, so there is no horizontal
//! reduction and no speculation: a lane that finds a better candidate takes it (and, in
//! `make_qkx*`, its new `min`) with a select.
//!
//! The codes of the winning candidate are not copied at every win: a lane keeps the
//! inputs that produced them (`iscale` and the `min` they were computed from) and the
//! codes are recomputed once at the end with the same operations, which gives the same
//! integers.
//!
//! Values are handed over element-major (`x[i][g]`: element `i` of group `g`, see
//! [`Groups`]).

use crate::types::c_math::{c_f32_to_i32, fp32_to_fp16, GROUP_MAX_EPS};
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::lanes::{Lanes, Portable, N};
use crate::types::search::QkxSearch;

/// Largest group length.
pub(crate) const MAXN: usize = 32;

/// Up to [`N`] groups of up to [`MAXN`] values with their weights, element-major.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Groups {
    /// Elements per group.
    pub n: usize,
    /// `x[i][g]`: value `i` of group `g`.
    pub x: [[f32; N]; MAXN],
    /// `w[i][g]`: the weight of value `i` of group `g`.
    pub w: [[f32; N]; MAXN],
}

impl Groups {
    /// Groups of `n` consecutive values: group `g` is `x[g·n..(g+1)·n]`, for `g` below
    /// `x.len() / n` (at most [`N`]); missing groups repeat group 0 (their results are
    /// not used). The weights are left at 0.
    #[inline(always)]
    pub fn gather(x: &[f32], n: usize) -> Self {
        let mut gr = Groups {
            n,
            x: [[0.0; N]; MAXN],
            w: [[0.0; N]; MAXN],
        };
        let groups = (x.len() / n.max(1)).min(N);
        for g in 0..N {
            let src = if g < groups { g } else { 0 };
            if let Some(xs) = x.get(src * n..src * n + n) {
                for (i, &v) in xs.iter().enumerate().take(MAXN) {
                    gr.x[i][g] = v;
                }
            }
        }
        gr
    }

    /// Sets the weights from `w`, laid out as [`Groups::gather`]'s values.
    #[inline(always)]
    pub fn gather_weights(&mut self, w: &[f32]) {
        let n = self.n;
        let groups = (w.len() / n.max(1)).min(N);
        for g in 0..N {
            let src = if g < groups { g } else { 0 };
            if let Some(ws) = w.get(src * n..src * n + n) {
                for (i, &v) in ws.iter().enumerate().take(MAXN) {
                    self.w[i][g] = v;
                }
            }
        }
    }
}

/// Results of a search over [`Groups`]: per group the scale, the value ggml returns as
/// the min (`-min` for `make_qkx*`), and the codes `l[i][g]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found {
    /// Per group scale.
    pub scale: [f32; N],
    /// Per group `-min` (`make_qkx*` only).
    pub neg_min: [f32; N],
    /// `l[i][g]`: code of value `i` of group `g`.
    pub l: [[i32; N]; MAXN],
}

impl Found {
    /// The codes of group `g` as bytes (`make_qkx*`: `0..=nmax`; `make_qx`: `0..2·nmax`).
    #[inline(always)]
    pub fn codes(&self, g: usize, out: &mut [u8]) {
        for (o, l) in out.iter_mut().zip(&self.l[..]) {
            *o = l[g] as u8;
        }
    }
}

/// Lane operations the searches need beyond [`Lanes`].
pub(crate) trait LanesMore: Lanes {
    /// `a == b` (false on NaN).
    fn eq(self, a: Self::F, b: Self::F) -> Self::M;
    /// `a <= b` (false on NaN).
    fn le(self, a: Self::F, b: Self::F) -> Self::M;
    /// The smallest lane of `a`, which holds no NaN (either zero when `-0` and `+0` tie).
    fn hmin(self, a: Self::F) -> f32;
    /// `a & b`.
    fn and_i(self, a: Self::I, b: Self::I) -> Self::I;
    /// Bit `k` set when bit 4 of lane `k` of `a` is set.
    fn bit4(self, a: Self::I) -> u32;
    /// Lane `k`: the smallest lane of `v[k]`, which holds no NaN (either zero when `-0`
    /// and `+0` tie), eight horizontal minima at once.
    fn hmin_each(self, v: &[Self::F; N]) -> Self::F;
    /// Lane `k`: the largest lane of `v[k]`, as [`LanesMore::hmin_each`].
    fn hmax_each(self, v: &[Self::F; N]) -> Self::F;
    /// ggml's `GGML_FP32_TO_FP16` ([`fp32_to_fp16`]) of each lane.
    fn fp16_each(self, v: Self::F) -> [u16; N];
    /// C's `(int)roundf(v)` per lane (half away from zero; x86-64's conversion gives
    /// `INT_MIN` for NaN and out of range).
    fn round_away(self, v: Self::F) -> Self::I;
    /// Q4_0/Q4_1's packed nibbles from a block's 32 codes (`q[k]`: codes `8k..8k + 8`):
    /// `c = MIN(15, (int8_t)q)` as a byte, and byte `j` is `c[j] | c[j + 16] << 4` (ggml's
    /// `qs[j] = xi0 | (xi1 << 4)`, the low code's byte unmasked).
    fn nibbles_min15(self, q: &[Self::I; 4]) -> [u8; 16];
}

impl LanesMore for Portable {
    #[inline(always)]
    fn eq(self, a: Self::F, b: Self::F) -> Self::M {
        let mut m = [false; N];
        for ((m, a), b) in m.iter_mut().zip(a).zip(b) {
            *m = a == b;
        }
        m
    }
    #[inline(always)]
    fn le(self, a: Self::F, b: Self::F) -> Self::M {
        let mut m = [false; N];
        for ((m, a), b) in m.iter_mut().zip(a).zip(b) {
            *m = a <= b;
        }
        m
    }
    #[inline(always)]
    fn hmin(self, a: Self::F) -> f32 {
        let mut m = a[0];
        for v in a {
            if v < m {
                m = v;
            }
        }
        m
    }
    #[inline(always)]
    fn and_i(self, a: Self::I, b: Self::I) -> Self::I {
        let mut r = a;
        for (r, b) in r.iter_mut().zip(b) {
            *r &= b;
        }
        r
    }
    #[inline(always)]
    fn bit4(self, a: Self::I) -> u32 {
        let mut bits = 0;
        for (k, v) in a.iter().enumerate() {
            bits |= (((*v >> 4) & 1) as u32) << k;
        }
        bits
    }
    #[inline(always)]
    fn hmin_each(self, v: &[Self::F; N]) -> Self::F {
        let mut r = [0f32; N];
        for (r, &v) in r.iter_mut().zip(v) {
            *r = self.hmin(v);
        }
        r
    }
    #[inline(always)]
    fn hmax_each(self, v: &[Self::F; N]) -> Self::F {
        let mut r = [0f32; N];
        for (r, &v) in r.iter_mut().zip(v) {
            *r = self.hmax(v);
        }
        r
    }
    #[inline(always)]
    fn fp16_each(self, v: Self::F) -> [u16; N] {
        let mut r = [0u16; N];
        for (r, v) in r.iter_mut().zip(v) {
            *r = fp32_to_fp16(v);
        }
        r
    }
    #[inline(always)]
    fn round_away(self, v: Self::F) -> Self::I {
        let mut r = [0i32; N];
        for (r, v) in r.iter_mut().zip(v) {
            *r = c_f32_to_i32(v.round());
        }
        r
    }
    #[inline(always)]
    fn nibbles_min15(self, q: &[Self::I; 4]) -> [u8; 16] {
        let c = |k: usize| (q[k / N][k % N] as i8).min(15) as u8;
        let mut r = [0u8; 16];
        for (j, r) in r.iter_mut().enumerate() {
            *r = c(j) | c(j + 16) << 4;
        }
        r
    }
}

#[cfg(target_arch = "x86_64")]
impl LanesMore for Avx2 {
    #[inline(always)]
    fn eq(self, a: Self::F, b: Self::F) -> Self::M {
        use std::arch::x86_64::*;
        // SAFETY: an `Avx2` value exists only on CPUs with AVX2.
        unsafe { _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b) }
    }
    #[inline(always)]
    fn le(self, a: Self::F, b: Self::F) -> Self::M {
        use std::arch::x86_64::*;
        // SAFETY: an `Avx2` value exists only on CPUs with AVX2.
        unsafe { _mm256_cmp_ps::<_CMP_LE_OQ>(a, b) }
    }
    #[inline(always)]
    fn hmin(self, a: Self::F) -> f32 {
        use std::arch::x86_64::*;
        // Without NaN, min is exact in any order (up to the sign of a zero).
        // SAFETY: an `Avx2` value exists only on CPUs with AVX2.
        unsafe {
            let m = _mm_min_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_min_ss(m, _mm_movehdup_ps(m));
            _mm_cvtss_f32(m)
        }
    }
    #[inline(always)]
    fn and_i(self, a: Self::I, b: Self::I) -> Self::I {
        use std::arch::x86_64::*;
        // SAFETY: an `Avx2` value exists only on CPUs with AVX2.
        unsafe { _mm256_and_si256(a, b) }
    }
    #[inline(always)]
    fn bit4(self, a: Self::I) -> u32 {
        use std::arch::x86_64::*;
        // Bit 4 to the sign bit, then the sign bits.
        // SAFETY: an `Avx2` value exists only on CPUs with AVX2.
        unsafe { _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32::<27>(a))) as u32 }
    }
    #[inline(always)]
    fn hmin_each(self, v: &[Self::F; N]) -> Self::F {
        // Without NaN, min is exact in any order (up to the sign of a zero).
        // SAFETY: an `Avx2` value exists only on CPUs with AVX2.
        unsafe { avx2_reduce_each::<false>(v) }
    }
    #[inline(always)]
    fn hmax_each(self, v: &[Self::F; N]) -> Self::F {
        // SAFETY: an `Avx2` value exists only on CPUs with AVX2.
        unsafe { avx2_reduce_each::<true>(v) }
    }
    #[inline(always)]
    fn fp16_each(self, v: Self::F) -> [u16; N] {
        use std::arch::x86_64::*;
        // `fp32_to_fp16` lane by lane, the same integer and float steps.
        // SAFETY: an `Avx2` value exists only on CPUs with AVX2.
        unsafe {
            let w = _mm256_castps_si256(v);
            let abs = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF)));
            let mut base = _mm256_mul_ps(
                _mm256_mul_ps(abs, _mm256_set1_ps(f32::from_bits(0x7780_0000))),
                _mm256_set1_ps(f32::from_bits(0x0880_0000)),
            );
            let shl1 = _mm256_add_epi32(w, w);
            let sign = _mm256_and_si256(w, _mm256_set1_epi32(0x8000_0000u32 as i32));
            let bias = _mm256_max_epu32(
                _mm256_and_si256(shl1, _mm256_set1_epi32(0xFF00_0000u32 as i32)),
                _mm256_set1_epi32(0x7100_0000),
            );
            let add =
                _mm256_add_epi32(_mm256_srli_epi32::<1>(bias), _mm256_set1_epi32(0x0780_0000));
            base = _mm256_add_ps(base, _mm256_castsi256_ps(add));
            let bits = _mm256_castps_si256(base);
            let nonsign = _mm256_add_epi32(
                _mm256_and_si256(_mm256_srli_epi32::<13>(bits), _mm256_set1_epi32(0x7C00)),
                _mm256_and_si256(bits, _mm256_set1_epi32(0x0FFF)),
            );
            // `shl1_w > 0xFF000000` unsigned: signed compare after flipping the top bit.
            let flip = _mm256_set1_epi32(0x8000_0000u32 as i32);
            let nan = _mm256_cmpgt_epi32(
                _mm256_xor_si256(shl1, flip),
                _mm256_xor_si256(_mm256_set1_epi32(0xFF00_0000u32 as i32), flip),
            );
            let low = _mm256_blendv_epi8(nonsign, _mm256_set1_epi32(0x7E00), nan);
            let h = _mm256_or_si256(_mm256_srli_epi32::<16>(sign), low);
            // Every lane is below 2^16: pack to 16 bits, then the two halves together.
            let p = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi32(h, h));
            let mut r = [0u16; N];
            _mm_storeu_si128(r.as_mut_ptr().cast(), _mm256_castsi256_si128(p));
            r
        }
    }
    #[inline(always)]
    fn round_away(self, v: Self::F) -> Self::I {
        use std::arch::x86_64::*;
        // `v + copysign(h, v)` truncated, `h` the float just below one half: a remainder
        // of at least one half carries past the next integer (`0.5 + h` rounds to 1 at
        // the tie, to even), a smaller one never reaches it, and from 2^22 up, where the
        // spacing is at least one half, the sum rounds to `v` or to the integer `v` rounds
        // to. NaN and out-of-range lanes convert to INT_MIN.
        // SAFETY: an `Avx2` value exists only on CPUs with AVX2.
        unsafe {
            let h = _mm256_set1_ps(f32::from_bits(0x3EFF_FFFF));
            let sign = _mm256_and_ps(v, _mm256_set1_ps(-0.0));
            _mm256_cvttps_epi32(_mm256_add_ps(v, _mm256_or_ps(h, sign)))
        }
    }
    #[inline(always)]
    fn nibbles_min15(self, q: &[Self::I; 4]) -> [u8; 16] {
        use std::arch::x86_64::*;
        // The codes' low bytes (masked, so the unsigned packs do not saturate) in order,
        // then a signed byte minimum: `MIN(15, (int8_t)q)` on all 32 at once.
        // SAFETY: an `Avx2` value exists only on CPUs with AVX2.
        unsafe {
            let m = _mm256_set1_epi32(0xFF);
            let a = _mm256_packus_epi32(_mm256_and_si256(q[0], m), _mm256_and_si256(q[1], m));
            let b = _mm256_packus_epi32(_mm256_and_si256(q[2], m), _mm256_and_si256(q[3], m));
            // Per 128-bit lane: q0, q1, q2, q3's four codes of that half, as dwords.
            let c = _mm256_packus_epi16(a, b);
            let c = _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            let c = _mm256_min_epi8(c, _mm256_set1_epi8(15));
            let hi = _mm_and_si128(_mm256_extracti128_si256::<1>(c), _mm_set1_epi8(0x0F));
            let r = _mm_or_si128(_mm256_castsi256_si128(c), _mm_slli_epi16::<4>(hi));
            let mut out = [0u8; 16];
            _mm_storeu_si128(out.as_mut_ptr().cast(), r);
            out
        }
    }
}

/// Lane `k`: the largest (`MAX`) or smallest lane of `v[k]`, an 8×8 transpose interleaved
/// with the reduction (exact in any order without NaN, up to the sign of a zero).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn avx2_reduce_each<const MAX: bool>(
    v: &[std::arch::x86_64::__m256; N],
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    #[inline(always)]
    unsafe fn op<const MAX: bool>(a: __m256, b: __m256) -> __m256 {
        // SAFETY: as the caller's.
        unsafe {
            if MAX {
                _mm256_max_ps(a, b)
            } else {
                _mm256_min_ps(a, b)
            }
        }
    }
    // SAFETY: the caller runs on a CPU with AVX2.
    unsafe {
        // Pairs: lanes [m(a0,a2), m(b0,b2), m(a1,a3), m(b1,b3) | the same of lanes 4..8].
        let t0 = op::<MAX>(
            _mm256_unpacklo_ps(v[0], v[1]),
            _mm256_unpackhi_ps(v[0], v[1]),
        );
        let t1 = op::<MAX>(
            _mm256_unpacklo_ps(v[2], v[3]),
            _mm256_unpackhi_ps(v[2], v[3]),
        );
        let t2 = op::<MAX>(
            _mm256_unpacklo_ps(v[4], v[5]),
            _mm256_unpackhi_ps(v[4], v[5]),
        );
        let t3 = op::<MAX>(
            _mm256_unpacklo_ps(v[6], v[7]),
            _mm256_unpackhi_ps(v[6], v[7]),
        );
        // Quads: lanes [a, b, c, d | a, b, c, d], each folded over its own half.
        let u0 = op::<MAX>(
            _mm256_shuffle_ps::<0b01_00_01_00>(t0, t1),
            _mm256_shuffle_ps::<0b11_10_11_10>(t0, t1),
        );
        let u1 = op::<MAX>(
            _mm256_shuffle_ps::<0b01_00_01_00>(t2, t3),
            _mm256_shuffle_ps::<0b11_10_11_10>(t2, t3),
        );
        op::<MAX>(
            _mm256_permute2f128_ps::<0x20>(u0, u1),
            _mm256_permute2f128_ps::<0x31>(u0, u1),
        )
    }
}

/// `make_qkx2_quants` (`qkx3` false: `max == min` is degenerate) or `make_qkx3_quants`
/// (`max <= min`) on each group of `gr`, whose weights are set (ggml's `weights`, or x²
/// filled in by the caller for `make_qkx3_quants` without weights).
#[inline(always)]
pub(crate) fn qkx(p: QkxSearch, qkx3: bool, gr: &Groups) -> Found {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = Avx2::get() {
        // SAFETY: the token exists only on CPUs with AVX2.
        return unsafe { qkx_avx2(t, p, qkx3, gr) };
    }
    qkx_lanes(Portable, p, qkx3, gr)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn qkx_avx2(t: Avx2, p: QkxSearch, qkx3: bool, gr: &Groups) -> Found {
    qkx_lanes(t, p, qkx3, gr)
}

/// The clamped code of `make_qkx*`, `MAX(0, MIN(nmax, nearest_int(iscale·(x − min))))`,
/// as a float. (A helper rather than a closure: closures are not always inlined into the
/// AVX2 build, and an intrinsic left in one is an out-of-line call.)
#[inline(always)]
fn qkx_code<S: Lanes>(s: S, iscale: S::F, min: S::F, xi: S::F, lo: S::I, hi: S::I) -> S::F {
    s.to_f(s.clamp_i(s.nearest_int(s.mul(iscale, s.sub(xi, min))), lo, hi))
}

/// `|diff|` or `diff²`.
#[inline(always)]
fn qkx_err<S: Lanes>(s: S, mad: bool, diff: S::F) -> S::F {
    if mad {
        s.abs(diff)
    } else {
        s.mul(diff, diff)
    }
}

/// `Σ w·x·l` and `Σ w·l·l` of `make_qx_quants` for one candidate `iscale`.
#[inline(always)]
fn qx_sums<S: Lanes>(
    s: S,
    iscale: S::F,
    xv: &[S::F],
    wv: &[S::F],
    wx: &[S::F],
    lo: S::I,
    hi: S::I,
) -> (S::F, S::F) {
    let zero = s.splat(0.0);
    let (mut sumlx, mut suml2) = (zero, zero);
    for ((&xi, &wi), &wxi) in xv.iter().zip(wv).zip(wx) {
        let lf = s.to_f(s.clamp_i(s.nearest_int(s.mul(iscale, xi)), lo, hi));
        sumlx = s.add(sumlx, s.mul(wxi, lf));
        suml2 = s.add(suml2, s.mul(s.mul(wi, lf), lf));
    }
    (sumlx, suml2)
}

#[inline(always)]
fn qkx_lanes<S: LanesMore>(s: S, p: QkxSearch, qkx3: bool, gr: &Groups) -> Found {
    let n = gr.n.clamp(1, MAXN);
    let zero = s.splat(0.0);
    let mut xv = [zero; MAXN];
    let mut wv = [zero; MAXN];
    for i in 0..n {
        xv[i] = s.load(&gr.x[i]);
        wv[i] = s.load(&gr.w[i]);
    }
    let (xv, wv) = (&xv[..n], &wv[..n]);
    let mut min = xv[0];
    let mut max = xv[0];
    let mut sum_w = wv[0];
    let mut sum_x = s.mul(sum_w, xv[0]);
    for (&xi, &wi) in xv.iter().zip(wv).skip(1) {
        min = s.select(s.gt(min, xi), xi, min);
        max = s.select(s.gt(xi, max), xi, max);
        sum_w = s.add(sum_w, wi);
        sum_x = s.add(sum_x, s.mul(wi, xi));
    }
    min = s.select(s.gt(min, zero), zero, min);
    let degenerate = if qkx3 { s.le(max, min) } else { s.eq(max, min) };
    let min0 = min;
    let nmax = p.nmax;
    let (lo, hi) = (s.splat_i(0), s.splat_i(nmax));
    let iscale = s.div(s.splat(nmax as f32), s.sub(max, min));
    let mut scale = s.div(s.splat(1.0), iscale);
    let mut best_error = zero;
    for (&xi, &wi) in xv.iter().zip(wv) {
        let lf = qkx_code(s, iscale, min, xi, lo, hi);
        let diff = s.sub(s.add(s.mul(scale, lf), min), xi);
        best_error = s.add(best_error, s.mul(wi, qkx_err(s, p.use_mad, diff)));
    }
    // The inputs of the best codes so far.
    let (mut best_iscale, mut best_min) = (iscale, min);
    if p.nstep >= 1 {
        let (sw, sx) = (sum_w, sum_x);
        let mut laux = [zero; MAXN];
        for is in 0..=p.nstep {
            let num = p.rmin + p.rdelta * is as f32 + nmax as f32;
            let iscale = s.div(s.splat(num), s.sub(max, min));
            let (mut sl, mut sl2, mut sxl) = (zero, zero, zero);
            for ((&xi, &wi), la) in xv.iter().zip(wv).zip(laux.iter_mut()) {
                let lf = qkx_code(s, iscale, min, xi, lo, hi);
                *la = lf;
                let wl = s.mul(wi, lf);
                sl = s.add(sl, wl);
                sl2 = s.add(sl2, s.mul(wl, lf));
                sxl = s.add(sxl, s.mul(wl, xi));
            }
            let d = s.sub(s.mul(sw, sl2), s.mul(sl, sl));
            let t_s = s.div(s.sub(s.mul(sw, sxl), s.mul(sx, sl)), d);
            let t_m = s.div(s.sub(s.mul(sl2, sx), s.mul(sl, sxl)), d);
            let clipped = s.gt(t_m, zero);
            let this_scale = s.select(clipped, s.div(sxl, sl2), t_s);
            let this_min = s.select(clipped, zero, t_m);
            let mut cur = zero;
            for ((&xi, &wi), &la) in xv.iter().zip(wv).zip(laux.iter()) {
                let diff = s.sub(s.add(s.mul(this_scale, la), this_min), xi);
                cur = s.add(cur, s.mul(wi, qkx_err(s, p.use_mad, diff)));
            }
            let win = s.and(s.gt(d, zero), s.gt(best_error, cur));
            if s.any(win) {
                best_error = s.select(win, cur, best_error);
                best_iscale = s.select(win, iscale, best_iscale);
                best_min = s.select(win, min, best_min);
                scale = s.select(win, this_scale, scale);
                min = s.select(win, this_min, min);
            }
        }
    }
    let scale = s.select(degenerate, zero, scale);
    let min = s.select(degenerate, min0, min);
    let mut found = Found {
        scale: s.store(scale),
        neg_min: [0.0; N],
        l: [[0; N]; MAXN],
    };
    for (v, m) in found.neg_min.iter_mut().zip(s.store(min)) {
        *v = -m;
    }
    let zero_i = s.splat_i(0);
    for (l, &xi) in found.l.iter_mut().zip(xv) {
        let li = s.clamp_i(
            s.nearest_int(s.mul(best_iscale, s.sub(xi, best_min))),
            lo,
            hi,
        );
        *l = s.store_i(s.select_i(degenerate, zero_i, li));
    }
    found
}

/// `make_qx_quants(n, nmax, x, L, rmse_type > 0, qw)` on each group of `gr`, whose
/// weights are ggml's (`qw`, or the `rmse_type` weights filled in by the caller).
/// Returns the scales and the codes `L ∈ [0, 2·nmax)`.
#[inline(always)]
pub(crate) fn qx(nmax: i32, gr: &Groups) -> Found {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = Avx2::get() {
        // SAFETY: the token exists only on CPUs with AVX2.
        return unsafe { qx_avx2(t, nmax, gr) };
    }
    qx_lanes(Portable, nmax, gr)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn qx_avx2(t: Avx2, nmax: i32, gr: &Groups) -> Found {
    qx_lanes(t, nmax, gr)
}

#[inline(always)]
fn qx_lanes<S: LanesMore>(s: S, nmax: i32, gr: &Groups) -> Found {
    let n = gr.n.clamp(1, MAXN);
    let zero = s.splat(0.0);
    let mut xv = [zero; MAXN];
    let mut wv = [zero; MAXN];
    let mut wx = [zero; MAXN];
    for i in 0..n {
        xv[i] = s.load(&gr.x[i]);
        wv[i] = s.load(&gr.w[i]);
        wx[i] = s.mul(wv[i], xv[i]);
    }
    let (xv, wv, wx) = (&xv[..n], &wv[..n], &wx[..n]);
    let mut max = zero;
    let mut amax = zero;
    for &xi in xv {
        let ax = s.abs(xi);
        let take = s.gt(ax, amax);
        amax = s.select(take, ax, amax);
        max = s.select(take, xi, max);
    }
    let small = s.gt(s.splat(GROUP_MAX_EPS), amax);
    let (lo, hi) = (s.splat_i(-nmax), s.splat_i(nmax - 1));
    let iscale = s.div(s.splat((-nmax) as f32), max);
    let (sumlx, suml2) = qx_sums(s, iscale, xv, wv, wx, lo, hi);
    let mut scale = s.select(s.eq(suml2, zero), zero, s.div(sumlx, suml2));
    let mut best = s.mul(scale, sumlx);
    let mut best_iscale = iscale;
    for is in (-9i32..=9).filter(|&is| is != 0) {
        let iscale = s.div(s.splat(-(nmax as f32 + 0.1f32 * is as f32)), max);
        let (sumlx, suml2) = qx_sums(s, iscale, xv, wv, wx, lo, hi);
        let win = s.and(
            s.gt(suml2, zero),
            s.gt(s.mul(sumlx, sumlx), s.mul(best, suml2)),
        );
        if s.any(win) {
            let sc = s.div(sumlx, suml2);
            scale = s.select(win, sc, scale);
            best = s.select(win, s.mul(sc, sumlx), best);
            best_iscale = s.select(win, iscale, best_iscale);
        }
    }
    let mut found = Found {
        scale: s.store(s.select(small, zero, scale)),
        neg_min: [0.0; N],
        l: [[0; N]; MAXN],
    };
    let (zero_i, off) = (s.splat_i(0), s.splat_i(nmax));
    for (l, &xi) in found.l.iter_mut().zip(xv) {
        let li = s.clamp_i(s.nearest_int(s.mul(best_iscale, xi)), lo, hi);
        // `li + nmax` as `0 - (-nmax - li)` with the wrapping subtraction the trait has.
        let li = s.sub_i(li, s.sub_i(zero_i, off));
        *l = s.store_i(s.select_i(small, zero_i, li));
    }
    found
}

#[cfg(test)]
#[path = "kquant_lanes_tests.rs"]
mod tests;
