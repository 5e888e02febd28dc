//! `make_qkx2_quants` / `make_qkx3_quants`: the scale-and-min search of Q2_K, Q4_K, Q5_K and
//! the weighted Q4_1/Q5_1, candidates evaluated speculatively side by side, with its straight port.

use crate::types::c_math::{c_max, c_min, nearest_int};
#[cfg(target_arch = "x86_64")]
use crate::types::lanes::Avx2;
use crate::types::lanes::{self, Lanes, Portable};
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
/// `(scale, -min)`. [`make_qkx_quants`] is the same computation with candidate scales
/// evaluated speculatively side by side; this version is its oracle in the tests.
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

/// `make_qkx2_quants` / `make_qkx3_quants` (see [`make_qkx_quants_scalar`]). A winning
/// candidate moves `min`, which every later candidate uses, so candidates are evaluated
/// speculatively 8 at a time from the current `min` and the batch restarts right
/// after a winner: the accepted sequence is exactly ggml's.
#[inline(always)]
pub fn make_qkx_quants(
    p: QkxSearch,
    x: &[f32],
    weights: Option<&[f32]>,
    l_out: &mut [u8],
    laux: &mut [u8],
    qkx3: bool,
) -> (f32, f32) {
    let n = x.len().min(l_out.len()).min(laux.len());
    if n == 0 || n > 32 || weights.is_some_and(|w| w.len() < n) {
        return make_qkx_quants_scalar(p, x, weights, l_out, laux, qkx3);
    }
    let x = &x[..n];
    let l_out = &mut l_out[..n];
    let nmax = p.nmax;
    let mut wbuf = [0f32; 32];
    for (i, (wi, &xi)) in wbuf.iter_mut().zip(x).enumerate() {
        *wi = match weights {
            Some(w) => w[i],
            None => xi * xi,
        };
    }
    let w = &wbuf[..n];
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for (&xi, &wi) in x.iter().zip(w).skip(1) {
        if xi < min {
            min = xi;
        }
        if xi > max {
            max = xi;
        }
        sum_w += wi;
        sum_x += wi * xi;
    }
    if min > 0.0 {
        min = 0.0;
    }
    let degenerate = if qkx3 { max <= min } else { max == min };
    if degenerate {
        l_out.fill(0);
        return (0.0, -min);
    }
    let iscale = nmax as f32 / (max - min);
    let scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for ((li, &xi), &wi) in l_out.iter_mut().zip(x).zip(w) {
        let l = nearest_int(iscale * (xi - min));
        *li = c_max(0, c_min(nmax, l)) as u8;
        let mut diff = scale * (*li as f32) + min - xi;
        diff = if p.use_mad { diff.abs() } else { diff * diff };
        best_error += wi * diff;
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    let mut st = QkxState {
        min,
        scale,
        best_error,
    };
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = Avx2::get() {
        // SAFETY: the token exists only on CPUs with AVX2.
        unsafe { qkx_candidates_avx2(t, p, x, w, max, sum_w, sum_x, &mut st, l_out) };
        return (st.scale, -st.min);
    }
    qkx_candidates(Portable, p, x, w, max, sum_w, sum_x, &mut st, l_out);
    (st.scale, -st.min)
}

/// The running best of a `make_qkx*_quants` search.
struct QkxState {
    min: f32,
    scale: f32,
    best_error: f32,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn qkx_candidates_avx2(
    t: Avx2,
    p: QkxSearch,
    x: &[f32],
    w: &[f32],
    max: f32,
    sum_w: f32,
    sum_x: f32,
    st: &mut QkxState,
    l_out: &mut [u8],
) {
    qkx_candidates(t, p, x, w, max, sum_w, sum_x, st, l_out)
}

/// The candidate loop of `make_qkx*_quants` (`x`, `w`, `l_out` of the same length ≤ 32),
/// [`lanes::N`] candidates at a time from the current `min`: lane `k` is candidate
/// `is0 + k` with ggml's exact operations; the first winner of a batch is taken and the
/// next batch starts right after it (later candidates use the new `min`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn qkx_candidates<S: Lanes>(
    s: S,
    p: QkxSearch,
    x: &[f32],
    w: &[f32],
    max: f32,
    sum_w: f32,
    sum_x: f32,
    st: &mut QkxState,
    l_out: &mut [u8],
) {
    const V: usize = QKX_VECTORS;
    const L: usize = V * lanes::N;
    let nmax = p.nmax;
    let nst = (p.nstep + 1) as usize;
    let (lo, hi) = (s.splat_i(0), s.splat_i(nmax));
    let (sw, sx, zero) = (s.splat(sum_w), s.splat(sum_x), s.splat(0.0));
    // The codes of the current batch, element-major, kept for the error pass.
    let mut codes = [[zero; V]; 32];
    let mut is0 = 0usize;
    while is0 < nst {
        // `min` moves with every winner, and so does the span.
        let span = s.splat(max - st.min);
        let mut isc = [zero; V];
        for (v, iv) in isc.iter_mut().enumerate() {
            let mut num = [0f32; lanes::N];
            for (k, n) in num.iter_mut().enumerate() {
                let is = (is0 + lanes::N * v + k) as i32;
                *n = p.rmin + p.rdelta * is as f32 + nmax as f32;
            }
            *iv = s.div(s.load(&num), span);
        }
        let mut sl = [zero; V];
        let mut sl2 = [zero; V];
        let mut sxl = [zero; V];
        for ((&xi, &wi), code) in x.iter().zip(w).zip(codes.iter_mut()) {
            let (xm, wv, xv) = (s.splat(xi - st.min), s.splat(wi), s.splat(xi));
            for v in 0..V {
                let l = s.nearest_int(s.mul(isc[v], xm));
                let lf = s.to_f(s.clamp_i(l, lo, hi));
                code[v] = lf;
                let wl = s.mul(wv, lf);
                sl[v] = s.add(sl[v], wl);
                sl2[v] = s.add(sl2[v], s.mul(wl, lf));
                sxl[v] = s.add(sxl[v], s.mul(wl, xv));
            }
        }
        // ggml's per-candidate `this_scale`/`this_min`, lane-wise (both branches computed,
        // the taken one selected).
        let mut tsv = [zero; V];
        let mut tmv = [zero; V];
        let mut ok = [0f32; L];
        let mut ts = [0f32; L];
        let mut tm = [0f32; L];
        for v in 0..V {
            let (sl, sl2, sxl) = (sl[v], sl2[v], sxl[v]);
            let d = s.sub(s.mul(sw, sl2), s.mul(sl, sl));
            let t_s = s.div(s.sub(s.mul(sw, sxl), s.mul(sx, sl)), d);
            let t_m = s.div(s.sub(s.mul(sl2, sx), s.mul(sl, sxl)), d);
            let clipped = s.gt(t_m, zero);
            tsv[v] = s.select(clipped, s.div(sxl, sl2), t_s);
            tmv[v] = s.select(clipped, zero, t_m);
            let r = lanes::N * v..lanes::N * (v + 1);
            ok[r.clone()].copy_from_slice(&s.store(s.select(s.gt(d, zero), s.splat(1.0), zero)));
            ts[r.clone()].copy_from_slice(&s.store(tsv[v]));
            tm[r].copy_from_slice(&s.store(tmv[v]));
        }
        let mut errv = [zero; V];
        for ((&xi, &wi), code) in x.iter().zip(w).zip(codes.iter()) {
            let (xv, wv) = (s.splat(xi), s.splat(wi));
            for v in 0..V {
                let diff = s.sub(s.add(s.mul(tsv[v], code[v]), tmv[v]), xv);
                let diff = if p.use_mad {
                    s.abs(diff)
                } else {
                    s.mul(diff, diff)
                };
                errv[v] = s.add(errv[v], s.mul(wv, diff));
            }
        }
        let mut err = [0f32; L];
        for v in 0..V {
            err[lanes::N * v..lanes::N * (v + 1)].copy_from_slice(&s.store(errv[v]));
        }
        let valid = L.min(nst - is0);
        let mut next = is0 + valid;
        for k in 0..valid {
            if ok[k] != 0.0 && err[k] < st.best_error {
                let (v, kk) = (k / lanes::N, k % lanes::N);
                for (li, code) in l_out.iter_mut().zip(codes.iter()) {
                    *li = s.store(code[v])[kk] as u8;
                }
                st.best_error = err[k];
                st.scale = ts[k];
                st.min = tm[k];
                // Later candidates depend on the new `min`: restart after this one.
                next = is0 + k + 1;
                break;
            }
        }
        is0 = next;
    }
}

/// Vectors of candidates per batch of [`qkx_candidates`]: one (8 candidates) measured
/// faster than two, as a winner discards the rest of its batch.
const QKX_VECTORS: usize = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::search::test_values as values;

    #[test]
    fn batched_qkx_equals_the_straight_port() {
        for simd in [true, false] {
            let _simd = quant_core::simd::force_simd(simd);
            batched_qkx_equals_the_straight_port_once();
        }
    }

    fn batched_qkx_equals_the_straight_port_once() {
        for seed in 0..400u64 {
            for n in [16usize, 32] {
                let x = values(seed, n);
                let w: Vec<f32> = values(seed + 1000, n)
                    .iter()
                    .map(|v| v.abs() + 0.01)
                    .collect();
                for qw in [None, Some(w.as_slice())] {
                    for (nmax, rmin, rdelta, nstep, mad) in [
                        (3, -0.5, 0.1, 15, true),
                        (15, -1.0, 0.1, 20, false),
                        (31, -0.5, 0.1, 15, false),
                        (15, -0.9, 0.05, 36, false),
                        (3, -0.9, 0.05, 36, false),
                    ] {
                        let p = QkxSearch {
                            nmax,
                            rmin,
                            rdelta,
                            nstep,
                            use_mad: mad,
                        };
                        for qkx3 in [false, true] {
                            let wts = if qkx3 { qw } else { Some(w.as_slice()) };
                            let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                            let (mut la, mut lb) = (vec![0u8; n], vec![0u8; n]);
                            let ra = make_qkx_quants(p, &x, wts, &mut a, &mut la, qkx3);
                            let rb = make_qkx_quants_scalar(p, &x, wts, &mut b, &mut lb, qkx3);
                            assert_eq!(
                                (ra.0.to_bits(), ra.1.to_bits(), &a),
                                (rb.0.to_bits(), rb.1.to_bits(), &b),
                                "qkx {seed} {n} {nmax}"
                            );
                        }
                    }
                }
            }
        }
    }
}
