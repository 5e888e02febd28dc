//! Shared arithmetic of the ggml quantizers (ggml `src/ggml-quants.c` and `ggml-impl.h`,
//! commit d99724f2), ported operation by operation: every `f32` expression is evaluated
//! in the same order as the C code (`a*b*c` is `(a*b)*c`), no fused multiply-add, and the
//! C integer conversions are reproduced where they can wrap.

#[cfg(target_arch = "x86_64")]
use crate::lanes::Avx2;
use crate::lanes::{self, Lanes, Portable};

/// ggml's `GROUP_MAX_EPS`: below this a group counts as all zero.
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `QK_K`: the super-block size of the K-quants.
pub const QK_K: usize = 256;

/// ggml's `nearest_int`: round to nearest, ties to even, through the float magic number
/// `12582912.0` (1.5 × 2^23). Exact for |x| ≤ 4194303; outside that range (or for NaN)
/// it returns the same bit-pattern garbage as the C code.
#[inline(always)]
pub fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0_f32;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

/// C's `MAX(a, b)` macro: `a > b ? a : b` (so `b` wins on NaN or equality).
#[inline(always)]
pub fn c_max<T: PartialOrd>(a: T, b: T) -> T {
    if a > b {
        a
    } else {
        b
    }
}

/// C's `MIN(a, b)` macro: `a < b ? a : b` (so `b` wins on NaN or equality).
#[inline(always)]
pub fn c_min<T: PartialOrd>(a: T, b: T) -> T {
    if a < b {
        a
    } else {
        b
    }
}

/// The value of largest magnitude in `x`, the first one on ties (ggml's `amax`/`max`
/// scan of `quantize_row_q4_0_ref` and `quantize_row_q5_0_ref`); 0 when every value is
/// ±0 or NaN.
#[inline(always)]
pub fn max_by_magnitude(x: &[f32]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// C's `(int)x` for a float on x86-64 (`cvttss2si`): truncation toward zero, and
/// `INT_MIN` for NaN or values out of range (where Rust's `as` would saturate). A C cast
/// to `int8_t`/`uint8_t` is this value's low byte.
#[inline(always)]
pub fn c_f32_to_i32(x: f32) -> i32 {
    if x.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        i32::MIN
    } else {
        x as i32
    }
}

/// ggml's `GGML_FP32_TO_FP16` (`ggml_compute_fp32_to_fp16`, from Maratyszcza/FP16):
/// round to nearest even, overflow to infinity, every NaN to `0x7E00` (sign kept).
#[inline(always)]
pub fn fp32_to_fp16(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let mut bias = shl1_w & 0xFF00_0000;
    if bias < 0x7100_0000 {
        bias = 0x7100_0000;
    }
    // ggml writes `fp32_from_bits(...) + base`; IEEE addition commutes exactly.
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    ((sign >> 16)
        | if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign
        }) as u16
}

/// ggml's `GGML_FP16_TO_FP32` (`ggml_compute_fp16_to_fp32`): exact.
#[inline(always)]
pub fn fp16_to_fp32(h: u16) -> f32 {
    let w = (h as u32) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);
    let exp_offset = 0xE0u32 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 2^-112
    let normalized = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;
    let magic_mask = 126u32 << 23;
    let denormalized = f32::from_bits((two_w >> 17) | magic_mask) - 0.5;
    let cutoff = 1u32 << 27;
    let result = sign
        | if two_w < cutoff {
            denormalized.to_bits()
        } else {
            normalized.to_bits()
        };
    f32::from_bits(result)
}

/// ggml's `GGML_FP32_TO_BF16`: round to nearest even; NaN → `(bits >> 16) | 64` (quiet,
/// payload and sign kept).
#[inline(always)]
pub fn fp32_to_bf16(s: f32) -> u16 {
    let u = s.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// ggml's `GGML_BF16_TO_FP32`: exact.
#[inline(always)]
pub fn bf16_to_fp32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Reads a little-endian u16 from two bytes.
#[inline(always)]
pub fn le16(b: [u8; 2]) -> u16 {
    u16::from_le_bytes(b)
}

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

/// `make_q3_quants`: like [`make_qx_quants`] with x² weights and a coordinate-descent
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

/// `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` from the 12 packed bytes
/// of a Q4_K/Q5_K block.
#[inline(always)]
pub fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs the 6-bit scales and mins of the 8 sub-blocks of a Q4_K/Q5_K block the way
/// ggml does (`ls`/`lm` already limited to 63).
#[inline(always)]
pub fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        let (l_s, l_m) = (ls[j], lm[j]);
        if j < 4 {
            s[j] = l_s;
            s[j + 4] = l_m;
        } else {
            s[j + 4] = (l_s & 0xF) | ((l_m & 0xF) << 4);
            s[j - 4] |= (l_s >> 4) << 6;
            s[j] |= (l_m >> 4) << 6;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_ties_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.4), -2);
        assert_eq!(nearest_int(4194303.0), 4194303);
    }

    #[test]
    fn fp16_conversions_match_exact_rounding() {
        for bits in 0..=u16::MAX {
            let f = fp16_to_fp32(bits);
            if f.is_nan() {
                assert_eq!(fp32_to_fp16(f) & 0x7fff, 0x7e00);
            } else {
                assert_eq!(fp32_to_fp16(f), bits, "{bits:#06x}");
            }
        }
        assert_eq!(fp32_to_fp16(65520.0), 0x7c00);
        assert_eq!(fp32_to_fp16(65519.99), 0x7bff);
        assert_eq!(fp32_to_fp16(-1e-10), 0x8000);
    }

    /// Deterministic test values with ties, zeros, outliers and both signs.
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((s >> 40) as f32) / (1u64 << 24) as f32 - 0.5;
                match i % 7 {
                    0 => 0.0,
                    3 => u * 40.0,
                    5 => (u * 8.0).round() * 0.25,
                    _ => u,
                }
            })
            .collect()
    }

    #[test]
    fn batched_searches_equal_the_straight_ports() {
        for simd in [true, false] {
            let _simd = quant_core::simd::force_simd(simd);
            batched_searches_equal_the_straight_ports_once();
        }
    }

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

    fn batched_searches_equal_the_straight_ports_once() {
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

    #[test]
    fn bf16_nan_is_quieted() {
        assert_eq!(fp32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(fp32_to_bf16(1.0), 0x3f80);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
    }
}
