//! Quantize and dequantize a 4096×4096 f32 matrix with every GGUF method, on one thread
//! and on all threads. Groups are `{method}/{op}`; throughput is f32 input (quantize) or
//! f32 output (dequantize) bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quant_core::{DType, Params, Registry, TensorMeta};
use quant_gguf::METHODS;

const ROWS: usize = 4096;
const COLS: usize = 4096;

/// Deterministic gaussian-ish values (splitmix64, sum of 4 uniforms).
fn matrix() -> Vec<f32> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..ROWS * COLS)
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
    for (name, _) in METHODS {
        let m = Registry::global()
            .unwrap()
            .create(name, &Params::new())
            .unwrap();
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
