//! Quantize / dequantize throughput of the quanto methods on a 4096×4096 f32 weight.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quant_core::{DType, Params, Registry, TensorMeta};

const N: usize = 4096;

fn weight() -> Vec<f32> {
    // A deterministic spread of values (a splitmix-style hash mapped to [-0.05, 0.05)).
    (0..N * N)
        .map(|i| {
            let mut z = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    assert_eq!(quant_quanto::BACKEND, "quant-quanto");
    let values = weight();
    let meta = TensorMeta::new("layer.weight", DType::F32, vec![N, N]);
    let bytes = (N * N * 4) as u64;
    let registry = Registry::global().unwrap();
    for name in [
        "quanto_config_int8",
        "quanto_config_int4",
        "quanto_config_int2",
        "quanto_config_float8",
    ] {
        let m = registry.create(name, &Params::new()).unwrap();
        let mut g = c.benchmark_group(format!("{name}/quantize"));
        g.throughput(Throughput::Bytes(bytes));
        g.sample_size(10);
        g.bench_function("4096x4096_f32", |b| {
            b.iter(|| m.quantize(black_box(&meta), black_box(&values)).unwrap())
        });
        g.finish();
        let q = m.quantize(&meta, &values).unwrap();
        let mut g = c.benchmark_group(format!("{name}/dequantize"));
        g.throughput(Throughput::Bytes(bytes));
        g.sample_size(10);
        g.bench_function("4096x4096_f32", |b| {
            b.iter(|| m.dequantize(black_box(&q)).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
