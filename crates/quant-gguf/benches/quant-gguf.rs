//! Quantize and dequantize a 4096×4096 f32 matrix with every GGUF method, on one thread
//! and on all threads. Groups are `{method}/{op}`; throughput is f32 input (quantize) or
//! f32 output (dequantize) bytes. The types ggml needs an importance matrix for (IQ2_XXS,
//! IQ2_XS, IQ1_S) get one made as ggml's benchmarks make it: per column, the square of a
//! standard normal + 1e-3.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::Arc;

use quant_core::{DType, Params, QuantMethod, Registry, TensorMeta};
use quant_gguf::{GgufMethod, Imatrix, METHODS};

const ROWS: usize = 4096;
const COLS: usize = 4096;

/// Deterministic gaussian-ish values (splitmix64, sum of 4 uniforms, variance 1/3).
fn matrix() -> Vec<f32> {
    gaussianish(0x9E37_79B9_7F4A_7C15, ROWS * COLS)
}

/// Per-column importance: z² + 1e-3 for unit-variance z.
fn importance() -> Vec<f32> {
    gaussianish(0x2545_F491_4F6C_DD1D, COLS)
        .into_iter()
        .map(|z| 3.0 * z * z + 1e-3)
        .collect()
}

fn gaussianish(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| next() + next() + next() + next() - 2.0)
        .collect()
}

fn bench(c: &mut Criterion) {
    let values = matrix();
    let meta = TensorMeta::new("bench.weight", DType::F32, vec![ROWS, COLS]);
    let bytes = (ROWS * COLS * 4) as u64;
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let all = rayon::ThreadPoolBuilder::new().build().unwrap();
    let pools = [("1 thread", &one), ("all threads", &all)];
    let imatrix = Arc::new(
        Imatrix::from_entries("bench", [("bench.weight".to_string(), importance())]).unwrap(),
    );
    for (name, ty) in METHODS {
        let m: Box<dyn QuantMethod> = if ty.requires_imatrix() {
            Box::new(GgufMethod::new(ty).unwrap().with_imatrix(imatrix.clone()))
        } else {
            Registry::global()
                .unwrap()
                .create(name, &Params::new())
                .unwrap()
        };
        let q = m.quantize(&meta, &values).unwrap();

        let mut g = c.benchmark_group(format!("{name}/quantize"));
        g.throughput(Throughput::Bytes(bytes)).sample_size(10);
        for (label, pool) in pools {
            g.bench_function(BenchmarkId::from_parameter(label), |b| {
                b.iter(|| pool.install(|| m.quantize(black_box(&meta), black_box(&values))))
            });
        }
        g.finish();

        let mut g = c.benchmark_group(format!("{name}/dequantize"));
        g.throughput(Throughput::Bytes(bytes)).sample_size(10);
        for (label, pool) in pools {
            g.bench_function(BenchmarkId::from_parameter(label), |b| {
                b.iter(|| pool.install(|| m.dequantize(black_box(&q))))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
