//! Tests of [`super`]: every lane path against the straight ports, and `round_away`
//! against C's `roundf`.

use super::*;
use crate::types::search::{make_qkx_quants_scalar, make_qx_quants_scalar};

fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            match (seed + i as u64) % 29 {
                0 => 0.0,
                1 => u * 40.0,
                _ => u * 0.1,
            }
        })
        .collect()
}

/// Every lane path against the straight ports, on random groups, all-equal groups,
/// zeros and special values, for every search configuration the kernels use.
fn check<S: LanesMore>(s: S) {
    let searches = [
        (
            QkxSearch {
                nmax: 15,
                rmin: -1.0,
                rdelta: 0.1,
                nstep: 20,
                use_mad: false,
            },
            32,
        ),
        (
            QkxSearch {
                nmax: 31,
                rmin: -0.5,
                rdelta: 0.1,
                nstep: 15,
                use_mad: false,
            },
            32,
        ),
        (
            QkxSearch {
                nmax: 3,
                rmin: -0.5,
                rdelta: 0.1,
                nstep: 15,
                use_mad: true,
            },
            16,
        ),
        (
            QkxSearch {
                nmax: 15,
                rmin: -0.9,
                rdelta: 0.05,
                nstep: 36,
                use_mad: false,
            },
            32,
        ),
        (
            QkxSearch {
                nmax: 3,
                rmin: -0.9,
                rdelta: 0.05,
                nstep: 36,
                use_mad: false,
            },
            16,
        ),
    ];
    for seed in 0..60u64 {
        let mut x = values(seed, N * 32);
        match seed % 6 {
            0 => x[..32].fill(0.25),
            1 => x[32..64].fill(0.0),
            2 => x[5] = f32::NAN,
            3 => x[70] = f32::INFINITY,
            4 => x[3] = -0.0,
            _ => {}
        }
        let w: Vec<f32> = values(seed + 1000, N * 32)
            .iter()
            .map(|v| v.abs())
            .collect();
        for &(p, n) in &searches {
            for qkx3 in [false, true] {
                let mut gr = Groups::gather(&x[..N * n], n);
                gr.gather_weights(&w[..N * n]);
                let f = qkx_lanes(s, p, qkx3, &gr);
                for g in 0..N {
                    let xs = &x[g * n..g * n + n];
                    let (mut l, mut laux) = ([0u8; 32], [0u8; 32]);
                    let (sc, m) = make_qkx_quants_scalar(
                        p,
                        xs,
                        Some(&w[g * n..g * n + n]),
                        &mut l[..n],
                        &mut laux[..n],
                        qkx3,
                    );
                    let mut got = [0u8; 32];
                    f.codes(g, &mut got[..n]);
                    assert_eq!(
                        sc.to_bits(),
                        f.scale[g].to_bits(),
                        "seed {seed} {p:?} g {g}"
                    );
                    assert_eq!(
                        m.to_bits(),
                        f.neg_min[g].to_bits(),
                        "seed {seed} {p:?} g {g}"
                    );
                    assert_eq!(l[..n], got[..n], "seed {seed} {p:?} g {g}");
                }
            }
        }
        for (nmax, n) in [(32, 16), (8, 32), (16, 32), (4, 32)] {
            let mut gr = Groups::gather(&x[..N * n], n);
            for i in 0..n {
                for g in 0..N {
                    gr.w[i][g] = gr.x[i][g] * gr.x[i][g];
                }
            }
            let f = qx_lanes(s, nmax, &gr);
            for g in 0..N {
                let xs = &x[g * n..g * n + n];
                let mut l = [0i8; 32];
                let sc = make_qx_quants_scalar(nmax, xs, &mut l[..n], 1, None);
                let mut got = [0u8; 32];
                f.codes(g, &mut got[..n]);
                assert_eq!(
                    sc.to_bits(),
                    f.scale[g].to_bits(),
                    "seed {seed} qx {nmax} g {g}"
                );
                let want: Vec<u8> = l[..n].iter().map(|&v| v as u8).collect();
                assert_eq!(want[..], got[..n], "seed {seed} qx {nmax} g {g}");
            }
        }
    }
}

#[test]
fn portable_lanes_equal_the_straight_ports() {
    check(Portable);
}

/// `round_away` on AVX2 against C's `(int)roundf(v)` (the portable lanes): the halves
/// and their neighbours up to 2^25, the binade edges where the spacing reaches one
/// half and one, the ends of the `int` range, the specials, and every 4099th bit
/// pattern (`round_away_every_float` checks them all).
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_round_away_is_roundf() {
    let mut xs = Vec::new();
    for k in -4096i32..=4096 {
        let half = k as f32 * 0.5;
        xs.extend([
            half,
            f32::from_bits(half.to_bits() + 1),
            f32::from_bits(half.to_bits().wrapping_sub(1)),
        ]);
    }
    for e in [21, 22, 23, 24, 25, 30, 31] {
        let p = (1u64 << e) as f32;
        for d in -8i32..=8 {
            for b in [p, -p] {
                xs.push(f32::from_bits((b.to_bits() as i32 + d) as u32));
            }
        }
    }
    xs.extend([
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE,
        1e-45,
        -1e-45,
        f32::MAX,
        f32::MIN,
    ]);
    xs.extend((0..=u32::MAX).step_by(4099).map(f32::from_bits));
    check_round_away(&xs);
}

/// Every float (about 2^32 values: run with `--ignored` in release).
#[cfg(target_arch = "x86_64")]
#[test]
#[ignore = "every f32: minutes in a debug build"]
fn round_away_every_float() {
    let all: Vec<u32> = (0..=u32::MAX).collect();
    for c in all.chunks(1 << 24) {
        let xs: Vec<f32> = c.iter().map(|&b| f32::from_bits(b)).collect();
        check_round_away(&xs);
    }
}

#[cfg(target_arch = "x86_64")]
fn check_round_away(xs: &[f32]) {
    let Some(t) = Avx2::get() else { return };
    for c in xs.chunks_exact(N) {
        let mut a = [0f32; N];
        a.copy_from_slice(c);
        // SAFETY: the token exists only on CPUs with AVX2.
        let got = unsafe { avx2_round_away(t, a) };
        let want = Portable.round_away(a);
        assert_eq!(got, want, "{a:?}");
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_round_away(t: Avx2, a: [f32; N]) -> [i32; N] {
    t.store_i(t.round_away(t.load(&a)))
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_lanes_equal_the_straight_ports() {
    #[target_feature(enable = "avx2")]
    unsafe fn run(t: Avx2) {
        check(t)
    }
    let _on = crate::types::simd::force_simd(true);
    if let Some(t) = Avx2::get() {
        // SAFETY: the token exists only on CPUs with AVX2.
        unsafe { run(t) }
    }
}
