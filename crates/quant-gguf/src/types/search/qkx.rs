//! `make_qkx2_quants` / `make_qkx3_quants`: the scale-and-min search of Q2_K, Q4_K, Q5_K and
//! the weighted Q4_1/Q5_1, as a straight port: the oracle of the lane kernels
//! (`types::kquant_lanes`), which run it one sub-block per lane.

use crate::types::c_math::{c_max, c_min, nearest_int};

/// Parameters of the scale/min search shared by `make_qkx2_quants` and
/// `make_qkx3_quants`.
#[derive(Clone, Copy, Debug)]
pub struct QkxSearch {
    /// Largest quant value.
    pub nmax: i32,
    /// First offset tried.
    pub rmin: f32,
    /// Step between offsets.
    pub rdelta: f32,
    /// Number of steps.
    pub nstep: i32,
    /// Absolute instead of squared error.
    pub use_mad: bool,
}

/// `make_qkx2_quants` (`weights` required, `max == min` test) and `make_qkx3_quants`
/// (`weights` optional: x², `max <= min` test), selected by `qkx3`, the straight port:
/// asymmetric quantization `x ≈ scale·L + min` with `L ∈ [0, nmax]`. Returns
/// `(scale, -min)`.
pub fn make_qkx_quants_scalar(
    p: QkxSearch,
    x: &[f32],
    weights: Option<&[f32]>,
    l_out: &mut [u8],
    laux: &mut [u8],
    qkx3: bool,
) -> (f32, f32) {
    let n = x.len().min(l_out.len()).min(laux.len());
    if n == 0 {
        return (0.0, 0.0);
    }
    let x = &x[..n];
    let l_out = &mut l_out[..n];
    let laux = &mut laux[..n];
    let nmax = p.nmax;
    let wt = |i: usize, xi: f32| -> f32 {
        match weights {
            Some(w) => w.get(i).copied().unwrap_or(0.0),
            None => xi * xi,
        }
    };
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = wt(0, x[0]);
    let mut sum_x = sum_w * x[0];
    for (i, &xi) in x.iter().enumerate().skip(1) {
        if xi < min {
            min = xi;
        }
        if xi > max {
            max = xi;
        }
        let w = wt(i, xi);
        sum_w += w;
        sum_x += w * xi;
    }
    if min > 0.0 {
        min = 0.0;
    }
    let degenerate = if qkx3 { max <= min } else { max == min };
    if degenerate {
        l_out.fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for (i, (li, &xi)) in l_out.iter_mut().zip(x).enumerate() {
        let l = nearest_int(iscale * (xi - min));
        *li = c_max(0, c_min(nmax, l)) as u8;
        let mut diff = scale * (*li as f32) + min - xi;
        diff = if p.use_mad { diff.abs() } else { diff * diff };
        best_error += wt(i, xi) * diff;
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax as f32) / (max - min);
        let mut sum_l = 0f32;
        let mut sum_l2 = 0f32;
        let mut sum_xl = 0f32;
        for (i, (la, &xi)) in laux.iter_mut().zip(x).enumerate() {
            let mut l = nearest_int(iscale * (xi - min));
            l = c_max(0, c_min(nmax, l));
            *la = l as u8;
            let w = wt(i, xi);
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * xi;
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for (i, (&la, &xi)) in laux.iter().zip(x).enumerate() {
                let mut diff = this_scale * la as f32 + this_min - xi;
                diff = if p.use_mad { diff.abs() } else { diff * diff };
                cur_error += wt(i, xi) * diff;
            }
            if cur_error < best_error {
                l_out.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}
