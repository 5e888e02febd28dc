//! IQ1_M's split search for the 16 blocks of a super-block at once: one block per AVX2
//! lane, two groups of 8 blocks side by side (two independent dependency chains).
//!
//! Each lane runs exactly the per-block search of `iq1_m::split_search`: the splits in
//! ggml's order (`i1` ascending, then `i2`, then the 4 shift combinations), each split's
//! sums the chain `0 + t_0 + t_1 + …` over the sorted values (prefixes shared as in the
//! per-block search: the same additions in the same order), the test
//! `Σwq² > 0 && (Σwqx)² > best·Σwq²` and, when it passes, `scale = Σwqx/Σwq²`,
//! `best = scale·Σwqx`. A lane's running best changes only through blends on its own
//! mask, so a lane sees the same sequence of comparisons as the scalar loop, and the
//! first strictly better candidate wins as in ggml. No horizontal operation mixes lanes.

use crate::types::iq1_s::{X_M, X_P};
use crate::types::lanes::Avx2;
use std::arch::x86_64::*;

const BS: usize = 16;

/// Per group of 8 blocks, per sorted position `j` and level: the 8 terms (`w·q·x` of the
/// combinations 0..3, then their `w·q²`), each a vector over the 8 blocks.
type Terms = [[[[f32; 8]; 8]; 3]; BS];

/// The split search of the 16 blocks of a super-block (`xbl`: 256 values, `weights` and
/// `idx` per block as in `iq1_m::split_search`). Returns per block (scale, i1, i2,
/// combination), the combination −1 when none qualified.
///
/// # Safety
/// The CPU has AVX2 (the token's existence says so).
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn split_search16(
    _t: Avx2,
    xbl: &[f32],
    weights: &[[f32; BS]; BS],
    idx: &[[usize; BS]; BS],
) -> [(f32, usize, usize, i8); BS] {
    let mut terms = [[[[[0f32; 8]; 8]; 3]; BS]; 2];
    for (g, tg) in terms.iter_mut().enumerate() {
        // SAFETY: the CPU has AVX2 (the token).
        unsafe { fill_terms(xbl, weights, idx, g, tg) };
    }
    // SAFETY: each `terms[g][j][lv][c]` holds 8 floats.
    let term = |g: usize, j: usize, lv: usize, c: usize| unsafe {
        _mm256_loadu_ps(terms[g][j][lv][c].as_ptr())
    };
    let zero = _mm256_setzero_ps();
    let mut p0 = [[zero; 8]; 2];
    let mut best = [_mm256_set1_ps(-f32::MAX); 2];
    let mut code = [_mm256_set1_ps(-1.0); 2];
    for i1 in 0..=BS {
        let mut p01 = p0;
        for i2 in i1..=BS {
            let base = (((i1 * 32) + i2) * 4) as f32;
            for g in 0..2 {
                let mut sum = p01[g];
                for j in i2..BS {
                    for (c, s) in sum.iter_mut().enumerate() {
                        *s = _mm256_add_ps(*s, term(g, j, 2, c));
                    }
                }
                for k in 0..4 {
                    let (sqx, sq2) = (sum[k], sum[4 + k]);
                    let pass = _mm256_and_ps(
                        _mm256_cmp_ps::<_CMP_GT_OQ>(sq2, zero),
                        _mm256_cmp_ps::<_CMP_GT_OQ>(
                            _mm256_mul_ps(sqx, sqx),
                            _mm256_mul_ps(best[g], sq2),
                        ),
                    );
                    let sc = _mm256_mul_ps(_mm256_div_ps(sqx, sq2), sqx);
                    best[g] = _mm256_blendv_ps(best[g], sc, pass);
                    code[g] = _mm256_blendv_ps(code[g], _mm256_set1_ps(base + k as f32), pass);
                }
            }
            if i2 < BS {
                for (g, pg) in p01.iter_mut().enumerate() {
                    for (c, p) in pg.iter_mut().enumerate() {
                        *p = _mm256_add_ps(*p, term(g, i2, 1, c));
                    }
                }
            }
        }
        if i1 < BS {
            for (g, pg) in p0.iter_mut().enumerate() {
                for (c, p) in pg.iter_mut().enumerate() {
                    *p = _mm256_add_ps(*p, term(g, i1, 0, c));
                }
            }
        }
    }
    // The winner's scale: its sums again (the same chain from 0), then `Σwqx/Σwq²`.
    let mut out = [(0f32, 0usize, 0usize, -1i8); BS];
    for (g, tg) in terms.iter().enumerate() {
        let mut c = [0f32; 8];
        // SAFETY: `c` holds 8 floats.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), code[g]) };
        for b in 0..8 {
            if c[b] >= 0.0 {
                let c = c[b] as usize;
                let (i1, i2, k) = (c >> 7, (c >> 2) & 31, c & 3);
                let (mut sqx, mut sq2) = (0f32, 0f32);
                for (j, tj) in tg.iter().enumerate() {
                    let lv = if j < i1 {
                        0
                    } else if j < i2 {
                        1
                    } else {
                        2
                    };
                    sqx += tj[lv][k][b];
                    sq2 += tj[lv][4 + k][b];
                }
                out[8 * g + b] = (sqx / sq2, i1, i2, k as i8);
            }
        }
    }
    out
}

