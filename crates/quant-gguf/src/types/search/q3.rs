//! `make_q3_quants`: Q3_K's sub-block scale search with coordinate descent, the 16 sub-blocks
//! of a super-block run side by side as lanes.

use crate::types::c_math::{c_max, c_min, nearest_int, GROUP_MAX_EPS, QK_K};
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::lanes::{self, Lanes, Portable};
/// `make_q3_quants`: like [`super::make_qx_quants`] with x² weights and a coordinate-descent
/// refinement (`do_rmse`), used by the Q3_K reference quantizer.
#[inline(always)]
pub fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len().min(l_out.len());
    let x = &x[..n];
    let l_out = &mut l_out[..n];
    let mut max = 0f32;
    let mut amax = 0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = (-nmax) as f32 / max;
    if do_rmse {
        let mut sumlx = 0f32;
        let mut suml2 = 0f32;
        for (li, &xi) in l_out.iter_mut().zip(x) {
            let mut l = nearest_int(iscale * xi);
            l = c_max(-nmax, c_min(nmax - 1, l));
            *li = l as i8;
            let w = xi * xi;
            let lf = l as f32;
            sumlx += w * xi * lf;
            suml2 += w * lf * lf;
        }
        for _itry in 0..5 {
            let mut n_changed = 0;
            for (li, &xi) in l_out.iter_mut().zip(x) {
                let w = xi * xi;
                let lcur = *li as f32;
                let mut slx = sumlx - w * xi * lcur;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * lcur * lcur;
                    let mut new_l = nearest_int(xi * sl2 / slx);
                    new_l = c_max(-nmax, c_min(nmax - 1, new_l));
                    if new_l != *li as i32 {
                        let nl = new_l as f32;
                        slx += w * xi * nl;
                        sl2 += w * nl * nl;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            *li = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for li in l_out.iter_mut() {
            *li = (*li as i32 + nmax) as i8;
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for (li, &xi) in l_out.iter_mut().zip(x) {
        let mut l = nearest_int(iscale * xi);
        l = c_max(-nmax, c_min(nmax - 1, l));
        *li = (l + nmax) as i8;
    }
    1.0 / iscale
}

/// [`make_q3_quants`] with `do_rmse` on the 16 sub-blocks of 16 of a Q3_K super-block at
/// once: `scales[j]` and `l[16j..16j+16]` are exactly what `make_q3_quants(nmax,
/// &x[16j..16j+16], .., true)` returns. The sub-blocks are independent, so each one is a
/// lane (two vectors of eight) running ggml's sequence, the coordinate descent included;
/// the descent stops when no lane changed in a pass, and a lane that changed nothing in a
/// pass would change nothing in the next (same state, same operations), so running it
/// longer than ggml does is exact.
#[inline(always)]
pub fn make_q3_quants_x16(nmax: i32, x: &[f32; QK_K], l: &mut [i8; QK_K], scales: &mut [f32; 16]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = Avx2::get() {
        // SAFETY: the token exists only on CPUs with AVX2.
        return unsafe { q3_lanes_avx2(t, nmax, x, l, scales) };
    }
    q3_lanes(Portable, nmax, x, l, scales)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn q3_lanes_avx2(
    t: Avx2,
    nmax: i32,
    x: &[f32; QK_K],
    l: &mut [i8; QK_K],
    scales: &mut [f32; 16],
) {
    q3_lanes(t, nmax, x, l, scales)
}

#[inline(always)]
fn q3_lanes<S: Lanes>(
    s: S,
    nmax: i32,
    x: &[f32; QK_K],
    l: &mut [i8; QK_K],
    scales: &mut [f32; 16],
) {
    const V: usize = 16 / lanes::N;
    // xt[i][v]: element i of sub-blocks 8v..8v+8.
    let mut xt = [[s.splat(0.0); V]; 16];
    for (i, row) in xt.iter_mut().enumerate() {
        for (v, xv) in row.iter_mut().enumerate() {
            let mut a = [0f32; lanes::N];
            for (k, a) in a.iter_mut().enumerate() {
                *a = x[16 * (lanes::N * v + k) + i];
            }
            *xv = s.load(&a);
        }
    }
    let zero = s.splat(0.0);
    let (lo, hi) = (s.splat_i(-nmax), s.splat_i(nmax - 1));
    let mut max = [zero; V];
    let mut amax = [zero; V];
    for row in &xt {
        for v in 0..V {
            let ax = s.abs(row[v]);
            let m = s.gt(ax, amax[v]);
            amax[v] = s.select(m, ax, amax[v]);
            max[v] = s.select(m, row[v], max[v]);
        }
    }
    let mut iscale = [zero; V];
    for v in 0..V {
        iscale[v] = s.div(s.splat((-nmax) as f32), max[v]);
    }
    let mut lt = [[s.splat_i(0); V]; 16];
    let mut sumlx = [zero; V];
    let mut suml2 = [zero; V];
    for (row, lrow) in xt.iter().zip(lt.iter_mut()) {
        for v in 0..V {
            let li = s.clamp_i(s.nearest_int(s.mul(iscale[v], row[v])), lo, hi);
            lrow[v] = li;
            let lf = s.to_f(li);
            let w = s.mul(row[v], row[v]);
            sumlx[v] = s.add(sumlx[v], s.mul(s.mul(w, row[v]), lf));
            suml2[v] = s.add(suml2[v], s.mul(s.mul(w, lf), lf));
        }
    }
    for _itry in 0..5 {
        let mut changed = false;
        for (row, lrow) in xt.iter().zip(lt.iter_mut()) {
            for v in 0..V {
                let xi = row[v];
                let w = s.mul(xi, xi);
                let wx = s.mul(w, xi);
                let lcur = s.to_f(lrow[v]);
                let slx = s.sub(sumlx[v], s.mul(wx, lcur));
                let sl2 = s.sub(suml2[v], s.mul(s.mul(w, lcur), lcur));
                let new_l = s.clamp_i(s.nearest_int(s.div(s.mul(xi, sl2), slx)), lo, hi);
                let nl = s.to_f(new_l);
                let slx_n = s.add(slx, s.mul(wx, nl));
                let sl2_n = s.add(sl2, s.mul(s.mul(w, nl), nl));
                let better = s.gt(
                    s.mul(s.mul(slx_n, slx_n), suml2[v]),
                    s.mul(s.mul(sumlx[v], sumlx[v]), sl2_n),
                );
                let take = s.and(
                    s.and(s.gt(slx, zero), s.ne_i(new_l, lrow[v])),
                    s.and(s.gt(sl2_n, zero), better),
                );
                if s.any(take) {
                    changed = true;
                    lrow[v] = s.select_i(take, new_l, lrow[v]);
                    sumlx[v] = s.select(take, slx_n, sumlx[v]);
                    suml2[v] = s.select(take, sl2_n, suml2[v]);
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut scale = [0f32; 16];
    let mut live = [false; 16];
    for v in 0..V {
        let sc = s.select(s.gt(suml2[v], zero), s.div(sumlx[v], suml2[v]), zero);
        scale[lanes::N * v..lanes::N * (v + 1)].copy_from_slice(&s.store(sc));
        let am = s.store(amax[v]);
        for (live, &am) in live[lanes::N * v..lanes::N * (v + 1)].iter_mut().zip(&am) {
            // ggml's `amax < GROUP_MAX_EPS` test, negated (amax is never NaN: it only
            // takes values that compared greater).
            *live = am >= GROUP_MAX_EPS;
        }
    }
    for (i, lrow) in lt.iter().enumerate() {
        for (v, &lv) in lrow.iter().enumerate() {
            for (k, &li) in s.store_i(lv).iter().enumerate() {
                let j = lanes::N * v + k;
                l[16 * j + i] = if live[j] { (li + nmax) as i8 } else { 0 };
            }
        }
    }
    for ((out, &sc), &live) in scales.iter_mut().zip(&scale).zip(&live) {
        *out = if live { sc } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::search::test_values as values;

    #[test]
    fn q3_lanes_equal_the_straight_port() {
        for simd in [true, false] {
            let _simd = quant_core::simd::force_simd(simd);
            for seed in 0..300u64 {
                let mut x = [0f32; QK_K];
                x.copy_from_slice(&values(seed, QK_K));
                // An all-zero sub-block, a tiny one, and (sometimes) a NaN / an Inf.
                x[32..48].fill(0.0);
                x[48..64].iter_mut().for_each(|v| *v *= 1e-17);
                if seed % 5 == 1 {
                    x[70] = f32::NAN;
                }
                if seed % 7 == 2 {
                    x[100] = f32::INFINITY;
                }
                let (mut l, mut sc) = ([0i8; QK_K], [0f32; 16]);
                make_q3_quants_x16(4, &x, &mut l, &mut sc);
                for j in 0..16 {
                    let mut lj = [0i8; 16];
                    let s = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut lj, true);
                    assert_eq!(sc[j].to_bits(), s.to_bits(), "seed {seed} sub-block {j}");
                    assert_eq!(&l[16 * j..16 * j + 16], &lj, "seed {seed} sub-block {j}");
                }
            }
        }
    }
}
