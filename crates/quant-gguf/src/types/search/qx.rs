//! `make_qx_quants`: the symmetric scale search of Q6_K, Q3_K and the weighted Q4_0/Q5_0
//! (18 candidate scales, evaluated side by side in vector lanes), with its straight port.

use crate::types::c_math::{c_max, c_min, nearest_int, GROUP_MAX_EPS};
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::lanes::{self, Lanes, Portable};
/// `make_qx_quants`, the straight port: symmetric quantization of `x` to
/// `L[i] ∈ [0, 2·nmax)` (stored with the `nmax` offset) returning the scale; `rmse_type`
/// chooses the weighting when `qw` is `None` (1: x², 2: 1, 3: |x|, else √|x|), negative
/// returns early. [`make_qx_quants`] is the same computation with the 18 candidate scales
/// evaluated side by side; this version is its oracle in the tests.
pub fn make_qx_quants_scalar(
    nmax: i32,
    x: &[f32],
    l_out: &mut [i8],
    rmse_type: i32,
    qw: Option<&[f32]>,
) -> f32 {
    let n = x.len().min(l_out.len());
    let x = &x[..n];
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
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = (-nmax) as f32 / max;
    if rmse_type == 0 {
        for (li, &xi) in l_out.iter_mut().zip(x) {
            let l = nearest_int(iscale * xi);
            *li = (nmax + c_max(-nmax, c_min(nmax - 1, l))) as i8;
        }
        return 1.0 / iscale;
    }
    let mut rmse_type = rmse_type;
    let mut return_early = false;
    if rmse_type < 0 {
        rmse_type = -rmse_type;
        return_early = true;
    }
    let weight = |i: usize, xi: f32| -> f32 {
        match qw {
            Some(q) => q.get(i).copied().unwrap_or(0.0),
            None => match rmse_type {
                1 => xi * xi,
                2 => 1.0,
                3 => xi.abs(),
                _ => xi.abs().sqrt(),
            },
        }
    };
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for (i, (li, &xi)) in l_out.iter_mut().zip(x).enumerate() {
        let mut l = nearest_int(iscale * xi);
        l = c_max(-nmax, c_min(nmax - 1, l));
        *li = (l + nmax) as i8;
        let w = weight(i, xi);
        let lf = l as f32;
        sumlx += w * xi * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for (i, &xi) in x.iter().enumerate() {
            let mut l = nearest_int(iscale * xi);
            l = c_max(-nmax, c_min(nmax - 1, l));
            let w = weight(i, xi);
            let lf = l as f32;
            sumlx += w * xi * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &xi) in l_out.iter_mut().zip(x) {
                let l = nearest_int(iscale * xi);
                *li = (nmax + c_max(-nmax, c_min(nmax - 1, l))) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_qx_quants` (see [`make_qx_quants_scalar`]): the 18 candidate scales
/// `−(nmax + 0.1·is)/max` do not depend on each other, so their sums are computed side by
/// side; the candidates are then compared in ggml's order.
#[inline(always)]
pub fn make_qx_quants(
    nmax: i32,
    x: &[f32],
    l_out: &mut [i8],
    rmse_type: i32,
    qw: Option<&[f32]>,
) -> f32 {
    let n = x.len().min(l_out.len());
    if n > 32 || rmse_type <= 0 || qw.is_some_and(|q| q.len() < n) {
        return make_qx_quants_scalar(nmax, x, l_out, rmse_type, qw);
    }
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
    let mut wbuf = [0f32; 32];
    let w = &mut wbuf[..n];
    for (i, (wi, &xi)) in w.iter_mut().zip(x).enumerate() {
        *wi = match qw {
            Some(q) => q[i],
            None => match rmse_type {
                1 => xi * xi,
                2 => 1.0,
                3 => xi.abs(),
                _ => xi.abs().sqrt(),
            },
        };
    }
    let w = &wbuf[..n];
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = Avx2::get() {
        // SAFETY: the token exists only on CPUs with AVX2.
        return unsafe { qx_candidates_avx2(t, nmax, x, w, max, l_out) };
    }
    qx_candidates(Portable, nmax, x, w, max, l_out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn qx_candidates_avx2(
    t: Avx2,
    nmax: i32,
    x: &[f32],
    w: &[f32],
    max: f32,
    l_out: &mut [i8],
) -> f32 {
    qx_candidates(t, nmax, x, w, max, l_out)
}

/// The search of `make_qx_quants` after the weights (`x`, `w`, `l_out` of the same length
/// ≤ 32): the first scale `−nmax/max` and the 18 candidates `−(nmax + 0.1·is)/max` are
/// 19 independent sums, computed as the lanes of three vectors; the candidates are then
/// compared in ggml's order.
#[inline(always)]
fn qx_candidates<S: Lanes>(
    s: S,
    nmax: i32,
    x: &[f32],
    w: &[f32],
    max: f32,
    l_out: &mut [i8],
) -> f32 {
    const V: usize = 3;
    const NC: usize = 18;
    // Lane 0: ggml's first scale; lanes 1..=18: is = -9..-1, 1..9; the rest unused.
    // Numerators first, then the divisions lane-wise (the same IEEE divisions).
    let mut isc = [0f32; V * lanes::N];
    isc[0] = (-nmax) as f32;
    for (k, is) in (-9i32..=9).filter(|&is| is != 0).enumerate() {
        isc[k + 1] = -(nmax as f32 + 0.1f32 * is as f32);
    }
    let mut iv = [s.splat(0.0); V];
    for (v, c) in iv.iter_mut().zip(isc.chunks_exact_mut(lanes::N)) {
        let mut a = [0f32; lanes::N];
        a.copy_from_slice(c);
        *v = s.div(s.load(&a), s.splat(max));
        c.copy_from_slice(&s.store(*v));
    }
    let (lo, hi) = (s.splat_i(-nmax), s.splat_i(nmax - 1));
    let mut slx = [s.splat(0.0); V];
    let mut sl2 = [s.splat(0.0); V];
    for (&xi, &wi) in x.iter().zip(w) {
        let (xv, wv, wx) = (s.splat(xi), s.splat(wi), s.splat(wi * xi));
        for v in 0..V {
            let lf = s.to_f(s.clamp_i(s.nearest_int(s.mul(iv[v], xv)), lo, hi));
            slx[v] = s.add(slx[v], s.mul(wx, lf));
            sl2[v] = s.add(sl2[v], s.mul(s.mul(wv, lf), lf));
        }
    }
    let mut sumlx = [0f32; V * lanes::N];
    let mut suml2 = [0f32; V * lanes::N];
    for v in 0..V {
        sumlx[v * lanes::N..(v + 1) * lanes::N].copy_from_slice(&s.store(slx[v]));
        suml2[v * lanes::N..(v + 1) * lanes::N].copy_from_slice(&s.store(sl2[v]));
    }
    let codes = |k: usize, l_out: &mut [i8]| {
        for (li, &xi) in l_out.iter_mut().zip(x) {
            let l = nearest_int(isc[k] * xi);
            *li = (nmax + c_max(-nmax, c_min(nmax - 1, l))) as i8;
        }
    };
    codes(0, l_out);
    let mut scale = if suml2[0] != 0.0 {
        sumlx[0] / suml2[0]
    } else {
        0.0
    };
    let mut best = scale * sumlx[0];
    for k in 1..=NC {
        if suml2[k] > 0.0 && sumlx[k] * sumlx[k] > best * suml2[k] {
            codes(k, l_out);
            scale = sumlx[k] / suml2[k];
            best = scale * sumlx[k];
        }
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::search::test_values as values;

    #[test]
    fn batched_qx_equals_the_straight_port() {
        for simd in [true, false] {
            let _simd = quant_core::simd::force_simd(simd);
            batched_qx_equals_the_straight_port_once();
        }
    }

    fn batched_qx_equals_the_straight_port_once() {
        for seed in 0..400u64 {
            for n in [16usize, 32] {
                let x = values(seed, n);
                let w: Vec<f32> = values(seed + 1000, n)
                    .iter()
                    .map(|v| v.abs() + 0.01)
                    .collect();
                for qw in [None, Some(w.as_slice())] {
                    for (nmax, rmse) in [(4, 1), (8, 1), (16, 1), (32, 1), (4, 2), (4, 3), (4, 4)] {
                        let (mut a, mut b) = (vec![0i8; n], vec![0i8; n]);
                        let sa = make_qx_quants(nmax, &x, &mut a, rmse, qw);
                        let sb = make_qx_quants_scalar(nmax, &x, &mut b, rmse, qw);
                        assert_eq!(
                            (sa.to_bits(), &a),
                            (sb.to_bits(), &b),
                            "qx {seed} {n} {nmax}"
                        );
                    }
                }
            }
        }
    }
}
