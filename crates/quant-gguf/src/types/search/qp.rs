//! `make_qp_quants`: quantizes the non-negative sub-block scales or mins of Q2_K/Q4_K/Q5_K
//! under importance weights.

use crate::types::c_math::{c_max, c_min, nearest_int, GROUP_MAX_EPS};
/// `make_qp_quants`: quantizes the non-negative sub-block scales (or mins) `x` to
/// `L ∈ [0, nmax]` under `quant_weights`, returning the super-block scale.
#[inline(always)]
pub fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], quant_weights: &[f32]) -> f32 {
    let n = x.len().min(l_out.len()).min(quant_weights.len());
    let x = &x[..n];
    let l_out = &mut l_out[..n];
    let qw = &quant_weights[..n];
    let mut max = 0f32;
    for &xi in x {
        max = c_max(max, xi);
    }
    if max < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for (li, &xi) in l_out.iter_mut().zip(x) {
        *li = nearest_int(iscale * xi) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for ((&li, &xi), &w) in l_out.iter().zip(x).zip(qw) {
        let diff = xi - scale * li as f32;
        best_mse += w * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for (&xi, &w) in x.iter().zip(qw) {
            let mut l = nearest_int(iscale_is * xi);
            l = c_min(nmax, l);
            let diff = xi - scale_is * l as f32;
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for ((li, &xi), &w) in l_out.iter_mut().zip(x).zip(qw) {
        let mut l = nearest_int(iscale * xi);
        l = c_min(nmax, l);
        *li = l as u8;
        let lf = l as f32;
        sumlx += w * xi * lf;
        suml2 += w * lf * lf;
    }
    for _itry in 0..5 {
        let mut n_changed = 0;
        for ((li, &xi), &w) in l_out.iter_mut().zip(x).zip(qw) {
            let lcur = *li as f32;
            let mut slx = sumlx - w * xi * lcur;
            let mut sl2 = suml2 - w * lcur * lcur;
            if slx > 0.0 && sl2 > 0.0 {
                let mut new_l = nearest_int(xi * sl2 / slx);
                new_l = c_min(nmax, new_l);
                if new_l != *li as i32 {
                    let nl = new_l as f32;
                    slx += w * xi * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as u8;
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
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}