/// The terms of group `g` (blocks `8g..8g+8`): for the `j`-th smallest value of each
/// block, `w·X[lv]·x` and `w·X[lv]·X[lv]` for the + and − levels, placed by combination
/// (0: +,+; 1: +,−; 2: −,+; 3: −,−, by the value's half of the block): the products of
/// the per-block search, in the same order, 8 blocks at once.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn fill_terms(
    xbl: &[f32],
    weights: &[[f32; BS]; BS],
    idx: &[[usize; BS]; BS],
    g: usize,
    t: &mut Terms,
) {
    for (j, tj) in t.iter_mut().enumerate() {
        let (mut w8, mut x8, mut lo8) = ([0f32; 8], [0f32; 8], [0u32; 8]);
        for b in 0..8 {
            let blk = 8 * g + b;
            let i = idx[blk][j];
            w8[b] = weights[blk][i];
            x8[b] = xbl[BS * blk + i];
            lo8[b] = if i < 8 { u32::MAX } else { 0 };
        }
        // SAFETY: the arrays hold 8 floats / 8 u32s.
        let (wv, xv, lo) = unsafe {
            (
                _mm256_loadu_ps(w8.as_ptr()),
                _mm256_loadu_ps(x8.as_ptr()),
                _mm256_castsi256_ps(_mm256_loadu_si256(lo8.as_ptr().cast())),
            )
        };
        for (lv, tl) in tj.iter_mut().enumerate() {
            let (xp, xm) = (_mm256_set1_ps(X_P[lv]), _mm256_set1_ps(X_M[lv]));
            let (wp, wm) = (_mm256_mul_ps(wv, xp), _mm256_mul_ps(wv, xm));
            let (qp, qm) = (_mm256_mul_ps(wp, xv), _mm256_mul_ps(wm, xv));
            let (q2p, q2m) = (_mm256_mul_ps(wp, xp), _mm256_mul_ps(wm, xm));
            let v = [
                qp,
                _mm256_blendv_ps(qm, qp, lo),
                _mm256_blendv_ps(qp, qm, lo),
                qm,
                q2p,
                _mm256_blendv_ps(q2m, q2p, lo),
                _mm256_blendv_ps(q2p, q2m, lo),
                q2m,
            ];
            for (o, vc) in tl.iter_mut().zip(v) {
                // SAFETY: `o` holds 8 floats.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), vc) };
            }
        }
    }
}

