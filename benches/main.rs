//! Criterion benches of every registered method: `{method}/quantize` and
//! `{method}/dequantize` on a 4096×4096 f32 matrix, throughput in bytes of f32 input.
//! `cargo bench --bench main -- basic_int8` runs one method.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quant::{DType, Registry, TensorMeta};

fn methods(c: &mut Criterion) {
    let n = 4096;
    let meta = TensorMeta::new("bench.weight", DType::F32, vec![n, n]);
    let values = quant::sample::Gaussian::new(1).fill(n * n, 0.02);
    for e in Registry::global().unwrap().entries() {
        let m = (e.create)(&Default::default()).unwrap();
        let q = m.quantize(&meta, &values).unwrap();
        let mut g = c.benchmark_group(e.name);
        g.sample_size(10);
        g.throughput(Throughput::Bytes((n * n * 4) as u64));
        g.bench_function("quantize", |b| {
            b.iter(|| {
                m.quantize(std::hint::black_box(&meta), std::hint::black_box(&values))
                    .unwrap()
            })
        });
        g.bench_function("dequantize", |b| {
            b.iter(|| m.dequantize(std::hint::black_box(&q)).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, methods);
criterion_main!(benches);
