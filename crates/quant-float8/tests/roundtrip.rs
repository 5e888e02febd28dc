//! Quantize → dequantize on random weights stays within each scheme's error bound, held
//! in named constants (in units of the quantization step of the element's block, plus
//! the final rounding to the weight dtype).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use quant_core::dtype::round_to;
use quant_core::{DType, Params, QuantMethod, TensorMeta};
use quant_float8::{Fp8, Granularity, Scheme, TorchAo, METHODS};

/// Integer schemes: half a step from rounding, plus torchao's arithmetic in the weight
/// dtype: in bf16 `w · (1/scale)` ≥ 64 is rounded to a multiple of 0.5 before `round`
/// (up to 0.25 step more, then a tie can go the wrong way), and the bf16 scale's 2^-9
/// relative error is multiplied by codes up to 127 (0.25 step).
const INT_MAX_ERR_STEPS_BF16: f32 = 1.5;
/// The same in f32, where only the half step remains (plus ulps).
const INT_MAX_ERR_STEPS_F32: f32 = 0.5 + 1e-4;
/// float8: half an ulp of the format relative to |w| (2^-4 for e4m3, 2^-3 for e5m2), or
/// half a subnormal step of the scaled value.
const FP8_E4M3_REL: f32 = 1.0 / 16.0;
const FP8_E5M2_REL: f32 = 1.0 / 8.0;
/// Rounding of the dequantized value to bf16: half an ulp, 2^-9 relative (doubled for
/// slack on values near a binade edge).
const BF16_REL: f32 = 1.0 / 256.0;

fn weights(n: usize, k: usize, dtype: DType, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n * k)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            // Rows of different magnitudes, one with an outlier.
            let row = i / k;
            let mag = 0.01 * (1 + row % 5) as f32;
            let v = if i == 5 * k + 3 { 1.5 } else { u * mag };
            round_to(dtype, v)
        })
        .collect()
}

#[test]
fn dequantized_weights_stay_within_the_error_bound() {
    let (n, k) = (32, 256);
    for (name, scheme) in METHODS {
        for dtype in [DType::BF16, DType::F32] {
            if scheme == Scheme::Float8Dq(Granularity::PerRow) && dtype != DType::BF16 {
                continue;
            }
            let w = weights(n, k, dtype, 0x1234_5678_9abc_def1);
            let m = TorchAo::new(name, &Params::new()).unwrap();
            let meta = TensorMeta::new("l.weight", dtype, vec![n, k]);
            let q = m.quantize(&meta, &w).unwrap();
            let d = m.dequantize(&q).unwrap();
            let out_rel = if dtype == DType::BF16 { BF16_REL } else { 0.0 };
            let block = match scheme {
                Scheme::Float8Dq(Granularity::PerTensor) => n * k,
                Scheme::Int4Wo | Scheme::Int4Dq | Scheme::UintWo(_) => m.group_size().unwrap(),
                _ => k,
            };
            for (bi, (wb, db)) in w.chunks(block).zip(d.chunks(block)).enumerate() {
                let lo = wb.iter().fold(0f32, |a, &b| a.min(b));
                let hi = wb.iter().fold(0f32, |a, &b| a.max(b));
                let amax = (-lo).max(hi);
                for (&x, &y) in wb.iter().zip(db) {
                    let step = match scheme {
                        Scheme::Int8Wo | Scheme::Int8Dq => amax / 127.5,
                        Scheme::Int4Dq => (amax / 7.5).max(if dtype == DType::BF16 {
                            2f32.powi(-7)
                        } else {
                            f32::EPSILON
                        }),
                        Scheme::UintWo(b) => (hi - lo) / ((1u32 << b) - 1) as f32,
                        Scheme::Int4Wo => {
                            let mn = wb.iter().fold(f32::INFINITY, |a, &b| a.min(b));
                            let mx = wb.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                            (mx - mn) / 15.0
                        }
                        Scheme::Float8Wo(_) | Scheme::Float8Dq(_) => 0.0,
                    };
                    let bound = match scheme.fp8() {
                        Some(f) => {
                            let (rel, sub) = match f {
                                Fp8::E4M3Fn => (FP8_E4M3_REL, 2f32.powi(-10)),
                                Fp8::E5M2 => (FP8_E5M2_REL, 2f32.powi(-17)),
                            };
                            x.abs() * rel + amax / f.max() * sub
                        }
                        None => {
                            step * if dtype == DType::BF16 {
                                INT_MAX_ERR_STEPS_BF16
                            } else {
                                INT_MAX_ERR_STEPS_F32
                            }
                        }
                    } + (x.abs() + step) * out_rel
                        + f32::EPSILON * x.abs();
                    assert!(
                        (x - y).abs() <= bound,
                        "{name} {dtype} block {bi}: {x} -> {y} (bound {bound})"
                    );
                }
            }
        }
    }
}

/// The AVX2 and baseline builds of the kernels give the same bytes and bits, for every
/// method and weight dtype (f16 included, which the reference vectors do not cover).
#[test]
fn simd_and_baseline_builds_agree() {
    let (n, k) = (48, 512);
    for (name, scheme) in METHODS {
        for dtype in [DType::BF16, DType::F16, DType::F32] {
            if scheme == Scheme::Float8Dq(Granularity::PerRow) && dtype != DType::BF16 {
                continue;
            }
            let w = weights(n, k, dtype, 0xDEAD_BEEF_1234_5678);
            let m = TorchAo::new(name, &Params::new()).unwrap();
            let meta = TensorMeta::new("l.weight", dtype, vec![n, k]);
            let mut runs = Vec::new();
            for simd in [true, false] {
                let _simd = quant_core::simd::force_simd(simd);
                let q = m.quantize(&meta, &w).unwrap();
                let d: Vec<u32> = m
                    .dequantize(&q)
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect();
                runs.push((q.parts, d));
            }
            assert!(runs[0] == runs[1], "{name} {dtype}: the two builds differ");
        }
    }
}
