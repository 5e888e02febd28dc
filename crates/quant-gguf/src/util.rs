//! Shared arithmetic of the ggml quantizers (ggml `src/ggml-quants.c` and `ggml-impl.h`,
//! commit d99724f2), ported operation by operation: every `f32` expression is evaluated
//! in the same order as the C code (`a*b*c` is `(a*b)*c`), no fused multiply-add, and the
//! C integer conversions are reproduced where they can wrap.

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

/// Candidate scales evaluated side by side by the batched searches: each lane runs the
/// exact scalar sequence of one candidate (so results are bit-identical), the lanes are
/// independent, which lets the compiler interleave or vectorise them.
const LANES: usize = 8;

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
    let iscale = (-nmax) as f32 / max;
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for ((li, &xi), &wi) in l_out.iter_mut().zip(x).zip(w) {
        let mut l = nearest_int(iscale * xi);
        l = c_max(-nmax, c_min(nmax - 1, l));
        *li = (l + nmax) as i8;
        let lf = l as f32;
        sumlx += wi * xi * lf;
        suml2 += wi * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    const NC: usize = 18;
    let mut isc = [0f32; NC];
    for (k, is) in (-9i32..=9).filter(|&is| is != 0).enumerate() {
        isc[k] = -(nmax as f32 + 0.1f32 * is as f32) / max;
    }
    let mut slx = [0f32; NC];
    let mut sl2 = [0f32; NC];
    for (&xi, &wi) in x.iter().zip(w) {
        let wx = wi * xi;
        for k in 0..NC {
            let l = c_max(-nmax, c_min(nmax - 1, nearest_int(isc[k] * xi)));
            let lf = l as f32;
            slx[k] += wx * lf;
            sl2[k] += wi * lf * lf;
        }
    }
    for k in 0..NC {
        if sl2[k] > 0.0 && slx[k] * slx[k] > best * sl2[k] {
            for (li, &xi) in l_out.iter_mut().zip(x) {
                let l = nearest_int(isc[k] * xi);
                *li = (nmax + c_max(-nmax, c_min(nmax - 1, l))) as i8;
            }
            scale = slx[k] / sl2[k];
            best = scale * slx[k];
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
    let mut scale = 1.0 / iscale;
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
    let nst = (p.nstep + 1) as usize;
    let mut is0 = 0usize;
    while is0 < nst {
        let mut isc = [0f32; LANES];
        for (k, v) in isc.iter_mut().enumerate() {
            let is = (is0 + k) as i32;
            *v = (p.rmin + p.rdelta * is as f32 + nmax as f32) / (max - min);
        }
        let code = |k: usize, xm: f32| c_max(0, c_min(nmax, nearest_int(isc[k] * xm)));
        let mut sl = [0f32; LANES];
        let mut sl2 = [0f32; LANES];
        let mut sxl = [0f32; LANES];
        for (&xi, &wi) in x.iter().zip(w) {
            let xm = xi - min;
            for k in 0..LANES {
                let lf = code(k, xm) as f32;
                sl[k] += wi * lf;
                sl2[k] += wi * lf * lf;
                sxl[k] += wi * lf * xi;
            }
        }
        let mut ts = [0f32; LANES];
        let mut tm = [0f32; LANES];
        let mut ok = [false; LANES];
        for k in 0..LANES {
            let d = sum_w * sl2[k] - sl[k] * sl[k];
            if d > 0.0 {
                ok[k] = true;
                ts[k] = (sum_w * sxl[k] - sum_x * sl[k]) / d;
                tm[k] = (sl2[k] * sum_x - sl[k] * sxl[k]) / d;
                if tm[k] > 0.0 {
                    tm[k] = 0.0;
                    ts[k] = sxl[k] / sl2[k];
                }
            }
        }
        let mut err = [0f32; LANES];
        for (&xi, &wi) in x.iter().zip(w) {
            let xm = xi - min;
            for k in 0..LANES {
                // The same code as in the sums (same inputs), recomputed instead of stored.
                let mut diff = ts[k] * code(k, xm) as f32 + tm[k] - xi;
                diff = if p.use_mad { diff.abs() } else { diff * diff };
                err[k] += wi * diff;
            }
        }
        let valid = LANES.min(nst - is0);
        let mut next = is0 + valid;
        for k in 0..valid {
            if ok[k] && err[k] < best_error {
                for (li, &xi) in l_out.iter_mut().zip(x) {
                    *li = code(k, xi - min) as u8;
                }
                best_error = err[k];
                scale = ts[k];
                min = tm[k];
                // Later candidates depend on the new `min`: restart after this one.
                next = is0 + k + 1;
                break;
            }
        }
        is0 = next;
    }
    (scale, -min)
}

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