/// The ascending order of a block of 16 as `iq1_s::sorted_order` gives it (the rank of
/// value `i`: the count of smaller values and of equal ones before it), 8 comparisons at
/// once; `None` when the block has a NaN (then `sorted_order`'s insertion sort decides).
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) unsafe fn sorted_order16(_t: Avx2, xb: &[f32]) -> Option<[usize; BS]> {
    let xb: &[f32; BS] = xb.try_into().ok()?;
    // SAFETY: `xb` holds 16 floats.
    let (x0, x1) = unsafe {
        (
            _mm256_loadu_ps(xb.as_ptr()),
            _mm256_loadu_ps(xb[8..].as_ptr()),
        )
    };
    let nan = _mm256_or_ps(
        _mm256_cmp_ps::<_CMP_UNORD_Q>(x0, x0),
        _mm256_cmp_ps::<_CMP_UNORD_Q>(x1, x1),
    );
    if _mm256_movemask_ps(nan) != 0 {
        return None;
    }
    // rank[i] = #{j : x_j < x_i or (x_j == x_i and j < i)}, 8 values `i` per vector:
    // each passing comparison (all ones, −1 as an integer) is subtracted from the count.
    let i0 = _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
    let i1 = _mm256_add_ps(i0, _mm256_set1_ps(8.0));
    let (mut r0, mut r1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for (j, &x) in xb.iter().enumerate() {
        let (u, jv) = (_mm256_set1_ps(x), _mm256_set1_ps(j as f32));
        let before = |xs: __m256, is: __m256| {
            _mm256_castps_si256(_mm256_or_ps(
                _mm256_cmp_ps::<_CMP_LT_OQ>(u, xs),
                _mm256_and_ps(
                    _mm256_cmp_ps::<_CMP_EQ_OQ>(u, xs),
                    _mm256_cmp_ps::<_CMP_LT_OQ>(jv, is),
                ),
            ))
        };
        r0 = _mm256_sub_epi32(r0, before(x0, i0));
        r1 = _mm256_sub_epi32(r1, before(x1, i1));
    }
    let mut rank = [0u32; BS];
    // SAFETY: `rank` holds 16 u32s.
    unsafe {
        _mm256_storeu_si256(rank.as_mut_ptr().cast(), r0);
        _mm256_storeu_si256(rank[8..].as_mut_ptr().cast(), r1);
    }
    let mut idx = [0usize; BS];
    for (i, &r) in rank.iter().enumerate() {
        idx[r as usize] = i;
    }
    Some(idx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::iq1_m::split_search_portable;
    use crate::types::iq1_s::sorted_order;

    /// xorshift64*, uniform in [0, 1).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32
        }
        fn pick<T: Copy>(&mut self, v: &[T]) -> T {
            v[((self.next() * v.len() as f32) as usize).min(v.len() - 1)]
        }
    }

    /// One block of 16 values and weights of kind `kind`: random, few distinct values
    /// (ties), all equal, zeros, tiny and zero weights, huge and subnormal values.
    fn block(r: &mut Rng, kind: usize) -> ([f32; BS], [f32; BS]) {
        let mut x = [0f32; BS];
        let mut w = [0f32; BS];
        let a = r.pick(&[1.0f32, 0.02, 3e-8, 1e-20, 1e18]);
        for i in 0..BS {
            let u = 2.0 * r.next() - 1.0;
            x[i] = match kind {
                0 => u * a,
                1 => r.pick(&[-1.0f32, 0.0, 1.0]) * a,
                2 => a,
                3 => r.pick(&[0.0f32, -0.0, 1.0, -1.0]) * a * (i % 3) as f32,
                4 => r.pick(&[0.5f32, -0.5, 0.25]) * a,
                5 => u * f32::MIN_POSITIVE * 4.0,
                _ => r.pick(&[-2.0f32, -1.0, 1.0, 2.0]) * if i < 8 { a } else { -a },
            };
            w[i] = match (kind + i) % 5 {
                0 => x[i] * x[i],
                1 => r.next(),
                2 => r.pick(&[0.0f32, 1e-38, 1e-30, 1.0]),
                3 => 1.0,
                _ => r.next() * 1e-3 + x[i] * x[i],
            };
        }
        (x, w)
    }

    #[test]
    fn lanes_search_matches_per_block_search() {
        let _g = crate::types::simd::force_simd(true);
        let Some(t) = Avx2::get() else {
            return;
        };
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let mut checked = 0;
        for round in 0..3000 {
            let mut xbl = [0f32; 256];
            let mut weights = [[0f32; BS]; BS];
            let mut idx = [[0usize; BS]; BS];
            for ib in 0..BS {
                let (x, w) = block(&mut r, (round + ib * 7) % 7);
                xbl[BS * ib..BS * ib + BS].copy_from_slice(&x);
                weights[ib] = w;
                idx[ib] = sorted_order::<BS>(&x);
            }
            // SAFETY: the token says the CPU has AVX2.
            let got = unsafe { split_search16(t, &xbl, &weights, &idx) };
            for ib in 0..BS {
                let want =
                    split_search_portable(&xbl[BS * ib..BS * ib + BS], &weights[ib], &idx[ib]);
                let g = got[ib];
                assert_eq!(
                    (g.0.to_bits(), g.1, g.2, g.3),
                    (want.0.to_bits(), want.1, want.2, want.3),
                    "round {round} block {ib}: x {:?} w {:?}",
                    &xbl[BS * ib..BS * ib + BS],
                    weights[ib]
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 3000 * BS);
    }

    #[test]
    fn sorted_order16_matches_sorted_order() {
        let _g = crate::types::simd::force_simd(true);
        let Some(t) = Avx2::get() else {
            return;
        };
        let mut r = Rng(0x1234_5678_9abc_def1);
        for round in 0..20000 {
            let (x, _) = block(&mut r, round % 7);
            // SAFETY: the token says the CPU has AVX2.
            let got = unsafe { sorted_order16(t, &x) };
            assert_eq!(got, Some(sorted_order::<BS>(&x)), "{x:?}");
        }
        let mut x = [1f32; BS];
        x[3] = f32::NAN;
        // SAFETY: as above.
        assert_eq!(unsafe { sorted_order16(t, &x) }, None);
    }
}
